"""The keypoint archive (format 2): every detected pose of many videos, on disk, searched in place.

Layout of an archive folder::

    catalog.sqlite          the catalog (SQLite, WAL): videos, segments, checksums
    segments/<uuid>.seg     immutable segment files: the pose columns of one or more videos

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
free. So several processes may add to one archive at once, and a killed one leaves the archive as
it was before its last transaction. Removing a video is one transaction (its rows stay in their
segment, unread, until ``compact`` rewrites it).

Readers open the catalog (no pass over the poses) and memory-map segments as they search them,
through a process-wide cache of mapped segments within a byte budget. Every segment file is checked
when mapped (a plain name inside ``segments/``, a regular file, not a symlink, the catalog's size)
and each column against its SHA-256 the first time this process reads it: a damaged archive gives an
ArchiveError naming the file, never a wrong answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import mmap
import os
import shutil
import sqlite3
import stat
import threading
import time
import urllib.parse
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posescore import kernels
from posescore.kernels import DEFAULT_MIN_CONFIDENCE
from posescore.kernels.skeleton import NUM_KEYPOINTS

#: Environment variable the search model reads (set by the embedded server): archives may only be
#: loaded from under this folder.
ARCHIVE_ROOT_ENV = "POSESCORE_ARCHIVE_ROOT"
FORMAT = "posescore-archive"
VERSION = 2
CATALOG = "catalog.sqlite"
SEGMENTS = "segments"
SEGMENT_SUFFIX = ".seg"
PARTIAL_PREFIX = ".partial-"
NORMALIZATION = "bbox"
#: Format 1: a JSON manifest and one folder of .npy columns per video (``posescore archive upgrade``).
V1_MANIFEST = "manifest.json"
V1_COLUMNS = ("poses", "frames", "tracks", "times")
#: ``compact`` merges segments with fewer live poses than this into segments of about this size.
SEGMENT_POSES = 4_000_000
#: Bytes of segment files one process keeps mapped at once (POSESCORE_MAPPED_BYTES overrides):
#: a larger archive is searched segment by segment, mapping and unmapping in turn.
MAPPED_BYTES = int(os.environ.get("POSESCORE_MAPPED_BYTES", 16 << 30))
#: A segment file the catalog does not name is removed once this old (seconds) and unlocked.
ORPHAN_AGE_S = 10.0
#: Seconds a writer waits for another one's transaction.
BUSY_TIMEOUT_S = 60.0
ALIGN = 64
COLUMN_DTYPES = {"vectors": np.float16, "xy": np.float32, "conf": np.uint8, "frames": np.int32,
                 "tracks": np.int32, "times": np.float32}
COLUMN_WIDTHS = {"vectors": (2 * NUM_KEYPOINTS,), "xy": (NUM_KEYPOINTS, 2), "conf": (NUM_KEYPOINTS,),
                 "frames": (), "tracks": (), "times": ()}
#: What the catalog keeps of each video, besides its place in a segment.
VIDEO_FIELDS = ("sha256", "name", "path", "fps", "width", "height", "size", "frame_count", "poses", "duration",
                "indexed")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS segments (
    id INTEGER PRIMARY KEY, file TEXT NOT NULL UNIQUE, rows INTEGER NOT NULL, bytes INTEGER NOT NULL,
    layout TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS videos (
    id INTEGER PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, name TEXT NOT NULL, path TEXT, fps REAL,
    width INTEGER, height INTEGER, size INTEGER, frame_count INTEGER, poses INTEGER NOT NULL,
    duration REAL, indexed REAL NOT NULL,
    segment INTEGER NOT NULL REFERENCES segments(id), first_row INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS videos_by_segment ON videos (segment, first_row);
"""


class ArchiveError(ValueError):
    """An archive that cannot be read or written; the message names the path and the problem."""


# -- shards ------------------------------------------------------------------------------------

#: The shard of every archive a search server holds (``posescore serve --archive-shard I/N``).
ARCHIVE_SHARD_ENV = "POSESCORE_ARCHIVE_SHARD"


