"""Scores that hold across views (``--3d``): a performer's world landmarks turned, once for the whole
sequence, to face a canonical way, and seen from one canonical viewpoint.

BlazePose's world landmarks are metres from the hips' midpoint in the camera's axes: two cameras
filming one movement see the same body turned by the angle between them. :func:`align_sequence`
removes that turn for a whole sequence: "up" is the mean direction from the hips to the shoulders
over the sequence, and the facing is the mean direction from the right hip to the left, turned
about "up" onto a fixed axis. One rotation per sequence, not per frame: a turn within the movement
stays a turn. :func:`canonical_view` then draws the turned body as a camera at a fixed, oblique
viewpoint would see it (no depth axis of the body's own is lost with it: forward-back, left-right
and up-down all move the drawn points), as COCO-17 pixel poses that every 2-D kernel, score and
report takes unchanged.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from posescore.kernels.skeleton import COCO_FROM_LANDMARKS, LM

#: The canonical viewpoint: turned this far about the body's vertical from straight ahead, and
#: looking down this far (degrees).
VIEW_YAW, VIEW_PITCH = 35.0, 20.0
#: Pixels per metre of the drawn poses, and where the hips are drawn (their scale and place do not
#: change a score; they keep the poses in the range of real pixel poses).
PIXELS_PER_METRE, ORIGIN = 400.0, (500.0, 500.0)
#: A landmark seen at least this much counts; the confidence of a drawn keypoint is its visibility.
MIN_VISIBILITY = 0.5


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v)
    if not np.isfinite(norm) or norm < 1e-9:
        raise ValueError("no direction: the body's landmarks coincide over the whole sequence")
    return v / norm


def sequence_rotation(world: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``[3, 3]``: the rotation that turns the sequence ``world [F, 33, 3]`` (frames where
    ``present``) so that its mean hips-to-shoulders direction is up (-y) and its mean right-to-left
    hip direction, level, is +x. Raises ValueError when no frame has the body."""
    w = np.asarray(world, np.float64)[np.asarray(present, bool)]
    if not len(w):
        raise ValueError("--3d: the performer is in no frame")
    hips = (w[:, LM["left_hip"]] + w[:, LM["right_hip"]]) / 2
    shoulders = (w[:, LM["left_shoulder"]] + w[:, LM["right_shoulder"]]) / 2
    up = _unit((shoulders - hips).mean(0))
    across = (w[:, LM["left_hip"]] - w[:, LM["right_hip"]]).mean(0)
    across = _unit(across - (across @ up) * up)  # level: perpendicular to up
    # Rows: the new axes in the old frame. New x = across, new y = down (-up), new z = -forward
    # (a right-handed frame with y down, like the world landmarks').
    return np.stack([across, -up, np.cross(across, -up)])


