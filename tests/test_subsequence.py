"""subsequence_dtw against dtaidistance's subsequence_alignment, and its k-best semantics."""

import numpy as np
import pytest
from dtaidistance import dtw_ndim
from dtaidistance.subsequence.subsequencealignment import subsequence_alignment

from conftest import asnumpy

import posescore.kernels._pruning as pruning_module
import posescore.kernels._subsequence as subsequence_module
import posescore.kernels._tiles as tiles_module
from posescore.kernels import subsequence_dtw, to_tiles


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
    assert costs[0] == pytest.approx(best.value, rel=1e-5)
    assert [starts[0], ends[0] - 1] == list(best.segment)
    if planted:
        assert abs(starts[0] - 300) <= 1 and abs(ends[0] - 350) <= 1


def test_long_series_in_lanes_equal_dtaidistance():
    """A series long enough for the public call to run it in lanes (with threads where numba has
    them) gives dtaidistance's best match."""
    rng = np.random.default_rng(30)
    query = rng.standard_normal((25, 5)).astype(np.float32)
    series = rng.standard_normal((20_000, 5)).astype(np.float32)
    series[13_000:13_050] = np.repeat(query, 2, axis=0) + 0.05 * rng.standard_normal((50, 5))
    assert len(series) >= subsequence_module.LANES * 2 * subsequence_module.warm_up_frames(25)
    best = subsequence_alignment(query.astype(np.float64), series.astype(np.float64), penalty=0.1,
                                 use_c=True).best_match()
    costs, starts, ends = subsequence_dtw(query, series, k=1, penalty=0.1)
    assert costs[0] == pytest.approx(best.value, rel=1e-4)
    assert [starts[0], ends[0] - 1] == list(best.segment)
    assert abs(starts[0] - 13_000) <= 1 and abs(ends[0] - 13_050) <= 1


@pytest.mark.parametrize("penalty", [0.0, 0.3])
def test_match_recomputation_is_dtw_with_fixed_ends(penalty):
    """A match's recomputed sum is dtaidistance's DTW (squared) of the query and the match's
    frames, with the same penalty: more query frames than match frames and fewer, one of either."""
    rng = np.random.default_rng(32)
    query = rng.standard_normal((7, 3)).astype(np.float32)
    lengths = [12, 4, 1, 7, 30]
    frames = rng.standard_normal((sum(lengths), 3)).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for q in (query, query[:1]):
        got = subsequence_module._match_costs(q, frames, offsets, np.array([4, 0, 1, 2]), penalty * penalty)
        want = [dtw_ndim.distance(q.astype(np.float64), frames[offsets[m]:offsets[m + 1]].astype(np.float64),
                                  penalty=penalty, use_c=True) ** 2 for m in (4, 0, 1, 2)]
        np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("frames", [2_000, 20_000])  # one segment; lanes
def test_exact_and_near_copies_cost_what_dtaidistance_says(frames):
    """An exact copy of the query costs 0, not the ~1e-7 (|a|^2 + |b|^2) per frame that float32
    cancellation leaves, and a time-stretched copy with noise of 1e-4 costs dtaidistance's value
    to float32 rounding (its float32 DP sum is mostly cancellation: it is recomputed)."""
    rng = np.random.default_rng(31)
    query = (30 * rng.standard_normal((25, 34))).astype(np.float32)
    series = (30 * rng.standard_normal((frames, 34))).astype(np.float32)
    exact, stretched = frames // 4, 3 * frames // 4
    series[exact:exact + 25] = query
    series[stretched:stretched + 50] = np.repeat(query, 2, axis=0) + 1e-4 * rng.standard_normal((50, 34))
    costs, starts, ends = subsequence_dtw(query, series, k=2, penalty=0.1)
    assert costs[0] == 0.0 and (starts[0], ends[0]) == (exact, exact + 25)
    alignment = subsequence_alignment(query.astype(np.float64), series[exact + 25:].astype(np.float64),
                                      penalty=0.1, use_c=True)
    best = alignment.best_match()
    assert [starts[1], ends[1] - 1] == [b + exact + 25 for b in best.segment]
    assert costs[1] == pytest.approx(best.value, rel=1e-6)
    assert abs(starts[1] - stretched) <= 1 and abs(ends[1] - (stretched + 50)) <= 1


