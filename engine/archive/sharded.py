"""One archive searched over several servers, one shard each: ShardedSearch, its scatter and exact merge.

Each server answers one shard (``posescore serve --archive-shard I/N``, or any server when the
request names the shard): the query is scattered to every shard at once and their parts merged
exactly, by the functions a search of one archive runs (``engine.archive.search.pose_search`` and
``engine.archive.clip_search.clip_search``), so the answer is the one server holding everything
would give, ties included.

    with ShardedSearch(["10.0.0.1:8001", "10.0.0.2:8001"]) as shards:
        answer = shards.search("archives/sports", query, k=10)   # answer.hits, answer.missing

A pose query costs one round (each shard's best candidates by inner product; more rounds only
when the moments found are fewer than k); a clip query two: every shard's best DTW matches, then
the global best of them scored by the shards that hold them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from posescore.clients import PoseScoreClient, PoseScoreError
from posescore.engine.archive.clip_search import CLIP_MIN_SCORE, ClipCandidate, clip_search
from posescore.engine.archive.search import MOMENT_GAP_S, SearchFilter, check_k, check_query, pose_search, public_hit
from posescore.engine.archive.shard import in_shard

#: Seconds each shard has to answer each request of a search, by default.
DEFAULT_TIMEOUT_S = 60.0


class ShardError(RuntimeError):
    """A shard that did not answer (down, slower than its timeout, or failing): names it."""

    def __init__(self, message: str, shard: str | None = None, url: str | None = None):
        super().__init__(message)
        self.shard, self.url = shard, url


@dataclass
class ShardedAnswer:
    """Hits (as ``engine.archive.service.search_archive``'s), best first, and the shards that did not
    answer (with ``allow_partial``): ``{"shard", "url", "error"}`` each."""

    hits: list[dict]
    missing: list[dict] = field(default_factory=list)


def _f32(value: float | None) -> float | None:
    """A value as the server reads it from its FP32 input."""
    return None if value is None else float(np.float32(value))


class ShardedSearch:
    """Searches over ``urls``, server ``i`` answering shard ``i/len(urls)`` of each archive.

    ``timeout``: seconds each shard has to answer each request (a server that is unavailable is
    retried within them); a shard that has not answered by then, or fails, raises
    :class:`ShardError` naming it, or, with ``allow_partial``, is left out of the rest of the
    search and named in the answer's ``missing``. A request's own mistakes (a bad ``k``, an
    unknown archive) are raised as the server's ``PoseScoreError`` either way. A context manager.
    """

    def __init__(self, urls: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_S, allow_partial: bool = False):
        urls = list(urls)
        if not urls or len(set(urls)) != len(urls):
            raise ValueError(f"urls: expected distinct 'host:port' values, one per shard, got {urls!r}")
        if not timeout > 0:
            raise ValueError(f"timeout: expected seconds > 0, got {timeout!r}")
        self.urls = urls
        self.shards = [f"{i}/{len(urls)}" for i in range(len(urls))]
        self.timeout = float(timeout)
        self.allow_partial = bool(allow_partial)
        self._clients = [PoseScoreClient(url, timeout=timeout) for url in urls]
        self._pool = ThreadPoolExecutor(len(urls), thread_name_prefix="posescore-shard")

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for client in self._clients:
            client.close()

    def __enter__(self) -> "ShardedSearch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def search(self, archive: str, query: Any, k: int = 10, *, query_fps: float | None = None,
               min_gap: float = MOMENT_GAP_S, where: SearchFilter = SearchFilter(),
               min_score: float = CLIP_MIN_SCORE) -> ShardedAnswer:
        """The ``k`` best hits of a pose ``[17, 3]`` or a movement ``[M, 17, 3]`` (filmed at
        ``query_fps``) in ``archive`` (a folder under every server's archive root), as
        ``engine.archive.service.search_archive`` answers them for the whole archive."""
        check_k(k)
        query = check_query(query)
        # The filters as every server reads them (FP32 inputs), so that the merge applies the same.
        where = SearchFilter(video=where.video, start=_f32(where.start), end=_f32(where.end))
        round_ = _Round(self, archive, query, k, dict(video=where.video, start=where.start, end=where.end,
                                                      min_gap=min_gap, fps=query_fps, min_score=min_score))
        if len(query) == 1:
            def fetch(count):
                parts = round_.scatter(lambda i: dict(phase="pose_candidates", count=count))
                return [h for part in parts.values() for h in part.hits], sum(part.searched for part in parts.values())

            hits = pose_search(fetch, k, min_gap=_f32(min_gap), where=where)
        else:
            def find(count):
                parts = round_.scatter(lambda i: dict(phase="clip_candidates", count=count))
                return [ClipCandidate(h["cost"], h["segment"], h["row"], h["last_row"])
                        for part in parts.values() for h in part.hits]

            def score(chosen):
                n = len(self.urls)
                held = {i: [c for c in chosen if in_shard(c.segment, (i, n))] for i in range(n)}
                parts = round_.scatter(lambda i: dict(
                    phase="clip_score", candidates=[(c.segment, c.first, c.last) for c in held[i]],
                    candidate_costs=[c.cost for c in held[i]]), only={i for i, c in held.items() if c})
                return [h for part in parts.values() for h in part.hits]

            hits = clip_search(find, score, k)
        return ShardedAnswer([public_hit(h) for h in hits], round_.missing)


class _Round:
    """One search's scatters: the shards still answering, the catalog generation they read."""

    def __init__(self, owner: ShardedSearch, archive: str, query: np.ndarray, k: int, options: dict):
        self.owner, self.archive, self.query, self.k = owner, archive, query, k
        self.options = {name: value for name, value in options.items() if value is not None}
        self.live = set(range(len(owner.urls)))
        self.missing: list[dict] = []
        self.generation: int | None = None

    def scatter(self, options_of, only: set | None = None) -> dict:
        """Each live shard's (of ``only``) SearchPart for the options ``options_of(i)``, asked at once."""
        owner = self.owner
        asked = sorted(self.live if only is None else self.live & only)
        futures = {i: owner._pool.submit(owner._clients[i].search_part, self.archive, self.query, self.k,
                                         shard=owner.shards[i], **self.options, **options_of(i)) for i in asked}
        parts = {}
        for i, future in futures.items():
            try:
                part = future.result()
            except PoseScoreError as err:
                if err.status == "INVALID_ARGUMENT":
                    raise  # the request's own fault: every shard would say the same
                self._lost(i, str(err))
                continue
            if part.shard != owner.shards[i]:
                raise ShardError(f"shard {owner.shards[i]} at {owner.urls[i]}: the server answered shard "
                                 f"{part.shard or 'all'}", owner.shards[i], owner.urls[i])
            if self.generation is None:
                self.generation = part.generation
            elif part.generation != self.generation:
                raise ShardError(f"shard {owner.shards[i]} at {owner.urls[i]}: read catalog generation "
                                 f"{part.generation}, another shard {self.generation}: the archive changed during "
                                 f"the search; search again", owner.shards[i], owner.urls[i])
            parts[i] = part
        return parts

    def _lost(self, i: int, error: str) -> None:
        owner = self.owner
        if not owner.allow_partial:
            raise ShardError(f"shard {owner.shards[i]} at {owner.urls[i]}: {error}", owner.shards[i], owner.urls[i])
        self.live.discard(i)
        self.missing.append({"shard": owner.shards[i], "url": owner.urls[i], "error": error})
