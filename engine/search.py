"""Search an archive in place: the moments most like a pose, the movements most like a clip.

A pose query is scored by the ``score`` service's answer (``engine.services.score_answer``) and
answers *moments*: hits of one (video, track) closer than ``min_gap`` seconds collapse into the
best, as ``find`` does. A clip query's candidate segments come from subsequence DTW over every
(video, track) sequence (``kernels.subsequence_dtw``, pruned by lower bounds); each is then scored
by ``engine.services.movement_score``, the function ``compare`` scores with: one scale.
"""

from __future__ import annotations

import bisect
import fnmatch
import functools
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

import kernels
from kernels._backend import cupy_or_none, to_numpy
from kernels.scoring import distance_for_score
from kernels.skeleton import NUM_KEYPOINTS

from .archive import Archive, ArchiveError, MappedSegment, expand_confidences
from .poses import VideoInfo, VideoPoses
from .services import ascend_bounds, movement_score, score_answer

#: Hits of one (video, track) closer than this (seconds) are one moment; ``find``'s moments and
#: ``compare``'s worst moments are at least this far apart too.
MOMENT_GAP_S = 0.5
#: Most hits one search answers.
MAX_K = 10_000
#: Vectors per subsequence_dtw call in a clip search (whole sequences; float32 copies, 36 MB).
SEARCH_BATCH_POSES = 262_144
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


def check_clip_cost(archive: Archive, query_frames: int, where: "SearchFilter", max_cells: int = MAX_CLIP_CELLS) -> int:
    """The cells a clip search of ``query_frames`` frames over the poses ``where`` keeps costs (its
    video filter; the time filter is not counted); ``ValueError`` naming the bound when over
    ``max_cells``, before any work, so that one request cannot hold a server for minutes."""
    rows = where.videos(archive)
    poses = sum(int(v["poses"]) for v in archive.videos if v["video_row"] in rows)
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


def _runs(archive: Archive, keep: set[int]) -> list[_Run]:
    runs = []
    for info in archive.segments.values():
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


def _hit(run: _Run, first: int, last: int, score: float) -> dict:
    """One hit, rows ``first..last`` (inclusive) of ``run``'s segment."""
    video = run.video_at(first)
    frames, times = run.segment.column("frames"), run.segment.column("times")
    return {"video_id": video["sha256"], "video": video["name"], "path": video["path"],
            "track": int(run.segment.column("tracks")[first]),
            "start_frame": int(frames[first]), "end_frame": int(frames[last]),
            "start_time": float(times[first]), "end_time": float(times[last]), "score": float(score)}


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
                   min_score: float = CLIP_MIN_SCORE, prune: bool = True) -> list[dict]:
    """The ``k`` best hits of a pose ``[17, 3]`` / ``[1, 17, 3]`` (:func:`search_poses`) or a
    movement ``[M, 17, 3]`` filmed at ``query_fps`` (:func:`search_clip`), best first. A hit:
    ``video_id`` (content SHA-256), ``video`` (name), ``path``, ``track``, ``start_frame`` /
    ``end_frame`` (inclusive), ``start_time`` / ``end_time`` (s), ``score`` 0-100."""
    if not 1 <= k <= MAX_K:
        raise ArchiveError(f"k: expected 1 <= k <= {MAX_K}, got {k}")
    query = check_query(query)
    if query.shape[0] == 1:
        return search_poses(archive, query[0], k, min_gap=min_gap, where=where)
    return search_clip(archive, query, k, query_fps=query_fps, where=where, min_score=min_score, prune=prune)


def search_poses(archive: Archive, query: np.ndarray, k: int, *, min_gap: float = MOMENT_GAP_S,
                 where: SearchFilter = SearchFilter()) -> list[dict]:
    """The ``k`` best moments of a pose ``query [17, 3]``: candidates by inner product of the
    float16 vectors in place (``kernels.search_topk`` per run of live rows), each scored from its
    stored pixels by ``score_answer``; hits of one (video, track) within ``min_gap`` seconds of a
    better one are dropped, and the candidates multiplied by four until k moments stand or none
    are left."""
    runs = _runs(archive, where.videos(archive))
    total = sum(r.hi - r.lo for r in runs)
    if total == 0:
        return []
    q_vec, _ = kernels.normalize(query)
    candidates = min(total, max(4 * k, 32))
    while True:
        keys, owners = [], []
        for number, run in enumerate(runs):
            c = min(candidates, run.hi - run.lo)
            scores, idx = (to_numpy(a) for a in kernels.search_topk(
                _on_device(q_vec[None]), _vectors(run.segment)[run.lo:run.hi], c, "ip"))
            good = idx[0] >= 0
            keys.append(scores[0][good])
            owners.append(np.stack([np.full(good.sum(), number), run.lo + idx[0][good]], 1))
        keys, owners = np.concatenate(keys), np.concatenate(owners)
        best = np.argsort(-keys, kind="stable")[:candidates]
        moments = _moments(runs, owners[best], query, k, min_gap, where)
        if len(moments) >= k or candidates >= total:
            return moments[:k]
        candidates = min(total, candidates * 4)


