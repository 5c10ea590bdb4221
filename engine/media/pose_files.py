"""Keypoint files in and out at the edge: AlphaPose / COCO results JSON (the seed format) and
OpenPose JSON (COCO-18 or BODY_25), as :class:`engine.poses.VideoPoses`.

AlphaPose / COCO results JSON, written by :func:`to_alphapose` / :func:`write_alphapose`: a list with
one object per detected person per frame::

    [{"image_id": "frame_000123",        # video: "frame_" + the source frame index (6+ digits);
                                         # still image: the image's file name, e.g. "TKD_1.png"
      "category_id": 1,                  # person
      "keypoints": [x0, y0, c0, ... ],   # 51 numbers: COCO-17 order, pixels of the original frame
      "score": 0.93,                     # detection score 0-1
      "box": [x, y, w, h],               # pixels, top-left corner, width, height
      "idx": 0,                          # track id (track_people) or the person's index in the frame
      "frame": 123, "time": 12.3,        # posescore extensions (source frame index, seconds);
                                         # other readers ignore them
      "landmarks": [x0, y0, z0, v0, p0, ...],  # with the landmarks model: BlazePose GHUM's 33
                                         # landmarks (165 numbers: pixels, z on x's scale,
                                         # visibility, presence)
      "world_landmarks": [x0, y0, z0, ...],  # and their world coordinates (99 numbers, metres
                                         # from the hips' midpoint, y down)
      "width": 1920, "height": 1080}]    # with them, the frame's size (what is in view)

:func:`read_poses_json` reads that, AlphaPose's own output (``idx`` may be a list such as
``[0.0]``; ``image_id`` such as ``"0.jpg"`` or ``"TKD_1.png"``; keypoint sets of 26, 133 or 136
points keep their first 17, which are COCO-17) and OpenPose's (see :data:`OPENPOSE_COCO18_TO_COCO17`).
Malformed input raises VideoError naming the file, the record and the field.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from posescore.engine.poses import IMAGE_EXTENSIONS, VideoError, VideoInfo, VideoPoses
from posescore.kernels import MAX_MAGNITUDE
from posescore.kernels.skeleton import NUM_KEYPOINTS, NUM_LANDMARKS

#: Frames per second assumed for a JSON file that carries no times (``time``) when none is given.
DEFAULT_JSON_FPS = 30.0

#: OpenPose COCO-18 index of each COCO-17 keypoint (COCO-17 order: nose, left_eye, right_eye,
#: left_ear, right_ear, left_shoulder, right_shoulder, left_elbow, right_elbow, left_wrist,
#: right_wrist, left_hip, right_hip, left_knee, right_knee, left_ankle, right_ankle). COCO-18 is
#: 0 nose, 1 neck, 2 r_shoulder, 3 r_elbow, 4 r_wrist, 5 l_shoulder, 6 l_elbow, 7 l_wrist, 8 r_hip,
#: 9 r_knee, 10 r_ankle, 11 l_hip, 12 l_knee, 13 l_ankle, 14 r_eye, 15 l_eye, 16 r_ear, 17 l_ear;
#: the neck (1) has no COCO-17 counterpart and is dropped.
OPENPOSE_COCO18_TO_COCO17: tuple[int, ...] = (0, 15, 14, 17, 16, 5, 2, 6, 3, 7, 4, 11, 8, 12, 9, 13, 10)
#: OpenPose BODY_25 index of each COCO-17 keypoint (BODY_25 adds 8 mid_hip and six foot points and
#: moves the hips, knees, ankles, eyes and ears one place on; neck, mid-hip and feet are dropped).
OPENPOSE_BODY25_TO_COCO17: tuple[int, ...] = (0, 16, 15, 18, 17, 5, 2, 6, 3, 7, 4, 12, 9, 13, 10, 14, 11)
#: Keypoint counts of AlphaPose outputs whose first 17 points are COCO-17 (COCO, Halpe-26,
#: COCO-WholeBody-133, Halpe-136).
ALPHAPOSE_KEYPOINT_SETS = (17, 26, 133, 136)


# -- writing -------------------------------------------------------------------------------------
def _image_id(video_poses: VideoPoses, row: int) -> str:
    if video_poses.info.image:
        return os.path.basename(video_poses.info.path)
    return f"frame_{int(video_poses.frame_indices[row]):06d}"


def to_alphapose(video_poses: VideoPoses, tracks: np.ndarray | None = None) -> list[dict]:
    """AlphaPose / COCO results records (see the module's docstring) of every real detection, in
    (frame, person) order. ``idx`` is the track id from ``tracks [F, P]`` (else from
    ``video_poses.tracks``), else the person's index in the frame. Numbers are Python floats of the
    float32 values (exact round trip)."""
    if tracks is None:
        tracks = video_poses.tracks
    if tracks is not None:
        tracks = np.asarray(tracks)
        if tracks.shape != video_poses.scores.shape:
            raise ValueError(f"tracks: expected shape {list(video_poses.scores.shape)}, got {list(tracks.shape)}")
    records = []
    for row in range(len(video_poses)):
        image_id = _image_id(video_poses, row)
        frame = int(video_poses.frame_indices[row])
        time = float(video_poses.times[row])
        for person in range(int(video_poses.counts[row])):
            x1, y1, x2, y2 = (float(v) for v in video_poses.boxes[row, person])
            record = {
                "image_id": image_id,
                "category_id": 1,
                "keypoints": [float(v) for v in video_poses.keypoints[row, person].reshape(-1)],
                "score": float(video_poses.scores[row, person]),
                "box": [x1, y1, float(np.float32(x2 - x1)), float(np.float32(y2 - y1))],
                "idx": int(tracks[row, person]) if tracks is not None else person,
                "frame": frame,
                "time": time,
            }
            if video_poses.landmarks is not None:
                record["landmarks"] = [float(v) for v in video_poses.landmarks[row, person].reshape(-1)]
                record["world_landmarks"] = [float(v) for v in video_poses.world[row, person].reshape(-1)]
                if video_poses.info.width and video_poses.info.height:
                    record["width"], record["height"] = video_poses.info.width, video_poses.info.height
            records.append(record)
    return records


def json_text(value: Any, **options) -> str:
    """``json.dumps`` of a report or result that is valid JSON whatever it holds: a non-finite float
    (NaN, infinity: no number JSON can write) becomes null."""
    def finite(v):
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return v
    return json.dumps(finite(value), allow_nan=False, **options)


def write_alphapose(path: str | os.PathLike, records: list[dict] | VideoPoses, *,
                    tracks: np.ndarray | None = None) -> Path:
    """Write ``records`` (from :func:`to_alphapose`, or a VideoPoses converted with ``tracks``) as
    JSON to ``path``, atomically (a temporary file renamed into place). Raises VideoError naming the
    file for a non-finite number or an unwritable path. Returns the path."""
    target = Path(path)
    if isinstance(records, VideoPoses):
        records = to_alphapose(records, tracks)
    try:
        text = json.dumps(records, allow_nan=False, separators=(",", ":"))
    except ValueError as err:
        raise VideoError(f"{target}: cannot write non-finite numbers (NaN or infinity) as JSON ({err})",
                         path=target) from None
    tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        tmp.write_text(text + "\n")
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise VideoError(f"{target}: cannot write ({err.strerror or err})", path=target) from None
    return target


# -- reading -------------------------------------------------------------------------------------
class _Detection:
    __slots__ = ("frame", "time", "keypoints", "box", "score", "track", "landmarks", "world")

    def __init__(self, frame: int | None, time: float | None, keypoints: np.ndarray, box: np.ndarray,
                 score: float, track: int, landmarks: np.ndarray | None = None, world: np.ndarray | None = None):
        self.frame, self.time, self.keypoints, self.box, self.score, self.track = (
            frame, time, keypoints, box, score, track)
        self.landmarks, self.world = landmarks, world


def _numbers(value: Any, where: str, field: str, source: str) -> np.ndarray:
    if not isinstance(value, list):
        raise VideoError(f"{source}: {where}: field {field!r}: expected a list of numbers, got "
                         f"{type(value).__name__}", path=source)
    for position, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise VideoError(f"{source}: {where}: field {field!r}: item {position} is not a number "
                             f"({item!r})", path=source)
        if not math.isfinite(item):
            raise VideoError(f"{source}: {where}: field {field!r}: item {position} is not finite "
                             f"({item!r})", path=source)
        if abs(item) > MAX_MAGNITUDE:  # float32 would make it infinite: a missing keypoint, then 100
            raise VideoError(f"{source}: {where}: field {field!r}: item {position} is {item!r}, beyond "
                             f"+-{MAX_MAGNITUDE:g}: not a pixel coordinate or confidence", path=source)
    return np.asarray(value, np.float64)


def _number(value: Any, where: str, field: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise VideoError(f"{source}: {where}: field {field!r}: expected a finite number, got {value!r}",
                         path=source)
    return float(value)


def _box_of(keypoints: np.ndarray) -> np.ndarray:
    """x1, y1, x2, y2 around the seen keypoints (zeros when none is)."""
    seen = keypoints[:, 2] > 0
    if not seen.any():
        return np.zeros(4)
    xy = keypoints[seen, :2]
    return np.concatenate([xy.min(0), xy.max(0)])


def _mean_confidence(keypoints: np.ndarray) -> float:
    seen = keypoints[:, 2] > 0
    return float(keypoints[seen, 2].mean()) if seen.any() else 0.0


def _track_of(value: Any, where: str, field: str, source: str) -> int:
    if value is None:
        return -1
    if isinstance(value, list):
        if not value:
            return -1
        value = value[0]
    number = _number(value, where, field, source)
    return int(number) if number >= 0 else -1


def _frame_number(image_id: str) -> int | None:
    """The trailing integer of an image id's stem: "frame_000123" -> 123, "12.jpg" -> 12."""
    match = re.search(r"(\d+)(?:\.[A-Za-z0-9]+)?$", image_id)
    return int(match.group(1)) if match else None


def _alphapose_detections(records: list, source: str) -> tuple[list[_Detection], list[str]]:
    detections: list[_Detection] = []
    image_ids: list[str] = []
    ids_of_detections: list[str] = []
    frames_of_ids: dict[str, int] = {}
    for number, record in enumerate(records):
        where = f"record {number}"
        if not isinstance(record, dict):
            raise VideoError(f"{source}: {where}: expected an object with 'image_id' and 'keypoints', got "
                             f"{type(record).__name__}", path=source)
        if "category_id" in record and record["category_id"] != 1:
            continue  # not a person
        for field in ("image_id", "keypoints"):
            if field not in record:
                raise VideoError(f"{source}: {where}: missing field {field!r}", path=source)
        image_id = record["image_id"]
        if isinstance(image_id, bool) or not isinstance(image_id, (str, int)):
            raise VideoError(f"{source}: {where}: field 'image_id': expected a string or an integer, got "
                             f"{image_id!r}", path=source)
        image_id = str(image_id)
        values = _numbers(record["keypoints"], where, "keypoints", source)
        if values.size % 3 or values.size // 3 not in ALPHAPOSE_KEYPOINT_SETS:
            raise VideoError(f"{source}: {where}: field 'keypoints': expected {3 * NUM_KEYPOINTS} numbers "
                             f"({NUM_KEYPOINTS} keypoints x, y, confidence), got {values.size}", path=source)
        keypoints = values.reshape(-1, 3)[:NUM_KEYPOINTS]
        if "box" in record:
            box = _numbers(record["box"], where, "box", source)
            if box.size != 4 or box[2] < 0 or box[3] < 0:
                raise VideoError(f"{source}: {where}: field 'box': expected [x, y, width, height] with width "
                                 f"and height >= 0, got {record['box']!r}", path=source)
            box = np.array([box[0], box[1], box[0] + box[2], box[1] + box[3]])
        else:
            box = _box_of(keypoints)
        score = (_number(record["score"], where, "score", source) if "score" in record
                 else _mean_confidence(keypoints))
        frame = None
        if "frame" in record:
            frame_value = _number(record["frame"], where, "frame", source)
            if frame_value < 0 or not frame_value.is_integer():
                raise VideoError(f"{source}: {where}: field 'frame': expected a frame index >= 0, got "
                                 f"{record['frame']!r}", path=source)
            frame = int(frame_value)
        time = _number(record["time"], where, "time", source) if "time" in record else None
        if image_id not in frames_of_ids:
            frames_of_ids[image_id] = len(image_ids)
            image_ids.append(image_id)
        marks = world = None
        if "landmarks" in record or "world_landmarks" in record:
            for field, width in (("landmarks", 5), ("world_landmarks", 3)):
                if field not in record:
                    raise VideoError(f"{source}: {where}: 'landmarks' and 'world_landmarks' come together; "
                                     f"{field!r} is missing", path=source)
                values = _numbers(record[field], where, field, source)
                if values.size != NUM_LANDMARKS * width:
                    raise VideoError(f"{source}: {where}: field {field!r}: expected {NUM_LANDMARKS * width} "
                                     f"numbers ({NUM_LANDMARKS} landmarks x {width}), got {values.size}",
                                     path=source)
                if field == "landmarks":
                    marks = values.reshape(NUM_LANDMARKS, width)
                else:
                    world = values.reshape(NUM_LANDMARKS, width)
        detections.append(_Detection(frame, time, keypoints, box, score,
                                     _track_of(record.get("idx"), where, "idx", source), marks, world))
        ids_of_detections.append(image_id)
    # A record without its own ``frame``: the number its id ends with ("frame_000123", "12.jpg")
    # when every id has a distinct one, else the id's order of first appearance.
    numbers = [_frame_number(image_id) for image_id in image_ids]
    if not (all(n is not None for n in numbers) and len(set(numbers)) == len(numbers)):
        numbers = list(range(len(image_ids)))
    for detection, image_id in zip(detections, ids_of_detections):
        if detection.frame is None:
            detection.frame = numbers[frames_of_ids[image_id]]
    return detections, image_ids


def _openpose_people(frame: Any, where: str, source: str, frame_index: int) -> list[_Detection]:
    if not isinstance(frame, dict) or "people" not in frame:
        raise VideoError(f"{source}: {where}: expected an OpenPose frame object with a 'people' list",
                         path=source)
    people = frame["people"]
    if not isinstance(people, list):
        raise VideoError(f"{source}: {where}: field 'people': expected a list, got {type(people).__name__}",
                         path=source)
    detections = []
    for number, person in enumerate(people):
        at = f"{where}, person {number}"
        if not isinstance(person, dict):
            raise VideoError(f"{source}: {at}: expected an object with 'pose_keypoints_2d'", path=source)
        if "pose_keypoints_2d" not in person:
            raise VideoError(f"{source}: {at}: missing field 'pose_keypoints_2d'", path=source)
        values = _numbers(person["pose_keypoints_2d"], at, "pose_keypoints_2d", source)
        if values.size == 54:
            mapping = OPENPOSE_COCO18_TO_COCO17
        elif values.size == 75:
            mapping = OPENPOSE_BODY25_TO_COCO17
        else:
            raise VideoError(f"{source}: {at}: field 'pose_keypoints_2d': expected 54 numbers (COCO-18) or 75 "
                             f"(BODY_25), got {values.size}", path=source)
        keypoints = values.reshape(-1, 3)[list(mapping)]
        keypoints[keypoints[:, 2] <= 0] = 0.0  # OpenPose writes (0, 0, 0) for a missing point
        detections.append(_Detection(frame_index, None, keypoints, _box_of(keypoints), _mean_confidence(keypoints),
                                     _track_of(person.get("person_id"), at, "person_id", source)))
    return detections


class _LongInteger(ValueError):
    pass


def _json_int(text: str) -> int:
    """A JSON integer; one of more than 18 digits is no frame, pixel or confidence (and a float of
    it would overflow or lose its digits)."""
    if len(text.lstrip("-")) > 18:
        raise _LongInteger(f"an integer of {len(text.lstrip('-')):,} digits ({text[:12]}...): not a frame "
                           f"index, coordinate or confidence")
    return int(text)


def _load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise VideoError(f"{path}: not a JSON file (not UTF-8 text)", path=path) from None
    except OSError as err:
        raise VideoError(f"{path}: cannot read ({err.strerror or err})", path=path) from None
    try:
        return json.loads(text, parse_int=_json_int)
    except json.JSONDecodeError as err:
        raise VideoError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}",
                         path=path) from None
    except _LongInteger as err:
        raise VideoError(f"{path}: {err}", path=path) from None
    except RecursionError:
        raise VideoError(f"{path}: JSON nested too deeply to be a pose file", path=path) from None