def _walk_like(rng, n, d=6, period=37):
    """A periodic movement with noise: warm-up columns take long to meet the exact ones."""
    t = np.arange(n)[:, None]
    phase = rng.uniform(0, 2 * np.pi, d)
    return (np.sin(2 * np.pi * t / period + phase) + 0.05 * rng.standard_normal((n, d))).astype(np.float32)


def _query_and_series(data, rng):
    """A 15-frame random query in 1,500 random frames, or a 40-frame piece of a periodic movement."""
    if data == "random":
        return rng.standard_normal((15, 6)).astype(np.float32), rng.standard_normal((1500, 6)).astype(np.float32)
    series = _walk_like(rng, 1500)
    return series[200:240] + np.float32(0.01), series


#: (threads, warm_up, lanes): scalar segments, and lane groups with every lane count (vectorized
#: from 32 lanes), warm-ups too short to converge among them.
SPLITS = [(2, 400, 1), (3, 1, 1), (7, 5, 1), (5, 60, 1), (16, 0, 1),
          (1, 5, 3), (2, 1, 5), (2, 60, 4), (3, 0, 7), (1, 40, 32), (2, 2, 32)]


@pytest.mark.parametrize("data", ["random", "periodic"])
def test_segments_give_the_one_thread_result_exactly(data, monkeypatch):
    """Every split of the series, in threads or in lanes, and every warm-up, including ones too
    short to converge (so segments are recomputed, across several checkpoints and past the last
    one a lane group keeps), gives the one-thread result bit for bit."""
    monkeypatch.setattr(subsequence_module, "SERIES_CHUNK", 53)
    monkeypatch.setattr(subsequence_module, "LANE_CHUNK", 7)
    monkeypatch.setattr(subsequence_module, "LANE_CHECKPOINTS", 2)
    query, series = _query_and_series(data, np.random.default_rng(21))
    exact = subsequence_module._subsequence_ends(query, series, 0.01, 1, 0)
    repaired = {True: [], False: []}  # by lanes > 1
    original_repair = subsequence_module._repair

    def counting_repair(q, q_sq, s, s_sq, resets, penalty_sq, bounds, p, columns, warmed, *rest):
        repaired[lanes > 1].append(not subsequence_module._same(columns[p - 1], warmed[p]))
        return original_repair(q, q_sq, s, s_sq, resets, penalty_sq, bounds, p, columns, warmed, *rest)

    monkeypatch.setattr(subsequence_module, "_repair", counting_repair)
    for segments, warm_up, lanes in SPLITS:
        got = subsequence_module._subsequence_ends(query, series, 0.01, segments, warm_up, None, lanes)
        np.testing.assert_array_equal(got[0], exact[0])
        np.testing.assert_array_equal(got[1], exact[1])
    for path in repaired.values():  # both the checked and the recomputed path ran
        assert any(path) and not all(path)


def test_lane_segments_cover_the_series_after_a_warm_up():
    """Lane p runs frames hi_p - steps .. hi_p: segment 0 from frame 0, every other one after
    warm_up frames or more, and the segments split the series."""
    for N, segments, warm_up in [(1500, 32, 40), (108_000, 64, 360), (1000, 7, 0), (100, 1, 30)]:
        bounds, steps = subsequence_module._lane_bounds(N, segments, warm_up)
        assert bounds[0] == 0 and bounds[-1] == N and (np.diff(bounds) >= 1).all()
        assert bounds[1] == steps
        assert (bounds[1:] - steps - bounds[:-1] <= -warm_up)[1:].all()


