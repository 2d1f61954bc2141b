"""Quantize / dequantize kernels (numerics.md §3), float32 in and out.

Each kernel exists twice: a Numba loop (``_nb_*``, compiled by :func:`qsim.jit.kernel`)
and a vectorised NumPy twin (``_np_*``). They give the same bits (tested). The public functions
take an :class:`~qsim.quant.encoding.Encoding` and work per tensor or per channel along
``enc.axis``; per channel, every slice is processed exactly like a whole tensor.

Rounding modes
--------------
``"nearest"`` (AIMET, the simulation kernel), every step in float32::

    t = x; if t > max: t = max; if t < min: t = min      # NaN passes
    t = t / delta - offset                                 # true division
    q = round_half_away_from_zero(t)                       # NaN -> 0
    x̂ = delta * (q + offset)

``"half_even"`` (ONNX QuantizeLinear -> DequantizeLinear, as ONNX Runtime runs it)::

    q = clamp(rint(x / delta) - offset, 0, N)              # ties to even, integer-domain clamp
    x̂ = (q + offset) * delta                               # NaN -> q = 0 (as ONNX Runtime on x86)

In half_even mode the clamp is the full integer range [0, N] (the whole ONNX integer type), so
a strict-symmetric encoding can reach ``delta·(N + offset)`` exactly like the exported model.
"""
from __future__ import annotations

import numpy as np

from ..errors import EncodingError
from .encoding import Encoding
from ..jit import USE_NUMBA, kernel

ROUNDING_MODES = ("nearest", "half_even")


# ---------------------------------------------------------------- scalar helpers (jit + python)

@kernel
def _round_half_away32(t):
    """float32 round half away from zero: ``r = floor(|t|); r + (|t| - r >= 0.5)``; NaN -> 0."""
    a = np.abs(t)
    r = np.floor(a)
    if a - r >= np.float32(0.5):
        r = r + np.float32(1.0)
    if t < np.float32(0.0):
        r = -r
    if t != t:
        r = np.float32(0.0)
    return r


# ---------------------------------------------------------------- Numba kernels

@kernel
def _nb_qdq_nearest(x, mn, mx, delta, offset, out):
    """AIMET qdq on ``x`` viewed as (outer, C, inner); parameters have shape (C,), float32."""
    n_outer, n_ch, n_inner = x.shape
    for o in range(n_outer):
        for c in range(n_ch):
            lo = mn[c]
            hi = mx[c]
            d = delta[c]
            off = offset[c]
            for i in range(n_inner):
                t = x[o, c, i]
                if t > hi:
                    t = hi
                if t < lo:
                    t = lo
                out[o, c, i] = d * (_round_half_away32(t / d - off) + off)


@kernel
def _nb_quantize_nearest(x, mn, mx, delta, offset, out):
    """AIMET grid index ``q`` (int64) of ``x`` viewed as (outer, C, inner)."""
    n_outer, n_ch, n_inner = x.shape
    for o in range(n_outer):
        for c in range(n_ch):
            lo = mn[c]
            hi = mx[c]
            d = delta[c]
            off = offset[c]
            for i in range(n_inner):
                t = x[o, c, i]
                if t > hi:
                    t = hi
                if t < lo:
                    t = lo
                out[o, c, i] = np.int64(_round_half_away32(t / d - off))


@kernel
def _nb_quantize_half_even(x, delta, offset, n_steps, out):
    """ONNX grid index: ``clamp(rint(x/delta) - offset, 0, N)``; NaN -> 0 (as ORT on x86)."""
    n_outer, n_ch, n_inner = x.shape
    for o in range(n_outer):
        for c in range(n_ch):
            d = delta[c]
            off = offset[c]
            for i in range(n_inner):
                t = np.rint(x[o, c, i] / d) - off
                if t != t:
                    t = np.float32(0.0)
                if t < np.float32(0.0):
                    t = np.float32(0.0)
                if t > n_steps:
                    t = n_steps
                out[o, c, i] = np.int64(t)


