"""engine.media.video on real media: PyAV decoding (counts, true times under sampling, resizing, rotation
metadata, truncated and fake files), images, encoding and re-timing, and extract_poses through the
real embedded Triton server (keypoints in original pixels, partial results kept on errors)."""

import threading

import av
import cv2
import numpy as np
import pytest

from posescore.clients import PoseResult, PoseScoreClient, PoseScoreError
from posescore.engine.media.samples import BASKETBALL, SAMPLE_VIDEO, ultralytics_asset
from posescore.engine.analysis.people import box_iou
from posescore.engine.media.encode import retime_video, video_codec, write_video
from posescore.engine.jobs.extract import extract_poses
from posescore.engine.poses import VideoError, VideoInfo, VideoPoses
from posescore.engine.media.video import (apply_orientation, decode_size, expected_frames, is_image, iter_frames, probe,
                                          read_image)

VTEST = SAMPLE_VIDEO
BUS = ultralytics_asset("bus.jpg")

pytestmark = pytest.mark.skipif(not VTEST.exists(), reason=f"{VTEST} missing: install Debian's opencv-doc "
                                                           "(`make install` does)")


def first_frames(n, max_side=None):
    return [f.rgb for f, _ in zip(iter_frames(VTEST, max_side=max_side), range(n))]


def _cut_vtest(tmp_path_factory, name, share):
    """A copy of vtest.avi holding only its first ``share`` of bytes."""
    path = tmp_path_factory.mktemp("bad") / name
    data = VTEST.read_bytes()
    path.write_bytes(data[: int(len(data) * share)])
    return path


@pytest.fixture(scope="module")
def truncated(tmp_path_factory):
    """vtest.avi cut at 60% of its bytes (the last frame in it is cut short)."""
    return _cut_vtest(tmp_path_factory, "truncated.avi", 0.6)


@pytest.fixture(scope="module")
def short_truncated(tmp_path_factory):
    """vtest.avi cut at 3% of its bytes: a few good frames, then a broken one."""
    return _cut_vtest(tmp_path_factory, "short.avi", 0.03)


@pytest.fixture(scope="module")
def text_mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "notes.mp4"
    path.write_text("this is a text file, not a video\n" * 50)
    return path


# -- probing and decoding -------------------------------------------------------------------------
def test_probe_vtest():
    info = probe(VTEST)
    assert (info.width, info.height, info.fps, info.frame_count) == (768, 576, 10.0, 795)
    assert info.duration == pytest.approx(79.5)
    assert (info.rotation, info.orientation, info.image) == (0, "none", False)
    assert info.path == str(VTEST) and info.codec


def test_decodes_every_frame_with_true_times():
    frames = [(f.index, f.time, f.rgb.shape, f.rgb.dtype, f.rgb.flags.c_contiguous)
              for f in iter_frames(VTEST, max_side=96)]
    assert len(frames) == 795
    assert [f[0] for f in frames] == list(range(795))
    np.testing.assert_allclose([f[1] for f in frames], np.arange(795) / 10.0, atol=1e-9)
    assert {f[2] for f in frames} == {(72, 96, 3)} and {f[3] for f in frames} == {np.dtype(np.uint8)}
    assert all(f[4] for f in frames)


def test_full_size_frames_are_rgb():
    frame = next(iter(iter_frames(VTEST)))
    assert frame.rgb.shape == (576, 768, 3) and frame.rgb.dtype == np.uint8
    with av.open(str(VTEST)) as container:
        reference = next(container.decode(video=0)).to_ndarray(format="rgb24")
    np.testing.assert_array_equal(frame.rgb, reference)


