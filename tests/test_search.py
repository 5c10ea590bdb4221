"""search_topk against faiss (IndexFlatIP / IndexFlatL2): sorted scores, since ties may reorder."""

import faiss
import numpy as np
import pytest

import posescore.kernels._search as search_module
import posescore.kernels._tiles as tiles_module
from conftest import asnumpy
from posescore.kernels import float32_rows, from_tiles, search_topk, to_tiles


def _unit_rows(rng, n, d=34):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("metric, index", [("ip", faiss.IndexFlatIP), ("l2", faiss.IndexFlatL2)])
def test_matches_faiss_across_chunks(metric, index, monkeypatch):
    monkeypatch.setattr(search_module, "CHUNK_BYTES", 4096)  # many chunks, uneven last one
    rng = np.random.default_rng(0)
    base = _unit_rows(rng, 20_011)
    queries = _unit_rows(rng, 7)
    scores, idx = search_topk(queries, base, 10, metric=metric)
    ref = index(34)
    ref.add(base)
    want_scores, want_idx = ref.search(queries, 10)
    np.testing.assert_allclose(np.sort(scores, 1), np.sort(want_scores, 1), atol=1e-5)
    assert (idx == want_idx).mean() > 0.99
    # indices point at rows that really have those scores
    rows = base[idx]
    direct = (rows * queries[:, None]).sum(-1) if metric == "ip" else ((rows - queries[:, None]) ** 2).sum(-1)
    np.testing.assert_allclose(direct, scores, atol=1e-5)


def test_float16_memmap_base_and_exact_hit(tmp_path):
    rng = np.random.default_rng(1)
    base = _unit_rows(rng, 5000).astype(np.float16)
    path = tmp_path / "base.f16"
    base.tofile(path)
    mapped = np.memmap(path, dtype=np.float16, mode="r", shape=base.shape)
    queries = base[[17, 4242]].astype(np.float32)
    scores, idx = search_topk(queries, mapped, 3, metric="l2")
    assert idx[:, 0].tolist() == [17, 4242]
    np.testing.assert_allclose(scores[:, 0], 0.0, atol=1e-6)
    assert (np.diff(scores, axis=1) >= 0).all()


def test_backends_agree(xp):
    rng = np.random.default_rng(2)
    base = _unit_rows(rng, 3000)
    queries = _unit_rows(rng, 4)
    for metric in ("ip", "l2"):
        s, i = search_topk(xp.asarray(queries), xp.asarray(base), 5, metric=metric)
        s_cpu, i_cpu = search_topk(queries, base, 5, metric=metric)
        np.testing.assert_allclose(asnumpy(s), s_cpu, atol=1e-5)
        assert asnumpy(i).dtype == np.int64


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_selections_are_the_definition(metric, monkeypatch):
    """Every top-k selection gives the stable sort's order, best first and ties to the lower index:
    on integer data (exact float32 keys, many ties), across chunk and thread bounds, with a NaN row
    of an unscanned float16 base (it never enters). The CPU scan keeps a sorted list or a heap;
    the GPU's path for a large k or D (a GEMM per chunk and a partition) runs here on NumPy."""
    rng = np.random.default_rng(4)
    base = np.round(2 * rng.standard_normal((9_000, 6))).astype(np.float16)
    base[[3, 5_000]] = np.nan
    queries = np.round(2 * rng.standard_normal((3, 6))).astype(np.float32)
    exact = base.astype(np.float64)
    keys = queries @ exact.T
    if metric == "l2":
        keys = 2 * keys - (exact * exact).sum(axis=1)
    keys[np.isnan(keys)] = -np.inf
    want = np.argsort(-keys, axis=1, kind="stable")
    monkeypatch.setattr(search_module, "CHUNK_BYTES", 4096)  # 1,024-row chunks
    for k in (1, 37, 200, 998):
        want_idx = want[:, :k].tolist()
        want_keys = np.take_along_axis(keys, want[:, :k], 1).astype(np.float32)
        for heap_from in (1, 10**9):
            monkeypatch.setattr(search_module, "HEAP_FROM_K", heap_from)
            _, got_idx = search_topk(queries, base, k, metric=metric)
            assert got_idx.tolist() == want_idx
        for chunk_rows in (7, 333, 100_000):
            monkeypatch.setattr(search_module, "BLOCKED_CHUNK_ELEMENTS", chunk_rows * 3)
            got_keys, got_idx = search_module._search_blocked(queries, base, k, metric == "l2")
            assert got_idx.tolist() == want_idx
            np.testing.assert_array_equal(got_keys, want_keys)


