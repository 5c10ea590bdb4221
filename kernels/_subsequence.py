"""Subsequence DTW: where in a long series (an hour of video) a short movement occurs."""

from __future__ import annotations

import numba
import numpy as np

from posescore.kernels._backend import (array_module, check_array, check_int, check_lengths, check_number, parallel_map,
                                        single_threaded_blas, to_numpy)
from posescore.kernels._dp_cells import subsequence_cell
from posescore.kernels._pruning import (PRUNE_BLOCK, PRUNE_CLUSTERS, PRUNE_GUESS_MATCHES, PRUNE_GUESS_STRETCH,
                                        PRUNE_MAX_SHARE, PRUNE_MIN_RATIO, block_bounds, block_nearest, block_spans,
                                        candidate_blocks, candidate_windows, cluster_extents, query_clusters)
from posescore.kernels._tiles import TiledSeries

#: Series frames per GEMM chunk of the cost matrix: bounded memory for any series length, and
#: the chunk's products (2048 x M float32) stay in a core's L2 cache between GEMM and DP.
SERIES_CHUNK = 2048
#: A series too short for lanes (below LANES segments of twice the warm-up) is cut into one
#: segment per thread (none shorter than MIN_SEGMENT frames). A
#: segment's DP starts early from an unknown column (warm_up_frames); it counts only where its
#: column equals the exact one, which is checked, and recomputed where it does not.
MIN_SEGMENT = 8192
#: Segments one thread runs in lockstep, one per SIMD lane: the DP's lane loop is contiguous in
#: memory, so LLVM vectorizes it (8 or 16 lanes were not vectorized), and a cell costs less than
#: in the scalar pair kernel (timings in docs/BENCHMARKS.md). Costs in float32 and starts in int32:
#: 8 lanes per 256-bit instruction, not 4.
LANES = 32
#: Lockstep steps per GEMM chunk: the products [M, LANE_CHUNK, LANES] float32 stay in L2.
LANE_CHUNK = 64
#: Columns a lane group keeps for repairs: after each of its first chunks past all its lanes'
#: warm-ups (and after its last chunk).
LANE_CHECKPOINTS = 4
#: A match whose float32 DP sum is below this share of its frames' summed squared norms (query
#: and series) is recomputed directly in float64: cancellation in |a|^2 + |b|^2 - 2 a.b could be
#: ~1e-5 of its sum or more. Above it, the reported cost is within ~1e-5 of the exact one.
EXACT_BELOW = 0.01
#: Values the k-best selection samples to bound its batches (a sort of this many, not of N).
SELECTION_SAMPLE = 4096


def warm_up_frames(query_length: int) -> int:
    """Frames a segment's DP runs before its first frame: its column has (almost always) met the
    exact one by then. Measured: 64 frames on random data and 256 on repeated walking poses
    for a 90-frame query."""
    return max(256, 4 * query_length)


_cell = numba.njit(cache=True, nogil=True, inline="always")(subsequence_cell)


@numba.njit(cache=True, nogil=True)
def _subsequence_chunk(products, q_sq, s_sq, resets, offset, penalty_sq, col, col_start, end_cost, end_start):
    """Advance the DP over the series frames of one chunk.

    ``products [n, M]`` are the dot products of frames ``offset .. offset+n`` with the query
    frames, ``q_sq [M]`` / ``s_sq [n]`` their squared norms (so a local cost is
    ``q_sq + s_sq - 2 * product``, clamped at 0 against rounding). ``col`` / ``col_start [M]``
    carry the last column (accumulated cost, match start) from chunk to chunk. Row -1 is all
    zeros (a match may start anywhere); steps other than the diagonal pay ``penalty_sq``. Writes
    the last row (the best match ending at each frame of the chunk) to ``end_cost [n]`` /
    ``end_start [n]``. Where ``resets [n]`` is True a new series begins: the column before it is
    infinite (no match continues across); None (one series) compiles without the checks.

    Columns go in pairs, skewed by one row: cell (i, j) and cell (i-1, j+1) are independent, so
    the two dependency chains overlap. A frame's values do not depend on how frames are paired.
    """
    n, M = products.shape
    cost0, cost0_p = np.empty(M, np.float32), np.empty(M, np.float32)
    cost1, cost1_p = np.empty(M, np.float32), np.empty(M, np.float32)
    zero, two = np.float32(0.0), np.float32(2.0)
    jj = 0
    while jj < n:
        j = offset + jj
        if resets is not None and resets[jj]:
            col[:] = np.inf
        pair = jj + 1 < n and (resets is None or not resets[jj + 1])
        for i in range(M):
            c = max(q_sq[i] + s_sq[jj] - two * products[jj, i], zero)
            cost0[i], cost0_p[i] = c, c + penalty_sq
            if pair:
                c = max(q_sq[i] + s_sq[jj + 1] - two * products[jj + 1, i], zero)
                cost1[i], cost1_p[i] = c, c + penalty_sq
        # Column j, row 0: the diagonal from row -1 costs 0, so a match starting here is best.
        a0, up0, start0 = cost0[0], cost0_p[0], j
        diag0, diag0_start = col[0], col_start[0]
        # Column j+1 trails one row behind; it reads column j's last two cells.
        a1, up1, start1 = zero, zero, j + 1
        prev0, prev0_start = zero, j
        diag1, diag1_start = zero, j
        for i in range(1, M):
            left, left_start = col[i] + penalty_sq, col_start[i]
            prev0, prev0_start = a0, start0
            a0, up0, start0 = _cell(up0, start0, diag0, diag0_start, left, left_start, cost0[i], cost0_p[i])
            diag0, diag0_start = col[i], col_start[i]
            if pair:
                if i == 1:
                    a1, up1, start1 = cost1[0], cost1_p[0], j + 1
                else:
                    a1, up1, start1 = _cell(up1, start1, diag1, diag1_start, prev0 + penalty_sq,
                                            prev0_start, cost1[i - 1], cost1_p[i - 1])
                col[i - 1], col_start[i - 1] = a1, start1
                diag1, diag1_start = prev0, prev0_start
            else:
                col[i - 1], col_start[i - 1] = prev0, prev0_start
        end_cost[jj], end_start[jj] = a0, start0
        if not pair:
            col[M - 1], col_start[M - 1] = a0, start0
            jj += 1
            continue
        if M == 1:
            a1, start1 = cost1[0], j + 1
        else:
            a1, up1, start1 = _cell(up1, start1, diag1, diag1_start, a0 + penalty_sq, start0,
                                    cost1[M - 1], cost1_p[M - 1])
        col[M - 1], col_start[M - 1] = a1, start1
        end_cost[jj + 1], end_start[jj + 1] = a1, start1
        jj += 2