def test_fps_sampling_keeps_the_nearest_frame_and_true_times():
    frames = list(iter_frames(VTEST, fps=3, duration=3.0, max_side=64))
    assert [f.index for f in frames] == [0, 3, 7, 10, 13, 17, 20, 23, 27]  # nearest to k/3 s
    np.testing.assert_allclose([f.time for f in frames], [f.index / 10 for f in frames], atol=1e-9)
    # Every tick's nearest source frame (ties: the earlier) is kept, each once.
    sampled = [f.index for f in iter_frames(VTEST, fps=4, start=1.0, duration=3.0, max_side=64)]
    ticks = 1.0 + np.arange(0, 3.0 - 1e-9 + 0.1, 0.25)
    source = np.arange(10, 40) / 10.0
    expected = sorted({int(10 + np.argmin(np.abs(source - t) + 1e-9 * np.arange(30))) for t in ticks
                       if t <= source[-1]})
    assert sampled == expected
    # Above the source rate every frame is kept once.
    assert [f.index for f in iter_frames(VTEST, fps=25, duration=1.0, max_side=64)] == list(range(10))


@pytest.mark.parametrize("fps", [0.7, 3.3, 7.0, 9.99, 10.0, 33.0])
def test_fps_sampling_equals_nearest_frame_per_tick(fps):
    """The sampler handles all ticks up to a frame at once; it keeps what one tick at a time kept:
    each tick's nearest frame (ties: the earlier), each once, in order."""
    times = np.array([f.time for f in iter_frames(VTEST, duration=6.0, max_side=32)])
    ticks = times[0] + np.arange(int((times[-1] - times[0]) * fps + 1e-9) + 1) / fps
    nearest = [int(np.argmin(np.abs(times - t) + 1e-9 * np.arange(len(times)))) for t in ticks]
    assert [f.index for f in iter_frames(VTEST, fps=fps, duration=6.0, max_side=32)] == sorted(set(nearest))


