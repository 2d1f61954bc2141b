"""ONNX Runtime's AVX-512F float32 kernels where their bits differ from the AVX2/FMA3 ones.

On a CPU with AVX512F (and an OS that saves its registers) MLAS's ``MLAS_PLATFORM`` constructor
(``platform.cpp``) replaces some FMA3/AVX2 kernels with AVX512F ones. Most give the same bits
(an FMA chain per output element does not care how many lanes compute it). These do not, and
this module restates them operation by operation (facts read from the public MLAS sources,
confirmed bit for bit against ONNX Runtime 1.32 on an AVX-512 CPU):

=========================  ===========================================  ======================
ONNX op                    AVX512F kernel                               function
=========================  ===========================================  ======================
Softmax, LogSoftmax        MlasReduceMaximumF32KernelAvx512F (max from   :func:`softmax_rows`
                           -FLT_MAX), MlasComputeSumExpF32KernelAvx512F
                           (16 lanes, clamp -103.97, VSCALEFPS)
Conv: depthwise, channel   MlasConvDepthwiseMultiplier2CHWKernel7x7S2-   :func:`depthwise_m2_7x7s2`
multiplier 2, 7x7, s 2,    Avx512F (MlasConvPrepare's
pads 3                     DepthwiseMultiplierGreaterThan1 algorithm)
=========================  ===========================================  ======================

The softmax output kernels (``y = e * (1/S)``, ``y = (x - max) - logf(S)``) are the AVX ones on
both families (:mod:`.mlas_math`). ``fma(a, b, c)`` is one fused multiply-add (one rounding);
every other operation is one IEEE float32 operation.

Each kernel exists twice: a Numba loop (``_nb_*``) and a vectorised NumPy twin (``_np_*``) that
gives the same bits (tested); :data:`qsim.jit.USE_NUMBA` chooses one.
"""
from __future__ import annotations

import math

import numpy as np

from ..jit import USE_NUMBA, kernel
from .mlas_math import (_X_LO, _fma32, _fma_np, _logf_nb, _logf_np, np_sumexp_poly, rows_of,
                        sumexp_poly1)

F32 = np.float32
_ZERO, _ONE = F32(0.0), F32(1.0)
#: MlasMinimumF32Value (std::numeric_limits<float>::lowest()), where the AVX512F max starts
_LOWEST = F32(np.finfo(np.float32).min)

# --------------------------------------------------------------------------------------------
# softmax: max (MlasReduceMaximumF32KernelAvx512F)


@kernel
def _vmax(a, b):
    """x86 ``vmaxps a, b`` on one lane: ``a if a > b else b`` (a NaN in either gives ``b``)."""
    return a if a > b else b


@kernel
def _max_avx512(x, lanes):
    """MlasReduceMaximumF32KernelAvx512F on the 1-D ``x`` (``lanes``: scratch of 32)::

        m = -FLT_MAX
        n < 8:  m = vmax(m, x_i) for every i
        else:   four 8-lane accumulators A0..A3 = -FLT_MAX over blocks of 32 (n >= 32),
                A0 = vmax(vmax(A0, A1), vmax(A2, A3)); then A0 over the blocks of 8 left;
                a_j = vmax(A0_j, A0_j+4); b_j = vmax(a_j, a_j+2); m = vmax(b_0, b_1);
                then m = vmax(m, x_i) over the n % 8 last elements
    """
    n = x.size
    m = _LOWEST
    i = 0
    if n >= 8:
        for j in range(32):
            lanes[j] = _LOWEST
        if n >= 32:
            while n - i >= 32:
                for j in range(32):
                    lanes[j] = _vmax(lanes[j], x[i + j])
                i += 32
            for j in range(8):
                lanes[j] = _vmax(lanes[j], lanes[8 + j])
                lanes[16 + j] = _vmax(lanes[16 + j], lanes[24 + j])
                lanes[j] = _vmax(lanes[j], lanes[16 + j])
        while n - i >= 8:
            for j in range(8):
                lanes[j] = _vmax(lanes[j], x[i + j])
            i += 8
        for j in range(4):
            lanes[j] = _vmax(lanes[j], lanes[4 + j])
        b0 = _vmax(lanes[0], lanes[2])
        b1 = _vmax(lanes[1], lanes[3])
        m = _vmax(b0, b1)
    while i < n:
        m = _vmax(m, x[i])
        i += 1
    return m


def _np_vmax(a, b):
    with np.errstate(invalid="ignore"):
        return np.where(a > b, a, b).astype(F32)


