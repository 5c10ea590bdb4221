"""The typed clients (clients/) against the real embedded Triton server: results equal the services'
answers computed in this process (engine.analysis.answers), splitting, asyncio, search, validation before
sending, server errors, retries."""

import asyncio
import re
import signal
import threading
import time

import numpy as np
import pytest

from posescore.clients import (POSE_MAX_BATCH, AsyncPoseScoreClient, DtwResult, PoseResult, PoseScoreClient,
                               PoseScoreError, ScoreResult, SearchMatch)
from posescore.clients.protocol import pose_requests
from posescore.engine.archive import add_video
from posescore.engine.serving.server import DEFAULT_MODEL_REPOSITORY, TritonServer, free_port
from posescore.engine.analysis.answers import dtw_answer, score_answer
from posescore.loadtests.workload import mirrored
from conftest import random_poses

# Scores are 0-100: 1e-3 is 1e-5 of their scale (float32 rounding; the server may run on a GPU).
ATOL = 1e-3


@pytest.fixture(scope="module")
def client(triton_server):
    with PoseScoreClient(triton_server.grpc_url, timeout=30) as c:
        yield c


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def expected_scores(query, candidates, metric, mirror):
    """The score service's answer computed in this process (the server must give the same)."""
    answer = score_answer(query, candidates, metric, mirror)
    return answer.scores, answer.part_scores


def expected_dtw(reference, attempt, window, mirror):
    """The dtw service's answer computed in this process, alone (the server may batch)."""
    a = dtw_answer(reference, attempt, window, mirror, with_path=True)
    return a.score, a.distance, a.part_scores, a.mirrored, a.path


# -- score / dtw equal the kernels ---------------------------------------------------------------
def test_a_part_not_scored_is_none_with_a_mask_never_a_zero(client, rng):
    query = random_poses(rng, 1)[0]
    candidate = query.copy()
    candidate[[9, 7], 2] = 0  # left wrist and elbow missing: no left-arm limb in both poses
    result = client.score(query, np.stack([candidate, query]))
    assert result.parts(0)["left_arm"] is None and result.parts(1)["left_arm"] == pytest.approx(100, abs=0.01)
    assert not result.part_valid[0, 2] and result.part_valid[0].sum() == 5 and result.part_valid[1].all()
    reference = np.repeat(query[None], 4, axis=0)
    movement = client.dtw(reference, np.repeat(candidate[None], 4, axis=0))
    assert movement.parts()["left_arm"] is None and movement.parts()["right_arm"] == pytest.approx(100, abs=0.01)
    assert movement.part_valid.tolist() == [True, True, False, True, True, True]


@pytest.mark.parametrize("metric", ["cosine", "weighted_l1", "weighted_l2"])
@pytest.mark.parametrize("mirror", [False, True])
def test_score_equals_kernels(client, rng, metric, mirror):
    query = random_poses(rng, 1, missing=0.2)[0]
    candidates = np.concatenate([random_poses(rng, 40, missing=0.2), query[None], mirrored(query[None])])
    result = client.score(query, candidates, metric=metric, mirror=mirror)
    assert isinstance(result, ScoreResult)
    assert result.scores.shape == (42,) and result.scores.dtype == np.float32
    assert result.part_scores.shape == (42, 6) and result.part_scores.dtype == np.float32
    scores, parts = expected_scores(query, candidates, metric, mirror)
    np.testing.assert_allclose(result.scores, scores, atol=ATOL)
    np.testing.assert_allclose(result.part_scores, parts, atol=ATOL)
    assert result.scores[40] == pytest.approx(100, abs=0.01)
    assert (result.scores[41] == pytest.approx(100, abs=0.01)) == mirror


def test_score_split_into_chunks_equals_one_request(triton_server, client, rng):
    query, candidates = random_poses(rng, 1)[0], random_poses(rng, 103).tolist()  # nested lists work too
    whole = client.score(query, candidates, mirror=True)
    with PoseScoreClient(triton_server.grpc_url, max_candidates_per_request=10) as small:
        split = small.score(query, candidates, mirror=True)
    # A pose's answer does not depend on the other candidates of its request: the same bits.
    np.testing.assert_array_equal(split.scores, whole.scores)
    np.testing.assert_array_equal(split.part_scores, whole.part_scores)


