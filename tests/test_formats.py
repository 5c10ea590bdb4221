"""engine.media.pose_files: AlphaPose / COCO results JSON round trip, the seed's records, OpenPose COCO-18 and
BODY_25 mapped to COCO-17, and errors that name the file, the record and the field."""

import json

import numpy as np
import pytest

from posescore.engine.jobs.inputs import load_poses
from posescore.engine.media.pose_files import (OPENPOSE_BODY25_TO_COCO17, OPENPOSE_COCO18_TO_COCO17, is_poses_json,
                                               read_poses_json, records_to_poses, to_alphapose, write_alphapose)
from posescore.engine.poses import VideoError, VideoInfo, VideoPoses
from posescore.kernels.skeleton import KEYPOINT_NAMES

COCO18 = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
          "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
          "right_eye", "left_eye", "right_ear", "left_ear")
BODY25 = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
          "left_wrist", "mid_hip", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
          "right_eye", "left_eye", "right_ear", "left_ear", "left_big_toe", "left_small_toe", "left_heel",
          "right_big_toe", "right_small_toe", "right_heel")

# The seed's input record (seeds/000: AlphaPose output of an image), keypoints completed to 17.
SEED = {"image_id": "TKD_1.png", "category_id": 1,
        "keypoints": [706.6857299804688, 165.55355834960938, 0.9743795990943909,
                      722.0609741210938, 142.49066162109375, 0.9858314990997314] + [500.0, 400.0, 0.5] * 15,
        "score": 3.09490704536438, "box": [536.5984497070312, 60.53300857543945, 425.3385009765625, 787.2135124206543],
        "idx": [0.0]}


def synthetic(rng, frames=6, people=3, info=None):
    info = info or VideoInfo(path="clip.mp4", width=640, height=480, fps=25.0, frame_count=300, duration=12.0)
    counts = rng.integers(1, people + 1, frames).astype(np.int32)
    counts[0] = people
    keypoints = np.zeros((frames, people, 17, 3), np.float32)
    boxes = np.zeros((frames, people, 4), np.float32)
    scores = np.zeros((frames, people), np.float32)
    tracks = np.full((frames, people), -1, np.int32)
    for row in range(frames):
        n = counts[row]
        keypoints[row, :n, :, :2] = rng.uniform(0, 600, (n, 17, 2))
        keypoints[row, :n, :, 2] = rng.uniform(0, 1, (n, 17))
        corner = rng.uniform(0, 300, (n, 2))
        boxes[row, :n] = np.concatenate([corner, corner + rng.uniform(10, 300, (n, 2))], 1)
        scores[row, :n] = rng.uniform(0.3, 1, n)
        tracks[row, :n] = rng.permutation(7)[:n]
    indices = np.sort(rng.choice(300, frames, replace=False)).astype(np.int64)
    return VideoPoses(info=info, frame_indices=indices, times=(indices / 25.0).astype(np.float32),
                      keypoints=keypoints, boxes=boxes, scores=scores, counts=counts, tracks=tracks)


def test_records_are_alphapose_results():
    vp = synthetic(np.random.default_rng(0))
    vp.frame_indices[0] = 123
    records = to_alphapose(vp)
    assert len(records) == vp.counts.sum()
    first = records[0]
    assert first["image_id"] == "frame_000123" and first["category_id"] == 1
    assert len(first["keypoints"]) == 51 and all(type(v) is float for v in first["keypoints"])
    x1, y1, x2, y2 = vp.boxes[0, 0]
    assert first["box"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])
    assert first["idx"] == vp.tracks[0, 0] and first["score"] == pytest.approx(vp.scores[0, 0])
    assert first["frame"] == 123 and first["time"] == pytest.approx(vp.times[0])
    # Without tracks, idx is the person's index in its frame.
    vp.tracks = None
    assert [r["idx"] for r in to_alphapose(vp)[: vp.counts[0]]] == list(range(vp.counts[0]))
    # A still image's records are named by its file name.
    image = VideoInfo(path="/photos/me.jpg", width=640, height=480, fps=0.0, frame_count=1, duration=0.0, image=True)
    assert to_alphapose(synthetic(np.random.default_rng(1), frames=1, info=image))[0]["image_id"] == "me.jpg"


def test_alphapose_round_trip(tmp_path):
    vp = synthetic(np.random.default_rng(2))
    path = write_alphapose(tmp_path / "poses.json", vp)
    assert json.loads(path.read_text())[0]["category_id"] == 1
    back = read_poses_json(path)
    np.testing.assert_array_equal(back.frame_indices, vp.frame_indices)
    np.testing.assert_array_equal(back.times, vp.times)
    np.testing.assert_array_equal(back.counts, vp.counts)
    np.testing.assert_array_equal(back.keypoints, vp.keypoints)  # exact: float32 -> float -> float32
    np.testing.assert_allclose(back.boxes, vp.boxes, atol=1e-3)
    np.testing.assert_array_equal(back.scores, vp.scores)
    np.testing.assert_array_equal(back.tracks, vp.tracks)
    assert back.info.path == str(path) and back.info.codec == "json" and back.info.fps == 30.0
    assert not list(tmp_path.glob(".*partial*"))


