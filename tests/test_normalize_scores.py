"""normalize, pose_scores, part_scores, score_from_distance: golden values, properties, bad input."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from conftest import asnumpy, random_poses
from posescore.kernels import (SCORE_SCALES, aligned_part_scores, consistent_keypoints, consistent_sides,
                               interpolate_frames, mirror_vectors, normalize, part_scores, pose_scores,
                               score_from_distance)
from posescore.kernels.skeleton import FLIP_PERMUTATION, KP, PART_NAMES
from posescore.kernels import distance_for_score

METRICS = ["cosine", "weighted_l1", "weighted_l2"]


def full_pose(rng):
    return random_poses(rng, 1)[0]


# ---------- golden values, computed by hand ----------

def test_bbox_golden_two_keypoints():
    pose = np.zeros((17, 3), np.float32)
    pose[0] = (0, 0, 1)
    pose[1] = (10, 20, 1)
    vec, w = normalize(pose)
    # box (0,0)-(10,20) -> square side 20 around (5,10): (-0.25,-0.5), (0.25,0.5); norm sqrt(0.625)
    expected = np.zeros(34, np.float32)
    expected[:4] = np.array([-0.25, -0.5, 0.25, 0.5]) / math.sqrt(0.625)
    np.testing.assert_allclose(vec, expected, atol=1e-6)
    np.testing.assert_array_equal(w, np.r_[1, 1, np.zeros(15)].astype(np.float32))


def test_torso_golden():
    pose = np.zeros((17, 3), np.float32)
    pose[KP["left_hip"]] = (90, 100, 1)
    pose[KP["right_hip"]] = (110, 100, 1)
    pose[KP["left_shoulder"]] = (90, 60, 1)
    pose[KP["right_shoulder"]] = (110, 60, 1)
    vec, w = normalize(pose, method="torso")
    # centre (100,100), torso length 40: hips (-0.25,0), (0.25,0); shoulders (-0.25,-1), (0.25,-1)
    rel = np.zeros((17, 2))
    rel[KP["left_hip"]] = (-0.25, 0)
    rel[KP["right_hip"]] = (0.25, 0)
    rel[KP["left_shoulder"]] = (-0.25, -1)
    rel[KP["right_shoulder"]] = (0.25, -1)
    np.testing.assert_allclose(vec, rel.ravel() / np.linalg.norm(rel), atol=1e-6)


def test_torso_of_rounding_size_is_left_out():
    """Shoulders 6e-8 px from the hips of a 5 px pose (found by hypothesis: moving the pose by
    2 px rounds the torso to 0): no unit of length, so the pose is left out, wherever it is."""
    pose = np.full((17, 3), 1.1920929e-07, np.float32)
    pose[0, 0], pose[KP["right_shoulder"], 0], pose[:, 2] = 5.0, 0.0, 0.9
    upright = pose.copy()
    upright[KP["left_shoulder"], 1] = upright[KP["right_shoulder"], 1] = -0.01  # 1/500 of 5 px
    for dx in (0.0, 2.0):
        moved = pose + np.float32([dx, 0, 0])
        vec, w = normalize(np.stack([moved, upright + np.float32([dx, 0, 0])]), method="torso")
        assert not w[0].any() and not vec[0].any() and w[1].all() and np.linalg.norm(vec[1]) == pytest.approx(1)


def test_score_mapping_golden():
    # 100 exp(-(d / scale)^4): 50 at scale * ln(2)^(1/4), 100/e at the scale (0.22 for cosine).
    assert float(score_from_distance(0.0, "cosine")) == 100.0
    assert float(score_from_distance(0.22 * math.log(2) ** 0.25, "cosine")) == pytest.approx(50.0, abs=1e-4)
    assert float(score_from_distance(0.22, "cosine")) == pytest.approx(100 / math.e, abs=1e-4)
    assert float(score_from_distance(5.0, "cosine")) == 0.0
    assert float(score_from_distance(math.radians(26.2), "angle")) == pytest.approx(100 / math.e, abs=1e-4)
    assert float(score_from_distance(math.radians(18), "angle")) == pytest.approx(80.0, abs=0.1)
    for kind in ("cosine", "angle", "weighted_l1"):
        for score in (99.0, 95.0, 70.0, 30.0, 1.0):
            d = distance_for_score(score, kind)
            assert float(score_from_distance(d, kind)) == pytest.approx(score, abs=1e-3)
            assert float(score_from_distance(d * 1.01, kind)) < score
    assert distance_for_score(0.0, "cosine") == math.inf


def _single_keypoint_vectors(xy, w):
    v = np.zeros(34, np.float32)
    v[:2] = xy
    weights = np.zeros(17, np.float32)
    weights[0] = w
    return v, weights


def test_weighted_l1_and_l2_golden():
    qv, qw = _single_keypoint_vectors((1.0, 0.0), 1.0)
    cv, cw = _single_keypoint_vectors((0.9, 0.05), 0.5)
    l1 = pose_scores(qv, qw, cv[None], cw[None], metric="weighted_l1")
    l2 = pose_scores(qv, qw, cv[None], cw[None], metric="weighted_l2")
    # D_L1 = 0.5 * (0.1 + 0.05) / 0.5 = 0.15; D_L2 = sqrt(0.01 + 0.0025) = 0.111803
    s_l2 = 0.22 / math.sqrt(17)
    assert l1[0] == pytest.approx(100 * math.exp(-(0.15 / (4 / math.pi * s_l2)) ** 4), abs=1e-3)
    assert l2[0] == pytest.approx(100 * math.exp(-(0.1118034 / s_l2) ** 4), abs=1e-3)


def test_cosine_golden():
    qv, qw = _single_keypoint_vectors((1.0, 0.0), 1.0)
    cv, cw = _single_keypoint_vectors((0.98, math.sqrt(1 - 0.98 ** 2)), 1.0)
    # cos = 0.98 -> d = sqrt(2 * 0.02) = 0.2
    s = pose_scores(qv, qw, cv[None], cw[None], metric="cosine")
    assert s[0] == pytest.approx(100 * math.exp(-(0.2 / 0.22) ** 4), abs=1e-3)


def test_part_scores_golden_left_arm():
    q = np.zeros((17, 2), np.float32)
    c = np.zeros((17, 2), np.float32)
    q[KP["left_shoulder"]], q[KP["left_elbow"]], q[KP["left_wrist"]] = (0, 0), (1, 0), (2, 0)
    c[KP["left_shoulder"]], c[KP["left_elbow"]], c[KP["left_wrist"]] = (0, 0), (1, 0), (1, 1)
    w = np.zeros(17, np.float32)
    w[[KP["left_shoulder"], KP["left_elbow"], KP["left_wrist"]]] = 1.0
    scores, valid = part_scores(q.ravel(), w, c.ravel()[None], w[None], return_valid=True)
    # upper arm 0 off, forearm 90 deg off, elbow angle 90 deg off: mean 60 degrees
    left_arm = PART_NAMES.index("left_arm")
    assert scores[0, left_arm] == pytest.approx(100 * math.exp(-(60 / 26.2) ** 4), abs=1e-3)
    assert valid[0].tolist() == [p == left_arm for p in range(6)]
    assert (scores[0, ~valid[0]] == 0).all()


# ---------- properties ----------

pose_arrays = arrays(np.float32, (17, 3), elements=st.floats(0, 1000, width=32))


def _with_confidences(pose, mask):
    pose = pose.copy()
    pose[:, 2] = np.where(mask, 0.9, 0.0)
    return pose


@settings(max_examples=60, deadline=None)
@given(pose=pose_arrays, dx=st.floats(-500, 500), dy=st.floats(-500, 500),
       scale=st.floats(0.2, 5.0), method=st.sampled_from(["bbox", "torso"]))
def test_normalize_translation_and_scale_invariant(pose, dx, dy, scale, method):
    # A pose spans pixels. Keypoints closer than float32 resolves at the moved coordinates (1e-38 px
    # next to 0, shifted by 500) become one point, and a sub-pixel pose is all rounding error.
    assume(np.ptp(pose[:, :2], axis=0).max() >= 5.0)
    if method == "torso":  # clear of MIN_TORSO_SHARE, where rounding may decide (tested above)
        torso = (pose[[KP["left_shoulder"], KP["right_shoulder"]], :2].mean(0)
                 - pose[[KP["left_hip"], KP["right_hip"]], :2].mean(0))
        assume(np.hypot(*torso) >= 0.01 * np.ptp(pose[:, :2], axis=0).max())
    pose = _with_confidences(pose, np.ones(17, bool))
    moved = pose.copy()
    moved[:, :2] = pose[:, :2] * scale + np.array([dx, dy], np.float32)
    try:
        v1, w1 = normalize(pose, method=method)
    except ValueError:
        return  # degenerate pose (all keypoints at one point): nothing to compare
    v2, w2 = normalize(moved, method=method)
    np.testing.assert_allclose(v1, v2, atol=2e-3)
    np.testing.assert_array_equal(w1, w2)


@settings(max_examples=60, deadline=None)
@given(a=pose_arrays, b=pose_arrays,
       mask_a=arrays(bool, 17), mask_b=arrays(bool, 17), metric=st.sampled_from(METRICS))
def test_scores_finite_in_range_symmetric(a, b, mask_a, mask_b, metric):
    a, b = _with_confidences(a, mask_a), _with_confidences(b, mask_b)
    a[~mask_a, :2] = np.nan  # missing keypoints may carry NaN coordinates
    try:
        (va, vb), (wa, wb) = normalize(np.stack([a, b]))
    except ValueError:
        return  # neither pose can be normalized: tested in test_normalize_bad_input
    assert np.isfinite(va).all() and np.isfinite(vb).all()
    if not (wa > 0).any() or not (wb > 0).any():
        return
    s_ab = pose_scores(va, wa, vb[None], wb[None], metric=metric)[0]
    s_ba = pose_scores(vb, wb, va[None], wa[None], metric=metric)[0]
    assert 0.0 <= s_ab <= 100.0 and np.isfinite(s_ab)
    assert s_ab == pytest.approx(s_ba, abs=1e-3)
    parts = part_scores(va, wa, vb[None], wb[None])
    assert np.isfinite(parts).all() and (parts >= 0).all() and (parts <= 100).all()


@settings(max_examples=40, deadline=None)
@given(pose=pose_arrays, mask=arrays(bool, 17), metric=st.sampled_from(METRICS))
def test_identical_poses_score_100(pose, mask, metric):
    pose = _with_confidences(pose, mask)
    try:
        v, w = normalize(pose)
    except ValueError:
        return
    assert pose_scores(v, w, v[None], w[None], metric=metric)[0] == pytest.approx(100.0, abs=1e-3)
    scores, valid = part_scores(v, w, v[None], w[None], return_valid=True)
    np.testing.assert_allclose(scores[valid], 100.0, atol=1e-3)


def test_mirror_option_matches_mirror_image(xp):
    rng = np.random.default_rng(3)
    poses = random_poses(rng, 50)
    mirrored = poses[:, list(FLIP_PERMUTATION)].copy()
    mirrored[..., 0] = 640.0 - mirrored[..., 0]
    v, w = normalize(xp.asarray(poses))
    mv, mw = normalize(xp.asarray(mirrored))
    # Normalizing the mirrored picture equals mirroring the normalized pose.
    mv2, mw2 = mirror_vectors(v, w)
    np.testing.assert_allclose(asnumpy(mv2), asnumpy(mv), atol=1e-5)
    for metric in METRICS:
        plain = asnumpy(pose_scores(v[0], w[0], mv[:1], mw[:1], metric=metric))
        best, flipped = pose_scores(v[0], w[0], mv[:1], mw[:1], metric=metric, mirror=True,
                                    return_mirrored=True)
        assert asnumpy(best)[0] == pytest.approx(100.0, abs=1e-3)
        assert bool(asnumpy(flipped)[0]) and plain[0] < 90
    parts = asnumpy(part_scores(v[0], w[0], mv[:1], mw[:1], mirror=True))
    np.testing.assert_allclose(parts, 100.0, atol=1e-3)


def test_scores_backends_agree(xp):
    rng = np.random.default_rng(5)
    poses = random_poses(rng, 200, missing=0.2)
    v, w = normalize(xp.asarray(poses))
    v_cpu, w_cpu = normalize(poses)
    np.testing.assert_allclose(asnumpy(v), v_cpu, atol=1e-6)
    for metric in METRICS:
        got = asnumpy(pose_scores(v[0], w[0], v, w, metric=metric))
        want = pose_scores(v_cpu[0], w_cpu[0], v_cpu, w_cpu, metric=metric)
        np.testing.assert_allclose(got, want, atol=1e-3)
        assert got.dtype == np.float32 and got.shape == (200,)
    np.testing.assert_allclose(asnumpy(part_scores(v[0], w[0], v, w)),
                               part_scores(v_cpu[0], w_cpu[0], v_cpu, w_cpu), atol=1e-3)


@pytest.mark.parametrize("metric", METRICS)
def test_a_pose_scores_the_same_whatever_poses_come_with_it(xp, metric):
    """Scores and part scores of a pose are the same bits alone, in a small call or in a large
    one (the score service splits large requests; a matrix product's blocking depends on N)."""
    rng = np.random.default_rng(8)
    v, w = normalize(xp.asarray(random_poses(rng, 1030, missing=0.2)))
    q_v, q_w = v[0], w[0]
    whole, flipped = pose_scores(q_v, q_w, v, w, metric=metric, mirror=True, return_mirrored=True)
    whole_parts = part_scores(q_v, q_w, v, w, mirror=flipped)
    for lo, hi in [(0, 1), (1, 11), (11, 520), (520, 1030)]:
        scores, f = pose_scores(q_v, q_w, v[lo:hi], w[lo:hi], metric=metric, mirror=True,
                                return_mirrored=True)
        np.testing.assert_array_equal(asnumpy(scores), asnumpy(whole[lo:hi]))
        np.testing.assert_array_equal(asnumpy(f), asnumpy(flipped[lo:hi]))
        np.testing.assert_array_equal(asnumpy(part_scores(q_v, q_w, v[lo:hi], w[lo:hi], mirror=f)),
                                      asnumpy(whole_parts[lo:hi]))


def test_scores_separate_similar_from_different():
    rng = np.random.default_rng(11)
    base = random_poses(rng, 1)
    near = base.copy()
    near[..., :2] += rng.normal(0, 5, near[..., :2].shape)  # 5 px jitter on a 640x480 frame
    far = random_poses(rng, 100)
    v, w = normalize(np.concatenate([base, near, far]))
    for metric in METRICS:
        s = pose_scores(v[0], w[0], v[1:], w[1:], metric=metric)
        assert s[0] > 90 and s[0] > s[1:].max() + 20, metric


def test_batch_with_empty_frames_keeps_time_axis():
    rng = np.random.default_rng(2)
    poses = random_poses(rng, 4)
    poses[1, :, 2] = 0.0  # a frame with nobody
    v, w = normalize(poses)
    assert v.shape == (4, 34) and (v[1] == 0).all() and (w[1] == 0).all()
    s = pose_scores(v[0], w[0], v, w)
    assert s[1] == 0.0 and np.isfinite(s).all()


# ---------- bad input ----------

@pytest.mark.parametrize("poses, exc, words", [
    (np.zeros((17, 2), np.float32), ValueError, "expected shape [..., 17, 3], got shape [17, 2]"),
    (np.zeros((0, 17, 3), np.float32), ValueError, "non-empty"),
    (np.zeros((17, 3), np.complex64), TypeError, "complex64"),
    (np.array([["a"] * 3] * 17), TypeError, "dtype"),
    (np.zeros((17, 3), np.float32), ValueError, "no pose can be normalized"),
    # finite coordinates are bounded (NaN and inf still mark missing keypoints); a float64 beyond
    # float32's range became inf, silently a missing keypoint
    (np.full((17, 3), 1e39), ValueError, "poses: expected values within +-1e+15, got 1e+39"),
    (np.where(np.eye(17, 3, dtype=bool), np.inf, np.float32(-2e16)), ValueError, "got 2e+16"),
])
def test_normalize_bad_input(poses, exc, words):
    with pytest.raises(exc) as info:
        normalize(poses)
    assert words in str(info.value)


def test_normalize_bad_method():
    with pytest.raises(ValueError, match="method: expected one of"):
        normalize(np.ones((17, 3), np.float32), method="box")


def test_pose_scores_bad_input():
    rng = np.random.default_rng(0)
    v, w = normalize(random_poses(rng, 3))
    with pytest.raises(ValueError, match="metric"):
        pose_scores(v[0], w[0], v, w, metric="euclid")
    with pytest.raises(ValueError, match=r"expected shape \[\.\.\., 34\]"):
        pose_scores(v[0], w[0], v[:, :30], w)
    with pytest.raises(ValueError, match="NaN"):
        bad = v.copy()
        bad[1, 3] = np.nan
        pose_scores(v[0], w[0], bad, w)
    with pytest.raises(ValueError, match="no visible keypoint"):
        pose_scores(v[0], np.zeros(17, np.float32), v, w)
    with pytest.raises(ValueError, match=r"vectors: expected values within \+-1e\+15"):  # weighted metrics gave NaN
        pose_scores(v[0], w[0], v * np.float32(1e19), w, metric="weighted_l2")
    with pytest.raises(ValueError, match="same poses"):
        pose_scores(v[0], w[0], v, w[:2])
    with pytest.raises(ValueError, match="negative"):
        pose_scores(v[0], w[0], v, -w)
    with pytest.raises(ValueError, match="kind"):
        score_from_distance(1.0, "hamming")
    assert set(SCORE_SCALES) >= set(METRICS) | {"angle"}
    for distance, got in ((np.nan, "NaN"), ([0.5, -0.1], "a negative one")):  # NaN used to pass through
        with pytest.raises(ValueError, match=f"distance: expected distances >= 0, got {got}"):
            score_from_distance(distance, "cosine")
    with pytest.raises(TypeError, match="mirror: expected True or False, got ndarray"):
        pose_scores(v[0], w[0], v, w, mirror=np.array([True, False, True]))
    with pytest.raises(TypeError, match="mirror: expected True or False, got str"):
        pose_scores(v[0], w[0], v, w, mirror="yes")


def test_part_scores_mirror_flags():
    rng = np.random.default_rng(1)
    v, w = normalize(random_poses(rng, 3))
    chosen = part_scores(v[0], w[0], v, w, mirror=True)
    # NumPy bools are bools (np.True_ used to be refused as "shape []")
    np.testing.assert_array_equal(part_scores(v[0], w[0], v, w, mirror=np.True_), chosen)
    np.testing.assert_array_equal(part_scores(v[0], w[0], v, w, mirror=np.False_), part_scores(v[0], w[0], v, w))
    per_pose = part_scores(v[0], w[0], v, w, mirror=np.array([True, False, True]))
    mirrored_query = part_scores(*mirror_vectors(v[0], w[0]), v, w)
    np.testing.assert_array_equal(per_pose[[0, 2]], mirrored_query[[0, 2]])
    np.testing.assert_array_equal(per_pose[1], part_scores(v[0], w[0], v, w)[1])
    for bad in (np.array([0.5, 0.0, 1.0]), np.array([True, False]), ["yes", "no", "yes"]):
        with pytest.raises(ValueError, match=r"mirror: expected True, False or a bool per pose \(shape \[3\]\)"):
            part_scores(v[0], w[0], v, w, mirror=bad)


def test_small_kernels_check_their_input():
    rng = np.random.default_rng(2)
    poses = random_poses(rng, 4)
    v, w = normalize(poses)
    with pytest.raises(ValueError, match=r"weights: expected shape \[\.\.\., 17\], got shape \[4, 16\]"):
        mirror_vectors(v, w[:, :16])
    with pytest.raises(ValueError, match="same poses"):
        mirror_vectors(v, w[:2])
    with pytest.raises(TypeError, match="vectors: expected an array of numbers"):
        mirror_vectors([[1.0] * 34, [1.0]], w[:2])
    with pytest.raises(TypeError, match="min_confidence: expected a finite number, got str"):
        normalize(poses, min_confidence="0.3")
    with pytest.raises(ValueError, match="min_confidence: expected a finite number, got nan"):
        interpolate_frames(poses, 2, min_confidence=float("nan"))
    with pytest.raises(TypeError, match="min_share: expected a finite number >= 0 and <= 1, got str"):
        consistent_keypoints(poses, poses, min_share="a")
    path = np.array([[0, 0], [1, 1]])
    with pytest.raises(TypeError, match="path: expected an integer array, got dtype float64"):
        aligned_part_scores(v, w, v, w, path + 0.7)  # used to be truncated silently
    with pytest.raises(ValueError, match="weights: expected confidences >= 0"):
        aligned_part_scores(v, -w, v, w, path)


# ---------- sequences: consistent_keypoints, interpolate_frames ----------

def test_consistent_keypoints_golden(xp):
    # Three frames; keypoint 0 always visible, keypoint 1 visible but for one low-confidence frame
    # (the detector's guess is kept), keypoint 2 without a position in frame 1 (interpolated),
    # keypoint 3 visible in one frame only (dropped in both sequences).
    a = np.zeros((3, 17, 3), np.float32)
    a[:, 0] = [[10, 10, 0.9], [20, 10, 0.9], [30, 10, 0.9]]
    a[:, 1] = [[10, 50, 0.8], [99, 77, 0.1], [30, 50, 0.6]]
    a[:, 2] = [[10, 90, 0.9], [0, 0, 0.0], [30, 94, 0.9]]
    a[:, 3] = [[5, 5, 0.9], [5, 5, 0.0], [5, 5, 0.0]]
    b = a.copy()
    b[:, 3, 2] = 0.9
    ca, cb = (asnumpy(x) for x in consistent_keypoints(xp.asarray(a), xp.asarray(b)))
    np.testing.assert_allclose(ca[1, 1], [99, 77, 0.7], atol=1e-6)   # guess kept, mean confidence
    np.testing.assert_allclose(ca[1, 2], [20, 92, 0.9], atol=1e-6)   # no position: interpolated
    np.testing.assert_array_equal(ca[:, 0], a[:, 0])
    assert not ca[:, 3].any() and not cb[:, 3].any()
    assert not ca[:, 4:].any()


def test_consistent_keypoints_holds_ends_and_keeps_empty_frames():
    a = np.zeros((4, 17, 3), np.float32)
    a[1:3, :, :2] = 100.0
    a[1:3, :, 2] = 0.9
    a[1, 5, :2] = [40, 60]
    ca, _ = consistent_keypoints(a, a, min_share=0.5)
    np.testing.assert_allclose(ca[0, 5], [40, 60, 0.9])   # held from the first located frame
    np.testing.assert_allclose(ca[3, 5], [100, 100, 0.9])


def test_interpolate_frames_golden(xp):
    poses = np.zeros((2, 17, 3), np.float32)
    poses[0, :, :] = [0.0, 10.0, 0.9]
    poses[1, :, :] = [40.0, 50.0, 0.5]
    poses[1, 7, 2] = 0.2                                  # missing at one end of the interval
    out = asnumpy(interpolate_frames(xp.asarray(poses), 4))
    assert out.shape == (5, 17, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[[0, 4]], poses)
    np.testing.assert_allclose(out[1, 0], [10.0, 20.0, 0.8], atol=1e-6)
    np.testing.assert_allclose(out[2, 0], [20.0, 30.0, 0.7], atol=1e-6)
    assert not out[1:4, 7].any()
    np.testing.assert_array_equal(asnumpy(interpolate_frames(xp.asarray(poses), 1)), poses)
    np.testing.assert_array_equal(asnumpy(interpolate_frames(xp.asarray(poses), np.int64(4))), out)


def test_interpolate_frames_restores_a_linear_movement():
    """Every other frame of a uniform movement, interpolated x2, is the whole movement again."""
    rng = np.random.default_rng(4)
    start, velocity = random_poses(rng, 1)[0], rng.normal(0, 3, (17, 2)).astype(np.float32)
    movement = np.repeat(start[None], 9, axis=0)
    movement[..., :2] += np.arange(9, dtype=np.float32)[:, None, None] * velocity
    np.testing.assert_allclose(interpolate_frames(movement[::2], 2), movement, atol=1e-3)


@pytest.mark.parametrize("factor, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError),
                                           ("2", TypeError)])
