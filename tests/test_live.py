"""engine.analysis.live: streams started, fed and ended; bad input refused with the stream named,
nothing already found lost; many streams advanced in one call agree with each alone."""

import math
import os
import signal

import numpy as np
import pytest

from posescore.engine.analysis.live import LiveError, LivePool


def arm_raise(frames=20, height=200.0):
    """A person raising both arms over ``frames`` frames: [frames, 17, 3] pixel poses."""
    from posescore.kernels.skeleton import KP

    poses = np.zeros((frames, 17, 3), np.float32)
    for t in range(frames):
        lift = math.pi * t / (frames - 1)  # 0 hanging, pi overhead
        kps = {"nose": (0, -0.9), "left_eye": (0.05, -0.95), "right_eye": (-0.05, -0.95), "left_ear": (0.1, -0.92),
               "right_ear": (-0.1, -0.92), "left_shoulder": (0.2, -0.7), "right_shoulder": (-0.2, -0.7),
               "left_hip": (0.15, 0.0), "right_hip": (-0.15, 0.0), "left_knee": (0.15, 0.45),
               "right_knee": (-0.15, 0.45), "left_ankle": (0.15, 0.9), "right_ankle": (-0.15, 0.9)}
        for side, sign in (("left", 1), ("right", -1)):
            sx, sy = kps[f"{side}_shoulder"]
            kps[f"{side}_elbow"] = (sx + sign * 0.3 * math.sin(lift), sy + 0.3 * math.cos(lift))
            kps[f"{side}_wrist"] = (sx + sign * 0.6 * math.sin(lift), sy + 0.6 * math.cos(lift))
        for name, (x, y) in kps.items():
            poses[t, KP[name]] = (320 + height * x, 240 + height * y, 0.9)
    return poses


def test_a_stream_counts_its_repetitions_and_frees_its_state():
    rep = arm_raise()
    rest = np.repeat(rep[:1], 10, axis=0)
    stream = np.concatenate([rest, rep, rep[::-1], rest, rep[::2], rep[::-1][::2], rest])
    pool = LivePool()
    start = pool.open("a", rep, 30.0, 30.0)
    assert start["event"] == "start" and start["reference_frames"] == 20
    events = []
    for n, pose in enumerate(stream):
        events += pool.step([("a", pose, n / 30.0, n)])["a"]
    frames = [e for e in events if e["event"] == "frame"]
    assert len(frames) == len(stream) and all(0.0 <= e["phase"] <= 1.0 for e in frames)
    end = pool.close("a")
    reps = [e for e in events if e["event"] == "rep"] + end["new"]
    assert end["count"] == len(reps) == 4, [(r["start_frame"], r["end_frame"], r["score"], r["backwards"]) for r in reps]
    assert [r["backwards"] for r in reps] == [False, True, False, True]
    assert reps[0]["score"] >= 99 and reps[1]["score"] < 50 and reps[1]["flagged"]
    assert len(pool) == 0
    with pytest.raises(LiveError, match="stream a: not started, or already ended"):
        pool.step([("a", rep[0], 10.0, 300)])


def test_bad_input_is_refused_naming_the_stream_and_nothing_is_lost():
    rep = arm_raise()
    pool = LivePool()
    pool.open("a", rep, 30.0, 30.0)
    with pytest.raises(LiveError, match="stream a: already started"):
        pool.open("a", rep, 30.0, 30.0)
    with pytest.raises(LiveError, match="at least 2 poses"):
        pool.open("b", rep[:1], 30.0, 30.0)
    with pytest.raises(LiveError, match="fps: expected frames per second > 0"):
        pool.open("b", rep, 30.0, 0.0)
    for n, pose in enumerate(rep):
        pool.step([("a", pose, n / 30.0, n)])
    with pytest.raises(LiveError, match="stream a: frame time 0.1 s is not after the last one"):
        pool.step([("a", rep[0], 0.1, 99)])
    with pytest.raises(LiveError, match="NaN"):
        pool.step([("a", np.full((17, 3), np.nan, np.float32), 5.0, 150)])
    with pytest.raises(LiveError, match="one frame per stream"):
        pool.step([("a", rep[0], 6.0, 180), ("a", rep[1], 6.1, 183)])
    # An empty pose (no one seen) is a frame event without a phase, not an error.
    (event,) = pool.step([("a", np.zeros((17, 3), np.float32), 7.0, 210)])["a"]
    assert event["seen"] is False and "phase" not in event
    # The repetition played before the errors is still there.
    assert pool.close("a")["count"] == 1


def test_streams_in_one_call_agree_with_each_alone():
    rep = arm_raise()
    slow = np.repeat(rep, 2, axis=0)
    streams = {"one": np.concatenate([rep, rep[::-1]]), "two": np.concatenate([slow[:5], slow, rep[:3]])}
    alone = {}
    for key, poses in streams.items():
        pool = LivePool()
        pool.open(key, rep, 30.0, 30.0)
        alone[key] = [pool.step([(key, p, n / 30.0, n)])[key] for n, p in enumerate(poses)] + [pool.close(key)]
    pool = LivePool()
    for key in streams:
        pool.open(key, rep, 30.0, 30.0)
    together = {key: [] for key in streams}
    for n in range(max(map(len, streams.values()))):
        batch = [(key, poses[n], n / 30.0, n) for key, poses in streams.items() if n < len(poses)]
        for key, events in pool.step(batch).items():
            together[key].append(events)
        for key, poses in streams.items():
            if n == len(poses) - 1:
                together[key].append(pool.close(key))
    assert together == alone


