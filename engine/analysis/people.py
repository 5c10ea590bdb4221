"""People across frames: a simple tracker, the main performer of a video, the main person of an image.

    tracks = track_people(video_poses)            # [F, P] int32 track ids, -1 for padding
    performer = main_performer(video_poses, tracks)
    performer.poses, performer.present            # [F, 17, 3] float32, [F] bool: the time axis stays
    i = pick_person(kps, boxes, scores)           # index of the main (largest x most confident) person

"Largest, most confident" is measured everywhere by the same weight: box area (pixels²) times the
detection score. Missing frames are never dropped: a performer absent from a frame has that row
marked (``present`` False) with an all-zero pose (confidence 0 = missing keypoint).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    pairs are ranked by the mean of the two, and by recency. A detection left unmatched starts a new track. A track
    unseen for more than ``max_gap`` rows ends, so a person hidden for a few frames keeps their id.
    Each track has at most one detection per row.
    """
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold: expected a value in [0, 1], got {iou_threshold!r}")
    if isinstance(max_gap, bool) or not isinstance(max_gap, (int, np.integer)) or max_gap < 0:
        raise ValueError(f"max_gap: expected an integer >= 0 (rows), got {max_gap!r}")
    frames, people = video_poses.keypoints.shape[:2]
    tracks = np.full((frames, people), -1, np.int32)
    # Live tracks, as parallel lists: id, last box, last keypoints, last row, box velocity per row.
    ids: list[int] = []
    last_box: list[np.ndarray] = []
    last_kps: list[np.ndarray] = []
    last_row: list[int] = []
    velocity: list[np.ndarray] = []
    next_id = 0
    for row in range(frames):
        n = int(video_poses.counts[row])
        alive = [t for t in range(len(ids)) if row - last_row[t] - 1 <= max_gap]
        ids, last_box, last_kps, last_row, velocity = ([seq[t] for t in alive] for seq in
                                                       (ids, last_box, last_kps, last_row, velocity))
        if n == 0:
            continue
        boxes = video_poses.boxes[row, :n].astype(np.float64)
        kps = video_poses.keypoints[row, :n].astype(np.float64)
        assigned = np.full(n, -1, np.int64)
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
        for d in range(n):
            t = int(assigned[d])
            if t < 0:
                ids.append(next_id)
                next_id += 1
                last_box.append(boxes[d])
                last_kps.append(kps[d])
                last_row.append(row)
                velocity.append(np.zeros(4))
                t = len(ids) - 1
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
            tracks[row, d] = ids[t]
    return tracks


@dataclass(frozen=True)
class Performer:
    """One tracked person over every row of a VideoPoses (the time axis is that of the video).

    ``poses [F, 17, 3]`` float32 pixel keypoints, all zeros (confidence 0) where absent;
    ``present [F]`` bool; ``track`` the track id; ``boxes [F, 4]`` float32 (zeros where absent);
    ``scores [F]`` float32 detection scores (0 where absent); ``frame_indices [F]`` int64 and
    ``times [F]`` float32 seconds, as in the VideoPoses.
    """

    poses: np.ndarray
    present: np.ndarray
    track: int
    boxes: np.ndarray
    scores: np.ndarray
    frame_indices: np.ndarray
    times: np.ndarray

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
    return Performer(poses=poses, present=present, track=int(track), boxes=boxes, scores=scores,
                     frame_indices=video_poses.frame_indices, times=video_poses.times)


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
    return performer_of(video_poses, tracks, int(np.argmax(totals)))


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
