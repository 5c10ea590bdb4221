"""Serving benchmarks, side by side in one run: the pose model through Triton vs onnxruntime
in-process on the same frames, and scoring 1 query vs 1,000 candidates over gRPC.

    python -m bench.serving [--frames 96] [--clients 4] [--seconds 10]

Pose: real frames of vtest.avi (Debian's opencv-doc), decoded once with PyAV. In-process runs the
pose service's own answer (engine.analysis.answers.PoseDetector: letterbox, ONNX model, decoding) in
batches of 16; the server gets the frames from several concurrent clients (batches of 4 frames,
which Triton's dynamic batcher merges). Scoring: concurrent clients, each sending one request
after another; latency percentiles over all requests.
"""

from __future__ import annotations

import argparse
import platform
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from posescore.engine.media.samples import SAMPLE_VIDEO



def decode_frames(path: str, count: int) -> np.ndarray:
    """The first ``count`` frames of ``path`` as RGB uint8 ``[count, H, W, 3]`` (fewer if shorter)."""
    from posescore.engine.media.video import iter_frames

    return np.stack([frame.rgb for frame, _ in zip(iter_frames(path), range(count))])


def in_process_fps(frames: np.ndarray, onnx_file: str, batch: int = 16, repeat: int = 2) -> float:
    """Frames per second of the pose service's answer (engine.analysis.answers.PoseDetector: letterbox,
    onnxruntime, decoding) in this process."""
    from posescore.engine.serving.detector import PoseDetector

    detector = PoseDetector(onnx_file)

    def run_all():
        for start in range(0, len(frames), batch):
            detector.detect(frames[start:start + batch])

    run_all()  # warm-up (numba compilation, onnxruntime allocations)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run_all()
        best = min(best, time.perf_counter() - start)
    return len(frames) / best


def server_fps(url: str, frames: np.ndarray, clients: int, batch: int = 4, repeat: int = 2) -> float:
    """Frames per second through the server from ``clients`` concurrent clients."""
    from posescore.clients import PoseScoreClient

    chunks = [frames[i:i + batch] for i in range(0, len(frames), batch)]
    connections = [PoseScoreClient(url) for _ in range(clients)]

    def work(worker):
        for chunk in chunks[worker::clients]:
            connections[worker].pose(chunk)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(work, range(clients)))  # warm-up
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            list(pool.map(work, range(clients)))
            best = min(best, time.perf_counter() - start)
    for connection in connections:
        connection.close()
    return len(frames) / best


def scoring_latency(url: str, clients: int, seconds: float, candidates: int = 1000) -> dict:
    """Requests/s and latency percentiles (ms) of scoring 1 query vs ``candidates`` poses."""
    from posescore.clients import PoseScoreClient

    rng = np.random.default_rng(0)
    poses = rng.uniform(0, 500, (candidates, 17, 3)).astype(np.float32)
    poses[..., 2] = rng.uniform(0.4, 1.0, (candidates, 17))
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def work(worker):
        own = []
        with PoseScoreClient(url) as client:
            client.score(poses[worker], poses)  # warm-up
            while time.perf_counter() < stop_at:
                start = time.perf_counter()
                client.score(poses[worker], poses)
                own.append(time.perf_counter() - start)
        with lock:
            latencies.extend(own)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(work, range(clients)))
    elapsed = time.perf_counter() - start
    ms = np.array(latencies) * 1e3
    return {"requests": len(ms), "rps": len(ms) / elapsed, "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99))}


def in_process_scoring(clients: int, seconds: float, candidates: int = 1000) -> dict:
    """Requests/s of the score service's answer (engine.analysis.answers.score_answer) computed in this
    process by ``clients`` threads, each one answer after another: the server's ceiling."""
    from posescore.engine.analysis.answers import score_answer

    rng = np.random.default_rng(0)
    poses = rng.uniform(0, 500, (candidates, 17, 3)).astype(np.float32)
    poses[..., 2] = rng.uniform(0.4, 1.0, (candidates, 17))
    score_answer(poses[0], poses)  # warm-up
    counts = [0] * clients
    stop_at = time.perf_counter() + seconds

    def work(worker):
        while time.perf_counter() < stop_at:
            score_answer(poses[worker], poses)
            counts[worker] += 1

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(work, range(clients)))
    return {"requests": sum(counts), "rps": sum(counts) / (time.perf_counter() - start)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=96, help="vtest.avi frames to run")
    parser.add_argument("--clients", type=int, default=4, help="concurrent gRPC clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the scoring run")
    parser.add_argument("--video", default=str(SAMPLE_VIDEO))
    args = parser.parse_args(argv)

    from posescore.engine.serving.export import onnx_path
    from posescore.engine.serving.server import TritonServer

    frames = decode_frames(args.video, args.frames)
    print(f"machine: {platform.machine()}, {__import__('os').cpu_count()} cores; "
          f"{len(frames)} frames of {frames.shape[2]}x{frames.shape[1]}")
    local = in_process_fps(frames, str(onnx_path()))
    with TritonServer(models=["pose", "score"]) as server:
        served = server_fps(server.grpc_url, frames, args.clients)
        scoring = scoring_latency(server.grpc_url, args.clients, args.seconds)
    print(f"{'pose: onnxruntime in-process':44} {local:8.1f} frames/s")
    print(f"{'pose: Triton, ' + str(args.clients) + ' clients, dynamic batching':44} {served:8.1f} frames/s"
          f"   ratio {served / local:.2f}x (target >= 0.8x)")
    local_scoring = in_process_scoring(args.clients, args.seconds)
    print(f"{'score 1 vs 1000, ' + str(args.clients) + ' clients':44} {scoring['rps']:8.1f} requests/s"
          f"   p50 {scoring['p50']:.1f} ms   p99 {scoring['p99']:.1f} ms   ({scoring['requests']} requests)")
    print(f"{'score 1 vs 1000 in-process, ' + str(args.clients) + ' threads':44} {local_scoring['rps']:8.1f} requests/s"
          f"   ratio {scoring['rps'] / local_scoring['rps']:.2f}x (target >= 0.5x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
