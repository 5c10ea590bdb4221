"""``posescore reps`` on sets built with ffmpeg, as the issue's reporter built theirs: one repetition
cut from a real clip, re-timed with ``setpts`` and ``fps=60`` (frames duplicated or dropped),
played backwards with ``reverse``, with rests (the repetition's first frame held 0.5 s) and without,
joined with the concat filter. Every real clip here: Sports2D's demo (30 fps: a man on a box
raising his arms with a hop) and OpenCV's vtest.avi (10 fps: a woman walking towards the camera,
one stride; at 60 fps each of its frames is shown six times at 1x, ten at 0.6x)."""

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from posescore.engine.analysis.people import performer_of, performer_rows, track_people
from posescore.engine.analysis.reps import REP_CLEAR_SHARE, Rep, _clear_part, search_grids
from posescore.engine.analysis.report import compare_poses
from posescore.engine.jobs.extract import extract_poses
from posescore.engine.jobs.reps import reps_poses
from posescore.engine.media.samples import SAMPLE_VIDEO, fetch_sports2d

FPS = 60
REST = "rest"
#: The set: back to back at 0.6x, 1.7x and backwards (None), then a rest before 0.8x and 1.3x.
PLAN = (0.6, 1.7, None, REST, 0.8, REST, 1.3)
SPEEDS = [step for step in PLAN if step != REST]
BACKWARDS = SPEEDS.index(None)
#: (source, first, last frame of the repetition, width the frames are scaled to)
CLIPS = {"sports2d": ("sports2d", 4, 30, 640), "vtest": (SAMPLE_VIDEO, 600, 611, 768)}
#: The clips also posed as a 60 fps reference, as the reporter's (vtest's 10 fps frames would each be
#: shown six times: its first pose held 0.1 s, which no one can tell from a rest in that pose).
REFERENCE_60 = ("sports2d",)
# Lossless parts (each is encoded once more when joined), the set as a camera would write it.
LOSSLESS = ("-an", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", "-pix_fmt", "yuv444p")
ENCODE = ("-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p")


def ffmpeg(*args):
    out = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *map(str, args)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def frame_count(path) -> int:
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                          "stream=nb_read_frames", "-of", "csv=p=0", str(path)], capture_output=True, text=True,
                         timeout=120)
    return int(out.stdout.strip())


def ffmpeg_set(source: Path, cut: str, dst: Path, plan) -> list[tuple[int, int]]:
    """Write ``dst``: the repetition that the filter ``cut`` takes from ``source`` once per step of
    ``plan`` (a speed: ``setpts`` and ``fps``; None: ``reverse``; REST: its first frame held 0.5 s
    with ``tpad``), at FPS, each part losslessly, then joined with the concat filter. Returns each
    repetition's true ``(first, last)`` frames (each part is counted once written: the fps filter
    decides how many frames a re-timed part has)."""
    steps = {REST: "trim=end_frame=1,setpts=PTS-STARTPTS,tpad=stop_mode=clone:stop_duration=0.5",
             None: "reverse,setpts=PTS-STARTPTS"}
    parts, bounds, at = [], [], 0
    for n, step in enumerate(plan):
        part = dst.with_name(f"{dst.stem}-{n}.mkv")
        vf = steps[step] if step in steps else f"setpts=(PTS-STARTPTS)/{step}"
        ffmpeg("-i", source, "-vf", f"{cut},{vf},fps={FPS}", *LOSSLESS, part)
        count = frame_count(part)
        if step != REST:
            bounds.append((at, at + count - 1))
        parts.append(part)
        at += count
    inputs = [arg for part in parts for arg in ("-i", part)]
    streams = "".join(f"[{n}:v]" for n in range(len(parts)))
    ffmpeg(*inputs, "-filter_complex", f"{streams}concat=n={len(parts)}:v=1:a=0,fps={FPS}", *ENCODE, dst)
    assert frame_count(dst) == at
    for part in parts:
        part.unlink()
    return bounds


@pytest.fixture(scope="module")
def clip_sets(tmp_path_factory, triton_server):
    """``clip name -> (source fps, {video kind: VideoPoses}, true bounds)``: each clip's videos
    built and posed once, on first use."""
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("Debian's ffmpeg is not installed (make media installs it)")
    built = {}

    def get(name):
        if name not in built:
            built[name] = build_clip(name, tmp_path_factory.mktemp(f"reps-ffmpeg-{name}"), triton_server.grpc_url)
        return built[name]
    return get


