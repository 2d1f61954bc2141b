"""qsim as a test oracle: Hypothesis strategies and reference assertions for your own kernels.

A hardware or runtime team that implements quantize-dequantize (or a whole quantized model) can
property-test it against qsim, which is bit-exact with AIMET, in a few lines::

    import numpy as np
    from hypothesis import given, settings
    from qsim.testing import assert_qdq_matches, encoding_arrays, qdq_cases

    def my_qdq(x, enc):                        # the kernel under test (here: a subtle bug)
        lo, hi, delta, offset = encoding_arrays(enc, x.ndim)     # float32, per channel too
        t = np.clip(x, lo, hi) / delta - offset
        return delta * (np.floor(t + np.float32(0.5)) + offset)  # floor(t + 0.5) is not AIMET's

    @settings(max_examples=200, deadline=None)
    @given(qdq_cases())
    def test_my_qdq(case):
        x, enc = case
        assert_qdq_matches(my_qdq, x, enc)      # AssertionError naming the first elements that differ

The failure message explains each differing element in grid units (``t = x/delta - offset``, the
value the rounding sees)::

    1 of 1 elements differ from qsim (rounding='nearest', bitwidth 2, per tensor)
      at [0]: x = 0.49999997, delta = 1.0, offset = 0.0: t = x/delta - offset = 0.49999997 is just
      below a tie, so it rounds down to 0.0; your kernel rounded it up to 1.0 (floor(t + 0.5) does
      that: in float32, t + 0.5 rounds up to the next integer)

and for a kernel using ``np.rint`` (ties to even): ``t = x/delta - offset = 2.5 is an exact tie;
AIMET rounds to nearest, ties away from zero, giving 3.0; your kernel rounded it down to 2.0``.

What is in here
---------------
Strategies (need the ``test`` extra: ``pip install 'qsim-ref[test]'``, i.e. Hypothesis):

* :func:`float32_arrays`       float32 tensors with the edge values kernels get wrong
  (±0, subnormals, FLT_MIN, halves, large magnitudes; NaN/inf on request).
* :func:`encodings`            encodings as AIMET builds them (min-max of random ranges, all
  bitwidths and symmetric flavours), per tensor or per channel; ``exact_ties=True`` gives
  power-of-two scales, for which ``x = delta·(k + ½ + offset)`` is an exact float32 tie.
* :func:`per_channel_layouts`  ``(shape, axis)`` pairs for per-channel tests.
* :func:`qdq_cases`            ``(x, encoding)`` with x concentrated where kernels disagree:
  grid points, exact ties and their float32 neighbours, the clamp bounds, out-of-range values.
* :func:`small_graphs`         ``(graph, feeds)``: small random :class:`qsim.Graph` chains
  (MatMul, Add, Mul, Relu, Sigmoid, Tanh) with matching inputs, for model-level tests.

Reference functions and assertions (NumPy only):

* :func:`reference_qdq`, :func:`reference_quantize` the answers (qsim's kernels).
* :func:`encoding_arrays`       min/max/delta/offset shaped to broadcast in your own kernel.
* :func:`onnx_params`           scale / zero point / integer range of an encoding in ONNX terms.
* :func:`assert_qdq_matches`    ``fn(x, encoding) -> x̂`` against qsim, bit for bit (or ≤ ulps).
* :func:`assert_quantize_matches` ``fn(x, encoding) -> q`` integers, AIMET or ONNX convention.
* :func:`assert_encoding_matches` ``fn(x) -> (scale, offset)`` against AIMET's min-max encoding.
* :func:`explain_mismatch`      the diagnosis text used by the assertions.

Rounding: AIMET's simulation kernel (``rounding="nearest"``, the default) clamps ``x`` to
``[min, max]``, computes ``t = x/delta - offset`` in float32 and rounds to nearest with ties away
from zero (t ≥ 0 after the clamp, so ties go up). ``rounding="half_even"`` is ONNX
QuantizeLinear's rule (``clamp(rint(x/scale) + zero_point)``), what an exported QDQ model does.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import EncodingError
from .quant import Encoding, from_min_max, onnx_zero_point
from .quant import dequantize as _dequantize
from .quant import quantize as _quantize
from .quant import quantize_dequantize as _qdq
from .quant.kernels import check_channels

ROUNDINGS = ("nearest", "half_even")
CONVENTIONS = ("aimet", "onnx_unsigned", "onnx_signed")

#: how many differing elements a failure message lists
SHOWN = 5

FLT_MIN = float(np.finfo(np.float32).tiny)          # smallest normal float32
FLT_TRUE_MIN = float(np.finfo(np.float32).smallest_subnormal)


# ============================================================================ reference answers

def reference_qdq(x, encoding: Encoding, *, rounding: str = "nearest") -> np.ndarray:
    """qsim's quantize-dequantize of float32 ``x`` (AIMET's kernel for ``rounding="nearest"``).

    nearest:   ``t = clamp(x, min, max)/delta - offset``; ``x̂ = delta·(round_half_away(t) + offset)``
    half_even: ``q = clamp(rint(x/delta) - offset, 0, N)``; ``x̂ = (q + offset)·delta``
    (every step in float32).
    """
    _check_rounding(rounding)
    return _qdq(np.asarray(x, dtype=np.float32), encoding, rounding=rounding)


def reference_quantize(x, encoding: Encoding, *, rounding: str = "nearest",
                       convention: str = "aimet") -> np.ndarray:
    """Integer codes of ``x`` (int64) in one of three conventions.

    ``aimet``: ``q ∈ [0, N]`` with ``x̂ = delta·(q + offset)``;
    ``onnx_unsigned``: the same numbers, ``x̂ = scale·(q - zero_point)`` with ``zero_point = -offset``;
    ``onnx_signed``: ``q - 2^(bw-1) ∈ [-2^(bw-1), 2^(bw-1) - 1]``, ``zero_point = -offset - 2^(bw-1)``.
    """
    _check_rounding(rounding)
    _check_convention(convention)
    q = _quantize(np.asarray(x, dtype=np.float32), encoding, rounding=rounding)
    return q - 2 ** (encoding.bitwidth - 1) if convention == "onnx_signed" else q


@dataclass(frozen=True)
class OnnxParams:
    """An encoding in ONNX QuantizeLinear terms: ``q = clamp(round(x/scale) + zero_point, qmin, qmax)``.

    ``scale`` float32 and ``zero_point`` int64 have shape () per tensor or (C,) per channel
    (along ``axis``)."""

    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int
    axis: int | None


def onnx_params(encoding: Encoding, *, signed: bool = False) -> OnnxParams:
    """``scale = f32(delta)``; ``zero_point = -offset`` (unsigned) or ``-offset - 2^(bw-1)``
    (signed); ``[qmin, qmax] = [0, 2^bw - 1]`` or ``[-2^(bw-1), 2^(bw-1) - 1]``.

    >>> p = onnx_params(from_min_max(-1.0, 1.0, bitwidth=8, symmetric=True), signed=True)
    >>> int(p.zero_point), p.qmin, p.qmax
    (0, -128, 127)
    """
    half = 2 ** (encoding.bitwidth - 1)
    qmin, qmax = (-half, half - 1) if signed else (0, 2 * half - 1)
    return OnnxParams(scale=np.asarray(encoding.delta, dtype=np.float32),
                      zero_point=onnx_zero_point(encoding, signed=signed),
                      qmin=qmin, qmax=qmax, axis=encoding.axis)


# ============================================================================ assertions

def _check_rounding(rounding: str) -> None:
    if rounding not in ROUNDINGS:
        raise EncodingError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise EncodingError(f"convention must be one of {CONVENTIONS}, got {convention!r}")


def encoding_arrays(encoding: Encoding, ndim: int) -> tuple[np.ndarray, ...]:
    """float32 ``(min, max, delta, offset)`` shaped to broadcast against an ``ndim``-D tensor.

    Per tensor they are scalars (shape ``()``); per channel they have shape ``(1, …, C, …, 1)``
    with C at ``encoding.axis``. Handy inside a kernel under test::

        lo, hi, delta, offset = encoding_arrays(enc, x.ndim)
        t = np.clip(x, lo, hi) / delta - offset
    """
    fields = [np.asarray(getattr(encoding, n), dtype=np.float32)
              for n in ("min", "max", "delta", "offset")]
    if encoding.axis is None:
        return tuple(fields)
    view = [1] * ndim
    view[encoding.axis] = encoding.num_channels
    return tuple(f.reshape(view) for f in fields)


def _per_element(encoding: Encoding, shape: tuple) -> tuple[np.ndarray, ...]:
    """float32 (min, max, delta, offset) broadcast to ``shape`` (per channel along the axis)."""
    return tuple(np.broadcast_to(f, shape) for f in encoding_arrays(encoding, len(shape)))


def _grid_t(x, lo, hi, delta, offset) -> np.float32:
    """What AIMET's rounding sees: ``t = f32(clamp(x, min, max)/delta - offset)``."""
    with np.errstate(all="ignore"):
        c = np.float32(hi) if x > hi else (np.float32(lo) if x < lo else np.float32(x))
        return np.float32(np.float32(c / np.float32(delta)) - np.float32(offset))


