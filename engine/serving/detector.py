"""The ``pose`` service's answer: YOLO11n-pose through onnxruntime, with the kernels' letterbox,
decoding and NMS (the pose model and ``index --ray``'s pose actors run this)."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from posescore import kernels
from posescore.kernels import DETECT_CONFIDENCE as CONFIDENCE
from posescore.kernels import DETECT_IMAGE_SIZE as IMAGE_SIZE
from posescore.kernels import DETECT_IOU as IOU
from posescore.kernels import DETECT_MAX_PEOPLE as MAX_PEOPLE


class FramePeopleArrays(NamedTuple):
    """The people of B frames: ``keypoints [B, P, 17, 3]``, ``boxes [B, P, 4]``, ``scores [B, P]``
    float32 (padded to ``max_people`` P), ``counts [B]`` int."""

    keypoints: Any
    boxes: Any
    scores: Any
    counts: Any


def pose_detector(onnx_file: str, params: dict[str, str], *, threads: int | None = None, xp=np,
                  device_id: int | None = None) -> "PoseDetector":
    """The pose service as the pose model runs it, from its config.pbtxt ``parameters`` (strings,
    as Triton gives them; absent keys take the defaults): ``threads`` (onnxruntime's intra-op
    threads) overrides ``intra_op_threads``."""
    return PoseDetector(onnx_file, image_size=int(params.get("image_size", IMAGE_SIZE)),
                        confidence=float(params.get("confidence", CONFIDENCE)), iou=float(params.get("iou", IOU)),
                        max_people=int(params.get("max_people", MAX_PEOPLE)),
                        threads=int(params.get("intra_op_threads", 0)) if threads is None else threads, xp=xp,
                        device_id=device_id)


def onnx_session(onnx_file, threads: int = 0, device_id: int | None = None):
    """An onnxruntime session of ``onnx_file`` with ``threads`` intra-op threads (0: its default),
    on CUDA device ``device_id`` first when given and onnxruntime has the CUDA provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    providers: list = ["CPUExecutionProvider"]
    if device_id is not None and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": device_id}))
    return ort.InferenceSession(str(onnx_file), options, providers=providers)


class PoseDetector:
    """The ``pose`` service: YOLO11n-pose through onnxruntime with our own letterbox, decoding and
    NMS (``kernels.letterbox`` / ``kernels.decode_poses``), matching ultralytics' predictor.

    ``xp`` is NumPy or CuPy (CuPy frames stay on the GPU except for the onnxruntime call, which
    uses its CUDA provider when it has one and ``device_id`` is given).
    """

    def __init__(self, onnx_file: str, *, image_size: int = IMAGE_SIZE, confidence: float = CONFIDENCE,
                 iou: float = IOU, max_people: int = MAX_PEOPLE, threads: int = 0, xp=np,
                 device_id: int | None = None):
        self.image_size, self.confidence, self.iou, self.max_people = image_size, confidence, iou, max_people
        self.xp = xp
        self.session = onnx_session(onnx_file, threads, device_id if xp is not np else None)
        self.input_name = self.session.get_inputs()[0].name

    def _infer(self, images):
        """Raw model output ``[B, 56, anchors]`` for letterboxed images ``[B, 3, h, w]``."""
        if self.xp is np:
            return self.session.run(None, {self.input_name: images})[0]
        return self.xp.asarray(self.session.run(None, {self.input_name: self.xp.asnumpy(images)})[0])

    def detect(self, frames) -> FramePeopleArrays:
        """Every person in uint8 RGB ``frames [B, H, W, 3]`` (one size)."""
        xp = self.xp
        height, width = frames.shape[1:3]
        images, gains, pads = kernels.letterbox(frames, size=self.image_size)
        shapes = xp.asarray(np.tile(np.array([height, width], np.int32), (len(frames), 1)))
        return FramePeopleArrays(*kernels.decode_poses(self._infer(images), gains, pads, shapes,
                                                       conf=self.confidence, iou=self.iou,
                                                       max_people=self.max_people))

    def warm_up(self) -> None:
        """Run the model once on two grey frames: numba compiles (or loads) the letterbox and the
        decoding, onnxruntime allocates, before the first real request."""
        self.detect(self.xp.full((2, 96, 128, 3), 114, dtype=self.xp.uint8))

    def detect_many(self, batches: Sequence) -> list[FramePeopleArrays]:
        """:meth:`detect` for several frame batches, of any sizes: the batches of one frame size
        go through the model together; one answer per batch, in order."""
        xp = self.xp
        results: list = [None] * len(batches)
        by_size: dict = {}
        for n, frames in enumerate(batches):
            by_size.setdefault(tuple(frames.shape[1:3]), []).append(n)
        for owners in by_size.values():
            frames = xp.concatenate([batches[n] for n in owners]) if len(owners) > 1 else batches[owners[0]]
            people = self.detect(frames)
            start = 0
            for n in owners:
                stop = start + len(batches[n])
                results[n] = FramePeopleArrays(*(array[start:stop] for array in people))
                start = stop
        return results
