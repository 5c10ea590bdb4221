"""The plain NumPy versions of the per-pose kernels: the obvious vectorized code, what kernels/
computed before its fused kernels (same definitions, no input checks); the interpolation and the
stable keypoint set are the kernels' own array code, which their GPU path still runs. The benchmarks run them
as the peer of the fused kernels, and the tests compare the two on random and real poses.

Arrays are NumPy float32; shapes as the kernels' (poses ``[N, 17, 3]``, vectors ``[N, 34]``,
weights ``[N, 17]``).
"""

from __future__ import annotations

import numpy as np

from posescore.kernels._normalize import (DEFAULT_MIN_CONFIDENCE, MIN_TORSO_SHARE, consistent_keypoints_arrays,
                                          interpolate_frames_arrays)
from posescore.kernels import SCORE_SCALES
from posescore.kernels.skeleton import FLIP_PERMUTATION, KP, NUM_KEYPOINTS, NUM_PARTS, part_terms


def _scores(distance, kind):
    r = distance.astype(np.float32) / np.float32(SCORE_SCALES[kind])
    return (100.0 * np.exp(-(r ** 4))).astype(np.float32)


def visible(poses, min_confidence=DEFAULT_MIN_CONFIDENCE):
    return (poses[..., 2] > min_confidence) & np.isfinite(poses).all(axis=-1)


def normalize(poses, method="bbox", min_confidence=DEFAULT_MIN_CONFIDENCE):
    xy, conf = poses[..., :2], poses[..., 2]
    seen = visible(poses, min_confidence)
    xy = np.where(seen[..., None], xy, 0.0)
    big = np.float32(1.0e30)
    lo = np.where(seen[..., None], xy, big).min(axis=-2)
    hi = np.where(seen[..., None], xy, -big).max(axis=-2)
    if method == "bbox":
        usable = seen.sum(axis=-1) >= 2
        centre = np.where(usable[..., None], (lo + hi) * 0.5, 0.0)
        scale = np.where(usable, (hi - lo).max(axis=-1), 0.0)
    else:
        def mid(a, b):
            return (xy[..., KP[a], :] + xy[..., KP[b], :]) * 0.5
        needed = [KP["left_hip"], KP["right_hip"], KP["left_shoulder"], KP["right_shoulder"]]
        usable = seen[..., needed].all(axis=-1)
        centre = mid("left_hip", "right_hip")
        scale = np.sqrt(((mid("left_shoulder", "right_shoulder") - centre) ** 2).sum(axis=-1))
        usable &= scale > MIN_TORSO_SHARE * (hi - lo).max(axis=-1)
    usable &= scale > 0
    rel = (xy - centre[..., None, :]) / np.where(usable, scale, 1.0)[..., None, None]
    rel = np.where(seen[..., None], rel, 0.0)
    flat = rel.reshape(rel.shape[:-2] + (2 * NUM_KEYPOINTS,))
    norm = np.sqrt((flat * flat).sum(axis=-1))
    usable &= norm > 0
    vectors = np.where(usable[..., None], flat / np.where(usable, norm, 1.0)[..., None], 0.0)
    weights = np.where(usable[..., None] & seen, conf, 0.0)
    return vectors.astype(np.float32), weights.astype(np.float32)


def mirror(vectors, weights):
    perm = np.asarray(FLIP_PERMUTATION)
    xy = vectors.reshape(vectors.shape[:-1] + (NUM_KEYPOINTS, 2))[..., perm, :] * np.float32([-1.0, 1.0])
    return xy.reshape(vectors.shape).astype(np.float32), weights[..., perm]


def _distances(qv, qw, v, w, metric):
    q_xy, c_xy = qv.reshape(NUM_KEYPOINTS, 2), v.reshape(-1, NUM_KEYPOINTS, 2)
    if metric == "cosine":
        qmask, cmask = (qw > 0).astype(np.float64), (w > 0).astype(np.float64)
        q_xy = q_xy.astype(np.float64) * qmask[:, None]
        c_xy = c_xy.astype(np.float64) * cmask[..., None]
        dot = c_xy.reshape(-1, 2 * NUM_KEYPOINTS) @ q_xy.reshape(-1)
        qq = cmask @ (q_xy * q_xy).sum(axis=-1)
        cc = ((c_xy * c_xy).sum(axis=-1) * qmask).sum(axis=-1)
        denom = np.sqrt(qq * cc)
        shared = denom > 0
        cos = np.clip(dot / np.where(shared, denom, 1.0), -1.0, 1.0)
        return np.sqrt(2.0 * (1.0 - cos)), shared
    conf = w * qw
    diff = c_xy - q_xy
    per_kp = np.abs(diff).sum(axis=-1) if metric == "weighted_l1" else np.sqrt((diff * diff).sum(axis=-1))
    total = conf.sum(axis=-1)
    shared = total > 0
    return (conf * per_kp).sum(axis=-1) / np.where(shared, total, 1.0), shared


