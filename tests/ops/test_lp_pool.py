"""LpPool and GlobalLpPool against ONNX Runtime on Hypothesis-drawn inputs: bit-identical (the
C library's pow per element, float32 sums in the loop's order, powf for the root), 1-3 spatial
axes, p 1-3, strides, pads, dilations, ceil_mode."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsim.errors import OpError
from qsim.ops import OPS
from tests.ort_util import assert_ort_bits

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def pools(draw):
    spatial = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    kernel = [draw(st.integers(1, s)) for s in spatial]
    attrs = {"kernel_shape": kernel, "p": draw(st.integers(1, 3))}
    if draw(st.booleans()):
        attrs["strides"] = [draw(st.integers(1, 3)) for _ in kernel]
    if draw(st.booleans()):
        attrs["pads"] = [draw(st.integers(0, k - 1)) for k in kernel] * 2
    opset = draw(st.sampled_from([11, 18]))
    if opset == 18 and draw(st.booleans()):
        attrs["ceil_mode"] = 1
    if opset == 18 and draw(st.booleans()):
        attrs["dilations"] = [draw(st.integers(1, 2)) for _ in kernel]
        attrs["kernel_shape"] = [min(k, (s + 1) // 2) for k, s in zip(kernel, spatial)]
        attrs.pop("pads", None)
    seed = draw(st.integers(0, 2**32 - 1))
    x = np.random.default_rng(seed).standard_normal([2, 3] + spatial).astype(np.float32) * 3
    if draw(st.booleans()):
        x[x > 2.5] = -0.0
    return x, attrs, opset


@SETTINGS
@given(case=pools())
def test_lp_pool(case):
    x, attrs, opset = case
    assert_ort_bits("LpPool", [x], attrs, opset=opset)


@SETTINGS
@given(case=pools())
def test_global_lp_pool(case):
    x, attrs, opset = case
    assert_ort_bits("GlobalLpPool", [x], {"p": attrs["p"]}, opset=opset)


def test_lp_pool_bad_attributes_are_named():
    x = np.ones((1, 1, 4, 4), np.float32)
    with pytest.raises(OpError, match="p=0 must be an integer >= 1"):
        OPS["GlobalLpPool"](x, p=0)
    with pytest.raises(OpError, match="dtype float64"):
        OPS["LpPool"](x.astype(np.float64), kernel_shape=[2, 2])
