"""Typed gRPC clients for the models of model_repository/: ``PoseScoreClient`` (blocking) and
``AsyncPoseScoreClient`` (asyncio), with the same methods.

    with PoseScoreClient("127.0.0.1:8001") as client:
        result = client.score(query, candidates, metric="cosine", mirror=True)

A client may be given several servers (``["host1:8001", "host2:8001"]``): each request goes to the
healthy one with the fewest requests of this client outstanding; a server that does not answer
(UNAVAILABLE) is set aside for a backoff that doubles while it keeps failing, and the request is
tried at once on another. (gRPC behind a load balancer is balanced per connection, not per
request: this is the client-side balancing a deployment of several servers needs.)

Every call has a deadline (``timeout`` seconds, retries included). A server that is unavailable
(starting, stopping, restarting, connection refused), and a model whose python stub died (which
a supervised server reloads), are retried with exponential backoff and jitter until that
deadline; any other error is raised at once. Arguments are checked before
anything is sent. Everything raised is a :class:`PoseScoreError`.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Sequence

import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aiogrpcclient
from tritonclient.grpc import InferenceServerException, InferInput, InferResult

from posescore.clients import protocol as p
from posescore.clients.protocol import (DEFAULT_MAX_CANDIDATES, POSE_MAX_BATCH, DtwResult, PoseResult, PoseScoreError,
                                        ScoreResult, SearchMatch)

_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    # Reconnect soon after a server comes back (gRPC's default backoff grows to 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


#: The longest a client sets aside a server that does not answer before it tries it again.
SERVER_MAX_BACKOFF = 10.0


class _Server:
    """One server of a client: its URL, its tritonclient(s), and the balancer's counts."""

    def __init__(self, url: str):
        self.url = url
        self.client: Any = None  # the blocking tritonclient (PoseScoreClient)
        self.aio: Any = None  # the asyncio one, made in the running loop (AsyncPoseScoreClient)
        self.outstanding, self.failures, self.answered, self.errors = 0, 0, 0, 0
        self.down_until, self.last_used = 0.0, 0.0
        # Models this server has answered: one that it later calls unknown is being reloaded
        # (a supervisor unloads a model whose stub died, then loads it), and is retried.
        self.models_answered: set[str] = set()


