"""Dynamic time warping: batched distances, the warping path, and a 0-100 movement score.

Local cost is the squared Euclidean distance between frames; the distance is the square root of
the summed cost along the best path, exactly as ``dtaidistance.dtw_ndim.distance`` with the same
``window``. CPU: numba, one pair per thread. GPU: numba-CUDA, one block per pair, its threads
sweeping the anti-diagonals of the cost matrix (the wavefront).
"""

from __future__ import annotations

import numba
import numpy as np

from posescore.kernels._backend import (array_module, check_array, check_int, check_lengths, is_gpu_array,
                                        single_threaded_blas, to_numpy)
from posescore.kernels._dp_cells import dtw_predecessor
from posescore.kernels._scoring import score_from_distance

_INF = np.inf
_predecessor = numba.njit(cache=True, nogil=True, inline="always")(dtw_predecessor)


@numba.njit(cache=True, inline="always")
def _band(i, T, U, window):
    """Columns ``[lo, hi)`` of row ``i`` inside dtaidistance's window (window <= 0: no window)."""
    if window <= 0:
        return 0, U
    return max(0, i - max(0, T - U) - window + 1), min(U, i + max(0, U - T) + window)


@numba.njit(cache=True, fastmath={"reassoc", "contract"}, nogil=True)
def _sq_norms(x, n):
    out = np.empty(n, np.float32)
    for i in range(n):
        s = np.float32(0.0)
        for d in range(x.shape[1]):
            s += x[i, d] * x[i, d]
        out[i] = s
    return out


@numba.njit(cache=True, nogil=True)
def _cost_matrix(a, b, T, U):
    """Squared Euclidean distances ``[T, U]`` float32 of ``a[:T]`` and ``b[:U]``.

    |a|^2 + |b|^2 - 2 a.b with one float32 GEMM, faster than the direct sum (docs/BENCHMARKS.md).
    Cancellation leaves ~1e-7 (|a|^2 + |b|^2) on identical frames, which the square root of a
    path-normalized cost would show as a score below 100: costs under 1% of |a|^2 + |b|^2 are
    marked -1 here (a vectorized select) and recomputed directly by :func:`_exact_cost` when the
    DP reaches them.
    """
    g = np.dot(a[:T], np.ascontiguousarray(b[:U].T))
    na = _sq_norms(a, T)
    nb = _sq_norms(b, U)
    for i in range(T):
        for j in range(U):
            scale = na[i] + nb[j]
            c = scale - np.float32(2.0) * g[i, j]
            g[i, j] = c if c >= np.float32(0.01) * scale else np.float32(-1.0)
    return g


#: Cells of the cost matrix the CPU kernels hold at a time per pair (16 MiB of float32): memory
#: stays bounded however long the sequences. A chunk's GEMM rounds by its row count, so another
#: chunk size moves a distance by float32 rounding (a few ulps), no more.
COST_CHUNK_CELLS = 1 << 22


