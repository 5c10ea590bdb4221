"""Video and image input/output: PyAV decoding that streams, pose extraction pipelined with Triton,
and PyAV encoding (side-by-side outputs, re-timed copies).

    info = probe("clip.mp4")                      # VideoInfo: size after rotation, fps, count, ...
    for frame in iter_frames("clip.mp4", fps=5, max_side=640):
        frame.index, frame.time, frame.rgb        # source frame index, seconds, uint8 [H, W, 3]
    with PoseScoreClient(url) as client:
        poses = extract_poses("clip.mp4", client)  # VideoPoses: keypoints [F, P, 17, 3] in pixels

Conventions
-----------
- Frames are RGB ``uint8 [H, W, 3]``, C-contiguous, *as displayed*: the container's rotation (the
  display matrix, or the legacy ``rotate`` tag) is applied to the pixels, exactly as ``ffmpeg`` /
  ``ffplay`` autorotate do (90/180/270 degrees and the mirror flips a display matrix can hold; any
  other angle is rounded to the nearest quarter turn).
- ``Frame.index`` is the index of the frame in the decoded stream (0-based, presentation order),
  whatever the sampling; ``Frame.time`` is its presentation time in seconds from the start of the
  stream (``(pts - stream.start_time) * time_base``; ``index / fps`` when a frame has no pts).
- Keypoints and boxes are float32 pixels of the *original* frame (full size, after rotation), even
  when frames were decoded smaller with ``max_side``.
- Every error about a file is a :class:`VideoError` (a ``ValueError``) whose message names the file
  and the problem.

A still image (see :func:`is_image`) is accepted wherever a video is: one frame, index 0, time 0.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

#: File name extensions read as still images (case-insensitive).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pgm",
                              ".ppm", ".pnm"})
#: Threads swscale uses to convert (and scale) each frame to RGB.
_SWS_THREADS = max(1, min(4, os.cpu_count() or 1))
#: Frames per request to the pose model by default (its max_batch_size).
DEFAULT_BATCH = 16


class VideoError(ValueError):
    """A video or image that cannot be read (or written); the message names the file and the problem.

    Attributes (None when they do not apply):
    ``path``: the file. ``last_good_index`` / ``last_good_time``: the source index and time (seconds)
    of the last frame decoded cleanly before a decode error (None: no good frame at all).
    ``partial``: set by :func:`extract_poses`: the :class:`VideoPoses` of every frame done before the
    error, so that nothing already computed is lost.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None,
                 last_good_index: int | None = None, last_good_time: float | None = None):
        super().__init__(message)
        self.path = None if path is None else os.fspath(path)
        self.last_good_index = last_good_index
        self.last_good_time = last_good_time
        self.partial: VideoPoses | None = None


