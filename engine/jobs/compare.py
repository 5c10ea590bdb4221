"""``posescore compare``: two performances DTW-aligned and scored, part by part, step by step."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posescore import kernels
from posescore.engine.analysis.answers import movement_score
from posescore.engine.analysis.people import Performer
from posescore.engine.archive import MOMENT_GAP_S
from posescore.engine.jobs.inputs import (FrameCursor, Progress, check_movement_source, choose_performers, load_poses,
                                          performer_frames, source_summary)
from posescore.engine.media import pose_files as formats
from posescore.engine.media.encode import write_video
from posescore.engine.poses import VideoPoses
from posescore.engine.reports.page import write_compare_page
from posescore.engine.reports.render import (draw_ghost, draw_skeleton, performer_crop, person_thumbnail, plot_scores,
                                            side_by_side, write_image)
from posescore.kernels import SCORE_THRESHOLD, under_threshold
from posescore.kernels.skeleton import (ANGLE_NAMES, FLIP_PERMUTATION, PART_ANGLES, PART_NAMES, angle_difference,
                                        joint_angles, tilts)


def compare_poses(reference: VideoPoses, attempt: VideoPoses, *, threshold: float = SCORE_THRESHOLD,
                  mirror: bool = False, window: int | None = None, names=("reference", "attempt"),
                  performers: tuple[Performer, Performer] | None = None) -> dict:
    """DTW-align the main performers of two performances and score them.

    Frames without the performer are left out of the alignment (their times stay true in the
    report); the score is ``engine.analysis.answers.movement_score`` (one stable keypoint set, each
    performance interpolated to its alignment rate, DTW), the one a clip search hit gets too.
    ``window`` is in frames. ``performers``: the two main performers when
    already found (``engine.analysis.people.main_performer``).

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


def render_comparison(report: dict, reference: VideoPoses, attempt: VideoPoses,
                      performers: tuple[Performer, Performer], out_dir: Path, sources: tuple,
                      fps: float | None = None) -> dict:
    """Write ``side_by_side.mp4`` (both skeletons per aligned step, limbs of parts under the
    threshold red, and the reference's drawn thin and white over the attempt; each side cropped to
    the part of its video its performer uses when that is at most half the frame), ``scores.png`` and, for each of the reference and the attempt,
    ``<role>_person.jpg`` (a frame with the person followed boxed) into ``out_dir``; returns
    their paths."""
    threshold = report["threshold"]
    r_perf, a_perf = performers
    r_at = {int(f): n for n, f in enumerate(reference.frame_indices)}
    a_at = {int(f): n for n, f in enumerate(attempt.frame_indices)}
    r_cursor = FrameCursor(sources[0], reference.info, fps)
    a_cursor = FrameCursor(sources[1], attempt.info, fps)
    # Large frames with a small performer: each side shows the part of its video the performer uses.
    crops = [performer_crop(p.boxes, p.present, v.info.width, v.info.height)
             for p, v in ((r_perf, reference), (a_perf, attempt))]

    def cropped(frame, side):
        crop = crops[side]
        return frame if crop is None else np.ascontiguousarray(frame[crop[1]:crop[3], crop[0]:crop[2]])

    def frames():
        for step in report["steps"]:
            parts = np.array([100.0 if p is None else p for p in step["parts"].values()])
            rf, af = step["reference_frame"], step["attempt_frame"]
            left = draw_skeleton(r_cursor.get(rf), r_perf.poses[r_at[rf]], parts, threshold)
            right = draw_skeleton(a_cursor.get(af), a_perf.poses[a_at[af]], parts, threshold)
            draw_ghost(right, r_perf.poses[r_at[rf]], a_perf.poses[a_at[af]], report["mirrored"])
            yield side_by_side(cropped(left, 0), cropped(right, 1), height=None if crops == [None, None] else 480,
                               captions=(f"reference {step['reference_time']:.2f}s",
                                         f"attempt {step['attempt_time']:.2f}s  score {step['score']:.0f}"))

    video = write_video(out_dir / "side_by_side.mp4", frames(), fps or reference.info.fps or 25.0)
    steps = report["steps"]
    plot = plot_scores(out_dir / "scores.png", [s["reference_time"] for s in steps], [s["score"] for s in steps],
                       [(s["reference_frame"], s["attempt_frame"]) for s in steps], threshold,
                       title=f"score {report['score']:.1f}")
    followed = {f"{role}_person": str(_followed_thumbnail(out_dir / f"{role}_person.jpg", source, poses, performer,
                                                          report[role], fps))
                for role, source, poses, performer in (("reference", sources[0], reference, r_perf),
                                                       ("attempt", sources[1], attempt, a_perf))}
    return {"video": str(video), "plot": str(plot), **followed}


def _followed_thumbnail(path: Path, source, poses: VideoPoses, performer: Performer, summary: dict,
                        fps: float | None) -> Path:
    """A frame of ``source`` with ``performer`` boxed, from the middle of its frames, captioned
    with its track id (``summary``: the report's source summary)."""
    rows = np.flatnonzero(performer.present)
    row = int(rows[len(rows) // 2])
    frame = FrameCursor(source, poses.info, fps).get(int(poses.frame_indices[row]))
    return write_image(path, person_thumbnail(frame, performer.boxes[row], f"track {summary['performer_track']}"))


def compare_job(reference, attempt, client, *, out_dir=None, threshold=SCORE_THRESHOLD, mirror=False,
                fps=None, window=None, csv=None, progress: Progress | None = None, person=None,
                reference_person=None) -> dict:
    """``posescore compare``: the report dict; with ``out_dir``, also report.json, the
    side-by-side video and the score plot there; with ``csv``, one row per aligned step.
    ``person`` / ``reference_person``: whom to follow in the attempt / the reference
    (``engine.analysis.people.parse_person``: a track id, ``X,Y@T``, ``X0,Y0,X1,Y1@T``, or auto:
    None), chosen by ``jobs.inputs.choose_performers``."""
    check_movement_source(reference, "reference")
    check_movement_source(attempt, "attempt")
    ref = load_poses(reference, client, fps=fps, progress=progress)
    att = load_poses(attempt, client, fps=fps, progress=progress)
    # Tracking runs once per video; the report's sources say whom each follows and how chosen.
    performers = choose_performers(ref, att, (str(reference), str(attempt)), person=person,
                                   reference_person=reference_person, mirror=mirror, window=window)
    report = compare_poses(ref, att, threshold=threshold, mirror=mirror, window=window,
                           names=(str(reference), str(attempt)), performers=performers)
    if csv:
        report["outputs"] = {"csv": str(formats.write_steps_csv(csv, [(None, report)]))}
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        report.setdefault("outputs", {}).update(render_comparison(report, ref, att, performers, out,
                                                                  (reference, attempt), fps))
        report["outputs"]["report"] = str(out / "report.json")
        report["outputs"]["page"] = str(write_compare_page(out / "report.html", report, report["outputs"]["video"]))
        (out / "report.json").write_text(formats.json_text(report, indent=1))
    return report
