"""engine.analysis.people: the tracker keeps identities (synthetic walks with swaps and gaps, and vtest.avi's
pedestrians through the real server), the main performer keeps the time axis, the main person of
an image."""


import numpy as np
import pytest

from posescore.clients import PoseScoreClient
from posescore.engine.media.samples import SAMPLE_VIDEO
from posescore.engine.analysis.people import Performer, box_iou, main_performer, pick_person, image_person, track_people
from posescore.engine.jobs.extract import extract_poses
from posescore.engine.poses import VideoError, VideoInfo, VideoPoses

VTEST = SAMPLE_VIDEO
INFO = VideoInfo(path="walk.mp4", width=640, height=480, fps=10.0, frame_count=12, duration=1.2)


def person(cx, cy, height, conf=0.9):
    """A standing figure centred at (cx, cy): keypoints [17, 3] and box [4]."""
    offsets = np.linspace(-0.45, 0.45, 17) * height
    keypoints = np.stack([cx + 0.1 * height * np.sin(np.arange(17)), cy + offsets, np.full(17, conf)], -1)
    box = np.array([cx - 0.2 * height, cy - 0.5 * height, cx + 0.2 * height, cy + 0.5 * height])
    return keypoints.astype(np.float32), box.astype(np.float32)


def poses_of(frames, people=3, info=INFO):
    """VideoPoses from ``frames``: per frame a list of (keypoints, box, score)."""
    f = len(frames)
    vp = VideoPoses(info=info, frame_indices=np.arange(f, dtype=np.int64),
                    times=(np.arange(f) / 10).astype(np.float32),
                    keypoints=np.zeros((f, people, 17, 3), np.float32), boxes=np.zeros((f, people, 4), np.float32),
                    scores=np.zeros((f, people), np.float32), counts=np.zeros(f, np.int32))
    for row, found in enumerate(frames):
        vp.counts[row] = len(found)
        for p, (kps, box, score) in enumerate(found):
            vp.keypoints[row, p], vp.boxes[row, p], vp.scores[row, p] = kps, box, score
    return vp


def two_walkers(n=12, gap=()):
    """A big walker going right and a small one going left; the detection order alternates, and the
    big one is missing in the rows of ``gap``."""
    frames = []
    for t in range(n):
        big = (*person(100 + 12 * t, 240, 200), 0.9)
        small = (*person(500 - 8 * t, 260, 120), 0.6)
        found = ([] if t in gap else [big]) + [small]
        frames.append(found if t % 2 else found[::-1])
    return frames


def walker_ids(video_poses, tracks, row):
    """Track ids in ``row`` of the big walker (at x = 100 + 12 t) and of the small one."""
    centres = (video_poses.boxes[row, :, 0] + video_poses.boxes[row, :, 2]) / 2
    big = [int(tracks[row, p]) for p in range(video_poses.counts[row]) if abs(centres[p] - (100 + 12 * row)) < 1]
    small = [int(tracks[row, p]) for p in range(video_poses.counts[row]) if abs(centres[p] - (500 - 8 * row)) < 1]
    return (big[0] if big else None), small[0]


def test_tracker_keeps_ids_through_order_swaps():
    vp = poses_of(two_walkers())
    tracks = track_people(vp)
    assert tracks.shape == (12, 3) and tracks.dtype == np.int32
    assert (tracks[:, 2] == -1).all()  # padding
    assert tracks[0, 0] == 0 and tracks[0, 1] == 1  # ids in order of first appearance
    ids = [walker_ids(vp, tracks, row) for row in range(12)]
    assert len(set(ids)) == 1 and ids[0][0] != ids[0][1]


def test_tracks_survive_short_gaps_and_end_after_long_ones():
    vp = poses_of(two_walkers(gap=(4, 5, 6)))
    tracks = track_people(vp, max_gap=5)
    ids = [walker_ids(vp, tracks, row) for row in range(12)]
    big, small = ids[0]
    assert all(ids[row] == ((None, small) if row in (4, 5, 6) else (big, small)) for row in range(12))
    # With a shorter allowed gap, the big walker comes back as a new track.
    tracks = track_people(vp, max_gap=2)
    ids = [walker_ids(vp, tracks, row) for row in range(12)]
    assert ids[3] == (big, small) and ids[7] == (2, small) and ids[11] == (2, small)


