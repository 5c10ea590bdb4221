"""The locust user: gRPC to Triton through ``clients.PoseScoreClient``, under gevent.

Import this module only in a process that runs locust (``loadtests.locust_run``): importing locust
monkey-patches the standard library for gevent, and grpc's gevent support is initialised here,
before any channel is made (tritonclient's blocking gRPC calls then yield to the other users
instead of blocking the process).

Each task picks one input of the :class:`~loadtests.workload.Workload`, calls the typed client,
checks the answer against the known one and fires one locust request event: ``request_type``
``"grpc"``, ``name`` the task (= the model), ``response_time`` in ms, ``response_length`` the
request's payload bytes (the input tensors), ``exception`` the error or the wrong answer. With
probability ``malformed`` a task sends one of the model's malformed or oversized requests instead
(:data:`~loadtests.workload.BAD_REQUESTS`): it is fired as ``request_type`` ``"grpc-expected-error"``,
named ``"<model>/<kind>"``, and counts as a success when the server refuses it with the expected
status (``INVALID_ARGUMENT``, or ``RESOURCE_EXHAUSTED`` over a model's ``max_request_bytes``) and
message, as a failure otherwise.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import locust  # noqa: F401 - monkey-patches the standard library for gevent, first
import gevent
import grpc.experimental.gevent as grpc_gevent
import numpy as np
from locust import User, constant

_GRPC_GEVENT = False


def init_grpc_gevent() -> None:
    """grpc's gevent integration; must run before the first channel is made (idempotent)."""
    global _GRPC_GEVENT
    if not _GRPC_GEVENT:
        grpc_gevent.init_gevent()
        _GRPC_GEVENT = True


init_grpc_gevent()

import tritonclient.grpc as grpcclient  # noqa: E402 - after grpc's gevent support
from tritonclient.grpc import InferenceServerException  # noqa: E402

from posescore.clients import POSE_MAX_BATCH, PoseScoreClient, PoseScoreError  # noqa: E402
from posescore.clients.protocol import input_tensor, server_error, status_name  # noqa: E402
from posescore.kernels.skeleton import NUM_KEYPOINTS  # noqa: E402

from posescore.loadtests.options import TASKS  # noqa: E402
from posescore.loadtests.report import Record  # noqa: E402
from posescore.loadtests.workload import (BAD_ACCEPTED, BAD_REQUESTS, BAD_WRONG_ERROR, CHECKS, ERROR,  # noqa: E402
                                          EXPECTED_ERROR, INTERRUPTED, OK, WRONG, BadRequest, Workload, call_task)


class WrongAnswer(Exception):
    """A response that differs from the known answer for its input."""


class MalformedAccepted(Exception):
    """A malformed or oversized request that the server answered, or refused the wrong way."""


class Budget:
    """At most ``limit`` requests (0: no limit); greenlets share it without locks."""

    def __init__(self, limit: int = 0):
        self.limit = int(limit)
        self.taken = 0

    def take(self) -> bool:
        if self.limit and self.taken >= self.limit:
            return False
        self.taken += 1
        return True

    @property
    def exhausted(self) -> bool:
        return bool(self.limit) and self.taken >= self.limit


