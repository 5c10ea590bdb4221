"""kernels.detect: letterbox and decode_poses, against ultralytics' own pipeline and by hand.

The oracle tests run the real YOLO11n-pose model twice: exported to ONNX and run by onnxruntime
between our letterbox and decode_poses, and through ultralytics' own predictor (CPU torch).
"""

from pathlib import Path

import cv2
import numpy as np
import pytest

import oracle_ultralytics  # before ultralytics: offline, private settings folder
from conftest import asnumpy, cupy
from posescore.engine.media import samples as media
from posescore.kernels import decode_poses, letterbox
from posescore.kernels._detect import OUTPUT_ROWS, letterbox_geometry

ROOT = Path(__file__).resolve().parents[1]


def ultralytics_asset(name: str) -> np.ndarray:
    """An image shipped with ultralytics, as uint8 RGB."""
    try:
        path = media.ultralytics_asset(name)
    except FileNotFoundError as err:
        pytest.skip(str(err))
    bgr = cv2.imread(str(path))
    assert bgr is not None, f"cannot read {path}"
    return np.ascontiguousarray(bgr[..., ::-1])


def reference_letterbox(rgb: np.ndarray, size=640, stride=32) -> np.ndarray:
    """ultralytics' LetterBox + its predictor's preprocess on one RGB image: [3, h, w] float32."""
    pytest.importorskip("ultralytics")
    from ultralytics.data.augment import LetterBox

    bgr = np.ascontiguousarray(rgb[..., ::-1])  # ultralytics works on BGR images
    boxed = LetterBox(new_shape=(size, size), auto=True, stride=stride)(image=bgr)
    return boxed[..., ::-1].transpose(2, 0, 1).astype(np.float32) / np.float32(255)


# ------------------------------------------------------------------------------------- letterbox


@pytest.mark.parametrize("hw, size, shape, gain, pads", [
    ((1080, 810), 640, (640, 480), 640 / 1080, (0, 0)),  # bus.jpg, as ultralytics' predictor says
    ((720, 1280), 640, (384, 640), 0.5, (0, 12)),  # zidane.jpg
    ((576, 768), 640, (480, 640), 640 / 768, (0, 0)),  # vtest.avi
    ((100, 100), 640, (640, 640), 6.4, (0, 0)),  # scaled up
    ((300, 200), 640, (640, 448), 640 / 300, (10, 0)),  # 427 columns, 21 of border split 10 / 11
    ((1, 5), 64, (32, 64), 12.8, (0, 9)),  # thin: 13 rows, 19 of border split 9 / 10
])
def test_letterbox_golden_shapes_and_pads(hw, size, shape, gain, pads):
    frames = np.zeros((2, *hw, 3), dtype=np.uint8)
    images, gains, pad = letterbox(frames, size=size)
    assert images.shape == (2, 3, *shape) and images.dtype == np.float32
    assert gains.shape == (2,) and gains.dtype == np.float32
    assert pad.shape == (2, 2) and pad.dtype == np.float32
    np.testing.assert_allclose(gains, gain, rtol=1e-6)
    np.testing.assert_array_equal(pad, [pads, pads])
    r, (new_h, new_w), (top, bottom, left, right) = letterbox_geometry(*hw, size=size)
    assert (new_h + top + bottom, new_w + left + right) == shape and (left, top) == pads


@pytest.mark.parametrize("name", ["bus.jpg", "zidane.jpg"])
def test_letterbox_matches_ultralytics_on_assets(name):
    rgb = ultralytics_asset(name)
    images, _, _ = letterbox(rgb[None])
    ref = reference_letterbox(rgb)
    assert images.shape[1:] == ref.shape
    diff = np.abs(images[0] - ref)
    assert diff.max() <= 1 / 255 + 1e-6
    # Same fixed-point arithmetic as cv2.INTER_LINEAR on uint8: in practice every value is equal.
    assert (diff == 0).mean() > 0.999


