"""``posescore find``: the moments of a video most like a pose, whoever performs them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from posescore.engine.analysis.answers import score_answer
from posescore.engine.analysis.people import track_people
from posescore.engine.analysis.view import pose_in_3d, video_in_3d
from posescore.engine.archive import MOMENT_GAP_S
from posescore.engine.jobs.inputs import FrameCursor, JobError, Progress, load_poses, query_pose
from posescore.engine.media.pose_files import is_poses_json
from posescore.engine.media.video import read_image
from posescore.engine.poses import VideoPoses
from posescore.engine.reports.render import draw_skeleton, side_by_side, write_image
from posescore.kernels.skeleton import PART_NAMES

#: Most moments ``find`` answers (a larger ``--k`` is a mistake, not a query).
MAX_MOMENTS = 100_000
#: A moment scoring under this is not the pose: ``find`` answers "nothing similar" rather than it.
MIN_MOMENT_SCORE = 50.0


def find_moments(query: np.ndarray, poses: VideoPoses, k: int = 5, mirror: bool = False,
                 min_score: float = MIN_MOMENT_SCORE) -> list[dict]:
    """The ``k`` moments of ``poses`` (every person) most similar to ``query [17, 3]`` and scoring
    at least ``min_score``, best first, at least MOMENT_GAP_S apart: frame, time, person (its
    index in the frame) and track, score and part scores (the score service's answer,
    ``engine.analysis.answers.score_answer``, over every pose)."""
    frame_no, person, keypoints = poses.people()
    if len(frame_no) == 0:
        raise JobError(f"{poses.info.path}: no person detected in any frame")
    tracks = poses.tracks if poses.tracks is not None else track_people(poses)
    scores, parts, mirrored, scored = score_answer(query, keypoints, mirror=mirror)
    found: list[dict] = []
    for n in np.argsort(-scores, kind="stable"):
        if scores[n] < min_score:
            break
        time = float(poses.times[frame_no[n]])
        if any(abs(time - f["time"]) < MOMENT_GAP_S for f in found):
            continue
        found.append({"frame": int(poses.frame_indices[frame_no[n]]), "time": round(time, 3),
                      "person": int(person[n]), "track": int(tracks[frame_no[n], person[n]]),
                      "score": round(float(scores[n]), 2),
                      "parts": {name: round(float(p), 2) if ok else None
                                for name, p, ok in zip(PART_NAMES, parts[n], scored[n])},
                      "mirrored": bool(mirrored[n])})
        if len(found) == k:
            break
    return found


def _query_in_3d(pose_source, client, query: np.ndarray, chosen: dict) -> np.ndarray:
    """The chosen query person's world landmarks seen from the canonical viewpoint."""
    found = load_poses(pose_source, client, landmarks=True)
    row = int(np.argmin(np.abs(found.times.astype(np.float64) - chosen["time"])))
    count = int(found.counts[row])
    person = int(np.argmin(np.abs(found.keypoints[row, :count] - query).sum((1, 2))))
    return pose_in_3d(found.world[row, person], found.landmarks[row, person])


def find_job(pose_source, video, client, *, k=5, mirror=False, out_dir=None, fps=None,
             progress: Progress | None = None, person=None, min_score: float = MIN_MOMENT_SCORE,
             three_d: bool = False) -> dict:
    """``posescore find``: the k best moments; with ``out_dir`` also ``best_match.png`` (the query
    and the best frame side by side, skeletons coloured by part score). ``person``: whom of the
    query's people to look for (``jobs.inputs.query_pose``: a track id, ``X,Y@T``,
    ``X0,Y0,X1,Y1@T``, or auto, None: the main person); the result's ``pose_person`` says whom
    (``track``, ``time``, ``choice``). The video's people are all searched. ``three_d``: the query
    and every person in world coordinates, each pose turned on its own to face one way and seen
    from one viewpoint (``engine.analysis.view``): a pose found whichever way the camera saw it."""
    query, chosen = query_pose(pose_source, client, person)
    poses = load_poses(video, client, fps=fps, progress=progress, landmarks=three_d)
    searched = poses
    if three_d:
        query = _query_in_3d(pose_source, client, query, chosen)
        searched = replace(video_in_3d(poses), tracks=poses.tracks if poses.tracks is not None
                           else track_people(poses))
    moments = find_moments(query, searched, k=k, mirror=mirror, min_score=min_score)
    result = {"pose": str(pose_source), "pose_person": chosen, "video": str(video), "min_score": min_score,
              "moments": moments}
    if three_d:
        result["view"] = "3d"
    if not moments:  # nothing similar: say how close the best came
        result["best_score"] = find_moments(query, searched, k=1, mirror=mirror, min_score=-1.0)[0]["score"]
    if out_dir and moments:
        best = moments[0]
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        parts = np.array([100.0 if p is None else p for p in best["parts"].values()])
        if is_poses_json(pose_source):
            left = np.full((poses.info.height or 480, poses.info.width or 640, 3), 40, np.uint8)
        else:
            left = read_image(pose_source)
        frame = FrameCursor(video, poses.info, fps).get(best["frame"])
        row = int(np.flatnonzero(poses.frame_indices == best["frame"])[0])
        image = side_by_side(draw_skeleton(left, query, parts, None),
                             draw_skeleton(frame, poses.keypoints[row, best["person"]], parts, None),
                             captions=("pose", f"{best['time']:.2f}s  score {best['score']:.0f}"))
        result["outputs"] = {"best_match": str(write_image(out / "best_match.png", image))}
    return result
