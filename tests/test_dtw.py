"""dtw, dtw_path, dtw_score against dtaidistance (an oracle no one here wrote) and by hand."""

import sys

import numpy as np
import pytest
from dtaidistance import dtw_ndim

from conftest import asnumpy, random_poses
from posescore.kernels import dtw, dtw_path, dtw_score, dtw_step_distance, normalize, score_from_distance


def _pair(rng, T, U, D=6):
    return (rng.standard_normal((T, D)).astype(np.float32),
            rng.standard_normal((U, D)).astype(np.float32))


def test_golden_by_hand():
    a = np.array([[0.0], [1.0], [2.0]], np.float32)
    b = np.array([[0.0], [2.0]], np.float32)
    # accumulated: D00=0, D10=1, D11=1, D20=5, D21=0+min(1, 1, 5)=1 -> distance 1
    assert dtw(a, b) == pytest.approx(1.0)
    path, dist = dtw_path(a, b)
    assert path.tolist() == [[0, 0], [1, 0], [2, 1]] and dist == pytest.approx(1.0)
    # path length 3 -> RMS step distance sqrt(1/3), mapped by the cosine scale
    assert dtw_step_distance(a, b) == pytest.approx(np.sqrt(1 / 3))
    assert dtw_score(a, b) == pytest.approx(float(score_from_distance(np.sqrt(1 / 3), "cosine")), abs=1e-4)
    a, b = a / 10, b / 10  # RMS step distance sqrt(1/300) = 0.0577: a score of 99.6
    assert dtw_score(a, b) == pytest.approx(100 * np.exp(-(np.sqrt(1 / 300) / 0.22) ** 4), abs=1e-3)


@pytest.mark.parametrize("T, U, window", [(40, 40, None), (25, 60, None), (60, 25, None),
                                          (50, 50, 3), (30, 45, 5), (45, 30, 1), (1, 7, None)])
def test_matches_dtaidistance(T, U, window):
    rng = np.random.default_rng(T * 100 + U)
    a, b = _pair(rng, T, U)
    want = dtw_ndim.distance(a.astype(np.float64), b.astype(np.float64), window=window)
    assert dtw(a, b, window=window) == pytest.approx(want, rel=1e-5)
    path, dist = dtw_path(a, b, window=window)
    assert dist == pytest.approx(want, rel=1e-5)
    ref_path = dtw_ndim.warping_path(a.astype(np.float64), b.astype(np.float64), window=window)
    assert path.tolist() == [list(p) for p in ref_path]


def test_ragged_batch_matches_dtaidistance(xp):
    rng = np.random.default_rng(7)
    B, T, U, D = 12, 40, 35, 34
    a = rng.standard_normal((B, T, D)).astype(np.float32)
    b = rng.standard_normal((B, U, D)).astype(np.float32)
    la = rng.integers(1, T + 1, B)
    lb = rng.integers(1, U + 1, B)
    for window in (None, 4):
        got = asnumpy(dtw(xp.asarray(a), xp.asarray(b), window=window,
                          lengths_a=xp.asarray(la), lengths_b=xp.asarray(lb)))
        want = [dtw_ndim.distance(a[p, :la[p]].astype(np.float64), b[p, :lb[p]].astype(np.float64),
                                  window=window) for p in range(B)]
        assert got.shape == (B,) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_window_without_path_is_inf():
    rng = np.random.default_rng(0)
    a, b = _pair(rng, 10, 10)
    assert dtw(a, b, window=1) == pytest.approx(np.sqrt(((a - b) ** 2).sum()), rel=1e-5)


def _movement(rng, frames=60):
    """A smooth synthetic movement of one performer: normalized vectors [frames, 34]."""
    start, end = random_poses(rng, 2)
    t = np.linspace(0, 1, frames)[:, None, None]
    poses = (1 - t) * start + t * end
    poses[..., 2] = 0.9
    return normalize(poses)[0]


def test_score_is_speed_invariant_and_discriminates(xp):
    rng = np.random.default_rng(1)
    move = _movement(rng)
    half_speed = np.repeat(move, 2, axis=0)
    double_speed = move[::2]
    backwards = move[::-1].copy()
    frozen = np.repeat(move[:1], len(move), axis=0)
    s = {name: dtw_score(xp.asarray(move), xp.asarray(other)) for name, other in
         [("same", move), ("half", half_speed), ("double", double_speed),
          ("backwards", backwards), ("frozen", frozen)]}
    assert s["same"] == pytest.approx(100.0, abs=1e-3)
    assert s["half"] == pytest.approx(100.0, abs=1e-3)
    assert s["double"] >= 95
    assert s["backwards"] < s["double"] - 10 and s["frozen"] < s["double"] - 10


def test_batch_scores_equal_single_scores():
    rng = np.random.default_rng(4)
    moves = np.stack([_movement(rng, 30) for _ in range(4)])
    batch = dtw_score(moves, moves[::-1].copy())
    singles = [dtw_score(moves[p], moves[3 - p]) for p in range(4)]
    np.testing.assert_allclose(batch, singles, rtol=1e-5)


