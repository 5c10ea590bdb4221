"""Pre- and post-processing of the YOLO11n-pose ONNX model, as array functions.

``letterbox`` turns uint8 RGB frames into the model's input, the way ultralytics' predictor does
(``LetterBox(auto=True)``: keep the aspect ratio, pad to a multiple of the stride with grey 114);
``decode_poses`` turns the raw output ``[B, 56, anchors]`` into people, the way ultralytics'
``non_max_suppression`` + ``scale_boxes`` / ``scale_coords`` do for the pose task (one class,
score threshold, greedy NMS, mapped back to the original pixels and clipped to the frame).

The model itself runs elsewhere (Triton, or onnxruntime in tests): nothing here reads files.
"""

from __future__ import annotations

import numba
import numpy as np

from posescore.kernels._backend import array_module, check_array, check_int, check_number, to_numpy
from posescore.kernels.skeleton import NUM_KEYPOINTS

#: Rows of the raw model output: box cx, cy, w, h, person score, then 17 x (x, y, confidence).
OUTPUT_ROWS = 5 + 3 * NUM_KEYPOINTS
#: The pose model's defaults (YOLO11n-pose as ultralytics predicts): input side in pixels, the least
#: person confidence kept, the IoU over which NMS drops a box, and the most people kept a frame.
#: model_repository/pose/config.pbtxt sets the served values.
DETECT_IMAGE_SIZE = 640
DETECT_CONFIDENCE = 0.25
DETECT_IOU = 0.7
DETECT_MAX_PEOPLE = 20
#: Grey level of the letterbox border (ultralytics' ``padding_value``).
PAD_VALUE = 114
#: At most this many candidates (best scores first) enter NMS, as ultralytics' ``max_nms``.
MAX_NMS = 30000


# --------------------------------------------------------------------------------------------
# letterbox


def letterbox_geometry(height: int, width: int, size: int = DETECT_IMAGE_SIZE, stride: int = 32):
    """ultralytics' ``LetterBox(new_shape=size, auto=True, stride=stride)`` geometry for one frame.

    Returns ``(gain, (new_h, new_w), (top, bottom, left, right))``: the scale ratio, the resized
    size, and the border on each side; the letterboxed image is ``new_h + top + bottom`` by
    ``new_w + left + right``. Python's ``round`` (half to even) as in ultralytics.
    """
    r = min(size / height, size / width)
    new_w, new_h = max(round(width * r), 1), max(round(height * r), 1)
    dw, dh = (size - new_w) % stride / 2, (size - new_h) % stride / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return r, (new_h, new_w), (top, bottom, left, right)


