"""The ops ONNX Runtime's optimizer creates (qsim/ops/ort_fused.py) against ONNX Runtime's own
kernels, bit for bit: SimplifiedLayerNormalization (and the kernel's NumPy twin), FusedGemm,
QLinearWhere. Hypothesis draws shapes across MLAS's dispatch thresholds (16 values per row for
the RMS kernel, 8-wide and 4-wide tails) and every activation FusedGemm accepts."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qsim.errors import OpError
from qsim.kernels import mlas_math
from qsim.ops import OPS
from tests.ort_util import ort_and_qsim

from .test_contrib_quantized import broadcast_pair, integers, same_bits, scales

MS = "com.microsoft"
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def float_array(draw, shape, spread=True):
    """float32 normal values with a per-draw magnitude (1e-3 .. 1e3)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mag = 10.0 ** draw(st.floats(-3, 3)) if spread else 1.0
    return (rng.standard_normal(shape) * mag).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# SimplifiedLayerNormalization
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(st.data())
def test_simplified_layer_norm_matches_ort(data):
    rank = data.draw(st.integers(1, 4))
    shape = [data.draw(st.integers(1, 4)) for _ in range(rank)]
    shape[-1] = data.draw(st.sampled_from([1, 3, 7, 8, 12, 15, 16, 17, 20, 23, 24, 31, 32, 64,
                                           100, 257]) | st.integers(1, 80))
    axis = data.draw(st.integers(-rank, rank - 1))
    x = data.draw(float_array(tuple(shape)))
    scale = data.draw(float_array(tuple(shape[axis % rank:]), spread=False))
    eps = data.draw(st.sampled_from([1e-5, 1e-6, 1e-12, 0.1]))
    attrs = {"axis": axis, "epsilon": eps}
    expected, got = ort_and_qsim("SimplifiedLayerNormalization", [x, scale], attrs, opset=17,
                                 noutputs=2)
    same_bits(expected[0], got[0], "Y")
    same_bits(expected[1], got[1], "inv_std_var")


@SETTINGS
@given(st.integers(1, 5), st.integers(1, 70), st.data())
def test_rms_norm_kernel_numpy_twin_equals_numba(rows, n, data):
    x = data.draw(float_array((rows, n)))
    scale = data.draw(float_array((n,), spread=False))
    y_nb, inv_nb = mlas_math.rms_norm_rows(x, scale, np.float32(1e-5))
    y_np, inv_np = mlas_math._np_rms_norm(x, scale, np.float32(1e-5))
    same_bits(y_nb, y_np, "y")
    same_bits(inv_nb, inv_np, "inv")


def test_simplified_layer_norm_bad_scale():
    x = np.ones((2, 4), np.float32)
    with pytest.raises(OpError, match=r"Scale has shape \[3\], which does not broadcast"):
        OPS["SimplifiedLayerNormalization"](x, np.ones(3, np.float32))
    with pytest.raises(OpError, match="axis=2 is out of range"):
        OPS["SimplifiedLayerNormalization"](x, np.ones(4, np.float32), axis=2)


# ---------------------------------------------------------------------------------------------
# FusedGemm
# ---------------------------------------------------------------------------------------------
ACTIVATIONS = [("Relu", {}), ("Tanh", {}), ("Sigmoid", {}), ("LeakyRelu", {"alpha": 0.1}),
               ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("Elu", {"alpha": 0.7}),
               ("Softsign", {}), ("Softplus", {}), ("Selu", {"alpha": 1.5, "gamma": 1.1}),
               ("ThresholdedRelu", {"alpha": 0.2})]


@SETTINGS
@given(st.sampled_from(ACTIVATIONS), st.booleans(), st.booleans(), st.booleans(),
       st.booleans(), st.data())
def test_fused_gemm_matches_ort(activation, trans_a, trans_b, with_c, constant_b, data):
    m, k, n = (data.draw(st.integers(1, 40)) for _ in range(3))
    a = data.draw(float_array((k, m) if trans_a else (m, k), spread=False))
    b = data.draw(float_array((n, k) if trans_b else (k, n), spread=False))
    c = data.draw(float_array((n,), spread=False)) if with_c else None
    name, params = activation
    attrs = {"transA": int(trans_a), "transB": int(trans_b), "activation": name,
             "alpha": data.draw(st.sampled_from([1.0, 0.5])), "beta": 1.0}
    attrs.update({f"activation_{k2}": v for k2, v in params.items()})
    expected = ort_and_qsim("FusedGemm", [a, b, c], attrs, opset=17, domain=MS,
                            initializers=(1,) if constant_b else ())[0]
    got = OPS["FusedGemm"](a, b, c, constant_b=constant_b,
                           **{k2: v for k2, v in attrs.items()})
    same_bits(expected[0], np.asarray(got), f"FusedGemm/{name}")


def test_fused_gemm_unknown_activation():
    with pytest.raises(OpError, match="activation 'Gelu' is not supported"):
        OPS["FusedGemm"](np.ones((2, 2), np.float32), np.ones((2, 2), np.float32),
                         activation="Gelu")