class _ClientBase:
    """Settings and retry policy shared by both clients; ``_connect`` makes the tritonclient."""

    def __init__(self, url: str | Sequence[str], *, timeout: float = 30.0, initial_backoff: float = 0.05,
                 max_backoff: float = 1.0, max_candidates_per_request: int = DEFAULT_MAX_CANDIDATES,
                 pose_batch_size: int = POSE_MAX_BATCH, max_concurrency: int = 4):
        urls = [url] if isinstance(url, str) else list(url) if isinstance(url, (list, tuple)) else [url]
        if not urls or not all(isinstance(u, str) and u for u in urls) or len(set(urls)) != len(urls):
            raise PoseScoreError(f"url: expected 'host:port' or a list of distinct ones, got {url!r}")
        for name, value in (("timeout", timeout), ("initial_backoff", initial_backoff), ("max_backoff", max_backoff)):
            if not isinstance(value, (int, float)) or not value > 0:
                raise PoseScoreError(f"{name}: expected seconds > 0, got {value!r}")
        self.urls = urls
        self.url = ", ".join(urls)  # for messages
        self._servers = [_Server(u) for u in urls]
        self._lock = threading.Lock()
        self.timeout = float(timeout)
        self.initial_backoff = float(initial_backoff)
        self.max_backoff = float(max_backoff)
        self.max_candidates_per_request = p.check_int(max_candidates_per_request, "max_candidates_per_request", 1)
        self.pose_batch_size = p.check_int(pose_batch_size, "pose_batch_size", 1)
        self.max_concurrency = p.check_int(max_concurrency, "max_concurrency", 1)
        self._closed = False
        self._connect()

    def _connect(self) -> None:
        raise NotImplementedError

    def _check_open(self) -> None:
        if self._closed:
            raise PoseScoreError(f"this client of {self.url} is closed")

    def _pick(self) -> "_Server":
        """The server for the next request: of those not set aside, the one with the fewest of
        this client's requests outstanding (ties: the one used longest ago); when all are set
        aside, the one that comes back first. Counts the request as outstanding."""
        with self._lock:
            now = time.monotonic()
            healthy = [s for s in self._servers if s.down_until <= now] or \
                [min(self._servers, key=lambda s: s.down_until)]
            server = min(healthy, key=lambda s: (s.outstanding, s.last_used))
            server.outstanding += 1
            server.last_used = now
            return server

    def _done(self, server: "_Server", unavailable: bool) -> bool:
        """Record the end of a request to ``server``; an unavailable one is set aside (its backoff
        doubles while it keeps failing). Whether another server is available now."""
        with self._lock:
            server.outstanding -= 1
            now = time.monotonic()
            if unavailable:
                server.failures += 1
                backoff = self.initial_backoff * 4 * 2.0 ** min(server.failures, 30)
                server.down_until = now + min(SERVER_MAX_BACKOFF, backoff)
                server.errors += 1
            else:
                server.failures, server.down_until = 0, 0.0
                server.answered += 1
            return any(s is not server and s.down_until <= now for s in self._servers)

    def _failed(self, server: "_Server", model: str | None, error: InferenceServerException,
                previous: InferenceServerException | None, attempt: int, deadline: float) -> float:
        """After ``error`` from ``server``: the seconds to wait before the next try (0: another
        server is available now), or raise the PoseScoreError that ends the call."""
        try:
            delay = self._retry_delay(model, error, previous, attempt, deadline)
        except PoseScoreError:
            self._done(server, unavailable=False)  # it answered: with an error that is final
            raise
        return 0.0 if self._done(server, unavailable=True) else delay

    def server_stats(self) -> list[dict]:
        """Per server: ``url``, ``answered`` (requests answered, an error included), ``unavailable``
        (requests it did not answer), ``outstanding``, ``set_aside_s`` (seconds until it is tried
        again; 0: healthy)."""
        with self._lock:
            now = time.monotonic()
            return [{"url": s.url, "answered": s.answered, "unavailable": s.errors, "outstanding": s.outstanding,
                     "set_aside_s": round(max(0.0, s.down_until - now), 3)} for s in self._servers]

    def _backoff(self, attempt: int) -> float:
        return min(self.max_backoff, self.initial_backoff * 2.0 ** min(attempt, 60)) * random.uniform(0.5, 1.0)

    def _retry_delay(self, model: str | None, error: InferenceServerException,
                     previous: InferenceServerException | None, attempt: int, deadline: float) -> float:
        """Seconds to wait before retrying after ``error`` (``previous``: the last UNAVAILABLE error
        of this call, if any), or raise the PoseScoreError that ends the call."""
        error = p.stub_died(error) or error
        status = p.status_name(error)
        if status == "DEADLINE_EXCEEDED" and previous is not None:
            error, status = previous, "UNAVAILABLE"  # the deadline ran out while the server was away
        if status != "UNAVAILABLE":
            raise p.server_error(model, error)
        delay = self._backoff(attempt)
        if time.monotonic() + delay >= deadline:
            raise p.server_error(model, error, f" (gave up after {attempt + 1} attempt(s) in {self.timeout:g} s)")
        return delay


