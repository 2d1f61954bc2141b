"""Fixed-point requantization as DSPs and NPUs do it (gemmlowp / TensorFlow Lite reference).

An integer kernel accumulates ``acc = Σ (x - zp_x)(w - zp_w)`` in int32 and must scale it by the
real multiplier ``M = s_x · s_w / s_y`` without floating point. ``M`` is stored as an int32
``q`` (a Q0.31 fraction in [2^30, 2^31)) and a power-of-two exponent ``shift``::

    M ≈ M_q = q · 2^(shift - 31)                                   (quantize_multiplier)

and the product is computed in two rounding steps (TFLite's default build)::

    SRDHM(a, b)  = floor((a·b + 2^30) / 2^31)       saturating: SRDHM(-2^31, -2^31) = 2^31 - 1
    RDBPOT(x, e) = round(x / 2^e), ties away from zero               (0 <= e <= 31)
    MBQM(x, q, shift) = RDBPOT(SRDHM(x · 2^max(shift, 0), q), max(-shift, 0))

``SRDHM`` is gemmlowp's ``SaturatingRoundingDoublingHighMul`` (the high half of ``2·a·b``,
rounded to nearest with ties towards +∞ — the same as Arm's ``vqrdmulh``); ``RDBPOT`` is
gemmlowp's ``RoundingDivideByPOT``; ``MBQM`` is TFLite's ``MultiplyByQuantizedMultiplier``.
``x · 2^left`` wraps in int32, as the C code does on every real target. TFLite built with
``TFLITE_SINGLE_ROUNDING`` instead rounds once, ties towards +∞::

    MBQM1(x, q, shift) = floor((x·q + 2^(30 - shift)) / 2^(31 - shift))      (shift <= 30)

Requantization of one output (int32 bias, 8- or 16-bit output)::

    y = clamp(MBQM(acc + bias, q[c], shift[c]) + zp_y, qmin, qmax)

TFLite's 16x8 kernels (int16 activations, int8 weights) accumulate in int64 with an int64 bias
and use a 16-bit reduced multiplier, one rounding (ties towards +∞)::

    r = (q + 2^15) >> 16  if q < 0x7FFF0000  else 0x7FFF              (q / 2^16 rounded, <= 2^15-1)
    MBQM64(x, q, shift) = int32((x·r + 2^(14 - shift)) >> (15 - shift))   (|x| < 2^47, shift <= 7)

with ``acc + bias`` wrapping in int32 and ``c`` the output channel. The two-step result can
differ from a single rounding of ``x · M_q`` (it can round twice upwards near a tie); the
properties in ``tests/integer/test_fixed_point.py`` pin both down with exact fractions.

Every Numba kernel (``_nb_*``) has a vectorised NumPy twin (``_np_*``) giving the same bits;
:data:`qsim.jit.USE_NUMBA` picks one.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import EncodingError
from ..jit import USE_NUMBA, kernel

INT32_MIN = -2**31
INT32_MAX = 2**31 - 1
#: output type name → (qmin, qmax)
OUTPUT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767),
                 "uint16": (0, 65535)}
#: "double": TFLite's default MBQM; "single": TFLITE_SINGLE_ROUNDING; "int64": the 16x8 kernels
ROUNDINGS = ("double", "single", "int64")


# ---------------------------------------------------------------------------------------------
# the multiplier
# ---------------------------------------------------------------------------------------------
def quantize_multiplier(m: float) -> tuple[int, int]:
    """``(q, shift)`` with ``q · 2^(shift - 31) ≈ m``, as TFLite's ``QuantizeMultiplier``.

    ``m = f · 2^shift`` with ``f`` in [0.5, 1) (``frexp``); ``q = round_half_away(f · 2^31)``;
    if that rounds up to 2^31, ``q = 2^30`` and ``shift + 1``. ``m = 0`` gives ``(0, 0)``, and
    multipliers below about 2^-32 (``shift < -31``) flush to ``(0, 0)``. ``m`` must be finite
    and >= 0 with ``shift <= 30`` (``m < 2^30``).

    >>> quantize_multiplier(0.5)
    (1073741824, 0)
    >>> quantize_multiplier(0.0015)          # 0.0015 = 0.768 · 2^-9, 0.768 · 2^31 = 1649267441.66
    (1649267442, -9)
    """
    m = float(m)
    if not math.isfinite(m) or m < 0:
        raise EncodingError(f"real multiplier {m!r} must be finite and >= 0 "
                            f"(it is s_x · s_w / s_y of positive scales)")
    if m == 0.0:
        return 0, 0
    f, shift = math.frexp(m)
    q = math.floor(f * 2.0**31 + 0.5)   # f·2^31 and +0.5 are exact in double (f < 1)
    if q == 2**31:
        q, shift = 2**30, shift + 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        raise EncodingError(f"real multiplier {m!r} is too large for a Q31 multiplier with a "
                            f"left shift <= 30 (needs m < 2^30)")
    return int(q), int(shift)


def quantize_multipliers(m) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantize_multiplier` of every element: ``(q int32 array, shift int32 array)``."""
    pairs = [quantize_multiplier(v) for v in np.asarray(m, np.float64).ravel()]
    shape = np.shape(m)
    q = np.array([p[0] for p in pairs], np.int32).reshape(shape)
    s = np.array([p[1] for p in pairs], np.int32).reshape(shape)
    return q, s