@pytest.mark.parametrize("window", [None, 6])
@pytest.mark.parametrize("mirror", [False, True])
def test_dtw_equals_kernels(client, rng, window, mirror):
    reference, attempt = random_poses(rng, 24), random_poses(rng, 31)
    result = client.dtw(reference, attempt, window=window, mirror=mirror, return_path=True)
    assert isinstance(result, DtwResult)
    score, distance, parts, flipped, path = expected_dtw(reference, attempt, window, mirror)
    assert result.score == pytest.approx(score, abs=ATOL)
    assert result.distance == pytest.approx(distance, rel=1e-4)
    np.testing.assert_allclose(result.part_scores, parts, atol=ATOL)
    assert result.mirrored == flipped
    assert result.path.dtype == np.int32 and result.path.shape[1] == 2
    np.testing.assert_array_equal(result.path, path)
    assert client.dtw(reference, attempt, window=window, mirror=mirror).path is None


def test_dtw_finds_the_mirrored_attempt(client, rng):
    reference = random_poses(rng, 20)
    attempt = mirrored(np.repeat(reference, 2, axis=0))  # half speed, other side
    plain, flipped = client.dtw(reference, attempt), client.dtw(reference, attempt, mirror=True)
    assert not plain.mirrored and flipped.mirrored
    assert flipped.score == pytest.approx(100, abs=0.01) and plain.score < 90
    assert flipped.score == pytest.approx(expected_dtw(reference, attempt, None, True)[0], abs=ATOL)


# -- asyncio -------------------------------------------------------------------------------------
def test_async_client_gives_the_same_results(triton_server, client, rng):
    queries = random_poses(rng, 12)
    candidates = random_poses(rng, 60)
    reference, attempt = random_poses(rng, 15), random_poses(rng, 18)

    async def main():
        async with AsyncPoseScoreClient(triton_server.grpc_url, max_candidates_per_request=16) as aclient:
            assert await aclient.is_ready(["score", "dtw"])
            await aclient.wait_until_ready(5)
            assert (await aclient.server_metadata())["name"] == "triton"
            scores = await asyncio.gather(*(aclient.score(q, candidates, mirror=True) for q in queries))
            dtws = await asyncio.gather(*(aclient.dtw(reference, attempt, window=w, return_path=True)
                                          for w in (None, 3, 5, 8)))
            return scores, dtws

    scores, dtws = asyncio.run(main())
    for query, result in zip(queries, scores):
        expected = client.score(query, candidates, mirror=True)
        np.testing.assert_allclose(result.scores, expected.scores, atol=1e-5)
        np.testing.assert_allclose(result.part_scores, expected.part_scores, atol=1e-5)
    for window, result in zip((None, 3, 5, 8), dtws):
        expected = client.dtw(reference, attempt, window=window, return_path=True)
        assert result.score == pytest.approx(expected.score) and result.distance == pytest.approx(expected.distance)
        np.testing.assert_array_equal(result.path, expected.path)


def test_sync_client_is_thread_safe(client, rng):
    query, candidates = random_poses(rng, 1)[0], random_poses(rng, 30)
    expected = client.score(query, candidates).scores
    results = [None] * 8

    def work(i):
        results[i] = client.score(query, candidates).scores

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for result in results:
        np.testing.assert_allclose(result, expected, atol=1e-5)


# -- search --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_archive(archive_root):
    """Two videos (the second with two tracks) in ``archive_root/clients-archive``."""
    rng = np.random.default_rng(11)
    path = archive_root / "clients-archive"
    first, second = random_poses(rng, 30), random_poses(rng, 40)
    add_video(path, "vid-a", "first.mp4", first, frames=np.arange(30) * 2, times=np.arange(30) / 15.0)
    add_video(path, "vid-b", "second.mp4", second, frames=np.repeat(np.arange(20), 2),
              times=np.repeat(np.arange(20), 2) / 25.0, tracks=np.tile([0, 1], 20))
    return path, first, second


def test_search_finds_a_stored_pose_first(client, small_archive):
    path, first, second = small_archive
    matches = client.search("clients-archive", first[17], k=5)
    assert len(matches) == 5 and all(isinstance(m, SearchMatch) for m in matches)
    best = matches[0]
    assert (best.video_id, best.video_name, best.start_frame, best.end_frame) == ("vid-a", "first.mp4", 34, 34)
    assert best.start_time == pytest.approx(17 / 15.0) and best.track == -1
    assert best.score == pytest.approx(100, abs=0.01)
    assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
    # pose 25 of the second video: frame 12, track 1; the archive may be named by absolute path
    best = client.search(str(path), second[25][None], k=1)[0]
    assert (best.video_id, best.start_frame, best.track) == ("vid-b", 12, 1)
    assert best.score == pytest.approx(100, abs=0.01)


