"""People across frames: a simple tracker, the main performer of a video, the main person of an image.

    tracks = track_people(video_poses)            # [F, P] int32 track ids, -1 for padding
    performer = main_performer(video_poses, tracks)
    performer.poses, performer.present            # [F, 17, 3] float32, [F] bool: the time axis stays
    i = pick_person(kps, boxes, scores)           # index of the main (largest x most confident) person
    spec = parse_person("120,340@1.5")            # whom the user names: a track id, a point, a box, auto
    chosen = person_by_spec(video_poses, tracks, spec)   # that track's Performer (errors list who is there)
    best = best_fit_performer(video_poses, tracks, fit)  # auto: the candidate track ``fit`` scores highest
    ref = most_moving_performer(video_poses, tracks)     # auto on a reference: who moves the most

"Largest, most confident" is measured everywhere by the same weight: box area (pixels²) times the
detection score. Missing frames are never dropped: a performer absent from a frame has that row
marked (``present`` False) with an all-zero pose (confidence 0 = missing keypoint).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from posescore.engine.poses import VideoError, VideoPoses
from posescore.kernels import DEFAULT_MIN_CONFIDENCE
from posescore.kernels.skeleton import NUM_KEYPOINTS

#: Rows a track may go unseen and still be continued (default of :func:`track_people`).
DEFAULT_MAX_GAP = 10
#: A keypoint counts as seen for matching above this confidence: the one threshold of
#: ``kernels.normalize``, so that tracking and scoring see the same keypoints.
KEYPOINT_CONFIDENCE = DEFAULT_MIN_CONFIDENCE
#: OKS-style falloff: a keypoint's similarity is exp(-d² / (2 · area · KAPPA²)).
KAPPA = 0.1
#: A track that has just gone unseen is continued by a new detection that stands where it stood
#: earlier, in the same pose (box IoU and keypoint similarity both at least this): a cut in an edited
#: video (a set joined from takes, a repetition re-timed and replayed) sends a performer back to a
#: place and pose they had, and nothing else plausibly does.
RETURN_MATCH = 0.6
#: How far back (rows) a track's places are remembered for that.
RETURN_HISTORY_ROWS = 1800


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """Areas (pixels²) of ``boxes [..., 4]`` x1, y1, x2, y2 (negative extents count as 0)."""
    boxes = np.asarray(boxes, np.float64)
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(boxes[..., 3] - boxes[..., 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[N, M]`` float64 of boxes ``a [N, 4]`` and ``b [M, 4]`` (x1, y1, x2, y2)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = box_areas(a)[:, None] + box_areas(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def keypoint_similarity(a: np.ndarray, b: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """OKS-style similarity ``[N, M]`` in [0, 1] of poses ``a [N, 17, 3]`` and ``b [M, 17, 3]``:
    the mean over keypoints seen in both (confidence > KEYPOINT_CONFIDENCE) of
    ``exp(-d² / (2 · area · KAPPA²))``, ``areas [M]`` the box areas of ``b``; 0 with none in common."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    seen = (a[:, None, :, 2] > KEYPOINT_CONFIDENCE) & (b[None, :, :, 2] > KEYPOINT_CONFIDENCE)
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(-1)
    scale = 2.0 * np.maximum(np.asarray(areas, np.float64), 1.0)[None, :, None] * KAPPA ** 2
    sim = np.where(seen, np.exp(-d2 / scale), 0.0).sum(-1)
    n = seen.sum(-1)
    return np.where(n > 0, sim / np.maximum(n, 1), 0.0)


