"""MatMulNBits with int8 compute (``accuracy_level=4``, MLAS's ``SQNBIT_CompInt8``), 8-bit weights
in blocks of 32, bit for bit as ONNX Runtime 1.32 computes it on x86-64.

This is what ONNX Runtime's default CPU session runs for ``DequantizeLinear(8-bit weight) →
MatMul`` with 16-bit activations (its DQ → MatMulNBits fusion). Notation as in
docs/integer_kernels.md: ``⊗ ⊕ ⊘`` float32 operations (one rounding each), ``fma(a, b, c)``
one rounding of ``a·b + c``, ``rne`` round half to even, ``float(·)`` int32 → float32 (exact
here: every integer below is under 2^24).

**A, quantized per row and block of 32** (``QuantizeARowComputeBlkSum_CompInt8``; a partial
last block is padded with zeros)::

    amax = max |a[k]|                         over the block
    s_a  = amax ⊘ 127
    inv  = 127 ⊘ amax   (0 when amax = 0)
    q_a[k] = rne(a[k] ⊗ inv)                  int8, |q_a| ≤ 127
                                              (0 where a[k] ⊗ inv overflows: amax < 2^-121)
    S_a  = s_a ⊗ float(Σ_k q_a[k])            the block sum

**B** (``uint8`` ``q_b``, scale ``s_b``, zero point ``z_b`` per column and block) enters as its raw
unsigned integers; the zero point only through ``S_b = -(s_b ⊗ float(z_b))`` (packing).

**Per output** ``y[m, n]``, with ``c_j = s_a[m, j] ⊗ s_b[n, j]`` and ``d_j[g]`` the exact int32
dot product of the 4-element group ``g`` (k = 4g … 4g+3) of block ``j`` (``vpdpbusd`` lanes)::

    main  = Σ-tree over lanes (below) of fma-chains of float(d) · c_j
    main  = main ⊕ bias[n]                     (when there is a bias)
    corr  = fma(S_a[m, J-1], S_b[n, J-1], … fma(S_a[m, 0], S_b[n, 0], 0))   (MLAS SGEMM)
    y     = corr ⊕ main

The lanes of the AVX-512 VNNI kernels (``"avx512"``): blocks are taken four at a time (``j = 4t + r``,
``r = 0..3``); for each ``r`` and each lane ``l = 0..3`` an accumulator chains
``acc[r, l] = fma(float(d_j[G_l] + d_j[G_l + 2]), c_j, acc[r, l])`` over ``t``, with
``G = (0, 1, 4, 5)``. The 16 accumulators fold into 8,
``x[i] = acc[2p, l] ⊕ acc[2p + 1, l]`` with ``i = (0, 1, 4, 5)[l] + 2p`` (``p = 0, 1``); the
``J mod 4`` blocks left over then chain on the 8 lanes directly,
``x[g] = fma(float(d_j[g]), c_j, x[g])``. The lanes of the AVX2 kernels (``"avx2"``, no AVX-VNNI): blocks are taken two at a time
(``j = 2t + r``, ``r = 0, 1``); lane ``i = 4h + 2r + u`` (``h, u = 0, 1``) chains
``x[i] = fma(float(d_j[4h + 2u] + d_j[4h + 2u + 1]), c_j, x[i])`` over ``t``; an odd last block
chains on the lanes directly, ``x[g] = fma(float(d_j[g]), c_j, x[g])``. (Its int32 dot products
are exact too: no int16 saturation shows, the golden files include saturating operands.)

The 8 lanes reduce, in both families, as

* columns taken four at a time (all but the last ``N mod 4``):
  ``(((x0 ⊕ x1) ⊕ x2) ⊕ x3) ⊕ (((x4 ⊕ x5) ⊕ x6) ⊕ x7)``;
* the last ``N mod 4`` columns: ``((x0 ⊕ x4) ⊕ (x2 ⊕ x6)) ⊕ ((x1 ⊕ x5) ⊕ (x3 ⊕ x7))``.

Rows, threads and ONNX Runtime's 128-column tiles do not change these (they split M and N on
multiples of 16 columns). How the lanes were found: ONNX Runtime run on one-, two- and three-hot
rows of A (which groups of k share an int32 lane, which products are chained by ``fma``, which
pairs are added first), then checked on random and saturating cases
(tests/data/ort_nbits_int8/, made here and under ``qemu-x86_64 -cpu Haswell``).
Not reproduced (typed refusal, :func:`qsim.kernels.family.nbits_int8`): AVX-512 without VNNI
and AVX2 with AVX-VNNI, whose kernels QEMU cannot run here.

Each kernel is a Numba kernel with a NumPy twin (:data:`qsim.jit.USE_NUMBA` picks one); both
give the same bits.
"""
from __future__ import annotations

