"""What every python model of model_repository/ shares: unpacking requests, per-request errors.

Each model's ``execute`` parses every request on its own (a bad request gets its own error
response naming the problem), computes all the good ones in one call to its service's answer
(``engine.analysis.answers``), and answers in order.
Tensors stay on the GPU when the instance is on one (DLPack both ways, no host copy).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import numpy as np
import triton_python_backend_utils as pb_utils

from posescore.engine.serving import PROBE_PARAMETER
from posescore.kernels import cupy_or_none


class RequestError(ValueError):
    """A request the model cannot serve; its message goes back to that client only."""


# -- posescore's own metrics, on Triton's metrics endpoint beside its counters -----------------------
# Probes (requests with PROBE_PARAMETER) are counted apart: client traffic is Triton's
# nv_inference_request_success less posescore_probe_requests_total.
_MODEL = {"name": "unknown"}
_METRICS: dict = {}
_FAMILIES = {
    "posescore_requests_refused_total": ("COUNTER", "Requests a posescore model refused, by model and reason "
                                                    "(invalid_input, over_bound, server_full, internal)"),
    "posescore_probe_requests_total": ("COUNTER", "Supervisor probe requests a model received (counted in "
                                                  "nv_inference_request_success too)"),
    "posescore_live_streams": ("GAUGE", "Live streams a live model instance holds"),
    "posescore_live_streams_opened_total": ("COUNTER", "Live streams started"),
    "posescore_live_streams_ended_total": ("COUNTER", "Live streams ended by their client (END)"),
    "posescore_live_streams_freed_total": ("COUNTER", "Live streams freed after their idle time"),
}


def start_metrics(args: dict) -> None:
    """Name this stub's model in its metrics (each model instance runs in a stub of its own)."""
    _MODEL["name"] = args.get("model_name", "unknown")


def metric(family: str, **labels):
    """The metric of ``family`` (see :data:`_FAMILIES`) for this model and ``labels``, made once;
    None where Triton's metrics are off."""
    key = (family, tuple(sorted(labels.items())))
    if key not in _METRICS:
        try:
            kind, description = _FAMILIES[family]
            if family not in _METRICS:
                _METRICS[family] = pb_utils.MetricFamily(name=family, description=description,
                                                         kind=getattr(pb_utils.MetricFamily, kind))
            _METRICS[key] = _METRICS[family].Metric(labels={"model": _MODEL["name"], **labels})
        except Exception:  # noqa: BLE001 - metrics never fail a request
            _METRICS[key] = None
    return _METRICS[key]


def count(family: str, value: float = 1.0, **labels) -> None:
    """Add ``value`` to a counter (or set a gauge to it, for a GAUGE family)."""
    found = metric(family, **labels)
    if found is None:
        return
    if _FAMILIES[family][0] == "GAUGE":
        found.set(value)
    else:
        found.increment(value)


def note_probe(request) -> None:
    """Count ``request`` when it is a supervisor's probe (its parameter :data:`PROBE_PARAMETER`)."""
    try:
        if PROBE_PARAMETER in (request.parameters() or ""):
            count("posescore_probe_requests_total")
    except Exception:  # noqa: BLE001 - metrics never fail a request
        pass


def refusal_reason(error: BaseException) -> str:
    """Why a request was refused, for the refusals counter: a bound of the server reached
    (server_full), a request over a model's bound (over_bound), bad input, or internal."""
    if getattr(error, "unavailable", False):
        return "server_full"
    if isinstance(error, (ValueError, TypeError)):
        text = str(error)
        return "over_bound" if ("bound" in text or "at most" in text) else "invalid_input"
    return "internal"


def instance_xp(args: dict) -> Any:
    """``cupy`` when this instance runs on a GPU and CuPy can use it, else ``numpy``."""
    cp = cupy_or_none()
    if args.get("model_instance_kind") == "GPU" and cp is not None:
        cp.cuda.Device(int(args.get("model_instance_device_id", 0))).use()
        return cp
    return np


