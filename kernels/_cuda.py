"""numba-CUDA access shared by the GPU kernels.

Kernels are compiled lazily, on first use, so importing ``kernels`` never needs a GPU. With
``NUMBA_ENABLE_CUDASIM=1`` the same kernels run in numba's CUDA simulator on NumPy arrays (tests).
"""

from __future__ import annotations

import functools

THREADS_PER_BLOCK = 128


@functools.cache
def cuda():
    """The ``numba.cuda`` module (imported on first use)."""
    from numba import cuda as numba_cuda

    return numba_cuda


def ceil_div(n: int, d: int) -> int:
    return -(-n // d)
