"""A comparison's report: two performances DTW-aligned and scored, part by part, step by step
(``compare``'s answer, each repetition's in ``reps`` and ``live``). No I/O."""

from __future__ import annotations

import numpy as np

from posescore import kernels
from posescore.engine.analysis.answers import MOMENT_GAP_S, movement_score
from posescore.engine.analysis.people import Performer, performer_frames, performer_rows
from posescore.engine.poses import VideoPoses
from posescore.kernels import SCORE_THRESHOLD, under_threshold
from posescore.kernels.skeleton import (ANGLE_NAMES, FLIP_PERMUTATION, JOINT_NAMES, LANDMARK_FLIP, PART_ANGLES,
                                        PART_NAMES, angle_difference, joint_angles, tilts, world_joint_angles)


def compare_poses(reference: VideoPoses, attempt: VideoPoses, *, threshold: float = SCORE_THRESHOLD,
                  mirror: bool = False, window: int | None = None, names=("reference", "attempt"),
                  performers: tuple[Performer, Performer] | None = None, world_angles: bool = False) -> dict:
    """DTW-align the main performers of two performances and score them.

    Frames without the performer are left out of the alignment (their times stay true in the
    report); the score is ``engine.analysis.answers.movement_score`` (one stable keypoint set, each
    performance interpolated to its alignment rate, DTW), the one a clip search hit gets too.
    ``window`` is in frames. ``performers``: the two main performers when
    already found (``engine.analysis.people.main_performer``). ``world_angles``: the joints'
    flexions measured in 3-D on the performers' world landmarks (``--3d``), not in the image.

    Returns the report dict: overall 0-100 score (``kernels.dtw_score``), DTW distance, the six part
    scores along the path (``kernels.aligned_part_scores``), those under ``threshold`` (as shown,
    ``kernels.under_threshold``), one entry per aligned step (a step for every real frame on the
    path, paired with the nearest real frame of the other performance: frames, times, part scores,
    the step's score (the mean of its part scores: limb directions and joint angles on the angle
    scale, 18 degrees off scoring 80) and every angle of both (``kernels.skeleton.ANGLE_NAMES``)),
    and the worst moments: steps under ``threshold`` (``matches_throughout`` when there is none).
    """
    r_perf, a_perf = performers or (None, None)
    r_pos, r_perf = performer_frames(reference, names[0], r_perf)
    a_pos, a_perf = performer_frames(attempt, names[1], a_perf)
    scored = movement_score(r_perf.poses[r_pos], reference.rate, a_perf.poses[a_pos], attempt.rate,
                            mirror=mirror, window=window)
    score, mirrored, window, (fr, fa) = scored.score, scored.mirrored, scored.window, scored.factors
    r_vec, r_w, a_vec, a_w = (scored.reference_vectors, scored.reference_weights, scored.attempt_vectors,
                              scored.attempt_weights)
    path, distance = kernels.dtw_path(r_vec, a_vec, window=window)
    # Overall part scores over the whole path; per-step values only for the steps reported.
    step_parts, parts, valid = kernels.aligned_part_scores(r_vec, r_w, a_vec, a_w, path)
    chosen, r_at, a_at = _frame_steps(path, fr, fa)
    step_parts, valid = step_parts[chosen], valid[chosen]
    step_scores = _step_scores(step_parts, valid, r_vec[path[chosen, 0]], a_vec[path[chosen, 1]])
    r_frames, a_frames = reference.frame_indices[r_pos[r_at]], attempt.frame_indices[a_pos[a_at]]
    r_times, a_times = reference.times[r_pos[r_at]], attempt.times[a_pos[a_at]]
    r_angles, a_angles = _step_angles(r_perf.poses[r_pos], a_perf.poses[a_pos], r_at, a_at, mirrored)
    if world_angles:
        r_angles[:, :len(JOINT_NAMES)], a_angles[:, :len(JOINT_NAMES)] = _world_flexions(
            r_perf.world[r_pos][r_at], a_perf.world[a_pos][a_at], mirrored)
    steps = [{"reference_frame": int(rf), "reference_time": round(float(rt), 3),
              "attempt_frame": int(af), "attempt_time": round(float(at), 3),
              "score": round(float(s), 2),
              "parts": {name: (round(float(p), 2) if ok else None) for name, p, ok in zip(PART_NAMES, sp, sv)},
              "angles": _angle_entries(ra, aa)}
             for rf, rt, af, at, s, sp, sv, ra, aa in zip(r_frames, r_times, a_frames, a_times, step_scores,
                                                          step_parts, valid, r_angles, a_angles)]
    return {
        "reference": source_summary(reference, r_perf, names[0]),
        "attempt": source_summary(attempt, a_perf, names[1]),
        "score": round(float(score), 2),
        "distance": round(float(distance), 4),
        "mirrored": bool(mirrored),
        "threshold": threshold,
        "samples_per_frame": {"reference": fr, "attempt": fa},
        # None: a part never visible in both performances cannot be scored.
        "parts": {name: round(float(p), 2) if seen else None
                  for name, p, seen in zip(PART_NAMES, parts, valid.any(axis=0))},
        "parts_under_threshold": [name for name, p, seen in zip(PART_NAMES, parts, valid.any(axis=0))
                                  if seen and under_threshold(p, threshold)],
        "worst_moments": (moments := _worst_moments(steps, threshold)),
        "matches_throughout": not moments,
        "steps": steps,
    }


