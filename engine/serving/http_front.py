"""A validating front for Triton's HTTP/REST endpoint (``posescore serve --http``).

tritonserver 2.51 allocates an HTTP JSON inference request's tensors from their *declared*
shapes before it reads their data: a 100-byte request declaring ``[1099511627776, 17, 3]`` FP32
aborts the whole server (``std::bad_alloc``). gRPC is not affected. The front listens on the
public HTTP port, reads each request, and passes an inference request on to Triton's own HTTP
endpoint (on a private loopback port) only when every input's data matches its declared shape:
as many JSON values, or ``binary_data_size`` bytes, as the shape holds.

What the front lets through, and nothing else (each refusal is answered in Triton's error format,
``{"error": "..."}``, naming the problem, and the connection is closed):

- Request targets in origin-form only (a path starting with one ``/``): no absolute-form
  (``http://host/...``, which Triton routes too), no query string, no fragment, no percent-encoding;
  the path must be one of Triton's client routes (:data:`ROUTES`: health, server and model metadata,
  readiness, config, statistics, inference, per model or model version) with its method. Everything
  else is 400: ``generate``, shared memory, repository control, trace and logging are not served
  over HTTP (the admin surfaces are reached over gRPC with the server's admin key).
- Every inference request is checked: JSON objects where objects belong, no duplicate keys (Python
  keeps the last, Triton's parser the first), names strings, shapes lists of at most
  :data:`MAX_DIMS` integers >= 0 each at most :data:`MAX_ELEMENTS` (checked before any arithmetic on
  them), known datatypes, parameters objects, and the data exactly what the shape holds.
- Bodies: at most :data:`MAX_BODY` bytes, and an inference request's at most its model's
  ``max_request_bytes`` (413, refused from ``Content-Length`` before it is read),
  its JSON part at most :data:`MAX_JSON` bytes (larger tensors go in the binary extension, as
  ``tritonclient.http`` sends them), at most :data:`MAX_BUFFERED` bytes of bodies held at once by all
  connections together (503 beyond), no chunked transfer (411), no ``Content-Encoding``, no repeated
  framing header.
- Time: a request's line and headers must arrive within :data:`REQUEST_TIMEOUT` seconds of its first
  byte (an idle keep-alive connection is closed after as long), and its body within
  :data:`REQUEST_TIMEOUT` plus one second per :data:`MIN_BODY_RATE` bytes: a deadline for the whole
  request, not per read, so a request trickled a byte at a time is answered 408 and closed too.
- Connections: at most :data:`MAX_CONNECTIONS` at once, a thread each; one more is answered 503 at
  once and closed.
- An unexpected error in the front is answered 500, never a dropped connection.

Triton's own HTTP endpoint answers client APIs only to requests carrying the header
:data:`FRONT_HEADER` with the key the front was given (``--http-restricted-api``, set by
``TritonServer``); the front adds it to what it forwards, and never forwards a client's own.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_LOG = logging.getLogger(__name__)

#: Bytes per element of each KServe v2 datatype (BYTES: variable, checked by count).
DTYPE_BYTES = {"BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1, "INT16": 2, "INT32": 4,
               "INT64": 8, "FP16": 2, "FP32": 4, "FP64": 8, "BF16": 2, "BYTES": None}
#: The largest request body the front reads: 256 MiB. The models' largest requests fit with room to
#: spare (a batch of 16 1080p frames for ``pose`` is 100 MB binary; 1,000,000 candidates for
#: ``score``, its default bound, 204 MB).
MAX_BODY = 256 << 20
#: The largest JSON part of a request (the whole body without the binary extension): 32 MiB, about
#: 4 million values, parsed in about a second while the front holds Python's GIL.
MAX_JSON = 32 << 20
#: Bytes of request bodies held in memory at once, all connections together.
MAX_BUFFERED = 1 << 30
#: The most dimensions an input's shape may have (posescore's inputs have at most 4).
MAX_DIMS = 8
#: The largest value of one dimension, and of a tensor's element count: no tensor can hold more
#: elements than the body has bytes.
MAX_ELEMENTS = MAX_BODY
#: Seconds a request's line and headers may take from its first byte (and an idle connection may
#: wait for its next request); its body gets this plus a second per MIN_BODY_RATE bytes.
REQUEST_TIMEOUT = 30.0
MIN_BODY_RATE = 1 << 20
#: Connections the front serves at once (a thread each); one more is answered 503 and closed.
MAX_CONNECTIONS = 64
#: Seconds the front waits for Triton's answer to one request.
BACKEND_TIMEOUT = 600.0
#: The header that opens Triton's private HTTP endpoint; its value is the key given to the front.
FRONT_HEADER = "posescore-front"
#: Seconds a closing connection may still send what it had begun before it is closed for good
#: (reading it avoids a reset that could lose the answer on its way).
LINGER = 2.0

_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}"
_MODEL = rf"/v2/models/{_NAME}(?:/versions/[0-9]{{1,19}})?"
#: Triton's HTTP routes the front serves, each with its method: (method, path pattern, inference?).
ROUTES = (
    ("GET", re.compile(r"/v2"), False),
    ("GET", re.compile(r"/v2/health/(?:live|ready)"), False),
    ("GET", re.compile(r"/v2/models/stats"), False),
    ("GET", re.compile(rf"{_MODEL}(?:/ready|/config|/stats)?"), False),
    ("POST", re.compile(rf"{_MODEL}/infer"), True),
)
#: Request headers passed on to Triton (the framing ones are the front's own).
_FORWARDED = ("content-type", "accept", "accept-encoding")
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
        "transfer-encoding", "upgrade", "host", "content-length"}
_DIGITS = re.compile(r"[0-9]{1,15}")


class RequestError(ValueError):
    """An HTTP request the front refuses: ``status`` and the message Triton's format carries."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _count_values(data, limit: int) -> int:
    """Leaves of a nested JSON list (stops counting past ``limit``: the request is refused then)."""
    count, stack = 0, [data]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        else:
            count += 1
            if count > limit:
                return count
    return count


