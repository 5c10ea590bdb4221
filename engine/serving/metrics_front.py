"""The server's metrics endpoint: Triton's own metrics (read from its private port) and posescore's
from this process (the supervisor's repairs and probes), in one Prometheus text page.

Triton serves ``/metrics`` on a private loopback port; this front listens on the public metrics
port and answers ``GET /metrics`` with Triton's page followed by the lines each registered source
returns (``add_source``). Anything else is a 404.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

#: Seconds the front waits for Triton's page.
BACKEND_TIMEOUT = 5.0


class MetricsFront:
    """``GET /metrics`` on ``host:port``: Triton's page from ``backend_port`` and the sources'."""

    def __init__(self, host: str, port: int, backend_port: int, sources: list[Callable[[], str]]):
        self.backend = f"http://{host}:{backend_port}/metrics"
        self.sources = sources  # shared with the owner: a source added later is read too
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                if self.path != "/metrics":
                    self._answer(404, b"not found: the metrics are at /metrics\n")
                    return
                self._answer(200, front.page().encode())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:  # scrapes are not news
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    def page(self) -> str:
        """Triton's metrics (or a comment saying why none) and every source's lines."""
        try:
            with urllib.request.urlopen(self.backend, timeout=BACKEND_TIMEOUT) as response:
                text = response.read().decode("utf-8", "replace")
        except (OSError, urllib.error.URLError) as err:
            text = f"# tritonserver's metrics are unavailable: {err}\n"
        for source in list(self.sources):
            try:
                text += source()
            except Exception as err:  # noqa: BLE001 - one bad source must not hide the others
                text += f"# a metrics source failed: {type(err).__name__}: {err}\n"
        return text

    def start(self) -> "MetricsFront":
        self._thread = threading.Thread(target=self._server.serve_forever, name="posescore-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