class PoseScoreClient(_ClientBase):
    """Blocking client of the pose, score, dtw and search models at ``url`` (``"host:port"``).

    ``timeout``: seconds each call may take, retries of an unavailable server included.
    ``initial_backoff`` / ``max_backoff``: the first and the longest wait between retries (the wait
    doubles each time, times a random factor in [0.5, 1]). ``max_candidates_per_request`` and
    ``pose_batch_size`` split big calls into several requests, ``max_concurrency`` of which are in
    flight at once. Safe to share between threads. A context manager; ``close()`` when done.
    """

    def _connect(self) -> None:
        for server in self._servers:
            server.client = grpcclient.InferenceServerClient(server.url, channel_args=_CHANNEL_ARGS)
        self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="posescore-client")

    # -- models ----------------------------------------------------------------------------------
    def pose(self, frames: Any) -> PoseResult:
        """People in RGB ``frames`` uint8 ``[H, W, 3]`` or ``[B, H, W, 3]``: keypoints
        ``[B, P, 17, 3]``, boxes ``[B, P, 4]``, scores ``[B, P]`` float32 and counts ``[B]`` int32
        (B = 1 for one frame). Sent as requests of at most ``pose_batch_size`` frames."""
        return p.pose_result(self._infer_all("pose", p.pose_requests(frames, self.pose_batch_size)))

    def landmarks(self, frames: Any) -> p.LandmarkResult:
        """As :meth:`pose`, and each person's 33 BlazePose GHUM landmarks and world coordinates
        (the ``landmarks`` model): a :class:`~clients.protocol.LandmarkResult`."""
        return p.landmark_result(self._infer_all("landmarks", p.pose_requests(frames, self.pose_batch_size)))

    def score(self, query: Any, candidates: Any, metric: str = "cosine", mirror: bool = False) -> ScoreResult:
        """Scores of one pose ``query [17, 3]`` against ``candidates [N, 17, 3]`` (pixel keypoints,
        float32-convertible): ``scores [N]`` and ``part_scores [N, 6]`` float32 0-100. ``metric`` is
        one of ``kernels.METRICS``; ``mirror`` also tries the mirrored query per candidate.
        Sent as requests of at most ``max_candidates_per_request`` candidates."""
        requests = p.score_requests(query, candidates, metric, mirror, self.max_candidates_per_request)
        return p.score_result(self._infer_all("score", requests))

    def dtw(self, reference: Any, attempt: Any, window: int | None = None, mirror: bool = False,
            return_path: bool = False) -> DtwResult:
        """DTW alignment of movements ``reference [T, 17, 3]`` and ``attempt [U, 17, 3]``: distance,
        score 0-100, ``part_scores [6]``, mirrored, and ``path [L, 2]`` int32 when ``return_path``.
        ``window``: Sakoe-Chiba band half-width in frames (None: unconstrained)."""
        request = p.dtw_request(reference, attempt, window, mirror, return_path)
        return p.dtw_result(self._infer_all("dtw", [request])[0], return_path)

    def search(self, archive: str | os.PathLike, query: Any, k: int = 10, **filters) -> list[SearchMatch]:
        """The ``k`` best hits, best first, of a pose ``query [17, 3]`` (moments: one frame each) or
        a movement ``[M, 17, 3]`` (a frame range each) in ``archive``, a folder under the server's
        archive root (relative to it, or absolute). ``filters``: ``fps`` (the movement's),
        ``min_gap``, ``video``, ``start``, ``end`` (``clients.protocol.search_request``)."""
        return p.search_result(self._infer_all("search", [p.search_request(archive, query, k, **filters)])[0])

    def search_part(self, archive: str | os.PathLike, query: Any, k: int = 10, *, timeout: float | None = None,
                    **options) -> p.SearchPart:
        """One shard's part of a search (``engine.archive.sharded``): ``options`` as
        ``clients.protocol.search_request`` (``shard``, ``phase``, ``count``, ``candidates`` ...),
        within ``timeout`` seconds (default: the client's)."""
        inputs = p.search_request(archive, query, k, **options)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        return p.search_part(self._call("search", lambda c, t: c.infer("search", inputs, client_timeout=t), deadline))

    # -- server ----------------------------------------------------------------------------------
    def is_ready(self, models: Sequence[str] = (), timeout: float | None = None) -> bool:
        """Whether a server (and each of ``models`` on it) answers ready within ``timeout`` seconds
        (default: the client's); False on any server or connection error."""
        self._check_open()
        timeout = self.timeout if timeout is None else timeout
        return any(self._server_ready(server, models, timeout) for server in self._servers)

    @staticmethod
    def _server_ready(server: _Server, models: Sequence[str], timeout: float) -> bool:
        try:
            return bool(server.client.is_server_ready(client_timeout=timeout)) and all(
                server.client.is_model_ready(m, client_timeout=timeout) for m in models)
        except InferenceServerException:
            return False

    def wait_until_ready(self, timeout: float | None = None, models: Sequence[str] = ()) -> None:
        """Wait up to ``timeout`` seconds (default: the client's) until :meth:`is_ready`; raises
        PoseScoreError (status UNAVAILABLE) when it is not by then."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        for attempt in itertools.count():
            if self.is_ready(models, max(deadline - time.monotonic(), 1e-3)):
                return
            delay = self._backoff(attempt)
            if time.monotonic() + delay >= deadline:
                raise PoseScoreError(f"server at {self.url} not ready within {timeout:g} s", status="UNAVAILABLE")
            time.sleep(delay)

    def server_metadata(self) -> dict:
        """The server's name, version and extensions, as a dict."""
        return self._call(None, lambda c, t: c.get_server_metadata(as_json=True, client_timeout=t),
                          time.monotonic() + self.timeout)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.shutdown(wait=True)
            for server in self._servers:
                server.client.close()

    def __enter__(self) -> "PoseScoreClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------------
    def _call(self, model: str | None, rpc: Callable[[Any, float], Any], deadline: float) -> Any:
        """``rpc(tritonclient, seconds left)`` on a server :meth:`_pick` chooses, retried while
        servers are unavailable (or not ready: a model not found while its server is starting or
        stopping) and time is left: at once on another server when one is available."""
        self._check_open()
        previous = None
        for attempt in itertools.count():
            server = self._pick()
            try:
                result = rpc(server.client, max(deadline - time.monotonic(), 1e-3))
            except InferenceServerException as error:
                if p.status_name(error) == "NOT_FOUND":
                    if model in server.models_answered:
                        error = p.not_ready(error, "the model is being reloaded")
                    elif not self._server_ready(server, (), 1.0):
                        error = p.not_ready(error)  # the model of a server starting or stopping
                time.sleep(self._failed(server, model, error, previous, attempt, deadline))
                previous = error
                continue
            except BaseException:
                self._done(server, unavailable=False)
                raise
            self._done(server, unavailable=False)
            if model:
                server.models_answered.add(model)
            return result

    def _infer_all(self, model: str, requests: list[list[InferInput]]) -> list[InferResult]:
        """Responses to ``requests`` in order; several are sent concurrently, under one deadline."""
        deadline = time.monotonic() + self.timeout

        def infer(inputs: list[InferInput]) -> InferResult:
            return self._call(model, lambda c, t: c.infer(model, inputs, client_timeout=t), deadline)

        if len(requests) == 1:
            return [infer(requests[0])]
        self._check_open()
        return list(self._pool.map(infer, requests))


