"""The search service's answer: search_archive, and SearchService (archives under a root, requests checked).

The search model (``model_repository/search``) only unpacks a request's tensors, asks
:class:`SearchService` for the answer and packs it; the load test's oracle and the jobs call
:func:`search_archive`, the same search.

A request searches the whole archive, or one shard of it (``shard`` "I/N": the segments whose id
is I modulo N; the service's own shard when the request names none). ``phase`` selects what a
shard answers for a merge over several servers (``engine.archive.sharded``): "" the hits,
"pose_candidates" its ``count`` best poses by inner product, "clip_candidates" its ``count`` best
DTW matches, "clip_score" the hits of the DTW ``candidates`` sent back to it.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posescore.engine.archive.catalog import generation
from posescore.engine.archive.clip_search import (CLIP_MIN_SCORE, MAX_CLIP_CELLS, ClipCandidate, candidate_hit,
                                                  check_clip_cost, clip_candidates, clip_hits, clip_max_cost,
                                                  search_clip)
from posescore.engine.archive.reader import Archive, open_archive
from posescore.engine.archive.search import (MAX_K, MOMENT_GAP_S, SearchFilter, check_k, check_query, pose_candidates,
                                             public_hit, search_poses)
from posescore.engine.archive.segments import MAPPED
from posescore.engine.archive.shard import ARCHIVE_ROOT_ENV, ARCHIVE_SHARD_ENV, ArchiveError, parse_shard, shard_text

PHASES = ("", "pose_candidates", "clip_candidates", "clip_score")
#: Most candidates one phase request may ask for (pose_candidates, clip_candidates).
MAX_COUNT = 4_000_000
#: Longest archive name a request may give (the file system's own limit for a path).
MAX_NAME_LENGTH = 4096
#: Archives one service keeps open (their catalogs read), least recently used out beyond it.
MAX_OPEN_ARCHIVES = 16


def search_hits(archive: Archive, query, k: int, *, query_fps: float | None = None, min_gap: float = MOMENT_GAP_S,
                where: SearchFilter = SearchFilter(), min_score: float = CLIP_MIN_SCORE, prune: bool = True,
                shard: tuple[int, int] | None = None) -> list[dict]:
    """:func:`search_archive`'s hits, with the fields a merge orders them by (``MERGE_FIELDS``)."""
    query = check_query(query)
    if query.shape[0] == 1:
        return search_poses(archive, query[0], k, min_gap=min_gap, where=where, shard=shard)
    return search_clip(archive, query, k, query_fps=query_fps, where=where, min_score=min_score, prune=prune,
                       shard=shard)


def search_archive(archive: Archive, query, k: int = 10, *, query_fps: float | None = None,
                   min_gap: float = MOMENT_GAP_S, where: SearchFilter = SearchFilter(),
                   min_score: float = CLIP_MIN_SCORE, prune: bool = True,
                   shard: tuple[int, int] | None = None) -> list[dict]:
    """The ``k`` best hits of a pose ``[17, 3]`` / ``[1, 17, 3]`` (``search.search_poses``) or a
    movement ``[M, 17, 3]`` filmed at ``query_fps`` (``clip_search.search_clip``), best first, in
    the archive or one ``shard`` ``(I, N)`` of it. A hit: ``video_id`` (content SHA-256), ``video``
    (name), ``path``, ``track``, ``start_frame`` / ``end_frame`` (inclusive), ``start_time`` /
    ``end_time`` (s), ``score`` 0-100."""
    check_k(k)
    hits = search_hits(archive, query, k, query_fps=query_fps, min_gap=min_gap, where=where, min_score=min_score,
                       prune=prune, shard=shard)
    return [public_hit(h) for h in hits]


@dataclass
class SearchRequest:
    """A checked request: what :meth:`SearchService.answer` searches."""

    archive: Archive
    query: np.ndarray
    k: int
    fps: float | None
    min_gap: float
    where: SearchFilter
    min_score: float
    phase: str
    shard: tuple[int, int] | None
    count: int
    candidates: list[ClipCandidate] = field(default_factory=list)


@dataclass
class SearchAnswer:
    """A request's hits (merge fields included), the poses searched (-1: not counted), the shard
    answered ("I/N", "" the whole archive) and the catalog generation read."""

    hits: list[dict]
    searched: int
    shard: str
    generation: int