@numba.njit(cache=True, nogil=True)
def _lanes_chunk(products, q_sq, s_sq, resets, frames, keep_from, penalty_sq, col, col_start,
                 entry_cost, entry_start, end_cost, end_start):
    """Advance ``L`` independent DPs (lanes: one series segment each) by ``T`` frames each.

    ``products [M, T, L]`` / ``s_sq [T, L]`` (float32) are the dot products with the query frames
    and the squared norms of series frame ``frames[l] + t`` of lane l; ``resets [T, L]`` bool (or
    None) marks the first frame of a series there. ``col`` / ``col_start [M, L]`` carry each lane's
    column. The column entering frame ``keep_from[l]`` is copied to ``entry_*[:, l]``; the last
    row of frames ``>= keep_from[l]`` goes to ``end_cost`` / ``end_start`` [N] (whole series).
    Cells are :func:`_subsequence_chunk`'s, in the same order of operations: the same values bit
    for bit. Every inner loop runs over lanes, contiguous in memory, so it vectorizes.
    """
    M, T, L = products.shape
    up = np.empty(L, np.float32)
    up_start = np.empty(L, col_start.dtype)
    diag = np.empty(L, np.float32)
    diag_start = np.empty(L, col_start.dtype)
    zero, two = np.float32(0.0), np.float32(2.0)
    for t in range(T):
        for l in range(L):
            if frames[l] + t == keep_from[l]:
                entry_cost[:, l] = col[:, l]
                entry_start[:, l] = col_start[:, l]
            if resets is not None and resets[t, l]:
                col[:, l] = np.inf
        for l in range(L):  # row 0: the diagonal from row -1 costs 0, so a match starting here is best
            c = max(q_sq[0] + s_sq[t, l] - two * products[0, t, l], zero)
            diag[l], diag_start[l] = col[0, l], col_start[0, l]
            col[0, l], col_start[0, l] = c, frames[l] + t
            up[l], up_start[l] = c + penalty_sq, frames[l] + t
        for i in range(1, M):
            for l in range(L):
                c = max(q_sq[i] + s_sq[t, l] - two * products[i, t, l], zero)
                left, left_start = col[i, l] + penalty_sq, col_start[i, l]
                d, d_start = diag[l], diag_start[l]
                diag[l], diag_start[l] = col[i, l], left_start
                a, a_up, start = _cell(up[l], up_start[l], d, d_start, left, left_start, c, c + penalty_sq)
                col[i, l], col_start[i, l] = a, start
                up[l], up_start[l] = a_up, start
        for l in range(L):
            j = frames[l] + t
            if j >= keep_from[l]:
                end_cost[j], end_start[j] = col[M - 1, l], col_start[M - 1, l]


@numba.njit(cache=True, nogil=True)
def _gather_lanes(s, s_sq, resets, frames, rows, rows_sq, rows_resets):
    """``rows [T, L, D]`` = ``s[frames[l] + t]``, with their squared norms ``rows_sq [T, L]`` and
    ``rows_resets [T, L]`` (left alone where ``resets`` is None)."""
    T, L, D = rows.shape
    for t in range(T):
        for l in range(L):
            j = frames[l] + t
            for d in range(D):
                rows[t, l, d] = s[j, d]
            rows_sq[t, l] = s_sq[j]
            if resets is not None:
                rows_resets[t, l] = resets[j]


