"""The subsequence-DTW cell both DP kernels share: one definition, compiled for each target
(numba for the CPU pairs loop in kernels.subsequence, numba-CUDA for the wavefront kernel)."""


def subsequence_cell(up, up_start, diag, diag_start, left, left_start, cost, cost_penalty):
    """One DP cell from its three predecessors (``up`` and ``left`` already include the penalty).

    Returns (accumulated cost, accumulated cost + penalty for the next cell up, match start).
    Ties prefer the diagonal, then left, then up. The value passed up is ``min + (cost +
    penalty)``: one min and one add from cell to cell (with ``(min + cost) + penalty`` the chain
    is 1.5x slower); the two differ by rounding only.
    """
    left_wins = left < diag
    side = min(diag, left)
    side_start = left_start if left_wins else diag_start
    start = up_start if up < side else side_start
    best = min(up, side)
    return best + cost, best + cost_penalty, start
