"""The jobs behind the CLI: pose, compare, find, index, search.

Keypoints come from Triton through ``clients`` (``engine.jobs.extract.extract_poses``) or from a pose JSON
file; every score comes from ``kernels``. Each job returns a JSON-ready dict; the CLI prints it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from posescore import kernels
from posescore.kernels import distance_for_score
from posescore.kernels.skeleton import FLIP_PERMUTATION, JOINT_NAMES, PART_NAMES, joint_angles

from posescore.engine.archive import store as archive_io
from posescore.engine.archive.store import open_archive
from posescore.engine.media import pose_files as formats
from posescore.engine.media.pose_files import is_poses_json, to_alphapose, write_alphapose
from posescore.engine.media.encode import write_video
from posescore.engine.jobs.extract import extract_poses
from posescore.engine.analysis.people import Performer, image_person, main_performer, track_people
from posescore.engine.poses import VideoPoses
from posescore.engine.reports.render import captioned, draw_skeleton, plot_rep_scores, plot_scores, side_by_side, write_image
from posescore.engine.reports.page import write_compare_page, write_reps_page
from posescore.engine.analysis.reps import REP_MAX_RATIO, REP_MIN_RATIO, REP_MIN_SCORE, find_reps
from posescore.engine.archive.search import CLIP_MIN_SCORE, MOMENT_GAP_S, SearchFilter, hit_poses, search_archive
from posescore.engine.archive.sharded import ShardedSearch, ShardError
from posescore.engine.analysis.answers import movement_score, score_answer
from posescore.engine.media.video import iter_frames, read_image

Progress = Callable[[int, int], None]


class JobError(ValueError):
    """A job that cannot run on its inputs; the message names the file and the problem."""


def load_poses(source: str | Path, client=None, *, fps: float | None = None,
               progress: Progress | None = None) -> VideoPoses:
    """Every person in every frame of an image, a video (through the pose model) or a pose JSON
    (:func:`engine.media.pose_files.load_poses`), after checking that ``source`` exists."""
    if not Path(source).exists():
        raise JobError(f"{source}: no such file")
    return formats.load_poses(source, client, fps=fps, progress=progress)


def single_pose(source: str | Path, client=None, person: int | None = None) -> np.ndarray:
    """The main person ``[17, 3]`` of an image or pose JSON (or person number ``person``)."""
    return np.asarray(image_person(load_poses(source, client), person).pose, np.float32)


# -- pose -------------------------------------------------------------------------------------

def pose_job(source, client, out: str | Path | None = None, fps: float | None = None,
             progress: Progress | None = None) -> list[dict]:
    """AlphaPose / COCO results records of every person in ``source``; written to ``out`` if given."""
    poses = load_poses(source, client, fps=fps, progress=progress)
    records = to_alphapose(poses, track_people(poses) if poses.keypoints.shape[0] > 1 else None)
    if out:
        write_alphapose(out, records)
    return records


# -- compare ----------------------------------------------------------------------------------

def _performer(poses: VideoPoses, name, performer: Performer | None = None) -> tuple[np.ndarray, Performer]:
    """(frame positions where the main performer is present, the Performer; found when None)."""
    performer = performer or main_performer(poses)
    present = np.flatnonzero(performer.present)
    if len(present) < 2:
        raise JobError(f"{name}: the performer is visible in {len(present)} frame(s); "
                       f"need at least 2 to compare movements")
    return present, performer


def compare_poses(reference: VideoPoses, attempt: VideoPoses, *, threshold: float = 80.0,
                  mirror: bool = False, window: int | None = None, names=("reference", "attempt"),
                  performers: tuple[Performer, Performer] | None = None) -> dict:
    """DTW-align the main performers of two performances and score them.

    Frames without the performer are left out of the alignment (their times stay true in the
    report); the score is ``engine.analysis.answers.movement_score`` (one stable keypoint set, each
    performance interpolated to its alignment rate, DTW), the one a clip search hit gets too.
    ``window`` is in frames. ``performers``: the two main performers when
    already found (``engine.analysis.people.main_performer``).

    Returns the report dict: overall 0-100 score (``kernels.dtw_score``), DTW distance, the six part
    scores along the path (``kernels.aligned_part_scores``), one entry per aligned step (a step for
    every real frame on the path, paired with the nearest real frame of the other performance:
    frames, times, score, part scores) and the worst moments with the part that is most off.
    """
    r_perf, a_perf = performers or (None, None)
    r_pos, r_perf = _performer(reference, names[0], r_perf)
    a_pos, a_perf = _performer(attempt, names[1], a_perf)
    scored = movement_score(r_perf.poses[r_pos], reference.info.fps, a_perf.poses[a_pos], attempt.info.fps,
                            mirror=mirror, window=window)
    score, mirrored, window, (fr, fa) = scored.score, scored.mirrored, scored.window, scored.factors
    r_vec, r_w, a_vec, a_w = (scored.reference_vectors, scored.reference_weights, scored.attempt_vectors,
                              scored.attempt_weights)
    path, distance = kernels.dtw_path(r_vec, a_vec, window=window)
    # Overall part scores over the whole path; per-step values only for the steps reported.
    step_parts, parts, valid = kernels.aligned_part_scores(r_vec, r_w, a_vec, a_w, path)
    chosen, r_at, a_at = _frame_steps(path, fr, fa)
    step_parts, valid = step_parts[chosen], valid[chosen]
    i, j = path[chosen, 0], path[chosen, 1]
    step_scores = kernels.score_from_distance(np.linalg.norm(r_vec[i] - a_vec[j], axis=1), "cosine")
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
        "reference": _source_summary(reference, r_perf, names[0]),
        "attempt": _source_summary(attempt, a_perf, names[1]),
        "score": round(float(score), 2),
        "distance": round(float(distance), 4),
        "mirrored": bool(mirrored),
        "threshold": threshold,
        "samples_per_frame": {"reference": fr, "attempt": fa},
        # None: a part never visible in both performances cannot be scored.
        "parts": {name: round(float(p), 2) if seen else None
                  for name, p, seen in zip(PART_NAMES, parts, valid.any(axis=0))},
        "parts_under_threshold": [name for name, p, seen in zip(PART_NAMES, parts, valid.any(axis=0))
                                  if seen and p < threshold],
        "worst_moments": _worst_moments(steps, step_scores),
        "steps": steps,
    }


def _step_angles(reference: np.ndarray, attempt: np.ndarray, r_at: np.ndarray, a_at: np.ndarray,
                 mirrored: bool) -> tuple[np.ndarray, np.ndarray]:
    """Joint angles ``[S, 8]`` (``kernels.skeleton.joint_angles``, degrees) of both performers at
    each step: performer frames ``[R, 17, 3]`` / ``[A, 17, 3]``, with the pose model's left/right
    flicker undone, and the attempt's sides swapped when it matched mirrored (its left knee is
    then compared with the reference's right)."""
    r_poses, a_poses = kernels.consistent_sides(reference), kernels.consistent_sides(attempt)
    if mirrored:
        a_poses = a_poses[:, list(FLIP_PERMUTATION)]
    return joint_angles(r_poses[r_at]), joint_angles(a_poses[a_at])