@numba.njit(cache=True, nogil=True)
def _accept_disjoint(ends, starts, k, found, out, taken_start, taken_end):
    """Walk candidate matches ``[starts[n], ends[n]]`` best first, appending to ``out`` each that
    meets none taken so far, until ``k`` are; returns how many are. ``taken_start`` / ``taken_end``
    hold the taken ranges (``found`` of them), sorted by start: being disjoint, their ends are
    sorted too, so only the last range starting at or before a candidate's end can meet it."""
    for n in range(ends.shape[0]):
        if found == k:
            break
        end, start = ends[n], starts[n]
        place = np.searchsorted(taken_start[:found], end, side="right")
        if place > 0 and taken_end[place - 1] >= start:
            continue
        for m in range(found, place, -1):
            taken_start[m], taken_end[m] = taken_start[m - 1], taken_end[m - 1]
        taken_start[place], taken_end[place] = start, end
        out[found] = end
        found += 1
    return found


@numba.njit(cache=True, nogil=True)
def _match_costs(q, frames, offsets, matches, penalty_sq):
    """Accumulated costs ``[len(matches)]`` float64 of the given matches, each recomputed from its
    own frames: match m is ``frames[offsets[m]:offsets[m + 1]]`` (``[L_m, D]``), its cost the least over paths
    from (0, first frame) to (M - 1, last frame) of the summed squared Euclidean distances,
    computed directly in float64, plus ``penalty_sq`` per non-diagonal step (the DP's rules with
    the match's start fixed). A frame equal to a query frame costs exactly 0 here, where the
    float32 DP's ``|a|^2 + |b|^2 - 2 a.b`` leaves ~1e-7 (|a|^2 + |b|^2) of cancellation."""
    M, D = q.shape
    out = np.empty(matches.shape[0], np.float64)
    for n in range(matches.shape[0]):
        m = matches[n]
        lo, L = offsets[m], offsets[m + 1] - offsets[m]
        match = np.empty((D, L), np.float64)  # the match's frames, transposed: the cost loops run along L
        for j in range(L):
            for d in range(D):
                match[d, j] = frames[lo + j, d]
        row = np.full(L, np.inf)  # row i - 1 (row -1: no path enters from it but at (0, 0)), then row i
        cost = np.empty(L, np.float64)
        for i in range(M):
            cost[:] = 0.0
            for d in range(D):
                x = np.float64(q[i, d])
                for j in range(L):
                    t = x - match[d, j]
                    cost[j] += t * t
            left = np.inf  # cell (i, j - 1)
            diag = 0.0 if i == 0 else np.inf  # cell (i - 1, j - 1); the path enters (0, 0) from it
            for j in range(L):
                c = cost[j]
                best = min(diag, row[j] + penalty_sq, left + penalty_sq)
                diag = row[j]
                row[j] = best + c
                left = row[j]
        out[n] = row[L - 1]
    return out


