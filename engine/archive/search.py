"""Search an archive in place: the moments most like a pose, the movements most like a clip.

A pose query is scored by the ``score`` service's answer (``engine.analysis.answers.score_answer``) and
answers *moments*: hits of one (video, track) closer than ``min_gap`` seconds collapse into the
best, as ``find`` does. A clip query's candidate segments come from subsequence DTW over every
(video, track) sequence (``kernels.subsequence_dtw``, pruned by lower bounds); each is then scored
by ``engine.analysis.answers.movement_score``, the function ``compare`` scores with: one scale.

Both searches are written as phases that a shard of the archive (its segments ``id % N == I``)
answers alone, and a merge that is exact: :func:`pose_search` and :func:`clip_search` take the
phases as functions, so one archive searched here and one archive split over several servers
(``engine.archive.sharded``) run the same merge. Ties are broken by (segment, row), never by the order in
which parts arrive.
"""

from __future__ import annotations

import bisect
import fnmatch
import functools
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numba
import numpy as np

from posescore import kernels
from posescore.kernels import cupy_or_none, parallel_map, to_numpy
from posescore.kernels import distance_for_score
from posescore.kernels.skeleton import NUM_KEYPOINTS

from posescore.engine.archive.store import Archive, ArchiveError, MappedSegment, expand_confidences, in_shard
from posescore.engine.poses import VideoInfo, VideoPoses
from posescore.engine.analysis.answers import ascend_bounds, movement_score, score_answer

#: Hits of one (video, track) closer than this (seconds) are one moment; ``find``'s moments and
#: ``compare``'s worst moments are at least this far apart too.
MOMENT_GAP_S = 0.5
#: Most hits one search answers.
MAX_K = 10_000
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
#: may cost: 4e9, ~400 hours for a 3-second clip at 30 fps, 12-20 s on a 2-core VM (the search
#: model's ``max_clip_cells``). The CLI searches without a bound.
MAX_CLIP_CELLS = 4_000_000_000


def check_clip_cost(archive: Archive, query_frames: int, where: "SearchFilter", max_cells: int = MAX_CLIP_CELLS,
                    shard: tuple[int, int] | None = None) -> int:
    """The cells a clip search of ``query_frames`` frames over the poses ``where`` keeps (in
    ``shard``) costs (its video filter; the time filter is not counted); ``ValueError`` naming
    the bound when over ``max_cells``, before any work, so that one request cannot hold a server
    for minutes."""
    rows = where.videos(archive)
    poses = sum(int(v["poses"]) for v in archive.videos
                if v["video_row"] in rows and in_shard(v["segment"], shard))
    cells = query_frames * poses
    if cells > max_cells:
        raise ValueError(f"clip search: {query_frames} query frames x {poses:,} poses = {cells:,} DTW cells, over "
                         f"this server's bound of {max_cells:,} per request (parameter max_clip_cells): narrow it "
                         f"to some videos (video), or search a shorter clip")
    return cells


@dataclass(frozen=True)
class SearchFilter:
    """Which poses a search may answer: videos whose name or path matches ``video`` (a glob), and
    times (seconds from each video's start) within ``[start, end]``."""

    video: str | None = None
    start: float | None = None
    end: float | None = None

    def videos(self, archive: Archive) -> set[int]:
        """The catalog rows (``video_row``) of the archive's videos this filter keeps."""
        return {v["video_row"] for v in archive.videos
                if self.video is None or fnmatch.fnmatchcase(v["name"], self.video)
                or (v["path"] and fnmatch.fnmatchcase(v["path"], self.video))}

    def times(self, times: np.ndarray) -> np.ndarray:
        keep = np.ones(times.shape, bool)
        if self.start is not None:
            keep &= times >= self.start
        if self.end is not None:
            keep &= times <= self.end
        return keep


@dataclass
class _Run:
    """Contiguous live rows ``[lo, hi)`` of one segment and the videos they hold."""

    segment: MappedSegment
    lo: int
    hi: int
    videos: list[dict]

    def video_at(self, row: int) -> dict:
        firsts = [v["first_row"] for v in self.videos]
        return self.videos[int(np.searchsorted(firsts, row, side="right")) - 1]


def _runs(archive: Archive, keep: set[int], shard: tuple[int, int] | None = None) -> list[_Run]:
    runs = []
    for info in archive.segments.values():
        if not in_shard(info.id, shard):
            continue
        chosen = [v for v in info.videos if v["video_row"] in keep and v["poses"]]
        if not chosen:
            continue
        mapped = archive.segment(info.id)
        current = None
        for video in chosen:
            lo, hi = video["first_row"], video["first_row"] + video["poses"]
            if current is not None and current.hi == lo:
                current.hi = hi
                current.videos.append(video)
            else:
                current = _Run(mapped, lo, hi, [video])
                runs.append(current)
    return runs