def _np_max_avx512(x: np.ndarray) -> np.ndarray:
    """:func:`_max_avx512` of every row of the 2-D ``x``."""
    rows, n = x.shape
    m = np.full(rows, _LOWEST, F32)
    i = 0
    if n >= 8:
        acc = np.full((rows, 32), _LOWEST, F32)
        if n >= 32:
            while n - i >= 32:
                acc = _np_vmax(acc, x[:, i:i + 32])
                i += 32
            a01 = _np_vmax(acc[:, 0:8], acc[:, 8:16])
            a23 = _np_vmax(acc[:, 16:24], acc[:, 24:32])
            acc[:, 0:8] = _np_vmax(a01, a23)
        lanes = acc[:, 0:8]
        while n - i >= 8:
            lanes = _np_vmax(lanes, x[:, i:i + 8])
            i += 8
        a = _np_vmax(lanes[:, 0:4], lanes[:, 4:8])
        m = _np_vmax(_np_vmax(a[:, 0], a[:, 2]), _np_vmax(a[:, 1], a[:, 3]))
    while i < n:
        m = _np_vmax(m, x[:, i])
        i += 1
    return m


# --------------------------------------------------------------------------------------------
# softmax: sum of exponentials (MlasComputeSumExpF32KernelAvx512F)


#: 2^k as float64 for k = -160 .. 130 (index k + 160): VSCALEFPS's scale, exact
_POW2 = np.ldexp(1.0, np.arange(-160, 131)).astype(np.float64)


@kernel
def _sumexp1(x, negmax):
    """One lane of MlasComputeSumExpF32KernelAvx512F::

        v = vmax(-103.972, x + negmax)       (a NaN stays NaN)
        m = fma(v, log2e, B) - B             (B = 1.5*2^23: round to integer)
        r = fma(m, log2_lo, fma(m, log2_hi, v))
        p = fma(fma(... fma(p0, r, p1) ..., r, p56), r, p56)   (degree 6, as FMA3)
        e = VSCALEFPS(p, m) = p * 2^m rounded once (subnormal results included)

    The FMA3 kernel clamps at -88.376 and builds 2^m from exponent bits (0 below 2^-126)."""
    v = x + negmax
    if _X_LO > v:         # vmaxps(lower, v): v unless lower > v
        v = _X_LO
    if v != v:
        return v
    m, p = sumexp_poly1(v)
    # p * 2^m is exact in float64 (-151 <= m <= 0 here); one rounding to float32
    return F32(float(p) * _POW2[int(m) + 160])


