"""The COCO-17 skeleton, defined once, as data.

Every other module (kernels, rendering, clients) takes the keypoint order, the limbs, the six body
parts and the left/right mirror permutation from here.
"""

from __future__ import annotations

import numpy as np

KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)  # 17
KP = {name: i for i, name in enumerate(KEYPOINT_NAMES)}

def mirrored_name(name: str) -> str:
    """The name of a point's mirror image: "left" and "right" swapped ("mouth_left" too)."""
    return name.replace("left", "@").replace("right", "left").replace("@", "right")


# Index of each keypoint's mirror image (left <-> right); the nose maps to itself.
FLIP_PERMUTATION: tuple[int, ...] = tuple(KP[mirrored_name(n)] for n in KEYPOINT_NAMES)

PART_NAMES: tuple[str, ...] = ("head", "torso", "left_arm", "right_arm", "left_leg", "right_leg")
NUM_PARTS = len(PART_NAMES)  # 6


def _pairs(*names: tuple[str, str]) -> tuple[tuple[int, int], ...]:
    return tuple((KP[a], KP[b]) for a, b in names)


def _triples(*names: tuple[str, str, str]) -> tuple[tuple[int, int, int], ...]:
    return tuple((KP[a], KP[b], KP[c]) for a, b, c in names)


