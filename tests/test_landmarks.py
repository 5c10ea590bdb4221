"""The landmarks model (BlazePose GHUM full): the conversion against the LiteRT interpreter on real
crops, the served answer against mediapipe's own pose solution on real frames, the crops' alignment
(a frame turned a quarter gives the same landmarks, turned), and `posescore pose --landmarks` with
its .trc."""

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from posescore import kernels
from posescore.engine.media.samples import fetch_sports2d
from posescore.engine.media.video import iter_frames
from posescore.engine.serving.detector import pose_detector
from posescore.engine.serving.export import landmark_onnx_path, landmark_tflite, onnx_path
from posescore.engine.serving.landmarker import OUTPUTS, Landmarker
from posescore.kernels.skeleton import LM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle_mediapipe import ORACLE_PYTHON, run_oracle  # noqa: E402

DATA = Path("/usr/share/doc/opencv-doc/examples/data")
needs_oracle = pytest.mark.skipif(not ORACLE_PYTHON.exists(), reason="the oracle environment: run `make oracle`")


@pytest.fixture(scope="module")
def frames():
    """Real frames no one here made: three photographs and three frames of Sports2D's demo (a
    walker and a jumper), uint8 RGB."""
    images = [cv2.imread(str(DATA / name))[:, :, ::-1].copy() for name in ("messi5.jpg", "basketball1.png",
                                                                            "basketball2.png")]
    demo = fetch_sports2d()
    return images + [next(iter_frames(demo, start=t)).rgb for t in (2.5, 4.0, 5.5)]


def _served(url, frame):
    client = grpcclient.InferenceServerClient(url)
    tensor = grpcclient.InferInput("frames", [1, *frame.shape], "UINT8")
    tensor.set_data_from_numpy(frame[None])
    result = client.infer("landmarks", [tensor])
    count = int(result.as_numpy("count").reshape(-1)[0])
    return (result.as_numpy("keypoints")[0, :count], result.as_numpy("landmarks")[0, :count],
            result.as_numpy("world_landmarks")[0, :count], result.as_numpy("pose_flags")[0, :count])


@needs_oracle
def test_the_converted_model_matches_litert_on_real_crops(frames, tmp_path):
    """posescore's TFLite-to-ONNX conversion, run in onnxruntime, against the TFLite file itself in
    the LiteRT interpreter, on the crops of every person of the real frames."""
    detector = pose_detector(str(onnx_path()), {})
    landmarker = Landmarker(str(landmark_onnx_path()))
    crops = []
    for frame in frames:
        people = detector.detect(frame[None])
        count = int(people.counts[0])
        rois = kernels.landmark_rois(people.keypoints[0, :count], people.boxes[0, :count])
        crops.append(landmarker.crops(frame, rois))
    crops = np.concatenate(crops)
    assert len(crops) >= 8
    np.save(tmp_path / "crops.npy", crops)
    run_oracle("litert", landmark_tflite(), tmp_path / "crops.npy", tmp_path / "litert.npz")
    expected = np.load(tmp_path / "litert.npz")
    got = dict(zip(OUTPUTS, landmarker.run(crops)))
    # Landmarks in crop pixels (of 256) and logits, the pose flag, heatmap logits, world metres.
    for name, bound in (("Identity", 0.05), ("Identity_1", 1e-3), ("Identity_3", 0.01), ("Identity_4", 1e-3)):
        assert got[name].shape == expected[name].shape, name
        assert np.abs(got[name] - expected[name]).max() < bound, (name, np.abs(got[name] - expected[name]).max())


@needs_oracle
def test_served_landmarks_agree_with_mediapipes_own_pose_solution(triton_server, frames, tmp_path):
    """The landmarks model through Triton (pose's people through BLS, our aligned crops) against
    mediapipe's pose solution (its own detector and crops) on the same real frames. The model is
    the same; the crops are not, and moving a crop by 2% of its side moves the model's own answer
    by 1.5 to 3 px (docs/BENCHMARKS.md): the bounds are of that order, in the person's height."""
    np.save(tmp_path / "frames.npy", np.array(frames[3:]))  # one size: Sports2D's frames
    for n, frame in enumerate(frames[:3]):
        np.save(tmp_path / f"image{n}.npy", frame[None])
    oracle = {}
    run_oracle("solution", tmp_path / "frames.npy", tmp_path / "frames.npz")
    found = np.load(tmp_path / "frames.npz")
    for n in range(3):
        run_oracle("solution", tmp_path / f"image{n}.npy", tmp_path / f"image{n}.npz")
        image = np.load(tmp_path / f"image{n}.npz")
        oracle[n] = image["landmarks"][0], image["world"][0]
    for n in range(3):
        oracle[3 + n] = found["landmarks"][n], found["world"][n]
    relative, world_cm = [], []
    for n, frame in enumerate(frames):
        theirs, their_world = oracle[n]
        assert np.isfinite(theirs).all(), f"mediapipe found no one in frame {n}"
        _, marks, world, flags = _served(triton_server.grpc_url, frame)
        # The person mediapipe chose: the nearest hips.
        person = int(np.argmin(np.linalg.norm(marks[:, 23:25, :2].mean(1) - theirs[23:25, :2].mean(0), axis=1)))
        assert flags[person] > 0.5
        height = np.ptp(theirs[:, 1])
        error = np.linalg.norm(marks[person, :, :2] - theirs[:, :2], axis=1)
        assert np.median(error) < 0.025 * height, (n, np.median(error), height)
        relative.append(error / height)
        world_cm.append(np.linalg.norm(world[person] - their_world, axis=1) * 100)
        # The feet, what gait reads: within 4% of the height in the median, 8% each (a far foot is
        # half hidden).
        feet = [LM[f"{s}_{p}"] for s in ("left", "right") for p in ("heel", "foot_index")]
        if n >= 3:  # Sports2D's frames show the whole body
            assert np.median(error[feet]) < 0.04 * height and (error[feet] < 0.08 * height).all(), (n, error[feet])
    assert np.median(np.concatenate(relative)) < 0.01
    assert np.median(np.concatenate(world_cm)) < 6.0