@pytest.mark.parametrize("dim", [34, 6])
def test_tiled_bases_give_the_rows_answers(dim, monkeypatch):
    """A tiled float16 base (kernels.to_tiles) answers any range of its rows as the stable sort
    does, exactly: integer data (exact keys, many ties), ranges that cut tiles, chunks of two
    tiles, one to nine queries (products from the bits, or a conversion and a GEMM), sorted list
    and heap. D = 34 runs the unrolled tile kernel, D = 6 its plain loops."""
    rng = np.random.default_rng(8)
    base = np.round(2 * rng.standard_normal((9_001, dim))).astype(np.float16)
    tiles = to_tiles(base)
    assert tiles.shape == (141, dim, tiles_module.TILE_ROWS) and not tiles[-1, :, 41:].any()
    np.testing.assert_array_equal(from_tiles(tiles, 63, 4_170), base[63:4_170])
    for lo, hi in ((0, 9_001), (63, 4_170), (4_100, 4_101), (5, 5)):
        want = base[lo:hi].astype(np.float32)
        for stored in (tiles, base, tiles.astype(np.float32), base.astype(np.float32)):
            got = float32_rows(stored, lo, hi)
            assert got.dtype == np.float32 and got.shape == want.shape and (got == want).all()
            buffer = np.full((9_001, dim), np.nan, np.float32)
            assert (float32_rows(stored, lo, hi, buffer) == want).all() and (buffer[:hi - lo] == want).all()
    with pytest.raises(ValueError, match=r"buffer: expected float32 C-contiguous \[>= 9001"):
        float32_rows(tiles, 0, 9_001, np.empty((100, dim), np.float32))
    monkeypatch.setattr(search_module, "HALF_CHUNK_ROWS", 2 * tiles_module.TILE_ROWS)
    for metric in ("ip", "l2"):
        for n_queries in (1, 3, 9):
            queries = np.round(2 * rng.standard_normal((n_queries, dim))).astype(np.float32)
            for lo, hi in ((0, 9_001), (63, 4_170), (4_100, 4_101)):
                exact = base[lo:hi].astype(np.float64)
                keys = queries @ exact.T
                if metric == "l2":
                    keys = 2 * keys - (exact * exact).sum(axis=1)
                want = np.argsort(-keys, axis=1, kind="stable")
                for k in (1, 37, 998):
                    for heap_from in (1, 10**9):
                        monkeypatch.setattr(search_module, "HEAP_FROM_K", heap_from)
                        got_scores, got_idx = search_topk(queries, tiles, k, metric=metric, rows=(lo, hi))
                        want_scores, want_idx = search_topk(queries, base[lo:hi], k, metric=metric)
                        kk = min(k, hi - lo)
                        assert got_idx[:, :kk].tolist() == want[:, :kk].tolist() == want_idx[:, :kk].tolist()
                        np.testing.assert_array_equal(got_scores, want_scores)
    with pytest.raises(ValueError, match="rows: expected 0 <= lo <= hi <= 9024"):
        search_topk(queries, tiles, 3, rows=(0, 9_025))
    with pytest.raises(ValueError, match="only for a tiled base"):
        search_topk(queries, base, 3, rows=(0, 10))


def test_heap_evicts_the_highest_index_of_tied_keys(monkeypatch):
    """Short bases of keys 0..3 and a small k: the heap's worst entry among equal keys is the one
    of the highest index (a heap that ignores indices keeps a later tie in ~1 case in 3)."""
    monkeypatch.setattr(search_module, "HEAP_FROM_K", 1)
    rng = np.random.default_rng(6)
    query = np.ones((1, 1), np.float32)
    for _ in range(300):
        n = int(rng.integers(3, 40))
        k = int(rng.integers(2, n))
        base = rng.integers(0, 4, size=(n, 1)).astype(np.float32)
        _, idx = search_topk(query, base, k)
        assert idx[0].tolist() == np.argsort(-base[:, 0], kind="stable")[:k].tolist()


