"""Live benchmarks: ``python -m bench.live [--streams 500] [--server-streams 8,32,64] [--abandoned 10000]``.

1. The step kernel (``kernels.spring_step``): streams x 2 lanes (forwards, backwards) advanced by
   a frame against 100-frame references, per stream; beside it the offline way, the subsequence
   DTW of the stream's last window computed again at each frame (``kernels.subsequence_dtw``).
2. The pool (``engine.analysis.live.LivePool.step``): the same streams of poses, the Python around
   the kernel (normalizing, phase, running score, worst part), per stream and frame.
3. The server: ``posescore loadtest --mix live=1 --streams N`` for each N (30 fps streams of real
   poses, every repetition checked against reps' offline answer): frame-to-event p50/p99.
4. Memory: the live stub's resident memory before and after ``--abandoned`` streams were started
   and left without END, once the idle time (2 s here) has freed them.

Nothing is asserted; the figures go to docs/BENCHMARKS.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from posescore import kernels


def bench_kernel(streams: int, reference: int = 100, frames: int = 60) -> dict:
    rng = np.random.default_rng(0)
    lanes = 2 * streams
    refs = rng.standard_normal((lanes * reference, 34)).astype(np.float32)
    state = kernels.SpringState()
    state.add(list(refs.reshape(lanes, reference, 34)), 1.0, 30)
    stream = rng.standard_normal((frames, lanes, 34)).astype(np.float32)
    kernels.spring_step(state, np.arange(lanes), stream[0], np.zeros(lanes, np.int64))  # compile
    began = time.perf_counter()
    for j in range(1, frames):
        kernels.spring_step(state, np.arange(lanes), stream[j], np.full(lanes, j, np.int64))
    step = (time.perf_counter() - began) / (frames - 1)
    # The offline way: a window of twice the reference, searched again at each frame (a few streams).
    window = rng.standard_normal((2 * reference, 34)).astype(np.float32)
    kernels.subsequence_dtw(refs[:reference], window, k=1)
    began = time.perf_counter()
    for _ in range(20):
        kernels.subsequence_dtw(refs[:reference], window, k=1)
    offline = (time.perf_counter() - began) / 20
    return {"streams": streams, "reference_frames": reference, "call_ms": step * 1e3,
            "per_stream_us": step / streams * 1e6, "offline_per_stream_us": 2 * offline * 1e6}


def bench_pool(streams: int, frames: int = 60) -> dict:
    from posescore.engine.analysis.live import LivePool
    from posescore.loadtests.workload import synthetic_movement

    rng = np.random.default_rng(1)
    pool = LivePool()
    movements = [synthetic_movement(rng, 100 + frames) for _ in range(streams)]
    for n, movement in enumerate(movements):
        pool.open(str(n), movement[:100], 30.0, 30.0)
    pool.step([(str(n), m[100], 0.0, 0) for n, m in enumerate(movements)])
    began = time.perf_counter()
    for j in range(1, frames):
        pool.step([(str(n), m[100 + j], j / 30.0, j) for n, m in enumerate(movements)])
    per = (time.perf_counter() - began) / (frames - 1)
    return {"streams": streams, "step_ms": per * 1e3, "per_stream_us": per / streams * 1e6}


def bench_server(counts: list[int], duration: float) -> list[dict]:
    from posescore.loadtests.options import LoadTestOptions
    from posescore.loadtests.runner import run_loadtest

    rows = []
    for n in counts:
        out = Path(tempfile.mkdtemp(prefix="bench-live-"))
        code, report = run_loadtest(LoadTestOptions(mix={"live": 1}, streams=n, duration=duration, out=str(out),
                                                    max_requests=0, quiet=True))
        live = report["tasks"]["live"]
        rows.append({"streams": n, "frames_per_s": live["rps"], "p50_ms": live["p50_ms"], "p99_ms": live["p99_ms"],
                     "failures": live["failures"], "wrong": live["wrong_answers"], "exit": code})
        shutil.rmtree(out, ignore_errors=True)
    return rows


def _rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", text).group(1)) / 1024


def bench_abandoned(count: int) -> dict:
    from posescore.clients.live import AsyncLiveSession
    from posescore.engine.serving.server import DEFAULT_MODEL_REPOSITORY, TritonServer
    from posescore.loadtests.workload import synthetic_movement

    repository = Path(tempfile.mkdtemp(prefix="bench-live-repo-"))
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "live", repository / "live")
    config = repository / "live" / "config.pbtxt"
    text = re.sub(r"max_sequence_idle_microseconds: \d+", "max_sequence_idle_microseconds: 2000000", config.read_text())
    config.write_text(text.replace('string_value: "4096"', f'string_value: "{count + 10}"'))
    reference = synthetic_movement(np.random.default_rng(2), 30)
    with TritonServer(model_repository=repository, models=["live"]) as server:
        (stub,) = server.stub_pids("live")

        async def wave(n):
            sessions = []
            for start in range(0, n, 200):
                sessions += await asyncio.gather(*[AsyncLiveSession.open(server.grpc_url, reference, reference_fps=30.0)
                                                   for _ in range(min(200, n - start))])
                for session in sessions[-200:]:
                    await session.send(reference[0], 0.0, 0)
                    await session.close()  # gone without END

        async def one():
            session = await AsyncLiveSession.open(server.grpc_url, reference, reference_fps=30.0)
            await session.end()

        asyncio.run(one())
        before = _rss_mb(stub)
        began = time.perf_counter()
        asyncio.run(wave(count))
        opened = time.perf_counter() - began
        held = _rss_mb(stub)
        time.sleep(3.0)
        asyncio.run(one())  # the next request frees the idle ones
        freed = _rss_mb(stub)
        asyncio.run(wave(count))
        time.sleep(3.0)
        asyncio.run(one())
        again = _rss_mb(stub)
    shutil.rmtree(repository, ignore_errors=True)
    return {"abandoned": count, "start_s": opened, "rss_before_mb": before, "rss_holding_mb": held,
            "rss_after_idle_mb": freed, "rss_after_second_wave_mb": again}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--server-streams", default="8,32,64")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--abandoned", type=int, default=10_000)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: kernel,pool,server,memory")
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    print(f"# bench.live on {platform.node()}: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}")
    if "kernel" not in skip:
        k = bench_kernel(args.streams)
        print(f"kernel: {k['streams']} streams x 2 lanes, {k['reference_frames']}-frame references: "
              f"{k['call_ms']:.2f} ms per call, {k['per_stream_us']:.2f} us per stream "
              f"(offline search of the last window again per frame: {k['offline_per_stream_us']:.0f} us)")
    if "pool" not in skip:
        p = bench_pool(args.streams)
        print(f"pool: {p['streams']} streams: {p['step_ms']:.1f} ms per step, {p['per_stream_us']:.0f} us per "
              f"stream and frame")
    if "server" not in skip:
        print("server: streams  frames/s  p50 ms  p99 ms  failures  wrong")
        for row in bench_server([int(n) for n in args.server_streams.split(",")], args.duration):
            print(f"        {row['streams']:7d}  {row['frames_per_s']:8.1f}  {row['p50_ms']:6.1f}  {row['p99_ms']:6.1f}"
                  f"  {row['failures']:8d}  {row['wrong']:5d}")
    if "memory" not in skip:
        m = bench_abandoned(args.abandoned)
        print(f"memory: {m['abandoned']} streams started and abandoned (in {m['start_s']:.1f} s): stub RSS "
              f"{m['rss_before_mb']:.0f} MB before, {m['rss_holding_mb']:.0f} MB holding them, "
              f"{m['rss_after_idle_mb']:.0f} MB after the idle time, {m['rss_after_second_wave_mb']:.0f} MB after "
              f"a second wave")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