def test_pairing_of_frames_does_not_change_values(monkeypatch):
    """Frames go through the DP in pairs; odd chunks pair them differently, with the same values."""
    rng = np.random.default_rng(8)
    query, series = rng.standard_normal((9, 4)).astype(np.float32), rng.standard_normal((400, 4)).astype(np.float32)
    results = []
    for chunk in (400, 97, 2, 1):
        monkeypatch.setattr(subsequence_module, "SERIES_CHUNK", chunk)
        results.append(subsequence_module._subsequence_ends(query, series, 0.04, 1, 0))
    for cost, start in results[1:]:
        np.testing.assert_array_equal(cost, results[0][0])
        np.testing.assert_array_equal(start, results[0][1])


def _greedy_disjoint(values, starts, k, min_length):
    """The k-best selection by its definition: repeatedly the lowest value (lowest end on ties)
    among matches that cover min_length frames and meet no match taken so far."""
    frames = np.arange(len(values))
    free = np.isfinite(values) & (frames - starts + 1 >= min_length)
    ends = []
    while len(ends) < k and free.any():
        end = int(np.flatnonzero(free)[np.argmin(values[free])])
        ends.append(end)
        free &= (frames < starts[end]) | (starts > end)  # meets [starts[end], end] otherwise
    return ends


@pytest.mark.parametrize("sample", [4096, 100, 7])
@pytest.mark.parametrize("levels, span", [(100, 40), (8, 200), (1000, 200)])
def test_k_best_selection_is_the_greedy_definition(xp, levels, span, sample, monkeypatch):
    """Selection in batches of value ranges (bounds from a sample of every frame, or of every
    30th or 428th) picks what the definition picks: k from 1 to all (ranges run out and the next
    one is taken), few or many distinct values (ties across range bounds), short or long matches,
    unreachable (inf) ends."""
    monkeypatch.setattr(subsequence_module, "SELECTION_SAMPLE", sample)
    rng = np.random.default_rng(12)
    values = rng.integers(0, levels, 3000) / levels
    values[rng.integers(0, 3000, 100)] = np.inf
    starts = np.maximum(np.arange(3000) - rng.integers(0, span, 3000), 0)
    for k, min_length in [(1, 1), (10, 2), (25, 5), (40, 50), (70, 5), (3000, 1)]:
        want = _greedy_disjoint(values, starts, k, min_length)
        got = subsequence_module._best_disjoint(xp.asarray(values), xp.asarray(starts), k, min_length)
        assert got.tolist() == want


def test_gpu_path_equals_cpu(xp):
    rng = np.random.default_rng(13)
    query = rng.standard_normal((12, 8)).astype(np.float32)
    series = rng.standard_normal((20_000, 8)).astype(np.float32)
    series[7_000:7_012] = query
    lengths = np.array([6_000, 1_000, 12, 12_988])  # the match is one whole series
    for options in (dict(), dict(series_lengths=lengths), dict(series_lengths=xp.asarray(lengths))):
        want = subsequence_dtw(query, series, k=3, **{key: asnumpy(v) for key, v in options.items()})
        got = subsequence_dtw(xp.asarray(query), xp.asarray(series), k=3, **options)
        np.testing.assert_allclose(asnumpy(got[0]), want[0], rtol=1e-5)
        for g, w in zip(got[1:], want[1:]):
            assert asnumpy(g).tolist() == w.tolist()


def test_k_best_are_disjoint_and_sorted():
    rng = np.random.default_rng(9)
    query = rng.standard_normal((20, 4)).astype(np.float32)
    series = rng.standard_normal((2000, 4)).astype(np.float32)
    places = [150, 900, 1600]
    for p in places:
        series[p:p + 20] = query + 0.01 * rng.standard_normal((20, 4))
    costs, starts, ends = subsequence_dtw(query, series, k=5)
    assert (costs.dtype, starts.dtype, ends.dtype) == (np.float32, np.int64, np.int64)
    assert sorted(starts[:3].tolist()) == places and (ends[:3] - starts[:3] == 20).all()
    assert (np.diff(costs) >= 0).all() and costs[2] < costs[3] / 5
    spans = sorted(zip(starts.tolist(), ends.tolist()))
    assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))
    assert ((ends - starts) >= 2).all()


