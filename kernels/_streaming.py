"""Streaming subsequence DTW (SPRING): every live stream advanced by one frame in one call.

SPRING (Sakurai, Faloutsos and Yamamuro, "Stream Monitoring under the Time Warping Distance",
ICDE 2007) keeps one DP column per stream: the subsequence DTW of ``kernels.subsequence_dtw``
(the same cell, ``_dp_cells.subsequence_cell``, so a stream's column after frame j equals the
offline DP's column j), and reports a match once no later frame can improve it.
"""

from __future__ import annotations

import numba
import numpy as np

from posescore.kernels._backend import check_array
from posescore.kernels._dp_cells import subsequence_cell

_cell = numba.njit(cache=True, nogil=True, inline="always")(subsequence_cell)


@numba.njit(cache=True, nogil=True, inline="always")
def _sq_distance(ref, ref_sq, row, frame, frame_sq):
    """Squared distance of reference row ``row`` and ``frame`` (their norms given), >= 0; an
    explicit loop: numba's np.dot on such short vectors calls BLAS, whose call costs more than
    the product."""
    dot = np.float32(0.0)
    for d in range(frame.shape[0]):
        dot += ref[row, d] * frame[d]
    return max(ref_sq[row] + frame_sq - np.float32(2.0) * dot, np.float32(0.0))


@numba.njit(cache=True, nogil=True, parallel=True)
def _spring_steps(ref, ref_sq, offsets, lanes, frames, frame_sq, times, penalty_sq, max_step_cost, min_length,
                  col, col_start, best_cost, best_start, best_end, out):
    """Advance lane ``lanes[b]`` by frame ``frames[b]`` (its index in the stream: ``times[b]``) for
    every b, in parallel; see :func:`spring_step` for the arrays. ``out [B, 9]`` float64 receives,
    per lane: the end cell's cost and start, the phase row and its cost and start, whether a match
    became final, and that match's cost, start and end."""
    inf = np.float32(np.inf)
    for b in numba.prange(lanes.shape[0]):
        lane = lanes[b]
        lo, hi = offsets[lane], offsets[lane + 1]
        M = hi - lo
        j = times[b]
        # Row 0: a match may start at this frame (the diagonal from row -1 costs 0).
        frame, frame_sq_b = frames[b], frame_sq[b]
        c = _sq_distance(ref, ref_sq, lo, frame, frame_sq_b)
        a, up, start = c, c + penalty_sq, j
        diag, diag_start = col[lo], col_start[lo]
        col[lo], col_start[lo] = a, start
        phase_row, phase_cost, phase_start = 0, a, start
        for i in range(1, M):
            c = _sq_distance(ref, ref_sq, lo + i, frame, frame_sq_b)
            left, left_start = col[lo + i] + penalty_sq, col_start[lo + i]
            next_diag, next_diag_start = col[lo + i], col_start[lo + i]
            a, up, start = _cell(up, start, diag, diag_start, left, left_start, c, c + penalty_sq)
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
        if best_cost[lane] < inf:
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
                        col[lo + i] = inf
                best_cost[lane] = inf
        out[b, 0], out[b, 1] = end_cost, end_start
        out[b, 2], out[b, 3], out[b, 4] = phase_row, phase_cost, phase_start
        out[b, 5] = confirmed


def spring_step(state: "SpringState", lanes, frames, times, *, penalty: float = 0.1, max_step_cost,
                min_length) -> np.ndarray:
    """Advance many streams' subsequence DTW by one frame each, in one call (CPU, numba threads).

    ``state``: a :class:`SpringState`, the L lanes' references and DP columns, updated in place.
    ``lanes [B]`` int64: the lane each of ``frames [B, D]`` float32 advances, each at most once;
    ``times [B]`` int64: that frame's index in its stream (a match's start and end are such
    indices). ``max_step_cost [L]``: a match is a candidate when its cost (summed squared
    distances plus ``penalty**2`` per non-diagonal step) is at most this times its path length (at
    least the longer of the reference and the match); ``min_length [L]``: and it covers at least
    this many frames.

    Returns ``[B, 9]`` float64 per frame: the best match ending at it (cost, start), the phase
    (the reference row where the alignment with the least cost per reference row ends now, its
    cost and start), 1.0 where the lane's held candidate became final at this frame (SPRING:
    every alignment that began at or before its end now costs more) and then that match (cost,
    start, end inclusive; NaN otherwise). A final match is no longer held, and the columns' cells
    that began at or before its end are reset, so later matches are disjoint from it.
    """
    frames = check_array(frames, "frames", ndim=(2, 2), allow_empty=True)
    lanes = np.ascontiguousarray(lanes, np.int64)
    times = np.ascontiguousarray(times, np.int64)
    if frames.shape[0] != lanes.shape[0] or times.shape != lanes.shape:
        raise ValueError(f"frames, lanes, times: expected one lane and time per frame, got {frames.shape[0]} "
                         f"frames, {lanes.shape[0]} lanes, {times.shape[0]} times")
    if frames.shape[1] != state.references.shape[1]:
        raise ValueError(f"frames: expected {state.references.shape[1]} values per frame, got {frames.shape[1]}")
    if len(lanes) > 1 and (np.diff(np.sort(lanes)) == 0).any():
        raise ValueError("lanes: a lane may advance by one frame per call")
    if len(lanes) and (lanes.min() < 0 or lanes.max() >= state.lanes):
        raise ValueError(f"lanes: expected lanes 0 to {state.lanes - 1}")
    out = np.full((len(lanes), 9), np.nan, np.float64)
    _spring_steps(state.references, state.ref_sq, state.offsets, lanes, frames, np.einsum("bd,bd->b", frames, frames),
                  times, np.float32(penalty * penalty), np.ascontiguousarray(max_step_cost, np.float32),
                  np.ascontiguousarray(min_length, np.int64), state.col, state.col_start, state.best_cost,
                  state.best_start, state.best_end, out)
    return out


class SpringState:
    """L lanes' references and DP state. ``references [N, D]`` float32: every lane's reference (a
    normalized pose sequence) back to back, lane l's rows ``offsets[l]:offsets[l + 1]``
    (``offsets [L + 1]`` int64: references are ragged), checked once here, with their squared
    norms. The DP: ``col [N]`` float32 costs and ``col_start [N]`` int64 starts, infinite before a
    lane's first frame; the candidate each lane holds: ``best_cost [L]`` (inf: none),
    ``best_start`` / ``best_end [L]`` int64."""

    def __init__(self, references, offsets):
        self.references = check_array(references, "references", ndim=(2, 2), allow_empty=True)
        self.offsets = np.ascontiguousarray(offsets, np.int64)
        if self.offsets.ndim != 1 or len(self.offsets) < 1 or self.offsets[0] != 0 or \
                (np.diff(self.offsets) < 1).any() or self.offsets[-1] != len(self.references):
            raise ValueError(f"offsets: expected 0, increasing, to the {len(self.references)} reference rows, "
                             f"got {self.offsets[:8].tolist()}{'...' if len(self.offsets) > 8 else ''}")
        self.ref_sq = np.einsum("nd,nd->n", self.references, self.references)
        self.lanes, rows = len(self.offsets) - 1, int(self.offsets[-1])
        self.col = np.full(rows, np.inf, np.float32)
        self.col_start = np.zeros(rows, np.int64)
        self.best_cost = np.full(self.lanes, np.inf, np.float32)
        self.best_start = np.zeros(self.lanes, np.int64)
        self.best_end = np.zeros(self.lanes, np.int64)