def test_a_frame_turned_a_quarter_gives_the_same_landmarks_turned(triton_server, frames):
    """The crops are aligned by the hips and shoulders, as BlazePose's own detector aligns them: a
    frame turned 90 degrees gives the same landmarks, turned with it (the walker of Sports2D's
    demo), and world landmarks that stay put."""
    frame = frames[4]
    height, width = frame.shape[:2]
    turned = np.ascontiguousarray(np.rot90(frame, k=-1))  # clockwise: (x, y) -> (height - y, x)
    keypoints, marks, world, _ = _served(triton_server.grpc_url, frame)
    keypoints_t, marks_t, world_t, _ = _served(triton_server.grpc_url, turned)
    person = int(np.argmax(marks[:, :, 1].max(1) - marks[:, :, 1].min(1)))
    expected = np.stack([height - marks[person, :, 1], marks[person, :, 0]], -1)
    other = int(np.argmin(np.linalg.norm(marks_t[:, :, :2].mean(1) - expected.mean(0), axis=1)))
    body = np.ptp(marks[person, :, 1])
    error = np.linalg.norm(marks_t[other, :, :2] - expected, axis=1)
    assert np.median(error) < 0.02 * body, (np.median(error), body)
    # World landmarks are turned with the image's axes too: turned back, they agree.
    back = np.stack([world_t[other, :, 1], -world_t[other, :, 0], world_t[other, :, 2]], -1)
    assert np.median(np.linalg.norm(back - world[person], axis=1)) < 0.05


def test_rois_hold_the_whole_body_upright(frames):
    """Each ROI is a square centred on the hips, its up from the hips to the shoulders, holding
    every keypoint the pose model saw, with BlazePose's margin."""
    detector = pose_detector(str(onnx_path()), {})
    people = detector.detect(frames[3][None])
    count = int(people.counts[0])
    keypoints = people.keypoints[0, :count]
    rois = kernels.landmark_rois(keypoints, people.boxes[0, :count])
    for pose, roi in zip(keypoints, rois):
        centre, side, up = roi[:2], roi[2], roi[3:5]
        assert np.allclose(centre, pose[[11, 12], :2].mean(0), atol=1e-3)
        assert up[1] < -0.9  # standing: up is the image's up
        seen = pose[:, 2] > 0.3
        across = np.abs((pose[seen, :2] - centre) @ np.stack([[-up[1], up[0]], up], 1))
        assert (across < side / 2 / 1.1).all()
    # A crop's affine map sends the crop's centre to the ROI's centre (OpenCV's pixel centres).
    affine = kernels.crop_affines(rois[:1])[0]
    centre = affine @ np.array([127.5, 127.5, 1.0])
    assert np.allclose(centre + 0.5, rois[0, :2], atol=1e-6)


def test_pose_landmarks_writes_json_and_trc_for_opensim(triton_server, tmp_path):
    """`posescore pose --landmarks --trc` on a real clip: every record with 33 landmarks and world
    coordinates, read back the same; a .trc with Pose2Sim's marker names (OpenCap's on request)
    whose rows are the performer's world landmarks in OpenSim's axes (Y up)."""
    from posescore.cli import main
    from posescore.engine.media.encode import write_video
    from posescore.engine.media.pose_files import read_poses_json

    clip = tmp_path / "walk.mp4"
    write_video(clip, [f.rgb for f in iter_frames(fetch_sports2d(), start=3.0, duration=0.5, max_side=884)], 30)
    out, trc = tmp_path / "walk.json", tmp_path / "walk.trc"
    assert main(["pose", str(clip), "--landmarks", "--trc", str(trc), "-o", str(out), "--quiet",
                 "--url", triton_server.grpc_url]) == 0
    poses = read_poses_json(out)
    assert poses.landmarks.shape[2:] == (33, 5) and poses.world.shape[2:] == (33, 3)
    assert len(poses) == 15 and (poses.landmarks[..., 3].max((1, 2)) > 0.9).all()
    lines = trc.read_text().splitlines()
    assert lines[0].startswith("PathFileType\t4\t(X/Y/Z)\twalk.trc")
    rate, _, frames, markers, units = lines[2].split("\t")[:5]
    assert (float(rate), int(frames), int(markers), units) == (30.0, 15, 27, "m")
    names = lines[3].split("\t")[2::3]
    assert names[:6] == ["Hip", "RHip", "RKnee", "RAnkle", "RHeel", "RBigToe"] and "Neck" in names
    rows = np.array([[float(v) for v in line.split("\t")] for line in lines[6:]])
    assert rows.shape == (15, 2 + 27 * 3) and np.allclose(rows[:, 0], np.arange(1, 16))
    xyz = rows[:, 2:].reshape(15, 27, 3)
    assert np.abs(xyz[:, 0]).max() < 0.02  # the hips' midpoint is the world's origin
    heel, nose = xyz[:, names.index("RHeel")], xyz[:, names.index("Nose")]
    assert (nose[:, 1] - heel[:, 1] > 1.2).all()  # Y up: the nose a standing height above the heel
    assert main(["pose", str(out), "--trc", str(tmp_path / "opencap.trc"), "--markers", "opencap", "--quiet"]) == 0
    assert "midHip" in (tmp_path / "opencap.trc").read_text().splitlines()[3]