class AsyncPoseScoreClient(_ClientBase):
    """asyncio client with the methods of :class:`PoseScoreClient` (coroutines), the same settings
    and results. Requests of one call are sent concurrently (at most ``max_concurrency`` at once);
    many calls may run at once on one client, inside one event loop. An async context manager;
    ``await close()`` when done.
    """

    def _connect(self) -> None:
        pass  # each server's asyncio tritonclient is made in the running loop (_aio_of)

    def _aio_of(self, server: _Server) -> aiogrpcclient.InferenceServerClient:
        self._check_open()
        if server.aio is None:
            server.aio = aiogrpcclient.InferenceServerClient(server.url, channel_args=_CHANNEL_ARGS)
        return server.aio

    async def pose(self, frames: Any) -> PoseResult:
        """As :meth:`PoseScoreClient.pose`."""
        return p.pose_result(await self._infer_all("pose", p.pose_requests(frames, self.pose_batch_size)))

    async def landmarks(self, frames: Any) -> p.LandmarkResult:
        """As :meth:`PoseScoreClient.landmarks`."""
        return p.landmark_result(await self._infer_all("landmarks", p.pose_requests(frames, self.pose_batch_size)))

    async def score(self, query: Any, candidates: Any, metric: str = "cosine", mirror: bool = False) -> ScoreResult:
        """As :meth:`PoseScoreClient.score`."""
        requests = p.score_requests(query, candidates, metric, mirror, self.max_candidates_per_request)
        return p.score_result(await self._infer_all("score", requests))

    async def dtw(self, reference: Any, attempt: Any, window: int | None = None, mirror: bool = False,
                  return_path: bool = False) -> DtwResult:
        """As :meth:`PoseScoreClient.dtw`."""
        request = p.dtw_request(reference, attempt, window, mirror, return_path)
        return p.dtw_result((await self._infer_all("dtw", [request]))[0], return_path)

    async def search(self, archive: str | os.PathLike, query: Any, k: int = 10, **filters) -> list[SearchMatch]:
        """As :meth:`PoseScoreClient.search`."""
        return p.search_result((await self._infer_all("search", [p.search_request(archive, query, k, **filters)]))[0])

    async def search_part(self, archive: str | os.PathLike, query: Any, k: int = 10, *, timeout: float | None = None,
                          **options) -> p.SearchPart:
        """As :meth:`PoseScoreClient.search_part`."""
        inputs = p.search_request(archive, query, k, **options)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        return p.search_part(await self._call("search", lambda c, t: c.infer("search", inputs, client_timeout=t),
                                              deadline))

    async def is_ready(self, models: Sequence[str] = (), timeout: float | None = None) -> bool:
        """As :meth:`PoseScoreClient.is_ready`."""
        timeout = self.timeout if timeout is None else timeout
        for server in self._servers:
            if await self._server_ready(server, models, timeout):
                return True
        return False

    async def _server_ready(self, server: _Server, models: Sequence[str], timeout: float) -> bool:
        client = self._aio_of(server)
        try:
            if not await client.is_server_ready(client_timeout=timeout):
                return False
            for model in models:
                if not await client.is_model_ready(model, client_timeout=timeout):
                    return False
            return True
        except InferenceServerException:
            return False

    async def wait_until_ready(self, timeout: float | None = None, models: Sequence[str] = ()) -> None:
        """As :meth:`PoseScoreClient.wait_until_ready`."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        for attempt in itertools.count():
            if await self.is_ready(models, max(deadline - time.monotonic(), 1e-3)):
                return
            delay = self._backoff(attempt)
            if time.monotonic() + delay >= deadline:
                raise PoseScoreError(f"server at {self.url} not ready within {timeout:g} s", status="UNAVAILABLE")
            await asyncio.sleep(delay)

    async def server_metadata(self) -> dict:
        """As :meth:`PoseScoreClient.server_metadata`."""
        return await self._call(None, lambda c, t: c.get_server_metadata(as_json=True, client_timeout=t),
                                time.monotonic() + self.timeout)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            for server in self._servers:
                if server.aio is not None:
                    await server.aio.close()

    async def __aenter__(self) -> "AsyncPoseScoreClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, model: str | None, rpc: Callable[[Any, float], Awaitable[Any]], deadline: float) -> Any:
        """As :meth:`PoseScoreClient._call`."""
        previous = None
        for attempt in itertools.count():
            server = self._pick()
            try:
                result = await rpc(self._aio_of(server), max(deadline - time.monotonic(), 1e-3))
            except InferenceServerException as error:
                if p.status_name(error) == "NOT_FOUND":
                    if model in server.models_answered:
                        error = p.not_ready(error, "the model is being reloaded")
                    elif not await self._server_ready(server, (), 1.0):
                        error = p.not_ready(error)  # the model of a server starting or stopping
                await asyncio.sleep(self._failed(server, model, error, previous, attempt, deadline))
                previous = error
                continue
            except BaseException:
                self._done(server, unavailable=False)
                raise
            self._done(server, unavailable=False)
            if model:
                server.models_answered.add(model)
            return result

    async def _infer_all(self, model: str, requests: list[list[InferInput]]) -> list[InferResult]:
        """As :meth:`PoseScoreClient._infer_all`; on an error the call's other requests are cancelled."""
        deadline = time.monotonic() + self.timeout
        limit = asyncio.Semaphore(self.max_concurrency)

        async def infer(inputs: list[InferInput]) -> InferResult:
            async with limit:
                return await self._call(model, lambda c, t: c.infer(model, inputs, client_timeout=t),
                                        deadline)

        tasks = [asyncio.ensure_future(infer(inputs)) for inputs in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
