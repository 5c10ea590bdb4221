"""engine.analysis.answers: each service's one answer, as the models, the load-test oracle and the jobs
get it, on real and random poses, in process (no server)."""

import numpy as np
import pytest

from conftest import random_poses
from posescore.engine.serving.export import onnx_path
from posescore.engine.analysis.answers import DtwQuestion, dtw_answer, dtw_answers, score_answer, score_answers
from posescore.engine.serving.detector import PoseDetector
from posescore.kernels.skeleton import PART_NAMES
from posescore.loadtests.workload import mirrored
from test_detect import ultralytics_asset


def test_score_answer_finds_the_same_and_the_mirrored_pose():
    rng = np.random.default_rng(0)
    query = random_poses(rng, 1)[0]
    candidates = np.concatenate([query[None], mirrored(query[None]), random_poses(rng, 30)])
    plain = score_answer(query, candidates)
    both = score_answer(query, candidates, mirror=True)
    assert plain.scores[0] == pytest.approx(100, abs=1e-3) and plain.scores[1] < 95
    assert both.scores[1] == pytest.approx(100, abs=1e-3)
    assert both.mirrored.tolist()[:2] == [False, True] and not plain.mirrored.any()
    # The part scores describe the same match as the whole-pose score: the mirrored one's too.
    np.testing.assert_allclose(both.part_scores[:2], 100, atol=1e-3)
    assert both.part_scores.shape == (32, len(PART_NAMES)) and both.parts_valid.all()


def test_score_answer_says_which_parts_could_be_scored():
    rng = np.random.default_rng(1)
    query = random_poses(rng, 1)[0]
    candidate = query.copy()
    candidate[[9, 7], 2] = 0  # left wrist and elbow missing: no left-arm limb in both poses
    answer = score_answer(query, candidate[None])
    left_arm = PART_NAMES.index("left_arm")
    assert not answer.parts_valid[0, left_arm] and np.isnan(answer.part_scores[0, left_arm])  # never a 0
    assert answer.parts_valid[0, PART_NAMES.index("right_arm")]


@pytest.mark.parametrize("bad, name", [("query", "query"), ("candidates", "candidates")])
def test_score_answer_names_the_bad_input(bad, name):
    rng = np.random.default_rng(2)
    query, candidates = random_poses(rng, 1)[0], random_poses(rng, 3)
    if bad == "query":
        query[:, 2] = 0  # no visible keypoint
    else:
        candidates[..., 2] = 0
    with pytest.raises(ValueError, match=f"^{name}: "):
        score_answer(query, candidates)


def test_dtw_answers_of_a_batch_are_the_answers_alone():
    """The dtw model batches questions of any lengths, windows and mirror options into ragged DTW
    calls: each answer is the one the question gets alone, to float32 rounding."""
    rng = np.random.default_rng(3)
    questions = [DtwQuestion(random_poses(rng, t), random_poses(rng, u), window, mirror, path)
                 for t, u, window, mirror, path in [(12, 20, None, False, True), (30, 9, 4, True, False),
                                                    (7, 7, 0, True, True), (25, 31, 4, False, False)]]
    questions.append(DtwQuestion(questions[0].reference, mirrored(questions[0].reference), None, True, True))
    batch = dtw_answers(questions)
    for q, got in zip(questions, batch):
        alone = dtw_answer(q.reference, q.attempt, q.window, q.mirror, q.with_path)
        assert got.score == pytest.approx(alone.score, rel=1e-5)
        assert got.distance == pytest.approx(alone.distance, rel=1e-5)
        np.testing.assert_allclose(got.part_scores, alone.part_scores, rtol=1e-5)
        assert got.mirrored == alone.mirrored
        assert (got.path is None) == (not q.with_path)
        if q.with_path:
            np.testing.assert_array_equal(got.path, alone.path)
    assert batch[-1].mirrored and batch[-1].score == pytest.approx(100, abs=1e-3)


def test_dtw_answer_names_the_bad_input():
    rng = np.random.default_rng(4)
    reference = random_poses(rng, 5)
    reference[..., 2] = 0
    with pytest.raises(ValueError, match="^reference: "):
        dtw_answer(reference, random_poses(rng, 5))


@pytest.mark.skipif(not onnx_path().exists(), reason="no exported pose model (make model exports it)")
def test_pose_detector_answers_batches_of_mixed_sizes_as_alone():
    detector = PoseDetector(str(onnx_path()))
    bus, zidane = ultralytics_asset("bus.jpg"), ultralytics_asset("zidane.jpg")
    batches = [bus[None], np.stack([zidane, zidane[:, ::-1]]), np.ascontiguousarray(bus[None, :, ::-1])]
    together = detector.detect_many(batches)
    for frames, got in zip(batches, together):
        alone = detector.detect(frames)
        for a, b in zip(got, alone):
            np.testing.assert_array_equal(a, b)
    assert together[0].counts.tolist() == [4] and together[1].counts.tolist() == [2, 2]



def test_score_answers_of_a_batch_are_the_answers_alone_and_bad_questions_fail_alone():
    rng = np.random.default_rng(5)
    poses = random_poses(rng, 90)
    blind = poses[:4].copy()
    blind[..., 2] = 0
    questions = [(poses[0], poses[:30], "cosine", False), (poses[1], poses[30:70], "weighted_l1", True),
                 (poses[2], poses[70:], "cosine", False), (poses[3], blind, "cosine", False),
                 (blind[0], poses[:5], "cosine", True), (poses[4], poses[:5], "manhattan", False),
                 (poses[5], poses[5:9][None], "cosine", True)]
    answers = score_answers(questions)
    for n in (0, 1, 2, 6):
        alone = score_answer(*questions[n])
        for got, want in zip(answers[n], alone):
            np.testing.assert_array_equal(got, want)
    assert answers[6].scores.shape == (1, 4) and answers[6].part_scores.shape == (1, 4, 6)
    assert str(answers[3]).startswith("candidates: ") and str(answers[4]).startswith("query: ")
    assert "manhattan" in str(answers[5])
