"""The per-pose kernels: the math of one pose, written once as scalar cells, and the CPU loops over
them (numba, parallel over poses, one pass over the data each). numba-CUDA compiles the same cells
for the one-thread-per-pose kernels of kernels._cuda_kernels, as the DP cells are. Every buffer
is the caller's (a CPU loop's ``np.empty`` per chunk of poses; a GPU thread's local array). The
cells and the CPU loops share this file because numba's on-disk cache of a loop is invalidated
by changes to the file that defines it, not to the functions it calls.

Layouts: a pose ``p [17, 3]`` (x, y, confidence); a normalized pose ``v [34]`` (x0, y0, x1, ...)
with weights ``w [17]``; part terms as :data:`TERMS` orders them (``kernels.skeleton``'s limbs
and joints, grouped by part).
"""

import math

import numba
import numpy as np
from numba import prange
from numba.extending import register_jitable

from posescore.kernels.skeleton import FLIP_PERMUTATION, NUM_KEYPOINTS, NUM_PARTS, part_terms


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
    ``100 * exp(-(distance / scale) ** 4)`` (the power is ``kernels._scoring.SCORE_POWER``)."""
    r = np.float32(distance) / np.float32(scale)
    if r > np.float32(16.0):  # exp(-65536) is 0 in float32, and r ** 4 would overflow first
        r = np.float32(16.0)
    r2 = r * r
    return np.float32(100.0) * np.float32(math.exp(-(r2 * r2)))


@register_jitable
def atan2_cell(y, x):
    """``atan2(y, x)`` in float32 for finite ``y``, ``x`` (0 at the origin), within 5e-7 rad of the
    exact angle: octant reduction, then Cephes' ``atanf`` polynomial, every choice an arithmetic
    blend rather than a branch (the signs of random limbs would mispredict; the part scores spend
    their time here)."""
    ax, ay = abs(x), abs(y)
    mx, mn = max(ax, ay), min(ax, ay)
    t = mn / max(mx, np.float32(1e-37))
    big = np.float32(t > np.float32(0.41421356))  # tan(pi / 8): reduce to |u| <= tan(pi / 8)
    u = (t - big) / (np.float32(1.0) + big * t)
    z = u * u
    a = ((((np.float32(8.05374449538e-2) * z - np.float32(1.38776856032e-1)) * z + np.float32(1.99777106478e-1)) * z
          - np.float32(3.33329491539e-1)) * z * u + u) + big * np.float32(math.pi / 4)
    a += np.float32(ay > ax) * (np.float32(math.pi / 2) - np.float32(2.0) * a)
    a += np.float32(x < np.float32(0.0)) * (np.float32(math.pi) - np.float32(2.0) * a)
    return a * (np.float32(1.0) - np.float32(2.0) * np.float32(y < np.float32(0.0)))


@register_jitable
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


@register_jitable
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


@register_jitable
def query_of(query_index, i, n):
    """The query row of pose ``i`` of ``n``: ``query_index[i]``, or 0 for all when the index holds
    one entry for a batch of several (one query)."""
    return query_index[i] if query_index.shape[0] == n else 0


@register_jitable
def pose_score_cell(qv, qw, mqv, mqw, v, w, metric, scale, mirror):
    """``(score, mirrored)`` of one pose: its 0-100 score against the query (0 when no keypoint is
    visible in both), with ``mirror`` the better of the query and its mirror image ``mqv``,
    ``mqw`` (``mirrored``: the mirror image scored strictly higher)."""
    d, shared = pose_distance_cell(qv, qw, v, w, metric)
    s = score_cell(d, scale) if shared else np.float32(0.0)
    if mirror:
        md, mshared = pose_distance_cell(mqv, mqw, v, w, metric)
        ms = score_cell(md, scale) if mshared else np.float32(0.0)
        if ms > s:
            return ms, True
    return s, False


@register_jitable
def terms_cell(v, w, terms, angles, weights):
    """The part terms of one normalized pose: ``angles [terms]`` (radians: each limb's direction,
    each joint's signed angle) and ``weights [terms]`` (the least confidence of its keypoints),
    float32, written. The atan2 arguments are gathered first (into ``angles`` and ``weights``) so
    that the atan2 loop runs over contiguous values, which the compiler vectorizes."""
    for t in range(terms.shape[0]):
        a, b, c = terms[t, 0], terms[t, 1], terms[t, 2]
        if c < 0:
            angles[t] = v[2 * b + 1] - v[2 * a + 1]
            weights[t] = v[2 * b] - v[2 * a]
        else:
            ux, uy = v[2 * a] - v[2 * b], v[2 * a + 1] - v[2 * b + 1]
            tx, ty = v[2 * c] - v[2 * b], v[2 * c + 1] - v[2 * b + 1]
            angles[t] = ux * ty - uy * tx
            weights[t] = ux * tx + uy * ty
    for t in range(terms.shape[0]):
        angles[t] = atan2_cell(angles[t], weights[t])
    for t in range(terms.shape[0]):
        a, b, c = terms[t, 0], terms[t, 1], terms[t, 2]
        weights[t] = min(w[a], w[b]) if c < 0 else min(w[a], min(w[b], w[c]))


@register_jitable
def wrapped_abs(angle):
    """``|angle|`` wrapped to ``[0, pi]`` for an angle difference in ``(-2 pi, 2 pi)`` (branch free)."""
    two_pi = np.float32(2.0 * math.pi)
    pi = np.float32(math.pi)
    return abs(angle - two_pi * np.float32(angle > pi) + two_pi * np.float32(angle < -pi))


@register_jitable
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


@register_jitable
def pose_parts_cell(q_angles, q_tw, mq_angles, mq_tw, angles, tw, offsets, scale, mode, flip, scores, valid,
                    other, other_valid):
    """One pose's part scores from its terms (``angles``, ``tw``) into ``scores [6]``, ``valid [6]``
    against the query's terms, or its mirror image's (``mq_*``): ``mode`` 0 the query, 1 the
    orientation with the better mean part score (``other*``: scratch of 6), 2 the mirror image
    when ``flip``."""
    if mode == 2 and flip:
        parts_cell(mq_angles, mq_tw, angles, tw, offsets, scale, scores, valid)
        return
    mean = parts_cell(q_angles, q_tw, angles, tw, offsets, scale, scores, valid)
    if mode == 1 and parts_cell(mq_angles, mq_tw, angles, tw, offsets, scale, other, other_valid) > mean:
        for p in range(scores.shape[0]):
            scores[p] = other[p]
            valid[p] = other_valid[p]


# -- the CPU loops ---------------------------------------------------------------------------------
_FLIP = np.asarray(FLIP_PERMUTATION, np.int64)
#: Poses per task of a parallel loop that needs scratch buffers (allocated once per task).
CHUNK = 1024


@numba.njit(cache=True, nogil=True, parallel=True)
def normalize_all(poses, torso, min_confidence, min_torso_share, vectors, weights):
    """Fill ``vectors [N, 34]`` and ``weights [N, 17]`` from ``poses [N, 17, 3]``; returns how many
    poses could be normalized."""
    usable = 0
    for i in prange(poses.shape[0]):
        if normalize_cell(poses[i], torso, min_confidence, min_torso_share, vectors[i], weights[i]):
            usable += 1
    return usable


@numba.njit(cache=True, nogil=True, parallel=True)
def pose_scores_all(qv, qw, mqv, mqw, query_index, vectors, weights, metric, scale, mirror, scores, mirrored):
    """``scores [N]`` (float32 0-100) of N poses each against its query (rows of ``qv [Q, 34]``,
    ``qw [Q, 17]`` by :func:`query_of`), and with ``mirror`` the better of the query and its mirror
    image ``mqv``, ``mqw`` (``mirrored [N]``: the mirror image scored strictly higher)."""
    n = vectors.shape[0]
    for i in prange(n):
        q = query_of(query_index, i, n)
        scores[i], mirrored[i] = pose_score_cell(qv[q], qw[q], mqv[q], mqw[q], vectors[i], weights[i], metric, scale,
                                                 mirror)


@numba.njit(cache=True, nogil=True, parallel=True)
def part_scores_all(q_angles, q_tw, mq_angles, mq_tw, query_index, vectors, weights, terms, offsets, scale, mode,
                    pick, scores, valid):
    """Part scores ``[N, 6]`` and their valid mask of N poses each against its query's terms (rows
    of ``q_* [Q, terms]`` by :func:`query_of`). ``mode``:
    0 the query, 1 per pose the orientation with the better mean part score (the mirror image's
    terms ``mq_*``), 2 the orientation ``pick [N]`` says (True: the mirror image)."""
    n = vectors.shape[0]
    for chunk in prange((n + CHUNK - 1) // CHUNK):
        angles = np.empty(terms.shape[0], np.float32)  # scratch, once per chunk of poses
        tw = np.empty(terms.shape[0], np.float32)
        other = np.empty(NUM_PARTS, np.float32)
        other_valid = np.empty(NUM_PARTS, np.bool_)
        for i in range(chunk * CHUNK, min(n, (chunk + 1) * CHUNK)):
            q = query_of(query_index, i, n)
            terms_cell(vectors[i], weights[i], terms, angles, tw)
            pose_parts_cell(q_angles[q], q_tw[q], mq_angles[q], mq_tw[q], angles, tw, offsets, scale, mode,
                            mode == 2 and pick[i], scores[i], valid[i], other, other_valid)


@numba.njit(cache=True, nogil=True, parallel=True)
def terms_all(vectors, weights, terms, angles, tw):
    """The part terms ``angles [N, terms]``, ``tw [N, terms]`` of N normalized poses."""
    for i in prange(vectors.shape[0]):
        terms_cell(vectors[i], weights[i], terms, angles[i], tw[i])


@numba.njit(cache=True, nogil=True, parallel=True)
def aligned_parts_all(angles_a, tw_a, angles_b, tw_b, path, offsets, scale, scores, valid):
    """Part scores ``[L, 6]`` of ``a[i]`` against ``b[j]`` for each step ``(i, j)`` of ``path``, from
    each sequence's terms (computed once per pose)."""
    for n in prange(path.shape[0]):
        parts_cell(angles_a[path[n, 0]], tw_a[path[n, 0]], angles_b[path[n, 1]], tw_b[path[n, 1]], offsets,
                   scale, scores[n], valid[n])


