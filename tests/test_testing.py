"""qsim.testing: the worked example (a wrong kernel is caught, with a useful message), the
reference assertions against ONNX Runtime and against an independent scalar implementation of
AIMET's formula, and the strategies' promises (AIMET-shaped encodings, exact ties, valid graphs).
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

import qsim
from qsim.testing import (assert_encoding_matches, assert_qdq_matches, assert_quantize_matches,
                          edge_values, encoding_arrays, encodings, explain_mismatch,
                          float32_arrays, grid_probe_values, onnx_params, per_channel_layouts,
                          qdq_cases, reference_qdq, small_graphs)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: for find(): stop at the first example found (shrinking it costs seconds and adds nothing here)
FIRST_FOUND = settings(max_examples=2000, deadline=None, database=None, phases=[Phase.generate])
F32 = np.float32


# ---------------------------------------------------------------- kernels a hardware team might write

def aimet_scalar_qdq(x: np.ndarray, enc) -> np.ndarray:
    """numerics.md §3 written element by element with float32 scalars (independent of qsim's
    kernels): clamp, t = x/delta - offset, round half away from zero, delta·(q + offset)."""
    lo, hi, delta, offset = (np.broadcast_to(a, x.shape) for a in encoding_arrays(enc, x.ndim))
    out = np.empty_like(x)
    for i in np.ndindex(x.shape):
        t = x[i]
        if t > hi[i]:
            t = hi[i]
        if t < lo[i]:
            t = lo[i]
        t = F32(F32(t / delta[i]) - offset[i])
        if np.isnan(t):
            q = F32(0.0)
        else:
            whole = F32(np.floor(abs(t)))
            q = whole + F32(1.0) if F32(abs(t) - whole) >= F32(0.5) else whole
            q = -q if t < 0 else q
        out[i] = F32(delta[i] * F32(q + offset[i]))
    return out


def floor_plus_half_qdq(x, enc):
    """A plausible but wrong kernel: rounds with floor(t + 0.5) (0.49999997 goes up)."""
    lo, hi, delta, offset = encoding_arrays(enc, x.ndim)
    t = np.clip(x, lo, hi) / delta - offset
    return delta * (np.floor(t + F32(0.5)) + offset)


def half_even_qdq(x, enc):
    """A plausible but wrong kernel for AIMET's rounding: np.rint rounds ties to even."""
    lo, hi, delta, offset = encoding_arrays(enc, x.ndim)
    t = np.clip(x, lo, hi) / delta - offset
    return delta * (np.rint(t) + offset)


# ---------------------------------------------------------------- the worked example

@FAST
@given(qdq_cases(allow_nan=True))
def test_an_independent_scalar_implementation_of_aimets_formula_passes(case):
    x, enc = case
    assert_qdq_matches(aimet_scalar_qdq, x, enc)


@pytest.mark.parametrize("kernel, words", [(floor_plus_half_qdq, "just below a tie"),
                                           (half_even_qdq, "exact tie")])
def test_a_wrong_rounding_kernel_is_caught_and_the_message_names_the_case(kernel, words):
    def fails(case):
        try:
            assert_qdq_matches(kernel, *case)
        except AssertionError:
            return True
        return False

    x, enc = find(qdq_cases(), fails, settings=FIRST_FOUND)
    with pytest.raises(AssertionError) as info:
        assert_qdq_matches(kernel, x, enc)
    assert words in str(info.value)
    assert "differ from qsim" in str(info.value)


def test_the_floor_plus_half_bug_in_numbers():
    # t = 0.49999997 (the float32 just below 1/2): floor(t + 0.5) = 1, AIMET rounds to 0.
    enc = qsim.quant.from_min_max(0.0, 255.0, bitwidth=8)          # delta 1, offset 0
    x = np.array([np.nextafter(F32(0.5), F32(0.0)), 2.5, 3.0], dtype=np.float32)
    assert reference_qdq(x, enc).tolist() == [0.0, 3.0, 3.0]      # ties away from zero
    with pytest.raises(AssertionError, match=r"1 of 3 elements differ .*\n.*at \[0\].*0\.49999997"):
        assert_qdq_matches(floor_plus_half_qdq, x, enc)
    with pytest.raises(AssertionError, match=r"at \[1\].*t = x/delta - offset = 2\.5 is an exact tie"):
        assert_qdq_matches(half_even_qdq, x, enc)