# -- the live model on a real server, over gRPC bidirectional streams --------------------------------
@pytest.fixture(scope="module")
def small_live_server(tmp_path_factory):
    """A server of the live model alone, holding at most 3 streams, freeing one idle for 1 s; a
    reference library with one repetition (a pose JSON as ``posescore pose`` writes)."""
    import re
    import shutil

    from posescore.engine.media.pose_files import write_alphapose
    from posescore.engine.serving.live import REFERENCES_FOLDER
    from posescore.engine.serving.server import DEFAULT_MODEL_REPOSITORY, TritonServer
    from posescore.engine.analysis.live import as_video_poses

    repository = tmp_path_factory.mktemp("live-repository")
    shutil.copytree(DEFAULT_MODEL_REPOSITORY / "live", repository / "live")
    config = repository / "live" / "config.pbtxt"
    text = re.sub(r"max_sequence_idle_microseconds: \d+", "max_sequence_idle_microseconds: 1000000", config.read_text())
    config.write_text(text.replace('string_value: "4096"', 'string_value: "3"'))
    root = tmp_path_factory.mktemp("live-root")
    (root / REFERENCES_FOLDER).mkdir()
    rep = arm_raise()
    write_alphapose(root / REFERENCES_FOLDER / "arm_raise.json",
                    as_video_poses(rep, np.arange(len(rep)) / 30.0, np.arange(len(rep)), "arm_raise", 30.0))
    with TritonServer(model_repository=repository, archive_root=root) as server:
        yield server


def stream_of_reps():
    rep = arm_raise()
    rest = np.repeat(rep[:1], 10, axis=0)
    return np.concatenate([rest, rep, rep[::-1], rest, rep[::2], rep[::-1][::2], rest])


def test_a_session_on_the_server_gives_the_pools_repetitions(triton_server):
    """A blocking session and an asyncio one on the live model give what a LivePool gives alone."""
    import asyncio

    from posescore.clients.live import AsyncLiveSession, LiveSession

    rep, stream = arm_raise(), stream_of_reps()
    pool = LivePool()
    pool.open("a", rep, 30.0, 30.0)
    offline = [e for n, p in enumerate(stream) for e in pool.step([("a", p, n / 30.0, n)])["a"] if e["event"] == "rep"]
    offline += pool.close("a")["new"]
    strip = lambda reps: [{k: v for k, v in r.items() if k not in ("event", "stream")} for r in reps]  # noqa: E731
    with LiveSession(triton_server.grpc_url, rep, reference_fps=30.0, fps=30.0, name="a") as live:
        assert live.started["reference_frames"] == 20
        events = [e for n, p in enumerate(stream) for e in live.send(p, n / 30.0, n)]
        end = live.end()
    assert len([e for e in events if e["event"] == "frame"]) == len(stream)
    assert end["count"] == 4 and strip(end["reps"]) == strip(offline)

    async def play():
        live = await AsyncLiveSession.open(triton_server.grpc_url, rep, reference_fps=30.0, fps=30.0, name="a")
        for n, p in enumerate(stream):
            await live.send(p, n / 30.0, n)
        return await live.end()

    assert strip(asyncio.run(play())["reps"]) == strip(offline)


def test_the_live_model_refuses_bad_frames_and_keeps_the_stream(triton_server):
    import tritonclient.grpc as grpcclient

    from posescore.clients import PoseScoreError
    from posescore.clients.live import LiveSession

    rep, stream = arm_raise(), stream_of_reps()
    with LiveSession(triton_server.grpc_url, rep, reference_fps=30.0, fps=30.0) as live:
        for n, pose in enumerate(stream[:40]):
            live.send(pose, n / 30.0, n)
        with pytest.raises(PoseScoreError, match=r"frame time 0.5 s is not after the last one") as err:
            live.send(stream[40], 0.5, 40)
        assert err.value.status == "INVALID_ARGUMENT"
        with pytest.raises(PoseScoreError, match="NaN"):
            live.send(np.full((17, 3), np.nan, np.float32), 40 / 30.0, 40)
        for n, pose in enumerate(stream[40:], 40):
            live.send(pose, n / 30.0, n)
        assert live.end()["count"] == 4  # nothing found before the errors was lost
    with pytest.raises(PoseScoreError, match=r"reference: expected poses \[R, 17, 3\] with R >= 2"):
        LiveSession(triton_server.grpc_url, rep[:1], reference_fps=30.0)
    # Raw gRPC: a frame of a stream never started, and a second START on a live ID.
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    answers = []
    client.start_stream(callback=lambda result, error: answers.append(error))
    pose = grpcclient.InferInput("pose", [1, 1, 17, 3], "FP32")
    pose.set_data_from_numpy(rep[:1][None])
    time = grpcclient.InferInput("time", [1, 1], "FP64")
    time.set_data_from_numpy(np.zeros((1, 1)))
    client.async_stream_infer("live", [pose, time], sequence_id=12345)
    reference = grpcclient.InferInput("reference", [1, 20, 17, 3], "FP32")
    reference.set_data_from_numpy(rep[None])
    options = grpcclient.InferInput("options", [1, 1], "BYTES")
    options.set_data_from_numpy(np.array([[b'{"reference_fps": 30}']], np.object_))
    for _ in range(2):
        client.async_stream_infer("live", [pose, time, reference, options], sequence_id=777, sequence_start=True)
    client.stop_stream()
    client.close()
    assert "START" in str(answers[0]) and answers[1] is None and "stream 777: already started" in str(answers[2])