def _np_sumexp(x: np.ndarray, negmax: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        v = (x + negmax).astype(F32)
        v = np.where(_X_LO > v, _X_LO, v).astype(F32)
        nan = np.isnan(v)
        m, p = np_sumexp_poly(np.where(nan, _ZERO, v))
        e = (p.astype(np.float64) * np.ldexp(1.0, m.astype(np.int32))).astype(F32)
        return np.where(nan, v, e).astype(F32)


@kernel
def _fold16(lanes):
    """The AVX512F accumulator's reduction: f_j = L_j+8 + L_j (j < 8), then
    ((f0+f1)+(f2+f3)) + ((f4+f5)+(f6+f7))."""
    f0 = lanes[8] + lanes[0]
    f1 = lanes[9] + lanes[1]
    f2 = lanes[10] + lanes[2]
    f3 = lanes[11] + lanes[3]
    f4 = lanes[12] + lanes[4]
    f5 = lanes[13] + lanes[5]
    f6 = lanes[14] + lanes[6]
    f7 = lanes[15] + lanes[7]
    return ((f0 + f1) + (f2 + f3)) + ((f4 + f5) + (f6 + f7))


def _np_lane_sums16(e: np.ndarray) -> np.ndarray:
    """Rows of ``e`` summed as the AVX512F accumulator: lane j = 0 + e[j] + e[j+16] + ... (in
    order; the masked tail adds nothing to the lanes past the row), then :func:`_fold16`."""
    rows, d = e.shape
    pad = (-d) % 16
    ep = np.concatenate([e, np.zeros((rows, pad), F32)], axis=1).reshape(rows, -1, 16)
    lanes = np.zeros((rows, 16), F32)
    for k in range(ep.shape[1]):
        lanes = (lanes + ep[:, k, :]).astype(F32)
    f = (lanes[:, 8:16] + lanes[:, 0:8]).astype(F32)
    g0 = ((f[:, 0] + f[:, 1]) + (f[:, 2] + f[:, 3])).astype(F32)
    g1 = ((f[:, 4] + f[:, 5]) + (f[:, 6] + f[:, 7])).astype(F32)
    return (g0 + g1).astype(F32)


@kernel
def _nb_softmax_rows(x, out, log):
    """Rows of ``x`` (2-D, C-contiguous): Softmax (log=False) or LogSoftmax (log=True)."""
    rows, d = x.shape
    scratch = np.empty(32, np.float32)
    lanes = np.empty(16, np.float32)
    for r in range(rows):
        lanes[:] = _ZERO
        negmax = -_max_avx512(x[r], scratch)
        full = d - d % 16
        for i0 in range(0, full, 16):
            for j in range(16):
                e = _sumexp1(x[r, i0 + j], negmax)
                lanes[j] += e
                if not log:
                    out[r, i0 + j] = e
        for i in range(full, d):   # the masked tail: only real elements add to their lanes
            e = _sumexp1(x[r, i], negmax)
            lanes[i - full] += e
            if not log:
                out[r, i] = e
        total = _fold16(lanes)
        if log:
            lg = _logf_nb(total)
            for i in range(d):
                out[r, i] = (x[r, i] + negmax) - lg
        else:
            scale = _ONE / total
            for i in range(d):
                out[r, i] = out[r, i] * scale


def _np_softmax_rows(x: np.ndarray, log: bool) -> np.ndarray:
    negmax = -_np_max_avx512(x)[:, None]
    e = _np_sumexp(x, negmax)
    total = _np_lane_sums16(e)[:, None]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if log:
            return (((x + negmax).astype(F32)) - _logf_np(total)).astype(F32)
        return (e * (_ONE / total)).astype(F32)


def softmax_rows(x2d, *, log: bool = False) -> np.ndarray:
    """Softmax (or LogSoftmax) of every row of a 2-D array, as MlasComputeSoftmax with the
    AVX512F kernels (rows are independent, so ONNX Runtime's threads never change a bit)::

        negmax = -max(row)          (see _max_avx512: starts from -FLT_MAX)
        e_i = sumexp(x_i, negmax)   (see _sumexp1)
        S = 16-lane sum of e folded to 8 (see _np_lane_sums16)
        softmax:    y_i = e_i * (1 / S)
        logsoftmax: y_i = (x_i + negmax) - logf(S)
    """
    return rows_of(_nb_softmax_rows, _np_softmax_rows, x2d, log)


# --------------------------------------------------------------------------------------------
# depthwise Conv, channel multiplier 2, 7x7, stride 2, pads 3
# (MlasConvDepthwiseMultiplier2CHWKernel7x7S2Avx512F)


@kernel
def _fold7(a0, a1, a2, a3, a4, a5, a6):
    """``_mm512_reduce_add_ps`` of a vector whose lanes 7..15 are +0 (halving tree: lane j + lane
    j+8, then + lane j+4, then + lane j+2, then lane 0 + lane 1)::

        ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (0 + a3))
    """
    return ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (_ZERO + a3))


@kernel
def _nb_depthwise_m2(x, w, out, contract):
    """``out[i, 2c + k] = conv(x[i, c], w[2c + k])`` for k in {0, 1}: 7x7 taps, stride 2,
    pads 3; ``contract``: the border loop fuses each multiply-add (see depthwise_m2_7x7s2)."""
    images, channels, h, wd = x.shape
    oh_n, ow_n = out.shape[2], out.shape[3]
    for i in range(images):
        for c in range(channels):
            for k in range(2):
                f = w[2 * c + k, 0]
                for oh in range(oh_n):
                    y0 = 2 * oh - 3
                    for ow in range(ow_n):
                        x0 = 2 * ow - 3
                        if y0 >= 0 and y0 + 7 <= h and x0 >= 0 and x0 + 7 <= wd:
                            a0 = _ZERO
                            a1 = _ZERO
                            a2 = _ZERO
                            a3 = _ZERO
                            a4 = _ZERO
                            a5 = _ZERO
                            a6 = _ZERO
                            for kh in range(7):
                                row = x[i, c, y0 + kh]
                                a0 = _fma32(row[x0], f[kh, 0], a0)
                                a1 = _fma32(row[x0 + 1], f[kh, 1], a1)
                                a2 = _fma32(row[x0 + 2], f[kh, 2], a2)
                                a3 = _fma32(row[x0 + 3], f[kh, 3], a3)
                                a4 = _fma32(row[x0 + 4], f[kh, 4], a4)
                                a5 = _fma32(row[x0 + 5], f[kh, 5], a5)
                                a6 = _fma32(row[x0 + 6], f[kh, 6], a6)
                            out[i, 2 * c + k, oh, ow] = _fold7(a0, a1, a2, a3, a4, a5, a6)
                        else:
                            acc = _ZERO
                            for kh in range(7):
                                iy = y0 + kh
                                if iy < 0 or iy >= h:
                                    continue
                                for kw in range(7):
                                    ix = x0 + kw
                                    if ix < 0 or ix >= wd:
                                        continue
                                    if contract:
                                        acc = _fma32(x[i, c, iy, ix], f[kh, kw], acc)
                                    else:
                                        acc = acc + x[i, c, iy, ix] * f[kh, kw]
                            out[i, 2 * c + k, oh, ow] = acc


