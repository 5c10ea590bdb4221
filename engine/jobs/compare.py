"""``posescore compare``: two performances DTW-aligned and scored, part by part, step by step."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from posescore.engine.analysis.people import Performer
from posescore.engine.analysis.report import compare_poses
from posescore.engine.analysis.view import performers_in_3d
from posescore.engine.jobs.inputs import FrameCursor, Progress, check_movement_source, choose_performers, load_poses
from posescore.engine.media import pose_files as formats
from posescore.engine.media.encode import write_video
from posescore.engine.poses import VideoPoses
from posescore.engine.reports.page import write_compare_page
from posescore.engine.reports.render import (draw_ghost, draw_skeleton, performer_crop, person_thumbnail, plot_scores,
                                            side_by_side, write_image)
from posescore.kernels import SCORE_THRESHOLD


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
                reference_person=None, three_d: bool = False) -> dict:
    """``posescore compare``: the report dict; with ``out_dir``, also report.json, the
    side-by-side video and the score plot there; with ``csv``, one row per aligned step.
    ``person`` / ``reference_person``: whom to follow in the attempt / the reference
    (``engine.analysis.people.parse_person``: a track id, ``X,Y@T``, ``X0,Y0,X1,Y1@T``, or auto:
    None), chosen by ``jobs.inputs.choose_performers``. ``three_d``: both performances taken in
    world coordinates, each turned once to face one way and seen from one viewpoint
    (``engine.analysis.view``), the joints' angles measured in 3-D: a score that holds when the
    cameras stood apart."""
    check_movement_source(reference, "reference")
    check_movement_source(attempt, "attempt")
    ref = load_poses(reference, client, fps=fps, progress=progress, landmarks=three_d)
    att = load_poses(attempt, client, fps=fps, progress=progress, landmarks=three_d)
    # Tracking runs once per video; the report's sources say whom each follows and how chosen.
    performers = choose_performers(ref, att, (str(reference), str(attempt)), person=person,
                                   reference_person=reference_person, mirror=mirror, window=window)
    scored = performers_in_3d(*performers) if three_d else performers
    report = compare_poses(ref, att, threshold=threshold, mirror=mirror, window=window,
                           names=(str(reference), str(attempt)), performers=scored, world_angles=three_d)
    report["view"] = "3d" if three_d else "2d"
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
