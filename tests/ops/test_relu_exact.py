"""Relu bit for bit against ONNX Runtime, signed zeros and NaN payloads included, and the Numba
kernel against its NumPy twin (``np.where``)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qsim.ops.elementwise import _nb_relu
from tests.ort_util import ort_and_qsim

SPECIAL = np.array([-0.0, 0.0, -1.5, 2.5, np.inf, -np.inf, np.nan, -np.nan,
                    np.float32(1e-45), np.float32(-1e-45)], dtype=np.float32)
PAYLOAD_NANS = np.array([0x7FC00001, 0xFFC00002, 0x7F800003], dtype=np.uint32).view(np.float32)


@pytest.mark.parametrize("x", [SPECIAL, PAYLOAD_NANS, SPECIAL.reshape(2, 5),
                               np.full((3, 70), -0.0, np.float32)])
def test_relu_bits_equal_ort(x):
    (expected,), (got,) = ort_and_qsim("Relu", [x], opset=17)
    assert np.array_equal(np.asarray(got).view(np.uint32), expected.view(np.uint32))


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=4, max_side=9),
                  elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))
def test_relu_bits_equal_ort_hypothesis(x):
    (expected,), (got,) = ort_and_qsim("Relu", [x], opset=17)
    assert np.array_equal(np.asarray(got).view(np.uint32), expected.view(np.uint32))


@settings(max_examples=40, deadline=None)
@given(hnp.arrays(np.float32, st.integers(1, 300),
                  elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))
def test_relu_kernel_matches_numpy_twin(x):
    y = np.empty_like(x)
    _nb_relu(x, y)
    twin = np.where(x < 0, np.float32(0), x)
    assert np.array_equal(y.view(np.uint32), twin.view(np.uint32))
