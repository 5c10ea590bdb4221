"""Pose normalization: pixel keypoints -> translation- and scale-invariant unit vectors."""

from __future__ import annotations

import numpy as np

from posescore.kernels import _per_pose
from posescore.kernels._backend import array_module, check_array, check_int, check_number
from posescore.kernels.skeleton import FLIP_PERMUTATION, NUM_KEYPOINTS

#: Keypoints whose confidence is at or below this count as missing.
DEFAULT_MIN_CONFIDENCE = 0.3

NORMALIZE_METHODS = ("bbox", "torso")

#: A torso shorter than this share of the pose's extent (hips on the shoulders, to rounding) is
#: no unit of length: the torso method leaves such a pose out.
MIN_TORSO_SHARE = 1e-3


def visible_keypoints(poses, min_confidence: float = DEFAULT_MIN_CONFIDENCE):
    """``[..., 17]`` bool of ``poses [..., 17, 3]``: confidence above ``min_confidence`` and x, y and
    confidence finite. The one rule for a missing keypoint, on the array's backend."""
    xp = array_module(poses)
    min_confidence = check_number(min_confidence, "min_confidence")
    return (poses[..., 2] > min_confidence) & xp.isfinite(poses).all(axis=-1)


def normalize(poses, method: str = "bbox", min_confidence: float = DEFAULT_MIN_CONFIDENCE):
    """Normalize poses ``[..., 17, 3]`` (x, y, confidence in pixels) to unit vectors.

    Returns ``(vectors [..., 34] float32, weights [..., 17] float32)`` on the input's backend.

    - ``"bbox"`` (Move Mirror done right): the tight box of the visible keypoints is widened to a
      square around its centre; coordinates are taken relative to that centre in units of the
      square's side, then the 34-vector is L2-normalized.
    - ``"torso"``: coordinates relative to the hip midpoint in units of the torso length (shoulder
      midpoint to hip midpoint), then L2-normalized. Needs both hips and both shoulders.

    Centring (rather than the corner-relative coordinates of the seeds) keeps cosine similarity
    discriminative: with all-positive coordinates any two people score ~0.9. Both methods are
    invariant to translation and (positive) scale; the final L2 step makes every method's vectors
    comparable under one set of metrics and score scales.

    A keypoint is missing when its confidence is <= ``min_confidence`` or any of its values is
    NaN/inf: it gets weight 0, vector entries 0, and is left out of the box and of the norm.
    A pose that cannot be normalized (fewer than two distinct visible keypoints, or the torso
    method without hips and shoulders, or with a torso under MIN_TORSO_SHARE of the pose's
    extent) gets an all-zero vector and all-zero weights, so a batch with
    empty frames keeps its time axis; if *no* pose can be normalized, ValueError is raised.

    One pass over the poses (``kernels._pose_cells.normalize_cell``: a parallel numba loop on
    the CPU, one CUDA thread per pose on the GPU).
    """
    if method not in NORMALIZE_METHODS:
        raise ValueError(f"method: expected one of {NORMALIZE_METHODS}, got {method!r}")
    xp = array_module(poses)
    poses = check_array(poses, "poses", trailing=(NUM_KEYPOINTS, 3), allow_nan=True, xp=xp)
    min_confidence = check_number(min_confidence, "min_confidence")
    lead = poses.shape[:-2]
    vectors, weights, usable = _per_pose.normalize_poses(poses.reshape(-1, NUM_KEYPOINTS, 3), method == "torso",
                                                         min_confidence, MIN_TORSO_SHARE)
    if usable == 0:
        what = ("two distinct visible keypoints" if method == "bbox"
                else "both hips and both shoulders visible")
        raise ValueError(f"poses: no pose can be normalized with method {method!r} "
                         f"(needs {what} with confidence > {min_confidence})")
    return vectors.reshape(lead + (2 * NUM_KEYPOINTS,)), weights.reshape(lead + (NUM_KEYPOINTS,))


#: What relabelling one frame's sides costs in :func:`consistent_sides`, in body sizes per keypoint
#: (a flicker jumps by ~0.1-0.3 each way, unless the pose is nearly symmetric).
SIDE_SWAP_COST = 0.02
#: What a labelling that contradicts a visible face costs (more than any jump: the face decides).
FACE_SIDE_COST = 1.0
#: The face is visible: nose and both eyes over this confidence.
FACE_MIN_CONFIDENCE = 0.3