def _s(v) -> str:
    """A float32 value in its shortest round-trip form (``0.49999997``, not 0.4999999701976776)."""
    return str(np.float32(v))


def _why(x, want, got, lo, hi, delta, offset, rounding) -> str:
    """One element's diagnosis: the value of t, the kind of case, which way each side went."""
    x, want, got = np.float32(x), np.float32(want), np.float32(got)
    if np.isnan(x):
        return (f"x is NaN: qsim gives {_s(want)} (NaN becomes grid index 0, x̂ = delta·offset), "
                f"got {_s(got)}")
    if np.isnan(got):
        return f"x = {_s(x)}: your kernel returned NaN, qsim gives {_s(want)}"
    with np.errstate(all="ignore"):
        q_want = float(np.float32(want / delta) - offset)
        q_got = float(np.float32(got / delta) - offset)
    where = f"x = {_s(x)}, delta = {_s(delta)}, offset = {_s(offset)}"
    if rounding == "nearest" and (x > hi or x < lo):
        return (f"{where}: x is outside [min, max] = [{_s(lo)}, {_s(hi)}]; AIMET clamps x "
                f"first, giving {_s(want)} (index {q_want:g}); got {_s(got)} (index ≈ {q_got:.4g})")
    if rounding == "nearest":
        t, what = _grid_t(x, lo, hi, delta, offset), "t = x/delta - offset"
        rule = "AIMET rounds to nearest, ties away from zero"
    else:
        t, what = np.float32(x / np.float32(delta)), "t = x/scale"
        rule = "ONNX QuantizeLinear rounds to nearest, ties to even"
    frac = float(t - np.floor(t))
    steps = q_got - q_want
    side = "up" if steps > 0 else "down"
    head = f"{where}: {what} = {_s(t)}"
    if frac == 0.5:
        return (f"{head} is an exact tie; {rule}, giving {_s(want)}; your kernel rounded it "
                f"{side} to {_s(got)}")
    if steps >= 0.5 and 0.4999 < frac < 0.5:
        return (f"{head} is just below a tie, so it rounds down to {_s(want)}; your kernel "
                f"rounded it up to {_s(got)} (floor(t + 0.5) does that: in float32, t + 0.5 "
                f"rounds up to the next integer)")
    if abs(steps) >= 0.5:
        return (f"{head}; {rule}, giving {_s(want)} (index {q_want:g}); your kernel gave "
                f"{_s(got)}, {abs(steps):.3g} grid steps {side}")
    return (f"{head}; same grid index but a different float32 value: expected {_s(want)}, got "
            f"{_s(got)} (compute x̂ = delta·(q + offset) in float32, in that order)")