def _np_fold7(a):
    z = np.zeros_like(a[0])
    return (((a[0] + a[4]).astype(F32) + (a[2] + a[6]).astype(F32)).astype(F32)
            + ((a[1] + a[5]).astype(F32) + (z + a[3]).astype(F32)).astype(F32)).astype(F32)


def _np_depthwise_m2(x: np.ndarray, w: np.ndarray, contract: bool) -> np.ndarray:
    n, c, h, wd = x.shape
    oh, ow = (h - 1) // 2 + 1, (wd - 1) // 2 + 1
    xp = np.pad(x, ((0, 0), (0, 0), (3, 3), (3, 3)))
    valid = np.pad(np.ones((h, wd), bool), 3)

    def tap(a, kh, kw):
        return a[..., kh:kh + 2 * oh - 1:2, kw:kw + 2 * ow - 1:2]

    ys, xs = 2 * np.arange(oh) - 3, 2 * np.arange(ow) - 3
    inside = (((ys >= 0) & (ys + 7 <= h))[:, None] & ((xs >= 0) & (xs + 7 <= wd))[None, :])
    out = np.empty((n, 2 * c, oh, ow), F32)
    for k in range(2):
        f = w[k::2, 0]                                           # (C, 7, 7)
        acc = np.zeros((n, c, oh, ow), F32)
        lanes = [np.zeros((n, c, oh, ow), F32) for _ in range(7)]
        for kh in range(7):
            for kw in range(7):
                t = tap(xp, kh, kw)
                fk = f[:, kh, kw].reshape(1, c, 1, 1)
                with np.errstate(invalid="ignore", over="ignore"):
                    step = _fma_np(t, fk, acc) if contract else (acc + t * fk).astype(F32)
                acc = np.where(tap(valid, kh, kw), step, acc).astype(F32)
                lanes[kw] = _fma_np(t, fk, lanes[kw])
        with np.errstate(invalid="ignore", over="ignore"):
            out[:, k::2] = np.where(inside, _np_fold7(lanes), acc)
    return out


def depthwise_m2_7x7s2(x, w, *, use_numba: bool = USE_NUMBA) -> np.ndarray:
    """Depthwise Conv with channel multiplier 2 (``group = C``, ``W`` of shape ``(2C, 1, 7, 7)``),
    stride 2, pads 3, dilation 1, without bias, as MLAS's AVX512F kernel: output ``(N, 2C, OH,
    OW)``, ``OH = (H - 1)//2 + 1``; output channel ``2c + k`` convolves input channel ``c`` with
    filter ``W[2c + k]``. For each output point, with ``(y0, x0) = (2·oh - 3, 2·ow - 3)``:

    * window inside the image: 7 lanes ``a_j = fma(x[y0+6, x0+j], f[6, j], ... fma(x[y0, x0+j],
      f[0, j], 0))`` (kh ascending), then ``((a0+a4) + (a2+a6)) + ((a1+a5) + (0+a3))``
      (``_mm512_reduce_add_ps``, see :func:`_fold7`);
    * else (border): ``acc = 0``; for kh, then kw ascending, taps inside the image only:
      ``acc = fma(x, f, acc)`` (the compiler contracts ``acc += x * f``).

    ONNX Runtime adds the bias afterwards (one float32 add per element)."""
    x = np.ascontiguousarray(x, dtype=F32)
    w = np.ascontiguousarray(w, dtype=F32)
    n, c, h, wd = x.shape
    if use_numba:
        out = np.empty((n, 2 * c, (h - 1) // 2 + 1, (wd - 1) // 2 + 1), F32)
        _nb_depthwise_m2(x, w, out, True)
        return out
    return _np_depthwise_m2(x, w, True)


def uses_depthwise_m2(*, group, channels, filters, kernel, strides, dilations, begins, ends,
                      out) -> bool:
    """Whether MlasConvPrepare picks the AVX512F depthwise multiplier-2 kernel for a Conv: 2-D,
    ``group > 1``, one input and two output channels per group, 7x7 kernel, stride 2, dilation
    1, pads (3, 3, 3, 3), and more output points than the 2 filters (with fewer MLAS has already
    chosen im2col + sgemm). Found in the MLAS sources and confirmed against ONNX Runtime 1.32
    (group 1, other pads, 1x1 outputs take the sgemm path)."""
    return (len(kernel) == 2 and group > 1 and channels == group and filters == 2 * group
            and tuple(kernel) == (7, 7) and tuple(strides) == (2, 2)
            and tuple(dilations) == (1, 1) and tuple(begins) == (3, 3) and tuple(ends) == (3, 3)
            and math.prod(out) > 2)
