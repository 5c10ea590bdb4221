"""Adding videos to an archive: VideoRows and add_video(s), one segment and one transaction a call.

A call writes its new videos' rows as one segment file (engine.archive.segments.SegmentWriter),
then names it and them in the catalog in one transaction, which re-checks which videos are new:
several processes may add to one archive at once, and one killed before its commit leaves the
archive as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posescore import kernels
from posescore.engine.archive.catalog import NORMALIZATION, VIDEO_FIELDS, connect, create_archive, transaction
from posescore.engine.archive.segments import COLUMN_DTYPES, SegmentWriter, compact_confidences, remove_orphans
from posescore.engine.archive.shard import ArchiveError
from posescore.kernels.skeleton import NUM_KEYPOINTS


@dataclass
class VideoRows:
    """One video's poses for the archive: ``poses [n, 17, 3]`` pixels, ``frames``, ``times`` (s),
    ``tracks`` (``[n]`` each) and its catalog fields (``sha256`` and ``name`` required)."""

    sha256: str
    name: str
    poses: np.ndarray
    frames: np.ndarray
    times: np.ndarray
    tracks: np.ndarray | None = None
    info: dict = field(default_factory=dict)


def _video_columns(video: VideoRows) -> dict[str, np.ndarray]:
    poses = np.ascontiguousarray(video.poses, dtype=np.float32)
    if poses.ndim != 3 or poses.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ArchiveError(f"{video.name}: poses: expected [n, 17, 3], got {list(poses.shape)}")
    if not np.isfinite(poses).all():
        raise ArchiveError(f"{video.name}: poses: NaN or infinite values; mark missing keypoints with confidence 0")
    if np.abs(poses[..., :2]).max(initial=0) > 1e7:
        raise ArchiveError(f"{video.name}: poses: coordinates beyond +-1e7 pixels")
    n = poses.shape[0]
    frames = np.asarray(video.frames).reshape(-1)
    times = np.asarray(video.times, np.float64).reshape(-1)
    tracks = np.full(n, -1, np.int64) if video.tracks is None else np.asarray(video.tracks).reshape(-1)
    for key, values in (("frames", frames), ("times", times), ("tracks", tracks)):
        if values.shape[0] != n:
            raise ArchiveError(f"{video.name}: {key}: expected {n} values (one per pose), got {values.shape[0]}")
    if n and (frames.min() < 0 or frames.max() >= 2**31):
        raise ArchiveError(f"{video.name}: frames: expected indices in [0, 2**31)")
    if n and not np.isfinite(times).all():
        raise ArchiveError(f"{video.name}: times: NaN or infinite values")
    order = np.lexsort((frames, tracks))
    poses = poses[order]
    if n:
        vectors, _ = kernels.normalize(poses, NORMALIZATION)
    else:
        vectors = np.zeros((0, 2 * NUM_KEYPOINTS), np.float32)
    return {"vectors": vectors.astype(np.float16), "xy": np.ascontiguousarray(poses[..., :2]),
            "conf": compact_confidences(poses[..., 2]), "frames": frames[order].astype(np.int32),
            "tracks": tracks[order].astype(np.int32), "times": times[order].astype(np.float32)}


def _catalog_fields(video: VideoRows, rows: int) -> dict:
    info = dict(video.info)
    fields = {"sha256": video.sha256, "name": video.name, "poses": rows,
              "indexed": info.pop("indexed", time.time())}
    for key in ("path", "fps", "width", "height", "size", "frame_count", "duration"):
        fields[key] = info.pop(key, None)
    if info:
        raise ArchiveError(f"{video.name}: unknown catalog fields {sorted(info)}")
    if fields["duration"] is None and rows:
        fields["duration"] = float(np.max(video.times)) if len(video.times) else None
    return fields


def add_videos(path: str | os.PathLike, videos: list[VideoRows]) -> list[bool]:
    """Add videos to the archive as one new segment in one transaction. Returns, per video, True
    when it was added and False when a video of the same ``sha256`` already was (by this call or
    another writer's, which may run at the same time)."""
    return write_videos(create_archive(path), videos)


def write_videos(root: Path, videos: list[VideoRows]) -> list[bool]:
    """:func:`add_videos` into the archive at ``root``, whose catalog exists (a format-1 manifest
    beside it allowed: ``upgrade`` writes through this)."""
    db = connect(root, write=True, upgrading=True)
    try:
        known = {row[0] for row in db.execute("SELECT sha256 FROM videos")}
        seen: set = set()
        fresh = []
        for video in videos:
            if video.sha256 not in known and video.sha256 not in seen:
                fresh.append(video)
                seen.add(video.sha256)
        if not fresh:
            return [False] * len(videos)
        parts = [_video_columns(video) for video in fresh]
        columns = {name: np.concatenate([p[name] for p in parts]) for name in COLUMN_DTYPES}
        with contextlib.suppress(sqlite3.Error, OSError):
            remove_orphans(root, db)
        writer = SegmentWriter(root, columns)
        try:
            with transaction(db):
                segment = db.execute(
                    "INSERT INTO segments (file, rows, bytes, layout, created) VALUES (?, ?, ?, ?, ?)",
                    (writer.name, writer.rows, writer.bytes, json.dumps(writer.layout), time.time())).lastrowid
                added, first = set(), 0
                for video, part in zip(fresh, parts):
                    rows = int(part["frames"].shape[0])
                    fields = _catalog_fields(video, rows)
                    cursor = db.execute(
                        f"INSERT OR IGNORE INTO videos ({', '.join(VIDEO_FIELDS)}, segment, first_row) "
                        f"VALUES ({', '.join('?' * (len(VIDEO_FIELDS) + 2))})",
                        [fields[key] for key in VIDEO_FIELDS] + [segment, first])
                    if cursor.rowcount:
                        added.add(video.sha256)
                    first += rows
                if not added:  # another writer committed all of them meanwhile
                    raise _NothingNew
        except _NothingNew:
            writer.discard()
            return [False] * len(videos)
        except BaseException:
            writer.discard()
            raise
        writer.close()
    finally:
        db.close()
    result, counted = [], set()
    for video in videos:
        result.append(video.sha256 in added and video.sha256 not in counted)
        counted.add(video.sha256)
    return result


class _NothingNew(Exception):
    pass


def add_video(archive_dir: str | os.PathLike, video_id: str, name: str, poses, frames, times, tracks=None,
              **info) -> bool:
    """Add one video's poses ``[n, 17, 3]`` (with ``frames [n]``, ``times [n]`` seconds and
    ``tracks [n]``) as one segment; ``info``: catalog fields (path, fps, width, height, size,
    frame_count, duration). False, writing nothing, when ``video_id`` is already in the archive."""
    return add_videos(archive_dir, [VideoRows(video_id, name, poses, frames, times, tracks, info)])[0]
