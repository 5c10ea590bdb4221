"""Keeping an archive: finding and removing videos, compacting segments, verifying files, upgrading format 1.

Removing a video is one transaction (its rows stay in their segment, unread, until
:func:`compact` rewrites it); compaction writes new segments and swaps them in by one
transaction, removing the old files after it commits (a reader that still maps one keeps it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from posescore.engine.archive.catalog import (CATALOG, FORMAT, SEGMENTS, V1_COLUMNS, V1_MANIFEST, archive_info, connect,
                                              init_catalog, list_videos, transaction)
from posescore.engine.archive.ingest import VideoRows, write_videos
from posescore.engine.archive.reader import open_archive
from posescore.engine.archive.segments import COLUMN_DTYPES, MappedSegment, SegmentInfo, SegmentWriter, map_file
from posescore.engine.archive.shard import ArchiveError

#: ``compact`` merges segments with fewer live poses than this into segments of about this size.
SEGMENT_POSES = 4_000_000


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
    db = connect(root, write=True)
    try:
        with transaction(db):
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
    db = connect(root, write=True)
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
            writer = SegmentWriter(root, {name: np.concatenate(parts) for name, parts in columns.items()})
            writers.append(writer)
            plans.append((group, writer, moves))
        with transaction(db):
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
            identity, buffer = map_file(file, segment.bytes)
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
    poses, the same ids), then the old files are removed. A run killed before the commit leaves
    the format-1 archive as it was; one killed after it is completed by the next run."""
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
    init_catalog(root)
    batch, size, added = [], 0, 0
    for video in videos:
        batch.append(video)
        size += len(video.poses)
        if size >= SEGMENT_POSES:
            added += sum(write_videos(root, batch))
            batch, size = [], 0
    if batch:
        added += sum(write_videos(root, batch))
    manifest_path.unlink()  # from here on the folder is a format-2 archive
    shutil.rmtree(root / "shards", ignore_errors=True)
    return {"archive": str(root), "upgraded": added, "videos": len(videos), "already": False}
