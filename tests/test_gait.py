"""`posescore gait` on real footage no one here made: the walker of Sports2D's demo, filmed from the
side, through the landmarks model. Invariances that cannot be tuned to: the same walk played at
half speed has half the cadence and twice the times; mirrored, its left and right swap. Bad input:
no foot in view, fewer than two steps, leaving the frame, a height out of range, a treadmill speed
for an overground walk."""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import browser_dom
from posescore.cli import main
from posescore.clients import PoseScoreClient
from posescore.engine.analysis.gait import GaitError, GaitInput, analyse_gait
from posescore.engine.analysis.people import parse_person, person_by_spec, track_people
from posescore.engine.jobs.extract import extract_poses
from posescore.engine.media.encode import write_video
from posescore.engine.media.pose_files import read_poses_json, write_alphapose
from posescore.engine.media.samples import fetch_sports2d
from posescore.engine.media.video import iter_frames

#: The walker crosses the lawn from 1.3 s and leaves the frame at about 6.6 s.
START, DURATION, FPS = 1.3, 5.7, 15
#: The walker: the person overlapping most the lawn's lower half at 3 s.
WALKER = "0,250,884,497@3"


def _clip(path: Path, mirror: bool = False, crop_top: float | None = None) -> Path:
    frames = (f.rgb for f in iter_frames(fetch_sports2d(), start=START, duration=DURATION, max_side=884))
    if mirror:
        frames = (np.ascontiguousarray(f[:, ::-1]) for f in frames)
    if crop_top is not None:
        frames = (np.ascontiguousarray(f[: int(f.shape[0] * crop_top)]) for f in frames)
    return write_video(path, frames, 30)


@pytest.fixture(scope="module")
def walks(triton_server, tmp_path_factory):
    """The walk and its mirror image, each through the landmarks model at 15 frames a second,
    as pose JSON files."""
    folder = tmp_path_factory.mktemp("walks")
    out = {}
    with PoseScoreClient(triton_server.grpc_url, timeout=300) as client:
        for name, mirror in (("walk", False), ("mirrored", True)):
            video = _clip(folder / f"{name}.mp4", mirror=mirror)
            poses = extract_poses(video, client, fps=FPS, landmarks=True)
            write_alphapose(folder / f"{name}.json", poses)
            out[name] = folder / f"{name}.json"
            out[f"{name}_video"] = video
    return out


def _gait(path: Path, speed: float = 1.0, **options):
    """analyse_gait on the walker of a pose JSON; ``speed`` 0.5 plays it at half speed: every row
    twice on a time axis of the same frame rate (what a video re-timed to 0.5x gives the model,
    frame for frame: the same frames twice)."""
    poses = read_poses_json(path)
    if speed != 1.0:
        rows = np.repeat(np.arange(len(poses)), int(round(1 / speed)))
        poses = poses.select(rows)
        poses.times = (np.arange(len(rows)) / FPS).astype(np.float32)
    spec = WALKER.replace("@3", f"@{3 / speed:g}")
    performer = person_by_spec(poses, track_people(poses), parse_person(spec), source=str(path))
    return analyse_gait(GaitInput(poses.times, performer.present, performer.landmarks, performer.world,
                                  884, 497, str(path)), **options)


def test_a_real_walk_gives_contacts_and_figures_a_physio_expects(walks):
    result = _gait(walks["walk"])
    s = result.summary
    assert result.mode == "walking" and s["steps"] >= 6
    assert 85 <= s["cadence_steps_per_min"] <= 125  # a relaxed walk
    assert 0.55 <= s["contact_time_s"]["mean"] <= 0.95 and 0.55 <= s["duty_factor"]["mean"] <= 0.75
    assert 0.05 <= s["double_support_s"]["mean"] <= 0.3 and "flight_time_s" not in s
    # Contacts alternate, left and right, a step apart; each toe-off comes before that foot's next contact.
    events = sorted((t, side) for side in ("left", "right") for t in result.contacts[side]["ic"])
    assert all(a[1] != b[1] for a, b in zip(events, events[1:]))
    for side in ("left", "right"):
        ics, tos = result.contacts[side]["ic"], result.contacts[side]["to"]
        for ic, next_ic in zip(ics, ics[1:]):
            assert any(ic < to < next_ic for to in tos)
    assert s["foot_strike"]["rearfoot"] >= s["steps"] - 1  # a walk lands on the heel
    assert 0 <= s["knee_flexion_at_contact_deg"]["mean"] <= 30
    assert 10 <= s["overstride_cm"]["mean"] <= 60  # the heel lands ahead of the hips
    assert 2.5 <= result.speed_mps * 3.6 <= 6.5  # km/h, walking
    assert any("leave the frame" in note for note in result.notes)


def test_half_speed_halves_the_cadence_and_doubles_the_times(walks):
    normal, slow = _gait(walks["walk"]), _gait(walks["walk"], speed=0.5)
    n, s = normal.summary, slow.summary
    assert s["steps"] == n["steps"]
    assert s["cadence_steps_per_min"] == pytest.approx(n["cadence_steps_per_min"] / 2, rel=0.03)
    for name in ("contact_time_s", "step_time_s", "stride_time_s", "double_support_s"):
        assert s[name]["mean"] == pytest.approx(2 * n[name]["mean"], rel=0.03), name
    # What is not a time stays.
    assert s["overstride_cm"]["mean"] == pytest.approx(n["overstride_cm"]["mean"], rel=0.03)
    assert s["duty_factor"]["mean"] == pytest.approx(n["duty_factor"]["mean"], rel=0.03)


