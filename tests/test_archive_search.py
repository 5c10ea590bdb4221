"""Movement search over an archive of many tracks: few batched subsequence_dtw calls give what
one call per track gives."""

import numpy as np
import pytest

import kernels
from engine import archive as archive_io


def _walks(rng, tracks, length):
    """Smooth random-walk poses ``[tracks * length, 17, 3]`` (pixels, confidences in [0.3, 1])."""
    steps = rng.normal(0, 3, (tracks, length, 17, 3)).astype(np.float32)
    poses = (200 + np.cumsum(steps, axis=1)).reshape(-1, 17, 3)
    poses[..., 2] = rng.uniform(0.3, 1.0, poses.shape[:2])
    return poses


@pytest.fixture(scope="module")
def many_tracks(tmp_path_factory):
    """Two videos, 60 tracks of 1-40 frames (ragged, one-frame tracks too), and the query."""
    rng = np.random.default_rng(31)
    root = tmp_path_factory.mktemp("archive")
    for video in range(2):
        lengths = rng.integers(1, 41, 30)
        poses = np.concatenate([_walks(rng, 1, n) for n in lengths])
        frames = np.concatenate([np.arange(n) for n in lengths])
        tracks = np.repeat(np.arange(30), lengths)
        archive_io.add_video(root, f"v{video}", f"v{video}.mp4", poses, frames, frames / 30.0, tracks)
    archive = archive_io.load_archive(root)
    indices = next(idx for idx, video in archive.sequences() if video == 1 and len(idx) >= 30)
    poses = np.concatenate([np.load(root / "shards" / f"v{v}" / "poses.npy") for v in range(2)])
    return archive, poses[indices[5:17]], indices


def _one_call_per_track(archive, query, k):
    """The search as one subsequence_dtw call per (video, track): the reference."""
    q_vec, _ = kernels.normalize(query)
    found = []
    for indices, _ in archive.sequences():
        if len(indices) < 2:
            continue
        costs, starts, ends = kernels.subsequence_dtw(q_vec, archive.vectors[indices], k=k)
        for cost, s, e in zip(costs, starts, ends):
            found.append((round(float(cost), 6), int(indices[s]), int(indices[e - 1])))
    return sorted(found)[:k]


@pytest.mark.parametrize("batch", [1_000_000, 150, 1])
def test_batched_movement_search_equals_one_call_per_track(many_tracks, batch, monkeypatch):
    archive, query, planted = many_tracks
    monkeypatch.setattr(archive_io, "SEARCH_BATCH_POSES", batch)  # one batch, several, one per track
    matches = archive_io.search_archive(archive, query, k=8)
    want = _one_call_per_track(archive, query, 8)
    got_spans = [(m["video"], m["track"], m["start_frame"], m["end_frame"]) for m in matches]
    want_spans = [(int(archive.video_index[s]), int(archive.tracks[s]), int(archive.frames[s]),
                   int(archive.frames[e])) for _, s, e in want]
    assert got_spans == want_spans
    assert got_spans[0] == (1, int(archive.tracks[planted[0]]), 5, 16) and matches[0]["score"] > 99.9
    assert [m["score"] for m in matches] == sorted((m["score"] for m in matches), reverse=True)
