"""What the gRPC front costs: ``python -m bench.grpc_front [--rounds 6] [--calls 50]``.

One server (score and live). Each round sends ``calls`` sequential requests of each kind through
the front (the public port) and as many straight to Triton's private port (with the front's key),
in turn, so that the machine's drift hits both alike; the medians per call and their difference
are printed. Kinds: a score request of 1 candidate, of 1,000, of 100,000 (20 MB), and a live frame
on an open stream (the round trip of one frame). Nothing is asserted; the figures go to
docs/BENCHMARKS.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import statistics
import time

import numpy as np
import tritonclient.grpc as grpcclient

from posescore.engine.serving.server import TritonServer


def _input(name, array, datatype="FP32"):
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _pose_array(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    poses = rng.uniform(0, 400, (count, 17, 3)).astype(np.float32)
    poses[..., 2] = 0.9
    return poses


def _score_calls(client, headers, count: int, calls: int) -> list[float]:
    poses = _pose_array(max(count, 1))
    inputs = [_input("query", poses[:1]), _input("candidates", poses[None, :count])]
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        client.infer("score", inputs, headers=headers)
        times.append(time.perf_counter() - start)
    return times


def _live_calls(client, headers, calls: int, sequence: int) -> list[float]:
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put(error), headers=headers)
    reference = _pose_array(30, seed=1)
    times = []
    try:
        for n in range(calls + 1):
            inputs = [_input("pose", reference[None, n % 30: n % 30 + 1]), _input("time", np.array([[n / 30]]), "FP64")]
            if n == 0:
                inputs.append(_input("reference", reference[None]))
                inputs.append(_input("options", np.array([[b'{"reference_fps": 30, "fps": 30}']], np.object_),
                                     "BYTES"))
            start = time.perf_counter()
            client.async_stream_infer("live", inputs, sequence_id=sequence, sequence_start=n == 0,
                                      sequence_end=n == calls)
            error = answers.get(timeout=30)
            if error is not None:
                raise error
            if n:
                times.append(time.perf_counter() - start)
    finally:
        client.stop_stream()
    return times


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args(argv)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}")
    with TritonServer(models=["score", "live"]) as server:
        front = grpcclient.InferenceServerClient(server.grpc_url, channel_args=[("grpc.max_send_message_length", -1)])
        direct = grpcclient.InferenceServerClient(f"{server.host}:{server._backend_grpc_port}",
                                                  channel_args=[("grpc.max_send_message_length", -1)])
        key = server._front_headers
        kinds = {"score, 1 candidate": lambda c, h: _score_calls(c, h, 1, args.calls),
                 "score, 1,000 candidates": lambda c, h: _score_calls(c, h, 1000, args.calls),
                 "score, 100,000 candidates (20 MB)": lambda c, h: _score_calls(c, h, 100_000, args.calls // 5),
                 "live, one frame on a stream": None}
        results = {kind: {"front": [], "direct": []} for kind in kinds}
        sequence = 1
        for kind, run in kinds.items():  # warm both paths up
            for client, headers in ((front, None), (direct, key)):
                sequence += 1
                run(client, headers) if run else _live_calls(client, headers, 5, sequence)
        for _ in range(args.rounds):
            for kind, run in kinds.items():
                for path, client, headers in (("front", front, None), ("direct", direct, key)):
                    sequence += 1
                    times = run(client, headers) if run else _live_calls(client, headers, args.calls, sequence)
                    results[kind][path] += times
        print(f"{'request':36} {'through the front':>18} {'straight to Triton':>19} {'difference':>11}")
        for kind, paths in results.items():
            via, straight = (statistics.median(paths[p]) * 1e3 for p in ("front", "direct"))
            print(f"{kind:36} {via:15.2f} ms {straight:16.2f} ms {via - straight:+8.2f} ms")
        front.close()
        direct.close()


if __name__ == "__main__":
    main()
