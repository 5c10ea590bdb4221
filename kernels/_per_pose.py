"""Launchers of the fused per-pose kernels: the numba CPU loops of kernels._pose_cells for NumPy
arrays, the numba-CUDA kernels of kernels._cuda_kernels for CuPy arrays, both over the cells of
kernels._pose_cells (imported on first use: importing kernels._scoring costs no numba). Inputs
are checked, C-contiguous float32 (the public functions in kernels._normalize and kernels._scoring
see to it); outputs are allocated here, on the inputs' backend. ``gpu=True`` with NumPy arrays
runs the CUDA kernels in numba's simulator (tests)."""

from __future__ import annotations

import numpy as np

from posescore.kernels._backend import array_module
from posescore.kernels.skeleton import NUM_KEYPOINTS, NUM_PARTS


def _cells():
    from posescore.kernels import _pose_cells

    return _pose_cells


def _cuda():
    from posescore.kernels import _cuda_kernels

    return _cuda_kernels


def _on_gpu(xp, gpu):
    return xp is not np if gpu is None else gpu


def _run(cpu_loop: str, cuda_kernel: str, n: int, args: tuple, on_gpu: bool) -> None:
    """``kernels._pose_cells.<cpu_loop>(*args)``, or the CUDA kernel over ``n`` items."""
    if on_gpu:
        ck = _cuda()
        ck.launch_per_pose(getattr(ck, cuda_kernel), n, *args)
    else:
        getattr(_cells(), cpu_loop)(*args)


def normalize_poses(poses, torso: bool, min_confidence: float, min_torso_share: float, gpu=None):
    """``(vectors [N, 34], weights [N, 17], usable count)`` of ``poses [N, 17, 3]``."""
    cells = _cells()
    xp = array_module(poses)
    n = poses.shape[0]
    vectors = xp.empty((n, 2 * NUM_KEYPOINTS), xp.float32)
    weights = xp.empty((n, NUM_KEYPOINTS), xp.float32)
    args = (bool(torso), np.float32(min_confidence), np.float32(min_torso_share), vectors, weights)
    if not _on_gpu(xp, gpu):
        return vectors, weights, int(cells.normalize_all(poses, *args))
    usable = xp.empty(n, dtype=bool)
    ck = _cuda()
    ck.launch_per_pose(ck.normalize_poses, n, poses, *args, usable)
    return vectors, weights, int(usable.sum())


def pose_scores(qv, qw, mqv, mqw, query_index, vectors, weights, metric: str, scale: float, mirror: bool, gpu=None):
    """``(scores [N] float32, mirrored [N] bool)`` of N normalized poses each against its query
    (rows of ``qv [Q, 34]``, ``qw [Q, 17]``; ``query_index [N]`` int64, or ``[1]`` for one query)
    and, with ``mirror``, its mirror image ``mqv``, ``mqw``."""
    cells = _cells()
    xp = array_module(vectors)
    n = vectors.shape[0]
    scores = xp.empty(n, xp.float32)
    mirrored = xp.empty(n, dtype=bool)
    args = (qv, qw, mqv, mqw, query_index, vectors, weights, np.int64(cells.METRIC_CODES[metric]), np.float32(scale),
            bool(mirror), scores, mirrored)
    _run("pose_scores_all", "pose_scores_kernel", n, args, _on_gpu(xp, gpu))
    return scores, mirrored


def pose_terms(vectors, weights, gpu=None):
    """Part terms ``(angles [N, terms], weights [N, terms])`` float32 of N normalized poses."""
    cells = _cells()
    xp = array_module(vectors)
    n = vectors.shape[0]
    terms = xp.asarray(cells.TERMS)
    angles = xp.empty((n, cells.NUM_TERMS), xp.float32)
    tw = xp.empty((n, cells.NUM_TERMS), xp.float32)
    _run("terms_all", "terms_kernel", n, (vectors, weights, terms, angles, tw), _on_gpu(xp, gpu))
    return angles, tw


def part_scores(query_terms, mirror_terms, query_index, vectors, weights, scale: float, mode: int, pick, gpu=None):
    """``(scores [N, 6] float32, valid [N, 6] bool)`` of N normalized poses each against its query's
    terms (:func:`pose_terms` of the queries ``[Q, terms]`` and of their mirror images; rows by
    ``query_index``, as :func:`pose_scores`). ``mode`` 0: the query; 1: per pose
    the orientation with the better mean part score; 2: the mirror image where ``pick [N]``."""
    cells = _cells()
    xp = array_module(vectors)
    n = vectors.shape[0]
    scores = xp.empty((n, NUM_PARTS), xp.float32)
    valid = xp.empty((n, NUM_PARTS), dtype=bool)
    args = (*query_terms, *mirror_terms, query_index, vectors, weights, xp.asarray(cells.TERMS),
            xp.asarray(cells.TERM_OFFSETS),
            np.float32(scale), np.int64(mode), pick, scores, valid)
    _run("part_scores_all", "part_scores_kernel", n, args, _on_gpu(xp, gpu))
    return scores, valid


def aligned_part_scores(terms_a, terms_b, path, scale: float, gpu=None):
    """``(scores [L, 6] float32, valid [L, 6] bool)`` of pose ``a[i]`` against ``b[j]`` for each step
    ``(i, j)`` of ``path [L, 2]`` int64, from both sequences' terms (:func:`pose_terms`)."""
    cells = _cells()
    xp = array_module(path)
    n = path.shape[0]
    scores = xp.empty((n, NUM_PARTS), xp.float32)
    valid = xp.empty((n, NUM_PARTS), dtype=bool)
    args = (*terms_a, *terms_b, path, xp.asarray(cells.TERM_OFFSETS), np.float32(scale), scores, valid)
    if n:
        _run("aligned_parts_all", "aligned_parts_kernel", n, args, _on_gpu(xp, gpu))
    return scores, valid
