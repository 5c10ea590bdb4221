"""Segment files: column layout, writer, orphan removal, the process's mapped-segment cache, MappedSegment.

A segment file is the columns of its rows one after the other (each at a 64-byte aligned offset);
the catalog keeps each column's offset, dtype, shape and SHA-256. Rows are sorted by video, then
track, then frame, so each video's poses and each (video, track) sequence are contiguous::

    vectors  float16 [t, 34, 64]   kernels.normalize(poses, "bbox"), the search vectors, in tiles
                                   of 64 rows, each dimension-major (kernels.to_tiles; the last
                                   tile padded with zeros); segments written before tiles (git
                                   aae68d9 and earlier) hold them as rows [n, 34], still read
    xy       float32 [n, 17, 2]    pixel keypoints
    conf     uint8   [n, 17]       confidence * 255, rounded so that the visibility decision
                                   (confidence > DEFAULT_MIN_CONFIDENCE) is that of the float
    frames   int32   [n]           frame index in the video
    tracks   int32   [n]           person / track id within the video (-1: unknown)
    times    float32 [n]           seconds from the start of the video

Writers: a segment is written under a temporary name (held under an exclusive ``flock`` while its
writer lives), fsynced, renamed into place, then named in the catalog by one transaction
(``BEGIN IMMEDIATE``), which also re-checks which of its videos are new. A writer killed before
its commit leaves a file the catalog does not name; the next writer removes it once its lock is
free (:func:`remove_orphans`). So several processes may add to one archive at once, and a killed
one leaves the archive as it was before its last transaction.

Readers memory-map segments as they search them, through a process-wide cache of mapped segments
within a byte budget (:data:`MAPPED`). Every segment file is checked when mapped (a plain name
inside ``segments/``, a regular file, not a symlink, the catalog's size) and each column against
its SHA-256 the first time this process reads it: a damaged archive gives an ArchiveError naming
the file, never a wrong answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
import stat
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posescore import kernels
from posescore.engine.archive.catalog import (CATALOG, PARTIAL_PREFIX, SEGMENT_SUFFIX, SEGMENTS, check_regular,
                                              group_shared)
from posescore.engine.archive.shard import ArchiveError
from posescore.kernels import DEFAULT_MIN_CONFIDENCE
from posescore.kernels.skeleton import NUM_KEYPOINTS

#: Bytes of segment files one process keeps mapped at once (POSESCORE_MAPPED_BYTES overrides):
#: a larger archive is searched segment by segment, mapping and unmapping in turn.
MAPPED_BYTES = int(os.environ.get("POSESCORE_MAPPED_BYTES", 16 << 30))
#: A segment file the catalog does not name is removed once this old (seconds) and unlocked.
ORPHAN_AGE_S = 10.0
ALIGN = 64
COLUMN_DTYPES = {"vectors": np.float16, "xy": np.float32, "conf": np.uint8, "frames": np.int32,
                 "tracks": np.int32, "times": np.float32}
COLUMN_WIDTHS = {"vectors": (2 * NUM_KEYPOINTS,), "xy": (NUM_KEYPOINTS, 2), "conf": (NUM_KEYPOINTS,),
                 "frames": (), "tracks": (), "times": ()}


def segment_path(root: Path, file: str) -> Path:
    """The path of a segment file the catalog names: a plain file name in ``segments/`` (no
    separator, no ``..``, not hidden), whose folder resolves inside the archive."""
    if (not isinstance(file, str) or not file.endswith(SEGMENT_SUFFIX) or file.startswith(".")
            or "/" in file or "\\" in file or "\0" in file or os.path.basename(file) != file):
        raise ArchiveError(f"{root / CATALOG}: segment file name {file!r} is not a plain name in {SEGMENTS}/")
    folder = root / SEGMENTS
    if os.path.islink(folder) or folder.resolve().parent != root.resolve():
        raise ArchiveError(f"{folder}: must be a folder of the archive, not a link out of it")
    return folder / file


def compact_confidences(conf: np.ndarray, min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> np.ndarray:
    """Confidences ``[...]`` in [0, 1] as uint8 (x 255, rounded), nudged by one step where rounding
    would move them across ``min_confidence``: a keypoint is visible after the round trip exactly
    when it was before."""
    c = np.nan_to_num(np.asarray(conf, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    q = np.clip(np.rint(c * 255.0), 0, 255).astype(np.uint8)
    visible = c.astype(np.float64) > min_confidence  # as the kernels decide: float32 against a float64
    decoded = (q.astype(np.float32) / np.float32(255.0)).astype(np.float64)
    up = visible & ~(decoded > min_confidence)
    down = ~visible & (decoded > min_confidence)
    q[up] += 1
    q[down] -= 1
    return q


def expand_confidences(q: np.ndarray) -> np.ndarray:
    """The float32 confidences of :func:`compact_confidences`' bytes."""
    return np.asarray(q).astype(np.float32) / np.float32(255.0)