@kernel
def _nb_qdq_half_even(x, delta, offset, n_steps, out):
    """ONNX QuantizeLinear -> DequantizeLinear on (outer, C, inner), float32."""
    n_outer, n_ch, n_inner = x.shape
    for o in range(n_outer):
        for c in range(n_ch):
            d = delta[c]
            off = offset[c]
            for i in range(n_inner):
                t = np.rint(x[o, c, i] / d) - off
                if t != t:
                    t = np.float32(0.0)
                if t < np.float32(0.0):
                    t = np.float32(0.0)
                if t > n_steps:
                    t = n_steps
                out[o, c, i] = (t + off) * d


@kernel
def _nb_dequantize(q, delta, offset, out):
    """``x̂ = delta · (f32(q) + offset)`` in float32 on (outer, C, inner)."""
    n_outer, n_ch, n_inner = q.shape
    for o in range(n_outer):
        for c in range(n_ch):
            d = delta[c]
            off = offset[c]
            for i in range(n_inner):
                out[o, c, i] = d * (np.float32(q[o, c, i]) + off)


# ---------------------------------------------------------------- NumPy twins

def _np_round_half_away32(t):
    """Vectorised twin of :func:`_round_half_away32` (float32 array in and out)."""
    a = np.abs(t)
    r = np.floor(a)
    r += (a - r >= np.float32(0.5)).astype(np.float32)
    np.copysign(r, t, out=r)
    r[np.isnan(t)] = np.float32(0.0)
    return r


def _np_clamp(x, mn, mx):
    """``if t > max: t = max; if t < min: t = min`` with NaN passing through."""
    t = np.where(x > mx, mx, x)
    return np.where(t < mn, mn, t).astype(np.float32, copy=False)


def _b(*params):
    """Parameters of shape (C,) reshaped to (1, C, 1) to broadcast against (outer, C, inner)."""
    return [p.reshape(1, -1, 1) if isinstance(p, np.ndarray) else p for p in params]


def _np_qdq_nearest(x, mn, mx, delta, offset, out):
    mn, mx, delta, offset = _b(mn, mx, delta, offset)
    t = _np_clamp(x, mn, mx)
    t = t / delta - offset
    out[...] = delta * (_np_round_half_away32(t) + offset)


def _np_quantize_nearest(x, mn, mx, delta, offset, out):
    mn, mx, delta, offset = _b(mn, mx, delta, offset)
    t = _np_clamp(x, mn, mx)
    out[...] = _np_round_half_away32(t / delta - offset).astype(np.int64)


def _np_quantize_half_even_f32(x, delta, offset, n_steps):
    delta, offset = _b(delta, offset)
    t = np.rint(x / delta) - offset
    t = np.where(np.isnan(t), np.float32(0.0), t)
    return np.minimum(np.maximum(t, np.float32(0.0)), n_steps).astype(np.float32)


def _np_quantize_half_even(x, delta, offset, n_steps, out):
    out[...] = _np_quantize_half_even_f32(x, delta, offset, n_steps).astype(np.int64)


def _np_qdq_half_even(x, delta, offset, n_steps, out):
    q = _np_quantize_half_even_f32(x, delta, offset, n_steps)
    delta, offset = _b(delta, offset)
    out[...] = (q + offset) * delta


def _np_dequantize(q, delta, offset, out):
    delta, offset = _b(delta, offset)
    out[...] = delta * (q.astype(np.float32) + offset)


# ---------------------------------------------------------------- public functions

def channel_view(x: np.ndarray, axis: int | None) -> np.ndarray:
    """``x`` (C-contiguous) seen as (outer, C, inner); per tensor as (1, 1, size)."""
    if axis is None:
        return x.reshape(1, 1, x.size)
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    inner = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
    return x.reshape(outer, x.shape[axis], inner)


