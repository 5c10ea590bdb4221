"""kernels.spring_step: the streaming subsequence DTW (SPRING) equals the offline DP frame by frame,
holds its matches until no later frame can improve them, and refuses what it cannot advance."""

import numpy as np
import pytest

from posescore import kernels


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def series():
    """A 20-frame query, and a 300-frame series of noise holding a slowed, noisy copy of it at 100."""
    rng = np.random.default_rng(0)
    query = unit(rng.normal(size=(20, 34)))
    s = unit(rng.normal(size=(300, 34)))
    copy = np.repeat(query, [2 if i % 4 == 0 else 1 for i in range(20)], axis=0)
    s[100:125] = unit(copy + 0.05 * rng.normal(size=copy.shape))
    return query, s


def run(query, s, lanes=1, **options):
    state = kernels.SpringState()
    state.add([query] * lanes, options.get("max_step_cost", 0.0), options.get("min_length", 10))
    out = [kernels.spring_step(state, np.arange(lanes), np.repeat(s[j:j + 1], lanes, 0), [j] * lanes)
           for j in range(len(s))]
    return np.stack(out), state


def test_each_column_is_the_offline_dps(series):
    query, s = series
    out, _ = run(query, s)
    costs, starts, ends = kernels.subsequence_dtw(query, s, k=1, min_length=10)
    long_enough = np.arange(len(s)) - out[:, 0, 1] + 1 >= 10
    best = int(np.argmin(np.where(long_enough, out[:, 0, 0], np.inf)))
    assert (best + 1, int(out[best, 0, 1])) == (int(ends[0]), int(starts[0]))
    assert np.sqrt(out[best, 0, 0]) / len(query) == pytest.approx(float(costs[0]), rel=1e-4)
    # Lanes do not meet: three lanes advanced in one call give the one lane's columns.
    many, _ = run(query, s, lanes=3)
    np.testing.assert_array_equal(many[:, 0], out[:, 0])
    np.testing.assert_array_equal(many[:, 2], out[:, 0])


def test_a_match_is_final_once_no_later_frame_can_improve_it(series):
    query, s = series
    out, state = run(query, s, max_step_cost=0.3)
    final = np.flatnonzero(out[:, 0, 5] > 0)
    assert len(final) == 1 and final[0] >= 124  # reported after it ends, not before
    assert (int(out[final[0], 0, 7]), int(out[final[0], 0, 8])) == (101, 124)
    assert np.isinf(state.best_cost[0])  # no longer held
    # Before it ends, nothing is final; the phase climbs through the reference during the copy.
    assert not out[:124, 0, 5].any()
    assert np.all(np.diff(out[102:124, 0, 2]) >= 0) and out[123, 0, 2] >= 17


def test_bad_calls_name_the_problem(series):
    query, s = series
    state = kernels.SpringState()
    state.add([query, query], 0.1, 2)
    step = lambda **kw: kernels.spring_step(state, kw.get("lanes", [0]), kw.get("frames", s[:1]),  # noqa: E731
                                            kw.get("times", [0]))
    with pytest.raises(ValueError, match="lanes: a lane may advance by one frame per call"):
        step(lanes=[0, 0], frames=s[:2], times=[0, 0])
    with pytest.raises(ValueError, match="lanes: expected lanes alive, of 0 to 1"):
        step(lanes=[2])
    state.remove([1])
    with pytest.raises(ValueError, match="lanes: expected lanes alive"):
        step(lanes=[1])
    with pytest.raises(ValueError, match="frames: expected 34 values per frame"):
        step(frames=s[:1, :10])
    with pytest.raises(ValueError, match="frames"):
        step(frames=np.full((1, 34), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"references\[0\]: expected shape \[..., 34\], got shape \[20, 10\]"):
        state.add([query[:, :10]], 0.1, 2)


def test_lanes_come_and_go_and_the_others_keep_their_columns(series):
    """Lanes added and removed between steps (and the arrays compacted) leave the other lanes'
    columns as if they had run alone."""
    query, s = series
    alone, _ = run(query, s, max_step_cost=0.3)
    state = kernels.SpringState()
    (first,) = state.add([query], 0.3, 10)
    got = []
    for j in range(len(s)):
        if j == 30:
            extra = state.add([query[:5], query], 0.3, 10)
        if j == 60:
            state.remove(extra)
            mapping = state.compact()
            first = int(mapping[first])
            assert state.lanes == 1 and state.rows == len(query)
        got.append(kernels.spring_step(state, [first], s[j:j + 1], [j])[0])
    np.testing.assert_array_equal(np.stack(got), alone[:, 0])
