"""float32 math that reproduces ONNX Runtime's CPU kernels bit for bit (x86-64, AVX2 + FMA3).

AIMET evaluates the float ops of its simulated model with ONNX Runtime (CPU execution provider,
graph optimizations disabled). ORT's kernels are not libm: they are MLAS's vectorised
polynomial / rational approximations and Eigen's packet math, with their own summation orders.
Activation encodings are min/max of these outputs, so qsim must compute exactly the same bits.
Every formula below restates, operation by operation, what ORT 1.32 computes on an AVX2/FMA3
machine (facts read from the public MLAS / Eigen sources and confirmed by bitwise experiments
against ``onnxruntime``):

* ``fma(a, b, c)`` is one fused multiply-add (a single rounding), as ``vfmadd*ps`` computes it.
* every other operation is one IEEE float32 operation (round to nearest even).

Each kernel exists twice: a Numba loop (``_nb_*``, compiled by :func:`qsim.jit.kernel`)
and a vectorised NumPy twin (``_np_*``). The twin emulates a fused multiply-add in float64
(:func:`_fma_np`, exact product, then a tie-corrected double rounding). Both give the same bits
(tested); :data:`qsim.jit.USE_NUMBA` chooses one. Public functions take and return float32
arrays; they never mutate their input.

Summary (ORT kernel -> function here):

=====================  ===============================================  =======================
ONNX op                ORT kernel                                       function
=====================  ===============================================  =======================
Sigmoid                MlasLogisticKernelFma3 (rational 9/10)           :func:`logistic`
Tanh                   MlasTanhKernelFma3 (rational 13/6, clamp +-9)    :func:`tanh`
Erf                    MlasErfKernelFma3 (two polynomials + exp)        :func:`erf`
Gelu                   0.5x(1+erf(x/sqrt2)) with MLAS erf / tanh        :func:`gelu`
Exp                    MlasComputeExpF32KernelFma3                      :func:`exp`
Log                    Eigen plog (SSE packets of 4) + libm logf edges  :func:`log`
Softmax, LogSoftmax    MlasComputeSoftmax (SumExp, 8 lanes)             :func:`softmax_rows`
GlobalAveragePool      MlasPoolGlobalKernel (4 lanes)                   :func:`global_average`
AveragePool            MlasPool vector / generic kernels                :func:`pool_window_sums`
ReduceSum, ReduceMean  Eigen redux / row adds / sgemm with ones         :func:`reduce_sum`
LayerNormalization     MlasLayerNormF32 (AVX2) or scalar Welford        :func:`layer_norm_rows`
SimplifiedLayerNorm.   MlasLayerNormF32 RMS branch or scalar loop       :func:`rms_norm_rows`
InstanceNormalization  Eigen mean, squared norm                         :func:`instance_norm_planes`
Resize (linear, 2-D)   UpsampleBilinear                                 :func:`bilinear`
=====================  ===============================================  =======================

BatchNormalization needs no kernel here: ORT computes ``(1/sqrt(var+eps))*scale`` (two roundings),
``B - mean*s`` and ``X*s + t`` (qsim.ops.nn.batch_normalization does the same).

What ORT computes depends on its intra-op thread count only for Log (parallel blocks, see
:func:`parallel_blocks`); :data:`DEFAULT_THREADS` follows ORT's default of one thread per core.
AveragePool follows opset <= 18 (from opset 19 ORT sums every window in row-major order).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import os

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..jit import USE_NUMBA, kernel
from . import threads as threads_

F32 = np.float32

# --------------------------------------------------------------------------------------------
# fused multiply-add


@intrinsic
def _fma32(typingctx, a, b, c):
    """``llvm.fma.f32``: a*b + c with one rounding (compiles to vfmadd on FMA3 machines)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        fty = ir.FloatType()
        fn = builder.module.declare_intrinsic("llvm.fma", [fty], ir.FunctionType(fty, [fty] * 3))
        return builder.call(fn, args)

    return sig, codegen


def _fma_np(a, b, c) -> np.ndarray:
    """float32 fma(a, b, c) in NumPy: the product of two float32 is exact in float64; the sum is
    rounded to float64 (``s``, error ``e`` by TwoSum) and then to float32. The second rounding is
    wrong only when ``s`` lies exactly halfway between two float32 and ``e != 0``: then ``s`` is
    nudged one float64 step towards the true value first. (Exact for normal float32 results.)"""
    a64 = np.asarray(a, np.float64)
    b64 = np.asarray(b, np.float64)
    c64 = np.asarray(c, np.float64)
    p = a64 * b64
    with np.errstate(invalid="ignore", over="ignore"):
        s = p + c64
        bv = s - p
        e = (p - (s - bv)) + (c64 - bv)
        bits = np.asarray(s).view(np.uint64)
        tie = (bits & np.uint64((1 << 29) - 1)) == np.uint64(1 << 28)
        fix = tie & (e != 0) & np.isfinite(e)
        if np.any(fix):
            s = np.where(fix, np.nextafter(s, np.where(e > 0, np.inf, -np.inf)), s)
        return np.asarray(s).astype(F32)


# --------------------------------------------------------------------------------------------
# constants (MLAS compute.cpp / logistic.cpp / tanh.cpp / erf.cpp, Eigen plog_impl_float)

# logistic: p(x)/q(x) + 1/2 on x clamped to [-18, 18]
_LOG_LO, _LOG_HI = F32(-18.0), F32(18.0)
_LA9, _LA7, _LA5, _LA3, _LA1 = (F32(4.37031012579801e-11), F32(1.15627324459942e-07),
                                F32(6.08574864600143e-05), F32(8.51377133304701e-03),
                                F32(2.48287947061529e-01))
_LB10, _LB8, _LB6, _LB4, _LB2, _LB0 = (F32(6.10247389755681e-13), F32(5.76102136993427e-09),
                                       F32(6.29106785017040e-06), F32(1.70198817374094e-03),
                                       F32(1.16817656904453e-01), F32(9.93151921023180e-01))
_HALF, _ZERO, _ONE = F32(0.5), F32(0.0), F32(1.0)

# tanh: p(x)/q(x) on x clamped to [-9, 9]
_TH_LO, _TH_HI = F32(-9.0), F32(9.0)
_TA13, _TA11, _TA9, _TA7, _TA5, _TA3, _TA1 = (
    F32(-2.76076847742355e-16), F32(2.00018790482477e-13), F32(-8.60467152213735e-11),
    F32(5.12229709037114e-08), F32(1.48572235717979e-05), F32(6.37261928875436e-04),
    F32(4.89352455891786e-03))
_TB6, _TB4, _TB2, _TB0 = (F32(1.19825839466702e-06), F32(1.18534705686654e-04),
                          F32(2.26843463243900e-03), F32(4.89352518554385e-03))

# erf: |x| <= 0.921875 odd polynomial, above 1 - exp(-poly(|x|)); |x| capped at 3.925
_ERF_UPPER, _ERF_SPLIT = F32(3.925), F32(0.921875)
_ES0, _ES1, _ES2, _ES3, _ES4, _ES5 = (F32(-5.99104969e-4), F32(4.99339588e-3),
                                      F32(-2.67667342e-2), F32(1.12818025e-1),
                                      F32(-3.76124859e-1), F32(1.28379151e-1))
_EB0, _EB1, _EB2, _EB3, _EB4, _EB5, _EB6 = (F32(1.72948930e-5), F32(-3.83208680e-4),
                                            F32(3.88393435e-3), F32(-2.42545605e-2),
                                            F32(1.06777847e-1), F32(6.34846687e-1),
                                            F32(1.28717512e-1))
_EX_LO, _EX_L2E = F32(-88.3762626647949), F32(1.44269504088896341)
_EX_L2HI, _EX_L2LO = F32(-6.93145752e-1), F32(-1.42860677e-6)
_EX_P0, _EX_P1, _EX_P2, _EX_P3, _EX_P4, _EX_P5, _EX_P6 = (
    F32(1.38319808e-3), F32(8.37550033e-3), F32(4.16689515e-2), F32(1.66664466e-1),
    F32(4.99999851e-1), F32(1.0), F32(1.0))
_EX_C = F32(1.25829120e+7)

# exp (MlasExpConstants)
_X_LO, _X_HI, _X_LO_SUMEXP = F32(-103.9720840454), F32(88.7762626647950), F32(-88.3762626647949)
_X_BIAS = F32(12582912.0)  # 1.5 * 2^23: adding it rounds to an integer
_XP0, _XP1, _XP2, _XP3, _XP4, _XP56 = (F32(float.fromhex("0x1.694000p-10")),
                                       F32(float.fromhex("0x1.125edcp-7")),
                                       F32(float.fromhex("0x1.555b5ap-5")),
                                       F32(float.fromhex("0x1.555450p-3")),
                                       F32(float.fromhex("0x1.fffff6p-2")), F32(1.0))

# log (Eigen plog_impl_float, rational (3,3) on [sqrt(1/2)-1, sqrt(2)-1])
_SQRTHF = F32(0.707106781186547524)
_LP1, _LP2, _LP3 = F32(1.0000000190281136), F32(1.0000000190281063), F32(0.18256296349849254)
_LQ1, _LQ2, _LQ3 = F32(1.4999999999999927), F32(0.59923249590823520), F32(0.049616247954120038)
_LN2 = F32(0.693147180559945309417)

_SQRT1_2 = F32(0.70710678118654752440)
_GELU_B, _GELU_C = F32(0.7978845608028654), F32(0.035677408136300125)

# --------------------------------------------------------------------------------------------
# libm logf (ORT calls std::log(float) for LogSoftmax's log(sum) and Eigen's scalar tail)

_LIBM = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
_LIBM.logf.restype = ctypes.c_float
_LIBM.logf.argtypes = [ctypes.c_float]


def _logf_np(values: np.ndarray) -> np.ndarray:
    """C's logf(v) for each float32 ``v`` (glibc's logf is not correctly rounded, so NumPy's
    float32 log and a rounded float64 log both differ from it in some elements)."""
    flat = np.asarray(values, F32).ravel()
    return np.array([_LIBM.logf(float(v)) for v in flat], F32).reshape(np.shape(values))