def explain_mismatch(x, expected, got, encoding: Encoding, *, rounding: str = "nearest",
                     shown: int = SHOWN) -> str:
    """Text naming how many elements differ and diagnosing the first ``shown`` of them."""
    x = np.asarray(x, dtype=np.float32)
    expected = np.asarray(expected)
    got = np.asarray(got)
    differ = ~((expected == got) | (np.isnan(expected) & np.isnan(got)))
    bad = np.argwhere(differ)
    lo, hi, delta, offset = _per_element(encoding, x.shape)
    lines = [f"{len(bad)} of {x.size} elements differ from qsim (rounding={rounding!r}, "
             f"bitwidth {encoding.bitwidth}, {'per tensor' if encoding.axis is None else f'per channel along axis {encoding.axis}'})"]
    for idx in (tuple(int(i) for i in b) for b in bad[:shown]):
        lines.append(f"  at {list(idx)}: " + _why(x[idx], expected[idx], got[idx], lo[idx],
                                                  hi[idx], delta[idx], offset[idx], rounding))
    if len(bad) > shown:
        lines.append(f"  … and {len(bad) - shown} more")
    return "\n".join(lines)


def _as_result(value, x: np.ndarray, what: str) -> np.ndarray:
    out = np.asarray(value)
    if out.shape != x.shape:
        raise AssertionError(f"{what} returned shape {out.shape}, expected the input's {x.shape}")
    return out