def check_channels(shape: tuple, enc: Encoding, what: str = "tensor") -> None:
    """Raise EncodingError if a per-channel ``enc`` does not fit a tensor of ``shape``."""
    if enc.axis is None:
        return
    if not 0 <= enc.axis < len(shape):
        raise EncodingError(f"encoding axis {enc.axis} is out of range for a {what} of shape {shape}")
    if shape[enc.axis] != enc.num_channels:
        raise EncodingError(f"encoding has {enc.num_channels} channels but the {what} has "
                            f"{shape[enc.axis]} along axis {enc.axis} (shape {shape})")


def params32(enc: Encoding):
    """(min, max, delta, offset) as float32 arrays of shape (C,) (C = 1 per tensor)."""
    return tuple(np.ascontiguousarray(np.atleast_1d(getattr(enc, n)), dtype=np.float32)
                 for n in ("min", "max", "delta", "offset"))


def _prepare(x, enc: Encoding, dtype):
    # np.asarray(order="C"), not np.ascontiguousarray, which turns a 0-d scalar into shape (1,)
    x = np.asarray(x, dtype=dtype, order="C")
    check_channels(x.shape, enc)
    return x


def quantize_dequantize(x, enc: Encoding, *, rounding: str = "nearest", out=None,
                        params=None) -> np.ndarray:
    """Quantize-dequantize float32 ``x`` with ``enc`` (see the module docstring for the formulas).

    ``out`` (float32, same shape, C-contiguous) is filled and returned if given; ``params`` is
    the result of :func:`params32` (pass it to avoid recomputing it on every call).
    """
    x = _prepare(x, enc, np.float32)
    if out is None:
        out = np.empty_like(x)
    mn, mx, d, o = params32(enc) if params is None else params
    xv, ov = channel_view(x, enc.axis), channel_view(out, enc.axis)
    if rounding == "nearest":
        (_nb_qdq_nearest if USE_NUMBA else _np_qdq_nearest)(xv, mn, mx, d, o, ov)
    elif rounding == "half_even":
        n = np.float32(enc.num_steps)
        (_nb_qdq_half_even if USE_NUMBA else _np_qdq_half_even)(xv, d, o, n, ov)
    else:
        raise EncodingError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
    return out


def quantize(x, enc: Encoding, *, rounding: str = "nearest") -> np.ndarray:
    """Integer grid index ``q ∈ [0, N]`` (int64, AIMET convention) of float32 ``x``.

    ``nearest``: ``round_half_away(clamp(x, min, max)/delta - offset)``;
    ``half_even``: ``clamp(rint(x/delta) - offset, 0, N)``. ``dequantize(quantize(x))`` equals
    ``quantize_dequantize(x)`` in both modes.
    """
    x = _prepare(x, enc, np.float32)
    out = np.empty(x.shape, dtype=np.int64)
    mn, mx, d, o = params32(enc)
    xv, ov = channel_view(x, enc.axis), channel_view(out, enc.axis)
    if rounding == "nearest":
        (_nb_quantize_nearest if USE_NUMBA else _np_quantize_nearest)(xv, mn, mx, d, o, ov)
    elif rounding == "half_even":
        n = np.float32(enc.num_steps)
        (_nb_quantize_half_even if USE_NUMBA else _np_quantize_half_even)(xv, d, o, n, ov)
    else:
        raise EncodingError(f"rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
    return out


def dequantize(q, enc: Encoding) -> np.ndarray:
    """``x̂ = f32(delta) · (f32(q) + f32(offset))`` in float32 for integer grid indices ``q``."""
    q = _prepare(q, enc, np.int64)
    out = np.empty(q.shape, dtype=np.float32)
    _, _, d, o = params32(enc)
    qv, ov = channel_view(q, enc.axis), channel_view(out, enc.axis)
    (_nb_dequantize if USE_NUMBA else _np_dequantize)(qv, d, o, ov)
    return out
