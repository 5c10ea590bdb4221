"""The landmark model's pre- and post-processing (BlazePose GHUM full, 256 x 256 crops): each
person's region of interest from the pose model's keypoints and box, the affine map of its crop,
and the model's outputs decoded into image pixels and world metres. NumPy; pure math.

A region of interest (ROI) is a square in the image, ``[cx, cy, side, ux, uy]`` in pixels: its
centre, its side, and ``u``, the unit vector of the crop's "up" in the image (from the hips to the
shoulders: BlazePose's crops are upright, as its own detector aligns them). The crop's x axis is
``v = (-uy, ux)`` and its down axis ``d = -u``. Image coordinates are continuous: pixel ``i``
covers ``[i, i + 1)`` (the pose model's convention).
"""

from __future__ import annotations

import numpy as np

from posescore.kernels.skeleton import KP, NUM_LANDMARKS

#: The landmark model's input side, in pixels.
LANDMARK_INPUT_SIZE = 256
#: Landmarks the model predicts: the 33 and 6 auxiliary points (the next frame's ROI).
MODEL_LANDMARKS = 39
#: The ROI's side over the diameter of the circle round the body from the hips: BlazePose's 1.25.
ROI_SCALE = 1.25
#: The head reaches past the eyes and ears, the feet past the ankles: the farthest keypoint's
#: distance from the hips is enlarged by this.
BODY_MARGIN = 1.15
#: Heatmap refinement (MediaPipe's RefineLandmarksFromHeatmapCalculator): kernel and minimum confidence.
HEATMAP_KERNEL = 7
HEATMAP_MIN_CONFIDENCE = 0.5


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def landmark_rois(keypoints, boxes, min_confidence: float = 0.3) -> np.ndarray:
    """ROIs ``[N, 5]`` float64 of people given by COCO-17 pixel ``keypoints [N, 17, 3]`` and boxes
    ``[N, 4]`` (x0, y0, x1, y1): centred on the hips' midpoint (the box's centre where a hip is
    missing), up from the hips toward the shoulders (the image's up where a shoulder or hip is
    missing), its side 2 x 1.25 x the radius of the circle round the body (the farthest keypoint
    seen, x 1.15, and at least the box's farthest edge from the centre)."""
    kp = np.asarray(keypoints, np.float64).reshape(-1, 17, 3)
    box = np.asarray(boxes, np.float64).reshape(-1, 4)
    seen = kp[..., 2] > min_confidence
    hips = [KP["left_hip"], KP["right_hip"]]
    shoulders = [KP["left_shoulder"], KP["right_shoulder"]]
    box_centre = np.stack([(box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2], -1)
    hips_seen = seen[:, hips].all(-1)
    centre = np.where(hips_seen[:, None], kp[:, hips, :2].mean(1), box_centre)
    up_seen = hips_seen & seen[:, shoulders].all(-1)
    up = kp[:, shoulders, :2].mean(1) - centre
    length = np.linalg.norm(up, axis=-1)
    up_seen &= length > 1e-6
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = np.where(up_seen[:, None], up / length[:, None], np.array([0.0, -1.0]))
    dist = np.where(seen, np.linalg.norm(kp[..., :2] - centre[:, None], axis=-1), 0.0).max(-1) * BODY_MARGIN
    edges = np.stack([centre[:, 0] - box[:, 0], box[:, 2] - centre[:, 0], centre[:, 1] - box[:, 1],
                      box[:, 3] - centre[:, 1]], -1).max(-1)
    radius = np.maximum(np.maximum(dist, edges), 1.0)
    return np.concatenate([centre, (2 * ROI_SCALE * radius)[:, None], unit], -1)


def _axes(rois):
    r = np.asarray(rois, np.float64).reshape(-1, 5)
    u = r[:, 3:5]
    v = np.stack([-u[:, 1], u[:, 0]], -1)
    return r[:, :2], r[:, 2], v, -u


def crop_affines(rois, size: int = LANDMARK_INPUT_SIZE) -> np.ndarray:
    """``[N, 2, 3]`` float64: for each ROI, the map from a crop pixel index ``(x, y)`` (its centre)
    to the image position OpenCV samples (pixel centres at integers), for ``cv2.warpAffine(...,
    flags=WARP_INVERSE_MAP)``."""
    centre, side, v, d = _axes(rois)
    scale = (side / size)[:, None]
    # image(a, b) = centre + (a - 0.5) side v + (b - 0.5) side d, a = (x + 0.5) / size; minus 0.5
    # to OpenCV's pixel centres.
    offset = centre - 0.5 + (v + d) * (scale * 0.5 - side[:, None] * 0.5)
    return np.stack([np.stack([scale[:, 0] * v[:, 0], scale[:, 0] * d[:, 0], offset[:, 0]], -1),
                     np.stack([scale[:, 0] * v[:, 1], scale[:, 0] * d[:, 1], offset[:, 1]], -1)], 1)


def refine_from_heatmap(xy, heatmap, kernel: int = HEATMAP_KERNEL,
                        min_confidence: float = HEATMAP_MIN_CONFIDENCE) -> np.ndarray:
    """Landmarks ``xy [N, L, 2]`` in crop-normalized units moved to the sigmoid-weighted mean of
    ``heatmap [N, h, w, L]`` (logits) in a ``kernel`` square round each (MediaPipe's rule, its
    index arithmetic included), where the square's peak is at least ``min_confidence``."""
    xy = np.array(xy, np.float64)
    n, height, width, count = heatmap.shape
    offset = (kernel - 1) // 2
    cols = np.trunc(xy[..., 0] * width).astype(np.int64)
    rows = np.trunc(xy[..., 1] * height).astype(np.int64)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)
    steps = np.arange(-offset, offset + 1)
    grid_r = rows[..., None, None] + steps[:, None]     # [N, L, k, 1]
    grid_c = cols[..., None, None] + steps[None, :]     # [N, L, 1, k]
    valid = (grid_r >= 0) & (grid_r < height) & (grid_c >= 0) & (grid_c < width) & inside[..., None, None]
    r = np.clip(grid_r, 0, height - 1)
    c = np.clip(grid_c, 0, width - 1)
    people = np.arange(n)[:, None, None, None]
    marks = np.arange(count)[None, :, None, None]
    confidence = np.where(valid, _sigmoid(heatmap[people, r, c, marks]), 0.0)
    total = confidence.sum((-2, -1))
    peak = confidence.max((-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        new_x = (confidence * grid_c).sum((-2, -1)) / width / total
        new_y = (confidence * grid_r).sum((-2, -1)) / height / total
    refine = inside & (peak >= min_confidence) & (total > 0)
    xy[..., 0] = np.where(refine, new_x, xy[..., 0])
    xy[..., 1] = np.where(refine, new_y, xy[..., 1])
    return xy


def decode_landmarks(raw, world, heatmap, rois, size: int = LANDMARK_INPUT_SIZE):
    """The landmark model's outputs for N crops, in the image: ``raw [N, 195]`` (39 x (x, y, z,
    visibility, presence) in crop pixels and logits), ``world [N, 117]`` (39 x 3 metres),
    ``heatmap [N, 64, 64, 39]`` and the crops' ``rois [N, 5]``. Returns ``(landmarks [N, 33, 5]``
    float32: x, y in image pixels, z in pixels on the same scale (smaller nearer the camera, 0 at
    the hips), visibility and presence in [0, 1]; ``world [N, 33, 3]`` float32: metres from the
    hips' midpoint, x and y turned as the image (y down), z toward the camera negative)."""
    raw = np.asarray(raw, np.float64).reshape(-1, MODEL_LANDMARKS, 5)
    xy = refine_from_heatmap(raw[..., :2] / size, np.asarray(heatmap, np.float32))
    centre, side, v, d = _axes(rois)
    a, b = xy[..., 0] - 0.5, xy[..., 1] - 0.5
    image = (centre[:, None] + (a * side[:, None])[..., None] * v[:, None]
             + (b * side[:, None])[..., None] * d[:, None])
    z = raw[..., 2] / size * side[:, None]
    landmarks = np.concatenate([image, z[..., None], _sigmoid(raw[..., 3:5])], -1)[:, :NUM_LANDMARKS]
    w = np.asarray(world, np.float64).reshape(-1, MODEL_LANDMARKS, 3)[:, :NUM_LANDMARKS]
    turned = w[..., :1] * v[:, None] + w[..., 1:2] * d[:, None]
    world_out = np.concatenate([turned, w[..., 2:3]], -1)
    return landmarks.astype(np.float32), world_out.astype(np.float32)
