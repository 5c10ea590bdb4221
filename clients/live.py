"""Live stream sessions on the ``live`` model: ``LiveSession`` (blocking) and ``AsyncLiveSession``
(asyncio), with the same methods.

A session is one stream: one correlation ID, a gRPC bidirectional stream, the reference sent with
START (or named from the server's library). Each frame sent returns its events (``frame``, and
``rep`` when a repetition became final); :meth:`end` returns the ``end`` event with every
repetition.

    with LiveSession(["host1:8001", "host2:8001"], reference, reference_fps=30, fps=30) as live:
        for pose, t in frames:
            for event in live.send(pose, t):
                ...
        result = live.end()

When a server fails (gone, restarting, its ``live`` stub killed and reloaded: the stream's state is
lost there), the session opens a new stream, on the next server when there are several, sends the
frames since the last repetition again (their frame events not repeated), and goes on: the
repetitions found so far are kept and the count carries over. A refusal of the request itself
(a time that does not increase, NaN) is raised as a :class:`PoseScoreError` with status
``INVALID_ARGUMENT``; a server full of streams (``RESOURCE_EXHAUSTED``) is tried on the others,
then raised with that status.
"""

from __future__ import annotations

import asyncio
import json
import math
import queue
import secrets
import time as clock
from collections import deque
from typing import Any, Sequence

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient
from tritonclient.grpc import InferInput

from posescore.clients.protocol import PoseScoreError

MODEL = "live"
#: Frames a session keeps to send again on a new stream: those since the last repetition, at most this many.
MAX_REPLAY = 3600
#: How long a session tries to reopen its stream (all servers, in turn) before it gives up, in seconds.
REOPEN_TIMEOUT = 60.0


class _Refused(Exception):
    """The server refused the request itself (its message starts with ``stream ``)."""


class _Busy(Exception):
    """The server holds all the streams it may (RESOURCE_EXHAUSTED)."""


class _Lost(Exception):
    """The stream is gone (the server, its connection or the model's state): reopen."""


def _classify(message: str) -> Exception:
    if "RESOURCE_EXHAUSTED" in message:
        return _Busy(message)
    if message.startswith("stream ") and "not started, or already ended" not in message:
        return _Refused(message)
    return _Lost(message)


def _inputs(pose, time, frame, reference=None, options=None) -> list[InferInput]:
    def tensor(name, array, datatype):
        t = InferInput(name, list(array.shape), datatype)
        t.set_data_from_numpy(array)
        return t

    if pose is None:
        items = [tensor("pose", np.zeros((1, 0, 17, 3), np.float32), "FP32"),
                 tensor("time", np.zeros((1, 0), np.float64), "FP64")]
    else:
        items = [tensor("pose", np.asarray(pose, np.float32).reshape(1, 1, 17, 3), "FP32"),
                 tensor("time", np.array([[time]], np.float64), "FP64")]
        if frame is not None:
            items.append(tensor("frame", np.array([[frame]], np.int64), "INT64"))
    if reference is not None:
        items.append(tensor("reference", np.asarray(reference, np.float32)[None], "FP32"))
    if options is not None:
        items.append(tensor("options", np.array([[json.dumps(options).encode()]], np.object_), "BYTES"))
    return items