def test_clamping_and_ulp_tolerance():
    enc = qsim.quant.from_min_max(-1.0, 1.0, bitwidth=8)
    x = np.array([5.0, -5.0, 0.3], dtype=np.float32)

    def no_clamp(x, enc):
        lo, hi, delta, offset = encoding_arrays(enc, x.ndim)
        return (delta * (np.floor(x / delta - offset + F32(0.5)) + offset)).astype(np.float32)

    with pytest.raises(AssertionError, match="outside \\[min, max\\].*clamps x first"):
        assert_qdq_matches(no_clamp, x, enc)

    def one_ulp_off(x, enc):
        return np.nextafter(reference_qdq(x, enc), F32(np.inf))

    with pytest.raises(AssertionError, match="same grid index but a different float32 value"):
        assert_qdq_matches(one_ulp_off, x, enc)
    assert_qdq_matches(one_ulp_off, x, enc, max_ulp=1)


def test_wrong_shape_and_bad_arguments_are_reported():
    enc = qsim.quant.from_min_max(-1.0, 1.0, bitwidth=8)
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(AssertionError, match=r"returned shape \(6,\)"):
        assert_qdq_matches(lambda x, e: x.ravel(), x, enc)
    with pytest.raises(qsim.EncodingError, match="rounding must be one of"):
        assert_qdq_matches(lambda x, e: x, x, enc, rounding="up")
    with pytest.raises(qsim.EncodingError, match="convention must be one of"):
        assert_quantize_matches(lambda x, e: x, x, enc, convention="int8")


# ---------------------------------------------------------------- against ONNX Runtime

def _ort_qdq_model(enc, shape, *, signed: bool, qdq: bool):
    p = onnx_params(enc, signed=signed)
    zp_type = np.int8 if signed else np.uint8
    inits = [numpy_helper.from_array(p.scale.astype(np.float32), "scale"),
             numpy_helper.from_array(p.zero_point.astype(zp_type), "zp")]
    axis = {} if p.axis is None else {"axis": p.axis}
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["q"], **axis)]
    out_type = onnx.TensorProto.INT8 if signed else onnx.TensorProto.UINT8
    out = "q"
    if qdq:
        nodes.append(helper.make_node("DequantizeLinear", ["q", "scale", "zp"], ["y"], **axis))
        out, out_type = "y", onnx.TensorProto.FLOAT
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info(
        "x", onnx.TensorProto.FLOAT, shape)], [helper.make_tensor_value_info(out, out_type, shape)],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def ort_qdq(x, enc):
    return _ort_qdq_model(enc, x.shape, signed=False, qdq=True).run(None, {"x": x})[0]


def ort_quantize_int8(x, enc):
    return _ort_qdq_model(enc, x.shape, signed=True, qdq=False).run(None, {"x": x})[0]


# ORT's per-channel QuantizeLinear divides by the scale like the reference only for exact
# (power-of-two) scales; with arbitrary scales it multiplies by a reciprocal on some CPUs.
ORT_CASES = qdq_cases(bitwidths=(8,), exact_ties=True, max_side=4)


@FAST
@given(ORT_CASES)
def test_onnx_runtime_quantize_dequantize_is_the_half_even_reference(case):
    x, enc = case
    assert_qdq_matches(ort_qdq, x, enc, rounding="half_even")


@FAST
@given(ORT_CASES)
def test_onnx_runtime_int8_codes_are_the_onnx_signed_reference(case):
    x, enc = case
    assert_quantize_matches(ort_quantize_int8, x, enc, rounding="half_even",
                            convention="onnx_signed")


def test_onnx_runtime_is_not_aimet_on_ties():
    enc = qsim.quant.from_min_max(0.0, 255.0, bitwidth=8)
    x = np.array([0.5, 1.5, 2.5], dtype=np.float32)
    with pytest.raises(AssertionError, match="exact tie"):
        assert_qdq_matches(ort_qdq, x, enc)
    with pytest.raises(AssertionError, match="integer codes differ"):
        assert_quantize_matches(ort_quantize_int8, x, enc, rounding="nearest",
                                convention="onnx_signed")