def track_people(video_poses: VideoPoses, iou_threshold: float = 0.3, max_gap: int = DEFAULT_MAX_GAP, *,
                 keypoint_threshold: float = 0.5) -> np.ndarray:
    """A track id for every detection: ``[F, P]`` int32, ids 0, 1, 2, ... in order of first
    appearance, -1 for padding rows (person index >= ``counts``).

    Frame to frame (row to row of ``video_poses``), detections are matched greedily to the live
    tracks, best pair first. A track seen in the previous row is compared where it was (so a
    re-timed copy of a clip gets the identities of the clip); one unseen for g rows is predicted g
    rows of its box velocity (per row, smoothed) ahead. A pair may match when the IoU of the
    predicted box and the detection's box is at least ``iou_threshold``, or when their keypoints
    agree (OKS-style similarity, see :func:`keypoint_similarity`, at least ``keypoint_threshold``);
    pairs are ranked by the mean of the two, and by recency. A detection left unmatched continues a
    track unseen in this row (for at most ``max_gap`` rows) when it stands where that track stood in
    one of its last ``RETURN_HISTORY_ROWS`` rows, in the same pose (box IoU and keypoint similarity
    both at least ``RETURN_MATCH``): a cut in an edited video, a set joined from takes or one
    repetition replayed, sends the performer back to where a repetition started. Any other detection
    left unmatched starts a new track. A track unseen for more than ``max_gap`` rows ends, so a
    person hidden for a few frames keeps their id. Each track has at most one detection per row.
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold: expected a value in [0, 1], got {iou_threshold!r}")
    if isinstance(max_gap, bool) or not isinstance(max_gap, (int, np.integer)) or max_gap < 0:
        raise ValueError(f"max_gap: expected an integer >= 0 (rows), got {max_gap!r}")
    frames, people = video_poses.keypoints.shape[:2]
    tracks = np.full((frames, people), -1, np.int32)
    # Live tracks, as parallel lists: id, last box, last keypoints, last row, box velocity per row,
    # and the (box, keypoints) of each of its recent rows.
    ids: list[int] = []
    last_box: list[np.ndarray] = []
    last_kps: list[np.ndarray] = []
    last_row: list[int] = []
    velocity: list[np.ndarray] = []
    history: list[list[tuple[np.ndarray, np.ndarray]]] = []
    next_id = 0
    for row in range(frames):
        n = int(video_poses.counts[row])
        alive = [t for t in range(len(ids)) if row - last_row[t] - 1 <= max_gap]
        ids, last_box, last_kps, last_row, velocity, history = (
            [seq[t] for t in alive] for seq in (ids, last_box, last_kps, last_row, velocity, history))
        if n == 0:
            continue
        boxes = video_poses.boxes[row, :n].astype(np.float64)
        kps = video_poses.keypoints[row, :n].astype(np.float64)
        assigned = np.full(n, -1, np.int64)
        returned = np.zeros(n, bool)
        if ids:
            steps = np.array([row - r for r in last_row], np.float64)
            # Seen in the previous row: compared where it was (so a re-timed copy of a clip, whose
            # repeated frames change velocities, is matched like the clip). Unseen for g rows:
            # moved g rows of its velocity ahead.
            moved = np.stack(velocity) * (steps[:, None] - 1.0)
            predicted = np.stack(last_box) + moved
            shift = (moved[:, 0:2] + moved[:, 2:4]) / 2.0  # box centre displacement
            predicted_kps = np.stack(last_kps).copy()
            predicted_kps[:, :, :2] += shift[:, None, :]
            iou = box_iou(predicted, boxes)
            sim = keypoint_similarity(predicted_kps, kps, box_areas(boxes))
            allowed = (iou >= iou_threshold) | (sim >= keypoint_threshold)
            score = (iou + sim) / 2.0 - 1e-3 * (steps[:, None] - 1)  # prefer the recently seen
            pairs = np.argwhere(allowed)
            order = np.argsort(-score[allowed], kind="stable")
            used_tracks: set[int] = set()
            for t, d in pairs[order]:
                if t in used_tracks or assigned[d] >= 0:
                    continue
                used_tracks.add(int(t))
                assigned[d] = t
            for t, d in _returns(history, [t for t in range(len(ids)) if t not in used_tracks],
                                 boxes, kps, np.flatnonzero(assigned < 0)):
                assigned[d], returned[d] = t, True
        for d in range(n):
            t = int(assigned[d])
            if t < 0:
                ids.append(next_id)
                next_id += 1
                last_box.append(boxes[d])
                last_kps.append(kps[d])
                last_row.append(row)
                velocity.append(np.zeros(4))
                history.append([])
                t = len(ids) - 1
            elif returned[d]:  # back where it was: no velocity across the jump
                last_box[t], last_kps[t], last_row[t], velocity[t] = boxes[d], kps[d], row, np.zeros(4)
            else:
                steps = row - last_row[t]
                # Keypoints unseen now keep their last position (moved with the box centre), so
                # gaps in a pose do not erase what matching needs.
                seen = kps[d, :, 2] > KEYPOINT_CONFIDENCE
                carried = last_kps[t].copy()
                carried[:, :2] += ((boxes[d, 0:2] + boxes[d, 2:4]) - (last_box[t][0:2] + last_box[t][2:4])) / 2.0
                carried[seen] = kps[d, seen]
                last_kps[t] = carried
                velocity[t] = 0.5 * velocity[t] + 0.5 * (boxes[d] - last_box[t]) / steps
                last_box[t], last_row[t] = boxes[d], row
            history[t].append((boxes[d], kps[d]))
            del history[t][:-RETURN_HISTORY_ROWS]
            tracks[row, d] = ids[t]
    return tracks


def _returns(history: list, tracks: list[int], boxes: np.ndarray, kps: np.ndarray,
             detections: np.ndarray) -> list[tuple[int, int]]:
    """(track, detection) pairs, best first and each at most once, of the ``tracks`` (positions in
    ``history``) unseen in this row and the unmatched ``detections`` that stand where the track
    stood in one of its remembered rows, in the same pose: box IoU and keypoint similarity with
    that row both at least ``RETURN_MATCH`` (see :func:`track_people`)."""
    if not len(tracks) or not len(detections):
        return []
    best = np.zeros((len(tracks), len(detections)))
    for i, t in enumerate(tracks):
        past_boxes = np.stack([box for box, _ in history[t]])
        iou = box_iou(past_boxes, boxes[detections])  # [H, D]
        near = iou >= RETURN_MATCH
        if not near.any():
            continue
        past = np.flatnonzero(near.any(axis=1))
        past_kps = np.stack([history[t][h][1] for h in past])
        sim = keypoint_similarity(past_kps, kps[detections], box_areas(boxes[detections]))
        both = np.where(near[past] & (sim >= RETURN_MATCH), (iou[past] + sim) / 2.0, 0.0)
        best[i] = both.max(axis=0)
    pairs, used_t, used_d = [], set(), set()
    for i, j in zip(*np.unravel_index(np.argsort(-best, axis=None, kind="stable"), best.shape)):
        if best[i, j] <= 0:
            break
        if i not in used_t and j not in used_d:
            used_t.add(i)
            used_d.add(j)
            pairs.append((tracks[i], int(detections[j])))
    return pairs


@dataclass(frozen=True)
class Performer:
    """One tracked person over every row of a VideoPoses (the time axis is that of the video).

    ``poses [F, 17, 3]`` float32 pixel keypoints, all zeros (confidence 0) where absent;
    ``present [F]`` bool; ``track`` the track id; ``boxes [F, 4]`` float32 (zeros where absent);
    ``scores [F]`` float32 detection scores (0 where absent); ``frame_indices [F]`` int64 and
    ``times [F]`` float32 seconds, as in the VideoPoses. ``choice``: how this track was chosen, as a
    report says it ("auto: best fit of 3 tracks", "track 3 (--person 3)"); ``candidates``: what an
    automatic choice weighed, ``({"track": id, "frames": n, <measure>: value}, ...)`` best first.
    ``landmarks [F, 33, 5]`` and ``world [F, 33, 3]`` float32: BlazePose GHUM's landmarks and world
    coordinates (zeros where absent) when the VideoPoses has them, else None.
    """

    poses: np.ndarray
    present: np.ndarray
    track: int
    boxes: np.ndarray
    scores: np.ndarray
    frame_indices: np.ndarray
    times: np.ndarray
    choice: str = ""
    candidates: tuple = ()
    landmarks: np.ndarray | None = None
    world: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.present.shape[0])


def performer_of(video_poses: VideoPoses, tracks: np.ndarray, track: int) -> Performer:
    """The Performer of track id ``track`` in ``tracks [F, P]`` (see :func:`track_people`)."""
    frames, people = video_poses.keypoints.shape[:2]
    tracks = np.asarray(tracks)
    if tracks.shape != (frames, people):
        raise ValueError(f"tracks: expected shape {[frames, people]}, got {list(tracks.shape)}")
    hit = tracks == track
    present = hit.any(axis=1)
    column = hit.argmax(axis=1)
    rows = np.arange(frames)
    poses = np.where(present[:, None, None], video_poses.keypoints[rows, column], 0).astype(np.float32)
    boxes = np.where(present[:, None], video_poses.boxes[rows, column], 0).astype(np.float32)
    scores = np.where(present, video_poses.scores[rows, column], 0).astype(np.float32)
    marks = world = None
    if video_poses.landmarks is not None:
        marks = np.where(present[:, None, None], video_poses.landmarks[rows, column], 0).astype(np.float32)
        world = np.where(present[:, None, None], video_poses.world[rows, column], 0).astype(np.float32)
    return Performer(poses=poses, present=present, track=int(track), boxes=boxes, scores=scores,
                     frame_indices=video_poses.frame_indices, times=video_poses.times, landmarks=marks, world=world)


def main_performer(video_poses: VideoPoses, tracks: np.ndarray | None = None) -> Performer:
    """The main performer: the track with the largest sum over frames of box area × detection score
    (largest, most confident, most continuous). ``tracks [F, P]`` from :func:`track_people`
    (computed when None, also for poses read from JSON: pass ``video_poses.tracks`` to trust the
    file's ``idx`` instead, which AlphaPose writes as a per-frame person index unless it tracked). Frames where they are missing stay, marked ``present`` False with an
    all-zero pose. Raises VideoError (naming the source) when no one is detected in any frame."""
    if tracks is None:
        tracks = track_people(video_poses)
    tracks = np.asarray(tracks)
    valid = tracks >= 0
    if not valid.any():
        raise VideoError(f"{video_poses.info.path}: no person detected in any of its {len(video_poses)} "
                         f"frame(s)", path=video_poses.info.path)
    weight = box_areas(video_poses.boxes) * video_poses.scores
    totals = np.bincount(tracks[valid], weights=weight[valid])
    return replace(performer_of(video_poses, tracks, int(np.argmax(totals))), choice=MAIN_PERFORMER_CHOICE)


@dataclass(frozen=True)
class Person:
    """One person of one frame: ``index`` (in the frame's people), ``pose [17, 3]`` float32,
    ``box [4]`` float32 (x1, y1, x2, y2), ``score`` (detection score)."""

    index: int
    pose: np.ndarray
    box: np.ndarray
    score: float


def pick_person(people_keypoints: Any, people_boxes: Any, people_scores: Any, index: int | None = None, *,
                source: str | None = None) -> int:
    """The index (into the arrays given) of the main person of one frame (a still image): the one
    with the largest box area × detection score, or ``index`` itself when given and valid. Inputs:
    ``people_keypoints [n, 17, 3]``, ``people_boxes [n, 4]``, ``people_scores [n]`` (one frame's
    people, e.g. ``VideoPoses.frames_people(i)``). Raises VideoError (a ValueError; naming ``source``
    when given) when there is no one or ``index`` is out of range. See :func:`image_person` for the
    person's pose, box and score at once."""
    keypoints = np.asarray(people_keypoints, np.float32)
    boxes = np.asarray(people_boxes, np.float32)
    scores = np.asarray(people_scores, np.float32)
    if keypoints.ndim != 3 or keypoints.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"people_keypoints: expected [n, 17, 3], got {list(keypoints.shape)}")
    n = keypoints.shape[0]
    if boxes.shape != (n, 4) or scores.shape != (n,):
        raise ValueError(f"people_boxes / people_scores: expected [{n}, 4] and [{n}], got "
                         f"{list(boxes.shape)} and {list(scores.shape)}")
    where = f"{source}: " if source else ""
    if n == 0:
        raise VideoError(f"{where}no person detected", path=source)
    if index is None:
        index = int(np.argmax(box_areas(boxes) * scores))
    elif isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < n:
        raise VideoError(f"{where}person index {index!r} out of range: {n} person(s) detected "
                         f"(indices 0 to {n - 1})", path=source)
    return int(index)


def image_person(video_poses: VideoPoses, index: int | None = None, row: int = 0) -> Person:
    """The main person (or person ``index``) of row ``row`` of ``video_poses`` (an image's VideoPoses
    has one row), chosen by :func:`pick_person`, with their pose, box and score; errors name the
    source file."""
    if not 0 <= row < len(video_poses):
        raise VideoError(f"{video_poses.info.path}: no frame {row} ({len(video_poses)} frame(s))",
                         path=video_poses.info.path)
    people = video_poses.frames_people(row)
    chosen = pick_person(people.keypoints, people.boxes, people.scores, index, source=video_poses.info.path)
    return Person(index=chosen, pose=np.asarray(people.keypoints[chosen], np.float32),
                  box=np.asarray(people.boxes[chosen], np.float32), score=float(people.scores[chosen]))


# -- whom to follow: a person the user names, or auto -----------------------------------------------
#: How :func:`main_performer` chose (the library's default when nobody names a person).
MAIN_PERFORMER_CHOICE = "main performer (largest, most confident, most continuous track)"
#: ``auto``'s candidates: tracks present in at least 2 rows and this share of the video's rows ...
AUTO_MIN_SHARE = 0.25
#: ... at most this many of them, the longest (each costs the candidate's fit: one alignment).
AUTO_MAX_CANDIDATES = 8
#: ``auto`` on a reference: its candidates are the tracks present in at least this share of its
#: rows ("most of the video"; all tracks in 2 rows or more when none is) ...
REFERENCE_MIN_SHARE = 0.5
#: ... and it is ambiguous when the second most moving one moves at least this share as much as
#: the most moving one (within 20%): the user must say whom with ``--reference-person``. (Measured,
#: body sizes a frame: the man of Sports2D's demo raising his arms 0.026 beside a woman walking
#: 0.018, a ratio of 0.69; the same man twice side by side, 0.96.)
REFERENCE_AMBIGUOUS_RATIO = 0.8
#: The forms of a person spec, as an error message names them.
PERSON_FORMS = ("a track id (an integer: the `idx` that `posescore pose` writes), a point X,Y@T, a box "
                "X0,Y0,X1,Y1@T (pixels of the video, in the frame nearest T seconds), or auto")


class PersonError(ValueError):
    """A person spec that names no one, or an automatic choice that cannot be made: the message
    names the option, the source and the problem (and who is there)."""


@dataclass(frozen=True)
class PersonSpec:
    """Whom to follow (:func:`parse_person`): ``track`` (a track id of :func:`track_people`, the
    ``idx`` ``posescore pose`` writes), or the person whose box contains ``point (x, y)`` / overlaps
    ``box (x0, y0, x1, y1)`` most (IoU) in the frame nearest ``time`` seconds; none of them: auto.
    ``text``: the spec as the user wrote it."""

    text: str = "auto"
    track: int | None = None
    point: tuple[float, float] | None = None
    box: tuple[float, float, float, float] | None = None
    time: float | None = None

    @property
    def auto(self) -> bool:
        return self.track is None and self.point is None and self.box is None


def parse_person(spec: Any, option: str = "--person") -> PersonSpec:
    """A :class:`PersonSpec` from ``spec``: ``"auto"`` (or None), a track id (``"3"`` or an int),
    a point ``"X,Y@T"`` or a box ``"X0,Y0,X1,Y1@T"`` (pixels; T seconds). A PersonSpec passes
    through. Raises :class:`PersonError` naming ``option`` and what is wrong."""
    if isinstance(spec, PersonSpec):
        return spec
    if spec is None:
        return PersonSpec()
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if spec < 0:
            raise PersonError(f"{option} {spec}: a track id is an integer >= 0")
        return PersonSpec(str(int(spec)), track=int(spec))
    text = str(spec).strip()
    if text.lower() == "auto":
        return PersonSpec()
    if re.fullmatch(r"[+-]?\d+", text):
        if int(text) < 0:
            raise PersonError(f"{option} {text}: a track id is an integer >= 0")
        return PersonSpec(text, track=int(text))
    numbers, at, when = text.partition("@")
    if "," not in numbers:
        raise PersonError(f"{option}: expected {PERSON_FORMS}; got {text!r}")
    if not at:
        raise PersonError(f"{option} {text}: a point or a box needs the time of its frame: {text}@T (T in seconds)")
    try:
        values = [float(v) for v in numbers.split(",")]
        time = float(when)
    except ValueError:
        raise PersonError(f"{option} {text}: expected numbers: X,Y@T or X0,Y0,X1,Y1@T") from None
    if len(values) not in (2, 4):
        raise PersonError(f"{option} {text}: expected 2 numbers before @ (a point X,Y) or 4 (a box X0,Y0,X1,Y1), "
                          f"got {len(values)}")
    if not all(map(math.isfinite, values)):
        raise PersonError(f"{option} {text}: coordinates must be finite numbers (pixels)")
    if not (math.isfinite(time) and time >= 0):
        raise PersonError(f"{option} {text}: the time after @ must be seconds >= 0")
    if len(values) == 2:
        return PersonSpec(text, point=(values[0], values[1]), time=time)
    x0, y0, x1, y1 = values
    if not (x0 < x1 and y0 < y1):
        raise PersonError(f"{option} {text}: a box X0,Y0,X1,Y1 needs X0 < X1 and Y0 < Y1")
    return PersonSpec(text, box=(x0, y0, x1, y1), time=time)


def track_frames(tracks: np.ndarray, rows: np.ndarray | None = None) -> dict[int, int]:
    """``{track id: rows it is present in}`` of ``tracks [F, P]`` (only ``rows`` when given), by id."""
    tracks = np.asarray(tracks)
    if rows is not None:
        tracks = tracks[rows]
    ids, counts = np.unique(tracks[tracks >= 0], return_counts=True)  # at most one detection a row
    return {int(i): int(n) for i, n in zip(ids, counts)}


def describe_tracks(tracks: np.ndarray, limit: int = 20) -> str:
    """``"0 (27 frames), 1 (25 frames)"``: the track ids of ``tracks [F, P]`` (the ``limit`` longest
    when there are more, said so), for an error message."""
    frames = track_frames(tracks)
    if not frames:
        return "none (no person detected)"
    ids = sorted(frames)
    if len(ids) > limit:
        ids = sorted(sorted(frames, key=lambda t: -frames[t])[:limit])
    text = ", ".join(f"{t} ({frames[t]} frame{'s' if frames[t] != 1 else ''})" for t in ids)
    return text + (f", ... ({len(frames)} tracks in all)" if len(frames) > limit else "")


def _row_at(video_poses: VideoPoses, spec: PersonSpec, option: str, source: str) -> int:
    """The row nearest ``spec.time``; PersonError when the time is outside the video."""
    times = np.asarray(video_poses.times, np.float64)
    if not len(times):
        raise PersonError(f"{option} {spec.text}: {source} has no frames")
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    if not times[0] - step - 1e-3 <= spec.time <= times[-1] + step + 1e-3:
        raise PersonError(f"{option} {spec.text}: {source} has frames from {times[0]:.2f} to {times[-1]:.2f} s, "
                          f"none at {spec.time:g} s")
    return int(np.argmin(np.abs(times - spec.time)))


def spec_person(boxes: np.ndarray, spec: PersonSpec) -> int | None:
    """Which of one frame's people ``boxes [n, 4]`` (x0, y0, x1, y1) a point or box ``spec`` names:
    the smallest box that contains its point, or the box that overlaps its box most (IoU > 0);
    None when there is no such person."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(boxes):
        return None
    if spec.point is not None:
        x, y = spec.point
        inside = np.flatnonzero((boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3]))
        return int(inside[np.argmin(box_areas(boxes[inside]))]) if len(inside) else None
    iou = box_iou(np.asarray(spec.box, np.float64), boxes)[0]
    return int(np.argmax(iou)) if iou.max() > 0 else None


def person_by_spec(video_poses: VideoPoses, tracks: np.ndarray, spec: Any, *, option: str = "--person",
                   source: str | None = None) -> Performer:
    """The Performer of the track ``spec`` names (:func:`parse_person`; not auto): a track id, or
    the track whose box contains the point (the smallest such box) / overlaps the box most (IoU)
    in the row nearest the spec's time. Its ``choice`` says so. Raises :class:`PersonError` naming
    ``option``, ``source`` and the problem: an unknown track id (the ids present listed), a time
    outside the video, a frame with no one, a point inside no box / a box overlapping none (the
    people of that frame listed with their boxes)."""
    spec = parse_person(spec, option)
    if spec.auto:
        raise ValueError("person_by_spec: auto is chosen by best_fit_performer or most_moving_performer")
    source = source or str(video_poses.info.path)
    tracks = np.asarray(tracks)
    choice = f"track {{}} ({option} {spec.text})"
    if spec.track is not None:
        if spec.track not in track_frames(tracks):
            raise PersonError(f"{option} {spec.text}: {source} has no track {spec.track}; its tracks: "
                              f"{describe_tracks(tracks)} (the `idx` of `posescore pose`)")
        return replace(performer_of(video_poses, tracks, spec.track), choice=choice.format(spec.track))
    row = _row_at(video_poses, spec, option, source)
    n = int(video_poses.counts[row])
    at = f"the frame at {float(video_poses.times[row]):.2f} s"
    if n == 0:
        raise PersonError(f"{option} {spec.text}: {source}: no person detected in {at}")
    boxes = np.asarray(video_poses.boxes[row, :n], np.float64)
    there = "; ".join(f"track {int(tracks[row, d])} box {[round(float(v)) for v in boxes[d]]}" for d in range(n))
    d = spec_person(boxes, spec)
    if d is None and spec.point is not None:
        raise PersonError(f"{option} {spec.text}: {source}: the point ({spec.point[0]:g}, {spec.point[1]:g}) is "
                          f"inside no person's box in {at}; there: {there}")
    if d is None:
        raise PersonError(f"{option} {spec.text}: {source}: the box overlaps no person's box in {at}; "
                          f"there: {there}")
    track = int(tracks[row, d])
    return replace(performer_of(video_poses, tracks, track), choice=choice.format(track))


def candidate_tracks(video_poses: VideoPoses, tracks: np.ndarray, min_share: float = AUTO_MIN_SHARE,
                     limit: int = AUTO_MAX_CANDIDATES, rows: np.ndarray | None = None) -> list[int]:
    """The track ids present in at least 2 rows and ``min_share`` of the rows (of ``rows`` when
    given), the ``limit`` longest, longest first (ties: the larger box area × score first)."""
    tracks = np.asarray(tracks)
    frames = track_frames(tracks, rows)
    total = len(tracks) if rows is None else len(np.arange(len(tracks))[rows])
    valid = tracks >= 0
    weight = np.bincount(tracks[valid], weights=(box_areas(video_poses.boxes) * video_poses.scores)[valid]) \
        if valid.any() else np.zeros(0)
    ids = [t for t, n in frames.items() if n >= 2 and n >= min_share * total]
    return sorted(ids, key=lambda t: (-frames[t], -weight[t], t))[:limit]


def best_fit_performer(video_poses: VideoPoses, tracks: np.ndarray, fit: Callable[[Performer], float], *,
                       limit: int = AUTO_MAX_CANDIDATES, min_share: float = AUTO_MIN_SHARE) -> Performer:
    """``auto`` on an attempt: of the candidate tracks (:func:`candidate_tracks`: in 2 rows and
    ``min_share`` of the video, the ``limit`` longest; every track in 2 rows when none is), the one
    whose Performer ``fit`` scores highest (ties: the longer). ``fit`` is the job's own score of a
    performer against the reference (compare's ``movement_score``; a repetition's best
    subsequence); a ValueError from it counts as no fit. With no track in 2 rows, the
    :func:`main_performer` (which raises when no one is detected)."""
    tracks = np.asarray(tracks)
    ids = candidate_tracks(video_poses, tracks, min_share, limit) or candidate_tracks(video_poses, tracks, 0.0, limit)
    if not ids:
        return main_performer(video_poses, tracks)
    frames = track_frames(tracks)
    scored = []
    for track in ids:
        performer = performer_of(video_poses, tracks, track)
        try:
            value = float(fit(performer))
        except ValueError:
            value = -math.inf
        scored.append((value, track, performer))
    order = sorted(range(len(scored)), key=lambda n: -scored[n][0])  # stable: the longer first on ties
    best = scored[order[0]][2]
    candidates = tuple({"track": scored[n][1], "frames": frames[scored[n][1]],
                        "fit": round(scored[n][0], 2) if math.isfinite(scored[n][0]) else None} for n in order)
    return replace(best, choice=f"auto: best fit of {len(ids)} track{'s' if len(ids) != 1 else ''}",
                   candidates=candidates)


def movement_amount(performer: Performer, rows: np.ndarray | None = None) -> float:
    """How much a performer moves: the mean over pairs of consecutive rows where they are present
    (of ``rows`` when given) of the mean displacement of the keypoints seen in both (left/right
    flicker undone, ``kernels.consistent_sides``), each pose taken relative to its box centre in
    units of its box's longer side: a change of pose, not of place or size. 0 with no such pair."""
    from posescore import kernels

    present = performer.present.copy()
    if rows is not None:
        keep = np.zeros_like(present)
        keep[rows] = True
        present &= keep
    at = np.flatnonzero(present)
    pairs = np.flatnonzero(np.diff(at) == 1)
    if not len(pairs):
        return 0.0
    poses = np.asarray(kernels.consistent_sides(performer.poses[at]), np.float64)
    boxes = performer.boxes[at].astype(np.float64)
    centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2.0
    size = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clip(1.0, None)
    xy = (poses[..., :2] - centre[:, None, :]) / size[:, None, None]
    seen = poses[..., 2] > KEYPOINT_CONFIDENCE
    both = seen[pairs] & seen[pairs + 1]
    step = np.linalg.norm(xy[pairs + 1] - xy[pairs], axis=-1)
    per_pair = np.where(both, step, 0.0).sum(-1) / np.maximum(both.sum(-1), 1)
    valid = both.any(-1)
    return float(per_pair[valid].mean()) if valid.any() else 0.0


def most_moving_performer(video_poses: VideoPoses, tracks: np.ndarray, *, option: str = "--reference-person",
                          source: str | None = None, rows: np.ndarray | None = None,
                          min_share: float = REFERENCE_MIN_SHARE, ratio: float = REFERENCE_AMBIGUOUS_RATIO,
                          limit: int = AUTO_MAX_CANDIDATES) -> Performer:
    """``auto`` on a reference (the performance that defines the movement): of the tracks present
    in at least ``min_share`` of its rows (of ``rows`` when given: a reference cut from a longer
    video; every track in 2 rows when none is; the ``limit`` longest), the one that moves the most
    (:func:`movement_amount`). One candidate: that one. Raises :class:`PersonError` (listing the
    candidates and naming ``option``) when the second most moving candidate moves at least
    ``ratio`` times as much as the first: two people could be the performer. With no track in 2
    rows, the :func:`main_performer` (which raises when no one is detected)."""
    source = source or str(video_poses.info.path)
    tracks = np.asarray(tracks)
    ids = (candidate_tracks(video_poses, tracks, min_share, limit, rows)
           or candidate_tracks(video_poses, tracks, 0.0, limit, rows))
    if not ids:
        return main_performer(video_poses, tracks)
    frames = track_frames(tracks, rows)
    performers = {t: performer_of(video_poses, tracks, t) for t in ids}
    amounts = {t: movement_amount(performers[t], rows) for t in ids}
    order = sorted(ids, key=lambda t: -amounts[t])  # stable: the longer first on ties
    candidates = tuple({"track": t, "frames": frames[t], "movement": round(amounts[t], 4)} for t in order)
    if len(order) == 1:
        return replace(performers[order[0]], choice="auto: the one track in most of the video", candidates=candidates)
    first, second = amounts[order[0]], amounts[order[1]]
    if second >= ratio * first:
        listed = ", ".join(f"track {t} ({frames[t]} frames, moves {amounts[t]:.3f} body sizes a frame)" for t in order)
        raise PersonError(f"{source}: {len(order)} people could be the performer: the two who move the most move "
                          f"alike (within {1 - ratio:.0%}): {listed}; say whom to follow with {option} TRACK "
                          f"(one of {', '.join(map(str, sorted(order)))}), {option} X,Y@T or {option} X0,Y0,X1,Y1@T")
    return replace(performers[order[0]], choice=f"auto: moves the most of {len(order)} tracks", candidates=candidates)


def performer_frames(poses: VideoPoses, name, performer: Performer | None = None) -> tuple[np.ndarray, Performer]:
    """(frame positions where the main performer is present, the Performer; found when None)."""
    performer = performer or main_performer(poses)
    present = np.flatnonzero(performer.present)
    if len(present) < 2:
        raise PersonError(f"{name}: the performer is visible in {len(present)} frame(s); "
                          f"need at least 2 to compare movements")
    return present, performer


def performer_rows(performer: Performer, rows: np.ndarray) -> Performer:
    """``performer`` on the rows ``rows`` of its video only (as ``VideoPoses.select``), its choice kept."""
    return replace(performer, poses=performer.poses[rows], present=performer.present[rows],
                   boxes=performer.boxes[rows], scores=performer.scores[rows],
                   frame_indices=performer.frame_indices[rows], times=performer.times[rows],
                   landmarks=None if performer.landmarks is None else performer.landmarks[rows],
                   world=None if performer.world is None else performer.world[rows])