def test_tracker_is_consistent_under_re_timing():
    """The half-speed copy of a clip (each frame twice) gets the same identities, even where two
    pedestrians overlap, so that compare follows the same performer in both. The boxes are modelled
    on two people walking side by side in vtest.avi around 53 s (the left one faster at first);
    a tracker that predicts every row by velocity swaps them in one copy and not in the other."""
    boxes = [([348, 398, 428, 551], [352, 390, 410, 532]), ([333, 398, 413, 551], [349, 389, 408, 531]),
             ([318, 398, 398, 551], [346, 388, 405, 531]), ([303, 395, 377, 542], [337, 384, 402, 529]),
             ([269, 389, 333, 536], [323, 383, 367, 520]), ([261, 390, 330, 535], [317, 381, 359, 516]),
             ([254, 389, 330, 536], [310, 382, 357, 515])]
    no_keypoints = np.zeros((17, 3), np.float32)
    frames = [[(no_keypoints, np.array(box, np.float32), 0.8) for box in pair] for pair in boxes]
    clip = poses_of(frames)
    half = poses_of([found for found in frames for _ in range(2)])
    clip_tracks, half_tracks = track_people(clip), track_people(half)
    relabel = {}
    for row in range(2 * len(frames)):
        for p in range(2):
            a, b = int(half_tracks[row, p]), int(clip_tracks[row // 2, p])
            assert relabel.setdefault(a, b) == b, (clip_tracks.tolist(), half_tracks.tolist())


def test_a_cut_back_to_where_a_track_stood_continues_it_and_nothing_else_does():
    """A set cut from takes: a walker crosses (12 px a row), and after the cut stands again where and
    as they stood at the start (a repetition replayed). That continues their track; someone else in
    that place, or the same place after the track ended, starts a new one."""
    walk = [[(*person(100 + 12 * t, 240, 200), 0.9)] for t in range(8)]
    tracks = track_people(poses_of(walk + walk))
    assert set(tracks[:, 0].tolist()) == {0}
    # Another pose in that place (the arms elsewhere: keypoints 40 px apart) is another person.
    other = [[(kps + np.array([0.0, 40.0, 0.0], np.float32) * (np.arange(17) % 2)[:, None], box, score)
              for kps, box, score in found] for found in walk]
    tracks = track_people(poses_of(walk + other))
    assert set(tracks[:8, 0].tolist()) == {0} and set(tracks[8:, 0].tolist()) == {1}
    # A return after the track ended (unseen for more than max_gap rows) starts a new track.
    tracks = track_people(poses_of(walk + [[]] * 4 + walk), max_gap=3)
    assert set(tracks[:8, 0].tolist()) == {0} and set(tracks[12:, 0].tolist()) == {1}
    tracks = track_people(poses_of(walk + [[]] * 3 + walk), max_gap=3)
    assert set(tracks[:8, 0].tolist()) == {0} and set(tracks[11:, 0].tolist()) == {0}


def test_tracker_bad_arguments():
    vp = poses_of(two_walkers(3))
    with pytest.raises(ValueError):
        track_people(vp, iou_threshold=1.5)
    with pytest.raises(ValueError):
        track_people(vp, max_gap=-1)


def test_main_performer_keeps_the_time_axis():
    vp = poses_of(two_walkers(gap=(4, 5)))
    performer = main_performer(vp)
    assert isinstance(performer, Performer) and len(performer) == 12
    assert performer.poses.shape == (12, 17, 3) and performer.poses.dtype == np.float32
    assert performer.present.tolist() == [row not in (4, 5) for row in range(12)]
    assert (performer.poses[[4, 5]] == 0).all() and (performer.boxes[[4, 5]] == 0).all()
    np.testing.assert_array_equal(performer.times, vp.times)
    np.testing.assert_array_equal(performer.frame_indices, vp.frame_indices)
    centres = (performer.boxes[:, 0] + performer.boxes[:, 2]) / 2
    np.testing.assert_allclose(centres[performer.present], (100 + 12 * np.arange(12))[performer.present], atol=1e-3)


def test_main_performer_is_largest_times_most_confident_times_most_continuous():
    # The small walker is present in every frame, the big one in only two: the small one wins.
    frames = [[(*person(300, 240, 100), 0.9)] + ([(*person(100 + 5 * t, 240, 200), 0.9)] if t < 2 else [])
              for t in range(12)]
    performer = main_performer(poses_of(frames))
    assert performer.present.all()
    assert performer.boxes[0, 3] - performer.boxes[0, 1] == pytest.approx(100)


def test_main_performer_without_anyone():
    vp = poses_of([[] for _ in range(4)])
    with pytest.raises(VideoError, match="walk.mp4: no person detected"):
        main_performer(vp)


def test_pick_person():
    a, box_a = person(100, 100, 100)
    b, box_b = person(300, 200, 200)
    keypoints, boxes = np.stack([a, b]), np.stack([box_a, box_b])
    assert pick_person(keypoints, boxes, np.array([0.9, 0.8])) == 1  # larger
    assert pick_person(keypoints, boxes, np.array([0.9, 0.2])) == 0  # 1/4 the area, 4.5x as sure
    assert pick_person(keypoints, boxes, np.array([0.9, 0.8]), index=0) == 0
    with pytest.raises(VideoError, match="me.jpg: person index 2 out of range: 2 person"):
        pick_person(keypoints, boxes, np.array([0.9, 0.8]), index=2, source="me.jpg")
    with pytest.raises(VideoError, match="no person detected"):
        pick_person(np.zeros((0, 17, 3)), np.zeros((0, 4)), np.zeros(0))
    vp = poses_of([[(a, box_a, 0.9), (b, box_b, 0.8)]])
    assert image_person(vp).index == 1
    chosen = image_person(vp, index=0)
    assert chosen.index == 0 and chosen.score == pytest.approx(0.9)
    np.testing.assert_array_equal(chosen.pose, a) and np.testing.assert_array_equal(chosen.box, box_a)
    with pytest.raises(VideoError, match="walk.mp4: person index 5 out of range"):
        image_person(vp, index=5)


# -- vtest.avi's pedestrians through the real server ---------------------------------------------
@pytest.fixture(scope="module")
def pedestrians(triton_server):
    if not VTEST.exists():
        pytest.skip(f"{VTEST} missing: install Debian's opencv-doc")
    with PoseScoreClient(triton_server.grpc_url, timeout=120) as client:
        # Around 53 s the scene has two or three people at once.
        return extract_poses(VTEST, client, start=53.0, duration=1.6)


def test_tracker_on_vtest_pedestrians(pedestrians):
    vp = pedestrians
    tracks = track_people(vp)
    assert (tracks[np.arange(vp.max_people)[None, :] >= vp.counts[:, None]] == -1).all()
    assert (tracks[np.arange(vp.max_people)[None, :] < vp.counts[:, None]] >= 0).all()
    agree = total = 0
    for row in range(1, len(vp)):
        before, now = vp.frames_people(row - 1), vp.frames_people(row)
        if not len(before.scores) or not len(now.scores):
            continue
        iou = box_iou(now.boxes, before.boxes)
        for d in range(len(now.scores)):
            best = int(iou[d].argmax())
            if iou[d, best] >= 0.5:  # clearly the same pedestrian one frame later
                total += 1
                agree += tracks[row, d] == tracks[row - 1, best]
    assert total >= 20 and agree / total >= 0.9, (agree, total)
    ids_per_row = [set(tracks[r, : vp.counts[r]]) for r in range(len(vp))]
    assert all(len(ids) == vp.counts[r] for r, ids in enumerate(ids_per_row))  # one detection per id per row


def test_main_performer_on_vtest(pedestrians):
    performer = main_performer(pedestrians)
    assert len(performer) == len(pedestrians) == 16
    np.testing.assert_array_equal(performer.times, pedestrians.times)
    assert performer.present.sum() >= 8
    assert (performer.poses[~performer.present] == 0).all()
    assert (performer.poses[performer.present][..., 2] > 0).any(axis=1).all()


def test_the_rate_of_poses_is_that_of_their_rows():
    vp = poses_of(two_walkers(12))  # times 0.1 s apart, INFO.fps 10
    assert vp.rate == 10.0
    assert vp.select(np.arange(0, 12, 2)).rate == 5.0  # sampled: what --fps 5 decodes
    assert vp.select(np.arange(0, 12, 3)).rate == pytest.approx(3.333, abs=1e-3)
    assert vp.select([0]).rate == 10.0  # one row: the video's
    unknown = poses_of(two_walkers(12), info=VideoInfo(path="p.json", width=0, height=0, fps=0.0, frame_count=12,
                                                      duration=0.0))
    assert unknown.rate == 10.0 and unknown.select([3]).rate == 0.0
