"""What the jobs share: their inputs (poses of a file, a single pose, the performer), their error
type, and frames fetched by index for drawing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from posescore.engine.analysis.people import Performer, image_person, main_performer
from posescore.engine.jobs.extract import DEFAULT_BATCH, extract_poses
from posescore.engine.media.pose_files import is_poses_json, read_poses_json
from posescore.engine.media.video import iter_frames
from posescore.engine.poses import VideoError, VideoPoses

Progress = Callable[[int, int], None]


class JobError(ValueError):
    """A job that cannot run on its inputs; the message names the file and the problem."""


def load_poses(source: str | os.PathLike, client=None, *, fps: float | None = None,
               max_side: int | None = None, batch: int | None = None, progress: Progress | None = None,
               start: float = 0.0, duration: float | None = None) -> VideoPoses:
    """Every person in every frame of ``source``, whatever it is: a keypoint JSON file or folder
    (``media.pose_files.is_poses_json``, read with ``read_poses_json``, rows kept where
    ``start <= time < start + duration``; ``fps``, ``max_side``, ``batch`` and ``progress`` do not
    apply), else a video or image run through the pose model with :func:`jobs.extract.extract_poses`
    and ``client`` (required then: a ``VideoError`` without one). A missing ``source`` is a
    :class:`JobError`."""
    if client is None and not is_poses_json(source):
        raise VideoError(f"{os.fspath(source)}: a video or image needs a pose model client (or server URL)",
                         path=source)
    if not Path(source).exists():
        raise JobError(f"{source}: no such file")
    if is_poses_json(source):
        poses = read_poses_json(source)
        if start > 0 or duration is not None:
            end = np.inf if duration is None else start + duration
            poses = poses.select((poses.times >= start - 1e-6) & (poses.times < end - 1e-6))
        return poses
    return extract_poses(source, client, fps=fps, max_side=max_side, batch=batch or DEFAULT_BATCH,
                         progress=progress, start=start, duration=duration)


def single_pose(source: str | Path, client=None, person: int | None = None) -> np.ndarray:
    """The main person ``[17, 3]`` of an image or pose JSON (or person number ``person``)."""
    return np.asarray(image_person(load_poses(source, client), person).pose, np.float32)


def performer_frames(poses: VideoPoses, name, performer: Performer | None = None) -> tuple[np.ndarray, Performer]:
    """(frame positions where the main performer is present, the Performer; found when None)."""
    performer = performer or main_performer(poses)
    present = np.flatnonzero(performer.present)
    if len(present) < 2:
        raise JobError(f"{name}: the performer is visible in {len(present)} frame(s); "
                       f"need at least 2 to compare movements")
    return present, performer


def performer_rows(performer: Performer, rows: np.ndarray) -> Performer:
    """``performer`` on the rows ``rows`` of its video only (as ``VideoPoses.select``)."""
    return Performer(poses=performer.poses[rows], present=performer.present[rows], track=performer.track,
                     boxes=performer.boxes[rows], scores=performer.scores[rows],
                     frame_indices=performer.frame_indices[rows], times=performer.times[rows])


def source_summary(poses: VideoPoses, performer, name) -> dict:
    """A report's summary of one input: path, fps, frames, the performer's track and frames."""
    return {"path": str(name), "fps": round(float(poses.info.fps), 3), "frames": int(poses.keypoints.shape[0]),
            "performer_track": int(performer.track), "frames_with_performer": int(performer.present.sum())}

class FrameCursor:
    """Frames of a video by increasing index, decoded once, streaming (for aligned rendering)."""

    def __init__(self, source, info, fps=None):
        self.frames = iter_frames(source, fps=fps) if not is_poses_json(source) else None
        self.blank = np.full((max(2, info.height), max(2, info.width), 3), 40, np.uint8)
        self.current = None

    def get(self, index: int) -> np.ndarray:
        if self.frames is None:
            return self.blank
        while self.current is None or self.current.index < index:
            nxt = next(self.frames, None)
            if nxt is None:
                break
            self.current = nxt
        return self.current.rgb if self.current is not None else self.blank