def assert_qdq_matches(fn: Callable[[np.ndarray, Encoding], np.ndarray], x, encoding: Encoding,
                       *, rounding: str = "nearest", max_ulp: int = 0) -> None:
    """Assert that ``fn(x, encoding)`` equals qsim's quantize-dequantize of ``x``.

    ``fn`` receives a float32 array and the :class:`~qsim.quant.Encoding` (``delta``, ``offset``,
    ``min``, ``max``, ``bitwidth``, ``axis``; see :func:`onnx_params` for scale/zero point) and
    returns x̂ of the same shape. ``max_ulp = 0`` (default) demands identical float32 values
    (NaN = NaN, -0.0 = 0.0); a positive value allows that many float32 ulps of difference per element.
    Raises AssertionError with :func:`explain_mismatch`'s text.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    check_channels(x.shape, encoding)
    want = reference_qdq(x, encoding, rounding=rounding)
    got = _as_result(fn(x.copy(), encoding), x, "fn").astype(np.float32)
    if max_ulp:
        bits_apart = np.abs(want.view(np.int32).astype(np.int64) - got.view(np.int32).astype(np.int64))
        close = (bits_apart <= max_ulp) | (want == got) | (np.isnan(want) & np.isnan(got))
        if close.all():
            return
        got = np.where(close, want, got)
    elif np.array_equal(want, got, equal_nan=True):
        return
    raise AssertionError(explain_mismatch(x, want, got, encoding, rounding=rounding))


def assert_quantize_matches(fn: Callable[[np.ndarray, Encoding], np.ndarray], x,
                            encoding: Encoding, *, rounding: str = "nearest",
                            convention: str = "aimet") -> None:
    """Assert that the integer codes ``fn(x, encoding)`` equal qsim's (see
    :func:`reference_quantize` for the three conventions)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    check_channels(x.shape, encoding)
    want = reference_quantize(x, encoding, rounding=rounding, convention=convention)
    got = _as_result(fn(x.copy(), encoding), x, "fn")
    if not np.issubdtype(got.dtype, np.integer):
        raise AssertionError(f"fn returned dtype {got.dtype}; integer codes expected")
    if np.array_equal(want, got.astype(np.int64)):
        return
    shift = 2 ** (encoding.bitwidth - 1) if convention == "onnx_signed" else 0
    # explain in dequantized terms, where the diagnosis lives
    x_want = _dequantize(want + shift, encoding)
    x_got = _dequantize(np.clip(got.astype(np.int64) + shift, 0, encoding.num_steps), encoding)
    raise AssertionError(f"integer codes differ ({convention} convention): "
                         + explain_mismatch(x, x_want, np.where(want == got, x_want, x_got),
                                            encoding, rounding=rounding))