@pytest.mark.parametrize("hw, size, stride", [
    ((333, 517), 640, 32), ((101, 77), 640, 32), ((1, 5), 64, 32), ((7, 1), 64, 8),
    ((50, 3000), 640, 32), ((17, 13), 16, 4), ((641, 640), 640, 32), ((123, 456), 320, 64),
])
def test_letterbox_matches_ultralytics_on_odd_sizes(hw, size, stride):
    rng = np.random.default_rng(hw[0] * 7919 + hw[1])
    frames = rng.integers(0, 256, (2, *hw, 3), dtype=np.uint8)
    images, _, _ = letterbox(frames, size=size, stride=stride)
    for b in range(2):
        ref = reference_letterbox(frames[b], size, stride)
        assert images.shape[1:] == ref.shape
        diff = np.abs(images[b] - ref)
        assert diff.max() <= 1 / 255 + 1e-6
        assert (diff == 0).mean() > 0.999


def test_letterbox_matches_cv2_resize_and_border():
    """Independent of ultralytics: cv2.resize (INTER_LINEAR) + copyMakeBorder with the geometry."""
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (1, 300, 200, 3), dtype=np.uint8)
    _, (new_h, new_w), (top, bottom, left, right) = letterbox_geometry(300, 200)
    resized = cv2.resize(frame[0], (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    ref = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT,
                             value=(114, 114, 114))
    images, gains, pads = letterbox(frame)
    np.testing.assert_array_equal(np.rint(images[0] * 255).astype(np.uint8), ref.transpose(2, 0, 1))
    assert (left, top) == (10, 0) and tuple(pads[0]) == (10, 0)
    np.testing.assert_array_equal(images[0, :, :, :left], np.float32(114) / 255)
    np.testing.assert_array_equal(images[0, :, :, left + new_w:], np.float32(114) / 255)


def test_letterbox_without_resize_is_an_exact_copy(xp):
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (3, 480, 640, 3), dtype=np.uint8)
    images, gains, pads = letterbox(xp.asarray(frames))
    expected = frames.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(asnumpy(images), expected)
    np.testing.assert_array_equal(asnumpy(gains), 1.0)
    np.testing.assert_array_equal(asnumpy(pads), 0.0)


def test_letterbox_accepts_views_and_batches_independently():
    rng = np.random.default_rng(8)
    frames = rng.integers(0, 256, (3, 61, 83, 3), dtype=np.uint8)
    view = frames[:, :, ::-1]  # not contiguous
    images, _, _ = letterbox(view, size=96)
    np.testing.assert_array_equal(images, letterbox(np.ascontiguousarray(view), size=96)[0])
    np.testing.assert_array_equal(images[1:2], letterbox(view[1:2], size=96)[0])


def test_letterbox_channels_stay_rgb():
    frames = np.zeros((1, 64, 64, 3), dtype=np.uint8)
    frames[..., 0] = 255  # pure red
    images, _, _ = letterbox(frames, size=64)
    assert images.shape == (1, 3, 64, 64)
    np.testing.assert_array_equal(images[0, 0], 1.0)
    np.testing.assert_array_equal(images[0, 1:], 0.0)


@pytest.mark.gpu
@pytest.mark.skipif(cupy is None, reason="CuPy with a CUDA device is not available on this machine")
@pytest.mark.parametrize("hw", [(300, 200), (720, 1280), (37, 1001)])
def test_letterbox_gpu_matches_cpu(hw):
    frames = np.random.default_rng(5).integers(0, 256, (2, *hw, 3), dtype=np.uint8)
    cpu = letterbox(frames)
    gpu = letterbox(cupy.asarray(frames))
    for a, b in zip(cpu, gpu):
        np.testing.assert_array_equal(a, asnumpy(b))


