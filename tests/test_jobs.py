"""The posescore jobs end to end on real video, through the CLI and the embedded server."""

import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import browser_dom, page_data
from posescore.engine.archive import CATALOG, archive_info, list_videos, verify
from posescore.engine.analysis.report import compare_poses
from posescore.engine.archive import MOMENT_GAP_S
from posescore.engine.media.samples import BASKETBALL, SAMPLE_VIDEO
from posescore.engine.reports.render import RED, draw_skeleton, red_limbs
from posescore.engine.media.encode import retime_video
from posescore.engine.jobs.extract import extract_poses
from posescore.kernels.skeleton import LIMBS

VTEST = SAMPLE_VIDEO
pytestmark = pytest.mark.skipif(not VTEST.exists(), reason="Debian's opencv-doc is not installed (make media)")
EXE = str(Path(sys.executable).with_name("posescore"))
# From 60 s on, one pedestrian dominates vtest.avi for several seconds (the main performer).
CLIP_START, CLIP_SECONDS = 60.0, 6.0


def posescore(*args, check=True):
    out = subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"posescore {' '.join(map(str, args))} exited {out.returncode}:\n{out.stderr}")
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    return {name: retime_video(VTEST, folder / f"{name}.mp4", speed, start=CLIP_START, duration=CLIP_SECONDS)
            for name, speed in (("clip", 1.0), ("half", 0.5), ("double", 2.0))}


@pytest.fixture(scope="module")
def clip_poses(clips, triton_server):
    return {name: extract_poses(path, triton_server.grpc_url) for name, path in clips.items()}


def test_compare_is_speed_invariant_and_separates_good_from_bad(clip_poses):
    clip = clip_poses["clip"]
    half_report = compare_poses(clip, clip_poses["half"])
    double_report = compare_poses(clip, clip_poses["double"])
    half, double = half_report["score"], double_report["score"]
    backwards = compare_poses(clip, clip.reversed())["score"]
    row = len(clip) // 2
    frozen = replace(clip, **{k: getattr(clip, k)[[row] * len(clip)] for k in ("keypoints", "boxes", "scores", "counts")},
                     tracks=None)
    frozen_score = compare_poses(clip, frozen)["score"]
    itself = compare_poses(clip, clip)
    assert itself["score"] == pytest.approx(100.0, abs=0.01)
    # Feedback agrees with the score: a movement against itself has no worst moment; a re-timed
    # copy's steps read on the parts' scale (no step of a 99 movement reads 0); backwards has some.
    assert itself["worst_moments"] == [] and itself["matches_throughout"]
    for report in (half_report, double_report, compare_poses(clip, clip.reversed())):
        check_worst_moments(report)
    assert min(s["score"] for s in half_report["steps"] + double_report["steps"]) >= 60.0  # measured 85.9 / 76.5
    assert half >= 95.0 and double >= 95.0  # measured 100.0 and 99.7 (README)
    assert max(backwards, frozen_score) <= 70.0  # the calibrated scale's promise; measured 7.5 and 51.1
    # Steps are real frames: every performer frame of the finer-sampled side appears, in order.
    for report, finer in ((double_report, "reference_frame"), (half_report, "attempt_frame")):
        frames = [step[finer] for step in report["steps"]]
        assert frames == sorted(frames) and set(frames) == set(range(max(frames) + 1))
        assert report["samples_per_frame"] == {"reference": 4, "attempt": 4}  # 10 fps -> 40 Hz


def check_worst_moments(report):
    """What the worst moments promise: the lowest-scoring steps under the threshold, best-first
    greedy at least MOMENT_GAP_S of reference time apart, each with the part of its step that is
    most off and, of that part's angles, the one that differs most (so the feedback's joint is the
    part's); none, and "matches throughout", when no step is under the threshold."""
    from posescore.kernels import under_threshold
    from posescore.kernels.skeleton import PART_ANGLES

    moments, steps = report["worst_moments"], report["steps"]
    under = [s for s in steps if under_threshold(s["score"], report["threshold"])]
    assert bool(moments) == bool(under) and report["matches_throughout"] == (not moments)
    if not moments:
        return
    scores = [m["score"] for m in moments]
    assert scores == sorted(scores) and scores[0] == min(s["score"] for s in steps)
    assert all(under_threshold(s, report["threshold"]) for s in scores)
    times = [m["reference_time"] for m in moments]
    assert all(abs(a - b) >= MOMENT_GAP_S for i, a in enumerate(times) for b in times[:i])
    # Every step scoring lower than the last moment is within the gap of a moment chosen before it.
    for step in steps:
        if step["score"] < scores[-1]:
            assert any(abs(step["reference_time"] - t) < MOMENT_GAP_S for t in times), step
    by_frames = {(s["reference_frame"], s["attempt_frame"]): s for s in steps}
    for moment in moments:
        parts = {k: v for k, v in by_frames[(moment["reference_frame"], moment["attempt_frame"])]["parts"].items()
                 if v is not None}
        assert moment["worst_part"] == min(parts, key=parts.get)
        assert moment["worst_part_score"] == min(parts.values())
        measured = {k: moment["angles"][k] for k in PART_ANGLES[moment["worst_part"]]
                    if moment["angles"][k]["difference"] is not None}
        assert moment["joint"] == (max(measured, key=lambda k: abs(measured[k]["difference"])) if measured else None)