@kernel
def _logf_nb(v):
    """C's logf (Numba lowers ``math.log`` of a float32 to a call of libm's logf)."""
    return math.log(v)


# --------------------------------------------------------------------------------------------
# logistic (Sigmoid)


@kernel
def _logistic1(x):
    """MlasLogisticKernelFma3, one lane::

        v = clamp(x, -18, 18); s = v*v
        p = fma(fma(fma(fma(s, a9, a7), s, a5)..., s, a1); p = v*p       (fma(s, p, a))
        q = fma(... fma(s, b10, b8) ..., s, b0)
        y = max(p/q + 0.5, 0)                                            (NaN passes)
    """
    v = x
    if v < _LOG_LO:
        v = _LOG_LO
    if v > _LOG_HI:
        v = _LOG_HI
    s = v * v
    p = _fma32(s, _LA9, _LA7)
    p = _fma32(s, p, _LA5)
    p = _fma32(s, p, _LA3)
    p = _fma32(s, p, _LA1)
    q = _fma32(s, _LB10, _LB8)
    q = _fma32(s, q, _LB6)
    q = _fma32(s, q, _LB4)
    q = _fma32(s, q, _LB2)
    q = _fma32(s, q, _LB0)
    p = v * p
    y = p / q + _HALF
    if y < _ZERO:
        y = _ZERO
    return y


@kernel
def _nb_logistic(x, out):
    for i in range(x.size):
        out[i] = _logistic1(x[i])


def _np_logistic(x: np.ndarray) -> np.ndarray:
    v = np.where(x < _LOG_LO, _LOG_LO, x)
    v = np.where(v > _LOG_HI, _LOG_HI, v)
    s = v * v
    p = _fma_np(s, _LA9, _LA7)
    for a in (_LA5, _LA3, _LA1):
        p = _fma_np(s, p, a)
    q = _fma_np(s, _LB10, _LB8)
    for b in (_LB6, _LB4, _LB2, _LB0):
        q = _fma_np(s, q, b)
    with np.errstate(invalid="ignore"):
        y = (v * p) / q + _HALF
        return np.where(y < _ZERO, _ZERO, y).astype(F32)


# --------------------------------------------------------------------------------------------
# tanh


@kernel
def _tanh1(x):
    """MlasTanhKernelFma3, one lane::

        v = clamp(x, -9, 9); s = v*v
        p = v * fma(s, ... fma(s, a13, a11) ..., a1)
        q = fma(s, ... fma(s, b6, b4) ..., b0)
        y = p / q
    """
    v = x
    if v < _TH_LO:
        v = _TH_LO
    if v > _TH_HI:
        v = _TH_HI
    s = v * v
    p = _fma32(s, _TA13, _TA11)
    p = _fma32(s, p, _TA9)
    p = _fma32(s, p, _TA7)
    p = _fma32(s, p, _TA5)
    p = _fma32(s, p, _TA3)
    p = _fma32(s, p, _TA1)
    p = v * p
    q = _fma32(s, _TB6, _TB4)
    q = _fma32(s, q, _TB2)
    q = _fma32(s, q, _TB0)
    return p / q


@kernel
def _nb_tanh(x, out):
    for i in range(x.size):
        out[i] = _tanh1(x[i])


def _np_tanh(x: np.ndarray) -> np.ndarray:
    v = np.where(x < _TH_LO, _TH_LO, x)
    v = np.where(v > _TH_HI, _TH_HI, v)
    s = v * v
    p = _fma_np(s, _TA13, _TA11)
    for a in (_TA9, _TA7, _TA5, _TA3, _TA1):
        p = _fma_np(s, p, a)
    q = _fma_np(s, _TB6, _TB4)
    for b in (_TB2, _TB0):
        q = _fma_np(s, q, b)
    with np.errstate(invalid="ignore"):
        return ((v * p) / q).astype(F32)


# --------------------------------------------------------------------------------------------
# erf


@kernel
def _erf1(x):
    """MlasErfKernelFma3, one lane (a = min(|x|, 3.925), NaN passes)::

        a < 0.921875:  y = fma(fma(... fma(s0, a², s1) ..., a², s5), a, a)
        otherwise:     r = fma(fma(... fma(b0, a, b1) ..., a, b6), a, a)      (poly in a)
                       t = max(-r, -88.376); m = fma(log2e, t, C) - C          (C = 1.5*2^23)
                       f = fma(m, log2_lo, fma(m, log2_hi, t))
                       e = fma(... fma(p0, f, p1) ..., f, p6)
                       y = 1 - e * 2^m
        result = copysign(y, x)
    """
    a = abs(x)
    if a > _ERF_UPPER:
        a = _ERF_UPPER
    if a < _ERF_SPLIT or a != a:
        s = a * a
        r = _fma32(_ES0, s, _ES1)
        r = _fma32(r, s, _ES2)
        r = _fma32(r, s, _ES3)
        r = _fma32(r, s, _ES4)
        r = _fma32(r, s, _ES5)
        y = _fma32(r, a, a)
    else:
        r = _fma32(_EB0, a, _EB1)
        r = _fma32(r, a, _EB2)
        r = _fma32(r, a, _EB3)
        r = _fma32(r, a, _EB4)
        r = _fma32(r, a, _EB5)
        r = _fma32(r, a, _EB6)
        r = _fma32(r, a, a)
        t = -r
        if t < _EX_LO:
            t = _EX_LO
        m = _fma32(_EX_L2E, t, _EX_C) - _EX_C
        f = _fma32(_EX_L2HI, m, t)
        f = _fma32(m, _EX_L2LO, f)
        e = _fma32(_EX_P0, f, _EX_P1)
        e = _fma32(e, f, _EX_P2)
        e = _fma32(e, f, _EX_P3)
        e = _fma32(e, f, _EX_P4)
        e = _fma32(e, f, _EX_P5)
        e = _fma32(e, f, _EX_P6)
        y = _ONE - e * F32(math.ldexp(1.0, int(m)))
    return np.float32(math.copysign(y, x))


@kernel
def _nb_erf(x, out):
    for i in range(x.size):
        out[i] = _erf1(x[i])


def _np_erf(x: np.ndarray) -> np.ndarray:
    a = np.abs(x)
    a = np.where(a > _ERF_UPPER, _ERF_UPPER, a)
    s = a * a
    r = _fma_np(_ES0, s, _ES1)
    for c in (_ES2, _ES3, _ES4, _ES5):
        r = _fma_np(r, s, c)
    small = _fma_np(r, a, a)
    big = a >= _ERF_SPLIT
    ab = np.where(big, a, _ZERO)
    r = _fma_np(_EB0, ab, _EB1)
    for c in (_EB2, _EB3, _EB4, _EB5, _EB6):
        r = _fma_np(r, ab, c)
    r = _fma_np(r, ab, ab)
    t = np.maximum(-r, _EX_LO)
    m = _fma_np(_EX_L2E, t, _EX_C) - _EX_C
    f = _fma_np(_EX_L2HI, m, t)
    f = _fma_np(m, _EX_L2LO, f)
    e = _fma_np(_EX_P0, f, _EX_P1)
    for c in (_EX_P2, _EX_P3, _EX_P4, _EX_P5, _EX_P6):
        e = _fma_np(e, f, c)
    y = _ONE - e * np.ldexp(_ONE, m.astype(np.int32)).astype(F32)
    return np.copysign(np.where(big, y, small), x).astype(F32)


# --------------------------------------------------------------------------------------------
# exp


@kernel
def _exp1(x):
    """MlasComputeExpF32KernelFma3, one lane::

        v = clamp(x, -103.972, 88.776)
        m = fma(v, log2e, B) - B                      (B = 1.5*2^23: round to integer)
        r = fma(m, log2_lo, fma(m, log2_hi, v))
        p = fma(... fma(p0, r, p1) ..., r, p56)       (degree 5)
        k = clamp(m, -126, 127); s_hi = 2^k; s_lo = 2^(m-k)
        y = fma(p, r*s_lo, s_lo) * s_hi
    """
    if x != x:
        return x
    v = x
    if v < _X_LO:
        v = _X_LO
    if v > _X_HI:
        v = _X_HI
    m = _fma32(v, _EX_L2E, _X_BIAS) - _X_BIAS
    r = _fma32(m, _EX_L2HI, v)
    r = _fma32(m, _EX_L2LO, r)
    p = _fma32(_XP0, r, _XP1)
    p = _fma32(p, r, _XP2)
    p = _fma32(p, r, _XP3)
    p = _fma32(p, r, _XP4)
    p = _fma32(p, r, _XP56)
    mi = int(m)
    k = mi
    if k > 127:
        k = 127
    if k < -126:
        k = -126
    s_lo = F32(math.ldexp(1.0, mi - k))
    s_hi = F32(math.ldexp(1.0, k))
    r = r * s_lo
    p = _fma32(p, r, s_lo)
    return p * s_hi


@kernel
def _nb_exp(x, out):
    for i in range(x.size):
        out[i] = _exp1(x[i])


def _np_exp(x: np.ndarray) -> np.ndarray:
    nan = np.isnan(x)
    v = np.clip(np.where(nan, _ZERO, x), _X_LO, _X_HI).astype(F32)
    m = _fma_np(v, _EX_L2E, _X_BIAS) - _X_BIAS
    r = _fma_np(m, _EX_L2HI, v)
    r = _fma_np(m, _EX_L2LO, r)
    p = _fma_np(_XP0, r, _XP1)
    for c in (_XP2, _XP3, _XP4, _XP56):
        p = _fma_np(p, r, c)
    mi = m.astype(np.int32)
    k = np.clip(mi, -126, 127)
    s_lo = np.ldexp(_ONE, mi - k).astype(F32)
    s_hi = np.ldexp(_ONE, k).astype(F32)
    with np.errstate(over="ignore"):
        y = _fma_np(p, r * s_lo, s_lo) * s_hi
    return np.where(nan, x, y).astype(F32)


