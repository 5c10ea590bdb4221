"""The pose model through the embedded server: keypoints as ultralytics' own predictor finds them."""

import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

import oracle_ultralytics  # noqa: F401 - before anything imports ultralytics (offline, private settings)
from test_detect import ultralytics_asset


def infer_pose(client, frames):
    tensor = grpcclient.InferInput("frames", list(frames.shape), "UINT8")
    tensor.set_data_from_numpy(frames)
    result = client.infer("pose", [tensor])
    return tuple(result.as_numpy(name) for name in ("keypoints", "boxes", "scores", "count"))


@pytest.mark.parametrize("name, people", [("bus.jpg", 4), ("zidane.jpg", 2)])
def test_served_keypoints_match_ultralytics_within_2px(triton_server, name, people):
    pytest.importorskip("torch")
    rgb = ultralytics_asset(name)
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    keypoints, boxes, scores, count = infer_pose(client, rgb[None])
    assert keypoints.shape == (1, 20, 17, 3) and boxes.shape == (1, 20, 4) and count.shape == (1, 1)
    ref_kpts, ref_boxes, ref_scores = oracle_ultralytics.ultralytics_predict(rgb)
    assert int(count[0, 0]) == len(ref_scores) == people
    assert np.all(keypoints[0, people:] == 0) and np.all(scores[0, people:] == 0)
    for k, b, s in zip(ref_kpts, ref_boxes, ref_scores):
        match = int(np.argmin(np.abs(boxes[0, :people] - b).max(axis=1)))
        np.testing.assert_allclose(boxes[0, match], b, atol=2.0)
        visible = k[:, 2] > 0.5
        assert np.abs(keypoints[0, match, visible, :2] - k[visible, :2]).max(initial=0) <= 2.0
        assert scores[0, match] == pytest.approx(s, abs=1e-3)


def test_concurrent_requests_of_mixed_sizes_are_batched_and_answered_alone(triton_server):
    """Dynamic batching mixes requests with frames of different sizes; each answer is the one the
    request gets when sent alone."""
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    bus, zidane = ultralytics_asset("bus.jpg"), ultralytics_asset("zidane.jpg")
    inputs = [bus[None], zidane[None], np.stack([zidane, zidane[:, ::-1]]), bus[None, :, ::-1]]
    alone = [infer_pose(client, np.ascontiguousarray(frames)) for frames in inputs]
    results = {}
    for n in range(12):
        frames = np.ascontiguousarray(inputs[n % 4])
        tensor = grpcclient.InferInput("frames", list(frames.shape), "UINT8")
        tensor.set_data_from_numpy(frames)
        client.async_infer("pose", [tensor], callback=lambda result, error, n=n: results.__setitem__(n, (result, error)))
    deadline = time.monotonic() + 120
    while len(results) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(results) == 12
    for n, (result, error) in results.items():
        assert error is None, error
        expected = alone[n % 4]
        np.testing.assert_allclose(result.as_numpy("keypoints"), expected[0], atol=1e-3)
        np.testing.assert_array_equal(result.as_numpy("count"), expected[3])


def test_a_frame_with_nobody_has_count_zero(triton_server):
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    keypoints, _, scores, count = infer_pose(client, np.full((2, 120, 160, 3), 114, np.uint8))
    assert count.tolist() == [[0], [0]] and not keypoints.any() and not scores.any()