def parse_shard(text: "str | tuple[int, int] | None") -> tuple[int, int] | None:
    """A shard ``"I/N"`` (or ``(I, N)``) as ``(I, N)`` with ``0 <= I < N``; None for the whole archive."""
    if text is None or text == "":
        return None
    try:
        index, count = (int(part) for part in (text.split("/") if isinstance(text, str) else text))
    except (TypeError, ValueError):
        raise ArchiveError(f"shard: expected 'I/N' (e.g. '0/3'), got {text!r}") from None
    if not 0 <= index < count:
        raise ArchiveError(f"shard: expected 'I/N' with 0 <= I < N, got {text!r}")
    return index, count


def in_shard(segment_id: int, shard: tuple[int, int] | None) -> bool:
    """Whether a segment belongs to ``shard``: segment ids modulo N (a segment keeps its shard
    when others are added)."""
    return shard is None or segment_id % shard[1] == shard[0]


# -- the catalog ---------------------------------------------------------------------------------

def _connect(root: Path, write: bool, upgrading: bool = False) -> sqlite3.Connection:
    path = root / CATALOG
    if (root / V1_MANIFEST).exists() and not upgrading:
        if path.exists():
            raise ArchiveError(f"{root}: an upgrade from format 1 did not finish; run `posescore archive upgrade "
                               f"{root}` again")
        raise ArchiveError(f"{root}: a format-1 posescore archive; run `posescore archive upgrade {root}` "
                           f"to migrate it to format {VERSION}")
    if not path.exists():
        raise ArchiveError(f"{root}: not a posescore archive (no {CATALOG})")
    _check_regular(path)
    try:
        if write or os.access(root, os.W_OK):
            db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        else:
            db = _read_only(path)
        db.row_factory = sqlite3.Row
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    except sqlite3.DatabaseError as err:
        raise ArchiveError(f"{path}: unreadable catalog ({err})") from None
    if meta.get("format") != FORMAT or meta.get("version") != str(VERSION):
        raise ArchiveError(f"{path}: expected {FORMAT} version {VERSION}, got {meta.get('format')!r} "
                           f"version {meta.get('version')!r}")
    return db



def _read_only(path: Path) -> sqlite3.Connection:
    """The catalog for a reader that cannot write the archive's folder (a server running as another
    user of the group). A WAL database opens read-only while a writer holds it open (its -wal and
    -shm files exist); when none does, SQLite cannot make its -shm, and the catalog, fully
    checkpointed, is read as an immutable file."""
    uri = f"file:{urllib.parse.quote(str(path))}?mode=ro"
    if not Path(f"{path}-wal").exists():
        uri += "&immutable=1"
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection):
    """One write transaction: taken at once (no deadlock between writers), rolled back on error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
    db.execute("COMMIT")


def _group_shared(path: Path) -> None:
    """Let the group read what the archive's writer made (a server may run as another user)."""
    with contextlib.suppress(OSError):
        mode = path.stat().st_mode
        os.chmod(path, mode | stat.S_IRGRP | (stat.S_IXGRP if path.is_dir() else 0))


def create_archive(path: str | os.PathLike) -> Path:
    """Create an empty archive at ``path`` (a no-op when one is already there)."""
    root = Path(path)
    if (root / CATALOG).exists() or (root / V1_MANIFEST).exists():
        _connect(root, write=True).close()  # raises for a format-1 archive: upgrade it
        return root
    if root.is_dir() and any(p.name != SEGMENTS and not p.name.startswith(f".{CATALOG}-") for p in root.iterdir()):
        raise ArchiveError(f"{root}: a folder that is not a posescore archive (no {CATALOG}) and not empty: "
                           f"give a new or an empty folder")
    _init_catalog(root)
    return root