@dataclass
class LoadState:
    """What the users of one run share: settings, the workload, the budget and what happened."""

    url: str | list[str]  # several: each user's client balances over them
    workload: Workload
    deadline: float = 30.0
    malformed: float = 0.0
    budget: Budget = field(default_factory=Budget)
    seed: int = 0
    in_flight: int = 0
    issued: dict[str, int] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)     # one per request
    errors_seen: list[tuple] = field(default_factory=list)  # (time, model, status, retried)
    servers: dict[str, dict] = field(default_factory=dict)  # per server: the users' clients' counts
    _users: int = 0
    _oversized: np.ndarray | None = None
    _long_attempt: np.ndarray | None = None

    def oversized_batch(self) -> np.ndarray:
        """``POSE_MAX_BATCH + 1`` real frames of the workload in one array (~22 MB for vtest.avi),
        over the pose model's max_batch_size; built once per run."""
        if self._oversized is None:
            frames = np.concatenate(self.workload.pose_inputs)
            self._oversized = frames[np.arange(POSE_MAX_BATCH + 1) % len(frames)]
        return self._oversized

    def long_attempt(self) -> np.ndarray:
        """330,000 poses (67 MB, few DTW cells against one pose): over the dtw model's
        ``max_request_bytes`` (64 MiB), within its ``max_cells``; built once per run."""
        if self._long_attempt is None:
            self._long_attempt = np.full((330_000, NUM_KEYPOINTS, 3), 100.0, np.float32)
            self._long_attempt[..., 2] = 0.9
        return self._long_attempt

    def next_seed(self) -> int:
        self._users += 1
        return self.seed * 1_000_003 + self._users

    def observe_error(self, model: str | None, status: str | None, retried: bool) -> None:
        self.errors_seen.append((time.time(), model, status, retried))


class ObservedClient(PoseScoreClient):
    """``PoseScoreClient`` that also reports every error it gets from the server, retried or not,
    so that a load test can show the error burst that its retries hide."""

    def __init__(self, url: str, observe: Callable[[str | None, str | None, bool], None], **settings: Any):
        self._observe = observe
        super().__init__(url, **settings)

    def _retry_delay(self, model, error, previous, attempt, deadline):  # noqa: D401 - see PoseScoreClient
        try:
            delay = super()._retry_delay(model, error, previous, attempt, deadline)
        except PoseScoreError:
            self._observe(model, status_name(error), False)
            raise
        self._observe(model, status_name(error), True)
        return delay


def _payload(value: Any) -> int:
    """Bytes of the arrays in ``value`` (an array, or a dict / list of them)."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, dict):
        return sum(_payload(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_payload(v) for v in value)
    return 0


def record_request(user: User, task: str, name: str, request_type: str, wall: float, elapsed: float, outcome: str,
                   status: str | None, exception: BaseException | None, payload: int) -> None:
    """One request as the run keeps it: a :class:`Record` in ``user.state.records`` (``wall``: its
    start, Unix seconds; ``elapsed`` ms), and locust's request event unless it was interrupted."""
    message = "" if exception is None else str(exception)[:300]
    user.state.records.append(Record(task, name, request_type, wall, wall + elapsed / 1e3, elapsed, outcome,
                                     status or "", message, payload))
    if outcome != INTERRUPTED:
        user.environment.events.request.fire(request_type=request_type, name=name, response_time=elapsed,
                                              response_length=payload, exception=exception,
                                              context={"task": task, "outcome": outcome})