def test_search_finds_a_stored_movement(client, small_archive):
    _, first, _ = small_archive
    matches = client.search("clients-archive", first[10:16], k=3)
    best = matches[0]
    assert (best.video_id, best.start_frame, best.end_frame) == ("vid-a", 20, 30)
    assert best.start_time == pytest.approx(10 / 15.0) and best.end_time == pytest.approx(15 / 15.0)
    assert best.score == pytest.approx(100, abs=0.05)  # float32 costs: an exact match scores ~99.98


def test_search_model_reads_an_archive_changed_since_and_filters(client, small_archive):
    """The model reads the catalog again when it changed (a video added by another process's
    transaction is found at once), and answers the filters and the video's path."""
    path, first, _ = small_archive
    rng = np.random.default_rng(13)
    third = random_poses(rng, 25)
    assert client.search("clients-archive", third[4], k=1)[0].score < 99.9
    add_video(path, "vid-c", "third.mp4", third, frames=np.arange(25), times=np.arange(25) / 25.0,
              path="/videos/third.mp4", fps=25.0)
    best = client.search("clients-archive", third[4], k=1)[0]
    assert (best.video_id, best.video_path, best.start_frame) == ("vid-c", "/videos/third.mp4", 4)
    assert best.score == pytest.approx(100, abs=0.01)
    only_first = client.search("clients-archive", third[4], k=5, video="first*")
    assert {m.video_name for m in only_first} == {"first.mp4"}
    late = client.search("clients-archive", first[17], k=5, start=1.5)
    assert all(m.start_time >= 1.5 for m in late) and late
    strict = client.search("clients-archive", first[10:16], k=3, min_score=99.0, fps=15.0)
    assert [(m.video_id, m.start_frame) for m in strict] == [("vid-a", 20)] and strict[0].score >= 99.0


# -- validation happens before anything is sent --------------------------------------------------
POSE = np.ones((17, 3), np.float32)
POSES = np.ones((4, 17, 3), np.float32)
BAD_CALLS = [
    ("frames", lambda c: c.pose(np.zeros((8, 8, 3), np.float32))),  # not uint8
    ("frames", lambda c: c.pose(np.zeros((8, 8, 4), np.uint8))),
    ("frames", lambda c: c.pose(np.zeros((8, 0, 3), np.uint8))),
    ("frames", lambda c: c.pose(np.zeros((0, 8, 8, 3), np.uint8))),
    ("frames", lambda c: c.pose(np.zeros((2, 2, 8, 8, 3), np.uint8))),
    ("query", lambda c: c.score(np.ones((18, 3)), POSES)),
    ("query", lambda c: c.score(np.array([["a"] * 3] * 17), POSES)),
    ("candidates", lambda c: c.score(POSE, POSE)),
    ("candidates", lambda c: c.score(POSE, np.zeros((0, 17, 3)))),
    ("candidates", lambda c: c.score(POSE, [[1, 2], [3]])),
    ("metric", lambda c: c.score(POSE, POSES, metric="euclid")),
    ("mirror", lambda c: c.score(POSE, POSES, mirror="yes")),
    ("reference", lambda c: c.dtw(POSE, POSES)),
    ("attempt", lambda c: c.dtw(POSES, np.ones((4, 17, 2)))),
    ("window", lambda c: c.dtw(POSES, POSES, window=0)),
    ("window", lambda c: c.dtw(POSES, POSES, window=2.5)),
    ("return_path", lambda c: c.dtw(POSES, POSES, return_path=None)),
    ("k", lambda c: c.search("a", POSE, k=0)),
    ("k", lambda c: c.search("a", POSE, k=True)),
    ("archive", lambda c: c.search("", POSE)),
    ("archive", lambda c: c.search(None, POSE)),
    ("query", lambda c: c.search("a", np.ones((2, 3, 17, 3)))),
]


