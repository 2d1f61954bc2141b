"""Encodings: the pure arithmetic of numerics.md §1–2 (and placement.md §5.4 for fixed ranges).

An :class:`Encoding` uses AIMET's sign convention, and nothing else inside qsim does otherwise::

    integer grid   q ∈ [0, N],  N = 2^bw - 1
    dequantized    x̂ = delta · (q + offset),   offset ≤ 0
    range          min = delta · offset,  max = delta · (offset + N)   (N - 1 steps if strict)

Conversion to ONNX zero points lives in ONE place: :func:`onnx_zero_point` and
:func:`offset_from_onnx_zero_point`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import EncodingError

#: float32 machine epsilon (2^-23): the smallest delta a range encoding may get (§2 step 2)
EPS = 2.0 ** -23
#: 0.99 · FLT_MAX in float64: statistics are clamped into [-L, L] (§2 step 1)
L = 0.99 * float(np.finfo(np.float32).max)
#: the valid bitwidths
MIN_BITWIDTH, MAX_BITWIDTH = 2, 32


def _frozen(a) -> np.ndarray:
    """A read-only float64 copy of ``a``."""
    out = np.array(a, dtype=np.float64)
    out.setflags(write=False)
    return out


def check_bitwidth(bitwidth) -> int:
    """Return ``bitwidth`` as int, or raise EncodingError if it is not an integer in 2..32."""
    if isinstance(bitwidth, bool) or not isinstance(bitwidth, (int, np.integer)) \
            or not MIN_BITWIDTH <= int(bitwidth) <= MAX_BITWIDTH:
        raise EncodingError(f"bitwidth must be an integer in {MIN_BITWIDTH}..{MAX_BITWIDTH}, "
                            f"got {bitwidth!r}")
    return int(bitwidth)


@dataclass(frozen=True, eq=False)
class Encoding:
    """One quantization grid (per tensor) or one per channel, AIMET sign convention.

    ``min, max, delta, offset`` are read-only float64 arrays of shape ``()`` (``axis is None``)
    or ``(C,)`` (per-channel along ``axis`` of the quantized tensor). ``x̂ = delta·(q + offset)``
    for integer ``q ∈ [0, 2^bitwidth - 1]``; ``offset ≤ 0`` for every encoding built from data
    (a tf-enhanced search that finds no finite cost keeps AIMET's sentinel delta = offset = -1).
    """

    min: np.ndarray
    max: np.ndarray
    delta: np.ndarray
    offset: np.ndarray
    bitwidth: int
    symmetric: bool = False
    strict_symmetric: bool = False
    unsigned_symmetric: bool = False
    axis: int | None = None

    def __post_init__(self):
        bw = check_bitwidth(self.bitwidth)
        object.__setattr__(self, "bitwidth", bw)
        arrays = {name: _frozen(getattr(self, name)) for name in ("min", "max", "delta", "offset")}
        shapes = {name: a.shape for name, a in arrays.items()}
        if len(set(shapes.values())) != 1:
            raise EncodingError(f"min, max, delta and offset must have one shape, got {shapes}")
        shape = arrays["delta"].shape
        if self.axis is None and shape != ():
            raise EncodingError(f"a per-tensor encoding (axis=None) needs shape (), got {shape}")
        if self.axis is not None:
            if isinstance(self.axis, bool) or not isinstance(self.axis, (int, np.integer)):
                raise EncodingError(f"axis must be None or an int, got {self.axis!r}")
            if len(shape) != 1:
                raise EncodingError(f"a per-channel encoding (axis={self.axis}) needs shape (C,), "
                                    f"got {shape}")
            object.__setattr__(self, "axis", int(self.axis))
        for name, a in arrays.items():
            object.__setattr__(self, name, a)
        for flag in ("symmetric", "strict_symmetric", "unsigned_symmetric"):
            object.__setattr__(self, flag, bool(getattr(self, flag)))

    @property
    def num_steps(self) -> int:
        """``N = 2^bw - 1``: the integer grid is ``0..N``."""
        return 2 ** self.bitwidth - 1

    @property
    def num_channels(self) -> int | None:
        """C for a per-channel encoding, None per tensor."""
        return None if self.axis is None else int(self.delta.shape[0])

    def same_as(self, other: "Encoding") -> bool:
        """True if both encodings have identical settings and identical bits (NaN == NaN)."""
        return (self.bitwidth == other.bitwidth and self.axis == other.axis
                and (self.symmetric, self.strict_symmetric, self.unsigned_symmetric)
                == (other.symmetric, other.strict_symmetric, other.unsigned_symmetric)
                and all(np.array_equal(getattr(self, n), getattr(other, n), equal_nan=True)
                        for n in ("min", "max", "delta", "offset")))

    def channel(self, c: int) -> "Encoding":
        """The per-tensor encoding of channel ``c`` of a per-channel encoding."""
        return Encoding(min=self.min[c], max=self.max[c], delta=self.delta[c],
                        offset=self.offset[c], bitwidth=self.bitwidth, symmetric=self.symmetric,
                        strict_symmetric=self.strict_symmetric,
                        unsigned_symmetric=self.unsigned_symmetric, axis=None)


def round_half_away(x):
    """Round to nearest, ties away from zero (2.5 → 3, -2.5 → -3), in the dtype of ``x``.

    ``r = floor(|x|); r + (|x| - r ≥ 0.5)`` with the sign put back, never ``floor(x + 0.5)``
    (which rounds 0.49999999999999994 up).

    >>> float(round_half_away(np.float64(-2.5)))
    -3.0
    """
    a = np.abs(x)
    r = np.floor(a)
    return np.copysign(r + (a - r >= 0.5), x)


def _checked_range(min_, max_, axis):
    """Float64 arrays of the statistics, with a shape check against ``axis``."""
    lo = np.asarray(min_, dtype=np.float64)
    hi = np.asarray(max_, dtype=np.float64)
    if lo.shape != hi.shape:
        raise EncodingError(f"min and max must have one shape, got {lo.shape} and {hi.shape}")
    if axis is None and lo.shape != ():
        raise EncodingError(f"per-tensor statistics (axis=None) must be scalars, got shape {lo.shape}")
    if axis is not None and lo.ndim != 1:
        raise EncodingError(f"per-channel statistics (axis={axis}) must have shape (C,), "
                            f"got {lo.shape}")
    return lo, hi


def from_min_max(min, max, *, bitwidth, symmetric=False, strict_symmetric=False,
                 unsigned_symmetric=False, axis=None) -> Encoding:
    """The min-max ("tf") encoding of numerics.md §2, in float64 on the float32 statistics.

    1. clamp ``min, max`` into ``[-L, L]`` (L = 0.99·FLT_MAX); ``min = min(min, 0)``,
       ``max = max(max, 0)``.
    2. any ``delta < eps = 2^-23`` becomes ``eps`` (before offset, min, max are derived).
    3. asymmetric: ``delta = (max - min)/N``, ``offset = -round(-min/delta)`` clamped to
       ``[-N, 0]``; if ``delta·offset < -L``: ``delta = L/(-offset)``, elif
       ``delta·(offset+N) > L``: ``delta = L/(offset + N)``.
    4. signed symmetric: ``delta = max(max/P, -min/(P+1))`` (bw = 2: ``max(max, -min)/2``),
       capped at ``L/(P+1)``; ``offset = -(P+1)``, ``max = delta·P``.
    5. strict symmetric: ``delta = max(|min|, |max|)/P``, ``offset = -P``, ``max = P·delta``.
    6. unsigned symmetric (``min ≥ 0``): ``delta = max/N'`` (N' = N, N-1 if strict), ``offset = 0``.

    ``round`` is half away from zero; ``N = 2^bw - 1``, ``P = 2^(bw-1) - 1``.

    >>> e = from_min_max(-5.0, 1.0, bitwidth=8, symmetric=True)
    >>> float(e.delta) == 5 / 128, float(e.offset)
    (True, -128.0)
    """
    bw = check_bitwidth(bitwidth)
    lo, hi = _checked_range(min, max, axis)
    lo = np.minimum(np.clip(lo, -L, L), 0.0)
    hi = np.maximum(np.clip(hi, -L, L), 0.0)
    n = float(2 ** bw - 1)
    p = float(2 ** (bw - 1) - 1)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if symmetric:
            delta, offset, steps = _symmetric(lo, hi, n, p, bw, strict_symmetric, unsigned_symmetric)
            new_min, new_max = delta * offset, delta * (offset + steps)
        else:
            delta, offset, new_min, new_max = _asymmetric(lo, hi, n)
    return Encoding(min=new_min, max=new_max, delta=delta, offset=offset, bitwidth=bw,
                    symmetric=symmetric, strict_symmetric=strict_symmetric,
                    unsigned_symmetric=unsigned_symmetric, axis=axis)


def _asymmetric(lo, hi, n):
    """§2 step 3 (with the eps guard of step 2): returns delta, offset, min, max."""
    delta = np.maximum((hi - lo) / n, EPS)
    offset = np.clip(-round_half_away(-lo / delta), -n, 0.0)
    new_min = delta * offset
    new_max = delta * (offset + n)
    # overflow guard: shrink delta so that the range fits in [-L, L]
    delta = np.where(new_min < -L, L / -offset, np.where(new_max > L, L / (offset + n), delta))
    return delta, offset + 0.0, delta * offset, delta * (offset + n)


def _symmetric(lo, hi, n, p, bw, strict, unsigned):
    """§2 steps 4–6: returns delta, offset and the number of steps above the offset."""
    unsigned_case = np.logical_and(unsigned, lo >= 0.0)   # -0.0 >= 0 holds
    steps_u = n - 1.0 if strict else n
    delta_u = hi / steps_u
    if strict:
        delta_s = np.maximum(np.abs(lo), np.abs(hi)) / p
        offset_s = -p
        steps_s = 2.0 * p
    else:
        pos = hi / 2.0 if bw == 2 else hi / p
        delta_s = np.maximum(pos, -lo / (p + 1.0))
        delta_s = np.maximum(delta_s, EPS)
        delta_s = np.where(delta_s * (p + 1.0) > L, L / (p + 1.0), delta_s)
        offset_s = -(p + 1.0)
        steps_s = n
    delta = np.maximum(np.where(unsigned_case, delta_u, delta_s), EPS)
    offset = np.where(unsigned_case, 0.0, offset_s)
    steps = np.where(unsigned_case, steps_u, steps_s)
    return delta, offset, steps


def from_fixed_range(lo, hi, *, bitwidth, symmetric=False, strict_symmetric=False,
                     unsigned_symmetric=False, axis=None) -> Encoding:
    """Encoding of a fixed range (encoding constraints, placement.md §5.4), float64.

    ``lo = min(lo, 0)``, ``hi = max(hi, 0, lo + 0.01)``;
    asymmetric: ``delta = (hi - lo)/N``, ``offset = round_half_even(lo/delta)``,
    ``min = delta·offset``, ``max = min + N·delta``;
    symmetric: ``delta = max(hi/P, -lo/2^(bw-1))``, ``offset = -2^(bw-1)`` (+1 if strict),
    ``min = delta·offset``, ``max = delta·P``. ``unsigned_symmetric`` is only recorded.

    >>> e = from_fixed_range(0.0, 1.0, bitwidth=8)
    >>> float(e.delta) == 1 / 255, float(e.offset)
    (True, 0.0)
    """
    bw = check_bitwidth(bitwidth)
    lo, hi = _checked_range(lo, hi, axis)
    lo = np.minimum(lo, 0.0)
    hi = np.maximum(np.maximum(hi, 0.0), lo + 0.01)
    n = float(2 ** bw - 1)
    p = float(2 ** (bw - 1) - 1)
    if symmetric:
        delta = np.maximum(hi / p, -lo / (p + 1.0))
        offset = np.full_like(delta, -(p + 1.0) + (1.0 if strict_symmetric else 0.0))
        new_min, new_max = delta * offset, delta * p
    else:
        delta = (hi - lo) / n
        offset = np.rint(lo / delta) + 0.0
        new_min = delta * offset
        new_max = new_min + n * delta
    return Encoding(min=new_min, max=new_max, delta=delta, offset=offset, bitwidth=bw,
                    symmetric=symmetric, strict_symmetric=strict_symmetric,
                    unsigned_symmetric=unsigned_symmetric, axis=axis)


def onnx_zero_point(enc: Encoding, signed: bool) -> np.ndarray:
    """ONNX ``QuantizeLinear`` zero point of ``enc`` as int64.

    ``zero_point = -offset`` for an unsigned integer type, ``-offset - 2^(bw-1)`` for a signed one
    (the only place where qsim leaves AIMET's sign convention).

    >>> int(onnx_zero_point(from_min_max(-1.0, 1.0, bitwidth=8, symmetric=True), signed=True))
    0
    """
    zp = -np.asarray(enc.offset, dtype=np.float64)
    if signed:
        zp = zp - 2.0 ** (enc.bitwidth - 1)
    return zp.astype(np.int64)


def offset_from_onnx_zero_point(zero_point, *, bitwidth: int, signed: bool) -> np.ndarray:
    """Inverse of :func:`onnx_zero_point`: ``offset = -zp`` (unsigned), ``-zp - 2^(bw-1)`` (signed)."""
    bw = check_bitwidth(bitwidth)
    off = -np.asarray(zero_point, dtype=np.float64)
    if signed:
        off = off - 2.0 ** (bw - 1)
    return off + 0.0
