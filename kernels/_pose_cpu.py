"""The per-pose kernels on the CPU: numba loops, parallel over poses, one pass over the data each,
over the cells of kernels._pose_cells (which the GPU kernels share). Arrays are C-contiguous and
checked by the public functions; scratch buffers are allocated inside the loops, where numba
hoists them out (one per thread's chunk)."""

import numba
import numpy as np
from numba import prange

from . import _pose_cells as cells
from .skeleton import FLIP_PERMUTATION, NUM_KEYPOINTS, NUM_PARTS

_jit = numba.njit(cache=True, nogil=True, inline="always")
normalize_cell = _jit(cells.normalize_cell)
pose_distance_cell = _jit(cells.pose_distance_cell)
score_cell = _jit(cells.score_cell)
terms_cell = _jit(cells.terms_cell)
wrapped_abs = _jit(cells.wrapped_abs)
parts_cell = _jit(cells.parts_cell)

_FLIP = np.asarray(FLIP_PERMUTATION, np.int64)


@numba.njit(cache=True, nogil=True, parallel=True)
def normalize_all(poses, torso, min_confidence, min_torso_share, vectors, weights):
    """Fill ``vectors [N, 34]`` and ``weights [N, 17]`` from ``poses [N, 17, 3]``; returns how many
    poses could be normalized."""
    usable = 0
    for i in prange(poses.shape[0]):
        if normalize_cell(poses[i], torso, min_confidence, min_torso_share, vectors[i], weights[i]):
            usable += 1
    return usable


@numba.njit(cache=True, nogil=True, parallel=True)
def pose_scores_all(qv, qw, mqv, mqw, vectors, weights, metric, scale, mirror, scores, mirrored):
    """``scores [N]`` (float32 0-100) of N poses against the query, and with ``mirror`` the better of
    the query and its mirror image ``mqv``, ``mqw`` (``mirrored [N]``: the mirror image scored
    strictly higher)."""
    for i in prange(vectors.shape[0]):
        d, shared = pose_distance_cell(qv, qw, vectors[i], weights[i], metric)
        s = score_cell(d, scale) if shared else np.float32(0.0)
        flipped = False
        if mirror:
            md, mshared = pose_distance_cell(mqv, mqw, vectors[i], weights[i], metric)
            ms = score_cell(md, scale) if mshared else np.float32(0.0)
            if ms > s:
                s, flipped = ms, True
        scores[i] = s
        mirrored[i] = flipped


@numba.njit(cache=True, nogil=True)
def query_terms(qv, qw, terms):
    """``(angles [terms], weights [terms])`` float32 of one normalized pose."""
    angles = np.empty(terms.shape[0], np.float32)
    tw = np.empty(terms.shape[0], np.float32)
    terms_cell(qv, qw, terms, angles, tw)
    return angles, tw


@numba.njit(cache=True, nogil=True, parallel=True)
def part_scores_all(q_angles, q_tw, mq_angles, mq_tw, vectors, weights, terms, offsets, scale, mode, pick,
                    scores, valid):
    """Part scores ``[N, 6]`` and their valid mask of N poses against the query's terms. ``mode``:
    0 the query, 1 per pose the orientation with the better mean part score (the mirror image's
    terms ``mq_*``), 2 the orientation ``pick [N]`` says (True: the mirror image)."""
    for i in prange(vectors.shape[0]):
        angles = np.empty(terms.shape[0], np.float32)
        tw = np.empty(terms.shape[0], np.float32)
        other = np.empty(NUM_PARTS, np.float32)
        other_valid = np.empty(NUM_PARTS, np.bool_)
        terms_cell(vectors[i], weights[i], terms, angles, tw)
        if mode == 2 and pick[i]:
            parts_cell(mq_angles, mq_tw, angles, tw, offsets, scale, scores[i], valid[i])
        else:
            mean = parts_cell(q_angles, q_tw, angles, tw, offsets, scale, scores[i], valid[i])
            if mode == 1:
                mirror_mean = parts_cell(mq_angles, mq_tw, angles, tw, offsets, scale, other, other_valid)
                if mirror_mean > mean:
                    for p in range(NUM_PARTS):
                        scores[i, p] = other[p]
                        valid[i, p] = other_valid[p]


@numba.njit(cache=True, nogil=True, parallel=True)
def terms_all(vectors, weights, terms, angles, tw):
    """The part terms ``angles [N, terms]``, ``tw [N, terms]`` of N normalized poses."""
    for i in prange(vectors.shape[0]):
        terms_cell(vectors[i], weights[i], terms, angles[i], tw[i])


@numba.njit(cache=True, nogil=True, parallel=True)
def aligned_parts_all(angles_a, tw_a, angles_b, tw_b, path, offsets, scale, scores, valid):
    """Part scores ``[L, 6]`` of ``a[i]`` against ``b[j]`` for each step ``(i, j)`` of ``path``, from
    each sequence's terms (computed once per pose)."""
    for n in prange(path.shape[0]):
        parts_cell(angles_a[path[n, 0]], tw_a[path[n, 0]], angles_b[path[n, 1]], tw_b[path[n, 1]], offsets,
                   scale, scores[n], valid[n])


@numba.njit(cache=True, nogil=True, parallel=True)
def mirror_all(vectors, weights, out_vectors, out_weights):
    """Mirror images of N normalized poses: keypoints swapped left/right, x negated."""
    for i in prange(vectors.shape[0]):
        for k in range(NUM_KEYPOINTS):
            src = _FLIP[k]
            out_vectors[i, 2 * k] = -vectors[i, 2 * src]
            out_vectors[i, 2 * k + 1] = vectors[i, 2 * src + 1]
            out_weights[i, k] = weights[i, src]


@numba.njit(cache=True, nogil=True, parallel=True)
def interpolate_all(poses, factor, min_confidence, out):
    """``out [(T-1)*factor+1, 17, 3]``: the frames of ``poses [T, 17, 3]`` at every ``factor``-th
    sample and linear in between; a keypoint missing at either end of an interval is zero inside."""
    T = poses.shape[0]
    for n in prange(out.shape[0]):
        t, r = n // factor, n % factor
        if r == 0:
            for k in range(NUM_KEYPOINTS):
                for d in range(3):
                    out[n, k, d] = poses[t, k, d]
            continue
        frac = np.float32(r) / np.float32(factor)
        for k in range(NUM_KEYPOINTS):
            both = True
            for s in (t, t + 1):
                x, y, c = poses[s, k, 0], poses[s, k, 1], poses[s, k, 2]
                if not (c > min_confidence and np.isfinite(x) and np.isfinite(y) and np.isfinite(c)):
                    both = False
            for d in range(3):
                out[n, k, d] = (poses[t, k, d] * (np.float32(1.0) - frac) + poses[t + 1, k, d] * frac
                                if both else np.float32(0.0))
    return T
