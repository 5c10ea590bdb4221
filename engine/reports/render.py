"""Drawing: skeletons on frames, side-by-side panels, and the score-over-time plot.

Limbs are coloured by the score of the body part they belong to (``kernels.skeleton.LIMB_PARTS``):
a part under the threshold is drawn red, the others green (or, with ``score_colours``, on a
red-to-green ramp). Frames are RGB uint8 ``[H, W, 3]``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from posescore.kernels import DEFAULT_MIN_CONFIDENCE, SCORE_THRESHOLD, under_threshold, visible_keypoints
from posescore.kernels.skeleton import LIMB_PARTS, LIMBS, PART_NAMES

RED = (230, 30, 30)
GREEN = (40, 200, 70)
GREY = (160, 160, 160)


def limb_colours(part_scores, threshold: float | None = SCORE_THRESHOLD) -> list[tuple[int, int, int]]:
    """RGB colour of each drawn limb: red where its part scores under ``threshold``, else green;
    ``threshold=None`` ramps red (0) to green (100). No scores: grey."""
    if part_scores is None:
        return [GREY] * len(LIMBS)
    colours = []
    for part in LIMB_PARTS:
        score = float(part_scores[part])
        if threshold is not None:
            colours.append(RED if under_threshold(score, threshold) else GREEN)
        else:
            t = min(max(score / 100.0, 0.0), 1.0)
            colours.append(tuple(int(round(r + (g - r) * t)) for r, g in zip(RED, GREEN)))
    return colours


def red_limbs(part_scores, threshold: float) -> list[int]:
    """Indices into ``LIMBS`` drawn red for these part scores (those of parts under threshold)."""
    return [n for n, part in enumerate(LIMB_PARTS) if under_threshold(float(part_scores[part]), threshold)]


def draw_skeleton(frame: np.ndarray, pose: np.ndarray, part_scores=None, threshold: float | None = SCORE_THRESHOLD,
                  min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> np.ndarray:
    """A copy of ``frame`` with ``pose [17, 3]`` (pixels) drawn; limbs coloured by part score."""
    out = np.ascontiguousarray(frame).copy()
    scale = max(1, round(max(out.shape[:2]) / 400))
    visible = visible_keypoints(np.asarray(pose), min_confidence)
    for (a, b), colour in zip(LIMBS, limb_colours(part_scores, threshold)):
        if visible[a] and visible[b]:
            cv2.line(out, _point(pose[a]), _point(pose[b]), colour, 2 * scale, cv2.LINE_AA)
    for k in np.flatnonzero(visible):
        cv2.circle(out, _point(pose[k]), 2 * scale, (255, 255, 255), -1, cv2.LINE_AA)
    return out


def draw_ghost(frame: np.ndarray, ghost: np.ndarray, onto: np.ndarray, mirrored: bool = False,
               min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> np.ndarray:
    """``frame`` (in place) with the pose ``ghost [17, 3]`` (the reference) drawn as thin white
    limbs over the pose ``onto [17, 3]`` (the attempt, pixels of ``frame``): moved and scaled so
    that the keypoints both show have the same centre and spread (mirrored left to right first
    when the attempt matched mirrored), so a coach sees where each limb should be."""
    ghost, onto = np.asarray(ghost, np.float64), np.asarray(onto, np.float64)
    both = visible_keypoints(ghost, min_confidence) & visible_keypoints(onto, min_confidence)
    if both.sum() < 2:
        return frame
    xy = ghost[:, :2].copy()
    if mirrored:
        from posescore.kernels.skeleton import FLIP_PERMUTATION

        xy = xy[list(FLIP_PERMUTATION)] * np.array([-1.0, 1.0])
        both = both[list(FLIP_PERMUTATION)] & visible_keypoints(onto, min_confidence)
        if both.sum() < 2:
            return frame
    g_centre, o_centre = xy[both].mean(0), onto[both, :2].mean(0)
    spread = np.sqrt(((xy[both] - g_centre) ** 2).sum(1).mean())
    scale = np.sqrt(((onto[both, :2] - o_centre) ** 2).sum(1).mean()) / spread if spread > 0 else 1.0
    placed = (xy - g_centre) * scale + o_centre
    seen = visible_keypoints(ghost[list(FLIP_PERMUTATION)] if mirrored else ghost, min_confidence)
    width = max(1, round(max(frame.shape[:2]) / 600))
    for a, b in LIMBS:
        if seen[a] and seen[b]:
            cv2.line(frame, _point(placed[a]), _point(placed[b]), (255, 255, 255), width, cv2.LINE_AA)
    return frame


def performer_crop(boxes: np.ndarray, present: np.ndarray, width: int, height: int, margin: float = 0.25,
                   most: float = 0.5) -> tuple[int, int, int, int] | None:
    """The part of a ``width`` x ``height`` video to show of a performer: the union of its boxes
    ``[F, 4]`` (x0, y0, x1, y1 pixels) where ``present [F]``, grown by ``margin`` of its size on
    each side, with even sides; None (show the whole frame) when that covers more than ``most`` of
    the frame's area or the performer is never present."""
    if not np.any(present):
        return None
    b = np.asarray(boxes, np.float64)[np.asarray(present, bool)]
    x0, y0, x1, y1 = b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()
    dx, dy = (x1 - x0) * margin, (y1 - y0) * margin
    x0, y0 = int(max(0.0, x0 - dx)), int(max(0.0, y0 - dy))
    x1, y1 = int(min(width, x1 + dx)), int(min(height, y1 + dy))
    x1, y1 = x1 - (x1 - x0) % 2, y1 - (y1 - y0) % 2
    if x1 - x0 < 16 or y1 - y0 < 16 or (x1 - x0) * (y1 - y0) > most * width * height:
        return None
    return x0, y0, x1, y1