def test_interpolate_frames_bad_factor(factor, error):
    with pytest.raises(error, match="factor: expected an integer >= 1"):
        interpolate_frames(np.zeros((3, 17, 3), np.float32), factor)


def test_interpolate_frames_bad_shape():
    with pytest.raises(ValueError, match="poses"):
        interpolate_frames(np.zeros((3, 16, 3), np.float32), 2)


# ---------- left/right flicker ----------

def _turning_figure(frames: int) -> np.ndarray:
    """A standing figure facing the camera (its left on the image's right), arms swinging, with a
    visible face: ``[frames, 17, 3]`` pixels."""
    from posescore.kernels.skeleton import KEYPOINT_NAMES

    base = {"nose": (200, 60), "left_eye": (210, 50), "right_eye": (190, 50), "left_ear": (225, 55),
            "right_ear": (175, 55), "left_shoulder": (240, 110), "right_shoulder": (160, 110),
            "left_elbow": (260, 170), "right_elbow": (140, 170), "left_wrist": (270, 230),
            "right_wrist": (130, 230), "left_hip": (225, 230), "right_hip": (175, 230),
            "left_knee": (230, 310), "right_knee": (170, 310), "left_ankle": (235, 390), "right_ankle": (165, 390)}
    pose = np.array([[*base[n], 0.9] for n in KEYPOINT_NAMES], np.float32)
    out = np.repeat(pose[None], frames, axis=0)
    swing = 40 * np.sin(np.linspace(0, 3 * np.pi, frames))
    out[:, [KP["left_wrist"], KP["right_wrist"]], 1] -= swing[:, None].astype(np.float32)
    return out


def test_consistent_sides_undoes_a_flicker_and_keeps_the_rest(xp):
    poses = _turning_figure(60)
    flickered = poses.copy()
    flickered[20:27] = flickered[20:27][:, list(FLIP_PERMUTATION)]  # labels swapped, positions kept
    fixed = asnumpy(consistent_sides(xp.asarray(flickered)))
    np.testing.assert_array_equal(fixed, poses)
    np.testing.assert_array_equal(asnumpy(consistent_sides(xp.asarray(poses))), poses)
    # Seen from behind (no face) and labelled so throughout: nothing contradicts it, nothing moves.
    back = poses[:, list(FLIP_PERMUTATION)].copy()
    back[:, [KP["nose"], KP["left_eye"], KP["right_eye"]], 2] = 0.0
    np.testing.assert_array_equal(asnumpy(consistent_sides(xp.asarray(back))), back)
    # A flicker in the first frames is undone too (the face says which labels are right).
    early = poses.copy()
    early[:4] = early[:4][:, list(FLIP_PERMUTATION)]
    np.testing.assert_array_equal(asnumpy(consistent_sides(xp.asarray(early))), poses)
    with pytest.raises(ValueError, match="poses"):
        consistent_sides(xp.zeros((3, 16, 3), xp.float32))
