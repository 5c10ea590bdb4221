"""A validating front for Triton's HTTP/REST endpoint (``posescore serve --http``).

tritonserver 2.51 allocates an HTTP JSON inference request's tensors from their *declared*
shapes before it reads their data: a 100-byte request declaring ``[1099511627776, 17, 3]`` FP32
aborts the whole server (``std::bad_alloc``). gRPC is not affected. The front listens on the
public HTTP port, reads each request, and passes an inference request on to Triton's own HTTP
endpoint (on a private loopback port) only when every input's data matches its declared shape:
as many JSON values, or ``binary_data_size`` bytes, as the shape holds. Anything else is answered
400 with Triton's error format, naming the input; other requests (health, metadata) pass as they
are. A body over ``max_body`` bytes is refused with 413 before it is read.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: Bytes per element of each KServe v2 datatype (BYTES: variable, checked by count).
DTYPE_BYTES = {"BOOL": 1, "UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "INT8": 1, "INT16": 2, "INT32": 4,
               "INT64": 8, "FP16": 2, "FP32": 4, "FP64": 8, "BF16": 2, "BYTES": None}
#: The largest request body the front reads (the gRPC front's limit is Triton's default too).
MAX_BODY = 1 << 30
_INFER = re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
        "transfer-encoding", "upgrade", "host", "content-length"}


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


def check_infer_request(body: bytes, header_length: int | None) -> None:
    """Raise :class:`RequestError` unless every input of a KServe v2 inference request carries
    exactly the data its declared shape and datatype hold (JSON values, or binary bytes after the
    JSON header of ``header_length`` bytes)."""
    header = body if header_length is None else body[:header_length]
    if header_length is not None and not 0 <= header_length <= len(body):
        raise RequestError(f"Inference-Header-Content-Length {header_length} is not within the body's "
                           f"{len(body)} bytes")
    try:
        request = json.loads(header)
    except (ValueError, RecursionError) as err:
        raise RequestError(f"the request is not valid JSON: {str(err)[:200]}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise RequestError("the request has no 'inputs' list")
    binary_left = len(body) - (header_length if header_length is not None else len(body))
    for n, tensor in enumerate(request["inputs"]):
        if not isinstance(tensor, dict):
            raise RequestError(f"input {n}: expected an object")
        name = str(tensor.get("name", n))[:100]
        shape, dtype = tensor.get("shape"), tensor.get("datatype")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise RequestError(f"input '{name}': shape must be a list of integers >= 0, got {str(shape)[:100]}")
        if dtype not in DTYPE_BYTES:
            raise RequestError(f"input '{name}': unknown datatype {str(dtype)[:20]!r}")
        elements = math.prod(shape)
        size = DTYPE_BYTES[dtype]
        if size is not None and elements * size > MAX_BODY:
            raise RequestError(f"input '{name}': shape {shape} of {dtype} is {elements * size:,} bytes, over this "
                               f"server's {MAX_BODY:,}")
        binary = (tensor.get("parameters") or {}).get("binary_data_size")
        if binary is not None:
            if not isinstance(binary, int) or binary < 0 or binary > binary_left:
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


class HttpFront:
    """Listens on ``host:port`` and serves Triton's HTTP endpoint at ``host:backend_port`` through
    :func:`check_infer_request`. ``start()`` / ``stop()``; a thread per connection."""

    def __init__(self, host: str, port: int, backend_port: int, *, max_body: int = MAX_BODY):
        self.host, self.port, self.backend_port, self.max_body = host, port, backend_port, max_body
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "HttpFront":
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet: Triton logs the requests it serves
                pass

            def _refuse(self, error: RequestError) -> None:
                payload = json.dumps({"error": str(error)}).encode()
                self.send_response(error.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _relay(self) -> None:
                try:
                    length = self.headers.get("Content-Length")
                    if self.headers.get("Transfer-Encoding"):
                        raise RequestError("chunked requests are not accepted: send a Content-Length", 411)
                    length = int(length) if length else 0
                    if not 0 <= length <= front.max_body:
                        raise RequestError(f"a request body of {length:,} bytes, over this server's "
                                           f"{front.max_body:,}", 413)
                    body = self.rfile.read(length) if length else b""
                    if self.command == "POST" and _INFER.match(self.path.split("?", 1)[0]):
                        header = self.headers.get("Inference-Header-Content-Length")
                        check_infer_request(body, int(header) if header and header.isdigit() else None)
                except RequestError as err:
                    self._refuse(err)
                    return
                except ValueError as err:
                    self._refuse(RequestError(f"bad request: {err}"))
                    return
                backend = http.client.HTTPConnection(front.host, front.backend_port, timeout=600)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                    backend.request(self.command, self.path, body=body, headers=headers)
                    answer = backend.getresponse()
                    payload = answer.read()
                    self.send_response(answer.status, answer.reason)
                    for key, value in answer.getheaders():
                        if key.lower() not in _HOP:
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError as err:
                    self._refuse(RequestError(f"the server is unavailable: {err}", 503))
                finally:
                    backend.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _relay

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
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
