"""Pipeline benchmarks, side by side in one run: ``posescore index`` on vtest.avi vs onnxruntime
in-process on the same decoded frames, and the load time of a 1M-pose archive.

    python -m bench.pipeline [--seconds 30] [--poses 1000000]

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

from bench.serving import SAMPLE_VIDEO, decode_frames, in_process_fps


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of vtest.avi to index")
    parser.add_argument("--poses", type=int, default=1_000_000, help="poses in the archive-load test")
    args = parser.parse_args(argv)

    from engine.export import onnx_path
    from engine.server import TritonServer
    from engine.video import retime_video

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
    print(f"{'index (decode + gRPC + model + track + write)':48} {indexed:8.1f} frames/s")
    print(f"{'onnxruntime in-process, frames in memory':48} {local:8.1f} frames/s   ratio "
          f"{indexed / local:.2f}x (target >= 0.8x)")
    print(f"{'load an archive of ' + format(args.poses, ',') + ' poses':48} {load:8.3f} s (target < 1 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