def _angle_entries(reference: np.ndarray, attempt: np.ndarray) -> dict:
    """``{joint: {"reference": deg, "attempt": deg, "difference": attempt - reference}}`` rounded to
    0.1 degree; None where a keypoint of the joint is missing."""
    def value(x):
        return None if not np.isfinite(x) else round(float(x), 1)

    return {name: {"reference": value(r), "attempt": value(a), "difference": value(a - r)}
            for name, r, a in zip(JOINT_NAMES, reference, attempt)}


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


def _source_summary(poses: VideoPoses, performer, name) -> dict:
    return {"path": str(name), "fps": round(float(poses.info.fps), 3), "frames": int(poses.keypoints.shape[0]),
            "performer_track": int(performer.track), "frames_with_performer": int(performer.present.sum())}


def _worst_moments(steps: list[dict], step_scores: np.ndarray, count: int = 5) -> list[dict]:
    """The lowest-scoring steps, at least MOMENT_GAP_S of reference time apart, each with the part
    that is most off and its mean limb/joint angle difference (the inverse of the angle scale),
    every joint angle of both, and the joint whose flexion differs most (``joint``,
    ``joint_angles``)."""
    chosen: list[dict] = []
    for n in np.argsort(step_scores, kind="stable"):
        step = steps[n]
        if any(abs(step["reference_time"] - c["reference_time"]) < MOMENT_GAP_S for c in chosen):
            continue
        scored_parts = {k: v for k, v in step["parts"].items() if v is not None}
        worst = min(scored_parts, key=scored_parts.get) if scored_parts else None
        angle = None if worst is None else min(180.0, np.degrees(distance_for_score(scored_parts[worst], "angle")))
        joints = {k: v for k, v in step["angles"].items() if v["difference"] is not None}
        joint = max(joints, key=lambda k: abs(joints[k]["difference"])) if joints else None
        chosen.append({**{k: step[k] for k in ("reference_frame", "reference_time", "attempt_frame",
                                               "attempt_time", "score")},
                       "worst_part": worst, "worst_part_score": scored_parts.get(worst),
                       "angle_difference_deg": None if angle is None else round(float(angle), 1),
                       "joint": joint, "joint_angles": None if joint is None else joints[joint],
                       "angles": step["angles"]})
        if len(chosen) == count:
            break
    return chosen


