"""engine.analysis.live: streams started, fed and ended; bad input refused with the stream named,
nothing already found lost; many streams advanced in one call agree with each alone."""

import math

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