def parameters(args: dict) -> dict[str, str]:
    """The ``parameters`` of config.pbtxt as a plain {key: string} dict."""
    config = json.loads(args["model_config"])
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def input_array(request, name: str, xp=np, *, required: bool = True):
    """Input tensor ``name`` of ``request`` as an array of ``xp`` (None when optional and absent)."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        if required:
            raise RequestError(f"missing input tensor {name!r}")
        return None
    if xp is not np:
        return xp.from_dlpack(tensor.to_dlpack())
    if not tensor.is_cpu():
        cp = cupy_or_none()
        return cp.asnumpy(cp.from_dlpack(tensor.to_dlpack()))
    return tensor.as_numpy()


def frames_input(request, xp=np):
    """Input ``frames`` as uint8 RGB ``[B, H, W, 3]`` with at least one frame of at least 1 x 1
    pixels (Triton has checked the dtype and the trailing 3)."""
    frames = input_array(request, "frames", xp)
    if frames.shape[0] == 0:
        raise RequestError("frames: empty batch, expected at least one frame [H, W, 3]")
    if frames.shape[1] == 0 or frames.shape[2] == 0:
        raise RequestError(f"frames: expected frames of at least 1x1 pixels, got {frames.shape[1]}x{frames.shape[2]}")
    return frames


def poses_input(request, name: str, xp=np, *, min_count: int = 1):
    """Input ``name`` as finite float32 poses ``[..., 17, 3]`` with at least ``min_count`` poses.

    Triton has already checked dtype and declared dims; NaN is refused here (a missing keypoint is
    sent with confidence 0), and so is an empty sequence.
    """
    poses = input_array(request, name, xp)
    count = int(np.prod(poses.shape[:-2])) if poses.ndim > 2 else 1
    if count < min_count:
        raise RequestError(f"{name}: expected at least {min_count} pose(s) [17, 3], got shape {list(poses.shape)}")
    if not bool(xp.isfinite(poses).all()):
        raise RequestError(f"{name}: NaN or infinite values; send a missing keypoint with confidence 0")
    return poses


def input_scalar(request, name: str, default, cast: Callable = lambda v: v, *, decode: bool = True):
    """A one-element input (e.g. ``metric`` BYTES [1]) as a Python value, ``default`` if absent;
    BYTES are decoded as UTF-8 first unless ``decode`` is False (``cast`` then gets the bytes)."""
    value = input_array(request, name, required=False)
    if value is None:
        return default
    if value.size != 1:
        raise RequestError(f"{name}: expected one value, got shape {list(value.shape)}")
    item = value.reshape(-1)[0]
    if isinstance(item, bytes) and decode:
        item = item.decode("utf-8", errors="replace")
    try:
        return cast(item)
    except (TypeError, ValueError) as err:
        raise RequestError(f"{name}: {err}") from None


def sequence_flag(request, name: str) -> bool:
    """The sequence batcher's control input ``name`` (``START``, ``END``; fp32 0 or 1) of ``request``."""
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return tensor is not None and bool(tensor.as_numpy().reshape(-1)[0] > 0)


def output_tensor(name: str, array) -> "pb_utils.Tensor":
    """An output tensor from a NumPy array, or from a CuPy array without a host copy."""
    if isinstance(array, np.ndarray):
        return pb_utils.Tensor(name, np.ascontiguousarray(array))
    return pb_utils.Tensor.from_dlpack(name, array)


def error_response(error: BaseException) -> "pb_utils.InferenceResponse":
    """An error response; bad-input errors carry their own message, others their type too; an
    error with ``unavailable`` True (a bound of the server reached) is UNAVAILABLE. A path
    in the message (from the file system's bytes) is written back as UTF-8."""
    message = str(error).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    count("posescore_requests_refused_total", reason=refusal_reason(error))
    if getattr(error, "unavailable", False):  # a bound reached: try later, or another server
        return pb_utils.InferenceResponse(
            output_tensors=[], error=pb_utils.TritonError(message, pb_utils.TritonError.UNAVAILABLE))
    if isinstance(error, (ValueError, TypeError)):  # the request's fault: gRPC INVALID_ARGUMENT
        return pb_utils.InferenceResponse(
            output_tensors=[], error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))
    return pb_utils.InferenceResponse(
        output_tensors=[], error=pb_utils.TritonError(f"{type(error).__name__}: {message}"))


def serve_batch(
    requests: Sequence,
    parse: Callable[[Any], Any],
    compute: Callable[[list], list[list]],
) -> list:
    """Answer ``requests`` in order: ``parse`` each one (a request that fails gets its own error
    response), then ``compute`` every parsed one in one call, which returns per item its list of
    output tensors or the exception that item alone failed with (then its error response). Should
    ``compute`` itself raise, every request it was given gets that error.
    """
    responses: list = [None] * len(requests)
    good: list[tuple[int, Any]] = []
    for i, request in enumerate(requests):
        note_probe(request)
        try:
            good.append((i, parse(request)))
        except Exception as err:  # noqa: BLE001 - any parse failure belongs to this request
            responses[i] = error_response(err)
    if good:
        try:
            outputs = compute([item for _, item in good])
            for (i, _), tensors in zip(good, outputs):
                responses[i] = (error_response(tensors) if isinstance(tensors, Exception)
                                else pb_utils.InferenceResponse(output_tensors=tensors))
        except Exception as err:  # noqa: BLE001 - the batch's failure, told to each of its requests
            for i, _ in good:
                responses[i] = error_response(err)
    return responses