def test_match_starts_are_int32_only_where_every_frame_index_fits():
    assert subsequence_module.start_dtype(2**31 - 1) is np.int32
    assert subsequence_module.start_dtype(2**31) is np.int64


def test_int64_match_starts_give_the_same_result(monkeypatch):
    """Series of 2**31 frames or more keep their starts in int64: the same DP, in lanes and in
    segments, as with int32."""
    query, series = _query_and_series("periodic", np.random.default_rng(6))
    splits = [(2, 5, 1), (1, 40, 32)]  # (threads, warm_up, lanes)

    def ends(segments, warm_up, lanes):
        return subsequence_module._subsequence_ends(query, series, 0.01, segments, warm_up, lanes=lanes)

    want = [ends(*split) for split in splits]
    monkeypatch.setattr(subsequence_module, "start_dtype", lambda frames: np.int64)
    for split, (want_cost, want_start) in zip(splits, want):
        cost, start = ends(*split)
        assert want_start.dtype == np.int32 and start.dtype == np.int64
        np.testing.assert_array_equal(cost, want_cost)
        np.testing.assert_array_equal(start, want_start)


def test_fewer_matches_than_k():
    series = np.arange(6, dtype=np.float32)[:, None]
    costs, starts, ends = subsequence_dtw(series[:3], series, k=10)
    assert 1 <= len(costs) <= 3 and costs[0] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("chunk", [2048, 53])
def test_many_series_in_one_call_equal_one_call_each(chunk, monkeypatch):
    """series_lengths: the ends of every series equal that series alone, bit for bit (boundaries
    inside chunks, at their edges, one-frame series), and the k best are those of all the series'
    own k best together."""
    monkeypatch.setattr(subsequence_module, "SERIES_CHUNK", chunk)
    rng = np.random.default_rng(12)
    query = rng.standard_normal((12, 5)).astype(np.float32)
    lengths = [53, 1, 106, 2, 400, 90, 53]
    parts = [rng.standard_normal((n, 5)).astype(np.float32) for n in lengths]
    parts[4][100:112] = query + 0.01  # near matches in two series
    parts[6][30:42] = query - 0.02
    series = np.concatenate(parts)
    offsets = np.cumsum([0] + lengths[:-1])
    resets = subsequence_module._resets(lengths, len(series))
    whole = subsequence_module._subsequence_ends(query, series, 0.01, 1, 0, resets)
    for part, offset in zip(parts, offsets):
        alone = subsequence_module._subsequence_ends(query, part, 0.01, 1, 0)
        np.testing.assert_array_equal(whole[0][offset:offset + len(part)], alone[0])
        np.testing.assert_array_equal(whole[1][offset:offset + len(part)], alone[1] + offset)
    costs, starts, ends = subsequence_dtw(query, series, k=6, series_lengths=np.asarray(lengths))
    each = []
    for part, offset in zip(parts, offsets):
        c, s_, e = subsequence_dtw(query, part, k=6)
        each += [(float(ci), int(si) + offset, int(ei) + offset) for ci, si, ei in zip(c, s_, e)]
    assert [(float(c), int(s_), int(e)) for c, s_, e in zip(costs, starts, ends)] == sorted(each)[:6]
    assert starts[0] == offsets[4] + 100 and starts[1] == offsets[6] + 30


@pytest.mark.parametrize("data", ["random", "periodic"])
def test_series_boundaries_with_segments_and_repairs(data, monkeypatch):
    """Segments whose warm-up crosses a series boundary start exact; the others are checked and
    repaired as without boundaries: the one-thread result, bit for bit, in threads and in lanes."""
    monkeypatch.setattr(subsequence_module, "LANE_CHUNK", 7)
    query, series = _query_and_series(data, np.random.default_rng(5))
    resets = subsequence_module._resets([300, 7, 493, 700], 1500)
    exact = subsequence_module._subsequence_ends(query, series, 0.01, 1, 0, resets)
    for segments, warm_up, lanes in SPLITS:
        got = subsequence_module._subsequence_ends(query, series, 0.01, segments, warm_up, resets, lanes)
        np.testing.assert_array_equal(got[0], exact[0])
        np.testing.assert_array_equal(got[1], exact[1])


