"""numba-CUDA kernels, as plain module-level functions.

Compiled on first launch, so importing this module needs no GPU. With ``NUMBA_ENABLE_CUDASIM=1``
(set by the tests on machines without one) they run in numba's CUDA simulator on NumPy arrays.
Every ``syncthreads`` is reached by all threads of a block the same number of times.
"""

import math

from numba import boolean, cuda, float32, int32, int64

from posescore.kernels import _pose_cells
from posescore.kernels._dp_cells import dtw_predecessor as _dtw_predecessor_py
from posescore.kernels._dp_cells import spring_lane_of as _spring_lane_of
from posescore.kernels._dp_cells import sq_distance as _sq_distance_py
from posescore.kernels._dp_cells import subsequence_cell as _subsequence_cell_py
from posescore.kernels._topk import better as _better_py
from posescore.kernels._topk import insert_sorted as _insert_sorted_py

THREADS_PER_BLOCK = 128
#: Largest k of the fused top-k scan (per-thread lists live in registers / local memory).
GPU_MAX_K = 64
GPU_MAX_DIM = 128
insert_sorted = cuda.jit(device=True)(_insert_sorted_py)
better = cuda.jit(device=True)(_better_py)
subsequence_cell = cuda.jit(device=True)(_subsequence_cell_py)
dtw_predecessor = cuda.jit(device=True)(_dtw_predecessor_py)
sq_distance = cuda.jit(device=True)(_sq_distance_py)
spring_lane = cuda.jit(device=True)(_spring_lane_of(subsequence_cell, sq_distance))


