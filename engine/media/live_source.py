"""Frames of a camera or a network stream as they come (PyAV / FFmpeg), reconnecting when it drops.

A reader thread decodes the source and keeps only its newest frame: whoever takes frames (the
pose model, slower than the source) gets the newest one and the count of those it never saw, so no
queue grows. When the source ends or fails, the thread opens it again, for up to ``reconnect_s``
seconds; past that the frames end and :attr:`LiveSource.error` says why.

    source = LiveSource("rtsp://camera/stream")
    for frame, dropped in source.frames():   # Frame(index, time s since the start, rgb)
        ...
    if source.error: ...
"""

from __future__ import annotations

import os
import threading
import time
from typing import Iterator

from posescore.engine.media.video import Frame

#: Sources read as live streams: network URLs, and V4L2 cameras.
LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "srt://", "udp://", "tcp://", "http://", "https://")
#: Seconds a dropped source is tried again before the stream is given up.
RECONNECT_S = 10.0
#: Seconds to open a source, and to wait for its next packet.
OPEN_TIMEOUT_S, READ_TIMEOUT_S = 10.0, 2.0


def is_live_source(source: str) -> bool:
    """Whether ``source`` is a camera (``/dev/videoN``) or a network stream URL."""
    text = str(source)
    return text.startswith(LIVE_SCHEMES) or text.startswith("/dev/video")


class LiveSource:
    """A camera or network stream, read in a thread; see the module docstring."""

    def __init__(self, source: str, *, reconnect_s: float = RECONNECT_S, open_timeout: float = OPEN_TIMEOUT_S,
                 read_timeout: float = READ_TIMEOUT_S):
        self.source = str(source)
        self.reconnect_s, self.open_timeout, self.read_timeout = reconnect_s, open_timeout, read_timeout
        self.error: str | None = None
        self.connections = 0                  # times the source was opened
        self.fps: float | None = None         # the source's own rate, once known
        self._newest: Frame | None = None
        self._unseen = 0                      # frames replaced before anyone took them
        self._done = False
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._began = time.monotonic()
        self._thread = threading.Thread(target=self._read, name="posescore-live-source", daemon=True)
        self._thread.start()

    def frames(self) -> Iterator[tuple[Frame, int]]:
        """``(the newest frame, frames dropped before it)`` as they come; ends when the source is
        gone for good (see :attr:`error`) or :meth:`close` is called."""
        while True:
            with self._changed:
                while self._newest is None and not self._done:
                    self._changed.wait()
                if self._newest is None:
                    return
                frame, dropped = self._newest, self._unseen
                self._newest, self._unseen = None, 0
            yield frame, dropped

    def close(self) -> None:
        self._stop.set()
        with self._changed:
            self._done = True
            self._changed.notify_all()

    def _open(self, timeout: float):
        import av

        if self.source.startswith("/dev/video"):
            if not os.path.exists(self.source):
                raise FileNotFoundError(f"no camera at {self.source}")
            return av.open(self.source, format="v4l2", timeout=(timeout, self.read_timeout))
        return av.open(self.source, timeout=(timeout, self.read_timeout))

    def _read(self) -> None:
        index, lost_at, why, last_frame = 0, None, None, None
        while not self._stop.is_set():
            # Reopening, wait no longer than the reconnection window has left.
            left = self.open_timeout if lost_at is None else max(0.5, self.reconnect_s - (time.monotonic() - lost_at))
            try:
                with self._open(min(self.open_timeout, left)) as container:
                    stream = container.streams.video[0]  # no frame threading: it holds frames back
                    self.connections += 1
                    if stream.average_rate:
                        self.fps = float(stream.average_rate)
                    lost_at = None
                    for decoded in container.decode(stream):
                        rgb = decoded.to_ndarray(format="rgb24")
                        frame = Frame(index=index, time=time.monotonic() - self._began, rgb=rgb)
                        index += 1
                        last_frame = frame.time
                        with self._changed:
                            self._unseen += self._newest is not None
                            self._newest = frame
                            self._changed.notify_all()
                        if self._stop.is_set():
                            return
                why = "the stream ended"
            except Exception as err:  # noqa: BLE001 - av.FFmpegError, OSError: the source dropped
                why = f"{type(err).__name__}: {err}"
            now = time.monotonic()
            lost_at = lost_at if lost_at is not None else now
            if now - lost_at >= self.reconnect_s:
                if last_frame is None:
                    self.error = f"{self.source}: no frame within {now - self._began:.0f} s ({why})"
                else:
                    self.error = (f"{self.source}: the stream dropped after its frame at {last_frame:.1f} s and did "
                                  f"not come back within {self.reconnect_s:g} s ({why})")
                break
            self._stop.wait(0.5)
        with self._changed:
            self._done = True
            self._changed.notify_all()
