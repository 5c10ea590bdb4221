"""The ``live`` model's answer: many streams, one per correlation ID, each advanced by a frame per
request, every stream of a batch in one kernel call (``engine.analysis.live.LivePool``).

Triton's sequence batcher routes a stream's requests here in order, with its START and END flags;
this service keeps each stream's state, frees a stream idle for longer than the idle time (the
client vanished: Triton tells the model nothing), refuses a stream beyond ``max_sequences`` with a
message starting ``RESOURCE_EXHAUSTED`` (the python backend has no such status code; the model
answers UNAVAILABLE), and names a reference from the server's library:
``<archive root>/references/NAME.json`` (a pose JSON as ``posescore pose`` writes; the person who
moves the most is the performer, as ``reps`` chooses a reference's).

    service = LiveService(max_sequences=4096, idle_s=30)
    answers = service.answer([LiveRequest(key, start=True, options={...}, reference=poses, pose=p, time=0.0)])
    # answers[n]: the request's list of events, or the LiveError it alone failed with
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time as clock
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posescore.engine.analysis.live import LiveError, LivePool
from posescore.engine.analysis.people import most_moving_performer, track_people
from posescore.engine.analysis.reps import REP_MAX_RATIO, REP_MIN_RATIO, REP_MIN_SCORE
from posescore.engine.media.pose_files import read_poses_json
from posescore.engine.poses import VideoError
from posescore.kernels import SCORE_THRESHOLD

#: Streams one server holds at once by default (config.pbtxt's ``max_sequences``).
MAX_SEQUENCES = 4096
#: Seconds a stream may send nothing before its state is freed (config.pbtxt's sequence batcher).
IDLE_S = 30.0
#: Most reference frames a START may send (a repetition of 60 s at 30 fps).
MAX_REFERENCE_FRAMES = 1800
#: Where the server's reference library lives, under the archive root.
REFERENCES_FOLDER = "references"
#: The options a START may carry, with their types.
OPTIONS = {"fps": float, "reference_fps": float, "threshold": float, "mirror": bool, "min_ratio": float,
           "max_ratio": float, "min_score": float, "reference_name": str, "name": str}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class LiveBusy(LiveError):
    """More streams than the server holds (the message starts with RESOURCE_EXHAUSTED)."""

    unavailable = True  # plumbing.error_response: UNAVAILABLE


@dataclass
class LiveRequest:
    """One request of a stream: ``key`` its correlation ID; ``start``/``end`` the sequence flags;
    ``pose [17, 3]`` float32 pixels (None: no frame, as an END alone sends) at ``time`` seconds,
    ``frame`` its index (None: counted); with ``start``, ``options`` (see :data:`OPTIONS`) and
    ``reference [R, 17, 3]`` (or ``options["reference_name"]`` from the library)."""

    key: str
    start: bool = False
    end: bool = False
    pose: np.ndarray | None = None
    time: float | None = None
    frame: int | None = None
    reference: np.ndarray | None = None
    options: dict = field(default_factory=dict)


class LiveService:
    """The streams of one model instance: :meth:`answer` serves a batch of requests."""

    def __init__(self, *, max_sequences: int = MAX_SEQUENCES, idle_s: float = IDLE_S,
                 references: str | os.PathLike | None = None):
        self.max_sequences, self.idle_s = int(max_sequences), float(idle_s)
        self.references = Path(references) if references is not None else None
        self.pools: dict[tuple, LivePool] = {}  # streams sharing options share a pool (one kernel call)
        self.stream_pool: dict[str, tuple] = {}
        self.last_seen: dict[str, float] = {}  # each stream's last request, least recent first
        self.frames: dict[str, int] = {}
        self.opened = self.ended = self.freed_idle = 0  # streams, since the service began
        self.lock = threading.Lock()

    @classmethod
    def from_parameters(cls, parameters: dict[str, str], idle_s: float) -> "LiveService":
        """The service a model instance runs, from config.pbtxt's parameters and the archive root."""
        from posescore.engine.archive.shard import ARCHIVE_ROOT_ENV

        root = os.environ.get(ARCHIVE_ROOT_ENV)
        return cls(max_sequences=int(parameters.get("max_sequences", MAX_SEQUENCES)), idle_s=idle_s,
                   references=Path(root) / REFERENCES_FOLDER if root else None)

    def __len__(self) -> int:
        return len(self.stream_pool)

    def warm_up(self) -> None:
        """Compile and load what a stream uses (numba kernels, the reps search) on a synthetic
        stream, so that the first client's START and frames do not pay for it."""
        t = np.linspace(0.0, np.pi, 12)
        reference = np.zeros((12, 17, 3), np.float32)
        reference[..., 0] = 100 + 40 * np.cos(t)[:, None] + np.arange(17) * 5
        reference[..., 1] = 100 + 40 * np.sin(t)[:, None] + np.arange(17) * 9
        reference[..., 2] = 0.9
        pool = LivePool()
        pool.open("warm-up", reference, 30.0, 30.0)
        stream = np.concatenate([reference[:1].repeat(4, 0), reference, reference[-1:].repeat(4, 0)])
        for n, pose in enumerate(stream):
            pool.step([("warm-up", pose, n / 30.0, n)])
        pool.close("warm-up")

    def answer(self, requests: list[LiveRequest]) -> list:
        """Each request's events (a list of dicts), or the :class:`LiveError` it alone failed with.
        Starts first, then every stream's frame (one step per pool), then ends; requests of one
        stream in one batch are served in order."""
        with self.lock:
            self.sweep()
            results: list = [[] for _ in requests]
            now = clock.monotonic()
            rounds: list[list[int]] = []  # a stream's second request in a batch waits for the next round
            seen: dict[str, int] = {}
            for n, request in enumerate(requests):
                depth = seen[request.key] = seen.get(request.key, -1) + 1
                while len(rounds) <= depth:
                    rounds.append([])
                rounds[depth].append(n)
            for members in rounds:
                self._round(requests, members, results, now)
            return results

    def _round(self, requests: list[LiveRequest], members: list[int], results: list, now: float) -> None:
        framed: dict[tuple, list[int]] = {}
        for n in members:
            request = requests[n]
            try:
                if request.start:
                    results[n].append(self._open(request))
                elif request.key not in self.stream_pool:
                    raise LiveError(f"stream {request.key}: not started, or already ended or freed after "
                                    f"{self.idle_s:g} s idle (start it first)")
                self.last_seen.pop(request.key, None)  # the least recently seen first: sweep stops early
                self.last_seen[request.key] = now
                if request.pose is not None:
                    framed.setdefault(self.stream_pool[request.key], []).append(n)
            except LiveError as err:
                results[n] = err
        for options, ns in framed.items():
            pool = self.pools[options]
            items = []
            for n in ns:
                request = requests[n]
                frame = request.frame if request.frame is not None else self.frames[request.key]
                items.append((request.key, request.pose, request.time, frame))
            try:
                events = pool.step(items)
            except LiveError:
                events = {}
                for n, item in zip(ns, items):  # one bad frame must not stop the others: each alone
                    try:
                        events.update(pool.step([item]))
                    except LiveError as err:
                        results[n] = err
            for n in ns:
                if not isinstance(results[n], Exception):
                    self.frames[requests[n].key] += 1
                    results[n] += events.get(requests[n].key, [])
        for n in members:
            request = requests[n]
            if request.end and not isinstance(results[n], Exception):
                results[n].append(self._close(request.key))

    def _open(self, request: LiveRequest) -> dict:
        key, options = request.key, dict(request.options)
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise LiveError(f"stream {key}: unknown option(s) {unknown}; known: {sorted(OPTIONS)}")
        try:
            options = {name: OPTIONS[name](value) for name, value in options.items()}
        except (TypeError, ValueError) as err:
            raise LiveError(f"stream {key}: options: {err}") from None
        if key in self.stream_pool:
            raise LiveError(f"stream {key}: already started (a second START on a live id; end it first, "
                            f"or use another id)")
        reference, reference_fps, name = self._reference(key, request.reference, options)
        if len(self.stream_pool) >= self.max_sequences:
            raise LiveBusy(f"RESOURCE_EXHAUSTED: stream {key}: this server holds max_sequences="
                           f"{self.max_sequences} live streams and all are in use; end one, or use another server")
        pool_key = tuple(options.get(k, d) for k, d in (("threshold", SCORE_THRESHOLD), ("mirror", False),
                                                        ("min_ratio", REP_MIN_RATIO), ("max_ratio", REP_MAX_RATIO),
                                                        ("min_score", REP_MIN_SCORE)))
        pool = self.pools.get(pool_key)
        if pool is None:
            threshold, mirror, min_ratio, max_ratio, min_score = pool_key
            pool = self.pools[pool_key] = LivePool(threshold=threshold, mirror=mirror, min_ratio=min_ratio,
                                                   max_ratio=max_ratio, min_score=min_score)
        event = pool.open(key, reference, reference_fps, options.get("fps", reference_fps),
                          name=options.get("name", name))
        self.stream_pool[key], self.frames[key] = pool_key, 0
        self.opened += 1
        return event

    def _reference(self, key: str, reference, options: dict) -> tuple[np.ndarray, float, str]:
        """(reference poses [R, 17, 3], its fps, its name): sent with START, or from the library."""
        library = options.get("reference_name")
        if reference is not None and len(reference) and library:
            raise LiveError(f"stream {key}: send a reference or name one (reference_name), not both")
        if library:
            return self._library(key, library)
        if reference is None or not len(reference):
            raise LiveError(f"stream {key}: START needs a reference: its poses [R, 17, 3] (with reference_fps), "
                            f"or reference_name from the server's library")
        if len(reference) > MAX_REFERENCE_FRAMES:
            raise LiveError(f"stream {key}: the reference has {len(reference)} frames; at most "
                            f"{MAX_REFERENCE_FRAMES} (one repetition)")
        if "reference_fps" not in options:
            raise LiveError(f"stream {key}: a reference sent with START needs reference_fps")
        return np.asarray(reference, np.float32), options["reference_fps"], options.get("name", "reference")

    def _library(self, key: str, name: str) -> tuple[np.ndarray, float, str]:
        if self.references is None:
            raise LiveError(f"stream {key}: this server has no reference library (an archive root with a "
                            f"{REFERENCES_FOLDER}/ folder)")
        if not _NAME.match(name):
            raise LiveError(f"stream {key}: reference_name: expected letters, digits, '_', '-' or '.' "
                            f"(at most 128), got {name[:80]!r}")
        path = self.references / f"{name}.json"
        if not path.is_file():
            known = sorted(p.stem for p in self.references.glob("*.json"))[:20] if self.references.is_dir() else []
            raise LiveError(f"stream {key}: no reference {name!r} in the server's library (known: {known})")
        try:
            poses = read_poses_json(path)
            performer = most_moving_performer(poses, track_people(poses), option="the library's file",
                                              source=f"reference {name}")
        except (VideoError, ValueError) as err:
            raise LiveError(f"stream {key}: reference {name!r}: {err}") from None
        frames = performer.poses[performer.present]
        if len(frames) > MAX_REFERENCE_FRAMES:
            raise LiveError(f"stream {key}: reference {name!r} has {len(frames)} frames; at most "
                            f"{MAX_REFERENCE_FRAMES}")
        return frames, poses.rate, name

    def _close(self, key: str) -> dict:
        pool = self.pools[self.stream_pool.pop(key)]
        self.last_seen.pop(key, None)
        self.frames.pop(key, None)
        end = pool.close(key)
        self.ended += 1
        events = end.pop("new")
        return {**end, "new": events}

    def sweep(self, now: float | None = None) -> int:
        """Free the streams idle for longer than the idle time; returns how many."""
        now = clock.monotonic() if now is None else now
        idle = []
        for key, seen in self.last_seen.items():  # in the order last seen: the idle ones come first
            if now - seen <= self.idle_s:
                break
            idle.append(key)
        for key in idle:
            self.pools[self.stream_pool.pop(key)].abandon(key)
            del self.last_seen[key], self.frames[key]
        self.freed_idle += len(idle)
        for options in [o for o, pool in self.pools.items() if not len(pool)]:
            del self.pools[options]
        return len(idle)


def events_json(events: list[dict]) -> bytes:
    """A request's events as one JSON array (what the ``events`` output holds), NaN as null."""
    return json.dumps(_plain(events), allow_nan=False).encode()


def _plain(value):
    """``value`` with NumPy scalars and arrays as Python's, tuples as lists, NaN/inf as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