def _step_scores(step_parts: np.ndarray, valid: np.ndarray, r_vec: np.ndarray, a_vec: np.ndarray) -> np.ndarray:
    """Each step's score ``[S]``: the mean of its scored parts ``step_parts [S, 6]`` (``valid``),
    the scale a coach reads a part on. A single step's vector distance on the movement's scale
    (which is calibrated for a whole movement's RMS) reads 0 for a moment of a 99 movement. A step
    with no part seen in both falls back to that distance's score."""
    seen = valid.sum(axis=1)
    mean = np.where(valid, step_parts, 0.0).sum(axis=1) / np.maximum(seen, 1)
    fallback = kernels.score_from_distance(np.linalg.norm(r_vec - a_vec, axis=1), "cosine")
    return np.where(seen > 0, mean, fallback)


def _step_angles(reference: np.ndarray, attempt: np.ndarray, r_at: np.ndarray, a_at: np.ndarray,
                 mirrored: bool) -> tuple[np.ndarray, np.ndarray]:
    """Every angle of ``kernels.skeleton.ANGLE_NAMES`` ``[S, 10]`` (degrees: the joints' flexions
    ``joint_angles``, then the trunk's and head's ``tilts``) of both performers at each step:
    performer frames ``[R, 17, 3]`` / ``[A, 17, 3]``, with the pose model's left/right flicker
    undone, and, when the attempt matched mirrored, its sides swapped (its left knee is compared
    with the reference's right) and its tilts and lines taken in the mirror (the mirror of the
    sides-swapped pose, so that each matches the reference's unmirrored)."""
    r_poses, a_poses = kernels.consistent_sides(reference)[r_at], kernels.consistent_sides(attempt)[a_at]
    if mirrored:
        a_poses = a_poses[:, list(FLIP_PERMUTATION)]
        a_tilts = tilts(a_poses * np.array([-1.0, 1.0, 1.0], np.float32))  # x mirrored
    else:
        a_tilts = tilts(a_poses)
    return (np.concatenate([joint_angles(r_poses), tilts(r_poses)], axis=-1),
            np.concatenate([joint_angles(a_poses), a_tilts], axis=-1))


def _world_flexions(reference: np.ndarray, attempt: np.ndarray, mirrored: bool) -> tuple[np.ndarray, np.ndarray]:
    """The joints' flexions ``[S, 8]`` in 3-D (``kernels.skeleton.world_joint_angles``) of both at
    each step, the attempt's sides swapped when it matched mirrored (as :func:`_step_angles` swaps
    its keypoints)."""
    return world_joint_angles(reference), world_joint_angles(attempt[:, list(LANDMARK_FLIP)] if mirrored else attempt)


def _angle_entries(reference: np.ndarray, attempt: np.ndarray) -> dict:
    """``{angle: {"reference": deg, "attempt": deg, "difference": attempt - reference}}`` for each
    of ``ANGLE_NAMES``, rounded to 0.1 degree; None where a keypoint of the angle is missing."""
    def value(x):
        return None if not np.isfinite(x) else round(float(x), 1)

    return {name: {"reference": value(r), "attempt": value(a), "difference": value(angle_difference(name, a, r))}
            for name, r, a in zip(ANGLE_NAMES, reference, attempt)}


