"""Scores across views (`--3d`) on real footage of one movement filmed by several cameras at once
(Pose2Sim's demo: four synchronized cameras around the performer), through the landmarks model."""

import json
from dataclasses import replace

import numpy as np
import pytest

from posescore.cli import main
from posescore.clients import PoseScoreClient
from posescore.engine.analysis.answers import movement_score
from posescore.engine.analysis.people import most_moving_performer, track_people
from posescore.engine.analysis.view import align_sequence, performer_in_3d, performers_in_3d
from posescore.engine.jobs.extract import extract_poses
from posescore.engine.media.pose_files import write_alphapose
from posescore.engine.media.samples import fetch_pose2sim

FPS = 20
#: Cameras 1, 2 and 4: 1-2 stand 24 degrees apart, 1-4 and 2-4 about 150 (measured by the fitted
#: rotation between their world landmarks).
CAMERAS = ("cam01", "cam02", "cam04")


@pytest.fixture(scope="module")
def cameras(triton_server, tmp_path_factory):
    """Each camera's pose JSON (with landmarks) and its performer (the one who moves most)."""
    folder = tmp_path_factory.mktemp("views")
    videos = fetch_pose2sim()
    out = {}
    with PoseScoreClient(triton_server.grpc_url, timeout=300) as client:
        for camera in CAMERAS:
            poses = extract_poses(videos[camera], client, fps=FPS, landmarks=True)
            write_alphapose(folder / f"{camera}.json", poses)
            out[camera] = (folder / f"{camera}.json", most_moving_performer(poses, track_people(poses)))
    return out


def _score(reference, attempt) -> float:
    r, a = performers_in_3d(reference, attempt)
    return movement_score(r.poses[r.present], FPS, a.poses[a.present], FPS).score


def _backwards(performer):
    return replace(performer, poses=performer.poses[::-1], present=performer.present[::-1],
                   landmarks=performer.landmarks[::-1], world=performer.world[::-1])


def test_one_movement_seen_by_two_cameras_scores_far_higher_in_3d(cameras):
    """In 2-D the cameras' views differ and the movement scores 0; in world coordinates, turned
    once per performance, it scores far higher, while backwards and frozen stay low."""
    scores = {}
    for a, b in (("cam01", "cam02"), ("cam01", "cam04"), ("cam02", "cam04")):
        ra, rb = cameras[a][1], cameras[b][1]
        flat = movement_score(ra.poses[ra.present], FPS, rb.poses[rb.present], FPS).score
        scores[a, b] = _score(ra, rb)
        assert flat < 5, (a, b, flat)
        assert scores[a, b] > flat + 30, (a, b, scores[a, b], flat)
        assert _score(ra, _backwards(rb)) < 20, (a, b)
        frozen = replace(rb, world=np.repeat(rb.world[len(rb.world) // 2][None], len(rb.world), 0))
        assert _score(ra, frozen) < 20, (a, b)
    assert max(scores.values()) > 75, scores


def test_a_turn_of_the_camera_is_removed_and_a_turn_of_the_body_stays(cameras):
    """The same performance turned by one rotation (another camera's axes) scores as itself; turned
    progressively (the performer turning round during the movement) it does not: one rotation per
    sequence, not per frame."""
    performer = cameras["cam01"][1]

    def turned(angles):
        c, s = np.cos(angles), np.sin(angles)
        rotation = np.zeros((len(angles), 3, 3))
        rotation[:, 0, 0], rotation[:, 0, 2], rotation[:, 1, 1], rotation[:, 2, 0], rotation[:, 2, 2] = c, s, 1, -s, c
        return replace(performer, world=np.einsum("fij,fkj->fki", rotation, performer.world).astype(np.float32))

    frames = len(performer.world)
    assert _score(performer, turned(np.full(frames, np.radians(110.0)))) > 99
    assert _score(performer, turned(np.linspace(0, np.pi, frames))) < 80
    # The alignment itself: a turned sequence aligns onto the same points.
    again = align_sequence(turned(np.full(frames, 1.0)).world, performer.present)
    assert np.allclose(again, align_sequence(performer.world, performer.present), atol=1e-4)


def test_compare_reps_and_find_take_3d(cameras, capsys):
    """The command line: compare --3d reports view 3d and joint angles measured in 3-D (they differ
    from the canonical drawing's); reps --3d and find --3d run on the same files."""
    (a, perf_a), (b, _) = cameras["cam02"], cameras["cam04"]
    assert main(["compare", str(a), str(b), "--3d", "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["view"] == "3d" and report["score"] > 50
    world = performer_in_3d(perf_a)
    step = report["steps"][0]
    row = int(np.flatnonzero(perf_a.frame_indices == step["reference_frame"])[0])
    from posescore.kernels.skeleton import world_joint_angles

    knee = float(world_joint_angles(world.world[row])[0])
    assert step["angles"]["left_knee"]["reference"] == pytest.approx(knee, abs=0.1)
    assert main(["reps", str(a), str(b), "--3d", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["view"] == "3d"
    # The query (camera 2's performer at 0 s) is found in camera 4's video at the same moment;
    # in 2-D, seen from the other side, it is not.
    assert main(["find", str(a), str(b), "--3d", "--json", "--quiet", "--k", "1"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["view"] == "3d" and found["moments"][0]["time"] <= 0.1 and found["moments"][0]["score"] > 60
    assert main(["find", str(a), str(b), "--json", "--quiet", "--k", "1"]) == 0
    flat = json.loads(capsys.readouterr().out)
    assert not flat["moments"] or flat["moments"][0]["score"] < found["moments"][0]["score"] - 20


def test_3d_needs_world_landmarks(tmp_path, capsys):
    poses = tmp_path / "flat.json"
    poses.write_text(json.dumps([{"image_id": f"frame_{n:06d}", "keypoints": [100.0 + n, 100.0, 0.9] * 17,
                                  "frame": n, "time": n / 30} for n in range(10)]))
    assert main(["compare", str(poses), str(poses), "--3d", "--quiet"]) == 1
    assert "has no landmarks; write one with `posescore pose --landmarks`" in capsys.readouterr().err
