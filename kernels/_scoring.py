"""Pose similarity: whole-pose scores, per-part scores, and the one distance -> score mapping."""

from __future__ import annotations

import math

import numpy as np

from posescore.kernels import _per_pose
from posescore.kernels._backend import array_module, check_array
from posescore.kernels.skeleton import FLIP_PERMUTATION, NUM_KEYPOINTS, NUM_PARTS

#: The distance -> score mapping's exponent and, per kind of distance, its scale (see
#: :func:`score_from_distance`). Calibrated on real video (``python -m bench.calibration``, table in
#: the README): compare's RMS per-step cosine distance is 0.023-0.091 for one movement re-timed
#: from 0.5x to 2x and 0.176-0.50 for a frozen pose, the movement played backwards or another
#: movement; a linear scale cannot put the first >= 95 and the second <= 70 (it needs a ratio of 6
#: between them), 100 exp(-(d / 0.22)^4) puts them at >= 97.1 and <= 66.5.
#: - cosine: Move Mirror's cosine distance sqrt(2 (1 - cos)) (for unit vectors their Euclidean
#:   distance); DTW uses it on the RMS per-step distance.
#: - weighted_l2 / weighted_l1: mean per-keypoint distances; the scales are the cosine scale spread
#:   evenly over 17 keypoints (/ sqrt 17), times 4/pi (mean |dx|+|dy| of a unit 2-D step) for L1,
#:   so that the three metrics agree on a difference spread evenly over the body.
#: - angle: limb-direction and joint-angle differences in radians: 18 degrees off scores 80 (the
#:   default threshold, as on the linear scale before), 10 degrees 98, 25 degrees 44.
SCORE_POWER = 4  # kernels._pose_cells.score_cell computes the same power
SCORE_SCALES: dict[str, float] = {
    "cosine": 0.22,
    "weighted_l2": 0.22 / math.sqrt(NUM_KEYPOINTS),
    "weighted_l1": 4.0 / math.pi * 0.22 / math.sqrt(NUM_KEYPOINTS),
    "angle": math.radians(26.2),
}
METRICS = ("cosine", "weighted_l1", "weighted_l2")
#: The scale's pass mark: a repetition or a part scoring under it is flagged (drawn red, listed as
#: under the threshold) unless the user sets another.
SCORE_THRESHOLD = 80.0
#: Decimals a score is shown with; a verdict against a threshold is made on the number shown.
SCORE_DECIMALS = 1
#: What a movement's score means, from the calibration above (re-timed copies of one movement
#: >= 97.1; a frozen pose, the movement backwards or another movement <= 66.5): (lowest score, words).
SCORE_BANDS: tuple[tuple[float, str], ...] = ((95.0, "the same movement"), (70.0, "close, with differences"),
                                              (0.0, "a different movement"))


def under_threshold(score: float | None, threshold: float) -> bool:
    """True when ``score`` (0-100), as shown (:data:`SCORE_DECIMALS`), is under ``threshold``: a
    part shown as 80.0 is not under 80. ``None`` (not scored) is never under."""
    return score is not None and round(float(score), SCORE_DECIMALS) < threshold


def score_band(score: float) -> str:
    """The words of :data:`SCORE_BANDS` for a movement's score, e.g. ``"the same movement"``."""
    shown = round(float(score), SCORE_DECIMALS)
    return next(words for lowest, words in SCORE_BANDS if shown >= lowest)


def score_from_distance(distance, kind: str):
    """Map a distance >= 0 to a score in [0, 100]: ``100 * exp(-(distance / SCORE_SCALES[kind]) ** 4)``.

    The only distance-to-score mapping in posescore: 100 means identical; flat near 0 (the noise of
    one movement filmed twice costs little), steep in the middle, where a movement becomes another
    (for cosine: 95 at 0.105, 80 at 0.15, 70 at 0.17, 50 at 0.20, 10 at 0.27). Works on scalars,
    NumPy and CuPy arrays; returns float32 for arrays.
    """
    if kind not in SCORE_SCALES:
        raise ValueError(f"kind: expected one of {tuple(SCORE_SCALES)}, got {kind!r}")
    xp = array_module(distance)
    d = xp.asarray(distance, dtype=xp.float32)
    if not bool((d >= 0).all()):  # also false for NaN
        got = "NaN" if bool(xp.isnan(d).any()) else "a negative one"
        raise ValueError(f"distance: expected distances >= 0, got {got}")
    r = xp.minimum(d / xp.float32(SCORE_SCALES[kind]), 16.0)  # exp(-16^4) is 0 in float32
    return (100.0 * xp.exp(-(r * r) ** 2)).astype(xp.float32)


