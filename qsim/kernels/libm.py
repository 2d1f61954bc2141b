"""The C library's ``pow`` as ONNX Runtime's Pow calls it, element by element.

ONNX Runtime's CPU Pow (``element_wise_ops.cc``) computes ``std::pow(x, y)`` for every element,
except ``x·x`` and ``(x·x)·x`` for a size-1 exponent of 2 or 3 (qsim.ops.elementwise.pow_ decides
that). ``std::pow`` of two floats is the C library's ``powf``; a float base with a double or
integer exponent is promoted to ``pow`` of doubles, rounded to float at the end. glibc's powf
is not correctly rounded, so neither a float64 power nor NumPy's float32 power gives its bits —
and NumPy's own float32/float64 power depends on the machine: on an AVX-512 CPU NumPy dispatches
to its SVML kernels, which differ from glibc in about one element in five. So qsim calls the C
library itself: Numba lowers ``math.pow`` of two float32 (float64) to a call of libm's ``powf``
(``pow``); the NumPy twin calls them through ctypes. Both give the same bits (tested).
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