class _FrameCursor:
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


def render_comparison(report: dict, reference: VideoPoses, attempt: VideoPoses,
                      performers: tuple[Performer, Performer], out_dir: Path, sources: tuple,
                      fps: float | None = None) -> dict:
    """Write ``side_by_side.mp4`` (both skeletons per aligned step, limbs of parts under the
    threshold red) and ``scores.png`` into ``out_dir``; returns their paths."""
    threshold = report["threshold"]
    r_perf, a_perf = performers
    r_at = {int(f): n for n, f in enumerate(reference.frame_indices)}
    a_at = {int(f): n for n, f in enumerate(attempt.frame_indices)}
    r_cursor = _FrameCursor(sources[0], reference.info, fps)
    a_cursor = _FrameCursor(sources[1], attempt.info, fps)

    def frames():
        for step in report["steps"]:
            parts = np.array([100.0 if p is None else p for p in step["parts"].values()])
            rf, af = step["reference_frame"], step["attempt_frame"]
            left = draw_skeleton(r_cursor.get(rf), r_perf.poses[r_at[rf]], parts, threshold)
            right = draw_skeleton(a_cursor.get(af), a_perf.poses[a_at[af]], parts, threshold)
            yield side_by_side(left, right, captions=(f"reference {step['reference_time']:.2f}s",
                                                      f"attempt {step['attempt_time']:.2f}s  score {step['score']:.0f}"))

    video = write_video(out_dir / "side_by_side.mp4", frames(), fps or reference.info.fps or 25.0)
    steps = report["steps"]
    plot = plot_scores(out_dir / "scores.png", [s["reference_time"] for s in steps], [s["score"] for s in steps],
                       [(s["reference_frame"], s["attempt_frame"]) for s in steps], threshold,
                       title=f"score {report['score']:.1f}")
    return {"video": str(video), "plot": str(plot)}


