"""Subsequence DTW's pruning: lower bounds on the matches ending in each block of series frames.

Query frames are grouped around a few centres (:func:`query_clusters`); per block of PRUNE_BLOCK
series frames, the least distance from each centre (:func:`block_nearest`) bounds every match
ending there from below (:func:`block_bounds`, :func:`candidate_blocks`). kernels._subsequence runs
the DP only over the windows of the candidate blocks (:func:`candidate_windows`).
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from posescore.kernels._backend import parallel_map, single_threaded_blas
from posescore.kernels._tiles import TILE_ROWS, TiledSeries, tile_block_minima

#: Pruning runs for series at least this many times the query's length.
PRUNE_MIN_RATIO = 16
#: Series frames per block of the pruning's lower bounds, and query frame clusters they use.
PRUNE_BLOCK = 32
PRUNE_CLUSTERS = 8
#: The first, guessing pass runs the DP over the stretches of PRUNE_GUESS_STRETCH frames that
#: hold the lowest bounds, this many matches' lengths (M frames) for each of the k wanted.
PRUNE_GUESS_STRETCH = 2048
PRUNE_GUESS_MATCHES = 2
#: Beyond this share of candidate blocks the DP runs over the whole series at once.
PRUNE_MAX_SHARE = 0.5


def query_clusters(q, count):
    """Query frames grouped around ``count`` centres (k-means from farthest-point seeds):
    ``(centres [G, D] float64, label [M], radius [M])``, radius the frame's distance to its centre
    (read-only: kept for the next call with the same query, as a search's every batch makes)."""
    return _clusters_of(np.ascontiguousarray(q).tobytes(), q.shape, q.dtype.str, count)


@functools.lru_cache(maxsize=16)
def _clusters_of(data: bytes, shape: tuple, dtype: str, count: int):
    q = np.frombuffer(data, dtype).reshape(shape)
    centres, label, radius = _cluster_frames(q, count)
    for array in (centres, label, radius):
        array.flags.writeable = False
    return centres, label, radius


def _cluster_frames(q, count):
    q64 = q.astype(np.float64)
    count = min(count, q.shape[0])
    seeds = [0]
    gap = np.linalg.norm(q64 - q64[0], axis=1)
    for _ in range(count - 1):
        seeds.append(int(np.argmax(gap)))
        gap = np.minimum(gap, np.linalg.norm(q64 - q64[seeds[-1]], axis=1))
    centres = q64[seeds]
    for _ in range(8):
        label = np.argmin(((q64[:, None] - centres[None]) ** 2).sum(-1), axis=1)
        centres = np.stack([q64[label == g].mean(0) if (label == g).any() else centres[g] for g in range(len(centres))])
    label = np.argmin(((q64[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    return centres, label, np.linalg.norm(q64 - centres[label], axis=1)


@numba.njit(cache=True, nogil=True)
def _block_minima(products, s_sq, c_sq, block, near):
    """``near[g, b]`` = the least ``s_sq[j] + c_sq[g] - 2 products[j, g]`` over the frames j of
    block b, less a margin for float32 rounding (so it stays at most the exact squared distance)."""
    N, G = products.shape
    for b in range(near.shape[1]):
        for g in range(G):
            near[g, b] = np.inf
        for j in range(b * block, min(N, (b + 1) * block)):
            for g in range(G):
                total = s_sq[j] + c_sq[g]
                d2 = total - np.float32(2.0) * products[j, g] - np.float32(1e-5) * total - np.float32(1e-6)
                if d2 < near[g, b]:
                    near[g, b] = d2


def block_nearest(s, centres):
    """``[G, blocks]`` float64: at most the least distance from each centre to a frame of each
    block of PRUNE_BLOCK series frames (a float32 GEMM per piece of the series, then one pass; an
    archive's tiles straight from their float16 bits, ``kernels._tiles.tile_block_minima``;
    pieces in threads)."""
    N = s.shape[0]
    c32 = np.ascontiguousarray(centres, np.float32)
    c_sq = np.einsum("ij,ij->i", c32, c32)
    near = np.empty((len(centres), -(-N // PRUNE_BLOCK)), np.float32)
    piece = PRUNE_BLOCK << 11
    if isinstance(s, TiledSeries) and s.shape[1] == 34 and s.tiles.shape[2] == TILE_ROWS:
        bits = s.tiles.view(np.uint16)

        def run_tiles(a):
            b = min(N, a + piece)
            first = a // PRUNE_BLOCK
            tile_block_minima(bits, s.lo + a, s.lo + b, c32, c_sq, PRUNE_BLOCK,
                              near[:, first:first + -(-(b - a) // PRUNE_BLOCK)],
                              np.empty((len(c32), 2), np.float32), np.empty(TILE_ROWS, np.float32))

        parallel_map(run_tiles, range(0, N, piece))
        return np.sqrt(np.maximum(near, 0.0)).astype(np.float64)
    if isinstance(s, TiledSeries):
        s = s.frames(0, N)

    def run(a):
        part = s[a:a + piece]
        first = a // PRUNE_BLOCK
        _block_minima(part @ c32.T, np.einsum("ij,ij->i", part, part), c_sq, PRUNE_BLOCK,
                      near[:, first:first + -(-part.shape[0] // PRUNE_BLOCK)])

    with single_threaded_blas():
        parallel_map(run, range(0, N, piece))
    return np.sqrt(np.maximum(near, 0.0)).astype(np.float64)


@numba.njit(cache=True, nogil=True, inline="always")
def _cluster_sum(span, label, radius, b):
    """``sum_i max(0, span[label[i], b] - radius[i])^2``: the least DP sum a match over the span
    behind ``span [G, blocks]``'s column b can have."""
    total = 0.0
    for i in range(label.shape[0]):
        gap = span[label[i], b] - radius[i]
        if gap > 0:
            total += gap * gap
    return total


def cluster_extents(label, radius, G):
    """Per cluster of query frames: how many frames it holds and the widest radius among them,
    ``(members [G], widest [G])`` float64."""
    members = np.bincount(label, minlength=G).astype(np.float64)
    widest = np.zeros(G)
    np.maximum.at(widest, label, radius)
    return members, widest


@numba.njit(cache=True, nogil=True, inline="always")
def _widest_sum(span, members, widest, b):
    """``sum_g members[g] max(0, span[g, b] - widest[g])^2``: :func:`_cluster_sum` with each
    cluster's frames given its widest radius, so at most that (8 terms, not one a query frame)."""
    total = 0.0
    for g in range(span.shape[0]):
        gap = span[g, b] - widest[g]
        if gap > 0:
            total += members[g] * gap * gap
    return total


@numba.njit(cache=True, nogil=True)
def _widest_sums(span, members, widest):
    """:func:`_widest_sum` for every block ``[blocks]``."""
    bound = np.zeros(span.shape[1])
    for b in range(span.shape[1]):
        bound[b] = _widest_sum(span, members, widest, b)
    return bound


def block_spans(near, window_blocks):
    """The least of ``near [G, blocks]`` over the 2^j blocks ending at each block, for j = 0, 1, ...
    up to the first 2^j > window_blocks: ``[levels, G, blocks]`` (by doubling)."""
    levels = 1
    while (1 << (levels - 1)) <= window_blocks:
        levels += 1
    spans = np.empty((levels,) + near.shape, near.dtype)
    spans[0] = near
    _double_spans(spans)
    return spans


@numba.njit(cache=True, nogil=True)
def _double_spans(spans):
    """``spans[j, g, b] = min(spans[j - 1, g, b], spans[j - 1, g, b - 2^(j-1)])`` (inf before the
    first block), level by level."""
    levels, G, blocks = spans.shape
    for j in range(1, levels):
        shift = 1 << (j - 1)
        for g in range(G):
            for b in range(blocks):
                value = spans[j - 1, g, b]
                if b >= shift:
                    value = min(value, spans[j - 1, g, b - shift])
                spans[j, g, b] = value


@numba.njit(cache=True, nogil=True)
def candidate_blocks(spans, label, radius, members, widest, M, penalty_sq, block, limit):
    """``[blocks]`` bool: the blocks whose bound (:func:`block_bounds`' plus the penalty steps a
    long span needs) is at most ``limit``; each block's levels are tried in order, and the first
    under the limit decides."""
    levels, G, blocks = spans.shape
    out = np.zeros(blocks, np.bool_)
    for b in range(blocks):
        # No level can pass if the widest span does without its steps: every level's bound is at
        # least that (a span's minima only fall as it widens; float sums are monotone). Cheaper
        # still and below that: each cluster's frames all given its widest radius.
        if _widest_sum(spans[levels - 1], members, widest, b) * (1 - 1e-3) > limit:
            continue
        if _cluster_sum(spans[levels - 1], label, radius, b) * (1 - 1e-3) > limit:
            continue
        for j in range(levels):
            # level j covers matches starting w blocks before b, w in [2^(j-1), 2^j - 1] (j = 0: w = 0)
            steps = 0.0
            if j >= 2:
                shortest = ((1 << (j - 1)) - 1) * block + 1
                steps = max(0, shortest - M) * penalty_sq
            total = steps + _cluster_sum(spans[j], label, radius, b)
            if total * (1 - 1e-3) <= limit:
                out[b] = True
                break
    return out


def block_bounds(near, members, widest, window_blocks):
    """A lower bound ``[blocks]`` float64 on the DP sum of every match that ends in each block and
    spans at most ``window_blocks`` blocks before it (no length term: :func:`candidate_blocks`).

    Each query frame i is matched to some frame j of the match, and by the triangle inequality
    ``|q_i - s_j| >= |c_g - s_j| - |q_i - c_g|`` for its cluster centre c_g: over a span of blocks
    the sum is at least ``sum_i max(0, min_j |c_g - s_j| - r_i)^2``, and at least that with each
    cluster's frames given its widest radius (``members``, ``widest``: :func:`cluster_extents`),
    which is what this returns (:func:`_widest_sums`): it only picks the stretches for the first
    guess of S (kernels._subsequence's pruned DP), which any bound may do. :func:`candidate_blocks`
    adds what length costs: a match that starts w >= 1 blocks before its end block covers at least
    ``(w - 1) * PRUNE_BLOCK + 1`` frames, so that many minus M non-diagonal steps of the penalty.
    """
    span = block_spans(near, window_blocks)[-1]
    return _widest_sums(span, members, widest) * (1 - 1e-3)  # float32 sums of many terms round below


def candidate_windows(candidates, reach, N):
    """``(lo, hi, keep_from)`` DP windows covering the candidate end blocks (a bool mask), each
    starting ``reach`` frames before its first candidate end (the longest match that can count),
    overlapping ones merged."""
    windows = []
    marks = np.flatnonzero(np.diff(np.concatenate([[0], candidates.astype(np.int8), [0]])))
    for first, last in zip(marks[::2], marks[1::2]):
        keep_from, hi = first * PRUNE_BLOCK, min(N, last * PRUNE_BLOCK)
        lo = max(0, keep_from - reach)
        if windows and lo <= windows[-1][1]:
            windows[-1] = (windows[-1][0], hi, windows[-1][2])
            continue
        windows.append((lo, hi, keep_from))
    return windows
