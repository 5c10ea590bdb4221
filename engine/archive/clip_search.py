"""Clip search in place: the movements most like a query clip, by subsequence DTW, then compare's score.

A clip query's candidate segments come from subsequence DTW over every (video, track) sequence
(``kernels.subsequence_dtw``, pruned by lower bounds); each is then scored by
``engine.analysis.answers.movement_score``, the function ``compare`` scores with: one scale.

As pose search (``engine.archive.search``), it is written as phases that a shard of the archive
answers alone and an exact merge (:func:`clip_search`), which one archive searched here and one
split over several servers (``engine.archive.sharded``) both run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posescore import kernels
from posescore.engine.analysis.answers import ascend_bounds, movement_score
from posescore.engine.archive.reader import Archive
from posescore.engine.archive.search import (Run, SearchFilter, live_runs, on_device, run_hit, search_gpu,
                                             stored_vectors, video_fps)
from posescore.engine.archive.segments import MappedSegment
from posescore.engine.archive.shard import ArchiveError, in_shard
from posescore.kernels import distance_for_score, to_numpy
from posescore.kernels.skeleton import NUM_KEYPOINTS

#: Vectors per subsequence_dtw call in a clip search (whole sequences; where the DP runs over all
#: of them, float32 copies: 143 MB). Fewer, larger batches pay less per batch (bounds, selection).
SEARCH_BATCH_POSES = 1 << 20
#: Relative slack of the running cap on a pruned clip search's costs (clip_candidates): a match's
#: reported cost and its DP sum round differently (within ~1e-5).
CLIP_CAP_MARGIN = 1e-4
#: A clip search scores this many DTW candidates (at least) with ``movement_score`` before it
#: keeps the k best: the two scales order nearly, not exactly, alike.
CLIP_CANDIDATES = 3
#: A clip hit scoring under this (compare's scale) is not the movement, and is not answered.
CLIP_MIN_SCORE = 50.0
#: DTW candidates are those whose own score (a match's RMS frame distance, bounded by its cost x
#: sqrt(M), mapped by score_from_distance) is at least ``min_score`` less this: compare's
#: alignment (interpolated, one keypoint set) scores a match higher than the raw DTW does.
CLIP_SCORE_MARGIN = 20.0
#: Most subsequence-DTW cells (query frames x poses searched) one clip search through a server
#: may cost (the search model's ``max_clip_cells``; 4e9 is ~400 hours of one person for a 3-second
#: clip at 30 fps): a request over it is refused before any work, so that no single request holds
#: a server for long. What clip searches take at a size: docs/BENCHMARKS.md (clip query rows).
#: The CLI searches without a bound.
MAX_CLIP_CELLS = 4_000_000_000


def check_clip_cost(archive: Archive, query_frames: int, where: SearchFilter, max_cells: int = MAX_CLIP_CELLS,
                    shard: tuple[int, int] | None = None) -> int:
    """The cells a clip search of ``query_frames`` frames over the poses ``where`` keeps (in
    ``shard``) costs (its video filter; the time filter is not counted); ArchiveError naming
    the bound when over ``max_cells``, before any work, so that one request cannot hold a server
    for minutes."""
    rows = where.videos(archive)
    poses = sum(int(v["poses"]) for v in archive.videos
                if v["video_row"] in rows and in_shard(v["segment"], shard))
    cells = query_frames * poses
    if cells > max_cells:
        raise ArchiveError(f"clip search: {query_frames} query frames x {poses:,} poses = {cells:,} DTW cells, over "
                         f"this server's bound of {max_cells:,} per request (parameter max_clip_cells): narrow it "
                         f"to some videos (video), or search a shorter clip")
    return cells


class _ClipSeries:
    """Rows ``[lo, hi)`` of a segment's vectors as a ``kernels.subsequence_dtw`` series, where
    searches run: ``(series, options)``. On the CPU tiles are searched in place (converted to
    float32 where the DP runs), rows converted; either into one float32 array reused from call to
    call, grown as needed (a fresh array of a batch's size costs a page fault per 4 KiB)."""

    def __init__(self):
        self.buffer: np.ndarray | None = None

    def __call__(self, segment: MappedSegment, lo: int, hi: int) -> tuple:
        stored = stored_vectors(segment)
        if search_gpu() is not None:
            return stored[lo:hi].astype(np.float32), {}
        if self.buffer is None or self.buffer.shape[0] < hi - lo:
            self.buffer = np.empty((hi - lo, 2 * NUM_KEYPOINTS), np.float32)
        if stored.ndim == 3:
            return stored, {"rows": (lo, hi), "buffer": self.buffer}
        return kernels.float32_rows(stored, lo, hi, self.buffer), {}


def _sequences(run: Run) -> np.ndarray:
    """Lengths of the (video, track) sequences of ``run``'s rows, in order (they are contiguous)."""
    tracks = run.segment.column("tracks")[run.lo:run.hi]
    cuts = set(np.flatnonzero(tracks[1:] != tracks[:-1]) + 1)
    cuts.update(v["first_row"] - run.lo for v in run.videos[1:])
    bounds = np.array(sorted(cuts | {0, run.hi - run.lo}))
    return np.diff(bounds)


@dataclass(frozen=True)
class ClipCandidate:
    """A subsequence-DTW match: rows ``first..last`` (inclusive) of segment ``segment``, its DTW
    ``cost`` (float32). Candidates order by (cost, segment, first)."""

    cost: float
    segment: int
    first: int
    last: int

    def order(self) -> tuple:
        return self.cost, self.segment, self.first


def clip_wanted(k: int) -> int:
    """DTW candidates a clip search of ``k`` hits scores with ``movement_score``."""
    return max(CLIP_CANDIDATES * k, k + 10)


def clip_max_cost(min_score: float, query_frames: int) -> float | None:
    """The DTW cost over which no match can be a hit of ``min_score`` (CLIP_SCORE_MARGIN spared)."""
    floor = min_score - CLIP_SCORE_MARGIN
    return None if floor <= 0 else distance_for_score(floor, "cosine") / np.sqrt(query_frames)


def search_clip(archive: Archive, query: np.ndarray, k: int, *, query_fps: float | None = None,
                where: SearchFilter = SearchFilter(), min_score: float = CLIP_MIN_SCORE,
                prune: bool = True, shard: tuple[int, int] | None = None) -> list[dict]:
    """The ``k`` best matches of a movement ``query [M, 17, 3]`` (filmed at ``query_fps``):
    :func:`clip_search` over this archive's :func:`clip_candidates` and :func:`clip_hits`."""
    max_cost = clip_max_cost(min_score, len(query))
    return clip_search(
        lambda count: clip_candidates(archive, query, count, where=where, prune=prune, max_cost=max_cost,
                                      shard=shard),
        lambda chosen: clip_hits(archive, query, chosen, k, query_fps=query_fps, where=where,
                                 min_score=min_score, shard=shard), k)


def clip_search(find, score, k: int) -> list[dict]:
    """The ``k`` best clip hits, best first, given ``find(count)`` (DTW candidates: an archive's
    :func:`clip_candidates`, or every shard's, concatenated) and ``score(candidates)`` (their
    accepted hits, :func:`clip_hits`, per shard): the ``clip_wanted(k)`` best candidates are
    scored by ``movement_score``, accepted best first (a hit's candidate ``key``: its score
    before its bounds are refined) and the first k accepted answered, by refined score."""
    wanted = clip_wanted(k)
    chosen = sorted(find(wanted), key=ClipCandidate.order)[:wanted]
    accepted = score(chosen)
    first = sorted(accepted, key=lambda h: (-h["key"], h["cost"], h["segment"], h["row"]))[:k]
    return sorted(first, key=lambda h: (-h["score"], h["segment"], h["row"]))


def clip_hits(archive: Archive, query: np.ndarray, candidates: list[ClipCandidate], k: int, *,
              query_fps: float | None = None, where: SearchFilter = SearchFilter(),
              min_score: float = CLIP_MIN_SCORE, shard: tuple[int, int] | None = None) -> list[dict]:
    """At most ``k`` hits of DTW ``candidates`` (of this archive, or of its ``shard``), in the order
    they are accepted: each candidate is scored by ``movement_score`` against the segment's
    stored poses at its video's fps (the query's too when ``query_fps`` is None), and taken best
    first (ties: lower cost, segment, row); one that meets a hit taken is skipped, the others
    get their bounds refined to the segment compare scores highest (:func:`_refine`) and are hits
    when they score at least ``min_score``. A hit carries ``key`` (its candidate's score) and
    ``cost``. ``ArchiveError`` for a candidate outside the archive (or shard)."""
    runs = live_runs(archive, where.videos(archive), shard)
    scored = []
    for candidate in candidates:
        run = _run_of(runs, candidate)
        video = run.video_at(candidate.first)
        rate = video_fps(run.segment, video)
        poses = run.segment.poses(candidate.first, candidate.last + 1)
        score = float(np.float32(movement_score(query, query_fps or rate, poses, rate).score))
        scored.append((score, candidate, run))
    scored.sort(key=lambda item: (-item[0],) + item[1].order())
    hits, taken = [], []  # taken: (segment id, first, last) of the hits answered
    for score, candidate, run in scored:
        if len(hits) == k:
            break
        first, last = candidate.first, candidate.last
        if _overlaps(taken, run, first, last):
            continue  # a better hit grew over it
        refined, first, last = _refine(query, query_fps, run, first, last, score, taken, where)
        if refined >= min_score:
            hit = run_hit(run, first, last, refined, row=candidate.first)
            hit.update(key=score, cost=candidate.cost)
            hits.append(hit)
            taken.append((run.segment.info.id, first, last))
    return hits


def candidate_hit(archive: Archive, candidate: ClipCandidate) -> dict:
    """A DTW candidate as a hit without a score (NaN): where it lies, ``last_row`` and ``cost`` too."""
    segment = archive.segment(candidate.segment)
    hit = run_hit(Run(segment, 0, segment.info.rows, segment.info.videos), candidate.first, candidate.last, np.nan)
    hit.update(last_row=candidate.last, cost=candidate.cost)
    return hit


def _run_of(runs: list[Run], candidate: ClipCandidate) -> Run:
    """The run holding a candidate's rows."""
    for run in runs:
        if run.segment.info.id == candidate.segment and run.lo <= candidate.first <= candidate.last < run.hi:
            return run
    raise ArchiveError(f"clip candidate: rows {candidate.first}..{candidate.last} of segment {candidate.segment} "
                       f"are not searched here (another shard's, or the archive changed)")


def _refine(query, query_fps, run: Run, first: int, last: int, score: float, taken: list,
            where: SearchFilter) -> tuple[float, int, int]:
    """A DTW match's first and last rows moved (within its sequence, clear of the hits ``taken``,
    inside the time filter) to the segment compare scores highest (``ascend_bounds``)."""
    video = run.video_at(first)
    rate = video_fps(run.segment, video)
    lo, hi = _sequence_of(run, first)
    times = run.segment.column("times")

    def allowed(a, b):
        return (lo <= a and b < hi and b - a >= 1 and where.times(np.array([times[a], times[b]])).all()
                and not _overlaps(taken, run, a, b))

    def score_of(a, b):
        return movement_score(query, query_fps or rate, run.segment.poses(a, b + 1), rate).score

    return ascend_bounds(score_of, allowed, first, last, score)


def _overlaps(taken: list, run: Run, first: int, last: int) -> bool:
    """Whether rows ``first..last`` of ``run``'s segment meet a hit ``taken`` (segment id, first, last)."""
    return any(t[0] == run.segment.info.id and t[1] <= last and first <= t[2] for t in taken)


def _sequence_of(run: Run, row: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of the (video, track) sequence holding ``row``."""
    video = run.video_at(row)
    lo, hi = video["first_row"], video["first_row"] + video["poses"]
    tracks = run.segment.column("tracks")[lo:hi]
    track = run.segment.column("tracks")[row]
    return lo + int(np.searchsorted(tracks, track, "left")), lo + int(np.searchsorted(tracks, track, "right"))


def clip_candidates(archive: Archive, query: np.ndarray, count: int, *, where: SearchFilter = SearchFilter(),
                    prune: bool = True, max_cost: float | None = None,
                    shard: tuple[int, int] | None = None) -> list[ClipCandidate]:
    """The ``count`` best disjoint subsequence-DTW matches of ``query [M, 17, 3]``'s normalized
    frames (costing at most ``max_cost``) over every (video, track) sequence that ``where`` keeps
    (in ``shard``), best first (ties: lower segment, then row).

    Pruned, each batch's search is capped by the ``count``-th best cost found so far (no match
    above it can be among the ``count`` best: batches hold whole sequences, so matches of two
    batches never overlap, and a later batch's equal cost sorts after), so the bounds of the
    later batches skip more; the candidates are those of the brute force."""
    q_vec, _ = kernels.normalize(query)
    found: list[ClipCandidate] = []
    cap, clip_series = max_cost, _ClipSeries()
    for run, lo, hi, lengths in _clip_batches(archive, where, shard):
        series, options = clip_series(run.segment, lo, hi)
        costs, starts, ends = (to_numpy(a) for a in kernels.subsequence_dtw(
            on_device(q_vec), series, k=count, series_lengths=lengths, prune=prune, max_cost=cap, **options))
        times = run.segment.column("times")
        for cost, s, e in zip(costs, starts, ends):
            first, last = lo + int(s), lo + int(e) - 1
            if where.times(np.array([times[first], times[last]])).all():
                found.append(ClipCandidate(float(np.float32(cost)), int(run.segment.info.id), first, last))
        if prune and len(found) >= count:
            found.sort(key=ClipCandidate.order)
            del found[count:]
            running = found[-1].cost * (1 + CLIP_CAP_MARGIN) + 1e-9
            cap = running if cap is None else min(cap, running)
    found.sort(key=ClipCandidate.order)
    return found[:count]


def _clip_batches(archive: Archive, where: SearchFilter, shard: tuple[int, int] | None = None):
    """``(run, lo, hi, sequence lengths)``: whole sequences of a run, about SEARCH_BATCH_POSES rows
    a batch; the k best of each batch together hold the k best of the archive (no match spans two
    sequences)."""
    for run in live_runs(archive, where.videos(archive), shard):
        lengths = _sequences(run)
        start, size, batch = run.lo, 0, []
        for length in lengths:
            batch.append(length)
            size += length
            if size >= SEARCH_BATCH_POSES:
                yield run, start, start + size, np.asarray(batch, np.int64)
                start, size, batch = start + size, 0, []
        if batch:
            yield run, start, start + size, np.asarray(batch, np.int64)
