"""The fast exact integer products (float32 BLAS over K-slices) equal int64 arithmetic.

Extreme operands: values and zero points at the ends of their ranges, so every product has the
largest magnitude the dtypes allow (255 · 255), and K large enough to need many slices; the
expected values are computed with plain int64 NumPy arithmetic (no BLAS, no floats)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qsim.ops import quantized
from qsim.ops.quantized import conv_integer, matmul_integer

_ENDS = {np.uint8: (0, 255), np.int8: (-128, 127)}


@st.composite
def _extreme(draw, shape, dtype):
    """An array of ``dtype`` filled with one end of its range, a few entries changed to other
    values near the ends (so sums are as large as they get, with some cancellation)."""
    lo, hi = _ENDS[dtype]
    v = np.full(shape, draw(st.sampled_from([lo, hi])), dtype=dtype).reshape(-1)
    changes = draw(st.lists(st.tuples(st.integers(0, v.size - 1),
                                      st.sampled_from([lo, hi, lo + 1, hi - 1, 0])), max_size=8))
    for i, value in changes:
        v[i] = value
    return v.reshape(shape)


def _wrap32(v: np.ndarray) -> np.ndarray:
    return v.astype(np.int64).astype(np.int32)


@settings(max_examples=25, deadline=None)
@given(st.data(), st.sampled_from([np.uint8, np.int8]), st.sampled_from([np.uint8, np.int8]),
       st.integers(1, 3), st.integers(1, 2100), st.integers(1, 3))
def test_matmul_integer_equals_int64(data, ta, tb, m, k, n):
    a = data.draw(_extreme((m, k), ta))
    b = data.draw(_extreme((k, n), tb))
    za = ta(data.draw(st.sampled_from(_ENDS[ta])))
    zb = tb(data.draw(st.sampled_from(_ENDS[tb])))
    want = _wrap32((a.astype(np.int64) - int(za)) @ (b.astype(np.int64) - int(zb)))
    got = matmul_integer(a, b, za, zb)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want)


def test_matmul_integer_all_extremes_large_k():
    """Every product is +65025 (uint8 255 - 0 against int8 -128 - 127 = -255, twice negated):
    K = 40000 terms sum to 2.6e9, beyond int32, so the result wraps as int32 accumulation does."""
    k = 40000
    a = np.zeros((2, k), np.uint8)
    b = np.full((k, 2), -128, np.int8)
    got = matmul_integer(a, b, np.uint8(255), np.int8(127))
    want = _wrap32(np.full((2, 2), k * 255 * 255, np.int64))
    np.testing.assert_array_equal(got, want)


def _conv_int64(x, w, zx, zw, group, strides, pad):
    """Direct convolution in int64 (loops over the kernel window); ``strides`` = (H, W)."""
    x = np.pad(x.astype(np.int64) - int(zx), [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    w = w.astype(np.int64) - int(zw)
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    sh, sw = strides
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    y = np.zeros((n, m, oh, ow), np.int64)
    mg = m // group
    for j in range(m):
        g = j // mg
        for i in range(kh):
            for t in range(kw):
                patch = x[:, g * cg:(g + 1) * cg, i:i + sh * oh:sh, t:t + sw * ow:sw]
                y[:, j] += np.einsum("nchw,c->nhw", patch, w[j, :, i, t])
    return _wrap32(y)


@settings(max_examples=20, deadline=None)
@given(st.data(), st.sampled_from([np.uint8, np.int8]), st.sampled_from([np.uint8, np.int8]),
       st.sampled_from([(1, 1), (2, 3), (3, 1), (17, 1)]), st.integers(1, 120),
       st.integers(1, 2), st.integers(1, 2), st.integers(0, 1))
def test_conv_integer_equals_int64(data, tx, tw, kernel_group, channels, n, stride, pad):
    """Kernels up to 17 x 17 = 289 > 258 terms (a slice within one channel's window) and up to
    120 channels x 9 = 1080 terms (several channel slices)."""
    kernel, group = kernel_group
    kernel = min(kernel, 3) if channels > 8 else kernel
    channels = channels * group
    size = kernel + data.draw(st.integers(0, 3))
    x = data.draw(_extreme((n, channels, size, size), tx))
    w = data.draw(_extreme((2 * group, channels // group, kernel, kernel), tw))
    zx = tx(data.draw(st.sampled_from(_ENDS[tx])))
    zw = tw(data.draw(st.sampled_from(_ENDS[tw])))
    got = conv_integer(x, w, zx, zw, group=group, strides=[stride, stride], pads=[pad] * 4)
    np.testing.assert_array_equal(got, _conv_int64(x, w, zx, zw, group, (stride, stride), pad))


def test_conv_integer_all_extremes():
    """Every product +65025 over 64 channels x 3 x 3 (37.5 million per output, past 2^24) and a
    17 x 17 window (289 terms, more than one float32 slice holds) in one channel."""
    x = np.zeros((1, 64, 4, 4), np.uint8)
    w = np.full((2, 64, 3, 3), -128, np.int8)
    got = conv_integer(x, w, np.uint8(255), np.int8(127))
    np.testing.assert_array_equal(got, np.full((1, 2, 2, 2), 576 * 65025, np.int32))
    x = np.zeros((1, 1, 17, 17), np.uint8)
    w = np.full((1, 1, 17, 17), -128, np.int8)
    got = conv_integer(x, w, np.uint8(255), np.int8(127))
    np.testing.assert_array_equal(got, np.full((1, 1, 1, 1), 289 * 65025, np.int32))


def test_conv_integer_in_image_blocks(monkeypatch):
    """With im2col blocks of one image (a tiny block budget), several channel slices per block
    and two groups, the result is still the int64 convolution."""
    import qsim.ops.quantized as quantized
    monkeypatch.setattr(quantized, "_COLS_BLOCK", 50)
    rng = np.random.default_rng(5)
    x = rng.choice(np.array([0, 1, 254, 255], np.uint8), (3, 2 * 60, 5, 5))
    w = rng.choice(np.array([-128, -127, 126, 127], np.int8), (4, 60, 3, 3))
    got = conv_integer(x, w, np.uint8(255), np.int8(127), group=2, strides=[2, 1], pads=[1] * 4)
    np.testing.assert_array_equal(got, _conv_int64(x, w, 255, 127, 2, (2, 1), 1))



@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(20, 400), st.sampled_from([1, 3]),
       st.booleans())
def test_conv_integer_uneven_weights_equals_int64(seed, channels, kernel, negative):
    """Weights of one sign with magnitudes that vary by channel against an input at the end of its
    range: no cancellation in any partial sum."""
    rng = np.random.default_rng(seed)
    scale = rng.choice([1, 8, 64, 127], channels)[None, :, None, None]
    w = (rng.integers(0, 128, (2, channels, kernel, kernel)) * scale // 127).astype(np.int8)
    w = -w if negative else w
    x = np.full((1, channels, kernel + 1, kernel + 1), 255, np.uint8)
    got = conv_integer(x, w, np.uint8(0), np.int8(0))
    np.testing.assert_array_equal(got, _conv_int64(x, w, 0, 0, 1, (1, 1), 0))


# ---------------------------------------------------------------------------------------------
# the convolution's helper kernels: Numba vs NumPy twin, and their defining properties
# ---------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 6), st.integers(1, 700),
       st.sampled_from([255, 1000, 16383, 65793]), st.floats(0.0, 1.0))
def test_k_slices_numba_equals_twin_and_are_maximal(seed, m, k, limit, density):
    """Both kernels cut the same K-slices; within each, every row's absolute sum is <= limit,
    and one more term would push some row past it (the greedy cut, checked in int64)."""
    rng = np.random.default_rng(seed)
    w = (rng.integers(-255, 256, (m, k)) * (rng.random((m, k)) < density)).astype(np.float32)
    got = quantized._nb_slice_ends(w, float(limit))
    np.testing.assert_array_equal(got, quantized._np_slice_ends(w, float(limit)))
    a = np.abs(w.astype(np.int64))
    assert got[-1] == k and np.all(np.diff(np.concatenate([[0], got])) > 0)
    start = 0
    for end in got.tolist():
        assert a[:, start:end].sum(axis=1).max() <= limit
        if end < k:
            assert a[:, start:end + 1].sum(axis=1).max() > limit
        start = end


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([np.uint8, np.int8]), st.booleans(),
       st.sampled_from([1e-9, 1e-4, 0.02, 1.0, 3e4]))
def test_requantize_block_numba_equals_twin_and_requantize(seed, dtype, exact_float, scale):
    """The fused requantize-and-transpose store equals its NumPy twin and the plain steps (bias
    added in int32 with wraparound, then :func:`_requantize`, which the ONNX Runtime tests
    check), for int32 sums near the int32 limits and for float32 sums (one K-slice)."""
    rng = np.random.default_rng(seed)
    m, n, p = 5, 3, 7
    if exact_float:
        acc = rng.integers(-2**24, 2**24 + 1, (m, n, p)).astype(np.float32)
    else:
        acc = rng.integers(-2**31, 2**31, (m, n, p), dtype=np.int64).astype(np.int32)
    bias = rng.integers(-2**31, 2**31, m, dtype=np.int64).astype(np.int32)
    multiplier = (scale * rng.uniform(0.5, 2.0, m)).astype(np.float32)
    zp = np.array(rng.integers(*quantized._RANGES[np.dtype(dtype).name], endpoint=True), dtype)
    lo, hi = quantized._RANGES[np.dtype(dtype).name]
    args = (bias, multiplier, int(zp), np.float32(lo - int(zp)), np.float32(hi - int(zp)))
    got = np.empty((n, m, p), dtype)
    quantized._nb_requantize_block(acc, *args, got)
    twin = np.empty((n, m, p), dtype)
    quantized._np_requantize_block(acc, *args, twin)
    np.testing.assert_array_equal(got, twin)
    summed = acc.astype(np.int32) + bias[:, None, None]
    want = quantized._requantize(summed, multiplier[:, None, None], zp)
    np.testing.assert_array_equal(got, want.transpose(1, 0, 2))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([np.uint8, np.int8]),
       st.sampled_from([(1, 1), (3, 3), (1, 3), (7, 7), (2, 5)]), st.integers(1, 3),
       st.integers(1, 3), st.integers(1, 2), st.integers(0, 3), st.integers(1, 3))
def test_im2col_numba_equals_twin(seed, dtype, kernel, sh, sw, dilation, pad, group):
    """The compiled 2-D im2col (centering and padding fused) equals the NumPy strided-view one
    for every geometry: strides, dilations, uneven pads, groups, an image block not at 0."""
    rng = np.random.default_rng(seed)
    lo, hi = _ENDS[dtype]
    n, cg = 3, 2
    h, w = int(rng.integers(1, 9)) + kernel[0] * dilation, int(rng.integers(1, 9)) + kernel[1]
    x = rng.integers(lo, hi + 1, (n, cg * group, h, w)).astype(dtype)
    zx = int(rng.integers(lo, hi + 1))
    begins, ends = (pad, int(rng.integers(0, 3))), (int(rng.integers(0, 3)), pad)
    strides, dilations = (sh, sw), (dilation, 1)
    out = tuple((size + b + e - d * (k - 1) - 1) // s + 1 for size, b, e, d, k, s in
                zip((h, w), begins, ends, dilations, kernel, strides))
    n0, n1, c0 = 1, 3, cg * (group - 1)
    want = quantized._np_im2col(x, zx, n0, n1, c0, cg, kernel, strides, dilations, begins,
                                ends, out)
    got = np.full(want.shape, np.nan, np.float32)
    quantized._nb_im2col(x, zx, n0, n1, c0, cg, *kernel, *strides, *dilations, *begins, *out,
                         got)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("busy", [False, True])
def test_conv_integer_equals_int64_with_either_gemm(monkeypatch, busy):
    """The exact products are the same whichever GEMM computes them (OpenBLAS on idle cores,
    qsim's own on a busy machine): every partial sum is an integer below 2^24."""
    monkeypatch.setattr(quantized, "_busy", lambda load, cores: busy)
    rng = np.random.default_rng(11)
    x = rng.choice(np.array([0, 1, 254, 255], np.uint8), (2, 300, 6, 6))
    w = rng.choice(np.array([-128, -127, 126, 127], np.int8), (5, 300, 3, 3))
    got = conv_integer(x, w, np.uint8(255), np.int8(127), pads=[1] * 4)
    np.testing.assert_array_equal(got, _conv_int64(x, w, 255, 127, 1, (1, 1), 1))


@pytest.mark.parametrize("h, w, kernel, pad, dh", [(8, 8, (3, 3), 1, 1), (1, 5, (3, 3), 1, 1),
                                                   (4, 1, (3, 3), 1, 1), (6, 7, (7, 7), 3, 1),
                                                   (9, 4, (3, 3), 1, 3), (2, 2, (5, 5), 2, 1)])
def test_im2col_same_width_rows_equal_twin(h, w, kernel, pad, dh):
    """Stride 1 with "same" horizontal padding (output width = input width) takes the
    contiguous multi-row copy, including kernels taller than the image and rows that fall
    entirely into the padding."""
    rng = np.random.default_rng(h * 100 + w)
    x = rng.integers(0, 256, (3, 4, h, w)).astype(np.uint8)
    begins, ends = (pad, pad), (pad, pad)
    out = (h + 2 * pad - dh * (kernel[0] - 1), w)
    want = quantized._np_im2col(x, 7, 1, 3, 2, 2, kernel, (1, 1), (dh, 1), begins, ends, out)
    got = np.full(want.shape, np.nan, np.float32)
    quantized._nb_im2col(x, 7, 1, 3, 2, 2, *kernel, 1, 1, dh, 1, *begins, *out, got)
    np.testing.assert_array_equal(got, want)