def pose_scores(qv, qw, v, w, metric="cosine", mirror_too=False):
    """``(scores [N], mirrored [N])``."""
    dist, shared = _distances(qv, qw, v, w, metric)
    scores = np.where(shared, _scores(dist, metric), 0.0)
    mirrored = np.zeros(scores.shape, dtype=bool)
    if mirror_too:
        mdist, mshared = _distances(*mirror(qv, qw), v, w, metric)
        mscores = np.where(mshared, _scores(mdist, metric), 0.0)
        mirrored = mscores > scores
        scores = np.maximum(scores, mscores)
    return scores.astype(np.float32), mirrored


_LIMBS, _JOINTS, _LIMB_PART, _JOINT_PART = part_terms()
_ASSIGN = np.eye(NUM_PARTS, dtype=np.float32)[np.concatenate([_LIMB_PART, _JOINT_PART])]


def _part_distances(qv, qw, v, w):
    q, c = qv.reshape(qv.shape[:-1] + (NUM_KEYPOINTS, 2)), v.reshape(-1, NUM_KEYPOINTS, 2)

    def directions(p):
        d = p[..., _LIMBS[:, 1], :] - p[..., _LIMBS[:, 0], :]
        return np.arctan2(d[..., 1], d[..., 0])

    def joint_angles(p):
        u = p[..., _JOINTS[:, 0], :] - p[..., _JOINTS[:, 1], :]
        t = p[..., _JOINTS[:, 2], :] - p[..., _JOINTS[:, 1], :]
        return np.arctan2(u[..., 0] * t[..., 1] - u[..., 1] * t[..., 0], (u * t).sum(axis=-1))

    def wrapped(a):
        return np.abs(np.arctan2(np.sin(a), np.cos(a)))

    diffs = np.concatenate([wrapped(directions(c) - directions(q)), wrapped(joint_angles(c) - joint_angles(q))],
                           axis=-1)
    tw = np.concatenate([qw[..., _LIMBS].min(axis=-1) * w[:, _LIMBS].min(axis=-1),
                         qw[..., _JOINTS].min(axis=-1) * w[:, _JOINTS].min(axis=-1)], axis=-1)
    total = tw @ _ASSIGN
    return (tw * diffs) @ _ASSIGN / np.where(total > 0, total, 1.0), total > 0


def part_scores(qv, qw, v, w, mirror_too=False):
    """``(scores [N, 6], valid [N, 6])``; ``mirror_too``: per pose the better mean part score."""
    dist, valid = _part_distances(qv, qw, v, w)
    scores = np.where(valid, _scores(dist, "angle"), 0.0)
    if mirror_too:
        mdist, mvalid = _part_distances(*mirror(qv, qw), v, w)
        mscores = np.where(mvalid, _scores(mdist, "angle"), 0.0)
        pick = mscores.mean(axis=-1) > scores.mean(axis=-1)
        scores = np.where(pick[:, None], mscores, scores)
        valid = np.where(pick[:, None], mvalid, valid)
    return scores.astype(np.float32), valid


def aligned_part_scores(va, wa, vb, wb, path):
    """Per-step part scores ``[L, 6]`` and their valid mask."""
    i, j = path[:, 0], path[:, 1]
    dist, valid = _part_distances(va[i], wa[i], vb[j], wb[j])
    return np.where(valid, _scores(dist, "angle"), 0.0).astype(np.float32), valid


def interpolate_frames(poses, factor, min_confidence=DEFAULT_MIN_CONFIDENCE):
    return interpolate_frames_arrays(np, poses, factor, min_confidence)


def consistent_keypoints(a, b, min_share=0.5, min_confidence=DEFAULT_MIN_CONFIDENCE):
    return consistent_keypoints_arrays(np, a, b, min_share, min_confidence)
