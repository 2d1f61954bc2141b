"""Quantize-dequantize kernels: Hypothesis properties, Numba == NumPy twin, ONNX Runtime parity."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper

from qsim.errors import EncodingError
from qsim.quant import dequantize, from_min_max, onnx_zero_point, quantize, quantize_dequantize
from qsim.quant import kernels as K

SETTINGS = settings(max_examples=40, deadline=None)

finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
moderate32 = st.floats(-1e6, 1e6, width=32)


@st.composite
def encodings(draw, max_bitwidth=16, channels=None):
    """A from_min_max encoding with random range and flags (per tensor, or C channels)."""
    bw = draw(st.integers(2, max_bitwidth))
    shape = () if channels is None else (channels,)
    lo = draw(hnp.arrays(np.float32, shape, elements=st.floats(-1e4, 1e4, width=32)))
    hi = draw(hnp.arrays(np.float32, shape, elements=st.floats(-1e4, 1e4, width=32)))
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    sym = draw(st.booleans())
    return from_min_max(lo, hi, bitwidth=bw, symmetric=sym,
                        strict_symmetric=sym and draw(st.booleans()),
                        unsigned_symmetric=sym and draw(st.booleans()),
                        axis=None if channels is None else 0)


def data(elements=moderate32, max_size=200):
    return hnp.arrays(np.float32, st.integers(0, max_size), elements=elements)


def with_specials(x):
    return np.concatenate([x, np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)])


# ------------------------------------------------------------------ AIMET kernel properties

@SETTINGS
@given(enc=encodings(), x=data())
def test_idempotent(enc, x):
    y = quantize_dequantize(x, enc)
    np.testing.assert_array_equal(quantize_dequantize(y, enc), y)


@SETTINGS
@given(enc=encodings(max_bitwidth=32))
def test_zero_is_exactly_representable(enc):
    y = quantize_dequantize(np.array([0.0, -0.0], np.float32), enc)
    np.testing.assert_array_equal(y, [0.0, 0.0])


@SETTINGS
@given(enc=encodings(), u=hnp.arrays(np.float64, 50, elements=st.floats(0, 1)))
def test_error_at_most_half_step_inside_range(enc, u):
    lo, hi = np.float32(enc.min), np.float32(enc.max)
    x = (lo + u * (np.float64(hi) - lo)).astype(np.float32)
    x = np.clip(x, lo, hi)
    err = np.abs(quantize_dequantize(x, enc).astype(np.float64) - x)
    d = float(np.float32(enc.delta))
    slack = 4 * np.spacing(np.maximum(np.abs(x), np.abs(lo), dtype=np.float32)).astype(np.float64)
    assert np.all(err <= d / 2 * (1 + 1e-6) + slack)


@SETTINGS
@given(enc=encodings(), x=data())
def test_monotone(enc, x):
    xs = np.sort(x)
    y = quantize_dequantize(xs, enc)
    assert np.all(np.diff(y) >= 0)


@SETTINGS
@given(enc=encodings(), x=data(finite32))
def test_outside_values_clamp_to_range_ends(enc, x):
    lo, hi = np.float32(enc.min), np.float32(enc.max)
    y = quantize_dequantize(with_specials(x), enc)
    ends = quantize_dequantize(np.array([lo, hi], np.float32), enc)
    xs = with_specials(x)
    np.testing.assert_array_equal(y[xs >= hi], ends[1])
    np.testing.assert_array_equal(y[xs <= lo], ends[0])
    # NaN comes out as grid point 0 = delta·offset, float32
    assert y[-5] == np.float32(enc.delta) * np.float32(enc.offset)


@SETTINGS
@given(enc=encodings(channels=3), x=hnp.arrays(np.float32, (3, 2, 5), elements=moderate32),
       axis=st.integers(0, 2), rounding=st.sampled_from(K.ROUNDING_MODES))
def test_per_channel_equals_per_tensor_per_slice(enc, x, axis, rounding):
    x = np.moveaxis(x, 0, axis).copy()
    enc_c = type(enc)(min=enc.min, max=enc.max, delta=enc.delta, offset=enc.offset,
                      bitwidth=enc.bitwidth, symmetric=enc.symmetric, axis=axis)
    y = quantize_dequantize(x, enc_c, rounding=rounding)
    for c in range(3):
        want = quantize_dequantize(np.take(x, c, axis=axis), enc.channel(c), rounding=rounding)
        np.testing.assert_array_equal(np.take(y, c, axis=axis), want)


@SETTINGS
@given(enc=encodings(max_bitwidth=16), x=data(finite32), rounding=st.sampled_from(K.ROUNDING_MODES))
def test_dequantize_of_quantize_is_qdq(enc, x, rounding):
    x = with_specials(x)
    q = quantize(x, enc, rounding=rounding)
    assert q.dtype == np.int64 and np.all((q >= 0) & (q <= enc.num_steps))
    np.testing.assert_array_equal(dequantize(q, enc), quantize_dequantize(x, enc, rounding=rounding))


# ------------------------------------------------------------------ Numba == NumPy twin

def _run_both(nb, np_fn, x3, params, out_dtype):
    a = np.empty(x3.shape, out_dtype)
    b = np.empty(x3.shape, out_dtype)
    nb(x3, *params, a)
    np_fn(x3, *params, b)
    return a, b


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NUMBA_DISABLE_JIT=1: scalar NumPy warns on inf/NaN
@SETTINGS
@given(enc=encodings(max_bitwidth=32, channels=2),
       x=hnp.arrays(np.float32, (3, 2, 7), elements=st.floats(width=32)))
def test_numba_equals_numpy_twin(enc, x):
    mn, mx, d, o = K.params32(enc)
    n = np.float32(enc.num_steps)
    for nb, np_fn, params, dt in [
            (K._nb_qdq_nearest, K._np_qdq_nearest, (mn, mx, d, o), np.float32),
            (K._nb_quantize_nearest, K._np_quantize_nearest, (mn, mx, d, o), np.int64),
            (K._nb_qdq_half_even, K._np_qdq_half_even, (d, o, n), np.float32),
            (K._nb_quantize_half_even, K._np_quantize_half_even, (d, o, n), np.int64)]:
        a, b = _run_both(nb, np_fn, x, params, dt)
        np.testing.assert_array_equal(a.view(np.int32) if dt == np.float32 else a,
                                      b.view(np.int32) if dt == np.float32 else b)
    q = np.arange(42, dtype=np.int64).reshape(3, 2, 7) % (enc.num_steps + 1)
    a, b = _run_both(K._nb_dequantize, K._np_dequantize, q, (d, o), np.float32)
    np.testing.assert_array_equal(a.view(np.int32), b.view(np.int32))


def test_nearest_ties_go_away_from_zero_not_floor_plus_half():
    enc = from_min_max(0.0, 255.0, bitwidth=8)              # delta 1, offset 0
    x = np.array([2.5, 3.5, 0.49999997, 254.5], np.float32)
    np.testing.assert_array_equal(quantize_dequantize(x, enc), [3.0, 4.0, 0.0, 255.0])
    np.testing.assert_array_equal(quantize_dequantize(x, enc, rounding="half_even"),
                                  [2.0, 4.0, 0.0, 254.0])


# ------------------------------------------------------------------ half_even == ONNX Runtime

_TYPES = {(4, False): TensorProto.UINT4, (4, True): TensorProto.INT4,
          (8, False): TensorProto.UINT8, (8, True): TensorProto.INT8,
          (16, False): TensorProto.UINT16, (16, True): TensorProto.INT16}


def _ort_qdq(x, enc, signed):
    """Run QuantizeLinear -> DequantizeLinear (opset 21) in ONNX Runtime."""
    scale = np.asarray(enc.delta, np.float32)
    zp = onnx_zero_point(enc, signed)
    ttype = _TYPES[(enc.bitwidth, signed)]
    inits = [numpy_helper.from_array(scale, "scale"),
             helper.make_tensor("zp", ttype, zp.shape, zp.ravel().tolist())]
    attrs = {} if enc.axis is None else {"axis": enc.axis}
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], **attrs),
             helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["y"], **attrs)]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, x.shape)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@settings(max_examples=30, deadline=None)
@given(bw=st.sampled_from([4, 8, 16]), sym=st.booleans(), signed=st.booleans(),
       lo=st.floats(-100, 0, width=32), hi=st.floats(0, 100, width=32),
       x=hnp.arrays(np.float32, st.integers(1, 300), elements=st.floats(-300, 300, width=32)))
def test_half_even_equals_onnxruntime(bw, sym, signed, lo, hi, x):
    enc = from_min_max(lo, hi, bitwidth=bw, symmetric=sym)
    d = np.float32(enc.delta)
    ties = ((np.arange(-40, 40, dtype=np.float32) + np.float32(0.5)) * d).astype(np.float32)
    x = np.concatenate([with_specials(x), ties])
    got = quantize_dequantize(x, enc, rounding="half_even")
    np.testing.assert_array_equal(got.view(np.int32), _ort_qdq(x, enc, signed).view(np.int32))


def test_half_even_per_channel_equals_onnxruntime():
    rng = np.random.default_rng(3)
    enc = from_min_max(np.array([-1.0, -0.2, 0.0]), np.array([1.0, 3.0, 0.5]), bitwidth=8,
                       axis=1)
    x = (rng.normal(size=(4, 3, 5)) * 2).astype(np.float32)
    got = quantize_dequantize(x, enc, rounding="half_even")
    np.testing.assert_array_equal(got, _ort_qdq(x, enc, signed=False))


# ------------------------------------------------------------------ errors and dtypes

def test_shape_and_mode_errors():
    enc = from_min_max(np.zeros(3), np.ones(3), bitwidth=8, axis=1)
    with pytest.raises(EncodingError, match="3 channels.*4 along axis 1"):
        quantize_dequantize(np.zeros((2, 4), np.float32), enc)
    with pytest.raises(EncodingError, match="axis 1 is out of range"):
        quantize_dequantize(np.zeros(3, np.float32), enc)
    with pytest.raises(EncodingError, match="rounding"):
        quantize_dequantize(np.zeros((2, 3), np.float32), enc, rounding="floor")


def test_output_is_float32_and_out_is_used():
    enc = from_min_max(-1.0, 1.0, bitwidth=8)
    x = np.linspace(-2, 2, 11)                      # float64 input is converted
    out = np.empty(11, np.float32)
    y = quantize_dequantize(x, enc, out=out)
    assert y is out and y.dtype == np.float32
    assert quantize_dequantize(np.zeros((0, 3), np.float32), enc).shape == (0, 3)


@pytest.mark.parametrize("rounding", ["nearest", "half_even"])
def test_a_scalar_keeps_its_shape(rounding):
    """A quantized scalar (a 0-d Constant output) stays 0-d, as AIMET's quantize node keeps it,
    and equals the same value quantized as a 1-element vector."""
    enc = from_min_max(-1.0, 3.0, bitwidth=8)
    x = np.array(0.37, np.float32)
    y = quantize_dequantize(x, enc, rounding=rounding)
    q = quantize(x, enc, rounding=rounding)
    assert y.shape == () and q.shape == () and dequantize(q, enc).shape == ()
    assert y == quantize_dequantize(x.reshape(1), enc, rounding=rounding)[0]