# -- what a file is ------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video or image without decoding it all.

    ``width`` / ``height``: pixels of a frame as displayed (after rotation). ``fps``: frames per
    second (float; the stream's average rate, 0.0 for a still image). ``frame_count``: frames in the
    stream (the container's count when it has one, else ``round(duration * fps)``: then an estimate).
    ``duration``: seconds. ``rotation``: degrees counter-clockwise (0, 90, 180 or 270) by which the
    stored pixels are turned for display (FFmpeg's display matrix, PyAV's ``VideoFrame.rotation``; a
    legacy clockwise ``rotate`` tag of 90 reads as 270). ``orientation``: the pixel operation that
    turns stored frames into displayed ones, one of :data:`ORIENTATION_OPS` (``"none"``: upright;
    it also tells the mirror flips a display matrix may add, e.g. a pure horizontal mirror reads as
    rotation 180 with orientation ``"hflip"``, as in FFmpeg). ``codec``: decoder name (``"image"``
    for a still). ``image``: True for a still image.
    """

    path: str
    width: int
    height: int
    fps: float
    frame_count: int
    duration: float
    rotation: int = 0
    orientation: str = "none"
    codec: str = ""
    image: bool = False


@dataclass(frozen=True)
class Frame:
    """One decoded frame: ``index`` (source frame index, 0-based), ``time`` (seconds from the start
    of the stream), ``rgb`` uint8 ``[H, W, 3]`` C-contiguous, as displayed (rotation applied)."""

    index: int
    time: float
    rgb: np.ndarray


def is_image(path: str | os.PathLike) -> bool:
    """True when ``path`` names a still image by its extension (:data:`IMAGE_EXTENSIONS`)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _check_file(path: str | os.PathLike) -> str:
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise VideoError(f"expected a file path, got {path!r}")
    name = os.fspath(path)
    if not os.path.exists(name):
        raise VideoError(f"{name}: no such file", path=name)
    if os.path.isdir(name):
        raise VideoError(f"{name}: is a folder, not a video or image file", path=name)
    if os.path.getsize(name) == 0:
        raise VideoError(f"{name}: empty file, not a video or image", path=name)
    return name


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The still image at ``path`` as RGB uint8 ``[H, W, 3]`` (grey and alpha images are converted;
    the EXIF orientation is applied). Raises VideoError for a missing or unreadable file."""
    import cv2

    name = _check_file(path)
    try:
        data = np.fromfile(name, dtype=np.uint8)
    except OSError as err:
        raise VideoError(f"{name}: cannot read the file ({err.strerror or err})", path=name) from None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise VideoError(f"{name}: not a readable image (OpenCV cannot decode it)", path=name)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


# -- rotation ------------------------------------------------------------------------------------
#: The pixel operations ffmpeg's autorotate inserts, by the name of its filter (transpose's modes).
ORIENTATION_OPS = ("none", "clock", "cclock", "cclock_flip", "clock_flip", "hflip", "vflip", "hvflip")


def rotation_of_matrix(matrix: Any) -> float:
    """``av_display_rotation_get``: degrees counter-clockwise of a display matrix (9 int32 in
    FFmpeg's 16.16 / 2.30 fixed-point layout); NaN for a degenerate matrix."""
    m = np.asarray(matrix, dtype=np.float64).reshape(9) / 65536.0
    scale0, scale1 = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if scale0 == 0.0 or scale1 == 0.0:
        return float("nan")
    return -math.degrees(math.atan2(m[1] / scale1, m[0] / scale0))


def orientation_op(matrix: Any) -> tuple[int, str]:
    """``(rotation, op)`` for a display matrix (9 int32), the decision table of ffmpeg's autorotate:
    ``rotation`` in degrees counter-clockwise (0, 90, 180, 270; other angles rounded to a quarter
    turn) and ``op``, one of :data:`ORIENTATION_OPS`, that :func:`apply_orientation` applies."""
    m = np.asarray(matrix, dtype=np.int64).reshape(9)
    ccw = rotation_of_matrix(m)
    if math.isnan(ccw):
        return 0, "none"
    theta = -round(ccw)  # ffmpeg's get_rotation: clockwise degrees to apply for display
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    theta = (round(theta / 90) * 90) % 360  # arbitrary angles: the nearest quarter turn
    if theta == 90:
        op = "cclock_flip" if m[3] > 0 else "clock"
    elif theta == 180:
        op = {(True, True): "hvflip", (True, False): "hflip", (False, True): "vflip",
              (False, False): "none"}[(bool(m[0] < 0), bool(m[4] < 0))]
    elif theta == 270:
        op = "clock_flip" if m[3] < 0 else "cclock"
    else:
        op = "vflip" if m[4] < 0 else "none"
    return (360 - theta) % 360, op


def apply_orientation(rgb: np.ndarray, op: str) -> np.ndarray:
    """``rgb [H, W, C]`` turned / mirrored by ``op`` (:data:`ORIENTATION_OPS`, the ffmpeg filters:
    ``clock`` = 90 degrees clockwise, ``cclock`` = 90 counter-clockwise, ``cclock_flip`` = transpose,
    ``clock_flip`` = anti-transpose, ``hflip``, ``vflip``, ``hvflip`` = 180 degrees). C-contiguous."""
    if op == "none":
        out = rgb
    elif op == "clock":
        out = np.rot90(rgb, -1)
    elif op == "cclock":
        out = np.rot90(rgb, 1)
    elif op == "cclock_flip":
        out = rgb.swapaxes(0, 1)
    elif op == "clock_flip":
        out = rgb.swapaxes(0, 1)[::-1, ::-1]
    elif op == "hflip":
        out = rgb[:, ::-1]
    elif op == "vflip":
        out = rgb[::-1]
    elif op == "hvflip":
        out = rgb[::-1, ::-1]
    else:
        raise ValueError(f"orientation op: expected one of {ORIENTATION_OPS}, got {op!r}")
    return np.ascontiguousarray(out)


def _frame_orientation(frame: Any, stream: Any) -> tuple[int, str]:
    """Orientation of a decoded frame: its display matrix, else the stream's legacy rotate tag."""
    import av

    side = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
    if side is not None and side.buffer_size >= 36:
        return orientation_op(np.frombuffer(bytes(side), dtype=np.int32)[:9])
    tag = (stream.metadata or {}).get("rotate")
    if tag:
        try:
            clockwise = int(round(float(tag) / 90.0)) * 90 % 360
        except ValueError:
            return 0, "none"
        return (360 - clockwise) % 360, {0: "none", 90: "clock", 180: "hvflip", 270: "cclock"}[clockwise]
    return 0, "none"


# -- opening and probing -------------------------------------------------------------------------
def _describe(err: BaseException) -> str:
    text = getattr(err, "strerror", None) or str(err)
    return text.split(": '", 1)[0] if isinstance(text, str) else str(err)


def _open(name: str) -> Any:
    """An open PyAV input container with a video stream (its first), or VideoError."""
    import av

    try:
        container = av.open(name, mode="r", metadata_errors="replace")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise VideoError(f"{name}: not a video, or a damaged one (FFmpeg cannot read it: {_describe(err)})",
                         path=name) from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{name}: not a video (no video stream in the {container.format.name} file)",
                         path=name)
    return container


def _stream_time(frame: Any, stream: Any, index: int, fps: float) -> float:
    if frame.pts is None or stream.time_base is None:
        return index / fps if fps > 0 else 0.0
    start = stream.start_time or 0
    return float((frame.pts - start) * stream.time_base)


def _tag_seconds(value: str | None) -> float:
    """Seconds of a duration tag such as ``"00:01:05.250000000"`` (0.0 when absent or unreadable)."""
    if not value:
        return 0.0
    try:
        hours, minutes, seconds = value.strip().split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return 0.0


def _ended_short(container: Any, stream: Any, expected: int, decoded: int, last_good: tuple[int, float] | None,
                 fps: float) -> str:
    """Why a stream that ended without an error looks cut short ('' when it does not).

    MP4 / MOV: the last frame's time against the duration in the header (a frame count there
    includes frames an edit list drops, a duration does not). Other formats: the frame count their
    header gives (AVI's is exact; its duration is not: FFmpeg derives it from what is there), else
    the header's duration (Matroska)."""
    mov = "mov" in container.format.name.split(",") or "mp4" in container.format.name.split(",")
    if expected > 0 and not mov:
        if expected - decoded > max(2, expected // 100):
            return f"after {decoded} of the {expected} frames its header promises"
        return ""
    duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
    if duration <= 0:
        duration = _tag_seconds((stream.metadata or {}).get("DURATION"))  # Matroska's per-track tag
    if duration <= 0 and container.duration and len(container.streams) == 1:
        duration = container.duration / 1_000_000  # AV_TIME_BASE; only when no other stream lasts longer
    if duration <= 0 or fps <= 0:
        return ""
    covered = (last_good[1] if last_good else 0.0) + 1.0 / fps
    if duration - covered > max(2.0 / fps, 0.01 * duration):
        return f"at {covered:.3f} s of the {duration:.3f} s its header promises"
    return ""


def _stream_rate(stream: Any) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return float(rate)
    return 0.0


def probe(path: str | os.PathLike) -> VideoInfo:
    """What ``path`` is: size as displayed, fps, frame count, duration, rotation (see VideoInfo).

    Reads the headers and decodes the first frame only (for its display matrix and coded size).
    Raises VideoError for a missing file, a file that is not a video ("not a video") or an image
    that cannot be read, a video with no video stream or whose first frame cannot be decoded.
    """
    name = _check_file(path)
    if is_image(name):
        rgb = read_image(name)
        return VideoInfo(path=name, width=int(rgb.shape[1]), height=int(rgb.shape[0]), fps=0.0,
                         frame_count=1, duration=0.0, rotation=0, codec="image", image=True)
    import av

    with _open(name) as container:
        stream = container.streams.video[0]
        fps = _stream_rate(stream)
        duration = 0.0
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / av.time_base
        count = int(stream.frames or 0)
        if count <= 0:
            count = int(round(duration * fps)) if fps > 0 else 0
        if duration <= 0 and fps > 0:
            duration = count / fps
        try:
            first = next(container.decode(stream), None)
        except (av.error.FFmpegError, OSError) as err:
            raise VideoError(f"{name}: no frame can be decoded ({_describe(err)})", path=name) from None
        if first is None:
            raise VideoError(f"{name}: the video stream holds no frame", path=name)
        rotation, op = _frame_orientation(first, stream)
        width, height = first.width, first.height
        if op in ("clock", "cclock", "cclock_flip", "clock_flip"):
            width, height = height, width
        return VideoInfo(path=name, width=int(width), height=int(height), fps=fps, frame_count=count,
                         duration=float(duration), rotation=int(rotation), orientation=op,
                         codec=stream.codec_context.name)


# -- decoding ------------------------------------------------------------------------------------
def decode_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """``(width, height)`` scaled down (aspect kept, rounded, at least 1) so that the longer side is
    at most ``max_side``; unchanged when it already is or ``max_side`` is None."""
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def _check_options(fps: Any, max_side: Any, start: Any, duration: Any) -> None:
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0
                            or not math.isfinite(fps)):
        raise VideoError(f"fps: expected frames per second > 0 or None, got {fps!r}")
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, (int, np.integer))
                                 or max_side < 16):
        raise VideoError(f"max_side: expected an integer >= 16 pixels or None, got {max_side!r}")
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not start >= 0:
        raise VideoError(f"start: expected seconds >= 0, got {start!r}")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float))
                                 or not duration > 0):
        raise VideoError(f"duration: expected seconds > 0 or None, got {duration!r}")


