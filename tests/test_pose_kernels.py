"""The fused per-pose kernels (kernels._pose_cells, compiled by numba for the CPU and numba-CUDA for
the GPU) against the plain NumPy versions they replaced (bench.pose_numpy), on random and real
poses with missing and NaN keypoints; the CUDA kernels on the device or in the simulator."""

import numpy as np
import pytest

from bench import pose_numpy as ref
from conftest import random_poses
from posescore.kernels import (aligned_part_scores, consistent_keypoints, interpolate_frames, mirror_vectors, normalize,
                               part_scores, pose_scores, score_from_distance)
from posescore.kernels import _per_pose
from posescore.kernels import _pose_cells as cells
from posescore.kernels import METRICS, SCORE_SCALES

# Scores are 0-100: float32 sums in another order differ by a few ulps, which the mapping's
# slope (up to ~330 points per radian of part angle) makes a few 1e-4 points.
SCORE_ATOL = 5e-4


def awkward_poses(seed, n):
    """Random poses with a fifth of the keypoints missing, some NaN, some exactly at the threshold,
    some poses with no or one keypoint, and repeated keypoints (zero-length limbs)."""
    rng = np.random.default_rng(seed)
    poses = random_poses(rng, n, missing=0.2)
    poses[rng.uniform(size=(n, 17)) < 0.02, 0] = np.nan
    poses[rng.uniform(size=(n, 17)) < 0.02, 2] = np.float32(0.3)
    poses[1, :, 2] = 0.0
    poses[2, 1:, 2] = 0.0
    poses[3, 7] = poses[3, 9]
    return poses


def real_poses():
    """Every person the pose model finds in ultralytics' bus.jpg and zidane.jpg (skipped without
    the exported model)."""
    from posescore.engine.serving.export import onnx_path
    from posescore.engine.serving.detector import PoseDetector
    from test_detect import ultralytics_asset

    if not onnx_path().exists():
        pytest.skip("no exported pose model (make model exports it)")
    detector = PoseDetector(str(onnx_path()))
    found = [detector.detect(ultralytics_asset(name)[None]) for name in ("bus.jpg", "zidane.jpg")]
    return np.concatenate([p.keypoints[0, :int(p.counts[0])] for p in found])


@pytest.mark.parametrize("method", ["bbox", "torso"])
def test_normalize_equals_the_numpy_version(method):
    poses = awkward_poses(0, 3000)
    vectors, weights = normalize(poses, method)
    want_v, want_w = ref.normalize(poses, method)
    np.testing.assert_allclose(vectors, want_v, atol=3e-7)
    np.testing.assert_array_equal(weights, want_w)
    assert vectors.dtype == np.float32 and vectors.shape == (3000, 34)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("mirror", [False, True])
def test_pose_and_part_scores_equal_the_numpy_version(metric, mirror):
    v, w = normalize(awkward_poses(1, 3000))
    for q in (0, 5, 3):
        scores, flipped = pose_scores(v[q], w[q], v, w, metric=metric, mirror=mirror, return_mirrored=True)
        want, want_flipped = ref.pose_scores(v[q], w[q], v, w, metric, mirror)
        np.testing.assert_allclose(scores, want, atol=SCORE_ATOL)
        plain = ref.pose_scores(v[q], w[q], v, w, metric)[0]
        other = ref.pose_scores(*ref.mirror(v[q], w[q]), v, w, metric)[0]
        clear = np.abs(other - plain) > 1e-3 if mirror else np.ones(len(v), bool)  # near-ties aside
        np.testing.assert_array_equal(flipped[clear], want_flipped[clear])
        assert mirror or not flipped.any()
    if mirror:  # a pose's mirror image matches it mirrored (random poses score ~0 both ways)
        mv, mw = ref.mirror(v[:1], w[:1])
        assert pose_scores(v[0], w[0], mv, mw, metric=metric, mirror=True, return_mirrored=True)[1][0]
    parts, valid = part_scores(v[0], w[0], v, w, mirror=mirror, return_valid=True)
    want_parts, want_valid = ref.part_scores(v[0], w[0], v, w, mirror)
    np.testing.assert_allclose(parts, want_parts, atol=SCORE_ATOL)
    np.testing.assert_array_equal(valid, want_valid)


def test_kernels_equal_the_numpy_version_on_real_poses():
    poses = real_poses()
    assert len(poses) >= 6
    v, w = normalize(poses)
    want_v, want_w = ref.normalize(poses)
    np.testing.assert_allclose(v, want_v, atol=3e-7)
    for metric in METRICS:
        np.testing.assert_allclose(pose_scores(v[0], w[0], v, w, metric=metric, mirror=True),
                                   ref.pose_scores(v[0], w[0], v, w, metric, True)[0], atol=SCORE_ATOL)
    np.testing.assert_allclose(part_scores(v[1], w[1], v, w, mirror=True), ref.part_scores(v[1], w[1], v, w, True)[0],
                               atol=SCORE_ATOL)


def test_aligned_parts_mirror_and_interpolation_equal_the_numpy_version():
    poses = awkward_poses(2, 400)
    v, w = normalize(poses)
    rng = np.random.default_rng(3)
    path = np.stack([np.sort(rng.integers(0, 250, 600)), np.sort(rng.integers(0, 400, 600))], axis=1)
    per_step, overall, valid = aligned_part_scores(v[:250], w[:250], v, w, path)
    want, want_valid = ref.aligned_part_scores(v[:250], w[:250], v, w, path)
    np.testing.assert_allclose(per_step, want, atol=SCORE_ATOL)
    np.testing.assert_array_equal(valid, want_valid)
    for got, expected in zip(mirror_vectors(v, w), ref.mirror(v, w)):
        np.testing.assert_array_equal(got, expected)
    for factor in (2, 3, 7):
        np.testing.assert_array_equal(interpolate_frames(poses[:60], factor),
                                      ref.interpolate_frames(poses[:60], factor))