# Limbs of each part: their directions are compared (translation, scale and speed do not matter).
PART_LIMBS: dict[str, tuple[tuple[int, int], ...]] = {
    "head": _pairs(("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
                   ("right_eye", "right_ear"), ("left_shoulder", "nose"), ("right_shoulder", "nose")),
    "torso": _pairs(("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"),
                    ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip")),
    "left_arm": _pairs(("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist")),
    "right_arm": _pairs(("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist")),
    "left_leg": _pairs(("left_hip", "left_knee"), ("left_knee", "left_ankle")),
    "right_leg": _pairs(("right_hip", "right_knee"), ("right_knee", "right_ankle")),
}

# Joint angles of each part, (a, b, c): the signed angle at b from b->a to b->c.
PART_JOINTS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "head": (),
    "torso": (),
    "left_arm": _triples(("left_shoulder", "left_elbow", "left_wrist"),
                         ("left_hip", "left_shoulder", "left_elbow")),
    "right_arm": _triples(("right_shoulder", "right_elbow", "right_wrist"),
                          ("right_hip", "right_shoulder", "right_elbow")),
    "left_leg": _triples(("left_hip", "left_knee", "left_ankle"),
                         ("left_shoulder", "left_hip", "left_knee")),
    "right_leg": _triples(("right_hip", "right_knee", "right_ankle"),
                          ("right_shoulder", "right_hip", "right_knee")),
}

# Drawing skeleton (the 19 COCO limbs), each with the index of the part it is coloured by.
_DRAWN: tuple[tuple[str, str, str], ...] = (
    ("nose", "left_eye", "head"), ("nose", "right_eye", "head"), ("left_eye", "right_eye", "head"),
    ("left_eye", "left_ear", "head"), ("right_eye", "right_ear", "head"),
    ("left_ear", "left_shoulder", "head"), ("right_ear", "right_shoulder", "head"),
    ("left_shoulder", "right_shoulder", "torso"), ("left_hip", "right_hip", "torso"),
    ("left_shoulder", "left_hip", "torso"), ("right_shoulder", "right_hip", "torso"),
    ("left_shoulder", "left_elbow", "left_arm"), ("left_elbow", "left_wrist", "left_arm"),
    ("right_shoulder", "right_elbow", "right_arm"), ("right_elbow", "right_wrist", "right_arm"),
    ("left_hip", "left_knee", "left_leg"), ("left_knee", "left_ankle", "left_leg"),
    ("right_hip", "right_knee", "right_leg"), ("right_knee", "right_ankle", "right_leg"),
)
LIMBS: tuple[tuple[int, int], ...] = tuple((KP[a], KP[b]) for a, b, _ in _DRAWN)
LIMB_PARTS: tuple[int, ...] = tuple(PART_NAMES.index(part) for _, _, part in _DRAWN)


def part_terms() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flat arrays for vectorized part scoring.

    Returns ``(limbs [L, 2] int64, joints [J, 3] int64, limb_part [L] int64, joint_part [J] int64)``.
    """
    limbs, limb_part, joints, joint_part = [], [], [], []
    for p, part in enumerate(PART_NAMES):
        limbs += PART_LIMBS[part]
        limb_part += [p] * len(PART_LIMBS[part])
        joints += PART_JOINTS[part]
        joint_part += [p] * len(PART_JOINTS[part])
    return (np.asarray(limbs, np.int64), np.asarray(joints, np.int64),
            np.asarray(limb_part, np.int64), np.asarray(joint_part, np.int64))


# Joint angles a coach reads, each (a, b, c): the angle at b between b->a and b->c, as flexion in
# degrees, 0 straight: knees, hips and elbows 180 minus that angle (0: the limb straight, 90: a
# right angle); shoulders the angle itself (the upper arm's elevation from the trunk: 0 hanging
# along the body, 90 held out, 180 overhead).
JOINT_ANGLES: dict[str, tuple[int, int, int]] = {
    "left_knee": (KP["left_hip"], KP["left_knee"], KP["left_ankle"]),
    "right_knee": (KP["right_hip"], KP["right_knee"], KP["right_ankle"]),
    "left_hip": (KP["left_shoulder"], KP["left_hip"], KP["left_knee"]),
    "right_hip": (KP["right_shoulder"], KP["right_hip"], KP["right_knee"]),
    "left_elbow": (KP["left_shoulder"], KP["left_elbow"], KP["left_wrist"]),
    "right_elbow": (KP["right_shoulder"], KP["right_elbow"], KP["right_wrist"]),
    "left_shoulder": (KP["left_hip"], KP["left_shoulder"], KP["left_elbow"]),
    "right_shoulder": (KP["right_hip"], KP["right_shoulder"], KP["right_elbow"]),
}
JOINT_NAMES: tuple[str, ...] = tuple(JOINT_ANGLES)
#: The joints whose angle is an elevation (the rest are flexions: 180 minus the angle).
ELEVATION_JOINTS = frozenset({"left_shoulder", "right_shoulder"})
#: Segments without a joint angle, measured by their tilt from the image's vertical, each
#: (keypoints averaged at its base, keypoints averaged at its tip): the trunk from the hips to the
#: shoulders, the head from the shoulders to the nose and ears.
TILTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "trunk_tilt": ((KP["left_hip"], KP["right_hip"]), (KP["left_shoulder"], KP["right_shoulder"])),
    "head_tilt": ((KP["left_shoulder"], KP["right_shoulder"]), (KP["nose"], KP["left_ear"], KP["right_ear"])),
}
#: Lines across the body, measured by their direction in the image (degrees from the image's x
#: axis, (-180, 180]): the shoulders' (left to right) and the eyes' (left to right). A body or head
#: turned to face another way turns its line: facing away from the camera turns it by 180.
LINES: dict[str, tuple[int, int]] = {
    "shoulder_line": (KP["left_shoulder"], KP["right_shoulder"]),
    "eye_line": (KP["left_eye"], KP["right_eye"]),
}
TILT_NAMES: tuple[str, ...] = tuple(TILTS) + tuple(LINES)
#: Every angle a report gives per step: the joints' flexions, then the segments' tilts and lines.
ANGLE_NAMES: tuple[str, ...] = JOINT_NAMES + TILT_NAMES
#: The angles that tell how a part is off: a limb by its joints, the torso and head by their tilt
#: and line.
PART_ANGLES: dict[str, tuple[str, ...]] = {
    "head": ("head_tilt", "eye_line"), "torso": ("trunk_tilt", "shoulder_line"),
    "left_arm": ("left_elbow", "left_shoulder"), "right_arm": ("right_elbow", "right_shoulder"),
    "left_leg": ("left_knee", "left_hip"), "right_leg": ("right_knee", "right_hip"),
}


def joint_angles(poses, min_confidence: float = 0.3) -> np.ndarray:
    """Flexion of each of :data:`JOINT_NAMES` in degrees (see :data:`JOINT_ANGLES`) of pixel poses
    ``[..., 17, 3]``: ``[..., 8]`` float32, NaN where one of the joint's three keypoints is missing
    (confidence <= ``min_confidence``) or two coincide."""
    p = np.asarray(poses, np.float64)
    if p.shape[-2:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"poses: expected shape [..., 17, 3], got {list(p.shape)}")
    a, b, c = (np.array([t[i] for t in JOINT_ANGLES.values()]) for i in range(3))
    flexion, norms = _flexions(p[..., a, :2] - p[..., b, :2], p[..., c, :2] - p[..., b, :2])
    seen = (p[..., a, 2] > min_confidence) & (p[..., b, 2] > min_confidence) & (p[..., c, 2] > min_confidence)
    return np.where(seen & (norms > 0) & np.isfinite(flexion), flexion, np.nan).astype(np.float32)


def _flexions(u, v):
    """Each joint's flexion (or elevation, :data:`ELEVATION_JOINTS`) in degrees from its two limb
    vectors ``u = a - b``, ``v = c - b`` ``[..., J, D]``, and the product of their norms."""
    norms = np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        angle = np.degrees(np.arccos(np.clip((u * v).sum(-1) / norms, -1.0, 1.0)))
    elevation = np.array([name in ELEVATION_JOINTS for name in JOINT_NAMES])
    return np.where(elevation, angle, 180.0 - angle), norms


def world_joint_angles(world) -> np.ndarray:
    """:data:`JOINT_NAMES`' flexions in degrees, as :func:`joint_angles` defines them, measured in
    3-D on world landmarks ``[..., 33, 3]`` (metres): ``[..., 8]`` float32, NaN where two points
    coincide or a value is not finite."""
    w = np.asarray(world, np.float64)
    if w.shape[-2:] != (NUM_LANDMARKS, 3):
        raise ValueError(f"world: expected shape [..., {NUM_LANDMARKS}, 3], got {list(w.shape)}")
    a, b, c = (np.array([COCO_FROM_LANDMARKS[t[i]] for t in JOINT_ANGLES.values()]) for i in range(3))
    flexion, norms = _flexions(w[..., a, :] - w[..., b, :], w[..., c, :] - w[..., b, :])
    return np.where((norms > 0) & np.isfinite(flexion), flexion, np.nan).astype(np.float32)


def angle_difference(name: str, attempt, reference):
    """``attempt - reference`` in degrees for the angle ``name`` of :data:`ANGLE_NAMES`; a line's
    direction wraps around, so its difference is taken in (-180, 180]."""
    diff = np.asarray(attempt, np.float64) - np.asarray(reference, np.float64)
    if name in LINES:
        diff = 180.0 - np.mod(180.0 - diff, 360.0)
    return diff


def tilts(poses, min_confidence: float = 0.3) -> np.ndarray:
    """Each of :data:`TILT_NAMES` in degrees, of pixel poses ``[..., 17, 3]``: ``[..., 4]``
    float32. A tilt (:data:`TILTS`) is from the image's vertical, 0 upright, positive leaning
    toward the image's right (x grows); every keypoint of its base must be seen, and of its tip
    those seen are averaged. A line (:data:`LINES`) is its direction from the image's x axis,
    positive turning clockwise on screen. NaN where a keypoint is missing."""
    p = np.asarray(poses, np.float64)
    if p.shape[-2:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"poses: expected shape [..., 17, 3], got {list(p.shape)}")
    out = []
    for name, (base, tip) in TILTS.items():
        seen_base = (p[..., base, 2] > min_confidence).all(-1)
        tip_seen = p[..., tip, 2] > min_confidence
        with np.errstate(invalid="ignore", divide="ignore"):
            b = p[..., base, :2].mean(-2)
            t = (p[..., tip, :2] * tip_seen[..., None]).sum(-2) / tip_seen.sum(-1)[..., None]
        dx, dy = t[..., 0] - b[..., 0], b[..., 1] - t[..., 1]  # y grows downwards in an image
        angle = np.degrees(np.arctan2(dx, dy))
        ok = seen_base & tip_seen.any(-1) & ((dx != 0) | (dy != 0))
        out.append(np.where(ok, angle, np.nan))
    for a, b in LINES.values():
        dx, dy = p[..., b, 0] - p[..., a, 0], p[..., b, 1] - p[..., a, 1]
        ok = (p[..., a, 2] > min_confidence) & (p[..., b, 2] > min_confidence) & ((dx != 0) | (dy != 0))
        out.append(np.where(ok, np.degrees(np.arctan2(dy, dx)), np.nan))
    return np.stack(out, -1).astype(np.float32)


# BlazePose GHUM's 33 landmarks (the ``landmarks`` model), defined once: COCO-17's keypoints and
# more points of the face, hands and feet (heels and foot tips, for gait).
LANDMARK_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
NUM_LANDMARKS = len(LANDMARK_NAMES)  # 33
LM = {name: i for i, name in enumerate(LANDMARK_NAMES)}
#: The landmark of each COCO-17 keypoint, in COCO's order: landmarks[..., COCO_FROM_LANDMARKS, :]
#: is a COCO-17 pose.
COCO_FROM_LANDMARKS: tuple[int, ...] = tuple(LM[name] for name in KEYPOINT_NAMES)
#: Index of each landmark's mirror image (left <-> right).
LANDMARK_FLIP: tuple[int, ...] = tuple(LM[mirrored_name(n)] for n in LANDMARK_NAMES)
#: Drawn segments of the 33-landmark skeleton: COCO's limbs and the hands and feet.
LANDMARK_LIMBS: tuple[tuple[int, int], ...] = tuple(
    (COCO_FROM_LANDMARKS[a], COCO_FROM_LANDMARKS[b]) for a, b in LIMBS) + tuple(
    (LM[a], LM[b]) for a, b in (
        ("left_wrist", "left_pinky"), ("left_wrist", "left_index"), ("left_wrist", "left_thumb"),
        ("right_wrist", "right_pinky"), ("right_wrist", "right_index"), ("right_wrist", "right_thumb"),
        ("left_ankle", "left_heel"), ("left_heel", "left_foot_index"), ("left_ankle", "left_foot_index"),
        ("right_ankle", "right_heel"), ("right_heel", "right_foot_index"), ("right_ankle", "right_foot_index")))
