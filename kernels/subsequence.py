"""Subsequence DTW: where in a long series (an hour of video) a short movement occurs."""

from __future__ import annotations

import numba
import numpy as np

from ._backend import array_module, check_array, single_threaded_blas, to_numpy

#: Series frames per GEMM chunk of the cost matrix (bounded memory for any series length).
SERIES_CHUNK = 8192


@numba.njit(cache=True, nogil=True)
def _subsequence_chunk(products, q_sq, s_sq, offset, penalty_sq, col, col_start, end_cost, end_start):
    """Advance the DP over the series frames of one chunk.

    ``products [n, M]`` are the dot products of frames ``offset .. offset+n`` with the query
    frames, ``q_sq [M]`` / ``s_sq [n]`` their squared norms (so a local cost is
    ``q_sq + s_sq - 2 * product``, clamped at 0 against rounding). ``col`` / ``col_start [M]``
    carry the last column (accumulated cost, match start) from chunk to chunk. Row -1 is all
    zeros (a match may start anywhere); steps other than the diagonal pay ``penalty_sq``. Writes
    the last row (the best match ending at each frame) to ``end_cost`` / ``end_start``.
    """
    n, M = products.shape
    for jj in range(n):
        j = offset + jj
        g = products[jj]
        sj = s_sq[jj]
        # Row 0: the diagonal from row -1 costs 0, so a match starting here is always best.
        diag = col[0]
        diag_start = col_start[0]
        up = max(q_sq[0] + sj - 2.0 * g[0], 0.0)
        up_start = j
        col[0] = up
        col_start[0] = j
        for i in range(1, M):
            # Predecessors in order diagonal, up, left; selects (not branches) keep it fast.
            u = up + penalty_sq
            left = col[i] + penalty_sq
            start = up_start if u < diag else diag_start
            best = u if u < diag else diag
            start = col_start[i] if left < best else start
            best = left if left < best else best
            diag = col[i]
            diag_start = col_start[i]
            up = best + max(q_sq[i] + sj - 2.0 * g[i], 0.0)
            up_start = start
            col[i] = up
            col_start[i] = start
        end_cost[j] = up
        end_start[j] = up_start


@numba.njit(cache=True, nogil=True)
def _best_disjoint(values, starts, k, min_length):
    """Greedy k best matches by value whose [start, end] ranges do not overlap and that cover at
    least ``min_length`` frames."""
    n = values.shape[0]
    taken = np.zeros(n, np.bool_)
    out = np.full(k, -1, np.int64)
    found = 0
    while found < k:
        best = np.inf
        end = -1
        for j in range(n):
            if not taken[j] and values[j] < best and j - starts[j] + 1 >= min_length:
                best = values[j]
                end = j
        if end < 0:
            break
        out[found] = end
        found += 1
        s = starts[end]
        for j in range(n):  # drop every candidate whose range meets [s, end]
            if j >= s and starts[j] <= end:
                taken[j] = True
    return out[:found]


def subsequence_dtw(query, series, k: int = 1, penalty: float = 0.1, min_length: int = 2):
    """The ``k`` best non-overlapping matches of ``query [M, D]`` in ``series [N, D]``.

    DTW with a free start and end in ``series``: every frame of the query is matched, any
    stretch of the series may be. Returns ``(costs [k] float32, starts [k] int64, ends [k] int64)``,
    best first; a match covers ``series[start:end]`` (end exclusive). A cost is the match's DTW
    distance (sqrt of the summed squared Euclidean frame distances along its path, plus
    ``penalty**2`` per non-diagonal step) divided by M: ``dtaidistance.subsequence.
    subsequencealignment.subsequence_alignment(query, series, penalty).best_match().value``.
    Matches covering fewer than ``min_length`` series frames (a whole movement matched to one
    frozen frame) are skipped, as dtaidistance's ``minlength``. Fewer than k results come back
    when the series has no more disjoint matches.
    The DP runs on the CPU; CuPy inputs are copied to the host and the results returned as CuPy.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected an integer >= 1, got {k!r}")
    if not np.isfinite(penalty) or penalty < 0:
        raise ValueError(f"penalty: expected a finite number >= 0, got {penalty!r}")
    if isinstance(min_length, bool) or not isinstance(min_length, (int, np.integer)) or min_length < 1:
        raise ValueError(f"min_length: expected an integer >= 1, got {min_length!r}")
    xp = array_module(query, series)
    q = to_numpy(check_array(query, "query", ndim=(2, 2), xp=xp))
    s = to_numpy(check_array(series, "series", ndim=(2, 2), xp=xp))
    if q.shape[1] != s.shape[1]:
        raise ValueError(f"query [M, {q.shape[1]}] and series [N, {s.shape[1]}]: expected frames "
                         f"of the same dimension D")
    M, N = q.shape[0], s.shape[0]
    col = np.full(M, np.inf)
    col_start = np.zeros(M, np.int64)
    end_cost = np.empty(N, np.float64)
    end_start = np.empty(N, np.int64)
    q_sq = np.einsum("ij,ij->i", q, q)
    with single_threaded_blas():  # M x chunk GEMMs are too small to gain from threads
        for lo in range(0, N, SERIES_CHUNK):
            block = s[lo:lo + SERIES_CHUNK]
            _subsequence_chunk(block @ q.T, q_sq, np.einsum("ij,ij->i", block, block), lo,
                               float(penalty) ** 2, col, col_start, end_cost, end_start)
    values = np.sqrt(end_cost) / M
    ends = _best_disjoint(values, end_start, int(k), int(min_length))
    return (xp.asarray(values[ends].astype(np.float32)), xp.asarray(end_start[ends]),
            xp.asarray(ends + 1))
