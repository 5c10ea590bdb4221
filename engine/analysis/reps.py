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
#: A candidate meeting a repetition already taken is tried again, cut to its part clear of them,
#: when that part is at least this share of it: a repetition done right after another (no rest)
#: has a match overlapping its neighbour by a frame or two; one mostly over a taken repetition is
#: that repetition, or a rest beside it.
REP_CLEAR_SHARE = 0.75
#: A repetition goes through the movement's poses: the poses it spans (the largest distance between
#: two of its normalized frames) are at least this share of the reference's. A rest, one frozen
#: pose however well it fits part of the movement, spans none.
REP_MIN_SPAN = 1 / 3


class Rep(NamedTuple):
    """One repetition: ``first`` / ``last`` (inclusive) positions in the attempt's performer
    frames, its ``score`` (``movement_score`` against the reference) and ``backwards`` (it fits
    the movement played backwards better than the movement)."""

    first: int
    last: int
    score: float
    backwards: bool = False


class Miss(NamedTuple):
    """Why a search found no repetition: the segment that came nearest (``first`` / ``last``
    positions in the attempt's performer frames, its ``score`` against the direction it fits,
    ``backwards``; all None when no segment could be weighed) and ``reason``, a sentence naming the
    rule it failed and the option that sets it."""

    reason: str
    first: int | None = None
    last: int | None = None
    score: float | None = None
    backwards: bool | None = None


class RepSearch(NamedTuple):
    """What :func:`search_reps` found: ``reps`` in time order, and when there are none, ``miss``."""

    reps: list[Rep]
    miss: Miss | None = None


def find_reps(reference: np.ndarray, reference_fps: float, attempt: np.ndarray, attempt_times: np.ndarray,
              attempt_fps: float, **options) -> list[Rep]:
    """The repetitions :func:`search_reps` finds (same arguments), in time order."""
    return search_reps(reference, reference_fps, attempt, attempt_times, attempt_fps, **options).reps


