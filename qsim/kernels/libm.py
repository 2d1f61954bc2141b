"""The C library's ``pow``, ``exp`` and ``log`` as ONNX Runtime's scalar loops call them.

ONNX Runtime's CPU Pow (``element_wise_ops.cc``) computes ``std::pow(x, y)`` for every element,
except ``x·x`` and ``(x·x)·x`` for a size-1 exponent of 2 or 3 (qsim.ops.elementwise.pow_ decides
that). ``std::pow`` of two floats is the C library's ``powf``; a float base with a double or
integer exponent is promoted to ``pow`` of doubles, rounded to float at the end. glibc's powf
is not correctly rounded, so neither a float64 power nor NumPy's float32 power gives its bits —
and NumPy's own float32/float64 power depends on the machine: on an AVX-512 CPU NumPy dispatches
to its SVML kernels, which differ from glibc in about one element in five. So qsim calls the C
library itself: Numba lowers ``math.pow`` of two float32 (float64) to a call of libm's ``powf``
(``pow``); the NumPy twin calls them through ctypes. Both give the same bits (tested).

ReduceLogSumExp (and ReduceLogSum) call ``std::exp``/``std::log`` on each float element, that is
glibc's ``expf``/``logf`` (not correctly rounded either: a float64 ``log`` rounded to float32
differs in the last bit now and then); :func:`log_sum_exp_rows` runs ORT's loop with them.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math

import numpy as np

from ..jit import USE_NUMBA, kernel

_LIBM = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
_LIBM.powf.restype = ctypes.c_float
_LIBM.powf.argtypes = [ctypes.c_float, ctypes.c_float]
_LIBM.pow.restype = ctypes.c_double
_LIBM.pow.argtypes = [ctypes.c_double, ctypes.c_double]
for _name, _type in (("expf", ctypes.c_float), ("logf", ctypes.c_float), ("exp", ctypes.c_double),
                     ("log", ctypes.c_double)):
    getattr(_LIBM, _name).restype = _type
    getattr(_LIBM, _name).argtypes = [_type]


@kernel
def _nb_pow(x, y, out):
    """``out[i] = pow(x[i], y[i])`` (powf for float32 arrays, pow for float64)."""
    for i in range(x.size):
        out[i] = math.pow(x[i], y[i])


def _np_pow(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    fn = _LIBM.powf if x.dtype == np.float32 else _LIBM.pow
    return np.array([fn(float(a), float(b)) for a, b in zip(x, y)], dtype=x.dtype)


def c_pow(x, y) -> np.ndarray:
    """``std::pow(x, y)`` elementwise with NumPy broadcasting, for a float32 or float64 ``x``:
    float32 ``x`` and ``y``: ``powf(x, y)``; float32 ``x`` with a float64 or integer ``y``:
    ``float(pow(double(x), double(y)))``; float64 ``x``: ``pow(x, double(y))``. The result has
    ``x``'s dtype."""
    x, y = np.asarray(x), np.asarray(y)
    work = np.float32 if x.dtype == np.float32 and y.dtype == np.float32 else np.float64
    shape = np.broadcast_shapes(x.shape, y.shape)
    xf = np.ascontiguousarray(np.broadcast_to(x.astype(work, copy=False), shape)).ravel()
    yf = np.ascontiguousarray(np.broadcast_to(y.astype(work, copy=False), shape)).ravel()
    if USE_NUMBA:
        out = np.empty(xf.shape, work)
        _nb_pow(xf, yf, out)
    else:
        out = _np_pow(xf, yf)
    return out.reshape(shape).astype(x.dtype, copy=False)


# --------------------------------------------------------------------------------------------
# ReduceLogSumExp (onnxruntime/core/providers/cpu/reduction: ReduceAggregatorLogSumExp)


@kernel
def _nb_log_sum_exp_rows(rows, whole, maxes, zero, out):
    """``out[i]`` = ReduceLogSumExp of ``rows[i]`` (its reduced elements in row-major order).

    The max ``m``: when every axis is reduced (``whole``), ``maxes[i]`` (Eigen's maxCoeff, see
    :func:`log_sum_exp_rows`), and an infinite ``m`` is the result. Otherwise ORT's running max: ``m`` starts at the first element (0 if it
    is ±Inf) and takes every later element that is neither ±Inf nor NaN nor below it. Then
    ``acc = 0; acc += exp(v - m)`` left to right for every ``v != -inf``, ``y = log(acc) + m``
    (libm exp/log in the row's precision, every step rounded to it; ``zero`` is 0 in that
    precision)."""
    n_rows, n = rows.shape
    for i in range(n_rows):
        m = rows[i, 0]
        if whole:
            m = maxes[i]
            if np.isinf(m):
                out[i] = m
                continue
        else:
            if np.isinf(m):
                m = zero
            for j in range(n):
                v = rows[i, j]
                if not (np.isinf(v) or v != v or v < m):
                    m = v
        acc = zero
        for j in range(n):
            v = rows[i, j]
            if v != -np.inf:
                acc += math.exp(v - m)
        out[i] = math.log(acc) + m


def _np_log_sum_exp_rows(rows: np.ndarray, whole: bool, maxes: np.ndarray) -> np.ndarray:
    """NumPy twin of :func:`_nb_log_sum_exp_rows` (libm through ctypes)."""
    t = rows.dtype.type
    exp, log = (_LIBM.expf, _LIBM.logf) if t is np.float32 else (_LIBM.exp, _LIBM.log)
    out = np.empty(rows.shape[0], rows.dtype)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        for i, row in enumerate(rows):
            m = row[0]
            if whole:
                m = maxes[i]
                if np.isinf(m):
                    out[i] = m
                    continue
            else:
                m = t(0.0) if np.isinf(m) else m
                for v in row:
                    if not (np.isinf(v) or np.isnan(v) or v < m):
                        m = v
            acc = t(0.0)
            for v in row[row != -np.inf]:
                acc = t(acc + t(exp(float(t(v - m)))))
            out[i] = t(t(log(float(acc))) + m)
    return out


def log_sum_exp_rows(rows, whole: bool) -> np.ndarray:
    """ReduceLogSumExp of every row of a float32 or float64 2-D array (rows of >= 1 element) as
    ONNX Runtime computes it; ``whole``: the reduction covers every axis of the tensor (ORT's
    ``aggall`` path, whose max is Eigen's maxCoeff: ``mlas_math.eigen_row_extremes``)."""
    from .mlas_math import eigen_row_extremes
    rows = np.ascontiguousarray(rows)
    maxes = eigen_row_extremes(rows, True) if whole else rows[:, 0].copy()
    if USE_NUMBA:
        out = np.empty(rows.shape[0], rows.dtype)
        _nb_log_sum_exp_rows(rows, bool(whole), maxes, rows.dtype.type(0.0), out)
        return out
    return _np_log_sum_exp_rows(rows, bool(whole), maxes)
