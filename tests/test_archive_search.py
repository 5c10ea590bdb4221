"""Search in a format-2 archive: clip search equals one subsequence_dtw call per track, pruned or
not; pose hits are moments; filters; the scale is compare's."""

import numpy as np
import pytest

from posescore import kernels
from posescore.engine import archive as archive_io
from posescore.engine.archive import clip_search as clip_module, search as search_module
from posescore.engine.archive import add_video, open_archive
from posescore.engine.archive import SearchFilter, search_archive
from posescore.engine.analysis.answers import movement_score


def _walks(rng, tracks, length):
    """Smooth random-walk poses ``[tracks * length, 17, 3]`` (pixels, confidences in [0.3, 1])."""
    steps = rng.normal(0, 3, (tracks, length, 17, 3)).astype(np.float32)
    poses = (200 + np.cumsum(steps, axis=1)).reshape(-1, 17, 3)
    poses[..., 2] = rng.uniform(0.3, 1.0, poses.shape[:2])
    return poses


@pytest.fixture(scope="module")
def many_tracks(tmp_path_factory):
    """Two videos of 30 tracks of 1-40 frames (ragged, one-frame tracks too), and a query cut from
    a track of the second."""
    rng = np.random.default_rng(31)
    root = tmp_path_factory.mktemp("archive")
    stored = {}
    for video in range(2):
        lengths = rng.integers(1, 41, 30)
        poses = np.concatenate([_walks(rng, 1, n) for n in lengths])
        frames = np.concatenate([np.arange(n) for n in lengths])
        tracks = np.repeat(np.arange(30), lengths)
        add_video(root, f"v{video}", f"v{video}.mp4", poses, frames, frames / 30.0, tracks, fps=30.0)
        stored[video] = (poses, frames, tracks)
    poses, frames, tracks = stored[1]
    track = int(next(t for t in range(30) if (tracks == t).sum() >= 30))
    return root, poses[tracks == track][5:17], track, stored


def _per_track_reference(root, query, k):
    """The k best DTW matches by one subsequence_dtw call per (video, track), and their spans."""
    archive = open_archive(root)
    q_vec, _ = kernels.normalize(query)
    found = []
    for video in archive.videos:
        segment = archive.segment(video["segment"])
        lo, hi = video["first_row"], video["first_row"] + video["poses"]
        tracks, frames = segment.column("tracks")[lo:hi], segment.column("frames")[lo:hi]
        for t in np.unique(tracks):
            rows = np.flatnonzero(tracks == t)
            if len(rows) < 2:
                continue
            vectors = np.asarray(segment.rows("vectors", lo, hi)[rows], np.float32)
            costs, starts, ends = kernels.subsequence_dtw(q_vec, vectors, k=k)
            found += [(round(float(c), 5), video["name"], int(t), int(frames[rows[s]]), int(frames[rows[e - 1]]))
                      for c, s, e in zip(costs, starts, ends)]
    return sorted(found)[:k]


@pytest.mark.parametrize("batch", [1_000_000, 150, 1])
@pytest.mark.parametrize("prune", [True, False])
def test_clip_candidates_equal_one_call_per_track(many_tracks, batch, prune, monkeypatch):
    """A clip search's DTW candidates (tracks batched into few calls, pruned or not) are those of
    one subsequence_dtw call per (video, track); its hits are the exact segment first."""
    root, query, track, _ = many_tracks
    monkeypatch.setattr(clip_module, "SEARCH_BATCH_POSES", batch)
    archive = open_archive(root)
    got = []
    for c in clip_module.clip_candidates(archive, query, 12, prune=prune):
        segment = archive.segment(c.segment)
        name = next(v["name"] for v in segment.info.videos if v["first_row"] <= c.first < v["first_row"] + v["poses"])
        got.append((round(c.cost, 5), name, int(segment.column("tracks")[c.first]),
                    int(segment.column("frames")[c.first]), int(segment.column("frames")[c.last])))
    assert got == _per_track_reference(root, query, 12)
    hits = search_archive(archive, query, k=8, query_fps=30.0, prune=prune)
    assert (hits[0]["video"], hits[0]["track"], hits[0]["start_frame"], hits[0]["end_frame"]) == ("v1.mp4", track, 5, 16)
    assert hits[0]["score"] > 99.9
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