def iter_frames(path: str | os.PathLike, *, fps: float | None = None, max_side: int | None = None,
                start: float = 0.0, duration: float | None = None) -> Iterator[Frame]:
    """Stream the frames of the video (or still image) at ``path``, one :class:`Frame` at a time.

    Decoding streams with PyAV, codec threads on (``thread_type = "AUTO"``); only the current frame
    (and, when sampling, the one before) is held. Options:

    - ``fps``: sample the stream at this rate: for each tick ``t0 + k / fps`` (``t0`` the first
      frame's time) the frame whose time is nearest the tick is kept (ties: the earlier), each frame
      at most once; so ``fps`` above the source rate keeps every frame. ``index`` and ``time`` stay
      those of the source frame.
    - ``max_side``: frames are scaled (area interpolation) so that the longer side is at most this
      many pixels; see :func:`decode_size`.
    - ``start`` / ``duration``: only frames with ``start <= time < start + duration`` (seconds).
      Earlier frames are decoded and skipped, so indices stay exact.

    The file is opened and checked at the call: a missing file, or a file that is not a video (a
    text file renamed ``.mp4``) raises VideoError at once. A file that breaks while decoding (a
    decode error, a frame the decoder flags corrupt, or a stream that ends well short of the frame
    count its header promises, i.e. a truncated file) yields every frame up to the last good one and
    then raises VideoError naming the file and that last good frame (``last_good_index`` /
    ``last_good_time`` attributes). Decoding stops at the first such problem.
    """
    _check_options(fps, max_side, start, duration)
    info = probe(path)
    return _iter_frames(info, fps=fps, max_side=max_side, start=float(start),
                        end=None if duration is None else float(start) + float(duration))