# --------------------------------------------------------------------------------------------
# log (Eigen packet path; the last n % 4 elements go through libm logf)


@kernel
def _log1(x):
    """Eigen plog_impl_float (packet path, no FMA: pmadd = multiply then add), one lane::

        x = m * 2^e, m in [0.5, 1)                     (frexp; denormals normalised)
        if m < sqrt(1/2): e -= 1; t = (m - 1) + m  else t = m - 1
        p = t * (t*(t*p3 + p2) + p1);  q = t*(t*(t*q3 + q2) + q1) + 1
        y = e*ln2 + p/q
        x == 0: -inf;  x < 0 or NaN: NaN;  x == +inf: +inf
    """
    if x == _ZERO:
        return F32(-np.inf)
    if not (x > _ZERO):
        return F32(np.nan)
    if x == F32(np.inf):
        return x
    mant, ex = math.frexp(x)
    m = F32(mant)
    e = F32(ex)
    if m < _SQRTHF:
        e = e - _ONE
        t = (m - _ONE) + m
    else:
        t = m - _ONE
    p = t * _LP3 + _LP2
    p = t * p + _LP1
    p = t * p
    q = t * _LQ3 + _LQ2
    q = t * q + _LQ1
    q = t * q + _ONE
    t = p / q
    return e * _LN2 + t


@kernel
def _nb_log(x, scalar, out):
    """Eigen's packet log, or C logf where ``scalar`` is set (see :func:`log_scalar_positions`)."""
    for i in range(x.size):
        if scalar[i]:
            out[i] = _logf_nb(x[i])
        else:
            out[i] = _log1(x[i])


def _np_log(x: np.ndarray, scalar=None) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        mant, ex = np.frexp(np.where(x > 0, x, _ONE))
        m = mant.astype(F32)
        e = ex.astype(F32)
        low = m < _SQRTHF
        e = np.where(low, e - _ONE, e)
        t = np.where(low, (m - _ONE) + m, m - _ONE)
        p = t * (t * (t * _LP3 + _LP2) + _LP1)
        q = t * (t * (t * _LQ3 + _LQ2) + _LQ1) + _ONE
        y = (e * _LN2 + p / q).astype(F32)
        y = np.where(x == 0, F32(-np.inf), y)
        y = np.where(np.isnan(x) | (x < 0), F32(np.nan), y)
        y = np.where(x == np.inf, x, y).astype(F32)
    if scalar is None:
        scalar = log_scalar_positions(x.size, 1)
    if np.any(scalar):
        y[scalar] = _logf_np(x[scalar])
    return y


#: intra-op threads of the ONNX Runtime session being reproduced (ORT's default: one per core)
DEFAULT_THREADS: int = max(1, os.cpu_count() or 1)

#: Eigen TensorOpCost of ORT's float Log per element: 4 bytes loaded, 4 stored, 15 cycles, at
#: 11/64 cycles per byte (found by probing ORT's block boundaries)
_LOG_COST = 4 * 11 / 64 + 4 * 11 / 64 + 15.0


