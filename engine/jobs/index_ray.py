"""``posescore index --ray``: videos indexed by a Ray Data pipeline, on one machine or a cluster.

    videos --(CPU tasks: PyAV decode, --fps sampling)--> frame batches
           --(actor pool: the pose model)--> keypoints per batch
           --(this process, the one writer)--> tracked, one catalog transaction per video

Decoding streams: a task yields one batch of frames at a time and Ray Data's backpressure bounds
what is in flight, whatever the videos' length. The pose model runs in ``workers`` actors, each
with a Triton client of ``url`` (one server, or a fleet behind several URLs, batches for every
decoder: the GPUs stay where the server is) or, with no URL, its own in-process model
(``engine.analysis.answers.PoseDetector``, the code the server's pose model runs, with that model's
parameters: a cluster of GPU nodes needs no server). Only this process writes the archive, so
workers never race on the catalog; batches are keyed by (video, batch number), so a task Ray
retries after a worker died adds nothing twice. A run killed at any moment leaves the archive as
its last committed video left it, and the next run skips what is there.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from posescore.engine.jobs.extract import DEFAULT_BATCH, batch_poses
from posescore.engine.poses import VideoInfo, VideoPoses
from posescore.engine.serving.server import DEFAULT_MODEL_REPOSITORY
from posescore.kernels.skeleton import NUM_KEYPOINTS

#: CPUs a decode task asks of Ray (PyAV's codec threads share them).
DECODE_CPUS = 1.0
#: Largest block of frames Ray Data makes (a batch of 16 Full HD frames is 100 MB: one block each).
BLOCK_BYTES = 8 << 20
#: Times Ray runs a decode task again after its worker died (its batches come again: the driver
#: keeps the first of each). Setting it also keeps Ray Data from fusing decoding into the pose
#: actors, which must stay a pool of their own.
DECODE_RETRIES = 3


class _PoseWorker:
    """One actor of the pose pool: a Triton client of ``url``, else the pose model in-process."""

    def __init__(self, url: str | list[str] | None, timeout: float = 120.0, threads: int = 0):
        if url:
            from posescore.clients import PoseScoreClient

            self.client = PoseScoreClient(url, timeout=timeout)
            self.detect = self.client.pose
        else:
            from posescore.engine.serving.detector import pose_detector

            detector = pose_detector(str(DEFAULT_MODEL_REPOSITORY / "pose" / "1" / "model.onnx"),
                                     pose_model_parameters(), threads=threads)
            detector.warm_up()
            self.detect = detector.detect

    def __call__(self, row: dict) -> dict:
        out = {key: row[key] for key in ("id", "batch", "last", "info", "error", "indices", "times", "shape")}
        nothing = {"keypoints": np.zeros((0, 0, NUM_KEYPOINTS, 3), np.float32),
                   "boxes": np.zeros((0, 0, 4), np.float32),
                   "scores": np.zeros((0, 0), np.float32), "counts": np.zeros(0, np.int32)}
        if row["error"] or len(row["indices"]) == 0:
            return {**out, **nothing}
        try:
            result = self.detect(np.ascontiguousarray(row["frames"]))
        except Exception as err:  # noqa: BLE001 - this video fails, named; the others go on
            return {**out, **nothing, "error": f"pose model: {err}"}
        counts = np.asarray(result.counts, np.int32).reshape(-1)
        people = max(1, int(counts.max()) if counts.size else 0)  # one padded place: a fixed rank
        return {**out, "keypoints": np.asarray(result.keypoints[:, :people], np.float32),
                "boxes": np.asarray(result.boxes[:, :people], np.float32),
                "scores": np.asarray(result.scores[:, :people], np.float32), "counts": counts}


def pose_model_parameters(repository: Path = DEFAULT_MODEL_REPOSITORY) -> dict[str, str]:
    """The pose model's parameters as its config.pbtxt sets them (what the server's model runs with)."""
    from posescore.engine.serving.repository import model_parameters

    return model_parameters(repository, "pose")


def _decode_batches(row: dict, fps: float | None, batch: int):
    """One video's frames in batches of ``batch`` (a Ray Data flat_map): rows of ``id``, ``batch``
    (its number), ``last`` (the video's last batch), ``frames`` uint8 ``[B, H, W, 3]``,
    ``indices``, ``times`` and ``info`` (the VideoInfo as JSON); a decode error ends the video
    with a row whose ``error`` names it."""
    from posescore.engine.media.video import iter_probed_frames, probe

    def emit(number, frames, last, error=""):
        return {"id": row["id"], "batch": number, "last": last, "error": error, "info": info_json,
                "frames": np.stack([f.rgb for f in frames]) if frames else np.zeros((0, 1, 1, 3), np.uint8),
                "shape": np.array(frames[0].rgb.shape[:2] if frames else (0, 0), np.int64),
                "indices": np.array([f.index for f in frames], np.int64),
                "times": np.array([f.time for f in frames], np.float32)}

    info_json, number, chunk = "{}", 0, []
    try:
        info = probe(row["path"])
        info_json = json.dumps(asdict(info))
        for frame in iter_probed_frames(info, fps=fps, max_side=None, start=0.0, end=None):
            chunk.append(frame)
            if len(chunk) == batch:
                yield emit(number, chunk, False)
                number, chunk = number + 1, []
        yield emit(number, chunk, True)
    except Exception as err:  # noqa: BLE001 - this video fails, named; the others go on
        yield emit(number, [], True, f"{err}")


def ray_index_job(videos, archive_dir, *, url: str | list[str] | None = None, address: str | None = None,
                  workers: int = 1, decoders: int | None = None, fps: float | None = None,
                  batch: int = DEFAULT_BATCH, progress: Callable[[dict], Any] | None = None) -> dict:
    """``posescore index --ray``: the videos not yet in the archive indexed by a Ray Data pipeline
    (module docstring) on ``address`` (None: the Ray this process already joined, else a local
    one started for the job and stopped after it), ``workers`` pose actors, at most ``decoders``
    videos decoded at once (None: as many as the CPUs allow). Returns the summary ``index``
    gives, with ``failed`` (each video that failed and why), ``frames``, ``seconds``,
    ``frames_per_second`` and ``first_batch_s`` (the pipeline's start: workers, model loads).
    ``progress(state)`` gets ``videos_done``, ``videos``, ``frames``, ``frames_per_second`` and
    ``first_batch_s`` after every batch."""
    import ray

    from posescore.engine import archive as archive_io
    from posescore.engine.jobs.index import content_id, index_target

    root = index_target(videos, archive_dir)
    known = {v["sha256"] for v in archive_io.list_videos(root)}
    job = _Indexing(root, progress)
    todo = []
    for video in map(Path, videos):
        vid = content_id(video)
        if vid in known or vid in job.entries:
            job.entries.setdefault(vid, {"video": str(video), "id": vid, "status": "already indexed"})
        else:
            job.entries[vid] = {"video": str(video), "id": vid, "status": "pending"}
            job.paths[vid] = video
            todo.append({"id": vid, "path": str(video.resolve())})
    job.state["videos"] = len(todo)
    owned = not ray.is_initialized()
    if owned:
        # Ray's core logs its warnings on this process's stderr, among the job's own output.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        if todo:
            _run(ray, job, todo, url=url, workers=workers, decoders=decoders, fps=fps, batch=batch)
    finally:
        if owned:
            ray.shutdown()
    seconds = time.monotonic() - job.started
    frames = job.state["frames"]
    return {"archive": str(root), "videos": list(job.entries.values()), "failed": job.failed, "frames": frames,
            "seconds": round(seconds, 3), "frames_per_second": round(frames / seconds, 2) if seconds else 0.0,
            "first_batch_s": job.state["first_batch_s"]}


def _run(ray, job: "_Indexing", todo: list[dict], *, url, workers: int, decoders: int | None, fps, batch: int) -> None:
    """The pipeline, its rows handed to ``job`` as they come."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    settings = ("enable_progress_bars", "target_max_block_size")
    saved = {name: getattr(ctx, name) for name in settings}
    # One batch of frames per block: a video streams through the pool batch by batch (Ray Data's
    # 128 MiB default put a whole short video in one block, inferred and returned at once).
    ctx.enable_progress_bars, ctx.target_max_block_size = False, BLOCK_BYTES
    chatter = logging.getLogger("ray.data")
    level = chatter.level
    chatter.setLevel(logging.ERROR)  # its per-run INFO lines; the job reports its own progress
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # ray_remote_args_fn: deprecated in 2.60, not gone
            pipeline = (ray.data.from_items(todo, override_num_blocks=len(todo))
                        .flat_map(_decode_batches, fn_kwargs={"fps": fps, "batch": batch}, num_cpus=DECODE_CPUS,
                                  concurrency=decoders, ray_remote_args_fn=_decode_task_args)
                        .map(_PoseWorker, fn_constructor_kwargs={"url": url},
                             compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=0.25 if url else 1.0))
        for row in pipeline.iter_rows():
            job.take(row)
    finally:
        chatter.setLevel(level)
        for name, value in saved.items():
            setattr(ctx, name, value)


class _Indexing:
    """The one writer: each video's batches gathered (keyed by batch number: a batch that comes
    again from a retried task counts once), the video committed when whole, progress counted."""

    def __init__(self, root: Path, progress: Callable[[dict], Any] | None):
        self.root, self.progress = root, progress
        self.entries: dict[str, dict] = {}
        self.paths: dict[str, Path] = {}
        self.failed: list[dict] = []
        self.gathered: dict[str, dict] = {}  # id -> {"info", "parts": {batch: VideoPoses}, "last": int | None}
        self.state = {"videos_done": 0, "videos": 0, "frames": 0, "frames_per_second": 0.0, "first_batch_s": None}
        self.started = time.monotonic()

    def take(self, row: dict) -> None:
        from posescore.engine.jobs.index import commit_video

        state, vid = self.state, row["id"]
        if state["first_batch_s"] is None:
            state["first_batch_s"] = round(time.monotonic() - self.started, 3)
        if self.entries[vid]["status"] != "pending":
            return  # a retried task's batch of a video already committed, or failed
        if row["error"]:
            self.entries[vid].update(status="failed", error=row["error"])
            self.failed.append({"video": self.entries[vid]["video"], "id": vid, "error": row["error"]})
            self.gathered.pop(vid, None)
            state["videos_done"] += 1
        else:
            video = self.gathered.setdefault(vid, {"info": VideoInfo(**json.loads(row["info"])), "parts": {},
                                                   "last": None})
            number = int(row["batch"])
            if number not in video["parts"]:
                video["parts"][number] = _part(video["info"], row)
                state["frames"] += len(row["indices"])
            if row["last"]:
                video["last"] = number
            if video["last"] is not None and len(video["parts"]) == video["last"] + 1:
                poses = VideoPoses.concatenate(video["info"], [video["parts"][n] for n in range(video["last"] + 1)])
                del self.gathered[vid]
                self.entries[vid].update(commit_video(self.root, self.paths[vid], vid, poses))
                state["videos_done"] += 1
        seconds = time.monotonic() - self.started
        state["frames_per_second"] = state["frames"] / seconds if seconds else 0.0
        if self.progress is not None:
            self.progress(dict(state))


def _decode_task_args() -> dict:
    return {"max_retries": DECODE_RETRIES}


class _Result:
    """A pose batch's keypoints as ``engine.jobs.extract.batch_poses`` reads a client's answer."""

    def __init__(self, row: dict):
        self.keypoints, self.boxes, self.scores, self.counts = row["keypoints"], row["boxes"], row["scores"], row["counts"]


class _FrameStub:
    """The index and time of a frame (its pixels are not needed once it is inferred)."""

    def __init__(self, index: int, time_: float, height: int, width: int):
        self.index, self.time = index, time_
        self.rgb = np.empty((height, width, 0), np.uint8)


def _part(info: VideoInfo, row: dict) -> VideoPoses:
    """One batch's VideoPoses, as the single-process ``index`` makes it."""
    if len(row["indices"]) == 0:
        return VideoPoses.concatenate(info, [])
    height, width = (int(n) for n in row["shape"])  # as decoded: batch_poses scales to the video's pixels
    frames = [_FrameStub(int(i), float(t), height, width) for i, t in zip(row["indices"], row["times"])]
    return batch_poses(info, frames, _Result(row))