def compare_job(reference, attempt, client, *, out_dir=None, threshold=80.0, mirror=False,
                fps=None, window=None, csv=None, progress: Progress | None = None) -> dict:
    """``posescore compare``: the report dict; with ``out_dir``, also report.json, the
    side-by-side video and the score plot there; with ``csv``, one row per aligned step."""
    ref = load_poses(reference, client, fps=fps, progress=progress)
    att = load_poses(attempt, client, fps=fps, progress=progress)
    # Tracking runs once per video (in the order and with the checks of compare_poses).
    performers = _performer(ref, str(reference))[1], _performer(att, str(attempt))[1]
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


# -- reps -------------------------------------------------------------------------------------

def _performer_rows(performer: Performer, rows: np.ndarray) -> Performer:
    """``performer`` on the rows ``rows`` of its video only (as ``VideoPoses.select``)."""
    return Performer(poses=performer.poses[rows], present=performer.present[rows], track=performer.track,
                     boxes=performer.boxes[rows], scores=performer.scores[rows],
                     frame_indices=performer.frame_indices[rows], times=performer.times[rows])


def reps_poses(reference: VideoPoses, attempt: VideoPoses, *, start: float | None = None, end: float | None = None,
               threshold: float = 80.0, mirror: bool = False, min_ratio: float = REP_MIN_RATIO,
               max_ratio: float = REP_MAX_RATIO, min_score: float = REP_MIN_SCORE,
               names=("reference", "attempt"), performers: tuple[Performer, Performer] | None = None) -> dict:
    """Every repetition of the reference movement (its frames from ``start`` to ``end`` seconds,
    default all) in the attempt (``engine.analysis.reps.find_reps``), each with ``compare``'s report of
    that segment against the reference (:func:`compare_poses`: the same score). Returns the
    report dict: ``count``, ``reps`` (number, frames, times, duration, score, parts, worst part,
    worst moment, ``flagged`` when under ``threshold``, the full ``report``). ``performers``: the
    two main performers when already found (``engine.analysis.people.main_performer``)."""
    r_perf, a_perf = performers or (None, None)
    r_perf = _performer(reference, names[0], r_perf)[1]
    rows = np.arange(len(reference))
    if start is not None or end is not None:
        keep = (reference.times >= (start if start is not None else -np.inf)) & \
               (reference.times <= (end if end is not None else np.inf))
        rows = np.flatnonzero(keep)
    reference, r_perf = reference.select(rows), _performer_rows(r_perf, rows)
    until = "the end" if end is None else f"{end:g} s"
    r_pos, r_perf = _performer(reference, f"{names[0]} (from {start or 0:g} s to {until})", r_perf)
    a_pos, a_perf = _performer(attempt, names[1], a_perf)
    found = find_reps(r_perf.poses[r_pos], reference.info.fps, a_perf.poses[a_pos], attempt.times[a_pos],
                      attempt.info.fps, min_ratio=min_ratio, max_ratio=max_ratio, min_score=min_score, mirror=mirror)
    reps = []
    for number, rep in enumerate(found, 1):
        span = np.arange(a_pos[rep.first], a_pos[rep.last] + 1)
        report = compare_poses(reference, attempt.select(span), threshold=threshold, mirror=mirror,
                               names=(names[0], f"{names[1]} rep {number}"),
                               performers=(r_perf, _performer_rows(a_perf, span)))
        scored = {k: v for k, v in report["parts"].items() if v is not None}
        first, last = int(span[0]), int(span[-1])
        reps.append({"rep": number, "start_frame": int(attempt.frame_indices[first]),
                     "end_frame": int(attempt.frame_indices[last]),
                     "start_time": round(float(attempt.times[first]), 3),
                     "end_time": round(float(attempt.times[last]), 3),
                     "duration": round(float(attempt.times[last] - attempt.times[first]), 3),
                     "score": report["score"], "flagged": report["score"] < threshold,
                     "backwards": rep.backwards,
                     "parts": report["parts"], "worst_part": min(scored, key=scored.get) if scored else None,
                     "worst_moment": report["worst_moments"][0] if report["worst_moments"] else None,
                     "report": report})
    times = reference.times[r_pos]
    return {"reference": {**_source_summary(reference, r_perf, names[0]),
                          "start_time": round(float(times[0]), 3), "end_time": round(float(times[-1]), 3)},
            "attempt": _source_summary(attempt, a_perf, names[1]),
            "threshold": threshold, "min_score": min_score, "count": len(reps),
            "flagged": [r["rep"] for r in reps if r["flagged"]], "reps": reps}


