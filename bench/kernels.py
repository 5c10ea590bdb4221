"""Kernel benchmarks, ours beside the peer in the same run: ``python -m bench.kernels``.

Prints one table (best of ``--repeat`` runs each). Nothing here is asserted: the figures go to
docs/BENCHMARKS.md with the machine they ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from kernels import dtw, search_topk, subsequence_dtw
from kernels._backend import cupy_or_none


def best_time(fn, repeat):
    fn()  # warm-up: numba compilation, caches, thread pools
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def unit_rows(rng, n, d=34, dtype=np.float32):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def bench_dtw(rng, repeat, rows):
    from dtaidistance import dtw_ndim

    B, T, D = 1000, 300, 34
    a = rng.standard_normal((B, T, D)).astype(np.float32)
    b = rng.standard_normal((B, T, D)).astype(np.float32)
    cells = B * T * T
    ours = cells / best_time(lambda: dtw(a, b), repeat)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    n_serial = 100
    serial = n_serial * T * T / best_time(
        lambda: [dtw_ndim.distance_fast(a64[p], b64[p]) for p in range(n_serial)], repeat)
    # dtaidistance's parallel mode is its OpenMP distance matrix: a 20 x 20 block of the pairs.
    series = [x for x in a64[:20]] + [x for x in b64[:20]]
    parallel = 400 * T * T / best_time(
        lambda: dtw_ndim.distance_matrix_fast(series, block=((0, 20), (20, 40)), parallel=True,
                                              compact=True), repeat)
    peer = max(serial, parallel)
    mode = "parallel" if parallel > serial else "serial"
    rows.append(("DTW 1000 x (300x34)^2, cells/s", f"{ours:.3g}", f"{peer:.3g} ({mode}; serial {serial:.3g})",
                 ours / peer, ">= 5x"))


def bench_search(rng, repeat, rows):
    import faiss

    faiss.cvar.distance_compute_blas_threshold = 20
    base = unit_rows(rng, 1_000_000)
    queries = unit_rows(rng, 100)
    ours = best_time(lambda: search_topk(queries, base, 10, metric="ip"), repeat)
    index = faiss.IndexFlatIP(34)
    index.add(base)
    peer = best_time(lambda: index.search(queries, 10), repeat)
    rows.append(("top-10, 1M x 34, 100 queries, s", f"{ours:.4f}", f"{peer:.4f} (faiss IndexFlatIP)",
                 peer / ours, ">= 1x"))


def bench_subsequence(rng, repeat, rows):
    from dtaidistance.subsequence.subsequencealignment import subsequence_alignment

    query = rng.standard_normal((90, 34)).astype(np.float32)
    series = rng.standard_normal((108_000, 34)).astype(np.float32)
    ours = best_time(lambda: subsequence_dtw(query, series, k=1), repeat)
    q64, s64 = query.astype(np.float64), series.astype(np.float64)
    peer = best_time(lambda: subsequence_alignment(q64, s64, use_c=True).best_match(), max(1, repeat // 2))
    rows.append(("subsequence DTW 90 in 108,000 x 34, s", f"{ours:.4f}",
                 f"{peer:.4f} (dtaidistance subsequence_alignment)", peer / ours, ">= 5x, < 0.030 s"))


def bench_gpu(rng, repeat, rows):
    cp = cupy_or_none()
    try:
        cp.zeros(1)
    except Exception:  # noqa: BLE001 - no device
        cp = None
    if cp is None:
        rows.append(("GPU", "skipped", "no CuPy with a CUDA device here", float("nan"), ""))
        return

    def sync_time(fn):
        def run():
            fn()
            cp.cuda.Device().synchronize()
        return best_time(run, repeat)

    B, T, D = 4000, 300, 34
    a = cp.asarray(rng.standard_normal((B, T, D)).astype(np.float32))
    b = cp.asarray(rng.standard_normal((B, T, D)).astype(np.float32))
    rate = B * T * T / sync_time(lambda: dtw(a, b))
    rows.append(("GPU DTW 4000 x (300x34)^2, cells/s", f"{rate:.3g}", "target 1e12 on an H100", rate / 1e12, ">= 1x"))
    n = 100_000_000
    base = cp.empty((n, 34), cp.float16)
    for lo in range(0, n, 10_000_000):
        base[lo:lo + 10_000_000] = cp.asarray(unit_rows(rng, 10_000_000, dtype=np.float16))
    query = cp.asarray(unit_rows(rng, 1))
    t = sync_time(lambda: search_topk(query, base, 10))
    copy = sync_time(lambda: base.copy())
    floor = copy / 2  # a copy reads and writes the base once; the search only reads it
    rows.append(("GPU top-10 in 100M x 34 fp16, s/query", f"{t:.4f}", f"{floor:.4f} (read floor)", floor / t, ">= 0.5x"))
    del base
    frames = 108_000_000  # 1,000 hours at 30 fps
    series = cp.random.standard_normal((frames, 34), dtype=cp.float32)
    clip = cp.asarray(rng.standard_normal((90, 34)).astype(np.float32))
    t = sync_time(lambda: subsequence_dtw(clip, series, k=1))
    rows.append(("GPU subsequence DTW 90 in 108M x 34, s/query", f"{t:.3f}", f"{90 * frames / t:.3g} cells/s",
                 float("nan"), ""))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["dtw", "search", "subsequence", "gpu"], nargs="*")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows: list[tuple] = []
    benches = {"dtw": bench_dtw, "search": bench_search, "subsequence": bench_subsequence, "gpu": bench_gpu}
    for name, fn in benches.items():
        if not args.only or name in args.only:
            fn(rng, args.repeat, rows)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"numpy {np.__version__}")
    header = ("benchmark", "posescore", "peer (same run)", "ratio", "target")
    widths = [max(len(str(r[i])) if i != 3 else 6 for r in rows + [header]) for i in range(5)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in rows:
        cells = [r[0], r[1], r[2], f"{r[3]:.2f}x" if r[3] == r[3] else "-", r[4]]
        print("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)))


if __name__ == "__main__":
    main()