@pytest.mark.parametrize("call, exc, words", [
    (lambda a, b: dtw(a, b[None]), ValueError, "both one pair"),
    (lambda a, b: dtw(a, b[:, :3]), ValueError, "same dimension"),
    (lambda a, b: dtw(a[:0], b), ValueError, "non-empty"),
    (lambda a, b: dtw(a.astype(np.complex64), b), TypeError, "complex64"),
    (lambda a, b: dtw(np.where(a > 1, np.nan, a), b), ValueError, "NaN"),
    # squared distances overflowed float32: dtw gave inf and dtw_score 0
    (lambda a, b: dtw(a * np.float32(1e19), b), ValueError, "a: expected values within +-1e+15"),
    (lambda a, b: dtw_score(a, b.astype(np.float64) * 1e39), ValueError, "b: expected values within +-1e+15"),
    (lambda a, b: dtw(a, b, window=0), ValueError, "window"),
    (lambda a, b: dtw(a, b, window=2.0), TypeError, "window (None for no window): expected an integer >= 1"),
    (lambda a, b: dtw(a[None], b[None], lengths_a=[[3], 4]), TypeError, "lengths_a: expected a 1-D array"),
    (lambda a, b: dtw(a, b, lengths_a=[3]), ValueError, "batches"),
    (lambda a, b: dtw(a[None], b[None], lengths_a=np.array([99])), ValueError, "lengths in 1..10"),
    (lambda a, b: dtw(a[None], b[None], lengths_b=np.array([1.5])), TypeError, "integers"),
    (lambda a, b: dtw(np.stack([a, a]), b[None]), ValueError, "same batch size"),
    (lambda a, b: dtw_path(a[None], b[None]), ValueError, "one pair"),
])
def test_bad_input(call, exc, words):
    rng = np.random.default_rng(0)
    a, b = _pair(rng, 10, 12)
    with pytest.raises(exc) as info:
        call(a, b)
    assert words in str(info.value)


def test_path_refuses_a_grid_over_its_memory_limit(monkeypatch):
    dtw_module = sys.modules["posescore.kernels._dtw"]
    rng = np.random.default_rng(2)
    a, b = _pair(rng, 40, 50)
    monkeypatch.setattr(dtw_module, "MAX_PATH_CELLS", 40 * 50 - 1)
    with pytest.raises(ValueError, match="40 x 50 frames need"):
        dtw_path(a, b)
    monkeypatch.setattr(dtw_module, "MAX_PATH_CELLS", 40 * 50)
    assert dtw_path(a, b)[0].shape[1] == 2


def test_distances_spanning_many_cost_blocks_equal_one_block(monkeypatch):
    """dtw and dtw_score hold the cost matrix a block of rows at a time (memory bounded for long
    clips): any block size gives the same distances and scores, to the float32 rounding of the
    block's GEMM (BLAS rounds an element differently with the number of rows it is given: a few
    ulps of the cost, seen as 7e-7 relative)."""
    rng = np.random.default_rng(5)
    a = np.stack([_movement(rng, 41) for _ in range(3)])
    b = np.stack([_movement(rng, 36) for _ in range(3)])
    lengths_a, lengths_b = np.array([41, 40, 7]), np.array([36, 21, 36])
    calls = [lambda w: dtw(a, b, window=w, lengths_a=lengths_a, lengths_b=lengths_b),
             lambda w: dtw_score(a, b, window=w, lengths_a=lengths_a, lengths_b=lengths_b)]
    whole = [[call(w) for w in (None, 5)] for call in calls]
    for rows in (2, 4, 6):  # odd T: the last block has one row
        monkeypatch.setattr(sys.modules["posescore.kernels._dtw"], "COST_CHUNK_CELLS", 36 * rows)
        for call, want in zip(calls, whole):
            for w, expected in zip((None, 5), want):
                np.testing.assert_allclose(call(w), expected, rtol=2e-6, atol=1e-6)
    want = [dtw_ndim.distance(a[p, :lengths_a[p]].astype(np.float64), b[p, :lengths_b[p]].astype(np.float64))
            for p in range(3)]
    np.testing.assert_allclose(whole[0][0], want, rtol=1e-5)


def test_path_spanning_many_cost_blocks_matches_dtaidistance(monkeypatch):
    """The forward pass computes the cost matrix a block of rows at a time."""
    monkeypatch.setattr(sys.modules["posescore.kernels._dtw"], "COST_CHUNK_CELLS", 38 * 7)  # 6 rows a block
    rng = np.random.default_rng(3)
    a, b = _pair(rng, 45, 38)
    for window in (None, 9):
        path, dist = dtw_path(a, b, window=window)
        want = dtw_ndim.warping_path(a.astype(np.float64), b.astype(np.float64), window=window)
        assert [tuple(p) for p in path.tolist()] == [tuple(p) for p in want]
        want_dist = dtw_ndim.distance(a.astype(np.float64), b.astype(np.float64), window=window)
        assert dist == pytest.approx(want_dist, rel=1e-5)
