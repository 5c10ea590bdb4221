"""PyAV encoding: videos from frames (side-by-side outputs) and re-timed copies of a video."""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from posescore.engine.media.video import describe_error, iter_frames, probe
from posescore.engine.poses import VideoError


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
        raise VideoError(f"{name}: cannot write the video ({describe_error(err)})", path=name) from None
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


def write_repetitions(src: str | os.PathLike, dst: str | os.PathLike, first: int, last: int,
                      speeds: Iterable[float | None], rest_frames: int, *, width: int | None = None
                      ) -> tuple[Path, list[tuple[int, int]]]:
    """Write ``dst``, a set of repetitions of frames ``first..last`` (source indices) of ``src``:
    one per entry of ``speeds`` (a speed as :func:`retime_video`'s, or None: played backwards at
    1x), each followed by ``rest_frames`` copies of its last frame (a rest), at the source's frame
    rate, frames scaled to ``width`` pixels wide. Returns ``(dst, [(first, last)] output frames of
    each repetition)``: the true bounds a repetition counter must find."""
    import cv2

    info = probe(src)
    clip = []
    for frame in iter_frames(src):
        if first <= frame.index <= last:
            rgb = frame.rgb
            if width:
                height = int(round(rgb.shape[0] * width / rgb.shape[1])) // 2 * 2
                rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
            clip.append(rgb)
        elif frame.index > last:
            break
    if len(clip) < 2:
        raise VideoError(f"{os.fspath(src)}: frames {first}-{last}: fewer than 2 frames to repeat", path=os.fspath(src))
    frames, bounds = [], []
    for speed in speeds:
        if speed is None:
            rep = clip[::-1]
        else:
            ratio = Fraction(speed).limit_denominator(1000)
            rep = [clip[min(len(clip) - 1, int(j * ratio))] for j in range(math.ceil(len(clip) / ratio))]
        bounds.append((len(frames), len(frames) + len(rep) - 1))
        frames += rep + [rep[-1]] * rest_frames
    return write_video(dst, frames, info.fps), bounds
