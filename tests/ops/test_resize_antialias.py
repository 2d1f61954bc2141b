"""Resize with antialias=1 (opset 18) gives ONNX Runtime's bits (Hypothesis, live ORT).

ORT filters the width first into a float32 buffer, then the height, with Pillow's triangle or
cubic filter widened by 1/scale when shrinking (upsample_antialias.h); qsim follows it step by
step. Expected values come from ORT; elements are compared bit for bit.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsim.errors import OpError
from qsim.ops import OPS

from ..ort_util import ort_and_qsim

SETTINGS = settings(max_examples=60, deadline=None)
MODES = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
         "half_pixel_symmetric"]


@st.composite
def antialias_cases(draw):
    rank4 = draw(st.booleans())
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w) if rank4 else (h, w)
    attrs = {"antialias": 1, "mode": draw(st.sampled_from(["linear", "cubic"])),
             "coordinate_transformation_mode": draw(st.sampled_from(MODES)),
             "exclude_outside": draw(st.sampled_from([0, 1]))}
    if attrs["mode"] == "cubic":
        attrs["cubic_coeff_a"] = draw(st.sampled_from([-0.75, -0.5]))
    lead = [1.0] * (len(shape) - 2)
    if draw(st.booleans()):
        factors = [draw(st.sampled_from([0.25, 0.3, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0])) for _ in "hw"]
        resize_by = ("scales", np.array(lead + factors, np.float32))
    else:
        sizes = [draw(st.integers(1, 2 * n)) for n in (h, w)]
        resize_by = ("sizes", np.array(list(shape[:-2]) + sizes, np.int64))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    return x, attrs, resize_by


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@SETTINGS
@given(case=antialias_cases())
def test_antialias_resize_matches_ort_bit_for_bit(case):
    x, attrs, (kind, value) = case
    inputs = [x, None, value, None] if kind == "scales" else [x, None, None, value]
    (e,), (g,) = ort_and_qsim("Resize", inputs, attrs, opset=18, initializers=(2, 3))
    assert g.tobytes() == e.tobytes(), f"{attrs} {kind}={value.tolist()}: " \
        f"{np.flatnonzero(g != e)[:5]}"


def test_antialias_downsample_example_matches_ort():
    """ONNX's backend case test_resize_downsample_scales_linear_antialias: 4x4 to 2x2 (scales
    0.6), linear; the expected values are the ones ONNX ships with the case (its reference)."""
    x = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
    (e,), (g,) = ort_and_qsim("Resize", [x, None, np.array([1, 1, 0.6, 0.6], np.float32)],
                              {"antialias": 1, "mode": "linear"}, opset=18, initializers=(2,))
    assert g.tobytes() == e.tobytes()
    np.testing.assert_allclose(e.ravel(), [2.875, 4.5, 9.375, 11.0], rtol=0, atol=2e-6)


def test_antialias_on_a_channel_axis_is_refused():
    x = np.zeros((1, 4, 4, 4), np.float32)
    with pytest.raises(OpError, match="antialias=1 is supported for float32 2-D or NCHW"):
        OPS["Resize"](x, None, np.array([1, 0.5, 0.5, 0.5], np.float32), antialias=1,
                      mode="linear", opset=18)
