"""Search in place: the parts every search shares (filters, runs, hits, vectors on the GPU) and pose search.

A pose query is scored by the ``score`` service's answer (``engine.analysis.answers.score_answer``) and
answers *moments*: hits of one (video, track) closer than ``min_gap`` seconds collapse into the
best, as ``find`` does. Clip search (``engine.archive.clip_search``) builds on the shared parts.

A search is written as phases that a shard of the archive (its segments ``id % N == I``) answers
alone, and a merge that is exact: :func:`pose_search` takes its phase as a function, so one
archive searched here and one archive split over several servers (``engine.archive.sharded``)
run the same merge. Ties are broken by (segment, row), never by the order in which parts arrive.
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
from posescore.engine.analysis.answers import MOMENT_GAP_S, score_answer
from posescore.engine.archive.reader import Archive
from posescore.engine.archive.segments import MappedSegment, expand_confidences
from posescore.engine.archive.shard import ArchiveError, in_shard
from posescore.engine.poses import VideoInfo, VideoPoses
from posescore.kernels import cupy_or_none, parallel_map, to_numpy
from posescore.kernels.skeleton import NUM_KEYPOINTS

#: Most hits one search answers.
MAX_K = 10_000


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
class Run:
    """Contiguous live rows ``[lo, hi)`` of one segment and the videos they hold."""

    segment: MappedSegment
    lo: int
    hi: int
    videos: list[dict]

    def video_at(self, row: int) -> dict:
        firsts = [v["first_row"] for v in self.videos]
        return self.videos[int(np.searchsorted(firsts, row, side="right")) - 1]


def live_runs(archive: Archive, keep: set[int], shard: tuple[int, int] | None = None) -> list[Run]:
    """The runs of live rows of the videos whose catalog rows are in ``keep`` (in ``shard``): each
    segment's adjacent videos in one run, in segment order."""
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
                current = Run(mapped, lo, hi, [video])
                runs.append(current)
    return runs


def run_hit(run: Run, first: int, last: int, score: float, row: int | None = None) -> dict:
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
    runs = live_runs(archive, where.videos(archive), shard)
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
        hit = run_hit(runs[number], int(row), int(row), scores[n])
        hit["key"] = float(keys[best[n]])
        hits.append(hit)
    return hits, total


#: A CPU pose scan is cut into at least this many pieces a thread (fewer where pieces would be
#: under PIECE_MIN_ROWS), scanned on the kernels' threads one piece each.
PIECES_PER_THREAD = 4
PIECE_MIN_ROWS = 1 << 18


def _pieces(runs: list[Run], threads: int) -> list[tuple[int, int, int]]:
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


def _scan_runs(q_vec: np.ndarray, runs: list[Run], count: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``count`` (at least) inner products of ``q_vec [34]`` in each piece of ``runs``'
    rows: keys float32 ``[n]`` and owners int64 ``[n, 2]`` (run number, row). On the CPU the
    pieces (:func:`_pieces`) go to the kernels' threads, each scanned by one thread: one handoff
    a piece, not one a segment, and no thread idle while another finishes a long segment. On a
    GPU, one ``search_topk`` a run."""
    on_gpu = search_gpu() is not None
    query = on_device(q_vec[None])

    def scan(piece):
        number, lo, hi = piece
        base = stored_vectors(runs[number].segment)
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


# -- where searches run --------------------------------------------------------------------------

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
def search_gpu():
    """CuPy when searches run on a GPU (one is present, and POSESCORE_SEARCH_GPU is not 0), else None."""
    cp = cupy_or_none()
    if cp is None or os.environ.get("POSESCORE_SEARCH_GPU", "1") == "0":
        return None
    try:
        return cp if cp.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # noqa: BLE001 - CuPy without a usable device
        return None


def stored_vectors(segment: MappedSegment):
    """A segment's float16 vectors: resident on the GPU as rows ``[n, 34]`` where searches run
    there, else mapped as the file holds them (tiles ``[t, 34, 64]``, or rows)."""
    cp = search_gpu()
    return segment.column("vectors") if cp is None else DEVICE_VECTORS.get(cp, segment)


def on_device(array):
    """``array`` where searches run: as it is, or copied to the GPU."""
    cp = search_gpu()
    return array if cp is None else cp.asarray(array)


# -- videos and hits -----------------------------------------------------------------------------

def video_fps(segment: MappedSegment, video: dict) -> float:
    """A video's frames per second: the catalog's, else from the median step of its poses' times."""
    if video["fps"]:
        return float(video["fps"])
    times = np.unique(segment.column("times")[video["first_row"]:video["first_row"] + video["poses"]])
    steps = np.diff(times)
    steps = steps[steps > 0]
    return float(1.0 / np.median(steps)) if len(steps) else 0.0


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
                     height=int(video["height"] or 0), fps=video_fps(segment, video),
                     frame_count=int(video["frame_count"] or 0), duration=float(video["duration"] or 0.0))
    count = len(rows)
    return VideoPoses(info=info, frame_indices=segment.column("frames")[rows].astype(np.int64),
                      times=segment.column("times")[rows].astype(np.float32), keypoints=keypoints[:, None],
                      boxes=np.where(np.isfinite(boxes), boxes, 0.0)[:, None].astype(np.float32),
                      scores=np.ones((count, 1), np.float32),
                      counts=np.ones(count, np.int32), tracks=np.zeros((count, 1), np.int32))