@pytest.mark.parametrize("lengths, exc, words", [
    ([20, 20], ValueError, "summing to the series' 50 frames, got 40"),
    ([50, 0], ValueError, "lengths in 1..50, got 0..50"),
    ([25.0, 25.0], TypeError, "expected integers"),
    ([[25, 25]], ValueError, "1-D"),
    ([], ValueError, "non-empty"),
    # would wrap around to a sum of 50 in uint64 / int64
    (np.array([2**64 - 1, 51], np.uint64), ValueError, "lengths in 1..50"),
    (np.array([2**62] * 3 + [2**62 + 50], np.int64), ValueError, "lengths in 1..50"),
    ([[20], 30], TypeError, "series_lengths: expected a 1-D array of integers"),  # ragged
])
def test_bad_series_lengths(lengths, exc, words):
    with pytest.raises(exc) as info:
        subsequence_dtw(np.zeros((3, 4), np.float32), np.ones((50, 4), np.float32),
                        series_lengths=lengths)
    assert words in str(info.value)


@pytest.mark.parametrize("options, exc, words", [
    (dict(penalty="0.1"), TypeError, "penalty: expected a finite number >= 0, got str"),
    (dict(penalty=None), TypeError, "penalty: expected a finite number >= 0"),
    (dict(penalty=np.array([0.1, 0.2])), TypeError, "penalty: expected a finite number >= 0"),
    (dict(penalty=-0.1), ValueError, "penalty: expected a finite number >= 0, got -0.1"),
    (dict(penalty=float("nan")), ValueError, "penalty: expected a finite number >= 0, got nan"),
    (dict(k=2.5), TypeError, "k: expected an integer >= 1, got float"),
    (dict(k=0), ValueError, "k: expected an integer >= 1, got 0"),
    (dict(min_length=True), TypeError, "min_length: expected an integer >= 1, got bool"),
])
def test_bad_scalar_options(options, exc, words):
    with pytest.raises(exc) as info:
        subsequence_dtw(np.zeros((3, 4), np.float32), np.ones((50, 4), np.float32), **options)
    assert words in str(info.value)


def test_huge_k_and_penalty_are_not_errors():
    rng = np.random.default_rng(3)
    series = rng.standard_normal((60, 4)).astype(np.float32)
    query = series[20:25] + 0.01
    # No more matches than frames: k is capped, not allocated (k=10**12 raised MemoryError).
    costs, starts, ends = subsequence_dtw(query, series, k=10**12)
    assert 1 <= len(costs) <= 60 and (ends > starts).all()
    # A penalty whose square overflows forbids warping, like any very large one (it raised OverflowError).
    huge = subsequence_dtw(query, series, k=3, penalty=1e200)
    large = subsequence_dtw(query, series, k=3, penalty=1e6)
    for got, want in zip(huge, large):
        np.testing.assert_array_equal(got, want)
    assert (huge[2] - huge[1] == 5).all()  # diagonal only: every match covers the query's 5 frames


@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(k=0), ValueError, "k: expected"),
    (dict(penalty=-1.0), ValueError, "penalty"),
    (dict(min_length=0), ValueError, "min_length"),
    (dict(query=np.zeros((3, 2), np.float32)), ValueError, "same dimension"),
    (dict(series=np.zeros((0, 4), np.float32)), ValueError, "non-empty"),
    (dict(query=np.full((3, 4), np.inf, np.float32)), ValueError, "NaN or infinity"),
    # costs overflowed float32: no match came back
    (dict(series=np.full((50, 4), 1e19, np.float32)), ValueError, "series: expected values within +-1e+15"),
    (dict(series=np.zeros(8, np.float32)), ValueError, "2 axes"),
])
def test_bad_input(kwargs, exc, words):
    args = dict(query=np.zeros((3, 4), np.float32), series=np.ones((50, 4), np.float32))
    args.update(kwargs)
    with pytest.raises(exc) as info:
        subsequence_dtw(**args)
    assert words in str(info.value)