def test_a_huge_fps_keeps_every_frame_without_stepping_through_its_ticks():
    """--fps 1e9 on a 1-second clip: one tick at a time, it ran for minutes."""
    import subprocess
    import sys

    code = ("from posescore.engine.media.video import iter_frames; "
            f"print([f.index for f in iter_frames({str(VTEST)!r}, fps=1e9, duration=1.0, max_side=32)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(list(range(10)))


def test_start_and_duration_select_by_time():
    frames = list(iter_frames(VTEST, start=2.0, duration=0.5, max_side=64))
    assert [f.index for f in frames] == [20, 21, 22, 23, 24]
    assert frames[0].time == pytest.approx(2.0)


def test_max_side_resizes_keeping_the_aspect():
    assert decode_size(768, 576, 384) == (384, 288)
    assert decode_size(768, 576, 1000) == (768, 576)
    assert decode_size(576, 768, 100) == (75, 100)
    small = next(iter(iter_frames(VTEST, max_side=384))).rgb
    full = next(iter(iter_frames(VTEST))).rgb
    assert small.shape == (288, 384, 3)
    reference = cv2.resize(full, (384, 288), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - reference).mean() < 3.0


def test_bad_options():
    for kwargs in ({"fps": 0}, {"fps": -1.0}, {"max_side": 4}, {"max_side": 12.5}, {"start": -1},
                   {"duration": 0}):
        with pytest.raises(VideoError):
            iter_frames(VTEST, **kwargs)


# -- rotation -------------------------------------------------------------------------------------
ORIENTATIONS = {  # name -> what it does to the stored pixels, for comparison
    "r0": lambda a: a, "r90": lambda a: np.rot90(a, 1), "r180": lambda a: np.rot90(a, 2),
    "r270": lambda a: np.rot90(a, 3), "m0": lambda a: a[:, ::-1], "m90": lambda a: np.rot90(a, 1)[:, ::-1],
    "m180": lambda a: np.rot90(a, 2)[:, ::-1], "m270": lambda a: np.rot90(a, 3)[:, ::-1],
}


def rotated_copy(path, source_frames, degrees, hflip=False, vflip=False):
    """A video whose display matrix says: turn ``degrees`` counter-clockwise, then mirror (PyAV)."""
    height, width = source_frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264" if video_codec() == "libx264" else "mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
        for rgb in source_frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.parametrize("degrees, hflip, vflip, expected", [
    (90, False, False, "r90"), (180, False, False, "r180"), (270, False, False, "r270"),
    (90, True, False, "m90"), (0, True, False, "m0"), (0, False, True, "m180"),
])
def test_rotation_metadata_is_applied(tmp_path, degrees, hflip, vflip, expected):
    source = first_frames(3, max_side=192)  # 192 x 144: asymmetric content and size
    path = rotated_copy(tmp_path / "rotated.mp4", source, degrees, hflip, vflip)
    info = probe(path)
    turned = degrees % 180 == 90
    assert (info.width, info.height) == ((144, 192) if turned else (192, 144))
    assert info.rotation == degrees % 360 or (hflip or vflip)  # a mirror reads as 180 + flip, as in FFmpeg
    frames = list(iter_frames(path))
    assert len(frames) == 3 and frames[0].rgb.shape == (info.height, info.width, 3)
    errors = {name: np.abs(frames[1].rgb.astype(int) - op(source[1])).mean()
              for name, op in ORIENTATIONS.items() if op(source[1]).shape == frames[1].rgb.shape}
    assert min(errors, key=errors.get) == expected and errors[expected] < 4.0, errors
    resized = next(iter(iter_frames(path, max_side=96))).rgb
    assert resized.shape == ((96, 72, 3) if turned else (72, 96, 3))


def test_orientation_ops_on_arrays():
    a = np.arange(6).reshape(2, 3, 1)
    assert apply_orientation(a, "clock")[..., 0].tolist() == [[3, 0], [4, 1], [5, 2]]
    assert apply_orientation(a, "cclock")[..., 0].tolist() == [[2, 5], [1, 4], [0, 3]]
    assert apply_orientation(a, "cclock_flip")[..., 0].tolist() == [[0, 3], [1, 4], [2, 5]]
    assert apply_orientation(a, "clock_flip")[..., 0].tolist() == [[5, 2], [4, 1], [3, 0]]
    assert apply_orientation(a, "hvflip")[..., 0].tolist() == [[5, 4, 3], [2, 1, 0]]


# -- broken files ---------------------------------------------------------------------------------
def test_truncated_file_yields_the_good_frames_then_names_the_last_one(truncated):
    seen = []
    with pytest.raises(VideoError) as raised:
        for frame in iter_frames(truncated, max_side=96):
            seen.append(frame)
    error = raised.value
    assert len(seen) > 400 and [f.index for f in seen] == list(range(len(seen)))
    last = seen[-1]
    assert error.last_good_index == last.index and error.last_good_time == pytest.approx(last.time)
    message = str(error)
    assert str(truncated) in message and f"#{last.index}" in message and f"{last.time:.3f} s" in message
    # The frames yielded are the original's.
    original = next(f for f in iter_frames(VTEST, max_side=96, start=last.time - 0.01) if f.index == last.index)
    np.testing.assert_array_equal(last.rgb, original.rgb)


def test_file_ending_short_of_its_header_count(tmp_path):
    """Cut at a packet boundary: nothing is corrupt, but the stream ends before the count its header
    promises."""
    with av.open(str(VTEST)) as container:
        positions = [p.pos for p, _ in zip(container.demux(video=0), range(31)) if p.pos is not None]
    path = tmp_path / "cut.avi"
    path.write_bytes(VTEST.read_bytes()[: positions[-1]])
    seen = []
    with pytest.raises(VideoError, match="truncated") as raised:
        for frame in iter_frames(path, max_side=64):
            seen.append(frame.index)
    assert seen == list(range(len(seen))) and 20 <= len(seen) <= 30
    assert raised.value.last_good_index == seen[-1] and str(path) in str(raised.value)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_truncated_mp4_and_mkv(tmp_path, suffix):
    """write_video's MP4 has its index first (faststart): cut in half, it decodes, then stops short
    of the duration its header gives."""
    whole = tmp_path / f"whole{suffix}"
    write_video(whole, first_frames(40, max_side=128), 10)
    assert len(list(iter_frames(whole))) == 40  # complete files end cleanly
    cut = tmp_path / f"cut{suffix}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    seen = []
    with pytest.raises(VideoError, match="header promises") as raised:
        for frame in iter_frames(cut):
            seen.append(frame.index)
    assert 0 < len(seen) < 40 and raised.value.last_good_index == seen[-1] and str(cut) in str(raised.value)


def test_text_file_renamed_mp4_fails_at_open(text_mp4):
    with pytest.raises(VideoError, match="not a video") as raised:
        iter_frames(text_mp4)  # at the call, before any frame is asked for
    assert str(text_mp4) in str(raised.value)
    with pytest.raises(VideoError, match="not a video"):
        probe(text_mp4)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        probe(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        iter_frames(tmp_path / "empty.mp4")
    assert isinstance(VideoError("x"), ValueError)


# -- images ---------------------------------------------------------------------------------------
def test_images():
    assert is_image(BUS) and is_image("a/B.PNG") and not is_image(VTEST)
    rgb = read_image(BUS)
    assert rgb.shape == (1080, 810, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, cv2.imread(str(BUS))[..., ::-1])
    info = probe(BUS)
    assert (info.width, info.height, info.frame_count, info.fps, info.image) == (810, 1080, 1, 0.0, True)
    frames = list(iter_frames(BUS, max_side=540))
    assert len(frames) == 1 and (frames[0].index, frames[0].time) == (0, 0.0)
    assert frames[0].rgb.shape == (540, 405, 3)
    assert read_image(BASKETBALL).shape[2] == 3


def test_unreadable_image(tmp_path):
    fake = tmp_path / "photo.jpg"
    fake.write_text("not an image")
    with pytest.raises(VideoError, match="not a readable image") as raised:
        read_image(fake)
    assert str(fake) in str(raised.value)


# -- encoding -------------------------------------------------------------------------------------
def test_write_video_round_trip(tmp_path):
    frames = first_frames(6, max_side=192)
    out = tmp_path / "clip.mp4"
    assert write_video(out, iter(frames), 12.5) == out
    info = probe(out)
    assert (info.width, info.height, info.frame_count, info.fps) == (192, 144, 6, 12.5)
    assert info.codec == ("h264" if video_codec() == "libx264" else "mpeg4")
    decoded = [f.rgb for f in iter_frames(out)]
    assert len(decoded) == 6 and np.abs(decoded[3].astype(int) - frames[3]).mean() < 4.0
    mpeg4 = tmp_path / "clip_mpeg4.mp4"
    write_video(mpeg4, frames, 10, codec="mpeg4")
    assert probe(mpeg4).codec == "mpeg4"
    assert np.abs(next(iter(iter_frames(mpeg4))).rgb.astype(int) - frames[0]).mean() < 5.0
    odd = tmp_path / "odd.mp4"
    write_video(odd, [np.full((33, 35, 3), 200, np.uint8)] * 2, 29.97)
    assert (probe(odd).width, probe(odd).height) == (36, 34) and probe(odd).fps == pytest.approx(29.97)


def test_write_video_errors_leave_no_file(tmp_path):
    out = tmp_path / "bad.mp4"
    for frames, message in (([], "no frames"), ([np.zeros((8, 8), np.uint8)], "frame 0"),
                            ([np.zeros((8, 8, 3), np.uint8), np.zeros((10, 8, 3), np.uint8)], "frame 1"),
                            ([np.zeros((8, 8, 3), np.float32)], "uint8")):
        with pytest.raises(VideoError, match=message):
            write_video(out, frames, 10)
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("speed, factor", [(0.5, 2.0), (2.0, 0.5), (1.0, 1.0)])
def test_retime_video(tmp_path, speed, factor):
    out = tmp_path / f"retimed_{speed}.mp4"
    assert retime_video(VTEST, out, speed, start=1.0, duration=1.2, max_side=160) == out
    info = probe(out)
    assert info.fps == 10.0 and info.frame_count == int(12 * factor)
    clip = [f.rgb for f in iter_frames(VTEST, start=1.0, duration=1.2, max_side=160)]
    copy = [f.rgb for f in iter_frames(out)]
    for j, rgb in enumerate(copy):  # output frame j shows clip frame floor(j * speed)
        distances = [np.abs(rgb.astype(int) - c).mean() for c in clip]
        assert int(np.argmin(distances)) == int(j * speed)
    with pytest.raises(VideoError, match="speed"):
        retime_video(VTEST, out, 0)


# -- extract_poses with a stand-in client (pipeline logic) ---------------------------------------
class FakeClient:
    """One person per frame whose box is the whole frame it was sent and whose keypoints sit at its
    centre; optionally fails on call ``fail_on``."""

    def __init__(self, fail_on=None):
        self.calls = []
        self.fail_on = fail_on

    def pose(self, frames):
        assert frames.dtype == np.uint8 and frames.ndim == 4
        self.calls.append(frames.shape)
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise PoseScoreError("model 'pose': server exploded [INTERNAL]", status="INTERNAL")
        b, h, w = frames.shape[:3]
        keypoints = np.zeros((b, 3, 17, 3), np.float32)
        keypoints[:, 0, :, 0], keypoints[:, 0, :, 1], keypoints[:, 0, :, 2] = w / 2, h / 2, 0.9
        boxes = np.zeros((b, 3, 4), np.float32)
        boxes[:, 0] = [0, 0, w, h]
        scores = np.zeros((b, 3), np.float32)
        scores[:, 0] = 0.8
        return PoseResult(keypoints, boxes, scores, np.ones(b, np.int32))


def decode_threads():
    return [t for t in threading.enumerate() if t.name == "posescore-decode"]


def test_extract_pipeline_batches_scales_and_reports_progress():
    client, calls = FakeClient(), []
    poses = extract_poses(VTEST, client, max_side=200, batch=7, duration=2.0,
                          progress=lambda done, total: calls.append((done, total)))
    assert [c[0] for c in client.calls] == [7, 7, 6] and client.calls[0][1:] == (150, 200, 3)
    assert calls == [(0, 20), (7, 20), (14, 20), (20, 20)]
    assert len(poses) == 20 and poses.max_people == 1  # trimmed to the largest count
    assert poses.frame_indices.dtype == np.int64 and poses.frame_indices.tolist() == list(range(20))
    assert poses.times.dtype == np.float32 and np.allclose(poses.times, np.arange(20) / 10)
    assert poses.keypoints.dtype == np.float32 and poses.counts.dtype == np.int32
    np.testing.assert_allclose(poses.boxes[:, 0], [[0, 0, 768, 576]] * 20)  # original pixels
    np.testing.assert_allclose(poses.keypoints[:, 0, :, :2], np.broadcast_to([384, 288], (20, 17, 2)))
    people = poses.frames_people(3)
    assert people.keypoints.shape == (1, 17, 3) and people.boxes.shape == (1, 4)
    picked = poses.select([5, 2])
    assert picked.frame_indices.tolist() == [5, 2] and picked.keypoints.shape == (2, 1, 17, 3)
    assert poses.select(poses.frame_indices % 2 == 0).frame_indices.tolist() == list(range(0, 20, 2))
    poses.keypoints[:, 0, 0, 0] = np.arange(20)
    backwards = poses.reversed()
    assert backwards.keypoints[:, 0, 0, 0].tolist() == list(range(19, -1, -1))
    np.testing.assert_array_equal(backwards.times, poses.times)  # the same time axis
    assert not decode_threads()


def test_extract_keeps_partial_results_on_a_decode_error(short_truncated):
    client = FakeClient()
    with pytest.raises(VideoError) as raised:
        extract_poses(short_truncated, client, batch=4)
    error = raised.value
    partial = error.partial
    assert isinstance(partial, VideoPoses) and len(partial) == error.last_good_index + 1 >= 5
    assert partial.frame_indices.tolist() == list(range(len(partial)))
    assert sum(c[0] for c in client.calls) == len(partial)
    assert str(short_truncated) in str(error) and f"#{error.last_good_index}" in str(error)
    assert not decode_threads()


def test_extract_keeps_partial_results_on_an_inference_error():
    client = FakeClient(fail_on=2)
    with pytest.raises(PoseScoreError, match="exploded") as raised:
        extract_poses(VTEST, client, batch=5, max_side=128)
    assert len(raised.value.partial) == 5 and raised.value.partial.frame_indices.tolist() == list(range(5))
    assert not decode_threads()  # the decode thread stopped at once, not at the end of the video


def test_extract_refuses_a_fake_video_before_inference(text_mp4):
    client = FakeClient()
    with pytest.raises(VideoError, match="not a video"):
        extract_poses(text_mp4, client)
    assert client.calls == []


def test_expected_frames():
    info = probe(VTEST)
    assert expected_frames(info) == 795
    assert expected_frames(info, fps=3) == 239
    assert expected_frames(info, start=2.0, duration=0.5) == 5
    assert expected_frames(VideoInfo("x.png", 4, 4, 0.0, 1, 0.0, image=True)) == 1


# -- extract_poses through the real server -------------------------------------------------------
@pytest.fixture(scope="module")
def client(triton_server):
    with PoseScoreClient(triton_server.grpc_url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def full_run(client):
    return extract_poses(VTEST, client, start=1.0, duration=1.6)  # 16 frames, one or two people each


def test_extract_poses_through_the_server(full_run):
    poses = full_run
    assert len(poses) == 16 and poses.frame_indices.tolist() == list(range(10, 26))
    np.testing.assert_allclose(poses.times, np.arange(10, 26) / 10, atol=1e-6)
    assert poses.info.width == 768 and poses.counts.sum() >= 12
    rows, person, keypoints = poses.people()
    assert keypoints.shape == (poses.counts.sum(), 17, 3)
    seen = keypoints[..., 2] > 0.3
    assert (keypoints[..., 0][seen] <= 768).all() and (keypoints[..., 1][seen] <= 576).all()
    # People in vtest.avi are walking pedestrians, around 100 px tall at full size.
    heights = poses.boxes[rows, person, 3] - poses.boxes[rows, person, 1]
    assert 40 < np.median(heights) < 300


def test_max_side_keypoints_match_the_full_size_run(client, full_run):
    small = extract_poses(VTEST, client, start=1.0, duration=1.6, max_side=384)
    errors = []
    for row in range(16):
        a, b = full_run.frames_people(row), small.frames_people(row)
        if not len(a.scores) or not len(b.scores):
            continue
        iou = box_iou(a.boxes, b.boxes)
        for i in range(len(a.scores)):
            j = int(iou[i].argmax())
            if iou[i, j] < 0.5:
                continue
            both = (a.keypoints[i, :, 2] > 0.5) & (b.keypoints[j, :, 2] > 0.5)
            errors += list(np.linalg.norm(a.keypoints[i, both, :2] - b.keypoints[j, both, :2], axis=1))
    assert len(errors) >= 30
    assert np.median(errors) < 3.0 and np.percentile(errors, 95) < 8.0  # pixels of the 768 x 576 frame


def test_partial_results_through_the_server(client, short_truncated):
    with pytest.raises(VideoError) as raised:
        extract_poses(short_truncated, client)
    partial = raised.value.partial
    assert len(partial) == raised.value.last_good_index + 1
    assert partial.keypoints.shape[0] == len(partial) and partial.info.path == str(short_truncated)


def test_image_through_the_server(client):
    poses = extract_poses(BUS, client, max_side=640)
    assert len(poses) == 1 and poses.info.image and poses.counts[0] >= 3
    assert poses.boxes[0, : poses.counts[0], 3].max() > 700  # original 1080-pixel-high coordinates