def _iter_frames(info: VideoInfo, *, fps: float | None, max_side: int | None, start: float,
                 end: float | None) -> Iterator[Frame]:
    if info.image:
        if start <= 0.0 and (end is None or end > 0.0):
            rgb = read_image(info.path)
            size = decode_size(info.width, info.height, max_side)
            if size != (info.width, info.height):
                import cv2

                rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
            yield Frame(0, 0.0, np.ascontiguousarray(rgb))
        return
    yield from _decode_video(info, fps=fps, max_side=max_side, start=start, end=end)


def _decode_video(info: VideoInfo, *, fps: float | None, max_side: int | None, start: float,
                  end: float | None) -> Iterator[Frame]:
    import av

    name = info.path
    container = _open(name)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        expected = int(stream.frames or 0)  # the header's count: 0 when it has none
        target: tuple[int, int] | None = None  # (width, height) to convert to, before rotation
        op = "none"
        decoded = 0  # source frames decoded so far
        last_good: tuple[int, float] | None = None
        stopped_early = False

        def rgb_of(frame: Any) -> np.ndarray:
            # swscale converts (and scales, by area) in a few threads of its own.
            if (frame.width, frame.height) == target:
                array = frame.to_ndarray(format="rgb24", threads=_SWS_THREADS)
            else:
                array = frame.to_ndarray(format="rgb24", width=target[0], height=target[1],
                                         interpolation="AREA", threads=_SWS_THREADS)
            return apply_orientation(array, op)

        def failure(problem: str) -> VideoError:
            if last_good is None:
                where = "no frame could be decoded"
            else:
                where = f"the last good frame is #{last_good[0]} at {last_good[1]:.3f} s"
            return VideoError(f"{name}: {problem}; {where}", path=name,
                              last_good_index=None if last_good is None else last_good[0],
                              last_good_time=None if last_good is None else last_good[1])

        # Sampling state: the next tick, the previous in-range frame (not yet converted).
        tick_number = 0
        t0: float | None = None
        previous: tuple[int, float, Any] | None = None
        emitted = -1

        def tick() -> float:
            return t0 + tick_number / fps

        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames, None)
            except (av.error.FFmpegError, OSError) as err:
                raise failure(f"decoding failed after {decoded} frame(s) ({_describe(err)})") from None
            if frame is None:
                break
            index = decoded
            if frame.is_corrupt:
                raise failure(f"frame #{index} is corrupt (damaged or truncated data)")
            decoded += 1
            time = _stream_time(frame, stream, index, info.fps)
            last_good = (index, time)
            if target is None:
                op = _frame_orientation(frame, stream)[1]
                target = decode_size(frame.width, frame.height, max_side)
            if time < start - 1e-9:
                continue
            if end is not None and time >= end - 1e-9:
                stopped_early = True
                break
            if fps is None:
                yield Frame(index, time, rgb_of(frame))
                continue
            if t0 is None:
                t0 = time
            while time >= tick() - 1e-9:
                if previous is not None and tick() - previous[1] <= time - tick():
                    nearest = previous  # the tick lies nearer the frame before it (or halfway)
                else:
                    nearest = (index, time, frame)
                if nearest[0] != emitted:
                    emitted = nearest[0]
                    yield Frame(nearest[0], nearest[1], rgb_of(nearest[2]))
                tick_number += 1
            previous = (index, time, frame)

        # A tick just past the last frame, nearer it than a source frame interval: keep that frame.
        if fps is not None and previous is not None and previous[0] != emitted and not stopped_early:
            interval = 1.0 / info.fps if info.fps > 0 else 0.0
            if tick() - previous[1] <= interval / 2 + 1e-9:
                yield Frame(previous[0], previous[1], rgb_of(previous[2]))
        if not stopped_early:
            short = _ended_short(container, stream, expected, decoded, last_good, info.fps)
            if short:
                raise failure(f"the stream ended {short} (truncated file?)")
    finally:
        container.close()