def distance_for_score(score: float, kind: str) -> float:
    """The largest distance :func:`score_from_distance` maps to at least ``score`` (0 < score <= 100;
    0: infinity)."""
    if kind not in SCORE_SCALES:
        raise ValueError(f"kind: expected one of {tuple(SCORE_SCALES)}, got {kind!r}")
    if not 0 <= score <= 100:
        raise ValueError(f"score: expected 0 to 100, got {score}")
    if score == 0:
        return math.inf
    return SCORE_SCALES[kind] * (-math.log(score / 100.0)) ** (1.0 / SCORE_POWER)


def mirror_vectors(vectors, weights):
    """Mirror normalized poses: left and right swapped and x flipped (``[..., 34]``, ``[..., 17]``).

    Exact for every normalization method, whose coordinates are centred on the body. One
    parallel pass on the CPU; CuPy gathers on the GPU.
    """
    xp = array_module(vectors, weights)
    v, w = _check_poses(xp, vectors, weights)
    if xp is not np:
        return _mirror(xp, v, w)
    from posescore.kernels import _pose_cells

    out_v, out_w = np.empty_like(v), np.empty_like(w)
    _pose_cells.mirror_all(v.reshape(-1, 2 * NUM_KEYPOINTS), w.reshape(-1, NUM_KEYPOINTS),
                           out_v.reshape(-1, 2 * NUM_KEYPOINTS), out_w.reshape(-1, NUM_KEYPOINTS))
    return out_v, out_w


def _mirror(xp, vectors, weights):
    perm = xp.asarray(FLIP_PERMUTATION)
    xy = vectors.reshape(vectors.shape[:-1] + (NUM_KEYPOINTS, 2))[..., perm, :]
    xy = xy * xp.asarray([-1.0, 1.0], dtype=xp.float32)
    return xy.reshape(vectors.shape).astype(xp.float32), weights[..., perm]


def _check_poses(xp, vectors, weights):
    """``vectors [..., 34]``, ``weights [..., 17]`` checked, with the same leading axes."""
    v = check_array(vectors, "vectors", trailing=(2 * NUM_KEYPOINTS,), xp=xp)
    w = check_array(weights, "weights", trailing=(NUM_KEYPOINTS,), xp=xp)
    if v.shape[:-1] != w.shape[:-1]:
        raise ValueError(f"vectors {list(v.shape)} and weights {list(w.shape)} must describe the "
                         f"same poses (leading axes differ)")
    return v, w


def _check_confidences(*weights):
    if any(bool((w < 0).any()) for w in weights):
        raise ValueError("weights: expected confidences >= 0, got a negative weight")