class _SessionBase:
    """What both sessions share: arguments, the stream's protocol, failover bookkeeping."""

    def __init__(self, url: str | Sequence[str], reference: Any = None, *, reference_fps: float | None = None,
                 reference_name: str | None = None, fps: float | None = None, timeout: float = 30.0,
                 reopen_timeout: float = REOPEN_TIMEOUT, **options):
        urls = [url] if isinstance(url, str) else list(url)
        if not urls or not all(isinstance(u, str) and u for u in urls):
            raise PoseScoreError(f"url: expected 'host:port' or a list of them, got {url!r}")
        if (reference is None) == (reference_name is None):
            raise PoseScoreError("give a reference (poses [R, 17, 3] with reference_fps) or a reference_name")
        self.options = {k: v for k, v in options.items() if v is not None}
        if reference is not None:
            reference = np.asarray(reference, np.float32)
            if reference.ndim != 3 or reference.shape[1:] != (17, 3) or len(reference) < 2:
                raise PoseScoreError(f"reference: expected poses [R, 17, 3] with R >= 2, got {list(reference.shape)}")
            if not (isinstance(reference_fps, (int, float)) and math.isfinite(reference_fps) and reference_fps > 0):
                raise PoseScoreError(f"reference_fps: expected frames per second > 0, got {reference_fps!r}")
            self.options["reference_fps"] = float(reference_fps)
        else:
            self.options["reference_name"] = str(reference_name)
        if fps is not None:
            self.options["fps"] = float(fps)
        self.reference = reference
        self.urls, self.timeout, self.reopen_timeout = urls, float(timeout), float(reopen_timeout)
        self.server = 0                 # index of the server the stream is on
        self.reps: list[dict] = []      # every repetition so far, numbered across reopened streams
        self.reopened = 0               # streams opened again after a failure
        self.started: dict | None = None
        self._carried = 0               # repetitions found on earlier streams
        self._replay: deque = deque(maxlen=MAX_REPLAY)
        self._held: list[dict] = []
        self._ended = False

    @property
    def url(self) -> str:
        return self.urls[self.server]

    def _new_id(self) -> int:
        return 1 + secrets.randbelow((1 << 62) - 1)  # the supervisor's probes use [2**62, 2**63)

    def _start_inputs(self) -> list[InferInput]:
        return _inputs(None, None, None, self.reference, self.options)

    def _frame_inputs(self, pose, time, frame) -> list[InferInput]:
        pose = np.asarray(pose, np.float32) if pose is not None else np.zeros((17, 3), np.float32)
        if pose.shape != (17, 3):
            raise PoseScoreError(f"pose: expected [17, 3] (x, y, confidence), got {list(pose.shape)}")
        if not (isinstance(time, (int, float, np.floating)) and math.isfinite(time)):
            raise PoseScoreError(f"time: expected seconds, got {time!r}")
        return _inputs(pose, float(time), None if frame is None else int(frame))

    def _events(self, result, replayed: bool = False) -> list[dict]:
        """The events of one answer, repetitions renumbered across streams and kept."""
        events = json.loads(result.as_numpy("events").reshape(-1)[0])
        out = []
        for event in events:
            kind = event.get("event")
            if kind == "start":
                if self.started is None:
                    self.started = event
                continue
            if kind == "rep":
                event["rep"] = self._carried + event["rep"]
                self.reps.append(event)
                while self._replay and self._replay[0][1] <= event["end_time"]:
                    self._replay.popleft()  # what a new stream needs starts after it
            elif kind == "end":
                for new in event.get("new", []):
                    new["rep"] = self._carried + new["rep"]
                    self.reps.append(new)
                    out.append(new)
                event = {**{k: v for k, v in event.items() if k != "new"}, "count": len(self.reps),
                         "reps": list(self.reps), "reopened": self.reopened}
            elif replayed:
                continue
            out.append(event)
        if replayed:  # repetitions found again on a new stream are told with the next frame
            self._held += out
            return []
        held, self._held = self._held, []
        return held + out

    def _failed_over(self) -> None:
        self._carried = len(self.reps)
        self.reopened += 1
        self.server = (self.server + 1) % len(self.urls)

    def _frame_request(self, pose, time, frame) -> tuple[list[InferInput], tuple]:
        """A frame's inputs (checked), and what the session keeps of it to send again."""
        if self._ended:
            raise PoseScoreError("this live session has ended")
        inputs = self._frame_inputs(pose, time, frame)
        return inputs, (np.asarray(pose, np.float32) if pose is not None else None, float(time), frame)

    def _refused(self, err: Exception) -> PoseScoreError:
        """The server's refusal of this request itself, as the client raises it."""
        return PoseScoreError(f"model 'live' at {self.url}: {err}", status="INVALID_ARGUMENT", model=MODEL)

    def _retry_delay(self, err: Exception, busy: set, tries: int, deadline: float, time_left: float) -> float:
        """After stream opening failed with ``err`` (_Busy or _Lost): the seconds to wait before
        trying the next server, or the PoseScoreError to raise (every server full, or the time up)."""
        if isinstance(err, _Busy):
            busy.add(self.server)
            if len(busy) == len(self.urls):
                raise PoseScoreError(f"model 'live': {err}", status="RESOURCE_EXHAUSTED", model=MODEL) from None
        if clock.monotonic() >= deadline:
            raise PoseScoreError(f"model 'live' at {', '.join(self.urls)}: no stream could be opened in "
                                 f"{time_left:g} s: {err}", status="UNAVAILABLE", model=MODEL) from None
        self.server = (self.server + 1) % len(self.urls)
        return min(1.0, 0.05 * 2 ** min(tries, 5))