# -- poses ---------------------------------------------------------------------------------------
@dataclass
class VideoPoses:
    """Every person the pose model found in F frames of one video (or image), padded to P people.

    ``info``: the source (:class:`VideoInfo`). ``frame_indices [F]`` int64: source frame index of
    each row. ``times [F]`` float32: seconds. ``keypoints [F, P, 17, 3]`` float32: COCO-17 (x, y,
    confidence) in pixels of the original frame (after rotation, before any ``max_side`` scaling).
    ``boxes [F, P, 4]`` float32: x1, y1, x2, y2 pixels. ``scores [F, P]`` float32: detection scores
    0-1. ``counts [F]`` int32: real people per row; rows past it are zero padding. ``tracks``:
    ``[F, P]`` int32 person ids when known (read from a JSON file's ``idx``), else None (see
    :func:`engine.people.track_people`).
    """

    info: VideoInfo
    frame_indices: np.ndarray
    times: np.ndarray
    keypoints: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    counts: np.ndarray
    tracks: np.ndarray | None = field(default=None)

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    @property
    def max_people(self) -> int:
        """P, the padded number of people per row."""
        return int(self.keypoints.shape[1])

    def frames_people(self, i: int):
        """Row ``i``'s people trimmed to its count: a ``clients.FramePeople`` with ``keypoints
        [n, 17, 3]``, ``boxes [n, 4]``, ``scores [n]``."""
        from clients import FramePeople

        n = int(self.counts[i])
        return FramePeople(self.keypoints[i, :n], self.boxes[i, :n], self.scores[i, :n])

    def people(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every real detection, flattened in (row, person) order: ``(rows [N] int64, person [N]
        int64, keypoints [N, 17, 3] float32)``; ``rows`` index the F axis (``frame_indices[rows]``,
        ``times[rows]``), ``person`` the P axis."""
        mask = np.arange(self.max_people)[None, :] < self.counts[:, None]
        rows, person = np.nonzero(mask)
        return rows.astype(np.int64), person.astype(np.int64), self.keypoints[rows, person]

    def select(self, rows: Any) -> "VideoPoses":
        """The rows ``rows`` (indices or a boolean mask over F), in that order."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64).reshape(-1)
        return VideoPoses(info=self.info, frame_indices=self.frame_indices[rows], times=self.times[rows],
                          keypoints=self.keypoints[rows], boxes=self.boxes[rows], scores=self.scores[rows],
                          counts=self.counts[rows], tracks=None if self.tracks is None else self.tracks[rows])

    def reversed(self) -> "VideoPoses":
        """The poses of the clip played backwards: the people of the rows in reverse order, on the
        same time axis (``frame_indices`` and ``times`` unchanged, now those of the reversed clip)."""
        back = self.select(np.arange(len(self))[::-1])
        back.frame_indices, back.times = self.frame_indices.copy(), self.times.copy()
        return back

    @classmethod
    def empty(cls, info: VideoInfo, people: int = 0) -> "VideoPoses":
        """No frames (F = 0), P = ``people``."""
        return cls(info=info, frame_indices=np.zeros(0, np.int64), times=np.zeros(0, np.float32),
                   keypoints=np.zeros((0, people, 17, 3), np.float32), boxes=np.zeros((0, people, 4), np.float32),
                   scores=np.zeros((0, people), np.float32), counts=np.zeros(0, np.int32))

    @classmethod
    def concatenate(cls, info: VideoInfo, parts: list["VideoPoses"]) -> "VideoPoses":
        """Rows of ``parts`` one after the other, padded to their largest P (tracks kept only when
        every part has them)."""
        if not parts:
            return cls.empty(info)
        people = max(part.max_people for part in parts)

        def pad(array: np.ndarray) -> np.ndarray:
            extra = people - array.shape[1]
            return np.pad(array, [(0, 0), (0, extra)] + [(0, 0)] * (array.ndim - 2)) if extra else array

        tracks = None
        if all(part.tracks is not None for part in parts):
            tracks = np.concatenate([np.pad(p.tracks, [(0, 0), (0, people - p.max_people)], constant_values=-1)
                                     for p in parts]).astype(np.int32)
        return cls(info=info,
                   frame_indices=np.concatenate([p.frame_indices for p in parts]).astype(np.int64),
                   times=np.concatenate([p.times for p in parts]).astype(np.float32),
                   keypoints=np.concatenate([pad(p.keypoints) for p in parts]).astype(np.float32),
                   boxes=np.concatenate([pad(p.boxes) for p in parts]).astype(np.float32),
                   scores=np.concatenate([pad(p.scores) for p in parts]).astype(np.float32),
                   counts=np.concatenate([p.counts for p in parts]).astype(np.int32), tracks=tracks)


_END = object()


def _batch_poses(info: VideoInfo, frames: list[Frame], result: Any) -> VideoPoses:
    """One batch's VideoPoses: trimmed to its largest count, scaled back to the original pixels."""
    counts = np.asarray(result.counts, np.int32).reshape(-1)
    people = int(counts.max()) if counts.size else 0
    keypoints = np.array(result.keypoints[:, :people], np.float32)
    boxes = np.array(result.boxes[:, :people], np.float32)
    height, width = frames[0].rgb.shape[:2]
    if (width, height) != (info.width, info.height):
        sx, sy = info.width / width, info.height / height
        keypoints[..., 0] *= sx
        keypoints[..., 1] *= sy
        boxes[..., 0::2] *= sx
        boxes[..., 1::2] *= sy
    return VideoPoses(info=info, frame_indices=np.array([f.index for f in frames], np.int64),
                      times=np.array([f.time for f in frames], np.float32), keypoints=keypoints, boxes=boxes,
                      scores=np.array(result.scores[:, :people], np.float32), counts=counts)


def expected_frames(info: VideoInfo, fps: float | None = None, start: float = 0.0,
                    duration: float | None = None) -> int:
    """An estimate of how many frames :func:`iter_frames` yields with these options (for progress)."""
    if info.image:
        return 1
    if start == 0 and duration is None:
        span, count = info.duration, info.frame_count
    else:
        end = info.duration if duration is None else min(info.duration, start + duration)
        span = max(0.0, end - start)
        count = int(round(span * info.fps))
    if fps is not None and info.fps > 0 and fps < info.fps:
        count = min(count, int(math.floor(span * fps + 1e-9)) + 1)
    return max(count, 1)


def extract_poses(source: str | os.PathLike, client: Any, *, fps: float | None = None,
                  max_side: int | None = None, batch: int = DEFAULT_BATCH,
                  progress: Callable[[int, int], Any] | None = None, start: float = 0.0,
                  duration: float | None = None) -> VideoPoses:
    """Every person's keypoints in the video or image ``source``, frame by frame (a VideoPoses).

    ``client``: a ``clients.PoseScoreClient`` (anything with ``pose(frames uint8 [B, H, W, 3]) ->
    PoseResult``), or a ``"host:port"`` URL for which one is opened and closed here. ``fps``,
    ``max_side``, ``start``, ``duration``: as :func:`iter_frames`; keypoints and boxes are scaled
    back to the original frame's pixels whatever ``max_side``. ``batch``: frames per ``pose`` call.
    ``progress(frames_done, frames_total_estimate)`` is called at the start and after each batch.

    Pipelined: a decode thread fills a bounded queue (two batches) while the main thread sends the
    batches for inference, so the next batch decodes while the last is inferred; at most about three
    batches of frames are in memory at once.

    A decode error mid-video raises the VideoError of :func:`iter_frames` after the frames decoded
    before it are inferred, with ``.partial`` = the VideoPoses of every frame done; an inference
    error (``clients.PoseScoreError``) is re-raised with the same ``.partial`` attribute.
    """
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise VideoError(f"batch: expected an integer >= 1, got {batch!r}")
    _check_options(fps, max_side, start, duration)
    info = probe(source)
    if isinstance(client, str):
        from clients import PoseScoreClient

        with PoseScoreClient(client) as owned:
            return extract_poses(source, owned, fps=fps, max_side=max_side, batch=batch, progress=progress,
                                 start=start, duration=duration)
    total = expected_frames(info, fps, float(start), duration)
    frames = _iter_frames(info, fps=fps, max_side=max_side, start=float(start),
                          end=None if duration is None else float(start) + float(duration))
    pending: queue.Queue = queue.Queue(maxsize=2 * batch)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def decode() -> None:
        try:
            for frame in frames:
                if not put(frame):
                    return
            put(_END)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            put(err)
        finally:
            frames.close()

    worker = threading.Thread(target=decode, name="posescore-decode", daemon=True)
    worker.start()
    done: list[VideoPoses] = []
    count = 0
    if progress is not None:
        progress(0, total)
    try:
        finished = False
        while not finished:
            chunk: list[Frame] = []
            failure: BaseException | None = None
            while len(chunk) < batch:
                item = pending.get()
                if item is _END:
                    finished = True
                    break
                if isinstance(item, BaseException):
                    failure, finished = item, True
                    break
                chunk.append(item)
            if chunk:
                result = client.pose(np.stack([f.rgb for f in chunk]))
                done.append(_batch_poses(info, chunk, result))
                count += len(chunk)
                if progress is not None:
                    progress(count, max(total, count))
            if failure is not None:
                raise failure
    except BaseException as err:
        stop.set()
        if isinstance(err, Exception):
            try:
                err.partial = VideoPoses.concatenate(info, done)
            except AttributeError:  # an exception type that takes no attributes
                pass
        raise
    finally:
        stop.set()
        worker.join(timeout=5.0)
    return VideoPoses.concatenate(info, done)


# -- encoding ------------------------------------------------------------------------------------
def video_codec() -> str:
    """The encoder :func:`write_video` uses: ``libx264`` (H.264) when PyAV's FFmpeg has it, else
    ``mpeg4``."""
    import av

    try:
        av.Codec("libx264", "w")
        return "libx264"
    except Exception:  # noqa: BLE001 - any failure means no libx264 encoder
        return "mpeg4"


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, *,
                codec: str | None = None, quality: int = 20) -> Path:
    """Encode RGB ``frames`` (uint8 ``[H, W, 3]``, all the size of the first) into the video file
    ``path`` at ``fps`` frames per second, with PyAV. Returns ``path`` (a Path; :func:`probe` it for
    the frame count).

    The container comes from the extension (``.mp4`` advised). ``codec``: default
    :func:`video_codec` (H.264 via libx264, else MPEG-4 part 2); pixels are yuv420p, so an odd width
    or height is padded by one black column or row. ``quality``: libx264's CRF (lower is better;
    for mpeg4 it sets qscale from it). Frames stream through; nothing is held. Written to a
    temporary name in the same folder and renamed into place: a failed write leaves no file.
    Raises VideoError for no frames, a frame of another size or dtype, or an encoder error.
    """
    import av

    name = os.fspath(path)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0 or not math.isfinite(fps):
        raise VideoError(f"{name}: fps: expected frames per second > 0, got {fps!r}", path=name)
    rate = Fraction(fps).limit_denominator(1001) if not float(fps).is_integer() else Fraction(int(fps))
    target = Path(name)
    if target.parent and not target.parent.exists():
        raise VideoError(f"{name}: the folder {target.parent} does not exist", path=name)
    tmp = target.with_name(f".{target.stem}.partial-{os.getpid()}{target.suffix}")
    codec = codec or video_codec()
    try:
        options = {"movflags": "+faststart"} if target.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
        with av.open(str(tmp), mode="w", options=options) as container:
            stream = None
            shape = None
            for number, rgb in enumerate(frames):
                rgb = np.asarray(rgb)
                if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
                    raise VideoError(f"{name}: frame {number}: expected RGB uint8 [H, W, 3], got "
                                     f"{rgb.dtype} {list(rgb.shape)}", path=name)
                if stream is None:
                    shape = rgb.shape
                    stream = container.add_stream(codec, rate=rate)
                    stream.width = shape[1] + shape[1] % 2
                    stream.height = shape[0] + shape[0] % 2
                    stream.pix_fmt = "yuv420p"
                    if codec == "libx264":
                        stream.options = {"crf": str(int(quality)), "preset": "veryfast"}
                    else:
                        qscale = max(1, min(31, int(quality) // 6 + 1))  # crf 20 -> q 4
                        # A fixed quantizer (PyAV sets no per-frame quality, so pin qmin/qmax).
                        stream.codec_context.qmin = stream.codec_context.qmax = qscale
                elif rgb.shape != shape:
                    raise VideoError(f"{name}: frame {number}: expected size {list(shape)}, got "
                                     f"{list(rgb.shape)} (all frames must have the first's size)", path=name)
                if rgb.shape[:2] != (stream.height, stream.width):
                    rgb = np.pad(rgb, [(0, stream.height - rgb.shape[0]), (0, stream.width - rgb.shape[1]), (0, 0)])
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            if stream is None:
                raise VideoError(f"{name}: no frames to write", path=name)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, target)
    except av.error.FFmpegError as err:
        raise VideoError(f"{name}: cannot write the video ({_describe(err)})", path=name) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def retime_video(src: str | os.PathLike, dst: str | os.PathLike, speed: float, start: float = 0.0,
                 duration: float | None = None, *, max_side: int | None = None) -> Path:
    """Write ``dst``, a re-timed copy of ``src`` from ``start`` for ``duration`` seconds (None: to
    the end) played at ``speed`` times the original speed, at the source's frame rate.

    Output frame ``j`` shows clip frame ``floor(j * speed)`` (exact rational arithmetic): speed 0.5
    repeats each frame twice (half speed), 2.0 keeps every other frame, 1.0 copies the clip.
    Rotation is applied (the copy is stored upright). Returns ``dst`` (a Path).
    """
    name = os.fspath(src)
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not speed > 0 or not math.isfinite(speed):
        raise VideoError(f"{name}: speed: expected a factor > 0, got {speed!r}", path=name)
    info = probe(src)
    if info.image or info.fps <= 0:
        raise VideoError(f"{name}: not a video with a frame rate, cannot re-time it", path=name)
    ratio = Fraction(speed).limit_denominator(1000)

    def repeated() -> Iterator[np.ndarray]:
        for number, frame in enumerate(iter_frames(src, max_side=max_side, start=start, duration=duration)):
            copies = math.ceil(Fraction(number + 1) / ratio) - math.ceil(Fraction(number) / ratio)
            for _ in range(copies):
                yield frame.rgb

    return write_video(dst, repeated(), info.fps)