def _moments(runs: list[_Run], rows: np.ndarray, query: np.ndarray, k: int, min_gap: float,
             where: SearchFilter) -> list[dict]:
    """Candidates ``rows [C, 2]`` (run number, segment row), best first, scored exactly, filtered by
    time and collapsed into moments."""
    poses = np.empty((len(rows), NUM_KEYPOINTS, 3), np.float32)
    times = np.empty(len(rows), np.float64)
    keys = np.empty((len(rows), 2), np.int64)  # (video row, track)
    for number in np.unique(rows[:, 0]):
        at = np.flatnonzero(rows[:, 0] == number)
        run, picked = runs[number], rows[at, 1]
        order = np.argsort(picked)  # rows in file order
        segment, sorted_rows = run.segment, picked[order]
        poses[at[order], :, :2] = segment.column("xy")[sorted_rows]
        poses[at[order], :, 2] = expand_confidences(segment.column("conf")[sorted_rows])
        times[at[order]] = segment.column("times")[sorted_rows]
        firsts = np.array([v["first_row"] for v in run.videos])
        owner = np.searchsorted(firsts, picked, side="right") - 1
        keys[at, 0] = np.array([v["video_row"] for v in run.videos])[owner]
        keys[at, 1] = segment.column("tracks")[picked]
    keep = where.times(times)
    if not keep.any():
        return []
    scores = score_answer(query, poses).scores
    kept: dict[tuple, list[float]] = {}  # each (video, track)'s moment times, sorted
    moments = []
    for n in np.argsort(-np.where(keep, scores, -np.inf), kind="stable"):
        if not keep[n]:
            break
        nearby = kept.setdefault((int(keys[n, 0]), int(keys[n, 1])), [])
        at = bisect.bisect_left(nearby, times[n])
        if (at < len(nearby) and nearby[at] - times[n] < min_gap) or (at and times[n] - nearby[at - 1] < min_gap):
            continue
        nearby.insert(at, times[n])
        number, row = rows[n]
        moments.append(_hit(runs[number], int(row), int(row), scores[n]))
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
            host = segment.column("vectors")
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
    """A segment's float16 vectors: resident on the GPU where searches run there, else mapped."""
    cp = _gpu()
    return segment.column("vectors") if cp is None else DEVICE_VECTORS.get(cp, segment)


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


def search_clip(archive: Archive, query: np.ndarray, k: int, *, query_fps: float | None = None,
                where: SearchFilter = SearchFilter(), min_score: float = CLIP_MIN_SCORE,
                prune: bool = True) -> list[dict]:
    """The ``k`` best matches of a movement ``query [M, 17, 3]`` (filmed at ``query_fps``): the
    ``CLIP_CANDIDATES * k`` best disjoint subsequence-DTW matches of its normalized frames in every
    (video, track) sequence (pruned by lower bounds where ``prune``: the same matches), each scored
    by ``movement_score`` against the segment's stored poses at its video's fps (the query's too
    when ``query_fps`` is None); the best k, best first, each with its bounds refined to the
    segment compare scores highest (:func:`_refine`); hits under ``min_score`` are dropped (and
    DTW matches CLIP_SCORE_MARGIN under it on their own scale are not candidates), so fewer than k
    may come back. A time filter keeps matches that lie inside ``[start, end]``."""
    wanted = max(CLIP_CANDIDATES * k, k + 10)
    floor = min_score - CLIP_SCORE_MARGIN
    max_cost = None if floor <= 0 else distance_for_score(floor, "cosine") / np.sqrt(len(query))
    scored = []
    for _, run, first, last in clip_candidates(archive, query, wanted, where=where, prune=prune,
                                               max_cost=max_cost):
        video = run.video_at(first)
        rate = _video_fps(run.segment, video)
        score = movement_score(query, query_fps or rate, run.segment.poses(first, last + 1), rate).score
        scored.append((score, run, first, last))
    scored.sort(key=lambda item: -item[0])
    hits, taken = [], []  # taken: (segment id, first, last) of the hits answered
    for score, run, first, last in scored:
        if len(hits) == k:
            break
        if _overlaps(taken, run, first, last):
            continue  # a better hit grew over it
        score, first, last = _refine(query, query_fps, run, first, last, score, taken, where)
        if score >= min_score:
            hits.append(_hit(run, first, last, score))
            taken.append((run.segment.info.id, first, last))
    hits.sort(key=lambda h: -h["score"])
    return hits


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
                    prune: bool = True, max_cost: float | None = None) -> list[tuple]:
    """The ``count`` best disjoint subsequence-DTW matches of ``query [M, 17, 3]``'s normalized
    frames (costing at most ``max_cost``) over every (video, track) sequence that ``where`` keeps,
    by DTW cost: ``(cost, run, first row, last row)``, best first."""
    q_vec, _ = kernels.normalize(query)
    found = []
    for run, lo, hi, lengths in _clip_batches(archive, where):
        vectors = _vectors(run.segment)[lo:hi].astype(np.float32)
        costs, starts, ends = (to_numpy(a) for a in kernels.subsequence_dtw(
            _on_device(q_vec), vectors, k=count, series_lengths=lengths, prune=prune, max_cost=max_cost))
        for cost, s, e in zip(costs, starts, ends):
            first, last = lo + int(s), lo + int(e) - 1
            times = run.segment.column("times")
            if where.times(np.array([times[first], times[last]])).all():
                found.append((float(cost), run, first, last))
    found.sort(key=lambda f: f[0])
    return found[:count]


def _clip_batches(archive: Archive, where: SearchFilter):
    """``(run, lo, hi, sequence lengths)``: whole sequences of a run, about SEARCH_BATCH_POSES rows
    a batch; the k best of each batch together hold the k best of the archive (no match spans two
    sequences)."""
    for run in _runs(archive, where.videos(archive)):
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