@pytest.mark.parametrize("argument, call", BAD_CALLS, ids=[f"{a}-{i}" for i, (a, _) in enumerate(BAD_CALLS)])
def test_bad_arguments_fail_before_sending(argument, call):
    with PoseScoreClient(f"127.0.0.1:{free_port()}", timeout=5) as nowhere:  # nothing listens
        start = time.monotonic()
        with pytest.raises(PoseScoreError) as info:
            call(nowhere)
    assert time.monotonic() - start < 0.5
    assert info.value.status is None
    assert str(info.value).startswith(f"{argument}: expected")
    assert "got" in str(info.value)


def test_bad_arguments_fail_before_sending_async():
    async def main():
        async with AsyncPoseScoreClient(f"127.0.0.1:{free_port()}", timeout=5) as nowhere:
            with pytest.raises(PoseScoreError, match=r"^candidates: expected poses \[N, 17, 3\], got shape \[17, 3\]"):
                await nowhere.score(POSE, POSE)
            with pytest.raises(PoseScoreError, match="^frames: expected dtype uint8, got float64"):
                await nowhere.pose(np.zeros((4, 4, 3)))

    asyncio.run(main())


def test_bad_settings():
    for settings in ({"timeout": 0}, {"max_candidates_per_request": 0}, {"pose_batch_size": 0}):
        with pytest.raises(PoseScoreError, match=f"^{next(iter(settings))}: expected"):
            PoseScoreClient("127.0.0.1:1", **settings)


# -- pose requests and results, without the pose model --------------------------------------------
def test_pose_batch_size_matches_the_model_config():
    config = (DEFAULT_MODEL_REPOSITORY / "pose" / "config.pbtxt").read_text()
    assert int(re.search(r"max_batch_size:\s*(\d+)", config).group(1)) == POSE_MAX_BATCH


def test_pose_frames_are_split_in_order():
    frames = np.arange(37 * 2 * 3 * 3, dtype=np.int64).astype(np.uint8).reshape(37, 2, 3, 3)
    requests = pose_requests(frames)
    assert [r[0].shape() for r in requests] == [[16, 2, 3, 3], [16, 2, 3, 3], [5, 2, 3, 3]]
    assert [r[0].datatype() for r in requests] == ["UINT8"] * 3
    assert [r[0].shape() for r in pose_requests(frames[0])] == [[1, 2, 3, 3]]


def test_pose_result_trims_each_frame_to_its_count():
    keypoints = np.arange(3 * 4 * 17 * 3, dtype=np.float32).reshape(3, 4, 17, 3)
    result = PoseResult(keypoints, np.ones((3, 4, 4), np.float32), np.ones((3, 4), np.float32),
                        np.array([2, 0, 4], np.int32))
    assert len(result) == 3
    assert [f.keypoints.shape[0] for f in result.frames()] == [2, 0, 4]
    np.testing.assert_array_equal(result.frame(0).keypoints, keypoints[0, :2])
    assert result.frame(2).boxes.shape == (4, 4) and result.frame(1).scores.shape == (0,)


# -- server errors -------------------------------------------------------------------------------
def test_server_errors_carry_message_status_and_model(client, rng, small_archive):
    candidates = random_poses(rng, 5)
    candidates[3, 4, 0] = np.nan
    with pytest.raises(PoseScoreError, match="NaN") as info:
        client.score(POSE * 100 + np.arange(17)[:, None], candidates)
    assert info.value.status == "INVALID_ARGUMENT" and info.value.model == "score"
    assert "candidates" in str(info.value) and "INVALID_ARGUMENT" in str(info.value)

    with pytest.raises(PoseScoreError, match="outside") as info:
        client.search("../x", random_poses(rng, 1)[0])
    assert info.value.status == "INVALID_ARGUMENT" and info.value.model == "search"

    with pytest.raises(PoseScoreError, match="not a posescore archive") as info:
        client.search("no-such-archive", random_poses(rng, 1)[0])

    with pytest.raises(PoseScoreError, match="k: expected") as info:
        client.search("clients-archive", random_poses(rng, 1)[0], k=100000)

    query = random_poses(rng, 1)[0]
    query[:, 2] = 0.0  # nothing visible
    with pytest.raises(PoseScoreError, match="no pose can be normalized"):
        client.score(query, candidates[:2])