@pytest.mark.parametrize("mirror", [False, True])
def test_several_queries_in_one_call_score_as_each_alone(mirror):
    """``query_index``: each pose against its own query, the same bits as one call per query."""
    v, w = normalize(awkward_poses(5, 600))
    queries = [0, 5, 9]
    index = np.random.default_rng(6).integers(0, 3, 600)
    scores, flipped = pose_scores(v[queries], w[queries], v, w, metric="weighted_l1", mirror=mirror,
                                  return_mirrored=True, query_index=index)
    parts = part_scores(v[queries], w[queries], v, w, mirror=flipped, query_index=index)
    for q, row in enumerate(queries):
        mine = index == q
        alone, alone_flipped = pose_scores(v[row], w[row], v[mine], w[mine], metric="weighted_l1", mirror=mirror,
                                           return_mirrored=True)
        np.testing.assert_array_equal(scores[mine], alone)
        np.testing.assert_array_equal(flipped[mine], alone_flipped)
        np.testing.assert_array_equal(parts[mine], part_scores(v[row], w[row], v[mine], w[mine], mirror=alone_flipped))
    with pytest.raises(ValueError, match="query_index: expected values in"):
        pose_scores(v[queries], w[queries], v, w, query_index=np.full(600, 3))
    with pytest.raises(ValueError, match="query_index: expected one query per pose"):
        pose_scores(v[queries], w[queries], v, w, query_index=np.zeros(5, int))


def test_consistent_keypoints_equals_the_numpy_version():
    rng = np.random.default_rng(7)
    a, b = awkward_poses(8, 120), awkward_poses(9, 75)
    a[rng.uniform(size=(120, 17)) < 0.1, 2] = 0.1  # placed but not seen: the detector's guess
    a[:10, 4, 2] = 0.0  # a keypoint without a position at the start (held), and inside (interpolated)
    a[50:60, 4, 2] = 0.0
    for share in (0.3, 0.5, 0.8):
        for got, want in zip(consistent_keypoints(a, b, share), ref.consistent_keypoints(a, b, share)):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


def test_score_cell_is_score_from_distance():
    """The fused kernels map distances with the scalar cell; the public mapping is the same."""
    for kind, scale in SCORE_SCALES.items():
        d = np.concatenate([np.linspace(0, 2 * scale, 4001), [0.0, scale, 1e-30, 1e30]]).astype(np.float32)
        cell = np.array([cells.score_cell(x, np.float32(scale)) for x in d], np.float32)
        np.testing.assert_allclose(cell, score_from_distance(d, kind), atol=2e-5)  # float32 exp rounding


@pytest.mark.cudasim
def test_cuda_pose_kernels_equal_the_cpu_kernels():
    """The CUDA kernels, launched as on a GPU (on the device when there is one, else in numba's
    simulator), give the CPU kernels' results."""
    poses = awkward_poses(4, 40)
    v, w, usable = _per_pose.normalize_poses(poses, False, 0.3, 1e-3, gpu=True)
    cv, cw, cusable = _per_pose.normalize_poses(poses, False, 0.3, 1e-3, gpu=False)
    np.testing.assert_allclose(v, cv, atol=1e-7)
    np.testing.assert_array_equal(w, cw)
    assert usable == cusable
    qv, qw = v[[0, 5, 7]], w[[0, 5, 7]]  # three queries, each pose scored against one of them
    mv, mw = mirror_vectors(qv, qw)
    index = (np.arange(40) % 3).astype(np.int64)
    for metric in METRICS:
        args = (qv, qw, mv, mw, index, v, w, metric, SCORE_SCALES[metric], True)
        got, want = _per_pose.pose_scores(*args, gpu=True), _per_pose.pose_scores(*args, gpu=False)
        np.testing.assert_allclose(got[0], want[0], atol=SCORE_ATOL)
        np.testing.assert_array_equal(got[1], want[1])
    query = _per_pose.pose_terms(qv, qw, gpu=True)
    np.testing.assert_allclose(query[0], _per_pose.pose_terms(qv, qw, gpu=False)[0], atol=1e-6)
    mirror_terms = _per_pose.pose_terms(mv, mw, gpu=False)
    pick = np.arange(40) % 4 == 0
    for mode in (0, 1, 2):
        args = (query, mirror_terms, index, v, w, SCORE_SCALES["angle"], mode, pick)
        got, want = _per_pose.part_scores(*args, gpu=True), _per_pose.part_scores(*args, gpu=False)
        np.testing.assert_allclose(got[0], want[0], atol=SCORE_ATOL)
        np.testing.assert_array_equal(got[1], want[1])
    terms = _per_pose.pose_terms(v, w, gpu=False)
    path = np.stack([np.arange(40), np.arange(40)[::-1]], axis=1).astype(np.int64)
    got = _per_pose.aligned_part_scores(terms, terms, path, SCORE_SCALES["angle"], gpu=True)
    want = _per_pose.aligned_part_scores(terms, terms, path, SCORE_SCALES["angle"], gpu=False)
    np.testing.assert_allclose(got[0], want[0], atol=SCORE_ATOL)
    np.testing.assert_array_equal(got[1], want[1])
