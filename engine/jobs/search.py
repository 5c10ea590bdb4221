"""``posescore search``: the moments most like a pose, the movements most like a clip, in an archive
(in this process or over shard servers)."""

from __future__ import annotations

from pathlib import Path

from posescore.engine.analysis.people import main_performer
from posescore.engine.archive import (CLIP_MIN_SCORE, MOMENT_GAP_S, SearchFilter, ShardedSearch, ShardError, hit_poses,
                                      open_archive, search_archive)
from posescore.engine.analysis.report import compare_poses
from posescore.engine.jobs.inputs import JobError, load_poses, single_pose
from posescore.engine.media import pose_files as formats


def search_job(archive_dir, client=None, *, pose=None, clip=None, k=10, fps=None, min_gap=MOMENT_GAP_S,
               video=None, start=None, end=None, min_score=CLIP_MIN_SCORE, explain=None, out_dir=None,
               shard_urls=None, allow_partial=False, timeout=60.0) -> dict:
    """``posescore search``: the moments most like a pose (``pose``) or the movements most like a
    clip (``clip``) in the archive, filtered by video name/path glob and time range; ``explain``
    (1-based) adds ``compare``'s full report of that clip hit (and its files under ``out_dir``).
    Hits scoring under ``min_score`` are not answered (a pose's moments too: "nothing similar").
    With ``shard_urls`` the archive (a folder under every server's archive root) is searched by
    those servers, server i answering shard i/N, and their parts merged (``engine.archive.sharded``);
    ``allow_partial`` answers without shards that fail (named in ``missing``); ``timeout``: seconds
    each shard has to answer each request."""
    if allow_partial and not shard_urls:
        raise JobError("--allow-partial: takes a search over --shard-url servers")
    if not shard_urls or explain is not None:
        archive = open_archive(archive_dir)
    where = SearchFilter(video=video, start=start, end=end)
    if pose is not None:
        if explain is not None:
            raise JobError("--explain: takes a --clip search (a movement), not a --pose one")
        query, query_fps = single_pose(pose, client)[None], None
        query_poses = None
    else:
        query_poses = load_poses(clip, client, fps=fps)
        performer = main_performer(query_poses)
        query, query_fps = performer.poses[performer.present], query_poses.rate
        if len(query) < 2:
            raise JobError(f"{clip}: the performer is visible in fewer than 2 frames")
    missing = None
    if shard_urls:
        try:
            with ShardedSearch(shard_urls, timeout=timeout, allow_partial=allow_partial) as shards:
                answer = shards.search(str(archive_dir), query, k, query_fps=query_fps, min_gap=min_gap, where=where,
                                       min_score=min_score)
        except ShardError as err:
            raise JobError(str(err)) from None
        matches, missing = answer.hits, answer.missing
    else:
        matches = search_archive(archive, query, k, query_fps=query_fps, min_gap=min_gap, where=where,
                                 min_score=min_score)
    best_score = matches[0]["score"] if matches else None
    if pose is not None:  # best first: the top k of those scoring min_score or more
        matches = [hit for hit in matches if hit["score"] >= min_score]
    for hit in matches:
        hit.update(start_time=round(hit["start_time"], 3), end_time=round(hit["end_time"], 3),
                   score=round(hit["score"], 2))
    result = {"archive": str(archive_dir), "query": str(pose or clip), "matches": matches}
    if not matches and best_score is not None:  # how close the nearest pose came
        result["best_score"] = round(float(best_score), 2)
    if missing is not None:
        result["shards"] = {"servers": list(shard_urls), "missing": missing}
    if explain is not None:
        if not 1 <= explain <= len(matches):
            raise JobError(f"--explain: expected a hit number from 1 to {len(matches)}, got {explain}")
        hit = matches[explain - 1]
        found = hit_poses(archive, hit)  # one track: the archive's, not a new tracking of it
        report = compare_poses(query_poses, found, names=(str(clip), hit["video"]),
                               performers=(performer, main_performer(found, found.tracks)))
        result["explain"] = {"hit": explain, "report": report}
        if out_dir:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            path = out / "report.json"
            path.write_text(formats.json_text(report, indent=1))
            result["outputs"] = {"report": str(path)}
    return result
