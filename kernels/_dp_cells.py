"""The DP cells the CPU and GPU kernels share: one definition each, compiled for each target
(numba for the CPU loops in kernels.dtw and kernels.subsequence, numba-CUDA for the wavefront
kernels)."""


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
