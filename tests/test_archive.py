"""The archive's storage (format 2): catalog and segments, concurrent and killed writers (real
processes), damaged files, format 1, the archive command."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from posescore import kernels
from posescore.engine import archive as archive_io
from posescore.engine.archive import (ArchiveError, VideoRows, add_video, add_videos, archive_info, compact,
                                      compact_confidences, expand_confidences, list_videos, open_archive, upgrade,
                                      verify)
from posescore.engine.archive import search_archive
from posescore.kernels import DEFAULT_MIN_CONFIDENCE

EXE = str(Path(sys.executable).with_name("posescore"))
V1_FIXTURE = Path(__file__).parent / "data" / "archive-v1"  # written by the format-1 code (git 7fd6ce5)
#: The same poses upgraded to format 2 by the code that stored vectors as rows [n, 34] (git aae68d9).
V2_ROWS_FIXTURE = Path(__file__).parent / "data" / "archive-v2-rows"


def _poses(rng, n, tracks=1):
    steps = rng.normal(0, 3, (n, 17, 3)).astype(np.float32)
    poses = 200 + np.cumsum(steps, axis=0)
    poses[..., 2] = rng.uniform(0.05, 1.0, (n, 17))
    return poses, np.arange(n) // tracks, np.arange(n) % tracks


def _stored(archive, video):
    """A video's rows as stored: poses [n, 17, 3], frames, tracks (file order)."""
    segment = archive.segment(video["segment"])
    lo, hi = video["first_row"], video["first_row"] + video["poses"]
    return segment.poses(lo, hi), segment.column("frames")[lo:hi], segment.column("tracks")[lo:hi]


def test_videos_round_trip_sorted_by_track_and_frame(tmp_path):
    rng = np.random.default_rng(1)
    poses, frames, tracks = _poses(rng, 60, tracks=3)
    add_video(tmp_path, "a" * 32, "a.mp4", poses, frames, frames / 30.0, tracks, fps=30.0, path="/v/a.mp4")
    archive = open_archive(tmp_path)
    (video,) = archive.videos
    assert (video["name"], video["path"], video["fps"], video["poses"]) == ("a.mp4", "/v/a.mp4", 30.0, 60)
    got, got_frames, got_tracks = _stored(archive, video)
    order = np.lexsort((frames, tracks))
    np.testing.assert_array_equal(got_tracks, tracks[order])
    np.testing.assert_array_equal(got_frames, frames[order])
    np.testing.assert_array_equal(got[..., :2], poses[order, :, :2])
    assert np.abs(got[..., 2] - poses[order, :, 2]).max() <= 1 / 255
    # The float16 vectors are the float32 normalization, rounded, stored in tiles of 64 rows.
    segment = archive.segment(video["segment"])
    vectors = segment.rows("vectors", 0, 60)
    want, _ = kernels.normalize(poses[order])
    assert vectors.dtype == np.float16 and np.abs(vectors - want).max() < 1e-3
    tiles = segment.column("vectors")
    assert tiles.shape == (1, 34, 64) and (tiles[0, :, 7] == vectors[7]).all() and not tiles[0, :, 60:].any()
    assert archive_info(tmp_path)["bytes_per_pose"] < 240


def test_compact_confidences_keep_every_visibility_decision():
    t = DEFAULT_MIN_CONFIDENCE
    conf = np.concatenate([np.linspace(0, 1, 100_001, dtype=np.float32),
                           np.float32(t) + np.arange(-50, 51, dtype=np.float32) * np.float32(1e-7), [np.nan]])
    back = expand_confidences(compact_confidences(conf))
    np.testing.assert_array_equal(back.astype(np.float64) > t, np.nan_to_num(conf).astype(np.float64) > t)
    assert np.abs(back - np.nan_to_num(conf)).max() <= 1 / 255 + 1e-7


_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from posescore.engine.archive import add_video
    root, first, count, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    for v in range(first, first + count):
        rng = np.random.default_rng(v)
        n = 50 + v % 7
        poses = (200 + np.cumsum(rng.normal(0, 3, (n, 17, 3)), 0)).astype(np.float32)
        poses[..., 2] = rng.uniform(0.2, 1, (n, 17))
        added = add_video(root, f"{v:032d}", f"v{v}.mp4", poses, np.arange(n), np.arange(n) / 30.0, fps=30.0)
        print(v, added, flush=True)
        time.sleep(pause)
