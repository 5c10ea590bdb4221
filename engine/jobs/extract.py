"""Pose extraction: a video's or image's frames decoded (``engine.media.video``) and sent to the pose
model through a client, pipelined, into a :class:`engine.poses.VideoPoses`.

    with PoseScoreClient(url) as client:
        poses = extract_poses("clip.mp4", client)  # VideoPoses: keypoints [F, P, 17, 3] in pixels
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Any, Callable

import numpy as np

from posescore.clients.protocol import POSE_MAX_BATCH
from posescore.engine.media.video import Frame, check_decode_options, iter_probed_frames, expected_frames, probe
from posescore.engine.poses import VideoError, VideoInfo, VideoPoses

#: Frames per request to the pose model by default (its max_batch_size).
DEFAULT_BATCH = POSE_MAX_BATCH

_END = object()


def batch_poses(info: VideoInfo, frames: list[Frame], result: Any) -> VideoPoses:
    """One batch's VideoPoses: trimmed to its largest count, scaled back to the original pixels."""
    counts = np.asarray(result.counts, np.int32).reshape(-1)
    people = int(counts.max()) if counts.size else 0
    keypoints = np.array(result.keypoints[:, :people], np.float32)
    boxes = np.array(result.boxes[:, :people], np.float32)
    height, width = frames[0].rgb.shape[:2]
    if (width, height) != (info.width, info.height):
        sx, sy = info.width / width, info.height / height
        keypoints[..., 0] *= sx
        keypoints[..., 1] *= sy
        boxes[..., 0::2] *= sx
        boxes[..., 1::2] *= sy
    marks = world = None
    if getattr(result, "landmarks", None) is not None:  # the landmarks model's answer
        marks = np.array(result.landmarks[:, :people], np.float32)
        world = np.array(result.world[:, :people], np.float32)
        if (width, height) != (info.width, info.height):
            marks[..., 0] *= sx
            marks[..., 1] *= sy
            marks[..., 2] *= sx  # z is on x's scale
    return VideoPoses(info=info, frame_indices=np.array([f.index for f in frames], np.int64),
                      times=np.array([f.time for f in frames], np.float32), keypoints=keypoints, boxes=boxes,
                      scores=np.array(result.scores[:, :people], np.float32), counts=counts,
                      landmarks=marks, world=world)


def extract_poses(source: str | os.PathLike, client: Any, *, fps: float | None = None,
                  max_side: int | None = None, batch: int = DEFAULT_BATCH,
                  progress: Callable[[int, int], Any] | None = None, start: float = 0.0,
                  duration: float | None = None, landmarks: bool = False) -> VideoPoses:
    """Every person's keypoints in the video or image ``source``, frame by frame (a VideoPoses);
    with ``landmarks``, through the ``landmarks`` model: BlazePose GHUM's 33 landmarks and world
    coordinates too (``VideoPoses.landmarks``, ``.world``).

    ``client``: a ``clients.PoseScoreClient`` (anything with ``pose(frames uint8 [B, H, W, 3]) ->
    PoseResult``), or a ``"host:port"`` URL for which one is opened and closed here. ``fps``,
    ``max_side``, ``start``, ``duration``: as :func:`engine.media.video.iter_frames`; keypoints and
    boxes are scaled back to the original frame's pixels whatever ``max_side``. ``batch``: frames per ``pose`` call.
    ``progress(frames_done, frames_total_estimate)`` is called at the start and after each batch.

    Pipelined: a decode thread fills a bounded queue (two batches) while the main thread sends the
    batches for inference, so the next batch decodes while the last is inferred; at most about three
    batches of frames are in memory at once.

    A decode error mid-video raises the VideoError of :func:`engine.media.video.iter_frames` after the
    frames decoded before it are inferred, with ``.partial`` = the VideoPoses of every frame done; an inference
    error (``clients.PoseScoreError``) is re-raised with the same ``.partial`` attribute.
    """
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise VideoError(f"batch: expected an integer >= 1, got {batch!r}")
    check_decode_options(fps, max_side, start, duration)
    if isinstance(client, str):
        from posescore.clients import PoseScoreClient

        with PoseScoreClient(client) as owned:
            return extract_poses(source, owned, fps=fps, max_side=max_side, batch=batch, progress=progress,
                                 start=start, duration=duration, landmarks=landmarks)
    info = probe(source)
    total = expected_frames(info, fps, float(start), duration)
    frames = iter_probed_frames(info, fps=fps, max_side=max_side, start=float(start),
                          end=None if duration is None else float(start) + float(duration))
    pending: queue.Queue = queue.Queue(maxsize=2 * batch)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def decode() -> None:
        try:
            for frame in frames:
                if not put(frame):
                    return
            put(_END)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            put(err)
        finally:
            frames.close()

    worker = threading.Thread(target=decode, name="posescore-decode", daemon=True)
    worker.start()
    done: list[VideoPoses] = []
    count = 0
    if progress is not None:
        progress(0, total)
    try:
        finished = False
        while not finished:
            chunk: list[Frame] = []
            failure: BaseException | None = None
            while len(chunk) < batch:
                item = pending.get()
                if item is _END:
                    finished = True
                    break
                if isinstance(item, BaseException):
                    failure, finished = item, True
                    break
                chunk.append(item)
            if chunk:
                stacked = np.stack([f.rgb for f in chunk])
                result = client.landmarks(stacked) if landmarks else client.pose(stacked)
                done.append(batch_poses(info, chunk, result))
                count += len(chunk)
                if progress is not None:
                    progress(count, max(total, count))
            if failure is not None:
                raise failure
    except BaseException as err:
        stop.set()
        if isinstance(err, Exception):
            try:
                err.partial = VideoPoses.concatenate(info, done)
            except AttributeError:  # an exception type that takes no attributes
                pass
        raise
    finally:
        stop.set()
        worker.join(timeout=5.0)
    return VideoPoses.concatenate(info, done)