def test_a_full_server_says_so_and_idle_streams_are_freed(small_live_server):
    """max_sequences=3: a fourth stream is refused with RESOURCE_EXHAUSTED naming the bound; streams
    left without END are freed after the idle time, and new ones fit again; a reference named from
    the server's library."""
    import time as clock

    from posescore.clients import PoseScoreError
    from posescore.clients.live import LiveSession

    rep, url = arm_raise(), small_live_server.grpc_url
    sessions = [LiveSession(url, reference_name="arm_raise", fps=30.0, timeout=10.0) for _ in range(3)]
    assert sessions[0].started["reference_frames"] == 20
    with pytest.raises(PoseScoreError, match="RESOURCE_EXHAUSTED: .*max_sequences=3") as err:
        LiveSession(url, rep, reference_fps=30.0, reopen_timeout=2.0)
    assert err.value.status == "RESOURCE_EXHAUSTED"
    with pytest.raises(PoseScoreError, match="no reference 'nope' in the server's library"):
        LiveSession(url, reference_name="nope")
    for session in sessions:
        session.close()  # vanished: no END
    clock.sleep(1.5)
    for _ in range(2):  # the idle ones are freed when the next request comes
        sessions = [LiveSession(url, rep, reference_fps=30.0, reopen_timeout=5.0) for _ in range(3)]
        for n, pose in enumerate(stream_of_reps()):
            for session in sessions:
                session.send(pose, n / 30.0, n)
        assert [s.end()["count"] for s in sessions] == [4, 4, 4]


def test_a_stream_goes_on_on_another_server_with_its_count(triton_server, small_live_server):
    """The server a session streams to dies mid-stream: the session reopens on the other one, sends
    the frames since the last repetition again, and ends with every repetition, numbered on."""
    from posescore.clients.live import LiveSession
    from posescore.engine.serving.server import TritonServer

    rep, stream = arm_raise(), np.concatenate([stream_of_reps()] * 2)
    with TritonServer(models=["live"]) as doomed:
        live = LiveSession([doomed.grpc_url, triton_server.grpc_url], rep, reference_fps=30.0, fps=30.0,
                           timeout=10.0)
        reps = []
        for n, pose in enumerate(stream[:75]):
            reps += [e["rep"] for e in live.send(pose, n / 30.0, n) if e["event"] == "rep"]
        os.killpg(os.getpgid(doomed.process.pid), signal.SIGKILL)  # the server dies mid-repetition
        assert 2 <= len(reps) <= 3 and live.url == doomed.grpc_url
    for n, pose in enumerate(stream[75:], 75):
        reps += [e["rep"] for e in live.send(pose, n / 30.0, n) if e["event"] == "rep"]
    end = live.end()
    assert live.reopened == 1 and live.url == triton_server.grpc_url
    assert reps == list(range(1, len(reps) + 1)) and end["count"] == 8 and [r["rep"] for r in end["reps"]] == list(range(1, 9))
    assert [r["backwards"] for r in end["reps"]] == [False, True, False, True] * 2


def test_sides_a_frame_at_a_time_are_the_whole_sequences_last_labels():
    """kernels.consistent_sides_step on each new frame labels it as consistent_sides of the stream
    so far labels its last frame: a flicker of left and right is undone as it comes."""
    from posescore import kernels
    from posescore.kernels.skeleton import FLIP_PERMUTATION

    rng = np.random.default_rng(3)
    poses = arm_raise(40)
    poses[..., :2] += rng.normal(0, 2, poses[..., :2].shape)
    flicker = poses.copy()
    flicker[[12, 13, 27]] = flicker[[12, 13, 27]][:, list(FLIP_PERMUTATION)]  # the model's labels swapped
    streams = np.stack([poses, flicker])
    previous, cost = np.full((2, 17, 3), np.nan, np.float32), np.zeros((2, 2))
    for t in range(len(poses)):
        swap, cost = kernels.consistent_sides_step(previous, streams[:, t], cost)
        previous = streams[:, t]
        for n in range(2):
            whole = kernels.consistent_sides(streams[n, :t + 1])[-1]
            assert bool(swap[n]) == (not np.array_equal(whole, streams[n, t])), (n, t)
    assert swap[1] == False and bool(kernels.consistent_sides_step(previous, flicker[27:28].repeat(2, 0), cost)[0][1])  # noqa: E712
