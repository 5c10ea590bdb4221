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
from posescore.kernels._dp_cells import spring_lane_of, sq_distance, subsequence_cell

_cell = numba.njit(cache=True, nogil=True, inline="always")(subsequence_cell)
_sq_distance = numba.njit(cache=True, nogil=True, inline="always")(sq_distance)
_lane = numba.njit(cache=True, nogil=True, inline="always")(spring_lane_of(_cell, _sq_distance))


@numba.njit(cache=True, nogil=True, parallel=True)
def _spring_steps(ref, ref_sq, offsets, lanes, frames, frame_sq, times, penalty_sq, max_step_cost, min_length,
                  col, col_start, best_cost, best_start, best_end, out):
    """Advance lane ``lanes[b]`` by frame ``frames[b]`` (its index in the stream: ``times[b]``) for
    every b, in parallel (``_dp_cells.spring_lane_of``); see :func:`spring_step` for the arrays."""
    for b in numba.prange(lanes.shape[0]):
        _lane(b, ref, ref_sq, offsets, lanes, frames, frame_sq, times, penalty_sq, max_step_cost, min_length, col,
              col_start, best_cost, best_start, best_end, out)


def _spring_steps_cuda(ref, ref_sq, offsets, lanes, frames, frame_sq, times, penalty_sq, max_step_cost, min_length,
                       col, col_start, best_cost, best_start, best_end, out) -> None:
    """:func:`_spring_steps` on the GPU (numba-CUDA: one thread per lane; NumPy arrays are copied
    there and back, CuPy arrays stay), or in numba's CUDA simulator."""
    from posescore.kernels import _cuda_kernels  # imported on use: numba.cuda loads slowly

    threads = _cuda_kernels.THREADS_PER_BLOCK
    if len(lanes):
        _cuda_kernels.spring_steps[_cuda_kernels.ceil_div(len(lanes), threads), threads](
            ref, ref_sq, offsets, lanes, frames, frame_sq, times, penalty_sq, max_step_cost, min_length, col,
            col_start, best_cost, best_start, best_end, out)