def _point(keypoint) -> tuple[int, int]:
    return int(round(float(keypoint[0]))), int(round(float(keypoint[1])))


def side_by_side(left: np.ndarray, right: np.ndarray, height: int | None = None,
                 captions: tuple[str, str] = ("", "")) -> np.ndarray:
    """Two RGB frames scaled to one height (default: the left's) next to each other, captioned.
    The width is rounded up to an even number of pixels (video encoders need it)."""
    height = height or left.shape[0]
    height += height % 2
    panels = []
    for frame, caption in zip((left, right), captions):
        width = max(2, int(round(frame.shape[1] * height / frame.shape[0])))
        panel = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
        panels.append(captioned(panel, caption) if caption else panel)
    out = np.concatenate(panels, axis=1)
    if out.shape[1] % 2:
        out = np.pad(out, ((0, 0), (0, 1), (0, 0)))
    return out


def captioned(frame: np.ndarray, caption: str, scale: float = 0.7) -> np.ndarray:
    """``frame`` with ``caption`` written in its top-left corner (white on a black outline), in place."""
    y = int(34 * scale)
    cv2.putText(frame, caption, (8, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(frame, caption, (8, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return frame


def plot_rep_scores(path: str | Path, scores, threshold: float = SCORE_THRESHOLD, title: str = "") -> Path:
    """PNG: one bar per repetition (its score), red under ``threshold``, the threshold dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = list(scores)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(scores) + 2), 3.2), dpi=100)
    numbers = range(1, len(scores) + 1)
    ax.bar(numbers, scores, color=["#d62728" if s < threshold else "#2ca02c" for s in scores])
    ax.axhline(threshold, color="grey", linestyle="--", linewidth=1)
    for n, s in zip(numbers, scores):
        ax.text(n, s + 1, f"{s:.0f}", ha="center", fontsize=9)
    ax.set(xlabel="repetition", ylabel="score", ylim=(0, 105), xticks=list(numbers), title=title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def person_thumbnail(frame: np.ndarray, box, caption: str, width: int = 360) -> np.ndarray:
    """``frame`` (RGB) scaled to ``width`` pixels wide with ``box`` (x0, y0, x1, y1 pixels of the
    frame) drawn around the person followed, and ``caption`` written: whom a report follows."""
    scale = width / frame.shape[1]
    small = cv2.resize(frame, (width, max(2, int(round(frame.shape[0] * scale)))), interpolation=cv2.INTER_AREA)
    x0, y0, x1, y1 = (int(round(float(v) * scale)) for v in box)
    cv2.rectangle(small, (x0, y0), (x1, y1), (0, 0, 0), 4, cv2.LINE_AA)
    cv2.rectangle(small, (x0, y0), (x1, y1), (255, 214, 0), 2, cv2.LINE_AA)
    return captioned(small, caption, 0.55)


def write_image(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB image (PNG/JPEG by extension)."""
    path = Path(path)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: could not write the image")
    return path


def plot_scores(path: str | Path, times, scores, path_pairs, threshold: float = SCORE_THRESHOLD,
                title: str = "") -> Path:
    """PNG: the score of each aligned step over the reference's time (top) and the warping path
    (bottom, reference frame vs attempt frame)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), gridspec_kw={"height_ratios": [1, 1.2]})
    top.plot(times, scores, lw=1.2, color="tab:blue")
    top.axhline(threshold, color="tab:red", lw=0.8, ls="--", label=f"threshold {threshold:g}")
    top.set_ylim(0, 101)
    top.set_xlabel("reference time (s)")
    top.set_ylabel("step score (mean of its parts)")
    top.legend(loc="lower right")
    top.set_title(title)
    pairs = np.asarray(path_pairs)
    bottom.plot(pairs[:, 0], pairs[:, 1], lw=1.2, color="tab:green")
    bottom.set_xlabel("reference frame")
    bottom.set_ylabel("attempt frame")
    bottom.set_title("warping path")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


__all__ = ["PART_NAMES", "draw_skeleton", "limb_colours", "plot_scores", "red_limbs", "side_by_side",
           "write_image"]
