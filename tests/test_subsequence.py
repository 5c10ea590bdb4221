"""subsequence_dtw against dtaidistance's subsequence_alignment, and its k-best semantics."""

import numpy as np
import pytest
from dtaidistance.subsequence.subsequencealignment import subsequence_alignment

import kernels.subsequence as subsequence_module
from kernels import subsequence_dtw


@pytest.mark.parametrize("penalty", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("planted", [True, False])
def test_best_match_equals_dtaidistance(penalty, planted, monkeypatch):
    monkeypatch.setattr(subsequence_module, "SERIES_CHUNK", 97)  # DP state crosses chunks
    rng = np.random.default_rng(int(penalty * 10) + planted)
    series = rng.standard_normal((700, 5))
    query = rng.standard_normal((25, 5))
    if planted:  # the query, time-stretched and noisy, inside the series
        series[300:350] = np.repeat(query, 2, axis=0) + 0.05 * rng.standard_normal((50, 5))
    best = subsequence_alignment(query, series, penalty=penalty, use_c=True).best_match()
    costs, starts, ends = subsequence_dtw(query.astype(np.float32), series.astype(np.float32),
                                          k=1, penalty=penalty)
    assert costs[0] == pytest.approx(best.value, rel=1e-4)
    assert [starts[0], ends[0] - 1] == list(best.segment)
    if planted:
        assert abs(starts[0] - 300) <= 1 and abs(ends[0] - 350) <= 1


def test_k_best_are_disjoint_and_sorted():
    rng = np.random.default_rng(9)
    query = rng.standard_normal((20, 4)).astype(np.float32)
    series = rng.standard_normal((2000, 4)).astype(np.float32)
    places = [150, 900, 1600]
    for p in places:
        series[p:p + 20] = query + 0.01 * rng.standard_normal((20, 4))
    costs, starts, ends = subsequence_dtw(query, series, k=5)
    assert sorted(starts[:3].tolist()) == places and (ends[:3] - starts[:3] == 20).all()
    assert (np.diff(costs) >= 0).all() and costs[2] < costs[3] / 5
    spans = sorted(zip(starts.tolist(), ends.tolist()))
    assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))
    assert ((ends - starts) >= 2).all()


def test_fewer_matches_than_k():
    series = np.arange(6, dtype=np.float32)[:, None]
    costs, starts, ends = subsequence_dtw(series[:3], series, k=10)
    assert 1 <= len(costs) <= 3 and costs[0] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(k=0), ValueError, "k: expected"),
    (dict(penalty=-1.0), ValueError, "penalty"),
    (dict(min_length=0), ValueError, "min_length"),
    (dict(query=np.zeros((3, 2), np.float32)), ValueError, "same dimension"),
    (dict(series=np.zeros((0, 4), np.float32)), ValueError, "non-empty"),
    (dict(query=np.full((3, 4), np.inf, np.float32)), ValueError, "NaN or infinity"),
    (dict(series=np.zeros(8, np.float32)), ValueError, "2 axes"),
])
def test_bad_input(kwargs, exc, words):
    args = dict(query=np.zeros((3, 4), np.float32), series=np.ones((50, 4), np.float32))
    args.update(kwargs)
    with pytest.raises(exc) as info:
        subsequence_dtw(**args)
    assert words in str(info.value)
