"""Exact top-k nearest-neighbour search over pose vectors, in bounded memory.

CPU: the base is read in chunks; each chunk is one BLAS GEMM against all queries and a numba
selection that keeps a sorted top-k per query, a heap for a large k (most candidates cost one
comparison). GPU: a fused numba-CUDA kernel computes each product and keeps a per-thread top-k in
registers, so no [Q, N] matrix is ever written; each block merges its threads' lists in shared
memory and writes k candidates, which CuPy then merges. A larger k (or D) on the GPU: a CuPy
GEMM per chunk and a partition-based selection.

Float16 bases, rows or tiles (an archive's vectors), are read in place by the kernels of
kernels._tiles.
"""

from __future__ import annotations

import numba
import numpy as np

from posescore.kernels._backend import (array_module, check_array, check_int, is_gpu_array, parallel_map,
                                        single_threaded_blas)
from posescore.kernels._tiles import (TILE_ROWS, from_tiles, half_products, half_to_float, prefetch_tile, tile_dot,
                                      tile_products)
from posescore.kernels._topk import insert_sorted as _insert_sorted_py

SEARCH_METRICS = ("ip", "l2")
#: Bytes of the [Q, chunk] products on the CPU: small enough to stay in cache for the selection.
CHUNK_BYTES = 4 << 20
insert_sorted = numba.njit(cache=True, nogil=True, inline="always")(_insert_sorted_py)


#: Up to this many queries, a float16 base's products come straight from its bits (one pass, no
#: float32 copy); more queries convert each chunk once and run a GEMM.
HALF_PRODUCTS_MAX_QUERIES = 8
#: Rows of a float16 base per chunk of products (their keys, 256 KiB, stay in L2 for the selection).
HALF_CHUNK_ROWS = 65536
#: From this k on, a thread's running top-k is a binary heap (O(log k) per insertion), below it a
#: sorted list (O(k), fewer branches): the two ran as fast near this k, the heap faster beyond
#: (timings in docs/BENCHMARKS.md).
HEAP_FROM_K = 384


@numba.njit(cache=True, nogil=True, inline="always")
def _worse(key_a, idx_a, key_b, idx_b):
    """The top-k's order: a larger key is better; of equal keys, the lower index."""
    return key_a < key_b or (key_a == key_b and idx_a > idx_b)


@numba.njit(cache=True, nogil=True, inline="always")
def _heap_replace_worst(keys, idx, k, value, index):
    """Replace the root of the heap ``keys[:k]`` / ``idx[:k]`` (its worst entry, by :func:`_worse`)
    with ``value`` / ``index`` and sift it down. Returns the new worst key."""
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= k:
            break
        if child + 1 < k and _worse(keys[child + 1], idx[child + 1], keys[child], idx[child]):
            child += 1
        if not _worse(keys[child], idx[child], value, index):
            break
        keys[pos], idx[pos] = keys[child], idx[child]
        pos = child
    keys[pos], idx[pos] = value, index
    return keys[0]


@numba.njit(cache=True, nogil=True, inline="always")
def _merge_chunk(products, base_sqnorms, offset, use_l2, best_keys, best_idx, heap):
    """Fold one chunk into the running top-k, each row of ``best_*`` a heap (``heap``) or sorted
    best first. Rows are scanned in ascending index, so a key equal to the worst kept one never
    enters: that one has the lower index. Keys are "larger is better": q.b for ip and
    2 q.b - |b|^2 for l2 (= |q|^2 - |q - b|^2, so the order is that of the distances). Inlined
    with ``heap`` a constant: a branch between the two in the loop slowed a small k down
    (docs/BENCHMARKS.md)."""
    k = best_keys.shape[1]
    for q in range(products.shape[0]):
        keys = best_keys[q]
        idx = best_idx[q]
        row = products[q]
        worst = keys[0] if heap else keys[k - 1]
        for j in range(row.shape[0]):
            v = np.float32(2.0) * row[j] - base_sqnorms[j] if use_l2 else row[j]
            if v > worst:
                if heap:
                    worst = _heap_replace_worst(keys, idx, k, v, offset + j)
                else:
                    worst = insert_sorted(keys, idx, k, v, offset + j)


