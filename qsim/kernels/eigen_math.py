"""float32 Eigen expressions of ONNX Runtime's activation functors (Elu, Selu, Celu, Softplus),
bit for bit.

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

from . import mlas_math
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
    neg = (F32(alpha) * (e - _ONE).astype(F32)).astype(F32)
    return np.where(flat >= 0, flat, neg).astype(F32).reshape(x.shape)


def selu(x, alpha: float, gamma: float, threads: int = DEFAULT_THREADS) -> np.ndarray:
    """ORT's Selu: ``x > 0 ? gamma · x : (gamma · alpha) · (exp(x) - 1)``."""
    x = np.asarray(x, F32)
    flat = x.ravel()
    e = _exp_parts(flat, scalar_positions(flat.size, COSTS["Selu"], threads))
    ga = F32(F32(gamma) * F32(alpha))
    neg = (ga * (e - _ONE).astype(F32)).astype(F32)
    return np.where(flat > 0, (F32(gamma) * flat).astype(F32), neg).astype(F32).reshape(x.shape)


def celu(x, alpha: float, threads: int = DEFAULT_THREADS) -> np.ndarray:
    """ORT's Celu: ``max(x, 0) + min(alpha · (exp(x / alpha) - 1), 0)``."""
    x = np.asarray(x, F32)
    flat = x.ravel()
    a = F32(alpha)
    e = _exp_parts((flat / a).astype(F32), scalar_positions(flat.size, COSTS["Celu"], threads))
    neg = np.minimum((a * (e - _ONE).astype(F32)).astype(F32), F32(0))
    return (np.maximum(flat, F32(0)) + neg).astype(F32).reshape(x.shape)


def softplus(x, threads: int = DEFAULT_THREADS) -> np.ndarray:
    """ORT's Softplus: ``x > 0 ? x + log1p(exp(-x)) : log1p(exp(x))``."""
    x = np.asarray(x, F32)
    flat = x.ravel()
    scalar = scalar_positions(flat.size, COSTS["Softplus"], threads)
    with np.errstate(over="ignore", invalid="ignore"):
        pos = (flat + _log1p_parts(_exp_parts(-flat, scalar), scalar)).astype(F32)
    neg = _log1p_parts(_exp_parts(flat, scalar), scalar)
    return np.where(flat > 0, pos, neg).astype(F32).reshape(x.shape)
