"""ArchiveError, the search server's environment variables and shards: the standard library only.

The server imports this module to check and pass on ``--archive-root`` / ``--archive-shard``
without loading NumPy, SQLite or the kernels; every other module of the archive builds on it.
"""

from __future__ import annotations

#: Environment variable the search model reads (set by the embedded server): archives may only be
#: loaded from under this folder.
ARCHIVE_ROOT_ENV = "POSESCORE_ARCHIVE_ROOT"
#: The shard of every archive a search server holds (``posescore serve --archive-shard I/N``).
ARCHIVE_SHARD_ENV = "POSESCORE_ARCHIVE_SHARD"


class ArchiveError(ValueError):
    """An archive that cannot be read or written; the message names the path and the problem."""


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


def shard_text(shard: tuple[int, int] | None) -> str:
    """A shard as ``"I/N"``; ``""`` for the whole archive."""
    return "" if shard is None else f"{shard[0]}/{shard[1]}"


def in_shard(segment_id: int, shard: tuple[int, int] | None) -> bool:
    """Whether a segment belongs to ``shard``: segment ids modulo N (a segment keeps its shard
    when others are added)."""
    return shard is None or segment_id % shard[1] == shard[0]
