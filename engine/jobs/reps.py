"""``posescore reps``: every repetition of a reference movement in a performance, each scored as
``compare`` scores it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from posescore.engine.analysis.people import Performer, performer_frames, performer_rows
from posescore.engine.analysis.reps import REP_MAX_RATIO, REP_MIN_RATIO, REP_MIN_SCORE, search_reps
from posescore.engine.analysis.report import rep_row, source_summary
from posescore.engine.analysis.view import performer_in_3d
from posescore.engine.jobs.inputs import FrameCursor, Progress, check_movement_source, choose_performers, load_poses
from posescore.engine.media import pose_files as formats
from posescore.engine.media.encode import write_video
from posescore.engine.poses import VideoPoses
from posescore.engine.reports.page import write_reps_page
from posescore.engine.reports.render import captioned, draw_skeleton, plot_rep_scores
from posescore.kernels import SCORE_THRESHOLD


def reps_poses(reference: VideoPoses, attempt: VideoPoses, *, start: float | None = None, end: float | None = None,
               threshold: float = SCORE_THRESHOLD, mirror: bool = False, min_ratio: float = REP_MIN_RATIO,
               max_ratio: float = REP_MAX_RATIO, min_score: float = REP_MIN_SCORE,
               names=("reference", "attempt"), performers: tuple[Performer, Performer] | None = None,
               person=None, reference_person=None, three_d: bool = False) -> dict:
    """Every repetition of the reference movement (its frames from ``start`` to ``end`` seconds,
    default all) in the attempt (``engine.analysis.reps.find_reps``), each with ``compare``'s report of
    that segment against the reference (:func:`compare_poses`: the same score). Returns the
    report dict: ``count``, ``reps`` (number, frames, times, duration, score, parts, worst part,
    worst moment, ``flagged`` when under ``threshold``, the full ``report``). ``performers``: the
    two performers when already chosen, else chosen by ``jobs.inputs.choose_performers`` from
    ``person`` / ``reference_person`` (a track id, ``X,Y@T``, ``X0,Y0,X1,Y1@T``, or auto: None; the
    reference's over its rows from ``start`` to ``end``, the attempt's by its best repetition).
    ``three_d``: both performers in world coordinates, each turned once for its whole video
    (``engine.analysis.view.performer_in_3d``), the joints' angles measured in 3-D."""
    rows = reference_rows(reference, start, end)
    if performers is None:
        performers = choose_performers(reference, attempt, names, person=person, reference_person=reference_person,
                                       mirror=mirror, reference_rows=rows, repetition_ratio=min_ratio)
    r_perf, a_perf = performers
    if three_d:
        r_perf, a_perf = performer_in_3d(r_perf), performer_in_3d(a_perf)
    r_perf = performer_frames(reference, names[0], r_perf)[1]
    reference, r_perf = reference.select(rows), performer_rows(r_perf, rows)
    until = "the end" if end is None else f"{end:g} s"
    r_pos, r_perf = performer_frames(reference, f"{names[0]} (from {start or 0:g} s to {until})", r_perf)
    a_pos, a_perf = performer_frames(attempt, names[1], a_perf)
    search = search_reps(r_perf.poses[r_pos], reference.rate, a_perf.poses[a_pos], attempt.times[a_pos],
                         attempt.rate, min_ratio=min_ratio, max_ratio=max_ratio, min_score=min_score,
                         mirror=mirror)
    reps = [rep_row(number, reference, r_perf, attempt, a_perf, a_pos[rep.first], a_pos[rep.last], rep.backwards,
                    threshold=threshold, mirror=mirror, names=names, world_angles=three_d)
            for number, rep in enumerate(search.reps, 1)]
    times = reference.times[r_pos]
    return {"reference": {**source_summary(reference, r_perf, names[0]),
                          "start_time": round(float(times[0]), 3), "end_time": round(float(times[-1]), 3)},
            "attempt": source_summary(attempt, a_perf, names[1]),
            "threshold": threshold, "min_score": min_score, "count": len(reps),
            "flagged": [r["rep"] for r in reps if r["flagged"]], "reps": reps,
            **({"no_reps": _miss_summary(search.miss, attempt, a_pos)} if search.miss else {})}


def _miss_summary(miss, attempt: VideoPoses, positions: np.ndarray) -> dict:
    """A report's ``no_reps``: why no repetition was found (``reason``) and the segment that came
    nearest (``nearest``: frames, times, score, backwards; None when none could be weighed)."""
    if miss.first is None:
        return {"reason": miss.reason, "nearest": None}
    first, last = int(positions[miss.first]), int(positions[miss.last])
    return {"reason": miss.reason,
            "nearest": {"start_frame": int(attempt.frame_indices[first]), "end_frame": int(attempt.frame_indices[last]),
                        "start_time": round(float(attempt.times[first]), 3),
                        "end_time": round(float(attempt.times[last]), 3),
                        "score": miss.score, "backwards": miss.backwards}}


