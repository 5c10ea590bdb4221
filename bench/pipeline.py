"""Pipeline benchmark, side by side in one run: ``posescore index`` on vtest.avi vs onnxruntime
in-process on the same decoded frames. (The archive's figures: ``python -m bench.archive``.)

    python -m bench.pipeline [--seconds 30]

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


from bench.serving import decode_frames, in_process_fps
from posescore.engine.media.samples import SAMPLE_VIDEO


def index_fps(video: Path, url: str, archive: Path) -> tuple[float, int]:
    from posescore.clients import PoseScoreClient
    from posescore.engine.jobs.index import index_job

    with PoseScoreClient(url, timeout=600) as client:
        start = time.perf_counter()
        result = index_job([video], archive, client)
        elapsed = time.perf_counter() - start
    frames = result["videos"][0]["frames"]
    return frames / elapsed, frames


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="seconds of vtest.avi to index")
    args = parser.parse_args(argv)

    from posescore.engine.serving.export import onnx_path
    from posescore.engine.serving.server import TritonServer
    from posescore.engine.media.encode import retime_video

    with tempfile.TemporaryDirectory(prefix="posescore-bench-") as tmp:
        tmp = Path(tmp)
        clip = retime_video(SAMPLE_VIDEO, tmp / "clip.mp4", 1.0, start=40.0, duration=args.seconds)
        frames = decode_frames(str(clip), 10_000)
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {len(frames)} frames of "
              f"{frames.shape[2]}x{frames.shape[1]} ({args.seconds:g} s of vtest.avi)")
        local = in_process_fps(frames, str(onnx_path()), repeat=1)
        with TritonServer(models=["pose"]) as server:
            indexed, count = index_fps(clip, server.grpc_url, tmp / "archive")
    print(f"{'index (decode + gRPC + model + track + write)':48} {indexed:8.1f} frames/s")
    print(f"{'onnxruntime in-process, frames in memory':48} {local:8.1f} frames/s   ratio "
          f"{indexed / local:.2f}x (target >= 0.8x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