@pytest.mark.parametrize("kind", ["rare", "everywhere"])
def test_pruned_clip_search_over_many_batches_equals_brute_force(kind, tmp_path, monkeypatch):
    """Pruned, each batch's search is capped by the k-th best cost found in the batches before it:
    over many batches of tracks long enough to prune, with a movement planted in three of eight
    videos or in every track, with and without the min-score cap, the candidates are the brute
    force's (rows, order; costs to float32 rounding)."""
    rng = np.random.default_rng(["rare", "everywhere"].index(kind) + 40)
    query = _walks(rng, 1, 30)
    for video in range(8):
        poses = _walks(rng, 4, 900)
        if kind == "everywhere":
            poses = np.tile(query, (120, 1, 1)) + rng.normal(0, 2, (3600, 17, 3)).astype(np.float32) * [1, 1, 0]
        elif video in (1, 4, 6):
            at = int(rng.integers(0, 860)) + 900 * int(rng.integers(0, 4))
            poses[at:at + 30] = query + rng.normal(0, 1, (30, 17, 3)).astype(np.float32) * [1, 1, 0]
        frames = np.tile(np.arange(900), 4)
        add_video(tmp_path, f"{kind}{video}", f"{video}.mp4", poses, frames, frames / 30.0, np.repeat(np.arange(4), 900),
                  fps=30.0)
    monkeypatch.setattr(clip_module, "SEARCH_BATCH_POSES", 1_800)  # two tracks a batch: 16 batches
    archive = open_archive(tmp_path)
    for max_cost in (None, clip_module.clip_max_cost(50.0, 30)):
        pruned = clip_module.clip_candidates(archive, query, 30, prune=True, max_cost=max_cost)
        brute = clip_module.clip_candidates(archive, query, 30, prune=False, max_cost=max_cost)
        assert [(c.segment, c.first, c.last) for c in pruned] == [(c.segment, c.first, c.last) for c in brute]
        np.testing.assert_allclose([c.cost for c in pruned], [c.cost for c in brute], rtol=1e-5)
        assert len(brute) == 30 or max_cost is not None


def test_clip_hit_scores_are_movement_score(many_tracks):
    """A clip hit's score is movement_score (compare's) of the query against the hit's stored poses."""
    root, query, _, stored = many_tracks
    archive = open_archive(root)
    for hit in search_archive(archive, query, k=5, query_fps=30.0):
        poses = search_module.hit_poses(archive, hit)
        want = movement_score(query, 30.0, poses.keypoints[:, 0], poses.info.fps).score
        assert hit["score"] == want


def test_pose_hits_are_moments_and_filters_hold(tmp_path):
    """One long track holding the same pose for 2 s at 30 fps, and that pose again at 10 s: the
    hits are one moment per stretch (no two within min_gap), best first; the video glob and the
    time range filter them."""
    rng = np.random.default_rng(4)
    poses = _walks(rng, 1, 600)
    pose = poses[45].copy()
    poses[30:90] = pose + rng.normal(0, 0.3, (60, 17, 3)).astype(np.float32) * [1, 1, 0]
    poses[[45, 300]] = pose
    frames = np.arange(600)
    add_video(tmp_path, "a" * 32, "a.mp4", poses, frames, frames / 30.0, np.zeros(600), fps=30.0)
    add_video(tmp_path, "b" * 32, "b.mp4", poses, frames, frames / 30.0, np.zeros(600), fps=30.0)
    archive = open_archive(tmp_path)
    hits = search_archive(archive, pose, k=40)
    by_video = {}
    for hit in hits:
        by_video.setdefault(hit["video"], []).append(hit["start_time"])
    for times in by_video.values():
        times = np.sort(times)
        assert (np.diff(times) >= 0.5 - 1e-6).all()
    assert {round(h["start_time"], 3) for h in hits[:4]} == {1.5, 10.0}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    only_b = search_archive(archive, pose, k=5, where=SearchFilter(video="b*"))
    assert {h["video"] for h in only_b} == {"b.mp4"}
    late = search_archive(archive, pose, k=5, where=SearchFilter(start=5.0, end=12.0))
    assert all(5.0 <= h["start_time"] <= 12.0 for h in late) and late[0]["start_time"] == pytest.approx(10.0)
    gapless = search_archive(archive, pose, k=10, min_gap=0.0, where=SearchFilter(video="a*", end=3.0))
    assert len(gapless) == 10 and all(29 <= h["start_frame"] <= 90 for h in gapless)


