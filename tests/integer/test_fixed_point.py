"""Fixed-point requantization (qsim/integer/fixed_point.py) against exact rational arithmetic.

Every expected value is computed with Python integers and fractions.Fraction from the formula
in gemmlowp's / TFLite's definitions, never with the code under test. The Numba kernels and
their NumPy twins are compared on the same draws (and the suite also runs under
NUMBA_DISABLE_JIT=1).
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsim.errors import EncodingError
from qsim.integer import fixed_point as fp

SETTINGS = settings(max_examples=300, deadline=None)
INT32 = st.integers(-2**31, 2**31 - 1)
HALF = Fraction(1, 2)


def floor_half_up(v: Fraction) -> int:
    """Nearest integer, ties towards +∞."""
    return math.floor(v + HALF)


def half_away(v: Fraction) -> int:
    """Nearest integer, ties away from zero."""
    r = math.floor(abs(v) + HALF)
    return r if v >= 0 else -r


def wrap32(v: int) -> int:
    return (v + 2**31) % 2**32 - 2**31


multipliers = st.floats(min_value=2.0**-40, max_value=2.0**29, allow_nan=False,
                        allow_infinity=False)


@st.composite
def q_shift(draw):
    """A valid (q, shift) pair: a quantized real multiplier, or raw extremes."""
    if draw(st.booleans()):
        return fp.quantize_multiplier(draw(multipliers))
    return draw(st.integers(0, 2**31 - 1)), draw(st.integers(-31, 30))


# ---------------------------------------------------------------------------------------------
# quantize_multiplier
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(multipliers)
def test_quantize_multiplier_is_the_nearest_q31_value(m):
    q, shift = fp.quantize_multiplier(m)
    exact = Fraction(m)
    if q == 0:
        assert shift == 0 and exact < Fraction(2) ** -32
        return
    assert 2**30 <= q < 2**31 and -31 <= shift <= 30
    # m = f·2^shift with f in [1/2, 1): q = round_half_away(f·2^31) (2^31 → 2^30, shift+1)
    f = exact / Fraction(2) ** shift
    assert q == half_away(f * 2**31) or (q == 2**30 and half_away(f * 2**32) == 2**31)
    m_q = fp.multiplier_value(q, shift)
    assert abs(m_q - exact) <= Fraction(2) ** (shift - 32)         # half a Q31 step
    assert abs(m_q - exact) / exact <= Fraction(1, 2**30)


def test_quantize_multiplier_edges():
    assert fp.quantize_multiplier(0.0) == (0, 0)
    assert fp.quantize_multiplier(1.0) == (2**30, 1)
    assert fp.quantize_multiplier(2.0**-33) == (0, 0)                    # flushed to zero
    assert fp.quantize_multiplier(1 - 2.0**-40) == (2**30, 1)            # rounds up to 1.0
    for bad in (-0.5, float("nan"), float("inf"), 2.0**31):
        with pytest.raises(EncodingError):
            fp.quantize_multiplier(bad)


# ---------------------------------------------------------------------------------------------
# the primitives
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(INT32, INT32)
def test_srdhm_is_the_rounded_doubled_high_half(a, b):
    expected = 2**31 - 1 if a == b == -2**31 else floor_half_up(Fraction(a * b, 2**31))
    assert fp.srdhm(a, b) == expected
    assert fp.np_srdhm(a, b) == expected
    assert -2**31 <= expected <= 2**31 - 1


@SETTINGS
@given(INT32, st.integers(0, 31))
def test_rdbpot_rounds_half_away_from_zero(x, e):
    expected = half_away(Fraction(x, 2**e))
    assert fp.rdbpot(x, e) == expected
    assert fp.np_rdbpot(x, e) == expected


@SETTINGS
@given(INT32, q_shift())
def test_mbqm_is_two_roundings_of_the_exact_product(x, qs):
    """MBQM = RDBPOT(SRDHM(x·2^left, q), right), each step exact-rational: the first rounds
    x·2^left·q / 2^31 half up, the second divides by 2^right half away from zero."""
    q, shift = qs
    left, right = max(shift, 0), max(-shift, 0)
    xl = wrap32(x << left)
    high = 2**31 - 1 if xl == q == -2**31 else floor_half_up(Fraction(xl * q, 2**31))
    expected = half_away(Fraction(high, 2**right))
    assert fp.mbqm(x, q, shift) == expected
    assert fp.np_mbqm(x, q, shift) == expected


@SETTINGS
@given(INT32, q_shift())
def test_mbqm_is_within_one_rounding_and_a_half_of_x_times_m_q(x, qs):
    """Without left-shift overflow: |MBQM - x·M_q| <= 1/2 + 2^-(right+1), and MBQM equals
    round_half_away(x·M_q) unless x·M_q lies within 2^-(right+1) of a rounding tie."""
    q, shift = qs
    left, right = max(shift, 0), max(-shift, 0)
    if not -2**31 <= x * 2**left < 2**31:
        return
    exact = x * fp.multiplier_value(q, shift)
    got = fp.mbqm(x, q, shift)
    slack = Fraction(1, 2**(right + 1))
    assert abs(got - exact) <= HALF + slack
    distance_to_tie = abs((exact - math.floor(exact)) - HALF)
    if distance_to_tie > slack:
        assert got == half_away(exact)


def test_double_rounding_differs_from_single_rounding_near_ties():
    """The two roundings can both go up: x·M_q just below k + 1/2 becomes k + 1. Found by a
    search with exact fractions (the test fails if no such input exists)."""
    q, shift = fp.quantize_multiplier(0.3)
    for x in range(1, 200_000):
        exact = x * fp.multiplier_value(q, shift)
        if fp.mbqm(x, q, shift) != half_away(exact):
            assert fp.mbqm(x, q, shift) == half_away(exact) + 1
            assert exact < math.floor(exact) + HALF
            break
    else:
        raise AssertionError("no double-rounding difference found")


@SETTINGS
@given(INT32, q_shift())
def test_single_rounding_is_x_times_m_q_rounded_half_up(x, qs):
    q, shift = qs
    expected = floor_half_up(x * fp.multiplier_value(q, shift))
    assert fp.mbqm_single(x, q, shift) == expected
    assert fp.np_mbqm_single(x, q, shift) == expected


def reduced_multiplier(q: int) -> int:
    """The 16-bit multiplier of TFLite's 16x8 kernels: q / 2^16 rounded half up, at most
    2^15 - 1."""
    return min(floor_half_up(Fraction(q, 2**16)), 2**15 - 1)


@SETTINGS
@given(st.integers(-2**47, 2**47 - 1), st.integers(0, 2**31 - 1), st.integers(-31, 7))
def test_mbqm64_is_x_times_the_reduced_multiplier_rounded_half_up(x, q, shift):
    r = reduced_multiplier(q)
    expected = wrap32(floor_half_up(Fraction(x * r, 2**(15 - shift))))
    assert fp.mbqm64(x, q, shift) == expected
    assert fp.np_mbqm64(x, q, shift) == expected
    assert abs(Fraction(r, 2**15) - Fraction(q, 2**31)) <= Fraction(1, 2**16) or r == 2**15 - 1


@SETTINGS
@given(st.lists(st.integers(-2**31, 2**31 - 1), min_size=2, max_size=40), q_shift(),
       st.sampled_from(fp.ROUNDINGS))
def test_mbqm_is_monotonic(xs, qs, rounding):
    q, shift = qs
    if rounding == "int64":
        shift = min(shift, 7)
        xs = sorted(x * 2**15 for x in xs)                        # int64 accumulators
        ys = [fp.mbqm64(x, q, shift) for x in xs]
        exact = [x * reduced_multiplier(q) * Fraction(2) ** (shift - 15) for x in xs]
        ys = [y for y, e in zip(ys, exact) if -2**31 <= e < 2**31 - 1]   # no int32 wrap
    else:
        left = max(shift, 0)
        xs = sorted(x for x in xs if -2**31 <= x * 2**left < 2**31)
        f = fp.mbqm if rounding == "double" else fp.mbqm_single
        ys = [f(x, q, shift) for x in xs]
    assert ys == sorted(ys)


# ---------------------------------------------------------------------------------------------
# requantize: bias, zero point, saturation, channels, Numba = NumPy
# ---------------------------------------------------------------------------------------------
@st.composite
def requant_cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    channels = draw(st.integers(1, 6))
    shape = (draw(st.integers(1, 4)), channels, draw(st.integers(1, 5)))
    extreme = draw(st.booleans())
    rounding = draw(st.sampled_from(fp.ROUNDINGS))
    if rounding == "int64":
        acc = rng.integers(-2**46 if extreme else -2**36, 2**46 if extreme else 2**36,
                           size=shape).astype(np.int64)
    else:
        acc = (rng.integers(-2**31, 2**31, size=shape) if extreme
               else rng.integers(-2**20, 2**20, size=shape)).astype(np.int32)
    scales = np.exp(rng.uniform(-14, 1, size=channels))
    q, shift = fp.quantize_multipliers(scales)
    bias = rng.integers(-2**31 if extreme else -2**16, 2**31 if extreme else 2**16,
                        size=channels).astype(np.int32)
    output = draw(st.sampled_from(list(fp.OUTPUT_RANGES)))
    lo, hi = fp.OUTPUT_RANGES[output]
    zp = int(rng.integers(lo, hi + 1))
    return acc, q, shift, bias, output, zp, rounding


@SETTINGS
@given(requant_cases())
def test_requantize_matches_the_exact_formula(case):
    acc, q, shift, bias, output, zp, rounding = case
    got = fp.requantize(acc, q, shift, zero_point=zp, bias=bias, output=output, axis=1,
                        rounding=rounding)
    lo, hi = fp.OUTPUT_RANGES[output]
    assert got.dtype == np.dtype(output) and got.shape == acc.shape
    for idx in np.ndindex(*acc.shape):
        c = idx[1]
        x = wrap32(int(acc[idx]) + int(bias[c]))
        m_q = fp.multiplier_value(int(q[c]), int(shift[c]))
        if rounding == "int64":
            x = int(acc[idx]) + int(bias[c])                       # no wrap: int64
            y = wrap32(floor_half_up(Fraction(x * reduced_multiplier(int(q[c])),
                                              2**(15 - int(shift[c])))))
        elif rounding == "single":
            y = floor_half_up(x * m_q)
        else:
            left, right = max(int(shift[c]), 0), max(-int(shift[c]), 0)
            high = floor_half_up(Fraction(wrap32(x << left) * int(q[c]), 2**31))
            y = half_away(Fraction(high, 2**right))
        assert int(got[idx]) == min(max(y + zp, lo), hi), (idx, x, q[c], shift[c])


@SETTINGS
@given(requant_cases())
def test_numba_kernel_equals_numpy_twin(case):
    acc, q, shift, bias, output, zp, rounding = case
    lo, hi = fp.OUTPUT_RANGES[output]
    rows = np.ascontiguousarray(np.moveaxis(acc, 1, -1)).reshape(-1, acc.shape[1])
    args = (rows, bias.astype(np.int64), q.astype(np.int64), shift.astype(np.int64), zp, lo, hi,
            fp.ROUNDINGS.index(rounding))
    a, b = np.empty(rows.shape, np.int64), np.empty(rows.shape, np.int64)
    fp._nb_requantize(*args, a)
    fp._np_requantize(*args, b)
    np.testing.assert_array_equal(a, b)


@SETTINGS
@given(requant_cases())
def test_per_channel_is_per_tensor_per_slice(case):
    acc, q, shift, bias, output, zp, rounding = case
    whole = fp.requantize(acc, q, shift, zero_point=zp, bias=bias, output=output, axis=1,
                          rounding=rounding)
    for c in range(acc.shape[1]):
        single = fp.requantize(np.ascontiguousarray(acc[:, c]), q[c], shift[c], zero_point=zp,
                               bias=bias[c], output=output, rounding=rounding)
        np.testing.assert_array_equal(whole[:, c], single)


def test_requantize_saturates_at_the_output_range():
    acc = np.array([-2**31, -10**6, 0, 10**6, 2**31 - 1], np.int32)
    q, shift = fp.quantize_multiplier(0.01)
    assert fp.requantize(acc, q, shift, output="int8").tolist() == [-128, -128, 0, 127, 127]
    assert fp.requantize(acc, q, shift, output="uint8", zero_point=10).tolist() == \
        [0, 0, 10, 255, 255]
    assert fp.requantize(acc, q, shift, output="int16").tolist() == \
        [-32768, -10000, 0, 10000, 32767]


@pytest.mark.parametrize("kwargs, message", [
    (dict(output="int4"), "output type 'int4'"),
    (dict(rounding="nearest"), "rounding 'nearest'"),
    (dict(rounding="int64", acc=np.array([2**47, 0], np.int64)), "below 2^47"),
    (dict(acc=np.zeros(2, np.int64)), "expected int32"),
    (dict(zero_point=300), "zero point 300 is outside the int8 range"),
    (dict(axis=0, bias=np.zeros(3, np.int32)), "bias has 3 values, expected 1 or 2"),
])
def test_requantize_rejects_bad_arguments(kwargs, message):
    acc = kwargs.pop("acc", np.zeros(2, np.int32))
    with pytest.raises(EncodingError) as info:
        fp.requantize(acc, 2**30, 0, **kwargs)
    assert message in str(info.value)


@SETTINGS
@given(st.integers(-2**24, 2**24), st.floats(min_value=2.0**-20, max_value=0.99,
                                             allow_nan=False), st.sampled_from(fp.ROUNDINGS))
def test_fixed_point_is_close_to_the_float_requantization(acc, m, rounding):
    """MLAS's float requantization rne(f32(acc) ⊗ M) and the fixed-point one of the same float32
    M: at most one step apart while |acc·M| < 2^22 (the float32 product then errs by <= 1/4;
    each fixed-point result is within 1/2 + 1/2 of x·M_q, and M_q is within 2^-31 of M). The
    int64 (16x8) path's 16-bit multiplier adds |acc|·|M_r - M| to that bound."""
    m32 = np.float32(m)
    exact_m = Fraction(float(m32))
    if abs(acc * exact_m) >= 2**22:
        return
    y_float = int(np.rint(np.float32(acc) * m32))
    q, shift = fp.quantize_multiplier(float(m32))
    if rounding == "int64":
        y_fixed = fp.mbqm64(acc, q, shift)
        m_r = Fraction(reduced_multiplier(q)) * Fraction(2) ** (shift - 15)
        assert abs(y_float - y_fixed) < Fraction(7, 4) + abs(acc) * abs(m_r - exact_m) + \
            Fraction(1, 2**8)
    else:
        f = fp.mbqm if rounding == "double" else fp.mbqm_single
        assert abs(y_float - f(acc, q, shift)) <= 1
