"""compare's time resolution and the steps it reports, on hand-made paths (no video needed)."""

import numpy as np
import pytest

from posescore.engine.analysis.report import _frame_steps
from posescore.engine.analysis.answers import MAX_ALIGNED_SAMPLES, interpolation_factor


@pytest.mark.parametrize("fps, frames, factor", [
    (10.0, 60, 4),     # 40 Hz
    (25.0, 60, 2),
    (30.0, 60, 2),
    (40.0, 60, 1),
    (60.0, 60, 1),
    (5.0, 60, 4),      # at most 4 samples per frame
    (0.0, 60, 1),      # unknown rate
    (10.0, 1, 1),
    (10.0, 3000, 2),   # (3000 - 1) * 2 + 1 samples fit MAX_ALIGNED_SAMPLES, * 3 would not
    (10.0, MAX_ALIGNED_SAMPLES + 1, 1),
])
def test_interpolation_factor(fps, frames, factor):
    assert interpolation_factor(fps, frames) == factor
    if frames > 1:
        assert (frames - 1) * factor + 1 <= max(MAX_ALIGNED_SAMPLES, frames)


def test_steps_of_an_identical_pair_are_its_frames():
    path = np.stack([np.arange(9), np.arange(9)], axis=1)  # 3 frames at 4 samples per frame
    rows, ref, att = _frame_steps(path, 4, 4)
    assert rows.tolist() == [0, 4, 8] and ref.tolist() == [0, 1, 2] and att.tolist() == [0, 1, 2]


def test_steps_of_a_double_speed_attempt_cover_both_performances_in_order():
    # Reference 5 frames, attempt 3 frames (every other pose), 2 samples per frame: 9 and 5 samples.
    path = np.array([(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (5, 2), (6, 3), (7, 3), (8, 4)])
    rows, ref, att = _frame_steps(path, 2, 2)
    assert set(ref.tolist()) == {0, 1, 2, 3, 4} and set(att.tolist()) == {0, 1, 2}
    assert (np.diff(ref) >= 0).all() and (np.diff(att) >= 0).all() and (np.diff(rows) > 0).all()
    # Every step has a real frame on at least one side; the other is its nearest (halves up).
    i, j = path[rows, 0], path[rows, 1]
    assert ((i % 2 == 0) | (j % 2 == 0)).all()
    assert (ref == (i + 1) // 2).all() and (att == (j + 1) // 2).all()
    # Entry (3, 1) is a half sample on both sides: not a step.
    assert 3 not in rows.tolist()


def test_steps_prefer_entries_where_both_sides_are_real_frames():
    path = np.array([(0, 0), (0, 1), (1, 1), (2, 2)])  # factor 2 on both sides
    rows, ref, att = _frame_steps(path, 2, 2)
    # (0, 1) and (1, 1) round to the pair (0, 1) and (1, 1); (2, 2) is both real.
    assert list(zip(ref.tolist(), att.tolist())) == sorted(set(zip(ref.tolist(), att.tolist())))
    assert rows[-1] == 3 and (ref[-1], att[-1]) == (1, 1)
