"""A bounding front for Triton's gRPC endpoint: each model's requests at most its ``max_request_bytes``.

tritonserver 2.51 sets gRPC's receive limit to its maximum (2 GB) and has no option for it: a
``score`` request of 10,000,000 candidates is received whole, copied into the python backend's
shared memory (which grows for it and stays grown) and only then refused by ``max_candidates``.
The front listens on the public gRPC port and passes every call of Triton's
``inference.GRPCInferenceService`` on to Triton's own gRPC endpoint on a private loopback port, as
bytes (nothing is decoded on the way but the model name of an inference request), and gRPC's
health service (``grpc.health.v1.Health``, which Kubernetes' gRPC probes ask):

- a message over the largest model's bound is refused by gRPC itself from its length prefix, before
  it is read (RESOURCE_EXHAUSTED, "Received message larger than max");
- an inference request (``ModelInfer``, or a message of ``ModelStreamInfer``) over its own model's
  bound is refused with RESOURCE_EXHAUSTED naming the model, the size and the bound; a stream is
  ended by it. Nothing of it reaches Triton.

Each model's bound is the ``max_request_bytes`` parameter of its ``config.pbtxt``
(:func:`request_bounds`), sized there from the model's own limits (``score``: ``max_candidates``
poses). Triton's private endpoint answers the client protocols only to calls carrying
:data:`FRONT_METADATA` with the key the front was given (``--grpc-restricted-protocol``, set by
``TritonServer``); the front adds it and never forwards a client's own. A client's other metadata
(the admin key's header included), its deadline and its cancellation are passed on, and Triton's
status and message come back unchanged.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path
from typing import Iterable

import grpc
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2

from posescore.engine.serving.http_front import FRONT_HEADER
from posescore.engine.serving.repository import model_parameters

#: The config.pbtxt parameter that bounds a model's request, in bytes.
BOUND_PARAMETER = "max_request_bytes"
#: The metadata that opens Triton's private gRPC endpoint (Triton's ``triton-grpc-protocol-``
#: prefix on the fronts' header); its value is the key given to the front.
FRONT_METADATA = f"triton-grpc-protocol-{FRONT_HEADER}"
SERVICE = "inference.GRPCInferenceService"
#: gRPC's standard health service, which Triton serves too (Kubernetes' gRPC probes ask it).
HEALTH_SERVICE = "grpc.health.v1.Health"
_INFER_METHODS = ("ModelInfer", "ModelStreamInfer")
#: Metadata a client sends that the front does not pass on: gRPC's own, and the front's header.
_NOT_FORWARDED = {"user-agent", "te", "content-type", "grpc-accept-encoding", "grpc-encoding", "grpc-timeout",
                  FRONT_METADATA}


class BoundError(ValueError):
    """A model's ``max_request_bytes`` is missing or not a positive byte count."""


def request_bounds(repository: str | Path, models: Iterable[str]) -> dict[str, int]:
    """{model: the most bytes one of its requests may take} from each model's config.pbtxt."""
    bounds = {}
    for model in models:
        value = model_parameters(repository, model).get(BOUND_PARAMETER, "")
        if not value.isdigit() or int(value) <= 0:
            raise BoundError(f"{Path(repository) / model / 'config.pbtxt'}: the parameter {BOUND_PARAMETER!r} must be a positive byte count, not "
                             f"{value!r}: it bounds the size of the model's requests at the gRPC front")
        bounds[model] = int(value)
    return bounds


def _methods() -> list[tuple[str, bool]]:
    """(name, streaming?) of each method of Triton's gRPC service."""
    service = service_pb2.DESCRIPTOR.services_by_name[SERVICE.split(".")[-1]]
    return [(m.name, m.client_streaming) for m in service.methods]


def refusals_metrics(refused: Counter) -> str:
    """Prometheus text of the front's refusals by model (those gRPC refuses itself, over the
    largest bound, are not seen by the front and not counted)."""
    lines = ["# HELP posescore_front_refused_total Inference requests the gRPC front refused before Triton "
             "read them, by model and reason.", "# TYPE posescore_front_refused_total counter"]
    lines += [f'posescore_front_refused_total{{front="grpc",model="{model}",reason="too_large"}} {count}'
              for model, count in sorted(refused.items())]
    return "\n".join(lines) + "\n"


