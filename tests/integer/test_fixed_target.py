"""``target="fixed_point"``: the fixed-point product kernels against exact integer / rational
arithmetic, and the target's graph.

Expected values are computed here with Python integers and ``fractions.Fraction`` from the
formulas of gemmlowp / TFLite (quantize_multiplier, SaturatingRoundingDoublingHighMul,
RoundingDivideByPOT; the 16x8 path's reduced multiplier and single rounding), never with the
code under test.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsim.errors import EncodingError
from qsim.integer.fixed_target import fixed_point_conv, fixed_point_gemm, fixed_point_matmul

from .cases import case

SETTINGS = settings(max_examples=150, deadline=None)
RANGES = {"uint8": (0, 255), "int8": (-128, 127), "uint16": (0, 65535), "int16": (-32768, 32767)}


def _q31(m: Fraction) -> tuple[int, int]:
    """TFLite QuantizeMultiplier with exact fractions: m = f·2^e, f in [1/2, 1),
    q = round_half_away(f·2^31) (2^31 → 2^30, e + 1)."""
    if m == 0:
        return 0, 0
    e = math.floor(math.log2(m)) + 1
    while m / Fraction(2) ** e >= 1:
        e += 1
    while m / Fraction(2) ** e < Fraction(1, 2):
        e -= 1
    q = math.floor(m / Fraction(2) ** e * 2**31 + Fraction(1, 2))
    if q == 2**31:
        q, e = 2**30, e + 1
    return (0, 0) if e < -31 else (q, e)


def _wrap32(v: int) -> int:
    return (v + 2**31) % 2**32 - 2**31


def _mbqm(x: int, q: int, shift: int) -> int:
    """Two roundings: SRDHM (floor((a·b + 2^30) / 2^31), saturating), then ties-away divide."""
    a = _wrap32(x * 2 ** max(shift, 0))
    if a == q == -2**31:
        high = 2**31 - 1
    else:
        high = math.floor(Fraction(a * q + 2**30, 2**31))
    e = max(-shift, 0)
    v = Fraction(high, 2**e)
    r = math.floor(abs(v) + Fraction(1, 2))
    return r if v >= 0 else -r


def _mbqm64(x: int, q: int, shift: int) -> int:
    """TFLite 16x8: r = round(q / 2^16) capped at 2^15 - 1, then floor((x·r + 2^(14-shift)) /
    2^(15-shift))."""
    r = (q + 2**15) >> 16 if q < 0x7FFF0000 else 0x7FFF
    return math.floor(Fraction(x * r + 2 ** (14 - shift), 2 ** (15 - shift)))


def _expected(acc: int, bias: int, s_x, s_w, s_y, zp_y: int, out: str, wide: bool) -> int:
    m = Fraction(float(np.float64(np.float32(s_x)) * np.float64(np.float32(s_w))
                       / np.float64(np.float32(s_y))))
    q, shift = _q31(m)
    v = _mbqm64(acc + bias, q, shift) if wide else _mbqm(_wrap32(acc + bias), q, shift)
    lo, hi = RANGES[out]
    return min(max(v + zp_y, lo), hi)


scales = st.floats(min_value=2.0**-10, max_value=1.0, allow_nan=False, width=32)


@st.composite
def matmul_case(draw):
    act = draw(st.sampled_from(["uint8", "int8", "uint16", "int16"]))
    wt = "int8" if act == "int8" else draw(st.sampled_from(["int8", "uint8"]))
    m, k, n = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    lo, hi = RANGES[act]
    wlo, whi = RANGES[wt]
    a = np.array(draw(st.lists(st.integers(lo, hi), min_size=m * k, max_size=m * k)),
                 act).reshape(m, k)
    b = np.array(draw(st.lists(st.integers(wlo, whi), min_size=k * n, max_size=k * n)),
                 wt).reshape(k, n)
    zp_a = np.array(draw(st.integers(lo, hi)), act)
    zp_b = np.array(draw(st.lists(st.integers(wlo, whi), min_size=n, max_size=n)), wt)
    zp_y = np.array(draw(st.integers(lo, hi)), act)
    s_a = np.float32(draw(scales))
    s_b = np.array(draw(st.lists(scales, min_size=n, max_size=n)), np.float32)
    # M = s_a·s_b/s_y < 2^7: TFLite's 16x8 requantization takes shifts below 8 only (M = 2^7
    # is refused: test_wide_multiplier_of_128_is_refused)
    s_y = np.float32(draw(st.floats(min_value=2.0**-7, max_value=4.0, exclude_min=True,
                                    width=32)))
    bias = np.array(draw(st.lists(st.integers(-2**20, 2**20), min_size=n, max_size=n)),
                    np.int32)
    return a, s_a, zp_a, b, s_b, zp_b, s_y, zp_y, bias


def _exact_products(a, zp_a, b, zp_b) -> list[list[int]]:
    m, k = a.shape
    n = b.shape[1]
    return [[sum((int(a[i, t]) - int(zp_a)) * (int(b[t, j]) - int(zp_b[j])) for t in range(k))
             for j in range(n)] for i in range(m)]


@SETTINGS
@given(matmul_case())
def test_fixed_point_matmul_and_gemm_equal_exact_arithmetic(c):
    a, s_a, zp_a, b, s_b, zp_b, s_y, zp_y, bias = c
    wide = a.dtype.itemsize == 2
    acc = _exact_products(a, zp_a, b, zp_b)
    got = fixed_point_matmul(a, s_a, zp_a, b, s_b, zp_b, s_y, zp_y)
    want = [[_expected(acc[i][j], 0, s_a, s_b[j], s_y, int(zp_y), a.dtype.name, wide)
             for j in range(b.shape[1])] for i in range(a.shape[0])]
    assert got.dtype == a.dtype and got.tolist() == want
    got = fixed_point_matmul(a, s_a, zp_a, b, s_b, zp_b, s_y, zp_y, bias)
    want = [[_expected(acc[i][j], int(bias[j]), s_a, s_b[j], s_y, int(zp_y), a.dtype.name, wide)
             for j in range(b.shape[1])] for i in range(a.shape[0])]
    assert got.tolist() == want
    got = fixed_point_gemm(a, s_a, zp_a, np.ascontiguousarray(b.T), s_b, zp_b, bias, s_y, zp_y,
                           transB=1)
    want = [[_expected(acc[i][j], int(bias[j]), s_a, s_b[j], s_y, int(zp_y), a.dtype.name, wide)
             for j in range(b.shape[1])] for i in range(a.shape[0])]
    assert got.tolist() == want


@SETTINGS
@given(matmul_case(), st.integers(1, 2), st.integers(0, 1))
def test_fixed_point_conv_equals_exact_arithmetic(c, kernel, pad):
    """A 1-D convolution (N=1, C=k, width 3): windows written out by hand, padding = x_zp."""
    a, s_a, zp_a, b, s_b, zp_b, s_y, zp_y, bias = c
    cin, m = b.shape
    width = 3
    x = np.resize(a, (1, cin, width)).astype(a.dtype)
    w = np.ascontiguousarray(np.repeat(b.T[:, :, None], kernel, axis=2))     # (M, C, kernel)
    got = fixed_point_conv(x, s_a, zp_a, w, s_b, zp_b, s_y, zp_y, bias, pads=[pad, pad])
    out_w = width + 2 * pad - kernel + 1
    wide = a.dtype.itemsize == 2
    for j in range(m):
        for o in range(out_w):
            acc = 0
            for ch in range(cin):
                for t in range(kernel):
                    pos = o + t - pad
                    xv = int(x[0, ch, pos]) if 0 <= pos < width else int(zp_a)
                    acc += (xv - int(zp_a)) * (int(w[j, ch, t]) - int(zp_b[j]))
            assert got[0, j, o] == _expected(acc, int(bias[j]), s_a, s_b[j], s_y, int(zp_y),
                                             a.dtype.name, wide), (j, o)


def test_fixed_point_target_makes_linear_layers_integer():
    """The transformer's MatMul + Add(int32 bias) linear layers become FixedPointMatMul at 8 and
    16 bits (ONNX Runtime keeps them as MatMulIntegerToFloat + float Add / MatMulNBits)."""
    for case_id in ("models/transformer_s31_default_tf_w8a8_a8",
                    "models/transformer_s31_default_tf_w8a8_a16"):
        sim, feeds = case(case_id)
        ops = [n.op_type for n in sim.to_integer("fixed_point").graph.nodes]
        assert ops.count("FixedPointMatMul") >= 6 and "MatMulIntegerToFloat" not in ops
        assert "MatMulNBits" not in ops


def test_fixed_point_target_graph_and_agreement_with_onnxruntime():
    """The digits CNN: every QLinearConv becomes FixedPointConv; fixed-point and MLAS
    requantization round the same real products, so the logits stay within a few LSB."""
    sim, feeds = case("digits_a8")
    fixed = sim.to_integer("fixed_point")
    ops = [n.op_type for n in fixed.graph.nodes]
    assert ops.count("FixedPointConv") == 3 and "QLinearConv" not in ops
    a = fixed.run(feeds, outputs=["logits_q"], integers=True)["logits_q"]
    b = sim.to_integer("onnxruntime").run(feeds, outputs=["logits_q"],
                                          integers=True)["logits_q"]
    diff = np.abs(a.values.astype(int) - b.values.astype(int))
    assert 0 < diff.max() <= 4 and np.mean(diff == 0) > 0.5


def test_wide_multiplier_of_128_is_refused():
    """16-bit activations: a real multiplier of 2^7 needs a left shift of 8, outside TFLite's
    16x8 range [-31, 7]; qsim names the range instead of computing something else."""
    a = np.zeros((1, 2), np.int16)
    b = np.ones((2, 1), np.int8)
    with pytest.raises(EncodingError, match=r"shifts in \[-31, 7\]"):
        fixed_point_matmul(a, np.float32(1.0), np.array(0, np.int16), b,
                           np.array([1.0], np.float32), np.array([0], np.int8),
                           np.float32(2.0**-7), np.array(0, np.int16))
