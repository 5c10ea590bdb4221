"""The archive's catalog (SQLite): folder layout and constants, connect, transactions, create, list, info.

Layout of an archive folder::

    catalog.sqlite          the catalog (SQLite, WAL): videos, segments, checksums
    segments/<uuid>.seg     immutable segment files: the pose columns of one or more videos
                            (engine.archive.segments)

Every change is one transaction (``BEGIN IMMEDIATE``, :func:`transaction`), which also bumps the
catalog's ``generation``; readers open the catalog (no pass over the poses) and take one snapshot
of it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import urllib.parse
import uuid
from pathlib import Path

from posescore.engine.archive.shard import ArchiveError

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
#: Seconds a writer waits for another one's transaction.
BUSY_TIMEOUT_S = 60.0
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


def connect(root: Path, write: bool, upgrading: bool = False) -> sqlite3.Connection:
    """The catalog of the archive at ``root``, checked to be this format and version (rows as
    ``sqlite3.Row``, autocommit: write through :func:`transaction`). ``upgrading``: a format-1
    manifest beside it is allowed (``upgrade`` writing the catalog)."""
    path = root / CATALOG
    if (root / V1_MANIFEST).exists() and not upgrading:
        if path.exists():
            raise ArchiveError(f"{root}: an upgrade from format 1 did not finish; run `posescore archive upgrade "
                               f"{root}` again")
        raise ArchiveError(f"{root}: a format-1 posescore archive; run `posescore archive upgrade {root}` "
                           f"to migrate it to format {VERSION}")
    if not path.exists():
        raise ArchiveError(f"{root}: not a posescore archive (no {CATALOG})")
    check_regular(path)
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
def transaction(db: sqlite3.Connection):
    """One write transaction: taken at once (no deadlock between writers), rolled back on error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'generation'")
    db.execute("COMMIT")


def check_regular(path: Path) -> os.stat_result:
    """``path``'s ``lstat``, once it is checked to be a regular file (not a symlink); ArchiveError
    naming it otherwise."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise ArchiveError(f"{path}: missing") from None
    if not stat.S_ISREG(info.st_mode):
        what = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        raise ArchiveError(f"{path}: {what}; an archive holds regular files only")
    return info


def group_shared(path: Path) -> None:
    """Let the group read what the archive's writer made (a server may run as another user)."""
    with contextlib.suppress(OSError):
        mode = path.stat().st_mode
        os.chmod(path, mode | stat.S_IRGRP | (stat.S_IXGRP if path.is_dir() else 0))


def create_archive(path: str | os.PathLike) -> Path:
    """Create an empty archive at ``path`` (a no-op when one is already there)."""
    root = Path(path)
    if (root / CATALOG).exists() or (root / V1_MANIFEST).exists():
        connect(root, write=True).close()  # raises for a format-1 archive: upgrade it
        return root
    if root.is_dir() and any(p.name != SEGMENTS and not p.name.startswith(f".{CATALOG}-") for p in root.iterdir()):
        raise ArchiveError(f"{root}: a folder that is not a posescore archive (no {CATALOG}) and not empty: "
                           f"give a new or an empty folder")
    init_catalog(root)
    return root


def init_catalog(root: Path) -> None:
    """Write an empty catalog (and ``segments/``) into ``root`` unless one is there. It is made
    under a temporary name and linked into place, so no reader or other writer ever opens a
    catalog without its tables (two processes creating one archive: one catalog wins)."""
    (root / SEGMENTS).mkdir(parents=True, exist_ok=True)
    for folder in (root, root / SEGMENTS):
        group_shared(folder)
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
        group_shared(tmp)
        os.link(tmp, root / CATALOG)  # fails if another process's catalog got there first: keep that one
    except FileExistsError:
        pass
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def generation(path: str | os.PathLike) -> int:
    """A number that changes with every committed change of the archive at ``path``."""
    db = connect(Path(path), write=False)
    try:
        return int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
    finally:
        db.close()


def list_videos(path: str | os.PathLike) -> list[dict]:
    """The archive's videos in the order they were added: every catalog field, ``id`` the content
    SHA-256 (as ``sha256``), and their segment file."""
    db = connect(Path(path), write=False)
    try:
        return catalog_videos(db)
    finally:
        db.close()


def catalog_videos(db: sqlite3.Connection) -> list[dict]:
    """The videos of an open catalog ``db``, as :func:`list_videos` gives them (``video_row``: the
    catalog's row id)."""
    rows = db.execute("SELECT v.*, s.file AS segment_file FROM videos v JOIN segments s ON s.id = v.segment "
                      "ORDER BY v.id").fetchall()
    return [dict(row, id=row["sha256"], video_row=row["id"]) for row in rows]


def archive_info(path: str | os.PathLike) -> dict:
    """Counts and sizes: videos, poses, hours, segments (and their bytes, live and dead rows)."""
    root = Path(path)
    db = connect(root, write=False)
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