def multiplier_value(q: int, shift: int):
    """The exact rational ``M_q = q · 2^(shift - 31)`` a pair represents, as a Fraction.

    >>> multiplier_value(1073741824, 0)
    Fraction(1, 2)
    """
    from fractions import Fraction
    return Fraction(int(q)) * Fraction(2) ** (int(shift) - 31)


# ---------------------------------------------------------------------------------------------
# scalar kernels (compiled by Numba; plain Python under NUMBA_DISABLE_JIT)
# ---------------------------------------------------------------------------------------------
@kernel
def _wrap32(v):
    """Two's-complement int32 wrap of an int64 value."""
    return ((v + 2**31) & 0xFFFFFFFF) - 2**31


@kernel
def srdhm(a, b):
    """gemmlowp ``SaturatingRoundingDoublingHighMul``: ``ab = a·b`` in int64,
    ``nudge = 2^30 if ab >= 0 else 1 - 2^30``, ``(ab + nudge) / 2^31`` truncated towards zero;
    ``a = b = -2^31`` saturates to ``2^31 - 1``. Equals ``floor((a·b + 2^30) / 2^31)``."""
    if a == INT32_MIN and b == INT32_MIN:
        return INT32_MAX
    ab = np.int64(a) * np.int64(b)
    num = ab + (np.int64(1) << 30) if ab >= 0 else ab + (np.int64(1) - (np.int64(1) << 30))
    if num >= 0:
        return num >> 31
    return -((-num) >> 31)                                 # C division truncates towards zero


@kernel
def rdbpot(x, exponent):
    """gemmlowp ``RoundingDivideByPOT``: ``mask = 2^e - 1``, ``r = x & mask``,
    ``threshold = (mask >> 1) + (x < 0)``, result ``(x >> e) + (r > threshold)``: x / 2^e
    rounded to nearest, ties away from zero (``>>`` is arithmetic)."""
    mask = (np.int64(1) << exponent) - 1
    remainder = np.int64(x) & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (np.int64(x) >> exponent) + (1 if remainder > threshold else 0)


@kernel
def mbqm(x, q, shift):
    """TFLite ``MultiplyByQuantizedMultiplier`` (double rounding):
    ``RDBPOT(SRDHM(wrap32(x · 2^max(shift, 0)), q), max(-shift, 0))``."""
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    return rdbpot(srdhm(_wrap32(np.int64(x) << left), q), right)


