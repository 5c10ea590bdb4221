"""Pipeline benchmarks, side by side in one run: ``posescore index`` on vtest.avi vs onnxruntime
in-process on the same decoded frames, the load time of a 1M-pose archive, and a movement search
over an archive of many short tracks.

    python -m bench.pipeline [--seconds 30] [--poses 1000000] [--tracks 2000]

``index`` pays for decoding (PyAV), transport (gRPC to the embedded server, which runs the
model), tracking and the archive write on top of the model; the in-process figure is letterbox +
onnxruntime + decoding on frames already in memory (batches of 16).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.serving import decode_frames, in_process_fps
from engine.media import SAMPLE_VIDEO


def index_fps(video: Path, url: str, archive: Path) -> tuple[float, int]:
    from clients import PoseScoreClient
    from engine.jobs import index_job

    with PoseScoreClient(url, timeout=600) as client:
        start = time.perf_counter()
        result = index_job([video], archive, client)
        elapsed = time.perf_counter() - start
    frames = result["videos"][0]["frames"]
    return frames / elapsed, frames


def archive_load_seconds(folder: Path, poses: int, per_video: int = 100_000) -> float:
    """Write an archive of ``poses`` synthetic poses (shards of ``per_video``), time loading it."""
    from engine.archive import add_video, load_archive

    rng = np.random.default_rng(0)
    for n, start in enumerate(range(0, poses, per_video)):
        count = min(per_video, poses - start)
        keypoints = rng.uniform(0, 500, (count, 17, 3)).astype(np.float32)
        keypoints[..., 2] = rng.uniform(0.2, 1.0, (count, 17))
        add_video(folder, f"video{n:04d}", f"video{n:04d}.mp4", keypoints, np.arange(count),
                  np.arange(count) / 30.0)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        archive = load_archive(folder)
        best = min(best, time.perf_counter() - start)
    assert len(archive) == poses
    return best


def clip_search_seconds(folder: Path, tracks: int, length: int = 100, videos: int = 10,
                        query_frames: int = 30) -> tuple[float, float, int]:
    """A 30-frame movement searched in an archive of ``tracks`` random-walk tracks of ``length``
    poses: ``search_archive`` (tracks batched into few subsequence_dtw calls) and one call per
    track (as before), best of 3 each (``bench.kernels.best_time``); the two must find the same
    matches."""
    from bench.kernels import best_time
    from engine.archive import add_video, load_archive, search_archive
    from kernels import normalize, subsequence_dtw

    rng = np.random.default_rng(1)
    per_video = tracks // videos
    for v in range(videos):
        steps = rng.normal(0, 3, (per_video, length, 17, 3)).astype(np.float32)
        poses = (200 + np.cumsum(steps, axis=1)).reshape(-1, 17, 3)
        poses[..., 2] = rng.uniform(0.3, 1.0, poses.shape[:2])
        frames = np.tile(np.arange(length), per_video)
        add_video(folder, f"v{v}", f"v{v}.mp4", poses, frames, frames / 30.0,
                  np.repeat(np.arange(per_video), length))
    archive = load_archive(folder)
    query = np.load(folder / "shards" / "v3" / "poses.npy")[7 * length + 10:7 * length + 10 + query_frames]
    q_vec, _ = normalize(query)

    def per_track():
        found = []
        for indices, _ in archive.sequences():
            costs, starts, ends = subsequence_dtw(q_vec, archive.vectors[indices], k=10)
            found += [(float(c), int(indices[s_]), int(indices[e - 1]))
                      for c, s_, e in zip(costs, starts, ends)]
        return sorted(found)[:10]

    batched = best_time(lambda: search_archive(archive, query, k=10), 3)
    single = best_time(per_track, 3)
    matches, reference = search_archive(archive, query, k=10), per_track()
    assert [(m["start_frame"], m["end_frame"]) for m in matches] == \
        [(int(archive.frames[s_]), int(archive.frames[e])) for _, s_, e in reference]
    return batched, single, len(archive)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of vtest.avi to index")
    parser.add_argument("--poses", type=int, default=1_000_000, help="poses in the archive-load test")
    parser.add_argument("--tracks", type=int, default=2_000, help="100-pose tracks in the search test")
    args = parser.parse_args(argv)

    from engine.export import onnx_path
    from engine.server import TritonServer
    from engine.encode import retime_video

    with tempfile.TemporaryDirectory(prefix="posescore-bench-") as tmp:
        tmp = Path(tmp)
        clip = retime_video(SAMPLE_VIDEO, tmp / "clip.mp4", 1.0, start=40.0, duration=args.seconds)
        frames = decode_frames(str(clip), 10_000)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {len(frames)} frames of "
              f"{frames.shape[2]}x{frames.shape[1]} ({args.seconds:g} s of vtest.avi)")
        local = in_process_fps(frames, str(onnx_path()), repeat=1)
        with TritonServer(models=["pose"]) as server:
            indexed, count = index_fps(clip, server.grpc_url, tmp / "archive")
        load = archive_load_seconds(tmp / "big", args.poses)
        batched, per_track, poses = clip_search_seconds(tmp / "tracks", args.tracks)
    print(f"{'index (decode + gRPC + model + track + write)':48} {indexed:8.1f} frames/s")
    print(f"{'onnxruntime in-process, frames in memory':48} {local:8.1f} frames/s   ratio "
          f"{indexed / local:.2f}x (target >= 0.8x)")
    print(f"{'load an archive of ' + format(args.poses, ',') + ' poses':48} {load:8.3f} s (target < 1 s)")
    print(f"{'movement search, ' + format(args.tracks, ',') + ' tracks, ' + format(poses, ',') + ' poses':48} "
          f"{batched:8.3f} s   one call per track {per_track:.3f} s, ratio {per_track / batched:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