def assert_encoding_matches(fn: Callable[[np.ndarray], tuple], x, *, bitwidth: int,
                            symmetric: bool = False, strict_symmetric: bool = False,
                            unsigned_symmetric: bool = False, axis: int | None = None) -> None:
    """Assert that ``fn(x) -> (scale, offset)`` equals AIMET's min-max ("tf") encoding of ``x``.

    ``offset`` is in AIMET's convention (``x̂ = scale·(q + offset)``, offset ≤ 0); scale is
    compared in float32 (what kernels use), offset exactly. Per channel when ``axis`` is given.
    """
    x = np.asarray(x, dtype=np.float32)
    if axis is None:
        lo, hi = np.nanmin(x), np.nanmax(x)
    else:
        rest = tuple(i for i in range(x.ndim) if i != axis)
        lo, hi = np.nanmin(x, axis=rest), np.nanmax(x, axis=rest)
    want = from_min_max(lo, hi, bitwidth=bitwidth, symmetric=symmetric,
                        strict_symmetric=strict_symmetric, unsigned_symmetric=unsigned_symmetric,
                        axis=axis)
    scale, offset = fn(x.copy())
    scale = np.asarray(scale, dtype=np.float32)
    offset = np.asarray(offset, dtype=np.float64)
    want_scale = np.asarray(want.delta, dtype=np.float32)
    problems = []
    if scale.shape != want_scale.shape or not np.array_equal(scale, want_scale):
        problems.append(f"scale {scale}, AIMET's is {want_scale}")
    if offset.shape != want.offset.shape or not np.array_equal(offset, want.offset):
        problems.append(f"offset {offset}, AIMET's is {want.offset}")
    if problems:
        raise AssertionError(f"min-max encoding of data in [{lo}, {hi}] (bitwidth {bitwidth}, "
                             f"symmetric={symmetric}, strict={strict_symmetric}, "
                             f"unsigned={unsigned_symmetric}) differs: " + "; ".join(problems)
                             + " (see qsim.quant.from_min_max for the formula)")


# ============================================================================ strategies

def _hypothesis():
    """(strategies, extra.numpy) modules, or an ImportError that says how to install them."""
    try:
        from hypothesis import strategies as st
        from hypothesis.extra import numpy as hnp
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("qsim.testing strategies need Hypothesis: pip install 'qsim-ref[test]'") from None
    return st, hnp


def edge_values(magnitude: float = 1e4) -> tuple[float, ...]:
    """The float32 values kernels most often get wrong (within ``±magnitude``)."""
    base = [0.0, -0.0, FLT_TRUE_MIN, -FLT_TRUE_MIN, FLT_MIN, -FLT_MIN, 0.5, -0.5, 1.5, -1.5, 2.5,
            -2.5, 0.49999997, -0.49999997, 1.0, -1.0, magnitude, -magnitude]
    return tuple(float(np.float32(v)) for v in base if abs(v) <= magnitude)


