"""Every repetition of a movement in a performance: found with subsequence DTW, bounded and scored
by the function ``compare`` scores with (``engine.analysis.answers.movement_score``).

No I/O here: :func:`find_reps` takes performer frames; ``engine.jobs.reps.reps_job`` loads the videos
and reports each repetition with ``compare``'s report.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from posescore import kernels
from posescore.engine.analysis.answers import ascend_bounds, movement_score

#: A segment of the attempt fitting the movement (played forwards or backwards) under this
#: (compare's scale) is not a repetition: a rest, or another movement.
REP_MIN_SCORE = 50.0
#: A repetition lasts from this to this many times the reference's duration (seconds).
REP_MIN_RATIO, REP_MAX_RATIO = 0.5, 2.0


class Rep(NamedTuple):
    """One repetition: ``first`` / ``last`` (inclusive) positions in the attempt's performer
    frames, its ``score`` (``movement_score`` against the reference) and ``backwards`` (it fits
    the movement played backwards better than the movement)."""

    first: int
    last: int
    score: float
    backwards: bool = False


def find_reps(reference: np.ndarray, reference_fps: float, attempt: np.ndarray, attempt_times: np.ndarray,
              attempt_fps: float, *, min_ratio: float = REP_MIN_RATIO, max_ratio: float = REP_MAX_RATIO,
              min_score: float = REP_MIN_SCORE, mirror: bool = False) -> list[Rep]:
    """The repetitions of ``reference [R, 17, 3]`` (one performer's pixel poses, one repetition)
    in ``attempt [A, 17, 3]`` (frames at ``attempt_times [A]`` seconds), in time order.

    A repetition done wrong is still a repetition: segments are found that fit the movement or
    the movement played backwards (a rest or another movement fits neither). Candidates are
    subsequence-DTW matches of the normalized frames of both (``kernels.subsequence_dtw``,
    left/right flicker undone first); best first by compare's score against the direction they
    match, each clear of the repetitions already taken has its bounds moved to the segment that
    scores highest (``ascend_bounds``), then trimmed: attempt frames the alignment maps to the
    first (last) reference frame before (after) the movement are a rest. A repetition lasts
    ``min_ratio`` to ``max_ratio`` times the reference and fits one direction with at least
    ``min_score``; its ``score`` is compare's against the reference as it is.
    """
    R, A = len(reference), len(attempt)
    if R < 2:
        raise ValueError(f"reference: a repetition needs at least 2 frames with the performer, got {R}")
    if not reference_fps > 0:
        raise ValueError("reference: its frame rate is unknown (a pose JSON without times?), so its duration "
                         "is too: give it with --fps")
    times = np.asarray(attempt_times, np.float64)
    duration = (R - 1) / reference_fps
    lo_s, hi_s = min_ratio * duration, max_ratio * duration
    if A < 2:
        return []
    directions = (np.asarray(reference), np.asarray(reference)[::-1].copy())

    def allowed(a, b, taken=()):
        return (0 <= a < b < A and lo_s <= times[b] - times[a] <= hi_s
                and not any(t.first <= b and a <= t.last for t in taken))

    def fit(direction: int):
        return lambda a, b: movement_score(directions[direction], reference_fps, attempt[a:b + 1], attempt_fps,
                                           mirror=mirror).score

    s_vec, _ = kernels.normalize(kernels.consistent_sides(attempt))
    frames_per_s = (A - 1) / max(times[-1] - times[0], 1e-9)
    shortest = max(2, int(lo_s * frames_per_s))
    count = min(A, 8 + 2 * A // shortest)
    candidates = []
    for direction, poses in enumerate(directions):
        q_vec, _ = kernels.normalize(kernels.consistent_sides(poses))
        _, starts, ends = (np.asarray(x) for x in kernels.subsequence_dtw(q_vec, s_vec, k=count, min_length=shortest))
        for start, end in zip(starts.tolist(), ends.tolist()):
            if end - 1 > start:
                candidates.append((fit(direction)(start, end - 1), direction, start, end - 1))
    candidates.sort(key=lambda c: -c[0])
    taken: list[Rep] = []
    for value, direction, first, last in candidates:
        if value < min_score - 20.0 or any(t.first <= last and first <= t.last for t in taken):
            continue
        value, first, last = ascend_bounds(fit(direction), lambda a, b: allowed(a, b, taken), first, last, value)
        first, last = _trim(directions[direction], reference_fps, attempt, attempt_fps, first, last, mirror)
        if not allowed(first, last, taken):
            continue
        value = fit(direction)(first, last)
        if value >= min_score:  # the score against the movement as it is: this fit, unless backwards
            taken.append(Rep(first, last, fit(0)(first, last) if direction else value, bool(direction)))
    return sorted(taken, key=lambda rep: rep.first)


def _trim(reference, reference_fps, attempt, attempt_fps, first: int, last: int, mirror: bool) -> tuple[int, int]:
    """``first`` / ``last`` moved in past the attempt frames that compare's alignment maps to the
    reference's first frame at the start (all but the last of them) and to its last frame at the
    end (all but the first), to within one reference frame: the performer waiting in the start
    pose, or holding the end pose."""
    scored = movement_score(reference, reference_fps, attempt[first:last + 1], attempt_fps, mirror=mirror)
    path, _ = kernels.dtw_path(scored.reference_vectors, scored.attempt_vectors, window=scored.window)
    fr, fa = scored.factors
    end = len(scored.reference_vectors) - 1
    start_sample = int(path[path[:, 0] <= fr, 1].max())
    end_sample = int(path[path[:, 0] >= end - fr, 1].min())
    if end_sample <= start_sample:
        return first, last
    return first + start_sample // fa, first + -(-end_sample // fa)
