"""The pose sequence of a video or image (:class:`VideoPoses`), what is known of its source
(:class:`VideoInfo`), and the error every input file raises (:class:`VideoError`).

No decoder and no client here: formats, people, the archive and the jobs depend on these types,
not on PyAV (``engine.media.video``) or Triton (``engine.jobs.extract``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from posescore.kernels.skeleton import NUM_KEYPOINTS

#: File name extensions read as still images (case-insensitive).
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".pgm",
                              ".ppm", ".pnm"})


class PeopleInFrame(NamedTuple):
    """The people of one frame: ``keypoints [n, 17, 3]`` float32, ``boxes [n, 4]``, ``scores [n]``."""

    keypoints: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray


class VideoError(ValueError):
    """A video or image that cannot be read (or written); the message names the file and the problem.

    Attributes (None when they do not apply):
    ``path``: the file. ``last_good_index`` / ``last_good_time``: the source index and time (seconds)
    of the last frame decoded cleanly before a decode error (None: no good frame at all).
    ``partial``: set by :func:`engine.jobs.extract.extract_poses`: the :class:`VideoPoses` of every frame done before the
    error, so that nothing already computed is lost.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None,
                 last_good_index: int | None = None, last_good_time: float | None = None):
        super().__init__(message)
        self.path = None if path is None else os.fspath(path)
        self.last_good_index = last_good_index
        self.last_good_time = last_good_time
        self.partial: VideoPoses | None = None


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`engine.media.video.probe` learns about a video or image without decoding it all.

    ``width`` / ``height``: pixels of a frame as displayed (after rotation). ``fps``: frames per
    second (float; the stream's average rate, 0.0 for a still image). ``frame_count``: frames in the
    stream (the container's count when it has one, else ``round(duration * fps)``: then an estimate).
    ``duration``: seconds. ``rotation``: degrees counter-clockwise (0, 90, 180 or 270) by which the
    stored pixels are turned for display (FFmpeg's display matrix, PyAV's ``VideoFrame.rotation``; a
    legacy clockwise ``rotate`` tag of 90 reads as 270). ``orientation``: the pixel operation that
    turns stored frames into displayed ones, one of :data:`engine.media.video.ORIENTATION_OPS` (``"none"``: upright;
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


@dataclass
class VideoPoses:
    """Every person the pose model found in F frames of one video (or image), padded to P people.

    ``info``: the source (:class:`VideoInfo`). ``frame_indices [F]`` int64: source frame index of
    each row. ``times [F]`` float32: seconds. ``keypoints [F, P, 17, 3]`` float32: COCO-17 (x, y,
    confidence) in pixels of the original frame (after rotation, before any ``max_side`` scaling).
    ``boxes [F, P, 4]`` float32: x1, y1, x2, y2 pixels. ``scores [F, P]`` float32: detection scores
    0-1. ``counts [F]`` int32: real people per row; rows past it are zero padding. ``tracks``:
    ``[F, P]`` int32 person ids when known (read from a JSON file's ``idx``), else None (see
    :func:`engine.analysis.people.track_people`). ``landmarks [F, P, 33, 5]`` and ``world
    [F, P, 33, 3]`` float32: BlazePose GHUM's landmarks (x, y, z pixels of the original frame,
    visibility, presence) and world coordinates (metres) when the ``landmarks`` model gave them,
    else None.
    """

    info: VideoInfo
    frame_indices: np.ndarray
    times: np.ndarray
    keypoints: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    counts: np.ndarray
    tracks: np.ndarray | None = field(default=None)
    landmarks: np.ndarray | None = field(default=None)
    world: np.ndarray | None = field(default=None)

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    @property
    def max_people(self) -> int:
        """P, the padded number of people per row."""
        return int(self.keypoints.shape[1])

    @property
    def rate(self) -> float:
        """Rows per second, the frame rate of the movement as these rows sample it: the video's
        ``info.fps``, unless the rows' median time step says otherwise by more than 1% (frames
        sampled with ``--fps``, every other row selected, a pose JSON without a frame rate): then
        that, to a thousandth. 0.0 with fewer than 2 rows a time apart and no ``info.fps``."""
        steps = np.diff(np.asarray(self.times, np.float64))
        steps = steps[steps > 0]
        if not len(steps):
            return float(self.info.fps or 0.0)
        measured = 1.0 / float(np.median(steps))
        if self.info.fps and abs(measured - self.info.fps) <= 0.01 * self.info.fps:
            return float(self.info.fps)
        return round(measured, 3)

    def frames_people(self, i: int) -> "PeopleInFrame":
        """Row ``i``'s people trimmed to its count."""
        n = int(self.counts[i])
        return PeopleInFrame(self.keypoints[i, :n], self.boxes[i, :n], self.scores[i, :n])

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
                          counts=self.counts[rows], tracks=None if self.tracks is None else self.tracks[rows],
                          landmarks=None if self.landmarks is None else self.landmarks[rows],
                          world=None if self.world is None else self.world[rows])

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
                   keypoints=np.zeros((0, people, NUM_KEYPOINTS, 3), np.float32),
                   boxes=np.zeros((0, people, 4), np.float32),
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
        marks = world = None
        if all(part.landmarks is not None for part in parts):
            marks = np.concatenate([pad(p.landmarks) for p in parts]).astype(np.float32)
            world = np.concatenate([pad(p.world) for p in parts]).astype(np.float32)
        return cls(info=info, landmarks=marks, world=world,
                   frame_indices=np.concatenate([p.frame_indices for p in parts]).astype(np.int64),
                   times=np.concatenate([p.times for p in parts]).astype(np.float32),
                   keypoints=np.concatenate([pad(p.keypoints) for p in parts]).astype(np.float32),
                   boxes=np.concatenate([pad(p.boxes) for p in parts]).astype(np.float32),
                   scores=np.concatenate([pad(p.scores) for p in parts]).astype(np.float32),
                   counts=np.concatenate([p.counts for p in parts]).astype(np.int32), tracks=tracks)
