"""One archive searched over two and three real Triton servers, each answering one shard: the
merged answer is the one server holding everything gives, ties included; a shard that is down
fails the search naming it, or is left out and named with --allow-partial."""

import json

import numpy as np
import pytest

from posescore.clients import PoseScoreClient, PoseScoreError
from posescore.engine.archive import add_video, open_archive
from posescore.engine.archive import SearchFilter, public_hit, search_archive
from posescore.engine.archive.clip_search import clip_candidates
from posescore.engine.archive.search import pose_candidates, pose_search
from posescore.engine.serving.server import TritonServer
from posescore.engine.archive import ShardedSearch, ShardError

ARCHIVE = "sharded"
#: Copied videos: number -> the number of the video copied (segment ids differ by 1 or 5).
COPIES = {1: 0, 6: 5, 8: 3}


def _walk(rng, length):
    steps = rng.normal(0, 4, (length, 17, 3)).astype(np.float32)
    poses = 300 + np.cumsum(steps, axis=0)
    poses[..., 2] = rng.uniform(0.4, 1.0, (length, 17))
    return poses.astype(np.float32)


@pytest.fixture(scope="module")
def sharded_archive(archive_root):
    """Nine videos, one segment each (ids 1-9: three per shard of three): random walks of two
    tracks, three of them copied under other ids (the same poses in a segment of another shard
    of two and of three, so whole answers tie across shards), and one track frozen in one pose
    for 40 frames (ties in a track). ``originals``: video number -> (poses, frames, tracks)."""
    rng = np.random.default_rng(19)
    root = archive_root / ARCHIVE
    originals = {}
    for n in range(9):
        if n in COPIES:
            poses, frames, tracks = originals[COPIES[n]]
        else:
            a, b = _walk(rng, 90), _walk(rng, 60)
            if n == 4:
                a[20:60] = a[20]
            poses = np.concatenate([a, b])
            frames = np.concatenate([np.arange(90), np.arange(60)])
            tracks = np.repeat([0, 1], [90, 60])
            originals[n] = (poses, frames, tracks)
        add_video(root, f"video-{n}", f"v{n}.mp4", poses, frames, frames / 30.0, tracks, fps=30.0)
    archive = open_archive(root)
    assert sorted(archive.segments) == list(range(1, 10))
    return archive, originals


@pytest.fixture(scope="module")
def servers(triton_server, archive_root):
    """Three servers of the archive root: the session's, one more, and one holding only shard 2/3."""
    with TritonServer(models=["search"], archive_root=archive_root) as second, \
            TritonServer(models=["search"], archive_root=archive_root, archive_shard="2/3") as third:
        yield [triton_server.grpc_url, second.grpc_url, third.grpc_url], third


def _key(hits):
    return [(h["video_id"], h["track"], h["start_frame"], h["end_frame"], h["score"]) for h in hits]


def _queries(originals):
    v0, v2, v3, v4, v5 = (originals[n][0] for n in (0, 2, 3, 4, 5))
    return {
        "pose of a copied video": (v0[17], None),
        "pose frozen in a track": (v4[30], None),
        "pose of a video": (v2[120], None),
        "clip of a copied video": (v5[100:130], 30.0),
        "clip of a video": (v4[65:85], 30.0),
        "clip of a copied video, other rate": (v3[5:45:2], 15.0),
    }


@pytest.mark.parametrize("count", [2, 3])
def test_pose_and_clip_search_over_shards_equal_one_server(sharded_archive, servers, count):
    """Pose and clip queries, k from 1 to 25, with time and video filters: the merged answer of
    two or three servers is the one server's (over gRPC) and the in-process search's, exactly."""
    archive, originals = sharded_archive
    urls, _ = servers
    urls = urls[:2] if count == 2 else urls
    with PoseScoreClient(urls[0], timeout=120) as one, ShardedSearch(urls, timeout=120) as shards:
        for name, (query, fps) in _queries(originals).items():
            for k, where in ((1, SearchFilter()), (6, SearchFilter()), (25, SearchFilter(start=0.5, end=2.5)),
                             (4, SearchFilter(video="v[0-5].mp4"))):
                filters = dict(video=where.video, start=where.start, end=where.end)
                whole = one.search(ARCHIVE, query, k, fps=fps, **{n: v for n, v in filters.items() if v is not None})
                merged = shards.search(ARCHIVE, query, k, query_fps=fps, where=where)
                local = search_archive(archive, query, k, query_fps=fps, where=where)
                assert merged.missing == []
                assert _key(merged.hits) == _key(local), (name, k, where)
                assert [(m.video_id, m.track, m.start_frame, m.end_frame, m.score) for m in whole] == \
                    _key(merged.hits), (name, k, where)