def float32_arrays(*, shape=None, min_dims: int = 1, max_dims: int = 3, min_side: int = 1,
                   max_side: int = 6, magnitude: float = 1e4, edge: bool = True,
                   allow_nan: bool = False, allow_infinity: bool = False):
    """Strategy: float32 arrays, elements in ``[-magnitude, magnitude]`` mixed with
    :func:`edge_values` (and NaN / ±inf when allowed). ``shape`` fixes the shape."""
    st, hnp = _hypothesis()
    finite = st.floats(min_value=-magnitude, max_value=magnitude, width=32, allow_nan=False,
                       allow_infinity=False, allow_subnormal=True)
    options = [finite]
    if edge:
        options.append(st.sampled_from(edge_values(magnitude)))
    if allow_nan:
        options.append(st.just(float("nan")))
    if allow_infinity:
        options.append(st.sampled_from([float("inf"), float("-inf")]))
    shapes = st.just(tuple(shape)) if shape is not None else hnp.array_shapes(
        min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)
    return hnp.arrays(np.float32, shapes, elements=st.one_of(*options))


def _grid_encoding(delta: np.ndarray, offset: np.ndarray, *, bitwidth: int, symmetric: bool,
                   strict: bool, unsigned: bool, axis: int | None) -> Encoding:
    """The encoding of a grid given ``delta`` and ``offset``, with min/max as AIMET derives them:
    ``min = delta·offset``, ``max = delta·(offset + N')``, ``N' = N - 1`` if symmetric and strict."""
    steps = 2 ** bitwidth - 1 - (1 if symmetric and strict else 0)
    return Encoding(min=delta * offset, max=delta * (offset + steps), delta=delta, offset=offset,
                    bitwidth=bitwidth, symmetric=symmetric, strict_symmetric=strict,
                    unsigned_symmetric=unsigned, axis=axis)


def encodings(*, bitwidths=(2, 4, 8, 16), symmetric: bool | None = None,
              strict_symmetric: bool | None = None, unsigned_symmetric: bool | None = None,
              channels: int | None = None, axis: int = 0, exact_ties: bool | None = None,
              magnitude: float = 1e3):
    """Strategy: :class:`~qsim.quant.Encoding` values as AIMET builds them.

    Flags left at ``None`` are drawn. ``channels=C`` gives a per-channel encoding along ``axis``.
    ``exact_ties=False``: :func:`~qsim.quant.from_min_max` of random float32 ranges within
    ``±magnitude``; ``True``: power-of-two ``delta = 2^k`` (k in -12..4) with AIMET's offsets for
    the flags (asymmetric any integer in [-N, 0]; symmetric ``-2^(bw-1)``, strict ``-(2^(bw-1)-1)``,
    unsigned 0), so that grid points and ties are exact in float32. ``None`` mixes both.
    """
    st, _ = _hypothesis()

    @st.composite
    def build(draw):
        bw = draw(st.sampled_from(tuple(bitwidths)))
        sym = draw(st.booleans()) if symmetric is None else symmetric
        strict = (draw(st.booleans()) if strict_symmetric is None else strict_symmetric) and sym
        unsigned = (draw(st.booleans()) if unsigned_symmetric is None else unsigned_symmetric) and sym
        # shrinks towards exact-tie grids with delta = 1: the clearest failing examples
        ties = (not draw(st.booleans())) if exact_ties is None else exact_ties
        c = 1 if channels is None else channels
        ax = None if channels is None else axis
        shape = () if channels is None else (c,)
        if ties:
            n = 2 ** bw - 1
            delta = np.array([2.0 ** draw(st.integers(-12, 4)) for _ in range(c)])
            if not sym:
                # 0 (ReLU outputs) and -N (non-positive data) often: kernels fail there
                offsets = st.one_of(st.sampled_from((0, -n)), st.integers(-n, 0))
                offset = np.array([float(draw(offsets)) for _ in range(c)])
            elif unsigned and draw(st.booleans()):
                offset = np.zeros(c)
            else:
                offset = np.full(c, -float(2 ** (bw - 1) - (1 if strict else 0)))
            return _grid_encoding(delta.reshape(shape), offset.reshape(shape), bitwidth=bw,
                                  symmetric=sym, strict=strict, unsigned=unsigned, axis=ax)
        bound = st.floats(0.0, magnitude, width=32, allow_subnormal=False)
        lo = np.array([-draw(bound) for _ in range(c)], dtype=np.float32)
        hi = np.array([draw(bound) for _ in range(c)], dtype=np.float32)
        if unsigned and draw(st.booleans()):
            lo[:] = 0.0   # non-negative data: the unsigned-symmetric grid applies
        return from_min_max(lo.reshape(shape), hi.reshape(shape), bitwidth=bw, symmetric=sym,
                            strict_symmetric=strict, unsigned_symmetric=unsigned, axis=ax)

    return build()