def parallel_blocks(n: int, cost: float, threads: int) -> list[tuple[int, int]]:
    """The ``[start, end)`` blocks of ORT's ``ThreadPool::TryParallelFor(n, cost)`` (Eigen's
    cost model): one block unless ``int((n·cost - 1e5)/1e5 + 0.9) >= 2``; otherwise block size
    ``max(ceil(n / 4·threads), int(40000 / cost))``, coarsened while it raises the share of busy
    threads (CalculateParallelForBlock)."""
    threads = max(1, int(threads))
    wanted = int(min((n * cost - 100000.0) / 100000.0 + 0.9, 2**31 - 1))
    if n <= 1 or min(threads, max(1, wanted)) == 1:
        return [(0, n)]
    block = min(n, max(-(-n // (4 * threads)), int(1.0 / (cost / 40000.0))))
    max_block = min(n, 2 * block)
    count = -(-n // block)

    def efficiency(c):
        return c / (-(-c // threads) * threads)

    best = efficiency(count)
    previous = count
    while best < 1.0 and previous > 1:
        coarser = -(-n // (previous - 1))
        if coarser > max_block:
            break
        coarser_count = -(-n // coarser)
        previous = coarser_count
        e = efficiency(coarser_count)
        if e + 0.01 >= best:
            block, count = coarser, coarser_count
            best = max(best, e)
    return [(start, min(start + block, n)) for start in range(0, n, block)]


def log_scalar_positions(n: int, threads: int) -> np.ndarray:
    """Elements ORT's Log computes with C logf instead of Eigen's packets: in every parallel
    block, those before the first 16-byte-aligned element and the last (size - head) % 4."""
    return eigen_scalar_positions(n, _LOG_COST, threads)


def eigen_scalar_positions(n: int, cost: float, threads: int) -> np.ndarray:
    """Elements an Eigen float32 array expression run by ORT's ``TryParallelFor(n, cost)``
    computes with its scalar function instead of packets of 4: in every parallel block
    (:func:`parallel_blocks`), those before the first 16-byte-aligned element and the last
    (size - head) % 4."""
    scalar = np.zeros(n, bool)
    for start, end in parallel_blocks(n, cost, threads):
        head = min((-start) % 4, end - start)
        scalar[start:start + head] = True
        body = (end - start - head) // 4 * 4
        scalar[start + head + body:end] = True
    return scalar


# --------------------------------------------------------------------------------------------
# softmax (MlasComputeSoftmax with the FMA3 SumExp kernel and the AVX output kernels)


@kernel
def sumexp_poly1(v):
    """The part of MLAS's SumExp kernels both families share, on a clamped, non-NaN ``v``::

        m = fma(v, log2e, B) - B                      (B = 1.5*2^23: round to integer)
        r = fma(m, log2_lo, fma(m, log2_hi, v))
        p = fma(fma(... fma(p0, r, p1) ..., r, p56), r, p56)      (degree 6)

    Returns ``(m, p)``; exp(v) = p * 2^m, each family scaling in its own way."""
    m = _fma32(v, _EX_L2E, _X_BIAS) - _X_BIAS
    r = _fma32(m, _EX_L2HI, v)
    r = _fma32(m, _EX_L2LO, r)
    p = _fma32(_XP0, r, _XP1)
    p = _fma32(p, r, _XP2)
    p = _fma32(p, r, _XP3)
    p = _fma32(p, r, _XP4)
    p = _fma32(p, r, _XP56)
    p = _fma32(p, r, _XP56)
    return m, p


def np_sumexp_poly(v0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`sumexp_poly1` on an array without NaN."""
    m = _fma_np(v0, _EX_L2E, _X_BIAS) - _X_BIAS
    r = _fma_np(m, _EX_L2HI, v0)
    r = _fma_np(m, _EX_L2LO, r)
    p = _fma_np(_XP0, r, _XP1)
    for c in (_XP2, _XP3, _XP4, _XP56, _XP56):
        p = _fma_np(p, r, c)
    return m, p


@kernel
def _sumexp1(x, negmax):
    """One lane of MlasComputeSumExpF32KernelFma3: exp(x - max) on [-88.376, 0]::

        v = max(x + negmax, -88.376)
        m = fma(v, log2e, B) - B;  r = fma(m, log2_lo, fma(m, log2_hi, v))
        p = fma(fma(... fma(p0, r, p1) ..., r, p56), r, p56)      (degree 6)
        y = p * 2^m          (2^m built from its exponent bits: 0.0 for m = -127)
    """
    v = x + negmax
    if v < _X_LO_SUMEXP:
        v = _X_LO_SUMEXP
    if v != v:
        return v
    m, p = sumexp_poly1(v)
    mi = int(m)
    if mi < -126:  # the scale's bits (m + 127) << 23 are those of +0.0 at m = -127
        return p * _ZERO
    return p * F32(math.ldexp(1.0, mi))


@kernel
def _nb_softmax_rows(x, out, log):
    """Rows of ``x`` (2-D, C-contiguous): Softmax (log=False) or LogSoftmax (log=True)."""
    rows, d = x.shape
    lanes = np.zeros(8, np.float32)
    for r in range(rows):
        mx = x[r, 0]  # the AVX max kernel starts from the data (an all -inf row gives NaN)
        for i in range(1, d):
            if x[r, i] > mx:
                mx = x[r, i]
        negmax = -mx
        for j in range(8):
            lanes[j] = _ZERO
        for i in range(d):
            e = _sumexp1(x[r, i], negmax)
            lanes[i % 8] += e
            if not log:
                out[r, i] = e
        h0 = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
        h1 = (lanes[4] + lanes[5]) + (lanes[6] + lanes[7])
        total = h1 + h0
        if log:
            lg = _logf_nb(total)
            for i in range(d):
                out[r, i] = (x[r, i] + negmax) - lg
        else:
            scale = _ONE / total
            for i in range(d):
                out[r, i] = out[r, i] * scale


def _np_sumexp(x: np.ndarray, negmax: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        v = (x + negmax).astype(F32)
        v = np.where(v < _X_LO_SUMEXP, _X_LO_SUMEXP, v)
        nan = np.isnan(v)
        m, p = np_sumexp_poly(np.where(nan, _ZERO, v))
        mi = m.astype(np.int32)
        y = p * np.where(mi < -126, _ZERO, np.ldexp(_ONE, mi)).astype(F32)
        return np.where(nan, v, y).astype(F32)


def _lane_sums8(e: np.ndarray) -> np.ndarray:
    """Rows of ``e`` summed as the AVX accumulator does: lane j = 0 + e[j] + e[j+8] + ... (in
    order), then ((l0+l1)+(l2+l3)) and ((l4+l5)+(l6+l7)), then their sum."""
    rows, d = e.shape
    pad = (-d) % 8
    ep = np.concatenate([e, np.zeros((rows, pad), F32)], axis=1).reshape(rows, -1, 8)
    lanes = np.zeros((rows, 8), F32)
    for k in range(ep.shape[1]):
        lanes = (lanes + ep[:, k, :]).astype(F32)
    h0 = ((lanes[:, 0] + lanes[:, 1]) + (lanes[:, 2] + lanes[:, 3])).astype(F32)
    h1 = ((lanes[:, 4] + lanes[:, 5]) + (lanes[:, 6] + lanes[:, 7])).astype(F32)
    return (h1 + h0).astype(F32)


def _np_softmax_rows(x: np.ndarray, log: bool) -> np.ndarray:
    negmax = -np.max(x, axis=1, keepdims=True) if x.shape[1] else np.zeros((x.shape[0], 1), F32)
    e = _np_sumexp(x, negmax)
    total = _lane_sums8(e)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        if log:
            return (((x + negmax).astype(F32)) - _logf_np(total)).astype(F32)
        return (e * (_ONE / total)).astype(F32)


# --------------------------------------------------------------------------------------------
# sums: GlobalAveragePool (MLAS) and ReduceSum/ReduceMean over trailing axes (Eigen)


@kernel
def _nb_global_average(x, out):
    """Rows of ``x``: MlasPoolGlobalKernel<AVERAGE>: 4 lanes from 0 over the first n - n%4
    elements, (l0+l2)+(l1+l3), then the rest one by one, divided by float(n)."""
    rows, n = x.shape
    n4 = n - n % 4
    for r in range(rows):
        l0 = _ZERO
        l1 = _ZERO
        l2 = _ZERO
        l3 = _ZERO
        for i in range(0, n4, 4):
            l0 += x[r, i]
            l1 += x[r, i + 1]
            l2 += x[r, i + 2]
            l3 += x[r, i + 3]
        s = (l0 + l2) + (l1 + l3)
        for i in range(n4, n):
            s += x[r, i]
        out[r] = s / F32(n)


def _np_global_average(x: np.ndarray) -> np.ndarray:
    rows, n = x.shape
    n4 = n - n % 4
    lanes = np.zeros((rows, 4), F32)
    for i in range(0, n4, 4):
        lanes = (lanes + x[:, i:i + 4]).astype(F32)
    s = ((lanes[:, 0] + lanes[:, 2]) + (lanes[:, 1] + lanes[:, 3])).astype(F32)
    for i in range(n4, n):
        s = (s + x[:, i]).astype(F32)
    return (s / F32(n)).astype(F32)


@kernel
def _nb_eigen_row_sums(x, offsets, out):
    """Rows of ``x`` (row r starts at element r*n of a 16-byte-aligned buffer): Eigen's
    vectorised redux (packets of 4). ``a`` = elements before the first aligned one::

        p0 = x[a:a+4]; p1 = x[a+4:a+8]; p0 += x[i:i+4], p1 += x[i+4:i+8] for each pair of packets
        p0 += p1; p0 += the last whole packet (if odd); s = (p0[0]+p0[2]) + (p0[1]+p0[3])
        s += x[0], ..., x[a-1]; s += the tail elements
    Rows too short for one packet are summed left to right."""
    rows, n = x.shape
    for r in range(rows):
        a = (-offsets[r]) % 4
        if a > n:
            a = n
        size4 = ((n - a) // 4) * 4
        size8 = ((n - a) // 8) * 8
        end4 = a + size4
        end8 = a + size8
        if size4 == 0:
            s = x[r, 0]
            for i in range(1, n):
                s += x[r, i]
            out[r] = s
            continue
        p00 = x[r, a]
        p01 = x[r, a + 1]
        p02 = x[r, a + 2]
        p03 = x[r, a + 3]
        if size4 > 4:
            p10 = x[r, a + 4]
            p11 = x[r, a + 5]
            p12 = x[r, a + 6]
            p13 = x[r, a + 7]
            for i in range(a + 8, end8, 8):
                p00 += x[r, i]
                p01 += x[r, i + 1]
                p02 += x[r, i + 2]
                p03 += x[r, i + 3]
                p10 += x[r, i + 4]
                p11 += x[r, i + 5]
                p12 += x[r, i + 6]
                p13 += x[r, i + 7]
            p00 += p10
            p01 += p11
            p02 += p12
            p03 += p13
            if end4 > end8:
                p00 += x[r, end8]
                p01 += x[r, end8 + 1]
                p02 += x[r, end8 + 2]
                p03 += x[r, end8 + 3]
        s = (p00 + p02) + (p01 + p03)
        for i in range(a):
            s += x[r, i]
        for i in range(end4, n):
            s += x[r, i]
        out[r] = s


def _np_eigen_row_sums(x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    rows, n = x.shape
    out = np.empty(rows, F32)
    starts = (-offsets) % 4
    for a in np.unique(starts):
        sel = np.nonzero(starts == a)[0]
        xs = x[sel]
        a = int(min(a, n))
        size4 = ((n - a) // 4) * 4
        size8 = ((n - a) // 8) * 8
        end4, end8 = a + size4, a + size8
        if size4 == 0:
            s = xs[:, 0].copy()
            for i in range(1, n):
                s = (s + xs[:, i]).astype(F32)
            out[sel] = s
            continue
        p0 = xs[:, a:a + 4].copy()
        if size4 > 4:
            p1 = xs[:, a + 4:a + 8].copy()
            for i in range(a + 8, end8, 8):
                p0 = (p0 + xs[:, i:i + 4]).astype(F32)
                p1 = (p1 + xs[:, i + 4:i + 8]).astype(F32)
            p0 = (p0 + p1).astype(F32)
            if end4 > end8:
                p0 = (p0 + xs[:, end8:end8 + 4]).astype(F32)
        s = ((p0[:, 0] + p0[:, 2]) + (p0[:, 1] + p0[:, 3])).astype(F32)
        for i in list(range(a)) + list(range(end4, n)):
            s = (s + xs[:, i]).astype(F32)
        out[sel] = s
    return out


# --------------------------------------------------------------------------------------------
# public functions


def _f32_flat(x) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=F32).ravel()


def _elementwise(nb_fn, np_fn, x) -> np.ndarray:
    x = np.asarray(x, F32)
    flat = _f32_flat(x)
    if USE_NUMBA:
        out = np.empty_like(flat)
        nb_fn(flat, out)
    else:
        out = np_fn(flat)
    return out.reshape(x.shape)


def logistic(x) -> np.ndarray:
    """Sigmoid as ORT computes it (MLAS logistic kernel, FMA3)."""
    return _elementwise(_nb_logistic, _np_logistic, x)


def tanh(x) -> np.ndarray:
    """Tanh as ORT computes it (MLAS tanh kernel, FMA3)."""
    return _elementwise(_nb_tanh, _np_tanh, x)


def erf(x) -> np.ndarray:
    """Erf as ORT computes it (MLAS erf kernel, FMA3)."""
    return _elementwise(_nb_erf, _np_erf, x)


def exp(x) -> np.ndarray:
    """Exp as ORT computes it (MLAS exp kernel, FMA3)."""
    return _elementwise(_nb_exp, _np_exp, x)


#: the NaN Eigen's packet log returns for x < 0 and NaN x (its invalid mask OR-ed in: all bits)
_PACKET_LOG_NAN = np.array([0xFFFFFFFF], np.uint32).view(F32)[0]


def log(x, threads: int = DEFAULT_THREADS) -> np.ndarray:
    """Log as ORT computes it with ``threads`` intra-op threads: the flattened tensor is cut in
    :func:`parallel_blocks`; in each, Eigen's packet log, except C logf on the unaligned head and
    the n % 4 tail (:func:`log_scalar_positions`). A packet's NaN (x < 0 or NaN) has every bit
    set; logf's is the default NaN or x's own."""
    x = np.asarray(x, F32)
    flat = _f32_flat(x)
    scalar = log_scalar_positions(flat.size, threads)
    if USE_NUMBA:
        out = np.empty_like(flat)
        _nb_log(flat, scalar, out)
    else:
        out = _np_log(flat, scalar)
    with np.errstate(invalid="ignore"):
        invalid = ~scalar & (np.isnan(flat) | (flat < 0))
    out[invalid] = _PACKET_LOG_NAN
    return out.reshape(x.shape)


def gelu(x, approximate: str = "none") -> np.ndarray:
    """Gelu (opset 20) as ORT's CPU kernel computes it, every step in float32::

        none: y = (0.5*x) * (erf(x * f32(1/sqrt2)) + 1)               (MLAS erf)
        tanh: y = (0.5*x) * (tanh(x * ((C*x)*x + B)) + 1)              (MLAS tanh)
              B = sqrt(2/pi), C = 0.044715*sqrt(2/pi) as float32
    """
    x = np.asarray(x, F32)
    with np.errstate(over="ignore", invalid="ignore"):
        if approximate == "none":
            inner = erf((x * _SQRT1_2).astype(F32))
        else:
            inner = tanh((x * ((_GELU_C * x * x).astype(F32) + _GELU_B)).astype(F32))
        return ((_HALF * x).astype(F32) * (inner + _ONE).astype(F32)).astype(F32)


def softmax_rows(x2d, *, log: bool = False) -> np.ndarray:
    """Softmax (or LogSoftmax) of every row of a 2-D array, as MlasComputeSoftmax::

        negmax = -max(row); e_i = sumexp(x_i, negmax)   (see _sumexp1)
        S = 8-lane sum of e (see _lane_sums8)
        softmax:    y_i = e_i * (1 / S)
        logsoftmax: y_i = (x_i + negmax) - logf(S)
    """
    return rows_of(_nb_softmax_rows, _np_softmax_rows, x2d, log)


def rows_of(nb_fn, np_fn, x2d, log: bool) -> np.ndarray:
    """Run a Softmax-style row kernel: ``nb_fn(x, out, log)`` (Numba) or ``np_fn(x, log)``
    (NumPy twin) on ``x2d`` as a C-contiguous float32 array; an empty input is returned as is."""
    x = np.ascontiguousarray(x2d, dtype=F32)
    if x.size == 0:
        return x.copy()
    if USE_NUMBA:
        out = np.empty_like(x)
        nb_fn(x, out, log)
        return out
    return np_fn(x, log)


def global_average(x2d) -> np.ndarray:
    """Mean of every row as MlasPoolGlobalKernel<AVERAGE> (GlobalAveragePool, one row per
    (n, c) plane)."""
    x = np.ascontiguousarray(x2d, dtype=F32)
    if USE_NUMBA:
        out = np.empty(x.shape[0], F32)
        _nb_global_average(x, out)
        return out
    return _np_global_average(x)


def eigen_row_sums(x2d, offsets=None) -> np.ndarray:
    """Sum of every row of a 2-D array as Eigen's vectorised ``.sum()`` (ORT's ReduceSum /
    ReduceMean when the reduced axes are the trailing ones). Row r lies ``offsets[r]`` elements
    (default ``r * n``) after a 16-byte-aligned base, which decides where Eigen's aligned packets
    start."""
    x = np.ascontiguousarray(x2d, dtype=F32)
    rows, n = x.shape
    if n == 0:
        return np.zeros(rows, F32)
    offsets = (np.arange(rows, dtype=np.int64) * n if offsets is None
               else np.ascontiguousarray(offsets, dtype=np.int64))
    if USE_NUMBA:
        out = np.empty(rows, F32)
        _nb_eigen_row_sums(x, offsets, out)
        return out
    return _np_eigen_row_sums(x, offsets)


def eigen_row_extremes(x2d, largest: bool, offsets=None) -> np.ndarray:
    """Max (or min) of every row as Eigen's vectorised ``maxCoeff()``/``minCoeff()``:
    :func:`eigen_redux` with ``pmax(a, b) = b if a < b else a`` (``pmin``: ``b if b < a``), in
    packets and scalars alike: a NaN already held stays, a NaN arriving is passed over, and of
    equal values (±0) the one held stays."""
    def op(a, b):
        with np.errstate(invalid="ignore"):
            return np.where(a < b, b, a) if largest else np.where(b < a, b, a)
    return eigen_redux(x2d, op, offsets)


def eigen_row_products(x2d, offsets=None) -> np.ndarray:
    """Product of every row as Eigen's vectorised ``prod()`` (:func:`eigen_redux` with ``*``)."""
    def op(a, b):
        with np.errstate(over="ignore", invalid="ignore", under="ignore"):
            return (a * b).astype(a.dtype)
    return eigen_redux(x2d, op, offsets)


def eigen_redux(x2d, op, offsets=None) -> np.ndarray:
    """Eigen's vectorised redux of every row with the elementwise ``op`` (16-byte packets:
    L = 4 float32 or 2 float64 lanes; the traversal of :func:`eigen_row_sums`; row r lies
    ``offsets[r]`` elements after a 16-byte-aligned base): ``p0, p1`` the first two packets,
    ``op``-ed with the following pairs, then ``p0 = op(p0, p1)`` and the last odd packet;
    horizontally ``op(op(p0, p2), op(p1, p3))`` (L = 2: ``op(p0, p1)``); then the elements
    before the first aligned one and the tail, left to right. Rows too short for one packet go
    left to right."""
    x = np.ascontiguousarray(x2d)
    rows, n = x.shape
    lanes = 16 // x.dtype.itemsize
    offsets = (np.arange(rows, dtype=np.int64) * n if offsets is None
               else np.asarray(offsets, dtype=np.int64))
    out = np.empty(rows, x.dtype)
    starts = (-offsets) % lanes
    for a in np.unique(starts):
        sel = np.nonzero(starts == a)[0]
        xs = x[sel]
        a = int(min(a, n))
        size1 = ((n - a) // lanes) * lanes
        size2 = ((n - a) // (2 * lanes)) * 2 * lanes
        end1, end2 = a + size1, a + size2
        if size1 == 0:
            s = xs[:, 0]
            for i in range(1, n):
                s = op(s, xs[:, i])
            out[sel] = s
            continue
        p0 = xs[:, a:a + lanes]
        if size1 > lanes:
            p1 = xs[:, a + lanes:a + 2 * lanes]
            for i in range(a + 2 * lanes, end2, 2 * lanes):
                p0, p1 = op(p0, xs[:, i:i + lanes]), op(p1, xs[:, i + lanes:i + 2 * lanes])
            p0 = op(p0, p1)
            if end1 > end2:
                p0 = op(p0, xs[:, end2:end2 + lanes])
        if lanes == 4:
            s = op(op(p0[:, 0], p0[:, 2]), op(p0[:, 1], p0[:, 3]))
        else:
            s = op(p0[:, 0], p0[:, 1])
        for i in list(range(a)) + list(range(end1, n)):
            s = op(s, xs[:, i])
        out[sel] = s
    return out


def eigen_partial_extremes(x3, largest: bool) -> np.ndarray:
    """Max (or min) over axis 1 of ``x3`` (D, R, K) as Eigen's ``rowwise().maxCoeff()`` on each
    ``x3[d]`` seen as a column-major K x R matrix (ORT's fast "RK" and "KRK" reductions), into
    ``(D, K)``. Output ``d`` starts ``d·K`` elements after an aligned base; the outputs in its
    aligned 16-byte packets (4 float32 / 2 float64) take ``p = x0; p = op(p, op(op(x_i, x_i+1), op(x_i+2, x_i+3)))`` for
    i = 1, 5, ... while 4 remain, then ``p = op(p, x_i)``; the outputs before and after them go
    left to right. ``op`` as in :func:`eigen_row_extremes`."""
    x3 = np.asarray(x3)
    d_n, r_n, k_n = x3.shape

    def op(a, b):
        with np.errstate(invalid="ignore"):
            return np.where(a < b, b, a) if largest else np.where(b < a, b, a)

    out = np.empty((d_n, k_n), x3.dtype)
    size4 = (r_n - 1) & ~3
    for d in range(d_n):
        xs = x3[d]
        y = xs[0]
        for i in range(1, r_n):
            y = op(y, xs[i])
        lanes = 16 // x3.dtype.itemsize
        a = min((-d * k_n) % lanes, k_n)
        end = a + ((k_n - a) // lanes) * lanes
        if end > a:
            p = xs[0, a:end]
            i = 1
            while i < size4 + 1:
                p = op(p, op(op(xs[i, a:end], xs[i + 1, a:end]), op(xs[i + 2, a:end], xs[i + 3, a:end])))
                i += 4
            for j in range(i, r_n):
                p = op(p, xs[j, a:end])
            y[a:end] = p
        out[d] = y
    return out


def sequential_sums(x2d) -> np.ndarray:
    """Sum of every row, left to right from the first element (ORT's generic reduction loop)."""
    x = np.ascontiguousarray(x2d, dtype=F32)
    if x.shape[1] == 0:
        return np.zeros(x.shape[0], F32)
    s = x[:, 0].copy()
    for i in range(1, x.shape[1]):
        s = (s + x[:, i]).astype(F32)
    return s


# --------------------------------------------------------------------------------------------
# ReduceSum / ReduceMean (onnxruntime/core/providers/cpu/reduction/reduction_ops.cc)


def fast_reduce_shape(shape, axes) -> tuple[str, tuple[int, ...]]:
    """ORT's view of a reduction (``OptimizeShapeForFastReduce``): neighbouring axes of the same
    kind merged, size-1 axes included. Returns the pattern (``"K"`` kept / ``"R"`` reduced per
    merged axis, e.g. ``"KR"``) and the merged sizes: ``(1, 1, 2, 4)`` over axes 1, 3 is
    ``"KRKR"`` (ORT's generic loop), over axes 0, 3 it is ``"RKR"`` ``(1, 2, 4)``."""
    kinds, sizes = [], []
    for i, n in enumerate(shape):
        kind = "R" if i in axes else "K"
        if kinds and kinds[-1] == kind:
            sizes[-1] *= n
        else:
            kinds.append(kind)
            sizes.append(n)
    return "".join(kinds), tuple(sizes)


def sequential_reduce_sum(t, axes) -> np.ndarray:
    """Sum of float32 ``t`` over ``axes``, left to right over the reduced positions in row-major
    order (ORT's generic reduction loop: ReduceL1 and ReduceSumSquare take it on ``|x|`` and
    ``x*x`` unless every axis is reduced: then Eigen's sum), the reduced axes dropped."""
    t = np.asarray(t, F32)
    axes = tuple(sorted(set(axes)))
    keep = [i for i in range(t.ndim) if i not in axes]
    out_shape = tuple(t.shape[i] for i in keep)
    if len(axes) == t.ndim and t.size > 1:  # every axis reduced: Eigen's vectorised sum
        return eigen_row_sums(t.reshape(1, -1)).reshape(out_shape)
    moved = np.transpose(t, keep + list(axes)).reshape(math.prod(out_shape), -1)
    return sequential_sums(moved).reshape(out_shape)


def reduce_sum(x, axes, *, mean: bool = False) -> np.ndarray:
    """float32 ReduceSum (or ReduceMean) over ``axes`` as ONNX Runtime, ``keepdims`` dropped::

        "R", "KR"  rows summed by Eigen's vectorised sum (:func:`eigen_row_sums`)
        "RK"       out = row 0; out += row 1; ... (one row of the kept block at a time)
        "KRK"      per leading index, ones(1, R) @ X[i] through MLAS sgemm (qsim.kernels.gemm)
                   (with a single leading index: the generic loop)
        "RKR"      per kept index k: 0 + eigen_sum(X[0, k, :]) + eigen_sum(X[1, k, :]) + ...
                   (with a single kept index: the generic loop)
        others     left to right over the reduced positions (ORT's generic loop)
    (ORT's thresholds for its thread pool's degree of parallelism, at most 2 here: KRK needs
    2 leading indices, RKR 2 kept ones; its RK kernel and the generic loop give the same sums.)
    ReduceMean divides the sums by float(count)."""
    x = np.require(np.asarray(x, F32), requirements="C")  # (keeps a 0-d input 0-d)
    axes = tuple(sorted(set(axes)))
    out_shape = tuple(n for i, n in enumerate(x.shape) if i not in axes)
    count = math.prod(x.shape[a] for a in axes)
    kind, sizes = fast_reduce_shape(x.shape, axes)
    if x.size == 0 or count == 1 or kind in ("", "K"):
        s = np.sum(x, axis=axes, dtype=F32)
    elif kind in ("R", "KR"):
        s = eigen_row_sums(x.reshape(-1, sizes[-1]))
    elif kind == "RK":
        s = sequential_sums(x.reshape(sizes).T)
    elif kind == "KRK" and sizes[0] > 1:
        from . import gemm as gemm_exact  # late import: the gemm module is large
        d0, d1, d2 = sizes
        ones = np.ones((1, 1, d1), F32)
        s = gemm_exact.matmul(ones, x.reshape(d0, d1, d2), threads=1)
    elif kind == "RKR" and sizes[1] > 1:
        d0, d1, d2 = sizes
        blocks = x.reshape(d0 * d1, d2)
        block_sums = eigen_row_sums(blocks).reshape(d0, d1)
        s = np.zeros(d1, F32)
        for r in range(d0):
            s = (s + block_sums[r]).astype(F32)
    else:
        keep = [i for i in range(x.ndim) if i not in axes]
        moved = np.transpose(x, keep + list(axes)).reshape(math.prod(out_shape), count)
        s = sequential_sums(moved)
    s = np.asarray(s, F32).reshape(out_shape)
    if mean:
        s = (s / F32(count)).astype(F32)
    return s


# --------------------------------------------------------------------------------------------
# LayerNormalization (onnxruntime/core/providers/cpu/nn/layer_norm_impl.cc; rows of n >= 8 go
# through MLAS's AVX2 kernel MlasLayerNormF32, shorter rows through the scalar Welford loop)


@kernel
def _nb_layer_norm(x, scale, bias, has_bias, eps, out, means, invs):
    """Rows of ``x`` normalised as ONNX Runtime (read from the AVX2/FMA3 machine code)::

        n >= 8 (MLAS):  mean = f32((4 double lanes of x, (d0+d2)+(d1+d3), + tail) / n)
                        v = 8 float lanes of fma(x-mean, x-mean, .), ((l0+l4)+(l2+l6)) +
                            ((l1+l5)+(l3+l7)); tail: 4 at a time as += (x-mean)*(x-mean),
                            then fma one by one
                        inv = 1 / sqrt(v/n + eps)
                        y = fma((x - mean) * inv, scale, bias)    (no bias: ((x-mean)*inv)*scale)
        n < 8 (Welford): for k = 1..n: d = x-mean; mean += d/k; m2 += (x-mean)*d
                        std = sqrt(m2/n + eps); inv = 1/std
                        y = (x - mean) / std * scale + bias
    """
    rows, n = x.shape
    nf = F32(n)
    for r in range(rows):
        if n >= 8:
            a0 = 0.0
            a1 = 0.0
            a2 = 0.0
            a3 = 0.0
            n4 = n - n % 4
            for i in range(0, n4, 4):
                a0 += np.float64(x[r, i])
                a1 += np.float64(x[r, i + 1])
                a2 += np.float64(x[r, i + 2])
                a3 += np.float64(x[r, i + 3])
            s = (a0 + a2) + (a1 + a3)
            for i in range(n4, n):
                s += np.float64(x[r, i])
            mean = F32(s / np.float64(n))
            v = _lane8_squares(x, r, mean)
            std = F32(math.sqrt(v / nf + eps))
            inv = _ONE / std
            for i in range(n):
                t = (x[r, i] - mean) * inv
                if has_bias:
                    out[r, i] = _fma32(t, scale[i], bias[i])
                else:
                    out[r, i] = t * scale[i]
        else:
            mean = _ZERO
            m2 = _ZERO
            for i in range(n):
                d = x[r, i] - mean
                mean = mean + d / F32(i + 1)
                m2 = m2 + (x[r, i] - mean) * d
            std = F32(math.sqrt(m2 / nf + eps))
            inv = _ONE / std
            for i in range(n):
                t = (x[r, i] - mean) / std * scale[i]
                out[r, i] = t + bias[i] if has_bias else t
        means[r] = mean
        invs[r] = inv


@kernel
def _lane8_squares(x, r, shift):
    """``Σ (x[r, i] - shift)²`` over row ``r`` in MLAS's order (:func:`_np_lane8_squares` is
    its NumPy twin on the differences): eight fma lanes, folded
    ``((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))``, four rounded squares added one by one if
    four remain, then fmas."""
    n = x.shape[1]
    lanes = np.zeros(8, np.float32)
    n8 = n - n % 8
    for i in range(0, n8, 8):
        for j in range(8):
            d = x[r, i + j] - shift
            lanes[j] = _fma32(d, d, lanes[j])
    v = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + \
        ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]))
    i = n8
    if n - n8 >= 4:
        for j in range(4):
            d = x[r, i + j] - shift
            v += d * d
        i += 4
    while i < n:
        d = x[r, i] - shift
        v = _fma32(d, d, v)
        i += 1
    return v


def _np_lane8_squares(d):
    """``Σ d²`` of every row of float32 ``d`` in MLAS's order: eight fma lanes over the first
    ``8·floor(n/8)`` values, folded as ``((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7))``, then a
    group of four rounded squares added one by one (if four remain), then fmas for the rest."""
    rows, n = d.shape
    n8 = n - n % 8
    lanes = np.zeros((rows, 8), F32)
    for i in range(0, n8, 8):
        lanes = _fma_np(d[:, i:i + 8], d[:, i:i + 8], lanes)
    h = [(lanes[:, k] + lanes[:, k + 4]).astype(F32) for k in range(4)]
    v = (((h[0] + h[2]).astype(F32)) + ((h[1] + h[3]).astype(F32))).astype(F32)
    i = n8
    if n - n8 >= 4:
        for j in range(4):
            v = (v + (d[:, i + j] * d[:, i + j]).astype(F32)).astype(F32)
        i += 4
    for j in range(i, n):
        v = _fma_np(d[:, j], d[:, j], v)
    return v


def _np_layer_norm(x, scale, bias, eps):
    rows, n = x.shape
    eps = F32(eps)
    if n >= 8:
        n4 = n - n % 4
        lanes4 = x[:, :n4].astype(np.float64).reshape(rows, -1, 4)
        acc = np.zeros((rows, 4))
        for k in range(lanes4.shape[1]):
            acc = acc + lanes4[:, k]
        s = (acc[:, 0] + acc[:, 2]) + (acc[:, 1] + acc[:, 3])
        for i in range(n4, n):
            s = s + x[:, i].astype(np.float64)
        mean = (s / n).astype(F32)[:, None]
        d = (x - mean).astype(F32)
        v = _np_lane8_squares(d)
        std = np.sqrt((v / F32(n)).astype(F32) + eps).astype(F32)[:, None]
        inv = (_ONE / std).astype(F32)
        t = (d * inv).astype(F32)
        y = _fma_np(t, scale, bias) if bias is not None else (t * scale).astype(F32)
    else:
        mean = np.zeros(rows, F32)
        m2 = np.zeros(rows, F32)
        for i in range(n):
            dlt = (x[:, i] - mean).astype(F32)
            mean = (mean + (dlt / F32(i + 1)).astype(F32)).astype(F32)
            m2 = (m2 + ((x[:, i] - mean).astype(F32) * dlt).astype(F32)).astype(F32)
        std = np.sqrt((m2 / F32(n)).astype(F32) + eps).astype(F32)[:, None]
        inv = (_ONE / std).astype(F32)
        mean = mean[:, None]
        t = ((((x - mean).astype(F32)) / std).astype(F32) * scale).astype(F32)
        y = (t + bias).astype(F32) if bias is not None else t
    return y, mean.reshape(rows), inv.reshape(rows)


def layer_norm_rows(x2d, scale, bias, epsilon):
    """LayerNormalization of every row of a 2-D float32 array as ONNX Runtime computes it
    (see :func:`_nb_layer_norm`). ``scale``/``bias``: one value per column (bias may be None).
    Returns ``(y, mean, inv_std_dev)``, the last two one value per row."""
    x = np.ascontiguousarray(x2d, dtype=F32)
    scale = np.ascontiguousarray(scale, dtype=F32).ravel()
    has_bias = bias is not None
    b = np.ascontiguousarray(bias, dtype=F32).ravel() if has_bias else np.zeros_like(scale)
    rows, n = x.shape
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if USE_NUMBA:
            out = np.empty_like(x)
            means = np.empty(rows, F32)
            invs = np.empty(rows, F32)
            _nb_layer_norm(x, scale, b, has_bias, F32(epsilon), out, means, invs)
            return out, means, invs
        return _np_layer_norm(x, scale, b if has_bias else None, epsilon)


# --------------------------------------------------------------------------------------------
# SimplifiedLayerNormalization / RMSNormalization (layer_norm_impl.cc with simplified=true:
# rows of n >= 16 go through MlasLayerNormF32's AVX2 RMSNorm branch, shorter rows through the
# scalar loop)


@kernel
def _nb_rms_norm(x, scale, eps, out, invs):
    """Rows of ``x`` RMS-normalised as ONNX Runtime::

        n >= 16 (MLAS):  v = 8 float lanes of fma(x, x, .), ((l0+l4)+(l2+l6)) +
                             ((l1+l5)+(l3+l7)); tail: 4 at a time as += x*x, then fma one
                             by one
                         inv = 1 / sqrt(v/n + eps);  y = (x * inv) * scale
        n < 16 (scalar): v = 0 + x0*x0 + x1*x1 + ... (each product rounded);
                         r = sqrt(v/n + eps);  y = (x / r) * scale;  inv = 1 / r
    """
    rows, n = x.shape
    nf = F32(n)
    for r in range(rows):
        if n >= 16:
            v = _lane8_squares(x, r, _ZERO)      # x - (+0) is x, -0 and NaN included
            inv = _ONE / F32(math.sqrt(v / nf + eps))
            for i in range(n):
                out[r, i] = (x[r, i] * inv) * scale[i]
        else:
            v = _ZERO
            for i in range(n):
                v = v + x[r, i] * x[r, i]
            root = F32(math.sqrt(v / nf + eps))
            for i in range(n):
                out[r, i] = (x[r, i] / root) * scale[i]
            inv = _ONE / root
        invs[r] = inv


def _np_rms_norm(x, scale, eps):
    rows, n = x.shape
    eps = F32(eps)
    if n >= 16:
        v = _np_lane8_squares(x)
        inv = (_ONE / np.sqrt((v / F32(n)).astype(F32) + eps).astype(F32)).astype(F32)
        y = ((x * inv[:, None]).astype(F32) * scale).astype(F32)
    else:
        v = np.zeros(rows, F32)
        for i in range(n):
            v = (v + (x[:, i] * x[:, i]).astype(F32)).astype(F32)
        root = np.sqrt((v / F32(n)).astype(F32) + eps).astype(F32)
        y = ((x / root[:, None]).astype(F32) * scale).astype(F32)
        inv = (_ONE / root).astype(F32)
    return y, inv


def rms_norm_rows(x2d, scale, epsilon):
    """SimplifiedLayerNormalization (RMSNorm) of every row of a 2-D float32 array as ONNX
    Runtime computes it (see :func:`_nb_rms_norm`). ``scale``: one value per column. Returns
    ``(y, inv_std_var)``, the last one value per row."""
    x = np.ascontiguousarray(x2d, dtype=F32)
    scale = np.ascontiguousarray(scale, dtype=F32).ravel()
    rows = x.shape[0]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if USE_NUMBA:
            out = np.empty_like(x)
            invs = np.empty(rows, F32)
            _nb_rms_norm(x, scale, F32(epsilon), out, invs)
            return out, invs
        return _np_rms_norm(x, scale, epsilon)


def instance_norm_planes(x2d, scale, bias, epsilon) -> np.ndarray:
    """InstanceNormalization of every row (one (n, c) plane of W values, row i of channel
    i % C) as ONNX Runtime's float kernel (Eigen, packets of 4, no FMA)::

        mean = eigen_sum(x) / W  (packets aligned in memory);
        q = eigen_sum((x - mean)^2)  (packets from element 0)
        inv = 1 / sqrt(q / W + epsilon);  s = inv * scale[c];  t = B[c] - mean * s
        y = x * s + t
    """
    x = np.ascontiguousarray(x2d, dtype=F32)
    rows, w = x.shape
    channels = np.arange(rows) % np.asarray(scale).size
    wf = F32(w)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mean = (eigen_row_sums(x) / wf).astype(F32)[:, None]
        d = (x - mean).astype(F32)
        # (x - mean)^2 is an expression, not memory: Eigen's packets start at element 0
        q = eigen_row_sums((d * d).astype(F32), np.zeros(rows, np.int64))
        inv = (_ONE / np.sqrt((q / wf).astype(F32) + F32(epsilon)).astype(F32)).astype(F32)
        s = (inv * np.asarray(scale, F32).ravel()[channels]).astype(F32)[:, None]
        t = (np.asarray(bias, F32).ravel()[channels][:, None] - (mean * s).astype(F32)).astype(F32)
        return ((x * s).astype(F32) + t).astype(F32)


# --------------------------------------------------------------------------------------------
# stride-2 windows


@kernel
def split_even_odd(row, half, split):
    """``split[0, t] = row[2t]``, ``split[1, t] = row[2t + 1]`` for ``t < half`` (``row`` holds
    at least ``2·half`` values): a window tap at an even or odd offset of a stride-2 row then
    reads consecutive values, which vectorizes (the values, not the arithmetic, move)."""
    for t in range(half):
        u = np.uint64(t)
        split[0, u] = row[u + u]
        split[1, u] = row[u + u + np.uint64(1)]


# --------------------------------------------------------------------------------------------
# MaxPool, the vector kernel (MlasPool2DVectorKernel)


@kernel
def _nb_max_pool_2d(x, kh, kw, sh, sw, ph, pw_begin, tail, y, p0, p1):
    """Numba twin of :func:`qsim.ops.nn._mlas_vector_max` for 4-D float32 ``x``, planes
    (n·C + c) ``p0 <= plane < p1`` (same comparisons in the
    same order): per output row the column reduction over the in-bounds input rows (``maxps``
    on the first ``4·floor(W/4)`` columns, ``std::max`` on the rest) into a buffer padded with
    lowest(), then ``maxps`` across the window per output. With stride 2 along the row the
    buffer is first split into its even and odd columns, so every tap reads consecutive
    values. Flat unsigned indices (no wraparound checks), so the row loops vectorize."""
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    w4 = (w // 4) * 4
    lowest = np.float32(-3.4028234663852886e38)
    x1, y1 = x.reshape(-1), y.reshape(-1)
    width = pw_begin + w + tail
    buf = np.empty(width + 1, dtype=np.float32)      # (+1: the odd half reads one past)
    for q in range(pw_begin):
        buf[q] = lowest
    for q in range(pw_begin + w, width + 1):
        buf[q] = lowest
    half = (width + 1) // 2
    split = np.empty((2, half), dtype=np.float32)     # stride 2: even, odd columns of buf
    pb, step = np.uint64(pw_begin), np.uint64(sw)
    for plane in range(p0, p1):
        for oy in range(oh):
            start = oy * sh - ph
            r0 = start if 0 <= start < h else 0
            r1 = min(start + kh, h)
            base = np.uint64((plane * h + r0) * w)
            for q in range(w):
                u = np.uint64(q)
                buf[pb + u] = x1[base + u]
            for r in range(r0 + 1, r1):
                row = np.uint64((plane * h + r) * w)
                for q in range(w4):
                    u = np.uint64(q)
                    v = x1[row + u]
                    m = buf[pb + u]
                    buf[pb + u] = m if m > v else v
                for q in range(w4, w):
                    u = np.uint64(q)
                    v = x1[row + u]
                    m = buf[pb + u]
                    buf[pb + u] = v if m < v else m
            o0 = np.uint64((plane * oh + oy) * ow)
            if sw == 2:
                split_even_odd(buf, half, split)
                for ox in range(ow):
                    u = np.uint64(ox)
                    y1[o0 + u] = split[0, u]
                for j in range(1, kw):
                    p, jj = np.uint64(j & 1), np.uint64(j >> 1)
                    for ox in range(ow):
                        u = np.uint64(ox)
                        v = split[p, u + jj]
                        m = y1[o0 + u]
                        y1[o0 + u] = m if m > v else v
            else:
                for ox in range(ow):
                    u = np.uint64(ox)
                    y1[o0 + u] = buf[u * step]
                for j in range(1, kw):
                    jj = np.uint64(j)
                    for ox in range(ow):
                        u = np.uint64(ox)
                        v = buf[u * step + jj]
                        m = y1[o0 + u]
                        y1[o0 + u] = m if m > v else v


@kernel
def _max_pool_parts(x, kh, kw, sh, sw, ph, pw_begin, tail, y, parts, state):
    """The plane ranges ``parts`` of :func:`_nb_max_pool_2d` this thread claims
    (:mod:`qsim.kernels.threads`)."""
    while True:
        p = threads_.claim(state)
        if p >= parts.shape[0]:
            return
        _nb_max_pool_2d(x, kh, kw, sh, sw, ph, pw_begin, tail, y, parts[p, 0], parts[p, 1])
        threads_.finish(state)


def max_pool_2d(x, kh, kw, sh, sw, ph, pw_begin, tail, y) -> None:
    """:func:`_nb_max_pool_2d` over all planes of ``x`` into ``y``, the planes shared with the
    other threads (:func:`qsim.kernels.gemm.run_shared`) when there are enough outputs."""
    from .gemm import run_shared            # gemm imports this module
    planes = x.shape[0] * x.shape[1]
    threads = DEFAULT_THREADS if y.size * kh * kw >= _MIN_PARALLEL_WINDOW_VALUES else 1
    run_shared("max_pool", (x, kh, kw, sh, sw, ph, pw_begin, tail, y,
                            threads_.spans(planes, threads)), threads)


#: window values (outputs x window size) below which a pool runs on the calling thread alone
#: (about 30 us of work: the spinning worker's hand-over costs a few)
_MIN_PARALLEL_WINDOW_VALUES = 1 << 17


# --------------------------------------------------------------------------------------------
# AveragePool window sums (MlasPool, onnxruntime/core/mlas/lib/pooling.cpp)


def _window(offsets, strides, out):
    return (slice(None), slice(None)) + tuple(
        slice(k, k + (o - 1) * s + 1, s) for k, s, o in zip(offsets, strides, out))


@kernel
def _nb_pool_sums_2d(x, hp, wp, pt, pl, rows_value, kh, kw, sh, sw, vector, total, p0, p1):
    """Numba twin of :func:`pool_window_sums` for 2-D windows (``x`` ``(N, C, H, W)``, padded
    to ``hp x wp`` with ``pt`` rows above and ``pl`` columns left: padding rows hold
    ``rows_value``, padding columns of ``x``'s rows +0; ``total`` ``(N, C, OH, OW)``), in the
    same order: ``vector``: per output row, the column sums
    ``col[ix] = ((xp[r0, ix] + xp[r0 + 1, ix]) + ...)`` over the window's rows, then
    ``((col[ox·sw] + col[ox·sw + 1]) + ...)`` (stride 2: read from the even and odd columns
    apart, the same additions); otherwise +0 + the window's values in row-major order. Each
    plane is padded in a cache-sized buffer, not as a whole padded copy. Planes (n·C + c)
    ``p0 <= q < p1`` only."""
    h, w = x.shape[2], x.shape[3]
    oh, ow = total.shape[2], total.shape[3]
    xs = x.reshape(-1)
    t1 = total.reshape(-1)
    x1 = np.zeros(hp * wp, dtype=np.float32)          # one padded plane
    for r in range(hp):
        if r < pt or r >= pt + h:
            for ix in range(wp):
                x1[r * wp + ix] = rows_value
    col = np.zeros(wp + 1, dtype=np.float32)          # (+1: the odd half reads one past)
    half = (wp + 1) // 2
    split = np.empty((2, half), dtype=np.float32)     # stride 2: even, odd columns of col
    step = np.uint64(sw)
    zero = np.float32(0.0)
    for q in range(p0, p1):         # (loops over a row of independent outputs, unsigned
        for iy in range(h):         # indices: they vectorize; each output's order is kept)
            src = np.uint64((q * h + iy) * w)
            dst = np.uint64((pt + iy) * wp + pl)
            for ix in range(w):
                u = np.uint64(ix)
                x1[dst + u] = xs[src + u]
        for oy in range(oh):
            r0 = np.uint64(oy * sh * wp)
            d0 = np.uint64((q * oh + oy) * ow)
            if vector:
                for ix in range(wp):
                    col[np.uint64(ix)] = x1[r0 + np.uint64(ix)]
                for ky in range(1, kh):
                    r = r0 + np.uint64(ky * wp)
                    for ix in range(wp):
                        u = np.uint64(ix)
                        col[u] = col[u] + x1[r + u]
                if sw == 2:         # consecutive reads: the even and odd columns apart
                    split_even_odd(col, half, split)
                    for ox in range(ow):
                        u = np.uint64(ox)
                        t1[d0 + u] = split[0, u]
                    for kx in range(1, kw):
                        p, c0 = np.uint64(kx & 1), np.uint64(kx >> 1)
                        for ox in range(ow):
                            u = np.uint64(ox)
                            t1[d0 + u] = t1[d0 + u] + split[p, c0 + u]
                    continue
                for ox in range(ow):
                    u = np.uint64(ox)
                    t1[d0 + u] = col[u * step]
                for kx in range(1, kw):
                    c0 = np.uint64(kx)
                    for ox in range(ow):
                        u = np.uint64(ox)
                        t1[d0 + u] = t1[d0 + u] + col[c0 + u * step]
            else:
                for ox in range(ow):
                    u = np.uint64(ox)
                    t1[d0 + u] = zero + x1[r0 + u * step]
                for ky in range(kh):
                    for kx in range(1 if ky == 0 else 0, kw):
                        r = r0 + np.uint64(ky * wp + kx)
                        for ox in range(ow):
                            u = np.uint64(ox)
                            t1[d0 + u] = t1[d0 + u] + x1[r + u * step]


@kernel
def _pool_sums_parts(x, hp, wp, pt, pl, rows_value, kh, kw, sh, sw, vector, total, parts,
                     state):
    """The plane ranges ``parts`` of :func:`_nb_pool_sums_2d` this thread claims
    (:mod:`qsim.kernels.threads`)."""
    while True:
        p = threads_.claim(state)
        if p >= parts.shape[0]:
            return
        _nb_pool_sums_2d(x, hp, wp, pt, pl, rows_value, kh, kw, sh, sw, vector, total,
                         parts[p, 0], parts[p, 1])
        threads_.finish(state)


def pool_window_sums(xp, kernel, strides, out, *, vector: bool, begins=None, ends=None,
                     rows_value: float = 0.0, use_numba: bool = USE_NUMBA) -> np.ndarray:
    """Sum of every pooling window of the padded float32 input ``xp`` (N, C, spatial...)
    (or of ``xp`` padded by ``begins`` / ``ends`` per spatial axis: the leading axes with
    ``rows_value``, the last with +0):

    * ``vector`` (MlasPool2DVectorKernel / 3D): first, per column, the sum over the window's
      leading spatial positions in row-major order (2D: from the first row; 3D: from +0); then
      these column sums left to right along the last axis, starting from the first column;
    * otherwise (the generic MLAS kernels and ORT's own pooling loop): +0 + every window
      position in row-major order.

    Padding along the last axis is +0.0 at its place in the order (MLAS's reduction buffer).
    MLAS sums only the input's rows: pad ``xp``'s leading spatial axes with -0.0, the exact
    additive identity (x + -0 = x for every x, +0 included), for the 2D vector kernel, whose
    column sums keep a -0; elsewhere the +0 start makes the sign of padding immaterial.
    2-D windows: :func:`_nb_pool_sums_2d` (``use_numba``), the same order."""
    xp = np.asarray(xp, F32)
    nsp = xp.ndim - 2
    begins = tuple(int(b) for b in begins) if begins is not None else (0,) * nsp
    ends = tuple(int(e) for e in ends) if ends is not None else (0,) * nsp
    padded = tuple(d + b + e for d, b, e in zip(xp.shape[2:], begins, ends))
    if use_numba and xp.ndim == 4 and xp.size and all(o > 0 for o in out):
        total = np.empty(xp.shape[:2] + tuple(out), dtype=F32)
        from .gemm import run_shared        # gemm imports this module
        planes = xp.shape[0] * xp.shape[1]
        threads = DEFAULT_THREADS if total.size * math.prod(kernel) \
            >= _MIN_PARALLEL_WINDOW_VALUES else 1
        run_shared("pool_sums", (np.ascontiguousarray(xp), padded[0], padded[1], begins[0],
                                 begins[1], F32(rows_value),
                                 *(int(v) for v in (*kernel, *strides)), bool(vector), total,
                                 threads_.spans(planes, threads)), threads)
        return total
    if any(begins) or any(ends):
        full = np.zeros(xp.shape[:2] + padded, dtype=F32)
        inner = tuple(slice(b, b + d) for b, d in zip(begins, xp.shape[2:]))
        for axis in range(nsp - 1):         # the padding of the leading axes: rows_value
            lead = [slice(None)] * nsp
            lead[axis] = slice(0, begins[axis])
            full[(Ellipsis, *lead)] = rows_value
            lead[axis] = slice(begins[axis] + xp.shape[2 + axis], None)
            full[(Ellipsis, *lead)] = rows_value
        full[(Ellipsis, *inner)] = xp
        xp = full
    if not vector:
        total = None
        for offsets in np.ndindex(*kernel):
            part = xp[_window(offsets, strides, out)]
            total = (part + F32(0)) if total is None else (total + part).astype(F32)
        return total
    columns = None
    for offsets in np.ndindex(*kernel[:-1]):
        part = xp[_window(offsets, strides[:-1], out[:-1]) + (slice(None),)]
        if columns is None:
            columns = part.copy() if len(kernel) == 2 else part + F32(0)
        else:
            columns = (columns + part).astype(F32)
    k, s, o = kernel[-1], strides[-1], out[-1]
    total = None
    for j in range(k):
        part = columns[..., j:j + (o - 1) * s + 1:s]
        total = part.copy() if total is None else (total + part).astype(F32)
    return total


def mlas_pool_is_vector(kernel, strides, width, pads_w) -> bool:
    """MlasPool's choice of its vectorised 2D/3D kernel: stride along the last axis at most 2,
    every kernel extent at most 32, and the padded row fits its 2048-float reduction buffer."""
    return (len(kernel) >= 2 and strides[-1] <= 2 and max(kernel) <= 32
            and width + pads_w <= 2048 - 3)


# --------------------------------------------------------------------------------------------
# Resize, mode="linear", 2-D (onnxruntime/core/providers/cpu/tensor/upsample.h, UpsampleBilinear)


def _bilinear_axis(coords: np.ndarray, n_in: int):
    """ORT's per-axis bilinear parameters from the float32 source coordinates ``coords``::

        c = clamp(c, 0, n_in - 1); i1 = min(int(c), n_in - 1); i2 = min(i1 + 1, n_in - 1)
        d1 = |c - i1|; d2 = |c - i2|; (d1, d2) = (0.5, 0.5) where i1 == i2
    """
    c = np.minimum(np.asarray(coords, F32), F32(n_in - 1))
    c = np.maximum(F32(0), c)
    i1 = np.minimum(c.astype(np.int64), n_in - 1)
    i2 = np.minimum(i1 + 1, n_in - 1)
    d1 = np.abs(c - i1.astype(F32)).astype(F32)
    d2 = np.abs(c - i2.astype(F32)).astype(F32)
    same = i1 == i2
    d1 = np.where(same, _HALF, d1).astype(F32)
    d2 = np.where(same, _HALF, d2).astype(F32)
    return i1, i2, d1, d2


def bilinear(x, y_coords, x_coords) -> np.ndarray:
    """Bilinear resize of the last two axes of float32 ``x`` as UpsampleBilinear::

        Y = (dx2·dy2)·X11 + (dx1·dy2)·X21 + (dx2·dy1)·X12 + (dx1·dy1)·X22   (left to right)
    with X11 = X[y1, x1], X21 = X[y1, x2], X12 = X[y2, x1], X22 = X[y2, x2] (see
    :func:`_bilinear_axis`); ``y_coords``/``x_coords`` are the float32 source coordinates."""
    x = np.asarray(x, F32)
    h, w = x.shape[-2:]
    y1, y2, dy1, dy2 = _bilinear_axis(y_coords, h)
    x1, x2, dx1, dx2 = _bilinear_axis(x_coords, w)
    dy1, dy2 = dy1[:, None], dy2[:, None]
    r1, r2 = y1[:, None], y2[:, None]
    with np.errstate(invalid="ignore", over="ignore"):
        total = ((dx2 * dy2).astype(F32) * x[..., r1, x1]).astype(F32)
        total = (total + ((dx1 * dy2).astype(F32) * x[..., r1, x2]).astype(F32)).astype(F32)
        total = (total + ((dx2 * dy1).astype(F32) * x[..., r2, x1]).astype(F32)).astype(F32)
        total = (total + ((dx1 * dy1).astype(F32) * x[..., r2, x2]).astype(F32)).astype(F32)
    return total
