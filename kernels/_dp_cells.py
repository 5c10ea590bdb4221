"""The DP cells the CPU and GPU kernels share: one definition each, compiled for each target
(numba for the CPU loops in kernels.dtw, kernels.subsequence and kernels.spring_step, numba-CUDA
for the wavefront kernels and the streaming step)."""

import math



def dtw_predecessor(diag, up, left):
    """``(min, move)`` of a DTW cell's three predecessors' accumulated costs: move 0 diagonal,
    1 up (row i - 1), 2 left (column j - 1); ties in that order, which fixes the path and its
    length."""
    best, move = diag, 0
    if up < best:
        best, move = up, 1
    if left < best:
        best, move = left, 2
    return best, move


def subsequence_cell(up, up_start, diag, diag_start, left, left_start, cost, cost_penalty):
    """One DP cell from its three predecessors (``up`` and ``left`` already include the penalty).

    Returns (accumulated cost, accumulated cost + penalty for the next cell up, match start).
    Ties prefer the diagonal, then left, then up. The value passed up is ``min + (cost +
    penalty)``: one min and one add from cell to cell (``(min + cost) + penalty`` makes the chain
    longer, and slower: docs/BENCHMARKS.md); the two differ by rounding only.
    """
    left_wins = left < diag
    side = min(diag, left)
    side_start = left_start if left_wins else diag_start
    start = up_start if up < side else side_start
    best = min(up, side)
    return best + cost, best + cost_penalty, start


def sq_distance(ref, ref_sq, row, frame, frame_sq):
    """Squared distance of reference row ``row`` and ``frame`` (their squared norms given), >= 0,
    in the arrays' float32; an explicit loop (numba's np.dot on such short vectors calls BLAS,
    whose call costs more than the product)."""
    dot = ref[row, 0] * frame[0]
    for d in range(1, frame.shape[0]):
        dot += ref[row, d] * frame[d]
    value = ref_sq[row] + frame_sq - (dot + dot)
    return value if value > 0 else value * 0


def spring_lane_of(cell, distance):
    """The SPRING step of one lane (``kernels.spring_step``), for a target: ``cell`` and
    ``distance`` are :func:`subsequence_cell` and :func:`sq_distance` compiled for it. The
    returned ``spring_lane(b, ...)`` advances lane ``lanes[b]`` by frame ``frames[b]`` (its index
    in the stream: ``times[b]``) and writes ``out[b]``: the end cell's cost and start, the phase
    row and its cost and start, whether a match became final, and that match's cost, start and
    end (inclusive)."""

    def spring_lane(b, ref, ref_sq, offsets, lanes, frames, frame_sq, times, penalty_sq, max_step_cost, min_length,
                    col, col_start, best_cost, best_start, best_end, out):
        lane = lanes[b]
        lo, hi = offsets[lane], offsets[lane + 1]
        M = hi - lo
        j = times[b]
        # Row 0: a match may start at this frame (the diagonal from row -1 costs 0).
        frame, frame_sq_b = frames[b], frame_sq[b]
        c = distance(ref, ref_sq, lo, frame, frame_sq_b)
        a, up, start = c, c + penalty_sq, j
        diag, diag_start = col[lo], col_start[lo]
        col[lo], col_start[lo] = a, start
        phase_row, phase_cost, phase_start = 0, a, start
        for i in range(1, M):
            c = distance(ref, ref_sq, lo + i, frame, frame_sq_b)
            left, left_start = col[lo + i] + penalty_sq, col_start[lo + i]
            next_diag, next_diag_start = col[lo + i], col_start[lo + i]
            a, up, start = cell(up, start, diag, diag_start, left, left_start, c, c + penalty_sq)
            diag, diag_start = next_diag, next_diag_start
            col[lo + i], col_start[lo + i] = a, start
            if a / (i + 1) < phase_cost / (phase_row + 1):
                phase_row, phase_cost, phase_start = i, a, start
        end_cost, end_start = a, start
        length = j - end_start + 1
        confirmed = 0.0
        # A new candidate: long enough, close enough per step, better than the one held.
        if length >= min_length[lane] and end_cost <= max_step_cost[lane] * max(M, length) \
                and end_cost < best_cost[lane]:
            best_cost[lane], best_start[lane], best_end[lane] = end_cost, end_start, j
        if best_cost[lane] < math.inf:
            # Final when no alignment that began at or before its end can still beat it.
            final = True
            for i in range(M):
                if col_start[lo + i] <= best_end[lane] and col[lo + i] < best_cost[lane]:
                    final = False
                    break
            if final:
                confirmed = 1.0
                out[b, 6], out[b, 7], out[b, 8] = best_cost[lane], best_start[lane], best_end[lane]
                for i in range(M):  # matches after it are disjoint from it
                    if col_start[lo + i] <= best_end[lane]:
                        col[lo + i] = math.inf
                best_cost[lane] = math.inf
        out[b, 0], out[b, 1] = end_cost, end_start
        out[b, 2], out[b, 3], out[b, 4] = phase_row, phase_cost, phase_start
        out[b, 5] = confirmed

    return spring_lane