def _openpose_folder(folder: Path) -> list[_Detection]:
    files = sorted(folder.glob("*.json"))
    if not files:
        raise VideoError(f"{folder}: a folder with no OpenPose *.json frame files", path=folder)
    numbered = [(_frame_number(f.stem.removesuffix("_keypoints")), f) for f in files]
    if any(n is None for n, _ in numbered) or len({n for n, _ in numbered}) != len(numbered):
        numbered = list(enumerate(files))  # no usable frame numbers: the sorted order
    detections = []
    for index, file in sorted(numbered, key=lambda item: item[0]):
        detections += _openpose_people(_load_json(file), "frame", str(file), int(index))
    return detections


def records_to_poses(data: Any, source: str = "<json>", *, fps: float | None = None) -> VideoPoses:
    """A VideoPoses from parsed JSON ``data`` (see :func:`read_poses_json`); ``source`` names it in
    errors and becomes ``info.path``."""
    image_ids: list[str] = []
    size = (0, 0)
    if isinstance(data, dict):
        detections = _openpose_people(data, "frame 0", source, 0)
    elif isinstance(data, list) and data and all(isinstance(d, dict) and "people" in d for d in data):
        detections = [d for i, frame in enumerate(data) for d in _openpose_people(frame, f"frame {i}", source, i)]
    elif isinstance(data, list):
        detections, image_ids = _alphapose_detections(data, source)
        size = _frame_size(data, source)
    else:
        raise VideoError(f"{source}: expected a JSON list of AlphaPose / COCO results records or an OpenPose "
                         f"object with 'people', got {type(data).__name__}", path=source)
    return _assemble(detections, source, fps, image=len(image_ids) == 1 and
                     Path(image_ids[0]).suffix.lower() in IMAGE_EXTENSIONS, size=size)