def build_clip(name, folder: Path, url):
    source, first, last, width = CLIPS[name]
    if source == "sports2d":
        try:
            source = fetch_sports2d()
        except RuntimeError as err:
            pytest.skip(f"Sports2D's demo video cannot be fetched: {err}")
    elif not Path(source).exists():
        pytest.skip(f"{source} is missing (make media installs Debian's opencv-doc)")
    cut = f"trim=start_frame={first}:end_frame={last + 1},setpts=PTS-STARTPTS,scale={width}:-2"
    videos = {"reference": folder / "reference.mp4", "attempt": folder / "set.mp4"}
    ffmpeg("-i", source, "-vf", cut, *ENCODE, videos["reference"])
    assert frame_count(videos["reference"]) == last - first + 1
    if name in REFERENCE_60:  # the reporter's: a 60 fps reference
        videos["reference60"] = folder / "reference60.mp4"
        ffmpeg("-i", source, "-vf", f"{cut},fps={FPS}", *ENCODE, videos["reference60"])
    bounds = ffmpeg_set(source, cut, videos["attempt"], PLAN)
    poses = {kind: extract_poses(path, url) for kind, path in videos.items()}
    return poses["reference"].info.fps, poses, bounds


def tolerance(source_fps: float, speed: float | None) -> int:
    """Frames a bound may be off: one source frame at the repetition's speed (its copies at 60 fps
    cannot be told from the performer holding that pose) plus 0.1 s."""
    return math.ceil(FPS / (source_fps * (speed or 1.0))) + round(0.1 * FPS)


@pytest.mark.parametrize("name, kind", [("sports2d", "reference"), ("sports2d", "reference60"), ("vtest", "reference")])
def test_reps_finds_every_retimed_repetition_of_an_ffmpeg_set(clip_sets, name, kind):
    source_fps, poses, bounds = clip_sets(name)
    reference, attempt = poses[kind], poses["attempt"]
    result = reps_poses(reference, attempt)  # the performers chosen as the CLI chooses them
    # The performer is followed across the set's cuts (where vtest's walker jumps back to the
    # stride's first frame): one track, present in nearly every frame of the set.
    performer = performer_of(attempt, track_people(attempt), result["attempt"]["performer_track"])
    assert performer.present.mean() >= 0.95, result["attempt"]
    found = [(r["start_frame"], r["end_frame"]) for r in result["reps"]]
    assert result["count"] == len(SPEEDS), (found, bounds)  # the rests are not counted
    for (first, last), (want_first, want_last), speed in zip(found, bounds, SPEEDS):
        tol = tolerance(source_fps, speed)
        assert abs(first - want_first) <= tol and abs(last - want_last) <= tol, (speed, found, bounds, tol)
    reps = result["reps"]
    assert [r["backwards"] for r in reps] == [n == BACKWARDS for n in range(len(SPEEDS))], found
    assert result["flagged"] == [BACKWARDS + 1], [r["score"] for r in reps]
    forwards = [r["score"] for n, r in enumerate(reps) if n != BACKWARDS]
    assert reps[BACKWARDS]["score"] <= min(forwards) - 15.0
    # A re-timed repetition scores as compare scores its true segment (91 to 99 on these sets: the
    # poses of re-encoded frames are not the reference's to the pixel), give or take its bounds.
    r_perf = performer_of(reference, track_people(reference), result["reference"]["performer_track"])
    for n, ((first, last), rep) in enumerate(zip(bounds, reps)):
        if n != BACKWARDS:
            rows = np.arange(first, last + 1)
            truth = compare_poses(reference, attempt.select(rows),
                                  performers=(r_perf, performer_rows(performer, rows)))["score"]
            assert rep["score"] >= 85.0 and rep["score"] >= truth - 5.0, (n, rep["score"], truth)


def test_the_tracker_joins_a_performer_across_cuts_but_never_two_people(clip_sets):
    # vtest's set: two walkers and a man standing; at every cut each walker jumps back to where the
    # stride began. Each walker is one track over the whole set, and no track holds both.
    _, poses, _ = clip_sets("vtest")
    attempt = poses["attempt"]
    tracks = track_people(attempt)
    walkers = []
    for track in np.unique(tracks[tracks >= 0]):
        performer = performer_of(attempt, tracks, track)
        if performer.present.mean() >= 0.95:
            walkers.append(performer)
    assert len(walkers) == 2
    rows = np.flatnonzero(walkers[0].present & walkers[1].present)
    centres = [(w.boxes[rows, 0] + w.boxes[rows, 2]) / 2 for w in walkers]
    # The two walkers are apart in every frame (about 150 px) and each stays on its own side.
    assert np.all(np.abs(centres[0] - centres[1]) > 60)
    assert np.all(np.sign(centres[0] - centres[1]) == np.sign(centres[0][0] - centres[1][0]))


