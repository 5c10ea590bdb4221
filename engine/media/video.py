"""Video and image input: probing, rotation, and PyAV decoding that streams and samples.
(Encoding is ``engine.media.encode``; pose extraction over these frames is ``engine.jobs.extract``.)

    info = probe("clip.mp4")                      # VideoInfo: size after rotation, fps, count, ...
    for frame in iter_frames("clip.mp4", fps=5, max_side=640):
        frame.index, frame.time, frame.rgb        # source frame index, seconds, uint8 [H, W, 3]

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from posescore.engine.poses import IMAGE_EXTENSIONS, VideoError, VideoInfo

#: Threads swscale uses to convert (and scale) each frame to RGB.
_SWS_THREADS = max(1, min(4, os.cpu_count() or 1))


# -- what a file is ------------------------------------------------------------------------------
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
def describe_error(err: BaseException) -> str:
    """A decoding error's reason, without the path FFmpeg repeats in it."""
    text = getattr(err, "strerror", None) or str(err)
    return text.split(": '", 1)[0] if isinstance(text, str) else str(err)


def _open(name: str) -> Any:
    """An open PyAV input container with a video stream (its first), or VideoError."""
    import av

    try:
        container = av.open(name, mode="r", metadata_errors="replace")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise VideoError(f"{name}: not a video, or a damaged one (FFmpeg cannot read it: {describe_error(err)})",
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
            raise VideoError(f"{name}: no frame can be decoded ({describe_error(err)})", path=name) from None
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


def check_decode_options(fps: Any, max_side: Any, start: Any, duration: Any) -> None:
    """Raise a ``VideoError`` naming the first bad decoding option (as :func:`iter_frames` takes them)."""
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
    check_decode_options(fps, max_side, start, duration)
    info = probe(path)
    return iter_probed_frames(info, fps=fps, max_side=max_side, start=float(start),
                        end=None if duration is None else float(start) + float(duration))


def iter_probed_frames(info: VideoInfo, *, fps: float | None, max_side: int | None, start: float,
                 end: float | None) -> Iterator[Frame]:
    """The frames of an already probed video or image (:func:`iter_frames` after its checks), from
    ``start`` to ``end`` seconds."""
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
                raise failure(f"decoding failed after {decoded} frame(s) ({describe_error(err)})") from None
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
            if time >= tick() - 1e-9:
                # Every tick up to this frame at once (ticks one by one cost duration x fps: hours at
                # --fps 1e9). The earlier ones lie nearer the frame before it (or halfway), the later
                # ones nearer this one; each frame is kept at most once.
                last = max(tick_number, int(math.floor((time - t0 + 1e-9) * fps)))
                while t0 + (last + 1) / fps <= time + 1e-9:
                    last += 1
                while last > tick_number and t0 + last / fps > time + 1e-9:
                    last -= 1
                first_tick, last_tick = tick(), t0 + last / fps
                if previous is not None and first_tick - previous[1] <= time - first_tick and previous[0] != emitted:
                    emitted = previous[0]
                    yield Frame(previous[0], previous[1], rgb_of(previous[2]))
                if not (previous is not None and last_tick - previous[1] <= time - last_tick) and index != emitted:
                    emitted = index
                    yield Frame(index, time, rgb_of(frame))
                tick_number = last + 1
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