# ---------------------------------------------------------------------------------------------
# QLinearWhere
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(st.sampled_from([np.uint8, np.int8]), st.booleans(), st.data())
def test_qlinear_where_matches_ort(dtype, same_grid, data):
    shape_x, shape_y = data.draw(broadcast_pair())
    shape_c = data.draw(st.sampled_from([shape_x, shape_y, (1,)]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    cond = rng.random(shape_c) < 0.5
    x, y = data.draw(integers(dtype, shape_x)), data.draw(integers(dtype, shape_y))
    s_x, s_y, s_z = data.draw(scales()), data.draw(scales()), data.draw(scales())
    z_x, z_y, z_z = (data.draw(integers(dtype)) for _ in range(3))
    if same_grid:
        s_x, z_x = s_z, z_z
    inputs = [cond, x, s_x, z_x, y, s_y, z_y, s_z, z_z]
    expected, got = ort_and_qsim("QLinearWhere", inputs, opset=17, domain=MS,
                                 initializers=(2, 3, 5, 6, 7, 8))
    same_bits(expected[0], got[0], "QLinearWhere")


def test_qlinear_where_refuses_mixed_types():
    with pytest.raises(OpError, match="X is uint8 but Y is int8"):
        OPS["QLinearWhere"](np.array([True]), np.array([1], np.uint8), np.float32(1),
                            np.uint8(0), np.array([1], np.int8), np.float32(1), np.int8(0),
                            np.float32(1), np.uint8(0))


# ---------------------------------------------------------------------------------------------
# RMSNormalization (opset 23)
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(st.data())
def test_rms_normalization_matches_ort(data):
    """Scales of the normalized shape (the float32 fast path) and scales that only broadcast
    (ORT's generic double path), float32 and float64."""
    rank = data.draw(st.integers(1, 4))
    shape = [data.draw(st.integers(1, 4)) for _ in range(rank)]
    shape[-1] = data.draw(st.sampled_from([1, 7, 15, 16, 17, 24, 40]) | st.integers(1, 70))
    axis = data.draw(st.integers(-rank, rank - 1))
    normalized = shape[axis % rank:]
    scale_shape = [d if data.draw(st.integers(0, 3)) else 1 for d in normalized]
    scale_shape = scale_shape[data.draw(st.integers(0, len(scale_shape) - 1)):]
    dtype = data.draw(st.sampled_from([np.float32, np.float32, np.float64]))
    x = data.draw(float_array(tuple(shape))).astype(dtype)
    scale = data.draw(float_array(tuple(scale_shape), spread=False)).astype(dtype)
    attrs = {"axis": axis, "epsilon": data.draw(st.sampled_from([1e-5, 1e-6, 0.25]))}
    expected, got = ort_and_qsim("RMSNormalization", [x, scale], attrs, opset=23)
    same_bits(expected[0], got[0], f"RMSNormalization scale {scale_shape}")


# ---------------------------------------------------------------------------------------------
# RotaryEmbedding (opset 23)
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(st.booleans(), st.sampled_from(["4d", "3d"]), st.booleans(), st.booleans(), st.data())
def test_rotary_embedding_matches_ort(interleaved, layout, partial, with_positions, data):
    b, h, s = (data.draw(st.integers(1, 3)) for _ in range(3))
    half = data.draw(st.sampled_from([1, 3, 4, 8, 9, 12, 16, 17, 20]) | st.integers(1, 40))
    head = 2 * half + (2 * data.draw(st.integers(1, 3)) if partial else 0)
    x = data.draw(float_array((b, h, s, head) if layout == "4d" else (b, s, h * head)))
    attrs = {"interleaved": int(interleaved)}
    if layout == "3d":
        attrs["num_heads"] = h
    if partial:
        attrs["rotary_embedding_dim"] = 2 * half
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    if with_positions:
        cos = rng.standard_normal((s + 3, half)).astype(np.float32)
        sin = rng.standard_normal((s + 3, half)).astype(np.float32)
        inputs = [x, cos, sin, rng.integers(0, s + 3, (b, s)).astype(np.int64)]
    else:
        inputs = [x, rng.standard_normal((b, s, half)).astype(np.float32),
                  rng.standard_normal((b, s, half)).astype(np.float32)]
    expected, got = ort_and_qsim("RotaryEmbedding", inputs, attrs, opset=23)
    same_bits(expected[0], got[0], f"RotaryEmbedding {attrs} half={half}")


def test_rotary_embedding_bad_input():
    x = np.ones((1, 2, 8), np.float32)
    cos = np.ones((1, 2, 2), np.float32)
    with pytest.raises(OpError, match="needs attribute num_heads"):
        OPS["RotaryEmbedding"](x, cos, cos)
    with pytest.raises(OpError, match=r"expected \[1, 2, 2\]"):
        OPS["RotaryEmbedding"](x, cos[..., :1], cos[..., :1], num_heads=2)


# ---------------------------------------------------------------------------------------------
# LayerNormalization's other ONNX Runtime paths (the generic one shares generic_norm)
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(st.data())
def test_layer_normalization_broadcast_and_double_match_ort(data):
    """A Scale or B that only broadcasts (ORT's generic double path) and float64 X (its Welford
    kernel in double), every output."""
    rank = data.draw(st.integers(1, 4))
    shape = [data.draw(st.integers(1, 4)) for _ in range(rank)]
    shape[-1] = data.draw(st.sampled_from([1, 5, 8, 20, 33]))
    axis = data.draw(st.integers(-rank, rank - 1))
    normalized = shape[axis % rank:]

    def param_shape():
        s = [d if data.draw(st.integers(0, 2)) else 1 for d in normalized]
        return s[data.draw(st.integers(0, len(s) - 1)):]

    dtype = data.draw(st.sampled_from([np.float32, np.float64]))
    x = data.draw(float_array(tuple(shape))).astype(dtype)
    scale = data.draw(float_array(tuple(param_shape()), spread=False)).astype(dtype)
    bias = None if data.draw(st.booleans()) else \
        data.draw(float_array(tuple(param_shape()), spread=False)).astype(dtype)
    expected, got = ort_and_qsim("LayerNormalization", [x, scale, bias], {"axis": axis},
                                 opset=17, noutputs=3)
    for k, (e, g) in enumerate(zip(expected, got)):
        same_bits(e, g, f"LayerNormalization output {k}, scale {scale.shape}")