""")


def _expected_poses(v):
    rng = np.random.default_rng(v)
    n = 50 + v % 7
    poses = (200 + np.cumsum(rng.normal(0, 3, (n, 17, 3)), 0)).astype(np.float32)
    return poses


def _writer(root, first, count, pause=0.0):
    return subprocess.Popen([sys.executable, "-c", _WRITER, str(root), str(first), str(count), str(pause)],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1])


def _check_consistent(root, want_ids=None):
    """Every catalogued video reads back what its writer wrote; verify passes."""
    archive = open_archive(root)
    for video in archive.videos:
        poses, frames, _ = _stored(archive, video)
        np.testing.assert_array_equal(poses[..., :2], _expected_poses(int(video["sha256"]))[:, :, :2])
    if want_ids is not None:
        assert sorted(int(v["sha256"]) for v in archive.videos) == sorted(want_ids)
    result = verify(root)
    assert result["ok"], result["problems"]
    return archive


def test_concurrent_writers_lose_nothing_and_corrupt_nothing(tmp_path):
    """Three processes create one archive and add 20 videos each at once, two of them the same 10
    videos too: the catalog holds each video exactly once, every one reads back, and no file is left
    that it does not name."""
    procs = [_writer(tmp_path, 0, 20), _writer(tmp_path, 20, 20), _writer(tmp_path, 10, 20)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    added = [line.split() for out in outputs for line in out.splitlines()]
    assert sum(flag == "True" for _, flag in added) == 40  # videos 10-29 written twice, added once
    _check_consistent(tmp_path, range(40))
    assert verify(tmp_path)["unnamed_files"] == []


def test_a_writer_killed_at_any_moment_leaves_the_archive_as_it_was(tmp_path):
    """SIGKILL a writer at random moments: each time the archive opens, verify passes and every video
    reads back; the next run adds the rest and removes what the killed one left half-written."""
    rng = np.random.default_rng(7)
    archive_io.create_archive(tmp_path)
    for _ in range(6):
        proc = _writer(tmp_path, 0, 30)
        time.sleep(float(rng.uniform(0.6, 2.5)))  # interpreter start, then somewhere in the adds
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _check_consistent(tmp_path)
    left = [tmp_path / "segments" / name for name in verify(tmp_path)["unnamed_files"]]
    for path in left:  # as old as the next writer's cleanup needs them (ORPHAN_AGE_S)
        os.utime(path, (time.time() - 60, time.time() - 60))
    proc = _writer(tmp_path, 0, 30)
    assert proc.communicate(timeout=300)[0] and proc.returncode == 0
    _check_consistent(tmp_path, range(30))
    assert verify(tmp_path)["unnamed_files"] == []


@pytest.fixture()
def two_videos(tmp_path):
    rng = np.random.default_rng(3)
    for v in range(2):
        poses, frames, tracks = _poses(rng, 80, tracks=2)
        add_video(tmp_path, f"{v:032d}", f"v{v}.mp4", poses, frames, frames / 30.0, tracks, fps=30.0)
    return tmp_path, _poses(np.random.default_rng(3), 80, tracks=2)[0]


def _segment_files(root):
    return sorted((root / "segments").glob("*.seg"))


def test_a_truncated_segment_is_named_by_search_and_verify(two_videos):
    root, poses = two_videos
    victim = _segment_files(root)[0]
    with open(victim, "r+b") as f:
        f.truncate(victim.stat().st_size - 5)
    with pytest.raises(ArchiveError, match=f"{victim}.*truncated"):
        search_archive(open_archive(root), poses[3], k=3)
    result = verify(root)
    assert not result["ok"] and [p["file"] for p in result["problems"]] == [str(victim)]


def test_a_bit_flip_is_named_by_search_and_verify(two_videos):
    root, poses = two_videos
    victim = _segment_files(root)[1]
    data = bytearray(victim.read_bytes())
    data[100] ^= 0x10  # inside the vectors column
    victim.write_bytes(bytes(data))
    archive_io.MAPPED.maps.clear()
    with pytest.raises(ArchiveError, match=f"{victim}: column vectors does not match its checksum"):
        search_archive(open_archive(root), poses[3], k=3)
    assert [p["file"] for p in verify(root)["problems"]] == [str(victim)]


def test_files_outside_the_archive_fifos_and_symlinks_are_refused(two_videos, tmp_path_factory):
    root, poses = two_videos
    first, second = _segment_files(root)
    outside = tmp_path_factory.mktemp("outside")
    shutil.move(first, outside / first.name)
    os.symlink(outside / first.name, first)
    with pytest.raises(ArchiveError, match="a symlink"):
        search_archive(open_archive(root), poses[3], k=3)
    first.unlink()
    os.mkfifo(first)
    with pytest.raises(ArchiveError, match="not a regular file"):  # not a hang
        search_archive(open_archive(root), poses[3], k=3)
    first.unlink()
    shutil.move(outside / first.name, first)
    db = archive_io.connect(root, write=True)
    for name in ("../escape.seg", "/etc/passwd.seg", ".partial-x.seg"):
        db.execute("UPDATE segments SET file = ? WHERE file = ?", (name, second.name))
        with pytest.raises(ArchiveError, match="is not a plain name"):
            open_archive(root)
        db.execute("UPDATE segments SET file = ? WHERE file = ?", (second.name, name))
    db.close()
    assert search_archive(open_archive(root), poses[3], k=1)[0]["score"] > 99.9


def test_files_are_readable_by_the_group(two_videos):
    root, _ = two_videos
    for path in [root, root / "segments", root / archive_io.CATALOG, *_segment_files(root)]:
        assert path.stat().st_mode & stat.S_IRGRP, path


def test_a_format_1_archive_is_upgraded_with_the_same_poses(tmp_path):
    root = tmp_path / "old"
    shutil.copytree(V1_FIXTURE, root)
    manifest = json.loads((root / "manifest.json").read_text())
    with pytest.raises(ArchiveError, match="format-1 .* archive upgrade"):
        open_archive(root)
    out = subprocess.run([EXE, "archive", "upgrade", str(root), "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["upgraded"] == 2
    assert not (root / "manifest.json").exists() and not (root / "shards").exists()
    archive = open_archive(root)
    for entry, video in zip(manifest["videos"], archive.videos):
        assert (video["sha256"], video["name"], video["fps"], video["path"]) == \
            (entry["id"], entry["name"], entry["fps"], entry["source"])
        old = {key: np.load(V1_FIXTURE / entry["shard"] / f"{key}.npy") for key in ("poses", "frames", "tracks")}
        order = np.lexsort((old["frames"], old["tracks"]))
        poses, frames, tracks = _stored(archive, video)
        np.testing.assert_array_equal(poses[..., :2], old["poses"][order, :, :2])
        np.testing.assert_array_equal(frames, old["frames"][order])
    assert verify(root)["ok"]
    again = subprocess.run([EXE, "archive", "upgrade", str(root), "--json"], capture_output=True, text=True)
    assert json.loads(again.stdout)["already"] is True


def test_an_archive_of_row_vectors_answers_as_a_tiled_one_and_compacts_to_tiles(tmp_path):
    """A format-2 archive written before vectors were tiled opens and answers pose and clip
    queries exactly as the same poses written today; ``compact`` rewrites its segment into tiles."""
    rows, tiles = tmp_path / "rows", tmp_path / "tiles"
    shutil.copytree(V2_ROWS_FIXTURE, rows)
    shutil.copytree(V1_FIXTURE, tiles)
    upgrade(tiles)
    old, new = open_archive(rows), open_archive(tiles)
    assert [s.layout["vectors"]["shape"] for s in old.segments.values()] == [[70, 34]]
    assert [s.layout["vectors"]["shape"] for s in new.segments.values()] == [[2, 34, 64]]
    assert verify(rows)["ok"]
    segment = old.segment(1)
    poses = segment.poses(0, 70)

    def answers(archive, query, **options):
        return [(h["video"], h["track"], h["start_frame"], h["end_frame"], h["score"])
                for h in search_archive(archive, query, **options)]

    rng = np.random.default_rng(3)
    for query in (poses[0], poses[37], poses[69] + rng.normal(0, 4, (17, 3)).astype(np.float32) * [1, 1, 0]):
        for k in (1, 5, 70):
            assert answers(old, query, k=k, min_gap=0.0) == answers(new, query, k=k, min_gap=0.0)
    clip = poses[40:60]
    assert answers(old, clip, k=3, query_fps=10.0) == answers(new, clip, k=3, query_fps=10.0)
    before = answers(old, clip, k=3, query_fps=10.0)
    assert compact(rows)["written"] == 1
    compacted = open_archive(rows)
    assert [s.layout["vectors"]["shape"] for s in compacted.segments.values()] == [[2, 34, 64]]
    assert answers(compacted, clip, k=3, query_fps=10.0) == before and verify(rows)["ok"]
    assert compact(rows)["written"] == 0


def test_the_archive_command(two_videos):
    root, _ = two_videos

    def run(*args, code=0):
        out = subprocess.run([EXE, "archive", *args, "--json"], capture_output=True, text=True)
        assert out.returncode == code, out.stderr
        return json.loads(out.stdout)

    info = run("info", str(root))
    assert (info["videos"], info["poses"], info["segments"], info["version"]) == (2, 160, 2, 2)
    assert [v["name"] for v in run("ls", str(root))["videos"]] == ["v0.mp4", "v1.mp4"]
    assert run("rm", str(root), "v0.mp4")["removed"][0]["name"] == "v0.mp4"
    add_video(root, "c" * 32, "c.mp4", *_poses(np.random.default_rng(4), 10)[:2], np.arange(10) / 30.0)
    compacted = run("compact", str(root))
    assert (compacted["after"]["segments"], compacted["after"]["videos"], compacted["after"]["dead_rows"]) == (1, 2, 0)
    assert run("verify", str(root))["ok"]
    victim = _segment_files(root)[0]
    with open(victim, "r+b") as f:
        f.truncate(10)
    damaged = run("verify", str(root), code=1)
    assert damaged["problems"][0]["file"] == str(victim)
    out = subprocess.run([EXE, "archive", "rm", str(root), "nothing.mp4"], capture_output=True, text=True)
    assert out.returncode == 1 and "no video 'nothing.mp4'" in out.stderr


def test_bad_videos_are_refused_before_anything_is_written(tmp_path):
    rng = np.random.default_rng(2)
    poses, frames, _ = _poses(rng, 10)
    bad = poses.copy()
    bad[3, 4, 0] = np.nan
    with pytest.raises(ArchiveError, match="bad.mp4: poses: NaN"):
        add_videos(tmp_path, [VideoRows("a" * 32, "good.mp4", poses, frames, frames / 30.0),
                              VideoRows("b" * 32, "bad.mp4", bad, frames, frames / 30.0)])
    with pytest.raises(ArchiveError, match="short.mp4: times: expected 10 values"):
        add_video(tmp_path, "c" * 32, "short.mp4", poses, frames, frames[:5] / 30.0)
    assert list_videos(tmp_path) == [] and _segment_files(tmp_path) == []


def test_a_reader_that_cannot_write_the_folder_opens_it(two_videos, monkeypatch):
    """A server running as another user of the group: no write access to the folder, so SQLite
    cannot make the WAL's -shm file. With no writer about, the checkpointed catalog is read as an
    immutable file; with a writer's connection open (its -wal and -shm exist), read-only."""
    import sqlite3

    root, poses = two_videos
    real_access = os.access
    monkeypatch.setattr(os, "access",
                        lambda path, mode: False if Path(path) == root else real_access(path, mode))
    assert not (root / (archive_io.CATALOG + "-wal")).exists()
    assert [v["name"] for v in open_archive(root).videos] == ["v0.mp4", "v1.mp4"]
    writer = sqlite3.connect(root / archive_io.CATALOG)
    writer.execute("SELECT COUNT(*) FROM videos").fetchone()
    try:
        assert (root / (archive_io.CATALOG + "-wal")).exists()
        assert search_archive(open_archive(root), poses[3], k=1)[0]["score"] > 99.9
    finally:
        writer.close()


def test_a_video_in_which_no_one_was_found_is_catalogued(tmp_path):
    """A video with no pose (nobody detected) is an entry with 0 poses: added once, verified, and
    searches of the archive answer from the other videos (it raised a TypeError before)."""
    rng = np.random.default_rng(8)
    poses, frames, _ = _poses(rng, 30)
    assert add_video(tmp_path, "e" * 32, "empty.mp4", np.zeros((0, 17, 3), np.float32), [], [], fps=30.0)
    assert not add_video(tmp_path, "e" * 32, "empty.mp4", np.zeros((0, 17, 3), np.float32), [], [])
    add_video(tmp_path, "f" * 32, "full.mp4", poses, frames, frames / 30.0)
    assert [(v["name"], v["poses"]) for v in list_videos(tmp_path)] == [("empty.mp4", 0), ("full.mp4", 30)]
    assert verify(tmp_path)["ok"]
    assert search_archive(open_archive(tmp_path), poses[7], k=1)[0]["video"] == "full.mp4"