class LiveSession(_SessionBase):
    """One live stream, blocking: :meth:`send` a frame, get its events. Arguments: the server(s),
    the reference (poses ``[R, 17, 3]`` with ``reference_fps``, or ``reference_name`` from the
    server's library), the stream's ``fps``, and ``threshold``, ``mirror``, ``min_ratio``,
    ``max_ratio``, ``min_score``, ``name`` as ``posescore reps`` takes them."""

    def __init__(self, url, reference=None, **kwargs):
        super().__init__(url, reference, **kwargs)
        self._client: Any = None
        self._answers: queue.Queue = queue.Queue()
        self._open(time_left=self.reopen_timeout)

    # -- the stream ------------------------------------------------------------------------------
    def _connect(self) -> None:
        self._close_stream()
        self._answers = queue.Queue()
        self._client = grpcclient.InferenceServerClient(self.url)
        answers = self._answers
        self._client.start_stream(callback=lambda result, error: answers.put((result, error)))
        self._id = self._new_id()

    def _close_stream(self) -> None:
        if self._client is not None:
            try:
                self._client.stop_stream(cancel_requests=True)
                self._client.close()
            except Exception:  # noqa: BLE001 - a broken stream closes as it can
                pass
            self._client = None

    def _ask(self, inputs, *, start=False, end=False):
        try:
            self._client.async_stream_infer(MODEL, inputs, sequence_id=self._id, sequence_start=start,
                                            sequence_end=end)
        except Exception as err:  # noqa: BLE001 - a stream that is closed or broken
            raise _Lost(str(err)) from None
        try:
            result, error = self._answers.get(timeout=self.timeout)
        except queue.Empty:
            raise _Lost(f"no answer from {self.url} in {self.timeout:g} s") from None
        if error is not None:
            raise _classify(error.message() or str(error))
        return result

    def _open(self, time_left: float) -> None:
        """Open a stream (START), on this server or the next, and send the frames kept again."""
        deadline, busy, tries = clock.monotonic() + time_left, set(), 0
        while True:
            try:
                self._connect()
                self._events(self._ask(self._start_inputs(), start=True))
                for pose, time, frame in list(self._replay):
                    self._events(self._ask(self._frame_inputs(pose, time, frame)), replayed=True)
                return
            except _Refused as err:
                self._close_stream()
                raise self._refused(err) from None
            except (_Busy, _Lost) as err:
                self._close_stream()  # an open stream would hold the server (and its stop) to it
                tries += 1
                clock.sleep(self._retry_delay(err, busy, tries, deadline, time_left))

    # -- frames ----------------------------------------------------------------------------------
    def send(self, pose, time: float, frame: int | None = None) -> list[dict]:
        """Send one frame (``pose [17, 3]`` pixels, None: no one seen; at ``time`` seconds,
        increasing), and return its events."""
        inputs, item = self._frame_request(pose, time, frame)
        while True:
            try:
                events = self._events(self._ask(inputs))
                self._replay.append(item)
                return events
            except _Refused as err:
                raise self._refused(err) from None
            except (_Busy, _Lost):
                self._failed_over()
                self._open(time_left=self.reopen_timeout)

    def end(self) -> dict:
        """End the stream; returns the ``end`` event: ``count`` and ``reps`` (all of them, across
        reopened streams), ``reopened``. Repetitions found at the end are in ``reps`` too."""
        if self._ended:
            raise PoseScoreError("this live session has ended")
        while True:
            try:
                events = self._events(self._ask(_inputs(None, None, None), end=True))
                break
            except _Refused as err:
                raise self._refused(err) from None
            except (_Busy, _Lost):
                self._failed_over()
                self._open(time_left=self.reopen_timeout)
        self._ended = True
        self._close_stream()
        return events[-1]

    def close(self) -> None:
        """Leave the stream without ending it (the server frees it after its idle time)."""
        self._ended = True
        self._close_stream()

    def __enter__(self) -> "LiveSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncLiveSession(_SessionBase):
    """:class:`LiveSession` for asyncio: ``session = await AsyncLiveSession.open(...)``, then
    ``await session.send(...)`` and ``await session.end()``."""

    @classmethod
    async def open(cls, url, reference=None, **kwargs) -> "AsyncLiveSession":
        session = cls(url, reference, **kwargs)
        session._client = None
        session._requests = None
        session._responses = None
        await session._open(time_left=session.reopen_timeout)
        return session

    async def _connect(self) -> None:
        await self._close_stream()
        self._client = aiogrpcclient.InferenceServerClient(self.url)
        self._requests = asyncio.Queue()
        requests = self._requests

        async def iterate():
            while True:
                item = await requests.get()
                if item is None:
                    return
                yield item

        self._responses = self._client.stream_infer(iterate()).__aiter__()
        self._id = self._new_id()

    async def _close_stream(self) -> None:
        if self._client is not None:
            self._requests.put_nowait(None)
            try:
                await self._client.close()
            except Exception:  # noqa: BLE001
                pass
            self._client = None

    async def _ask(self, inputs, *, start=False, end=False):
        await self._requests.put({"model_name": MODEL, "inputs": inputs, "sequence_id": self._id,
                                  "sequence_start": start, "sequence_end": end})
        try:
            result, error = await asyncio.wait_for(self._responses.__anext__(), self.timeout)
        except (asyncio.TimeoutError, StopAsyncIteration) as err:
            raise _Lost(f"no answer from {self.url} ({type(err).__name__})") from None
        except Exception as err:  # noqa: BLE001 - a broken stream
            raise _Lost(str(err)) from None
        if error is not None:
            raise _classify(error.message() or str(error))
        return result

    async def _open(self, time_left: float) -> None:
        deadline, busy, tries = clock.monotonic() + time_left, set(), 0
        while True:
            try:
                await self._connect()
                self._events(await self._ask(self._start_inputs(), start=True))
                for pose, time, frame in list(self._replay):
                    self._events(await self._ask(self._frame_inputs(pose, time, frame)), replayed=True)
                return
            except _Refused as err:
                await self._close_stream()
                raise self._refused(err) from None
            except (_Busy, _Lost) as err:
                await self._close_stream()  # an open stream would hold the server (and its stop) to it
                tries += 1
                await asyncio.sleep(self._retry_delay(err, busy, tries, deadline, time_left))

    async def send(self, pose, time: float, frame: int | None = None) -> list[dict]:
        """As :meth:`LiveSession.send`."""
        inputs, item = self._frame_request(pose, time, frame)
        while True:
            try:
                events = self._events(await self._ask(inputs))
                self._replay.append(item)
                return events
            except _Refused as err:
                raise self._refused(err) from None
            except (_Busy, _Lost):
                self._failed_over()
                await self._open(time_left=self.reopen_timeout)

    async def end(self) -> dict:
        """As :meth:`LiveSession.end`."""
        if self._ended:
            raise PoseScoreError("this live session has ended")
        while True:
            try:
                events = self._events(await self._ask(_inputs(None, None, None), end=True))
                break
            except _Refused as err:
                raise self._refused(err) from None
            except (_Busy, _Lost):
                self._failed_over()
                await self._open(time_left=self.reopen_timeout)
        self._ended = True
        await self._close_stream()
        return events[-1]

    async def close(self) -> None:
        """Leave the stream without ending it (the server frees it after its idle time)."""
        self._ended = True
        await self._close_stream()

    async def __aenter__(self) -> "AsyncLiveSession":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