def check_target(method: str, target: str) -> bool:
    """Raise :class:`RequestError` unless ``method target`` is one of :data:`ROUTES` in origin-form;
    return whether it is an inference route."""
    shown = repr(target[:100])
    if not target.startswith("/"):
        raise RequestError(f"the request target {shown} is not in origin-form (a path starting with '/'): "
                           f"absolute-form and other targets are not accepted")
    if "?" in target:
        raise RequestError(f"the request target {shown} has a query string: none is accepted")
    if "#" in target:
        raise RequestError(f"the request target {shown} has a fragment: none is accepted")
    if "%" in target:
        raise RequestError(f"the request target {shown} is percent-encoded: write the path plainly")
    allowed = [(verb, infer) for verb, pattern, infer in ROUTES if pattern.fullmatch(target)]
    if not allowed:
        raise RequestError(f"{shown} is not a route this server serves over HTTP (health, metadata, "
                           f"readiness, config, statistics, inference: /v2/models/<model>[/versions/<n>]/infer)")
    for verb, infer in allowed:
        if verb == method:
            return infer
    raise RequestError(f"{method[:20]} is not allowed on {shown}: use {allowed[0][0]}")


def _object(pairs):
    """A JSON object without duplicate keys (Python's parser keeps the last, Triton's the first)."""
    result = {}
    for key, value in pairs:
        if key in result:
            raise RequestError(f"duplicate key {key[:50]!r} in a JSON object")
        result[key] = value
    return result


def _parameters(owner: str, holder: dict) -> dict:
    parameters = holder.get("parameters", {})
    if not isinstance(parameters, dict):
        raise RequestError(f"{owner}: parameters must be an object, got {type(parameters).__name__}")
    return parameters


