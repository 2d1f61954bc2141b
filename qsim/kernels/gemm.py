"""Matrix products with ONNX Runtime's CPU arithmetic (MLAS, x86-64 FMA3 kernels), bit for bit.

AIMET evaluates the float ops of its simulated model with ONNX Runtime (CPU EP). Floating-point
sums depend on their order, so reproducing AIMET's numbers means reproducing the order in which
MLAS adds the products of a matrix product. This module computes exactly that order; the tests
compare it bit for bit with ONNX Runtime 1.32 (graph optimizations disabled).

What MLAS computes for ``C = alpha · A @ B + beta · C`` (``sgemm``), per output element:

* **general kernel** (``FMA``): ``K`` is cut into blocks of ``stride_k`` (see :func:`stride_k`);
  each block's products are chained with single-rounding fused multiply-adds starting from zero,
  ``acc = fma(a[k], b[k], acc)`` for ``k`` ascending; the block is then merged into the output
  with ``C = fma(acc, alpha, C)``, except for the first block when ``beta == 0`` (``C = acc ·
  alpha``). ``beta ∉ {0, 1}`` first scales ``C`` by ``beta`` (one float32 multiply).
* **M = 1 kernel** (``GROUP4``, ``alpha == 1``, ``beta ∈ {0, 1}``, ``A`` not transposed, ``B``
  not transposed): no blocking; products rounded one by one (no FMA), summed by groups of four
  ``s = ((p0 + p1) + p2) + p3`` (then a group of 2 and of 1 for the remainder), each group added
  to the output ``C = s + C`` (``C`` starts at +0 when ``beta == 0``).
* **M = 1, B transposed kernel** (``LANE8``): eight lanes ``L_j`` sum the rounded products of
  ``k ≡ j (mod 8)`` in ascending ``k``; the lanes are reduced by a tree that depends on whether
  the output is computed in a group of 4, 2 or 1 outputs (outputs are taken 4 at a time, then 2,
  then 1); ``C = r + C``. The same kernel serves ``N = 1`` products with the roles of A and B
  swapped.

Which kernel and which K blocks: :func:`gemm_tiles` (MatMul, Gemm, ConvTranspose: MLAS's
``MlasGemmBatch``), :func:`conv_tiles` (Conv: ``MlasConvPrepare`` / ``MlasConv``) and
:func:`packed_tiles` (a constant-initializer B, which ONNX Runtime pre-packs: K blocks of 256).
A tile is ``(m0, m1, n0, n1, kind, k_block)``: the output rectangle one MLAS call computes.

Threads: ONNX Runtime splits a product over threads along N (in multiples of 16 columns) or M;
``stride_k`` depends on the number of columns a thread gets, so a few shapes depend on the thread
count (``threads``, ONNX Runtime's ``intra_op_num_threads``; its default is the number of cores).
qsim's own worker threads (``run_batch``) never change a result.

Speed: the general kernel runs a 6 x 16 register block (:func:`_micro`; shorter blocks repeat
their last row) whose loops are ordered for the cache (B packed into 16-column strips when
several row blocks read it) but whose per-element chain is MLAS's; a batch of 2-D Convs is
expanded (im2col) and multiplied image by image in each thread (:func:`_conv_2d_parallel`);
depthwise Convs skip im2col (:func:`_nb_group4_conv`); a transposed constant B (Gemm
``transB=1``) is read in place (:func:`_tile_fma_bt`). Work is shared by the calling thread and
a persistent pool (:func:`_parallel`). ``benchmarks/bench_zoo.py`` prints the ratios to ONNX
Runtime on the model zoo.

Each kernel exists twice: a Numba kernel (``fma`` is LLVM's ``llvm.fma.f32``, a true single
rounding) and a NumPy twin used when ``NUMBA_DISABLE_JIT=1``. The twin computes ``fma`` as the
float64 sum of the exact float64 product and the addend, corrected for the one case where rounding
twice (to float64, then float32) differs from rounding once: a float64 sum exactly halfway between
two float32 values with a nonzero error term (:func:`fma_np`). Float32 subnormal results of that
halfway case are not corrected (never seen in practice).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
import functools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from ..jit import USE_NUMBA
from . import avx512
from . import mlas_math
from . import threads as threads_
from .threads import (ARGS, KIND, bits_of, claim, done, f32_1d, f32_2d, f32_3d, f32_4d, finish,
                      float_of, i64_1d, i64_2d, idle, publish, put_array, put_words, settle, take)

#: kernel kinds of a tile (see the module docstring)
FMA, GROUP4, LANE8_N, LANE8_M = 0, 1, 2, 3

#: ONNX Runtime's default intra-op thread count: one per core
DEFAULT_THREADS: int = max(1, os.cpu_count() or 1)

_SGEMM_STRIDE_N = 128            # MLAS_SGEMM_STRIDEN
_SGEMM_STRIDE_K = 128            # MLAS_SGEMM_STRIDEK
_THREAD_ALIGN_N = 16             # MLAS_SGEMM_STRIDEN_THREAD_ALIGN
_THREAD_COMPLEXITY = 64 * 1024   # MLAS_SGEMM_THREAD_COMPLEXITY
_MAX_THREADS = 16                # MLAS_MAXIMUM_THREAD_COUNT (convolution)
_PACKED_STRIDE_K = 256           # MLAS_SGEMM_PACKED_STRIDEK


@contextlib.contextmanager
def _slp_vectorizer():
    """Let LLVM's SLP vectorizer run while Numba compiles (lazily, on first call) the kernels
    called inside this block: the micro-kernel needs it to keep its 64 accumulators in AVX
    registers (4x faster). Numba reads ``config.SLP_VECTORIZE`` each time it builds a pass
    pipeline; the previous value is restored on exit. SLP packs independent scalar operations
    into vector ones without reassociating anything, so results are unchanged."""
    saved = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE = saved


def _compile():
    """Numba options of every kernel here: cached, GIL released, IEEE arithmetic."""
    return numba.njit(cache=True, nogil=True, fastmath=False)


# ---------------------------------------------------------------------------------------------
# planning: which kernel computes which part of the output, with which K blocks
# ---------------------------------------------------------------------------------------------
def stride_k(n: int, k: int, trans_a: bool = False) -> int:
    """K block size of one MLAS ``sgemm`` call over ``n`` columns (MlasSgemmOperation).

    Start from 128 x 128 (N x K); if ``n >= k`` shrink the K stride while half of it still covers
    ``k`` (no effect on the sums); else, unless A is transposed, double the K stride and halve the
    N stride while the N stride is > 16 and half of it still covers ``n``."""
    sn, sk = _SGEMM_STRIDE_N, _SGEMM_STRIDE_K
    if n >= k:
        while sk // 2 >= k:
            sn, sk = sn * 2, sk // 2
    elif not trans_a:
        while sn > 16 and sn // 2 >= n:
            sn, sk = sn // 2, sk * 2
    return sk


def partition(index: int, count: int, total: int) -> tuple[int, int]:
    """``(start, size)`` of part ``index`` of ``total`` items split in ``count`` near-equal parts,
    the first ``total % count`` parts one larger (MlasPartitionWork)."""
    per, extra = divmod(total, count)
    if index < extra:
        return (per + 1) * index, per + 1
    return per * index + extra, per


def _call_tiles(m0, m1, n0, n1, k, *, trans_a, trans_b, alpha, beta, ldb_is_1, ldc_is_1,
                chunk=None):
    """Tiles of one ``MlasSgemmOperation`` call on rows ``[m0, m1)`` and columns ``[n0, n1)``.

    ``chunk`` overrides the general kernel's K block (convolution: one call per K block)."""
    mc, nc = m1 - m0, n1 - n0
    simple = alpha == 1.0 and beta in (0.0, 1.0)
    full = chunk if chunk is not None else k
    if mc == 1 and not trans_a and simple:
        return [(m0, m1, n0, n1, LANE8_N if trans_b else GROUP4, full)]
    if nc == 1 and ldb_is_1 and ldc_is_1 and simple:
        return [(m0, m1, n0, n1, GROUP4 if trans_a else LANE8_M, full)]
    sk = stride_k(nc, k, trans_a) if chunk is None else chunk
    return [(m0, m1, n0, n1, FMA, sk)]


def packed_tiles(m, n, k):
    """Tiles of a product whose B is a constant initializer: ONNX Runtime packs such a B once
    (MatMul / Gemm pre-packing) and MLAS then always uses the general kernel with K blocks of
    256 (MLAS_SGEMM_PACKED_STRIDEK), whatever the shape or thread count."""
    return [(0, m, 0, n, FMA, _PACKED_STRIDE_K)]


