"""float32 Eigen expressions of ONNX Runtime's activation functors (Elu, Selu, Celu, Softplus),
of its Sin and Cos, and the packet pow of its LRN (:func:`ppow`), bit for bit.

The Eigen is the one ONNX Runtime's cmake/deps.txt pins (commit 1d8b82b0, February 2025: its
pow is the one ORT 1.32's LRN output matches), compiled for SSE (packets of 4 floats, no FMA).

ORT evaluates ``ym = <Eigen array expression of xm>`` over each parallel block of the flattened
tensor (:func:`qsim.kernels.mlas_math.parallel_blocks` with the functor's cost). Eigen runs the
16-byte-aligned body of a block in SSE packets of 4 — there ``exp`` is Eigen's ``pexp_float``
and ``log1p`` its ``generic_plog1p``, every ``pmadd`` a multiply then an add (no FMA) — and the
unaligned head and the ``(size - head) % 4`` tail one element at a time with libm's ``expf`` and
``log1pf``. Every other operation is one IEEE float32 operation.

    pexp_float(x):  m = floor(x·log2(e) + 1/2);  r = (x + m·C1) + m·C2   (C1 = -0.693359375,
                    C2 = 2.12194440e-4);  r2 = r·r;
                    y = r2·((r·(r2·p5 + p3) + (r2·(r2·p6 + p4) + p2))) + (r + 1)
                    result 2^m · y (as Eigen's pldexp: a·c·c·c·2^(m - 3b), c = 2^floor(m/4)),
                    0 below -104, x clamped at 88.723 above.
    plog1p(x):      u = x + 1;  x if u == 1 or log(u) == u else x · (log(u) / (u - 1))
                    with Eigen's packet log (:func:`qsim.kernels.mlas_math.log`'s packet path).
"""
from __future__ import annotations

import ctypes

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..jit import USE_NUMBA, kernel
from . import mlas_math
from . import threads as threads_
from .mlas_math import F32, DEFAULT_THREADS, parallel_blocks

_LIBM = mlas_math._LIBM
_LIBM.expf.restype = ctypes.c_float
_LIBM.expf.argtypes = [ctypes.c_float]
_LIBM.log1pf.restype = ctypes.c_float
_LIBM.log1pf.argtypes = [ctypes.c_float]

_LOG2E = F32(1.44269504088896341)
_C1, _C2 = F32(-0.693359375), F32(2.12194440e-4)
_P2, _P3 = F32(0.49999988079071044921875), F32(0.16666518151760101318359375)
_P4, _P5 = F32(4.166965186595916748046875e-2), F32(8.36894474923610687255859375e-3)
_P6 = F32(1.37449637986719608306884765625e-3)
_HI, _LO = F32(88.723), F32(-104.0)
_ONE, _HALF = F32(1.0), F32(0.5)

#: ORT's TensorOpCost of a unary float functor per element: 4 bytes in, 4 out at 11/64 cycles
#: per byte, plus the functor's Cost()
_BYTES_COST = 4 * 11 / 64 + 4 * 11 / 64
COSTS = {"Elu": 30.0, "Selu": 4.0, "Softplus": 15.0, "Celu": 1.0}


