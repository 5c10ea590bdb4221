"""The keypoint archive: every detected pose of many videos, on disk, searchable.

Layout of an archive folder::

    manifest.json              {"format": "posescore-archive", "version": 1, "videos": [...]}
    shards/<video id>/         one append-only shard per video, written once
        poses.npy    float32 [n, 17, 3]   pixel keypoints (x, y, confidence)
        vectors.npy  float32 [n, 34]      kernels.normalize(poses, "bbox")
        weights.npy  float32 [n, 17]
        frames.npy   int64   [n]          frame index in the video
        tracks.npy   int32   [n]          person / track id within the video (-1: unknown)
        times.npy    float32 [n]          seconds from the start of the video

A shard is written under a temporary name and renamed into place, then the manifest is replaced
atomically: a killed writer leaves the archive as it was before that video. Videos are keyed by
the SHA-256 of their content, so adding the same video twice does nothing. Loading memory-maps the
shards (no JSON per pose).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import kernels
from kernels.skeleton import NUM_KEYPOINTS

#: Environment variable the search model reads (set by the embedded server): archives may only be
#: loaded from under this folder.
ARCHIVE_ROOT_ENV = "POSESCORE_ARCHIVE_ROOT"
FORMAT = "posescore-archive"
VERSION = 1
MANIFEST = "manifest.json"
NORMALIZATION = "bbox"
_COLUMNS = ("poses", "vectors", "weights", "frames", "tracks", "times")


class ArchiveError(ValueError):
    """An archive that cannot be read or written; the message names the path and the problem."""


def _read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not path.exists():
        raise ArchiveError(f"{root}: not a posescore archive (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as err:
        raise ArchiveError(f"{path}: unreadable manifest ({err})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ArchiveError(f"{path}: expected {FORMAT} version {VERSION}, got "
                           f"{manifest.get('format')!r} version {manifest.get('version')!r}")
    return manifest


def load_manifest(path: str | Path) -> dict:
    """The archive's manifest (raises ArchiveError when ``path`` is not an archive)."""
    return _read_manifest(Path(path))


def _write_manifest(root: Path, manifest: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".manifest-", suffix=".json")
    with os.fdopen(fd, "w") as out:
        json.dump(manifest, out, indent=1)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, root / MANIFEST)


def create_archive(path: str | Path) -> Path:
    """Create an empty archive at ``path`` (a no-op when one is already there)."""
    root = Path(path)
    if (root / MANIFEST).exists():
        _read_manifest(root)
        return root
    if root.is_dir() and any(root.iterdir()):
        raise ArchiveError(f"{root}: a folder that is not a posescore archive (no {MANIFEST}) and not empty: "
                           f"give a new or an empty folder")
    (root / "shards").mkdir(parents=True, exist_ok=True)
    _write_manifest(root, {"format": FORMAT, "version": VERSION, "normalization": NORMALIZATION,
                           "videos": []})
    return root