def _frame_size(records: list, source: str) -> tuple[int, int]:
    """The frame's (width, height) that posescore writes beside landmarks, else (0, 0): unknown."""
    for number, record in enumerate(records):
        if isinstance(record, dict) and "width" in record and "height" in record:
            width = _number(record["width"], f"record {number}", "width", source)
            height = _number(record["height"], f"record {number}", "height", source)
            if width < 1 or height < 1 or not (width.is_integer() and height.is_integer()):
                raise VideoError(f"{source}: record {number}: fields 'width' and 'height': expected the frame's "
                                 f"size in pixels, got {record['width']!r} x {record['height']!r}", path=source)
            return int(width), int(height)
    return 0, 0


def _assemble(detections: list[_Detection], source: str, fps: float | None, image: bool,
              size: tuple[int, int] = (0, 0)) -> VideoPoses:
    frames = sorted({d.frame for d in detections})
    row_of = {frame: row for row, frame in enumerate(frames)}
    by_row: list[list[_Detection]] = [[] for _ in frames]
    for detection in detections:
        by_row[row_of[detection.frame]].append(detection)
    people = max((len(r) for r in by_row), default=0)
    count = len(frames)
    keypoints = np.zeros((count, people, NUM_KEYPOINTS, 3), np.float32)
    boxes = np.zeros((count, people, 4), np.float32)
    scores = np.zeros((count, people), np.float32)
    tracks = np.full((count, people), -1, np.int32)
    counts = np.zeros(count, np.int32)
    times = np.zeros(count, np.float32)
    rate = float(fps) if fps else DEFAULT_JSON_FPS
    has_times = bool(detections) and all(d.time is not None for d in detections)
    with_marks = bool(detections) and all(d.landmarks is not None for d in detections)
    marks = np.zeros((count, people, NUM_LANDMARKS, 5), np.float32) if with_marks else None
    world = np.zeros((count, people, NUM_LANDMARKS, 3), np.float32) if with_marks else None
    for row, found in enumerate(by_row):
        counts[row] = len(found)
        times[row] = found[0].time if has_times else frames[row] / rate
        for person, detection in enumerate(found):
            keypoints[row, person] = detection.keypoints
            boxes[row, person] = detection.box
            scores[row, person] = detection.score
            tracks[row, person] = detection.track if detection.track >= 0 else person
            if with_marks:
                marks[row, person], world[row, person] = detection.landmarks, detection.world
    if image:
        fps_out, frame_count, duration = 0.0, 1, 0.0
    else:
        fps_out, frame_count = rate, (frames[-1] + 1) if frames else 0
        duration = float(times[-1]) + 1.0 / rate if count else 0.0
    info = VideoInfo(path=source, width=size[0], height=size[1], fps=fps_out, frame_count=frame_count, duration=duration,
                     rotation=0, codec="json", image=image)
    return VideoPoses(info=info, frame_indices=np.asarray(frames, np.int64), times=times, keypoints=keypoints,
                      boxes=boxes, scores=scores, counts=counts, tracks=tracks, landmarks=marks, world=world)