@pytest.mark.parametrize("where", [SearchFilter(), SearchFilter(video="v1*")])
def test_pose_candidates_scanned_in_pieces_equal_brute_force(tmp_path, monkeypatch, where):
    """Two videos in one segment (the second's rows start inside a tile), a pose scan cut into
    pieces of 64 rows on the kernels' threads: the same candidates as one piece a run, and the
    best inner products of the float32 rows, exactly ordered by (key, segment, row)."""
    rng = np.random.default_rng(12)
    videos = []
    for number, length in enumerate((1001, 777)):
        poses, frames = _walks(rng, 1, length), np.arange(length)
        videos.append(archive_io.VideoRows(f"{number:032x}", f"v{number}.mp4", poses, frames, frames / 30.0,
                                           np.zeros(length, np.int32), {"fps": 30.0}))
    archive_io.add_videos(tmp_path, videos)
    archive = open_archive(tmp_path)
    query = videos[1].poses[300] + rng.normal(0, 2, (17, 3)).astype(np.float32) * [1, 1, 0]
    whole, total = search_module.pose_candidates(archive, query, 200, where=where)
    monkeypatch.setattr(search_module, "PIECE_MIN_ROWS", 64)
    monkeypatch.setattr(search_module, "PIECES_PER_THREAD", 1000)
    runs = search_module.live_runs(archive, where.videos(archive))
    assert len(search_module._pieces(runs, 2)) >= total // 64
    cut, cut_total = search_module.pose_candidates(archive, query, 200, where=where)
    assert cut == whole and cut_total == total == (1778 if where.video is None else 777)

    q_vec, _ = kernels.normalize(query)
    segment = archive.segment(runs[0].segment.info.id)
    lo = runs[0].lo
    rows = np.asarray(kernels.float32_rows(segment.column("vectors"), lo, lo + total), np.float64)
    keys = rows @ q_vec.astype(np.float64)
    best = np.argsort(-keys, kind="stable")[:200]
    np.testing.assert_allclose([h["key"] for h in cut], keys[best], atol=1e-5)
    assert len({h["row"] for h in cut} ^ set((lo + best).tolist())) <= 2  # a near-tie at the 200th may swap


def test_removed_videos_are_not_found_and_compaction_keeps_answers(many_tracks, tmp_path):
    """Remove a video: its rows stay in its segment, unread; compact: one segment, same answers."""
    _, query, _, stored = many_tracks
    for video, (poses, frames, tracks) in stored.items():
        add_video(tmp_path, f"v{video}", f"v{video}.mp4", poses, frames, frames / 30.0, tracks, fps=30.0)
    add_video(tmp_path, "gone", "gone.mp4", stored[1][0], stored[1][1], stored[1][1] / 30.0, stored[1][2], fps=30.0)
    before = search_archive(open_archive(tmp_path), query, k=6)
    assert {h["video"] for h in before[:2]} == {"v1.mp4", "gone.mp4"}
    archive_io.remove_videos(tmp_path, ["gone.mp4"])
    removed = search_archive(open_archive(tmp_path), query, k=6)
    assert "gone.mp4" not in {h["video"] for h in removed} and removed[0]["video"] == "v1.mp4"
    result = archive_io.compact(tmp_path)
    assert (result["before"]["segments"], result["after"]["segments"]) == (2, 1)
    assert result["after"]["dead_rows"] == 0
    assert search_archive(open_archive(tmp_path), query, k=6) == removed
    assert archive_io.verify(tmp_path)["ok"]


def test_an_archive_larger_than_the_mapping_budget_still_answers(many_tracks, tmp_path, monkeypatch):
    """Every segment's columns mapped in turn when they do not fit the budget together: the same
    answers, and never more mapped than the budget."""
    _, query, _, stored = many_tracks
    for video, (poses, frames, tracks) in stored.items():
        for copy in range(3):
            add_video(tmp_path, f"v{video}-{copy}", f"v{video}-{copy}.mp4", poses, frames, frames / 30.0, tracks)
    want = search_archive(open_archive(tmp_path), query, k=5)
    want_pose = search_archive(open_archive(tmp_path), query[3], k=5)
    archive = open_archive(tmp_path)
    largest = max(s.bytes for s in archive.segments.values())
    monkeypatch.setattr(archive_io.MAPPED, "budget", largest)
    archive_io.MAPPED.maps.clear()
    assert search_archive(archive, query, k=5) == want
    assert search_archive(archive, query[3], k=5) == want_pose
    mapped = [len(buffer) for _, buffer in archive_io.MAPPED.maps.values()]
    assert 0 < sum(mapped) <= largest