# -- writing -------------------------------------------------------------------------------------

def _raw(array: np.ndarray):
    """An array's bytes in memory order, without a copy (a memoryview cannot cast an empty array)."""
    return memoryview(np.ascontiguousarray(array)).cast("B") if array.size else b""


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(_raw(array)).hexdigest()


def _layout(columns: dict[str, np.ndarray]) -> tuple[dict, int]:
    layout, offset = {}, 0
    for name in COLUMN_DTYPES:
        array = columns[name]
        offset = -(-offset // ALIGN) * ALIGN
        layout[name] = {"offset": offset, "dtype": array.dtype.str, "shape": list(array.shape),
                        "sha256": _digest(array)}
        offset += array.nbytes
    return layout, offset


class SegmentWriter:
    """A segment file being written: locked under its temporary name until its writer closes it
    (``name``, ``rows``, ``bytes`` and ``layout`` are what the catalog records of it)."""

    def __init__(self, root: Path, columns: dict[str, np.ndarray]):
        self.root, self.name = root, uuid.uuid4().hex + SEGMENT_SUFFIX
        columns = dict(columns, vectors=kernels.to_tiles(columns["vectors"], kernels.TILE_ROWS))
        self.layout, self.bytes = _layout(columns)
        self.rows = int(columns["frames"].shape[0])
        folder = root / SEGMENTS
        self.partial = folder / (PARTIAL_PREFIX + self.name)
        self.fd = os.open(self.partial, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            with os.fdopen(os.dup(self.fd), "wb") as out:
                for name, entry in self.layout.items():
                    out.seek(entry["offset"])
                    out.write(_raw(columns[name]))
                out.truncate(self.bytes)
                out.flush()
                os.fsync(out.fileno())
            group_shared(self.partial)
            os.rename(self.partial, folder / self.name)
            _fsync_dir(folder)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        for path in (self.partial, self.root / SEGMENTS / self.name):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.close()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_orphans(root: Path, db) -> list[str]:
    """Remove segment files the catalog does not name whose writer is gone (its lock is free, and
    the file is older than ORPHAN_AGE_S, so not one whose writer has yet to lock it): what a writer
    killed before its commit, or a compaction after its commit, left behind."""
    removed = []
    named = {row[0] for row in db.execute("SELECT file FROM segments")}
    for path in (root / SEGMENTS).iterdir():
        name = path.name[len(PARTIAL_PREFIX):] if path.name.startswith(PARTIAL_PREFIX) else path.name
        if not name.endswith(SEGMENT_SUFFIX) or name in named:
            continue
        try:
            if time.time() - os.lstat(path).st_mtime < ORPHAN_AGE_S:
                continue
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # its writer is alive
        try:  # the writer may have committed and let go between our read of the catalog and the lock
            if not db.execute("SELECT 1 FROM segments WHERE file = ?", (name,)).fetchone():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                removed.append(path.name)
        finally:
            os.close(fd)
    return removed


# -- reading -------------------------------------------------------------------------------------

class MappedSegments:
    """The process's mapped segment columns (each column of a segment file its own mapping: a
    query maps what it reads, e.g. the vectors of every segment and the pixels of a few),
    least recently used unmapped first beyond a byte budget, and the (file, column) pairs whose
    checksum it has verified."""

    def __init__(self, budget: int):
        self.budget = budget
        self.maps: OrderedDict = OrderedDict()  # (path, offset, length) -> (identity, buffer)
        self.verified: set = set()
        self.lock = threading.Lock()

    def get(self, path: Path, expected_bytes: int, offset: int = 0, length: int | None = None):
        """``(identity, buffer)``: bytes ``[offset, offset + length)`` of the segment file at
        ``path`` (default: all of it), mapped, the file checked (a regular file of
        ``expected_bytes``) when it is mapped."""
        length = expected_bytes - offset if length is None else length
        with self.lock:
            key = (str(path), offset, length)
            entry = self.maps.get(key)
            if entry is not None:
                identity, buffer = entry
                try:
                    if _identity(os.stat(path)) == identity:
                        self.maps.move_to_end(key)
                        return identity, buffer
                except OSError:
                    pass
                del self.maps[key]
            identity, buffer = map_file(path, expected_bytes, offset, length)
            self.maps[key] = (identity, buffer)
            total = sum(len(b) for _, b in self.maps.values())
            while total > self.budget and len(self.maps) > 1:
                _, (_, old) = self.maps.popitem(last=False)
                total -= len(old)
            return identity, buffer


def _identity(info: os.stat_result) -> tuple:
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def file_identity(path: Path, expected_bytes: int) -> tuple:
    """A segment file's identity, once it is checked to be a regular file of ``expected_bytes``
    (never opened: a FIFO in its place cannot hang the reader)."""
    info = check_regular(path)
    if info.st_size != expected_bytes:
        raise ArchiveError(f"{path}: {info.st_size} bytes where the catalog says {expected_bytes}: "
                           f"truncated or damaged (run `posescore archive verify`)")
    return _identity(info)


def map_file(path: Path, expected_bytes: int, offset: int = 0, length: int | None = None):
    """``(identity, buffer)``: bytes ``[offset, offset + length)`` of a regular file of
    ``expected_bytes`` (default: all of it), mapped read-only."""
    identity = file_identity(path, expected_bytes)
    length = expected_bytes - offset if length is None else length
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or _identity(opened) != identity:
            raise ArchiveError(f"{path}: changed while being opened")
        if length <= 0:
            buffer = b""
        else:
            start = offset - offset % mmap.ALLOCATIONGRANULARITY  # mmap's offsets are page-aligned
            mapping = mmap.mmap(fd, length + offset - start, access=mmap.ACCESS_READ, offset=start)
            buffer = memoryview(mapping)[offset - start:]
    except PermissionError as err:
        raise ArchiveError(f"{path}: not readable ({err.strerror})") from None
    finally:
        os.close(fd)
    return identity, buffer


MAPPED = MappedSegments(MAPPED_BYTES)


@dataclass
class SegmentInfo:
    """A segment as the catalog describes it, and its live videos (sorted by first row)."""

    id: int
    file: str
    rows: int
    bytes: int
    layout: dict
    videos: list[dict]

    @property
    def live_rows(self) -> int:
        return sum(v["poses"] for v in self.videos)


class MappedSegment:
    """A segment file for reading: :meth:`column` maps a column (through :data:`MAPPED`, or from
    ``buffer``, the whole file mapped) and checks it against its SHA-256 the first time this
    process reads it."""

    def __init__(self, path: Path, info: SegmentInfo, buffer, identity, verify: bool = True):
        self.path, self.info, self.buffer, self.identity, self.verify = path, info, buffer, identity, verify
        self._columns: dict[str, np.ndarray] = {}

    def column(self, name: str) -> np.ndarray:
        array = self._columns.get(name)
        if array is None:
            array = self._columns[name] = self._column(name)
        return array

    def _column(self, name: str) -> np.ndarray:
        entry = self.info.layout.get(name)
        if entry is None:
            raise ArchiveError(f"{self.path}: the catalog has no column {name!r} for it")
        dtype, shape = np.dtype(entry["dtype"]), tuple(entry["shape"])
        expected = (self.info.rows,) + COLUMN_WIDTHS[name]
        if name == "vectors" and len(shape) == 3:
            expected = (-(-self.info.rows // kernels.TILE_ROWS), 2 * NUM_KEYPOINTS, kernels.TILE_ROWS)
        if dtype != np.dtype(COLUMN_DTYPES[name]) or shape != expected:
            raise ArchiveError(f"{self.path}: column {name} is {dtype}{list(shape)} in the catalog, "
                               f"expected {np.dtype(COLUMN_DTYPES[name])}{list(expected)}")
        count = int(np.prod(shape))
        nbytes = count * dtype.itemsize
        if entry["offset"] + nbytes > self.info.bytes:
            raise ArchiveError(f"{self.path}: column {name} runs past the end of the file")
        if self.buffer is not None:
            array = np.frombuffer(self.buffer, dtype, count, entry["offset"]).reshape(shape)
        else:
            identity, buffer = MAPPED.get(self.path, self.info.bytes, entry["offset"], nbytes)
            if identity != self.identity:
                raise ArchiveError(f"{self.path}: replaced during this search; search again")
            array = np.frombuffer(buffer, dtype, count).reshape(shape)
        key = (self.identity, name)
        if self.verify and key not in MAPPED.verified:
            self.check(name, array)
            MAPPED.verified.add(key)
        return array

    def check(self, name: str, array: np.ndarray) -> None:
        """Raise ArchiveError naming the file unless column ``name`` (``array``) matches its SHA-256."""
        if _digest(array) != self.info.layout[name]["sha256"]:
            raise ArchiveError(f"{self.path}: column {name} does not match its checksum: the segment is "
                               f"corrupted (run `posescore archive verify`)")

    def rows(self, name: str, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)`` of column ``name`` (``COLUMN_WIDTHS``' shape a row): a view of the
        mapped file, or for tiled vectors a copy."""
        array = self.column(name)
        if name == "vectors" and array.ndim == 3:
            return kernels.from_tiles(array, lo, hi)
        return array[lo:hi]

    def poses(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)`` as float32 poses ``[n, 17, 3]`` (pixels, confidence)."""
        out = np.empty((hi - lo, NUM_KEYPOINTS, 3), np.float32)
        out[..., :2] = self.column("xy")[lo:hi]
        out[..., 2] = expand_confidences(self.column("conf")[lo:hi])
        return out
