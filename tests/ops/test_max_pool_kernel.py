"""MaxPool as MLAS computes it: signed zeros and NaN decide the bits, because MLAS's three
float32 kernels compare differently (SSE ``maxps`` keeps the second operand on NaN and ties,
``std::max`` the first) and reduce in different orders (global: four lanes; vector: columns
first, then across the window from a lowest()-padded row; generic: row-major from lowest()).

* against ONNX Runtime, on inputs made only of ±0, ±1, 2 and NaN, over geometries that reach
  each kernel (global, vector with strides 1-2, generic with stride 3 or a kernel > 32), 1-D,
  2-D and 3-D, padding and ceil_mode, and GlobalMaxPool;
* the Numba vector kernel against its NumPy twin, bit for bit.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qsim.kernels import mlas_math as math_exact
from qsim.ops import nn
from tests.ort_util import ort_run_op

VALUES = np.array([-0.0, 0.0, 1.0, -1.0, 2.0, np.nan], np.float32)


def _bits_equal(a, b) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def _x(seed, shape):
    return np.random.default_rng(seed).choice(VALUES, size=shape).astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(2, 9), w=st.integers(2, 11), kh=st.integers(1, 3), kw=st.integers(1, 3),
       sh=st.integers(1, 3), sw=st.integers(1, 3), pad=st.integers(0, 1), ceil=st.integers(0, 1),
       seed=st.integers(0, 2 ** 16))
def test_max_pool_2d_signed_zeros_and_nan_as_onnx_runtime(h, w, kh, kw, sh, sw, pad, ceil, seed):
    kh, kw = min(kh, h), min(kw, w)
    pads = [min(pad, kh - 1), min(pad, kw - 1)] * 2
    x = _x(seed, (1, 2, h, w))
    attrs = dict(kernel_shape=[kh, kw], strides=[sh, sw], pads=pads, ceil_mode=ceil)
    (want,) = ort_run_op("MaxPool", [x], attrs)
    got = nn.max_pool(x, **attrs)
    assert _bits_equal(got, want)


@pytest.mark.parametrize("shape, attrs", [
    ((2, 3, 5, 7), dict(kernel_shape=[5, 7])),                         # global kernel
    ((1, 2, 40, 40), dict(kernel_shape=[33, 2])),                      # generic: kernel > 32
    ((1, 2, 11), dict(kernel_shape=[3], strides=[2], pads=[1, 1])),   # 1-D: generic
    ((1, 2, 4, 5, 6), dict(kernel_shape=[2, 2, 2], strides=[1, 2, 2])),   # 3-D vector
    ((1, 2, 4, 5, 6), dict(kernel_shape=[2, 2, 2], strides=[2, 1, 3])),   # 3-D generic
])
@pytest.mark.parametrize("seed", range(4))
def test_other_kernels_as_onnx_runtime(shape, attrs, seed):
    x = _x(seed, shape)
    (want,) = ort_run_op("MaxPool", [x], attrs)
    assert _bits_equal(nn.max_pool(x, **attrs), want)


@pytest.mark.parametrize("seed", range(6))
def test_global_max_pool_as_onnx_runtime(seed):
    x = _x(seed, (2, 3, 3 + seed, 5))
    (want,) = ort_run_op("GlobalMaxPool", [x], {})
    assert _bits_equal(nn.global_max_pool(x), want)


GEOMETRIES = list(itertools.product([1, 2, 3], [2, 3], [1, 2], [1, 2], [0, 1], [0, 1]))


@pytest.mark.parametrize("kh,kw,sh,sw,pad,ceil", GEOMETRIES)
def test_numba_vector_kernel_equals_its_numpy_twin(kh, kw, sh, sw, pad, ceil):
    x = _x(kh * 100 + kw * 10 + sh, (2, 3, 8, 9))
    x[0, 0] = np.random.default_rng(1).standard_normal((8, 9)).astype(np.float32)
    geometry = nn._pool_geometry(x, [kh, kw], [sh, sw], [1, 1], "NOTSET",
                                 [min(pad, kh - 1), min(pad, kw - 1)] * 2, ceil)
    kernel, strides, _, begins, ends, extra, out = geometry
    ends = [e + m for e, m in zip(ends, extra)]
    twin = nn._mlas_vector_max(x, kernel, strides, begins, ends, out)
    need = (out[-1] - 1) * strides[-1] + kernel[-1]
    tail = max(ends[-1] + 3, need - begins[-1] - x.shape[-1])
    got = np.empty(x.shape[:2] + tuple(out), dtype=np.float32)
    math_exact.max_pool_2d(x, kernel[0], kernel[1], strides[0], strides[1], begins[0],
                           begins[1], tail, got)
    assert _bits_equal(got, twin)