class PoseScoreUser(User):
    """One simulated client of the deployment; see the module docstring. ``state`` is set on the
    concrete class made by :func:`make_user_class`."""

    abstract = True
    wait_time = constant(0)
    state: LoadState

    def on_start(self) -> None:
        self.rng = random.Random(self.state.next_seed())
        self.client = ObservedClient(self.state.url, self.state.observe_error, timeout=self.state.deadline)
        self._oversized_client: PoseScoreClient | None = None
        self._raw: grpcclient.InferenceServerClient | None = None

    def on_stop(self) -> None:
        for stats in self.client.server_stats():
            total = self.state.servers.setdefault(stats["url"], {"answered": 0, "unavailable": 0})
            total["answered"] += stats["answered"]
            total["unavailable"] += stats["unavailable"]
        for client in (self.client, self._oversized_client, self._raw):
            if client is not None:
                client.close()

    # -- one request -------------------------------------------------------------------------------
    def run_task(self, task: str) -> None:
        state = self.state
        if not state.budget.take():
            gevent.sleep(0.05)  # the run is over; the runner stops the users
            return
        state.issued[task] = state.issued.get(task, 0) + 1
        if state.malformed > 0 and self.rng.random() < state.malformed:
            self._bad(self.rng.choice(BAD_REQUESTS[task]), task)
            return
        work = state.workload
        index = self.rng.randrange(len(work.inputs(task)))
        given = work.inputs(task)[index]
        expected = getattr(work, f"{task}_expected")[index]
        self._measure(task, task, "grpc", lambda: call_task(self.client, task, given),
                      lambda result: CHECKS[task](result, expected), _payload(given), None)

    def _measure(self, task: str, name: str, request_type: str, call: Callable[[], Any],
                 check: Callable[[Any], str | None] | None, payload: int, bad: BadRequest | None) -> None:
        state = self.state
        state.in_flight += 1
        wall, start = time.time(), time.perf_counter()
        outcome, status, exception = INTERRUPTED, None, None
        try:
            try:
                result = call()
            except PoseScoreError as err:
                status = err.status
                if bad is None:
                    outcome, exception = ERROR, err
                elif status == bad.status and bad.message in str(err):
                    outcome = EXPECTED_ERROR
                else:
                    outcome = BAD_WRONG_ERROR
                    exception = MalformedAccepted(f"{name}: expected {bad.status} with {bad.message!r}, got {err}")
            else:
                if bad is not None:
                    outcome, exception = BAD_ACCEPTED, MalformedAccepted(f"{name}: the server answered it")
                else:
                    problem = check(result) if check else None
                    outcome, exception = (WRONG, WrongAnswer(problem)) if problem else (OK, None)
        except Exception as err:  # noqa: BLE001 - anything else the client raised is this request's failure
            outcome, exception = ERROR, err
        finally:
            state.in_flight -= 1
            record_request(self, task, name, request_type, wall, (time.perf_counter() - start) * 1e3, outcome,
                           status, exception, payload)

    # -- malformed and oversized requests --------------------------------------------------------
    def _raw_client(self) -> grpcclient.InferenceServerClient:
        if self._raw is None:
            self._raw = grpcclient.InferenceServerClient(self._first_url())
        return self._raw

    def _first_url(self) -> str:
        """Where raw (unbalanced) malformed requests go: the first server."""
        return self.state.url if isinstance(self.state.url, str) else self.state.url[0]

    def _raw_call(self, model: str, inputs: list) -> Callable[[], Any]:
        def call():
            try:
                return self._raw_client().infer(model, inputs, client_timeout=self.state.deadline)
            except InferenceServerException as err:
                raise server_error(model, err) from None
        return call

    def _bad(self, bad: BadRequest, task: str) -> None:
        work, rng = self.state.workload, self.rng
        name = f"{bad.model}/{bad.kind}"
        pose = np.ones((NUM_KEYPOINTS, 3), np.float32) * 100 + np.arange(NUM_KEYPOINTS, dtype=np.float32)[:, None] * 7
        poses = np.repeat(pose[None], 6, 0)
        call: Callable[[], Any]
        if bad.kind == "oversized-batch":
            if self._oversized_client is None:  # sends the whole batch in one request
                self._oversized_client = PoseScoreClient(self.state.url, timeout=self.state.deadline,
                                                         pose_batch_size=4 * POSE_MAX_BATCH)
            frames = self.state.oversized_batch()
            call, payload = (lambda: self._oversized_client.pose(frames)), frames.nbytes
        elif bad.kind == "wrong-dtype":
            frames = np.zeros((1, 32, 32, 3), np.float32)
            call, payload = self._raw_call("pose", [input_tensor("frames", frames, "FP32")]), frames.nbytes
        elif bad.kind == "zero-size-frame":
            frames = np.zeros((1, 0, 32, 3), np.uint8)
            call, payload = self._raw_call("pose", [input_tensor("frames", frames, "UINT8")]), 0
        elif bad.kind in ("nan-candidates", "invisible-query", "wrong-shape"):
            given = rng.choice(work.score_inputs) if work.score_inputs else {"query": pose, "candidates": poses}
            query, candidates = given["query"].copy(), given["candidates"].copy()
            if bad.kind == "nan-candidates":
                candidates[rng.randrange(len(candidates)), rng.randrange(17), 0] = np.nan
                call = lambda: self.client.score(query, candidates)  # noqa: E731
            elif bad.kind == "invisible-query":
                query[:, 2] = 0.0
                call = lambda: self.client.score(query, candidates)  # noqa: E731
            else:
                query = np.concatenate([query, query[:1]])[None]  # [1, 18, 3]
                call = self._raw_call("score", [input_tensor("query", query, "FP32"),
                                                input_tensor("candidates", candidates[None], "FP32")])
            payload = query.nbytes + candidates.nbytes
        elif bad.kind == "over-max-request-bytes":  # sent raw: the typed client would retry RESOURCE_EXHAUSTED
            attempt = self.state.long_attempt()
            call = self._raw_call("dtw", [input_tensor("reference", poses[:1], "FP32"),
                                          input_tensor("attempt", attempt, "FP32")])
            payload = attempt.nbytes
        elif bad.kind in ("nan-attempt", "empty-reference", "over-max-cells"):
            given = rng.choice(work.dtw_inputs) if work.dtw_inputs else {"reference": poses, "attempt": poses}
            reference, attempt = given["reference"].copy(), given["attempt"].copy()
            if bad.kind == "over-max-cells":  # 9,000 x 9,000 frames: 81M cells, over the default 64M
                reference = np.resize(reference, (9000, NUM_KEYPOINTS, 3))
                attempt = np.resize(attempt, (9000, NUM_KEYPOINTS, 3))
                call = lambda: self.client.dtw(reference, attempt)  # noqa: E731
            elif bad.kind == "nan-attempt":
                attempt[rng.randrange(len(attempt)), rng.randrange(17), 1] = np.nan
                call = lambda: self.client.dtw(reference, attempt)  # noqa: E731
            else:
                reference = reference[:0]
                call = self._raw_call("dtw", [input_tensor("reference", reference, "FP32"),
                                              input_tensor("attempt", attempt, "FP32")])
            payload = reference.nbytes + attempt.nbytes
        else:  # search
            given = rng.choice(work.search_inputs) if work.search_inputs else {"archive": "x", "query": pose, "k": 5}
            archive, k = given["archive"], given["k"]
            if bad.kind == "outside-root":
                archive = "../outside-the-archive-root"
            elif bad.kind == "not-an-archive":
                archive = "no-such-archive-here"
            elif bad.kind == "long-name":
                archive = "a" * 5000
            elif bad.kind == "k-too-large":
                k = 100_000
            if bad.kind == "oversized-candidates":  # the sharded client's clip_score phase, a million candidates
                rows = np.zeros((1_000_000, 3), np.int64)
                rows[:, 2] = 10_000  # 6e10 DTW cells, over any max_clip_cells
                query = np.repeat(pose[None], 6, 0)
                call = self._raw_call("search", [
                    input_tensor("archive", np.array([archive.encode()], np.object_), "BYTES"),
                    input_tensor("query", query, "FP32"),
                    input_tensor("phase", np.array([b"clip_score"], np.object_), "BYTES"),
                    input_tensor("candidates", rows, "INT64"),
                    input_tensor("candidate_costs", np.zeros(len(rows), np.float32), "FP32")])
                payload = rows.nbytes
            else:
                call, payload = (lambda: self.client.search(archive, given["query"], k=k)), given["query"].nbytes
        self._measure(task, name, "grpc-expected-error", call, None, payload, bad)


