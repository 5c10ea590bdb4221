"""``posescore index``: videos' every detected pose added to an archive (``--ray``: jobs.index_ray)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from posescore.engine import archive as archive_io
from posescore.engine.analysis.people import track_people
from posescore.engine.jobs.extract import extract_poses
from posescore.engine.jobs.inputs import JobError
from posescore.engine.media.pose_files import is_poses_json
from posescore.engine.poses import VideoPoses


def content_id(path: str | Path) -> str:
    """The SHA-256 of a file's content (hex, first 32 characters): a video's identity."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


def index_target(videos, archive_dir) -> Path:
    """The archive ``index`` writes (created if missing), after every input is checked and
    before any inference: each video exists and is not a pose JSON file; the archive is writable."""
    for video in map(Path, videos):
        if not video.exists():
            raise JobError(f"{video}: no such file")
        if is_poses_json(video):
            raise JobError(f"{video}: a pose JSON file; index takes videos (their poses come from the pose model)")
    root = archive_io.create_archive(archive_dir)
    if not os.access(root, os.W_OK) or not os.access(root / archive_io.SEGMENTS, os.W_OK):
        raise JobError(f"{root}: the archive is not writable")
    return root


def index_job(videos, archive_dir, client, *, fps=None, progress_factory=None) -> dict:
    """``posescore index``: add each video's every detected pose to the archive (one segment and
    one catalog transaction per video); videos already there (same content) are skipped. Several
    index processes may write one archive at once."""
    root = index_target(videos, archive_dir)
    known = {v["sha256"] for v in archive_io.list_videos(root)}
    done: list[dict] = []
    for video in map(Path, videos):
        try:
            done.append(_index_one(root, video, known, client, fps, progress_factory))
        except Exception as err:
            committed = [d["video"] for d in done if d["status"] == "indexed"]
            if committed:
                raise JobError(f"{video}: {err} (indexed before it, and kept: {', '.join(committed)})") from err
            raise
    return {"archive": str(root), "videos": done}


def _index_one(root: Path, video: Path, known: set, client, fps, progress_factory) -> dict:
    """Index one video into the archive at ``root`` unless its content is ``known``; its entry."""
    vid = content_id(video)
    if vid in known:
        return {"video": str(video), "id": vid, "status": "already indexed"}
    progress = progress_factory(video) if progress_factory else None
    entry = commit_video(root, video, vid, extract_poses(video, client, fps=fps, progress=progress))
    known.add(vid)
    return entry


def commit_video(root: Path, video: Path, vid: str, poses: VideoPoses) -> dict:
    """A video's poses tracked (``track_people``) and added to the archive at ``root`` in one
    transaction under content id ``vid`` (the one writer's step of ``index``, with or without
    Ray); its entry of the index summary."""
    tracks = track_people(poses)
    frame_no, person, keypoints = poses.people()
    added = archive_io.add_video(
        root, vid, video.name, keypoints, poses.frame_indices[frame_no], poses.times[frame_no],
        tracks[frame_no, person], path=str(video.resolve()), fps=float(poses.info.fps),
        width=int(poses.info.width), height=int(poses.info.height), size=video.stat().st_size,
        frame_count=int(poses.info.frame_count), duration=float(poses.info.duration))
    return {"video": str(video), "id": vid, "status": "indexed" if added else "already indexed",
            "poses": int(len(frame_no)), "frames": int(poses.keypoints.shape[0])}
