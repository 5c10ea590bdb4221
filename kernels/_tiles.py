"""Float16 vectors read in place: the tile layout, exact conversion, LLVM-IR kernels over the bits.

Tiled float16 bases (an archive's vectors, :func:`to_tiles`): rows in tiles of TILE_ROWS, each
tile dimension-major (``tiles[t, d, l]`` is row ``t * TILE_ROWS + l``, dimension ``d``). The
products of a tile are then TILE_ROWS-wide vector operations, no reduction across a row's 34
values, which row-major float16 needs per row, so the scan is faster (docs/BENCHMARKS.md).
The top-k scans over them are in kernels._search; the pruning's bounds in kernels._pruning.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils
from numba.extending import intrinsic

from posescore.kernels._backend import parallel_map


@intrinsic
def _half(typingctx, bits):
    """The float16 whose bits are ``bits`` (uint16), as float32: LLVM's ``fpext half`` (one F16C
    instruction converts 8 halves, AVX-512 16, where the CPU has them), exact, NaN and inf kept."""
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return numba.types.float32(numba.types.uint16), codegen


@numba.njit(cache=True, nogil=True)
def half_to_float(bits, out):
    """``out`` (float32, C-contiguous) = the float16 values whose bits are ``bits`` (uint16, same
    shape), exactly."""
    source = bits.reshape(-1)
    target = out.reshape(-1)
    for i in range(source.shape[0]):
        target[i] = _half(source[i])


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def half_products(queries, bits, products, sqnorms):
    """``products[q, j] = queries[q] . base[j]`` and ``sqnorms[j] = |base[j]|^2`` (when it has
    room) for a float16 base given as ``bits [n, D]`` uint16, converted in registers: one pass over
    the base, at the speed of reading it. Sums in any order (float32 rounding)."""
    n, D = bits.shape
    for j in range(n):
        for q in range(queries.shape[0]):
            total = np.float32(0.0)
            for d in range(D):
                total += queries[q, d] * _half(bits[j, d])
            products[q, j] = total
        if sqnorms.shape[0]:
            total = np.float32(0.0)
            for d in range(D):
                value = _half(bits[j, d])
                total += value * value
            sqnorms[j] = total


#: Rows of one tile of a tiled base: 64 float32 products, eight AVX2 registers.
TILE_ROWS = 64


def to_tiles(vectors, tile_rows: int = TILE_ROWS) -> np.ndarray:
    """Rows ``[n, D]`` as tiles ``[ceil(n / tile_rows), D, tile_rows]`` of the same dtype
    (``tiles[t, d, l] = vectors[t * tile_rows + l, d]``), the last tile padded with zeros."""
    vectors = np.asarray(vectors)
    n, D = vectors.shape
    count = -(-n // tile_rows)
    padded = np.zeros((count * tile_rows, D), vectors.dtype)
    padded[:n] = vectors
    return np.ascontiguousarray(padded.reshape(count, tile_rows, D).transpose(0, 2, 1))


def from_tiles(tiles, lo: int, hi: int) -> np.ndarray:
    """Rows ``[lo, hi)`` ``[hi - lo, D]`` of a tiled base ``[T, D, L]`` (a copy, same dtype)."""
    L = tiles.shape[2]
    first, last = lo // L, -(-hi // L)
    rows = np.asarray(tiles[first:last]).transpose(0, 2, 1).reshape(-1, tiles.shape[1])
    return np.ascontiguousarray(rows[lo - first * L:hi - first * L])


def float32_rows(base, lo: int, hi: int, buffer: np.ndarray | None = None) -> np.ndarray:
    """Rows ``[lo, hi)`` of ``base`` (rows ``[N, D]`` or tiles ``[T, D, L]``, float16 or float32)
    as float32 ``[hi - lo, D]``: a new array, or the first rows of ``buffer`` (float32, C-contiguous,
    at least that large: a fresh array of a batch's size costs a page fault per 4 KiB, which took
    longer than the conversion). Float16 converted exactly, 8 values an instruction (faster than
    NumPy's own conversion: docs/BENCHMARKS.md)."""
    shape = (hi - lo, base.shape[1])
    if buffer is None:
        out = np.empty(shape, np.float32)
    elif buffer.dtype != np.float32 or buffer.ndim != 2 or buffer.shape[0] < shape[0] or buffer.shape[1] != shape[1] \
            or not buffer.flags.c_contiguous:
        raise ValueError(f"buffer: expected float32 C-contiguous [>= {shape[0]}, {shape[1]}], got "
                         f"{buffer.dtype}{list(buffer.shape)}")
    else:
        out = buffer[:shape[0]]
    if base.ndim == 3 and base.dtype == np.float16:
        bits, L = np.asarray(base).view(np.uint16), base.shape[2]
        pieces = max(1, min(numba.get_num_threads(), (hi - lo) // (1 << 16)))
        cuts = [lo] + [max(lo, (lo + (hi - lo) * p // pieces) // L * L) for p in range(1, pieces)] + [hi]
        parallel_map(lambda p: _untile_half(bits, cuts[p], cuts[p + 1], out[cuts[p] - lo:cuts[p + 1] - lo]),
                     range(pieces), pieces)
    elif base.ndim == 3:
        out[:] = from_tiles(base, lo, hi)
    elif base.dtype == np.float16:
        half_to_float(np.ascontiguousarray(base[lo:hi]).view(np.uint16), out)
    else:
        out[:] = base[lo:hi]
    return out


@numba.njit(cache=True, nogil=True)
def _untile_half(bits, lo, hi, out):
    """``out[r - lo, d]`` = row r, dimension d of float16 tiles ``bits [T, D, L]`` (uint16), as
    float32, for r in ``[lo, hi)``: each tile converted contiguously (vector instructions) into an
    L1 buffer, then transposed from there."""
    T, D, L = bits.shape
    tile = np.empty((D, L), np.float32)
    for t in range(lo // L, -(-hi // L)):
        for d in range(D):
            for l in range(L):
                tile[d, l] = _half(bits[t, d, l])
        a, b = max(lo, t * L) - t * L, min(hi, (t + 1) * L) - t * L
        for l in range(a, b):
            row = t * L + l - lo
            for d in range(D):
                out[row, d] = tile[d, l]


class TiledSeries:
    """Rows ``[lo, hi)`` of float16 tiles ``[T, D, L]`` as a series: float32 frames on demand."""

    def __init__(self, tiles, rows, buffer):
        if not isinstance(tiles, np.ndarray) or tiles.dtype != np.float16:
            raise ValueError(f"series: expected float16 tiles [T, D, L] (NumPy), got "
                             f"{getattr(tiles, 'dtype', type(tiles).__name__)}")
        T, D, L = tiles.shape
        lo, hi = rows if rows is not None else (0, T * L)
        if not 0 <= lo < hi <= T * L:
            raise ValueError(f"rows: expected 0 <= lo < hi <= {T * L} (the tiles' rows), got {(lo, hi)}")
        # the bounds' tile kernel reads addresses (an archive's mapped column already is contiguous)
        self.tiles, self.lo, self.buffer = np.ascontiguousarray(tiles), int(lo), buffer
        self.shape = (int(hi - lo), D)

    def frames(self, a: int, b: int) -> np.ndarray:
        """Frames ``[a, b)`` of the series as float32 ``[b - a, D]`` (the whole series into the buffer)."""
        whole = a == 0 and b == self.shape[0]
        return float32_rows(self.tiles, self.lo + a, self.lo + b, self.buffer if whole else None)

    def gather(self, index: np.ndarray) -> np.ndarray:
        """Frames ``index`` (int64) as float32 ``[len(index), D]``."""
        L = self.tiles.shape[2]
        at = self.lo + np.asarray(index, np.int64)
        return self.tiles[at // L, :, at % L].astype(np.float32)


def _splat(builder, value):
    """IR: a float ``value`` in all 8 lanes of a ``<8 x float>``."""
    i32 = ir.IntType(32)
    undef = ir.Constant(ir.VectorType(ir.FloatType(), 8), ir.Undefined)
    return builder.shuffle_vector(builder.insert_element(undef, value, ir.Constant(i32, 0)), undef,
                                  ir.Constant(ir.VectorType(i32, 8), [0] * 8))


def _tile_accumulators(builder, query, tile, D: int, L: int, square: bool) -> list:
    """IR: the L / 8 accumulators (``<8 x float>``, in registers) of ``query . tile[:, l]`` for a
    float16 tile ``[D, L]`` at address ``tile`` and a float32 query ``[D]`` at ``query``
    (``square``: ``tile[:, l] . tile[:, l]``, the query unread), each float16 run of 8 converted
    by one ``fpext`` (F16C's vcvtph2ps) and folded in by one fused multiply-add."""
    f32, i32 = ir.FloatType(), ir.IntType(32)
    vf, vh = ir.VectorType(f32, 8), ir.VectorType(ir.HalfType(), 8)
    q_ptr = builder.inttoptr(query, f32.as_pointer())
    tile_ptr = builder.inttoptr(tile, vh.as_pointer())
    fmuladd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vf, [vf] * 3), "llvm.fmuladd.v8f32")
    lanes = L // 8
    accs = [ir.Constant(vf, [0.0] * 8)] * lanes
    for d in range(D):
        if not square:
            wide = _splat(builder, builder.load(builder.gep(q_ptr, [ir.Constant(i32, d)]), align=4))
        for j in range(lanes):
            x = builder.fpext(builder.load(builder.gep(tile_ptr, [ir.Constant(i32, d * lanes + j)]), align=2), vf)
            accs[j] = builder.call(fmuladd, [x, x if square else wide, accs[j]])
    return accs


def _least(builder, vectors: list, largest: bool = False):
    """IR: the least (``largest``: the greatest) float of ``<8 x float>`` vectors."""
    f32 = ir.FloatType()
    best = vectors[0]
    for vector in vectors[1:]:
        best = builder.select(builder.fcmp_ordered(">" if largest else "<", vector, best), vector, best)
    reduce = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [ir.VectorType(f32, 8)]),
                                            "llvm.vector.reduce.fmax.v8f32" if largest else
                                            "llvm.vector.reduce.fmin.v8f32")
    return builder.call(reduce, [best])


def _tile_dot_intrinsic(D: int, L: int, square: bool = False):
    """An intrinsic ``f(query, tile, out) -> float32`` (addresses: float32 ``[D]``, float16
    ``[D, L]``, float32 ``[L]``) writing ``out[l] = query . tile[:, l]`` (``square``: ``tile[:, l] .
    tile[:, l]``, the query unread) and returning the largest of them (:func:`_tile_accumulators`;
    numba's own loops keep such accumulators in memory). The largest lets a caller skip a tile none
    of whose products can enter its top-k without looking at them one by one."""
    @intrinsic
    def tile_dot(typingctx, query, tile, out):
        def codegen(context, builder, signature, args):
            accs = _tile_accumulators(builder, args[0], args[1], D, L, square)
            out_ptr = builder.inttoptr(args[2], ir.VectorType(ir.FloatType(), 8).as_pointer())
            for j, acc in enumerate(accs):
                builder.store(acc, builder.gep(out_ptr, [ir.Constant(ir.IntType(32), j)]), align=4)
            return _least(builder, accs, largest=True)
        return numba.types.float32(numba.types.uintp, numba.types.uintp, numba.types.uintp), codegen
    return tile_dot


def _tile_half_minima_intrinsic(D: int, L: int):
    """An intrinsic ``f(centre, tile, sqnorms, c_sq, out)`` (addresses: float32 ``[D]``, float16
    ``[D, L]``, float32 ``[L]`` (the tile's rows' squared norms), float32 ``[2]``; ``c_sq`` the
    centre's squared norm) writing to ``out[h]`` the least over the rows l of half h of the tile
    of ``total - 2 centre . row_l - 1e-5 total - 1e-6``, ``total = sqnorms[l] + c_sq``: a lower
    bound on the squared distance from the centre to each row (the margin covers float32's
    rounding), reduced in registers."""
    @intrinsic
    def half_minima(typingctx, centre, tile, sqnorms, c_sq, out):
        def codegen(context, builder, signature, args):
            f32, i32 = ir.FloatType(), ir.IntType(32)
            vf = ir.VectorType(f32, 8)
            accs = _tile_accumulators(builder, args[0], args[1], D, L, False)
            sq_ptr = builder.inttoptr(args[2], vf.as_pointer())
            out_ptr = builder.inttoptr(args[4], f32.as_pointer())
            c_sq = _splat(builder, args[3])
            two, relative, absolute = (ir.Constant(vf, [v] * 8) for v in (2.0, 1.0 - 1e-5, 1e-6))
            bounds = []
            for j, acc in enumerate(accs):
                total = builder.fadd(builder.load(builder.gep(sq_ptr, [ir.Constant(i32, j)]), align=4), c_sq)
                bounds.append(builder.fsub(builder.fsub(builder.fmul(total, relative), builder.fmul(acc, two)),
                                           absolute))
            half = len(bounds) // 2
            for h, part in enumerate((bounds[:half], bounds[half:])):
                builder.store(_least(builder, part), builder.gep(out_ptr, [ir.Constant(i32, h)]), align=4)
            return context.get_dummy_value()
        return numba.types.void(numba.types.uintp, numba.types.uintp, numba.types.uintp, numba.types.float32,
                                numba.types.uintp), codegen
    return half_minima


def _prefetch_intrinsic(nbytes: int):
    """An intrinsic ``f(address)`` asking the CPU to bring the ``nbytes`` from ``address`` into its
    caches (one ``llvm.prefetch`` a 64-byte line; a hint: it never faults, even past a mapping).
    A scan that prefetches the next tile while it computes this one keeps more reads in flight
    than the hardware prefetcher does on its own."""
    @intrinsic
    def prefetch(typingctx, address):
        def codegen(context, builder, signature, args):
            i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            hint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                                  "llvm.prefetch.p0i8")
            start = builder.inttoptr(args[0], i8p)
            for offset in range(0, nbytes, 64):  # read, keep in all levels, data cache
                builder.call(hint, [builder.gep(start, [ir.Constant(i32, offset)]), ir.Constant(i32, 0),
                                    ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()
        return numba.types.void(numba.types.uintp), codegen
    return prefetch


#: The vectors of an archive: 17 keypoints' (x, y), TILE_ROWS rows a tile.
tile_dot = _tile_dot_intrinsic(34, TILE_ROWS)
_tile_sqnorms = _tile_dot_intrinsic(34, TILE_ROWS, square=True)
_tile_half_minima = _tile_half_minima_intrinsic(34, TILE_ROWS)
prefetch_tile = _prefetch_intrinsic(34 * TILE_ROWS * 2)


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def tile_products(queries, tiles, products, sqnorms, acc):
    """``products[q, t * L + l] = queries[q] . row`` (and ``sqnorms`` likewise, when it has room)
    for float16 tiles given as ``bits [T, D, L]`` uint16, converted as they are read; ``acc
    [Q + 1, L]`` float32 scratch. Plain loops, for any D and L (an archive's whole tiles take
    :data:`tile_dot`, in kernels._search)."""
    T, D, L = tiles.shape
    Q = queries.shape[0]
    norms = sqnorms.shape[0] > 0
    for t in range(T):
        acc[:] = 0.0
        for d in range(D):
            for q in range(Q):
                value = queries[q, d]
                for l in range(L):
                    acc[q, l] += value * _half(tiles[t, d, l])
            if norms:
                for l in range(L):
                    x = _half(tiles[t, d, l])
                    acc[Q, l] += x * x
        for q in range(Q):
            for l in range(L):
                products[q, t * L + l] = acc[q, l]
        if norms:
            for l in range(L):
                sqnorms[t * L + l] = acc[Q, l]


@numba.njit(cache=True, nogil=True)
def tile_block_minima(bits, lo, hi, centres, c_sq, block, near, scratch, sqnorms):
    """``near[g, b]`` at most the least ``|s_j|^2 + c_sq[g] - 2 centres[g] . s_j`` over the frames
    j of block b (rows ``lo + b * block ...``, within ``[lo, hi)``) of float16 tiles ``bits [T, 34,
    TILE_ROWS]`` (uint16, C-contiguous), less a margin for float32 rounding (so it stays at most
    the exact squared distance); ``centres [G, 34]`` float32 C-contiguous, ``scratch [G, 2]`` and
    ``sqnorms [TILE_ROWS]`` float32 scratch. Each tile's norms by :data:`_tile_sqnorms`, then for
    each centre the least over each half of the tile (:data:`_tile_half_minima`, in registers),
    which goes to every block the half overlaps: a block's bound is then the least over the
    halves that hold its rows, a superset of them where blocks and halves are not aligned (a
    lower bound still, at most a half wider on each side)."""
    G, L = centres.shape[0], bits.shape[2]
    half, blocks = L // 2, near.shape[1]
    near[:] = np.inf
    c_addr, bits_addr = centres.ctypes.data, bits.ctypes.data
    out_addr, sq_addr = scratch.ctypes.data, sqnorms.ctypes.data
    tile_bytes = 34 * L * 2
    last_tile = -(-hi // L)
    for t in range(lo // L, last_tile):
        tile = bits_addr + t * tile_bytes
        if t + 1 < last_tile:
            prefetch_tile(tile + tile_bytes)
        _tile_sqnorms(c_addr, tile, sq_addr)
        for g in range(G):
            _tile_half_minima(c_addr + g * 34 * 4, tile, sq_addr, c_sq[g], out_addr + g * 8)
        for h in range(2):
            first = t * L + h * half - lo  # the half's rows from lo, clipped to [lo, hi)
            first, end = max(0, first), min(first + half, hi - lo)
            if first >= end:
                continue
            for b in range(first // block, min(blocks - 1, (end - 1) // block) + 1):
                for g in range(G):
                    value = scratch[g, h]
                    if value < near[g, b]:
                        near[g, b] = value