def _check_pair(query_vectors, query_weights, vectors, weights, query_index=None):
    """The checked inputs of a scoring call: ``(xp, qv [Q, 34], qw [Q, 17], v [N, 34], w [N, 17],
    leading shape of vectors, query index [N] or [1] int64)``. One query ``[34]`` / ``[17]``
    without ``query_index``; queries ``[Q, 34]`` / ``[Q, 17]`` with ``query_index`` (the query of
    each pose, the leading shape of ``vectors``, values in ``[0, Q)``)."""
    xp = array_module(query_vectors, query_weights, vectors, weights)
    many = query_index is not None
    queries = (2, 2) if many else (1, 1)
    qv = check_array(query_vectors, "query_vectors", trailing=(2 * NUM_KEYPOINTS,), ndim=queries, xp=xp)
    qw = check_array(query_weights, "query_weights", trailing=(NUM_KEYPOINTS,), ndim=queries, xp=xp)
    if qv.shape[:-1] != qw.shape[:-1]:
        raise ValueError(f"query_vectors {list(qv.shape)} and query_weights {list(qw.shape)} must describe the "
                         f"same poses")
    v, w = _check_poses(xp, vectors, weights)
    _check_confidences(qw, w)
    qv, qw = qv.reshape(-1, 2 * NUM_KEYPOINTS), qw.reshape(-1, NUM_KEYPOINTS)
    blind = ~(qw > 0).any(axis=-1)
    if bool(blind.any()):
        which = f" {int(xp.argmax(blind))}" if many else ""
        raise ValueError(f"query_weights: the query pose{which} has no visible keypoint (all weights 0)")
    index = xp.zeros(1, xp.int64)
    if many:
        index = check_array(query_index, "query_index", xp=xp, dtype=np.int64, allow_empty=True)
        if index.shape != v.shape[:-1]:
            raise ValueError(f"query_index: expected one query per pose (shape {list(v.shape[:-1])}), "
                             f"got shape {list(index.shape)}")
        if index.size and (int(index.min()) < 0 or int(index.max()) >= qv.shape[0]):
            raise ValueError(f"query_index: expected values in [0, {qv.shape[0]}), got {int(index.min())} .. "
                             f"{int(index.max())}")
        index = index.reshape(-1)
    return xp, qv, qw, v.reshape(-1, 2 * NUM_KEYPOINTS), w.reshape(-1, NUM_KEYPOINTS), v.shape[:-1], index


def pose_scores(query_vectors, query_weights, vectors, weights, metric: str = "cosine",
                mirror: bool = False, return_mirrored: bool = False, query_index=None):
    """Score one normalized query pose against N normalized poses: ``[N]`` float32 in 0-100.

    ``query_vectors [34]``, ``query_weights [17]``, ``vectors [..., 34]``, ``weights [..., 17]`` as
    returned by :func:`kernels.normalize`; the result has the leading shape of ``vectors``.

    Metrics (all through :func:`score_from_distance`):
    - ``"cosine"``: Move Mirror's cosine distance sqrt(2 (1 - cos)), cos taken over the keypoints
      visible in both poses.
    - ``"weighted_l1"``: Move Mirror's weight matching, D = sum_k c_k |F_k - G_k|_1 / sum_k c_k with
      c_k the product of the two poses' confidences (symmetric).
    - ``"weighted_l2"``: the same with the Euclidean distance per keypoint.
    A pair with no keypoint visible in both scores 0. With ``mirror=True`` each pose is also compared
    with the mirrored query and keeps the better score; ``return_mirrored=True`` then also returns a
    bool array saying which poses matched the mirror image.

    Several queries in one call (e.g. every request of a server's batch): ``query_vectors [Q, 34]``,
    ``query_weights [Q, 17]`` and ``query_index`` (int, the leading shape of ``vectors``) naming
    each pose's query. Each pose's score is the one it gets alone against its query.
    """
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {METRICS}, got {metric!r}")
    if not isinstance(mirror, (bool, np.bool_)):
        raise TypeError(f"mirror: expected True or False, got {type(mirror).__name__}")
    xp, qv, qw, v, w, lead, index = _check_pair(query_vectors, query_weights, vectors, weights, query_index)
    mqv, mqw = _mirror(xp, qv, qw) if mirror else (qv, qw)
    scores, mirrored = _per_pose.pose_scores(qv, qw, mqv, mqw, index, v, w, metric, SCORE_SCALES[metric], mirror)
    return (scores.reshape(lead), mirrored.reshape(lead)) if return_mirrored else scores.reshape(lead)