def test_frames_without_people_are_not_written():
    vp = synthetic(np.random.default_rng(3))
    vp.counts[2] = 0
    back = records_to_poses(to_alphapose(vp))
    assert len(back) == len(vp) - 1 and vp.frame_indices[2] not in back.frame_indices
    np.testing.assert_array_equal(back.times, np.delete(vp.times, 2))  # the time axis stays true


def test_seed_record_reads(tmp_path):
    path = tmp_path / "alphapose-TKD_1.json"
    path.write_text(json.dumps([SEED]))
    vp = read_poses_json(path)
    assert len(vp) == 1 and vp.counts.tolist() == [1] and vp.info.image and vp.tracks[0, 0] == 0
    assert vp.keypoints[0, 0, 1].tolist() == pytest.approx([722.0609741210938, 142.49066162109375, 0.9858314990997314])
    np.testing.assert_allclose(vp.boxes[0, 0], [536.5985, 60.533, 961.937, 847.7465], atol=1e-3)
    assert vp.scores[0, 0] == pytest.approx(3.0949, abs=1e-4)  # AlphaPose's score is not 0-1; kept as is


def test_alphapose_video_ids_give_frame_numbers():
    records = [dict(SEED, image_id=name, idx=i) for i, name in enumerate(["10.jpg", "0.jpg", "2.jpg", "0.jpg"])]
    vp = records_to_poses(records, fps=10)
    assert vp.frame_indices.tolist() == [0, 2, 10] and vp.counts.tolist() == [2, 1, 1]
    np.testing.assert_allclose(vp.times, [0.0, 0.2, 1.0])
    assert vp.tracks[0, :2].tolist() == [1, 3]
    # Ids without distinct numbers: the order of first appearance.
    records = [dict(SEED, image_id=name) for name in ["b.png", "a.png", "b.png"]]
    vp = records_to_poses(records)
    assert vp.frame_indices.tolist() == [0, 1] and vp.counts.tolist() == [2, 1]
    # Other categories are skipped; Halpe-26 keypoints keep their 17 COCO points.
    halpe = dict(SEED, keypoints=SEED["keypoints"] + [1.0, 2.0, 0.5] * 9)
    vp = records_to_poses([halpe, dict(SEED, category_id=2)])
    assert vp.counts.tolist() == [1] and vp.keypoints.shape[2] == 17


def test_openpose_coco18_mapping():
    values = np.zeros((18, 3))
    values[:, 0] = np.arange(18) * 10.0
    values[:, 1] = np.arange(18) * 10.0 + 1
    values[:, 2] = 0.8
    values[1] = 0  # hide the neck: it has no COCO-17 counterpart anyway
    vp = records_to_poses({"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": values.ravel().tolist()}]})
    pose = vp.keypoints[0, 0]
    for i, name in enumerate(KEYPOINT_NAMES):
        assert COCO18[OPENPOSE_COCO18_TO_COCO17[i]] == name
        assert pose[i].tolist() == pytest.approx(values[COCO18.index(name)].tolist())
    assert vp.boxes[0, 0].tolist() == pytest.approx([0.0, 1.0, 170.0, 171.0])  # extent of the keypoints
    assert vp.scores[0, 0] == pytest.approx(0.8) and vp.tracks[0, 0] == 0


def test_openpose_body25_mapping_and_missing_points():
    values = np.zeros((25, 3))
    values[:, 0], values[:, 1], values[:, 2] = np.arange(25) * 3.0, np.arange(25) * 5.0, 0.7
    values[BODY25.index("left_knee")] = 0  # OpenPose writes (0, 0, 0) for a missing point
    vp = records_to_poses({"people": [{"pose_keypoints_2d": values.ravel().tolist()}]})
    pose = vp.keypoints[0, 0]
    for i, name in enumerate(KEYPOINT_NAMES):
        assert BODY25[OPENPOSE_BODY25_TO_COCO17[i]] == name
        if name != "left_knee":
            assert pose[i].tolist() == pytest.approx(values[BODY25.index(name)].tolist())
    assert pose[KEYPOINT_NAMES.index("left_knee"), 2] == 0


def test_openpose_folder_of_frames(tmp_path):
    person = {"pose_keypoints_2d": [100.0, 200.0, 0.9] * 18}
    for frame, people in ((12, 2), (3, 1), (7, 0)):
        (tmp_path / f"dance_{frame:012d}_keypoints.json").write_text(
            json.dumps({"version": 1.3, "people": [person] * people}))
    vp = read_poses_json(tmp_path, fps=5)
    assert vp.frame_indices.tolist() == [3, 12] and vp.counts.tolist() == [1, 2]  # frame 7 had no one
    np.testing.assert_allclose(vp.times, [0.6, 2.4])


