"""The archive benchmark's pieces on a small archive (the 100- and 1,000-hour runs are benchmarks,
not tests): it builds, opens, searches, and measures float16 against float32."""

import numpy as np

from bench import archive as bench


def _tracks(rng):
    """Stand-ins for vtest.avi's pose tracks (the benchmark extracts those with the pose model)."""
    tracks = []
    for length in (40, 60, 90):
        poses = 300 + np.cumsum(rng.normal(0, 4, (length, 17, 3)), axis=0).astype(np.float32)
        poses[..., 2] = rng.uniform(0.4, 1.0, (length, 17))
        tracks.append(poses)
    return tracks


def test_the_archive_benchmark_runs_on_a_small_archive(tmp_path):
    rng = np.random.default_rng(3)
    tracks = _tracks(rng)
    built = bench.build(tmp_path / "h", 0.6, tracks)  # 4 ten-minute videos (0.67 h), 72,000 poses
    assert built["poses"] == 4 * bench.VIDEO_FRAMES and built["bytes_per_pose"] < 240
    assert bench.build(tmp_path / "h", 0.6, tracks) == built  # cached
    seconds, anon = bench.open_figures(tmp_path / "h")
    assert seconds < 5 and anon < 50e6
    from posescore.engine.archive import open_archive
    from posescore.engine.archive import search_archive

    archive = open_archive(tmp_path / "h")
    queries = bench.pose_queries(rng, tracks, 4)
    assert bench.float16_effect(archive, queries)[1] <= 0.1
    times, held = bench.faiss_times(archive, queries, 10**9)
    assert held == built["poses"] and len(times) == 4
    rare = bench.rare_movement(tracks)
    hits = search_archive(archive, bench._warp(rare[::3], 1.0)[:60], k=3, query_fps=bench.FPS)
    assert hits and hits[0]["score"] > 90  # the planted movement
    assert bench.read_floor(archive) > 0
