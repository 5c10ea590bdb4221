"""Whom ``compare``, ``reps`` and ``find`` follow (``--person``, ``--reference-person``, auto), on
real video: frames of two videos side by side, built with PyAV. Sports2D's demo has a man on a box
raising his arms with a hop (frames 4-30: the reference movement) and a woman walking past (frames
60-86). The attempt puts the man at half the reference's size on the left and the woman, larger,
walking on the right: the old choice (the largest, most confident person) follows the woman."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from posescore.engine.analysis.people import (MAIN_PERFORMER_CHOICE, PersonError, main_performer, parse_person,
                                              track_people)
from posescore.engine.analysis.report import compare_poses
from posescore.engine.jobs.compare import compare_job
from posescore.engine.jobs.extract import extract_poses
from posescore.engine.jobs.find import find_job
from posescore.engine.jobs.inputs import choose_performers
from posescore.engine.jobs.reps import reps_poses
from posescore.engine.media.encode import write_video
from posescore.engine.media.pose_files import to_alphapose, write_alphapose
from posescore.engine.media.samples import fetch_sports2d
from posescore.engine.media.video import iter_frames

EXE = str(Path(sys.executable).with_name("posescore"))
REP = list(range(4, 31))  # the man's movement: arms from hanging to overhead, with a hop (0.9 s at 30 fps)
WALK = 60  # from here on the woman walks across, in front of the box
SPEEDS, REST = (1.0, 0.6), 8  # the repetitions of the reps attempt, each followed by a rest (frames held)
# The man's square of the demo (x0, y0, x1, y1) and where he stands in the side-by-side frames (his
# crop at 0.45, the reference's 0.9: half size); the woman's crop, at 0.66 on the right half.
MAN, WOMAN = (300, 0, 1000, 520), (1060, 480, 1540, 994)
LEFT, RIGHT = (2, 60), (320, 22)
# A point on the man (left half) and a box around the right half (the woman), in attempt pixels.
MAN_POINT, WOMAN_BOX = "160,180@0.3", "330,20,640,360@0.5"


def crop(rgb, region, scale):
    x0, y0, x1, y1 = region
    size = (int((x1 - x0) * scale) // 2 * 2, int((y1 - y0) * scale) // 2 * 2)
    return cv2.resize(rgb[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)


def canvas(width, height, *pieces):
    """A dark ``width`` x ``height`` frame with each ``(image, (x, y))`` pasted at x, y."""
    frame = np.full((height, width, 3), 30, np.uint8)
    for image, (x, y) in pieces:
        frame[y:y + image.shape[0], x:x + image.shape[1]] = image
    return frame


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """reference.mp4 (the man alone, 640x480), side.mp4 (640x360: the man at half size beside the
    woman walking, larger), twins.mp4 (the man twice, side by side), reps.mp4 (two repetitions of
    the man's movement, at 1x and 0.6x, beside the woman walking to and fro) and still.png (frame
    2 of side.mp4: the man's arms still down, so the woman is its main person)."""
    try:
        demo = fetch_sports2d()
    except RuntimeError as err:
        pytest.skip(f"Sports2D's demo video cannot be fetched: {err}")
    folder = tmp_path_factory.mktemp("person")
    frames = {f.index: f.rgb for f in iter_frames(demo) if f.index <= WALK + len(REP)}
    man = [crop(frames[i], MAN, 0.45) for i in REP]
    woman = [crop(frames[WALK + n], WOMAN, 0.66) for n in range(len(REP))]
    out = {"reference": write_video(folder / "reference.mp4",
                                    [canvas(640, 480, (crop(frames[i], MAN, 0.9), (5, 6))) for i in REP], 30),
           "side": write_video(folder / "side.mp4", [canvas(640, 360, (m, LEFT), (w, RIGHT))
                                                     for m, w in zip(man, woman)], 30),
           "twins": write_video(folder / "twins.mp4", [canvas(640, 360, (m, LEFT), (m, RIGHT)) for m in man], 30)}
    left = []
    for speed in SPEEDS:
        rep = [man[min(len(man) - 1, int(j * speed))] for j in range(math.ceil(len(man) / speed))]
        left += rep + [rep[-1]] * REST
    to_and_fro = woman + woman[::-1]
    walking = [to_and_fro[n % len(to_and_fro)] for n in range(len(left))]
    out["reps"] = write_video(folder / "reps.mp4", [canvas(640, 360, (m, LEFT), (w, RIGHT))
                                                    for m, w in zip(left, walking)], 30)
    out["still"] = folder / "still.png"
    cv2.imwrite(str(out["still"]), cv2.cvtColor(canvas(640, 360, (man[2], LEFT), (woman[2], RIGHT)), cv2.COLOR_RGB2BGR))
    return out


@pytest.fixture(scope="module")
def poses(videos, triton_server):
    """Every video's poses, extracted once; each also written as ``posescore pose`` writes it
    (``idx`` the track id): ``{name: (VideoPoses, json path)}``."""
    found = {}
    for name in ("reference", "side", "twins", "reps"):
        vp = extract_poses(videos[name], triton_server.grpc_url)
        path = videos[name].with_suffix(".json")
        write_alphapose(path, to_alphapose(vp, track_people(vp)))
        found[name] = vp, path
    return found


def track_on(vp, left: bool) -> int:
    """The track id of the person in the left (or right) half of a side-by-side video."""
    tracks = track_people(vp)
    centres = (vp.boxes[..., 0] + vp.boxes[..., 2]) / 2
    mask = (tracks >= 0) & ((centres < 320) if left else (centres >= 320))
    ids, counts = np.unique(tracks[mask], return_counts=True)
    return int(ids[np.argmax(counts)])


def test_auto_follows_the_performer_where_the_largest_person_scored_low(poses):
    (ref, ref_json), (side, side_json) = poses["reference"], poses["side"]
    man, woman = track_on(side, left=True), track_on(side, left=False)
    old = compare_poses(ref, side)  # the main performer: the largest, most confident: the woman
    assert old["attempt"]["performer_track"] == woman and old["attempt"]["performer_choice"] == MAIN_PERFORMER_CHOICE
    assert old["score"] <= 20  # measured 0.0
    report = compare_job(ref_json, side_json, None)  # auto, from `posescore pose` files
    assert report["attempt"]["performer_track"] == man and report["score"] >= 90, report["attempt"]  # measured 96.7
    assert report["attempt"]["performer_choice"] == "auto: best fit of 2 tracks"
    fits = report["attempt"]["performer_candidates"]
    assert [c["track"] for c in fits] == [man, woman] and fits[0]["fit"] == report["score"] and fits[1]["fit"] <= 20
    assert report["reference"]["performer_choice"] == "auto: the one track in most of the video"
    # The same choice on the extracted poses directly (the JSON's tracks are the video's).
    assert choose_performers(ref, side)[1].track == man


def test_person_names_a_track_a_point_or_a_box(poses):
    (_, ref_json), (side, side_json) = poses["reference"], poses["side"]
    man, woman = track_on(side, left=True), track_on(side, left=False)
    idx = {r["idx"] for r in json.loads(side_json.read_text())}
    assert idx == {man, woman}  # the ids `posescore pose` writes are the ones --person takes
    by_id = compare_job(ref_json, side_json, None, person=str(woman))
    assert by_id["attempt"]["performer_track"] == woman and by_id["score"] <= 20
    assert by_id["attempt"]["performer_choice"] == f"track {woman} (--person {woman})"
    assert "performer_candidates" not in by_id["attempt"]
    by_point = compare_job(ref_json, side_json, None, person=MAN_POINT)
    assert by_point["attempt"]["performer_track"] == man and by_point["score"] >= 90
    assert by_point["attempt"]["performer_choice"] == f"track {man} (--person {MAN_POINT})"
    by_box = compare_job(ref_json, side_json, None, person=WOMAN_BOX)
    assert by_box["attempt"]["performer_track"] == woman


def test_bad_person_specs_name_the_option_and_the_problem(poses):
    (_, ref_json), (side, side_json) = poses["reference"], poses["side"]
    ids = sorted({track_on(side, True), track_on(side, False)})
    listed = re.escape(", ".join(f"{t} (27 frames)" for t in ids))
    with pytest.raises(PersonError, match=rf"--person 7: .*side.json has no track 7; its tracks: {listed}"):
        compare_job(ref_json, side_json, None, person="7")
    with pytest.raises(PersonError, match=r"--person 5,5@0.5: .*the point \(5, 5\) is inside no person's box in "
                                          r"the frame at 0.50 s; there: track"):
        compare_job(ref_json, side_json, None, person="5,5@0.5")
    with pytest.raises(PersonError, match=r"--person 160,180@9: .*has frames from 0.00 to 0.87 s, none at 9 s"):
        compare_job(ref_json, side_json, None, person="160,180@9")
    with pytest.raises(PersonError, match=r"--reference-person 3: .*reference.json has no track 3; its tracks: 0"):
        compare_job(ref_json, side_json, None, reference_person="3")
    for spec, problem in (("1,2", "needs the time of its frame: 1,2@T"), ("1,2,3@0", "expected 2 numbers"),
                          ("5,5,1,1@0", "X0 < X1"), ("1,2@-1", "seconds >= 0"), ("-2", "integer >= 0"),
                          ("tall", "expected a track id"), ("a,b@1", "expected numbers")):
        with pytest.raises(PersonError, match=problem):
            parse_person(spec, "--person")
    assert parse_person("auto").auto and parse_person(None).auto and parse_person("3").track == 3
    assert parse_person("1,2,3,4@0.5").box == (1, 2, 3, 4) and parse_person("1.5,2@0").point == (1.5, 2)


def test_reference_auto_is_who_moves_the_most_and_two_alike_are_an_error(poses):
    (_, ref_json), (side, side_json), (twins, twins_json) = poses["reference"], poses["side"], poses["twins"]
    # The side-by-side video as the reference: the man moves more than the woman walking.
    report = compare_job(side_json, ref_json, None)
    assert report["reference"]["performer_track"] == track_on(side, left=True) and report["score"] >= 90
    assert report["reference"]["performer_choice"] == "auto: moves the most of 2 tracks"
    moves = report["reference"]["performer_candidates"]
    assert moves[0]["movement"] > moves[1]["movement"] > 0
    # The man twice: no one to prefer; the error lists the tracks and names the option.
    ids = sorted({track_on(twins, True), track_on(twins, False)})
    with pytest.raises(PersonError, match=rf"twins.json: 2 people could be the performer: .*track {ids[0]} "
                                          rf".*--reference-person TRACK \(one of {ids[0]}, {ids[1]}\)"):
        compare_job(twins_json, ref_json, None)
    chosen = compare_job(twins_json, ref_json, None, reference_person=str(ids[1]))
    assert chosen["reference"]["performer_track"] == ids[1] and chosen["score"] >= 90


def test_reps_follow_the_person_whose_repetitions_fit(poses):
    (ref, _), (reps, _) = poses["reference"], poses["reps"]
    old = reps_poses(ref, reps, performers=(main_performer(ref), main_performer(reps)))
    assert old["count"] == 0 and old["attempt"]["performer_track"] == track_on(reps, left=False)
    result = reps_poses(ref, reps)
    assert result["attempt"]["performer_track"] == track_on(reps, left=True)
    assert result["attempt"]["performer_choice"].startswith("auto: best fit of ")
    assert result["count"] == len(SPEEDS) and min(r["score"] for r in result["reps"]) >= 85, \
        [(r["start_frame"], r["end_frame"], r["score"]) for r in result["reps"]]
    by_point = reps_poses(ref, reps, person=MAN_POINT)
    assert by_point["attempt"]["performer_track"] == track_on(reps, left=True) and by_point["count"] == len(SPEEDS)


def test_find_looks_for_the_person_named_in_the_query_image(videos, poses, triton_server):
    (_, ref_json) = poses["reference"]
    main = find_job(videos["still"], ref_json, triton_server.grpc_url, k=1)
    assert main["pose_person"]["choice"].startswith("auto: the main person")
    named = find_job(videos["still"], ref_json, triton_server.grpc_url, k=1, person=MAN_POINT.replace("@0.3", "@0"))
    assert named["pose_person"]["choice"].startswith("track ") and named["pose_person"]["track"] != \
        main["pose_person"]["track"]
    best = named["moments"][0]
    # The main person (the woman) is not in the man's video: "nothing similar", with how close it came.
    main_best = main["moments"][0]["score"] if main["moments"] else main["best_score"]
    assert abs(best["frame"] - 2) <= 2 and best["score"] >= 90 and best["score"] > main_best


def test_cli_passes_person_and_refuses_bad_specs(poses):
    (_, ref_json), (side, side_json) = poses["reference"], poses["side"]
    man = track_on(side, left=True)
    out = subprocess.run([EXE, "compare", ref_json, side_json, "--person", str(man), "--json", "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["attempt"]["performer_choice"] == f"track {man} (--person {man})"
    out = subprocess.run([EXE, "reps", ref_json, side_json, "--person", "9", "--quiet"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 1 and "--person 9:" in out.stderr and "its tracks:" in out.stderr, out.stderr
    for argv in (["compare", ref_json, side_json, "--reference-person", "1,2"],
                 ["find", ref_json, side_json, "--person", "x"]):
        out = subprocess.run([EXE, *map(str, argv)], capture_output=True, text=True, timeout=300)
        assert out.returncode == 2 and f"{argv[3]}" in out.stderr and "Traceback" not in out.stderr, out.stderr