def _hit(run: _Run, first: int, last: int, score: float, row: int | None = None) -> dict:
    """One hit, rows ``first..last`` (inclusive) of ``run``'s segment, with its ``segment`` and
    ``row`` (its candidate's first row, default ``first``). Scores are float32 values, as a
    server sends them, so that a merge of shards' hits orders them as one search does."""
    video = run.video_at(first)
    frames, times = run.segment.column("frames"), run.segment.column("times")
    return {"video_id": video["sha256"], "video": video["name"], "path": video["path"],
            "track": int(run.segment.column("tracks")[first]),
            "start_frame": int(frames[first]), "end_frame": int(frames[last]),
            "start_time": float(times[first]), "end_time": float(times[last]),
            "score": float(np.float32(score)), "segment": int(run.segment.info.id),
            "row": int(first if row is None else row)}


def check_query(query) -> np.ndarray:
    """A query as float32 ``[M, 17, 3]`` pixel poses whose every pose can be normalized."""
    query = np.asarray(query, np.float32).reshape(-1, NUM_KEYPOINTS, 3)
    if query.shape[0] == 0:
        raise ArchiveError("query: no pose")
    _, weights = kernels.normalize(query)
    if not bool((weights > 0).any(axis=-1).all()):
        raise ArchiveError("query: a query pose has no keypoint above the confidence threshold")
    return query


def search_archive(archive: Archive, query, k: int = 10, *, query_fps: float | None = None,
                   min_gap: float = MOMENT_GAP_S, where: SearchFilter = SearchFilter(),
                   min_score: float = CLIP_MIN_SCORE, prune: bool = True,
                   shard: tuple[int, int] | None = None) -> list[dict]:
    """The ``k`` best hits of a pose ``[17, 3]`` / ``[1, 17, 3]`` (:func:`search_poses`) or a
    movement ``[M, 17, 3]`` filmed at ``query_fps`` (:func:`search_clip`), best first, in the
    archive or one ``shard`` ``(I, N)`` of it. A hit: ``video_id`` (content SHA-256), ``video``
    (name), ``path``, ``track``, ``start_frame`` / ``end_frame`` (inclusive), ``start_time`` /
    ``end_time`` (s), ``score`` 0-100."""
    check_k(k)
    query = check_query(query)
    if query.shape[0] == 1:
        hits = search_poses(archive, query[0], k, min_gap=min_gap, where=where, shard=shard)
    else:
        hits = search_clip(archive, query, k, query_fps=query_fps, where=where, min_score=min_score, prune=prune,
                           shard=shard)
    return [public_hit(h) for h in hits]


#: What a merge orders hits by (where a hit lies, its candidate's key), not part of the answer.
MERGE_FIELDS = ("segment", "row", "last_row", "key", "cost")


def public_hit(hit: dict) -> dict:
    """A hit as it is answered: without :data:`MERGE_FIELDS`."""
    return {name: value for name, value in hit.items() if name not in MERGE_FIELDS}


def check_k(k: int) -> int:
    """``k`` when a search may answer that many hits, else ArchiveError naming the bound."""
    if not 1 <= k <= MAX_K:
        raise ArchiveError(f"k: expected 1 <= k <= {MAX_K}, got {k}")
    return k


# -- pose queries ----------------------------------------------------------------------------------

def search_poses(archive: Archive, query: np.ndarray, k: int, *, min_gap: float = MOMENT_GAP_S,
                 where: SearchFilter = SearchFilter(), shard: tuple[int, int] | None = None) -> list[dict]:
    """The ``k`` best moments of a pose ``query [17, 3]`` (:func:`pose_search` over
    :func:`pose_candidates` of this archive)."""
    return pose_search(lambda count: pose_candidates(archive, query, count, where=where, shard=shard),
                       k, min_gap=min_gap, where=where)


def pose_search(fetch, k: int, *, min_gap: float = MOMENT_GAP_S, where: SearchFilter = SearchFilter()) -> list[dict]:
    """The ``k`` best moments, given ``fetch(count) -> (candidates, poses searched)`` (the
    :func:`pose_candidates` of an archive, or those of every shard of one, concatenated): the
    ``count`` best candidates by inner product (:func:`pose_moments`), ``count`` multiplied by
    four until k moments stand or every pose is a candidate."""
    count = max(4 * k, 32)
    while True:
        candidates, total = fetch(count)
        moments = pose_moments(candidates, count, k, min_gap, where)
        if len(moments) >= k or count >= total:
            return moments[:k]
        count = min(total, count * 4)


