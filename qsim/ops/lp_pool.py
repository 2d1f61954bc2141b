"""LpPool and GlobalLpPool (ONNX opsets 2-22) as ONNX Runtime's CPU pooling loop computes them.

ONNX Runtime's ``LpPool`` functor (``pool_base.h``), for each output position::

    acc = 0.0f;  for each input element x of the window (row-major, out-of-range ones skipped):
        acc ⊕= float32(pow(double(|x|), double(p)))          C library's pow of doubles
    y = powf(acc, 1.0f ⊘ float(p))                            C library's powf

The window terms are ≥ 0 (or NaN), so padding may add ``+0`` instead of skipping: qsim zero-pads
and adds the kernel offsets in row-major order, each output position getting the same float32
additions in the same order. GlobalLpPool is one window over all spatial positions.
"""
from __future__ import annotations

import numpy as np

from ..errors import OpError
from ..kernels.libm import c_pow
from .nn import _pad, _pool_geometry, _window_slices
from .registry import register

F32 = np.float32


def _terms(op: str, x, p) -> tuple[np.ndarray, float]:
    """``float32(pow(double|x|, double(p)))`` of every element, and ``1.0f / p``."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise OpError(f"{op}: input X has dtype {x.dtype}; qsim computes float32")
    if x.ndim < 3:
        raise OpError(f"{op}: input X has shape {list(x.shape)}; expected rank >= 3 "
                      f"(N, C, spatial...)")
    if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
        raise OpError(f"{op}: attribute p={p!r} must be an integer >= 1")
    with np.errstate(over="ignore"):
        terms = c_pow(np.abs(x), np.float64(p))          # float(pow(double, double))
    return terms, F32(1) / F32(p)


def _root(acc: np.ndarray, inverse_p) -> np.ndarray:
    return c_pow(acc, inverse_p)                         # powf(float, float)


@register("LpPool")
def lp_pool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, p=2,
            pads=None, strides=None):
    """``Y = (Σ_window |X|^p)^(1/p)`` per window, ONNX Runtime's arithmetic (module
    docstring)."""
    terms, inverse_p = _terms("LpPool", x, p)
    kernel, strides, dilations, begins, ends, extra, out = _pool_geometry(
        terms, kernel_shape, strides, dilations, auto_pad, pads, ceil_mode)
    padded = _pad(terms, begins, tuple(e + x for e, x in zip(ends, extra)), 0.0)
    acc = np.zeros(terms.shape[:2] + tuple(out), F32)
    for _, where in _window_slices(kernel, strides, dilations, out):
        acc += padded[where]
    return _root(acc, inverse_p)


@register("GlobalLpPool")
def global_lp_pool(x, *, p=2):
    """``Y[n, c, 1, ...] = (Σ_spatial |X|^p)^(1/p)``, the sum in row-major order (a sequential
    float32 accumulation, as ONNX Runtime's loop)."""
    terms, inverse_p = _terms("GlobalLpPool", x, p)
    rows = terms.reshape(terms.shape[:2] + (-1,))
    acc = np.add.accumulate(rows, axis=-1, dtype=F32)[..., -1]
    return _root(acc, inverse_p).reshape(terms.shape[:2] + (1,) * (terms.ndim - 2))