def test_server_errors_async(triton_server, rng):
    async def main():
        async with AsyncPoseScoreClient(triton_server.grpc_url) as aclient:
            with pytest.raises(PoseScoreError, match="outside") as info:
                await aclient.search("../x", random_poses(rng, 1)[0])
            return info.value

    error = asyncio.run(main())
    assert error.status == "INVALID_ARGUMENT" and error.model == "search"


def test_closed_client_raises(triton_server):
    client = PoseScoreClient(triton_server.grpc_url)
    client.close()
    client.close()  # idempotent
    with pytest.raises(PoseScoreError, match="closed"):
        client.score(POSE, POSES)


# -- retries -------------------------------------------------------------------------------------
def test_unavailable_server_is_retried_until_the_deadline():
    with PoseScoreClient(f"127.0.0.1:{free_port()}", timeout=1.0, max_backoff=0.2) as nowhere:
        assert not nowhere.is_ready()
        start = time.monotonic()
        with pytest.raises(PoseScoreError) as info:
            nowhere.score(POSE, POSES)
        elapsed = time.monotonic() - start
        with pytest.raises(PoseScoreError) as waited:
            nowhere.wait_until_ready(0.3)
    assert info.value.status == "UNAVAILABLE" and info.value.model == "score"
    assert 0.5 < elapsed < 3.0
    attempts = int(re.search(r"after (\d+) attempt", str(info.value)).group(1))
    assert attempts > 2
    assert waited.value.status == "UNAVAILABLE"


def test_unavailable_server_is_retried_async():
    async def main():
        async with AsyncPoseScoreClient(f"127.0.0.1:{free_port()}", timeout=0.5) as nowhere:
            assert not await nowhere.is_ready()
            with pytest.raises(PoseScoreError) as info:
                await nowhere.dtw(POSES, POSES)
            return info.value

    assert asyncio.run(main()).status == "UNAVAILABLE"


def test_call_succeeds_once_a_late_server_starts(rng):
    server = TritonServer(models=["score"], grpc_port=free_port())
    failure, ready, done = [], threading.Event(), threading.Event()

    def serve_later():
        time.sleep(1.5)
        try:
            with server:
                ready.set()
                done.wait(120)
        except Exception as err:  # noqa: BLE001 - reported by the test below
            failure.append(err)

    thread = threading.Thread(target=serve_later)
    query, candidates = random_poses(rng, 1)[0], random_poses(rng, 10)
    try:
        thread.start()
        with PoseScoreClient(server.grpc_url, timeout=60) as client:
            start = time.monotonic()
            result = client.score(query, candidates)
            assert time.monotonic() - start > 1.0  # it did wait for the server
            assert client.is_ready(["score"]) and not client.is_ready(["dtw"])
            start = time.monotonic()
            with pytest.raises(PoseScoreError, match="dtw") as info:  # not loaded: no retry
                client.dtw(candidates, candidates)
            assert info.value.status == "NOT_FOUND" and time.monotonic() - start < 1.0
        # A stopping server first unloads its models (NOT_FOUND while it is not ready), then closes
        # its port: both are UNAVAILABLE to the client, retried until the deadline.
        assert ready.wait(60)
        server.process.send_signal(signal.SIGTERM)
        with PoseScoreClient(server.grpc_url, timeout=1.5) as client:
            while client.is_ready():
                time.sleep(0.01)
            with pytest.raises(PoseScoreError) as info:
                client.score(query, candidates)
        assert info.value.status == "UNAVAILABLE" and "gave up after" in str(info.value)
    finally:
        done.set()
        thread.join()
    assert not failure
    np.testing.assert_allclose(result.scores, expected_scores(query, candidates, "cosine", False)[0], atol=ATOL)


def test_an_archive_with_a_non_ascii_name_is_searched_under_the_c_locale(tmp_path):
    """The CLI searched it; the server under LANG=C failed ("'ascii' codec can't encode")."""
    rng = np.random.default_rng(12)
    poses = random_poses(rng, 20)
    add_video(tmp_path / "archivé-été", "vid-é", "vidéo.mp4", poses, frames=np.arange(20), times=np.arange(20) / 10)
    with TritonServer(models=["search"], archive_root=tmp_path, env={"LANG": "C", "LC_ALL": "C"}) as server:
        with PoseScoreClient(server.grpc_url, timeout=60) as client:
            best = client.search("archivé-été", poses[7], k=1)[0]
    assert (best.video_id, best.video_name, best.start_frame) == ("vid-é", "vidéo.mp4", 7)