def test_a_mirrored_walk_swaps_left_and_right(walks):
    """Mirrored, the walker walks the other way and their left foot is the right one's image: the
    left's contacts are where the right's were (within a frame), and the figures of each side swap."""
    normal, mirrored = _gait(walks["walk"]), _gait(walks["mirrored"])
    assert normal.direction == -mirrored.direction
    frame = 1.0 / FPS
    # The model is not exactly symmetric: it stops seeing the mirrored walker's feet a little
    # sooner as they leave the frame. The contacts are compared where both see the feet, a quarter
    # stride in.
    stride = normal.summary["stride_time_s"]["mean"]
    first, last = max(normal.seen[0], mirrored.seen[0]) + stride / 4, min(normal.seen[1], mirrored.seen[1]) - stride / 4
    for side, other in (("left", "right"), ("right", "left")):
        ours, theirs = (np.array([t for t in found.contacts[s]["ic"] if first <= t <= last])
                        for found, s in ((mirrored, side), (normal, other)))
        assert len(ours) == len(theirs) >= 2, (side, ours, theirs)
        assert np.abs(ours - theirs).max() <= frame, (side, ours, theirs)
    n, m = normal.summary, mirrored.summary
    assert m["cadence_steps_per_min"] == pytest.approx(n["cadence_steps_per_min"], rel=0.03)
    for name in ("contact_time_s", "step_time_s"):
        assert m[name]["left"] == pytest.approx(n[name]["right"], rel=0.1), name
        assert m[name]["right"] == pytest.approx(n[name]["left"], rel=0.1), name


def test_gait_cli_writes_every_output(walks, triton_server, tmp_path):
    """From the mirrored video through the server: gait.json, gait.png, the annotated video,
    report.html (rendered by chromium), angles.mot, poses.json and the CSV; the same figures
    again from poses.json without the server."""
    out, csv = tmp_path / "gait", tmp_path / "steps.csv"
    assert main(["gait", str(walks["mirrored_video"]), "--fps", str(FPS), "--person", WALKER, "--out", str(out),
                 "--csv", str(csv), "--quiet", "--url", triton_server.grpc_url]) == 0
    report = json.loads((out / "gait.json").read_text())
    assert report["mode"] == "walking" and report["summary"]["steps"] >= 6
    for name in ("gait.png", "gait.mp4", "report.html", "angles.mot", "poses.json"):
        assert (out / name).stat().st_size > 0, name
    rows = csv.read_text().splitlines()
    assert len(rows) == report["summary"]["steps"] + 1 and rows[0].startswith("side,initial_contact_s")
    mot = (out / "angles.mot").read_text().splitlines()
    assert mot[mot.index("endheader") + 1].split("\t") == ["time", "left_knee_flexion", "right_knee_flexion",
                                                          "left_hip_flexion", "right_hip_flexion"]
    dom = browser_dom(out / "report.html")
    assert f'id="cadence">{report["summary"]["cadence_steps_per_min"]}<' in dom and 'id="steps"' in dom
    assert main(["gait", str(out / "poses.json"), "--person", WALKER, "--out", str(tmp_path / "again"),
                 "--quiet"]) == 0
    again = json.loads((tmp_path / "again" / "gait.json").read_text())
    assert again["summary"] == report["summary"]


def test_bad_inputs_get_clear_errors_and_keep_what_was_found(walks, triton_server, tmp_path, capsys):
    url = triton_server.grpc_url
    # A height or speed out of range: refused before anything is decoded.
    assert main(["gait", str(walks["walk"]), "--height", "3.5", "--quiet"]) == 1
    assert "--height 3.5: expected the runner's height in metres, 0.8 to 2.5" in capsys.readouterr().err
    # A treadmill speed for a walk across the lawn.
    assert main(["gait", str(walks["walk"]), "--person", WALKER, "--treadmill-speed", "10", "--quiet"]) == 1
    assert "this is an overground run; leave --treadmill-speed out" in capsys.readouterr().err
    # Fewer than two steps: the contacts found are kept in gait.json.
    poses = read_poses_json(walks["walk"])
    short = tmp_path / "short.json"
    write_alphapose(short, poses.select((poses.times >= 2.0) & (poses.times < 2.6)))
    assert main(["gait", str(short), "--person", "0,250,884,497@2.3", "--out", str(tmp_path / "short"), "--quiet"]) == 1
    assert "gait needs at least two steps: film a longer run" in capsys.readouterr().err
    kept = json.loads((tmp_path / "short" / "gait.json").read_text())
    assert "at least two steps" in kept["error"] and set(kept["partial"]["contacts"]) == {"left", "right"}
    # No foot in view: the top quarter of the frame (the jumper on the roof, from the waist up).
    top = _clip(tmp_path / "top.mp4", crop_top=0.25)
    assert main(["gait", str(top), "--fps", "5", "--out", str(tmp_path / "top"), "--quiet", "--url", url]) == 1
    assert "no foot is visible" in capsys.readouterr().err
    assert (tmp_path / "top" / "poses.json").exists()  # the landmarks computed are kept


def test_gait_analysis_refuses_a_performer_never_seen():
    frames = 20
    empty = GaitInput(np.arange(frames) / 30, np.zeros(frames, bool), np.zeros((frames, 33, 5)),
                      np.zeros((frames, 33, 3)), 640, 480, "nothing.mp4")
    with pytest.raises(GaitError, match="nothing.mp4: no foot is visible"):
        analyse_gait(empty)