def spring_step(state: "SpringState", lanes, frames, times, *, penalty: float = 0.1) -> np.ndarray:
    """Advance many streams' subsequence DTW by one frame each, in one call (CPU, numba threads).

    ``state``: a :class:`SpringState`, the lanes' references, bounds and DP columns, updated in
    place. ``lanes [B]`` int64: the lane each of ``frames [B, D]`` float32 advances, each at most
    once and each alive; ``times [B]`` int64: that frame's index in its stream (a match's start and
    end are such indices). A match is a candidate when its cost (summed squared distances plus
    ``penalty**2`` per non-diagonal step) is at most the lane's ``max_step_cost`` times its path
    length (at least the longer of the reference and the match) and it covers at least the lane's
    ``min_length`` frames.

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
    if frames.shape[1] != state.dims:
        raise ValueError(f"frames: expected {state.dims} values per frame, got {frames.shape[1]}")
    if len(lanes) > 1 and (np.diff(np.sort(lanes)) == 0).any():
        raise ValueError("lanes: a lane may advance by one frame per call")
    if len(lanes) and (lanes.min() < 0 or lanes.max() >= state.lanes or not state.alive[lanes].all()):
        raise ValueError(f"lanes: expected lanes alive, of 0 to {state.lanes - 1}")
    out = np.full((len(lanes), 9), np.nan, np.float64)
    step = _spring_steps_cuda if state.gpu else _spring_steps
    step(state.references, state.ref_sq, state.offsets, lanes, frames, np.einsum("bd,bd->b", frames, frames),
                  times, np.float32(penalty * penalty), state.max_step_cost, state.min_length, state.col,
                  state.col_start, state.best_cost, state.best_start, state.best_end, out)
    return out


class SpringState:
    """The lanes of a streaming subsequence DTW: each lane's reference (a normalized pose sequence
    ``[M, D]`` float32), its bounds (``max_step_cost``, ``min_length``: see :func:`spring_step`) and
    its DP state. Lanes are added and removed as streams come and go, in amortized constant time
    per row: arrays grow by doubling, and a removed lane's rows stay until :meth:`compact`.

    Arrays (views of the first ``lanes`` lanes / ``rows`` rows): ``references [N, D]`` back to
    back, lane l's rows ``offsets[l]:offsets[l + 1]``; ``ref_sq [N]`` their squared norms; ``col
    [N]`` float32 costs and ``col_start [N]`` int64 starts, infinite before a lane's first frame;
    per lane ``alive``, ``max_step_cost``, ``min_length`` and the candidate it holds:
    ``best_cost`` (inf: none), ``best_start`` / ``best_end`` int64."""

    _ROWS = ("references", "ref_sq", "col", "col_start")
    _LANES = ("alive", "max_step_cost", "min_length", "best_cost", "best_start", "best_end")

    def __init__(self, dims: int = 34, *, gpu: bool = False):
        self.dims, self.lanes, self.rows, self.dead_rows = int(dims), 0, 0, 0
        self.gpu = bool(gpu)  # steps run by the numba-CUDA kernel (the arrays copied there and back)
        self._buf = {"references": np.zeros((0, self.dims), np.float32), "ref_sq": np.zeros(0, np.float32),
                     "col": np.zeros(0, np.float32), "col_start": np.zeros(0, np.int64),
                     "alive": np.zeros(0, bool), "max_step_cost": np.zeros(0, np.float32),
                     "min_length": np.zeros(0, np.int64), "best_cost": np.zeros(0, np.float32),
                     "best_start": np.zeros(0, np.int64), "best_end": np.zeros(0, np.int64),
                     "offsets": np.zeros(1, np.int64)}
        self._views()

    def _views(self) -> None:
        for name in self._ROWS:
            setattr(self, name, self._buf[name][:self.rows])
        for name in self._LANES:
            setattr(self, name, self._buf[name][:self.lanes])
        self.offsets = self._buf["offsets"][:self.lanes + 1]

    @staticmethod
    def _grown(array: np.ndarray, size: int) -> np.ndarray:
        if len(array) >= size:
            return array
        bigger = np.zeros((max(size, 2 * len(array)),) + array.shape[1:], array.dtype)
        bigger[:len(array)] = array
        return bigger

    def add(self, references: list, max_step_cost, min_length) -> np.ndarray:
        """Append one lane per reference in ``references`` (each ``[M, D]``, M >= 1, checked here),
        with its ``max_step_cost`` and ``min_length`` (one each, or one per lane); returns their
        lane numbers, consecutive."""
        references = [check_array(r, f"references[{n}]", trailing=(self.dims,), ndim=(2, 2))
                      for n, r in enumerate(references)]
        count, rows = len(references), sum(len(r) for r in references)
        lanes = np.arange(self.lanes, self.lanes + count)
        for name in self._ROWS:
            self._buf[name] = self._grown(self._buf[name], self.rows + rows)
        for name in self._LANES:
            self._buf[name] = self._grown(self._buf[name], self.lanes + count)
        self._buf["offsets"] = self._grown(self._buf["offsets"], self.lanes + count + 1)
        at = self.rows
        for n, reference in enumerate(references):
            lane = self.lanes + n
            self._buf["references"][at:at + len(reference)] = reference
            self._buf["ref_sq"][at:at + len(reference)] = np.einsum("nd,nd->n", reference, reference)
            self._buf["col"][at:at + len(reference)] = np.inf
            self._buf["col_start"][at:at + len(reference)] = 0
            at += len(reference)
            self._buf["offsets"][lane + 1] = at
        sl = slice(self.lanes, self.lanes + count)
        self._buf["alive"][sl], self._buf["best_cost"][sl] = True, np.inf
        self._buf["best_start"][sl], self._buf["best_end"][sl] = 0, 0
        self._buf["max_step_cost"][sl] = np.broadcast_to(np.asarray(max_step_cost, np.float32), (count,))
        self._buf["min_length"][sl] = np.broadcast_to(np.asarray(min_length, np.int64), (count,))
        self.lanes, self.rows = self.lanes + count, at
        self._views()
        return lanes

    def remove(self, lanes) -> None:
        """Retire ``lanes`` (their rows stay until :meth:`compact`)."""
        lanes = np.asarray(lanes, np.int64)
        self.dead_rows += int((self.offsets[lanes + 1] - self.offsets[lanes])[self.alive[lanes]].sum())
        self.alive[lanes] = False

    def compact(self) -> np.ndarray:
        """Drop the retired lanes' rows; returns each old lane's new number (-1: retired)."""
        keep = np.flatnonzero(self.alive)
        mapping = np.full(self.lanes, -1, np.int64)
        mapping[keep] = np.arange(len(keep))
        rows = np.concatenate([np.arange(self.offsets[l], self.offsets[l + 1]) for l in keep]) if len(keep) \
            else np.zeros(0, np.int64)
        lengths = self.offsets[keep + 1] - self.offsets[keep]
        for name in self._ROWS:
            self._buf[name] = getattr(self, name)[rows].copy()
        for name in self._LANES:
            self._buf[name] = getattr(self, name)[keep].copy()
        self._buf["offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        self.lanes, self.rows, self.dead_rows = len(keep), len(rows), 0
        self._views()
        return mapping