import numpy as np

from ..jit import USE_NUMBA, kernel
from .gemm import _fma32, fma_np

F32 = np.float32
BLOCK = 32
#: the kernel families whose CompInt8 arithmetic qsim reproduces (see :mod:`qsim.kernels.family`)
FAMILIES = ("avx2", "avx512")
#: lanes of a block taken in a group of four: lane l sums 4-element groups G[l] and G[l] + 2
_GROUP = np.array([0, 1, 4, 5], np.int64)
#: where accumulator (pair p, lane l) lands among the 8 lanes: _FOLD[l] + 2p
_FOLD = np.array([0, 1, 4, 5], np.int64)


def quantize_a(a2: np.ndarray):
    """A ``float32[M, K]`` quantized per row and block of 32 (zero padded):
    ``(q_a int32[M, J, 32], s_a float32[M, J], S_a float32[M, J])`` with
    ``s_a = amax ⊘ 127``, ``q_a = rne(a ⊗ (127 ⊘ amax))`` (0 when ``amax = 0``) and
    ``S_a = s_a ⊗ float(Σ q_a)``.

    >>> q, s, S = quantize_a(np.array([[254.0, -127.0] + [0.0] * 30], np.float32))
    >>> q[0, 0, :3].tolist(), s.tolist(), S.tolist()
    ([127, -64, 0], [[2.0]], [[126.0]])
    """
    m, k = a2.shape
    blocks = -(-k // BLOCK)
    ap = np.zeros((m, blocks * BLOCK), F32)
    ap[:, :k] = a2
    ap = ap.reshape(m, blocks, BLOCK)
    amax = np.abs(ap).max(axis=-1)
    s_a = (amax / F32(127)).astype(F32)
    nonzero = amax != 0
    with np.errstate(over="ignore", invalid="ignore"):
        inv = np.where(nonzero, F32(127) / np.where(nonzero, amax, F32(1)), F32(0)).astype(F32)
        scaled = np.rint((ap * inv[..., None]).astype(F32))
    # amax < 2^-121: 127 ⊘ amax overflows to inf; the float → int32 conversion gives 0x80000000,
    # whose low byte (AVX-512's int32 → int8 truncation) is 0
    q_a = np.where(np.isfinite(scaled), scaled, 0).astype(np.int32)
    sums = (s_a * q_a.sum(axis=-1).astype(F32)).astype(F32)
    return q_a, s_a, sums


def _lane_dots(q_a: np.ndarray, q_b: np.ndarray) -> np.ndarray:
    """``d[m, n, j, g]``: exact int64 dot products of the 4-element groups ``g = 0..7`` of block
    ``j`` (q_a ``[M, J, 32]``, q_b ``[N, J, 32]``)."""
    m, blocks, _ = q_a.shape
    n = q_b.shape[0]
    return np.einsum("mjgt,njgt->mnjg", q_a.reshape(m, blocks, 8, 4).astype(np.int64),
                     q_b.reshape(n, blocks, 8, 4).astype(np.int64))


def _np_lanes_avx2(d: np.ndarray, c: np.ndarray) -> list:
    """The 8 lane values ``x[i]`` ``[M, N]`` of the AVX2 kernels (NumPy twin)."""
    m, n, blocks, _ = d.shape
    full = blocks // 2 * 2
    x = [np.zeros((m, n), F32) for _ in range(8)]
    for j in range(full):
        for h in range(2):
            for u in range(2):
                g, i = 4 * h + 2 * u, 4 * h + 2 * (j % 2) + u
                x[i] = fma_np((d[:, :, j, g] + d[:, :, j, g + 1]).astype(F32), c[:, :, j], x[i])
    for j in range(full, blocks):
        for g in range(8):
            x[g] = fma_np(d[:, :, j, g].astype(F32), c[:, :, j], x[g])
    return x


def _np_lanes(d: np.ndarray, c: np.ndarray) -> list:
    """The 8 lane values ``x[i]`` ``[M, N]`` of the AVX-512 kernels (NumPy twin)."""
    m, n, blocks, _ = d.shape
    full = blocks // 4 * 4
    acc = np.zeros((4, 4, m, n), F32)
    for j in range(full):
        for lane in range(4):
            g = _GROUP[lane]
            v = (d[:, :, j, g] + d[:, :, j, g + 2]).astype(F32)
            acc[j % 4, lane] = fma_np(v, c[:, :, j], acc[j % 4, lane])
    x = [None] * 8
    for p in range(2):
        for lane in range(4):
            x[_FOLD[lane] + 2 * p] = (acc[2 * p, lane] + acc[2 * p + 1, lane]).astype(F32)
    for j in range(full, blocks):
        for g in range(8):
            x[g] = fma_np(d[:, :, j, g].astype(F32), c[:, :, j], x[g])
    return x


def _np_reduce(x: list, single: np.ndarray) -> np.ndarray:
    """The 8 lanes summed: four-column tree, or the one-column tree where ``single[n]``."""
    lo = ((x[0] + x[1]).astype(F32) + x[2]).astype(F32)
    hi = ((x[4] + x[5]).astype(F32) + x[6]).astype(F32)
    four = ((lo + x[3]).astype(F32) + (hi + x[7]).astype(F32)).astype(F32)
    y0 = ((x[0] + x[4]).astype(F32) + (x[2] + x[6]).astype(F32)).astype(F32)
    y1 = ((x[1] + x[5]).astype(F32) + (x[3] + x[7]).astype(F32)).astype(F32)
    one = (y0 + y1).astype(F32)
    return np.where(single[None, :], one, four)


def _np_matmul(q_a, s_a, sum_a, q_b, s_b, sum_b, bias, single, avx2):
    """NumPy twin of :func:`_nb_matmul` (rows in chunks of about 2^22 lane dot products)."""
    m, blocks = s_a.shape
    rows = max(1, (1 << 22) // max(1, q_b.shape[0] * blocks * 8))
    if m > rows:
        return np.concatenate([_np_matmul(q_a[i:i + rows], s_a[i:i + rows], sum_a[i:i + rows],
                                          q_b, s_b, sum_b, bias, single, avx2)
                               for i in range(0, m, rows)])
    c = (s_a[:, None, :] * s_b[None, :, :]).astype(F32)               # [M, N, J]
    lanes = _np_lanes_avx2 if avx2 else _np_lanes
    main = _np_reduce(lanes(_lane_dots(q_a, q_b), c), single)
    if bias is not None:
        main = (main + bias).astype(F32)
    m, n = main.shape
    corr = np.zeros((m, n), F32)
    for j in range(s_a.shape[1]):
        corr = fma_np(np.broadcast_to(sum_a[:, j, None], (m, n)),
                      np.broadcast_to(sum_b[None, :, j], (m, n)), corr)
    return (corr + main).astype(F32)


@kernel
def _nb_matmul(q_a, s_a, sum_a, q_b, s_b, sum_b, bias, has_bias, single, avx2):
    """Numba kernel: ``y[m, n]`` as the module docstring states (q_a int32 ``[M, J, 32]``,
    q_b uint8 ``[N, J, 32]``, scales and block sums ``[M|N, J]``; ``avx2`` picks the AVX2
    lanes, else AVX-512's)."""
    m, blocks, _ = q_a.shape
    n = q_b.shape[0]
    full = blocks // 4 * 4
    full2 = blocks // 2 * 2
    y = np.empty((m, n), np.float32)
    acc = np.empty((4, 4), np.float32)
    x = np.empty(8, np.float32)
    d = np.empty(8, np.int64)
    zero = np.float32(0.0)
    for i in range(m):
        for col in range(n):
            acc[:, :] = zero
            x[:] = zero
            for j in range(blocks):
                for g in range(8):
                    t = np.int64(0)
                    for e in range(4):
                        t += np.int64(q_a[i, j, 4 * g + e]) * np.int64(q_b[col, j, 4 * g + e])
                    d[g] = t
                c = s_a[i, j] * s_b[col, j]
                if avx2:
                    if j < full2:
                        r = j % 2
                        for h in range(2):
                            for u in range(2):
                                g = 4 * h + 2 * u
                                x[4 * h + 2 * r + u] = _fma32(np.float32(d[g] + d[g + 1]), c,
                                                              x[4 * h + 2 * r + u])
                    else:
                        for g in range(8):
                            x[g] = _fma32(np.float32(d[g]), c, x[g])
                elif j < full:
                    r = j % 4
                    for lane in range(4):
                        g = _GROUP[lane]
                        acc[r, lane] = _fma32(np.float32(d[g] + d[g + 2]), c, acc[r, lane])
                else:
                    if j == full:
                        for p in range(2):
                            for lane in range(4):
                                x[_FOLD[lane] + 2 * p] = acc[2 * p, lane] + acc[2 * p + 1, lane]
                    for g in range(8):
                        x[g] = _fma32(np.float32(d[g]), c, x[g])
            if full == blocks and not avx2:
                for p in range(2):
                    for lane in range(4):
                        x[_FOLD[lane] + 2 * p] = acc[2 * p, lane] + acc[2 * p + 1, lane]
            if single[col]:
                main = ((x[0] + x[4]) + (x[2] + x[6])) + ((x[1] + x[5]) + (x[3] + x[7]))
            else:
                main = (((x[0] + x[1]) + x[2]) + x[3]) + (((x[4] + x[5]) + x[6]) + x[7])
            if has_bias:
                main = main + bias[col]
            corr = zero
            for j in range(blocks):
                corr = _fma32(sum_a[i, j], sum_b[col, j], corr)
            y[i, col] = corr + main
    return y


def matmul(a2: np.ndarray, q_b: np.ndarray, s_b: np.ndarray, z_b: np.ndarray,
           bias: "np.ndarray | None", family: str = "avx512") -> np.ndarray:
    """``y = A @ W^T [+ bias]`` for ``W[n, k] = s_b[n, k//32] ⊗ float(q_b[n, k] - z_b[n, k//32])``
    as ONNX Runtime's CompInt8 kernels of ``family`` (``"avx512"``: AVX-512 VNNI, ``"avx2"``:
    AVX2 without AVX-VNNI) compute it (module docstring).

    ``a2`` float32 ``[M, K]``; ``q_b`` uint8 ``[N, J, 32]`` (K padded to whole blocks); ``s_b``
    float32 and ``z_b`` int ``[N, J]``; ``bias`` float32 ``[N]`` or None. Returns float32
    ``[M, N]``.

    >>> y = matmul(np.full((1, 32), 2.0, np.float32), np.full((1, 1, 32), 130, np.uint8),
    ...            np.array([[0.5]], np.float32), np.array([[128]]), None)
    >>> y.tolist()
    [[64.0]]
    """
    q_a, s_a, sum_a = quantize_a(a2)
    n = q_b.shape[0]
    sum_b = (-(s_b * z_b.astype(F32))).astype(F32)
    single = np.arange(n) >= n - n % 4
    avx2 = family == "avx2"
    if USE_NUMBA:
        b = np.zeros(n, F32) if bias is None else np.ascontiguousarray(bias, F32)
        return _nb_matmul(np.ascontiguousarray(q_a), np.ascontiguousarray(s_a), sum_a,
                          np.ascontiguousarray(q_b), np.ascontiguousarray(s_b, F32), sum_b, b,
                          bias is not None, single, avx2)
    return _np_matmul(q_a, s_a, sum_a, q_b, s_b, sum_b, bias, single, avx2)