def _best_disjoint(values, starts, k, min_length):
    """Ends ``[<= k]`` int64 of the greedy k best matches by value (a match ending at frame j
    starts at ``starts[j]``) whose ranges do not overlap and cover at least ``min_length``
    frames; ties go to the lower end. NumPy or CuPy ``values [N]`` / ``starts [N]``; a NumPy
    result. Candidates come in batches of ascending value ranges, each sorted on the host: a
    range's upper bound is read from a sorted sample of ~SELECTION_SAMPLE values so that it
    holds about ``max(64, 4k)`` candidates (twice as many each time), so a small k costs a few
    array passes over N, not a sort of N."""
    xp = array_module(values)
    # the ends that can count, first: a pruned search leaves most values inf
    ends = xp.flatnonzero(xp.isfinite(values))
    starts = starts[ends].astype(xp.int64)
    keep = (ends - starts + 1) >= min_length
    ends, starts, values = ends[keep], starts[keep], values[ends][keep]
    n = values.shape[0]
    stride = max(1, n // SELECTION_SAMPLE)
    sample = np.sort(to_numpy(values[::stride]))
    out, taken_start, taken_end = (np.empty(k, np.int64) for _ in range(3))
    found, wanted, below = 0, max(64, 4 * k), -np.inf
    while found < k and below < np.inf:
        rank = int(np.searchsorted(sample, below, side="right")) + -(-wanted // stride)
        upper = sample[rank] if rank < sample.size else np.inf  # > below: the range is never empty
        batch = xp.flatnonzero((values > below) & (values <= upper))  # ascending ends
        order = np.argsort(to_numpy(values[batch]), kind="stable")  # by value, then by end
        found = _accept_disjoint(to_numpy(ends[batch])[order], to_numpy(starts[batch])[order], k,
                                 found, out, taken_start, taken_end)
        below, wanted = upper, 2 * wanted
    return out[:found]


def subsequence_dtw(query, series, k: int = 1, penalty: float = 0.1, min_length: int = 2,
                    series_lengths=None, prune: bool = False, max_cost: float | None = None,
                    rows: tuple[int, int] | None = None, buffer: np.ndarray | None = None):
    """The ``k`` best non-overlapping matches of ``query [M, D]`` in ``series [N, D]``.

    DTW with a free start and end in ``series``: every frame of the query is matched, any
    stretch of the series may be. Returns ``(costs [k] float32, starts [k] int64, ends [k] int64)``,
    best first; a match covers ``series[start:end]`` (end exclusive). A cost is the match's DTW
    distance (sqrt of the summed squared Euclidean frame distances along its path, plus
    ``penalty**2`` per non-diagonal step) divided by M: ``dtaidistance.subsequence.
    subsequencealignment.subsequence_alignment(query, series, penalty).best_match().value``, to
    float32 rounding. The DP runs in float32, like its inputs (twice the SIMD lanes of float64),
    with local costs |a|^2 + |b|^2 - 2 a.b from a GEMM; a selected match whose sum could be mostly
    cancellation (a near or exact copy of the query) is recomputed in float64 from its frames, so
    an exact copy costs 0.
    Matches covering fewer than ``min_length`` series frames (a whole movement matched to one
    frozen frame) are skipped, as dtaidistance's ``minlength``. Fewer than k results come back
    when the series has no more disjoint matches.
    ``series_lengths [S]`` (integers >= 1 summing to N) makes ``series`` S series one after the
    other (every track of an archive in one call): no match spans two, starts and ends index the
    whole array, and the result is the k best of all the series' matches, as S calls would give.
    On the CPU the series is cut into segments, run in numba's threads (``numba.set_num_threads``
    limits them), LANES segments per thread in lockstep in SIMD lanes where the series is long
    enough, with the same result as one thread and one segment. CuPy inputs run the numba-CUDA wavefront
    kernel (one block per segment, one thread per query frame; queries up to GPU_MAX_QUERY frames,
    longer ones are copied to the host), segments checked and repaired the same way; its costs
    equal the CPU's up to float rounding, and the results come back as CuPy arrays.
    ``max_cost``: only matches costing at most this count (fewer than k may come back).
    ``prune`` (CPU, ``penalty > 0``): the same result without running the DP where no match can be
    among the k best (:func:`_pruned_ends`), for series much longer than the query; a ``max_cost``
    makes it prune more (a rare movement's k-th best match is otherwise any frame's).
    ``series`` may also be float16 tiles ``[T, D, L]`` (``kernels.to_tiles``, NumPy), of which
    ``rows`` ``(lo, hi)`` are the series (an archive's vectors, in place): the same result, the
    frames converted to float32 only where the DP runs (all of them unpruned; into ``buffer``,
    float32 ``[>= hi - lo, D]``, when given), the pruning's bounds read from the tiles.
    """
    k = check_int(k, "k")
    penalty = check_number(penalty, "penalty", minimum=0.0)
    penalty_sq = _penalty_sq(penalty)
    min_length = check_int(min_length, "min_length")
    if getattr(series, "ndim", 0) == 3:
        s = TiledSeries(series, rows, buffer)
        xp = array_module(query)
        if xp is not np:
            raise ValueError("series: tiles [T, D, L] are searched on the CPU; give the GPU rows [N, D]")
    elif rows is not None or buffer is not None:
        raise ValueError("rows, buffer: only for a series of tiles [T, D, L]; slice a series [N, D] instead")
    else:
        xp = array_module(query, series)
        s = check_array(series, "series", ndim=(2, 2), xp=xp)
    q = check_array(query, "query", ndim=(2, 2), xp=xp)
    if q.shape[1] != s.shape[1]:
        raise ValueError(f"query [M, {q.shape[1]}] and series [N, {s.shape[1]}]: expected frames "
                         f"of the same dimension D")
    M, N = q.shape[0], s.shape[0]
    k = min(k, N)  # there are no more disjoint matches than frames
    resets = _resets(series_lengths, N)
    # the cap on the DP's float32 sums (a match's cost is sqrt(sum) / M)
    cap = np.inf if max_cost is None else float(check_number(max_cost, "max_cost", minimum=0.0) * M) ** 2
    if xp is not np and M <= _gpu_max_query():
        end_cost, end_start = _subsequence_cuda(q, s, penalty_sq, resets=resets)
        end_cost = xp.where(end_cost <= cap, end_cost, xp.float32(xp.inf))
        values = xp.sqrt(end_cost) / M
        ends = _best_disjoint(values, end_start, k, min_length)
        picked = xp.asarray(ends)
        return _results(q, s, to_numpy(end_cost[picked]), to_numpy(end_start[picked]), ends, penalty, xp)
    q, s = to_numpy(q), s if isinstance(s, TiledSeries) else to_numpy(s)
    if prune and penalty_sq > 0 and N >= PRUNE_MIN_RATIO * M:
        end_cost, end_start = _pruned_ends(q, s, penalty_sq, resets, k, min_length, cap)
    else:
        end_cost, end_start = _all_ends(q, _frames(s, 0, N), penalty_sq, resets)
    end_cost = np.where(end_cost <= cap, end_cost, np.float32(np.inf))
    ends = _best_disjoint(np.sqrt(end_cost) / M, end_start, k, min_length)
    return _results(q, s, end_cost[ends], end_start[ends], ends, penalty, xp)


def _frames(s, a: int, b: int):
    """Frames ``[a, b)`` of a series (an array ``[N, D]`` or a :class:`TiledSeries`) as float32 rows."""
    return s.frames(a, b) if isinstance(s, TiledSeries) else s[a:b]


def _all_ends(q, s, penalty_sq, resets):
    """The DP's last row over the whole series (:func:`_subsequence_ends`), threads and lanes
    chosen by the series' length."""
    M, N = q.shape[0], s.shape[0]
    threads, warm_up = numba.get_num_threads(), warm_up_frames(M)
    groups = min(threads, N // (LANES * 2 * warm_up))  # lane segments at least twice the warm-up
    segments, lanes = (groups, LANES) if groups >= 1 else (max(1, min(threads, N // MIN_SEGMENT)), 1)
    return _subsequence_ends(q, s, penalty_sq, segments, warm_up, resets, lanes)


def _window_ends(q, s, penalty_sq, resets, windows, end_cost, end_start):
    """Run the DP from an infinite column over each window ``(lo, hi, keep_from)`` of the series,
    writing its ends from ``keep_from`` on into the full-length arrays."""
    def run(window):
        lo, hi, keep_from = window
        cost, start = _all_ends(q, _frames(s, lo, hi), penalty_sq, None if resets is None else resets[lo:hi])
        a = keep_from - lo
        end_cost[keep_from:hi] = cost[a:]
        end_start[keep_from:hi] = start[a:] + lo

    small = [w for w in windows if w[1] - w[0] < MIN_SEGMENT]
    parallel_map(run, small)
    for window in windows:
        if window[1] - window[0] >= MIN_SEGMENT:
            run(window)


def _pruned_ends(q, s, penalty_sq, resets, k, min_length, cap=np.inf):
    """The DP's last row where it matters: ``(cost [N], start [N])`` as :func:`_all_ends` at
    every end whose match could cost less than the k-th best, inf elsewhere.

    A guess of the k-th best sum S comes from the DP over the few stretches of the series that
    hold the lowest bounds (for matches about the query's length). A match of sum < S is shorter
    than ``M + S / penalty^2`` frames (each extra series frame is a non-diagonal step), which
    bounds the span the blocks' lower bounds minimize over (:func:`candidate_blocks`, a longer
    span paying for its steps); blocks whose bound is above S are skipped, and the DP runs over
    windows that start that far before the others, from an infinite column: a match of sum < S
    ends there as in the whole series (its path, and every better one, start inside the window).
    If the k best disjoint matches of sum < S are k, they are the series' k best; else S grows (at
    worst to ``cap``, above which no match counts, or to inf: the whole series). The matches are
    the whole series'; a cost may differ in float32's last bits, since BLAS rounds a frame's
    products differently by its place in the GEMM.
    """
    M, N = q.shape[0], s.shape[0]
    centres, label, radius = query_clusters(q, PRUNE_CLUSTERS)
    label = label.astype(np.int64)
    members, widest = cluster_extents(label, radius, len(centres))
    blocks = -(-N // PRUNE_BLOCK)
    end_cost = np.full(N, np.inf, np.float32)
    end_start = np.zeros(N, start_dtype(N))
    near = block_nearest(s, centres)
    guess_bound = block_bounds(near, members, widest, -(-M // PRUNE_BLOCK) + 1)
    stretch = max(1, PRUNE_GUESS_STRETCH // PRUNE_BLOCK)  # blocks per stretch
    padded = np.pad(guess_bound, (0, (-blocks) % stretch), constant_values=np.inf)
    lowest = padded.reshape(-1, stretch).min(1)
    wanted = -(-PRUNE_GUESS_MATCHES * k * M // PRUNE_GUESS_STRETCH)
    chosen = np.zeros(len(lowest) * stretch, bool)
    for number in np.argsort(lowest, kind="stable")[:wanted]:
        chosen[number * stretch:(number + 1) * stretch] = True
    _window_ends(q, s, penalty_sq, resets, candidate_windows(chosen[:blocks], M, N), end_cost, end_start)
    ends = _best_disjoint(end_cost, end_start, k, min_length)
    threshold = min(cap, float(end_cost[ends].max()) if len(ends) == k else np.inf)
    while True:
        if not np.isfinite(threshold):
            return _all_ends(q, _frames(s, 0, N), penalty_sq, resets)
        reach = M + int(np.ceil(threshold * (1 + 1e-4) / float(penalty_sq))) + 2
        candidates = candidate_blocks(block_spans(near, -(-reach // PRUNE_BLOCK) + 1), label, radius, members,
                                      widest, M, float(penalty_sq), PRUNE_BLOCK, threshold * (1 + 1e-4))
        if candidates.mean() > PRUNE_MAX_SHARE:  # the movement is everywhere: no window overhead
            return _all_ends(q, _frames(s, 0, N), penalty_sq, resets)
        end_cost[:] = np.inf
        _window_ends(q, s, penalty_sq, resets, candidate_windows(candidates, reach, N), end_cost, end_start)
        below = np.where(end_cost <= threshold, end_cost, np.float32(np.inf))
        if threshold >= cap or len(_best_disjoint(below, end_start, k, min_length)) == k:
            return below, end_start
        found = end_cost[_best_disjoint(end_cost, end_start, k, min_length)]
        grown = max(4 * threshold, float(found.max()) if len(found) == k else np.inf)
        threshold = min(cap, grown if grown > threshold else np.inf)


def _results(q, s, sums, starts, ends, penalty, xp):
    """The public result ``(costs, starts, ends + 1)`` on ``xp`` of the selected matches: last frames
    ``ends`` (NumPy int64, inclusive), their DP sums and starts (NumPy), best first (ties in
    selection order). A float32 sum below EXACT_BELOW of its frames' summed squared norms may be
    mostly cancellation (an exact copy of the query sums to ~1e-7 of them, not 0): such matches
    are recomputed from their frames by :func:`_match_costs`. One gather of the matched frames,
    at most N (the matches are disjoint)."""
    M = q.shape[0]
    q, starts = to_numpy(q), starts.astype(np.int64)
    lengths = ends + 1 - starts
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    frames = s.gather(index) if isinstance(s, TiledSeries) else to_numpy(s[xp.asarray(index)])
    scale = np.einsum("ij,ij->", q, q) + np.add.reduceat(np.einsum("ij,ij->i", frames, frames), offsets[:-1])
    sums = sums.astype(np.float64)
    inexact = np.flatnonzero(sums < EXACT_BELOW * scale)
    sums[inexact] = _match_costs(q, frames, offsets, inexact, penalty * penalty)
    costs = (np.sqrt(sums) / M).astype(np.float32)
    order = np.argsort(costs, kind="stable")
    return xp.asarray(costs[order]), xp.asarray(starts[order]), xp.asarray(ends[order] + 1)


def _penalty_sq(penalty: float) -> np.float32:
    """``penalty**2`` in the DP's float32: inf for a huge penalty (no warping at all), not an
    OverflowError or an overflow warning."""
    square = penalty * penalty
    return np.float32(square) if square <= np.finfo(np.float32).max else np.float32(np.inf)


def _resets(series_lengths, N):
    """``[N]`` bool, True at the first frame of every series but the first; None for one series."""
    if series_lengths is None:
        return None
    lengths = check_lengths(series_lengths, "series_lengths", N).astype(np.int64)
    if int(lengths.sum()) != N:
        raise ValueError(f"series_lengths: expected lengths summing to the series' {N} frames, "
                         f"got {int(lengths.sum())}")
    resets = np.zeros(N, np.bool_)
    resets[np.cumsum(lengths[:-1])] = True
    return resets


def _dp(q, q_sq, s, s_sq, resets, lo, hi, penalty_sq, col, col_start, end_cost, end_start, checkpoints=None):
    """Run the DP over series frames ``lo .. hi`` from the column ``col`` / ``col_start`` (updated
    in place), writing the best match ending at each frame to ``end_cost`` / ``end_start`` (indexed
    from ``lo``). ``s_sq [N]`` are the frames' squared norms; ``resets [N]`` bool (or None: one
    series) marks the first frame of each series. With ``checkpoints`` (a list), the column after
    each chunk is appended to it."""
    # One products buffer for every chunk: a fresh 0.7 MB array per chunk costs page faults.
    buffer = np.empty((max(min(SERIES_CHUNK, hi - lo), 2), q.shape[0]), np.float32)
    for a in range(lo, hi, SERIES_CHUNK):
        b = min(a + SERIES_CHUNK, hi)
        _subsequence_chunk(_products(s[a:b], q, buffer), q_sq, s_sq[a:b],
                           None if resets is None else resets[a:b], a, penalty_sq,
                           col, col_start, end_cost[a - lo:b - lo], end_start[a - lo:b - lo])
        if checkpoints is not None:
            checkpoints.append((b, col.copy(), col_start.copy()))


def _products(block, q, buffer):
    """``block @ q.T`` into ``buffer``, with the same rounding however the series is chunked: a
    one-row product goes through BLAS's matrix-vector routine, whose sums round differently, so it
    is computed as two rows."""
    n = block.shape[0]
    if n == 1:
        return np.matmul(np.concatenate([block, block]), q.T, out=buffer[:2])[:1]
    return np.matmul(block, q.T, out=buffer[:n])


def _lane_bounds(N, segments, warm_up):
    """Bounds ``[segments + 1]`` of segments that lanes can run in lockstep, and the frames each
    lane runs (``steps``): segment 0 is ``[0, steps)``; the others split ``[steps, N)`` evenly, none
    longer than ``steps - warm_up``, so lane p, which runs frames ``hi_p - steps .. hi_p``, warms up
    over ``warm_up`` frames or more before its segment."""
    steps = min(N, -(-(N + (segments - 1) * warm_up) // segments))
    bounds = np.zeros(segments + 1, np.int64)
    bounds[1:] = np.linspace(steps, N, segments).astype(np.int64)
    return bounds, steps


def _subsequence_ends(q, s, penalty_sq, segments, warm_up, resets=None, lanes=1):
    """The last DP row, ``(cost [N] float32, start [N] start_dtype(N))``: the best match ending at
    each frame.

    The series is cut into ``segments`` parts, run in threads; with ``lanes > 1`` each thread
    runs ``lanes`` parts in lockstep, one per SIMD lane (:func:`_lanes_chunk`). Segment p > 0
    starts ``warm_up`` frames early (or more) with an infinite column; once its column equals (bit
    for bit) the exact column of the same frame, everything after is exact too, since the DP
    depends only on that column. After the threads, segments are checked in order and, where the
    columns differ, recomputed from the exact column until they meet one of the segment's
    checkpoints. The result is the one-thread result exactly, whatever ``segments``, ``lanes`` and
    ``warm_up``.
    """
    M, N = q.shape[0], s.shape[0]
    q_sq = np.einsum("ij,ij->i", q, q)
    s_sq = np.einsum("ij,ij->i", s, s)
    penalty_sq = np.float32(penalty_sq)
    index = start_dtype(N)
    parts = segments * lanes
    if lanes > 1:
        bounds, steps = _lane_bounds(N, parts, warm_up)
    else:
        bounds = np.linspace(0, N, parts + 1).astype(np.int64)
    end_cost = np.empty(N, np.float32)
    end_start = np.empty(N, index)
    columns = [(np.full(M, np.inf, np.float32), np.zeros(M, index)) for _ in range(parts)]
    warmed = [None] * parts        # segment p's column entering its first frame
    checkpoints = [[] for _ in range(parts)]

    def run(p):
        lo, hi = int(bounds[p]), int(bounds[p + 1])
        col, col_start = columns[p]
        if p > 0:
            early = max(0, lo - warm_up)
            _dp(q, q_sq, s, s_sq, resets, early, lo, penalty_sq, col, col_start,
                np.empty(lo - early, np.float32), np.empty(lo - early, index))
            warmed[p] = (col.copy(), col_start.copy())
        _dp(q, q_sq, s, s_sq, resets, lo, hi, penalty_sq, col, col_start, end_cost[lo:hi],
            end_start[lo:hi], checkpoints[p])

    def run_lanes(g):
        group = np.arange(g * lanes, (g + 1) * lanes)
        lo, hi = bounds[group], bounds[group + 1]
        col, col_start = np.full((M, lanes), np.inf, np.float32), np.zeros((M, lanes), index)
        entry_cost, entry_start = np.empty((M, lanes), np.float32), np.empty((M, lanes), index)
        chunk = min(LANE_CHUNK, steps)
        rows = np.empty((chunk, lanes, s.shape[1]), np.float32)
        rows_sq = np.empty((chunk, lanes), np.float32)
        rows_resets = np.zeros((chunk, lanes), np.bool_)
        products = np.empty((M, chunk * lanes), np.float32)
        snapshots = []  # (frame after, column, starts) for every lane at once
        for t in range(0, steps, chunk):
            n = min(chunk, steps - t)
            frames = hi - steps + t
            _gather_lanes(s, s_sq, resets, frames, rows[:n], rows_sq[:n], rows_resets[:n])
            # q @ rows.T: the lane axis comes out last, as the kernel reads it. Each element is one
            # dot product, rounded as in the one-segment path's rows @ q.T (the tests check it).
            np.matmul(q, rows[:n].reshape(n * lanes, -1).T, out=products[:, :n * lanes])
            _lanes_chunk(products[:, :n * lanes].reshape(M, n, lanes), q_sq, rows_sq[:n],
                         None if resets is None else rows_resets[:n], frames, lo, penalty_sq, col, col_start,
                         entry_cost, entry_start, end_cost, end_start)
            # Checkpoints where a repair can stop: the first chunks after every lane's warm-up
            # (repairs rarely go further) and the last, so memory stays bounded for any series.
            if t + n == steps or (frames + n > lo).all() and len(snapshots) < LANE_CHECKPOINTS:
                snapshots.append((frames + n, col.copy(), col_start.copy()))
        for l, p in enumerate(group):
            columns[p] = (col[:, l].copy(), col_start[:, l].copy())
            warmed[p] = (entry_cost[:, l].copy(), entry_start[:, l].copy())
            checkpoints[p] = [(int(b[l]), c[:, l], cs[:, l]) for b, c, cs in snapshots if b[l] > lo[l]]

    with single_threaded_blas():  # M x chunk GEMMs are too small to gain from BLAS threads
        work = run_lanes if lanes > 1 else run
        if segments == 1:
            work(0)
        else:
            parallel_map(work, range(segments), segments)
        for p in range(1, parts):
            _repair(q, q_sq, s, s_sq, resets, penalty_sq, bounds, p, columns, warmed, checkpoints, end_cost,
                    end_start)
    return end_cost, end_start


def start_dtype(frames: int):
    """The DP's match-start dtype for a series of ``frames`` frames: int32 (twice the SIMD lanes
    of int64) where it holds every frame index."""
    return np.int32 if frames <= np.iinfo(np.int32).max else np.int64


def _same(column, other) -> bool:
    return np.array_equal(column[0], other[0]) and np.array_equal(column[1], other[1])


def _repair(q, q_sq, s, s_sq, resets, penalty_sq, bounds, p, columns, warmed, checkpoints, end_cost, end_start):
    """Make segment p exact, given that segments < p are: recompute it chunk by chunk from the
    exact column until its column meets one of its own checkpoints (usually at once)."""
    col, col_start = (c.copy() for c in columns[p - 1])
    if _same((col, col_start), warmed[p]):
        return
    lo = int(bounds[p])
    for b, *checkpoint in checkpoints[p]:
        _dp(q, q_sq, s, s_sq, resets, lo, b, penalty_sq, col, col_start, end_cost[lo:b], end_start[lo:b])
        if _same((col, col_start), checkpoint):
            return
        lo = b
    columns[p] = (col, col_start)  # recomputed to the end: its final column is the exact one


def _gpu_max_query() -> int:
    from posescore.kernels._cuda_kernels import GPU_MAX_QUERY  # imported on use: numba.cuda loads slowly

    return GPU_MAX_QUERY


def _subsequence_cuda(q, s, penalty_sq, segment_frames=None, warm_up=None, resets=None):
    """The last DP row ``(cost [N] float32, start [N] int64)`` on the GPU (NumPy arrays in the
    simulator): every segment in parallel from an infinite column after a warm-up; then, in
    series order, a segment whose entry column differs from the previous segment's final one is
    run again from that exact column (rarely needed, and each rerun checks the next segment)."""
    from posescore.kernels import _cuda_kernels

    xp = array_module(q)
    M, N = q.shape[0], s.shape[0]
    warm_up = warm_up_frames(M) if warm_up is None else warm_up
    segment_frames = segment_frames or max(4096, 16 * warm_up)
    S = _cuda_kernels.ceil_div(N, segment_frames)
    lo = np.arange(S, dtype=np.int64) * segment_frames
    hi = np.minimum(lo + segment_frames, N)
    first = np.maximum(lo - warm_up, 0)
    q_sq = (q * q).sum(axis=1)
    s_sq = (s * s).sum(axis=1)
    penalty_sq = np.float32(penalty_sq)
    end_cost = xp.empty(N, dtype=xp.float32)
    end_start = xp.empty(N, dtype=xp.int64)
    entry_cost, final_cost = (xp.empty((S, M), dtype=xp.float32) for _ in range(2))
    entry_start, final_start = (xp.empty((S, M), dtype=xp.int64) for _ in range(2))
    threads = max(32, _cuda_kernels.ceil_div(M, 32) * 32)
    reset_mask = xp.asarray(np.zeros(1, np.uint8) if resets is None else resets.view(np.uint8))

    def launch(rows, init_cost, init_start, use_init, start_at):
        _cuda_kernels.subsequence_wavefront[len(rows), threads](
            q, s, q_sq, s_sq, reset_mask, resets is not None, penalty_sq, xp.asarray(start_at[rows]),
            xp.asarray(lo[rows]), xp.asarray(hi[rows]), init_cost, init_start, use_init, end_cost, end_start,
            entry_cost[rows[0]:rows[-1] + 1], entry_start[rows[0]:rows[-1] + 1],
            final_cost[rows[0]:rows[-1] + 1], final_start[rows[0]:rows[-1] + 1])

    launch(np.arange(S), final_cost, final_start, False, first)  # init unused

    def differs(p):
        return bool((entry_cost[p] != final_cost[p - 1]).any() or (entry_start[p] != final_start[p - 1]).any())

    if S > 1:
        mismatch = ((entry_cost[1:] != final_cost[:-1]).any(axis=1)
                    | (entry_start[1:] != final_start[:-1]).any(axis=1))
        pending = sorted(int(p) + 1 for p in np.flatnonzero(to_numpy(mismatch)))
        while pending:
            p = pending.pop(0)
            if not differs(p):
                continue
            launch(np.array([p]), final_cost[p - 1:p], final_start[p - 1:p], True, lo)
            if p + 1 < S and (not pending or pending[0] != p + 1):
                pending.insert(0, p + 1)
    return end_cost, end_start