def test_letterbox_bad_inputs():
    ok = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(TypeError, match="frames: expected uint8"):
        letterbox(ok.astype(np.float32))
    with pytest.raises(ValueError, match=r"frames: expected 4 axes.*frames\[None\]"):
        letterbox(ok[0])
    with pytest.raises(ValueError, match="frames: expected frames of at least 1x1 pixels, got 0x0"):
        letterbox(np.zeros((1, 0, 0, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="frames: expected shape"):
        letterbox(np.zeros((1, 8, 8, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="frames: expected a non-empty array"):
        letterbox(np.zeros((0, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="size: expected an integer >= 1, got 0"):
        letterbox(ok, size=0)
    with pytest.raises(TypeError, match="stride: expected an integer"):
        letterbox(ok, stride=32.0)


# ---------------------------------------------------------------------------------------- decode


def raw_output(people, anchors=16, batch=1):
    """A hand-made raw model output [batch, 56, anchors]; ``people`` are
    ``(frame, anchor, (cx, cy, w, h), score, keypoints [17, 3])`` with keypoints optional."""
    out = np.zeros((batch, OUTPUT_ROWS, anchors), dtype=np.float32)
    for person in people:
        b, a, box, score = person[:4]
        kpts = person[4] if len(person) > 4 else np.zeros((17, 3), np.float32)
        out[b, 0:4, a] = box
        out[b, 4, a] = score
        out[b, 5:, a] = np.asarray(kpts, np.float32).reshape(-1)
    return out


def identity(batch=1, hw=(640, 640)):
    """gains, pads and image shapes for frames that needed no letterbox."""
    return (np.ones(batch, np.float32), np.zeros((batch, 2), np.float32),
            np.tile(np.array(hw, np.int64), (batch, 1)))


def kp(value):
    return np.full((17, 3), value, np.float32)


def test_decode_overlapping_boxes_keep_the_best(xp):
    out = raw_output([
        (0, 3, (100, 100, 50, 100), 0.8, kp(0.3)),
        (0, 7, (102, 101, 50, 100), 0.9, kp(0.6)),  # overlaps anchor 3, scores higher
        (0, 9, (400, 300, 60, 120), 0.5, kp(0.7)),  # apart
        (0, 12, (400, 100, 60, 120), 0.2),  # below conf
        (0, 13, (100, 400, 60, 120), 0.25),  # at conf: not above it, dropped
    ])
    keypoints, boxes, scores, counts = decode_poses(*map(xp.asarray, (out, *identity())))
    keypoints, boxes, scores, counts = map(asnumpy, (keypoints, boxes, scores, counts))
    assert keypoints.shape == (1, 20, 17, 3) and boxes.shape == (1, 20, 4)
    assert scores.shape == (1, 20) and counts.shape == (1,) and counts.dtype == np.int32
    assert counts[0] == 2
    np.testing.assert_allclose(scores[0, :2], [0.9, 0.5])
    np.testing.assert_allclose(boxes[0, 0], [77, 51, 127, 151])
    np.testing.assert_allclose(boxes[0, 1], [370, 240, 430, 360])
    np.testing.assert_allclose(keypoints[0, 0], 0.6)
    np.testing.assert_allclose(keypoints[0, 1], 0.7)
    assert not keypoints[0, 2:].any() and not boxes[0, 2:].any() and not scores[0, 2:].any()


def test_decode_iou_threshold_is_strict(xp):
    # IoU of these two boxes is exactly 0.5: suppressed only when iou < 0.5.
    out = raw_output([(0, 0, (5, 5, 10, 10), 0.9), (0, 1, (5, 2.5, 10, 5), 0.8)])
    args = tuple(map(xp.asarray, (out, *identity())))
    assert int(decode_poses(*args, iou=0.5)[3][0]) == 2
    assert int(decode_poses(*args, iou=0.49)[3][0]) == 1


def test_decode_max_people_keeps_the_best(xp):
    rng = np.random.default_rng(6)
    scores = rng.permutation(np.linspace(0.3, 0.9, 7)).astype(np.float32)
    out = raw_output([(0, 2 * i, (40 + 80 * i, 50, 30, 60), s) for i, s in enumerate(scores)])
    _, boxes, best, counts = map(asnumpy, decode_poses(*map(xp.asarray, (out, *identity())),
                                                       max_people=3))
    assert best.shape == (1, 3) and int(counts[0]) == 3
    np.testing.assert_allclose(best[0], np.sort(scores)[::-1][:3])
    for row, s in zip(boxes[0], best[0]):
        i = int(np.flatnonzero(scores == s)[0])
        np.testing.assert_allclose(row, [25 + 80 * i, 20, 55 + 80 * i, 80])


def test_decode_maps_back_through_gain_and_pad_and_clips(xp):
    # A 300x200 (H x W) frame letterboxed by gain 2 to 600x400, with 20 px left and 8 px top.
    gains = np.array([2.0], np.float32)
    pads = np.array([[20, 8]], np.float32)
    shapes = np.array([[300, 200]])
    kpts = kp(0.0)
    kpts[0] = (20 + 2 * 50, 8 + 2 * 100, 0.95)  # -> (50, 100)
    kpts[1] = (5, 4, 0.5)  # in the border -> clipped to (0, 0)
    kpts[2] = (20 + 2 * 250, 8 + 2 * 400, 0.4)  # past the frame -> clipped to (200, 300)
    out = raw_output([(0, 1, (20 + 2 * 60, 8 + 2 * 150, 2 * 40, 2 * 400), 0.7, kpts)])
    keypoints, boxes, scores, counts = map(asnumpy, decode_poses(
        *map(xp.asarray, (out, gains, pads, shapes))))
    assert int(counts[0]) == 1
    np.testing.assert_allclose(keypoints[0, 0, 0], [50, 100, 0.95], rtol=1e-6)
    np.testing.assert_allclose(keypoints[0, 0, 1], [0, 0, 0.5])
    np.testing.assert_allclose(keypoints[0, 0, 2], [200, 300, 0.4], rtol=1e-6)
    np.testing.assert_allclose(boxes[0, 0], [40, 0, 80, 300], rtol=1e-6)  # y from -50..350
    np.testing.assert_allclose(scores[0, 0], 0.7)


def test_decode_uses_the_rounded_resize_per_axis():
    # gain 0.5 on a 101 x 99 frame: the letterbox resized to round(50.5) = 50 rows and
    # round(49.5) = 50 columns (half to even), so the real scales are 50/101 and 50/99.
    out = raw_output([(0, 0, (25, 25, 10, 10), 0.9, kp(0.0) + [50, 50, 1])])
    keypoints, boxes, _, _ = decode_poses(out, np.array([0.5], np.float32), np.zeros((1, 2)),
                                          np.array([[101, 99]]))
    np.testing.assert_allclose(keypoints[0, 0, 0, :2], [99, 101], rtol=1e-6)
    np.testing.assert_allclose(boxes[0, 0], [20 * 99 / 50, 20 * 101 / 50, 30 * 99 / 50,
                                             30 * 101 / 50], rtol=1e-6)


def test_decode_batch_with_different_counts(xp):
    out = raw_output([
        (0, 0, (100, 100, 40, 80), 0.6), (0, 5, (300, 100, 40, 80), 0.7),
        (2, 1, (50, 50, 20, 20), 0.95),
    ], batch=3)
    _, boxes, scores, counts = map(asnumpy, decode_poses(*map(xp.asarray, (out, *identity(3)))))
    np.testing.assert_array_equal(counts, [2, 0, 1])
    np.testing.assert_allclose(scores[0, :2], [0.7, 0.6])
    assert not scores[1].any() and not boxes[1].any()
    np.testing.assert_allclose(boxes[2, 0], [40, 40, 60, 60])


def test_decode_with_no_candidates_returns_zeros(xp):
    out = raw_output([(0, 0, (100, 100, 40, 80), 0.1)], batch=2)
    keypoints, boxes, scores, counts = map(asnumpy, decode_poses(
        *map(xp.asarray, (out, *identity(2))), max_people=4))
    assert keypoints.shape == (2, 4, 17, 3) and not keypoints.any() and not boxes.any()
    assert not scores.any() and counts.dtype == np.int32 and not counts.any()


def greedy_reference(boxes_xyxy, scores, conf, iou, max_people):
    """Plain-Python greedy NMS, best first: indices kept."""
    order = [i for i in sorted(range(len(scores)), key=lambda i: -scores[i]) if scores[i] > conf]
    kept = []
    for i in order:
        ok = True
        for j in kept:
            a, b = boxes_xyxy[i], boxes_xyxy[j]
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = iw * ih
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            if union > 0 and inter / union > iou:
                ok = False
                break
        if ok:
            kept.append(i)
        if len(kept) == max_people:
            break
    return kept


def test_decode_matches_a_plain_greedy_nms_on_random_boxes(xp):
    rng = np.random.default_rng(7)
    B, A = 3, 300
    out = np.zeros((B, OUTPUT_ROWS, A), np.float32)
    out[:, 0:2] = rng.uniform(0, 640, (B, 2, A))
    out[:, 2:4] = rng.uniform(10, 200, (B, 2, A))
    out[:, 4] = rng.uniform(0, 1, (B, A))
    out[:, 5:] = rng.uniform(0, 640, (B, 51, A))
    keypoints, boxes, scores, counts = map(asnumpy, decode_poses(
        *map(xp.asarray, (out, *identity(B))), conf=0.3, iou=0.45, max_people=25))
    for b in range(B):
        cx, cy, w, h = out[b, 0:4].astype(np.float64)
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        kept = greedy_reference(xyxy, out[b, 4], 0.3, 0.45, 25)
        assert int(counts[b]) == len(kept) > 5
        np.testing.assert_array_equal(scores[b, :len(kept)], out[b, 4, kept])
        np.testing.assert_allclose(boxes[b, :len(kept)], np.clip(xyxy[kept], 0, 640), atol=1e-3)
        expected = out[b, 5:, kept].reshape(-1, 17, 3)
        np.testing.assert_allclose(keypoints[b, :len(kept), :, 2], expected[..., 2])
        np.testing.assert_allclose(keypoints[b, :len(kept), :, :2],
                                   np.clip(expected[..., :2], 0, 640))
        # the batch decodes as the frames alone do
        alone = decode_poses(*map(xp.asarray, (out[b:b + 1], *identity(1))), conf=0.3, iou=0.45,
                             max_people=25)
        np.testing.assert_array_equal(asnumpy(alone[0])[0], keypoints[b])


def test_decode_bad_inputs():
    out = raw_output([(0, 0, (100, 100, 40, 80), 0.6), (1, 0, (100, 100, 40, 80), 0.6)], batch=2)
    gains, pads, shapes = identity(2)
    with pytest.raises(ValueError, match=r"output: expected shape \[\.\.\., 56, \*\]"):
        decode_poses(out[:, :55], gains, pads, shapes)
    with pytest.raises(ValueError, match="output: expected 3 axes"):
        decode_poses(out[0], gains, pads, shapes)
    with pytest.raises(TypeError, match="output: expected a real floating-point"):
        decode_poses(out > 0, gains, pads, shapes)
    for row, anchor, what in [(4, 9, "person scores"), (2, 0, "boxes of anchors above conf"),
                              (7, 0, "keypoints of detected people")]:
        bad = out.copy()
        bad[1, row, anchor] = np.inf if row == 4 else np.nan
        with pytest.raises(ValueError, match=f"output: contains NaN or infinity in the {what}"):
            decode_poses(bad, gains, pads, shapes)
    bad = out.copy()
    bad[:, 5:, 3] = np.nan  # an anchor below conf: never looked at
    assert decode_poses(bad, gains, pads, shapes)[3].tolist() == [1, 1]
    with pytest.raises(ValueError, match=r"gains: expected shape \[B\] with B = 2"):
        decode_poses(out, gains[:1], pads, shapes)
    with pytest.raises(ValueError, match="gains: expected scale ratios > 0"):
        decode_poses(out, np.zeros(2, np.float32), pads, shapes)
    with pytest.raises(ValueError, match=r"pads: expected shape \[B, 2\] with B = 2"):
        decode_poses(out, gains, pads[:1], shapes)
    with pytest.raises(ValueError, match="pads: expected shape"):
        decode_poses(out, gains, np.zeros((2, 3), np.float32), shapes)
    with pytest.raises(TypeError, match="image_shapes: expected integer"):
        decode_poses(out, gains, pads, shapes.astype(np.float32))
    with pytest.raises(ValueError, match=r"image_shapes: expected shape \[B, 2\] with B = 2"):
        decode_poses(out, gains, pads, shapes[:1])
    with pytest.raises(ValueError, match="image_shapes: expected frames of at least 1x1"):
        decode_poses(out, gains, pads, np.array([[0, 0], [10, 10]]))
    for name, value in [("conf", 0), ("conf", 1.5), ("iou", 0.0), ("iou", float("nan"))]:
        with pytest.raises(ValueError, match=f"{name}: expected a finite number > 0 and <= 1, got"):
            decode_poses(out, gains, pads, shapes, **{name: value})
    for value in ("high", "0.5", True, None):  # a string or a bool passed float() before
        with pytest.raises(TypeError, match="conf: expected a finite number > 0 and <= 1, got"):
            decode_poses(out, gains, pads, shapes, conf=value)
    with pytest.raises(ValueError, match="max_people: expected an integer >= 1, got 0"):
        decode_poses(out, gains, pads, shapes, max_people=0)
    with pytest.raises(TypeError, match="max_people: expected an integer"):
        decode_poses(out, gains, pads, shapes, max_people=2.5)


# ---------------------------------------------------------------------------------------- oracle


@pytest.fixture(scope="module")
def onnx_session(tmp_path_factory):
    """onnxruntime on the exported YOLO11n-pose (the repository's copy, exported if needed)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("ultralytics", reason="the export needs ultralytics (`make model`)")
    try:
        from posescore.engine.serving.export import export_pose_model
    except ImportError:
        export_pose_model = None
    if export_pose_model is not None:
        path = export_pose_model()
    else:
        path = ROOT / "model_repository" / "pose" / "1" / "model.onnx"
        if not path.exists():
            path = oracle_ultralytics.export_onnx(tmp_path_factory.mktemp("onnx"))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, session.get_inputs()[0].name


@pytest.mark.parametrize("name, people", [("bus.jpg", 4), ("zidane.jpg", 2)])
def test_pipeline_matches_ultralytics_predictor(onnx_session, name, people):
    pytest.importorskip("torch")
    session, input_name = onnx_session
    rgb = ultralytics_asset(name)
    images, gains, pads = letterbox(rgb[None])
    output = session.run(None, {input_name: images})[0]
    assert output.shape[:2] == (1, OUTPUT_ROWS)
    # The exported head already applies the sigmoid to keypoint confidences and scores.
    assert 0 <= output[:, 7::3].min() and output[:, 7::3].max() <= 1
    assert 0 <= output[:, 4].min() and output[:, 4].max() <= 1
    keypoints, boxes, scores, counts = decode_poses(output, gains, pads,
                                                    np.array([rgb.shape[:2]]))

    ref_kpts, ref_boxes, ref_scores = oracle_ultralytics.ultralytics_predict(rgb)
    assert len(ref_scores) == people == int(counts[0])
    for k, b, s in zip(ref_kpts, ref_boxes, ref_scores):
        match = int(np.argmin(np.abs(boxes[0, :people] - b).max(axis=1)))  # the same person
        np.testing.assert_allclose(boxes[0, match], b, atol=2.0)
        visible = k[:, 2] > 0.5
        dist = np.abs(keypoints[0, match, visible, :2] - k[visible, :2])
        assert dist.size == 0 or dist.max() <= 2.0, f"{name}: keypoints {dist.max()} px apart"
        np.testing.assert_allclose(keypoints[0, match, :, 2], k[:, 2], atol=1e-3)
        np.testing.assert_allclose(scores[0, match], s, atol=1e-3)