def test_search_grids_sample_both_movements_at_the_lower_rate():
    # A 10 fps reference of 12 frames and a 60 fps attempt of 3 s: both at 10 fps, in time.
    reference_rows, attempt_rows, rate = search_grids(12, 10.0, np.arange(180) / 60.0, 60.0)
    assert rate == 10.0
    assert reference_rows.tolist() == list(range(12))
    assert attempt_rows.tolist() == list(range(0, 180, 6))
    # A 60 fps reference of 1 s and a 30 fps attempt with a gap (frames without the performer).
    times = np.concatenate([np.arange(0, 30), np.arange(45, 60)]) / 30.0
    reference_rows, attempt_rows, rate = search_grids(61, 60.0, times, 30.0)
    assert rate == 30.0 and reference_rows.tolist() == list(range(0, 61, 2))
    assert attempt_rows.tolist() == list(range(len(times)))  # the nearest frame to each tick, once
    # No frame rate for the attempt (a pose JSON without one): measured from its times.
    assert search_grids(12, 10.0, np.arange(180) / 60.0, 0.0)[2] == 10.0


def test_clear_part_is_the_longest_run_clear_of_taken_repetitions():
    taken = [Rep(10, 20, 90.0), Rep(40, 50, 90.0)]
    assert _clear_part(5, 25, taken) == (5, 9)
    assert _clear_part(18, 45, taken) == (21, 39)
    assert _clear_part(12, 18, taken)[1] < _clear_part(12, 18, taken)[0]  # nothing clear
    assert _clear_part(0, 100, []) == (0, 100)
    assert 0.5 < REP_CLEAR_SHARE < 1.0


def play_live(reference, attempt, result):
    """Every frame of ``attempt`` through a LivePool, the performers ``reps`` chose for ``result``:
    the ``rep`` events, in order, the end event's new ones included."""
    from posescore.engine.analysis.live import LivePool

    r_perf = performer_of(reference, track_people(reference), result["reference"]["performer_track"])
    a_perf = performer_of(attempt, track_people(attempt), result["attempt"]["performer_track"])
    pool = LivePool()
    pool.open("set", r_perf.poses[r_perf.present], reference.rate, attempt.rate)
    reps = []
    for row in range(len(attempt)):
        pose = a_perf.poses[row] if a_perf.present[row] else None
        events = pool.step([("set", pose, attempt.times[row], attempt.frame_indices[row])])["set"]
        assert [e["event"] for e in events][0] == "frame"
        reps += [e for e in events if e["event"] == "rep"]
    end = pool.close("set")
    assert end["reps"] == [{k: v for k, v in e.items() if k not in ("event", "stream")} for e in reps + end["new"]]
    return reps + end["new"]


@pytest.mark.parametrize("name, kind", [("sports2d", "reference"),
                                        pytest.param("sports2d", "reference60", marks=pytest.mark.xfail(
                                            strict=True, reason="the backwards repetition (scoring 3) ends 9 "
                                            "frames (0.15 s) before the offline bound at 60 fps: a bad fit's "
                                            "bounds depend on the frames searched around it")),
                                        pytest.param("vtest", "reference", marks=pytest.mark.xfail(
                                            strict=True, reason="live also reports the end of the backwards "
                                            "stride and the rest after it (231-263, 76): the window it searches "
                                            "holds no better repetition to outrank it, as the whole set does"))])
def test_live_gives_the_repetitions_reps_gives(clip_sets, name, kind):
    _, poses, _ = clip_sets(name)
    reference, attempt = poses[kind], poses["attempt"]
    offline = reps_poses(reference, attempt)
    live = play_live(reference, attempt, offline)
    assert len(live) == offline["count"], [(r["start_frame"], r["end_frame"], r["score"]) for r in live]
    for got, want in zip(live, offline["reps"]):
        assert abs(got["start_frame"] - want["start_frame"]) <= 2 and abs(got["end_frame"] - want["end_frame"]) <= 2
        assert got["score"] == pytest.approx(want["score"], abs=1.0)
        assert got["backwards"] == want["backwards"] and got["flagged"] == want["flagged"]