def render_reps(result: dict, attempt: VideoPoses, performer: Performer, out_dir: Path, source,
                fps: float | None = None) -> dict:
    """Write ``reps.mp4`` (the attempt, the performer's skeleton coloured by its repetition's part
    scores, each repetition's number and score drawn) and ``reps.png`` (score per repetition)."""
    threshold = result["threshold"]
    cursor = _FrameCursor(source, attempt.info, fps)
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


def reps_job(reference, attempt, client, *, start=None, end=None, threshold=80.0, mirror=False, fps=None,
             min_ratio=REP_MIN_RATIO, max_ratio=REP_MAX_RATIO, min_score=REP_MIN_SCORE, out_dir=None,
             csv=None, progress: Progress | None = None) -> dict:
    """``posescore reps``: :func:`reps_poses` of two videos or pose JSON files; with ``out_dir``
    also reps.json, reps.mp4, reps.png and report.html there; with ``csv`` one row per aligned
    step of every repetition."""
    ref = load_poses(reference, client, fps=fps, progress=progress)
    att = load_poses(attempt, client, fps=fps, progress=progress)
    # Tracking runs once per video (in the order and with the checks of reps_poses).
    performers = _performer(ref, str(reference))[1], _performer(att, str(attempt))[1]
    result = reps_poses(ref, att, start=start, end=end, threshold=threshold, mirror=mirror, min_ratio=min_ratio,
                        max_ratio=max_ratio, min_score=min_score, names=(str(reference), str(attempt)),
                        performers=performers)
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


# -- find -------------------------------------------------------------------------------------

def find_moments(query: np.ndarray, poses: VideoPoses, k: int = 5, mirror: bool = False) -> list[dict]:
    """The ``k`` moments of ``poses`` (every person) most similar to ``query [17, 3]``, best first,
    at least MOMENT_GAP_S apart: frame, time, person, score and part scores (the score service's
    answer, ``engine.analysis.answers.score_answer``, over every pose)."""
    frame_no, person, keypoints = poses.people()
    if len(frame_no) == 0:
        raise JobError(f"{poses.info.path}: no person detected in any frame")
    scores, parts, mirrored, scored = score_answer(query, keypoints, mirror=mirror)
    found: list[dict] = []
    for n in np.argsort(-scores, kind="stable"):
        time = float(poses.times[frame_no[n]])
        if any(abs(time - f["time"]) < MOMENT_GAP_S for f in found):
            continue
        found.append({"frame": int(poses.frame_indices[frame_no[n]]), "time": round(time, 3),
                      "person": int(person[n]), "score": round(float(scores[n]), 2),
                      "parts": {name: round(float(p), 2) if ok else None
                                for name, p, ok in zip(PART_NAMES, parts[n], scored[n])},
                      "mirrored": bool(mirrored[n])})
        if len(found) == k:
            break
    return found