@numba.njit(cache=True, nogil=True)
def _merge_into_list(products, base_sqnorms, offset, use_l2, best_keys, best_idx):
    _merge_chunk(products, base_sqnorms, offset, use_l2, best_keys, best_idx, False)


@numba.njit(cache=True, nogil=True)
def _merge_into_heap(products, base_sqnorms, offset, use_l2, best_keys, best_idx):
    _merge_chunk(products, base_sqnorms, offset, use_l2, best_keys, best_idx, True)


@numba.njit(cache=True, nogil=True, inline="always")
def _tiles_into(queries, bits, row0, lo, hi, use_l2, keys, idx, scratch, sqnorms, acc, heap):
    """Fold rows ``[lo, hi)`` of float16 tiles ``bits [T, D, L]`` (uint16, C-contiguous; tile t
    holds rows ``row0 + t * L ...``) into the running top-k (as :func:`_merge_chunk`), tile by
    tile: each tile's products go to ``scratch [Q, L]`` (and norms to ``sqnorms [L]`` for l2),
    in L1, and are merged there. The whole tiles of an archive (D = 34, L = TILE_ROWS, ip) go
    to :func:`_archive_tiles_into`."""
    T, D, L = bits.shape
    norms = sqnorms if use_l2 else sqnorms[:0]
    whole_from, whole_to = max(0, -(-(lo - row0) // L)), min(T, (hi - row0) // L)
    if not (D == 34 and L == TILE_ROWS and not use_l2) or whole_from >= whole_to:
        whole_from = whole_to = T
    for t in range(T):
        if t == whole_from:
            _archive_tiles_into(queries, bits, whole_from, whole_to, row0, keys, idx, scratch, heap)
        if whole_from <= t < whole_to:
            continue
        first = row0 + t * L
        a, b = max(lo, first) - first, min(hi, first + L) - first
        if a < b:
            tile_products(queries, bits[t:t + 1], scratch, norms, acc)
            _merge_chunk(scratch[:, a:b], norms[a:b] if use_l2 else norms, first + a, use_l2, keys, idx, heap)


@numba.njit(cache=True, nogil=True, inline="always")
def _archive_tiles_into(queries, bits, t0, t1, row0, keys, idx, scratch, heap):
    """:func:`_tiles_into` of whole tiles ``t0 .. t1 - 1`` of an archive (D = 34, L = TILE_ROWS,
    ip) by :data:`kernels._tiles.tile_dot`. A tight loop on addresses, not slices: a slice's
    reference counting (atomic), or bounds that vary per tile, cost about as much as a tile's
    products."""
    Q, k = queries.shape[0], keys.shape[1]
    q_addr, bits_addr, out_addr = queries.ctypes.data, bits.ctypes.data, scratch.ctypes.data
    tile_bytes = 34 * TILE_ROWS * 2
    for q in range(Q):
        worst = keys[q, 0] if heap else keys[q, k - 1]
        for t in range(t0, t1):
            if t + 1 < t1:
                prefetch_tile(bits_addr + (t + 1) * tile_bytes)
            if tile_dot(q_addr + q * 34 * 4, bits_addr + t * tile_bytes, out_addr) <= worst:
                continue
            for j in range(TILE_ROWS):
                v = scratch[0, j]
                if v > worst:
                    if heap:
                        worst = _heap_replace_worst(keys[q], idx[q], k, v, row0 + t * TILE_ROWS + j)
                    else:
                        worst = insert_sorted(keys[q], idx[q], k, v, row0 + t * TILE_ROWS + j)


@numba.njit(cache=True, nogil=True)
def _tiles_into_list(queries, bits, row0, lo, hi, use_l2, keys, idx, scratch, sqnorms, acc):
    _tiles_into(queries, bits, row0, lo, hi, use_l2, keys, idx, scratch, sqnorms, acc, False)


@numba.njit(cache=True, nogil=True)
def _tiles_into_heap(queries, bits, row0, lo, hi, use_l2, keys, idx, scratch, sqnorms, acc):
    _tiles_into(queries, bits, row0, lo, hi, use_l2, keys, idx, scratch, sqnorms, acc, True)


def _scan_tiles(queries, tiles, start, stop, k, use_l2):
    """Top-k keys and indices ``[Q, k]`` of rows ``[start, stop)`` of float16 ``tiles [T, D, L]``
    (one thread's share; indices are rows of the base): each tile's products straight from its
    bits and merged while in L1 (:func:`_tiles_into`), or for many queries a conversion and a GEMM
    per chunk of HALF_CHUNK_ROWS."""
    Q, D = queries.shape
    L = tiles.shape[2]
    per_chunk = max(1, HALF_CHUNK_ROWS // L)
    keys = np.full((Q, k), -np.inf, np.float32)
    idx = np.full((Q, k), -1, np.int64)
    heap = k >= HEAP_FROM_K
    direct = Q <= HALF_PRODUCTS_MAX_QUERIES
    scratch, sqnorms, acc = np.empty((Q, L), np.float32), np.empty(L, np.float32), np.empty((Q + 1, L), np.float32)
    empty = np.empty(0, np.float32)
    first, last = start // L, -(-stop // L)
    if direct:  # one call: the products never leave L1, so chunks would only add calls
        (_tiles_into_heap if heap else _tiles_into_list)(queries, tiles.view(np.uint16)[first:last], first * L, start,
                                                         stop, use_l2, keys, idx, scratch, sqnorms, acc)
    else:
        for chunk in range(first, last, per_chunk):
            lo, hi = max(start, chunk * L), min(stop, min(chunk + per_chunk, last) * L)
            block = np.empty((hi - lo, D), np.float32)
            half_to_float(from_tiles(tiles, lo, hi).view(np.uint16), block)
            sqn = np.einsum("ij,ij->i", block, block) if use_l2 else empty
            (_merge_into_heap if heap else _merge_into_list)(queries @ block.T, sqn, lo, use_l2, keys, idx)
    if heap:
        keys, idx = _best_first(np, keys, idx, k)
    return keys, idx


def _scan_rows(queries, base, start, stop, k, use_l2):
    """Top-k keys and indices ``[Q, k]`` of ``base[start:stop]`` (one thread's share): a GEMM per
    chunk, or for a float16 base (an archive's vectors, memory-mapped) the products straight from
    its bits (:func:`kernels._tiles.half_products`), without a float32 copy."""
    Q, D = queries.shape
    chunk = int(max(1024, CHUNK_BYTES // (4 * Q)))
    half = base.dtype == np.float16 and Q <= HALF_PRODUCTS_MAX_QUERIES
    if half:
        chunk = min(chunk, HALF_CHUNK_ROWS)
    keys = np.full((Q, k), -np.inf, np.float32)
    idx = np.full((Q, k), -1, np.int64)
    empty = np.empty(0, np.float32)
    heap = k >= HEAP_FROM_K
    if half:
        products = np.empty((Q, chunk), np.float32)
        sqn_buffer = np.empty(chunk if use_l2 else 0, np.float32)
    for lo in range(start, stop, chunk):
        hi = min(lo + chunk, stop)
        if half:
            half_products(queries, np.ascontiguousarray(base[lo:hi]).view(np.uint16), products[:, :hi - lo],
                           sqn_buffer[:hi - lo])
            block_products, sqn = products[:, :hi - lo], sqn_buffer[:hi - lo]  # empty unless l2
        else:
            block = np.ascontiguousarray(base[lo:hi])
            if block.dtype == np.float16:  # many queries: one conversion, then a GEMM
                converted = np.empty(block.shape, np.float32)
                half_to_float(block.view(np.uint16), converted)
                block = converted
            block = block.astype(np.float32, copy=False)
            block_products = queries @ block.T
            sqn = np.einsum("ij,ij->i", block, block) if use_l2 else empty
        (_merge_into_heap if heap else _merge_into_list)(block_products, sqn, lo, use_l2, keys, idx)
    if heap:
        keys, idx = _best_first(np, keys, idx, k)
    return keys, idx


def _search_cpu(queries, base, k, use_l2, rows=None):
    # Each worker thread scans its own share of the base with a single-threaded BLAS: GEMM and
    # selection then never hand over between two thread pools (whose spinning threads collide).
    # A tiled base's shares end on tile boundaries; its indices are rows of the base, less lo.
    lo, hi = rows if rows is not None else (0, base.shape[0])
    N = hi - lo
    workers = max(1, min(numba.get_num_threads(), N // 4096))
    bounds = np.linspace(lo, hi, workers + 1).astype(np.int64)
    if base.ndim == 3:
        L = base.shape[2]
        bounds[1:-1] = np.clip(bounds[1:-1] // L * L, lo, hi)
        scan = _scan_tiles
    else:
        scan = _scan_rows
    with single_threaded_blas():
        parts = parallel_map(lambda w: scan(queries, base, bounds[w], bounds[w + 1], k, use_l2),
                             range(workers), workers)
    if rows is not None:
        parts = [(keys, np.where(idx >= 0, idx - lo, -1)) for keys, idx in parts]
    keys = np.concatenate([p[0] for p in parts], axis=1)
    idx = np.concatenate([p[1] for p in parts], axis=1)
    order = np.argsort(-keys, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(keys, order, 1), np.take_along_axis(idx, order, 1)


#: Most (query, block) pairs of one fused launch: with many queries each gets fewer blocks, so
#: the per-block results ``[Q, blocks, k]`` stay bounded (64 MiB of keys and indices at k = 64).
GPU_MAX_QUERY_BLOCKS = 1 << 16


def _search_cuda(queries, base, k, use_l2, blocks=None):
    """Fused scan on the GPU (NumPy arrays in the simulator): each block writes its own top-k
    ``[Q, blocks, k]``; those are merged on ``xp``, ties to the lower index."""
    xp = array_module(queries)
    Q, N = queries.shape[0], base.shape[0]
    from posescore.kernels import _cuda_kernels

    threads = _cuda_kernels.THREADS_PER_BLOCK
    if blocks is None:
        blocks = max(1, min(_cuda_kernels.ceil_div(N, threads), 1024, GPU_MAX_QUERY_BLOCKS // Q))
    out_keys = xp.empty((Q, blocks, k), dtype=xp.float32)
    out_idx = xp.empty((Q, blocks, k), dtype=xp.int64)
    _cuda_kernels.fused_topk[(blocks, Q), threads](queries, base, np.int32(k), bool(use_l2),
                                                   out_keys, out_idx)
    return _best_first(xp, out_keys.reshape(Q, -1), out_idx.reshape(Q, -1), k)


def _best_first(xp, keys, idx, k):
    """The ``k`` best of each row of ``keys`` / ``idx [Q, M]`` in the top-k order of
    :func:`kernels._topk.better` (larger key first, of equal keys the lower index, empty places
    (index -1) last), on NumPy or CuPy."""
    by_index = xp.argsort(xp.where(idx < 0, xp.iinfo(xp.int64).max, idx), axis=1, kind="stable")
    keys, idx = xp.take_along_axis(keys, by_index, 1), xp.take_along_axis(idx, by_index, 1)
    by_key = xp.argsort(xp.where(idx < 0, xp.inf, -keys), axis=1, kind="stable")[:, :k]
    return xp.take_along_axis(keys, by_key, 1), xp.take_along_axis(idx, by_key, 1)


#: Elements of the [Q, chunk + k] key matrix of the blocked search (256 MiB of float32; its masks
#: and the partition's copy take ~2.5x that besides).
BLOCKED_CHUNK_ELEMENTS = 1 << 26


def _search_blocked(queries, base, k, use_l2):
    """Top-k keys and indices ``[Q, k]`` (keys as :func:`_merge_chunk`'s, best first; ties to the
    lower index, as the CPU scan) by a GEMM per chunk of the base and a selection, on NumPy or
    CuPy: the GPU path for a k or a D beyond the fused kernel's. A chunk's keys join the running
    top-k (lower indices first); the k-th largest key comes from a partition, and of the keys
    equal to it the first ones in that order are kept. NaN keys (from an unscanned base) never
    enter, as in the scans."""
    xp = array_module(queries)
    Q, N = queries.shape[0], base.shape[0]
    chunk = max(k, BLOCKED_CHUNK_ELEMENTS // Q - k)
    keys = xp.full((Q, k), -xp.inf, xp.float32)
    idx = xp.full((Q, k), -1, xp.int64)
    for lo in range(0, N, chunk):
        block = base[lo:lo + chunk].astype(xp.float32)
        block_keys = queries @ block.T
        if use_l2:
            block_keys = 2 * block_keys - (block * block).sum(axis=1)
        block_keys = xp.where(xp.isnan(block_keys), -xp.inf, block_keys)
        all_keys = xp.concatenate([keys, block_keys], axis=1)
        n = all_keys.shape[1]
        kth = xp.partition(all_keys, n - k, axis=1)[:, n - k:n - k + 1]
        above = all_keys > kth
        tied = all_keys == kth
        room = k - above.sum(axis=1, keepdims=True)
        rows, cols = xp.nonzero(above | (tied & (xp.cumsum(tied, axis=1) <= room)))  # k a row, in order
        keys = all_keys[rows, cols].reshape(Q, k)
        idx = xp.where(cols < k, idx[rows, xp.minimum(cols, k - 1)], cols - k + lo).reshape(Q, k)
    order = xp.argsort(-keys, axis=1, kind="stable")
    return xp.take_along_axis(keys, order, 1), xp.take_along_axis(idx, order, 1)


#: Most padding places (index -1) a result may hold when k > N: beyond, k is surely a mistake.
MAX_PADDING = 1 << 24


def search_topk(queries, base, k: int, metric: str = "ip", rows: tuple[int, int] | None = None):
    """Exact k nearest rows of ``base [N, D]`` for each of ``queries [Q, D]``.

    Returns ``(scores [Q, k] float32, indices [Q, k] int64)``, best first: for ``"ip"`` the inner
    products (descending), for ``"l2"`` the squared Euclidean distances (ascending), as faiss'
    ``IndexFlatIP`` / ``IndexFlatL2``. When ``k > N`` the missing places hold index -1 and score
    -inf (ip) / inf (l2), at most MAX_PADDING such places in all. ``base`` may be float16 or
    float32, and a NumPy memmap: it is read in chunks, so memory stays bounded whatever N (it is
    not scanned for NaN: the archive that holds it validates poses when they are written). CuPy
    inputs run the fused GPU kernel for k <= GPU_MAX_K (64) and D <= GPU_MAX_DIM (128), and a
    CuPy GEMM per chunk of the base with a partition-based selection beyond.

    ``base`` may also be float16 tiles ``[T, D, L]`` (:func:`to_tiles`, NumPy only), of which
    ``rows`` ``(lo, hi)`` are searched (default: all ``T * L``); indices then count from ``lo``, as
    those of ``base[lo:hi]`` would. Results equal those of the same rows untiled.
    """
    if metric not in SEARCH_METRICS:
        raise ValueError(f"metric: expected one of {SEARCH_METRICS}, got {metric!r}")
    k = check_int(k, "k")
    xp = array_module(queries, base)
    queries = check_array(queries, "queries", ndim=(2, 2), xp=xp)
    tiled = getattr(base, "ndim", 0) == 3
    if tiled:
        base, rows = _check_tiles(queries, base, rows)
        N = rows[1] - rows[0]
    elif rows is not None:
        raise ValueError("rows: only for a tiled base [T, D, L]; slice a base [N, D] instead")
    else:
        # A float16/float32 base (possibly a memmap of 100M rows) is used as it is, chunk by chunk:
        # converting or NaN-scanning it up front would cost a full extra pass over it.
        streamable = (getattr(base, "ndim", 0) == 2 and getattr(base, "dtype", None) in (np.float16, np.float32)
                      and is_gpu_array(base) == (xp is not np) and base.shape[0] > 0)
        if not streamable:
            base = check_array(base, "base", ndim=(2, 2), xp=xp)
        if base.shape[1] != queries.shape[1]:
            raise ValueError(f"queries [Q, {queries.shape[1]}] and base [N, {base.shape[1]}]: "
                             f"expected the same dimension D")
        N = base.shape[0]
    use_l2 = metric == "l2"
    kk = int(min(k, N))
    if (k - kk) * queries.shape[0] > MAX_PADDING:
        raise ValueError(f"k={k} for a base of N={N} rows: the {queries.shape[0]} x {k} result "
                         f"would be mostly padding (index -1); ask for k <= N")
    if tiled:
        queries = np.ascontiguousarray(queries, np.float32)
        if kk:
            keys, idx = _search_cpu(queries, base, kk, use_l2, rows)
        else:
            keys, idx = np.empty((queries.shape[0], 0), np.float32), np.empty((queries.shape[0], 0), np.int64)
    elif is_gpu_array(queries):
        from posescore.kernels._cuda_kernels import GPU_MAX_DIM, GPU_MAX_K

        if kk > GPU_MAX_K or queries.shape[1] > GPU_MAX_DIM:
            keys, idx = _search_blocked(queries, base, kk, use_l2)
        else:
            keys, idx = _search_cuda(queries, xp.ascontiguousarray(base), kk, use_l2)
    else:
        keys, idx = _search_cpu(queries, base, kk, use_l2)
    if kk < k:
        keys = xp.concatenate([keys, xp.full((keys.shape[0], k - kk), -xp.inf, xp.float32)], 1)
        idx = xp.concatenate([idx, xp.full((idx.shape[0], k - kk), -1, xp.int64)], 1)
    if use_l2:
        qn = (queries * queries).sum(axis=1, keepdims=True)
        keys = xp.maximum(qn - keys, 0.0)
    return keys.astype(xp.float32), idx


def _check_tiles(queries, tiles, rows) -> tuple[np.ndarray, tuple[int, int]]:
    """A tiled base (C-contiguous: the tile kernel reads addresses; a mapped column already is)
    and its rows ``(lo, hi)``, or ValueError naming what is wrong."""
    if is_gpu_array(queries) or is_gpu_array(tiles):
        raise ValueError("a tiled base is searched on the CPU; give the GPU rows [N, D] (from_tiles)")
    if tiles.dtype != np.float16:
        raise ValueError(f"tiles: expected float16 [T, D, L], got {tiles.dtype}")
    T, D, L = tiles.shape
    lo, hi = rows if rows is not None else (0, T * L)
    if not 0 <= lo <= hi <= T * L:
        raise ValueError(f"rows: expected 0 <= lo <= hi <= {T * L} (the tiles' rows), got {(lo, hi)}")
    if D != queries.shape[1]:
        raise ValueError(f"queries [Q, {queries.shape[1]}] and tiles [T, {D}, L]: expected the same dimension D")
    return np.ascontiguousarray(tiles), (int(lo), int(hi))