def _source_taps(n_src: int, n_dst: int, clamp_fraction: bool):
    """cv2.INTER_LINEAR taps along one axis, bit for bit as OpenCV computes them for uint8.

    Returns ``(i0, i1, w0, w1)`` int32 ``[n_dst]``: source indices and 11-bit fixed-point
    weights (``w0 + w1 == 2048``). Half-pixel centres ``src = (dst + 0.5) * n_src / n_dst - 0.5``
    in float32 like OpenCV. Across (``clamp_fraction``) a tap left of pixel 0 or right of the
    last pixel takes that edge pixel with weight 2048; down, OpenCV clamps the row indices but
    keeps the fraction (both rows are the edge row then), and so do these taps.
    """
    scale = 1.0 / (n_dst / n_src)
    f = ((np.arange(n_dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(f)
    frac = (f - i0).astype(np.float32)
    i0 = i0.astype(np.int64)
    if clamp_fraction:
        low, high = i0 < 0, i0 >= n_src - 1
        frac[low | high] = 0
        i0[low] = 0
        i0[high] = n_src - 1
    i1 = np.clip(i0 + 1, 0, n_src - 1).astype(np.int32)
    i0 = np.clip(i0, 0, n_src - 1).astype(np.int32)
    w0 = np.rint((np.float32(1) - frac) * np.float32(2048)).astype(np.int32)
    w1 = np.rint(frac * np.float32(2048)).astype(np.int32)
    return i0, i1, w0, w1


@numba.njit(cache=True, parallel=True, nogil=True)
def _letterbox_cpu(frames, y0, y1, wy0, wy1, x0, x1, wx0, wx1, top, left, out):
    """Resize (cv2's fixed-point bilinear) + pad + HWC->CHW + /255; one output row per step."""
    B = frames.shape[0]
    h = out.shape[2]
    w = out.shape[3]
    new_h = y0.shape[0]
    new_w = x0.shape[0]
    scale = np.float32(255.0)
    pad = np.float32(PAD_VALUE) / scale
    for row in numba.prange(B * h):
        b = row // h
        y = row - b * h
        yy = y - top
        if yy < 0 or yy >= new_h:
            for c in range(3):
                for x in range(w):
                    out[b, c, y, x] = pad
            continue
        r0 = y0[yy]
        r1 = y1[yy]
        b0 = np.int32(wy0[yy])
        b1 = np.int32(wy1[yy])
        for x in range(w):
            xx = x - left
            if xx < 0 or xx >= new_w:
                for c in range(3):
                    out[b, c, y, x] = pad
                continue
            c0 = x0[xx]
            c1 = x1[xx]
            a0 = np.int32(wx0[xx])
            a1 = np.int32(wx1[xx])
            for c in range(3):
                s0 = np.int32(frames[b, r0, c0, c]) * a0 + np.int32(frames[b, r0, c1, c]) * a1
                s1 = np.int32(frames[b, r1, c0, c]) * a0 + np.int32(frames[b, r1, c1, c]) * a1
                v = (((b0 * (s0 >> 4)) >> 16) + ((b1 * (s1 >> 4)) >> 16) + 2) >> 2
                out[b, c, y, x] = np.float32(v) / scale


# One thread per output value; the same integer arithmetic as _letterbox_cpu.
_GPU_LETTERBOX_SOURCE = r"""
long long k = i;
const int x = (int)(k % w); k /= w;
const int y = (int)(k % h); k /= h;
const int c = (int)(k % 3);
const long long b = k / 3;
const int yy = y - top, xx = x - left;
int v = PAD_VALUE;
if (yy >= 0 && yy < new_h && xx >= 0 && xx < new_w) {
    const long long row0 = (b * H + sy0[yy]) * W, row1 = (b * H + sy1[yy]) * W;
    const int c0 = sx0[xx], c1 = sx1[xx], a0 = ax0[xx], a1 = ax1[xx];
    const int s0 = (int)frames[(row0 + c0) * 3 + c] * a0 + (int)frames[(row0 + c1) * 3 + c] * a1;
    const int s1 = (int)frames[(row1 + c0) * 3 + c] * a0 + (int)frames[(row1 + c1) * 3 + c] * a1;
    v = (((by0[yy] * (s0 >> 4)) >> 16) + ((by1[yy] * (s1 >> 4)) >> 16) + 2) >> 2;
}
out = (float)v / 255.0f;
""".replace("PAD_VALUE", str(PAD_VALUE))

_gpu_letterbox_kernel = None


def _letterbox_gpu(cp, frames, taps, top, left, h, w):
    global _gpu_letterbox_kernel
    if _gpu_letterbox_kernel is None:
        _gpu_letterbox_kernel = cp.ElementwiseKernel(
            "raw uint8 frames, raw int32 sy0, raw int32 sy1, raw int32 by0, raw int32 by1, "
            "raw int32 sx0, raw int32 sx1, raw int32 ax0, raw int32 ax1, "
            "int32 H, int32 W, int32 new_h, int32 new_w, int32 top, int32 left, int32 h, int32 w",
            "float32 out",
            _GPU_LETTERBOX_SOURCE,
            "posescore_letterbox",
        )
    B, H, W, _ = frames.shape
    out = cp.empty((B, 3, h, w), dtype=cp.float32)
    i32 = np.int32
    taps = [cp.asarray(t) for t in taps]
    _gpu_letterbox_kernel(frames, *taps, i32(H), i32(W), i32(taps[0].shape[0]),
                          i32(taps[4].shape[0]), i32(top), i32(left), i32(h), i32(w), out)
    return out


def letterbox(frames, size: int = DETECT_IMAGE_SIZE, stride: int = 32):
    """Letterbox uint8 RGB frames ``[B, H, W, 3]`` (all of one size) for the pose model.

    Returns ``(images [B, 3, h, w] float32 RGB in 0..1, gains [B] float32, pads [B, 2] float32)``
    on the input's backend. ``(h, w)`` is ultralytics' minimal-rectangle letterbox of its
    predictor (``LetterBox(new_shape=size, auto=True, stride=stride)``): the frame is scaled by
    ``gain = min(size / H, size / W)`` to ``(round(H * gain), round(W * gain))`` with bilinear
    interpolation in ``cv2.INTER_LINEAR``'s own 11-bit fixed-point arithmetic for uint8
    (half-pixel centres, no antialiasing), so the images equal the predictor's bit for bit, then
    padded with grey 114 to multiples of ``stride``, the border split between the two sides.
    ``pads`` holds the ``(left, top)`` border in pixels. E.g. 1080x810 gives 640x480 and
    720x1280 gives 384x640 (pads (0, 12)).
    """
    size = check_int(size, "size")
    stride = check_int(stride, "stride")
    xp = array_module(frames)
    dtype = getattr(frames, "dtype", None)
    if dtype is None:
        frames = np.asarray(frames)
        dtype = frames.dtype
    if dtype != np.uint8:
        raise TypeError(f"frames: expected uint8 RGB frames [B, H, W, 3], got dtype {dtype}")
    shape = tuple(frames.shape)
    if len(shape) == 3 and shape[-1] == 3:
        raise ValueError(f"frames: expected 4 axes [B, H, W, 3], got shape {list(shape)}; "
                         f"add a batch axis with frames[None]")
    if len(shape) == 4 and shape[-1] == 3 and (shape[1] == 0 or shape[2] == 0):
        raise ValueError(f"frames: expected frames of at least 1x1 pixels, got "
                         f"{shape[1]}x{shape[2]} (shape {list(shape)})")
    frames = check_array(frames, "frames", trailing=(None, None, 3), ndim=(4, 4), xp=xp,
                         dtype=np.uint8)
    B, H, W, _ = frames.shape
    gain, (new_h, new_w), (top, bottom, left, right) = letterbox_geometry(H, W, size, stride)
    h, w = new_h + top + bottom, new_w + left + right
    taps = _source_taps(H, new_h, False) + _source_taps(W, new_w, True)
    if xp is np:
        images = np.empty((B, 3, h, w), dtype=np.float32)
        _letterbox_cpu(frames, *taps, top, left, images)
    else:
        images = _letterbox_gpu(xp, frames, taps, top, left, h, w)
    gains = xp.full((B,), gain, dtype=xp.float32)
    pads = xp.empty((B, 2), dtype=xp.float32)
    pads[:, 0] = left
    pads[:, 1] = top
    return images, gains, pads


# --------------------------------------------------------------------------------------------
# decode


@numba.njit(cache=True, nogil=True)
def _greedy_nms(boxes, counts, iou, max_keep, keep, kept):
    """Greedy NMS per frame over score-sorted xyxy ``boxes [B, N, 4]`` (the first ``counts[b]``
    valid): a box is kept unless an already kept one overlaps it with IoU > ``iou``; stops after
    ``max_keep``. Writes positions into ``keep [B, max_keep]`` and their number into ``kept [B]``.
    IoU as torchvision computes it, in float32; a zero union counts as no overlap."""
    zero = np.float32(0.0)
    for b in range(boxes.shape[0]):  # a few hundred boxes a frame: threads would cost more
        n = counts[b]
        suppressed = np.zeros(n, dtype=np.bool_)
        k = 0
        for i in range(n):
            if suppressed[i]:
                continue
            keep[b, k] = i
            k += 1
            if k == max_keep:
                break
            ax1 = boxes[b, i, 0]
            ay1 = boxes[b, i, 1]
            ax2 = boxes[b, i, 2]
            ay2 = boxes[b, i, 3]
            area_a = (ax2 - ax1) * (ay2 - ay1)
            for j in range(i + 1, n):
                if suppressed[j]:
                    continue
                bx1 = boxes[b, j, 0]
                by1 = boxes[b, j, 1]
                bx2 = boxes[b, j, 2]
                by2 = boxes[b, j, 3]
                iw = max(min(ax2, bx2) - max(ax1, bx1), zero)
                ih = max(min(ay2, by2) - max(ay1, by1), zero)
                inter = iw * ih
                union = area_a + (bx2 - bx1) * (by2 - by1) - inter
                if union > zero and inter / union > iou:
                    suppressed[j] = True
        kept[b] = k


def _check_finite(xp, values, what: str):
    if not bool(xp.isfinite(values).all()):
        raise ValueError(f"output: contains NaN or infinity in the {what}")


def _check_batch(x, name: str, B: int, want: str):
    if x.shape[0] != B:
        raise ValueError(f"{name}: expected shape {want} with B = {B} (the batch of output), "
                         f"got shape {list(x.shape)}")


def decode_poses(output, gains, pads, image_shapes, conf: float = DETECT_CONFIDENCE, iou: float = DETECT_IOU,
                 max_people: int = DETECT_MAX_PEOPLE):
    """Decode raw YOLO11n-pose output ``[B, 56, A]`` float32 into people per frame.

    ``output`` rows: box cx, cy, w, h and 17 x (x, y, confidence) keypoints in letterboxed
    pixels, row 4 the person score (the exported model's keypoint confidences are already
    sigmoid-ed, its score is a probability). ``gains [B]`` and ``pads [B, 2]`` (left, top) are
    what :func:`letterbox` returned; ``image_shapes [B, 2]`` int is each original frame's (H, W).

    Like ultralytics' pose predictor (``non_max_suppression`` with one class, then
    ``scale_boxes`` / ``scale_coords``): anchors with score > ``conf``, best first, greedy NMS
    dropping boxes with IoU > ``iou`` against a kept one, at most ``max_people`` kept; x, y map
    back with ``(v - pad) / scale`` where the scale per axis is ``round(W * gain) / W`` and
    ``round(H * gain) / H`` (the letterbox's real resize), clipped to ``[0, W]`` / ``[0, H]``.

    NaN or infinity in the scores, in a candidate's box or in a detected person's row raises
    ValueError; the rest of the output is not scanned (that would cost more than decoding).

    Returns ``(keypoints [B, max_people, 17, 3] float32 (x, y, confidence),
    boxes [B, max_people, 4] float32 xyxy, scores [B, max_people] float32, counts [B] int32)`` on
    the input's backend, people sorted by score; rows past ``counts[b]`` are zeros.
    """
    conf = check_number(conf, "conf", above=0.0, maximum=1.0)
    iou = check_number(iou, "iou", above=0.0, maximum=1.0)
    max_people = check_int(max_people, "max_people")
    xp = array_module(output, gains, pads, image_shapes)
    # NaN / infinity is looked for where it matters (see the docstring), not everywhere.
    output = check_array(output, "output", trailing=(OUTPUT_ROWS, None), ndim=(3, 3), xp=xp,
                         allow_nan=True)
    B = output.shape[0]
    gains = check_array(gains, "gains", ndim=(1, 1), xp=xp)
    _check_batch(gains, "gains", B, "[B]")
    if not bool((gains > 0).all()):
        raise ValueError("gains: expected scale ratios > 0 (as letterbox returns them)")
    pads = check_array(pads, "pads", trailing=(2,), ndim=(2, 2), xp=xp)
    _check_batch(pads, "pads", B, "[B, 2]")
    if not hasattr(image_shapes, "dtype"):
        image_shapes = np.asarray(image_shapes)
    if image_shapes.dtype.kind not in "iu":
        raise TypeError(f"image_shapes: expected integer (H, W) pairs, got dtype "
                        f"{image_shapes.dtype}")
    image_shapes = check_array(image_shapes, "image_shapes", trailing=(2,), ndim=(2, 2), xp=xp,
                               dtype=np.int64)
    _check_batch(image_shapes, "image_shapes", B, "[B, 2]")
    if not bool((image_shapes >= 1).all()):
        raise ValueError("image_shapes: expected frames of at least 1x1 pixels, got "
                         f"{to_numpy(image_shapes).tolist()}")

    # Candidates, best score first (a stable sort, so ties keep the anchor order).
    scores = output[:, 4, :]
    _check_finite(xp, scores, "person scores (row 4)")
    candidate = scores > conf
    counts = candidate.sum(axis=1)
    n = min(int(counts.max()), MAX_NMS)
    keypoints = xp.zeros((B, max_people, NUM_KEYPOINTS, 3), dtype=xp.float32)
    boxes = xp.zeros((B, max_people, 4), dtype=xp.float32)
    best = xp.zeros((B, max_people), dtype=xp.float32)
    if n == 0:
        return keypoints, boxes, best, xp.zeros((B,), dtype=xp.int32)
    key = xp.where(candidate, -scores, xp.float32(np.inf))
    order = (xp.argsort(key, axis=1) if xp is not np else np.argsort(key, axis=1, kind="stable"))
    order = order[:, :n]  # anchors [B, n]
    cand = xp.take_along_axis(output[:, :4, :], xp.broadcast_to(order[:, None, :], (B, 4, n)),
                              axis=2)  # cx, cy, w, h [B, 4, n]
    in_frame = xp.arange(n)[None, :] < counts[:, None]  # [B, n]: a candidate of this frame
    _check_finite(xp, xp.where(in_frame[:, None, :], cand, 0), "boxes of anchors above conf")
    half = cand[:, 2:4] / 2
    xyxy = xp.concatenate([cand[:, 0:2] - half, cand[:, 0:2] + half], axis=1).transpose(0, 2, 1)

    # Greedy pass on the host over the (few) sorted candidate boxes.
    keep = np.zeros((B, max_people), dtype=np.int64)
    kept = np.zeros((B,), dtype=np.int32)
    host_counts = np.minimum(to_numpy(counts), n).astype(np.int64)
    _greedy_nms(np.ascontiguousarray(to_numpy(xyxy)), host_counts, iou, max_people, keep, kept)
    if xp is not np:
        keep, kept = xp.asarray(keep), xp.asarray(kept)

    # Gather the kept people, map back to the original pixels, zero the padding rows.
    valid = xp.arange(max_people)[None, :] < kept[:, None]  # [B, M]
    anchors = xp.take_along_axis(order, keep, axis=1)  # [B, M]
    columns = xp.broadcast_to(anchors[:, None, :], (B, OUTPUT_ROWS, max_people))
    people = xp.take_along_axis(output, columns, axis=2).transpose(0, 2, 1)  # [B, M, 56]
    _check_finite(xp, xp.where(valid[:, :, None], people, 0), "keypoints of detected people")
    rows = xp.take_along_axis(xyxy, xp.broadcast_to(keep[:, :, None], (B, max_people, 4)), axis=1)
    H = image_shapes[:, 0].astype(xp.float64)
    W = image_shapes[:, 1].astype(xp.float64)
    g = gains.astype(xp.float64)
    scale_x = (xp.maximum(xp.round(W * g), 1.0) / W).astype(xp.float32)[:, None]
    scale_y = (xp.maximum(xp.round(H * g), 1.0) / H).astype(xp.float32)[:, None]
    pad_x, pad_y = pads[:, 0:1], pads[:, 1:2]
    Wf, Hf = W.astype(xp.float32)[:, None], H.astype(xp.float32)[:, None]

    def back(v, pad, scale, limit):  # letterboxed pixels -> original pixels, clipped to the frame
        return xp.minimum(xp.maximum((v - pad) / scale, xp.float32(0)), limit)

    kx = back(people[:, :, 5::3], pad_x[:, :, None], scale_x[:, :, None], Wf[:, :, None])
    ky = back(people[:, :, 6::3], pad_y[:, :, None], scale_y[:, :, None], Hf[:, :, None])
    keypoints = xp.stack([kx, ky, people[:, :, 7::3]], axis=-1)
    boxes = xp.stack([back(rows[:, :, 0], pad_x, scale_x, Wf),
                      back(rows[:, :, 1], pad_y, scale_y, Hf),
                      back(rows[:, :, 2], pad_x, scale_x, Wf),
                      back(rows[:, :, 3], pad_y, scale_y, Hf)], axis=-1)
    best = people[:, :, 4]
    keypoints = xp.where(valid[:, :, None, None], keypoints, xp.float32(0))
    boxes = xp.where(valid[:, :, None], boxes, xp.float32(0))
    best = xp.where(valid, best, xp.float32(0))
    return (keypoints.astype(xp.float32, copy=False), boxes.astype(xp.float32, copy=False),
            best.astype(xp.float32, copy=False), kept.astype(xp.int32, copy=False))
