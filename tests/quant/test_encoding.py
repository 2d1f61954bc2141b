"""Encodings from a range (numerics.md §2), fixed ranges (placement.md §5.4), ONNX zero points.

Expected values come from the reference documents' own examples, computed here from their
formulas in plain Python float arithmetic.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsim.errors import EncodingError
from qsim.quant import (Encoding, from_fixed_range, from_min_max, offset_from_onnx_zero_point,
                        onnx_zero_point)
from qsim.quant.encoding import EPS, L

FLT_MAX = float(np.finfo(np.float32).max)


def test_constants_match_numerics_md():
    assert EPS == 2.0 ** -23
    assert L == 3.3687952317214356e38


def test_signed_symmetric_uses_both_sides():
    # numerics.md §2.4: [-5, 1] gives 5/128, [-1, 5] gives 5/127
    assert float(from_min_max(-5.0, 1.0, bitwidth=8, symmetric=True).delta) == 5 / 128
    e = from_min_max(-1.0, 5.0, bitwidth=8, symmetric=True)
    assert float(e.delta) == 5 / 127
    assert float(e.offset) == -128
    assert float(e.max) == 5 / 127 * 127


def test_bitwidth_2_divides_positive_side_by_two():
    e = from_min_max(-1.0, 3.0, bitwidth=2, symmetric=True)
    assert float(e.delta) == 3 / 2
    assert float(e.offset) == -2


@pytest.mark.parametrize("symmetric,strict,want_min,want_max", [
    (False, False, 0.0, 255 * EPS),
    (True, False, -128 * EPS, 127 * EPS),
    (True, True, -127 * EPS, 127 * EPS),
])
def test_all_zero_data_gets_eps(symmetric, strict, want_min, want_max):
    e = from_min_max(0.0, 0.0, bitwidth=8, symmetric=symmetric, strict_symmetric=strict)
    assert float(e.delta) == EPS
    assert float(e.min) == want_min
    assert float(e.max) == want_max


def test_asymmetric_formula():
    lo, hi = -1.3, 2.7
    e = from_min_max(lo, hi, bitwidth=8)
    delta = (hi - lo) / 255
    offset = -np.floor(-lo / delta + 0.5)        # -lo/delta = 82.875: no tie here
    assert float(e.delta) == delta
    assert float(e.offset) == offset
    assert float(e.min) == delta * offset
    assert float(e.max) == delta * (offset + 255)


def test_asymmetric_offset_rounds_half_away_from_zero():
    # -min/delta = 2.5 exactly: AIMET rounds to 3 (half-even would give 2)
    e = from_min_max(-2.5, 252.5, bitwidth=8)
    assert float(e.delta) == 1.0
    assert float(e.offset) == -3.0


def test_unsigned_symmetric_and_strict():
    e = from_min_max(0.0, 2.55, bitwidth=8, symmetric=True, unsigned_symmetric=True)
    assert (float(e.delta), float(e.offset)) == (2.55 / 255, 0.0)
    e = from_min_max(-0.0, 2.54, bitwidth=8, symmetric=True, unsigned_symmetric=True,
                     strict_symmetric=True)
    assert (float(e.delta), float(e.offset), float(e.max)) == (2.54 / 254, 0.0, 2.54 / 254 * 254)
    e = from_min_max(-4.0, 2.0, bitwidth=8, symmetric=True, strict_symmetric=True)
    assert (float(e.delta), float(e.offset)) == (4 / 127, -127.0)


@pytest.mark.parametrize("lo,hi", [(-np.inf, np.inf), (-FLT_MAX, FLT_MAX), (0.0, np.inf),
                                   (-np.inf, 0.0), (-FLT_MAX, 1.0)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_overflow_guard_keeps_range_inside_L(lo, hi, symmetric):
    e = from_min_max(lo, hi, bitwidth=8, symmetric=symmetric)
    for v in (e.min, e.max, e.delta):
        assert np.isfinite(v)
    assert float(e.delta) > 0
    assert -L <= float(e.min) <= 0.0 <= float(e.max) <= L


@settings(max_examples=50, deadline=None)
@given(lo=st.floats(width=32, allow_nan=False, allow_infinity=False),
       hi=st.floats(width=32, allow_nan=False, allow_infinity=False),
       bw=st.integers(2, 32), symmetric=st.booleans(), strict=st.booleans(),
       unsigned=st.booleans())
def test_any_finite_range_gives_a_valid_grid(lo, hi, bw, symmetric, strict, unsigned):
    lo, hi = min(lo, hi), max(lo, hi)
    e = from_min_max(lo, hi, bitwidth=bw, symmetric=symmetric, strict_symmetric=strict,
                     unsigned_symmetric=unsigned)
    assert np.isfinite(e.delta) and float(e.delta) >= EPS
    assert np.isfinite(e.min) and np.isfinite(e.max)
    assert float(e.offset) <= 0 and float(e.offset) == np.round(float(e.offset))
    assert float(e.min) <= 0.0 <= float(e.max)      # zero is inside the grid


def test_fixed_range_examples():
    e = from_fixed_range(0.0, 1.0, bitwidth=8)
    assert (float(e.delta), float(e.offset)) == (1 / 255, 0.0)
    e = from_fixed_range(-1.0, 1.0, bitwidth=8, symmetric=True)
    assert (float(e.delta), float(e.offset), float(e.max)) == (1 / 127, -128.0, 1 / 127 * 127)
    e = from_fixed_range(0.0, 0.0, bitwidth=8)           # hi = max(hi, 0, lo + 0.01)
    assert float(e.delta) == 0.01 / 255
    # offset = round-half-EVEN(lo / delta): lo/delta = -2.5 → -2
    e = from_fixed_range(-2.5, 252.5, bitwidth=8)
    assert (float(e.delta), float(e.offset)) == (1.0, -2.0)


@pytest.mark.parametrize("bw", [4, 8, 16])
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("signed", [False, True])
def test_onnx_zero_point_round_trip(bw, symmetric, signed):
    e = from_min_max(-1.0, 3.0, bitwidth=bw, symmetric=symmetric)
    zp = onnx_zero_point(e, signed)
    lo, hi = (-(2 ** (bw - 1)), 2 ** (bw - 1) - 1) if signed else (0, 2 ** bw - 1)
    assert lo <= int(zp) <= hi
    assert offset_from_onnx_zero_point(zp, bitwidth=bw, signed=signed) == e.offset
    if symmetric and signed:
        assert int(zp) == 0
    if symmetric and not signed:
        assert int(zp) == 2 ** (bw - 1)


@pytest.mark.parametrize("bw", [1, 33, 0, 8.0, True, "8", None])
def test_invalid_bitwidth_is_named(bw):
    with pytest.raises(EncodingError, match="bitwidth"):
        from_min_max(-1.0, 1.0, bitwidth=bw)


def test_shape_errors_name_the_shapes():
    with pytest.raises(EncodingError, match=r"\(3,\).*\(2,\)"):
        from_min_max(np.zeros(3), np.ones(2), bitwidth=8, axis=0)
    with pytest.raises(EncodingError, match="axis=None"):
        from_min_max(np.zeros(3), np.ones(3), bitwidth=8)
    with pytest.raises(EncodingError, match=r"\(C,\)"):
        Encoding(min=0.0, max=1.0, delta=1.0, offset=0.0, bitwidth=8, axis=0)
    with pytest.raises(EncodingError, match="one shape"):
        Encoding(min=np.zeros(2), max=np.ones(2), delta=np.ones(3), offset=np.zeros(2),
                 bitwidth=8, axis=0)


def test_encoding_is_frozen_and_read_only():
    e = from_min_max(np.array([-1.0, -2.0]), np.array([1.0, 2.0]), bitwidth=8, axis=0)
    with pytest.raises(ValueError):
        e.delta[0] = 3.0
    with pytest.raises(AttributeError):
        e.bitwidth = 4
    assert e.channel(1).same_as(from_min_max(-2.0, 2.0, bitwidth=8))


def test_docstring_examples():
    import doctest

    import qsim.quant.encoding as module
    result = doctest.testmod(module)
    assert result.attempted >= 5 and result.failed == 0