def test_compare_cli_writes_report_video_and_plot(clips, triton_server, tmp_path):
    out = posescore("compare", clips["clip"], clips["half"], "--url", triton_server.grpc_url, "--json",
                    "--quiet", "--out", tmp_path, "--threshold", "97", "--csv", tmp_path / "steps.csv")
    report = json.loads(out.stdout)
    import csv

    with open(tmp_path / "steps.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(report["steps"]) and "rep" not in rows[0]
    assert float(rows[3]["score"]) == report["steps"][3]["score"]
    knee = report["steps"][3]["angles"]["left_knee"]["difference"]
    assert rows[3]["left_knee_difference"] == ("" if knee is None else str(knee))
    assert report["score"] >= 95 and set(report["parts"]) == {"head", "torso", "left_arm", "right_arm",
                                                              "left_leg", "right_leg"}
    check_worst_moments(report)
    assert json.loads((tmp_path / "report.json").read_text())["score"] == report["score"]
    with av.open(str(tmp_path / "side_by_side.mp4")) as video:
        frames = sum(1 for _ in video.decode(video=0))
    assert frames == len(report["steps"])
    png = (tmp_path / "scores.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # report.html in a real browser: it loads, its video plays, its tables show the report's numbers.
    dom = browser_dom(tmp_path / "report.html")
    data = page_data(dom)
    assert data.get("ready") == "1" and "errors" not in data and float(data["played"]) > 0, data
    assert float(data["video-duration"]) == pytest.approx(frames / 10.0, abs=0.15)  # one frame per step at 10 fps
    for part, score in report["parts"].items():
        row = re.search(rf'<tr class="part( under)?" data-part="{part}">.*?<td class="value">([^<]*)</td>', dom)
        assert row.group(2) == ("-" if score is None else f"{score:.1f}")
        assert bool(row.group(1)) == (part in report["parts_under_threshold"])
    assert dom.count('class="moment"') == len(report["worst_moments"])
    assert int(data["plot-points"]) == len(report["steps"])  # the interactive plot: a point per step
    # The page says whom it followed (a boxed frame of each, its track) and what the score means.
    from posescore.kernels import score_band

    for role in ("reference", "attempt"):
        card = re.search(rf'<div class="followed" data-role="{role}"><img src="data:image/jpeg;base64,[^"]+"'
                         rf'[^>]*><div>{role}: track (\d+)', dom)
        assert card and int(card.group(1)) == report[role]["performer_track"], role
        assert Path(report["outputs"][f"{role}_person"]).stat().st_size > 5_000
    assert re.search(r'<div class="band" id="band">([^<]*)</div>', dom).group(1) == score_band(report["score"])


# A standing figure whose limbs do not cross: each limb's midpoint shows that limb's colour.
_FIGURE = np.array([[200, 60], [190, 50], [210, 50], [175, 55], [225, 55], [160, 110], [240, 110],
                    [140, 170], [260, 170], [130, 230], [270, 230], [175, 230], [225, 230],
                    [170, 310], [230, 310], [165, 390], [235, 390]], np.float32)


@pytest.mark.parametrize("parts", [[90, 50, 95, 10, 85, 70], [100] * 6, [0] * 6, [79.9, 80, 81, 20, 99, 0]])
def test_red_limbs_are_exactly_those_of_parts_under_the_threshold(parts):
    pose = np.concatenate([_FIGURE, np.ones((17, 1), np.float32)], axis=1)
    parts = np.array(parts, np.float32)
    drawn = draw_skeleton(np.zeros((420, 400, 3), np.uint8), pose, parts, threshold=80)
    red = {n for n, (a, b) in enumerate(LIMBS) if tuple(_midpoint_colour(drawn, pose[a], pose[b])) == RED}
    assert red == set(red_limbs(parts, 80)) == {n for n, (a, b) in enumerate(LIMBS)
                                               if parts[_part_of(n)] < 80}


def _part_of(limb):
    from posescore.kernels.skeleton import LIMB_PARTS

    return LIMB_PARTS[limb]


def _midpoint_colour(image, p, q):
    x, y = ((p[:2] + q[:2]) / 2).round().astype(int)
    return image[y, x]


def test_pose_cli_writes_alphapose_json(triton_server, tmp_path):
    image = VTEST.parent / "basketball1.png"
    out_file = tmp_path / "poses.json"
    posescore("pose", image, "-o", out_file, "--url", triton_server.grpc_url, "--quiet")
    records = json.loads(out_file.read_text())
    assert records and all(r["category_id"] == 1 and len(r["keypoints"]) == 51 and len(r["box"]) == 4
                           and 0 <= r["score"] <= 1 and "image_id" in r and "idx" in r for r in records)


def test_find_says_nothing_similar_under_its_min_score_and_names_tracks(clip_poses, tmp_path):
    """Pose JSON files only (no server): the clip's pose turned on its side (lying down) is not
    in the clip of pedestrians; the pose itself is, in the performer's track."""
    from posescore.engine.media.pose_files import to_alphapose, write_alphapose

    clip = clip_poses["clip"]
    row = len(clip) // 2
    standing = clip.select([row])
    keypoints = standing.keypoints.copy()
    centre = keypoints[..., :2].mean(axis=(0, 1, 2))
    xy = keypoints[..., :2] - centre
    keypoints[..., 0], keypoints[..., 1] = centre[0] - xy[..., 1], centre[1] + xy[..., 0]  # turned 90 degrees
    lying = replace(standing, keypoints=keypoints)
    video = write_alphapose(tmp_path / "clip.json", to_alphapose(clip))
    query = write_alphapose(tmp_path / "lying.json", to_alphapose(lying))
    result = json.loads(posescore("find", query, video, "--json", "--quiet").stdout)
    assert result["moments"] == [] and result["best_score"] < result["min_score"] == 50.0
    text = posescore("find", query, video, "--quiet").stdout
    assert text.startswith(f"nothing similar: the best moment scores {result['best_score']:.1f}, under 50"), text
    pose = write_alphapose(tmp_path / "standing.json", to_alphapose(standing))
    found = json.loads(posescore("find", pose, video, "--json", "--quiet", "--k", "1").stdout)["moments"]
    assert found[0]["frame"] == int(clip.frame_indices[row]) and found[0]["score"] >= 99
    assert found[0]["track"] >= 0


def test_the_track_sheet_shows_each_track_with_its_id(clips, clip_poses, triton_server, tmp_path):
    """``posescore pose -o`` writes a contact sheet beside its JSON: a frame of each track, boxed,
    in columns of 4, so that a user can pick the --person to follow."""
    import cv2

    from posescore.engine.analysis.people import track_people
    from posescore.engine.jobs.pose import SHEET_COLUMNS, write_track_sheet

    poses = clip_poses["clip"]
    tracks = track_people(poses)
    sheet = cv2.imread(str(write_track_sheet(tmp_path / "sheet.png", clips["clip"], poses, tracks)))
    count = len(np.unique(tracks[tracks >= 0]))
    rows = -(-count // SHEET_COLUMNS)
    assert sheet.shape[1] == 360 * SHEET_COLUMNS and sheet.shape[0] % rows == 0
    # Each tile has its person boxed in yellow (RGB 255, 214, 0), and the empty tiles none.
    tile_h = sheet.shape[0] // rows
    boxed = [bool(((sheet[r * tile_h:(r + 1) * tile_h, c * 360:(c + 1) * 360] == (0, 214, 255)).all(-1)).any())
             for r in range(rows) for c in range(SHEET_COLUMNS)]
    assert boxed == [True] * count + [False] * (rows * SHEET_COLUMNS - count)
    image = posescore("pose", BASKETBALL, "-o", tmp_path / "basketball.json", "--url", triton_server.grpc_url, "--quiet")
    assert f"tracks: {tmp_path / 'basketball.tracks.png'}" in image.stdout
    assert (tmp_path / "basketball.tracks.png").stat().st_size > 10_000


def test_find_returns_the_frame_a_pose_was_taken_from(clips, clip_poses, triton_server, tmp_path):
    clip = clip_poses["clip"]
    row = len(clip) // 2
    from posescore.engine.media.pose_files import to_alphapose, write_alphapose

    pose_file = tmp_path / "pose.json"
    write_alphapose(pose_file, to_alphapose(clip.select([row])))
    out = posescore("find", pose_file, clips["clip"], "--url", triton_server.grpc_url, "--json", "--quiet",
                    "--out", tmp_path, "--k", "3")
    moments = json.loads(out.stdout)["moments"]
    assert abs(moments[0]["frame"] - int(clip.frame_indices[row])) <= 2
    assert (tmp_path / "best_match.png").stat().st_size > 10_000

    archive = tmp_path / "archive"
    posescore("index", clips["clip"], "--archive", archive, "--url", triton_server.grpc_url, "--quiet")
    again = json.loads(posescore("index", clips["clip"], "--archive", archive, "--url", triton_server.grpc_url,
                                 "--quiet", "--json").stdout)
    assert again["videos"][0]["status"] == "already indexed"
    hits = json.loads(posescore("search", "--archive", archive, "--pose", pose_file, "--json").stdout)["matches"]
    assert abs(hits[0]["start_frame"] - int(clip.frame_indices[row])) <= 2 and hits[0]["score"] > 99
    # A movement: the clip's own performance is found in the archive, where it is.
    moves = json.loads(posescore("search", "--archive", archive, "--clip", clips["clip"], "--url",
                                 triton_server.grpc_url, "--quiet", "--json", "--k", "2").stdout)["matches"]
    assert moves[0]["video"] == "clip.mp4" and moves[0]["score"] > 95
    assert moves[0]["end_frame"] - moves[0]["start_frame"] > len(clip) // 2


def test_killed_index_leaves_a_consistent_archive_that_a_second_run_completes(clips, triton_server, tmp_path):
    archive = tmp_path / "archive"
    long_clip = retime_video(VTEST, tmp_path / "long.mp4", 1.0, start=50.0, duration=12.0)
    proc = subprocess.Popen([EXE, "index", str(clips["clip"]), str(long_clip), "--archive", str(archive),
                             "--url", triton_server.grpc_url, "--quiet"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill it once the first video is in, mid-way through the second
        if (archive / CATALOG).exists() and list_videos(archive):
            break
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    videos = list_videos(archive)
    assert [v["name"] for v in videos] == ["clip.mp4"]
    assert archive_info(archive)["poses"] == videos[0]["poses"] and verify(archive)["ok"]
    out = json.loads(posescore("index", clips["clip"], long_clip, "--archive", archive, "--url",
                               triton_server.grpc_url, "--quiet", "--json").stdout)
    assert [v["status"] for v in out["videos"]] == ["already indexed", "indexed"]
    assert [v["name"] for v in list_videos(archive)] == ["clip.mp4", "long.mp4"]
    assert verify(archive) == {**verify(archive), "ok": True, "unnamed_files": []}


def test_bad_inputs_give_clear_errors_and_exit_codes(tmp_path, triton_server):
    fake = tmp_path / "notes.mp4"
    fake.write_text("this is not a video\n")
    out = posescore("pose", fake, "--url", triton_server.grpc_url, "--quiet", check=False)
    assert out.returncode == 1 and str(fake) in out.stderr and "Traceback" not in out.stderr
    truncated = tmp_path / "truncated.avi"
    data = VTEST.read_bytes()
    truncated.write_bytes(data[:len(data) // 20])
    out = posescore("pose", truncated, "--url", triton_server.grpc_url, "--quiet", check=False)
    assert out.returncode == 1 and "truncated.avi" in out.stderr and "last good frame" in out.stderr
    out = posescore("search", "--archive", tmp_path / "nothing", "--pose", fake, check=False)
    assert out.returncode == 1 and "not a posescore archive" in out.stderr
    assert posescore("find", "--k", "0", check=False).returncode == 2


@pytest.mark.parametrize("argv, message", [
    (["compare", "a.json", "b.json", "--threshold", "150"], "--threshold: expected a score from 0 to 100, got 150"),
    (["compare", "a.json", "b.json", "--threshold", "nan"], "--threshold: expected a score from 0 to 100, got nan"),
    (["compare", "a.json", "b.json", "--threshold", "-5"], "--threshold: expected a score from 0 to 100, got -5"),
    (["compare", "a.json", "b.json", "--window", "-3"], "--window: expected a number of frames >= 1, got -3"),
    (["search", "--archive", "x", "--pose", "p.json", "--k", "1000000000"],
     "--k: expected an integer from 1 to 10,000, got 1000000000"),
    (["find", "p.json", "v.json", "--k", "0"], "--k: expected an integer from 1 to 100,000, got 0"),
    (["pose", "v.mp4", "--fps", "inf"], "--fps: expected frames per second > 0, got inf"),
])
def test_bad_options_exit_2_naming_the_option(argv, message):
    out = posescore(*argv, check=False)
    assert out.returncode == 2 and message in out.stderr, out.stderr


def test_index_refuses_what_it_cannot_index_before_any_inference(clips, triton_server, tmp_path):
    pose_file = tmp_path / "x.json"
    pose_file.write_text("[]")
    archive = tmp_path / "archive"
    out = posescore("index", clips["clip"], pose_file, "--archive", archive, "--url", triton_server.grpc_url,
                    "--quiet", check=False)
    assert out.returncode == 1 and "x.json: a pose JSON file; index takes videos" in out.stderr
    assert not archive.exists()  # checked before the archive was made or anything inferred
    folder = tmp_path / "holiday-photos"
    folder.mkdir()
    (folder / "beach.jpg").write_bytes(b"not an archive")
    out = posescore("index", clips["clip"], "--archive", folder, "--url", triton_server.grpc_url, "--quiet",
                    check=False)
    assert out.returncode == 1 and "not a posescore archive" in out.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["beach.jpg"]


def test_an_index_run_that_fails_says_which_videos_it_kept(clips, triton_server, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clips["half"].read_bytes()[:4000])
    archive = tmp_path / "archive"
    out = posescore("index", clips["clip"], broken, "--archive", archive, "--url", triton_server.grpc_url,
                    "--quiet", check=False)
    assert out.returncode == 1 and "broken.mp4" in out.stderr
    assert "indexed before it, and kept: " in out.stderr and "clip.mp4" in out.stderr
    assert [v["name"] for v in list_videos(archive)] == ["clip.mp4"]


def test_archive_search_on_real_video_is_on_compares_scale(clips, clip_poses, triton_server, tmp_path):
    """An archive of real video (20 s of vtest.avi holding the clip's 6 s, the clip, and copies of
    it at half and double speed): a 4 s movement cut from the clip is found where it is, scoring
    >= 98, and in the re-timed copies >= 95; every hit's score is compare's for the same pair; a
    frame of the clip answers that frame first, and no two hits of one person come within the gap."""
    from posescore.clients import PoseScoreClient
    from posescore.engine.archive import open_archive
    from posescore.engine.jobs.index import commit_video, content_id, index_job
    from posescore.engine.analysis.people import main_performer
    from posescore.engine.archive import hit_poses, search_archive

    long_clip = retime_video(VTEST, tmp_path / "long.mp4", 1.0, start=CLIP_START - 10.0, duration=20.0)
    archive_dir = tmp_path / "archive"
    with PoseScoreClient(triton_server.grpc_url, timeout=300) as client:
        index_job([long_clip], archive_dir, client)
    for name in ("clip", "half", "double"):  # their poses are already known: index's own writer step
        commit_video(archive_dir, clips[name], content_id(clips[name]), clip_poses[name])
    archive = open_archive(archive_dir)
    clip = clip_poses["clip"]
    piece = clip.select(np.arange(10, 50))
    performer = main_performer(piece)
    query = performer.poses[performer.present]
    hits = search_archive(archive, query, k=8, query_fps=clip.info.fps)
    by_video = {}
    for hit in hits:
        by_video.setdefault(hit["video"], hit)
    found = by_video["clip.mp4"]
    assert abs(found["start_frame"] - int(piece.frame_indices[0])) <= 3 and found["score"] >= 98
    in_long = by_video["long.mp4"]
    assert abs(in_long["start_frame"] - (int(piece.frame_indices[0]) + 100)) <= 3 and in_long["score"] >= 98
    assert by_video["half.mp4"]["score"] >= 95 and by_video["double.mp4"]["score"] >= 95
    for hit in hits[:4]:  # one function for both: compare's report of the pair scores the hit's score
        found_poses = hit_poses(archive, hit)
        report = compare_poses(piece, found_poses,
                               performers=(performer, main_performer(found_poses, found_poses.tracks)))
        assert report["score"] == pytest.approx(round(hit["score"], 2), abs=0.006)

    row = len(clip) // 2
    moments = search_archive(archive, clip.keypoints[row, 0], k=20)
    assert (moments[0]["video"], moments[0]["start_frame"]) == ("clip.mp4", int(clip.frame_indices[row]))
    seen = {}
    for hit in moments:
        seen.setdefault((hit["video"], hit["track"]), []).append(hit["start_time"])
    for times in seen.values():
        assert (np.diff(np.sort(times)) >= MOMENT_GAP_S - 1e-6).all()

    # A pose no one in the archive takes (a frame's pose upside down): "nothing similar", with how
    # close the nearest came; the pose itself is found.
    from posescore.engine.jobs.search import search_job
    from posescore.engine.media.pose_files import write_alphapose

    frame = clip.select([row])
    upright = write_alphapose(tmp_path / "upright.json", frame)
    frame.keypoints[..., 1] = frame.info.height - frame.keypoints[..., 1]
    upside_down = write_alphapose(tmp_path / "upside_down.json", frame)
    found = search_job(archive_dir, pose=upright, k=3)
    assert found["matches"] and found["matches"][0]["score"] >= 99 and "best_score" not in found
    nothing = search_job(archive_dir, pose=upside_down, k=3)
    assert nothing["matches"] == [] and 0 <= nothing["best_score"] < 50
    assert search_job(archive_dir, pose=upside_down, k=3, min_score=0.0)["matches"][0]["score"] == \
        nothing["best_score"]
    out = subprocess.run([EXE, "search", "--archive", str(archive_dir), "--pose", str(upside_down)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == (
        f"nothing similar: the best moment scores {nothing['best_score']:.1f}, under 50 (--min-score)"), out


def test_search_explain_gives_compares_report_of_a_hit(clips, triton_server, tmp_path):
    archive = tmp_path / "archive"
    posescore("index", clips["double"], "--archive", archive, "--url", triton_server.grpc_url, "--quiet")
    out = json.loads(posescore("search", "--archive", archive, "--clip", clips["clip"], "--url",
                               triton_server.grpc_url, "--quiet", "--json", "--k", "3", "--explain", "1",
                               "--out", tmp_path / "explained").stdout)
    report = out["explain"]["report"]
    assert out["matches"][0]["score"] == pytest.approx(report["score"], abs=0.01) and report["score"] >= 95
    assert report["steps"] and set(report["parts"]) == {"head", "torso", "left_arm", "right_arm", "left_leg",
                                                        "right_leg"}
    assert json.loads((tmp_path / "explained" / "report.json").read_text())["score"] == report["score"]
    bad = posescore("search", "--archive", archive, "--clip", clips["clip"], "--url", triton_server.grpc_url,
                    "--quiet", "--explain", "9", check=False)
    assert bad.returncode == 1 and "--explain: expected a hit number from 1 to" in bad.stderr


def _stderr_on_a_terminal(*args) -> str:
    """Run ``posescore ARGS`` with stderr on a pseudo-terminal; what it wrote there."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a terminal 120 wide
    proc = subprocess.Popen([EXE, *map(str, args)], stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    assert proc.wait(timeout=300) == 0
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal_only(clips, triton_server, tmp_path):
    shown = _stderr_on_a_terminal("pose", clips["double"], "--url", triton_server.grpc_url, "-o", tmp_path / "a.json")
    assert "decoded and inferred" in shown and "100%" in shown and "frame/s" in shown, shown
    assert _stderr_on_a_terminal("pose", clips["double"], "--url", triton_server.grpc_url, "--quiet",
                                 "-o", tmp_path / "b.json") == ""
    piped = posescore("pose", clips["double"], "--url", triton_server.grpc_url, "-o", tmp_path / "c.json")
    assert "frame" not in piped.stderr  # stderr is a pipe: no bar


def test_the_side_by_side_video_crops_a_small_performer_of_a_large_frame():
    from posescore.engine.reports.render import performer_crop

    boxes = np.array([[900, 500, 960, 640], [980, 510, 1041, 650], [0, 0, 0, 0]], np.float32)
    present = np.array([True, True, False])
    x0, y0, x1, y1 = performer_crop(boxes, present, 1920, 1080)
    assert (x0, y0) == (864, 462) and (x1 - x0) % 2 == 0 and (y1 - y0) % 2 == 0
    assert x1 >= 1041 + 35 - 1 and y1 >= 650 + 35 - 1  # the union, grown by a quarter of its size
    assert performer_crop(boxes, present, 320, 720) is None  # it would show most of the frame anyway
    assert performer_crop(boxes, np.zeros(3, bool), 1920, 1080) is None
