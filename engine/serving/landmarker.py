"""The ``landmarks`` service's answer: BlazePose GHUM full (33 landmarks with heels and foot tips,
and world coordinates in metres) on each person the pose model found, through onnxruntime.

Each person's crop is aligned by the hips and shoulders (``kernels.landmark_rois``), warped to
256 x 256 with OpenCV, and every crop of a batch of frames goes through the model in one call.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from posescore import kernels
from posescore.engine.serving.detector import onnx_session
from posescore.kernels.skeleton import NUM_LANDMARKS

#: A person whose pose flag (the model's own "a body is in this crop") is below this gets
#: landmarks of visibility and presence 0.
MIN_POSE_FLAG = 0.5
#: The ONNX model's outputs used, in order: landmarks, pose flag, heatmap, world landmarks.
OUTPUTS = ("Identity", "Identity_1", "Identity_3", "Identity_4")


class FrameLandmarkArrays(NamedTuple):
    """The landmarks of the people of B frames (padded to P as the pose model's answer):
    ``landmarks [B, P, 33, 5]`` (x, y, z pixels, visibility, presence), ``world [B, P, 33, 3]``
    (metres from the hips' midpoint), ``flags [B, P]`` (the model's pose flag, 0 for padding),
    float32."""

    landmarks: np.ndarray
    world: np.ndarray
    flags: np.ndarray


class Landmarker:
    """BlazePose GHUM full in onnxruntime (``threads`` intra-op threads, 0: its default)."""

    def __init__(self, onnx_file: str, *, threads: int = 0, device_id: int | None = None):
        self.session = onnx_session(onnx_file, threads, device_id)
        self.input_name = self.session.get_inputs()[0].name

    def crops(self, frame: np.ndarray, rois: np.ndarray) -> np.ndarray:
        """``[N, 256, 256, 3]`` float32 in [0, 1] of the ROIs of one uint8 RGB ``frame [H, W, 3]``
        (bilinear; outside the image, its edge repeated)."""
        import cv2

        size = kernels.LANDMARK_INPUT_SIZE
        out = np.empty((len(rois), size, size, 3), np.float32)
        for n, affine in enumerate(kernels.crop_affines(rois)):
            crop = cv2.warpAffine(frame, affine, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_REPLICATE)
            out[n] = crop.astype(np.float32) * (1.0 / 255.0)
        return out

    def run(self, crops: np.ndarray) -> list[np.ndarray]:
        """The model's raw outputs (:data:`OUTPUTS`) for ``crops [N, 256, 256, 3]``."""
        return self.session.run(list(OUTPUTS), {self.input_name: crops})

    def landmarks(self, frames: np.ndarray, keypoints: np.ndarray, boxes: np.ndarray,
                  counts: np.ndarray) -> FrameLandmarkArrays:
        """The landmarks of each person the pose model found in uint8 RGB ``frames [B, H, W, 3]``:
        its ``keypoints [B, P, 17, 3]``, ``boxes [B, P, 4]`` and ``counts [B]``."""
        return self.landmarks_many([(frames, keypoints, boxes, counts)])[0]

    def landmarks_many(self, batches: list[tuple]) -> list[FrameLandmarkArrays]:
        """:meth:`landmarks` of several ``(frames, keypoints, boxes, counts)`` batches (frames of
        any sizes): the crops of every person of all of them go through the model in one call."""
        owners, rois, crops, answers = [], [], [], []
        for k, (frames, keypoints, boxes, counts) in enumerate(batches):
            b, p = keypoints.shape[:2]
            answers.append(FrameLandmarkArrays(np.zeros((b, p, NUM_LANDMARKS, 5), np.float32),
                                               np.zeros((b, p, NUM_LANDMARKS, 3), np.float32),
                                               np.zeros((b, p), np.float32)))
            for f in range(b):
                people = int(counts[f])
                if people:
                    frame_rois = kernels.landmark_rois(keypoints[f, :people], boxes[f, :people])
                    owners += [(k, f, n) for n in range(people)]
                    rois.append(frame_rois)
                    crops.append(self.crops(frames[f], frame_rois))
        if not owners:
            return answers
        raw, flag, heatmap, world_raw = self.run(np.concatenate(crops))
        marks, metres = kernels.decode_landmarks(raw, world_raw, heatmap, np.concatenate(rois))
        flag = flag.reshape(-1)
        marks[flag < MIN_POSE_FLAG, :, 3:] = 0.0
        for i, (k, f, n) in enumerate(owners):
            answer = answers[k]
            answer.landmarks[f, n], answer.world[f, n], answer.flags[f, n] = marks[i], metres[i], flag[i]
        return answers

    def warm_up(self) -> None:
        """One grey crop through the model (onnxruntime allocates before the first request)."""
        self.run(np.full((1, kernels.LANDMARK_INPUT_SIZE, kernels.LANDMARK_INPUT_SIZE, 3), 0.5, np.float32))