def search_reps(reference: np.ndarray, reference_fps: float, attempt: np.ndarray, attempt_times: np.ndarray,
                attempt_fps: float, *, min_ratio: float = REP_MIN_RATIO, max_ratio: float = REP_MAX_RATIO,
                min_score: float = REP_MIN_SCORE, mirror: bool = False) -> RepSearch:
    """The repetitions of ``reference [R, 17, 3]`` (one performer's pixel poses, one repetition)
    in ``attempt [A, 17, 3]`` (frames at ``attempt_times [A]`` seconds), in time order; when there
    are none, why (:class:`Miss`: the segment that came nearest and the rule it failed).

    A repetition done wrong is still a repetition: segments are found that fit the movement or
    the movement played backwards (a rest or another movement fits neither). Candidates are
    subsequence-DTW matches of the normalized frames of both (``kernels.subsequence_dtw``,
    left/right flicker undone first), both sampled at one rate (:func:`search_grids`: the lower of
    the two frame rates), so that a diagonal step is the same time in both: a 60 fps attempt of a
    10 fps reference otherwise matches only as much of a repetition as ``min_ratio`` allows. Each
    candidate has its bounds moved to the segment that scores highest (``ascend_bounds``), then
    trimmed (:func:`_trim`): attempt frames the alignment maps to the first (last) reference
    frame before (after) the movement are a rest. Best first by compare's score of these refined
    segments against the direction they match (a candidate's own score says little: a match of
    part of a repetition scores low), each clear of the repetitions already taken is one. Then
    each that met one is tried again, cut to its part clear of them when that is at least
    REP_CLEAR_SHARE of it (repetitions done back to back have matches that overlap their
    neighbours by a frame or two) and refined among them, unless some part of the result plays
    the movement more than ``2 / min_ratio`` times as fast as the reference (:func:`_fastest_part`:
    a rest beside a cut). A repetition lasts ``min_ratio`` to ``max_ratio`` times the reference
    (its trimmed bounds to within a reference frame) and fits one direction with at least
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
    seen = float(times[-1] - times[0]) if A else 0.0
    too_short = Miss(f"the attempt's performer is seen for {seen:.2f} s, less than the shortest repetition "
                     f"({min_ratio:g} x the reference's {duration:.2f} s; --min-ratio)")
    if A < 2 or seen < lo_s:
        return RepSearch([], too_short)
    directions = (np.asarray(reference), np.asarray(reference)[::-1].copy())

    def allowed(a, b, taken=(), slack=0.0):
        return (0 <= a < b < A and lo_s - slack <= times[b] - times[a] <= hi_s
                and not any(t.first <= b and a <= t.last for t in taken))

    def fit(direction: int):
        return lambda a, b: movement_score(directions[direction], reference_fps, attempt[a:b + 1], attempt_fps,
                                           mirror=mirror).score

    r_grid, a_grid, rate = search_grids(R, reference_fps, times, attempt_fps)
    if len(a_grid) < 2:
        return RepSearch([], too_short)
    all_vec, _ = kernels.normalize(kernels.consistent_sides(attempt))
    s_vec = all_vec[a_grid]
    min_span = REP_MIN_SPAN * _span(kernels.normalize(kernels.consistent_sides(np.asarray(reference)))[0])
    shortest = min(len(a_grid), max(2, int(lo_s * rate)))
    count = min(len(a_grid), 8 + 2 * len(a_grid) // shortest)
    candidates = []
    for direction, poses in enumerate(directions):
        q_vec, _ = kernels.normalize(kernels.consistent_sides(poses)[r_grid])
        _, starts, ends = (np.asarray(x) for x in kernels.subsequence_dtw(q_vec, s_vec, k=count, min_length=shortest))
        for start, end in zip(starts.tolist(), ends.tolist()):
            first, last = int(a_grid[start]), int(a_grid[end - 1])
            if last > first:
                candidates.append((fit(direction)(first, last), direction, first, last))
    taken: list[Rep] = []

    def refine(value, direction, first, last):
        """(score, first, last) of the candidate's bounds moved to the segment that scores highest
        clear of the repetitions taken, trimmed; None when that is no repetition."""
        value, first, last = ascend_bounds(fit(direction), lambda a, b: allowed(a, b, taken), first, last, value)
        first, last = _trim(directions[direction], reference_fps, attempt, attempt_fps, first, last, mirror)
        if not allowed(first, last, taken, slack=1.0 / reference_fps):  # the trim is good to half a frame an end
            return None
        if _span(all_vec[first:last + 1]) < min_span:
            return None
        value = fit(direction)(first, last)
        return (value, first, last) if value >= min_score else None

    def take(value, direction, first, last):
        # the score against the movement as it is: this fit, unless backwards
        taken.append(Rep(first, last, fit(0)(first, last) if direction else value, bool(direction)))

    refined = [(r, direction) for value, direction, first, last in candidates if value >= min_score - 20.0
               for r in [refine(value, direction, first, last)] if r is not None]
    refined.sort(key=lambda c: -c[0][0])
    def too_fast(direction, first, last):
        # No part of a repetition plays twice as fast as the fastest repetition may.
        return _fastest_part(directions[direction], reference_fps, attempt, attempt_fps, first, last, rate,
                             mirror) > 2.0 / min_ratio

    overlapping = []
    for (value, first, last), direction in refined:
        if any(t.first <= last and first <= t.last for t in taken):
            overlapping.append((value, direction, first, last))
        else:
            take(value, direction, first, last)
    for value, direction, first, last in overlapping:
        clear = _clear_part(first, last, taken)
        if clear[1] - clear[0] + 1 < REP_CLEAR_SHARE * (last - first + 1):
            continue
        found = refine(fit(direction)(*clear), direction, *clear)
        if found is None or too_fast(direction, found[1], found[2]):
            continue
        take(found[0], direction, found[1], found[2])
    if taken:
        return RepSearch(sorted(taken, key=lambda rep: rep.first))
    if not candidates:
        return RepSearch([], too_short)
    # Nothing taken: the best candidate, refined as a repetition would be, and the rule it fails.
    value, direction, first, last = max(candidates, key=lambda c: c[0])
    if allowed(first, last):
        value, first, last = ascend_bounds(fit(direction), allowed, first, last, value)
        first, last = _trim(directions[direction], reference_fps, attempt, attempt_fps, first, last, mirror)
        value = fit(direction)(first, last) if last > first else value
    lasts = float(times[last] - times[first])
    if not lo_s - 1.0 / reference_fps <= lasts <= hi_s + 1.0 / reference_fps:
        reason = (f"the best match lasts {lasts:.2f} s; a repetition lasts {min_ratio:g} to "
                  f"{max_ratio:g} x the reference's {duration:.2f} s (--min-ratio, --max-ratio)")
    else:
        reason = (f"the best match scores {value:.1f}, under the {min_score:g} a repetition "
                  f"needs (--min-score)")
    return RepSearch([], Miss(reason, first, last, round(float(value), 2), bool(direction)))


def _span(vectors: np.ndarray) -> float:
    """The largest distance between two of ``vectors [N, D]``."""
    v = np.asarray(vectors, np.float64)
    if len(v) < 2:
        return 0.0
    sq = (v * v).sum(1)
    return float(np.sqrt(max(0.0, (sq[:, None] + sq[None, :] - 2.0 * v @ v.T).max())))


def search_grids(reference_frames: int, reference_fps: float, attempt_times: np.ndarray,
                 attempt_fps: float) -> tuple[np.ndarray, np.ndarray, float]:
    """``(reference rows, attempt rows, rate)``: the frames of each nearest to a clock at ``rate``
    frames per second, the lower of the two frame rates (the attempt's measured from its times
    when ``attempt_fps`` is unknown), from each one's first frame to its last. Duplicated frames
    (a 10 fps clip played at 60 fps by ``ffmpeg -vf fps=60``) and dropped ones then cost a
    subsequence DTW what they cost in time, not in frames."""
    times = np.asarray(attempt_times, np.float64)
    span = float(times[-1] - times[0])
    if not attempt_fps or not attempt_fps > 0:
        attempt_fps = (len(times) - 1) / span if span > 0 else reference_fps
    rate = float(min(reference_fps, attempt_fps))
    duration = (reference_frames - 1) / reference_fps
    r_rows = np.unique(np.minimum(np.rint(np.arange(0.0, duration * rate + 1e-6) * reference_fps / rate),
                                  reference_frames - 1).astype(np.int64))
    wanted = times[0] + np.arange(0.0, max(span, 0.0) * rate + 1e-6) / rate
    after = np.clip(np.searchsorted(times, wanted), 1, len(times) - 1)
    a_rows = np.unique(np.where(wanted - times[after - 1] <= times[after] - wanted, after - 1, after))
    return r_rows, a_rows, rate


def _clear_part(first: int, last: int, taken) -> tuple[int, int]:
    """The longest run of ``first..last`` that meets none of the repetitions ``taken`` (``last <
    first`` when none is left)."""
    best, lo = (first, first - 1), first
    for rep in sorted(taken, key=lambda t: t.first) + [Rep(last + 1, last + 1, 0.0)]:
        hi = min(rep.first - 1, last)
        if hi - lo > best[1] - best[0]:
            best = (lo, hi)
        lo = max(lo, rep.last + 1)
        if lo > last:
            break
    return best


def _fastest_part(reference, reference_fps, attempt, attempt_fps, first: int, last: int, rate: float,
                  mirror: bool) -> float:
    """How many times faster than the reference the fastest part of ``attempt[first:last + 1]``
    plays it: the most reference time compare's alignment maps to any two steps of ``rate``
    (seconds of attempt), over those two steps. A rest beside a cut (an edited set jumping from
    one pose to another between two frames) fits a movement that holds that pose, its frames
    interpolated across the jump standing for the rest of the movement: that part plays many
    times faster than any repetition. 0 when it cannot be told (no attempt frame rate, too few
    frames)."""
    if not attempt_fps or not attempt_fps > 0:
        return 0.0
    scored = movement_score(reference, reference_fps, attempt[first:last + 1], attempt_fps, mirror=mirror)
    path, _ = kernels.dtw_path(scored.reference_vectors, scored.attempt_vectors, window=scored.window)
    path = np.asarray(path)
    fr, fa = scored.factors
    samples = len(scored.attempt_vectors)
    low = np.full(samples, len(scored.reference_vectors), np.int64)
    high = np.full(samples, -1, np.int64)
    np.minimum.at(low, path[:, 1], path[:, 0])
    np.maximum.at(high, path[:, 1], path[:, 0])
    steps = max(1, int(round(2.0 * fa * attempt_fps / rate)))
    if samples <= steps:
        return 0.0
    covered = (high[steps:] - low[:-steps]) / (fr * reference_fps)
    return float(covered.max() / (steps / (fa * attempt_fps)))


def _trim(reference, reference_fps, attempt, attempt_fps, first: int, last: int, mirror: bool) -> tuple[int, int]:
    """``first`` / ``last`` moved in past the attempt frames that compare's alignment maps to the
    reference's first frame at the start (all but the last of them) and to its last frame at the
    end (all but the first): the performer waiting in the start pose, or holding the end pose.
    A frame is mapped to the first frame when its aligned sample is nearer the first frame than
    the second (halfway, or the next sample where a frame is one sample: a reference at 40 fps or
    more, whose first pose may be shown twice), so that the copies of the second frame in a
    slowed repetition (each frame shown several times at a higher frame rate) stay in it."""
    scored = movement_score(reference, reference_fps, attempt[first:last + 1], attempt_fps, mirror=mirror)
    path, _ = kernels.dtw_path(scored.reference_vectors, scored.attempt_vectors, window=scored.window)
    fr, fa = scored.factors
    end = len(scored.reference_vectors) - 1
    near = max(1, fr // 2)
    start_sample = int(path[path[:, 0] <= near, 1].max())
    end_sample = int(path[path[:, 0] >= end - near, 1].min())
    if end_sample <= start_sample:
        return first, last
    return first + start_sample // fa, first + -(-end_sample // fa)