class GrpcFront:
    """Listens on ``host:port`` and serves Triton's gRPC endpoint at ``host:backend_port``, each
    inference request within ``bounds`` ({model: bytes}), adding :data:`FRONT_METADATA`: ``key``
    (``backend_host``, default ``host``, is where Triton listens).
    ``refused`` (given, or a new Counter) counts its refusals by model. ``start()`` / ``stop()``;
    one asyncio thread."""

    def __init__(self, host: str, port: int, backend_port: int, *, key: str, bounds: dict[str, int],
                 refused: Counter | None = None, backend_host: str | None = None):
        if not bounds:
            raise BoundError("the gRPC front needs the bound of at least one model")
        self.host, self.port, self.backend_port, self.key = host, port, backend_port, key
        self.backend_host = backend_host or host
        self.bounds = dict(bounds)
        self.largest = max(self.bounds.values())
        self.smallest = min(self.bounds.values())
        self.refused: Counter = Counter() if refused is None else refused
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self._channel = None

    # -- checks -----------------------------------------------------------------------------
    def refusal(self, message: bytes) -> tuple[grpc.StatusCode, str] | None:
        """Why an inference request's serialized ``message`` is not passed on (None: it is)."""
        if len(message) <= self.smallest:
            return None  # every model takes it: no need to read its model's name
        try:
            model = service_pb2.ModelInferRequest.FromString(message).model_name
        except DecodeError as err:
            return grpc.StatusCode.INVALID_ARGUMENT, f"the inference request is not a ModelInferRequest: {err}"
        bound = self.bounds.get(model)
        if bound is None or len(message) <= bound:
            return None  # an unknown model: Triton names it
        self.refused[model] += 1
        return grpc.StatusCode.RESOURCE_EXHAUSTED, (
            f"a request to model {model!r} of {len(message):,} bytes is over the model's bound of {bound:,} "
            f"bytes ({BOUND_PARAMETER} in its config.pbtxt): split it into smaller requests")

    def _metadata(self, context) -> tuple:
        passed = tuple((k, v) for k, v in (context.invocation_metadata() or ()) if k.lower() not in _NOT_FORWARDED
                       and not k.startswith(":"))
        return passed + ((FRONT_METADATA, self.key),)

    # -- handlers ---------------------------------------------------------------------------
    def _unary(self, name: str, service: str = SERVICE):
        call = self._channel.unary_unary(f"/{service}/{name}")
        infer = service == SERVICE and name in _INFER_METHODS

        async def handler(request: bytes, context):
            if infer and (refused := self.refusal(request)) is not None:
                await context.abort(*refused)
            try:
                return await call(request, metadata=self._metadata(context), timeout=context.time_remaining())
            except grpc.aio.AioRpcError as err:
                await context.abort(err.code(), err.details() or "")
        return grpc.unary_unary_rpc_method_handler(handler)

    def _watch(self):
        """The health service's server-streaming Watch, passed on as it comes."""
        open_call = self._channel.unary_stream(f"/{HEALTH_SERVICE}/Watch")

        async def handler(request: bytes, context):
            call = open_call(request, metadata=self._metadata(context), timeout=context.time_remaining())
            try:
                async for response in call:
                    yield response
            except grpc.aio.AioRpcError as err:
                await context.abort(err.code(), err.details() or "")
        return grpc.unary_stream_rpc_method_handler(handler)

    def _stream(self, name: str):
        open_call = self._channel.stream_stream(f"/{SERVICE}/{name}")

        async def handler(requests, context):
            refused = None

            async def checked():
                nonlocal refused
                async for message in requests:
                    refused = self.refusal(message)
                    if refused is not None:
                        call.cancel()
                        return
                    yield message

            call = open_call(checked(), metadata=self._metadata(context), timeout=context.time_remaining())
            try:
                async for response in call:
                    yield response
            except grpc.aio.AioRpcError as err:
                if refused is None:
                    await context.abort(err.code(), err.details() or "")
            except asyncio.CancelledError:
                if refused is None:
                    raise
            if refused is not None:
                await context.abort(*refused)
        return grpc.stream_stream_rpc_method_handler(handler)

    # -- life cycle -------------------------------------------------------------------------
    async def _start(self) -> None:
        self._channel = grpc.aio.insecure_channel(f"{self.backend_host}:{self.backend_port}", options=[
            ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1),
            ("grpc.initial_reconnect_backoff_ms", 50), ("grpc.min_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 500)])
        self._server = grpc.aio.server(options=[
            ("grpc.so_reuseport", 0),  # a second server on this port must fail, not share it
            ("grpc.max_receive_message_length", self.largest), ("grpc.max_send_message_length", -1)])
        handlers = {name: (self._stream if streaming else self._unary)(name) for name, streaming in _methods()}
        health = {"Check": self._unary("Check", HEALTH_SERVICE), "Watch": self._watch()}
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),
                                               grpc.method_handlers_generic_handler(HEALTH_SERVICE, health)))
        if self._server.add_insecure_port(f"{self.host}:{self.port}") == 0:
            raise OSError(f"the gRPC port {self.host}:{self.port} is in use")
        await self._server.start()

    def start(self) -> "GrpcFront":
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start())
            except BaseException as err:  # noqa: BLE001 - handed to start()'s caller
                failure.append(err)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            # Calls still running when the server stopped: cancelled and awaited, not destroyed pending.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="posescore-grpc-front", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        return self

    def stop(self, grace: float = 1.0) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return

        async def close() -> None:
            await self._server.stop(grace)
            await self._channel.close()

        try:
            asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=grace + 5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            self._loop = self._thread = None