@numba.njit(cache=True, nogil=True, parallel=True)
def mirror_all(vectors, weights, out_vectors, out_weights):
    """Mirror images of N normalized poses: keypoints swapped left/right, x negated."""
    for i in prange(vectors.shape[0]):
        for k in range(NUM_KEYPOINTS):
            src = _FLIP[k]
            out_vectors[i, 2 * k] = -vectors[i, 2 * src]
            out_vectors[i, 2 * k + 1] = vectors[i, 2 * src + 1]
            out_weights[i, k] = weights[i, src]


@numba.njit(cache=True, nogil=True, parallel=True)
def interpolate_all(poses, factor, min_confidence, out):
    """``out [(T-1)*factor+1, 17, 3]``: the frames of ``poses [T, 17, 3]`` at every ``factor``-th
    sample and linear in between; a keypoint missing at either end of an interval is zero inside."""
    T = poses.shape[0]
    for n in prange(out.shape[0]):
        t, r = n // factor, n % factor
        if r == 0:
            for k in range(NUM_KEYPOINTS):
                for d in range(3):
                    out[n, k, d] = poses[t, k, d]
            continue
        frac = np.float32(r) / np.float32(factor)
        for k in range(NUM_KEYPOINTS):
            both = True
            for s in (t, t + 1):
                x, y, c = poses[s, k, 0], poses[s, k, 1], poses[s, k, 2]
                if not (c > min_confidence and np.isfinite(x) and np.isfinite(y) and np.isfinite(c)):
                    both = False
            for d in range(3):
                out[n, k, d] = (poses[t, k, d] * (np.float32(1.0) - frac) + poses[t + 1, k, d] * frac
                                if both else np.float32(0.0))
    return T