@pytest.mark.parametrize("content, message", [
    ('[{"image_id": "a.jpg", "keypoints": [1, 2', r"malformed JSON at line 1, column \d+"),
    ("42", "expected a JSON list"),
    ('[{"image_id": "a.jpg", "keypoints": []}, 5]', "record 0: field 'keypoints': expected 51 numbers"),
    ('[{"image_id": "a.jpg"}]', "record 0: missing field 'keypoints'"),
    ('[{"keypoints": []}]', "record 0: missing field 'image_id'"),
    ('[[1, 2, 3]]', "record 0: expected an object"),
    ('[{"image_id": "a.jpg", "keypoints": "1 2 3"}]', "record 0: field 'keypoints': expected a list of numbers"),
    ('[{"image_id": "a.jpg", "keypoints": [' + "1, " * 50 + '"x"]}]', "record 0: field 'keypoints': item 50 is not a number"),
    ('[{"image_id": "a.jpg", "keypoints": [' + "1, " * 50 + "NaN]}]", "record 0: field 'keypoints': item 50 is not finite"),
    ('[{"image_id": "a.jpg", "keypoints": [' + "1, " * 50 + '1], "box": [1, 2, 3]}]', "record 0: field 'box'"),
    ('[{"image_id": "a.jpg", "keypoints": [' + "1, " * 50 + '1], "score": "high"}]', "record 0: field 'score'"),
    ('[{"image_id": null, "keypoints": []}]', "record 0: field 'image_id'"),
    ('{"people": [{"pose_keypoints_2d": [1, 2, 3]}]}', "frame 0, person 0: field 'pose_keypoints_2d': expected 54"),
    ('{"people": [{"face_keypoints_2d": []}]}', "frame 0, person 0: missing field 'pose_keypoints_2d'"),
])
def test_malformed_json_names_the_file_record_and_field(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(VideoError, match=message) as raised:
        read_poses_json(path)
    assert str(raised.value).startswith(f"{path}: ")


def test_second_record_is_named(tmp_path):
    good = dict(SEED)
    bad = dict(SEED, keypoints=SEED["keypoints"][:-1])
    path = tmp_path / "poses.json"
    path.write_text(json.dumps([good, bad]))
    with pytest.raises(VideoError, match="record 1: field 'keypoints': expected 51 numbers .* got 50"):
        read_poses_json(path)


def test_unreadable_files(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        read_poses_json(tmp_path / "missing.json")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(VideoError, match="not UTF-8"):
        read_poses_json(binary)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoError, match="no OpenPose"):
        read_poses_json(tmp_path / "empty")


def test_write_refuses_non_finite_numbers(tmp_path):
    vp = synthetic(np.random.default_rng(4))
    vp.keypoints[0, 0, 0, 0] = np.nan
    with pytest.raises(VideoError, match="non-finite"):
        write_alphapose(tmp_path / "nan.json", vp)
    assert list(tmp_path.iterdir()) == []


def test_load_poses_takes_json_wherever_media_goes(tmp_path):
    vp = synthetic(np.random.default_rng(5))
    path = write_alphapose(tmp_path / "clip.json", vp)
    assert is_poses_json(path) and not is_poses_json(tmp_path / "clip.mp4")
    np.testing.assert_array_equal(load_poses(path).keypoints, vp.keypoints)
    start, end = float(vp.times[1]), float(vp.times[4])
    window = load_poses(path, start=start, duration=end - start)
    np.testing.assert_array_equal(window.frame_indices, vp.frame_indices[1:4])
    with pytest.raises(VideoError, match="needs a pose model client"):
        load_poses(tmp_path / "clip.mp4")


def test_json_text_writes_non_finite_numbers_as_null():
    import json

    from posescore.engine.media.pose_files import json_text

    text = json_text({"score": float("nan"), "steps": [{"d": float("inf")}, 1.5], "n": 3}, indent=1)
    assert json.loads(text) == {"score": None, "steps": [{"d": None}, 1.5], "n": 3}


def test_absurd_pose_json_gets_a_clear_error(tmp_path):
    from posescore.engine.media.pose_files import read_poses_json
    from posescore.engine.poses import VideoError

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(VideoError, match="nested too deeply"):
        read_poses_json(deep)
    huge = tmp_path / "huge.json"
    keypoints = [100.0, 100.0, 0.9] * 17
    keypoints[3] = 1e300
    huge.write_text(json.dumps([{"image_id": "a.jpg", "category_id": 1, "keypoints": keypoints, "score": 0.9}]))
    with pytest.raises(VideoError, match=r"item 3 is 1e\+300, beyond"):
        read_poses_json(huge)


def test_a_huge_integer_in_a_pose_json_is_a_one_line_error(tmp_path):
    """A 4,000-digit integer (which float32 cannot hold) is refused naming the file, not with an
    OverflowError traceback."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    record = {"image_id": "frame_000000", "category_id": 1, "keypoints": [1.0] * 51, "score": 0.9, "box": [0, 0, 9, 9]}
    text = json.dumps([record, {**record, "image_id": "frame_000001"}]).replace("1.0", "1" + "0" * 3999, 1)
    path = tmp_path / "huge.json"
    path.write_text(text)
    exe = Path(sys.executable).with_name("posescore")
    out = subprocess.run([str(exe), "pose", str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.strip() == f"posescore: {path}: an integer of 4,000 digits (100000000000...): not a frame " \
                                 f"index, coordinate or confidence"