def test_the_archive_ties_across_shards(sharded_archive):
    """What the test above needs to mean something: answers with equal scores in different
    shards (a video and its copy), whose order only the (segment, row) rule decides."""
    archive, originals = sharded_archive
    hits = search_archive(archive, originals[0][0][17], 6)
    assert hits[0]["score"] == hits[1]["score"] and {hits[0]["video_id"], hits[1]["video_id"]} == {"video-0", "video-1"}
    segments = {v["sha256"]: v["segment"] for v in archive.videos}
    assert segments["video-0"] % 3 != segments["video-1"] % 3 and segments["video-0"] % 2 != segments["video-1"] % 2
    frozen = search_archive(archive, originals[4][0][30], 5, min_gap=0.0)
    assert len({h["score"] for h in frozen}) == 1 and len({h["start_frame"] for h in frozen}) == 5


def test_a_shard_server_answers_only_its_shard(servers):
    urls, _ = servers
    with ShardedSearch([urls[2], urls[0]]) as shards, pytest.raises(PoseScoreError) as info:
        shards.search(ARCHIVE, np.full((17, 3), 100.0, np.float32) + np.arange(17)[:, None], 3)
    assert info.value.status == "INVALID_ARGUMENT" and "holds shard 2/3" in str(info.value)
    assert "asked for 0/2" in str(info.value)


def test_a_shard_that_is_down_fails_the_search_naming_it_or_is_left_out(sharded_archive, servers, archive_root):
    archive, originals = sharded_archive
    urls, third = servers
    query, clip = originals[5][0][40], originals[5][0][100:130]
    third.stop()
    try:
        with ShardedSearch(urls, timeout=3.0) as shards:
            with pytest.raises(ShardError) as info:
                shards.search(ARCHIVE, query, 5)
            assert info.value.shard == "2/3" and info.value.url == urls[2] and "shard 2/3 at" in str(info.value)
        with ShardedSearch(urls, timeout=3.0, allow_partial=True) as shards:
            partial = shards.search(ARCHIVE, query, 5)
            partial_clip = shards.search(ARCHIVE, clip, 3, query_fps=30.0)
    finally:
        third.start()
    assert [m["shard"] for m in partial.missing] == ["2/3"] and partial.missing[0]["url"] == urls[2]

    def fetch(count):  # the two shards that answered, merged by the same function
        parts = [pose_candidates(archive, query, count, shard=(i, 3)) for i in (0, 1)]
        return [h for hits, _ in parts for h in hits], sum(total for _, total in parts)

    assert _key(partial.hits) == _key([public_hit(h) for h in pose_search(fetch, 5)])
    kept = {v["sha256"] for v in archive.videos if v["segment"] % 3 != 2}
    assert partial_clip.hits and {h["video_id"] for h in partial_clip.hits} <= kept
    assert all(c.segment % 3 != 2 for c in clip_candidates(archive, clip, 3, shard=(0, 3)))


def test_search_cli_over_shard_urls(sharded_archive, servers, tmp_path):
    from test_jobs import posescore

    archive, originals = sharded_archive
    urls, _ = servers
    pose_file = tmp_path / "pose.json"
    pose_file.write_text(json.dumps([{"image_id": "0.jpg", "category_id": 1, "score": 1.0,
                                      "keypoints": originals[2][0][33].reshape(-1).tolist()}]))
    args = ["search", "--archive", ARCHIVE, "--pose", pose_file, "--k", "4", "--min-score", "0", "--json"]
    shard_urls = [arg for url in urls[:2] for arg in ("--shard-url", url)]
    got = json.loads(posescore(*args, *shard_urls).stdout)
    want = search_archive(archive, originals[2][0][33], 4)
    assert [(m["video_id"], m["start_frame"]) for m in got["matches"]] == [(h["video_id"], h["start_frame"]) for h in want]
    assert got["shards"] == {"servers": urls[:2], "missing": []}
