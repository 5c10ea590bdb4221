"""Reading an archive: open_archive reads its catalog once into an Archive, whose segments are mapped on use.

Opening reads one snapshot of the catalog (videos, segments, generation), no pass over the poses;
each segment is checked and memory-mapped when a search reads it (engine.archive.segments).
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posescore.engine.archive.catalog import CATALOG, catalog_videos, connect
from posescore.engine.archive.segments import COLUMN_DTYPES, MappedSegment, SegmentInfo, file_identity, segment_path
from posescore.engine.archive.shard import ArchiveError


@dataclass
class Archive:
    """An archive opened for search: its catalog read (videos and segments), segment files mapped
    on use through the process's budget (``engine.archive.segments.MAPPED``)."""

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
        return MappedSegment(path, info, None, file_identity(path, info.bytes), verify)


def open_archive(path: str | os.PathLike) -> Archive:
    """Open the archive at ``path`` for search: one read of its catalog (no pass over the poses)."""
    root = Path(path)
    db = connect(root, write=False)
    try:
        db.execute("BEGIN")  # one snapshot of videos, segments and generation
        videos = catalog_videos(db)
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