@kernel
def mbqm_single(x, q, shift):
    """TFLite ``MultiplyByQuantizedMultiplier`` with ``TFLITE_SINGLE_ROUNDING``:
    ``(x·q + 2^(30 - shift)) >> (31 - shift)`` in int64 (one rounding, ties towards +∞)."""
    total = 31 - shift
    return (np.int64(x) * np.int64(q) + (np.int64(1) << (total - 1))) >> total


@kernel
def mbqm64(x, q, shift):
    """TFLite ``MultiplyByQuantizedMultiplier(int64 x, ...)`` of the 16x8 kernels:
    ``r = (q + 2^15) >> 16`` (``0x7FFF`` when ``q >= 0x7FFF0000``),
    ``int32((x·r + 2^(14 - shift)) >> (15 - shift))`` (the int32 cast wraps)."""
    r = (np.int64(q) + (1 << 15)) >> 16 if q < 0x7FFF0000 else np.int64(0x7FFF)
    total = 15 - shift
    return _wrap32((np.int64(x) * r + (np.int64(1) << (total - 1))) >> total)


@kernel
def _nb_requantize(acc, bias, q, shift, zp, lo, hi, mode, out):
    """Rows of ``acc`` (n, C): ``clamp(MBQM(x, q[c], shift[c]) + zp, lo, hi)`` with
    ``x = wrap32(acc + bias[c])`` (modes 0 double, 1 single rounding) or ``x = acc + bias[c]`` in
    int64 (mode 2, :func:`mbqm64`)."""
    n, channels = acc.shape
    for i in range(n):
        for c in range(channels):
            if mode == 2:
                y = mbqm64(np.int64(acc[i, c]) + bias[c], q[c], shift[c])
            else:
                x = _wrap32(np.int64(acc[i, c]) + bias[c])
                y = mbqm_single(x, q[c], shift[c]) if mode == 1 else mbqm(x, q[c], shift[c])
            y += zp
            out[i, c] = lo if y < lo else (hi if y > hi else y)


# ---------------------------------------------------------------------------------------------
# NumPy twins (vectorised, same bits)
# ---------------------------------------------------------------------------------------------
def _np_wrap32(v: np.ndarray) -> np.ndarray:
    return ((v + 2**31) & 0xFFFFFFFF) - 2**31