def check_infer_request(body: bytes, header_length: int | None, *, max_body: int = MAX_BODY) -> None:
    """Raise :class:`RequestError` unless every input of a KServe v2 inference request carries
    exactly the data its declared shape and datatype hold (JSON values, or binary bytes after the
    JSON header of ``header_length`` bytes), and the request's JSON has the structure Triton reads
    (see the module's docstring for the bounds)."""
    header = body if header_length is None else body[:header_length]
    if header_length is not None and not 0 <= header_length <= len(body):
        raise RequestError(f"Inference-Header-Content-Length {header_length} is not within the body's "
                           f"{len(body)} bytes")
    if len(header) > MAX_JSON:
        raise RequestError(f"the request's JSON is {len(header):,} bytes, over this server's {MAX_JSON:,}: send "
                           f"large tensors in the binary extension (Inference-Header-Content-Length)", 413)
    try:
        request = json.loads(header, object_pairs_hook=_object)
    except RequestError:
        raise
    except (ValueError, RecursionError) as err:
        raise RequestError(f"the request is not valid JSON: {str(err)[:200]}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise RequestError("the request has no 'inputs' list")
    if not isinstance(request.get("id", ""), str):
        raise RequestError("the request's id must be a string")
    if not isinstance(request.get("parameters", {}), dict):
        raise RequestError("the request's parameters must be an object")
    outputs = request.get("outputs", [])
    if not isinstance(outputs, list):
        raise RequestError("the request's outputs must be a list of objects")
    for n, output in enumerate(outputs):
        if not isinstance(output, dict):
            raise RequestError(f"output {n}: expected an object")
        if not isinstance(output.get("name"), str):
            raise RequestError(f"output {n}: name must be a string")
        _parameters(f"output {output['name'][:100]!r}", output)
    binary_left = len(body) - (header_length if header_length is not None else len(body))
    for n, tensor in enumerate(request["inputs"]):
        if not isinstance(tensor, dict):
            raise RequestError(f"input {n}: expected an object")
        if not isinstance(tensor.get("name"), str):
            raise RequestError(f"input {n}: name must be a string")
        name = tensor["name"][:100]
        shape, dtype = tensor.get("shape"), tensor.get("datatype")
        # The number of dimensions and each one's size first: no arithmetic on what is not bounded.
        if not isinstance(shape, list):
            raise RequestError(f"input '{name}': shape must be a list of integers >= 0, got {type(shape).__name__}")
        if len(shape) > MAX_DIMS:
            raise RequestError(f"input '{name}': a shape of {len(shape):,} dimensions, this server takes at most "
                               f"{MAX_DIMS} dimensions")
        if not all(type(d) is int and d >= 0 for d in shape):
            raise RequestError(f"input '{name}': shape must be a list of integers >= 0, got {str(shape)[:100]}")
        if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
            raise RequestError(f"input '{name}': unknown datatype {str(dtype)[:20]!r}")
        size = DTYPE_BYTES[dtype]
        if any(d > MAX_ELEMENTS for d in shape):
            raise RequestError(f"input '{name}': shape {str(shape)[:100]} has a dimension over this server's "
                               f"bound of {MAX_ELEMENTS:,}")
        elements = 1
        for d in shape:  # at most MAX_DIMS factors, each at most MAX_ELEMENTS
            elements *= d
        if elements * (size or 1) > max_body:
            raise RequestError(f"input '{name}': shape {shape} of {dtype} is {elements * (size or 1):,} bytes, over "
                               f"this server's {max_body:,}")
        binary = _parameters(f"input '{name}'", tensor).get("binary_data_size")
        if binary is not None:
            if type(binary) is not int or binary < 0 or binary > binary_left:
                raise RequestError(f"input '{name}': binary_data_size {str(binary)[:30]} is not within the "
                                   f"{binary_left} binary bytes left")
            binary_left -= binary
            if size is not None and binary != elements * size:
                raise RequestError(f"input '{name}': shape {shape} of {dtype} holds {elements * size:,} bytes, "
                                   f"the request carries {binary:,}")
        elif "data" in tensor:
            given = _count_values(tensor["data"], elements)
            if given != elements:
                more = "more than " if given > elements else ""
                raise RequestError(f"input '{name}': shape {shape} holds {elements:,} values, the request "
                                   f"carries {more}{given:,}")
        else:
            raise RequestError(f"input '{name}': no data (neither 'data' nor binary_data_size)")


class _Watch:
    """One thread for every connection of a front: it ends the reading of a request past its deadline
    (a shutdown of the socket's reading side wakes the blocked read, the answer can still be written)
    and closes finished connections gracefully (reading what the client still sends for up to
    :data:`LINGER` seconds, so that no reset overtakes the answer)."""

    def __init__(self, tick: float, max_lingering: int):
        self.tick, self.max_lingering = tick, max_lingering
        self._lock = threading.Lock()
        self._deadlines: dict = {}
        self._lingering: list = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="posescore-http-front-watch", daemon=True)
        self._thread.start()

    def arm(self, handler, seconds: float) -> None:
        with self._lock:
            self._deadlines[handler] = time.monotonic() + seconds

    def disarm(self, handler) -> bool:
        """Stop watching ``handler``'s request; whether its deadline had passed (final once disarmed)."""
        with self._lock:
            self._deadlines.pop(handler, None)
            return handler.expired

    def close(self, sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)  # the watch only reads what has arrived
        except OSError:
            sock.close()
            return
        with self._lock:
            if len(self._lingering) < self.max_lingering and not self._stopped.is_set():
                self._lingering.append((sock, time.monotonic() + LINGER))
                return
        sock.close()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        with self._lock:
            for sock, _ in self._lingering:
                sock.close()
            self._lingering.clear()

    def _run(self) -> None:
        while not self._stopped.wait(self.tick):
            now = time.monotonic()
            with self._lock:
                for handler in [h for h, deadline in self._deadlines.items() if deadline <= now]:
                    del self._deadlines[handler]
                    handler.expired = True
                    try:
                        handler.connection.shutdown(socket.SHUT_RD)
                    except OSError:
                        pass
                lingering, self._lingering = self._lingering, []
            keep = []
            for sock, deadline in lingering:
                if deadline > now and not _drained(sock):
                    keep.append((sock, deadline))
                else:
                    sock.close()
            with self._lock:
                self._lingering.extend(keep)