def _pose_walk(rng, n, step=0.05):
    """A smooth walk of unit 34-vectors ``[n, 34]`` float32 (like normalized poses over time)."""
    x = np.cumsum(rng.normal(0, step, (n, 34)), 0).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["planted", "absent", "everywhere", "repeated"])
def test_pruned_search_finds_the_brute_force_matches(kind):
    """``prune=True`` answers the matches of the whole-series DP (starts, ends, order; costs to
    float32 rounding) on many series and queries: a movement planted once (with noise), one that
    is nowhere, one that is everywhere (a jittered loop), and one that recurs a few times; with
    tracks (series_lengths), k from 1 to beyond the matches there are, and short min lengths."""
    rng = np.random.default_rng(["planted", "absent", "everywhere", "repeated"].index(kind))
    for trial in range(12):
        N, M, k = int(rng.integers(3_000, 40_000)), int(rng.integers(5, 90)), int(rng.integers(1, 16))
        series = _pose_walk(rng, N)
        if kind == "planted":
            at = int(rng.integers(0, N - M))
            query = series[at:at + M] + rng.normal(0, 0.003, (M, 34)).astype(np.float32)
        elif kind == "absent":
            query = _pose_walk(rng, M)
        elif kind == "everywhere":
            query = _pose_walk(rng, M)
            series = np.tile(query, (N // M + 1, 1))[:N] + rng.normal(0, 0.01, (N, 34)).astype(np.float32)
        else:
            query = _pose_walk(rng, M)
            for at in rng.integers(0, N - M, 5):
                series[at:at + M] = query + rng.normal(0, 0.005, (M, 34)).astype(np.float32)
        lengths = None
        if trial % 2:
            cuts = np.sort(rng.choice(np.arange(1, N), int(rng.integers(1, 40)), replace=False))
            lengths = np.diff(np.concatenate([[0], cuts, [N]]))
        if trial == 5:
            k = N  # more than there are: every disjoint match
        options = dict(k=k, series_lengths=lengths, min_length=int(rng.integers(1, 4)))
        want = subsequence_dtw(query, series, **options)
        got = subsequence_dtw(query, series, prune=True, **options)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[2], want[2])
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["planted", "everywhere"])
def test_a_series_of_tiles_gives_the_rows_matches(kind):
    """A series given as float16 tiles (an archive's vectors, searched in place), rows (lo, hi) of
    them not on tile bounds: the matches of the same frames as float32 rows, pruned (the bounds
    read from the tiles) or not, with tracks, into a buffer or not."""
    rng = np.random.default_rng(["planted", "everywhere"].index(kind) + 20)
    for trial in range(4):
        N, M, k = int(rng.integers(3_000, 30_000)), int(rng.integers(5, 60)), int(rng.integers(1, 12))
        series = _pose_walk(rng, N)
        query = _pose_walk(rng, M)
        if kind == "planted":
            at = int(rng.integers(0, N - M))
            series[at:at + M] = query + rng.normal(0, 0.003, (M, 34)).astype(np.float32)
        else:
            series = np.tile(query, (N // M + 1, 1))[:N] + rng.normal(0, 0.01, (N, 34)).astype(np.float32)
        stored = np.concatenate([_pose_walk(rng, 37), series, _pose_walk(rng, 50)]).astype(np.float16)
        tiles = to_tiles(stored)
        frames = stored[37:37 + N].astype(np.float32)
        lengths = None
        if trial % 2:
            cuts = np.sort(rng.choice(np.arange(1, N), int(rng.integers(1, 20)), replace=False))
            lengths = np.diff(np.concatenate([[0], cuts, [N]]))
        for prune in (True, False):
            options = dict(k=k, series_lengths=lengths, prune=prune)
            want = subsequence_dtw(query, frames, **options)
            buffer = np.empty((N + 5, 34), np.float32) if trial < 2 else None
            got = subsequence_dtw(query, tiles, rows=(37, 37 + N), buffer=buffer, **options)
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[2], want[2])
            np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"rows: expected 0 <= lo < hi <= \d+"):
        subsequence_dtw(query, tiles, rows=(10, 10))
    with pytest.raises(ValueError, match="only for a series of tiles"):
        subsequence_dtw(query, frames, rows=(0, 10))