def np_srdhm(a, b) -> np.ndarray:
    """Vectorised :func:`srdhm` (int64 in, int64 out)."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    ab = a * b
    num = ab + np.where(ab >= 0, 2**30, 1 - 2**30)
    trunc = np.where(num >= 0, num >> 31, -((-num) >> 31))
    return np.where((a == INT32_MIN) & (b == INT32_MIN), INT32_MAX, trunc)


def np_rdbpot(x, exponent) -> np.ndarray:
    """Vectorised :func:`rdbpot`."""
    x, e = np.asarray(x, np.int64), np.asarray(exponent, np.int64)
    mask = (np.int64(1) << e) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + ((x & mask) > threshold)


def np_mbqm(x, q, shift) -> np.ndarray:
    """Vectorised :func:`mbqm`."""
    shift = np.asarray(shift, np.int64)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    return np_rdbpot(np_srdhm(_np_wrap32(np.asarray(x, np.int64) << left), q), right)


def np_mbqm_single(x, q, shift) -> np.ndarray:
    """Vectorised :func:`mbqm_single`."""
    total = 31 - np.asarray(shift, np.int64)
    return (np.asarray(x, np.int64) * np.asarray(q, np.int64) + (np.int64(1) << (total - 1))) \
        >> total


def np_mbqm64(x, q, shift) -> np.ndarray:
    """Vectorised :func:`mbqm64`."""
    q = np.asarray(q, np.int64)
    r = np.where(q < 0x7FFF0000, (q + (1 << 15)) >> 16, 0x7FFF)
    total = 15 - np.asarray(shift, np.int64)
    return _np_wrap32((np.asarray(x, np.int64) * r + (np.int64(1) << (total - 1))) >> total)


def _np_requantize(acc, bias, q, shift, zp, lo, hi, mode, out):
    if mode == 2:
        y = np_mbqm64(acc.astype(np.int64) + bias, q, shift)
    else:
        x = _np_wrap32(acc.astype(np.int64) + bias)
        y = (np_mbqm_single if mode == 1 else np_mbqm)(x, q, shift)
    out[...] = np.clip(y + zp, lo, hi)


# ---------------------------------------------------------------------------------------------
# public entry point
# ---------------------------------------------------------------------------------------------
def requantize(acc, q, shift, *, zero_point: int = 0, bias=None, output: str = "int8",
               axis: int | None = None, rounding: str = "double") -> np.ndarray:
    """``y = clamp(MBQM(wrap32(acc + bias[c]), q[c], shift[c]) + zero_point, qmin, qmax)``.

    ``acc``: int32 accumulators; ``q``, ``shift``: one pair (per tensor) or one per channel
    along ``axis`` (from :func:`quantize_multipliers`); ``bias``: int32, one per channel (or a
    scalar); ``output``: ``int8``, ``uint8``, ``int16`` or ``uint16``; ``rounding``: ``double``
    (TFLite's default, :func:`mbqm`), ``single`` (``TFLITE_SINGLE_ROUNDING``) or ``int64``
    (TFLite's 16x8 kernels: int64 accumulators and bias, ``|acc + bias| < 2^47``, shift <= 7,
    :func:`mbqm64`).

    >>> requantize(np.array([1000, -1000, 5], np.int32), *quantize_multiplier(0.05)).tolist()
    [50, -50, 0]
    """
    if output not in OUTPUT_RANGES:
        raise EncodingError(f"output type {output!r} is not one of {list(OUTPUT_RANGES)}")
    if rounding not in ROUNDINGS:
        raise EncodingError(f"rounding {rounding!r} is not one of {list(ROUNDINGS)}")
    acc = np.asarray(acc)
    wide = rounding == "int64"
    if acc.dtype not in ((np.int32, np.int64) if wide else (np.int32,)):
        raise EncodingError(f"accumulators have dtype {acc.dtype}, expected "
                            f"{'int32 or int64' if wide else 'int32'}")
    lo, hi = OUTPUT_RANGES[output]
    if not lo <= int(zero_point) <= hi:
        raise EncodingError(f"zero point {zero_point} is outside the {output} range [{lo}, {hi}]")
    channels = 1 if axis is None else acc.shape[axis]
    moved = acc.reshape(-1, 1) if axis is None else np.moveaxis(acc, axis, -1)
    rows = np.ascontiguousarray(moved).reshape(-1, channels)
    params = []
    for name, v in (("q", q), ("shift", shift), ("bias", 0 if bias is None else bias)):
        v = np.asarray(v, np.int64)
        if v.size not in (1, channels):
            raise EncodingError(f"{name} has {v.size} values, expected 1 or {channels} "
                                f"(channels of acc {list(acc.shape)} along axis {axis})")
        params.append(np.ascontiguousarray(np.broadcast_to(v.ravel(), (channels,))))
    q64, shift64, bias64 = params
    max_shift = 7 if wide else 30
    if np.any((q64 < 0) | (q64 > INT32_MAX)) or np.any((shift64 < -31) | (shift64 > max_shift)):
        raise EncodingError(f"multipliers must be in [0, 2^31) with shifts in [-31, {max_shift}] "
                            f"for rounding {rounding!r} (use quantize_multiplier)")
    if wide and rows.size and np.max(np.abs(rows.astype(np.int64) + bias64)) >= 2**47:
        raise EncodingError("int64 accumulators plus bias must stay below 2^47 in magnitude "
                            "(TFLite's 16x8 range)")
    out = np.empty(rows.shape, np.int64)
    (_nb_requantize if USE_NUMBA else _np_requantize)(
        rows, bias64, q64, shift64, int(zero_point), lo, hi, ROUNDINGS.index(rounding), out)
    out = out.astype(output).reshape(moved.shape)
    return out.reshape(acc.shape) if axis is None else np.moveaxis(out, -1, axis)
