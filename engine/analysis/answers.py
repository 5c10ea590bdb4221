"""The answer of each service, defined once.

The Triton models (``model_repository/*/1/model.py``), the load-test oracle
(``loadtests.workload``), the jobs (``engine.jobs``) and the benchmarks call these functions, so
that a server's answer and the answer it is checked against cannot drift apart. Nothing here
imports Triton or onnxruntime.

- ``score``: :func:`score_answer`, one query pose against N candidates.
- ``dtw``: :func:`dtw_answers` (a batch, as the model runs it) and :func:`dtw_answer` (one).
- ``pose``: ``engine.serving.detector.PoseDetector``, letterbox -> ONNX model -> decoding and NMS.
- ``search``: :func:`engine.archive.service.search_archive`; a movement's score, ``compare``'s too:
  :func:`movement_score`.

Bad input raises ``ValueError`` naming the input (``query``, ``candidates``, ``reference``, ...);
the models answer it as INVALID_ARGUMENT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np

from posescore import kernels
from posescore.kernels import array_module
from posescore.kernels.skeleton import NUM_KEYPOINTS, NUM_PARTS


def normalized(poses, name: str):
    """``kernels.normalize(poses)``; a ``ValueError`` names the input ``name``."""
    try:
        return kernels.normalize(poses)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


# -- movement: compare's scale, also a clip search hit's -------------------------------------------

#: Hits of one (video, track) closer than this (seconds) are one moment; ``find``'s moments and
#: ``compare``'s worst moments are at least this far apart too.
MOMENT_GAP_S = 0.5

#: A movement is aligned at no fewer samples per second than this, interpolating between frames
#: (at most MAX_INTERPOLATION samples per frame and MAX_ALIGNED_SAMPLES per performance: the
#: warping path keeps one byte per cell, 64 MB at 8000 x 8000: the bound keeps one comparison's
#: memory and time within what a request may take; docs/BENCHMARKS.md has its cost).
ALIGN_RATE_HZ = 40.0
MAX_INTERPOLATION = 4
MAX_ALIGNED_SAMPLES = 8000


def interpolation_factor(fps: float | None, frames: int) -> int:
    """Samples per frame at which a performance of ``frames`` frames at ``fps`` is aligned."""
    if not fps or fps <= 0 or frames < 2:
        return 1
    wanted = min(MAX_INTERPOLATION, int(np.ceil(ALIGN_RATE_HZ / fps - 1e-9)))
    return max(1, min(wanted, (MAX_ALIGNED_SAMPLES - 1) // (frames - 1)))


class MovementScore(NamedTuple):
    """Two movements aligned and scored: ``score`` 0-100 (``kernels.dtw_score``), ``distance``
    (the RMS per-step distance it maps, ``kernels.dtw_step_distance``), ``mirrored``
    (the mirrored attempt scored better), the aligned samples ``reference_vectors [R, 34]`` /
    ``reference_weights [R, 17]`` / ``attempt_*`` (the chosen side), the samples per frame of each
    (``factors``) and the DTW ``window`` in samples (None: unbounded)."""

    score: float
    distance: float
    mirrored: bool
    reference_vectors: Any
    reference_weights: Any
    attempt_vectors: Any
    attempt_weights: Any
    factors: tuple[int, int]
    window: int | None


def movement_score(reference, reference_fps, attempt, attempt_fps, *, mirror: bool = False,
                   window: int | None = None) -> MovementScore:
    """The one score of a movement against another: ``compare``'s, and a clip search hit's.

    ``reference [R, 17, 3]`` and ``attempt [A, 17, 3]`` are one performer's pixel poses in frame
    order (frames without the performer left out). ``kernels.consistent_sides`` undoes the pose
    model's left/right flicker in each, ``kernels.consistent_keypoints`` gives both one stable
    keypoint set; each is interpolated to ``interpolation_factor`` samples per frame (a
    performance filmed or played at a lower sampling of the movement is not penalized for the poses
    between its frames), normalized, and scored by ``kernels.dtw_score`` (with the mirrored attempt
    too when ``mirror``; the better counts). ``window`` is in frames.
    """
    r_poses, a_poses = kernels.consistent_keypoints(kernels.consistent_sides(reference),
                                                    kernels.consistent_sides(attempt))
    fr = interpolation_factor(reference_fps, len(r_poses))
    fa = interpolation_factor(attempt_fps, len(a_poses))
    r_vec, r_w = kernels.normalize(kernels.interpolate_frames(r_poses, fr))
    a_vec, a_w = kernels.normalize(kernels.interpolate_frames(a_poses, fa))
    window = None if window is None else window * max(fr, fa)
    candidates = [(False, a_vec, a_w)]
    if mirror:
        candidates.append((True, *kernels.mirror_vectors(a_vec, a_w)))
    scored = [(kernels.dtw_step_distance(r_vec, v, window=window), flipped, v, w) for flipped, v, w in candidates]
    distance, mirrored, a_vec, a_w = min(scored, key=lambda item: item[0])
    score = float(kernels.score_from_distance(distance, "cosine"))
    return MovementScore(score, distance, mirrored, r_vec, r_w, a_vec, a_w, (fr, fa), window)


def ascend_bounds(score_of, allowed, first: int, last: int, score: float) -> tuple[float, int, int]:
    """Move a segment's ``first`` and ``last`` frames while ``score_of(first, last)`` grows and
    ``allowed(first, last)`` holds: coordinate ascent in steps of half its length, then a quarter,
    ... one frame. Returns ``(score, first, last)``. A subsequence DTW's penalty on non-diagonal
    steps makes its matches of a slower or faster copy too short; compare's alignment does not."""
    best = (score, first, last)
    step = max(1, (last - first + 1) // 2)
    while True:
        moved = True
        while moved:
            moved = False
            for a, b in ((best[1] - step, best[2]), (best[1], best[2] + step), (best[1] + step, best[2]),
                         (best[1], best[2] - step)):
                if allowed(a, b):
                    value = score_of(a, b)
                    if value > best[0] + 1e-6:
                        best, moved = (value, a, b), True
                        break
        if step == 1:
            return best
        step //= 2


# -- score ---------------------------------------------------------------------------------------

class ScoreAnswer(NamedTuple):
    """One query against N candidates: ``scores [N]`` float32 0-100, ``part_scores [N, 6]``
    float32 0-100 (``kernels.PART_NAMES``; NaN where the part could not be scored, never a 0 that
    reads as a score), ``mirrored [N]`` bool (the mirrored query matched better; always False
    without ``mirror``), ``parts_valid [N, 6]`` bool (the part could be scored: some limb visible
    in both poses)."""

    scores: Any
    part_scores: Any
    mirrored: Any
    parts_valid: Any


def score_answer(query, candidates, metric: str = "cosine", mirror: bool = False) -> ScoreAnswer:
    """The ``score`` service: pixel poses ``query [17, 3]`` and ``candidates [..., 17, 3]`` (NumPy
    or CuPy) normalized, scored with ``metric`` (``kernels.pose_scores``), and the part scores
    of the same match (the mirror choice of the whole-pose score). ``ValueError`` names the input
    that cannot be scored."""
    answer = score_answers([(query, candidates, metric, mirror)])[0]
    if isinstance(answer, Exception):
        raise answer
    return answer


def score_answers(questions: Sequence[tuple]) -> list:
    """The ``score`` service for a batch of ``(query [17, 3], candidates [N, 17, 3], metric,
    mirror)``: every candidate of every question normalized in one call, then one
    ``kernels.pose_scores`` and one ``kernels.part_scores`` call per (metric, mirror) group, each
    candidate against its own query (``query_index``): each answer is the one its question gets
    alone. Returns, per question, a :class:`ScoreAnswer` or the ``ValueError`` that names what
    its inputs lack (the others are answered all the same)."""
    answers: list = [None] * len(questions)
    groups: dict = {}
    for n, (query, candidates, metric, mirror) in enumerate(questions):
        shapes = (tuple(getattr(query, "shape", ())), tuple(getattr(candidates, "shape", ())))
        if shapes[0] != (NUM_KEYPOINTS, 3) or len(shapes[1]) < 2 or shapes[1][-2:] != (NUM_KEYPOINTS, 3):
            answers[n] = ValueError(f"query [17, 3] and candidates [..., 17, 3]: expected arrays of these shapes, "
                                    f"got {list(shapes[0])} and {list(shapes[1])}")
        elif metric not in kernels.METRICS:
            answers[n] = ValueError(f"metric: expected one of {kernels.METRICS}, got {metric!r}")
        elif not isinstance(mirror, (bool, np.bool_)):
            answers[n] = ValueError(f"mirror: expected True or False, got {type(mirror).__name__}")
        else:
            groups.setdefault((metric, bool(mirror)), []).append(n)
    for (metric, mirror), members in groups.items():
        for n, answer in zip(members, _score_group([questions[n][:2] for n in members], metric, mirror)):
            answers[n] = answer
    return answers


def _score_group(pairs: list, metric: str, mirror: bool) -> list:
    """:func:`score_answers` for questions of one metric and mirror option."""
    xp = array_module(*(a for pair in pairs for a in pair))
    flat = [xp.asarray(c).reshape(-1, NUM_KEYPOINTS, 3) for _, c in pairs]
    queries = xp.stack([xp.asarray(q) for q, _ in pairs])
    try:
        q_vec, q_w = kernels.normalize(queries)
        vectors, weights = kernels.normalize(xp.concatenate(flat))
    except ValueError:  # no query or no candidate at all can be normalized: each says which
        return [_alone_error(q, c) for q, c in pairs]
    sizes = [len(c) for c in flat]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    seen = (weights > 0).any(axis=-1)
    good = [n for n in range(len(pairs))
            if bool((q_w[n] > 0).any()) and bool(seen[bounds[n]:bounds[n + 1]].any())]
    answers: list = [None] * len(pairs)
    for n in set(range(len(pairs))) - set(good):
        answers[n] = _alone_error(*pairs[n])
    if good:
        v, w = vectors, weights
        if len(good) < len(pairs):
            rows = xp.asarray(np.concatenate([np.arange(bounds[n], bounds[n + 1]) for n in good]))
            v, w = vectors[rows], weights[rows]
        index = xp.asarray(np.concatenate([np.full(sizes[n], k, np.int64) for k, n in enumerate(good)]))
        qv, qw = q_vec[good], q_w[good]
        scores, mirrored = kernels.pose_scores(qv, qw, v, w, metric=metric, mirror=mirror, return_mirrored=True,
                                               query_index=index)
        parts, valid = kernels.part_scores(qv, qw, v, w, mirror=mirrored, return_valid=True, query_index=index)
        parts = xp.where(valid, parts, xp.float32(xp.nan))
        start = 0
        for n in good:
            stop = start + sizes[n]
            lead = tuple(pairs[n][1].shape[:-2])
            answers[n] = ScoreAnswer(scores[start:stop].reshape(lead), parts[start:stop].reshape(lead + (NUM_PARTS,)),
                                     mirrored[start:stop].reshape(lead), valid[start:stop].reshape(lead + (NUM_PARTS,)))
            start = stop
    return answers


def _alone_error(query, candidates) -> ValueError:
    """The error of a question whose query or candidates cannot be normalized (as alone)."""
    try:
        normalized(query, "query")
        normalized(candidates, "candidates")
    except ValueError as err:
        return err
    return ValueError("query: cannot be scored")


# -- dtw -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DtwQuestion:
    """A ``dtw`` request: pixel movements ``reference [T, 17, 3]`` and ``attempt [U, 17, 3]``,
    a Sakoe-Chiba ``window`` in frames (None: none), whether to try the mirrored attempt, and
    whether to return the warping path."""

    reference: Any
    attempt: Any
    window: int | None = None
    mirror: bool = False
    with_path: bool = False


class DtwAnswer(NamedTuple):
    """``score`` 0-100 (``kernels.dtw_score``), ``distance`` (``kernels.dtw_path``'s),
    ``part_scores [6]`` float32 along the path (NaN for a part never seen in both), ``mirrored``,
    ``path [L, 2]`` int32 (None unless asked for)."""

    score: float
    distance: float
    part_scores: Any
    mirrored: bool
    path: Any


#: Most DTW cells one dtw request may ask for (reference frames x attempt frames, twice with
#: mirror): 8,000 x 8,000, the grid compare aligns at most. The dtw model's ``max_cells``.
MAX_DTW_CELLS = 64_000_000
#: Most candidates one score request may hold (the clients send 1,000 a request by default).
MAX_SCORE_CANDIDATES = 1_000_000


def check_dtw_cost(frames_reference: int, frames_attempt: int, mirror: bool, max_cells: int = MAX_DTW_CELLS) -> int:
    """The cells a dtw question costs; ``ValueError`` naming the bound when over ``max_cells``
    (checked before any work, so that one request cannot hold a server for minutes)."""
    cells = frames_reference * frames_attempt * (2 if mirror else 1)
    if cells > max_cells:
        raise ValueError(f"reference [{frames_reference}] x attempt [{frames_attempt}] frames"
                         f"{' x 2 (mirror)' if mirror else ''} = {cells:,} DTW cells, over this server's bound of "
                         f"{max_cells:,} per request (parameter max_cells): compare shorter movements or sample "
                         f"them more coarsely")
    return cells


def dtw_answers(questions: Sequence[DtwQuestion]) -> list[DtwAnswer]:
    """The ``dtw`` service for a batch: every (reference, attempt or mirrored attempt) pair goes
    through one ragged batched ``kernels.dtw_score`` call per distinct window; the better
    orientation of each question is then aligned (``kernels.dtw_path``) and scored per part
    along the path (``kernels.aligned_part_scores``)."""
    prepared = []
    for q in questions:
        window = q.window if q.window is not None and q.window >= 1 else None  # 0, < 0: no window
        ref = normalized(q.reference, "reference")
        att = normalized(q.attempt, "attempt")
        prepared.append((ref, (att, kernels.mirror_vectors(*att)) if q.mirror else (att,), window))
    scores: dict[tuple[int, int], float] = {}
    for window in {p[2] for p in prepared}:
        group = [(n, f) for n, p in enumerate(prepared) if p[2] == window for f in range(len(p[1]))]
        refs = [prepared[n][0][0] for n, _ in group]
        atts = [prepared[n][1][f][0] for n, f in group]
        batch = kernels.dtw_score(_pad(refs), _pad(atts), window=window,
                                  lengths_a=np.array([len(r) for r in refs]),
                                  lengths_b=np.array([len(a) for a in atts]))
        scores.update(zip(group, (float(s) for s in batch)))
    answers = []
    for n, (q, ((ref_v, ref_w), atts, window)) in enumerate(zip(questions, prepared)):
        flipped = max(range(len(atts)), key=lambda f: scores[(n, f)])
        att_v, att_w = atts[flipped]
        path, distance = kernels.dtw_path(ref_v, att_v, window=window)
        _, parts, valid = kernels.aligned_part_scores(ref_v, ref_w, att_v, att_w, path)
        xp = array_module(path)
        parts = xp.where(valid.any(axis=0), parts, xp.nan)
        answers.append(DtwAnswer(scores[(n, flipped)], float(distance), parts.astype(xp.float32),
                                 bool(flipped), path.astype(xp.int32) if q.with_path else None))
    return answers


def dtw_answer(reference, attempt, window: int | None = None, mirror: bool = False,
               with_path: bool = False) -> DtwAnswer:
    """The ``dtw`` service for one question (:func:`dtw_answers`)."""
    return dtw_answers([DtwQuestion(reference, attempt, window, mirror, with_path)])[0]


def _pad(sequences):
    """Stack ``[T_i, D]`` sequences into ``[B, max T_i, D]`` float32 (zeros after each end)."""
    xp = array_module(*sequences)
    out = xp.zeros((len(sequences), max(len(s) for s in sequences), sequences[0].shape[1]), xp.float32)
    for i, seq in enumerate(sequences):
        out[i, :len(seq)] = seq
    return out


def _warm_up_poses(xp, count: int):
    """``count`` deterministic standing-person poses ``[count, 17, 3]`` (pixels) on ``xp``."""
    rng = np.random.default_rng(0)
    poses = np.concatenate([rng.uniform(100, 300, (count, NUM_KEYPOINTS, 2)),
                            rng.uniform(0.5, 1.0, (count, NUM_KEYPOINTS, 1))], axis=-1).astype(np.float32)
    return xp.asarray(poses)


def warm_up_score(xp=np) -> None:
    """Compile (or load from numba's cache) every kernel the score service runs, on ``xp``, so
    that a server's first request is not the slow one."""
    poses = _warm_up_poses(xp, 8)
    for metric in kernels.METRICS:
        score_answer(poses[0], poses, metric, mirror=True)


def warm_up_dtw(xp=np) -> None:
    """As :func:`warm_up_score` for the dtw service (with and without a window, batched)."""
    poses = _warm_up_poses(xp, 12)
    dtw_answers([DtwQuestion(poses[:6], poses[6:], None, True, True), DtwQuestion(poses[:5], poses[4:], 2)])