def align_sequence(world: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``world [F, 33, 3]`` turned by :func:`sequence_rotation` (one rotation for every frame)."""
    rotation = sequence_rotation(world, present)
    return np.asarray(world, np.float64) @ rotation.T


def canonical_view(aligned: np.ndarray, visibility: np.ndarray, present: np.ndarray) -> np.ndarray:
    """COCO-17 pixel poses ``[F, 17, 3]`` float32 of aligned world landmarks ``[F, 33, 3]`` seen from
    the canonical viewpoint (:data:`VIEW_YAW`, :data:`VIEW_PITCH`); confidence the landmark's
    ``visibility [F, 33]`` (0 under :data:`MIN_VISIBILITY` and where not ``present``)."""
    yaw, pitch = np.radians(VIEW_YAW), np.radians(VIEW_PITCH)
    turn = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    tilt = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    seen = np.asarray(aligned, np.float64)[:, list(COCO_FROM_LANDMARKS)] @ (tilt @ turn).T
    conf = np.asarray(visibility, np.float64)[:, list(COCO_FROM_LANDMARKS)]
    conf = np.where((conf >= MIN_VISIBILITY) & np.asarray(present, bool)[:, None], conf, 0.0)
    xy = seen[..., :2] * PIXELS_PER_METRE + np.array(ORIGIN)
    poses = np.concatenate([xy, conf[..., None]], -1)
    poses[conf <= 0] = 0.0
    return poses.astype(np.float32)


def _check_world(world) -> None:
    if world is None:
        raise ValueError("--3d needs world landmarks: give the video, or a pose JSON written by "
                         "`posescore pose --landmarks`")


def performer_in_3d(performer):
    """The Performer whose ``poses`` are its world landmarks aligned for the sequence and seen from
    the canonical viewpoint; its ``world`` aligned too (boxes, times and the rest unchanged).
    Raises ValueError when it has no world landmarks (a pose JSON without them)."""
    _check_world(performer.world)
    aligned = align_sequence(performer.world, performer.present)
    poses = canonical_view(aligned, performer.landmarks[..., 3], performer.present)
    return replace(performer, poses=poses, world=aligned.astype(np.float32))


#: The landmarks whose places fit one performance's turn onto another's (the limbs and hips).
FIT_LANDMARKS: tuple[int, ...] = tuple(LM[f"{side}_{part}"] for side in ("left", "right")
                                       for part in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"))


def _fitted_rotation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The proper rotation ``R`` (3 x 3) that best maps points ``source [N, 3]`` onto ``target``
    (``source @ R.T``; Kabsch)."""
    u, _, vt = np.linalg.svd(source.T @ target)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    return vt.T @ np.diag([1.0, 1.0, d]) @ u.T


def relative_rotation(reference: np.ndarray, attempt: np.ndarray, iterations: int = 4) -> np.ndarray:
    """``[3, 3]``: the one rotation that best turns the aligned attempt ``[A, 33, 3]`` onto the
    aligned reference ``[R, 33, 3]`` (frames with the performer only): DTW-pair their frames, fit
    the rotation on the pairs' limb landmarks, and again, ``iterations`` times. Refines what
    :func:`align_sequence` estimates from each performance alone."""
    from posescore import kernels

    rotation = np.eye(3)
    target = np.asarray(reference, np.float64)[:, list(FIT_LANDMARKS)]
    for _ in range(iterations):
        turned = np.asarray(attempt, np.float64)[:, list(FIT_LANDMARKS)] @ rotation.T
        path, _ = kernels.dtw_path(target.reshape(len(target), -1).astype(np.float32),
                                   turned.reshape(len(turned), -1).astype(np.float32))
        step = _fitted_rotation(turned[path[:, 1]].reshape(-1, 3), target[path[:, 0]].reshape(-1, 3))
        rotation = step @ rotation
    return rotation


def performers_in_3d(reference, attempt):
    """:func:`performer_in_3d` of both, the attempt then turned onto the reference by
    :func:`relative_rotation` (one rotation for the whole performance)."""
    r3, a3 = performer_in_3d(reference), performer_in_3d(attempt)
    rotation = relative_rotation(r3.world[r3.present], a3.world[a3.present])
    world = (a3.world.astype(np.float64) @ rotation.T).astype(np.float32)
    poses = canonical_view(world, a3.landmarks[..., 3], a3.present)
    return r3, replace(a3, poses=poses, world=world)


def video_in_3d(poses):
    """``poses`` (a VideoPoses with world landmarks) whose every person's keypoints are their world
    landmarks turned by themselves (each pose on its own: a pose has no sequence) and seen from the
    canonical viewpoint, as :func:`pose_in_3d` makes a query. Raises ValueError without world
    landmarks."""
    _check_world(poses.world)
    keypoints = np.zeros_like(poses.keypoints)
    people = np.arange(poses.max_people)[None, :] < poses.counts[:, None]
    for row, col in zip(*np.nonzero(people)):
        keypoints[row, col] = pose_in_3d(poses.world[row, col], poses.landmarks[row, col])
    return replace(poses, keypoints=keypoints)


def pose_in_3d(world: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """One person's world landmarks ``[33, 3]`` turned by themselves and seen from the canonical
    viewpoint: a COCO-17 pixel pose ``[17, 3]`` (``find --3d``'s query)."""
    aligned = align_sequence(np.asarray(world)[None], np.ones(1, bool))
    return canonical_view(aligned, np.asarray(landmarks)[None, :, 3], np.ones(1, bool))[0]