def per_channel_layouts(*, min_dims: int = 1, max_dims: int = 4, max_side: int = 5):
    """Strategy: ``(shape, axis)`` with ``0 ≤ axis < len(shape)`` (the per-channel axis)."""
    st, hnp = _hypothesis()
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=1,
                            max_side=max_side).flatmap(
        lambda shape: st.tuples(st.just(shape), st.integers(0, len(shape) - 1)))


#: kinds of element drawn by :func:`qdq_cases`
_GRID, _TIE, _BELOW_TIE, _ABOVE_TIE, _INSIDE, _OUTSIDE, _ZERO = range(7)
#: the kinds as drawn: ties and their neighbours twice as often as the rest
_KIND_WEIGHTS = (_TIE, _BELOW_TIE, _ABOVE_TIE, _TIE, _BELOW_TIE, _ABOVE_TIE, _GRID, _INSIDE,
                 _OUTSIDE, _ZERO)


def grid_probe_values(kind: np.ndarray, q: np.ndarray, u: np.ndarray, encoding: Encoding,
                      shape: tuple) -> np.ndarray:
    """float32 values at chosen spots of the grid, element by element (pure function).

    ``kind`` picks the spot: grid point ``delta·(q + offset)``, tie ``delta·(q + ½ + offset)``
    and its float32 neighbours below/above, a point inside ``[min, max]`` at fraction ``u``,
    a point outside the range (``u`` decides the side and distance), or zero. ``q`` is an index
    in ``[0, N)``, ``u ∈ [0, 1)``. Per-channel encodings use their channel's grid.
    """
    lo, hi, delta, offset = (a.astype(np.float32) for a in _per_element(encoding, shape))
    qf = q.astype(np.float32)
    f = np.float32
    with np.errstate(all="ignore"):
        grid = delta * (qf + offset)
        tie = delta * (qf + f(0.5) + offset)
        span = hi - lo
        inside = lo + f(u) * span
        outside = np.where(u < 0.5, lo - (f(1) + f(u)) * span, hi + (f(0.5) + f(u)) * span)
        values = np.select(
            [kind == _GRID, kind == _TIE, kind == _BELOW_TIE, kind == _ABOVE_TIE,
             kind == _INSIDE, kind == _OUTSIDE],
            [grid, tie, np.nextafter(tie, f(-np.inf)), np.nextafter(tie, f(np.inf)), inside,
             outside], default=f(0.0))
    values = np.where(np.isfinite(values), values, f(0.0))
    return values.astype(np.float32)


