"""The jobs behind the CLI: pose, compare, find, index, search.

Keypoints come from Triton through ``clients`` (``engine.extract.extract_poses``) or from a pose JSON
file; every score comes from ``kernels``. Each job returns a JSON-ready dict; the CLI prints it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import numpy as np

import kernels
from kernels.skeleton import PART_NAMES

from . import archive as archive_io
from .archive import open_archive
from . import formats
from .formats import is_poses_json, to_alphapose, write_alphapose
from .encode import write_video
from .extract import extract_poses
from .people import Performer, image_person, main_performer, track_people
from .poses import VideoPoses
from .render import draw_skeleton, plot_scores, side_by_side, write_image
from .search import CLIP_MIN_SCORE, MOMENT_GAP_S, SearchFilter, hit_poses, search_archive
from .services import movement_score, score_answer
from .video import iter_frames, read_image

Progress = Callable[[int, int], None]


class JobError(ValueError):
    """A job that cannot run on its inputs; the message names the file and the problem."""


def load_poses(source: str | Path, client=None, *, fps: float | None = None,
               progress: Progress | None = None) -> VideoPoses:
    """Every person in every frame of an image, a video (through the pose model) or a pose JSON
    (:func:`engine.formats.load_poses`), after checking that ``source`` exists."""
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
    report); the score is ``engine.services.movement_score`` (one stable keypoint set, each
    performance interpolated to its alignment rate, DTW), the one a clip search hit gets too.
    ``window`` is in frames. ``performers``: the two main performers when
    already found (``engine.people.main_performer``).

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
    steps = [{"reference_frame": int(rf), "reference_time": round(float(rt), 3),
              "attempt_frame": int(af), "attempt_time": round(float(at), 3),
              "score": round(float(s), 2),
              "parts": {name: (round(float(p), 2) if ok else None) for name, p, ok in zip(PART_NAMES, sp, sv)}}
             for rf, rt, af, at, s, sp, sv in zip(r_frames, r_times, a_frames, a_times, step_scores,
                                                  step_parts, valid)]
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
    that is most off and its mean limb/joint angle difference (the inverse of the angle scale)."""
    chosen: list[dict] = []
    for n in np.argsort(step_scores, kind="stable"):
        step = steps[n]
        if any(abs(step["reference_time"] - c["reference_time"]) < MOMENT_GAP_S for c in chosen):
            continue
        scored_parts = {k: v for k, v in step["parts"].items() if v is not None}
        worst = min(scored_parts, key=scored_parts.get) if scored_parts else None
        angle = None if worst is None else (1 - scored_parts[worst] / 100) * np.degrees(kernels.SCORE_SCALES["angle"])
        chosen.append({**{k: step[k] for k in ("reference_frame", "reference_time", "attempt_frame",
                                               "attempt_time", "score")},
                       "worst_part": worst, "worst_part_score": scored_parts.get(worst),
                       "angle_difference_deg": None if angle is None else round(float(angle), 1)})
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
                fps=None, window=None, progress: Progress | None = None) -> dict:
    """``posescore compare``: the report dict; with ``out_dir``, also report.json, the
    side-by-side video and the score plot there."""
    ref = load_poses(reference, client, fps=fps, progress=progress)
    att = load_poses(attempt, client, fps=fps, progress=progress)
    # Tracking runs once per video (in the order and with the checks of compare_poses).
    performers = _performer(ref, str(reference))[1], _performer(att, str(attempt))[1]
    report = compare_poses(ref, att, threshold=threshold, mirror=mirror, window=window,
                           names=(str(reference), str(attempt)), performers=performers)
    if out_dir:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        report["outputs"] = render_comparison(report, ref, att, performers, out, (reference, attempt), fps)
        report["outputs"]["report"] = str(out / "report.json")
        (out / "report.json").write_text(formats.json_text(report, indent=1))
    return report


# -- find -------------------------------------------------------------------------------------

def find_moments(query: np.ndarray, poses: VideoPoses, k: int = 5, mirror: bool = False) -> list[dict]:
    """The ``k`` moments of ``poses`` (every person) most similar to ``query [17, 3]``, best first,
    at least MOMENT_GAP_S apart: frame, time, person, score and part scores (the score service's
    answer, ``engine.services.score_answer``, over every pose)."""
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


def index_job(videos, archive_dir, client, *, fps=None, progress_factory=None) -> dict:
    """``posescore index``: add each video's every detected pose to the archive (one segment and
    one catalog transaction per video); videos already there (same content) are skipped. Several
    index processes may write one archive at once."""
    for video in map(Path, videos):  # every input checked before any inference
        if not video.exists():
            raise JobError(f"{video}: no such file")
        if is_poses_json(video):
            raise JobError(f"{video}: a pose JSON file; index takes videos (their poses come from the pose model)")
    root = archive_io.create_archive(archive_dir)
    if not os.access(root, os.W_OK) or not os.access(root / archive_io.SEGMENTS, os.W_OK):
        raise JobError(f"{root}: the archive is not writable")
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
    poses = extract_poses(video, client, fps=fps, progress=progress)
    tracks = track_people(poses)
    frame_no, person, keypoints = poses.people()
    added = archive_io.add_video(
        root, vid, video.name, keypoints, poses.frame_indices[frame_no], poses.times[frame_no],
        tracks[frame_no, person], path=str(video.resolve()), fps=float(poses.info.fps),
        width=int(poses.info.width), height=int(poses.info.height), size=video.stat().st_size,
        frame_count=int(poses.info.frame_count), duration=float(poses.info.duration))
    known.add(vid)
    return {"video": str(video), "id": vid, "status": "indexed" if added else "already indexed",
            "poses": int(len(frame_no)), "frames": int(poses.keypoints.shape[0])}


def search_job(archive_dir, client=None, *, pose=None, clip=None, k=10, fps=None, min_gap=MOMENT_GAP_S,
               video=None, start=None, end=None, min_score=CLIP_MIN_SCORE, explain=None, out_dir=None) -> dict:
    """``posescore search``: the moments most like a pose (``pose``) or the movements most like a
    clip (``clip``) in the archive, filtered by video name/path glob and time range; ``explain``
    (1-based) adds ``compare``'s full report of that clip hit (and its files under ``out_dir``)."""
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
    matches = search_archive(archive, query, k, query_fps=query_fps, min_gap=min_gap, where=where,
                             min_score=min_score)
    for hit in matches:
        hit.update(start_time=round(hit["start_time"], 3), end_time=round(hit["end_time"], 3),
                   score=round(hit["score"], 2))
    result = {"archive": str(archive_dir), "query": str(pose or clip), "matches": matches}
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