# ---------------------------------------------------------------- min-max encodings

def independent_min_max(x, *, bitwidth):
    """Asymmetric min-max encoding written from numerics.md §2 (float64, ties away from zero)."""
    lo, hi = min(float(np.min(x)), 0.0), max(float(np.max(x)), 0.0)
    n = 2 ** bitwidth - 1
    delta = max((hi - lo) / n, 2.0 ** -23)
    offset = -np.floor(-lo / delta + 0.5) if -lo / delta >= 0 else -np.ceil(-lo / delta - 0.5)
    return delta, min(max(offset, -n), 0.0)


@FAST
@given(float32_arrays(magnitude=1e3), st.sampled_from([4, 8, 16]))
def test_assert_encoding_matches_accepts_the_formula_of_the_reference(x, bw):
    assert_encoding_matches(lambda x: independent_min_max(x, bitwidth=bw), x, bitwidth=bw)


def test_assert_encoding_matches_catches_a_range_without_zero():
    x = np.array([1.0, 3.0], dtype=np.float32)

    def forgets_zero(x):
        return (float(x.max() - x.min()) / 255, -round(float(x.min()) / (float(x.max() - x.min()) / 255)))

    with pytest.raises(AssertionError, match="min-max encoding of data in"):
        assert_encoding_matches(forgets_zero, x, bitwidth=8)


# ---------------------------------------------------------------- the strategies keep their promises

@FAST
@given(encodings())
def test_encodings_are_aimet_shaped_and_zero_is_on_the_grid(enc):
    n = 2 ** enc.bitwidth - 1
    assert np.all(enc.delta > 0) and np.all(enc.offset <= 0) and np.all(enc.offset >= -n)
    assert np.all(enc.offset == np.round(enc.offset))
    zero = np.zeros(1, np.float32)
    assert reference_qdq(zero, enc.channel(0) if enc.axis is not None else enc)[0] == 0.0


@FAST
@given(encodings(exact_ties=True, channels=3), st.integers(0, 2), st.data())
def test_exact_tie_encodings_make_exact_ties(enc, c, data):
    q = data.draw(st.integers(0, enc.num_steps - 1))
    shape = (3,)
    kind = np.full(shape, 1, np.int8)                                # the tie kind
    x = grid_probe_values(kind, np.full(shape, q), np.zeros(shape), enc, shape)
    t = np.float64(x[c]) / enc.delta[c] - enc.offset[c]              # exact in float64
    assert t - np.floor(t) == 0.5


@FAST
@given(per_channel_layouts())
def test_per_channel_layouts_have_a_valid_axis(layout):
    shape, axis = layout
    assert 0 <= axis < len(shape) and all(s >= 1 for s in shape)


@FAST
@given(float32_arrays(magnitude=10.0))
def test_float32_arrays_stay_in_range(x):
    assert x.dtype == np.float32 and np.all(np.abs(x) <= 10.0)


def test_float32_arrays_produce_edge_values():
    tiny = float(np.finfo(np.float32).smallest_subnormal)
    found = find(float32_arrays(), lambda x: bool(np.any(x == tiny)), settings=FIRST_FOUND)
    assert tiny in edge_values() and np.any(found == tiny)


@settings(max_examples=25, deadline=None)
@given(small_graphs())
def test_small_graphs_run_the_same_in_qsim_and_onnx_runtime(case):
    graph, feeds = case
    model = qsim.to_onnx(graph)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = sess.run(None, feeds)
    got = qsim.run(graph, feeds)["y"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_explain_mismatch_counts_and_truncates():
    enc = qsim.quant.from_min_max(0.0, 255.0, bitwidth=8)
    x = np.full(8, 2.5, np.float32)
    text = explain_mismatch(x, reference_qdq(x, enc), np.full(8, 2.0, np.float32), enc, shown=3)
    assert text.splitlines()[0].startswith("8 of 8 elements differ")
    assert text.splitlines()[-1].strip() == "… and 5 more"