def reference_rows(reference: VideoPoses, start: float | None, end: float | None) -> np.ndarray:
    """The rows of ``reference`` from ``start`` to ``end`` seconds (None: its first / last)."""
    keep = (reference.times >= (start if start is not None else -np.inf)) & \
           (reference.times <= (end if end is not None else np.inf))
    return np.flatnonzero(keep)


def render_reps(result: dict, attempt: VideoPoses, performer: Performer, out_dir: Path, source,
                fps: float | None = None) -> dict:
    """Write ``reps.mp4`` (the attempt, the performer's skeleton coloured by its repetition's part
    scores, each repetition's number and score drawn) and ``reps.png`` (score per repetition)."""
    threshold = result["threshold"]
    cursor = FrameCursor(source, attempt.info, fps)
    spans = [(r["start_frame"], r["end_frame"], r) for r in result["reps"]]
    scale = min(1.0, 720 / max(1, attempt.info.height or 720))

    def frames():
        for row, frame_index in enumerate(attempt.frame_indices.tolist()):
            rep = next((r for lo, hi, r in spans if lo <= frame_index <= hi), None)
            frame = cursor.get(frame_index)
            if performer.present[row]:
                parts = None if rep is None else np.array([100.0 if p is None else p for p in rep["parts"].values()])
                frame = draw_skeleton(frame, performer.poses[row], parts, threshold if rep else None)
            if scale < 1:
                frame = cv2.resize(frame, (int(frame.shape[1] * scale) // 2 * 2, int(frame.shape[0] * scale) // 2 * 2),
                                   interpolation=cv2.INTER_AREA)
            text = (f"rep {rep['rep']}/{result['count']}  score {rep['score']:.0f}" if rep else
                    f"{attempt.times[row]:.1f}s")
            yield captioned(frame.copy(), text, 0.9)

    video = write_video(out_dir / "reps.mp4", frames(), fps or attempt.info.fps or 25.0)
    plot = plot_rep_scores(out_dir / "reps.png", [r["score"] for r in result["reps"]], threshold,
                           title=f"{result['count']} repetitions")
    return {"video": str(video), "plot": str(plot)}


def reps_job(reference, attempt, client, *, start=None, end=None, threshold=SCORE_THRESHOLD, mirror=False, fps=None,
             min_ratio=REP_MIN_RATIO, max_ratio=REP_MAX_RATIO, min_score=REP_MIN_SCORE, out_dir=None,
             csv=None, progress: Progress | None = None, person=None, reference_person=None,
             three_d: bool = False) -> dict:
    """``posescore reps``: :func:`reps_poses` of two videos or pose JSON files; with ``out_dir``
    also reps.json, reps.mp4, reps.png and report.html there; with ``csv`` one row per aligned
    step of every repetition. ``person`` / ``reference_person``: whom to follow (see
    :func:`reps_poses`)."""
    check_movement_source(reference, "reference")
    check_movement_source(attempt, "attempt")
    ref = load_poses(reference, client, fps=fps, progress=progress, landmarks=three_d)
    att = load_poses(attempt, client, fps=fps, progress=progress, landmarks=three_d)
    # Tracking runs once per video; the result's sources say whom each follows and how chosen.
    performers = choose_performers(ref, att, (str(reference), str(attempt)), person=person,
                                   reference_person=reference_person, mirror=mirror,
                                   reference_rows=reference_rows(ref, start, end), repetition_ratio=min_ratio)
    result = reps_poses(ref, att, start=start, end=end, threshold=threshold, mirror=mirror, min_ratio=min_ratio,
                        max_ratio=max_ratio, min_score=min_score, names=(str(reference), str(attempt)),
                        performers=performers, three_d=three_d)
    result["view"] = "3d" if three_d else "2d"
    if csv:
        formats.write_steps_csv(csv, [(r["rep"], r["report"]) for r in result["reps"]])
        result.setdefault("outputs", {})["csv"] = str(csv)
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        result.setdefault("outputs", {}).update(render_reps(result, att, performers[1], out, attempt, fps))
        result["outputs"]["report"] = str(out / "reps.json")
        result["outputs"]["page"] = str(write_reps_page(out / "report.html", result, result["outputs"]["video"]))
        (out / "reps.json").write_text(formats.json_text(result, indent=1))
    return result