def test_pruned_search_skips_most_of_a_long_series(monkeypatch):
    """A movement planted once in a long walk: the pruned search runs the DP over a small share of
    the series (the planted match first), where the brute force runs it over all of it."""
    rng = np.random.default_rng(9)
    series = _pose_walk(rng, 300_000)
    query = series[123_000:123_060] + rng.normal(0, 0.003, (60, 34)).astype(np.float32)
    ran = []
    original = subsequence_module._all_ends
    monkeypatch.setattr(subsequence_module, "_all_ends",
                        lambda q, s, *rest: ran.append(s.shape[0]) or original(q, s, *rest))
    costs, starts, ends = subsequence_dtw(query, series, k=5, prune=True)
    assert starts[0] == 123_000 and ends[0] == 123_060
    assert sum(ran) < 0.1 * series.shape[0]


def test_max_cost_keeps_the_greedy_prefix_and_prunes_alike():
    """``max_cost``: the matches costing at most it, as the uncapped search's first ones; pruned and
    brute force agree with the cap, where a rare movement (planted twice) leaves the k-th best any
    frame's."""
    rng = np.random.default_rng(12)
    series = _pose_walk(rng, 60_000)
    query = _pose_walk(rng, 50)
    for at in (7_000, 41_000):
        series[at:at + 50] = query + rng.normal(0, 0.004, (50, 34)).astype(np.float32)
    uncapped = subsequence_dtw(query, series, k=10)
    cap = float(uncapped[0][1]) * 1.5  # the two planted copies only
    for prune in (False, True):
        costs, starts, ends = subsequence_dtw(query, series, k=10, max_cost=cap, prune=prune)
        assert sorted(starts.tolist()) == [7_000, 41_000] and (costs <= cap).all()
        np.testing.assert_array_equal(starts, uncapped[1][:2])
    assert subsequence_dtw(query, series, k=3, max_cost=0.0)[0].size == 0


@pytest.mark.parametrize("rows", [(0, 5000), (37, 4001), (64, 4101), (5, 6)])
def test_bounds_from_tiles_are_lower_bounds_at_most_a_half_tile_wider(rows):
    """The pruning's per-block distances from the query's cluster centres, computed from float16
    tiles in place, are at most the exact least distance over each block's frames, and at least
    the least over the block widened to the 32-row halves of tiles that hold it (rows off tile
    and block boundaries, the zero padding of the last tile included)."""
    rng = np.random.default_rng(rows[0])
    stored = rng.normal(0, 1, (5000, 34)).astype(np.float16)
    tiles = to_tiles(stored)
    centres = rng.normal(0, 1, (8, 34))
    lo, hi = rows
    near = pruning_module.block_nearest(tiles_module.TiledSeries(tiles, rows, None), centres)
    padded = np.zeros((tiles.shape[0] * tiles.shape[2], 34))
    padded[:5000] = stored
    distance = np.linalg.norm(padded[:, None, :] - centres.astype(np.float32).astype(np.float64)[None], axis=2)
    block = pruning_module.PRUNE_BLOCK
    assert near.shape == (8, -(-(hi - lo) // block))
    for b in range(near.shape[1]):
        first, last = lo + b * block, min(hi, lo + (b + 1) * block)
        exact = distance[first:last].min(0)
        wider = distance[first // 32 * 32:-(-last // 32) * 32].min(0)
        assert (near[:, b] <= exact).all()
        np.testing.assert_allclose(near[:, b], wider, rtol=1e-4, atol=1e-3)