def read_poses_json(path: str | os.PathLike, *, fps: float | None = None) -> VideoPoses:
    """The poses of a keypoint JSON file (or a folder of OpenPose per-frame files) as VideoPoses.

    Accepted: an AlphaPose / COCO results list (see the module docstring); an OpenPose frame object
    ``{"people": [{"pose_keypoints_2d": [...]}, ...]}`` (COCO-18: 54 numbers, or BODY_25: 75, mapped
    to COCO-17 by :data:`OPENPOSE_COCO18_TO_COCO17` / :data:`OPENPOSE_BODY25_TO_COCO17`; its box is
    the extent of the seen keypoints, its score their mean confidence), a list of such frame
    objects (one per frame), or a folder of OpenPose ``*_keypoints.json`` files (frame index from the
    number in each name). Records with a ``category_id`` other than 1 are skipped.

    Rows are the frames that have detections, in frame order; a frame's index is the record's
    ``frame``, else the number at the end of its ``image_id`` ("frame_000123", "12.jpg") when every
    id has a distinct one, else the order of first appearance. Times: the records' ``time``, else
    ``frame / fps`` (``fps`` default :data:`DEFAULT_JSON_FPS`). ``tracks`` come from ``idx`` /
    ``person_id`` (else the person's index in the frame). ``info`` has the JSON path, width and height
    0 (unknown), codec ``"json"``, and ``image`` True for one image id naming an image file.

    Raises VideoError naming the file, the record and the field for malformed input.
    """
    target = Path(path)
    if not target.exists():
        raise VideoError(f"{target}: no such file", path=target)
    if target.is_dir():
        detections = _openpose_folder(target)
        return _assemble(detections, str(target), fps, image=False)
    return records_to_poses(_load_json(target), str(target), fps=fps)


