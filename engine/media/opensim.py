"""OpenSim's text formats at the edge: ``.trc`` marker trajectories (BlazePose GHUM's world
landmarks, with Pose2Sim's or OpenCap's marker names) and ``.mot`` joint angles.

Axes: OpenSim's Y is up. World landmarks (x right in the image, y down, z away from the camera,
metres from the hips' midpoint) are written as X = x, Y = -y, Z = -z (right-handed, Z toward the
camera). A single camera's world landmarks are centred on the hips in every frame: the markers
move with the body's pose, not across the room.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from posescore.kernels.skeleton import LM

#: Marker names and the landmarks each is the mean of. Pose2Sim's BLAZEPOSE skeleton (its names
#: for mediapipe's landmarks, and "Hip" the hips' midpoint) and "Neck" (the shoulders' midpoint),
#: which its OpenSim models use.
POSE2SIM_MARKERS: dict[str, tuple[str, ...]] = {
    "Hip": ("left_hip", "right_hip"), "RHip": ("right_hip",), "RKnee": ("right_knee",),
    "RAnkle": ("right_ankle",), "RHeel": ("right_heel",), "RBigToe": ("right_foot_index",),
    "LHip": ("left_hip",), "LKnee": ("left_knee",), "LAnkle": ("left_ankle",), "LHeel": ("left_heel",),
    "LBigToe": ("left_foot_index",), "Neck": ("left_shoulder", "right_shoulder"), "Nose": ("nose",),
    "REye": ("right_eye",), "LEye": ("left_eye",), "RShoulder": ("right_shoulder",), "RElbow": ("right_elbow",),
    "RWrist": ("right_wrist",), "RPinky": ("right_pinky",), "RIndex": ("right_index",), "RThumb": ("right_thumb",),
    "LShoulder": ("left_shoulder",), "LElbow": ("left_elbow",), "LWrist": ("left_wrist",), "LPinky": ("left_pinky",),
    "LIndex": ("left_index",), "LThumb": ("left_thumb",),
}
#: OpenCap's video keypoint markers (its marker augmenter's inputs) that BlazePose has: no small
#: toes.
OPENCAP_MARKERS: dict[str, tuple[str, ...]] = {
    "Neck": ("left_shoulder", "right_shoulder"), "RShoulder": ("right_shoulder",), "LShoulder": ("left_shoulder",),
    "RElbow": ("right_elbow",), "LElbow": ("left_elbow",), "RWrist": ("right_wrist",), "LWrist": ("left_wrist",),
    "midHip": ("left_hip", "right_hip"), "RHip": ("right_hip",), "LHip": ("left_hip",), "RKnee": ("right_knee",),
    "LKnee": ("left_knee",), "RAnkle": ("right_ankle",), "LAnkle": ("left_ankle",), "RHeel": ("right_heel",),
    "LHeel": ("left_heel",), "RBigToe": ("right_foot_index",), "LBigToe": ("left_foot_index",),
}
MARKER_SETS = {"pose2sim": POSE2SIM_MARKERS, "opencap": OPENCAP_MARKERS}


def opensim_axes(world) -> np.ndarray:
    """World landmarks ``[..., 3]`` (x right, y down, z away from the camera) in OpenSim's axes."""
    w = np.asarray(world, np.float64)
    return np.stack([w[..., 0], -w[..., 1], -w[..., 2]], -1)


def write_trc(path: str | os.PathLike, times, world, *, markers: str = "pose2sim") -> Path:
    """``path``: a ``.trc`` file of world landmarks ``world [F, 33, 3]`` (metres; NaN where the
    person is missing: written empty, as OpenSim reads gaps) at ``times [F]`` seconds, with the
    marker names of ``markers`` (``pose2sim`` or ``opencap``)."""
    if markers not in MARKER_SETS:
        raise ValueError(f"markers: expected one of {sorted(MARKER_SETS)}, got {markers!r}")
    names = MARKER_SETS[markers]
    times = np.asarray(times, np.float64).reshape(-1)
    world = opensim_axes(world)
    if world.shape != (len(times), 33, 3):
        raise ValueError(f"world: expected [{len(times)}, 33, 3], got {list(world.shape)}")
    points = np.stack([world[:, [LM[n] for n in parts]].mean(1) for parts in names.values()], 1)
    steps = np.diff(times)
    rate = 1.0 / float(np.median(steps)) if len(steps) and np.median(steps) > 0 else 0.0
    path = Path(path)
    lines = [f"PathFileType\t4\t(X/Y/Z)\t{path.name}",
             "DataRate\tCameraRate\tNumFrames\tNumMarkers\tUnits\tOrigDataRate\tOrigDataStartFrame\tOrigNumFrames",
             f"{rate:.6g}\t{rate:.6g}\t{len(times)}\t{len(names)}\tm\t{rate:.6g}\t1\t{len(times)}",
             "Frame#\tTime\t" + "\t\t\t".join(names) + "\t\t",
             "\t\t" + "\t".join(f"X{i}\tY{i}\tZ{i}" for i in range(1, len(names) + 1)), ""]
    for frame, (time, row) in enumerate(zip(times, points), start=1):
        values = "\t".join("" if not np.isfinite(v) else f"{v:.6f}" for v in row.reshape(-1))
        lines.append(f"{frame}\t{time:.6f}\t{values}")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_mot(path: str | os.PathLike, times, angles: dict[str, np.ndarray], *, name: str = "angles") -> Path:
    """``path``: an OpenSim ``.mot`` storage of ``angles`` ({column: [F] degrees}, NaN written as
    NaN, which OpenSim reads) at ``times [F]`` seconds."""
    times = np.asarray(times, np.float64).reshape(-1)
    columns = list(angles)
    for column in columns:
        if np.asarray(angles[column]).shape != times.shape:
            raise ValueError(f"angles[{column!r}]: expected {len(times)} values")
    lines = [name, "version=1", f"nRows={len(times)}", f"nColumns={len(columns) + 1}", "inDegrees=yes", "endheader",
             "\t".join(["time", *columns])]
    for n, time in enumerate(times):
        lines.append("\t".join([f"{time:.6f}", *(f"{float(angles[c][n]):.6f}" for c in columns)]))
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)
