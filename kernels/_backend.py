"""Backend choice and the input checkers every public kernel calls at its boundary.

The backend follows the array type: a CuPy array selects the GPU path, anything else is converted
with NumPy and takes the CPU path. CuPy is optional; without it every input is a NumPy input.
"""

from __future__ import annotations

import math
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

try:  # CuPy is the optional `gpu` extra; either CUDA build (cupy-cuda12x, cupy-cuda13x) works.
    import cupy as _cupy
except Exception:  # ImportError, or a CUDA runtime that cannot load
    _cupy = None


def cupy_or_none():
    """The ``cupy`` module if it imported, else None."""
    return _cupy


def is_gpu_array(x: Any) -> bool:
    """True when ``x`` is a CuPy array (so the GPU path applies)."""
    return _cupy is not None and isinstance(x, _cupy.ndarray)


def array_module(*arrays: Any):
    """``cupy`` if any argument is a CuPy array, else ``numpy``."""
    return _cupy if any(is_gpu_array(a) for a in arrays) else np


def check_array(
    x: Any,
    name: str,
    *,
    trailing: tuple[int | None, ...] = (),
    ndim: tuple[int, int] | None = None,
    xp=None,
    allow_nan: bool = False,
    allow_empty: bool = False,
    dtype=np.float32,
):
    """Validate ``x`` and return it as a C-contiguous array of ``dtype`` on the backend ``xp``.

    ``trailing`` gives the required sizes of the last axes (None = any size); ``ndim`` the allowed
    (min, max) number of axes. Raises TypeError for non-numeric dtypes and ValueError for a wrong
    shape, an empty array, NaN / infinity (unless ``allow_nan``) or, for a float ``dtype``, finite
    values beyond ``MAX_MAGNITUDE``, each naming ``name`` and saying what was expected and what
    came. An integer ``dtype`` takes integer arrays only.
    """
    xp = xp or array_module(x)
    if xp is np and is_gpu_array(x):
        raise TypeError(f"{name}: expected a NumPy array, got a CuPy array; "
                        f"pass all arrays on the same device")
    if xp is not np and not is_gpu_array(x):
        raise TypeError(f"{name}: expected a CuPy array (the other inputs are on the GPU), "
                        f"got {type(x).__name__}; move it with cupy.asarray")
    if xp is np and not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name}: expected an array of numbers, got {type(x).__name__}") from exc
    kind = x.dtype.kind
    if kind not in "fiu":
        raise TypeError(f"{name}: expected a real floating-point or integer array, "
                        f"got dtype {x.dtype}")
    if np.dtype(dtype).kind in "iu" and kind not in "iu":  # indices: never round floats silently
        raise TypeError(f"{name}: expected an integer array, got dtype {x.dtype}")
    shape = tuple(x.shape)
    want = "[" + ", ".join(["..."] + ["*" if t is None else str(t) for t in trailing]) + "]"
    if ndim is not None and not ndim[0] <= len(shape) <= ndim[1]:
        axes = str(ndim[0]) if ndim[0] == ndim[1] else f"{ndim[0]} to {ndim[1]}"
        raise ValueError(f"{name}: expected {axes} axes {want}, got shape {list(shape)}")
    if len(shape) < len(trailing) or any(
        t is not None and s != t for s, t in zip(shape[len(shape) - len(trailing):], trailing)
    ):
        raise ValueError(f"{name}: expected shape {want}, got shape {list(shape)}")
    if x.size == 0 and not allow_empty:
        raise ValueError(f"{name}: expected a non-empty array, got shape {list(shape)}")
    if np.dtype(dtype).kind == "f" and x.size:
        _check_values(x, name, xp, allow_nan)
    return xp.ascontiguousarray(x, dtype=dtype)


#: Largest magnitude of a float input. Squared distances of 34-dim frames within it, summed along
#: DTW paths of up to a million cells, stay within float32's range (3.4e38); any coordinate or
#: embedding is far below it. Above it, float32 costs overflow into inf and scores into 0 or NaN.
MAX_MAGNITUDE = 1e15


def _check_values(x, name: str, xp, allow_nan: bool) -> None:
    """ValueError naming ``name`` for NaN or infinity (unless ``allow_nan``) or for finite values
    beyond ``MAX_MAGNITUDE``; looked at before any cast, so a float64 too large for float32 is
    reported as such. Two reductions (min and max, NaN-skipping ones with ``allow_nan``)."""
    if allow_nan:  # NaN and inf mark missing values: only the finite ones are bounded
        with warnings.catch_warnings():  # all NaN: nothing to bound
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = float(xp.nanmin(x)), float(xp.nanmax(x))
        if not (math.isfinite(low) and math.isfinite(high)):  # an inf among them (or all NaN)
            finite = xp.isfinite(x)
            low = high = float(xp.abs(xp.where(finite, x, 0)).max()) if bool(finite.any()) else 0.0
        magnitude = max(-low, high)
    else:
        low, high = float(x.min()), float(x.max())  # NaN propagates into both
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"{name}: contains NaN or infinity; mark a missing keypoint with "
                             f"confidence 0 instead")
        magnitude = max(-low, high)
    if magnitude > MAX_MAGNITUDE:
        raise ValueError(f"{name}: expected values within +-{MAX_MAGNITUDE:g}, got {magnitude:g} (larger ones "
                         f"overflow float32 in squared distances)")