def _init_catalog(root: Path) -> None:
    """Write an empty catalog (and ``segments/``) into ``root`` unless one is there. It is made
    under a temporary name and linked into place, so no reader or other writer ever opens a
    catalog without its tables (two processes creating one archive: one catalog wins)."""
    (root / SEGMENTS).mkdir(parents=True, exist_ok=True)
    for folder in (root, root / SEGMENTS):
        _group_shared(folder)
    if (root / CATALOG).exists():
        return
    tmp = root / f".{CATALOG}-{uuid.uuid4().hex}"
    db = sqlite3.connect(tmp, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("BEGIN IMMEDIATE")
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
        for key, value in (("format", FORMAT), ("version", str(VERSION)), ("normalization", NORMALIZATION),
                           ("generation", "0")):
            db.execute("INSERT INTO meta VALUES (?, ?)", (key, value))
        db.execute("COMMIT")
    finally:
        db.close()
    try:
        _group_shared(tmp)
        os.link(tmp, root / CATALOG)  # fails if another process's catalog got there first: keep that one
    except FileExistsError:
        pass
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def generation(path: str | os.PathLike) -> int:
    """A number that changes with every committed change of the archive at ``path``."""
    db = _connect(Path(path), write=False)
    try:
        return int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
    finally:
        db.close()


def list_videos(path: str | os.PathLike) -> list[dict]:
    """The archive's videos in the order they were added: every catalog field, ``id`` the content
    SHA-256 (as ``sha256``), and their segment file."""
    db = _connect(Path(path), write=False)
    try:
        return _videos(db)
    finally:
        db.close()


def _videos(db) -> list[dict]:
    rows = db.execute("SELECT v.*, s.file AS segment_file FROM videos v JOIN segments s ON s.id = v.segment "
                      "ORDER BY v.id").fetchall()
    return [dict(row, id=row["sha256"], video_row=row["id"]) for row in rows]


def archive_info(path: str | os.PathLike) -> dict:
    """Counts and sizes: videos, poses, hours, segments (and their bytes, live and dead rows)."""
    root = Path(path)
    db = _connect(root, write=False)
    try:
        videos = db.execute("SELECT COUNT(*), COALESCE(SUM(poses), 0), COALESCE(SUM(duration), 0) "
                            "FROM videos").fetchone()
        segments = db.execute("SELECT COUNT(*), COALESCE(SUM(rows), 0), COALESCE(SUM(bytes), 0) "
                              "FROM segments").fetchone()
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    finally:
        db.close()
    return {"archive": str(root), "format": meta["format"], "version": int(meta["version"]),
            "normalization": meta["normalization"], "generation": int(meta["generation"]),
            "videos": videos[0], "poses": videos[1], "hours": round(videos[2] / 3600.0, 4),
            "segments": segments[0], "segment_rows": segments[1], "dead_rows": segments[1] - videos[1],
            "bytes": segments[2], "bytes_per_pose": round(segments[2] / segments[1], 1) if segments[1] else None}


# -- segment files -------------------------------------------------------------------------------

def _check_regular(path: Path) -> os.stat_result:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise ArchiveError(f"{path}: missing") from None
    if not stat.S_ISREG(info.st_mode):
        what = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        raise ArchiveError(f"{path}: {what}; an archive holds regular files only")
    return info


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


class _SegmentWriter:
    """A segment file being written: locked under its temporary name until its writer closes it."""

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
            _group_shared(self.partial)
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


def _remove_orphans(root: Path, db) -> list[str]:
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


# -- writing -------------------------------------------------------------------------------------

@dataclass
class VideoRows:
    """One video's poses for the archive: ``poses [n, 17, 3]`` pixels, ``frames``, ``times`` (s),
    ``tracks`` (``[n]`` each) and its catalog fields (``sha256`` and ``name`` required)."""

    sha256: str
    name: str
    poses: np.ndarray
    frames: np.ndarray
    times: np.ndarray
    tracks: np.ndarray | None = None
    info: dict = field(default_factory=dict)


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


def _video_columns(video: VideoRows) -> dict[str, np.ndarray]:
    poses = np.ascontiguousarray(video.poses, dtype=np.float32)
    if poses.ndim != 3 or poses.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ArchiveError(f"{video.name}: poses: expected [n, 17, 3], got {list(poses.shape)}")
    if not np.isfinite(poses).all():
        raise ArchiveError(f"{video.name}: poses: NaN or infinite values; mark missing keypoints with confidence 0")
    if np.abs(poses[..., :2]).max(initial=0) > 1e7:
        raise ArchiveError(f"{video.name}: poses: coordinates beyond +-1e7 pixels")
    n = poses.shape[0]
    frames = np.asarray(video.frames).reshape(-1)
    times = np.asarray(video.times, np.float64).reshape(-1)
    tracks = np.full(n, -1, np.int64) if video.tracks is None else np.asarray(video.tracks).reshape(-1)
    for key, values in (("frames", frames), ("times", times), ("tracks", tracks)):
        if values.shape[0] != n:
            raise ArchiveError(f"{video.name}: {key}: expected {n} values (one per pose), got {values.shape[0]}")
    if n and (frames.min() < 0 or frames.max() >= 2**31):
        raise ArchiveError(f"{video.name}: frames: expected indices in [0, 2**31)")
    if n and not np.isfinite(times).all():
        raise ArchiveError(f"{video.name}: times: NaN or infinite values")
    order = np.lexsort((frames, tracks))
    poses = poses[order]
    if n:
        vectors, _ = kernels.normalize(poses, NORMALIZATION)
    else:
        vectors = np.zeros((0, 2 * NUM_KEYPOINTS), np.float32)
    return {"vectors": vectors.astype(np.float16), "xy": np.ascontiguousarray(poses[..., :2]),
            "conf": compact_confidences(poses[..., 2]), "frames": frames[order].astype(np.int32),
            "tracks": tracks[order].astype(np.int32), "times": times[order].astype(np.float32)}


def _catalog_fields(video: VideoRows, rows: int) -> dict:
    info = dict(video.info)
    fields = {"sha256": video.sha256, "name": video.name, "poses": rows,
              "indexed": info.pop("indexed", time.time())}
    for key in ("path", "fps", "width", "height", "size", "frame_count", "duration"):
        fields[key] = info.pop(key, None)
    if info:
        raise ArchiveError(f"{video.name}: unknown catalog fields {sorted(info)}")
    if fields["duration"] is None and rows:
        fields["duration"] = float(np.max(video.times)) if len(video.times) else None
    return fields


def add_videos(path: str | os.PathLike, videos: list[VideoRows]) -> list[bool]:
    """Add videos to the archive as one new segment in one transaction. Returns, per video, True
    when it was added and False when a video of the same ``sha256`` already was (by this call or
    another writer's, which may run at the same time)."""
    return _add_to(create_archive(path), videos)


def _add_to(root: Path, videos: list[VideoRows]) -> list[bool]:
    db = _connect(root, write=True, upgrading=True)
    try:
        known = {row[0] for row in db.execute("SELECT sha256 FROM videos")}
        seen: set = set()
        fresh = []
        for video in videos:
            if video.sha256 not in known and video.sha256 not in seen:
                fresh.append(video)
                seen.add(video.sha256)
        if not fresh:
            return [False] * len(videos)
        parts = [_video_columns(video) for video in fresh]
        columns = {name: np.concatenate([p[name] for p in parts]) for name in COLUMN_DTYPES}
        with contextlib.suppress(sqlite3.Error, OSError):
            _remove_orphans(root, db)
        writer = _SegmentWriter(root, columns)
        try:
            with _transaction(db):
                segment = db.execute(
                    "INSERT INTO segments (file, rows, bytes, layout, created) VALUES (?, ?, ?, ?, ?)",
                    (writer.name, writer.rows, writer.bytes, json.dumps(writer.layout), time.time())).lastrowid
                added, first = set(), 0
                for video, part in zip(fresh, parts):
                    rows = int(part["frames"].shape[0])
                    fields = _catalog_fields(video, rows)
                    cursor = db.execute(
                        f"INSERT OR IGNORE INTO videos ({', '.join(VIDEO_FIELDS)}, segment, first_row) "
                        f"VALUES ({', '.join('?' * (len(VIDEO_FIELDS) + 2))})",
                        [fields[key] for key in VIDEO_FIELDS] + [segment, first])
                    if cursor.rowcount:
                        added.add(video.sha256)
                    first += rows
                if not added:  # another writer committed all of them meanwhile
                    raise _NothingNew
        except _NothingNew:
            writer.discard()
            return [False] * len(videos)
        except BaseException:
            writer.discard()
            raise
        writer.close()
    finally:
        db.close()
    result, counted = [], set()
    for video in videos:
        result.append(video.sha256 in added and video.sha256 not in counted)
        counted.add(video.sha256)
    return result


class _NothingNew(Exception):
    pass


def add_video(archive_dir: str | os.PathLike, video_id: str, name: str, poses, frames, times, tracks=None,
              **info) -> bool:
    """Add one video's poses ``[n, 17, 3]`` (with ``frames [n]``, ``times [n]`` seconds and
    ``tracks [n]``) as one segment; ``info``: catalog fields (path, fps, width, height, size,
    frame_count, duration). False, writing nothing, when ``video_id`` is already in the archive."""
    return add_videos(archive_dir, [VideoRows(video_id, name, poses, frames, times, tracks, info)])[0]


def find_videos(path: str | os.PathLike, selectors: list[str]) -> list[dict]:
    """The videos that ``selectors`` name: each a content id (or a unique prefix of 8 characters or
    more) or a video name; ArchiveError naming a selector that matches nothing or is ambiguous."""
    videos = list_videos(path)
    chosen: dict[str, dict] = {}
    for selector in selectors:
        hits = [v for v in videos if v["sha256"] == selector or v["name"] == selector
                or (len(selector) >= 8 and v["sha256"].startswith(selector))]
        if not hits:
            raise ArchiveError(f"{path}: no video {selector!r} (give a name or a content id)")
        if len(hits) > 1 and not all(v["name"] == selector for v in hits):
            raise ArchiveError(f"{path}: {selector!r} is ambiguous ({len(hits)} videos)")
        for video in hits:
            chosen[video["sha256"]] = video
    return list(chosen.values())


def remove_videos(path: str | os.PathLike, selectors: list[str]) -> list[dict]:
    """Remove the videos ``selectors`` name (:func:`find_videos`) in one transaction; their rows
    stay in their segments, unread, until ``compact``. Returns the removed videos."""
    root = Path(path)
    chosen = find_videos(root, selectors)
    db = _connect(root, write=True)
    try:
        with _transaction(db):
            for video in chosen:
                db.execute("DELETE FROM videos WHERE sha256 = ?", (video["sha256"],))
            emptied = [row[0] for row in db.execute(
                "SELECT file FROM segments WHERE id NOT IN (SELECT DISTINCT segment FROM videos)")]
            db.execute("DELETE FROM segments WHERE id NOT IN (SELECT DISTINCT segment FROM videos)")
    finally:
        db.close()
    for file in emptied:
        with contextlib.suppress(FileNotFoundError):
            (root / SEGMENTS / file).unlink()
    return chosen


def compact(path: str | os.PathLike, segment_poses: int = SEGMENT_POSES) -> dict:
    """Rewrite segments with fewer live poses than ``segment_poses`` (or with removed videos' rows,
    or vectors stored as rows by an older version) into new segments of about that size, in one
    transaction; the old files are removed after it commits (a reader that still maps one keeps
    reading it). Returns before / after counts."""
    root = Path(path)
    archive = open_archive(root)
    before = archive_info(root)

    def stale(s: SegmentInfo) -> bool:
        return s.live_rows < s.rows or len(s.layout["vectors"]["shape"]) == 2

    small = [s for s in archive.segments.values() if s.live_rows < segment_poses or stale(s)]
    if len(small) < 2 and not any(stale(s) for s in small):
        return {"before": before, "after": before, "rewritten": 0, "written": 0}
    groups, current, size = [], [], 0
    for segment in sorted(small, key=lambda s: s.id):
        current.append(segment)
        size += segment.live_rows
        if size >= segment_poses:
            groups.append(current)
            current, size = [], 0
    if current:
        groups.append(current)
    db = _connect(root, write=True)
    writers = []
    try:
        plans = []
        for group in groups:
            columns, moves, first = {name: [] for name in COLUMN_DTYPES}, [], 0
            for segment in group:
                mapped = archive.segment(segment.id)
                for video in segment.videos:
                    lo, hi = video["first_row"], video["first_row"] + video["poses"]
                    for name in COLUMN_DTYPES:
                        columns[name].append(mapped.rows(name, lo, hi))
                    moves.append((video["video_row"], first))
                    first += video["poses"]
            if first == 0:
                plans.append((group, None, []))
                continue
            writer = _SegmentWriter(root, {name: np.concatenate(parts) for name, parts in columns.items()})
            writers.append(writer)
            plans.append((group, writer, moves))
        with _transaction(db):
            for group, writer, moves in plans:
                ids = [s.id for s in group]
                current_rows = db.execute(
                    f"SELECT COUNT(*) FROM videos WHERE segment IN ({','.join('?' * len(ids))})", ids).fetchone()[0]
                if current_rows != len(moves):
                    raise ArchiveError(f"{root}: the archive changed during compaction; run it again")
                if writer is not None:
                    segment = db.execute(
                        "INSERT INTO segments (file, rows, bytes, layout, created) VALUES (?, ?, ?, ?, ?)",
                        (writer.name, writer.rows, writer.bytes, json.dumps(writer.layout), time.time())).lastrowid
                    db.executemany("UPDATE videos SET segment = ?, first_row = ? WHERE id = ?",
                                   [(segment, first, video_row) for video_row, first in moves])
                db.executemany("DELETE FROM segments WHERE id = ?", [(i,) for i in ids])
    except BaseException:
        for writer in writers:
            writer.discard()
        raise
    finally:
        for writer in writers:
            writer.close()
        db.close()
    for group, _, _ in plans:  # committed: the old files are no one's (a reader mapping one keeps it)
        for segment in group:
            with contextlib.suppress(FileNotFoundError):
                (root / SEGMENTS / segment.file).unlink()
    return {"before": before, "after": archive_info(root), "rewritten": sum(len(g) for g, _, _ in plans),
            "written": len(writers)}


# -- reading -------------------------------------------------------------------------------------

class _MappedSegments:
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
            identity, buffer = _map_file(path, expected_bytes, offset, length)
            self.maps[key] = (identity, buffer)
            total = sum(len(b) for _, b in self.maps.values())
            while total > self.budget and len(self.maps) > 1:
                _, (_, old) = self.maps.popitem(last=False)
                total -= len(old)
            return identity, buffer


def _identity(info: os.stat_result) -> tuple:
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def _file_identity(path: Path, expected_bytes: int) -> tuple:
    """A segment file's identity, once it is checked to be a regular file of ``expected_bytes``
    (never opened: a FIFO in its place cannot hang the reader)."""
    info = _check_regular(path)
    if info.st_size != expected_bytes:
        raise ArchiveError(f"{path}: {info.st_size} bytes where the catalog says {expected_bytes}: "
                           f"truncated or damaged (run `posescore archive verify`)")
    return _identity(info)


def _map_file(path: Path, expected_bytes: int, offset: int = 0, length: int | None = None):
    """``(identity, buffer)``: bytes ``[offset, offset + length)`` of a regular file of
    ``expected_bytes`` (default: all of it), mapped read-only."""
    identity = _file_identity(path, expected_bytes)
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


MAPPED = _MappedSegments(MAPPED_BYTES)


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


@dataclass
class Archive:
    """An archive opened for search: its catalog read (videos and segments), segment files mapped
    on use through the process's budget (:data:`MAPPED`)."""

    root: Path
    videos: list[dict]
    segments: dict[int, SegmentInfo]
    generation: int
    paths: dict[int, Path] = field(default_factory=dict, repr=False)  # segment id -> its checked file

    def __len__(self) -> int:
        return sum(v["poses"] for v in self.videos)

    def segment(self, segment_id: int, verify: bool = True) -> MappedSegment:
        info = self.segments[segment_id]
        path = self.paths[segment_id]
        return MappedSegment(path, info, None, _file_identity(path, info.bytes), verify)


def open_archive(path: str | os.PathLike) -> Archive:
    """Open the archive at ``path`` for search: one read of its catalog (no pass over the poses)."""
    root = Path(path)
    db = _connect(root, write=False)
    try:
        db.execute("BEGIN")  # one snapshot of videos, segments and generation
        videos = _videos(db)
        segments = {row["id"]: SegmentInfo(row["id"], row["file"], row["rows"], row["bytes"],
                                           _parse_layout(root, row), [])
                    for row in db.execute("SELECT * FROM segments ORDER BY id")}
        gen = int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
        db.execute("COMMIT")
    except sqlite3.DatabaseError as err:
        raise ArchiveError(f"{root / CATALOG}: unreadable catalog ({err})") from None
    finally:
        db.close()
    for video in videos:
        segment = segments.get(video["segment"])
        if segment is None or video["first_row"] < 0 or video["first_row"] + video["poses"] > segment.rows:
            raise ArchiveError(f"{root / CATALOG}: video {video['name']!r} names rows outside its segment")
        segment.videos.append(video)
    for segment in segments.values():
        segment.videos.sort(key=lambda v: v["first_row"])
    paths = {segment.id: segment_path(root, segment.file) for segment in segments.values()}
    return Archive(root=root, videos=videos, segments=segments, generation=gen, paths=paths)


def _parse_layout(root: Path, row) -> dict:
    try:
        layout = json.loads(row["layout"])
        for name in COLUMN_DTYPES:
            entry = layout[name]
            int(entry["offset"]), np.dtype(entry["dtype"]), list(entry["shape"]), str(entry["sha256"])
    except (ValueError, KeyError, TypeError) as err:
        raise ArchiveError(f"{root / CATALOG}: segment {row['file']!r} has an unreadable layout ({err})") from None
    return layout


def verify(path: str | os.PathLike) -> dict:
    """Check every segment file against the catalog (name, regular file, size, every column's
    SHA-256, read afresh) and the catalog's rows against the segments. Returns ``{"ok", "segments",
    "problems": [{"file", "problem"}]}``; also lists segment files the catalog does not name."""
    root = Path(path)
    archive = open_archive(root)
    problems = []
    for segment in archive.segments.values():
        try:
            file = archive.paths[segment.id]
            identity, buffer = _map_file(file, segment.bytes)
            mapped = MappedSegment(file, segment, buffer, identity, verify=False)
            for name in COLUMN_DTYPES:
                mapped.check(name, mapped.column(name))
        except ArchiveError as err:
            problems.append({"file": str(root / SEGMENTS / segment.file), "problem": str(err)})
    named = {s.file for s in archive.segments.values()}
    strays = sorted(p.name for p in (root / SEGMENTS).iterdir() if p.name not in named)
    return {"archive": str(root), "ok": not problems, "segments": len(archive.segments), "problems": problems,
            "unnamed_files": strays}


# -- format 1 ------------------------------------------------------------------------------------

def upgrade(path: str | os.PathLike) -> dict:
    """Migrate a format-1 archive (``manifest.json`` and ``shards/``) to format 2 in place: its
    poses are written to new segments and named in the catalog (one transaction per SEGMENT_POSES
    poses, the same ids), then the old files are removed. A run killed before the commit leaves the format-1 archive as it was; one
    killed after it is completed by the next run."""
    root = Path(path)
    manifest_path = root / V1_MANIFEST
    if not manifest_path.exists():
        if (root / CATALOG).exists():
            shutil.rmtree(root / "shards", ignore_errors=True)  # left by an upgrade killed at its end
            return {"archive": str(root), "upgraded": 0, "already": True}
        raise ArchiveError(f"{root}: not a posescore archive (no {V1_MANIFEST} or {CATALOG})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as err:
        raise ArchiveError(f"{manifest_path}: unreadable manifest ({err})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != 1:
        raise ArchiveError(f"{manifest_path}: expected {FORMAT} version 1")
    videos = []
    for entry in manifest.get("videos", []):
        shard = (root / os.fsdecode(str(entry["shard"]).encode("utf-8"))).resolve()
        if shard.parent != (root / "shards").resolve():
            raise ArchiveError(f"{manifest_path}: shard {entry['shard']!r} is outside {root / 'shards'}")
        try:
            columns = {key: np.load(shard / f"{key}.npy", allow_pickle=False) for key in V1_COLUMNS}
        except (OSError, ValueError) as err:
            raise ArchiveError(f"{shard}: unreadable shard ({err})") from None
        fps = entry.get("fps")
        info = {"path": entry.get("source"), "fps": fps, "width": entry.get("width"),
                "height": entry.get("height"), "frame_count": entry.get("frame_count")}
        if fps and entry.get("frame_count"):
            info["duration"] = entry["frame_count"] / fps
        videos.append(VideoRows(entry["id"], entry["name"], columns["poses"], columns["frames"], columns["times"],
                                columns["tracks"], {k: v for k, v in info.items() if v is not None}))
    _init_catalog(root)
    batch, size, added = [], 0, 0
    for video in videos:
        batch.append(video)
        size += len(video.poses)
        if size >= SEGMENT_POSES:
            added += sum(_add_to(root, batch))
            batch, size = [], 0
    if batch:
        added += sum(_add_to(root, batch))
    manifest_path.unlink()  # from here on the folder is a format-2 archive
    shutil.rmtree(root / "shards", ignore_errors=True)
    return {"archive": str(root), "upgraded": added, "videos": len(videos), "already": False}