def gemm_tiles(m, n, k, *, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, batch=1,
               threads=DEFAULT_THREADS, ldb=None, ldc=None):
    """Tiles ``(m0, m1, n0, n1, kind, k_block)`` of ``MlasGemmBatch`` for one of ``batch``
    products ``(m, k) @ (k, n)`` split over ``threads`` threads (MlasGemmBatch/MlasSgemmThreaded).

    ``target = min(m·n·k / 65536 + 1, threads)``, ``per_gemm = ceil(target / batch)``; split the
    columns in 16-column blocks if ``n > m``, else the rows."""
    ldb = (k if trans_b else n) if ldb is None else ldb
    ldc = n if ldc is None else ldc
    target = min(int(float(m) * float(n) * float(k) / _THREAD_COMPLEXITY) + 1, threads)
    per = -(-target // batch)
    tiles = []
    opts = dict(trans_a=trans_a, trans_b=trans_b, alpha=alpha, beta=beta,
                ldb_is_1=ldb == 1, ldc_is_1=ldc == 1)
    if n > m:
        blocked = -(-n // _THREAD_ALIGN_N)
        per = min(per, blocked)
        for t in range(per):
            s, c = partition(t, per, blocked)
            n0, n1 = s * _THREAD_ALIGN_N, min(n, (s + c) * _THREAD_ALIGN_N)
            if n1 > n0:
                tiles += _call_tiles(0, m, n0, n1, k, **opts)
    else:
        per = min(per, m)
        for t in range(per):
            s, c = partition(t, per, m)
            if c:
                tiles += _call_tiles(s, s + c, 0, n, k, **opts)
    return tiles


def _as_array(tiles) -> np.ndarray:
    return np.ascontiguousarray(np.array(tiles, dtype=np.int64).reshape(-1, 6))


# ---------------------------------------------------------------------------------------------
# fused multiply-add
# ---------------------------------------------------------------------------------------------
@intrinsic
def _fma32(typingctx, a, b, c):
    """``a · b + c`` rounded once (LLVM ``llvm.fma.f32``)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen


@_compile()
def _fma_scalar(a, b, c):
    """``fma(a, b, c)`` on three float32 scalars (for tests)."""
    return _fma32(np.float32(a), np.float32(b), np.float32(c))


_HALF = np.int64(1) << 28          # float32 halfway point in the 29 dropped float64 mantissa bits
_LOW = (np.int64(1) << 29) - 1


def fma_np(a, b, c) -> np.ndarray:
    """``float32(a · b + c)`` rounded once, for float32 arrays (NumPy twin of ``llvm.fma.f32``).

    The float64 product is exact (24 + 24 bits); ``s = p + c`` in float64 and its error
    ``e`` (two-sum) are exact; rounding ``s`` to float32 is then right unless ``s`` lies exactly
    halfway between two float32 values and ``e != 0``, where ``s`` is moved one float64 step
    towards ``e`` first."""
    p = np.multiply(a, b, dtype=np.float64)
    c64 = np.asarray(c, dtype=np.float64)
    s = p + c64
    bb = s - p
    e = (p - (s - bb)) + (c64 - bb)
    bits = s.view(np.int64) if isinstance(s, np.ndarray) else np.array(s).view(np.int64)
    tie = ((bits & _LOW) == _HALF) & (e != 0)
    if np.any(tie):
        s = np.where(tie, np.nextafter(s, np.where(e > 0, np.inf, -np.inf)), s)
    return s.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Numba kernels
# ---------------------------------------------------------------------------------------------
_PB = 256           # widest column block of the general kernel
_PANEL = 64 * 1024  # B panel (floats): 256 KiB, L2
_NR = 16            # register block width: 16 columns (2 AVX registers per row)
_MR = 6             # register block height: 6 x 16 = 12 AVX accumulators


def _micro_kernel_source() -> str:
    """Source of ``_micro``: a block of up to ``_MR`` rows x ``_NR`` columns of outputs over one
    K block.

    Written out with one scalar variable per output (generated) so that LLVM keeps the
    accumulators in registers and its SLP vectorizer packs the 16 columns of a row into two AVX
    registers (12 accumulators + 2 for B + 1 broadcast of A = 15 of the 16 ymm registers, as
    BLIS's Haswell kernel). Per output ``acc = fma(a[r, k], b[k, j], acc)`` for ``k`` ascending
    from ``acc = 0``, then ``c = acc · alpha`` (first block with ``beta == 0``) or
    ``c = fma(acc, alpha, c)``: exactly MLAS's arithmetic.

    A block of ``rows < _MR`` rows (the last rows of a tile) repeats its last row in the missing
    ones: they compute that row's chain again and store the same values to the same place (all
    of C is read before any of it is written), so one compiled kernel serves every row count.
    ``a``, ``b``, ``c`` are flat (1-D) views; unsigned indices spare Numba's negative-index
    checks, which would block the SLP pass.
    """
    acc = [[f"c{r}_{j}" for j in range(_NR)] for r in range(_MR)]
    zero = ", ".join(["f0"] * _NR)
    lines = ["def _micro(a, b, c, a0, lda, b0, ldb, c0, ldc, k0, k1, alpha, first, rows):",
             "    f0 = np.float32(0.0)",
             "    last = rows - 1"]
    for r in range(_MR):
        lines.append(f"    ar{r} = np.uint64(a0 + min({r}, last) * lda)")
        lines.append(f"    cr{r} = np.uint64(c0 + min({r}, last) * ldc)")
    lines += [f"    {', '.join(row)} = {zero}" for row in acc]
    lines += ["    for kk in range(k0, k1):",
              "        bo = np.uint64(b0 + kk * ldb)",
              "        ko = np.uint64(kk)"]
    lines += [f"        v{j} = b[bo + np.uint64({j})]" for j in range(_NR)]
    for r in range(_MR):
        lines.append(f"        av = a[ar{r} + ko]")
        lines += [f"        {acc[r][j]} = _fma32(av, v{j}, {acc[r][j]})" for j in range(_NR)]
    lines.append("    if first:")
    for r in range(_MR):
        lines += [f"        c[cr{r} + np.uint64({j})] = {acc[r][j]} * alpha" for j in range(_NR)]
    lines.append("    else:")
    for r in range(_MR):
        lines += [f"        {acc[r][j]} = _fma32({acc[r][j]}, alpha, c[cr{r} + np.uint64({j})])"
                  for j in range(_NR)]
    for r in range(_MR):
        lines += [f"        c[cr{r} + np.uint64({j})] = {acc[r][j]}" for j in range(_NR)]
    return "\n".join(lines) + "\n"


_namespace = {"np": np, "_fma32": _fma32}
exec(compile(_micro_kernel_source(), "<qsim.kernels.gemm._micro>", "exec"), _namespace)
_micro = numba.njit(nogil=True, fastmath=False)(_namespace["_micro"])


def _copy16_source() -> str:
    """Source of ``_copy16``: ``y[yo + j] = x[xo + j]`` for ``j < 16`` (unsigned offsets), all
    16 loads before the first store, so that LLVM may use two vector loads and stores (stores
    interleaved with loads could alias the next load, which keeps the copy scalar)."""
    lines = ["def _copy16(x, xo, y, yo):"]
    lines += [f"    v{j} = x[xo + np.uint64({j})]" for j in range(_NR)]
    lines += [f"    y[yo + np.uint64({j})] = v{j}" for j in range(_NR)]
    return "\n".join(lines) + "\n"


exec(compile(_copy16_source(), "<qsim.kernels.gemm._copy16>", "exec"), _namespace)
_copy16 = numba.njit(nogil=True, fastmath=False)(_namespace["_copy16"])


@_compile()
def _region_fma(a, b, c, m0, m1, n0, n1, kb, alpha, zero_first):
    """General kernel on rows ``[m0, m1)`` and columns ``[n0, n1)``, ``n1 - n0`` a multiple of
    ``_NR``: K blocks of ``kb``; within a block, ``_MR x _NR`` register blocks (:func:`_micro`,
    the last one possibly shorter) over a column panel whose ``kb x width`` slice of B stays in
    cache. When more than one row block reuses it, that slice is first copied into ``_NR``-column
    strips read sequentially (B's own rows may be a multiple of 4 KiB apart, which the L1
    cache cannot hold: 10x slower); only where the operands sit changes, not the arithmetic."""
    k, lda, ldb, ldc = a.shape[1], a.shape[1], b.shape[1], c.shape[1]
    a1, b1, c1 = a.ravel(), b.ravel(), c.ravel()
    width = min(_PB, max(_NR, (_PANEL // kb) // _NR * _NR))
    pack = m1 - m0 > _MR
    strips = np.empty(kb * width if pack else 0, dtype=np.float32)
    for p0 in range(n0, n1, width):
        p1 = min(n1, p0 + width)
        first = zero_first
        for k0 in range(0, k, kb):
            k1 = min(k, k0 + kb)
            if pack:        # strip by strip (sequential writes), 16 floats at a time
                for j0 in range(p0, p1, _NR):
                    dst = np.uint64((j0 - p0) * kb)
                    for kk in range(k0, k1):
                        _copy16(b1, np.uint64(kk * ldb + j0), strips, dst)
                        dst += np.uint64(_NR)
            for j0 in range(p0, p1, _NR):
                for mb in range(m0, m1, _MR):
                    if pack:
                        _micro(a1, strips, c1, mb * lda, lda, (j0 - p0) * kb - k0 * _NR, _NR,
                               mb * ldc + j0, ldc, k0, k1, alpha, first, min(_MR, m1 - mb))
                    else:
                        _micro(a1, b1, c1, mb * lda, lda, j0, ldb, mb * ldc + j0, ldc, k0, k1,
                               alpha, first, min(_MR, m1 - mb))
            first = False


@_compile()
def _tile_fma(a, b, c, m0, m1, n0, n1, kb, alpha, zero_first):
    """General kernel on a tile: :func:`_region_fma` on the columns that fill whole register
    blocks; the last ``< _NR`` columns are copied into a zero-padded ``_NR``-column strip and
    computed the same way (the padding columns' outputs are dropped).

    Both parts go through one call site of :func:`_region_fma` with operands of one type: LLVM
    would otherwise optimize the inlined kernel chain once per call site (seconds each, on a
    cold cache)."""
    n_full = n0 + (n1 - n0) // _NR * _NR
    edge = n1 - n_full
    bpad = np.zeros((a.shape[1] if edge else 0, _NR), dtype=np.float32)
    cpad = np.zeros((m1 if edge else 0, _NR), dtype=np.float32)
    if edge:
        bpad[:, :edge] = b[:, n_full:n1]
        if not zero_first:
            cpad[m0:m1, :edge] = c[m0:m1, n_full:n1]
    for part in range(2):
        if part == 0:
            bb, cc, lo, hi = b, c, n0, n_full
        else:
            bb, cc, lo, hi = bpad, cpad, n_full - n_full, _NR if edge else 0
        if hi > lo:
            _region_fma(a, bb, cc, m0, m1, lo, hi, kb, alpha, zero_first)
    if edge:
        c[m0:m1, n_full:n1] = cpad[m0:m1, :edge]


#: outputs of one row computed side by side from B's rows (:func:`_dot8`); more rows than the
#: L1 cache's 8 ways would evict each other when B's row length is a multiple of 4 KiB
_DOT = 8


def _dot_kernel_source() -> str:
    """Source of ``_dot8``: ``_DOT`` consecutive outputs ``c[c0 + j]`` of one row of A against
    ``_DOT`` rows of ``bt`` (B transposed: each output's K values contiguous) over the K block
    ``[k0, k1)``: per output ``acc = fma(a[k], bt[j, k], acc)`` from 0, then ``c = acc · alpha``
    (``first``) or ``c = fma(acc, alpha, c)`` — :func:`_micro`'s chain, one scalar variable per
    output so the chains run side by side."""
    lines = ["def _dot8(a, bt, c, a0, b0, ldb, c0, k0, k1, alpha, first):",
             "    f0 = np.float32(0.0)"]
    lines += [f"    r{j} = np.uint64(b0 + {j} * ldb)" for j in range(_DOT)]
    lines.append("    " + ", ".join(f"s{j}" for j in range(_DOT)) + " = "
                 + ", ".join(["f0"] * _DOT))
    lines += ["    for kk in range(k0, k1):",
              "        ko = np.uint64(kk)",
              "        av = a[np.uint64(a0) + ko]"]
    lines += [f"        s{j} = _fma32(av, bt[r{j} + ko], s{j})" for j in range(_DOT)]
    lines.append("    if first:")
    lines += [f"        c[np.uint64(c0 + {j})] = s{j} * alpha" for j in range(_DOT)]
    lines.append("    else:")
    lines += [f"        c[np.uint64(c0 + {j})] = _fma32(s{j}, alpha, c[np.uint64(c0 + {j})])"
              for j in range(_DOT)]
    return "\n".join(lines) + "\n"


exec(compile(_dot_kernel_source(), "<qsim.kernels.gemm._dot8>", "exec"), _namespace)
_dot8 = numba.njit(nogil=True, fastmath=False)(_namespace["_dot8"])


@_compile()
def _tile_fma_bt_rows(a, bt, c, m0, m1, n0, n1, kb, alpha, zero_first):
    """:func:`_tile_fma_bt` for a few rows: each row's outputs ``_DOT`` at a time
    (:func:`_dot8`), all K blocks of a group of B's rows before the next group (those rows
    stay in cache), reading B's rows in place; the last ``< _DOT`` outputs one chain at a
    time. Each output's K blocks are merged in ascending order, as in MLAS."""
    k, ldb = a.shape[1], bt.shape[1]
    a1, b1, c1 = a.ravel(), bt.ravel(), c.ravel()
    lda, ldc = a.shape[1], c.shape[1]
    full = n0 + (n1 - n0) // _DOT * _DOT
    for m in range(m0, m1):
        for j0 in range(n0, full, _DOT):
            first = zero_first
            for k0 in range(0, k, kb):
                _dot8(a1, b1, c1, m * lda, j0 * ldb, ldb, m * ldc + j0, k0, min(k, k0 + kb),
                      alpha, first)
                first = False
        for j in range(full, n1):
            first = zero_first
            for k0 in range(0, k, kb):
                acc = np.float32(0.0)
                for kk in range(k0, min(k, k0 + kb)):
                    acc = _fma32(a[m, kk], bt[j, kk], acc)
                c[m, j] = acc * alpha if first else _fma32(acc, alpha, c[m, j])
                first = False


@_compile()
def _tile_fma_bt(a, bt, c, m0, m1, n0, n1, kb, alpha, zero_first):
    """General kernel on a tile of ``c = a @ btᵀ`` with ``bt`` ``(N, K)`` (B given transposed,
    e.g. a Gemm with ``transB=1``): B is read once, in ``kb x 16`` slices copied (transposed)
    into a cache-resident strip, each then used by :func:`_micro` for every row of the tile;
    in the last strip the columns beyond ``n1`` hold stale values whose outputs are dropped.
    The per-output chain is :func:`_tile_fma`'s."""
    k = a.shape[1]
    lda, ldc, rows = a.shape[1], c.shape[1], m1 - m0
    a1 = a.ravel()
    strip = np.zeros(kb * _NR, dtype=np.float32)
    cbuf = np.zeros(rows * _NR, dtype=np.float32)
    for j0 in range(n0, n1, _NR):
        width = min(_NR, n1 - j0)
        if not zero_first:
            for r in range(rows):
                for j in range(width):
                    cbuf[r * _NR + j] = c[m0 + r, j0 + j]
        first = zero_first
        for k0 in range(0, k, kb):
            k1 = min(k, k0 + kb)
            for j in range(width):
                src = bt[j0 + j]
                for kk in range(k0, k1):
                    strip[(kk - k0) * _NR + j] = src[kk]
            for mb in range(0, rows, _MR):
                _micro(a1, strip, cbuf, (m0 + mb) * lda, lda, -k0 * _NR, _NR, mb * _NR, _NR,
                       k0, k1, alpha, first, min(_MR, rows - mb))
            first = False
        for r in range(rows):
            for j in range(width):
                c[m0 + r, j0 + j] = cbuf[r * _NR + j]


@_compile()
def _run_range_bt(a, bt, c, tiles, alpha, zero_first):
    """:func:`_tile_fma_bt` on each (general-kernel) tile of one product."""
    for t in range(tiles.shape[0]):
        _tile_fma_bt(a, bt, c, tiles[t, 0], tiles[t, 1], tiles[t, 2], tiles[t, 3], tiles[t, 5],
                     alpha, zero_first)


@_compile()
def _run_range_bt_rows(a, bt, c, tiles, alpha, zero_first):
    """:func:`_tile_fma_bt_rows` on each (general-kernel) tile of one product."""
    for t in range(tiles.shape[0]):
        _tile_fma_bt_rows(a, bt, c, tiles[t, 0], tiles[t, 1], tiles[t, 2], tiles[t, 3],
                          tiles[t, 5], alpha, zero_first)


def _run_bt(a, bt, c, tiles, alpha, zero_first, threads=DEFAULT_THREADS):
    """``c ← a @ btᵀ`` (one product, every tile of the general kernel) on ``threads`` threads,
    split along columns (:func:`_split_columns`). Tiles of at most 3 rows read B's rows in
    place (:func:`_tile_fma_bt_rows`; too few rows to pay for transposed strips), compiled
    WITHOUT the SLP vectorizer: it would pack the side-by-side scalar chains of
    :func:`_dot8` into vectors gathered element by element, 2-3x slower."""
    a, bt = _readonly_view(_f32c(a)), _readonly_view(bt)
    alpha, zero_first = np.float32(alpha), bool(zero_first)
    if int((tiles[:, 1] - tiles[:, 0]).max()) <= _MR // 2:
        runner = _run_range_bt_rows
        runner(a, bt, c, tiles[:0], alpha, zero_first)                  # compile once
    else:
        runner = _run_range_bt
        with _slp_vectorizer():
            runner(a, bt, c, tiles[:0], alpha, zero_first)              # compile once
    if c.size * a.shape[1] < _MIN_PARALLEL_WORK:
        threads = 1
    _parallel(lambda part: runner(a, bt, c, part, alpha, zero_first),
              _split_columns(tiles, threads * _PARTS_PER_THREAD if threads > 1 else 1), threads)


@_compile()
def _tile_group4(a, b, c, m0, m1, n0, n1, kb, zero_first):
    k = a.shape[1]
    for m in range(m0, m1):
        for n in range(n0, n1):
            out = np.float32(0.0) if zero_first else c[m, n]
            for k0 in range(0, k, kb):
                k1 = min(k, k0 + kb)
                kk = k0
                while k1 - kk >= 4:
                    s = a[m, kk] * b[kk, n] + a[m, kk + 1] * b[kk + 1, n]
                    s = s + a[m, kk + 2] * b[kk + 2, n]
                    s = s + a[m, kk + 3] * b[kk + 3, n]
                    out = s + out
                    kk += 4
                if (k1 - kk) & 2:
                    s = a[m, kk] * b[kk, n] + a[m, kk + 1] * b[kk + 1, n]
                    out = s + out
                    kk += 2
                if (k1 - kk) & 1:
                    out = a[m, kk] * b[kk, n] + out
            c[m, n] = out


def _lane8_source() -> str:
    """Source of ``_lane8_sums``: the eight lanes of MLAS's M = 1 / N = 1 kernel for four
    outputs ``r = 0..3`` at once, over ``count`` products ``x[xo + r·xr + t] · y[yo + r·yr +
    t·ys]``: lane ``j`` of output ``r`` sums the rounded products of ``t ≡ j (mod 8)`` in
    ascending ``t`` from +0 (multiply, then add: no FMA); when ``count`` is not a multiple of 8,
    the lanes past the last product add +0 (MLAS's masked tail, which turns a -0 lane into +0).

    One scalar variable per lane and output, so that LLVM packs each output's eight lanes into
    one vector when ``ys == 1`` (contiguous operands), and the four outputs' chains of additions
    overlap (one chain alone waits on the adder's latency). Returns the 32 lanes, output by
    output; a caller that needs fewer outputs points the others at the same data."""
    lanes = [f"l{r}_{j}" for r in range(4) for j in range(8)]
    lines = ["def _lane8_sums(x, xo, xr, y, yo, yr, ys, count):",
             "    f0 = np.float32(0.0)",
             f"    {', '.join(lanes)} = {', '.join(['f0'] * 32)}",
             "    full = count - count % 8",
             "    u0 = np.uint64(xo)",
             "    v0 = np.uint64(yo)"]
    for r in range(1, 4):
        lines += [f"    u{r} = np.uint64(xo + {r} * xr)", f"    v{r} = np.uint64(yo + {r} * yr)"]
    for contiguous in (True, False):
        lines.append("    if ys == 1:" if contiguous else "    else:")
        lines.append("        for t in range(0, full, 8):")
        lines.append("            tu = np.uint64(t)")
        lines.append("            tv = np.uint64(t)" if contiguous else
                     "            tv = np.uint64(t * ys)")
        for r in range(4):
            for j in range(8):
                yj = f"np.uint64({j})" if contiguous else f"np.uint64({j} * ys)"
                lines.append(f"            l{r}_{j} = l{r}_{j} + x[u{r} + tu + np.uint64({j})]"
                             f" * y[v{r} + tv + {yj}]")
    lines += ["    tail = count - full",
              "    if tail:",
              "        tu, tv = np.uint64(full), np.uint64(full * ys)"]
    for r in range(4):
        lines += [f"        l{r}_{j} = l{r}_{j} + (x[u{r} + tu + np.uint64({j})] * "
                  f"y[v{r} + tv + np.uint64({j} * ys)] if {j} < tail else f0)" for j in range(8)]
    lines.append(f"    return {', '.join(lanes)}")
    return "\n".join(lines) + "\n"


exec(compile(_lane8_source(), "<qsim.kernels.gemm._lane8_sums>", "exec"), _namespace)
_lane8_sums = numba.njit(nogil=True, fastmath=False)(_namespace["_lane8_sums"])


@_compile()
def _reduce8(x, o, group):
    """Lanes ``x[o : o + 8]`` (of a tuple) reduced as MLAS does for an output computed in a
    group of ``group`` (4, 2 or 1) outputs."""
    if group == 4:
        return (((x[o] + x[o + 1]) + x[o + 2]) + x[o + 3]) \
            + (((x[o + 4] + x[o + 5]) + x[o + 6]) + x[o + 7])
    if group == 2:
        return ((x[o] + x[o + 2]) + (x[o + 4] + x[o + 6])) \
            + ((x[o + 1] + x[o + 3]) + (x[o + 5] + x[o + 7]))
    return ((x[o] + x[o + 1]) + (x[o + 2] + x[o + 3])) \
        + ((x[o + 4] + x[o + 5]) + (x[o + 6] + x[o + 7]))


@_compile()
def _group_of(i, count):
    """Group size (4, 2 or 1) of output ``i`` of ``count`` outputs taken 4, then 2, then 1."""
    full = count - count % 4
    if i < full:
        return 4
    if (count & 2) and i < full + 2:
        return 2
    return 1


@_compile()
def _lane8_region(a1, lda, b1, sk, sn, c1, ldc, k, m0, m1, n0, n1, kb, zero_first, along_n):
    """``LANE8`` kernel on rows ``[m0, m1)`` and columns ``[n0, n1)`` of ``c = a @ b`` (flat
    operands; B's element ``(kk, n)`` at ``kk·sk + n·sn``): per output and K block of ``kb``,
    the eight lanes (:func:`_lane8_sums`) reduced for the output's group (:func:`_group_of`:
    along the columns for ``LANE8_N``, the rows for ``LANE8_M``), then ``c = r + c``. Outputs
    are computed four at a time along that axis (the last one to three one at a time)."""
    outer0, outer1 = (m0, m1) if along_n else (n0, n1)
    inner0, inner1 = (n0, n1) if along_n else (m0, m1)
    f0 = np.float32(0.0)
    for o in range(outer0, outer1):
        i = inner0
        while i < inner1:
            width = 4 if inner1 - i >= 4 else 1
            m, n = (o, i) if along_n else (i, o)
            dm, dn = (0, 1) if along_n else (1, 0)          # next output
            xr, yr = dm * lda * (width > 1), dn * sn * (width > 1)
            base = m * ldc + n
            step = dm * ldc + dn
            s0 = f0 if zero_first else c1[base]
            s1 = f0 if zero_first or width == 1 else c1[base + step]
            s2 = f0 if zero_first or width == 1 else c1[base + 2 * step]
            s3 = f0 if zero_first or width == 1 else c1[base + 3 * step]
            g0 = _group_of(i - inner0, inner1 - inner0)
            g1 = _group_of(i + 1 - inner0, inner1 - inner0)
            g2 = _group_of(i + 2 - inner0, inner1 - inner0)
            g3 = _group_of(i + 3 - inner0, inner1 - inner0)
            for k0 in range(0, k, kb):
                k1 = min(k, k0 + kb)
                lanes = _lane8_sums(a1, m * lda + k0, xr, b1, k0 * sk + n * sn, yr, sk, k1 - k0)
                s0 = _reduce8(lanes, 0, g0) + s0
                s1 = _reduce8(lanes, 8, g1) + s1
                s2 = _reduce8(lanes, 16, g2) + s2
                s3 = _reduce8(lanes, 24, g3) + s3
            c1[base] = s0
            if width == 4:
                c1[base + step] = s1
                c1[base + 2 * step] = s2
                c1[base + 3 * step] = s3
            i += width


@_compile()
def _tile_lane8(a, b, c, m0, m1, n0, n1, kb, zero_first, along_n):
    """:func:`_lane8_region` on a tile of ``c = a @ b`` (``b`` ``(K, N)``, C-contiguous; an
    ``N = 1`` B is one contiguous column, so its products vectorize)."""
    _lane8_region(a.ravel(), a.shape[1], b.ravel(), b.shape[1], 1, c.ravel(), c.shape[1],
                  a.shape[1], m0, m1, n0, n1, kb, zero_first, along_n)


@_compile()
def _run_lane8_bt(a, bt, c, tiles, zero_first):
    """``LANE8`` tiles of ``c = a @ btᵀ`` with ``bt`` ``(N, K)`` read in place (a Gemm with
    ``transB=1``: each output's K values are contiguous in both operands)."""
    a1, b1, c1 = a.ravel(), bt.ravel(), c.ravel()
    for t in range(tiles.shape[0]):
        m0, m1, n0, n1, kind, kb = (tiles[t, 0], tiles[t, 1], tiles[t, 2], tiles[t, 3],
                                    tiles[t, 4], tiles[t, 5])
        _lane8_region(a1, a.shape[1], b1, 1, bt.shape[1], c1, c.shape[1], a.shape[1],
                      m0, m1, n0, n1, kb, zero_first, kind == 2)


@_compile()
def _run_tiles(a, b, c, tiles, alpha, zero_first):
    """Compute ``c`` (``(M, N)``) from ``a`` (``(M, K)``) and ``b`` (``(K, N)``) tile by tile."""
    for t in range(tiles.shape[0]):
        m0, m1, n0, n1, kind, kb = (tiles[t, 0], tiles[t, 1], tiles[t, 2], tiles[t, 3],
                                    tiles[t, 4], tiles[t, 5])
        if kind == 0:
            _tile_fma(a, b, c, m0, m1, n0, n1, kb, alpha, zero_first)
        elif kind == 1:
            _tile_group4(a, b, c, m0, m1, n0, n1, kb, zero_first)
        else:
            _tile_lane8(a, b, c, m0, m1, n0, n1, kb, zero_first, kind == 2)


@_compile()
def _run_range(a, b, c, a_index, b_index, tiles, alpha, zero_first, i0, i1):
    """``c[i] = a[a_index[i]] @ b[b_index[i]]`` for ``i0 <= i < i1``."""
    for i in range(i0, i1):
        _run_tiles(a[a_index[i]], b[b_index[i]], c[i], tiles, alpha, zero_first)


def _split_columns(tiles: np.ndarray, parts: int) -> list[np.ndarray]:
    """``tiles`` cut into ``parts`` sets covering disjoint columns: general-kernel tiles are cut
    at multiples of ``_NR`` columns (each output keeps its chain; only the work is divided);
    other tiles (whose arithmetic may depend on an output's position) stay whole in set 0."""
    sets = [[] for _ in range(parts)]
    for tile in tiles.tolist():
        m0, m1, n0, n1, kind, kb = tile
        blocks = -(-(n1 - n0) // _NR)
        if kind != FMA or blocks < parts:
            sets[0].append(tile)
            continue
        for t in range(parts):
            start, size = partition(t, parts, blocks)
            sets[t].append((m0, m1, n0 + start * _NR, min(n1, n0 + (start + size) * _NR), kind, kb))
    return [_as_array(part) for part in sets if part]


def _readonly_view(x: np.ndarray) -> np.ndarray:
    """A read-only view of ``x`` (no copy)."""
    view = x.view()
    view.flags.writeable = False
    return view


def _writable(x: np.ndarray) -> np.ndarray:
    """``x`` if it is writable, else a copy (the kernels never write B; see _run_parallel)."""
    return x if x.flags.writeable else x.copy()


@functools.lru_cache(maxsize=1)
def _worker_pool() -> ThreadPoolExecutor:
    """The worker threads shared by every product (created on first use, then kept: starting
    threads per call costs ~100 us, as much as a small Conv). Holds no data between calls."""
    return ThreadPoolExecutor(max_workers=DEFAULT_THREADS, thread_name_prefix="qsim-gemm")


#: multiply-adds below which a product whose parts are column strips of one matrix runs on the
#: calling thread alone (a Python pool worker takes 40-60 us to start, the spinning worker a
#: few; the strips' edges cost extra: measured on the 2-core AVX-512 VM, a 2.1M multiply-add
#: 1x1 Conv took 65 us on one thread, 72 on two)
_MIN_PARALLEL_WORK = 1 << 22

#: the same for products split by matrix (a batch, a Conv's groups): the spinning worker pays
#: from ~1M (ShuffleNet's grouped 1x1 Conv of 1.8M: 105 -> 69 us)
_MIN_PARALLEL_BATCH_WORK = 1 << 20

#: the same for depthwise Convs, in taps (output values x kernel size): 0.24M took 84 us on
#: one thread, 60 on two
_MIN_PARALLEL_TAPS = 1 << 17

#: parts per thread a parallel job is cut into: a thread that starts late (a busy machine) finds
#: most parts already done by the others instead of holding everyone up
_PARTS_PER_THREAD = 4


class _Claims:
    """Parts of one parallel job, claimed one at a time by whichever thread asks first."""

    def __init__(self, job, parts):
        self.job, self.parts = job, parts
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.claimed = self.finished = 0
        self.errors: list[BaseException] = []

    def work(self) -> None:
        """Run unclaimed parts until none is left."""
        while True:
            with self.lock:
                if self.claimed == len(self.parts):
                    return
                i = self.claimed
                self.claimed += 1
            try:
                self.job(self.parts[i])
            except BaseException as exc:      # re-raised by the caller of _parallel
                self.errors.append(exc)
            finally:
                with self.lock:
                    self.finished += 1
                    if self.finished == len(self.parts):
                        self.done.set()


def _parallel(job, parts, threads=DEFAULT_THREADS) -> None:
    """``job(part)`` for every part on the calling thread and ``threads - 1`` shared workers
    (:func:`_worker_pool`), each taking the next unclaimed part; returns when every part is
    done, without waiting for a worker that has not started (re-raising any error). Jobs never
    wait on other jobs, so callers in several threads cannot deadlock."""
    parts = list(parts)
    if len(parts) == 1 or threads <= 1:
        for part in parts:
            job(part)
        return
    claims = _Claims(job, parts)
    for _ in range(min(threads, len(parts)) - 1):
        _worker_pool().submit(claims.work)
    claims.work()
    claims.done.wait()
    if claims.errors:
        raise claims.errors[0]


def _ranges(count: int, threads: int) -> list[tuple[int, int]]:
    """``(start, size)`` of the contiguous parts ``count`` items are cut into for ``threads``
    threads (``_PARTS_PER_THREAD`` per thread, at most one item each)."""
    parts = max(1, min(count, threads * _PARTS_PER_THREAD if threads > 1 else 1))
    return [partition(t, parts, count) for t in range(parts)]


@_compile()
def _run_parts(a, b, c, a_index, b_index, tiles, parts, alpha, zero_first, epi, epi_bias,
               epi_codes, epi_values, state):
    """The parts of a batched product that this thread claims (:mod:`qsim.kernels.threads`):
    part ``p`` is ``c[i] = a[a_index[i]] @ b[b_index[i]]`` for ``parts[p, 0] <= i <
    parts[p, 1]`` with the tiles ``tiles[parts[p, 2]:parts[p, 3]]``. ``epi = (on, add, groups)``:
    when ``on``, each product is then given a Conv's epilogue while it is in cache
    (:func:`_nb_bias_steps` on its rows ``g·M .. (g+1)·M`` of the output channels,
    ``g = i mod groups``: ``+ epi_bias`` when ``add``, then the steps ``epi_codes`` /
    ``epi_values``), the same operations as the pass after the product."""
    rows = c.shape[1]
    while True:
        p = claim(state)
        if p >= parts.shape[0]:
            return
        tile_set = tiles[parts[p, 2]:parts[p, 3]]
        for i in range(parts[p, 0], parts[p, 1]):
            _run_tiles(a[a_index[i]], b[b_index[i]], c[i], tile_set, alpha, zero_first)
            if epi[0]:
                g0 = (i % epi[2]) * rows
                _nb_bias_steps(c[i:i + 1], epi_bias[g0:g0 + rows], epi[1] != 0, epi_codes,
                               epi_values[:, g0:g0 + rows])
        finish(state)


#: no epilogue (:func:`_run_parts`' ``epi``, ``epi_bias``, ``epi_codes``, ``epi_values``)
_NO_EPILOGUE = (np.zeros(3, np.int64), np.zeros(1, np.float32), np.zeros(0, np.int64),
                np.zeros((0, 1), np.float32))


def epilogue_arrays(bias, relu: bool, steps, channels: int, groups: int) -> tuple:
    """``(epi, epi_bias, epi_codes, epi_values)`` of :func:`_run_parts` for a Conv's bias,
    Relu and per-channel ``steps`` (``(codes, values)`` or None) over ``channels`` output
    channels in ``groups`` groups: the operations of :func:`_bias_relu`."""
    codes = np.zeros(0, np.int64) if steps is None else np.asarray(steps[0], np.int64)
    values = np.zeros((0, channels), np.float32) if steps is None else \
        np.asarray(steps[1], np.float32)
    if relu:
        codes = np.concatenate([[STEP_RELU], codes]).astype(np.int64)
        values = np.concatenate([np.zeros((1, channels), np.float32), values])
    add = bias is not None
    b = np.asarray(bias, np.float32) if add else np.zeros(channels, np.float32)
    return (np.array([1, int(add), groups], np.int64), np.ascontiguousarray(b),
            np.ascontiguousarray(codes), np.ascontiguousarray(values))


#: job kinds of the spinning worker (:func:`_serve`)
_JOB_GEMM, _JOB_GROUP4, _JOB_MAX_POOL, _JOB_POOL_SUMS = 1, 2, 3, 4
#: polls (about 50 us) the poster spins for the worker's last part before it sleeps instead
_SETTLE_SPINS = 20000


@_compile()
def _post_gemm(box, a, b, c, a_index, b_index, tiles, parts, alpha, zero_first, epi, epi_bias,
               epi_codes, epi_values, state):
    """Post :func:`_run_parts` to the spinning worker (operands from ``box[ARGS]``), compute
    this thread's parts, then settle the job (:func:`qsim.kernels.threads.settle`); returns
    ``(job number, settled)``."""
    o = put_array(box, ARGS, a)
    o = put_array(box, o, b)
    o = put_array(box, o, c)
    o = put_array(box, o, a_index)
    o = put_array(box, o, b_index)
    o = put_array(box, o, tiles)
    o = put_array(box, o, parts)
    o = put_array(box, o, epi)
    o = put_array(box, o, epi_codes)
    o = put_array(box, o, state)
    o = put_array(box, o, epi_bias)
    o = put_array(box, o, epi_values)
    put_words(box, o, bits_of(np.float64(alpha)), 1 if zero_first else 0, 0, 0)
    seq = publish(box, _JOB_GEMM)
    _run_parts(a, b, c, a_index, b_index, tiles, parts, alpha, zero_first, epi, epi_bias,
               epi_codes, epi_values, state)
    return seq, settle(box, seq, _SETTLE_SPINS)


@_compile()
def _gemm_from_box(box):
    """The worker's side of :func:`_post_gemm`: the operands rebuilt from their addresses."""
    a, o = f32_3d(box, ARGS)
    b, o = f32_3d(box, o)
    c, o = f32_3d(box, o)
    a_index, o = i64_1d(box, o)
    b_index, o = i64_1d(box, o)
    tiles, o = i64_2d(box, o)
    parts, o = i64_2d(box, o)
    epi, o = i64_1d(box, o)
    epi_codes, o = i64_1d(box, o)
    state, o = i64_1d(box, o)
    epi_bias, o = f32_1d(box, o)
    epi_values, o = f32_2d(box, o)
    _run_parts(a, b, c, a_index, b_index, tiles, parts, np.float32(float_of(box[o])),
               box[o + 1] != 0, epi, epi_bias, epi_codes, epi_values, state)


@_compile()
def _post_group4(box, x, wf, y, offs, kb, sh, sw, hq, wq, bh, bw, parts, state):
    """:func:`_nb_group4_parts` shared with the spinning worker, as :func:`_post_gemm`."""
    o = put_array(box, ARGS, x)
    o = put_array(box, o, wf)
    o = put_array(box, o, y)
    o = put_array(box, o, offs)
    o = put_array(box, o, parts)
    o = put_array(box, o, state)
    o = put_words(box, o, kb, sh, sw, hq)
    put_words(box, o, wq, bh, bw, 0)
    seq = publish(box, _JOB_GROUP4)
    _nb_group4_parts(x, wf, y, offs, kb, sh, sw, hq, wq, bh, bw, parts, state)
    return seq, settle(box, seq, _SETTLE_SPINS)


@_compile()
def _group4_from_box(box):
    """The worker's side of :func:`_post_group4`."""
    x, o = f32_4d(box, ARGS)
    wf, o = f32_2d(box, o)
    y, o = f32_3d(box, o)
    offs, o = i64_1d(box, o)
    parts, o = i64_2d(box, o)
    state, o = i64_1d(box, o)
    _nb_group4_parts(x, wf, y, offs, box[o], box[o + 1], box[o + 2], box[o + 3], box[o + 4],
                     box[o + 5], box[o + 6], parts, state)


@_compile()
def _post_max_pool(box, x, kh, kw, sh, sw, ph, pw_begin, tail, y, parts, state):
    """:func:`qsim.kernels.mlas_math._max_pool_parts` shared with the spinning worker."""
    o = put_array(box, ARGS, x)
    o = put_array(box, o, y)
    o = put_array(box, o, parts)
    o = put_array(box, o, state)
    o = put_words(box, o, kh, kw, sh, sw)
    put_words(box, o, ph, pw_begin, tail, 0)
    seq = publish(box, _JOB_MAX_POOL)
    mlas_math._max_pool_parts(x, kh, kw, sh, sw, ph, pw_begin, tail, y, parts, state)
    return seq, settle(box, seq, _SETTLE_SPINS)


@_compile()
def _max_pool_from_box(box):
    """The worker's side of :func:`_post_max_pool`."""
    x, o = f32_4d(box, ARGS)
    y, o = f32_4d(box, o)
    parts, o = i64_2d(box, o)
    state, o = i64_1d(box, o)
    mlas_math._max_pool_parts(x, box[o], box[o + 1], box[o + 2], box[o + 3], box[o + 4],
                              box[o + 5], box[o + 6], y, parts, state)


@_compile()
def _post_pool_sums(box, x, hp, wp, pt, pl, rows_value, kh, kw, sh, sw, vector, total, parts,
                    state):
    """:func:`qsim.kernels.mlas_math._pool_sums_parts` shared with the spinning worker."""
    o = put_array(box, ARGS, x)
    o = put_array(box, o, total)
    o = put_array(box, o, parts)
    o = put_array(box, o, state)
    o = put_words(box, o, hp, wp, pt, pl)
    o = put_words(box, o, kh, kw, sh, sw)
    put_words(box, o, bits_of(np.float64(rows_value)), 1 if vector else 0, 0, 0)
    seq = publish(box, _JOB_POOL_SUMS)
    mlas_math._pool_sums_parts(x, hp, wp, pt, pl, rows_value, kh, kw, sh, sw, vector, total,
                               parts, state)
    return seq, settle(box, seq, _SETTLE_SPINS)


@_compile()
def _pool_sums_from_box(box):
    """The worker's side of :func:`_post_pool_sums`."""
    x, o = f32_4d(box, ARGS)
    total, o = f32_4d(box, o)
    parts, o = i64_2d(box, o)
    state, o = i64_1d(box, o)
    mlas_math._pool_sums_parts(x, box[o], box[o + 1], box[o + 2], box[o + 3],
                               np.float32(float_of(box[o + 8])), box[o + 4], box[o + 5],
                               box[o + 6], box[o + 7], box[o + 9] != 0, total, parts, state)


@_compile()
def _serve(box, limit):
    """The spinning worker's loop (:class:`qsim.kernels.threads.SpinWorker`): run each job
    posted in ``box`` as it comes; return after ``limit`` polls without one."""
    polls = 0
    while polls < limit:
        seq = take(box)
        if seq == 0:
            polls = idle(polls)
            continue
        if box[KIND] == _JOB_GEMM:
            _gemm_from_box(box)
        elif box[KIND] == _JOB_GROUP4:
            _group4_from_box(box)
        elif box[KIND] == _JOB_MAX_POOL:
            _max_pool_from_box(box)
        elif box[KIND] == _JOB_POOL_SUMS:
            _pool_sums_from_box(box)
        done(box, seq)
        polls = 0


@functools.lru_cache(maxsize=None)
def _spin_worker(pid: int) -> "threads_.SpinWorker":
    """The spinning worker of this process (made on first use; threads do not survive a
    fork). Its loop and the kernels it calls are compiled here first, with the SLP pass."""
    with _slp_vectorizer():
        _serve(np.zeros(threads_.BOX_SIZE, dtype=np.int64), 0)
    return threads_.SpinWorker(_serve)


def _share(post, args: tuple, state: np.ndarray) -> bool:
    """``post(box, *args, state)`` with the spinning worker taking parts; False (nothing run)
    if another thread of this process is using the worker."""
    worker = _spin_worker(os.getpid())
    if not worker.lock.acquire(blocking=False):
        return False
    try:
        worker.wake()
        if not post.overloads:
            with _slp_vectorizer():
                seq, settled = post(worker.box, *args, state)
        else:
            seq, settled = post(worker.box, *args, state)
        if not settled:
            worker.finish(seq)
    finally:
        worker.lock.release()
    return True


def run_shared(name: str, args: tuple, threads: int) -> None:
    """Run the parts kernel ``name`` (``"max_pool"`` or ``"pool_sums"`` of
    :mod:`qsim.kernels.mlas_math`; its last operand before ``state`` is the ``(P, 2)`` parts
    array) on this thread, sharing its parts with the spinning worker when ``threads > 1``
    (the pool's threads if another Python thread holds the worker)."""
    post, parts_kernel = {"max_pool": (_post_max_pool, mlas_math._max_pool_parts),
                          "pool_sums": (_post_pool_sums, mlas_math._pool_sums_parts)}[name]
    count = len(args[-1])
    if USE_NUMBA and threads > 1 and count > 1 and _share(post, args, np.zeros(2, np.int64)):
        return
    threads_.run(parts_kernel, args, count, threads)


def _run_parallel(a, b, c, a_index, b_index, tiles, alpha, zero_first, threads,
                  epilogue=None):
    """:func:`_run_tiles` over the batch, split into parts that ``threads`` threads claim
    inside compiled code (:func:`_run_parts`, :mod:`qsim.kernels.threads`): contiguous parts of
    the batch, or for a single product, its columns (:func:`_split_columns`). Numba's
    ``prange`` is not used: its compiled code does not get the SLP-vectorized micro-kernel."""
    count = c.shape[0]
    alpha, zero_first = np.float32(alpha), bool(zero_first)
    # One compiled signature whether the operands are parameters (read-only) or activations,
    # and the same B type as the zero-padded edge strip of _tile_fma: each extra signature
    # costs a full compile of the kernel chain on a cold cache.
    a, b = _readonly_view(a), _writable(b)
    tiles = np.ascontiguousarray(tiles, dtype=np.int64)
    work = count * int(((tiles[:, 1] - tiles[:, 0]) * (tiles[:, 3] - tiles[:, 2])).sum()) \
        * a.shape[2]
    if work < (_MIN_PARALLEL_WORK if count == 1 else _MIN_PARALLEL_BATCH_WORK):
        threads = 1
    if count == 1 and threads > 1:
        sets = _split_columns(tiles, threads * _PARTS_PER_THREAD)
        ends = np.cumsum([len(t) for t in sets])
        parts = np.array([(0, 1, e - len(t), e) for t, e in zip(sets, ends)], dtype=np.int64)
        tiles = np.concatenate(sets)
    else:
        parts = np.array([(start, start + size, 0, len(tiles))
                          for start, size in _ranges(count, threads)], dtype=np.int64)
    args = (a, b, c, a_index, b_index, tiles, parts, alpha, zero_first,
            *(_NO_EPILOGUE if epilogue is None else epilogue))
    if not _run_parts.overloads:
        with _slp_vectorizer():         # compile once, on this thread, with the SLP pass
            _run_parts(*args, np.full(2, len(parts), dtype=np.int64))
    if threads > 1 and len(parts) > 1 and _share(_post_gemm, args, np.zeros(2, np.int64)):
        return
    threads_.run(_run_parts, args, len(parts), threads)


# ---------------------------------------------------------------------------------------------
# NumPy twins (NUMBA_DISABLE_JIT=1, and the tests)
# ---------------------------------------------------------------------------------------------
def _np_tile_fma(a, b, c, m0, m1, n0, n1, kb, alpha, zero_first):
    k = a.shape[1]
    rows, cols = slice(m0, m1), slice(n0, n1)
    alpha = np.float32(alpha)
    first = zero_first
    for k0 in range(0, k, kb):
        acc = np.zeros((m1 - m0, n1 - n0), dtype=np.float32)
        for kk in range(k0, min(k, k0 + kb)):
            acc = fma_np(a[rows, kk, None], b[None, kk, cols], acc)
        c[rows, cols] = acc * alpha if first else fma_np(acc, alpha, c[rows, cols])
        first = False


def _np_group4_sum(prod, k: int, kb: int, out: np.ndarray) -> np.ndarray:
    """The GROUP4 summation order over ``prod(0) … prod(k-1)`` (each a rounded product array),
    in K blocks of ``kb``: ``out = (((p0 + p1) + p2) + p3) + out`` per group of four, then a
    pair and a single for the block's rest. The NumPy twins of both GROUP4 kernels use it."""
    for k0 in range(0, k, kb):
        k1 = min(k, k0 + kb)
        kk = k0
        while k1 - kk >= 4:
            out = (((prod(kk) + prod(kk + 1)) + prod(kk + 2)) + prod(kk + 3)) + out
            kk += 4
        if (k1 - kk) & 2:
            out = (prod(kk) + prod(kk + 1)) + out
            kk += 2
        if (k1 - kk) & 1:
            out = prod(kk) + out
    return out


def _np_tile_group4(a, b, c, m0, m1, n0, n1, kb, zero_first):
    rows, cols = slice(m0, m1), slice(n0, n1)
    out = np.zeros((m1 - m0, n1 - n0), np.float32) if zero_first else c[rows, cols].copy()
    c[rows, cols] = _np_group4_sum(lambda kk: a[rows, kk, None] * b[None, kk, cols],
                                   a.shape[1], kb, out)


def _np_groups(count):
    g = np.ones(count, dtype=np.int64)
    full = count - count % 4
    g[:full] = 4
    if count & 2:
        g[full:full + 2] = 2
    return g


def _np_tile_lane8(a, b, c, m0, m1, n0, n1, kb, zero_first, along_n):
    k = a.shape[1]
    rows, cols = slice(m0, m1), slice(n0, n1)
    out = np.zeros((m1 - m0, n1 - n0), np.float32) if zero_first else c[rows, cols].copy()
    groups = (_np_groups(n1 - n0)[None, :] if along_n else _np_groups(m1 - m0)[:, None])
    groups = np.broadcast_to(groups, out.shape)
    for k0 in range(0, k, kb):
        k1 = min(k, k0 + kb)
        x = [np.zeros(out.shape, np.float32) for _ in range(8)]
        for kk in range(k0, k1):
            x[(kk - k0) & 7] = x[(kk - k0) & 7] + a[rows, kk, None] * b[None, kk, cols]
        tail = (k1 - k0) & 7
        if tail:
            for j in range(tail, 8):
                x[j] = x[j] + np.float32(0.0)
        r4 = (((x[0] + x[1]) + x[2]) + x[3]) + (((x[4] + x[5]) + x[6]) + x[7])
        r2 = ((x[0] + x[2]) + (x[4] + x[6])) + ((x[1] + x[3]) + (x[5] + x[7]))
        r1 = ((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7]))
        out = np.where(groups == 4, r4, np.where(groups == 2, r2, r1)) + out
    c[rows, cols] = out


def _np_run_tiles(a, b, c, tiles, alpha, zero_first):
    for m0, m1, n0, n1, kind, kb in tiles.tolist():
        if kind == FMA:
            _np_tile_fma(a, b, c, m0, m1, n0, n1, kb, alpha, zero_first)
        elif kind == GROUP4:
            _np_tile_group4(a, b, c, m0, m1, n0, n1, kb, zero_first)
        else:
            _np_tile_lane8(a, b, c, m0, m1, n0, n1, kb, zero_first, kind == LANE8_N)


def run_batch(a, b, c, a_index, b_index, tiles, alpha=1.0, zero_first=True, *,
              threads=DEFAULT_THREADS, use_numba=USE_NUMBA, epilogue=None):
    """``c[i] ← a[a_index[i]] @ b[b_index[i]]`` with the tiles' kernels, in place.

    ``a`` ``(Ba, M, K)``, ``b`` ``(Bb, K, N)``, ``c`` ``(B, M, N)`` float32 C-contiguous; when
    ``zero_first`` is false ``c`` holds the (already ``beta``-scaled) addend. ``threads``: how
    many threads share the batch (any count gives the same bits). ``epilogue``
    (:func:`epilogue_arrays`, compiled route only): each product then gets a Conv's bias and
    steps, by the thread that computed it."""
    tiles = _as_array(tiles)
    a_index = np.ascontiguousarray(a_index, dtype=np.int64)
    b_index = np.ascontiguousarray(b_index, dtype=np.int64)
    if use_numba:
        _run_parallel(a, b, c, a_index, b_index, tiles, alpha, zero_first, threads, epilogue)
    else:
        for i in range(c.shape[0]):
            _np_run_tiles(a[a_index[i]], b[b_index[i]], c[i], tiles, alpha, zero_first)
    return c


def _f32c(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


# ---------------------------------------------------------------------------------------------
# ONNX ops
# ---------------------------------------------------------------------------------------------
def gemm(a2, b2, c=None, *, alpha=1.0, beta=1.0, trans_b=False, trans_a=False,
         packed_b=False, threads=DEFAULT_THREADS, use_numba=USE_NUMBA) -> np.ndarray:
    """ONNX ``Gemm`` as ONNX Runtime computes it: ``Y = alpha · A' @ B' + beta · C``.

    ``a2`` ``(M, K)`` and ``b2`` ``(K, N)`` are the already transposed operands, ``trans_a`` /
    ``trans_b`` the node's attributes (they select MLAS's kernels). ``Y`` starts as ``C``
    broadcast to ``(M, N)`` (or is not read when ``C`` is absent or ``beta == 0``), is scaled by
    ``beta`` when ``beta ∉ {0, 1}``, and the product is merged in by :func:`run_batch`.
    ``packed_b``: B is a constant initializer (:func:`packed_tiles`)."""
    m, k = a2.shape
    n = b2.shape[1]
    eff_beta = float(beta) if c is not None and beta != 0.0 else 0.0
    y = np.empty((1, m, n), dtype=np.float32)
    if eff_beta != 0.0:
        y[0] = np.broadcast_to(np.asarray(c, dtype=np.float32), (m, n))
        if eff_beta != 1.0:
            y[0] *= np.float32(eff_beta)
    if k == 0:
        return (y[0] if eff_beta else np.zeros((m, n), np.float32))
    tiles = packed_tiles(m, n, k) if packed_b else gemm_tiles(
        m, n, k, trans_a=bool(trans_a), trans_b=bool(trans_b), alpha=float(alpha), beta=eff_beta,
        threads=threads, ldb=k if trans_b else n, ldc=n)
    tiles = _as_array(tiles)
    if use_numba and b2.T.flags.c_contiguous and np.all(tiles[:, 4] == FMA):
        # B given transposed (transB=1): read it in place, not through a transposed copy
        _run_bt(a2, b2.T, y[0], tiles, alpha, eff_beta == 0.0)
        return y[0]
    if use_numba and b2.T.flags.c_contiguous and np.all((tiles[:, 4] == LANE8_N)
                                                        | (tiles[:, 4] == LANE8_M)):
        # M = 1 with transB=1: both operands' K values contiguous, no transposed copy
        with _slp_vectorizer():
            _run_lane8_bt(_f32c(a2), _readonly_view(b2.T), y[0], tiles, eff_beta == 0.0)
        return y[0]
    run_batch(_f32c(a2)[None], _f32c(b2)[None], y, [0], [0], tiles, alpha,
              eff_beta == 0.0, use_numba=use_numba)
    return y[0]


def matmul(a, b, *, packed_b=False, threads=DEFAULT_THREADS,
           use_numba=USE_NUMBA) -> np.ndarray:
    """ONNX ``MatMul`` as ONNX Runtime computes it (``numpy.matmul`` shapes).

    A 1-D ``A`` is a row ``(1, K)``, a 1-D ``B`` a column ``(K, 1)``. When ``B`` is a matrix (or
    has only leading axes of size 1) or a vector, the leading axes of ``A`` are folded into M
    (one product; a vector ``B`` always takes the ``GROUP4`` kernel, found by experiment);
    otherwise one product per broadcast batch index, all with the same tiles. ``packed_b``: B is a constant initializer (:func:`packed_tiles`)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    a_nd = a[None, :] if a.ndim == 1 else a
    b_nd = b[:, None] if b.ndim == 1 else b
    k = a_nd.shape[-1]
    lead = np.broadcast_shapes(a_nd.shape[:-2], b_nd.shape[:-2])
    if b_nd.ndim > 2 and math.prod(b_nd.shape[:-2]) == 1:   # ORT treats it as a matrix
        b_nd = b_nd.reshape(b_nd.shape[-2:])
    if b_nd.ndim == 2:
        m, n = a_nd.shape[-2], b_nd.shape[1]
        a3 = _f32c(a_nd.reshape(1, -1, k))
        b3 = _f32c(b_nd)[None]
        c = np.zeros((1, a3.shape[1], n), np.float32)
        if k and c.size:
            if packed_b:
                tiles = packed_tiles(a3.shape[1], n, k)
            elif b.ndim == 1:   # ONNX Runtime runs a vector B through MLAS's M = 1 kernel
                tiles = [(0, a3.shape[1], 0, 1, GROUP4, k)]
            else:
                tiles = gemm_tiles(a3.shape[1], n, k, threads=threads)
            run_batch(a3, b3, c, [0], [0], tiles, use_numba=use_numba)
        shape = lead + (m, n)
    else:
        batch = np.broadcast_shapes(a_nd.shape[:-2], b_nd.shape[:-2])
        m, n = a_nd.shape[-2], b_nd.shape[-1]
        a_idx = np.broadcast_to(np.arange(math.prod(a_nd.shape[:-2])).reshape(a_nd.shape[:-2]),
                                batch).ravel()
        b_idx = np.broadcast_to(np.arange(math.prod(b_nd.shape[:-2])).reshape(b_nd.shape[:-2]),
                                batch).ravel()
        a3 = _f32c(a_nd.reshape(-1, m, k))
        b3 = _f32c(b_nd.reshape(-1, k, n))
        c = np.zeros((a_idx.size, m, n), np.float32)
        if k and c.size:
            tiles = (packed_tiles(m, n, k) if packed_b
                     else gemm_tiles(m, n, k, batch=a_idx.size, threads=threads))
            run_batch(a3, b3, c, a_idx, b_idx, tiles, use_numba=use_numba)
        shape = batch + (m, n)
    y = c.reshape(shape)
    if a.ndim == 1:
        y = y[..., 0, :]
    if b.ndim == 1:
        y = y[..., 0]
    return y


def _conv_operation_tiles(m, start, count, k, p):
    """Tiles of ``MlasConvOperation`` on output columns ``[start, start + count)``: K in blocks
    of ``stride_k(count, k)``, one ``sgemm`` call (alpha 1, beta 0 then 1) per block."""
    kb = stride_k(count, k)
    return _call_tiles(0, m, start, start + count, k, trans_a=False, trans_b=False, alpha=1.0,
                       beta=0.0, ldb_is_1=count == 1, ldc_is_1=p == 1, chunk=kb)


def conv_tiles(*, batch, group, m, c, k, in_shape, kernel, strides, dilations, begins, ends,
               threads=DEFAULT_THREADS):
    """``(tiles, trans_b)`` of ONNX Runtime's Conv (MlasConvPrepare / MlasConv) for one
    ``(image, group)`` product ``W_g (m, k) @ cols (k, P)``; ``c`` input channels per group.

    * stride 1, no padding, 1x1 kernel (or a 2-D single-channel kernel spanning the input width,
      or the input height with width 1): ``sgemm`` directly on the input (GemmDirect);
    * else ``m > P``: im2col then a threaded ``sgemm`` (ExpandThenGemm);
    * else im2col by blocks (ExpandThenGemmSegmented): per image and group when ``batch > 1`` or
      ``group > 1``, else split over threads in 16-aligned column segments, each blocked on K
      by its own length.
    """
    p = math.prod(int(v) for v in _out_shape(in_shape, kernel, strides, dilations, begins, ends))
    if len(in_shape) == 1:      # MLAS promotes 1-D to 2-D (1, W)
        in_shape, kernel = (1,) + tuple(in_shape), (1,) + tuple(kernel)
    single = batch == 1 and group == 1
    if all(s == 1 for s in strides) and not any(begins) and not any(ends):
        direct = None
        if k == c:
            direct = (False, p)
        elif len(in_shape) == 2 and all(d == 1 for d in dilations) and c == 1:
            if kernel[1] == in_shape[1]:
                direct = (True, in_shape[1])
            elif kernel[0] == in_shape[0] and kernel[1] == 1:
                direct = (False, in_shape[1])
        if direct is not None:
            trans_b, ldb = direct
            if single:
                tiles = gemm_tiles(m, p, k, trans_b=trans_b, threads=threads, ldb=ldb, ldc=p)
                return tiles, trans_b
            return _call_tiles(0, m, 0, p, k, trans_a=False, trans_b=trans_b, alpha=1.0, beta=0.0,
                               ldb_is_1=ldb == 1, ldc_is_1=p == 1), trans_b
    if m > p:
        return gemm_tiles(m, p, k, threads=threads, ldb=p, ldc=p), False
    if not single:
        return _conv_operation_tiles(m, 0, p, k, p), False
    complexity = float(m) * float(p) * float(k)
    if complexity < float(_THREAD_COMPLEXITY * _MAX_THREADS):
        target = int(complexity / _THREAD_COMPLEXITY) + 1
    else:
        target = _MAX_THREADS
    target = min(target, threads)
    seg = -(-p // target)
    if target > 1:
        seg = -(-seg // _THREAD_ALIGN_N) * _THREAD_ALIGN_N
    if seg >= p:
        return _conv_operation_tiles(m, 0, p, k, p), False
    tiles = []
    for start in range(0, p, seg):
        tiles += _conv_operation_tiles(m, start, min(seg, p - start), k, p)
    return tiles, False


def _out_shape(in_shape, kernel, strides, dilations, begins, ends):
    return tuple((i + b + e - d * (kk - 1) - 1) // s + 1
                 for i, kk, s, d, b, e in zip(in_shape, kernel, strides, dilations, begins, ends))


@_compile()
def _im2col_2d_stride2(x1, i, channels, h, w, out1, kh, kw, sh, dh, bh, bw, oh, ow):
    """:func:`_im2col_2d` for a column stride of 2 (no column dilation), the same values: per
    input row read by an output row, the row zero-padded into a buffer (``bw`` zeros first)
    and split into its even and odd positions, so tap ``kx`` of output ``ox`` (padded position
    ``2·ox + kx``) is ``half[kx mod 2][ox + kx div 2]``: consecutive reads that vectorize."""
    zero = np.float32(0.0)
    p = oh * ow
    length = max(bw + w, 2 * ow + kw) + 2
    half = length // 2 + 1
    row = np.zeros(2 * half, dtype=np.float32)
    split = np.zeros((2, half), dtype=np.float32)
    for c in range(channels):
        for ky in range(kh):
            for oy in range(oh):
                iy = oy * sh + ky * dh - bh
                r0 = (c * kh + ky) * kw
                if iy < 0 or iy >= h:
                    for kx in range(kw):
                        d0 = np.uint64((r0 + kx) * p + oy * ow)
                        for ox in range(ow):
                            out1[d0 + np.uint64(ox)] = zero
                    continue
                src = np.uint64(((i * channels + c) * h + iy) * w)
                for ix in range(w):
                    u = np.uint64(ix)
                    row[np.uint64(bw) + u] = x1[src + u]
                mlas_math.split_even_odd(row, half, split)
                for kx in range(kw):
                    d0 = np.uint64((r0 + kx) * p + oy * ow)
                    ph, off = np.uint64(kx & 1), np.uint64(kx >> 1)
                    for ox in range(ow):
                        u = np.uint64(ox)
                        out1[d0 + u] = split[ph, off + u]


@_compile()
def _im2col_2d(x, i, out, kh, kw, sh, sw, dh, dw, bh, bw, oh, ow):
    """Columns of image ``i`` of ``x`` ``(images, C, H, W)`` into ``out`` ``(C·kh·kw, oh·ow)``:
    ``out[(c·kh + ky)·kw + kx, oy·ow + ox] = x[i, c, oy·sh + ky·dh - bh, ox·sw + kx·dw - bw]``,
    ``+0`` outside the image (zero padding)."""
    channels, h, w = x.shape[1], x.shape[2], x.shape[3]
    zero = np.float32(0.0)
    x1, out1 = x.reshape(-1), out.reshape(-1)       # C-contiguous: flat views
    p = oh * ow
    if sw == 2 and dw == 1:
        _im2col_2d_stride2(x1, i, channels, h, w, out1, kh, kw, sh, dh, bh, bw, oh, ow)
        return
    for c in range(channels):
        for ky in range(kh):
            for kx in range(kw):
                r = (c * kh + ky) * kw + kx
                shift = kx * dw - bw                  # ix = ox·sw + shift
                lo = min(ow, max(0, -(shift // sw)))  # first ox with ix >= 0
                hi = min(ow, max(lo, (w - shift + sw - 1) // sw))   # first with ix >= w
                for oy in range(oh):
                    iy = oy * sh + ky * dh - bh
                    d0 = np.uint64(r * p + oy * ow)   # (unsigned: no wraparound checks, so
                    if iy < 0 or iy >= h:             # the copy vectorizes)
                        for ox in range(ow):
                            out1[d0 + np.uint64(ox)] = zero
                        continue
                    for ox in range(lo):
                        out1[d0 + np.uint64(ox)] = zero
                    src = np.uint64(((i * channels + c) * h + iy) * w + lo * sw + shift)
                    step = np.uint64(sw)
                    for ox in range(hi - lo):
                        u = np.uint64(ox)
                        out1[d0 + np.uint64(lo) + u] = x1[src + u * step]
                    for ox in range(hi, ow):
                        out1[d0 + np.uint64(ox)] = zero


@_compile()
def _nb_bias_relu(y, bias, add, relu):
    """In place over ``y`` ``(N, M, P)`` (C-contiguous): ``v = y[i, m, j] + bias[m]`` when
    ``add``, then ``0 if v < 0 else v`` when ``relu`` (Relu keeps -0 and NaN)."""
    count, m, p = y.shape
    y1 = y.reshape(-1)
    zero = np.float32(0.0)
    for i in range(count):
        for c in range(m):
            b = bias[c] if add else zero
            base = np.uint64((i * m + c) * p)
            if add and relu:
                for j in range(p):
                    v = y1[base + np.uint64(j)] + b
                    y1[base + np.uint64(j)] = zero if v < zero else v
            elif add:
                for j in range(p):
                    y1[base + np.uint64(j)] = y1[base + np.uint64(j)] + b
            else:
                for j in range(p):
                    v = y1[base + np.uint64(j)]
                    y1[base + np.uint64(j)] = zero if v < zero else v


#: the per-channel step codes of :func:`_nb_bias_steps`
STEP_MUL, STEP_ADD, STEP_RELU = 0, 1, 2


@_compile()
def _nb_bias_steps(y, bias, add, codes, values):
    """In place over ``y`` ``(N, M, P)`` (C-contiguous), row by row while the row is in cache:
    ``v = y[i, m, j] + bias[m]`` when ``add``, then each step ``s`` in turn: ``v · values[s, m]``
    (code 0), ``v + values[s, m]`` (code 1) or ``0 if v < 0 else v`` (code 2), every
    operation rounded to float32 (:mod:`qsim.ops.epilogue`)."""
    count, m, p = y.shape
    y1 = y.reshape(-1)
    zero = np.float32(0.0)
    for i in range(count):
        for c in range(m):
            base = np.uint64((i * m + c) * p)
            if add:
                b = bias[c]
                for j in range(p):
                    y1[base + np.uint64(j)] = y1[base + np.uint64(j)] + b
            for s in range(codes.shape[0]):
                v = values[s, c]
                if codes[s] == 0:
                    for j in range(p):
                        y1[base + np.uint64(j)] = y1[base + np.uint64(j)] * v
                elif codes[s] == 1:
                    for j in range(p):
                        y1[base + np.uint64(j)] = y1[base + np.uint64(j)] + v
                else:
                    for j in range(p):
                        t = y1[base + np.uint64(j)]
                        y1[base + np.uint64(j)] = zero if t < zero else t


def _bias_relu(y, bias, relu, use_numba, steps=None):
    """A Conv's bias added last (one float32 addition per output), then its Relu if ``relu``,
    then the per-channel ``steps`` (``(codes, values)`` of :func:`_nb_bias_steps`, from
    :mod:`qsim.ops.epilogue`), in one pass (:func:`_nb_bias_relu`, :func:`_nb_bias_steps`);
    NumPy twin: the broadcast add, then ``where(y < 0, 0, y)``, then one NumPy pass per step.
    ``y`` ``(N, M, P)`` is updated in place."""
    add = bias is not None
    b = np.asarray(bias, dtype=np.float32) if add else np.zeros(y.shape[1], np.float32)
    if steps is not None:
        codes, values = steps
        if relu:
            codes = np.concatenate([[STEP_RELU], codes]).astype(np.int64)
            values = np.concatenate([np.zeros((1, y.shape[1]), np.float32), values])
        if use_numba:
            _nb_bias_steps(y, b, add, codes, values)
            return
        with np.errstate(invalid="ignore", over="ignore"):     # IEEE results, as compiled
            if add:
                y += b.reshape(-1, 1)
            for code, v in zip(codes.tolist(), values):
                if code == STEP_MUL:
                    y *= v.reshape(-1, 1)
                elif code == STEP_ADD:
                    y += v.reshape(-1, 1)
                else:
                    np.copyto(y, np.float32(0.0), where=y < 0)
        return
    if use_numba:
        _nb_bias_relu(y, b, add, bool(relu))
        return
    if add:
        y += b.reshape(-1, 1)
    if relu:
        np.copyto(y, np.float32(0.0), where=y < 0)


@_compile()
def _conv_images_parts(images, weights, c, a_index, tiles, kh, kw, sh, sw, dh, dw, bh, bw, oh,
                       ow, state):
    """The images of :func:`_conv_2d_parallel` that this thread claims
    (:mod:`qsim.kernels.threads`): each expanded into this thread's im2col buffer (made at its
    first image), then ``c[i] = weights[a_index[i]] @ cols`` (:func:`_run_tiles`)."""
    kg = images.shape[1] * kh * kw
    scratch = np.empty((0, 0), dtype=np.float32)
    while True:
        i = claim(state)
        if i >= images.shape[0]:
            return
        if scratch.shape[0] == 0:
            scratch = np.empty((kg, oh * ow), dtype=np.float32)
        _im2col_2d(images, i, scratch, kh, kw, sh, sw, dh, dw, bh, bw, oh, ow)
        _run_tiles(weights[a_index[i]], scratch, c[i], tiles, np.float32(1.0), True)
        finish(state)


def _conv_2d_parallel(images, a, c, a_index, tiles, geometry, threads):
    """A 2-D Conv's products ``c[i] = a[a_index[i]] @ cols_i`` image by image on ``threads``
    threads, each expanding one image at a time into its own im2col buffer
    (:func:`_im2col_2d`; small enough to stay in cache, and no page faults of a fresh
    full-batch matrix) before multiplying it (:func:`_run_tiles`, the same kernels and tiles
    as :func:`run_batch`); the images are claimed inside compiled code
    (:func:`_conv_images_parts`)."""
    # operand types as _run_parallel makes them: A read-only (one signature)
    args = (images, _readonly_view(a), c, a_index, np.ascontiguousarray(tiles, np.int64),
            *geometry)
    if not _conv_images_parts.overloads:
        with _slp_vectorizer():         # compile once, on this thread, with the SLP pass
            _conv_images_parts(*args, np.full(2, images.shape[0], dtype=np.int64))
    threads_.run(_conv_images_parts, args, images.shape[0], threads)


def _single_group4(tiles, mg, p):
    """The K block of ``tiles`` if they are one ``GROUP4`` tile over the whole ``(1, P)`` output
    of a one-filter-per-group product (a depthwise Conv), else 0."""
    if mg != 1 or len(tiles) != 1:
        return 0
    m0, m1, n0, n1, kind, kb = tiles[0]
    return int(kb) if (kind, m0, m1, n0, n1) == (GROUP4, 0, 1, 0, p) else 0


@_compile()
def _nb_group4_conv(x, wf, y, offs, kb, sh, sw, hq, wq, bh, bw, j0, j1):
    """``GROUP4`` products of a one-filter-per-group 2-D Conv computed directly from the image,
    for products ``j0 <= j < j1`` of ``x`` ``(N·G, Cg, H, W)``, ``wf`` ``(G, K)``, ``y``
    ``(N·G, OH, OW)``: per output, ``p_k = wf[g, k] · xpad[k-th tap]`` rounded one by one,
    ``out = +0``; per K block of ``kb``, groups ``s = ((p0 + p1) + p2) + p3`` (then 2, then 1)
    added as ``out = s + out`` (exactly :func:`_tile_group4` on the im2col matrix).

    The zero-padded image (``+0`` at pads, as im2col) is stored as ``sh·sw`` phase planes of
    ``hq x wq``: padded pixel ``(row, col)`` of channel ``c`` at
    ``((c·sh + row mod sh)·sw + col mod sw)·hq·wq + (row div sh)·wq + col div sw``. Output
    ``(oy, ox)``'s tap ``k`` is then at ``offs[k] + oy·wq + ox``: the outputs form one vector
    ``t = oy·wq + ox`` (the ``wq - OW`` extra columns per row are computed and dropped), so the
    loop over ``t`` vectorizes (each lane its own output)."""
    groups = wf.shape[0]
    cg, h, w = x.shape[1], x.shape[2], x.shape[3]
    oh, ow = y.shape[1], y.shape[2]
    k = wf.shape[1]
    plane = hq * wq
    x1, y1 = x.reshape(-1), y.reshape(-1)      # C-contiguous: flat views
    pad = np.zeros(cg * sh * sw * plane + wq, dtype=np.float32)
    size = oh * wq
    acc = np.empty(size, dtype=np.float32)
    first_col = np.empty(sw, dtype=np.int64)        # per column phase: first input column,
    first_pos = np.empty(sw, dtype=np.int64)        # its position in the phase plane,
    counts = np.empty(sw, dtype=np.int64)           # and how many columns (no division later)
    for phase in range(sw):
        first_col[phase] = (phase - bw) % sw
        first_pos[phase] = (first_col[phase] + bw) // sw
        counts[phase] = (w - first_col[phase] + sw - 1) // sw
    g = j0 % groups
    for j in range(j0, j1):
        for c in range(cg):
            row_phase, row_pos = bh % sh, bh // sh
            for iy in range(h):
                for phase in range(sw):
                    dst = (((c * sh + row_phase) * sw + phase) * hq + row_pos) * wq \
                        + first_pos[phase]
                    src = np.uint64((((j * cg + c) * h + iy) * w) + first_col[phase])
                    step, d0 = np.uint64(sw), np.uint64(dst)
                    if sw == 1:                         # (a known unit step: vector copies)
                        for t in range(counts[phase]):
                            u = np.uint64(t)
                            pad[d0 + u] = x1[src + u]
                        continue
                    for t in range(counts[phase]):      # (flat unsigned indices, no views:
                        u = np.uint64(t)                # a view costs atomic refcounts)
                        pad[d0 + u] = x1[src + u * step]
                row_phase += 1
                if row_phase == sh:
                    row_phase, row_pos = 0, row_pos + 1
        acc[:] = np.float32(0.0)
        for k0 in range(0, k, kb):        # (taps read as pad[o + t], unsigned: contiguous
            k1 = min(k, k0 + kb)            # loads without wraparound checks, so the t loops
            kk = k0                         # vectorize; each output's chain is unchanged)
            while k1 - kk >= 4:
                w0, w1, w2, w3 = wf[g, kk], wf[g, kk + 1], wf[g, kk + 2], wf[g, kk + 3]
                o0, o1 = np.uint64(offs[kk]), np.uint64(offs[kk + 1])
                o2, o3 = np.uint64(offs[kk + 2]), np.uint64(offs[kk + 3])
                for t in range(size):
                    u = np.uint64(t)
                    s = w0 * pad[o0 + u] + w1 * pad[o1 + u]
                    s = s + w2 * pad[o2 + u]
                    s = s + w3 * pad[o3 + u]
                    acc[u] = s + acc[u]
                kk += 4
            if (k1 - kk) & 2:
                w0, w1 = wf[g, kk], wf[g, kk + 1]
                o0, o1 = np.uint64(offs[kk]), np.uint64(offs[kk + 1])
                for t in range(size):
                    u = np.uint64(t)
                    acc[u] = (w0 * pad[o0 + u] + w1 * pad[o1 + u]) + acc[u]
                kk += 2
            if (k1 - kk) & 1:
                w0 = wf[g, kk]
                o0 = np.uint64(offs[kk])
                for t in range(size):
                    u = np.uint64(t)
                    acc[u] = w0 * pad[o0 + u] + acc[u]
        for oy in range(oh):
            dst, src = np.uint64((j * oh + oy) * ow), np.uint64(oy * wq)
            for ox in range(ow):
                y1[dst + np.uint64(ox)] = acc[src + np.uint64(ox)]
        g += 1
        if g == groups:
            g = 0


def _np_group4_conv(x, wf, kb, geometry):
    """NumPy twin of :func:`_nb_group4_conv` on all products at once: ``(N·G, OH, OW)``."""
    kh, kw, sh, sw, dh, dw, bh, bw, eh, ew, oh, ow = geometry
    groups = wf.shape[0]
    xp = np.pad(x, [(0, 0), (0, 0), (bh, eh), (bw, ew)])
    wj = wf[np.arange(x.shape[0]) % groups]                       # (N·G, K)

    def prod(kk):
        c, rest = divmod(kk, kh * kw)
        ky, kx = divmod(rest, kw)
        tap = xp[:, c, ky * dh:ky * dh + (oh - 1) * sh + 1:sh, kx * dw:kx * dw + (ow - 1) * sw + 1:sw]
        return wj[:, kk, None, None] * tap

    return _np_group4_sum(prod, wf.shape[1], kb,
                           np.zeros((x.shape[0], oh, ow), dtype=np.float32))


@functools.lru_cache(maxsize=256)
def _tap_offsets(cg, kh, kw, sh, sw, dh, dw, hq, wq) -> np.ndarray:
    """Read-only offsets of the taps ``(c, ky, kx)`` (row-major) in :func:`_nb_group4_conv`'s
    phase planes, for output ``(0, 0)``:
    ``((c·sh + ky·dh mod sh)·sw + kx·dw mod sw)·hq·wq + (ky·dh div sh)·wq + kx·dw div sw``."""
    c = np.arange(cg).reshape(-1, 1, 1)
    ky = np.arange(kh).reshape(1, -1, 1) * dh
    kx = np.arange(kw).reshape(1, 1, -1) * dw
    offs = ((c * sh + ky % sh) * sw + kx % sw) * (hq * wq) + ky // sh * wq + kx // sw
    return _readonly_view(np.ascontiguousarray(offs.ravel(), dtype=np.int64))


def _group4_conv(x, wf, kb, geometry, use_numba):
    """A one-filter-per-group 2-D Conv whose MLAS plan is one ``GROUP4`` tile (depthwise):
    ``x`` ``(N·G, Cg, H, W)``, ``wf`` ``(G, K)`` → ``(N·G, OH, OW)``, on the shared threads."""
    kh, kw, sh, sw, dh, dw, bh, bw, eh, ew, oh, ow = geometry
    if not use_numba:
        return _np_group4_conv(x, wf, kb, geometry)
    cg, h, w = x.shape[1:]
    hq, wq = -(-(h + bh + eh) // sh), -(-(w + bw + ew) // sw)
    offs = _tap_offsets(cg, kh, kw, sh, sw, dh, dw, hq, wq)
    y = np.empty((x.shape[0], oh, ow), dtype=np.float32)
    x, wf = _readonly_view(x), _readonly_view(wf)
    threads = DEFAULT_THREADS if y.size * wf.shape[1] >= _MIN_PARALLEL_TAPS else 1
    parts = np.array([(start, start + size) for start, size in _ranges(x.shape[0], threads)],
                     dtype=np.int64)
    args = (x, wf, y, offs, kb, sh, sw, hq, wq, bh, bw, parts)
    if threads > 1 and len(parts) > 1 and _share(_post_group4, args, np.zeros(2, np.int64)):
        return y
    threads_.run(_nb_group4_parts, args, len(parts), threads)
    return y


@_compile()
def _nb_group4_parts(x, wf, y, offs, kb, sh, sw, hq, wq, bh, bw, parts, state):
    """The parts ``[parts[p, 0], parts[p, 1])`` of :func:`_nb_group4_conv`'s products that this
    thread claims (:mod:`qsim.kernels.threads`)."""
    while True:
        p = claim(state)
        if p >= parts.shape[0]:
            return
        _nb_group4_conv(x, wf, y, offs, kb, sh, sw, hq, wq, bh, bw, parts[p, 0], parts[p, 1])
        finish(state)


def _columns(x, group, kernel, out, strides, dilations, begins, ends) -> np.ndarray:
    """The im2col matrices of a Conv, ``(N·group, Cg·prod(kernel), P)``, row ``k`` over
    (channel, kernel offsets) in row-major order: the input itself for a 1x1 kernel with stride
    1 and no padding, else a copy of a strided view of the zero-padded input."""
    n, channels = x.shape[:2]
    cg, p = channels // group, math.prod(out)
    kg = cg * math.prod(kernel)
    if math.prod(kernel) == 1 and all(s == 1 for s in strides) and not any(begins) \
            and not any(ends):
        return _f32c(x).reshape(n * group, kg, p)
    widths = [(0, 0), (0, 0)] + [(int(b), int(e)) for b, e in zip(begins, ends)]
    xp = np.pad(x, widths) if any(begins) or any(ends) else x
    sp = xp.strides[2:]
    view = np.lib.stride_tricks.as_strided(
        xp, shape=xp.shape[:2] + kernel + out,
        strides=xp.strides[:2] + tuple(s * d for s, d in zip(sp, dilations))
        + tuple(s * t for s, t in zip(sp, strides)), writeable=False)
    return np.ascontiguousarray(view).reshape(n * group, kg, p)


@functools.lru_cache(maxsize=1024)
def _conv_plan(n, group, mg, cg, kg, spatial, kernel, strides, dilations, begins, ends,
               threads):
    """``(tiles, kb4, a_index, b_index)`` of a Conv shape (arguments as in :func:`conv_tiles`):
    its tiles as a read-only array, the K block of its depthwise ``GROUP4`` plan (0 if none:
    :func:`_single_group4`) and, per product ``i = image · group + g``, the index of its
    filters ``g`` and of its columns ``i`` (read-only). Pure, so cached: a model's Convs
    repeat a few shapes, and planning costs as much as a small Conv's products."""
    tiles, _ = conv_tiles(batch=n, group=group, m=mg, c=cg, k=kg, in_shape=spatial,
                          kernel=kernel, strides=strides, dilations=dilations, begins=begins,
                          ends=ends, threads=threads)
    p = math.prod(_out_shape(spatial, kernel, strides, dilations, begins, ends))
    kb4 = _single_group4(tiles, mg, p) if len(kernel) == 2 and kg > 0 else 0
    b_index = np.arange(n * group, dtype=np.int64)
    a_index = b_index % group
    return (_readonly_view(_as_array(tiles)), kb4, _readonly_view(a_index),
            _readonly_view(b_index))


@dataclass(frozen=True)
class _ConvSetup:
    """Everything :func:`conv` derives from the shapes and attributes alone (cached per
    shape by :func:`_conv_setup`): the output size, the path that computes it, the MLAS plan
    (tiles, depthwise K block, filter and column index per product; writable arrays, as the
    compiled signatures take them, never written) and the geometry the kernels take."""

    out: tuple
    p: int
    mg: int
    cg: int
    kg: int
    path: str       # "m2", "zero", "group4", "images", "im2col", "columns"
    tiles: np.ndarray
    kb4: int
    a_index: np.ndarray
    b_index: np.ndarray
    geometry: tuple


@functools.lru_cache(maxsize=1024)
def _conv_setup(n, channels, spatial, m, kernel, group, strides, dilations, begins, ends,
                family, threads, use_numba) -> _ConvSetup:
    """The :class:`_ConvSetup` of one Conv shape (pure, so cached: a model repeats a few
    shapes, and deriving it costs as much as a small Conv's products)."""
    mg, cg = m // group, channels // group
    kg = cg * math.prod(kernel)
    out = _out_shape(spatial, kernel, strides, dilations, begins, ends)
    p = math.prod(out)
    none = np.zeros(0, np.int64)
    if family == "avx512" and avx512.uses_depthwise_m2(
            group=group, channels=channels, filters=m, kernel=kernel, strides=strides,
            dilations=dilations, begins=begins, ends=ends, out=out):
        return _ConvSetup(out, p, mg, cg, kg, "m2", none.reshape(0, 6), 0, none, none, ())
    tiles, kb4, a_index, b_index = _conv_plan(
        n, group, mg, cg, kg, spatial, kernel, strides, dilations, begins, ends, threads)
    tiles, a_index, b_index = tiles.copy(), a_index.copy(), b_index.copy()
    direct = math.prod(kernel) == 1 and all(s == 1 for s in strides) and not any(begins) \
        and not any(ends)
    geometry = ()
    if kg == 0:
        path = "zero"
    elif kb4:       # depthwise: MLAS's M = 1 kernel, computed from the image directly
        path = "group4"
        geometry = tuple(int(v) for v in (*kernel, *strides, *dilations, *begins, *ends, *out))
    elif use_numba and len(kernel) == 2 and not direct and n * group >= DEFAULT_THREADS:
        path = "images"
        geometry = tuple(int(v) for v in (*kernel, *strides, *dilations, *begins, *out))
    elif use_numba and len(kernel) == 2 and not direct and n * group == 1:
        path = "im2col"
        geometry = tuple(int(v) for v in (*kernel, *strides, *dilations, *begins, *out))
    else:
        path = "columns"
    return _ConvSetup(out, p, mg, cg, kg, path, tiles, kb4, a_index, b_index, geometry)


def conv(x, w, bias=None, *, group=1, strides, dilations, begins, ends,
         threads=DEFAULT_THREADS, use_numba=USE_NUMBA, family="avx2",
         relu=False, steps=None) -> np.ndarray:
    """ONNX ``Conv`` (N-D, grouped) as ONNX Runtime computes it with the kernel ``family``;
    ``begins`` / ``ends`` are the resolved pads, the output ``(N, M, *out)`` is C-contiguous.

    ``Y[n, m, o] = (Σ_k W_g[m, k] · cols[k, o]) + B[m]`` with ``k`` over (channel, kernel offsets)
    in row-major order and the sum in MLAS's order (:func:`conv_tiles`); the bias is added last.
    ``family="avx512"``: the depthwise multiplier-2 7x7/2 Convs MLAS gives its own AVX512F kernel
    (:func:`qsim.kernels.avx512.uses_depthwise_m2`) are computed by
    :func:`qsim.kernels.avx512.depthwise_m2_7x7s2`, then the bias is added. ``relu``: then
    ``Y = 0 if Y < 0 else Y`` (ONNX Runtime's Relu node, in the same pass as the bias);
    ``steps``: then the per-channel ops ``(codes, values)`` of :func:`_nb_bias_steps` (from
    :mod:`qsim.ops.epilogue`), in that pass too."""
    x = np.asarray(x, dtype=np.float32)
    w = np.asarray(w, dtype=np.float32)
    n, channels = x.shape[:2]
    spatial, kernel = tuple(x.shape[2:]), tuple(w.shape[2:])
    m = w.shape[0]
    s = _conv_setup(n, channels, spatial, m, kernel, group, tuple(strides), tuple(dilations),
                    tuple(begins), tuple(ends), family, threads, use_numba)
    mg, cg, kg, p, out = s.mg, s.cg, s.kg, s.p, s.out
    if s.path == "m2":
        y = np.ascontiguousarray(avx512.depthwise_m2_7x7s2(x, w, use_numba=use_numba))
        if bias is not None or relu or steps is not None:
            _bias_relu(y.reshape(n, m, -1), bias, relu, use_numba, steps)
        return y
    a = _f32c(w.reshape(group, mg, kg))
    if s.path == "zero":
        y = np.zeros((n * group, mg, p), dtype=np.float32)
    elif s.path == "group4":
        images = _f32c(x).reshape((n * group, cg) + spatial)
        y = _group4_conv(images, _f32c(w.reshape(group, kg)), s.kb4, s.geometry, use_numba)
    elif s.path == "images":
        # every thread expands and multiplies its own images (see _conv_2d_parallel)
        images = _readonly_view(_f32c(x).reshape((n * group, cg) + spatial))
        y = np.empty((n * group, mg, p), dtype=np.float32)
        _conv_2d_parallel(images, a, y, s.a_index, s.tiles, s.geometry, DEFAULT_THREADS)
    elif s.path == "im2col":
        cols = np.empty((1, kg, p), dtype=np.float32)
        _im2col_2d(_readonly_view(_f32c(x)), 0, cols[0], *s.geometry)
        y = np.empty((1, mg, p), dtype=np.float32)
        run_batch(a, cols, y, s.a_index, s.b_index, s.tiles, use_numba=use_numba)
    else:
        cols = _columns(x, group, kernel, out, strides, dilations, begins, ends)
        y = np.empty((n * group, mg, p), dtype=np.float32)
        if use_numba and n * group > 1 and (bias is not None or relu or steps is not None):
            # each product's bias and steps by the thread that computed it, still in cache
            run_batch(a, cols, y, s.a_index, s.b_index, s.tiles, use_numba=use_numba,
                      epilogue=epilogue_arrays(bias, relu, steps, m, group))
            return y.reshape((n, m) + out)
        run_batch(a, cols, y, s.a_index, s.b_index, s.tiles, use_numba=use_numba)
    if bias is not None or relu or steps is not None:
        _bias_relu(y.reshape(n, m, p), bias, relu, use_numba, steps)
    return y.reshape((n, m) + out)


def conv_transpose_columns(x, w, *, group=1, threads=DEFAULT_THREADS,
                           use_numba=USE_NUMBA) -> np.ndarray:
    """The column matrix of ONNX Runtime's ConvTranspose, ``cols = W_gᵀ @ X_g`` per image and
    group (``sgemm`` with A transposed), laid out ``(M, *kernel, N, *in)`` for the col2im
    scatter (which ONNX Runtime sums in kernel-offset order, then adds the bias)."""
    x = np.asarray(x, dtype=np.float32)
    w = np.asarray(w, dtype=np.float32)
    n, channels = x.shape[:2]
    spatial, kernel = tuple(x.shape[2:]), tuple(w.shape[2:])
    cg = channels // group
    mk = w.shape[1] * math.prod(kernel)
    hw = math.prod(spatial)
    a = _f32c(w.reshape(group, cg, mk).transpose(0, 2, 1))          # (G, Mg·k, Cg)
    b = _f32c(x).reshape(n * group, cg, hw)
    c = np.empty((n * group, mk, hw), dtype=np.float32)
    if cg == 0:
        c[...] = 0
    else:
        tiles = gemm_tiles(mk, hw, cg, trans_a=True, threads=threads, ldb=hw, ldc=hw)
        run_batch(a, b, c, np.tile(np.arange(group), n), np.arange(n * group), tiles,
                  use_numba=use_numba)
    m = w.shape[1] * group
    c = c.reshape((n, m) + kernel + spatial)                       # (N, M, *k, *in)
    return np.moveaxis(c, 0, 1 + len(kernel))                      # (M, *k, N, *in)