@register_jitable
def _placed(p, k, min_confidence):
    """Keypoint ``k`` of pose ``p`` has a finite position with confidence above ``min_confidence``."""
    x, y, c = p[k, 0], p[k, 1], p[k, 2]
    return c > min_confidence and math.isfinite(x) and math.isfinite(y) and math.isfinite(c)


@numba.njit(cache=True, nogil=True)
def consistent_fill(poses, keep, min_confidence, out):
    """``out [T, 17, 3]``: for each kept keypoint seen (above ``min_confidence``) in some frame of
    ``poses [T, 17, 3]``, its positions where it has one (any confidence > 0), linear in time
    between them and held at the ends (``np.interp``'s arithmetic, in float64), and its confidence
    where seen, else its mean seen confidence; zeros elsewhere. Two passes in frame order (a gap
    is filled when the position after it is reached), so memory is read as it lies."""
    T = poses.shape[0]
    seen = np.zeros(NUM_KEYPOINTS, np.int64)
    total = np.zeros(NUM_KEYPOINTS, np.float32)
    for t in range(T):
        for k in range(NUM_KEYPOINTS):
            if keep[k] and _placed(poses[t], k, min_confidence):
                seen[k] += 1
                total[k] += poses[t, k, 2]
    last = np.full(NUM_KEYPOINTS, -1, np.int64)
    for t in range(T):
        for k in range(NUM_KEYPOINTS):
            for d in range(3):
                out[t, k, d] = np.float32(0.0)
            if not keep[k] or seen[k] == 0:
                continue
            out[t, k, 2] = poses[t, k, 2] if _placed(poses[t], k, min_confidence) else total[k] / np.float32(seen[k])
            if not _placed(poses[t], k, np.float32(0.0)):
                continue
            lo = last[k]
            for d in range(2):
                out[t, k, d] = poses[t, k, d]
                right = np.float64(poses[t, k, d])
                for g in range(lo + 1, t):  # the gap before this position
                    if lo < 0:
                        out[g, k, d] = right
                    else:
                        left = np.float64(poses[lo, k, d])
                        out[g, k, d] = (right - left) / np.float64(t - lo) * np.float64(g - lo) + left
            last[k] = t
    for k in range(NUM_KEYPOINTS):
        if last[k] >= 0:
            for g in range(last[k] + 1, T):  # held after the last position
                for d in range(2):
                    out[g, k, d] = poses[last[k], k, d]


@numba.njit(cache=True, nogil=True)
def seen_counts(poses, min_confidence):
    """``[17]`` int64: in how many frames of ``poses [T, 17, 3]`` each keypoint is seen."""
    counts = np.zeros(NUM_KEYPOINTS, np.int64)
    for t in range(poses.shape[0]):
        for k in range(NUM_KEYPOINTS):
            if _placed(poses[t], k, min_confidence):
                counts[k] += 1
    return counts
