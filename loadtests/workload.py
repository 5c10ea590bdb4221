"""The inputs a load test sends and the known answer for each, built once before the run.

Every request of a load test is one of a fixed set of inputs whose answer is known in advance, so
every response is checked (a wrong answer is a failure, like an error):

- ``pose``: real frames sampled evenly over a video (default vtest.avi from Debian's opencv-doc),
  decoded with PyAV; the answer is the server's own first answer at idle, one request per input
  before the load starts (the pose model is deterministic; batching does not change its output).
- ``score``: one query pose against N candidates; the answer is ``engine.analysis.answers.score_answer``,
  the function the score model calls, run here.
- ``dtw``: a reference movement and a time-warped (sometimes mirrored) attempt; the answer is
  ``engine.analysis.answers.dtw_answer``, the function the dtw model calls.
- ``search``: pose and movement queries into an archive written once under the server's archive
  root (synthetic tracks, plus the poses found in the sampled frames when pose is in the mix); answer from
  ``engine.archive.service.search_archive`` on the same archive.
- ``live``: 30 fps streams of real recorded poses (the main person of the video's first seconds
  seen for a second at least, through the pose model, re-sampled to 30 fps): a second of theirs is
  the reference, and each stream plays it again several times, re-timed, sometimes backwards, with
  rests between; the answer is what ``posescore reps``
  finds offline in that stream (``engine.jobs.reps.reps_poses``).

Malformed and oversized requests (:data:`BAD_REQUESTS`) are expected to be refused with gRPC
``INVALID_ARGUMENT`` (a message over the model's ``max_request_bytes``: ``RESOURCE_EXHAUSTED``, from
the server's gRPC front) and a message naming the problem.

This module runs in the parent process (no gevent); the locust users load the pickled
:class:`Workload` and use the ``check_*`` functions.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from posescore.kernels.skeleton import NUM_KEYPOINTS
from posescore.loadtests.options import SAMPLE_VIDEO, TASKS

# Tolerances of the answer checks: the server may run the kernels batched (dtw) or on a GPU.
SCORE_ATOL = 1e-3
DISTANCE_RTOL = 1e-4
PIXEL_ATOL = 0.5
CONFIDENCE_ATOL = 1e-3

# Live streams: the seconds of the video searched (in chunks) for a walker, the streams' frame
# rate (the poses re-sampled to it), the reference's length, repetitions per stream,
# their speeds, and how closely a live repetition must agree with the offline one.
LIVE_SOURCE_S = 40.0
LIVE_CHUNK_S = 5.0
LIVE_FPS = 30.0
LIVE_REFERENCE_S = 1.0
LIVE_REPETITIONS = 4
LIVE_SPEEDS = (0.75, 1.0, 1.25)
LIVE_FRAMES_ATOL = 2
LIVE_SCORE_ATOL = 1.0
LIVE_CHECKED = ("rep", "start_frame", "end_frame", "score", "backwards")

# A standing person facing the camera, COCO-17 order, pixel offsets from the hip centre (~200 px tall).
_TEMPLATE = np.array([
    [0, -170], [8, -178], [-8, -178], [16, -172], [-16, -172],   # nose, eyes, ears
    [32, -130], [-32, -130], [42, -80], [-42, -80], [46, -35], [-46, -35],  # shoulders, elbows, wrists
    [18, 0], [-18, 0], [20, 55], [-20, 55], [22, 110], [-22, 110],  # hips, knees, ankles
], np.float64)


# Outcomes of a request, as written to requests.csv (here, not in users.py: the runner reads them
# and must not import locust).
OK, ERROR, WRONG, EXPECTED_ERROR, BAD_ACCEPTED, BAD_WRONG_ERROR, INTERRUPTED = (
    "ok", "error", "wrong-answer", "expected-error", "malformed-accepted", "malformed-wrong-error", "interrupted")
FAILURES = (ERROR, WRONG, BAD_ACCEPTED, BAD_WRONG_ERROR, INTERRUPTED)


class WorkloadError(ValueError):
    """The workload cannot be built (unreadable video, nothing to search, ...)."""


@dataclass
class Workload:
    """Inputs and known answers of every task (lists of equal length per task)."""

    video: str
    frames_index: list[int]
    pose_inputs: list[np.ndarray]                 # uint8 [B, H, W, 3]
    pose_expected: list[dict]                     # keypoints [B, P, 17, 3], boxes, scores, counts
    score_inputs: list[dict]                      # query, candidates, metric, mirror
    score_expected: list[dict]                    # scores [N], part_scores [N, 6]
    dtw_inputs: list[dict]                        # reference, attempt, window, mirror
    dtw_expected: list[dict]                      # score, distance, part_scores, mirrored
    search_inputs: list[dict] = field(default_factory=list)    # archive, query, k
    search_expected: list[list[dict]] = field(default_factory=list)  # video_id, frames, track, score
    live_inputs: list[dict] = field(default_factory=list)      # reference, reference_fps, poses, times, fps
    live_expected: list[dict] = field(default_factory=list)    # the offline answer: reps (frames, score, ...)
    archive_path: str | None = None

    def inputs(self, task: str) -> list:
        return getattr(self, f"{task}_inputs")

    def save(self, path: str | Path) -> None:
        with open(path, "wb") as out:
            pickle.dump(self, out, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def load(path: str | Path) -> "Workload":
        with open(path, "rb") as src:
            return pickle.load(src)


# -- inputs ----------------------------------------------------------------------------------------
def decode_sample(path: str, count: int) -> tuple[np.ndarray, list[int]]:
    """``count`` frames sampled evenly over the whole video as RGB uint8 ``[count, H, W, 3]``, and
    their indices."""
    import av

    try:
        with av.open(path) as container:
            total = container.streams.video[0].frames
            if not total:  # unknown frame count: one pass to count
                total = sum(1 for _ in container.decode(video=0))
        wanted = sorted(set(np.linspace(0, max(total - 1, 0), count).round().astype(int).tolist()))
        frames, index = [], []
        with av.open(path) as container:
            for number, frame in enumerate(container.decode(video=0)):
                if number in wanted:
                    frames.append(frame.to_ndarray(format="rgb24"))
                    index.append(number)
                if len(frames) == len(wanted):
                    break
    except (OSError, av.FFmpegError, IndexError) as err:
        raise WorkloadError(f"{path}: cannot decode video frames ({err})") from None
    if not frames:
        raise WorkloadError(f"{path}: no video frames decoded")
    return np.stack(frames), index


def synthetic_movement(rng: np.random.Generator, length: int, width: float = 640.0,
                       height: float = 480.0) -> np.ndarray:
    """A smooth movement of one person, ``[length, 17, 3]`` float32 pixel keypoints: a standing
    template whose keypoints swing on sinusoids, drifting across the frame; 3% keypoints missing."""
    t = np.arange(length, dtype=np.float64)[:, None, None]
    amplitude = rng.uniform(3, 30, (1, 17, 2))
    phase = rng.uniform(0, 2 * np.pi, (1, 17, 2))
    frequency = rng.uniform(0.02, 0.12)
    scale = rng.uniform(0.6, 1.2)
    start = rng.uniform([0.3 * width, 0.55 * height], [0.7 * width, 0.7 * height])
    drift = rng.uniform(-0.5, 0.5, 2)
    xy = start + drift * t + scale * (_TEMPLATE + amplitude * np.sin(2 * np.pi * frequency * t + phase))
    confidence = rng.uniform(0.55, 1.0, (length, 17, 1))
    confidence[rng.uniform(size=(length, 17, 1)) < 0.03] = 0.0
    return np.concatenate([xy, confidence], axis=-1).astype(np.float32)


def time_warped(rng: np.random.Generator, movement: np.ndarray, noise: float = 2.0) -> np.ndarray:
    """``movement`` replayed at another, varying speed (0.7-1.4x the frames), with pixel noise."""
    length = len(movement)
    target = max(2, int(round(length * rng.uniform(0.7, 1.4))))
    u = np.linspace(0, 1, target) ** rng.uniform(0.7, 1.4)
    position = u * (length - 1)
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, length - 1)
    frac = (position - lower)[:, None, None]
    out = movement[lower] * (1 - frac) + movement[upper] * frac
    out[..., :2] += rng.normal(0, noise, out[..., :2].shape)
    out[..., 2] = np.where((movement[lower, :, 2] > 0) & (movement[upper, :, 2] > 0), out[..., 2], 0.0)
    return out.astype(np.float32)


def mirrored(poses: np.ndarray, width: float = 640.0) -> np.ndarray:
    """The mirror image of pixel poses: x flipped, left and right keypoints swapped."""
    from posescore.kernels.skeleton import FLIP_PERMUTATION

    out = poses[..., list(FLIP_PERMUTATION), :].copy()
    out[..., 0] = width - out[..., 0]
    return out


# -- expected answers ------------------------------------------------------------------------------
def expected_score(query: np.ndarray, candidates: np.ndarray, metric: str, mirror: bool) -> dict:
    """What the score model answers: ``engine.analysis.answers.score_answer``, in this process."""
    from posescore.engine.analysis.answers import score_answer

    answer = score_answer(query, candidates, metric, mirror)
    return {"scores": np.asarray(answer.scores, np.float32), "part_scores": np.asarray(answer.part_scores, np.float32)}


def expected_dtw(reference: np.ndarray, attempt: np.ndarray, window: int | None, mirror: bool) -> dict:
    """What the dtw model answers: ``engine.analysis.answers.dtw_answer``, in this process (the server
    may batch several questions into one DTW call: the same answer to float32 rounding)."""
    from posescore.engine.analysis.answers import dtw_answer

    answer = dtw_answer(reference, attempt, window, mirror)
    return {"score": answer.score, "distance": answer.distance,
            "part_scores": np.asarray(answer.part_scores, np.float32), "mirrored": answer.mirrored}


def expected_search(archive, query: np.ndarray, k: int) -> list[dict]:
    """What the search model answers, from ``engine.archive.service.search_archive`` on the same archive."""
    from posescore.engine.archive import search_archive

    return [{"video_id": m["video_id"], "start_frame": m["start_frame"], "end_frame": m["end_frame"],
             "track": m["track"], "score": m["score"]}
            for m in search_archive(archive, query, k)]


# -- building --------------------------------------------------------------------------------------
def check_sizes(*, pose_frames: int, pose_batch: int, candidates: int, dtw_length: int) -> None:
    """Raise :class:`WorkloadError` naming the first size :func:`build_workload` cannot use."""
    from posescore.clients import POSE_MAX_BATCH

    if pose_frames < 1:
        raise WorkloadError(f"pose frames: expected >= 1 frames sampled, got {pose_frames}")
    if not 1 <= pose_batch <= POSE_MAX_BATCH:
        raise WorkloadError(f"pose batch: expected 1..{POSE_MAX_BATCH} frames per request, got {pose_batch}")
    if candidates < 1:
        raise WorkloadError(f"candidates: expected >= 1 per score request, got {candidates}")
    if dtw_length < 1:
        raise WorkloadError(f"dtw length: expected >= 1 frames per movement, got {dtw_length}")


def build_workload(url: str, *, tasks: Sequence[str] = TASKS, video: str = SAMPLE_VIDEO, pose_frames: int = 8,
                   pose_batch: int = 1, candidates: int = 1000, variants: int = 8, dtw_length: int = 90,
                   archive_root: str | Path | None = None, archive_videos: int = 8, archive_frames: int = 1500,
                   seed: int = 0, timeout: float = 120.0, log: Callable[[str], Any] = lambda _: None) -> Workload:
    """Inputs and known answers for ``tasks``. ``pose`` asks the server at ``url`` once per input
    (its answer at idle is the known answer); ``search`` writes an archive into a new folder under
    ``archive_root`` (the server's archive root), which :func:`remove_archive` deletes."""
    from posescore.clients import PoseScoreClient
    from posescore.kernels import METRICS

    check_sizes(pose_frames=pose_frames, pose_batch=pose_batch, candidates=candidates, dtw_length=dtw_length)
    rng = np.random.default_rng(seed)
    work = Workload(video=video, frames_index=[], pose_inputs=[], pose_expected=[], score_inputs=[],
                    score_expected=[], dtw_inputs=[], dtw_expected=[])
    frames = None
    if "pose" in tasks:
        frames, work.frames_index = decode_sample(video, pose_frames)
        log(f"decoded {len(frames)} frames of {video} ({frames.shape[2]}x{frames.shape[1]}), "
            f"frames {work.frames_index}")
    detected = np.zeros((0, NUM_KEYPOINTS, 3), np.float32)
    if frames is not None:
        units = [np.stack([frames[(i + j) % len(frames)] for j in range(pose_batch)]) for i in range(len(frames))]
        with PoseScoreClient(url, timeout=timeout) as client:
            answers = [client.pose(unit) for unit in units]
        work.pose_inputs = units
        work.pose_expected = [{"keypoints": a.keypoints, "boxes": a.boxes, "scores": a.scores, "counts": a.counts}
                              for a in answers]
        detected = np.concatenate([a.frame(0).keypoints for a in answers] or [detected])
        log(f"pose: {len(units)} inputs of {pose_batch} frame(s), {int(sum(a.counts[0] for a in answers))} "
            f"people in the sampled frames")

    if "score" in tasks:
        for i in range(variants):
            pool = np.concatenate([synthetic_movement(rng, max(candidates // 10, 1)) for _ in range(10)])
            cands = pool[rng.permutation(len(pool))][:candidates]
            if len(cands) < candidates:
                cands = np.concatenate([cands, synthetic_movement(rng, candidates - len(cands))])
            query = cands[rng.integers(len(cands))].copy()
            metric, mirror = METRICS[i % len(METRICS)], bool(i % 2)
            work.score_inputs.append({"query": query, "candidates": cands, "metric": metric, "mirror": mirror})
            work.score_expected.append(expected_score(query, cands, metric, mirror))
        log(f"score: {variants} inputs of 1 query vs {candidates} candidates")

    if "dtw" in tasks:
        for i in range(variants):
            length = max(2, int(dtw_length * rng.uniform(0.8, 1.2)))
            reference = synthetic_movement(rng, length)
            attempt = time_warped(rng, reference)
            mirror = i % 2 == 1
            if mirror:
                attempt = mirrored(attempt)
            window = None if i % 4 < 2 else max(2, length // 4)
            work.dtw_inputs.append({"reference": reference, "attempt": attempt, "window": window, "mirror": mirror})
            work.dtw_expected.append(expected_dtw(reference, attempt, window, mirror))
        log(f"dtw: {variants} inputs of ~{dtw_length} vs ~{dtw_length} frames")

    if "live" in tasks:
        work.live_inputs, work.live_expected = build_live(url, video, rng, variants, timeout=timeout, log=log)

    if "search" in tasks:
        if archive_root is None:
            raise WorkloadError("search: the server's archive root is unknown (give --archive-root)")
        root = Path(archive_root).resolve()
        path = root / f"posescore-loadtest-{os.getpid()}-{rng.integers(1 << 30):08x}"
        work.archive_path = str(path)
        try:
            _write_search(work, rng, root, path, video, detected, variants, archive_videos, archive_frames, log)
        except BaseException:
            remove_archive(work)
            raise
    verify(url, work, timeout, log)
    return work


def _write_search(work: Workload, rng: np.random.Generator, root: Path, path: Path, video: str,
                  detected: np.ndarray, variants: int, archive_videos: int, archive_frames: int,
                  log: Callable[[str], Any]) -> None:
    """The search archive at ``path`` (under the server's archive root ``root``), its queries and
    their known answers."""
    from posescore.engine.archive import add_video, open_archive

    tracks = []
    for v in range(archive_videos):
        track_a, track_b = synthetic_movement(rng, archive_frames), synthetic_movement(rng, archive_frames)
        poses = np.stack([track_a, track_b], 1).reshape(-1, NUM_KEYPOINTS, 3)
        frame = np.repeat(np.arange(archive_frames), 2)
        add_video(path, f"synthetic-{v:02d}", f"synthetic-{v:02d}.mp4", poses, frames=frame, times=frame / 30.0,
                  tracks=np.tile([0, 1], archive_frames), fps=30.0)
        tracks += [(f"synthetic-{v:02d}", track_a), (f"synthetic-{v:02d}", track_b)]
    if len(detected):
        add_video(path, "vtest", os.path.basename(video), detected, frames=np.arange(len(detected)),
                  times=np.arange(len(detected)) / 10.0)
    archive = open_archive(path)
    name = str(path.relative_to(root))
    for i in range(variants):
        _, track = tracks[rng.integers(len(tracks))]
        if i % 2 == 0:
            query, k = track[rng.integers(len(track))], 10
            if not (query[:, 2] > 0).any():
                query = track[0]
        else:
            start = int(rng.integers(len(track) - 12))
            query, k = track[start:start + 12], 5
        work.search_inputs.append({"archive": name, "query": query, "k": k})
        work.search_expected.append(expected_search(archive, query, k))
    log(f"search: archive {path} ({len(archive)} poses, {len(archive.videos)} videos), {variants} queries "
        f"(poses k=10, 12-frame movements k=5)")


def build_live(url: str, video: str, rng: np.random.Generator, variants: int, *, timeout: float = 120.0,
               log: Callable[[str], Any] = lambda _: None) -> tuple[list[dict], list[dict]]:
    """``variants`` live streams of real poses and the offline answer of each (see the module
    docstring). Raises WorkloadError when the video's first seconds hold no one who moves."""
    from posescore.clients import PoseScoreClient
    from posescore.engine.analysis.live import as_video_poses
    from posescore.engine.analysis.people import main_performer, movement_amount
    from posescore.engine.jobs.extract import extract_poses
    from posescore.engine.jobs.reps import reps_poses

    reference, source_fps, first = None, 0.0, 0
    with PoseScoreClient(url, timeout=timeout) as client:
        for start in np.arange(0.0, LIVE_SOURCE_S, LIVE_CHUNK_S):  # until someone walks for long enough
            seen = extract_poses(video, client, start=float(start), duration=LIVE_CHUNK_S)
            if len(seen) < 2:
                break
            if not seen.counts.any():
                continue
            performer, source_fps = main_performer(seen), seen.rate
            span = max(4, int(round(LIVE_REFERENCE_S * source_fps)))
            rows = np.arange(len(seen))
            windows = [w for w in range(0, len(seen) - span) if performer.present[w:w + span].all()]
            if windows:
                first = max(windows, key=lambda w: movement_amount(performer, rows[w:w + span]))
                reference = performer.poses[first:first + span]
                first = int(seen.frame_indices[first])
                break
    if reference is None:
        raise WorkloadError(f"live: no one is seen for {LIVE_REFERENCE_S:g} s in the first {LIVE_SOURCE_S:g} s of "
                            f"{video}")
    fps = LIVE_FPS
    reference = _retimed(reference, source_fps / fps)  # on the streams' clock
    span = len(reference)
    inputs, expected = [], []
    for _ in range(variants):
        pieces = [np.repeat(reference[:1], int(rng.integers(5, 15)), 0)]
        for _ in range(LIVE_REPETITIONS):
            speed = float(rng.choice(LIVE_SPEEDS))
            moved = _retimed(reference, speed)
            pieces += [moved[::-1] if rng.random() < 0.25 else moved,
                       np.repeat(moved[-1:], int(rng.integers(5, 15)), 0)]
        poses = np.concatenate(pieces).astype(np.float32)
        times = np.arange(len(poses)) / fps
        answer = reps_poses(as_video_poses(reference, np.arange(span) / fps, np.arange(span), "reference", fps),
                            as_video_poses(poses, times, np.arange(len(poses)), "stream", fps))
        inputs.append({"reference": reference, "reference_fps": fps, "poses": poses, "times": times, "fps": fps})
        expected.append({"count": answer["count"], "reps": [{k: r[k] for k in LIVE_CHECKED} for r in answer["reps"]]})
    counts = [e["count"] for e in expected]
    log(f"live: {variants} streams of {min(len(i['poses']) for i in inputs)}-{max(len(i['poses']) for i in inputs)} "
        f"frames at {fps:g} fps, reference {span} frames re-sampled from {video}'s frame {first} on; {sum(counts)} repetitions "
        f"offline ({', '.join(map(str, counts))})")
    return inputs, expected


def _retimed(poses: np.ndarray, speed: float) -> np.ndarray:
    """``poses`` played ``speed`` times as fast (linear interpolation; a keypoint missing at either
    neighbour is missing)."""
    length = max(2, int(round((len(poses) - 1) / speed)) + 1)
    position = np.linspace(0, len(poses) - 1, length)
    lower = np.floor(position).astype(int)
    upper = np.minimum(lower + 1, len(poses) - 1)
    frac = (position - lower)[:, None, None]
    out = poses[lower] * (1 - frac) + poses[upper] * frac
    out[..., 2] = np.where((poses[lower, :, 2] > 0) & (poses[upper, :, 2] > 0), out[..., 2], 0.0)
    return out.astype(np.float32)


def check_live_rep(got: dict, want: dict | None) -> str | None:
    """None when a live repetition agrees with the offline one (bounds within 2 frames, score
    within a point, the same direction), else what differs."""
    if want is None:
        return f"live rep {got['rep']} ({got['start_frame']}-{got['end_frame']}): offline has no such repetition"
    if abs(got["start_frame"] - want["start_frame"]) > LIVE_FRAMES_ATOL or \
            abs(got["end_frame"] - want["end_frame"]) > LIVE_FRAMES_ATOL or \
            abs(got["score"] - want["score"]) > LIVE_SCORE_ATOL or got["backwards"] != want["backwards"]:
        return (f"live rep {got['rep']}: frames {got['start_frame']}-{got['end_frame']} score {got['score']} "
                f"backwards {got['backwards']}; offline {want['start_frame']}-{want['end_frame']} score "
                f"{want['score']} backwards {want['backwards']}")
    return None


def call_task(client, task: str, given: Any) -> Any:
    """Send ``given`` (one input of ``task``) with the typed client; its answer."""
    if task == "pose":
        return client.pose(given)
    if task == "score":
        return client.score(given["query"], given["candidates"], metric=given["metric"], mirror=given["mirror"])
    if task == "dtw":
        return client.dtw(given["reference"], given["attempt"], window=given["window"], mirror=given["mirror"])
    return client.search(given["archive"], given["query"], k=given["k"])


def verify(url: str, work: Workload, timeout: float = 120.0, log: Callable[[str], Any] = lambda _: None) -> None:
    """Send every score, dtw and search input once and check the answers (raises WorkloadError on
    a wrong one): the known answers are right for this server, and its first-call costs (JIT
    compilation, loading the archive) are paid before the load starts."""
    from posescore.clients import PoseScoreClient

    checked = 0
    with PoseScoreClient(url, timeout=timeout) as client:
        for task in ("score", "dtw", "search"):
            for given, expected in zip(work.inputs(task), getattr(work, f"{task}_expected")):
                problem = CHECKS[task](call_task(client, task, given), expected)
                if problem:
                    raise WorkloadError(f"the server's answer at idle is wrong: {problem}")
                checked += 1
    if checked:
        log(f"verified the server's answers to the {checked} score/dtw/search inputs at idle")


def remove_archive(work: Workload) -> None:
    """Delete the archive :func:`build_workload` wrote (only a folder it named)."""
    import shutil

    if work.archive_path and Path(work.archive_path).name.startswith("posescore-loadtest-"):
        shutil.rmtree(work.archive_path, ignore_errors=True)


# -- checks (None: the answer is right; else what is wrong) ----------------------------------------
def _close(got, want, atol: float, what: str, equal_nan: bool = False) -> str | None:
    """None when ``got`` is ``want`` within ``atol`` (with ``equal_nan``, NaN where ``want`` has
    NaN: a part not scored), else what is off."""
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"{what}: shape {list(got.shape)}, expected {list(want.shape)}"
    if not np.allclose(got, want, atol=atol, rtol=0, equal_nan=equal_nan):
        worst = float(np.nanmax(np.abs(got.astype(np.float64) - want)))
        return f"{what}: off by up to {worst:.4g} (tolerance {atol:g})"
    return None


def check_pose(result, want: dict) -> str | None:
    counts = np.asarray(result.counts)
    if counts.shape != want["counts"].shape or (counts != want["counts"]).any():
        return f"pose: people per frame {counts.tolist()}, expected {want['counts'].tolist()}"
    for b, n in enumerate(counts):
        n = int(n)
        for problem in (_close(result.keypoints[b, :n, :, :2], want["keypoints"][b, :n, :, :2], PIXEL_ATOL, "keypoints"),
                        _close(result.keypoints[b, :n, :, 2], want["keypoints"][b, :n, :, 2], CONFIDENCE_ATOL,
                               "keypoint confidences"),
                        _close(result.boxes[b, :n], want["boxes"][b, :n], PIXEL_ATOL, "boxes"),
                        _close(result.scores[b, :n], want["scores"][b, :n], CONFIDENCE_ATOL, "scores")):
            if problem:
                return f"pose frame {b}: {problem}"
    return None


def check_score(result, want: dict) -> str | None:
    return (_close(result.scores, want["scores"], SCORE_ATOL, "score: scores")
            or _close(result.part_scores, want["part_scores"], SCORE_ATOL, "score: part_scores", equal_nan=True))


def check_dtw(result, want: dict) -> str | None:
    if result.mirrored != want["mirrored"]:
        return f"dtw: mirrored {result.mirrored}, expected {want['mirrored']}"
    if abs(result.score - want["score"]) > SCORE_ATOL:
        return f"dtw: score {result.score:.4f}, expected {want['score']:.4f}"
    if abs(result.distance - want["distance"]) > DISTANCE_RTOL * max(abs(want["distance"]), 1e-6) + 1e-6:
        return f"dtw: distance {result.distance:.6g}, expected {want['distance']:.6g}"
    return _close(result.part_scores, want["part_scores"], SCORE_ATOL, "dtw: part_scores", equal_nan=True)


def check_search(matches, want: list[dict]) -> str | None:
    if len(matches) != len(want):
        return f"search: {len(matches)} matches, expected {len(want)}"
    problem = _close([m.score for m in matches], [w["score"] for w in want], SCORE_ATOL, "search: scores")
    if problem:
        return problem
    got = [(m.video_id, m.start_frame, m.end_frame, m.track) for m in matches]
    expected = [(w["video_id"], w["start_frame"], w["end_frame"], w["track"]) for w in want]
    # Matches whose scores tie (within the tolerance) may come in either order; the last tie group
    # may be cut by k differently, so only its size is checked.
    start = 0
    while start < len(want):
        stop = start + 1
        while stop < len(want) and abs(want[stop - 1]["score"] - want[stop]["score"]) <= SCORE_ATOL:
            stop += 1
        if stop < len(want) and set(got[start:stop]) != set(expected[start:stop]):
            return f"search: matches {start}..{stop - 1} are {got[start:stop]}, expected {expected[start:stop]}"
        start = stop
    return None


CHECKS: dict[str, Callable[[Any, Any], str | None]] = {
    "pose": check_pose, "score": check_score, "dtw": check_dtw, "search": check_search,
}


# -- malformed and oversized requests --------------------------------------------------------------
@dataclass(frozen=True)
class BadRequest:
    """A request the server must refuse: ``kind`` names it (``users.PoseScoreUser`` builds it; a
    wrong dtype or shape cannot pass the typed client's checks, so those go raw), ``message`` is a
    part of the expected error, ``status`` its gRPC status."""

    model: str
    kind: str
    message: str
    status: str = "INVALID_ARGUMENT"


BAD_REQUESTS: dict[str, list[BadRequest]] = {
    "pose": [BadRequest("pose", "oversized-batch", "batch-size must be <="),
             BadRequest("pose", "wrong-dtype", "data-type"),
             BadRequest("pose", "zero-size-frame", "at least 1x1")],
    "score": [BadRequest("score", "nan-candidates", "NaN"),
              BadRequest("score", "invisible-query", "normalized"),
              BadRequest("score", "wrong-shape", "unexpected shape")],
    "dtw": [BadRequest("dtw", "nan-attempt", "NaN"),
            BadRequest("dtw", "empty-reference", "at least 1 pose"),
            BadRequest("dtw", "over-max-cells", "over this server's bound"),
            BadRequest("dtw", "over-max-request-bytes", "over the model's bound", "RESOURCE_EXHAUSTED")],
    "search": [BadRequest("search", "outside-root", "outside the archive root"),
               BadRequest("search", "not-an-archive", "not a posescore archive"),
               BadRequest("search", "k-too-large", "k: expected"),
               BadRequest("search", "long-name", "archive: a name of 5,000 characters"),
               BadRequest("search", "oversized-candidates", "over this server's bound")],
}