def add_video(path: str | Path, video_id: str, name: str, poses, frames, times, tracks=None,
              **info) -> bool:
    """Append one video's poses ``[n, 17, 3]`` (with ``frames [n]``, ``times [n]`` seconds and
    ``tracks [n]``) to the archive as one shard; ``info`` (fps, width, height, ...) goes into the
    manifest. Returns False, writing nothing, when ``video_id`` is already in the archive.
    """
    root = create_archive(path)
    manifest = _read_manifest(root)
    if any(video["id"] == video_id for video in manifest["videos"]):
        return False
    poses = np.ascontiguousarray(poses, dtype=np.float32)
    n = poses.shape[0]
    if poses.ndim != 3 or poses.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ArchiveError(f"poses: expected [n, 17, 3], got {list(poses.shape)}")
    if not np.isfinite(poses).all():
        raise ArchiveError("poses: NaN or infinite values; mark missing keypoints with confidence 0")
    columns = {
        "poses": poses,
        "frames": np.asarray(frames, np.int64).reshape(-1),
        "times": np.asarray(times, np.float32).reshape(-1),
        "tracks": np.full(n, -1, np.int32) if tracks is None else np.asarray(tracks, np.int32).reshape(-1),
    }
    for key in ("frames", "times", "tracks"):
        if columns[key].shape[0] != n:
            raise ArchiveError(f"{key}: expected {n} values (one per pose), got {columns[key].shape[0]}")
    if n:
        columns["vectors"], columns["weights"] = kernels.normalize(poses, NORMALIZATION)
    else:
        columns["vectors"] = np.zeros((0, 2 * NUM_KEYPOINTS), np.float32)
        columns["weights"] = np.zeros((0, NUM_KEYPOINTS), np.float32)
    shard = root / "shards" / video_id
    # Leftovers of a writer killed mid-shard (one writer at a time is assumed).
    for stale in (root / "shards").glob(".partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=root / "shards", prefix=".partial-"))
    try:
        for key in _COLUMNS:
            np.save(tmp / f"{key}.npy", columns[key])
        shutil.rmtree(shard, ignore_errors=True)  # a leftover from a run killed before its manifest
        os.replace(tmp, shard)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest["videos"].append({"id": video_id, "name": name, "poses": n,
                               "shard": f"shards/{video_id}", **info})
    _write_manifest(root, manifest)
    return True


@dataclass
class Archive:
    """An archive loaded for search: all shards' columns concatenated (``video_index`` maps each
    pose to ``videos``)."""

    root: Path
    videos: list[dict]
    vectors: np.ndarray
    weights: np.ndarray
    video_index: np.ndarray
    frames: np.ndarray
    tracks: np.ndarray
    times: np.ndarray
    mtime: float = 0.0
    _tracks: list | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def sequences(self) -> list[tuple[np.ndarray, int]]:
        """Pose indices of each (video, track) in frame order, and its video index."""
        if self._tracks is None:
            order = np.lexsort((self.frames, self.tracks, self.video_index))
            keys = np.stack([self.video_index[order], self.tracks[order]], 1)
            cuts = np.flatnonzero((keys[1:] != keys[:-1]).any(axis=1)) + 1
            self._tracks = [(idx, int(self.video_index[idx[0]])) for idx in np.split(order, cuts) if len(idx)]
        return self._tracks


def load_archive(path: str | Path) -> Archive:
    """Load every shard of the archive at ``path`` (memory-mapped, then concatenated)."""
    root = Path(path)
    manifest = _read_manifest(root)
    parts = {key: [] for key in _COLUMNS if key != "poses"}
    video_index = []
    for number, video in enumerate(manifest["videos"]):
        shard = root / _path_of(video["shard"])
        try:
            loaded = {key: np.load(shard / f"{key}.npy", mmap_mode="r") for key in parts}
        except (OSError, ValueError) as err:
            raise ArchiveError(f"{shard}: unreadable shard ({err})") from None
        for key, array in loaded.items():
            parts[key].append(array)
        video_index.append(np.full(loaded["frames"].shape[0], number, np.int32))

    def joined(key, dtype, width=None):
        arrays = parts[key] if key != "video_index" else video_index
        if not arrays:
            return np.zeros((0,) if width is None else (0, width), dtype)
        return np.ascontiguousarray(np.concatenate(arrays), dtype=dtype)

    return Archive(root=root, videos=manifest["videos"], vectors=joined("vectors", np.float32, 2 * NUM_KEYPOINTS),
                   weights=joined("weights", np.float32, NUM_KEYPOINTS), video_index=joined("video_index", np.int32),
                   frames=joined("frames", np.int64), tracks=joined("tracks", np.int32),
                   times=joined("times", np.float32), mtime=(root / MANIFEST).stat().st_mtime)


def _path_of(text: str) -> str:
    """A path written in the manifest (UTF-8 text) as this process's file system takes it: the
    same string under a UTF-8 locale, surrogate escapes under an ASCII one (the Triton python
    stub's embedded interpreter can run with one)."""
    return os.fsdecode(text.encode("utf-8"))


def search_archive(archive: Archive, query_poses, k: int = 10) -> list[dict]:
    """The ``k`` best matches of a pose ``[17, 3]`` / ``[1, 17, 3]`` or a movement ``[M, 17, 3]``.

    A pose: exact top-k by inner product of the normalized vectors over every pose of the archive
    (``kernels.search_topk``, 4k candidates), re-scored with ``kernels.pose_scores`` (cosine over
    co-visible keypoints) and sorted. A movement: ``kernels.subsequence_dtw`` in every (video,
    track) sequence; a match's score maps its RMS per-frame distance like ``dtw_score``.
    Each match: ``{"video": index, "start_frame", "end_frame", "start_time", "end_time", "track",
    "score"}`` (end inclusive), best first.
    """
    query = np.asarray(query_poses, np.float32).reshape(-1, NUM_KEYPOINTS, 3)
    q_vec, q_w = kernels.normalize(query)
    if not bool((q_w > 0).any(axis=-1).all()):
        raise ArchiveError("query: a query pose has no keypoint above the confidence threshold")
    if len(archive) == 0:
        return []
    if query.shape[0] == 1:
        candidates = max(4 * k, 32)
        _, idx = kernels.search_topk(q_vec, archive.vectors, candidates, "ip")
        idx = idx[0][idx[0] >= 0]
        scores = kernels.pose_scores(q_vec[0], q_w[0], archive.vectors[idx], archive.weights[idx])
        best = np.argsort(-scores, kind="stable")[:k]
        return [_match(archive, int(idx[b]), int(idx[b]), float(scores[b])) for b in best]
    matches = []
    for indices, lengths in _sequence_batches(archive):
        costs, starts, ends = kernels.subsequence_dtw(q_vec, archive.vectors[indices], k=k,
                                                      series_lengths=lengths)
        rms = np.asarray(costs, np.float64) * np.sqrt(query.shape[0])
        for score, s, e in zip(kernels.score_from_distance(rms, "cosine"), starts, ends):
            matches.append(_match(archive, int(indices[s]), int(indices[e - 1]), float(score)))
    matches.sort(key=lambda m: -m["score"])
    return matches[:k]


#: Poses per subsequence_dtw call in a movement search: every track in few calls (a call per
#: track cost ~0.2 ms of overhead each), with a bounded copy of the vectors (36 MB).
SEARCH_BATCH_POSES = 262_144


def _sequence_batches(archive: Archive):
    """``(pose indices, series lengths)`` of consecutive (video, track) sequences of two poses or
    more, about SEARCH_BATCH_POSES poses a batch: the k best of each batch together hold the k
    best of the archive, since no match spans two sequences."""
    batch, lengths, size = [], [], 0
    for indices, _ in archive.sequences():
        if len(indices) < 2:
            continue
        batch.append(indices)
        lengths.append(len(indices))
        size += len(indices)
        if size >= SEARCH_BATCH_POSES:
            yield np.concatenate(batch), np.asarray(lengths, np.int64)
            batch, lengths, size = [], [], 0
    if batch:
        yield np.concatenate(batch), np.asarray(lengths, np.int64)


def _match(archive: Archive, first: int, last: int, score: float) -> dict:
    return {"video": int(archive.video_index[first]), "start_frame": int(archive.frames[first]),
            "end_frame": int(archive.frames[last]), "start_time": float(archive.times[first]),
            "end_time": float(archive.times[last]), "track": int(archive.tracks[first]), "score": score}