def scalar_positions(n: int, cost: float, threads: int) -> np.ndarray:
    """Elements Eigen computes one at a time (libm): per parallel block the unaligned head and
    the (size - head) % 4 tail."""
    scalar = np.zeros(n, bool)
    for start, end in parallel_blocks(n, _BYTES_COST + cost, threads):
        head = min((-start) % 4, end - start)
        scalar[start:start + head] = True
        scalar[start + head + (end - start - head) // 4 * 4:end] = True
    return scalar


def _pldexp(a: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Eigen's pldexp: a · 2^e as a·c·c·c·2^(e - 3b) with b = floor(e/4), c = 2^b (float32)."""
    e = np.clip(e, -512, 512).astype(np.int64)
    b = e >> 2
    c = np.ldexp(_ONE, b).astype(F32)
    out = (((a * c).astype(F32) * c).astype(F32) * c).astype(F32)
    return (out * np.ldexp(_ONE, e - 3 * b).astype(F32)).astype(F32)


def pexp(x: np.ndarray) -> np.ndarray:
    """Eigen's packet exp (pexp_float, no FMA), elementwise on float32 ``x``."""
    x = np.asarray(x, F32)
    with np.errstate(over="ignore", invalid="ignore"):
        xc = np.minimum(x, _HI)
        m = np.floor((xc * _LOG2E).astype(F32) + _HALF).astype(F32)
        r = (xc + (m * _C1).astype(F32)).astype(F32)
        r = (r + (m * _C2).astype(F32)).astype(F32)
        r2 = (r * r).astype(F32)
        p_even = ((r2 * _P6).astype(F32) + _P4).astype(F32)
        p_odd = ((r2 * _P5).astype(F32) + _P3).astype(F32)
        p_even = ((r2 * p_even).astype(F32) + _P2).astype(F32)
        p_low = (r + _ONE).astype(F32)
        y = ((r * p_odd).astype(F32) + p_even).astype(F32)
        y = ((r2 * y).astype(F32) + p_low).astype(F32)
        big = np.where(np.isnan(m), 0, m).astype(np.int64)
        y = np.maximum(_pldexp(y, big), np.where(np.isnan(x), y, x))
        y = np.where(np.isnan(x), x, y)
    return np.where(x < _LO, F32(0), y).astype(F32)


def plog1p(x: np.ndarray) -> np.ndarray:
    """Eigen's generic_plog1p with its packet log."""
    x = np.asarray(x, F32)
    u = (x + _ONE).astype(F32)
    logu = mlas_math._np_log(u, np.zeros(u.size, bool).reshape(u.shape)) if u.ndim else u
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        large = (x * (logu / (u - _ONE)).astype(F32)).astype(F32)
    return np.where((u == _ONE) | (logu == u), x, large).astype(F32)


def _libm(fn, values: np.ndarray) -> np.ndarray:
    return np.array([fn(float(v)) for v in np.asarray(values, F32).ravel()], F32)


def _exp_parts(flat: np.ndarray, scalar: np.ndarray) -> np.ndarray:
    e = pexp(flat)
    if scalar.any():
        e[scalar] = _libm(_LIBM.expf, flat[scalar])
    return e


def _log1p_parts(v: np.ndarray, scalar: np.ndarray) -> np.ndarray:
    y = plog1p(v)
    if scalar.any():
        y[scalar] = _libm(_LIBM.log1pf, v[scalar])
    return y


def elu(x, alpha: float, threads: int = DEFAULT_THREADS) -> np.ndarray:
    """ORT's Elu: ``x >= 0 ? x : alpha · (exp(x) - 1)``."""
    x = np.asarray(x, F32)
    flat = x.ravel()
    e = _exp_parts(flat, scalar_positions(flat.size, COSTS["Elu"], threads))
    with np.errstate(over="ignore", invalid="ignore"):
        neg = (F32(alpha) * (e - _ONE).astype(F32)).astype(F32)
    return np.where(flat >= 0, flat, neg).astype(F32).reshape(x.shape)


def selu(x, alpha: float, gamma: float, threads: int = DEFAULT_THREADS) -> np.ndarray:
    """ORT's Selu: ``x > 0 ? gamma · x : (gamma · alpha) · (exp(x) - 1)``."""
    x = np.asarray(x, F32)
    flat = x.ravel()
    e = _exp_parts(flat, scalar_positions(flat.size, COSTS["Selu"], threads))
    ga = F32(F32(gamma) * F32(alpha))
    with np.errstate(over="ignore", invalid="ignore"):  # inf inputs: inf / NaN, as in ORT
        neg = (ga * (e - _ONE).astype(F32)).astype(F32)
        pos = (F32(gamma) * flat).astype(F32)
    return np.where(flat > 0, pos, neg).astype(F32).reshape(x.shape)


def celu(x, alpha: float, threads: int = DEFAULT_THREADS) -> np.ndarray:
    """ORT's Celu: ``max(x, 0) + min(alpha · (exp(x / alpha) - 1), 0)``."""
    x = np.asarray(x, F32)
    flat = x.ravel()
    a = F32(alpha)
    with np.errstate(over="ignore", invalid="ignore"):
        e = _exp_parts((flat / a).astype(F32), scalar_positions(flat.size, COSTS["Celu"],
                                                                threads))
        neg = np.minimum((a * (e - _ONE).astype(F32)).astype(F32), F32(0))
    return (np.maximum(flat, F32(0)) + neg).astype(F32).reshape(x.shape)


def softplus(x, threads: int = DEFAULT_THREADS) -> np.ndarray:
    """ORT's Softplus: ``x > 0 ? x + log1p(exp(-x)) : log1p(exp(x))``; a NaN x gives the
    packet log's NaN (all bits set) in packets, x's NaN elsewhere."""
    x = np.asarray(x, F32)
    flat = x.ravel()
    scalar = scalar_positions(flat.size, COSTS["Softplus"], threads)
    with np.errstate(over="ignore", invalid="ignore"):
        pos = (flat + _log1p_parts(_exp_parts(-flat, scalar), scalar)).astype(F32)
    neg = _log1p_parts(_exp_parts(flat, scalar), scalar)
    out = np.where(flat > 0, pos, neg).astype(F32)
    out[np.isnan(flat) & ~scalar] = mlas_math._PACKET_LOG_NAN    # the packet log's NaN
    return out.reshape(x.shape)


# --------------------------------------------------------------------------------------------
# sin / cos (Eigen's psincos_float without FMA; ORT's Sin/Cos apply it to the whole tensor)

_TWO_OVER_PI_F = F32(0.636619746685028076171875)
_ROUNDING_MAGIC = F32(12582912.0)  # 1.5 · 2^23: adding it rounds to an integer in the low bits
_PIO2_PARTS = (F32(-1.5703125), F32(-0.000483989715576171875),
               F32(1.62865035235881805419921875e-07),
               F32(5.5644315544167710640977020375430583953857421875e-11))
_COS_POLY = (F32(2.4372266125283204019069671630859375e-05), F32(-0.00138865201734006404876708984375),
             F32(0.041666619479656219482421875), F32(-0.5), F32(1.0))
_SIN_POLY = (F32(-0.0001959234114083702898469196984621021329076029360294342041015625),
             F32(0.0083326873655616851693794799871284340042620897293090820312500000),
             F32(-0.1666666203982298255503735617821803316473960876464843750000000000))
#: from this |x| on Eigen reduces the argument with Payne-Hanek (:func:`_reduce_huge`)
_HUGE = {True: F32(25966.0), False: F32(18838.0)}
#: 2/pi in binary, 32-bit words taken at every byte offset (the table Eigen reads aligned)
_TWO_OVER_PI = (
    0x00000028, 0x000028be, 0x0028be60, 0x28be60db, 0xbe60db93, 0x60db9391, 0xdb939105,
    0x9391054a, 0x91054a7f, 0x054a7f09, 0x4a7f09d5, 0x7f09d5f4, 0x09d5f47d, 0xd5f47d4d,
    0xf47d4d37, 0x7d4d3770, 0x4d377036, 0x377036d8, 0x7036d8a5, 0x36d8a566, 0xd8a5664f,
    0xa5664f10, 0x664f10e4, 0x4f10e410, 0x10e41000, 0xe4100000)
_M32, _M64 = (1 << 32) - 1, (1 << 64) - 1


def _reduce_huge(value: float) -> tuple[float, int]:
    """Eigen's trig_reduce_huge for a finite float32 ``value`` >= the huge threshold: the
    24-bit mantissa times 96 bits of 2/pi in 2.62 fixed point, ``q`` = that rounded to an
    integer (the quadrant), ``r = float32(double(p - q) · pi/2 · 2^-62)``."""
    xi = int(np.float32(value).view(np.uint32))
    e = (xi >> 23) - 118
    xi = (((xi & 0x007FFFFF) | 0x00800000) << (e & 7)) & _M32
    i = e >> 3
    p = xi * _TWO_OVER_PI[i + 7]
    p = (xi * _TWO_OVER_PI[i + 3] + (p >> 32)) & _M64
    p = ((((xi * _TWO_OVER_PI[i - 1]) & _M32) << 32) + p) & _M64
    q = ((p + (1 << 61)) & _M64) >> 62
    p = (p - (q << 62)) & _M64
    signed = p - (1 << 64) if p >= 1 << 63 else p
    return float(np.float32(float(signed) * 3.4061215800865545e-19)), int(q)


def _psincos(x: np.ndarray, sine: bool) -> np.ndarray:
    """Eigen's packet sin (``sine``) or cos of float32 ``x``::

        y = round(|x| · 2/pi) (via + 1.5·2^23), q = its integer bits
        r = |x| + y·P1 + y·P2 + y·P3 + y·P4      (each product and sum rounded; Cody-Waite;
                                                 Payne-Hanek for huge |x|: :func:`_reduce_huge`)
        cos poly c(r) = (((c4·r² + c3)·r² + c2)·r² - 1/2)·r² + 1
        sin poly s(r) = ((s3·r² + s2)·r² + s1)·r² · r + r
        sin: (q even ? s : c) with sign bit(x) xor bit 1 of q;  cos: (q even ? c : s) with
        sign = bit 1 of q + 1
    """
    x = np.asarray(x, F32)
    ax = np.abs(x)
    with np.errstate(invalid="ignore", over="ignore"):
        y_round = ((ax * _TWO_OVER_PI_F).astype(F32) + _ROUNDING_MAGIC).astype(F32)
        q = y_round.view(np.int32).copy()
        y = (y_round - _ROUNDING_MAGIC).astype(F32)
        r = ax
        for part in _PIO2_PARTS:
            r = (r + (y * part).astype(F32)).astype(F32)
        for k in np.flatnonzero((ax >= _HUGE[sine]) & np.isfinite(ax)):
            r[k], q[k] = _reduce_huge(float(ax[k]))
        r2 = (r * r).astype(F32)
        c = _COS_POLY[0]
        for coef in _COS_POLY[1:]:
            c = ((c * r2).astype(F32) + coef).astype(F32)
        s = _SIN_POLY[0]
        for coef in _SIN_POLY[1:]:
            s = ((s * r2).astype(F32) + coef).astype(F32)
        s = (s * r2).astype(F32)
        s = ((s * r).astype(F32) + r).astype(F32)
    even = (q & 1) == 0
    if sine:
        out = np.where(even, s, c)
        sign = (x.view(np.int32) ^ (q << 30)) & np.int32(-2**31)
    else:
        out = np.where(even, c, s)
        sign = ((q + 1) << 30) & np.int32(-2**31)
    return (out.astype(F32).view(np.int32) ^ sign).view(F32)


def _sin_or_cos(x, sine: bool) -> np.ndarray:
    x = np.asarray(x, F32)
    flat = x.ravel()
    out = _psincos(flat, sine)
    tail = flat.size % 4
    if tail:
        fn = _LIBM.sinf if sine else _LIBM.cosf
        out[flat.size - tail:] = _libm(fn, flat[flat.size - tail:])
    return out.reshape(x.shape)


_LIBM.sinf.restype = _LIBM.cosf.restype = ctypes.c_float
_LIBM.sinf.argtypes = _LIBM.cosf.argtypes = [ctypes.c_float]


def sin(x) -> np.ndarray:
    """ORT's Sin: Eigen's packet sine over the tensor, libm sinf for the n % 4 tail."""
    return _sin_or_cos(x, True)


def cos(x) -> np.ndarray:
    """ORT's Cos: Eigen's packet cosine over the tensor, libm cosf for the n % 4 tail."""
    return _sin_or_cos(x, False)


# --------------------------------------------------------------------------------------------
# pow with a scalar exponent (Eigen's unary_pow_impl: ``array.pow(b)``, used by ORT's LRN)
#
# Double-word ("hi + lo") arithmetic in float32, as Eigen evaluates it without FMA:
#   fast_two_sum(a, b):      s = a + b;  lo = b - (s - a)                      (exact if |a| >= |b|)
#   two_prod(a, b):          Dekker's product over Veltkamp halves (x_hi = (x - 4097x) + 4097x):
#                            hi = a·b;  lo = ((a_hi·b_hi - hi) + a_hi·b_lo + a_lo·b_hi) + a_lo·b_lo
#   two_prod((h, l), b):     (c, e) = two_prod(h, b);  (t, u) = fast_two_sum(c, l·b);
#                            fast_two_sum(t, u + e)
#   fast_two_sum((a, a'), (b, b')):  (r, e) = fast_two_sum(a, b);  fast_two_sum(r, (b' + e) + a')

_POW_C0 = 1.442695041742110273474963832995854318141937255859375
_POW_C1 = -7.2134751588268664068692714863573201000690460205078125e-01
_POW_C0_HI, _POW_C1_HI = F32(_POW_C0), F32(_POW_C1)
_POW_C0_LO = F32(_POW_C0 - float(_POW_C0_HI))
_POW_C1_LO = F32(_POW_C1 - float(_POW_C1_HI))
#: accurate_log2<float>'s working-precision coefficients, highest degree first
_POW_LOG2_P = tuple(F32(c) for c in (
    9.7010828554630279541015625e-02, -1.6896486282348632812500000e-01,
    1.7200836539268493652343750e-01, -1.7892272770404815673828125e-01,
    2.0505344867706298828125000e-01, -2.4046677350997924804687500e-01,
    2.8857553005218505859375000e-01, -3.6067414283752441406250000e-01,
    4.8089790344238281250000000e-01))
_LN2_F = F32(0.693147180559945309417232121458176568)
_SQRT_HALF = F32(0.70710678118654752440)


def _f(v) -> np.ndarray:
    return np.asarray(v, F32)


def _fast_two_sum(a, b):
    s = _f(a + b)
    return s, _f(b - _f(s - a))


def _veltkamp(x):
    gamma = _f(F32(4097.0) * x)
    hi = _f(_f(x - gamma) + gamma)
    return hi, _f(x - hi)


def _two_prod(a, b):
    a_hi, a_lo = _veltkamp(a)
    b_hi, b_lo = _veltkamp(b)
    hi = _f(a * b)
    lo = _f(_f(a_hi * b_hi) - hi)
    lo = _f(_f(a_hi * b_lo) + lo)
    lo = _f(_f(a_lo * b_hi) + lo)
    return hi, _f(_f(a_lo * b_lo) + lo)


def _two_prod_dw(h, l, b):
    c, e = _two_prod(h, b)
    t, u = _fast_two_sum(c, _f(l * b))
    return _fast_two_sum(t, _f(u + e))


def _fast_two_sum_dw(a, a_lo, b, b_lo):
    r, e = _fast_two_sum(a, b)
    return _fast_two_sum(r, _f(_f(b_lo + e) + a_lo))


def _accurate_log2(z):
    """Eigen's accurate_log2<float> on z in [sqrt(1/2), sqrt(2)), as a double word::

        x = z - 1;  p = Horner(P, x) (float32, degree 8);
        log2(z) = ((p·x + C1)·x + C0)·x   (the last two steps and the products in double words)
    """
    x = _f(z - _ONE)
    p = np.full_like(x, _POW_LOG2_P[0])
    for c in _POW_LOG2_P[1:]:
        p = _f(_f(p * x) + c)
    hi, lo = _two_prod(x, p)
    hi, lo = _fast_two_sum_dw(np.full_like(x, _POW_C1_HI), _POW_C1_LO, hi, lo)
    hi, lo = _two_prod_dw(hi, lo, x)
    hi, lo = _fast_two_sum_dw(np.full_like(x, _POW_C0_HI), _POW_C0_LO, hi, lo)
    return _two_prod_dw(hi, lo, x)


def _round_half_away(a):
    t = np.trunc(a)
    return _f(np.where(np.abs(_f(a - t)) >= _HALF, t + np.copysign(_ONE, a), t))


def _pow_core(x, y: np.float32) -> np.ndarray:
    """Eigen's generic_pow_impl(x, y) for finite x > 0::

        x = m·2^e, m in [sqrt(1/2), sqrt(2));  f = e·y + log2(m)·y   (double words)
        n = round(f_hi);  r = (f_hi - n) + f_lo;  n += round(r);  r -= round(r)
        exp2(r) = pexp(h)·(1 + l) with (h, l) = two_prod(ln2, r);  result exp2(r)·2^n
    """
    mant, ex = np.frexp(x)
    m, e = _f(mant), _f(ex)
    low = m < _SQRT_HALF
    m = _f(np.where(low, _f(F32(2) * m), m))
    e = _f(np.where(low, e - _ONE, e))
    r_hi, r_lo = _accurate_log2(m)
    yv = np.full_like(m, y)
    f1_hi, f1_lo = _two_prod(e, yv)
    f2_hi, f2_lo = _two_prod_dw(r_hi, r_lo, yv)
    f_hi, f_lo = _fast_two_sum_dw(f1_hi, f1_lo, f2_hi, f2_lo)
    n = _round_half_away(f_hi)
    r = _f(_f(f_hi - n) + f_lo)
    n_r = _round_half_away(r)
    r, n = _f(r - n_r), _f(n + n_r)
    h, l = _two_prod(np.full_like(r, _LN2_F), r)
    e_r = _f(pexp(h) * _f(_ONE + l))
    return _f(np.ldexp(e_r, n.astype(np.int64)))


def _int_pow(x, k: int) -> np.ndarray:
    """Eigen's int_pow: r = x (1/x if k < 0), then repeated squaring with the odd factors
    collected in y (from 1): k = -3 gives r·(r·r), 5 gives (x·(x·x)... as the loop runs."""
    if k == 0:
        return np.ones_like(x)
    with np.errstate(divide="ignore", over="ignore", under="ignore", invalid="ignore"):
        r = _f(_ONE / x) if k < 0 else x
        y = np.ones_like(x)
        m = abs(k)
        while m > 1:
            if m % 2:
                y = _f(y * r)
            r = _f(r * r)
            m //= 2
        return _f(y * r)


#: values per chunk of :func:`_np_ppow` (128 KiB of float32)
_PPOW_CHUNK = 32768


def _np_ppow(x, exponent: float) -> np.ndarray:
    """Eigen's packet ``x.pow(exponent)`` (float32 ``x``, float32 scalar ``exponent``) in NumPy:
    the twin of :func:`ppow`'s compiled loop.

    An integer exponent in [-3, 7] is :func:`_int_pow`; any other is :func:`_pow_core` of |x|
    with the special values of Eigen's handlers: a non-integer exponent gives NaN (all bits
    set) for x < 0; x = ±0 gives +inf (negative exponent) or +0, |x| = inf +0 or +inf; an
    integer exponent keeps the sign of x when it is odd and turns NaN into +NaN (a non-integer
    one keeps x's NaN); x = 1 gives 1.

    Elementwise, so a large ``x`` is computed in flat chunks of :data:`_PPOW_CHUNK` values:
    the same values, with the dozens of NumPy temporaries of the double-word arithmetic
    staying in cache (an LRN of 2.3M values: 0.36 -> 0.18 s)."""
    x = _f(x)
    if x.size > _PPOW_CHUNK:
        flat = np.ascontiguousarray(x).reshape(-1)
        out = np.empty_like(flat)
        for i in range(0, flat.size, _PPOW_CHUNK):
            out[i:i + _PPOW_CHUNK] = _np_ppow(flat[i:i + _PPOW_CHUNK], exponent)
        return out.reshape(x.shape)
    y = F32(exponent)
    integer = bool(np.isfinite(y) and np.round(y) == y)
    if integer and -3 <= y <= 7:
        return _int_pow(x, int(y))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore", under="ignore"):
        a = np.abs(x)
        out = _pow_core(np.where(np.isfinite(a) & (a > 0), a, _ONE), y)
        if not integer:
            out = np.where(x < 0, np.full(x.shape, -1, np.int32).view(F32), out)
        out = np.where(a == 0, F32(np.inf) if y < 0 else F32(0), out)
        out = np.where(np.isinf(a), F32(0) if y < 0 else F32(np.inf), out)
        if integer:
            odd = bool(np.round(y / 2) != y / 2)
            out = np.where(np.signbit(x) & odd, -out, out)
            out = np.where(np.isnan(x), F32(np.nan), out)      # generic_pow: a quiet +NaN
        else:
            out = np.where(np.isnan(x), x, out)                # NaN runs through the core
        return _f(np.where(x == _ONE, _ONE, out))


# --------------------------------------------------------------------------------------------
# the same pow compiled: one element at a time, every float32 operation of the twin in the
# same order (no FMA contraction, no reassociation: qsim.jit.kernel), and without branches on
# values, so that LLVM vectorises the loop: frexp and ldexp on the bits of the float32 values
# (:func:`_f32_bits`, :func:`_bits_f32`), every ``np.where`` of the twin a select.

_I32 = np.int32
_MANT_MASK, _HALF_EXP_BITS = _I32(0x007FFFFF), _I32(0x3F000000)   # frexp: m = 0.f · 2^0
_EXP_MASK, _EXP_BIAS = _I32(0xFF), _I32(127)
_TWO_23, _TWO = _I32(23), F32(2.0)
_MIN_NORMAL, _TWO_P24 = F32(2.0 ** -126), F32(2.0 ** 24)
_FREXP_BIAS, _SUBNORMAL_SHIFT = _I32(126), _I32(24)
_VELTKAMP = F32(4097.0)
_ZERO, _INF, _NAN = F32(0.0), F32(np.inf), F32(np.nan)
_LDEXP_LO, _LDEXP_HI = F32(-200.0), F32(200.0)
_STEP_LO, _STEP_HI = _I32(-100), _I32(127)
#: largest |exponent| the compiled pow takes: |f| <= 150·2^16 < 2^24, every step finite
POW_EXPONENT_LIMIT = 2.0 ** 16


@intrinsic
def _f32_bits(typingctx, v):
    """The IEEE bits of a float32 as an int32 (LLVM ``bitcast``: no instruction of its own)."""
    sig = types.int32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@intrinsic
def _bits_f32(typingctx, v):
    """The float32 whose IEEE bits are the int32 ``v`` (LLVM ``bitcast``)."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@kernel
def _pow2_nb(k):
    """2^k as a float32 for an int32 k in [-126, 127]: exponent bits ``(k + 127) << 23``."""
    return _bits_f32((k + _EXP_BIAS) << _TWO_23)


@kernel
def _fast_two_sum_nb(a, b):
    """:func:`_fast_two_sum` of float32 scalars."""
    s = a + b
    return s, b - (s - a)


@kernel
def _two_prod_nb(a, b):
    """:func:`_two_prod` of float32 scalars (Veltkamp halves, Dekker's product)."""
    ga = _VELTKAMP * a
    a_hi = (a - ga) + ga
    a_lo = a - a_hi
    gb = _VELTKAMP * b
    b_hi = (b - gb) + gb
    b_lo = b - b_hi
    hi = a * b
    lo = a_hi * b_hi - hi
    lo = a_hi * b_lo + lo
    lo = a_lo * b_hi + lo
    return hi, a_lo * b_lo + lo


@kernel
def _two_prod_dw_nb(h, l, b):
    """:func:`_two_prod_dw` of float32 scalars."""
    c, e = _two_prod_nb(h, b)
    t, u = _fast_two_sum_nb(c, l * b)
    return _fast_two_sum_nb(t, u + e)


@kernel
def _fast_two_sum_dw_nb(a, a_lo, b, b_lo):
    """:func:`_fast_two_sum_dw` of float32 scalars."""
    r, e = _fast_two_sum_nb(a, b)
    return _fast_two_sum_nb(r, (b_lo + e) + a_lo)


@kernel
def _round_half_away_nb(a):
    """:func:`_round_half_away` of a float32 scalar."""
    t = np.trunc(a)
    return t + np.copysign(_ONE, a) if abs(a - t) >= _HALF else t


@kernel
def _pexp_small_nb(x):
    """:func:`pexp` for |x| <= 1 (pow's core calls it with |x| <= ln2/2 + ulps): there the
    clamps, the max with x (exp(x) > x) and the NaN select of the twin change nothing, m is
    -1, 0 or 1, and Eigen's pldexp (three factors of 2^floor(m/4) and a fourth) multiplies by
    exact powers of two: y·2^m."""
    m = np.floor(x * _LOG2E + _HALF)
    r = x + m * _C1
    r = r + m * _C2
    r2 = r * r
    p_even = r2 * _P6 + _P4
    p_odd = r2 * _P5 + _P3
    p_even = r2 * p_even + _P2
    p_low = r + _ONE
    y = r * p_odd + p_even
    y = r2 * y + p_low
    return y * _pow2_nb(_I32(m))


@kernel
def _ldexp_nb(v, n):
    """``np.ldexp(v, n)`` (one rounding) for a float32 v in [1/2, 2) and a float32 integer n:
    n clamped to [-200, 200] (the same 0 or inf), then v·2^n1 (exact: normal) times 2^(n - n1)
    with n1 = n clamped to [-100, 127] (the one rounding, to a subnormal or to inf)."""
    k = _I32(min(max(n, _LDEXP_LO), _LDEXP_HI))
    k1 = min(max(k, _STEP_LO), _STEP_HI)
    return (v * _pow2_nb(k1)) * _pow2_nb(k - k1)


@kernel
def _nb_ppow(x, y, integer, odd, out):
    """``out[i] = ppow(x[i], y)`` over flat float32 arrays, for a float32 exponent y outside
    int_pow's [-3, 7] with |y| <= 2^16: :func:`_pow_core` of |x| (1 in place of 0, inf, NaN)
    and the special values of :func:`_np_ppow`, all as selects (one loop body, nothing called
    that is not inlined, so that LLVM vectorises it)."""
    for i in range(x.size):
        v = x[i]
        a = abs(v)
        regular = (a > _ZERO) & (a < _INF)
        a = a if regular else _ONE
        # frexp: a = m·2^e, m in [1/2, 1) (a subnormal a scaled by 2^24 first)
        subnormal = a < _MIN_NORMAL
        bits = _f32_bits(a * _TWO_P24 if subnormal else a)
        ex = ((bits >> _TWO_23) & _EXP_MASK) - _FREXP_BIAS
        ex = ex - _SUBNORMAL_SHIFT if subnormal else ex
        m = _bits_f32((bits & _MANT_MASK) | _HALF_EXP_BITS)
        e = F32(ex)
        low = m < _SQRT_HALF
        m = _TWO * m if low else m
        e = e - _ONE if low else e
        # accurate_log2(m) as a double word
        z = m - _ONE
        p = _POW_LOG2_P[0]
        for k in range(1, len(_POW_LOG2_P)):
            p = p * z + _POW_LOG2_P[k]
        hi, lo = _two_prod_nb(z, p)
        hi, lo = _fast_two_sum_dw_nb(_POW_C1_HI, _POW_C1_LO, hi, lo)
        hi, lo = _two_prod_dw_nb(hi, lo, z)
        hi, lo = _fast_two_sum_dw_nb(_POW_C0_HI, _POW_C0_LO, hi, lo)
        r_hi, r_lo = _two_prod_dw_nb(hi, lo, z)
        # f = e·y + log2(m)·y;  n = round(f), r = f - n;  exp2(r)·2^n
        f1_hi, f1_lo = _two_prod_nb(e, y)
        f2_hi, f2_lo = _two_prod_dw_nb(r_hi, r_lo, y)
        f_hi, f_lo = _fast_two_sum_dw_nb(f1_hi, f1_lo, f2_hi, f2_lo)
        n = _round_half_away_nb(f_hi)
        r = (f_hi - n) + f_lo
        n_r = _round_half_away_nb(r)
        r = r - n_r
        n = n + n_r
        h, l = _two_prod_nb(_LN2_F, r)
        res = _ldexp_nb(_pexp_small_nb(h) * (_ONE + l), n)
        # special values
        a = abs(v)
        if not integer:
            res = _bits_f32(_I32(-1)) if v < _ZERO else res
        res = (_INF if y < _ZERO else _ZERO) if a == _ZERO else res
        res = (_ZERO if y < _ZERO else _INF) if a == _INF else res
        if integer:
            res = -res if (odd and np.signbit(v)) else res
            res = _NAN if v != v else res
        else:
            res = v if v != v else res
        out[i] = _ONE if v == _ONE else res


def _exponent_kind(y: np.float32) -> tuple[bool, bool]:
    """(integer, odd) of a float32 exponent as Eigen's pow tells them apart."""
    integer = bool(np.isfinite(y) and np.round(y) == y)
    return integer, integer and bool(np.round(y / 2) != y / 2)


#: values below which the compiled pow runs on the calling thread alone (~5 ns per value on one
#: AVX-512 core: 64K values ~0.35 ms, several times the ~60-100 us of waking a worker)
_PPOW_MIN_PARALLEL = 1 << 16


def ppow(x, exponent: float, threads: int = DEFAULT_THREADS) -> np.ndarray:
    """Eigen's packet ``x.pow(exponent)`` (float32 ``x``, float32 scalar ``exponent``): see
    :func:`_np_ppow` for the arithmetic and the special values. Compiled (:func:`_nb_ppow`)
    for a finite exponent with |exponent| <= :data:`POW_EXPONENT_LIMIT` outside int_pow's
    [-3, 7], in contiguous parts over ``threads`` threads when ``x`` is large (elementwise:
    the split does not change a bit); the NumPy twin otherwise and when Numba is off."""
    x = _f(x)
    y = F32(exponent)
    integer, odd = _exponent_kind(y)
    if (not USE_NUMBA or not np.isfinite(y) or abs(float(y)) > POW_EXPONENT_LIMIT
            or (integer and -3 <= y <= 7)):
        return _np_ppow(x, exponent)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty_like(flat)
    parts = threads_.spans(flat.size, threads if flat.size >= _PPOW_MIN_PARALLEL else 1)
    threads_.run(_nb_ppow_parts, (flat, y, integer, odd, out, parts), len(parts), threads)
    return out.reshape(x.shape)


@kernel
def _nb_ppow_parts(flat, y, integer, odd, out, parts, state):
    """The parts ``[parts[p, 0], parts[p, 1])`` of :func:`_nb_ppow` that this thread claims
    (:mod:`qsim.kernels.threads`)."""
    while True:
        p = threads_.claim(state)
        if p >= parts.shape[0]:
            return
        _nb_ppow(flat[parts[p, 0]:parts[p, 1]], y, integer, odd, out[parts[p, 0]:parts[p, 1]])
        threads_.finish(state)
