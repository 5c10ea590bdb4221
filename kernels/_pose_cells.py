"""The per-pose math the CPU and GPU kernels share: one definition each, compiled for each target
(numba for the parallel loops of kernels._pose_cpu, numba-CUDA for the one-thread-per-pose
kernels of kernels._cuda_kernels), as the DP cells are. Plain scalar code over one pose's rows;
every buffer is the caller's (a CPU loop's hoisted ``np.empty``, a GPU thread's local array).

Layouts: a pose ``p [17, 3]`` (x, y, confidence); a normalized pose ``v [34]`` (x0, y0, x1, ...)
with weights ``w [17]``; part terms as :data:`TERMS` orders them (``kernels.skeleton``'s limbs
and joints, grouped by part).
"""

import math

import numpy as np
from numba.extending import register_jitable

from .skeleton import NUM_KEYPOINTS, NUM_PARTS, part_terms


def _term_table():
    """``[terms, 4]`` int64 rows (a, b, c, part), grouped by part, limbs (c = -1: the direction of
    a -> b) before joints (the signed angle at b from b->a to b->c), in ``part_terms``' order
    within each group; and ``[7]`` offsets of each part's rows."""
    limbs, joints, limb_part, joint_part = part_terms()
    rows = []
    for part in range(NUM_PARTS):
        rows += [(a, b, -1, part) for (a, b), p in zip(limbs.tolist(), limb_part.tolist()) if p == part]
        rows += [(a, b, c, part) for (a, b, c), p in zip(joints.tolist(), joint_part.tolist()) if p == part]
    table = np.asarray(rows, np.int64)
    offsets = np.searchsorted(table[:, 3], np.arange(NUM_PARTS + 1)).astype(np.int64)
    return table, offsets


TERMS, TERM_OFFSETS = _term_table()
NUM_TERMS = TERMS.shape[0]

METRIC_CODES = {"cosine": 0, "weighted_l1": 1, "weighted_l2": 2}


@register_jitable  # callable from the other cells, whatever the target compiling them
def score_cell(distance, scale):
    """The distance -> score mapping (``kernels.score_from_distance``) of one float32 distance:
    ``100 * clip(1 - distance / scale, 0, 1)``."""
    s = np.float32(1.0) - np.float32(distance) / np.float32(scale)
    if s < np.float32(0.0):
        s = np.float32(0.0)
    elif s > np.float32(1.0):
        s = np.float32(1.0)
    return np.float32(100.0) * s


def normalize_cell(p, torso, min_confidence, min_torso_share, vec, w):
    """Normalize one pose ``p [17, 3]`` into ``vec [34]`` and ``w [17]`` (float32, written);
    ``torso``: the torso method, else bbox. Returns whether the pose could be normalized (else
    ``vec`` and ``w`` are all zero). The rules are ``kernels.normalize``'s."""
    big = np.float32(1.0e30)
    lo_x, lo_y, hi_x, hi_y = big, big, -big, -big
    count = 0
    for k in range(NUM_KEYPOINTS):
        x, y, c = p[k, 0], p[k, 1], p[k, 2]
        if c > min_confidence and math.isfinite(x) and math.isfinite(y) and math.isfinite(c):
            count += 1
            lo_x, hi_x = min(lo_x, x), max(hi_x, x)
            lo_y, hi_y = min(lo_y, y), max(hi_y, y)
    extent = max(hi_x - lo_x, hi_y - lo_y)
    if torso:
        lh, rh, ls, rs = 11, 12, 5, 6
        usable = True
        for k in (lh, rh, ls, rs):
            c = p[k, 2]
            if not (c > min_confidence and math.isfinite(p[k, 0]) and math.isfinite(p[k, 1])
                    and math.isfinite(c)):
                usable = False
        cx, cy, scale = np.float32(0.0), np.float32(0.0), np.float32(0.0)
        if usable:
            cx = (p[lh, 0] + p[rh, 0]) * np.float32(0.5)
            cy = (p[lh, 1] + p[rh, 1]) * np.float32(0.5)
            dx = (p[ls, 0] + p[rs, 0]) * np.float32(0.5) - cx
            dy = (p[ls, 1] + p[rs, 1]) * np.float32(0.5) - cy
            scale = np.float32(math.sqrt(dx * dx + dy * dy))
            usable = scale > np.float32(min_torso_share) * extent
    else:
        usable = count >= 2
        cx = (lo_x + hi_x) * np.float32(0.5)
        cy = (lo_y + hi_y) * np.float32(0.5)
        scale = extent
    usable = usable and scale > np.float32(0.0)
    norm = np.float32(0.0)
    for k in range(NUM_KEYPOINTS):
        x, y, c = p[k, 0], p[k, 1], p[k, 2]
        rx, ry = np.float32(0.0), np.float32(0.0)
        if usable and c > min_confidence and math.isfinite(x) and math.isfinite(y) and math.isfinite(c):
            rx = (x - cx) / scale
            ry = (y - cy) / scale
            w[k] = c
        else:
            w[k] = np.float32(0.0)
        vec[2 * k] = rx
        vec[2 * k + 1] = ry
        norm += rx * rx + ry * ry
    norm = np.float32(math.sqrt(norm))
    usable = usable and norm > np.float32(0.0)
    for d in range(2 * NUM_KEYPOINTS):
        vec[d] = vec[d] / norm if usable else np.float32(0.0)
    if not usable:
        for k in range(NUM_KEYPOINTS):
            w[k] = np.float32(0.0)
    return usable