def test_k_and_d_beyond_the_fused_gpu_kernel_match_faiss(xp):
    """k > 64 or D > 128: on the GPU the blocked path, not the fused kernel."""
    rng = np.random.default_rng(5)
    for k, d in [(100, 34), (5, 200)]:
        base = _unit_rows(rng, 3000, d)
        queries = _unit_rows(rng, 4, d)
        for metric, index in (("ip", faiss.IndexFlatIP), ("l2", faiss.IndexFlatL2)):
            scores, idx = search_topk(xp.asarray(queries), xp.asarray(base), k, metric=metric)
            ref = index(d)
            ref.add(base)
            want_scores, want_idx = ref.search(queries, k)
            np.testing.assert_allclose(np.sort(asnumpy(scores), 1), np.sort(want_scores, 1), atol=1e-5)
            assert (asnumpy(idx) == want_idx).mean() > 0.99


def test_k_larger_than_base_pads_like_faiss():
    rng = np.random.default_rng(3)
    base = _unit_rows(rng, 3)
    s, i = search_topk(base[:1], base, 5)
    assert i[0, 3:].tolist() == [-1, -1] and np.isinf(s[0, 3:]).all() and i[0, 0] == 0
    s, i = search_topk(base[:1], base, 5, metric="l2")
    assert np.isposinf(s[0, 3:]).all()


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(k=0), ValueError, "k: expected an integer >= 1"),
    (dict(metric="cos"), ValueError, "metric"),
    (dict(queries=np.zeros((2, 30), np.float32)), ValueError, "same dimension"),
    (dict(queries=np.zeros(34, np.float32)), ValueError, "2 axes"),
    (dict(base=np.zeros((0, 34), np.float32)), ValueError, "non-empty"),
    (dict(queries=np.full((1, 34), np.nan, np.float32)), ValueError, "NaN"),
    # l2 scores overflowed float32 and came back as -1 indices
    (dict(queries=np.full((1, 34), -3e19, np.float32)), ValueError, "queries: expected values within +-1e+15, got 3e+19"),
    (dict(base=np.full((5, 34), 3e19)), ValueError, "base: expected values within +-1e+15"),  # float64: converted, checked
    (dict(base=np.zeros((5, 34), np.complex64)), TypeError, "complex64"),
    (dict(k=2.5), TypeError, "k: expected an integer >= 1, got float"),
    # a 10**9-column result of padding got the process OOM-killed
    (dict(k=10**9), ValueError, "k=1000000000 for a base of N=5 rows"),
])
def test_bad_input(kwargs, exc, words):
    args = dict(queries=np.zeros((1, 34), np.float32), base=np.ones((5, 34), np.float32), k=2)
    args.update(kwargs)
    with pytest.raises(exc) as info:
        search_topk(**args)
    assert words in str(info.value)


def test_half_to_float_is_exact_for_every_float16():
    """The float16 base's conversion: all 65,536 bit patterns, as NumPy converts them (NaNs stay NaN)."""
    from posescore.kernels._tiles import half_to_float

    bits = np.arange(65536, dtype=np.uint16)
    out = np.empty(bits.shape, np.float32)
    half_to_float(bits, out)
    want = bits.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    np.testing.assert_array_equal(out[~nan], want[~nan])
    assert np.isnan(out[nan]).all() and np.signbit(out[~nan]).tolist() == np.signbit(want[~nan]).tolist()


@pytest.mark.parametrize("queries", [1, 3, 12])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_float16_base_answers_as_its_float32_copy(queries, metric, monkeypatch):
    """A float16 base (products from its bits for a few queries, a converted chunk and a GEMM for
    more) answers as the same values in float32, across chunk bounds."""
    monkeypatch.setattr(search_module, "HALF_CHUNK_ROWS", 1000)
    rng = np.random.default_rng(9)
    base = _unit_rows(rng, 7_777).astype(np.float16)
    q = _unit_rows(rng, queries)
    got_scores, got_idx = search_topk(q, base, 25, metric=metric)
    want_scores, want_idx = search_topk(q, base.astype(np.float32), 25, metric=metric)
    assert (got_idx == want_idx).mean() > 0.99
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)