def check_lengths(lengths: Any, name: str, maximum: int, count: int | None = None, xp=np):
    """``lengths`` as a 1-D integer array on ``xp``, each in ``1..maximum``: ``count`` of them, or
    any non-empty number when None. TypeError for a ragged list or a non-integer dtype, ValueError
    for a wrong shape or a length out of range (checked one by one, so no sum can wrap around);
    each names ``name``."""
    try:
        arr = xp.asarray(to_numpy(lengths) if xp is np and is_gpu_array(lengths) else lengths)
    except (ValueError, TypeError):  # a ragged list
        raise TypeError(f"{name}: expected a 1-D array of integers, got {type(lengths).__name__}") from None
    if count is not None and arr.shape != (count,):
        raise ValueError(f"{name}: expected shape [{count}], got {list(arr.shape)}")
    if count is None and (arr.ndim != 1 or arr.size == 0):
        raise ValueError(f"{name}: expected a non-empty 1-D array, got shape {list(arr.shape)}")
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integers, got dtype {arr.dtype}")
    if bool((arr < 1).any()) or bool((arr > maximum).any()):
        raise ValueError(f"{name}: expected lengths in 1..{maximum}, got {int(arr.min())}..{int(arr.max())}")
    return arr


def check_int(value: Any, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int: TypeError naming ``name`` unless it is an integer (a bool is not),
    ValueError unless it lies in ``[minimum, maximum]``."""
    span = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer {span}, got {type(value).__name__} {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name}: expected an integer {span}, got {value!r}")
    return int(value)


def check_number(value: Any, name: str, minimum: float | None = None, maximum: float | None = None,
                 above: float | None = None) -> float:
    """``value`` as a float: TypeError naming ``name`` unless it is a real number (a bool is not),
    ValueError unless it is finite, in ``[minimum, maximum]`` and ``> above``."""
    bounds = [f"{op} {bound:g}" for op, bound in ((">", above), (">=", minimum), ("<=", maximum)) if bound is not None]
    want = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected {want}, got {type(value).__name__} {value!r}")
    if (not np.isfinite(value) or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum) or (above is not None and value <= above)):
        raise ValueError(f"{name}: expected {want}, got {value!r}")
    return float(value)


_blas_controller = None


def single_threaded_blas():
    """Context manager limiting the BLAS libraries the kernels call to one thread (for BLAS calls
    inside numba or worker threads, which would otherwise each start their own pool).

    Those are NumPy's (``@`` and ``np.matmul``) and SciPy's (numba's ``np.dot`` calls it through
    ``scipy.linalg.cython_blas``). Both are loaded before the one scan of the process's libraries,
    which is then reused: entering costs far less than a fresh scan, which dominated a kernel call
    on a short series (timings in docs/BENCHMARKS.md).
    """
    global _blas_controller
    if _blas_controller is None:
        import scipy.linalg.cython_blas  # noqa: F401  (loads SciPy's BLAS before the scan)
        from threadpoolctl import ThreadpoolController

        _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")


_pools: dict = {}
_pools_lock = threading.Lock()
_in_pool = threading.local()


def parallel_map(fn, items, workers: int | None = None) -> list:
    """``[fn(item) for item in items]`` on up to ``workers`` threads (default: numba's thread
    count) of a pool kept for the process: starting threads per call cost more than a query's scan
    of a million poses (docs/BENCHMARKS.md). Runs inline for a single item or when called from
    one of the pool's own threads (so nested calls cannot wait on themselves)."""
    items = list(items)
    if workers is None:
        import numba

        workers = numba.get_num_threads()
    if len(items) <= 1 or workers <= 1 or getattr(_in_pool, "active", False):
        return [fn(item) for item in items]
    workers = min(workers, len(items))
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="posescore-kernels")

    def run(item):
        _in_pool.active = True
        try:
            return fn(item)
        finally:
            _in_pool.active = False

    return list(pool.map(run, items))


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy of a CuPy array, or ``x`` itself as a NumPy array."""
    return _cupy.asnumpy(x) if is_gpu_array(x) else np.asarray(x)