def _frame_steps(path: np.ndarray, fr: int, fa: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries of a warping path over interpolated samples that the report lists as steps.

    An entry where either side is a real frame (sample index a multiple of its factor) becomes
    the step of its pair of nearest real frames (halves round up); of the entries with one pair,
    the first where both sides are real frames, else the first where the reference is, else the
    first. Returns (path rows [S], reference frames [S], attempt frames [S]), in path order.
    """
    i, j = path[:, 0], path[:, 1]
    real_i, real_j = i % fr == 0, j % fa == 0
    ri, aj = (i + fr // 2) // fr, (j + fa // 2) // fa
    rank = np.where(real_i & real_j, 0, np.where(real_i, 1, 2))
    rows: list[int] = []
    for n in np.flatnonzero(real_i | real_j):
        if rows and ri[rows[-1]] == ri[n] and aj[rows[-1]] == aj[n]:
            if rank[n] < rank[rows[-1]]:
                rows[-1] = n
            continue
        rows.append(n)
    chosen = np.asarray(rows, dtype=np.int64)
    return chosen, ri[chosen], aj[chosen]


def _worst_moments(steps: list[dict], threshold: float, count: int = 5) -> list[dict]:
    """The lowest-scoring steps under ``threshold`` (as shown: ``kernels.under_threshold``), at
    most ``count``, at least MOMENT_GAP_S of reference time apart; none when every step passes.
    Each names the part that is most off (``worst_part``, ``worst_part_score``) and, of that part's
    angles (``kernels.skeleton.PART_ANGLES``: a limb's joints, the trunk's or head's tilt), the one
    that differs most (``joint``, ``joint_angles``: both performers' values and the difference;
    ``angle_difference_deg`` its size), with every angle of both (``angles``)."""
    chosen: list[dict] = []
    order = sorted(range(len(steps)), key=lambda n: steps[n]["score"])
    for n in order:
        step = steps[n]
        if not under_threshold(step["score"], threshold):
            break
        if any(abs(step["reference_time"] - c["reference_time"]) < MOMENT_GAP_S for c in chosen):
            continue
        scored_parts = {k: v for k, v in step["parts"].items() if v is not None}
        worst = min(scored_parts, key=scored_parts.get) if scored_parts else None
        measured = {k: step["angles"][k] for k in PART_ANGLES.get(worst, ())
                    if step["angles"][k]["difference"] is not None}
        joint = max(measured, key=lambda k: abs(measured[k]["difference"])) if measured else None
        chosen.append({**{k: step[k] for k in ("reference_frame", "reference_time", "attempt_frame",
                                               "attempt_time", "score")},
                       "worst_part": worst, "worst_part_score": scored_parts.get(worst),
                       "angle_difference_deg": None if joint is None else abs(measured[joint]["difference"]),
                       "joint": joint, "joint_angles": None if joint is None else measured[joint],
                       "angles": step["angles"]})
        if len(chosen) == count:
            break
    return chosen


def rep_row(number: int, reference: VideoPoses, r_perf: Performer, attempt: VideoPoses, a_perf: Performer,
            first: int, last: int, backwards: bool, *, threshold: float = SCORE_THRESHOLD, mirror: bool = False,
            names=("reference", "attempt"), world_angles: bool = False) -> dict:
    """One repetition as a report gives it (``reps`` and ``live`` alike): rows ``first..last`` of
    ``attempt`` scored by :func:`compare_poses` against the reference: number, frames, times,
    duration, score, ``flagged`` under ``threshold``, ``backwards``, parts, the worst part (its
    worst moment's, else the lowest-scoring part), the worst moment and the full ``report``."""
    span = np.arange(first, last + 1)
    report = compare_poses(reference, attempt.select(span), threshold=threshold, mirror=mirror,
                           names=(names[0], f"{names[1]} rep {number}"),
                           performers=(r_perf, performer_rows(a_perf, span)), world_angles=world_angles)
    scored = {k: v for k, v in report["parts"].items() if v is not None}
    return {"rep": number, "start_frame": int(attempt.frame_indices[first]),
            "end_frame": int(attempt.frame_indices[last]),
            "start_time": round(float(attempt.times[first]), 3),
            "end_time": round(float(attempt.times[last]), 3),
            "duration": round(float(attempt.times[last] - attempt.times[first]), 3),
            "score": report["score"], "flagged": under_threshold(report["score"], threshold),
            "backwards": bool(backwards),
            # The part the row names is its worst moment's (the one its feedback speaks of),
            # else the part scoring lowest over the repetition.
            "parts": report["parts"],
            "worst_part": (report["worst_moments"][0]["worst_part"] if report["worst_moments"]
                           else min(scored, key=scored.get) if scored else None),
            "worst_moment": report["worst_moments"][0] if report["worst_moments"] else None,
            "report": report}


def source_summary(poses: VideoPoses, performer, name) -> dict:
    """A report's summary of one input: path, fps, frames, the performer's track and frames, how it
    was chosen (``performer_choice``) and, for an automatic choice among several tracks, what was
    weighed (``performer_candidates``: track, frames and fit or movement, best first)."""
    summary = {"path": str(name), "fps": round(float(poses.info.fps), 3), "frames": int(poses.keypoints.shape[0]),
               "performer_track": int(performer.track), "frames_with_performer": int(performer.present.sum()),
               "performer_choice": getattr(performer, "choice", "") or "track given by the caller"}
    candidates = getattr(performer, "candidates", ())
    if len(candidates) > 1:
        summary["performer_candidates"] = [dict(c) for c in candidates]
    return summary