def is_poses_json(path: str | os.PathLike) -> bool:
    """True when ``path`` names a keypoint JSON file (by its ``.json`` extension) or a folder of them."""
    target = Path(path)
    return target.suffix.lower() == ".json" or (target.is_dir() and any(target.glob("*.json")))


def write_steps_csv(path: str | os.PathLike, reports: list[tuple[int | None, dict]]) -> Path:
    """One CSV row per aligned step of each ``(repetition number or None, compare report)``: times
    and frames of both, the score, the six part scores, and each angle for the reference, the attempt
    and their difference (degrees; ``kernels.skeleton.ANGLE_NAMES``: the joints' flexions, the trunk's
    and head's tilts).
    Empty cells where a value is missing. For spreadsheets and tools such as Kinovea."""
    import csv

    from posescore.kernels.skeleton import ANGLE_NAMES, PART_NAMES

    with_rep = any(rep is not None for rep, _ in reports)
    header = (["rep"] if with_rep else []) + ["reference_frame", "reference_time", "attempt_frame", "attempt_time",
                                              "score"] + list(PART_NAMES)
    header += [f"{angle}_{who}" for angle in ANGLE_NAMES for who in ("reference", "attempt", "difference")]
    path = Path(path)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for rep, report in reports:
            for step in report["steps"]:
                row = ([rep] if with_rep else []) + [step[k] for k in ("reference_frame", "reference_time",
                                                                        "attempt_frame", "attempt_time", "score")]
                row += [step["parts"][p] for p in PART_NAMES]
                row += [step["angles"][a][who] for a in ANGLE_NAMES for who in ("reference", "attempt", "difference")]
                writer.writerow(["" if v is None else v for v in row])
    return path