class LiveUser(User):
    """One live stream at a time (``clients.live.LiveSession``): a recorded stream of the workload
    played at its frame rate, one request event per frame (``name`` "live", ``response_time`` from
    when the frame was due to when its events came back: frame-to-event latency), each repetition
    event checked against the offline answer (a wrong one makes that frame's event a failure), and
    one event "live/end" for the end, whose count must be the offline one. ``state`` and
    ``fixed_count`` (the number of streams) are set by :func:`make_live_class`."""

    abstract = True
    wait_time = constant(0)
    state: LoadState

    def on_start(self) -> None:
        self.rng = random.Random(self.state.next_seed())

    @locust.task
    def play(self) -> None:
        from posescore.clients.live import LiveSession
        from posescore.loadtests.workload import check_live_rep

        state = self.state
        work = state.workload
        index = self.rng.randrange(len(work.live_inputs))
        given, want = work.live_inputs[index], work.live_expected[index]
        if not state.budget.take():
            gevent.sleep(0.05)
            return
        offline = {r["rep"]: r for r in want["reps"]}
        session = None
        wall, start = time.time(), time.perf_counter()
        try:
            session = LiveSession(state.url, given["reference"], reference_fps=given["reference_fps"],
                                  fps=given["fps"], timeout=state.deadline)
        except Exception as err:  # noqa: BLE001 - the stream could not start: this request's failure
            self._record("live/start", wall, start, ERROR, getattr(err, "status", None), err)
            gevent.sleep(0.5)
            return
        self._record("live/start", wall, start, OK, None, None)
        began, checked = time.perf_counter(), 0
        try:
            for frame, (pose, moment) in enumerate(zip(given["poses"], given["times"])):
                if frame and not state.budget.take():
                    return
                due = began + float(moment)
                if due > time.perf_counter():
                    gevent.sleep(due - time.perf_counter())
                wall = time.time() - (time.perf_counter() - due)
                state.in_flight += 1
                try:
                    events = session.send(pose, float(moment), frame)
                except Exception as err:  # noqa: BLE001
                    self._record("live", wall, due, ERROR, getattr(err, "status", None), err)
                    return
                finally:
                    state.in_flight -= 1
                problems = [p for e in events if e["event"] == "rep"
                            for p in [check_live_rep(e, offline.get(e["rep"]))] if p]
                checked += sum(e["event"] == "rep" for e in events)
                self._record("live", wall, due, WRONG if problems else OK, None,
                             WrongAnswer("; ".join(problems)) if problems else None)
            wall, start = time.time(), time.perf_counter()
            try:
                end = session.end()
            except Exception as err:  # noqa: BLE001
                self._record("live/end", wall, start, ERROR, getattr(err, "status", None), err)
                return
            problems = [p for r in end["reps"][checked:] for p in [check_live_rep(r, offline.get(r["rep"]))] if p]
            if end["count"] != want["count"]:
                problems.append(f"live found {end['count']} repetitions, offline {want['count']}")
            self._record("live/end", wall, start, WRONG if problems else OK, None,
                         WrongAnswer("; ".join(problems)) if problems else None)
        finally:
            session.close()

    def _record(self, name: str, wall: float, start: float, outcome: str, status, exception) -> None:
        self.state.issued["live"] = self.state.issued.get("live", 0) + 1
        record_request(self, "live", name, "grpc", wall, (time.perf_counter() - start) * 1e3, outcome, status,
                       exception, 0)


def make_live_class(streams: int, state: LoadState) -> type[LiveUser]:
    """The concrete locust user of live streams: ``streams`` of them (locust's ``fixed_count``)."""
    return type("LiveUser", (LiveUser,), {"state": state, "abstract": False, "fixed_count": streams,
                                          "host": state.url if isinstance(state.url, str) else state.url[0]})


TASK_FUNCTIONS: dict[str, Callable[[PoseScoreUser], None]] = {}
for _task in TASKS:
    def _run(user: PoseScoreUser, task: str = _task) -> None:
        user.run_task(task)
    _run.__name__ = _task
    TASK_FUNCTIONS[_task] = _run


def make_user_class(mix: dict[str, int], state: LoadState) -> type[PoseScoreUser]:
    """The concrete locust user for ``mix`` ({task: weight > 0}, as the runner's checked options
    give it), sharing ``state``."""
    tasks = {TASK_FUNCTIONS[task]: weight for task, weight in mix.items() if task != "live"}
    return type("PoseScoreUser", (PoseScoreUser,), {"tasks": tasks, "state": state, "abstract": False,
                                                    "host": state.url if isinstance(state.url, str) else state.url[0]})
