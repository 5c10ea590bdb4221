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

from posescore.kernels import cupy_or_none, dtw, search_topk, subsequence_dtw


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


def copy_bandwidth(xp, repeat, nbytes=1 << 28):
    """Bytes per second a plain copy moves (read + write) on ``xp``, best of ``repeat``."""
    src = xp.ones(nbytes // 4, xp.float32)
    dst = xp.empty_like(src)
    sync = (lambda: xp.cuda.Device().synchronize()) if xp is not np else (lambda: None)

    def run():
        dst[...] = src
        sync()
    return 2 * nbytes / best_time(run, repeat)


def bench_pose(rng, repeat, rows, n=1_000_000):
    """Each per-pose kernel on ``n`` poses beside the memory floor measured in the same run (bytes
    read and written / a copy's bandwidth) and the plain NumPy version (bench.pose_numpy)."""
    from bench import pose_numpy as ref
    from bench.pose_numpy import mirror as ref_mirror
    from posescore.kernels import (aligned_part_scores, consistent_keypoints, interpolate_frames, mirror_vectors,
                                   normalize, part_scores, pose_scores)

    xy = rng.uniform(0, 640, (n, 17, 2))
    conf = rng.uniform(0.0, 1.0, (n, 17, 1))  # ~30% under the threshold: missing
    poses = np.concatenate([xy, conf], axis=-1).astype(np.float32)
    v, w = normalize(poses)
    half = n // 2
    path = np.stack([np.arange(n) // 2, np.arange(n) // 2], axis=1).astype(np.int64)
    pose_bytes, vec_bytes = 17 * 3 * 4, (34 + 17) * 4
    bandwidth = copy_bandwidth(np, repeat)
    cases = [
        ("normalize bbox", lambda: normalize(poses), lambda: ref.normalize(poses), n * (pose_bytes + vec_bytes)),
        ("normalize torso", lambda: normalize(poses, "torso"), lambda: ref.normalize(poses, "torso"),
         n * (pose_bytes + vec_bytes)),
    ]
    for metric in ("cosine", "weighted_l1", "weighted_l2"):
        for flip in (False, True):
            cases.append((f"pose_scores {metric}{' mirror' if flip else ''}",
                          lambda m=metric, f=flip: pose_scores(v[0], w[0], v, w, metric=m, mirror=f),
                          lambda m=metric, f=flip: ref.pose_scores(v[0], w[0], v, w, m, f), n * (vec_bytes + 5)))
    for flip in (False, True):
        cases.append((f"part_scores{' mirror' if flip else ''}",
                      lambda f=flip: part_scores(v[0], w[0], v, w, mirror=f),
                      lambda f=flip: ref.part_scores(v[0], w[0], v, w, f), n * (vec_bytes + 30)))
    cases += [
        ("aligned_part_scores (path of n steps)", lambda: aligned_part_scores(v[:half], w[:half], v[:half], w[:half], path),
         lambda: ref.aligned_part_scores(v[:half], w[:half], v[:half], w[:half], path), n * (vec_bytes + 16 + 30)),
        ("mirror_vectors", lambda: mirror_vectors(v, w), lambda: ref_mirror(v, w), n * 2 * vec_bytes),
        ("consistent_keypoints (2 x n/2 frames)", lambda: consistent_keypoints(poses[:half], poses[half:]),
         lambda: ref.consistent_keypoints(poses[:half], poses[half:]), n * 2 * pose_bytes),
        ("interpolate_frames x4", lambda: interpolate_frames(poses[:n // 4], 4),
         lambda: ref.interpolate_frames(poses[:n // 4], 4), n * pose_bytes * 5 // 4),
    ]
    for name, ours, peer, nbytes in cases:
        t_ours, t_peer = best_time(ours, repeat), best_time(peer, max(1, repeat // 2))
        floor = nbytes / bandwidth
        rows.append((f"{name}, {n:,} poses, ms", f"{t_ours * 1e3:.1f} ({t_ours / floor:.1f}x floor {floor * 1e3:.1f})",
                     f"{t_peer * 1e3:.1f} (plain NumPy)", t_peer / t_ours, "<= 3x floor, >= 5x"))


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
    from posescore.kernels import normalize, part_scores, pose_scores

    n = 10_000_000
    poses = cp.concatenate([cp.random.uniform(0, 640, (n, 17, 2), dtype=cp.float32),
                            cp.random.uniform(0, 1, (n, 17, 1), dtype=cp.float32)], axis=-1)
    v, w = normalize(poses)
    bandwidth = copy_bandwidth(cp, repeat)
    pose_bytes, vec_bytes = 17 * 3 * 4, (34 + 17) * 4
    for name, fn, nbytes in [
            ("normalize bbox", lambda: normalize(poses), n * (pose_bytes + vec_bytes)),
            ("pose_scores cosine mirror", lambda: pose_scores(v[0], w[0], v, w, mirror=True), n * (vec_bytes + 5)),
            ("part_scores mirror", lambda: part_scores(v[0], w[0], v, w, mirror=True), n * (vec_bytes + 30))]:
        t = sync_time(fn)
        floor = nbytes / bandwidth
        rows.append((f"GPU {name}, 10M poses, ms", f"{t * 1e3:.2f}", f"{floor * 1e3:.2f} (floor: bytes / copy bandwidth)",
                     floor / t, ">= 0.5x (within 2x of the floor)"))
    del poses, v, w
    frames = 108_000_000  # 1,000 hours at 30 fps
    series = cp.random.standard_normal((frames, 34), dtype=cp.float32)
    clip = cp.asarray(rng.standard_normal((90, 34)).astype(np.float32))
    t = sync_time(lambda: subsequence_dtw(clip, series, k=1))
    rows.append(("GPU subsequence DTW 90 in 108M x 34, s/query", f"{t:.3f}", f"{90 * frames / t:.3g} cells/s",
                 float("nan"), ""))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["dtw", "search", "subsequence", "pose", "gpu"], nargs="*")
    parser.add_argument("--poses", type=int, default=1_000_000, help="poses of the per-pose benchmark")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows: list[tuple] = []
    benches = {"dtw": bench_dtw, "search": bench_search, "subsequence": bench_subsequence,
               "pose": lambda rng, repeat, rows: bench_pose(rng, repeat, rows, args.poses), "gpu": bench_gpu}
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