def cost_chunk_rows(U: int) -> int:
    """Rows of the cost matrix per chunk for ``U`` columns: even (the two-row DP takes pairs), >= 2."""
    return max(2, (COST_CHUNK_CELLS // max(U, 1)) // 2 * 2)


@numba.njit(cache=True, nogil=True, inline="always")
def _exact_cost(c, a, i, b, j):
    """``c``, or the direct squared distance of frames a_i, b_j where :func:`_cost_matrix` marked
    it -1. Called inside the DP loops, whose dependency chain leaves time for this branch."""
    if c < np.float32(0.0):
        c = np.float32(0.0)
        for d in range(a.shape[1]):
            t = a[i, d] - b[j, d]
            c += t * t
    return c


@numba.njit(cache=True, nogil=True)
def _dtw_two_rows(a, b, T, U, rows):
    """:func:`_dtw_one` without a window, two rows at a time.

    Cell (i+1, j-1) needs (i, j-2), (i, j-1) and (i+1, j-2), not (i, j): computing row i's cell j
    and row i+1's cell j-1 in the same step runs two independent min-plus chains side by side,
    which the CPU overlaps (the one-row loop waits on each cell's latency). Row i is never stored.
    """
    prev = np.full(U + 1, _INF)
    cur = np.full(U + 1, _INF)
    prev[0] = 0.0
    cost = _cost_matrix(a, b, min(rows, T), U)
    base = 0
    i = 0
    while i + 1 < T:
        if i - base == rows:  # rows is even: a pair of rows never straddles two chunks
            base = i
            cost = _cost_matrix(a[i:], b, min(rows, T - i), U)
        c1 = cost[i - base]
        c2 = cost[i + 1 - base]
        left1 = _exact_cost(c1[0], a, i, b, 0) + min(prev[0], prev[1])  # row i, column 0
        diag2 = _INF   # row i, column j - 2 (as seen from row i+1's cell j - 1)
        left2 = _INF   # row i+1, column j - 2
        for j in range(1, U):
            new1 = _exact_cost(c1[j], a, i, b, j) + min(prev[j], prev[j + 1], left1)
            new2 = _exact_cost(c2[j - 1], a, i + 1, b, j - 1) + min(diag2, left1, left2)
            cur[j] = new2
            diag2 = left1
            left1 = new1
            left2 = new2
        cur[U] = _exact_cost(c2[U - 1], a, i + 1, b, U - 1) + min(diag2, left1, left2)
        prev, cur = cur, prev
        prev[0] = _INF
        i += 2
    if i < T:  # odd T: the last row alone
        if i - base == rows:
            base = i
            cost = _cost_matrix(a[i:], b, 1, U)
        _dtw_row(prev, cur, cost[i - base], a, i, b, 0, U)
        prev = cur
    return prev[U]


@numba.njit(cache=True, nogil=True, inline="always")
def _dtw_row(prev, cur, c, a, i, b, lo, hi):
    """Row i of the DP over columns ``[lo, hi)``: ``cur[j+1]`` from ``prev`` (row i-1) and ``c``."""
    left = _INF
    for j in range(lo, hi):
        left = _exact_cost(c[j], a, i, b, j) + min(prev[j], prev[j + 1], left)
        cur[j + 1] = left


@numba.njit(cache=True, nogil=True)
def _dtw_one(a, b, T, U, window, rows):
    """Accumulated squared cost of the best path for ``a[:T]`` vs ``b[:U]`` (rolling rows, the
    cost matrix ``rows`` rows at a time, an even number)."""
    if window <= 0:
        return _dtw_two_rows(a, b, T, U, rows)
    prev = np.full(U + 1, _INF)
    cur = np.full(U + 1, _INF)
    prev[0] = 0.0
    cost = _cost_matrix(a, b, min(rows, T), U)
    for i in range(T):  # with a window: cells outside the band stay inf
        if i % rows == 0 and i > 0:
            cost = _cost_matrix(a[i:], b, min(rows, T - i), U)
        lo, hi = _band(i, T, U, window)
        cur[:] = _INF
        _dtw_row(prev, cur, cost[i % rows], a, i, b, lo, hi)
        prev, cur = cur, prev
        prev[0] = _INF
    return prev[U]


@numba.njit(cache=True, nogil=True)
def _dtw_one_with_length(a, b, T, U, window, rows):
    """As :func:`_dtw_one`, also returning the best path's length (ties: diagonal, up, left)."""
    cost = _cost_matrix(a, b, min(rows, T), U)
    prev = np.full(U + 1, _INF)
    cur = np.full(U + 1, _INF)
    prev_len = np.zeros(U + 1, np.int64)
    cur_len = np.zeros(U + 1, np.int64)
    prev[0] = 0.0
    for i in range(T):
        if i % rows == 0 and i > 0:
            cost = _cost_matrix(a[i:], b, min(rows, T - i), U)
        lo, hi = _band(i, T, U, window)
        if window > 0:
            cur[:] = _INF
        c = cost[i % rows]
        left = _INF
        left_len = 0
        for j in range(lo, hi):
            best, move = _predecessor(prev[j], prev[j + 1], left)
            n = prev_len[j] if move == 0 else (prev_len[j + 1] if move == 1 else left_len)
            left = best + _exact_cost(c[j], a, i, b, j)
            left_len = n + 1
            cur[j + 1] = left
            cur_len[j + 1] = left_len
        prev, cur = cur, prev
        prev_len, cur_len = cur_len, prev_len
        prev[0] = _INF
    return prev[U], prev_len[U]


@numba.njit(cache=True, parallel=True, nogil=True)
def _dtw_batch_cpu(a, b, len_a, len_b, window, with_length, rows, out_cost, out_len):
    for p in numba.prange(a.shape[0]):
        if with_length:
            out_cost[p], out_len[p] = _dtw_one_with_length(a[p], b[p], len_a[p], len_b[p], window, rows)
        else:
            out_cost[p] = _dtw_one(a[p], b[p], len_a[p], len_b[p], window, rows)


def _dtw_cuda(a, b, len_a, len_b, window):
    """Accumulated costs and path lengths ``[B]`` on the GPU (or NumPy arrays in the simulator)."""
    xp = array_module(a)
    B, T = a.shape[0], a.shape[1]
    diag_cost = xp.empty((B, 3, T), dtype=xp.float32)
    diag_len = xp.empty((B, 3, T), dtype=xp.int32)
    out_cost = xp.empty(B, dtype=xp.float32)
    out_len = xp.empty(B, dtype=xp.int32)
    from posescore.kernels import _cuda_kernels

    threads = min(_cuda_kernels.THREADS_PER_BLOCK, max(32, _cuda_kernels.ceil_div(T, 32) * 32))
    _cuda_kernels.dtw_wavefront[B, threads](a, b, len_a, len_b, np.int32(window), diag_cost, diag_len,
                                        out_cost, out_len)
    return out_cost, out_len


def _check_sequences(a, b, lengths_a, lengths_b, window):
    """Validated ``(xp, a [B,T,D], b [B,U,D], len_a [B], len_b [B], window, single)``."""
    xp = array_module(a, b)
    a = check_array(a, "a", ndim=(2, 3), xp=xp)
    b = check_array(b, "b", ndim=(2, 3), xp=xp)
    if a.ndim != b.ndim:
        raise ValueError(f"a {list(a.shape)} and b {list(b.shape)}: expected both one pair "
                         f"([T, D], [U, D]) or both a batch ([B, T, D], [B, U, D])")
    single = a.ndim == 2
    if single:
        if lengths_a is not None or lengths_b is not None:
            raise ValueError("lengths_a / lengths_b apply to batches [B, T, D] only")
        a, b = a[None], b[None]
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"a and b: expected the same batch size, got {a.shape[0]} and {b.shape[0]}")
    if a.shape[2] != b.shape[2]:
        raise ValueError(f"a and b: expected frames of the same dimension, got D={a.shape[2]} "
                         f"and D={b.shape[2]}")
    lens = []
    for name, given, full in (("lengths_a", lengths_a, a.shape[1]), ("lengths_b", lengths_b, b.shape[1])):
        if given is None:
            lens.append(xp.full(a.shape[0], full, dtype=xp.int32))
            continue
        lens.append(check_lengths(given, name, full, count=a.shape[0], xp=xp).astype(xp.int32))
    if window is None:
        window = 0
    else:
        window = check_int(window, "window (None for no window)")
    return xp, a, b, lens[0], lens[1], window, single


def _accumulated(a, b, lengths_a, lengths_b, window, with_length):
    xp, a, b, la, lb, window, single = _check_sequences(a, b, lengths_a, lengths_b, window)
    if is_gpu_array(a):
        cost, n = _dtw_cuda(a, b, la, lb, window)
    else:
        cost = np.empty(a.shape[0], np.float64)
        n = np.ones(a.shape[0], np.int64)
        # One pair per numba thread; a multi-threaded BLAS inside each would oversubscribe.
        with single_threaded_blas():
            _dtw_batch_cpu(a, b, la, lb, window, with_length, cost_chunk_rows(b.shape[1]), cost, n)
    return xp, cost, n, single


def dtw(a, b, window=None, lengths_a=None, lengths_b=None):
    """DTW distance of one pair (``[T, D]``, ``[U, D]`` -> float) or a batch of pairs
    (``[B, T, D]``, ``[B, U, D]`` -> ``[B]`` float32), ragged batches through ``lengths_a`` and
    ``lengths_b`` ``[B]`` (pair p uses ``a[p, :lengths_a[p]]``).

    Equals ``dtaidistance.dtw_ndim.distance(a, b, window=window)``: sqrt of the summed squared
    Euclidean frame distances along the best path, with columns of row i restricted to
    ``i - max(0, T-U) - window < j < i + max(0, U-T) + window``. A window that admits no path
    gives inf.
    """
    xp, cost, _, single = _accumulated(a, b, lengths_a, lengths_b, window, False)
    dist = xp.sqrt(cost).astype(xp.float32)
    return float(dist[0]) if single else dist


def dtw_step_distance(a, b, window=None, lengths_a=None, lengths_b=None):
    """RMS per-step distance(s) of DTW-aligned normalized pose sequences ``[..., 34]``.

    The accumulated cost is divided by the warping path's length before the square root, so the
    result does not depend on the clips' lengths and speeds; for unit pose vectors it is Move
    Mirror's cosine distance per step. Shapes as in :func:`dtw`; a float for one pair, ``[B]``
    float32 for a batch.
    """
    xp, cost, n, single = _accumulated(a, b, lengths_a, lengths_b, window, True)
    dist = xp.sqrt(cost / xp.maximum(n, 1)).astype(xp.float32)
    return float(dist[0]) if single else dist


def dtw_score(a, b, window=None, lengths_a=None, lengths_b=None):
    """0-100 movement score(s): :func:`dtw_step_distance` mapped by
    ``score_from_distance(., "cosine")``. Shapes as in :func:`dtw`; a float for one pair, ``[B]``
    float32 for a batch.
    """
    scores = score_from_distance(dtw_step_distance(a, b, window, lengths_a, lengths_b), "cosine")
    return float(scores) if np.ndim(scores) == 0 else scores


#: dtw_path keeps one byte per cell of the T x U grid (the move into each cell); pairs with more
#: cells need a window or coarser sampling.
MAX_PATH_CELLS = 2_000_000_000


@numba.njit(cache=True, nogil=True)
def _dtw_moves(a, b, window, cost_rows):
    """Forward DP with rolling rows, remembering each cell's best predecessor.

    Returns ``(moves [T, U] uint8, accumulated cost)``: 0 diagonal, 1 up, 2 left, ties in that
    order (the distance kernels' order). One byte per cell instead of an (T+1) x (U+1) float64
    matrix, and the cost matrix ``cost_rows`` rows at a time.
    """
    T, U = a.shape[0], b.shape[0]
    moves = np.zeros((T, U), np.uint8)
    prev = np.full(U + 1, _INF)
    cur = np.full(U + 1, _INF)
    prev[0] = 0.0
    for i0 in range(0, T, cost_rows):
        i1 = min(T, i0 + cost_rows)
        cost = _cost_matrix(a[i0:i1], b, i1 - i0, U)
        for i in range(i0, i1):
            lo, hi = _band(i, T, U, window)
            if window > 0:
                cur[:] = _INF
            c = cost[i - i0]
            left = _INF
            for j in range(lo, hi):
                best, move = _predecessor(prev[j], prev[j + 1], left)
                left = _exact_cost(c[j], a, i, b, j) + best
                cur[j + 1] = left
                moves[i, j] = move
            prev, cur = cur, prev
            prev[0] = _INF
    return moves, prev[U]


@numba.njit(cache=True, nogil=True)
def _backtrack(moves):
    """The path ``[L, 2]`` from (0, 0) to (T-1, U-1) that :func:`_dtw_moves` recorded."""
    i, j = moves.shape[0] - 1, moves.shape[1] - 1
    path = np.empty((i + j + 1, 2), np.int64)
    n = 0
    while True:
        path[n, 0] = i
        path[n, 1] = j
        n += 1
        if i == 0 and j == 0:
            break
        move = moves[i, j]
        if move != 2:
            i -= 1
        if move != 1:
            j -= 1
    return path[:n][::-1].copy()


def dtw_path(a, b, window=None):
    """The best warping path of one pair ``[T, D]``, ``[U, D]``.

    Returns ``(path [L, 2] int64 of (i, j) from (0, 0) to (T-1, U-1), distance float)``; the path's
    summed squared costs are ``distance ** 2``. Runs on the CPU with one byte per cell of the
    T x U grid (at most MAX_PATH_CELLS: 2 GB, e.g. two 25-minute videos at 30 fps); CuPy inputs
    are copied to the host and the path comes back as a CuPy array.
    """
    xp, a, b, _, _, window, single = _check_sequences(a, b, None, None, window)
    if not single:
        raise ValueError(f"dtw_path: expected one pair [T, D], [U, D], got a batch {list(a.shape)}")
    T, U = a.shape[1], b.shape[1]
    if T * U > MAX_PATH_CELLS:
        raise ValueError(f"dtw_path: {T} x {U} frames need {T * U / 1e9:.1f} GB for the warping path "
                         f"(one byte per cell; limit {MAX_PATH_CELLS / 1e9:.0f} GB): sample the "
                         f"sequences more coarsely or compare shorter parts")
    moves, total = _dtw_moves(to_numpy(a[0]), to_numpy(b[0]), window, cost_chunk_rows(b.shape[1]))
    if not np.isfinite(total):
        raise ValueError(f"window={window} admits no warping path for lengths {T} and {U}")
    return xp.asarray(_backtrack(moves)), float(np.sqrt(total))