def _chirality(xp, pts, vis):
    """Per frame of ``pts [T, 17, 2]`` (visible where ``vis [T, 17]``): +1 when the labelled sides
    say the body faces the camera, -1 away, 0 unknown.

    Facing the camera, the body's left is on the image's right of its up direction (hips to
    shoulders), whatever the rotation: the sign of cross(up, left - right) over shoulders and hips."""
    from posescore.kernels.skeleton import KP

    ls, rs, lh, rh = (KP[n] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip"))
    torso = vis[:, ls] & vis[:, rs] & vis[:, lh] & vis[:, rh]
    up = (pts[:, ls] + pts[:, rs] - pts[:, lh] - pts[:, rh]) / 2
    across = pts[:, ls] - pts[:, rs] + pts[:, lh] - pts[:, rh]
    cross = up[:, 0] * across[:, 1] - up[:, 1] * across[:, 0]
    # Seen from the front, not in profile: the sides' width across the up direction (shoulders
    # plus hips) is at least half the torso's length.
    clear = torso & (xp.abs(cross) > 0.5 * (up ** 2).sum(axis=1))
    return xp.where(clear, xp.sign(cross), 0.0)


def consistent_sides(poses, swap_cost: float = SIDE_SWAP_COST, min_confidence: float = DEFAULT_MIN_CONFIDENCE):
    """Undo a pose model's left/right flicker in one performer's sequence ``poses [T, 17, 3]``.

    A person facing the camera is now and then labelled as if facing away for a few frames (every
    left keypoint called right and back): the normalized vector then jumps as far as a real
    movement, and two encodings of one video flicker on different frames. Each frame keeps the
    model's labels or has its sides swapped (``skeleton.FLIP_PERMUTATION``; positions unchanged),
    choosing for the whole sequence (Viterbi over the two labellings) the least cost of: movement
    between consecutive frames (mean distance of the keypoints visible in both, in body sizes: the
    larger side of the visible keypoints' box), ``swap_cost`` per swapped frame, and
    FACE_SIDE_COST per frame whose labels contradict its visible face (nose and both eyes seen:
    the body faces the camera, so its left is on the image's right of its up direction). A real
    turn moves the keypoints continuously and keeps its labels; a flicker is undone. Returns the
    float32 sequence on the input's backend (a copy).
    """
    xp = array_module(poses)
    poses = check_array(poses, "poses", trailing=(NUM_KEYPOINTS, 3), ndim=(3, 3), allow_nan=True, xp=xp)
    swap_cost = check_number(swap_cost, "swap_cost", minimum=0.0)
    out = poses.astype(xp.float32, copy=True)
    if poses.shape[0] == 0:
        return out
    flip = xp.asarray(FLIP_PERMUTATION)
    xy, seen, size = _side_geometry(xp, poses, min_confidence)
    same, swapped = _side_moves(xp, xy[:-1], seen[:-1], size[:-1], xy[1:], seen[1:], size[1:])
    unary = _side_unary(xp, poses, xy, seen, swap_cost)
    same, swapped, unary = (np.asarray(a.get() if xp is not np else a, np.float64) for a in (same, swapped, unary))
    T = poses.shape[0]
    # Python floats: two states per frame, where NumPy's per-call cost would dominate.
    same, swapped, unary = same.tolist(), swapped.tolist(), unary.tolist()
    choice = [(0, 1)] * T  # the best previous labelling of each (frame, labelling)
    kept, flipped = unary[0]
    for t in range(1, T):
        keep0, cross0 = kept + same[t - 1], flipped + swapped[t - 1]  # -> this frame kept
        keep1, cross1 = flipped + same[t - 1], kept + swapped[t - 1]  # -> this frame swapped
        choice[t] = (0 if keep0 <= cross0 else 1, 1 if keep1 <= cross1 else 0)
        kept, flipped = min(keep0, cross0) + unary[t][0], min(keep1, cross1) + unary[t][1]
    labels = np.zeros(T, bool)
    labels[-1] = flipped < kept
    for t in range(T - 1, 0, -1):
        labels[t - 1] = bool(choice[t][int(labels[t])])
    if labels.any():
        rows = xp.asarray(np.flatnonzero(labels))
        out[rows] = out[rows][:, flip]
    return out


def _side_geometry(xp, poses, min_confidence):
    """(xy float64 [..., 17, 2] with unseen keypoints at 0, seen [..., 17], body size [...]: the
    larger side of the seen keypoints' box, NaN with fewer than 2 seen)."""
    seen = visible_keypoints(poses, min_confidence)
    xy = xp.where(seen[..., None], poses[..., :2], 0.0).astype(xp.float64)
    lo = xp.where(seen[..., None], xy, xp.inf).min(axis=-2)
    hi = xp.where(seen[..., None], xy, -xp.inf).max(axis=-2)
    return xy, seen, xp.where(seen.sum(axis=-1) >= 2, (hi - lo).max(axis=-1), xp.nan)


def _side_moves(xp, prev_xy, prev_seen, prev_size, xy, seen, size):
    """Movement from each previous frame to the next, labels kept and labels swapped: the mean
    distance of the keypoints seen in both, in body sizes ([N] each; 0 where not measurable)."""
    flip = xp.asarray(FLIP_PERMUTATION)

    def moved(cur, cur_seen):
        both = prev_seen & cur_seen
        gap = xp.sqrt(((prev_xy - cur) ** 2).sum(axis=-1))
        return xp.where(both, gap, 0.0).sum(axis=-1), both.sum(axis=-1)

    scale = (size + prev_size) / 2
    same, n_same = moved(xy, seen)
    swapped, n_swapped = moved(xy[..., flip, :], seen[..., flip])
    usable = xp.isfinite(scale) & (scale > 0) & (n_same > 0) & (n_swapped > 0)
    safe = xp.where(usable, scale, 1.0)
    return (xp.where(usable, same / xp.maximum(n_same, 1) / safe, 0.0),
            xp.where(usable, swapped / xp.maximum(n_swapped, 1) / safe, 0.0))


def _side_unary(xp, poses, xy, seen, swap_cost):
    """Per frame the cost of each labelling ``[N, 2]`` (kept, swapped): ``swap_cost`` for a swap,
    FACE_SIDE_COST for labels that contradict the visible face."""
    from posescore.kernels.skeleton import KP

    face = (poses[..., KP["nose"], 2] > FACE_MIN_CONFIDENCE) & (poses[..., KP["left_eye"], 2] > FACE_MIN_CONFIDENCE) \
        & (poses[..., KP["right_eye"], 2] > FACE_MIN_CONFIDENCE)
    facing = xp.where(face, _chirality(xp, xy, seen), 0.0)
    return xp.stack([FACE_SIDE_COST * (facing < 0), swap_cost + FACE_SIDE_COST * (facing > 0)], axis=-1)


def consistent_sides_step(previous, current, cost, swap_cost: float = SIDE_SWAP_COST,
                          min_confidence: float = DEFAULT_MIN_CONFIDENCE):
    """:func:`consistent_sides` for streams, a frame at a time: for each of S streams, its last
    pose ``previous [S, 17, 3]`` (as the model labelled it; NaN rows: none yet), its new one
    ``current [S, 17, 3]`` and the forward Viterbi costs of the last pose's two labellings ``cost
    [S, 2]`` float64 (kept, swapped; zeros at a stream's start). Returns ``(swap [S] bool, cost
    [S, 2])``: whether the new pose's sides are to be swapped, the labelling a whole-sequence
    :func:`consistent_sides` of the stream so far gives its last frame, and the new costs. NumPy."""
    previous = np.asarray(previous, np.float32)
    current = check_array(current, "current", trailing=(NUM_KEYPOINTS, 3), ndim=(3, 3), allow_nan=True)
    cost = np.asarray(cost, np.float64)
    xy, seen, size = _side_geometry(np, current, min_confidence)
    prev_xy, prev_seen, prev_size = _side_geometry(np, previous, min_confidence)
    same, swapped = _side_moves(np, prev_xy, prev_seen, prev_size, xy, seen, size)
    unary = _side_unary(np, current, xy, seen, check_number(swap_cost, "swap_cost", minimum=0.0))
    start = ~np.isfinite(previous).all(axis=(1, 2))
    keep = cost + same[:, None]
    cross = cost[:, ::-1] + swapped[:, None]
    cost = np.where(start[:, None], unary, np.minimum(keep, cross) + unary)
    cost -= cost.min(axis=1, keepdims=True)  # only the difference matters; it stays bounded
    return cost[:, 1] < cost[:, 0], cost


def consistent_keypoints(a, b, min_share: float = 0.5, min_confidence: float = DEFAULT_MIN_CONFIDENCE):
    """Give two pose sequences ``a [T, 17, 3]`` and ``b [U, 17, 3]`` one stable set of keypoints.

    A keypoint whose confidence hovers around the threshold flickers in and out of a sequence, and
    each flicker changes the normalized vector as much as a real movement would. Keypoints visible
    (confidence > ``min_confidence``) in at least ``min_share`` of the frames of *both* sequences are
    kept in every frame; all other keypoints are dropped (confidence 0) in both.

    Where a kept keypoint is not visible, the detector's own low-confidence position is used (any
    confidence > 0: pose models place occluded joints plausibly, and the same frame gets the same
    guess however the video was sampled); only frames with no position at all (confidence 0 or
    non-finite, e.g. OpenPose's missing joints) are filled by linear interpolation in time, held at
    the ends. Filled frames get the keypoint's mean visible confidence. Returns the two new float32
    sequences on the input's backend. Frames with no keypoint at all stay as they are.
    """
    xp = array_module(a, b)
    a = check_array(a, "a", trailing=(NUM_KEYPOINTS, 3), ndim=(3, 3), allow_nan=True, xp=xp)
    b = check_array(b, "b", trailing=(NUM_KEYPOINTS, 3), ndim=(3, 3), allow_nan=True, xp=xp)
    min_share = check_number(min_share, "min_share", minimum=0.0, maximum=1.0)

    if xp is np:  # a few passes in frame order (kernels._pose_cells); CuPy's array ops on the GPU
        from posescore.kernels import _pose_cells

        threshold = np.float32(check_number(min_confidence, "min_confidence"))
        shares = [_pose_cells.seen_counts(p, threshold) / np.float64(p.shape[0]) for p in (a, b)]
        keep = (shares[0] >= min_share) & (shares[1] >= min_share)
        outs = (np.empty_like(a), np.empty_like(b))
        for poses, out in zip((a, b), outs):
            _pose_cells.consistent_fill(poses, keep, threshold, out)
        return outs
    return consistent_keypoints_arrays(xp, a, b, min_share, min_confidence)


def consistent_keypoints_arrays(xp, a, b, min_share, min_confidence):
    """:func:`consistent_keypoints` in array code on ``xp`` (the GPU path, and the plain NumPy
    version the benchmarks and tests hold the CPU loops against), on checked inputs."""
    vis_a, vis_b = visible_keypoints(a, min_confidence), visible_keypoints(b, min_confidence)
    keep = (vis_a.mean(axis=0) >= min_share) & (vis_b.mean(axis=0) >= min_share)

    def fill(poses, vis):
        out = xp.zeros_like(poses)
        t = xp.arange(poses.shape[0], dtype=xp.float32)
        has_position = visible_keypoints(poses, 0.0)
        for k in range(NUM_KEYPOINTS):
            seen, placed = vis[:, k], has_position[:, k]
            if not bool(keep[k]) or not bool(seen.any()):
                continue
            for d in range(2):
                out[:, k, d] = xp.interp(t, t[placed], poses[placed, k, d])
            out[:, k, 2] = xp.where(seen, poses[:, k, 2], poses[seen, k, 2].mean())
        return out

    return fill(a, vis_a), fill(b, vis_b)


def interpolate_frames(poses, factor: int, min_confidence: float = DEFAULT_MIN_CONFIDENCE):
    """Pose sequence ``[T, 17, 3]`` at ``factor`` times the time resolution: ``[(T-1)*factor+1, 17, 3]``.

    Frame ``t`` of the input is frame ``t*factor`` of the output, unchanged; between two frames,
    positions and confidences are interpolated linearly. A keypoint missing (confidence <=
    ``min_confidence``, or non-finite) at either end of an interval is missing (all zeros) inside
    it. DTW between a coarsely and a finely sampled performance of one movement otherwise pays for
    the poses the coarse one never shows. float32 on the input's backend.
    """
    xp = array_module(poses)
    poses = check_array(poses, "poses", trailing=(NUM_KEYPOINTS, 3), ndim=(3, 3), allow_nan=True, xp=xp)
    factor = check_int(factor, "factor")
    if factor == 1 or poses.shape[0] < 2:
        return poses.astype(xp.float32, copy=True)
    T = poses.shape[0]
    if xp is np:  # one parallel pass (kernels._pose_cells); CuPy's array ops on the GPU
        out = np.empty(((T - 1) * factor + 1, NUM_KEYPOINTS, 3), dtype=np.float32)
        from posescore.kernels import _pose_cells

        _pose_cells.interpolate_all(poses, factor, np.float32(check_number(min_confidence, "min_confidence")), out)
        return out
    return interpolate_frames_arrays(xp, poses, factor, min_confidence)


def interpolate_frames_arrays(xp, poses, factor, min_confidence):
    """:func:`interpolate_frames` in array code on ``xp`` (the GPU path, and the plain NumPy
    version of the benchmarks and tests), on checked inputs with ``factor > 1``, ``T >= 2``."""
    T = poses.shape[0]
    present = visible_keypoints(poses, min_confidence)
    clean = xp.where(present[..., None], poses, 0.0)
    start, end = clean[:-1], clean[1:]
    both = present[:-1] & present[1:]
    frac = (xp.arange(1, factor, dtype=xp.float32) / xp.float32(factor))[None, :, None, None]
    between = start[:, None] * (1 - frac) + end[:, None] * frac      # [T-1, factor-1, 17, 3]
    between = xp.where(both[:, None, :, None], between, 0.0)
    out = xp.empty(((T - 1) * factor + 1, NUM_KEYPOINTS, 3), dtype=xp.float32)
    out[::factor] = poses
    out[:-1].reshape(T - 1, factor, NUM_KEYPOINTS, 3)[:, 1:] = between
    return out
