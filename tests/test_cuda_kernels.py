"""numba-CUDA kernels through their launchers, with NumPy arrays: on the GPU when one is present
(numba-cuda copies the arrays to the device and back), otherwise in numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, set by conftest), on small inputs either way. The public functions
also run them on CuPy arrays in the tests with the ``xp`` fixture.
"""

import numpy as np
import pytest
from dtaidistance import dtw_ndim

from posescore.kernels import dtw, search_topk
from posescore.kernels._dtw import _accumulated, _dtw_cuda
from posescore.kernels._search import _search_cuda
from posescore.kernels._subsequence import _resets, _subsequence_cuda, _subsequence_ends

pytestmark = pytest.mark.cudasim


@pytest.mark.parametrize("window", [0, 2])
def test_wavefront_dtw_kernel(window):
    rng = np.random.default_rng(0)
    B, T, U, D = 3, 9, 7, 4
    a = rng.standard_normal((B, T, D)).astype(np.float32)
    b = rng.standard_normal((B, U, D)).astype(np.float32)
    la = np.array([9, 4, 1], np.int32)
    lb = np.array([7, 7, 3], np.int32)
    cost, length = _dtw_cuda(a, b, la, lb, window)
    want = [dtw_ndim.distance(a[p, :la[p]].astype(float), b[p, :lb[p]].astype(float),
                              window=window or None) for p in range(B)]
    np.testing.assert_allclose(np.sqrt(cost), want, rtol=1e-5)
    cpu = dtw(a, b, window=window or None, lengths_a=la, lengths_b=lb)
    np.testing.assert_allclose(np.sqrt(cost), cpu, rtol=1e-5)
    assert (length >= np.maximum(la, lb)).all() and (length <= la + lb - 1).all()
    _, _, cpu_length, _ = _accumulated(a, b, la, lb, window or None, True)  # same ties, same path length
    np.testing.assert_array_equal(length, cpu_length)


@pytest.mark.parametrize("use_l2", [False, True])
def test_fused_topk_kernel(use_l2):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((300, 6)).astype(np.float32)
    queries = rng.standard_normal((2, 6)).astype(np.float32)
    keys, idx = _search_cuda(queries, base, 4, use_l2, blocks=2)
    want_scores, want_idx = search_topk(queries, base, 4, metric="l2" if use_l2 else "ip")
    assert idx.tolist() == want_idx.tolist()
    got = (queries ** 2).sum(1, keepdims=True) - keys if use_l2 else keys
    np.testing.assert_allclose(got, want_scores, atol=1e-4)


@pytest.mark.parametrize("use_l2", [False, True])
def test_fused_topk_ties_go_to_the_lower_index(use_l2):
    """Integer rows, so that many keys tie exactly, spread over 2 blocks of 128 threads: the
    selection is the stable-sort definition (larger key first, of equal keys the lower index)."""
    rng = np.random.default_rng(2)
    base = rng.integers(-1, 2, (700, 3)).astype(np.float32)
    queries = rng.integers(-1, 2, (2, 3)).astype(np.float32)
    queries[0] = [1, 0, 0]
    keys, idx = _search_cuda(queries, base, 5, use_l2, blocks=2)
    exact = 2 * queries @ base.T - (base * base).sum(1) if use_l2 else queries @ base.T
    want = np.argsort(-exact, axis=1, kind="stable")[:, :5]
    assert idx.tolist() == want.tolist()
    np.testing.assert_array_equal(keys, np.take_along_axis(exact, want, 1))


@pytest.mark.parametrize("warm_up", [6, 0])
def test_subsequence_wavefront_kernel(warm_up):
    """Segments of 16 frames; without a warm-up every segment starts wrong and must be rerun
    from its predecessor's exact column, in order."""
    rng = np.random.default_rng(3)
    query = rng.standard_normal((5, 3)).astype(np.float32)
    series = rng.standard_normal((70, 3)).astype(np.float32)
    series[30:35] = query
    cost, start = _subsequence_cuda(query, series, 0.01, segment_frames=16, warm_up=warm_up)
    want_cost, want_start = _subsequence_ends(query, series, 0.01, 1, 0)
    np.testing.assert_allclose(cost, want_cost, rtol=1e-6, atol=1e-5)  # exact match: ~0 either way
    np.testing.assert_array_equal(start, want_start)
    assert int(np.argmin(cost)) == 34 and start[34] == 30


def test_subsequence_wavefront_with_series_boundaries_kernel():
    """Series boundaries inside and at the edges of segments: the GPU kernel restarts its column
    where the CPU kernel does."""
    rng = np.random.default_rng(4)
    query = rng.standard_normal((5, 3)).astype(np.float32)
    series = rng.standard_normal((70, 3)).astype(np.float32)
    resets = _resets([16, 9, 1, 20, 24], 70)  # boundaries at 16 (a segment edge), 25, 26, 46
    cost, start = _subsequence_cuda(query, series, 0.01, segment_frames=16, warm_up=6, resets=resets)
    want_cost, want_start = _subsequence_ends(query, series, 0.01, 1, 0, resets)
    np.testing.assert_allclose(cost, want_cost, rtol=1e-6)
    np.testing.assert_array_equal(start, want_start)
    assert start[25] == 25 and start[26] == 26 and start[16] == 16  # nothing crosses a boundary


def test_spring_step_kernel_is_the_cpu_step():
    """kernels.spring_step's lane step on the device (numba-CUDA, one thread per lane) gives the CPU
    step's outputs and state, frame after frame, a final match and its reset included."""
    from posescore.kernels import SpringState, spring_step

    rng = np.random.default_rng(8)
    refs = [rng.standard_normal((m, 4)).astype(np.float32) for m in (6, 9, 5)]
    series = rng.standard_normal((40, 3, 4)).astype(np.float32)
    series[12:18, 0] = refs[0] + 0.01  # a close match in lane 0
    series[20:29, 1] = refs[1]
    cpu, gpu = SpringState(dims=4), SpringState(dims=4, gpu=True)
    for state in (cpu, gpu):
        state.add(refs, 0.5, 3)
    finals = []
    for j in range(len(series)):
        times = np.full(3, j, np.int64)
        outs = [spring_step(state, np.arange(3), series[j], times, penalty=0.1) for state in (cpu, gpu)]
        np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-5, equal_nan=True)
        np.testing.assert_allclose(gpu.col, cpu.col, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(gpu.col_start, cpu.col_start)
        finals += [(lane, j) for lane in range(3) if outs[0][lane, 5] > 0]
    assert finals and finals[0][0] == 0  # lane 0's close match became final, on both