def test_the_search_model_answers_an_archive_larger_than_its_mapping_budget(tmp_path):
    """A server whose search model may map 64 KB at once, and an archive of six segments of
    ~100 KB: every segment is mapped in turn, and the answers are the in-process ones."""
    from posescore.engine.archive import open_archive
    from posescore.engine.archive import search_archive

    rng = np.random.default_rng(14)
    stored = []
    for v in range(6):
        poses = random_poses(rng, 400)
        add_video(tmp_path / "big", f"vid-{v}", f"v{v}.mp4", poses, frames=np.arange(400), times=np.arange(400) / 30)
        stored.append(poses)
    archive = open_archive(tmp_path / "big")
    assert min(s.bytes for s in archive.segments.values()) > 64_000
    query, clip = stored[4][123], stored[2][50:58]
    want_pose, want_clip = search_archive(archive, query, k=5), search_archive(archive, clip, k=3)
    with TritonServer(models=["search"], archive_root=tmp_path, env={"POSESCORE_MAPPED_BYTES": "64000"}) as server:
        with PoseScoreClient(server.grpc_url, timeout=60) as client:
            got_pose, got_clip = client.search("big", query, k=5), client.search("big", clip, k=3)
    for got, want in ((got_pose, want_pose), (got_clip, want_clip)):
        assert [(m.video_id, m.start_frame, m.end_frame) for m in got] == \
            [(h["video_id"], h["start_frame"], h["end_frame"]) for h in want]
        np.testing.assert_allclose([m.score for m in got], [h["score"] for h in want], atol=1e-4)
    assert (got_pose[0].video_id, got_pose[0].start_frame) == ("vid-4", 123)


# -- several servers -----------------------------------------------------------------------------
def _successes(server, model="score"):
    """Triton's count of successful requests of ``model`` on ``server`` (its metrics endpoint)."""
    import urllib.request

    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("nv_inference_request_success") and f'model="{model}"' in line)


def test_a_client_of_two_servers_spreads_its_requests_and_rides_through_one_going_away():
    rng = np.random.default_rng(8)
    query, candidates = random_poses(rng, 1)[0], random_poses(rng, 40)
    with TritonServer(models=["score"]) as a, TritonServer(models=["score"]) as b:
        with PoseScoreClient([a.grpc_url, b.grpc_url], timeout=60, max_candidates_per_request=5,
                             max_concurrency=4) as client:
            expected = client.score(query, candidates).scores  # 8 requests, 4 at a time
            for _ in range(5):
                np.testing.assert_array_equal(client.score(query, candidates).scores, expected)
            counts = [_successes(a), _successes(b)]
            assert min(counts) >= 10 and sum(counts) >= 48, counts  # both served (least outstanding first)
            stats = {s["url"]: s for s in client.server_stats()}
            assert all(s["answered"] > 0 and s["outstanding"] == 0 for s in stats.values())
            b.stop()  # one goes away: every call is answered by the other, within its deadline
            for _ in range(3):
                np.testing.assert_array_equal(client.score(query, candidates).scores, expected)
            stats = {s["url"]: s for s in client.server_stats()}
            assert stats[b.grpc_url]["unavailable"] > 0  # tried, set aside (for a backoff that may be over by now)
            assert client.is_ready(["score"])
            b.start()  # back on its port: tried again once its set-aside ends, and used
            deadline = time.monotonic() + 30  # past the longest set-aside (clients.triton.SERVER_MAX_BACKOFF)
            while _successes(b) == 0:  # its counters started again with it
                assert time.monotonic() < deadline, client.server_stats()
                np.testing.assert_array_equal(client.score(query, candidates).scores, expected)
                time.sleep(0.2)

        async def run_async():
            async with AsyncPoseScoreClient([a.grpc_url, b.grpc_url], timeout=60, max_candidates_per_request=5) as aio:
                results = await asyncio.gather(*(aio.score(query, candidates) for _ in range(4)))
                return results, aio.server_stats()

        before = [_successes(a), _successes(b)]
        results, stats = asyncio.run(run_async())
        for result in results:
            np.testing.assert_array_equal(result.scores, expected)
        assert _successes(a) > before[0] and _successes(b) > before[1], stats
    with pytest.raises(PoseScoreError, match="url"):
        PoseScoreClient(["127.0.0.1:1", "127.0.0.1:1"])
