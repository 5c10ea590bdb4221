"""What the jobs share: their inputs (poses of a file, a single pose, the performer: the person the
user names with ``--person`` / ``--reference-person``, else chosen by ``auto``), their error type,
and frames fetched by index for drawing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from posescore import kernels
from posescore.engine.analysis.answers import movement_score
from posescore.engine.analysis.people import (Performer, PersonError, best_fit_performer, image_person,
                                              most_moving_performer, parse_person, performer_frames,
                                              person_by_spec, track_people)
from posescore.engine.jobs.extract import DEFAULT_BATCH, extract_poses
from posescore.engine.media.pose_files import is_poses_json, read_poses_json
from posescore.engine.media.video import iter_frames
from posescore.engine.poses import IMAGE_EXTENSIONS, VideoError, VideoPoses

Progress = Callable[[int, int], None]


class JobError(ValueError):
    """A job that cannot run on its inputs; the message names the file and the problem."""


def load_poses(source: str | os.PathLike, client=None, *, fps: float | None = None,
               max_side: int | None = None, batch: int | None = None, progress: Progress | None = None,
               start: float = 0.0, duration: float | None = None, landmarks: bool = False) -> VideoPoses:
    """Every person in every frame of ``source``, whatever it is: a keypoint JSON file or folder
    (``media.pose_files.is_poses_json``, read with ``read_poses_json``, rows kept where
    ``start <= time < start + duration``; ``fps``, ``max_side``, ``batch`` and ``progress`` do not
    apply), else a video or image run through the pose model with :func:`jobs.extract.extract_poses`
    and ``client`` (required then: a ``VideoError`` without one). A missing ``source`` is a
    :class:`JobError`. With ``landmarks``, BlazePose GHUM's landmarks and world coordinates too
    (the ``landmarks`` model; a pose JSON must carry them: a JobError if it does not)."""
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
        if landmarks and poses.landmarks is None:
            raise JobError(f"{source}: this pose JSON has no landmarks; write one with `posescore pose --landmarks`, "
                           f"or give the video")
        return poses
    return extract_poses(source, client, fps=fps, max_side=max_side, batch=batch or DEFAULT_BATCH,
                         progress=progress, start=start, duration=duration, landmarks=landmarks)


def check_movement_source(source: str | Path, role: str) -> None:
    """Refuse an image where a movement is needed (``role``: "reference", "attempt", ...) before
    anything is decoded: a JobError naming the file and what to use instead."""
    if Path(source).suffix.lower() in IMAGE_EXTENSIONS:
        raise JobError(f"{source}: an image is one pose, and the {role} must be a movement (a video, or a pose "
                       f"JSON of several frames); to find a pose in a video, use posescore find")


def single_pose(source: str | Path, client=None, person: int | None = None) -> np.ndarray:
    """The main person ``[17, 3]`` of an image or pose JSON (or person number ``person``)."""
    return np.asarray(image_person(load_poses(source, client), person).pose, np.float32)


def query_pose(source: str | Path, client=None, person: Any = None, *, option: str = "--person"
               ) -> tuple[np.ndarray, dict]:
    """The query pose ``[17, 3]`` of an image or pose JSON and whom it is: ``person`` a spec
    (``engine.analysis.people.parse_person``): auto (None) is the main person of the first frame
    (largest box × detection score); a track id (an image's are its people's indices, as
    ``posescore pose`` writes them) is that track in the first frame it is in; a point or a box
    picks the person there in the frame nearest its time. Returns ``(pose, {"track", "time",
    "choice"})``; a spec naming no one raises PersonError (a ValueError) naming ``option``."""
    spec = parse_person(person, option)
    poses = load_poses(source, client)
    if spec.auto:
        chosen = image_person(poses)
        return np.asarray(chosen.pose, np.float32), {"track": chosen.index, "time": round(float(poses.times[0]), 3),
                                                     "choice": "auto: the main person (largest, most confident)"}
    if not len(poses):
        raise PersonError(f"{option} {spec.text}: {source}: no frames")
    performer = person_by_spec(poses, track_people(poses), spec, option=option, source=str(source))
    if spec.time is not None:
        row = int(np.argmin(np.abs(poses.times.astype(np.float64) - spec.time)))
    else:
        row = int(np.flatnonzero(performer.present)[0])
    return performer.poses[row].astype(np.float32), {"track": performer.track,
                                                      "time": round(float(poses.times[row]), 3),
                                                      "choice": performer.choice}


def choose_reference(poses: VideoPoses, name, person: Any = None, *, rows: np.ndarray | None = None,
                     option: str = "--reference-person") -> Performer:
    """The reference's performer: the track ``person`` names (``engine.analysis.people.parse_person``),
    or with auto (None) the one who moves the most (``most_moving_performer``, over ``rows`` when
    given: a reference cut from a longer video), an error listing the tracks when two move alike.
    Checked to be visible in 2 frames (``performer_frames``)."""
    return _choose(poses, name, person, option,
                   lambda tracks: most_moving_performer(poses, tracks, option=option, source=str(name), rows=rows))


def choose_attempt(poses: VideoPoses, name, fit: Callable[[Performer], float], person: Any = None, *,
                   option: str = "--person") -> Performer:
    """The attempt's performer: the track ``person`` names, or with auto (None) the candidate track
    whose movement ``fit`` scores highest against the reference's performer
    (``engine.analysis.people.best_fit_performer``: tracks in 2 rows and a quarter of the video, the
    8 longest). Checked to be visible in 2 frames (``performer_frames``)."""
    return _choose(poses, name, person, option, lambda tracks: best_fit_performer(poses, tracks, fit))


def _choose(poses: VideoPoses, name, person: Any, option: str, auto: Callable[[np.ndarray], Performer]) -> Performer:
    """The track ``person`` names, or ``auto(tracks)`` when it says auto; checked to be visible in
    2 frames (``performer_frames``)."""
    spec = parse_person(person, option)
    tracks = track_people(poses)
    performer = auto(tracks) if spec.auto else person_by_spec(poses, tracks, spec, option=option, source=str(name))
    return performer_frames(poses, name, performer)[1]


def movement_fit(reference: np.ndarray, reference_fps: float, attempt_fps: float, *, mirror: bool = False,
                 window: int | None = None) -> Callable[[Performer], float]:
    """``compare``'s fit of a candidate performer: ``movement_score`` of its present frames against
    ``reference [R, 17, 3]`` (the reference performer's present frames)."""
    def fit(performer: Performer) -> float:
        rows = np.flatnonzero(performer.present)
        if len(rows) < 2:
            return -np.inf
        return movement_score(reference, reference_fps, performer.poses[rows], attempt_fps, mirror=mirror,
                              window=window).score
    return fit


def repetition_fit(reference: np.ndarray, reference_fps: float, attempt_fps: float, *, min_ratio: float,
                   mirror: bool = False, matches: int = 3) -> Callable[[Performer], float]:
    """``reps``' fit of a candidate performer: its best repetition of ``reference [R, 17, 3]`` (one
    repetition). The ``matches`` best subsequence-DTW matches of the reference in the candidate's
    present frames (``kernels.subsequence_dtw``, at least ``min_ratio`` of the reference long, as
    ``engine.analysis.reps.find_reps`` looks), each scored by ``movement_score`` (compare's
    scale); the best counts."""
    q_vec, _ = kernels.normalize(kernels.consistent_sides(np.asarray(reference, np.float32)))
    duration = (len(reference) - 1) / reference_fps if reference_fps > 0 else 0.0

    def fit(performer: Performer) -> float:
        rows = np.flatnonzero(performer.present)
        if len(rows) < 2:
            return -np.inf
        poses, times = performer.poses[rows], performer.times[rows].astype(np.float64)
        s_vec, _ = kernels.normalize(kernels.consistent_sides(poses))
        frames_per_s = (len(rows) - 1) / max(times[-1] - times[0], 1e-9)
        shortest = int(min(len(rows), max(2, min_ratio * duration * frames_per_s)))
        _, starts, ends = (np.asarray(x) for x in kernels.subsequence_dtw(q_vec, s_vec, k=matches,
                                                                          min_length=shortest))
        scores = [movement_score(reference, reference_fps, poses[a:b], attempt_fps, mirror=mirror).score
                  for a, b in zip(starts.tolist(), ends.tolist()) if b - a >= 2]
        return max(scores, default=-np.inf)
    return fit


def choose_performers(reference: VideoPoses, attempt: VideoPoses, names=("reference", "attempt"), *,
                      person: Any = None, reference_person: Any = None, mirror: bool = False,
                      window: int | None = None, reference_rows: np.ndarray | None = None,
                      repetition_ratio: float | None = None) -> tuple[Performer, Performer]:
    """The performers ``compare`` and ``reps`` follow: the reference's (:func:`choose_reference`,
    over ``reference_rows`` when given), then the attempt's (:func:`choose_attempt`), fitted with
    :func:`movement_fit`, or with ``repetition_ratio`` (reps' shortest repetition, a share of the
    reference) :func:`repetition_fit`. Each Performer's ``choice`` says how it was chosen."""
    r_perf = choose_reference(reference, names[0], reference_person, rows=reference_rows)
    present = r_perf.present.copy()
    if reference_rows is not None:
        present[np.setdiff1d(np.arange(len(reference)), reference_rows)] = False
    r_poses = r_perf.poses[present]
    if len(r_poses) < 2:  # a window without the performer: reps_poses says so
        fit = lambda performer: 0.0  # noqa: E731
    elif repetition_ratio is None:
        fit = movement_fit(r_poses, reference.rate, attempt.rate, mirror=mirror, window=window)
    else:
        fit = repetition_fit(r_poses, reference.rate, attempt.rate, min_ratio=repetition_ratio, mirror=mirror)
    return r_perf, choose_attempt(attempt, names[1], fit, person)


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


