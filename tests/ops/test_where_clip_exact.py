"""Where and Clip give ONNX Runtime's bits for ±0, NaN and ±inf: Where merges two zero-filled
selections (a selected ±0 can come out +0, depending on ORT's broadcast functor), Clip is Eigen's
``cwiseMax(min).cwiseMin(max)`` with the type's finite limits for an absent bound.

Expected values come from ONNX Runtime; elements are compared as raw bits (NaN sign included).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ops.test_max_min_exact import VALUES, _assert_same_bits, broadcast_inputs
from tests.ort_util import ort_run_op, qsim_run_op

SETTINGS = settings(max_examples=60, deadline=None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@SETTINGS
@given(shapes=broadcast_inputs(max_inputs=3), seed=st.integers(0, 2**32 - 1))
def test_where_as_onnx_runtime(dtype, shapes, seed):
    rng = np.random.default_rng(seed)
    shapes = (shapes * 3)[:3]                   # condition, X, Y
    inputs = [rng.random(shapes[0]) < 0.5] + [rng.choice(VALUES, s).astype(dtype)
                                               for s in shapes[1:]]
    expected = ort_run_op("Where", inputs, opset=17)[0]
    _assert_same_bits(qsim_run_op("Where", inputs, opset=17)[0], expected, f"Where {shapes}")


@pytest.mark.parametrize("opset, dtype", [(11, np.float32), (12, np.float64), (13, np.float32),
                                          (13, np.float64)])   # (ORT has no float64 Clip-11)
@SETTINGS
@given(shape=st.lists(st.integers(1, 9), max_size=3).map(tuple), seed=st.integers(0, 2**32 - 1),
       bounds=st.tuples(st.sampled_from([None, *VALUES.tolist()]),
                        st.sampled_from([None, *VALUES.tolist()])))
def test_clip_as_onnx_runtime(opset, dtype, shape, seed, bounds):
    x = np.random.default_rng(seed).choice(VALUES, shape).astype(dtype)
    inputs = [x] + [None if b is None else np.asarray(b, dtype) for b in bounds]
    expected = ort_run_op("Clip", inputs, opset=opset)[0]
    _assert_same_bits(qsim_run_op("Clip", inputs, opset=opset)[0], expected,
                      f"Clip-{opset} {bounds}")


@given(seed=st.integers(0, 2**32 - 1),
       bounds=st.sampled_from([(0.0, 6.0), (-0.0, 6.0), (-1.0, 0.0), (0.0, 0.0), (-0.0, 1.0)]))
@settings(max_examples=20, deadline=None)
def test_clip_attributes_as_onnx_runtime(seed, bounds):     # opsets 6-10 (ORT: min <= max)
    x = np.random.default_rng(seed).choice(VALUES, (4, 7)).astype(np.float32)
    attrs = {"min": bounds[0], "max": bounds[1]}
    expected = ort_run_op("Clip", [x], attrs, opset=6)[0]
    _assert_same_bits(qsim_run_op("Clip", [x], attrs, opset=6)[0], expected, f"Clip-6 {attrs}")