def pose_distance_cell(qv, qw, v, w, metric):
    """``(distance, shared)`` of a normalized query ``qv [34]``, ``qw [17]`` and a pose ``v``, ``w``
    under ``metric`` (:data:`METRIC_CODES`): ``kernels.pose_scores``' definitions (cosine over
    co-visible keypoints in float64; weighted L1 / L2 with the product of both confidences).
    ``shared``: some keypoint is visible in both."""
    if metric == 0:
        dot, qq, cc = 0.0, 0.0, 0.0
        for k in range(NUM_KEYPOINTS):
            if qw[k] > 0 and w[k] > 0:
                qx, qy = np.float64(qv[2 * k]), np.float64(qv[2 * k + 1])
                cx, cy = np.float64(v[2 * k]), np.float64(v[2 * k + 1])
                dot += qx * cx + qy * cy
                qq += qx * qx + qy * qy
                cc += cx * cx + cy * cy
        denom = math.sqrt(qq * cc)
        if not denom > 0:
            return np.float32(0.0), False
        cos = min(1.0, max(-1.0, dot / denom))
        return np.float32(math.sqrt(2.0 * (1.0 - cos))), True
    total = np.float32(0.0)
    acc = np.float32(0.0)
    for k in range(NUM_KEYPOINTS):
        conf = w[k] * qw[k]
        dx = v[2 * k] - qv[2 * k]
        dy = v[2 * k + 1] - qv[2 * k + 1]
        per = abs(dx) + abs(dy) if metric == 1 else np.float32(math.sqrt(dx * dx + dy * dy))
        total += conf
        acc += conf * per
    if not total > 0:
        return np.float32(0.0), False
    return acc / total, True


def terms_cell(v, w, terms, angles, weights):
    """The part terms of one normalized pose: ``angles [terms]`` (radians: each limb's direction,
    each joint's signed angle) and ``weights [terms]`` (the least confidence of its keypoints),
    float32, written."""
    for t in range(terms.shape[0]):
        a, b, c = terms[t, 0], terms[t, 1], terms[t, 2]
        if c < 0:
            angles[t] = math.atan2(v[2 * b + 1] - v[2 * a + 1], v[2 * b] - v[2 * a])
            weights[t] = min(w[a], w[b])
        else:
            ux, uy = v[2 * a] - v[2 * b], v[2 * a + 1] - v[2 * b + 1]
            tx, ty = v[2 * c] - v[2 * b], v[2 * c + 1] - v[2 * b + 1]
            angles[t] = math.atan2(ux * ty - uy * tx, ux * tx + uy * ty)
            weights[t] = min(w[a], min(w[b], w[c]))


@register_jitable
def wrapped_abs(angle):
    """``|angle|`` wrapped to ``[0, pi]`` for an angle difference in ``(-2 pi, 2 pi)``."""
    pi = np.float32(math.pi)
    if angle > pi:
        angle -= np.float32(2.0 * math.pi)
    elif angle < -pi:
        angle += np.float32(2.0 * math.pi)
    return abs(angle)


def parts_cell(q_angles, q_weights, angles, weights, offsets, scale, scores, valid):
    """Part scores of one pose against a query from both sides' terms (:func:`terms_cell`): per
    part the confidence-weighted mean angle difference, mapped with :func:`score_cell` at
    ``scale``, into ``scores [6]`` (float32) and ``valid [6]`` (some term seen in both; the score is
    0 otherwise). Returns the mean of the six scores."""
    mean = np.float32(0.0)
    for part in range(offsets.shape[0] - 1):
        total = np.float32(0.0)
        acc = np.float32(0.0)
        for t in range(offsets[part], offsets[part + 1]):
            tw = q_weights[t] * weights[t]
            total += tw
            acc += tw * wrapped_abs(angles[t] - q_angles[t])
        seen = total > np.float32(0.0)
        s = score_cell(acc / total, scale) if seen else np.float32(0.0)
        scores[part] = s
        valid[part] = seen
        mean += s
    return mean / np.float32(offsets.shape[0] - 1)
