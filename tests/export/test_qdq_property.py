"""Hypothesis: ONNX Runtime's QuantizeLinear → DequantizeLinear built by :func:`qsim.qdq.qdq_pair`
equals qsim's ``half_even`` quantize-dequantize bit for bit, for any encoding qsim can build
(4/8/16 bits, asymmetric, symmetric, strict, unsigned, per tensor or per channel), signed or
unsigned ONNX type, on data with exact ties, out-of-range values and zeros."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from hypothesis import given, settings, strategies as st

from qsim.qdq import qdq_pair
from qsim.quant import from_min_max, quantize_dequantize


def _run_pair(enc, signed, x):
    nodes, inits = qdq_pair("t", enc, signed, src="x", dst="y")
    graph = onnx.helper.make_graph(
        nodes, "pair", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, x.shape)],
        initializer=inits)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 21)])
    model.ir_version = 10
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@st.composite
def cases(draw):
    bw = draw(st.sampled_from([4, 8, 16]))
    channels = draw(st.sampled_from([None, 3]))
    kind = draw(st.sampled_from(["asym", "sym", "strict", "unsigned"]))
    size = 1 if channels is None else channels
    lo = np.array(draw(st.lists(st.floats(-50, 0, width=32), min_size=size, max_size=size)))
    hi = np.array(draw(st.lists(st.floats(0, 50, width=32), min_size=size, max_size=size)))
    if kind == "unsigned":
        lo = np.zeros_like(lo)
    if channels is None:
        lo, hi = lo[0], hi[0]
    enc = from_min_max(lo, hi, bitwidth=bw, symmetric=kind != "asym",
                       strict_symmetric=kind == "strict", unsigned_symmetric=kind == "unsigned",
                       axis=None if channels is None else 1)
    signed = draw(st.booleans()) and kind != "unsigned"
    seed = draw(st.integers(0, 2 ** 31))
    return enc, signed, seed


@settings(max_examples=40, deadline=None)
@given(cases())
def test_ort_qdq_pair_equals_half_even_kernel(case):
    enc, signed, seed = case
    rng = np.random.default_rng(seed)
    delta = np.atleast_1d(enc.delta).astype(np.float32).reshape(1, -1, 1)
    k = rng.integers(-(2 ** enc.bitwidth) - 5, 2 ** enc.bitwidth + 5, size=(2, delta.shape[1], 16))
    ties = (k + np.float32(0.5)) * delta                    # halfway points, inside and outside
    spread = rng.normal(0, 60, size=(2, delta.shape[1], 16))
    x = np.concatenate([ties, spread, np.zeros((2, delta.shape[1], 1))], axis=2).astype(np.float32)
    if enc.axis is None:
        x = x[:, :1]
    want = quantize_dequantize(x, enc, rounding="half_even")
    np.testing.assert_array_equal(_run_pair(enc, signed, x), want)