def part_scores(query_vectors, query_weights, vectors, weights, mirror=False,
                return_valid: bool = False, query_index=None):
    """Per-part scores ``[..., 6]`` float32 in 0-100 (head, torso, left arm, right arm, left leg,
    right leg) of N normalized poses against one normalized query pose.

    Each part's distance is the confidence-weighted mean difference of its limb directions and joint
    angles (``kernels.skeleton.PART_LIMBS`` / ``PART_JOINTS``), in radians, mapped with
    :func:`score_from_distance` (``"angle"``). A part with no limb visible in both poses cannot be
    scored: it gets 0, and ``return_valid=True`` also returns the ``[..., 6]`` bool mask of scored
    parts. ``mirror`` is False, True (per pose, the orientation with the better mean part score), or
    a bool array ``[...]`` choosing the mirrored query per pose (e.g. ``pose_scores``'s choice, so
    whole-pose and part scores describe the same match). Several queries: ``query_index``, as in
    :func:`pose_scores`.
    """
    xp, qv, qw, v, w, lead, index = _check_pair(query_vectors, query_weights, vectors, weights, query_index)
    per_pose = not isinstance(mirror, (bool, np.bool_))
    pick = xp.zeros(1, dtype=bool)
    if per_pose:
        pick = xp.asarray(mirror)
        if pick.dtype != bool or pick.shape != lead:
            raise ValueError(f"mirror: expected True, False or a bool per pose (shape {list(lead)}), "
                             f"got {pick.dtype} of shape {list(pick.shape)}")
        pick = xp.ascontiguousarray(pick.reshape(-1))
    mode = 2 if per_pose else int(bool(mirror))
    query = _per_pose.pose_terms(qv, qw)
    mirror_terms = _per_pose.pose_terms(*_mirror(xp, qv, qw)) if mode else query
    scores, valid = _per_pose.part_scores(query, mirror_terms, index, v, w, SCORE_SCALES["angle"], mode, pick)
    scores, valid = scores.reshape(lead + (NUM_PARTS,)), valid.reshape(lead + (NUM_PARTS,))
    return (scores, valid) if return_valid else scores


def aligned_part_scores(vectors_a, weights_a, vectors_b, weights_b, path):
    """Part scores along an alignment: pose ``a[i]`` against ``b[j]`` for each ``(i, j)`` of ``path``.

    ``vectors_* [T|U, 34]``, ``weights_* [T|U, 17]`` normalized sequences, ``path [L, 2]`` integer
    (e.g. from :func:`kernels.dtw_path`). Returns ``(per_step [L, 6] float32, overall [6] float32,
    valid [L, 6] bool)``: ``overall`` averages each part over the steps where it could be scored
    (0 for a part never seen in both poses). Same angle-based distance and mapping as
    :func:`part_scores`.
    """
    xp = array_module(vectors_a, weights_a, vectors_b, weights_b, path)
    va = check_array(vectors_a, "vectors_a", trailing=(2 * NUM_KEYPOINTS,), ndim=(2, 2), xp=xp)
    wa = check_array(weights_a, "weights_a", trailing=(NUM_KEYPOINTS,), ndim=(2, 2), xp=xp)
    vb = check_array(vectors_b, "vectors_b", trailing=(2 * NUM_KEYPOINTS,), ndim=(2, 2), xp=xp)
    wb = check_array(weights_b, "weights_b", trailing=(NUM_KEYPOINTS,), ndim=(2, 2), xp=xp)
    steps = check_array(path, "path", trailing=(2,), ndim=(2, 2), xp=xp, dtype=np.int64)
    if va.shape[0] != wa.shape[0] or vb.shape[0] != wb.shape[0]:
        raise ValueError(f"vectors and weights must have the same length: a {va.shape[0]} / "
                         f"{wa.shape[0]}, b {vb.shape[0]} / {wb.shape[0]}")
    _check_confidences(wa, wb)
    if steps.shape[0] and (int(steps.min()) < 0 or int(steps[:, 0].max()) >= va.shape[0]
                           or int(steps[:, 1].max()) >= vb.shape[0]):
        raise ValueError(f"path: indices outside the sequences of lengths {va.shape[0]} and {vb.shape[0]}")
    # Each pose's limb directions and joint angles once, then one pass over the steps.
    per_step, valid = _per_pose.aligned_part_scores(_per_pose.pose_terms(va, wa), _per_pose.pose_terms(vb, wb),
                                                    xp.ascontiguousarray(steps), SCORE_SCALES["angle"])
    counts = valid.sum(axis=0)
    overall = xp.where(counts > 0, per_step.sum(axis=0) / xp.maximum(counts, 1), 0.0).astype(xp.float32)
    return per_step, overall, valid