class SearchService:
    """Searches in the archives under ``root`` (default: the ``POSESCORE_ARCHIVE_ROOT`` environment
    variable the embedded server sets, else the working directory): each archive's catalog read
    once and again when it changes, at most ``max_open`` kept; ``shard`` ("I/N", default the
    ``POSESCORE_ARCHIVE_SHARD`` environment variable) the one shard of each this service answers;
    ``mapped_bytes`` the process's budget of mapped segments; requests of more than ``max_k``
    hits or clip searches of more than ``max_clip_cells`` DTW cells refused."""

    def __init__(self, root: str | os.PathLike | None = None, *, max_k: int = MAX_K,
                 max_open: int = MAX_OPEN_ARCHIVES, max_clip_cells: int = MAX_CLIP_CELLS,
                 shard: str | None = None, mapped_bytes: int | None = None):
        self.root = Path(root or os.environ.get(ARCHIVE_ROOT_ENV) or os.getcwd()).resolve()
        self.max_k, self.max_open, self.max_clip_cells = int(max_k), int(max_open), int(max_clip_cells)
        self.shard = parse_shard(shard or os.environ.get(ARCHIVE_SHARD_ENV))
        if mapped_bytes:
            MAPPED.budget = int(mapped_bytes)
        self.archives: OrderedDict = OrderedDict()  # path -> Archive, least recently used first

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> "SearchService":
        """The service the search model's ``config.pbtxt`` parameters describe ("" = the default)."""
        return cls(params.get("archive_root") or None, max_k=int(params.get("max_k", MAX_K)),
                   max_open=int(params.get("max_open_archives", MAX_OPEN_ARCHIVES)),
                   max_clip_cells=int(params.get("max_clip_cells") or MAX_CLIP_CELLS),
                   shard=params.get("archive_shard") or None, mapped_bytes=params.get("mapped_bytes") or None)

    def archive(self, name: str | bytes) -> Archive:
        """The archive at ``name`` (relative to the root, or absolute inside it; bytes as the file
        system takes them): its catalog read once and again when it changes; segments are mapped
        within the process's byte budget."""
        if isinstance(name, bytes):
            name = os.fsdecode(name)
        if len(name) > MAX_NAME_LENGTH or any(len(part) > 255 for part in Path(name).parts):
            raise ArchiveError(f"archive: a name of {len(name):,} characters ({name[:40]!r}...): at most "
                               f"{MAX_NAME_LENGTH} characters, 255 per folder")
        path = (self.root / name).resolve()
        if path != self.root and self.root not in path.parents:
            raise ArchiveError(f"archive: {name!r} is outside the archive root {self.root}")
        try:
            current = generation(path)
            cached = self.archives.get(path)
            if cached is None or cached.generation != current:
                cached = self.archives[path] = open_archive(path)
        except ArchiveError as err:
            raise ArchiveError(f"archive: {err}") from None
        self.archives.move_to_end(path)
        while len(self.archives) > self.max_open:
            self.archives.popitem(last=False)
        return cached

    def shard_of(self, text: str) -> tuple[int, int] | None:
        """The shard a request searches: its own, which must be this service's where one is set."""
        asked = parse_shard(text) if text else self.shard
        if self.shard is not None and asked != self.shard:
            raise ArchiveError(f"shard: this server holds shard {shard_text(self.shard)} of its archives, "
                               f"asked for {shard_text(asked)}")
        return asked

    def request(self, archive: Archive, query: np.ndarray, *, k: int = 10, fps: float = 0.0,
                min_gap: float = MOMENT_GAP_S, start: float = math.nan, end: float = math.nan, video: str = "",
                min_score: float = CLIP_MIN_SCORE, phase: str = "", shard: str = "", count: int = 0,
                candidates=None, candidate_costs=None) -> SearchRequest:
        """A request checked (ArchiveError naming what is wrong): 0 / NaN / "" mean "not given"
        (no fps: each video's own; no start, end or video filter; the service's shard);
        ``candidates [C, 3]`` (segment, first row, last row) and ``candidate_costs [C]`` only for
        phase "clip_score"."""
        if not 1 <= k <= self.max_k:
            raise ArchiveError(f"k: expected 1 <= k <= {self.max_k}, got {k}")
        fps = fps or None
        for label, value in (("fps", fps or 1.0), ("min_gap", min_gap)):
            if not (math.isfinite(value) and value >= 0):
                raise ArchiveError(f"{label}: expected a finite value >= 0, got {value}")
        if not 0 <= min_score <= 100:
            raise ArchiveError(f"min_score: expected a score from 0 to 100, got {min_score}")
        if phase not in PHASES:
            raise ArchiveError(f"phase: expected one of {PHASES}, got {phase!r}")
        chosen = self.shard_of(shard)
        if phase in ("pose_candidates", "clip_candidates") and not 1 <= count <= MAX_COUNT:
            raise ArchiveError(f"count: expected 1 <= count <= {MAX_COUNT:,} for phase {phase!r}, got {count}")
        scored = []
        if phase == "clip_score":
            rows, costs = np.asarray(candidates), np.asarray(candidate_costs)
            if rows.ndim != 2 or rows.shape[1] != 3 or costs.shape != (rows.shape[0],):
                raise ArchiveError(f"candidates [C, 3] (segment, first row, last row) and candidate_costs [C]: "
                                   f"got {list(rows.shape)} and {list(costs.shape)}")
            spans = (rows[:, 2].astype(np.int64) - rows[:, 1].astype(np.int64) + 1) if len(rows) else rows[:, 0]
            if len(rows) > MAX_COUNT or (spans < 1).any():
                raise ArchiveError(f"candidates: expected at most {MAX_COUNT:,} (segment, first row, last row) with "
                                   f"last >= first, got {len(rows):,}")
            cells = int(spans.sum()) * len(query)
            if cells > self.max_clip_cells:
                raise ArchiveError(f"candidates: {len(rows):,} candidates of {int(spans.sum()):,} rows against a "
                                   f"{len(query)}-pose query are {cells:,} DTW cells, over this server's bound of "
                                   f"{self.max_clip_cells:,} (max_clip_cells); send fewer")
            scored = [ClipCandidate(float(c), int(s), int(a), int(b)) for (s, a, b), c in zip(rows, costs)]
        if phase in ("pose_candidates",) and len(query) != 1:
            raise ArchiveError(f"query: phase {phase!r} takes one pose [1, 17, 3], got {len(query)}")
        if phase in ("clip_candidates", "clip_score") and len(query) < 2:
            raise ArchiveError(f"query: phase {phase!r} takes a movement [M >= 2, 17, 3], got {len(query)} pose")
        where = SearchFilter(video=video or None, start=None if math.isnan(start) else start,
                             end=None if math.isnan(end) else end)
        if len(query) > 1 and phase in ("", "clip_candidates"):
            check_clip_cost(archive, len(query), where, self.max_clip_cells, chosen)
        return SearchRequest(archive=archive, query=query, k=k, fps=fps, min_gap=min_gap, where=where,
                             min_score=min_score, phase=phase, shard=chosen, count=count, candidates=scored)

    def answer(self, q: SearchRequest) -> SearchAnswer:
        """A checked request's answer (ArchiveError for a damaged archive)."""
        archive, where, searched = q.archive, q.where, None
        query = check_query(q.query)
        if q.phase == "pose_candidates":
            hits, searched = pose_candidates(archive, query[0], q.count, where=where, shard=q.shard)
        elif q.phase == "clip_candidates":
            found = clip_candidates(archive, query, q.count, where=where,
                                    max_cost=clip_max_cost(q.min_score, len(query)), shard=q.shard)
            hits = [dict(candidate_hit(archive, c), key=c.cost) for c in found]
        elif q.phase == "clip_score":
            hits = clip_hits(archive, query, q.candidates, q.k, query_fps=q.fps, where=where,
                             min_score=q.min_score, shard=q.shard)
        else:
            hits = search_hits(archive, query, q.k, query_fps=q.fps, min_gap=q.min_gap, where=where,
                               min_score=q.min_score, shard=q.shard)
        return SearchAnswer(hits, -1 if searched is None else searched, shard_text(q.shard), archive.generation)