def _drained(sock: socket.socket) -> bool:
    """Read what a closing connection has sent (without waiting); whether its client is done."""
    try:
        for _ in range(16):
            if not sock.recv(1 << 16, socket.MSG_DONTWAIT):
                return True
        return False
    except BlockingIOError:
        return False
    except OSError:
        return True


def _answer_bytes(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response in Triton's error format, for a connection the front will not serve."""
    payload = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n")
    return head.encode() + payload


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, front: "HttpFront"):
        self.front = front
        self.slots = threading.BoundedSemaphore(front.max_connections)
        super().__init__((front.host, front.port), _Handler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            try:  # a few bytes into a fresh socket's empty buffer: this does not block the accepting thread
                request.setblocking(False)
                request.send(_answer_bytes(503, f"this server serves {self.front.max_connections} HTTP connections "
                                                f"at once, all are in use: retry later"))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def shutdown_request(self, request):
        self.front._watch.close(request)

    def handle_error(self, request, client_address):  # the handler answers its own errors
        _LOG.debug("HTTP front: error on a connection from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.front = self.server.front
        self.expired = False
        self.answered = False
        self.connection.settimeout(self.front.timeout)  # no single read or write waits longer

    def log_message(self, *args) -> None:  # quiet: Triton logs the requests it serves
        pass

    def log_request(self, *args) -> None:
        pass

    def send_response(self, code, message=None) -> None:
        self.answered = True
        super().send_response(code, message)

    def handle_expect_100(self) -> bool:
        self.expect_100 = True  # answered 100 Continue once the request's headers pass (_serve)
        return True

    def send_error(self, code, message=None, explain=None) -> None:
        """http.server's own refusals (a bad request line, too many headers...) in Triton's format."""
        self._refuse(RequestError(message or explain or HTTPStatus(code).phrase, code))

    def _refuse(self, error: RequestError) -> None:
        self.close_connection = True
        if self.request_version == "HTTP/0.9" or not self.request_version:
            self.request_version = "HTTP/1.1"  # answer with a status line all the same
        payload = json.dumps({"error": str(error)}).encode()
        self.send_response(error.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def handle_one_request(self) -> None:
        watch = self.front._watch
        self.answered = False
        self.raw_requestline = b""
        self.request_version, self.command, parsed, complete = "HTTP/1.1", "", False, False
        self.expect_100 = False
        watch.arm(self, self.front.timeout)  # the request line and headers; an idle connection's wait
        try:
            try:
                self.raw_requestline = self.rfile.readline(65537)
                complete = self.raw_requestline.endswith(b"\n") and len(self.raw_requestline) <= 65536
                if complete:
                    parsed = self.parse_request()  # reads the headers; answers what it refuses itself
                    if parsed and self.request_version == "HTTP/0.9":
                        raise RequestError("HTTP/0.9 requests are not accepted")
            except TimeoutError:
                self.expired = True
            if watch.disarm(self) or self.expired:
                if self.raw_requestline and not self.answered:
                    self._refuse(RequestError(f"the request timed out: its line and headers must arrive within "
                                              f"{self.front.timeout:g} s", 408))
                self.close_connection = True
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not complete:
                self._refuse(RequestError("the request line is cut short or over 65,536 bytes", 414 if len(
                    self.raw_requestline) > 65536 else 400))
                return
            if parsed:
                self._serve()
            self.wfile.flush()
        except RequestError as err:
            if not self.answered:
                self._refuse(err)
            self.close_connection = True
        except Exception as err:  # never a dropped connection: a 500 if nothing was answered yet
            _LOG.warning("HTTP front: unexpected %s: %s", type(err).__name__, str(err)[:200])
            self.close_connection = True
            if not self.answered:
                try:
                    self._refuse(RequestError(f"internal error in the HTTP front ({type(err).__name__}); the "
                                              f"request was not passed on", 500))
                except OSError:
                    pass
        finally:
            watch.disarm(self)

    def _header(self, name: str) -> str | None:
        values = self.headers.get_all(name) or []
        if len(values) > 1:
            raise RequestError(f"more than one {name} header")
        return values[0].strip() if values else None

    def _serve(self) -> None:
        front = self.front
        # The target as sent: http.server turns a leading '//' into '/' in self.path.
        self.path = self.requestline.split()[1]
        infer = check_target(self.command, self.path)
        if self._header("Transfer-Encoding") is not None:
            raise RequestError("chunked requests are not accepted: send a Content-Length", 411)
        encoding = self._header("Content-Encoding")
        if encoding is not None and encoding.lower() != "identity":
            raise RequestError(f"Content-Encoding {encoding[:30]!r} is not accepted: send the body uncompressed")
        length = self._header("Content-Length") or "0"
        if not _DIGITS.fullmatch(length):
            raise RequestError(f"Content-Length {length[:30]!r} is not a byte count")
        length = int(length)
        if length > front.max_body:
            raise RequestError(f"a request body of {length:,} bytes, over this server's {front.max_body:,}", 413)
        model = self.path.split("/")[3] if infer else None
        if model in front.bounds and length > front.bounds[model]:
            raise RequestError(f"a request to model {model!r} of {length:,} bytes is over the model's bound of "
                               f"{front.bounds[model]:,} bytes (max_request_bytes in its config.pbtxt): split it "
                               f"into smaller requests", 413)
        if length and not infer:
            raise RequestError(f"{self.command} {self.path[:100]} takes no body")
        header_length = self._header("Inference-Header-Content-Length")
        if header_length is not None and not _DIGITS.fullmatch(header_length):
            raise RequestError(f"Inference-Header-Content-Length {header_length[:30]!r} is not a byte count")
        if not front._hold(length):
            raise RequestError(f"this server holds {front.max_buffered:,} bytes of request bodies at once and "
                               f"has no room for {length:,} more now: retry later", 503)
        try:
            if self.expect_100 and length:
                self.send_response_only(HTTPStatus.CONTINUE)
                self.end_headers()
            front._watch.arm(self, front.timeout + length / MIN_BODY_RATE)
            try:
                body = self.rfile.read(length) if length else b""
            except TimeoutError:
                self.expired = True
                body = b""
            if front._watch.disarm(self) or self.expired:
                raise RequestError(f"the request timed out: a body of {length:,} bytes must arrive within "
                                   f"{front.timeout + length / MIN_BODY_RATE:g} s", 408)
            if len(body) < length:  # the client went away
                self.close_connection = True
                return
            if infer:
                check_infer_request(body, int(header_length) if header_length is not None else None,
                                    max_body=front.max_body)
            self._forward(body, header_length)
        finally:
            front._release(length)

    def _forward(self, body: bytes, header_length: str | None) -> None:
        front = self.front
        headers = {k: v for k, v in self.headers.items() if k.lower() in _FORWARDED}
        if header_length is not None:
            headers["Inference-Header-Content-Length"] = header_length
        headers[FRONT_HEADER] = front.key or ""
        backend = http.client.HTTPConnection(front.host, front.backend_port, timeout=front.backend_timeout)
        try:
            try:
                backend.request(self.command, self.path, body=body if body else None, headers=headers)
                answer = backend.getresponse()
                payload = answer.read()
            except OSError as err:
                raise RequestError(f"the server is unavailable: {err}", 503) from None
            except http.client.HTTPException as err:
                raise RequestError(f"the server is unavailable: {type(err).__name__}: {err}", 503) from None
            self.send_response(answer.status, answer.reason)
            for key, value in answer.getheaders():
                if key.lower() not in _HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        finally:
            backend.close()


class HttpFront:
    """Listens on ``host:port`` and serves Triton's HTTP endpoint at ``host:backend_port`` through
    :func:`check_target` and :func:`check_infer_request`, adding :data:`FRONT_HEADER`: ``key`` to
    what it forwards. ``bounds`` ({model: bytes}) bounds each model's inference bodies below
    ``max_body``. ``timeout``, ``max_connections``, ``max_body`` and ``max_buffered`` default to
    the module's bounds. ``start()`` / ``stop()``; a thread per connection."""

    def __init__(self, host: str, port: int, backend_port: int, *, key: str | None = None,
                 max_body: int = MAX_BODY, timeout: float = REQUEST_TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS, max_buffered: int = MAX_BUFFERED,
                 backend_timeout: float = BACKEND_TIMEOUT, bounds: dict[str, int] | None = None):
        self.host, self.port, self.backend_port, self.key = host, port, backend_port, key
        self.bounds = dict(bounds or {})
        self.max_body, self.timeout, self.max_connections = max_body, float(timeout), int(max_connections)
        self.max_buffered, self.backend_timeout = max_buffered, backend_timeout
        self._held = 0
        self._held_lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._watch: _Watch | None = None

    def _hold(self, length: int) -> bool:
        """Reserve room for a body of ``length`` bytes among :attr:`max_buffered`."""
        with self._held_lock:
            if length and self._held + length > self.max_buffered:
                return False
            self._held += length
            return True

    def _release(self, length: int) -> None:
        with self._held_lock:
            self._held -= length

    def start(self) -> "HttpFront":
        self._watch = _Watch(tick=min(0.1, self.timeout / 10), max_lingering=2 * self.max_connections)
        try:
            self._server = _Server(self)
        except BaseException:
            self._watch.stop()
            raise
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="posescore-http-front", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._watch is not None:  # kept: connections still ending use it (it closes them at once now)
            self._watch.stop()
