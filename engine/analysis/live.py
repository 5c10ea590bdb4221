"""Live repetitions: streams of poses scored as they come, each repetition reported once it is final.

Every stream is matched against its reference with a streaming subsequence DTW
(``kernels.spring_step``: SPRING, forwards and backwards, one call advancing every stream by one
frame); a match SPRING calls final is bounded and scored by the offline search
(``analysis.reps.search_reps``) on that stretch of the stream, and reported with the report row
``reps`` writes (``analysis.report.rep_row``): one function, one scale. No I/O here: the ``live``
model (``engine.serving.live``) and ``posescore live`` feed a :class:`LivePool`.

    pool = LivePool()
    pool.open("athlete-1", reference_poses, reference_fps=30.0, fps=30.0)
    events = pool.step([("athlete-1", pose, time, frame)])["athlete-1"]   # frame (and rep) events
    end = pool.close("athlete-1")                                        # every repetition
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from posescore import kernels
from posescore.engine.analysis.people import performer_of
from posescore.engine.analysis.report import rep_row
from posescore.engine.analysis.reps import REP_MAX_RATIO, REP_MIN_RATIO, REP_MIN_SCORE, search_grids, search_reps
from posescore.engine.poses import VideoInfo, VideoPoses
from posescore.kernels import SCORE_THRESHOLD
from posescore.kernels.skeleton import FLIP_PERMUTATION, PART_NAMES

#: A stream match is a candidate when its cost per step maps to at least this much under the
#: minimum repetition score (the offline search's candidates too are weighed from 20 under).
CANDIDATE_MARGIN = 20.0
#: Frames kept before the last repetition's end, and the longest stretch a stream keeps, in
#: repetitions of the longest allowed duration.
KEEP_REPETITIONS = 3
#: Freed DP rows kept until they are at least this many (and half of all): a compaction copies
#: every stream's columns.
COMPACT_MIN_ROWS = 4096


class LiveError(ValueError):
    """A stream request that cannot be served; the message names the stream and the problem."""


@dataclass
class _Stream:
    """One stream's state beside its two lanes (forwards, backwards) in the pool's DP."""

    key: str
    reference: np.ndarray                 # [R, 17, 3] the performer's frames
    reference_fps: float
    fps: float
    rate: float                           # the DP's clock: the lower of the two frame rates
    grid: np.ndarray                      # reference rows on that clock
    vectors: np.ndarray                   # [G, 34] normalized reference rows on the clock
    weights: np.ndarray                   # [G, 17]
    reference_poses: VideoPoses
    name: str
    poses: list = field(default_factory=list)      # performer frames since ``base``
    times: list = field(default_factory=list)
    frames: list = field(default_factory=list)
    base: int = 0                         # stream position of poses[0]
    seen: int = 0                         # performer frames so far
    ticks: list = field(default_factory=list)      # stream position of each DP step since tick_base
    tick_base: int = 0                    # DP steps dropped from ``ticks``
    next_tick: float = -math.inf
    last_time: float = -math.inf
    committed: int = 0                    # positions before this are in a reported repetition
    pending: int = -1                     # a final match's end whose repetition is not reported yet
    reps: list = field(default_factory=list)
    side_pose: np.ndarray = field(default_factory=lambda: np.full((17, 3), np.nan, np.float32))  # last seen, as labelled
    side_cost: np.ndarray = field(default_factory=lambda: np.zeros(2))  # its labellings' Viterbi costs

    @property
    def duration(self) -> float:
        return (len(self.reference) - 1) / self.reference_fps


class LivePool:
    """Many live streams, each against its own reference; :meth:`step` advances any number of
    them by a frame each with one kernel call. ``threshold``, ``mirror``, ``min_ratio``,
    ``max_ratio`` and ``min_score`` as in ``posescore reps``."""

    def __init__(self, *, threshold: float = SCORE_THRESHOLD, mirror: bool = False, min_ratio: float = REP_MIN_RATIO,
                 max_ratio: float = REP_MAX_RATIO, min_score: float = REP_MIN_SCORE):
        self.threshold, self.mirror = threshold, mirror
        self.min_ratio, self.max_ratio, self.min_score = min_ratio, max_ratio, min_score
        self.streams: dict[str, _Stream] = {}
        self._lane: dict[str, int] = {}   # each stream's forwards lane l (backwards: l + 1)
        self._state = kernels.SpringState()

    def __len__(self) -> int:
        return len(self.streams)

    # -- streams ---------------------------------------------------------------------------------
    def open(self, key: str, reference: np.ndarray, reference_fps: float, fps: float, *,
             name: str = "reference") -> dict:
        """Start stream ``key`` against ``reference [R, 17, 3]`` (one repetition: the performer's
        pixel poses at ``reference_fps``); its frames come at ``fps``. Returns the ``start`` event.
        A key already open, a reference of fewer than 2 frames or a rate that is not > 0 is a
        :class:`LiveError`."""
        if key in self.streams:
            raise LiveError(f"stream {key}: already started (end it first, or use another id)")
        reference = np.asarray(reference, np.float32)
        if reference.ndim != 3 or reference.shape[1:] != (17, 3) or len(reference) < 2:
            raise LiveError(f"stream {key}: the reference must be at least 2 poses [R, 17, 3], got shape "
                            f"{list(reference.shape)}")
        if not np.isfinite(reference).all():
            raise LiveError(f"stream {key}: the reference holds NaN or infinite values")
        for what, value in (("reference fps", reference_fps), ("fps", fps)):
            if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value) and value > 0):
                raise LiveError(f"stream {key}: {what}: expected frames per second > 0, got {value!r}")
        grid, _, rate = search_grids(len(reference), float(reference_fps), np.array([0.0, 1.0]), float(fps))
        vectors, weights = kernels.normalize(kernels.consistent_sides(reference)[grid])
        stream = _Stream(key, reference, float(reference_fps), float(fps), rate, grid, vectors, weights,
                         as_video_poses(reference, np.arange(len(reference)) / reference_fps,
                                        np.arange(len(reference)), name, reference_fps), name)
        floor = max(1.0, self.min_score - CANDIDATE_MARGIN)
        lanes = self._state.add([vectors, vectors[::-1]], kernels.distance_for_score(floor, "cosine") ** 2,
                                max(2, int(self.min_ratio * stream.duration * rate)))
        self.streams[key], self._lane[key] = stream, int(lanes[0])
        return {"event": "start", "stream": key, "reference_frames": len(reference),
                "reference_duration": round(stream.duration, 3), "rate": rate}

    def close(self, key: str) -> dict:
        """End stream ``key``: the repetitions still held or in its last frames are reported, its
        state freed. Returns the ``end`` event (every repetition, and the new ones as ``new``)."""
        stream = self._stream(key)
        new = self._report(stream, until=None)  # nothing left to wait for
        self._remove(key)
        return {"event": "end", "stream": key, "count": len(stream.reps), "reps": list(stream.reps), "new": new}

    def abandon(self, key: str) -> None:
        """Free stream ``key`` without reporting (a client gone, an idle stream)."""
        if key in self.streams:
            self._remove(key)

    # -- frames ----------------------------------------------------------------------------------
    def step(self, frames: list[tuple]) -> dict[str, list[dict]]:
        """Advance each stream named in ``frames`` (``(key, pose [17, 3] or None, time s, frame
        index)``, at most one per stream) by that frame. Returns each key's events: a ``frame``
        event (time, frame, ``seen``, and when seen the ``phase`` 0-1 in the reference, the running
        ``score``, its ``worst_part`` and each part's score in ``parts``, None where not scored)
        and a ``rep`` event per repetition that became final.
        A frame for a stream not open, a second frame for one stream, a time that does not
        increase or a pose with NaN is a :class:`LiveError` (and nothing is advanced)."""
        keys = [item[0] for item in frames]
        if len(set(keys)) != len(keys):
            raise LiveError("one frame per stream per step")
        checked = []
        for key, pose, time, frame in frames:
            stream = self._stream(key)
            time = float(time)
            if not math.isfinite(time) or time <= stream.last_time:
                raise LiveError(f"stream {key}: frame time {time:g} s is not after the last one "
                                f"({stream.last_time:g} s): times must increase")
            if pose is not None:
                pose = np.asarray(pose, np.float32)
                if pose.shape != (17, 3):
                    raise LiveError(f"stream {key}: a pose is [17, 3] (x, y, confidence), got {list(pose.shape)}")
                if not np.isfinite(pose).all():
                    raise LiveError(f"stream {key}: the pose at {time:g} s holds NaN or infinite values")
                if not (pose[:, 2] > kernels.DEFAULT_MIN_CONFIDENCE).sum() >= 2:
                    pose = None  # no one to follow in this frame
            checked.append((stream, pose, time, int(frame)))
        events: dict[str, list[dict]] = {key: [] for key in keys}
        seen = [(stream, pose) for stream, pose, _, _ in checked if pose is not None]
        if seen:  # each stream's sides as consistent_sides would label its last frame, all in one call
            current = np.stack([pose for _, pose in seen])
            swap, costs = kernels.consistent_sides_step(np.stack([s.side_pose for s, _ in seen]), current,
                                                        np.stack([s.side_cost for s, _ in seen]))
            labelled = np.where(swap[:, None, None], current[:, list(FLIP_PERMUTATION)], current)
            for n, (stream, pose) in enumerate(seen):
                stream.side_pose, stream.side_cost = pose, costs[n]
            labelled = {id(stream): labelled[n] for n, (stream, _) in enumerate(seen)}
        advance = []
        for stream, pose, time, frame in checked:
            stream.last_time = time
            event = {"event": "frame", "time": round(time, 3), "frame": frame, "seen": pose is not None}
            events[stream.key].append(event)
            if pose is None:
                continue
            stream.poses.append(pose)  # as it came: scored as reps scores it, sides undone over the repetition
            pose = labelled[id(stream)]
            stream.times.append(time)
            stream.frames.append(frame)
            stream.seen += 1
            if time + 0.5 / stream.rate >= stream.next_tick:  # this frame is on the DP's clock
                stream.ticks.append(stream.seen - 1)
                while stream.next_tick <= time + 0.5 / stream.rate:
                    stream.next_tick = (time if not math.isfinite(stream.next_tick) else stream.next_tick) \
                        + 1.0 / stream.rate
                advance.append((stream, pose, event))
        if advance:
            self._advance(advance, events)
        for stream, _, _, _ in checked:
            self._trim(stream)
        return events

    # -- internals -------------------------------------------------------------------------------
    def _stream(self, key: str) -> _Stream:
        try:
            return self.streams[key]
        except KeyError:
            raise LiveError(f"stream {key}: not started, or already ended (start it first)") from None

    def _advance(self, advance: list, events: dict) -> None:
        """One kernel call for every lane of the streams in ``advance``; frame events filled, and
        final matches bounded, scored and reported."""
        vectors, weights = kernels.normalize(np.stack([pose for _, pose, _ in advance]))
        lanes, rows, times = [], [], []
        for n, (stream, _, _) in enumerate(advance):
            first = self._lane[stream.key]
            lanes += [first, first + 1]
            rows += [n, n]
            times += [stream.tick_base + len(stream.ticks) - 1] * 2
        lanes = np.asarray(lanes, np.int64)
        steps = kernels.spring_step(self._state, lanes, vectors[rows], times)
        # The running score and worst part: this frame against the reference row it has reached.
        forwards = steps[0::2]
        phase_rows = forwards[:, 2].astype(np.int64)
        query = np.stack([s.vectors[r] for (s, _, _), r in zip(advance, phase_rows)])
        query_w = np.stack([s.weights[r] for (s, _, _), r in zip(advance, phase_rows)])
        parts, valid = kernels.part_scores(query, query_w, vectors, weights, return_valid=True,
                                           query_index=np.arange(len(advance)))
        now = np.array([s.tick_base + len(s.ticks) for s, _, _ in advance])
        length = np.maximum(phase_rows + 1, now - forwards[:, 4].astype(np.int64))
        scores = np.round(kernels.score_from_distance(np.sqrt(np.maximum(forwards[:, 3], 0.0) / length), "cosine"), 1)
        worst = np.where(valid.any(axis=1), np.where(valid, parts, np.inf).argmin(axis=1), -1)
        parts = np.round(parts, 1)
        for n, (stream, _, event) in enumerate(advance):
            event["phase"] = round(float(phase_rows[n]) / max(1, len(stream.grid) - 1), 3)
            event["score"] = float(scores[n])
            event["worst_part"] = PART_NAMES[worst[n]] if worst[n] >= 0 else None
            event["parts"] = {name: (float(parts[n, p]) if valid[n, p] else None) for p, name in enumerate(PART_NAMES)}
        for n, lane in enumerate(lanes.tolist()):
            stream = advance[n // 2][0]
            if steps[n, 5] > 0:
                end = stream.ticks[int(steps[n, 8]) - stream.tick_base]
                stream.pending = max(stream.pending, end)
        for stream, _, _ in advance:
            # Reported once nothing overlapping it can still be under way, or a reference's
            # duration after its end at the latest (a live answer cannot wait for every rival).
            due = stream.pending + math.ceil(stream.duration * stream.fps)
            if stream.pending >= 0 and (stream.seen - 1 >= due or not self._open_before(stream, stream.pending)):
                events[stream.key] += self._report(stream, until=stream.pending)

    def _open_before(self, stream: _Stream, position: int) -> bool:
        """Whether an alignment of either lane that began at or before stream position
        ``position`` could still become a candidate (its cost per step within the candidates'
        bound): a repetition overlapping the one found there may still be under way, and the
        offline search would weigh the two against each other."""
        n, state = self._lane[stream.key], self._state
        lo, mid, hi = state.offsets[n], state.offsets[n + 1], state.offsets[n + 2]
        tick = stream.tick_base + int(np.searchsorted(stream.ticks, position, side="right")) - 1
        now = stream.tick_base + len(stream.ticks) - 1
        rows = np.concatenate([np.arange(mid - lo), np.arange(hi - mid)])
        col, start = state.col[lo:hi], state.col_start[lo:hi]
        length = np.maximum(rows + 1, now - start + 1)
        return bool(np.any((start <= tick) & (col <= state.max_step_cost[n] * length)))

    def _report(self, stream: _Stream, until: int | None) -> list[dict]:
        """Repetitions found from the last one reported to the newest frame, ending at or before
        stream position ``until`` (a final match's end, give or take a quarter of the reference;
        None: all, the stream has ended), reported as ``rep`` events."""
        lo = max(stream.committed, stream.base)
        hi = stream.seen
        if hi - lo < 2:
            return []
        poses = np.stack(stream.poses[lo - stream.base:hi - stream.base])
        times = np.asarray(stream.times[lo - stream.base:hi - stream.base], np.float64)
        found = search_reps(stream.reference, stream.reference_fps, poses, times, stream.fps,
                            min_ratio=self.min_ratio, max_ratio=self.max_ratio, min_score=self.min_score,
                            mirror=self.mirror).reps
        slack = math.ceil(0.25 * stream.duration * stream.fps)
        found = [rep for rep in found if until is None or lo + rep.last <= until + slack]
        stream.pending = -1
        if not found:
            return []
        window = as_video_poses(poses, times, np.asarray(stream.frames[lo - stream.base:hi - stream.base]),
                                "attempt", stream.fps)
        r_perf = performer_of(stream.reference_poses, np.zeros((len(stream.reference), 1), np.int32), 0)
        a_perf = performer_of(window, np.zeros((len(window), 1), np.int32), 0)
        events = []
        for rep in found:
            row = rep_row(len(stream.reps) + 1, stream.reference_poses, r_perf, window, a_perf, rep.first, rep.last,
                          rep.backwards, threshold=self.threshold, mirror=self.mirror,
                          names=(stream.name, stream.key))
            row.pop("report")
            stream.reps.append(row)
            events.append({"event": "rep", "stream": stream.key, **row})
        stream.committed = lo + found[-1].last + 1
        return events

    def _trim(self, stream: _Stream) -> None:
        """Drop frames no repetition to come can use: before the last one reported, less nothing;
        and beyond KEEP_REPETITIONS of the longest repetition."""
        keep = math.ceil(KEEP_REPETITIONS * self.max_ratio * stream.duration * stream.fps) + 1
        drop = max(min(stream.committed, stream.seen) - stream.base, stream.seen - stream.base - keep, 0)
        if drop:
            del stream.poses[:drop], stream.times[:drop], stream.frames[:drop]
            stream.base += drop
            # DP steps whose match could still be held: a final match ends within the longest
            # repetition of the newest frame.
            old = max(0, len(stream.ticks) - keep)
            del stream.ticks[:old]
            stream.tick_base += old
            stream.committed = max(stream.committed, stream.base)

    def _remove(self, key: str) -> None:
        """Free stream ``key``'s lanes; the DP's arrays are compacted once half their rows are freed."""
        lane = self._lane.pop(key)
        del self.streams[key]
        self._state.remove([lane, lane + 1])
        if self._state.dead_rows > max(COMPACT_MIN_ROWS, self._state.rows // 2):
            mapping = self._state.compact()
            self._lane = {k: int(mapping[v]) for k, v in self._lane.items()}


def as_video_poses(poses: np.ndarray, times: np.ndarray, frames: np.ndarray, name: str,
                   fps: float) -> VideoPoses:
    """One performer's frames as a VideoPoses of one person per row (boxes: the visible keypoints'
    extent), for the report functions."""
    poses = np.asarray(poses, np.float32)
    n = len(poses)
    seen = poses[..., 2] > kernels.DEFAULT_MIN_CONFIDENCE
    xy = np.where(seen[..., None], poses[..., :2], np.nan)
    with np.errstate(all="ignore"):
        boxes = np.stack([np.nanmin(xy[..., 0], 1), np.nanmin(xy[..., 1], 1), np.nanmax(xy[..., 0], 1),
                          np.nanmax(xy[..., 1], 1)], -1)
    boxes = np.nan_to_num(boxes).astype(np.float32)
    info = VideoInfo(path=name, width=0, height=0, fps=float(fps), frame_count=n,
                     duration=float(times[-1] - times[0]) if n else 0.0)
    return VideoPoses(info=info, frame_indices=np.asarray(frames, np.int64), times=np.asarray(times, np.float32),
                      keypoints=poses[:, None], boxes=boxes[:, None], scores=np.ones((n, 1), np.float32),
                      counts=np.ones(n, np.int32))

