"""Beyond one machine, measured on one: indexing on Ray against the single process, and a search
sharded over several Triton servers against one server holding the whole archive.

    python -m bench.scaleout [--hours 100] [--index-seconds 8] [--queries 20]

Index: clips of vtest.avi (``--index-videos`` of ``--index-seconds`` each, every frame) indexed
into fresh archives by ``index --ray`` on a local Ray with one and two pose actors (clients of an
embedded server) and with one actor running the model in-process, each compared with the
single-process ``index`` (through the same server) run just before and just after it, as the
VM's speed drifts. Search: the cached synthetic archive of ``bench.archive`` (``--hours``),
served by three embedded servers; pose and clip queries answered by one server alone, then
merged over one, two and three of them (``engine.archive.sharded``), every answer checked equal.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.archive import CLIP_FRAMES, DEFAULT_CACHE, FPS, _warp, build, percentiles, pose_queries, rare_movement, real_tracks


def index_figures(videos: list[str], url: str, workers: tuple[int, ...] = (1, 2)) -> list[tuple[str, float, float]]:
    """(label, frames per second, ratio to the single process) of each way of indexing ``videos``
    on Ray; the single process runs before and after each (the VM's speed drifts within minutes),
    and each Ray run is compared with the mean of the two single runs beside it."""
    import ray

    from posescore.clients import PoseScoreClient
    from posescore.engine.jobs.index import index_job
    from posescore.engine.jobs.index_ray import ray_index_job

    def single() -> float:
        with tempfile.TemporaryDirectory() as folder, PoseScoreClient(url, timeout=600) as client:
            start = time.perf_counter()
            result = index_job(videos, Path(folder) / "a", client)
            seconds = time.perf_counter() - start
        return sum(v["frames"] for v in result["videos"]) / seconds

    rows = []
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"  (ray.init: {time.perf_counter() - start:.1f} s, not counted)")
    try:
        before = single()
        rows.append(("single process (server's pose model)", before, 1.0))
        for count, via in [(n, url) for n in workers] + [(1, None)]:
            with tempfile.TemporaryDirectory() as folder:
                result = ray_index_job(videos, Path(folder) / "a", url=via, workers=count)
            after = single()
            where = "clients of the server" if via else "model in-process"
            print(f"  (Ray, {count} actor(s), {where}: first batch after {result['first_batch_s']:.1f} s of "
                  f"{result['seconds']:.1f} s; single process before / after: {before:.2f} / {after:.2f} frames/s)")
            rate = result["frames_per_second"]
            rows.append((f"Ray, {count} pose actor(s), {where}", rate, rate / ((before + after) / 2)))
            before = after
    finally:
        ray.shutdown()
    return rows


def search_figures(root: Path, tracks, queries: int, servers: list[str]) -> list[tuple]:
    """(label, kind, p50, p99) of one server and of the merge over 1..len(servers) shards."""
    from posescore.clients import PoseScoreClient
    from posescore.engine.archive import ShardedSearch

    rng = np.random.default_rng(11)
    poses = pose_queries(rng, tracks, queries)
    rare, walk = rare_movement(tracks), max(tracks, key=len)
    clips = [_warp(rare[::3], 1.0)[:CLIP_FRAMES], _warp(walk[:60], 1.0)[:CLIP_FRAMES]]
    name = root.name
    rows = []

    def key(hits):
        return [(h["video_id"], h["start_frame"], h["end_frame"], h["score"]) for h in hits]

    with PoseScoreClient(servers[0], timeout=600) as one:
        def whole(query, fps):
            return [{"video_id": m.video_id, "start_frame": m.start_frame, "end_frame": m.end_frame, "score": m.score}
                    for m in one.search(name, query, 10, **({"fps": fps} if fps else {}))]

        answers = {}
        for kind, batch, fps in (("pose", poses, None), ("clip", clips, FPS)):
            whole(batch[0], fps)  # maps the segments, checks their checksums
            times = []
            for n, query in enumerate(batch):
                start = time.perf_counter()
                answers[kind, n] = key(whole(query, fps))
                times.append(time.perf_counter() - start)
            rows.append(("one server, whole archive", kind, *percentiles(times)))
        for count in range(1, len(servers) + 1):
            with ShardedSearch(servers[:count], timeout=600) as shards:
                for kind, batch, fps in (("pose", poses, None), ("clip", clips, FPS)):
                    shards.search(name, batch[0], 10, query_fps=fps)
                    times = []
                    for n, query in enumerate(batch):
                        start = time.perf_counter()
                        got = shards.search(name, query, 10, query_fps=fps)
                        times.append(time.perf_counter() - start)
                        assert key(got.hits) == answers[kind, n], f"{count} shards: {kind} query {n} differs"
                    rows.append((f"{count} shard server(s), merged", kind, *percentiles(times)))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=100.0, help="the bench.archive archive to search")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--queries", type=int, default=20, help="pose queries (clip queries: two)")
    parser.add_argument("--index-videos", type=int, default=4)
    parser.add_argument("--index-seconds", type=float, default=8.0)
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--skip-index", action="store_true")
    parser.add_argument("--skip-search", action="store_true")
    args = parser.parse_args(argv)

    from posescore.engine.archive import open_archive
    from posescore.engine.media.encode import retime_video
    from posescore.engine.media.samples import SAMPLE_VIDEO
    from posescore.engine.serving.server import TritonServer

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores")
    tracks = real_tracks(args.cache)
    root = args.cache / f"hours-{args.hours:g}"
    build(root, args.hours, tracks)
    archive = open_archive(root)
    print(f"archive {root}: {len(archive):,} poses in {len(archive.segments)} segments")
    servers = [TritonServer(models=["pose", "search"] if n == 0 else ["search"], archive_root=args.cache)
               for n in range(args.servers)]
    try:
        for server in servers:
            server.start()
        urls = [s.grpc_url for s in servers]
        if not args.skip_index:
            with tempfile.TemporaryDirectory() as folder:
                videos = [str(retime_video(SAMPLE_VIDEO, Path(folder) / f"clip{n}.mp4", 1.0,
                                           start=5.0 + n * args.index_seconds, duration=args.index_seconds))
                          for n in range(args.index_videos)]
                rows = index_figures(videos, urls[0])
            print(f"\nindex: {args.index_videos} clips of vtest.avi x {args.index_seconds:g} s, every frame")
            for label, rate, ratio in rows:
                print(f"  {label:52} {rate:7.2f} frames/s  {ratio:5.2f}x the single process beside it")
        if not args.skip_search:
            print(f"\nsearch: {root.name}, k=10, {args.queries} pose queries, 2 clip queries (90 frames: rare, "
                  f"everywhere)")
            rows = search_figures(root, tracks, args.queries, urls)
            for label, kind, p50, p99 in rows:
                whole = next(r for r in rows if r[0].startswith("one server") and r[1] == kind)[2]
                print(f"  {label:34} {kind:5} p50 {p50:7.3f} s  p99 {p99:7.3f} s   {p50 / whole:5.2f}x one server")
    finally:
        for server in servers:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