def ceil_div(n: int, d: int) -> int:
    return -(-n // d)


@cuda.jit
def dtw_wavefront(a, b, len_a, len_b, window, diag_cost, diag_len, out_cost, out_len):
    """One block per pair; diagonal d holds cells (i, d - i), stored by row i in 3 buffers."""
    p = cuda.blockIdx.x
    T = len_a[p]
    U = len_b[p]
    ndim = a.shape[2]
    inf = math.inf
    for d in range(T + U - 1):
        cur = d % 3
        up_buf = (d + 2) % 3  # diagonal d - 1
        diag_buf = (d + 1) % 3  # diagonal d - 2
        i = max(0, d - U + 1) + cuda.threadIdx.x
        i_end = min(T - 1, d)
        while i <= i_end:
            j = d - i
            if window > 0:
                inside = (j >= i - max(0, T - U) - window + 1) and (j < i + max(0, U - T) + window)
            else:
                inside = True
            if inside:
                if i == 0 and j == 0:
                    best = 0.0
                    n = 0
                else:
                    # Predecessors (i-1, j-1), (i-1, j), (i, j-1): by row in diagonals d-2, d-1, d-1.
                    best, move = dtw_predecessor(diag_cost[p, diag_buf, i - 1] if i > 0 and j > 0 else inf,
                                                 diag_cost[p, up_buf, i - 1] if i > 0 else inf,
                                                 diag_cost[p, up_buf, i] if j > 0 else inf)
                    if move == 0:  # also when all three are inf (outside the window): length 0
                        n = diag_len[p, diag_buf, i - 1] if i > 0 and j > 0 else 0
                    elif move == 1:
                        n = diag_len[p, up_buf, i - 1]
                    else:
                        n = diag_len[p, up_buf, i]
                s = 0.0
                for k in range(ndim):
                    t = a[p, i, k] - b[p, j, k]
                    s += t * t
                diag_cost[p, cur, i] = best + s
                diag_len[p, cur, i] = n + 1
            else:
                diag_cost[p, cur, i] = inf
                diag_len[p, cur, i] = 0
            i += cuda.blockDim.x
        # Every thread of the block runs the same number of diagonals: no divergent barrier.
        cuda.syncthreads()
    if cuda.threadIdx.x == 0:
        last = (T + U - 2) % 3
        out_cost[p] = diag_cost[p, last, T - 1]
        out_len[p] = diag_len[p, last, T - 1]


@cuda.jit
def fused_topk(queries, base, k, use_l2, out_keys, out_idx):
    """grid (blocks, Q), THREADS_PER_BLOCK threads a block. Each thread keeps the top-k of rows
    tid, tid + stride, ... for query blockIdx.y in registers; the block then merges its threads'
    lists into ``out_*[q, blockIdx.x, :k]``, best first (:func:`kernels._topk.better`), so what is
    written is k entries a block, not a thread."""
    q = cuda.blockIdx.y
    t = cuda.threadIdx.x
    dim = queries.shape[1]
    qv = cuda.shared.array(GPU_MAX_DIM, float32)
    d = t
    while d < dim:
        qv[d] = queries[q, d]
        d += cuda.blockDim.x
    cuda.syncthreads()
    keys = cuda.local.array(GPU_MAX_K, float32)
    idx = cuda.local.array(GPU_MAX_K, int64)
    for s in range(k):
        keys[s] = -float32(3.0e38)
        idx[s] = -1
    worst = keys[k - 1]
    stride = cuda.gridDim.x * cuda.blockDim.x
    row = cuda.blockIdx.x * cuda.blockDim.x + t
    while row < base.shape[0]:
        dot = float32(0.0)
        sq = float32(0.0)
        for d in range(dim):
            x = float32(base[row, d])
            dot += qv[d] * x
            sq += x * x
        v = float32(2.0) * dot - sq if use_l2 else dot
        if v > worst:  # rows come in ascending order: an equal key has the lower index already
            worst = insert_sorted(keys, idx, k, v, row)
        row += stride
    # k rounds of a tree reduction over the threads' next unmerged entries; the winner's thread
    # moves on. Every thread runs every round and every level: no divergent barrier.
    head_key = cuda.shared.array(THREADS_PER_BLOCK, float32)
    head_idx = cuda.shared.array(THREADS_PER_BLOCK, int64)
    head_src = cuda.shared.array(THREADS_PER_BLOCK, int32)
    head = 0
    for s in range(k):
        if head < k:
            head_key[t] = keys[head]
            head_idx[t] = idx[head]
        else:
            head_key[t] = -float32(3.0e38)
            head_idx[t] = -1
        head_src[t] = t
        cuda.syncthreads()
        width = THREADS_PER_BLOCK // 2
        while width > 0:
            if t < width and better(head_key[t + width], head_idx[t + width], head_key[t], head_idx[t]):
                head_key[t] = head_key[t + width]
                head_idx[t] = head_idx[t + width]
                head_src[t] = head_src[t + width]
            cuda.syncthreads()
            width //= 2
        if t == 0:
            out_keys[q, cuda.blockIdx.x, s] = head_key[0]
            out_idx[q, cuda.blockIdx.x, s] = head_idx[0]
        if head_src[0] == t:
            head += 1
        cuda.syncthreads()


#: Longest query of the subsequence kernel: one thread per query frame, one block per segment.
GPU_MAX_QUERY = 1024


@cuda.jit
def subsequence_wavefront(query, series, q_sq, s_sq, resets, has_resets, penalty_sq, first, lo, hi, init_cost,
                          init_start, use_init, end_cost, end_start, entry_cost, entry_start, final_cost,
                          final_start):
    """Subsequence DTW over series segments: one block per segment p, thread i = query frame i.

    Segment p runs series frames ``first[p] .. hi[p]-1``; at step t thread i takes cell
    (i, first[p] + t - i), so each step is one anti-diagonal (the wavefront). It starts from the
    column ``init_*[p]`` (``use_init``) or an infinite one (a warm-up: the column before is not
    known yet). It writes the last row (the best match ending at frame j, cost and start) for
    frames ``>= lo[p]``, the column entering ``lo[p]`` to ``entry_*[p]`` and the column after its
    last frame to ``final_*[p]``. With ``has_resets``, a frame j with ``resets[j]`` starts a new
    series: the column before it counts as infinite. The cell is the CPU kernel's
    (``kernels._dp_cells``).
    """
    p = cuda.blockIdx.x
    i = cuda.threadIdx.x
    M = query.shape[0]
    D = query.shape[1]
    buf_cost = cuda.shared.array((2, GPU_MAX_QUERY), float32)
    buf_start = cuda.shared.array((2, GPU_MAX_QUERY), int64)
    f0 = first[p]
    keep = lo[p]
    stop = hi[p]
    active = i < M
    left = float32(math.inf)
    left_start = int64(0)
    diag = float32(math.inf)
    diag_start = int64(0)
    if active and use_init:
        left = init_cost[p, i]
        left_start = init_start[p, i]
        if i > 0:
            diag = init_cost[p, i - 1]
            diag_start = init_start[p, i - 1]
    if active and keep == f0:
        entry_cost[p, i] = left
        entry_start[p, i] = left_start
    for t in range(stop - f0 + M - 1):
        cur = t % 2
        j = f0 + t - i
        if active and j >= f0 and j < stop:
            dot = float32(0.0)
            for d in range(D):
                dot += query[i, d] * series[j, d]
            cost = max(q_sq[i] + s_sq[j] - float32(2.0) * dot, float32(0.0))
            if has_resets and resets[j]:  # a new series: nothing continues from column j-1
                left = float32(math.inf)
                diag = float32(math.inf)
            if i == 0:  # the diagonal from row -1 costs 0: a match starting here is best
                value = cost
                start = int64(j)
            else:
                up_raw = buf_cost[1 - cur, i - 1]  # cell (i-1, j), written in step t-1
                up_start = buf_start[1 - cur, i - 1]
                value, _, start = subsequence_cell(up_raw + penalty_sq, up_start, diag, diag_start,
                                                   left + penalty_sq, left_start, cost, cost + penalty_sq)
                diag = up_raw  # cell (i-1, j) is the diagonal of cell (i, j+1)
                diag_start = up_start
            left = value
            left_start = start
            buf_cost[cur, i] = value
            buf_start[cur, i] = start
            if i == M - 1 and j >= keep:
                end_cost[j] = value
                end_start[j] = start
            if j == keep - 1:
                entry_cost[p, i] = value
                entry_start[p, i] = start
            if j == stop - 1:
                final_cost[p, i] = value
                final_start[p, i] = start
        # Every thread of the block runs the same number of steps: no divergent barrier.
        cuda.syncthreads()


# -- per-pose kernels: one thread per pose (grid-stride), over the cells of kernels._pose_cells ----
normalize_cell = cuda.jit(device=True)(_pose_cells.normalize_cell)
pose_score_cell = cuda.jit(device=True)(_pose_cells.pose_score_cell)
query_of = cuda.jit(device=True)(_pose_cells.query_of)
terms_cell = cuda.jit(device=True)(_pose_cells.terms_cell)
parts_cell = cuda.jit(device=True)(_pose_cells.parts_cell)
pose_parts_cell = cuda.jit(device=True)(_pose_cells.pose_parts_cell)
NUM_TERMS = _pose_cells.NUM_TERMS
NUM_PARTS = _pose_cells.TERM_OFFSETS.shape[0] - 1


@cuda.jit
def normalize_poses(poses, torso, min_confidence, min_torso_share, vectors, weights, usable):
    """``vectors [N, 34]``, ``weights [N, 17]``, ``usable [N]`` of ``poses [N, 17, 3]``."""
    i = cuda.grid(1)
    while i < poses.shape[0]:
        usable[i] = normalize_cell(poses[i], torso, min_confidence, min_torso_share, vectors[i], weights[i])
        i += cuda.gridsize(1)


@cuda.jit
def pose_scores_kernel(qv, qw, mqv, mqw, query_index, vectors, weights, metric, scale, mirror, scores, mirrored):
    """As kernels._pose_cells.pose_scores_all."""
    i = cuda.grid(1)
    n = vectors.shape[0]
    while i < n:
        q = query_of(query_index, i, n)
        scores[i], mirrored[i] = pose_score_cell(qv[q], qw[q], mqv[q], mqw[q], vectors[i], weights[i], metric, scale,
                                                 mirror)
        i += cuda.gridsize(1)


@cuda.jit
def part_scores_kernel(q_angles, q_tw, mq_angles, mq_tw, query_index, vectors, weights, terms, offsets, scale, mode,
                       pick, scores, valid):
    """As kernels._pose_cells.part_scores_all."""
    angles = cuda.local.array(NUM_TERMS, float32)
    tw = cuda.local.array(NUM_TERMS, float32)
    other = cuda.local.array(NUM_PARTS, float32)
    other_valid = cuda.local.array(NUM_PARTS, boolean)
    i = cuda.grid(1)
    while i < vectors.shape[0]:
        q = query_of(query_index, i, vectors.shape[0])
        terms_cell(vectors[i], weights[i], terms, angles, tw)
        pose_parts_cell(q_angles[q], q_tw[q], mq_angles[q], mq_tw[q], angles, tw, offsets, scale, mode,
                        mode == 2 and pick[i], scores[i], valid[i], other, other_valid)
        i += cuda.gridsize(1)


@cuda.jit
def terms_kernel(vectors, weights, terms, angles, tw):
    """As kernels._pose_cells.terms_all."""
    i = cuda.grid(1)
    while i < vectors.shape[0]:
        terms_cell(vectors[i], weights[i], terms, angles[i], tw[i])
        i += cuda.gridsize(1)


@cuda.jit
def aligned_parts_kernel(angles_a, tw_a, angles_b, tw_b, path, offsets, scale, scores, valid):
    """As kernels._pose_cells.aligned_parts_all."""
    n = cuda.grid(1)
    while n < path.shape[0]:
        parts_cell(angles_a[path[n, 0]], tw_a[path[n, 0]], angles_b[path[n, 1]], tw_b[path[n, 1]], offsets,
                   scale, scores[n], valid[n])
        n += cuda.gridsize(1)


def launch_per_pose(kernel, count: int, *args) -> None:
    """Launch a one-thread-per-item kernel over ``count`` items (grid-stride: at most 65,536 blocks)."""
    blocks = max(1, min(ceil_div(count, THREADS_PER_BLOCK), 1 << 16))
    kernel[blocks, THREADS_PER_BLOCK](*args)


@cuda.jit
def spring_steps(ref, ref_sq, offsets, lanes, frames, frame_sq, times, penalty_sq, max_step_cost, min_length, col,
                 col_start, best_cost, best_start, best_end, out):
    """One thread per lane advanced by a frame (``kernels.spring_step``; the CPU's lane step,
    ``_dp_cells.spring_lane_of``, compiled for the device)."""
    b = cuda.grid(1)
    if b < lanes.shape[0]:
        spring_lane(b, ref, ref_sq, offsets, lanes, frames, frame_sq, times, penalty_sq, max_step_cost, min_length,
                    col, col_start, best_cost, best_start, best_end, out)
