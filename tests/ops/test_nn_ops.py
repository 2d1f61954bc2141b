"""qsim's neural-network ops against ONNX Runtime on random inputs (Hypothesis picks shapes and
attributes), plus the OpError messages for bad attributes."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from qsim.errors import OpError
from qsim.ops import OPS
from tests.ort_util import assert_op_matches_ort, ort_run_op

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
ACC = dict(rtol=1e-5, atol=1e-5)   # accumulations (sums of products) in a different order


def rand(seed: int, *shape, low=-1.0, high=1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype(np.float32)


def out_len(size, k, s, d, pad) -> int:
    return (size + pad - d * (k - 1) - 1) // s + 1


# ---------------------------------------------------------------------------------------------
# Conv
# ---------------------------------------------------------------------------------------------
@st.composite
def conv_cases(draw, transposed=False):
    nsp = draw(st.sampled_from([1, 2, 2, 3]))
    group = draw(st.sampled_from([1, 1, 2, 3]))
    cg, mg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 3)) for _ in range(nsp)]
    strides = [draw(st.integers(1, 3)) for _ in range(nsp)]
    dilations = [draw(st.integers(1, 2)) for _ in range(nsp)]
    spatial = [draw(st.integers(3, 9 if nsp < 3 else 5)) for _ in range(nsp)]
    pads = [draw(st.integers(0, 2)) for _ in range(2 * nsp)]
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    if auto_pad.startswith("SAME"):
        dilations = [1] * nsp          # ONNX Runtime rejects dilated SAME convolutions
    n = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**31))
    attrs = dict(group=group, strides=strides, dilations=dilations)
    if draw(st.booleans()):
        attrs["kernel_shape"] = kernel
    if auto_pad == "NOTSET":
        attrs["pads"] = pads
    else:
        attrs["auto_pad"] = auto_pad
    x = rand(seed, n, cg * group, *spatial)
    # Conv W is (M, C/group, *k); ConvTranspose W is (C, M/group, *k)
    w = rand(seed + 1, *((cg * group, mg) if transposed else (mg * group, cg)), *kernel)
    b = rand(seed + 2, mg * group) if draw(st.booleans()) else None
    return x, w, b, attrs, pads, kernel, strides, dilations, spatial, auto_pad


@SETTINGS
@given(conv_cases())
def test_conv_matches_ort(case):
    x, w, b, attrs, pads, kernel, strides, dilations, spatial, auto_pad = case
    if auto_pad == "NOTSET":
        nsp = len(spatial)
        assume(all(out_len(spatial[i], kernel[i], strides[i], dilations[i],
                           pads[i] + pads[i + nsp]) >= 1 for i in range(nsp)))
    elif auto_pad == "VALID":
        assume(all(out_len(s, k, t, d, 0) >= 1
                   for s, k, t, d in zip(spatial, kernel, strides, dilations)))
    assert_op_matches_ort("Conv", [x, w, b], attrs, **ACC)


def test_conv_depthwise_and_pointwise_match_ort():
    x = rand(0, 2, 8, 10, 10)
    assert_op_matches_ort("Conv", [x, rand(1, 8, 1, 3, 3), rand(2, 8)],
                          dict(group=8, pads=[1, 1, 1, 1], strides=[2, 2]), **ACC)
    assert_op_matches_ort("Conv", [x, rand(3, 16, 8, 1, 1)], {}, **ACC)
    assert_op_matches_ort("Conv", [x, rand(3, 16, 8, 1, 1)], dict(strides=[2, 2]), **ACC)


def test_conv_output_is_c_contiguous_nchw():
    y = OPS["Conv"](rand(0, 2, 3, 9, 9), rand(1, 4, 3, 3, 3), pads=[1, 1, 1, 1])
    assert y.shape == (2, 4, 9, 9) and y.flags.c_contiguous
    y = OPS["ConvTranspose"](rand(0, 2, 3, 4, 4), rand(1, 3, 4, 3, 3), strides=[2, 2])
    assert y.shape == (2, 4, 9, 9) and y.flags.c_contiguous


def test_conv_accepts_non_contiguous_input():
    x = rand(0, 3, 2, 9, 9).transpose(1, 0, 2, 3)
    assert_op_matches_ort("Conv", [np.ascontiguousarray(x), rand(1, 5, 3, 3, 3)],
                          dict(strides=[2, 2]), **ACC)
    np.testing.assert_array_equal(OPS["Conv"](x, rand(1, 5, 3, 3, 3), strides=[2, 2]),
                                  OPS["Conv"](np.ascontiguousarray(x), rand(1, 5, 3, 3, 3),
                                              strides=[2, 2]))


# ---------------------------------------------------------------------------------------------
# ConvTranspose
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(conv_cases(transposed=True), st.data())
def test_conv_transpose_matches_ort(case, data):
    x, w, b, attrs, pads, kernel, strides, dilations, spatial, auto_pad = case
    nsp = len(spatial)
    # ONNX allows output_padding < max(stride, dilation); ONNX Runtime only < stride
    attrs["output_padding"] = [data.draw(st.integers(0, s - 1)) for s in strides]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        del attrs["output_padding"]
    full = [s * (i - 1) + p + d * (k - 1) + 1 for i, k, s, d, p in
            zip(spatial, kernel, strides, dilations, attrs.get("output_padding", [0] * nsp))]
    if auto_pad == "NOTSET" and data.draw(st.booleans()):
        del attrs["pads"]
        attrs["output_shape"] = [data.draw(st.integers(max(1, f - 3), f)) for f in full]
    elif auto_pad == "NOTSET":
        assume(all(f - pads[i] - pads[i + nsp] >= 1 for i, f in enumerate(full)))
    assert_op_matches_ort("ConvTranspose", [x, w, b], attrs, **ACC)


def test_conv_transpose_upsampling_2x_matches_ort():
    x = rand(0, 2, 4, 6, 6)
    assert_op_matches_ort("ConvTranspose", [x, rand(1, 4, 3, 4, 4), rand(2, 3)],
                          dict(strides=[2, 2], pads=[1, 1, 1, 1]), **ACC)
    assert_op_matches_ort("ConvTranspose", [x, rand(1, 4, 2, 3, 3)],
                          dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1],
                               group=2), **ACC)


# ---------------------------------------------------------------------------------------------
# Gemm / MatMul
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6), st.booleans(), st.booleans(),
       st.sampled_from([1.0, 0.5, -2.0]), st.sampled_from([1.0, 0.0, 0.25]),
       st.sampled_from(["none", "scalar", "row", "col", "full", "1xN"]), st.integers(0, 2**31))
def test_gemm_matches_ort(m, k, n, trans_a, trans_b, alpha, beta, c_kind, seed):
    a = rand(seed, *((k, m) if trans_a else (m, k)))
    b = rand(seed + 1, *((n, k) if trans_b else (k, n)))
    c_shape = {"none": None, "scalar": (), "row": (n,), "col": (m, 1), "full": (m, n),
               "1xN": (1, n)}[c_kind]
    c = None if c_shape is None else rand(seed + 2, *c_shape)
    attrs = dict(alpha=alpha, beta=beta, transA=int(trans_a), transB=int(trans_b))
    assert_op_matches_ort("Gemm", [a, b, c], attrs, **ACC)


@pytest.mark.parametrize("trans_b", [0, 1])
def test_gemm_with_nd_a_equals_ort_matmul_then_add(trans_b):
    """qsim's extension for AIMET's fused MatMul+Add: N-D A with transA=0."""
    a, w, c = rand(0, 2, 5, 3), rand(1, 3, 4), rand(2, 4)
    expected = ort_run_op("Add", [ort_run_op("MatMul", [a, w])[0], c])[0]
    got = OPS["Gemm"](a, w.T.copy() if trans_b else w, c, transB=trans_b)
    np.testing.assert_allclose(got, expected, **ACC)


MATMUL_SHAPES = [((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 3), (3, 4)),
                 ((5, 2, 3), (3, 4)), ((2, 3), (5, 3, 4)), ((5, 1, 2, 3), (4, 3, 2)),
                 ((1, 2, 3), (6, 3, 4)), ((2, 7, 3), (2, 3, 1)), ((4,), (2, 4, 3))]


@pytest.mark.parametrize("a_shape,b_shape", MATMUL_SHAPES)
def test_matmul_matches_ort(a_shape, b_shape):
    assert_op_matches_ort("MatMul", [rand(0, *a_shape), rand(1, *b_shape)], **ACC)


@SETTINGS
@given(st.integers(1, 4), st.integers(1, 7), st.integers(1, 7), st.integers(1, 7),
       st.integers(0, 2**31))
def test_matmul_batched_matches_ort(batch, m, k, n, seed):
    assert_op_matches_ort("MatMul", [rand(seed, batch, m, k), rand(seed + 1, 1, k, n)], **ACC)


# ---------------------------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------------------------
@st.composite
def pool_cases(draw, allow_dilation=True):
    nsp = draw(st.sampled_from([1, 2, 2, 3]))
    kernel = [draw(st.integers(1, 3)) for _ in range(nsp)]
    strides = [draw(st.integers(1, 3)) for _ in range(nsp)]
    dilations = [draw(st.integers(1, 2)) if allow_dilation else 1 for _ in range(nsp)]
    pads = [draw(st.integers(0, k - 1)) for k in kernel + kernel]
    spatial = [draw(st.integers(4, 9 if nsp < 3 else 5)) for _ in range(nsp)]
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER",
                                     "VALID"]))
    attrs = dict(kernel_shape=kernel, strides=strides, ceil_mode=int(draw(st.booleans())))
    if any(d != 1 for d in dilations):
        attrs["dilations"] = dilations
    if auto_pad == "NOTSET":
        attrs["pads"] = pads
    else:
        attrs["auto_pad"] = auto_pad
        # ONNX Runtime computes SAME pads with the undilated kernel, and rejects SAME pools
        # whose padding would be negative (kernel < stride): keep the cases it runs as ONNX says
        assume(all(d == 1 and k >= s for k, s, d in zip(kernel, strides, dilations)))
    if auto_pad == "NOTSET":
        assume(all(out_len(spatial[i], kernel[i], strides[i], dilations[i],
                           pads[i] + pads[i + nsp]) >= 1 for i in range(nsp)))
    else:
        assume(all(out_len(s, k, t, d, 0) >= 1
                   for s, k, t, d in zip(spatial, kernel, strides, dilations)))
    x = rand(draw(st.integers(0, 2**31)), draw(st.integers(1, 2)), draw(st.integers(1, 3)),
             *spatial)
    return x, attrs


@SETTINGS
@given(pool_cases())
def test_max_pool_matches_ort(case):
    x, attrs = case
    assert_op_matches_ort("MaxPool", [x], attrs)


@SETTINGS
@given(pool_cases(), st.sampled_from([0, 1]))
def test_max_pool_indices_match_ort(case, storage_order):
    x, attrs = case
    assert_op_matches_ort("MaxPool", [x], dict(attrs, storage_order=storage_order), noutputs=2)


@SETTINGS
@given(pool_cases(), st.sampled_from([0, 1]))
def test_average_pool_matches_ort(case, count_include_pad):
    x, attrs = case
    assert_op_matches_ort("AveragePool", [x], dict(attrs, count_include_pad=count_include_pad),
                          opset=19)


def test_resnet_stem_max_pool_matches_ort():
    x = rand(0, 2, 4, 16, 16)
    assert_op_matches_ort("MaxPool", [x], dict(kernel_shape=[3, 3], strides=[2, 2],
                                               pads=[1, 1, 1, 1]))


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(2, 3, 5), (2, 3, 7, 6), (1, 4, 3, 4, 5)])
def test_global_pools_match_ort(op, shape):
    assert_op_matches_ort(op, [rand(0, *shape)])


# ---------------------------------------------------------------------------------------------
# normalization
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(st.lists(st.integers(1, 5), min_size=0, max_size=3), st.integers(1, 6),
       st.sampled_from([1e-5, 1e-3, 0.1]), st.integers(0, 2**31))
def test_batch_normalization_matches_ort(spatial, channels, epsilon, seed):
    x = rand(seed, 2, channels, *spatial, low=-3, high=3)
    params = [rand(seed + 1, channels, low=0.5, high=2), rand(seed + 2, channels),
              rand(seed + 3, channels), rand(seed + 4, channels, low=0.1, high=2)]
    assert_op_matches_ort("BatchNormalization", [x, *params], dict(epsilon=epsilon), **ACC)


@SETTINGS
@given(st.lists(st.integers(1, 7), min_size=0, max_size=2), st.integers(1, 6),
       st.integers(0, 2**31))
def test_batch_normalization_numba_pass_equals_numpy_twin(spatial, channels, seed):
    """The one-pass Numba scale-and-shift of inference BatchNormalization gives NumPy's two
    roundings (x·s, then + shift) bit for bit, special values included."""
    from qsim.ops import nn
    x = rand(seed, 2, channels, *spatial, low=-3, high=3)
    x.ravel()[:4] = [np.nan, np.inf, -0.0, 1e-41][:x.size]
    s, shift = rand(seed + 1, channels, 1, low=-2, high=2), rand(seed + 2, channels, 1)
    s, shift = (v.reshape((channels,) + (1,) * len(spatial)) for v in (s, shift))
    want = x * s
    want += shift
    got = nn._scale_shift(x, s, shift)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    # with the Relu the executor folds into it: the Relu op's own result (-0 and NaN kept)
    want_relu = OPS["Relu"](want)
    got_relu = nn._scale_shift(x, s, shift, relu=True)
    np.testing.assert_array_equal(got_relu.view(np.uint32), want_relu.view(np.uint32))


@SETTINGS
@given(st.lists(st.integers(1, 6), min_size=1, max_size=3), st.integers(1, 5),
       st.sampled_from([1e-5, 1e-2]), st.integers(0, 2**31))
def test_instance_normalization_matches_ort(spatial, channels, epsilon, seed):
    x = rand(seed, 2, channels, *spatial, low=-3, high=3)
    assert_op_matches_ort("InstanceNormalization",
                          [x, rand(seed + 1, channels), rand(seed + 2, channels)],
                          dict(epsilon=epsilon), rtol=1e-4, atol=1e-4)


@SETTINGS
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.data(), st.booleans(),
       st.integers(1, 3), st.integers(0, 2**31))
def test_layer_normalization_matches_ort(shape, data, with_bias, noutputs, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    normalized = shape[axis:]
    x = rand(seed, *shape, low=-3, high=3)
    inputs = [x, rand(seed + 1, *normalized), rand(seed + 2, *normalized) if with_bias else None]
    assert_op_matches_ort("LayerNormalization", inputs, dict(axis=axis, epsilon=1e-3),
                          noutputs=noutputs, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# softmax
# ---------------------------------------------------------------------------------------------
@SETTINGS
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.data(),
       st.sampled_from(["Softmax", "LogSoftmax"]), st.integers(0, 2**31))
def test_softmax_matches_ort(shape, data, op, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = rand(seed, *shape, low=-20, high=20)
    assert_op_matches_ort(op, [x], dict(axis=axis), opset=13, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Resize
# ---------------------------------------------------------------------------------------------
PYTORCH_MODES = ["asymmetric", "half_pixel", "pytorch_half_pixel", "align_corners"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
SCALES = [0.5, 0.6, 0.75, 1.0, 4 / 3, 1.5, 2.0, 2.5, 3.0]


def _resize_inputs(x, scales=None, sizes=None):
    empty = np.zeros(0, dtype=np.float32)
    if sizes is not None:
        return [x, empty, empty, np.asarray(sizes, dtype=np.int64)]
    return [x, empty, np.asarray(scales, dtype=np.float32)]


@SETTINGS
@given(st.integers(2, 9), st.integers(2, 9), st.sampled_from(SCALES), st.sampled_from(SCALES),
       st.sampled_from(PYTORCH_MODES + ["tf_half_pixel_for_nn"]), st.sampled_from(NEAREST),
       st.booleans(), st.integers(0, 2**31))
def test_resize_nearest_matches_ort(h, w, sh, sw, ctm, nearest_mode, by_sizes, seed):
    x = rand(seed, 1, 2, h, w)
    attrs = dict(mode="nearest", coordinate_transformation_mode=ctm, nearest_mode=nearest_mode)
    if by_sizes:
        inputs = _resize_inputs(x, sizes=[1, 2, max(1, int(h * sh)), max(1, int(w * sw))])
    else:
        inputs = _resize_inputs(x, scales=[1, 1, sh, sw])
        assume(int(np.float32(sh) * h) >= 1 and int(np.float32(sw) * w) >= 1)
    assert_op_matches_ort("Resize", inputs, attrs, opset=13, initializers=(1, 2, 3))


@SETTINGS
@given(st.integers(1, 9), st.integers(2, 9), st.sampled_from(SCALES), st.sampled_from(SCALES),
       st.sampled_from(PYTORCH_MODES + ["half_pixel_symmetric"]), st.booleans(),
       st.integers(0, 2**31))
def test_resize_linear_matches_ort(h, w, sh, sw, ctm, by_sizes, seed):
    x = rand(seed, 2, 3, h, w)
    attrs = dict(mode="linear", coordinate_transformation_mode=ctm)
    if by_sizes:
        inputs = _resize_inputs(x, sizes=[2, 3, max(1, int(h * sh)), max(1, int(w * sw))])
    else:
        inputs = _resize_inputs(x, scales=[1, 1, sh, sw])
        assume(int(np.float32(sh) * h) >= 1 and int(np.float32(sw) * w) >= 1)
    assert_op_matches_ort("Resize", inputs, attrs, opset=19, initializers=(1, 2, 3), atol=1e-6)


@SETTINGS
@given(st.integers(1, 9), st.integers(2, 9), st.sampled_from(SCALES), st.sampled_from(SCALES),
       st.sampled_from(PYTORCH_MODES), st.sampled_from([-0.75, -0.5]), st.booleans(),
       st.booleans(), st.integers(0, 2**31))
def test_resize_cubic_matches_ort(h, w, sh, sw, ctm, coeff_a, exclude_outside, by_sizes, seed):
    x = rand(seed, 2, 3, h, w)
    attrs = dict(mode="cubic", coordinate_transformation_mode=ctm, cubic_coeff_a=coeff_a,
                 exclude_outside=int(exclude_outside))
    if by_sizes:
        inputs = _resize_inputs(x, sizes=[2, 3, max(1, int(h * sh)), max(1, int(w * sw))])
    else:
        inputs = _resize_inputs(x, scales=[1, 1, sh, sw])
        assume(int(np.float32(sh) * h) >= 1 and int(np.float32(sw) * w) >= 1)
    assert_op_matches_ort("Resize", inputs, attrs, opset=19, initializers=(1, 2, 3), atol=1e-5)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_axes_and_aspect_policy_match_ort(policy, mode):
    x = rand(0, 2, 3, 5, 7)
    inputs = [x, np.zeros(0, np.float32), np.zeros(0, np.float32), np.array([9, 4], np.int64)]
    assert_op_matches_ort("Resize", inputs, dict(mode=mode, axes=[2, 3],
                                                 keep_aspect_ratio_policy=policy),
                          opset=18, initializers=(1, 2, 3))


def test_resize_nearest_2x_upsample_matches_ort():
    """What PyTorch exports for nn.Upsample(scale_factor=2, mode='nearest')."""
    x = rand(0, 2, 3, 4, 5)
    assert_op_matches_ort("Resize", _resize_inputs(x, scales=[1, 1, 2, 2]),
                          dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                               nearest_mode="floor"), opset=13, initializers=(1, 2, 3))


def test_resize_trilinear_matches_ort():
    x = rand(0, 1, 2, 3, 4, 5)
    assert_op_matches_ort("Resize", _resize_inputs(x, scales=[1, 1, 2, 1.5, 0.6]),
                          dict(mode="linear", coordinate_transformation_mode="half_pixel"),
                          opset=13, initializers=(1, 2, 3))


def test_resize_nearest_coordinates_are_float32_like_ort():
    """3 / float32(0.6) is 5.0 in float32 but 4.9999998 in float64: floor must give 5."""
    x = np.arange(10, dtype=np.float32).reshape(1, 1, 1, 10)
    assert_op_matches_ort("Resize", _resize_inputs(x, scales=[1, 1, 1, 0.6]),
                          dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                               nearest_mode="floor"), opset=13, initializers=(1, 2, 3))


@pytest.mark.parametrize("nearest_mode", ["round_prefer_ceil", "round_prefer_floor"])
@pytest.mark.parametrize("n_in,n_out", [(7, 4), (13, 8), (15, 18), (14, 19), (20, 6)])
def test_resize_nearest_near_half_ties_match_ort(nearest_mode, n_in, n_out):
    """float32 coordinates a few ulp from .5 (2 / float32(4/7) = 3.4999998) are ties in ORT."""
    x = np.arange(n_in, dtype=np.float32).reshape(1, 1, 1, n_in)
    for ctm in ("asymmetric", "half_pixel"):
        assert_op_matches_ort("Resize", _resize_inputs(x, sizes=[1, 1, 1, n_out]),
                              dict(mode="nearest", coordinate_transformation_mode=ctm,
                                   nearest_mode=nearest_mode), opset=13, initializers=(1, 2, 3))