def find_job(pose_source, video, client, *, k=5, mirror=False, out_dir=None, fps=None,
             progress: Progress | None = None) -> dict:
    """``posescore find``: the k best moments; with ``out_dir`` also ``best_match.png`` (the query
    and the best frame side by side, skeletons coloured by part score)."""
    query = single_pose(pose_source, client)
    poses = load_poses(video, client, fps=fps, progress=progress)
    moments = find_moments(query, poses, k=k, mirror=mirror)
    result = {"pose": str(pose_source), "video": str(video), "moments": moments}
    if out_dir and moments:
        best = moments[0]
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        parts = np.array([100.0 if p is None else p for p in best["parts"].values()])
        if is_poses_json(pose_source):
            left = np.full((poses.info.height or 480, poses.info.width or 640, 3), 40, np.uint8)
        else:
            left = read_image(pose_source)
        frame = _FrameCursor(video, poses.info, fps).get(best["frame"])
        row = int(np.flatnonzero(poses.frame_indices == best["frame"])[0])
        image = side_by_side(draw_skeleton(left, query, parts, None),
                             draw_skeleton(frame, poses.keypoints[row, best["person"]], parts, None),
                             captions=("pose", f"{best['time']:.2f}s  score {best['score']:.0f}"))
        result["outputs"] = {"best_match": str(write_image(out / "best_match.png", image))}
    return result


# -- index and search ---------------------------------------------------------------------------

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


def search_job(archive_dir, client=None, *, pose=None, clip=None, k=10, fps=None, min_gap=MOMENT_GAP_S,
               video=None, start=None, end=None, min_score=CLIP_MIN_SCORE, explain=None, out_dir=None,
               shard_urls=None, allow_partial=False, timeout=60.0) -> dict:
    """``posescore search``: the moments most like a pose (``pose``) or the movements most like a
    clip (``clip``) in the archive, filtered by video name/path glob and time range; ``explain``
    (1-based) adds ``compare``'s full report of that clip hit (and its files under ``out_dir``).
    With ``shard_urls`` the archive (a folder under every server's archive root) is searched by
    those servers, server i answering shard i/N, and their parts merged (``engine.archive.sharded``);
    ``allow_partial`` answers without shards that fail (named in ``missing``); ``timeout``: seconds
    each shard has to answer each request."""
    if allow_partial and not shard_urls:
        raise JobError("--allow-partial: takes a search over --shard-url servers")
    if not shard_urls or explain is not None:
        archive = open_archive(archive_dir)
    where = SearchFilter(video=video, start=start, end=end)
    if pose is not None:
        if explain is not None:
            raise JobError("--explain: takes a --clip search (a movement), not a --pose one")
        query, query_fps = single_pose(pose, client)[None], None
        query_poses = None
    else:
        query_poses = load_poses(clip, client, fps=fps)
        performer = main_performer(query_poses)
        query, query_fps = performer.poses[performer.present], query_poses.info.fps
        if len(query) < 2:
            raise JobError(f"{clip}: the performer is visible in fewer than 2 frames")
    missing = None
    if shard_urls:
        try:
            with ShardedSearch(shard_urls, timeout=timeout, allow_partial=allow_partial) as shards:
                answer = shards.search(str(archive_dir), query, k, query_fps=query_fps, min_gap=min_gap, where=where,
                                       min_score=min_score)
        except ShardError as err:
            raise JobError(str(err)) from None
        matches, missing = answer.hits, answer.missing
    else:
        matches = search_archive(archive, query, k, query_fps=query_fps, min_gap=min_gap, where=where,
                                 min_score=min_score)
    for hit in matches:
        hit.update(start_time=round(hit["start_time"], 3), end_time=round(hit["end_time"], 3),
                   score=round(hit["score"], 2))
    result = {"archive": str(archive_dir), "query": str(pose or clip), "matches": matches}
    if missing is not None:
        result["shards"] = {"servers": list(shard_urls), "missing": missing}
    if explain is not None:
        if not 1 <= explain <= len(matches):
            raise JobError(f"--explain: expected a hit number from 1 to {len(matches)}, got {explain}")
        hit = matches[explain - 1]
        found = hit_poses(archive, hit)  # one track: the archive's, not a new tracking of it
        report = compare_poses(query_poses, found, names=(str(clip), hit["video"]),
                               performers=(performer, main_performer(found, found.tracks)))
        result["explain"] = {"hit": explain, "report": report}
        if out_dir:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            path = out / "report.json"
            path.write_text(formats.json_text(report, indent=1))
            result["outputs"] = {"report": str(path)}
    return result