def pose_candidates(archive: Archive, query: np.ndarray, count: int, *, where: SearchFilter = SearchFilter(),
                    shard: tuple[int, int] | None = None) -> tuple[list[dict], int]:
    """The ``count`` best poses of a pose ``query [17, 3]`` among the videos ``where`` keeps (in
    ``shard``), by inner product of the float16 vectors in place (``kernels.search_topk`` per run
    of live rows; ties: lower segment, then row), each a hit scored exactly from its stored
    pixels by ``score_answer`` with its ``key`` (the inner product, float32); and the number of
    poses searched."""
    runs = _runs(archive, where.videos(archive), shard)
    total = sum(r.hi - r.lo for r in runs)
    if total == 0:
        return [], 0
    q_vec, _ = kernels.normalize(query)
    keys, owners = _scan_runs(q_vec, runs, count)
    segment_ids = np.array([runs[n].segment.info.id for n in owners[:, 0]], np.int64)
    best = np.lexsort((owners[:, 1], segment_ids, -keys))[:count]
    rows = owners[best]
    poses = np.empty((len(rows), NUM_KEYPOINTS, 3), np.float32)
    for number in np.unique(rows[:, 0]):
        at = np.flatnonzero(rows[:, 0] == number)
        segment, picked = runs[number].segment, rows[at, 1]
        order = np.argsort(picked)  # rows in file order
        poses[at[order], :, :2] = segment.column("xy")[picked[order]]
        poses[at[order], :, 2] = expand_confidences(segment.column("conf")[picked[order]])
    scores = score_answer(query, poses).scores
    hits = []
    for n, (number, row) in enumerate(rows):
        hit = _hit(runs[number], int(row), int(row), scores[n])
        hit["key"] = float(keys[best[n]])
        hits.append(hit)
    return hits, total


#: A CPU pose scan is cut into at least this many pieces a thread (fewer where pieces would be
#: under PIECE_MIN_ROWS), scanned on the kernels' threads one piece each.
PIECES_PER_THREAD = 4
PIECE_MIN_ROWS = 1 << 18