def qdq_cases(*, per_channel: bool | None = None, bitwidths=(2, 4, 8, 16),
              symmetric: bool | None = None, exact_ties: bool | None = None,
              allow_nan: bool = False, max_dims: int = 3, max_side: int = 5):
    """Strategy: ``(x, encoding)`` pairs for quantize-dequantize tests.

    ``x`` (float32, C-contiguous) is concentrated where kernels disagree (see
    :func:`grid_probe_values`): grid points, exact ties and their neighbours, clamp bounds,
    beyond the range, zero — plus NaN when ``allow_nan``. ``per_channel=None`` draws both
    layouts; the encoding comes from :func:`encodings`.
    """
    st, hnp = _hypothesis()

    @st.composite
    def build(draw):
        pc = draw(st.booleans()) if per_channel is None else per_channel
        if pc:
            shape, axis = draw(per_channel_layouts(max_dims=max_dims, max_side=max_side))
            enc = draw(encodings(bitwidths=bitwidths, symmetric=symmetric, channels=shape[axis],
                                 axis=axis, exact_ties=exact_ties))
        else:
            shape = draw(hnp.array_shapes(min_dims=1, max_dims=max_dims, max_side=max_side))
            enc = draw(encodings(bitwidths=bitwidths, symmetric=symmetric, exact_ties=exact_ties))
        n = 2 ** enc.bitwidth - 1
        kind = draw(hnp.arrays(np.int8, shape, elements=st.sampled_from(_KIND_WEIGHTS)))
        ends = st.sampled_from((0, n - 1))        # the grid's first and last steps, often
        q = draw(hnp.arrays(np.int64, shape, elements=st.one_of(ends, st.integers(0, n - 1))))
        u = draw(hnp.arrays(np.float64, shape, elements=st.floats(0.0, 1.0, exclude_max=True)))
        x = grid_probe_values(kind, q, u, enc, shape)
        if allow_nan:
            nan = draw(hnp.arrays(np.bool_, shape, elements=st.booleans()))
            x = np.where(nan, np.float32(np.nan), x).astype(np.float32)
        return np.ascontiguousarray(x), enc

    return build()


#: ops :func:`small_graphs` chains; each maps (graph input width) → (ONNX op, needs a parameter)
_GRAPH_OPS = ("MatMul", "Add", "Mul", "Relu", "Sigmoid", "Tanh")


def small_graphs(*, max_ops: int = 4, max_batch: int = 4, max_width: int = 6):
    """Strategy: ``(graph, feeds)`` — a random chain of 1..``max_ops`` ops on one float32 input.

    Input ``x`` of shape ``(batch, width)``; each step is MatMul (weight ``(width, width')``),
    Add or Mul (a ``(width,)`` parameter), Relu, Sigmoid or Tanh; output ``y``. Parameters and
    feeds are float32 in [-2, 2]. Useful to property-test a model-level runtime or qsim itself
    (e.g. "all quantizers disabled = FP32").
    """
    st, hnp = _hypothesis()
    from .ir import Graph, Node, ValueInfo

    values = st.floats(-2.0, 2.0, width=32)

    @st.composite
    def build(draw):
        batch = draw(st.integers(1, max_batch))
        width = draw(st.integers(1, max_width))
        first = width
        ops = draw(st.lists(st.sampled_from(_GRAPH_OPS), min_size=1, max_size=max_ops))
        nodes, params, current = [], {}, "x"
        for i, op in enumerate(ops):
            out = "y" if i == len(ops) - 1 else f"t{i}"
            inputs = [current]
            if op == "MatMul":
                new_width = draw(st.integers(1, max_width))
                params[f"w{i}"] = draw(hnp.arrays(np.float32, (width, new_width), elements=values))
                inputs.append(f"w{i}")
                width = new_width
            elif op in ("Add", "Mul"):
                params[f"p{i}"] = draw(hnp.arrays(np.float32, (width,), elements=values))
                inputs.append(f"p{i}")
            nodes.append(Node(name=f"{op.lower()}{i}", op_type=op, inputs=tuple(inputs),
                              outputs=(out,)))
            current = out
        graph = Graph(nodes=tuple(nodes),
                      inputs=(ValueInfo("x", np.dtype(np.float32), (batch, first)),),
                      outputs=(ValueInfo("y", np.dtype(np.float32), (batch, width)),),
                      params=params, name="small_graph").validate()
        feeds = {"x": draw(hnp.arrays(np.float32, (batch, first), elements=values))}
        return graph, feeds

    return build()


__all__ = [
    "reference_qdq", "reference_quantize", "onnx_params", "OnnxParams", "assert_qdq_matches",
    "assert_quantize_matches", "assert_encoding_matches", "explain_mismatch", "edge_values",
    "float32_arrays", "encodings", "per_channel_layouts", "qdq_cases", "grid_probe_values",
    "small_graphs", "encoding_arrays",
]
