"""The keypoint archive (catalog, segments, ingest, maintenance, search, shards): the room's public face.

Every pose of many videos, on disk (format 2: ``docs/ARCHIVE.md``), searched in place. Its modules,
each importing only those listed before it:

    shard        ArchiveError, the server's environment variables, shards (standard library only)
    catalog      the SQLite catalog: layout constants, connect, transaction, create, list, info
    segments     segment files: column layout, writer, orphans, the mapped-segment cache
    ingest       VideoRows, add_video(s)
    reader       Archive, open_archive
    maintenance  find / remove videos, compact, verify, upgrade (format 1)
    search       shared search parts (filters, runs, hits, vectors on the GPU) and pose search
    clip_search  clip search (subsequence DTW, then compare's score)
    service      search_archive and SearchService, the search model's answer
    sharded      one archive searched over several servers

The names below load their module on first use (PEP 562), so that ``import
posescore.engine.archive.shard`` (the server's) costs only the standard library:
``from posescore.engine.archive import open_archive`` loads ``reader``. The phases a merge over
servers is built from (``pose_candidates``, ``clip_candidates``, ``pose_search``, ``clip_search``,
...) are imported from their modules.
"""

from __future__ import annotations

from posescore.lazy import lazy_exports

#: Each public name and the module that defines it.
_EXPORTS = {
    "ARCHIVE_ROOT_ENV": "shard", "ARCHIVE_SHARD_ENV": "shard", "ArchiveError": "shard", "in_shard": "shard",
    "parse_shard": "shard", "shard_text": "shard",
    "CATALOG": "catalog", "FORMAT": "catalog", "SEGMENTS": "catalog", "VERSION": "catalog", "VIDEO_FIELDS": "catalog",
    "archive_info": "catalog", "connect": "catalog", "create_archive": "catalog", "generation": "catalog",
    "list_videos": "catalog", "transaction": "catalog",
    "MAPPED": "segments", "MappedSegment": "segments", "SegmentInfo": "segments",
    "compact_confidences": "segments", "expand_confidences": "segments",
    "VideoRows": "ingest", "add_video": "ingest", "add_videos": "ingest",
    "Archive": "reader", "open_archive": "reader",
    "SEGMENT_POSES": "maintenance", "compact": "maintenance", "find_videos": "maintenance",
    "remove_videos": "maintenance", "upgrade": "maintenance", "verify": "maintenance",
    "MAX_K": "search", "MERGE_FIELDS": "search", "MOMENT_GAP_S": "search", "SearchFilter": "search",
    "check_k": "search", "check_query": "search", "hit_poses": "search", "public_hit": "search",
    "CLIP_MIN_SCORE": "clip_search", "MAX_CLIP_CELLS": "clip_search", "ClipCandidate": "clip_search",
    "SearchAnswer": "service", "SearchRequest": "service", "SearchService": "service", "search_archive": "service",
    "ShardError": "sharded", "ShardedAnswer": "sharded", "ShardedSearch": "sharded",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