def _pieces(runs: list[_Run], threads: int) -> list[tuple[int, int, int]]:
    """``(run number, lo, hi)`` covering every run's rows, each piece at most an even share of
    ``PIECES_PER_THREAD x threads`` (at least PIECE_MIN_ROWS rows), cut on tile boundaries."""
    total = sum(r.hi - r.lo for r in runs)
    most = max(PIECE_MIN_ROWS, -(-total // (PIECES_PER_THREAD * threads)))
    most = -(-most // kernels.TILE_ROWS) * kernels.TILE_ROWS
    pieces = []
    for number, run in enumerate(runs):
        lo = run.lo
        while lo < run.hi:
            hi = min(run.hi, (lo // kernels.TILE_ROWS * kernels.TILE_ROWS) + most)
            pieces.append((number, lo, hi))
            lo = hi
    return pieces


def _scan_runs(q_vec: np.ndarray, runs: list[_Run], count: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``count`` (at least) inner products of ``q_vec [34]`` in each piece of ``runs``'
    rows: keys float32 ``[n]`` and owners int64 ``[n, 2]`` (run number, row). On the CPU the
    pieces (:func:`_pieces`) go to the kernels' threads, each scanned by one thread: one handoff
    a piece, not one a segment, and no thread idle while another finishes a long segment. On a
    GPU, one ``search_topk`` a run."""
    on_gpu = _gpu() is not None
    query = _on_device(q_vec[None])

    def scan(piece):
        number, lo, hi = piece
        base = _vectors(runs[number].segment)
        rows = {"rows": (lo, hi)} if base.ndim == 3 else {}
        scores, idx = (to_numpy(a) for a in kernels.search_topk(
            query, base if rows else base[lo:hi], min(count, hi - lo), "ip", **rows))
        good = idx[0] >= 0
        return scores[0][good].astype(np.float32), np.stack([np.full(good.sum(), number), lo + idx[0][good]], 1)

    if on_gpu:
        parts = [scan((number, run.lo, run.hi)) for number, run in enumerate(runs)]
    else:
        threads = numba.get_num_threads()
        parts = parallel_map(scan, _pieces(runs, threads), threads)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def pose_moments(candidates: list[dict], count: int, k: int, min_gap: float = MOMENT_GAP_S,
                 where: SearchFilter = SearchFilter()) -> list[dict]:
    """Of ``candidates`` (hits with ``key``), the ``count`` best by key, those inside the time
    filter, collapsed into at most ``k`` moments: best score first, a hit of one (video, track)
    within ``min_gap`` seconds of a better one dropped (ties: lower segment, then row)."""
    chosen = sorted(candidates, key=lambda h: (-h["key"], h["segment"], h["row"]))[:count]
    inside = where.times(np.array([h["start_time"] for h in chosen], np.float64))
    chosen = [h for h, keep in zip(chosen, inside) if keep]
    kept: dict[tuple, list[float]] = {}  # each (video, track)'s moment times, sorted
    moments = []
    for hit in sorted(chosen, key=lambda h: (-h["score"], h["segment"], h["row"])):
        nearby = kept.setdefault((hit["video_id"], hit["track"]), [])
        time = hit["start_time"]
        at = bisect.bisect_left(nearby, time)
        if (at < len(nearby) and nearby[at] - time < min_gap) or (at and time - nearby[at - 1] < min_gap):
            continue
        nearby.insert(at, time)
        moments.append(hit)
        if len(moments) == k:
            break
    return moments


class _DeviceVectors:
    """Segments' vectors resident on the GPU (CuPy), least recently used out beyond a byte budget
    (POSESCORE_DEVICE_BYTES, default half the device memory free at first use)."""

    def __init__(self):
        self.arrays: OrderedDict = OrderedDict()
        self.budget: int | None = None
        self.lock = threading.Lock()

    def get(self, cp, segment: MappedSegment):
        key = (segment.identity, str(segment.path))
        with self.lock:
            array = self.arrays.get(key)
            if array is not None:
                self.arrays.move_to_end(key)
                return array
            if self.budget is None:
                self.budget = int(os.environ.get("POSESCORE_DEVICE_BYTES") or cp.cuda.Device().mem_info[0] // 2)
            host = segment.rows("vectors", 0, segment.info.rows)
            while self.arrays and sum(a.nbytes for a in self.arrays.values()) + host.nbytes > self.budget:
                self.arrays.popitem(last=False)
            array = cp.asarray(host)
            if array.nbytes <= self.budget:
                self.arrays[key] = array
            return array


DEVICE_VECTORS = _DeviceVectors()


@functools.lru_cache(maxsize=1)
def _gpu():
    """CuPy when searches run on a GPU (one is present, and POSESCORE_SEARCH_GPU is not 0), else None."""
    cp = cupy_or_none()
    if cp is None or os.environ.get("POSESCORE_SEARCH_GPU", "1") == "0":
        return None
    try:
        return cp if cp.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # noqa: BLE001 - CuPy without a usable device
        return None


def _vectors(segment: MappedSegment):
    """A segment's float16 vectors: resident on the GPU as rows ``[n, 34]`` where searches run
    there, else mapped as the file holds them (tiles ``[t, 34, 64]``, or rows)."""
    cp = _gpu()
    return segment.column("vectors") if cp is None else DEVICE_VECTORS.get(cp, segment)


class _ClipSeries:
    """Rows ``[lo, hi)`` of a segment's vectors as a ``kernels.subsequence_dtw`` series, where
    searches run: ``(series, options)``. On the CPU tiles are searched in place (converted to
    float32 where the DP runs), rows converted; either into one float32 array reused from call to
    call, grown as needed (a fresh array of a batch's size costs a page fault per 4 KiB)."""

    def __init__(self):
        self.buffer: np.ndarray | None = None

    def __call__(self, segment: MappedSegment, lo: int, hi: int) -> tuple:
        stored = _vectors(segment)
        if _gpu() is not None:
            return stored[lo:hi].astype(np.float32), {}
        if self.buffer is None or self.buffer.shape[0] < hi - lo:
            self.buffer = np.empty((hi - lo, 2 * NUM_KEYPOINTS), np.float32)
        if stored.ndim == 3:
            return stored, {"rows": (lo, hi), "buffer": self.buffer}
        return kernels.float32_rows(stored, lo, hi, self.buffer), {}


def _on_device(array):
    cp = _gpu()
    return array if cp is None else cp.asarray(array)


def _sequences(run: _Run) -> np.ndarray:
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
    runs = _runs(archive, where.videos(archive), shard)
    scored = []
    for candidate in candidates:
        run = _run_of(runs, candidate)
        video = run.video_at(candidate.first)
        rate = _video_fps(run.segment, video)
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
            hit = _hit(run, first, last, refined, row=candidate.first)
            hit.update(key=score, cost=candidate.cost)
            hits.append(hit)
            taken.append((run.segment.info.id, first, last))
    return hits


def candidate_hit(archive: Archive, candidate: ClipCandidate) -> dict:
    """A DTW candidate as a hit without a score (NaN): where it lies, ``last_row`` and ``cost`` too."""
    segment = archive.segment(candidate.segment)
    hit = _hit(_Run(segment, 0, segment.info.rows, segment.info.videos), candidate.first, candidate.last, np.nan)
    hit.update(last_row=candidate.last, cost=candidate.cost)
    return hit


def _run_of(runs: list[_Run], candidate: ClipCandidate) -> _Run:
    """The run holding a candidate's rows."""
    for run in runs:
        if run.segment.info.id == candidate.segment and run.lo <= candidate.first <= candidate.last < run.hi:
            return run
    raise ArchiveError(f"clip candidate: rows {candidate.first}..{candidate.last} of segment {candidate.segment} "
                       f"are not searched here (another shard's, or the archive changed)")


def _refine(query, query_fps, run: _Run, first: int, last: int, score: float, taken: list,
            where: SearchFilter) -> tuple[float, int, int]:
    """A DTW match's first and last rows moved (within its sequence, clear of the hits ``taken``,
    inside the time filter) to the segment compare scores highest (``ascend_bounds``)."""
    video = run.video_at(first)
    rate = _video_fps(run.segment, video)
    lo, hi = _sequence_of(run, first)
    times = run.segment.column("times")

    def allowed(a, b):
        return (lo <= a and b < hi and b - a >= 1 and where.times(np.array([times[a], times[b]])).all()
                and not _overlaps(taken, run, a, b))

    def score_of(a, b):
        return movement_score(query, query_fps or rate, run.segment.poses(a, b + 1), rate).score

    return ascend_bounds(score_of, allowed, first, last, score)


def _overlaps(taken: list, run: _Run, first: int, last: int) -> bool:
    """Whether rows ``first..last`` of ``run``'s segment meet a hit ``taken`` (segment id, first, last)."""
    return any(t[0] == run.segment.info.id and t[1] <= last and first <= t[2] for t in taken)


def _video_fps(segment: MappedSegment, video: dict) -> float:
    """A video's frames per second: the catalog's, else from the median step of its poses' times."""
    if video["fps"]:
        return float(video["fps"])
    times = np.unique(segment.column("times")[video["first_row"]:video["first_row"] + video["poses"]])
    steps = np.diff(times)
    steps = steps[steps > 0]
    return float(1.0 / np.median(steps)) if len(steps) else 0.0


def _sequence_of(run: _Run, row: int) -> tuple[int, int]:
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
            _on_device(q_vec), series, k=count, series_lengths=lengths, prune=prune, max_cost=cap, **options))
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
    for run in _runs(archive, where.videos(archive), shard):
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


def hit_poses(archive: Archive, hit: dict) -> VideoPoses:
    """The poses of a hit (its video's track, its frames) as a one-person :class:`VideoPoses`,
    ready for ``compare``."""
    video = next((v for v in archive.videos if v["sha256"] == hit["video_id"]), None)
    if video is None:
        raise ArchiveError(f"{archive.root}: no video {hit['video_id']} (removed since the search?)")
    segment = archive.segment(video["segment"])
    lo, hi = video["first_row"], video["first_row"] + video["poses"]
    frames, tracks = segment.column("frames")[lo:hi], segment.column("tracks")[lo:hi]
    rows = lo + np.flatnonzero((tracks == hit["track"]) & (frames >= hit["start_frame"])
                               & (frames <= hit["end_frame"]))
    keypoints = segment.poses(int(rows[0]), int(rows[-1]) + 1)[rows - rows[0]]
    visible = (keypoints[..., 2] > 0)[..., None]
    low = np.where(visible, keypoints[..., :2], np.inf).min(1)
    high = np.where(visible, keypoints[..., :2], -np.inf).max(1)
    boxes = np.concatenate([low, high], 1)
    info = VideoInfo(path=video["path"] or video["name"], width=int(video["width"] or 0),
                     height=int(video["height"] or 0), fps=_video_fps(segment, video),
                     frame_count=int(video["frame_count"] or 0), duration=float(video["duration"] or 0.0))
    count = len(rows)
    return VideoPoses(info=info, frame_indices=segment.column("frames")[rows].astype(np.int64),
                      times=segment.column("times")[rows].astype(np.float32), keypoints=keypoints[:, None],
                      boxes=np.where(np.isfinite(boxes), boxes, 0.0)[:, None].astype(np.float32), scores=np.ones((count, 1), np.float32),
                      counts=np.ones(count, np.int32), tracks=np.zeros((count, 1), np.int32))
