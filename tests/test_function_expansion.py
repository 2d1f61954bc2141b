"""ONNX function ops without a qsim kernel are expanded into their bodies at load, and
sequence/optional values are refused by name.

ONNX Runtime has its own kernel for Attention, so the expanded body (made of qsim's ops) equals
it within a few float32 ulp, not bit for bit. (RMSNormalization and RotaryEmbedding have qsim
kernels, exact: tests/ops/test_ort_fused.py.)"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import qsim
from qsim.errors import GraphError, UnknownOpError
from qsim.ops import OPS


def _model(op, inputs, attrs, opset, *, extra_nodes=()):
    node = helper.make_node(op, [n for n, _ in inputs], ["y"], **attrs)
    graph = helper.make_graph(
        [node, *extra_nodes], "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


def _ort(model, feeds):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"]).run(None, feeds)[0]


CASES = {
    "Attention": ([("q", [1, 2, 3, 4]), ("k", [1, 2, 5, 4]), ("v", [1, 2, 5, 4])], {}),
    "Attention-causal": ([("q", [2, 2, 4, 8]), ("k", [2, 2, 4, 8]), ("v", [2, 2, 4, 8])],
                         {"is_causal": 1, "scale": 0.5}),
}


@pytest.mark.parametrize("case", sorted(CASES))
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_function_ops_are_expanded_and_match_ort(case, seed):
    inputs, attrs = CASES[case]
    op = case.split("-")[0]
    assert op not in OPS  # otherwise this test no longer exercises the expansion
    model = _model(op, inputs, attrs, 23)
    rng = np.random.default_rng(seed)
    feeds = {n: rng.uniform(-2, 2, s).astype(np.float32) for n, s in inputs}
    graph = qsim.load_onnx(model)
    assert all(n.op_type in OPS for n in graph.nodes) and len(graph.nodes) > 1
    got = qsim.run(graph, feeds)["y"]
    expected = _ort(model, feeds)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_an_op_without_kernel_or_function_is_still_reported():
    model = _model("Det", [("x", [2, 3, 3])], {}, 21)
    with pytest.raises(UnknownOpError, match="op type 'Det' is not supported"):
        qsim.load_onnx(model)


def test_sequence_graph_input_is_refused_by_name():
    seq = helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None)
    node = helper.make_node("SequenceAt", ["seq", "i"], ["y"])
    graph = helper.make_graph([node], "g", [seq, helper.make_tensor_value_info(
        "i", TensorProto.INT64, [])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(GraphError, match="graph input 'seq' is a sequence"):
        qsim.load_onnx(model)


def test_optional_graph_output_is_refused_by_name():
    node = helper.make_node("Optional", ["x"], ["opt"])
    out = helper.make_value_info("opt", helper.make_optional_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, [2])))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [2])], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(GraphError, match="graph output 'opt' is a optional"):
        qsim.load_onnx(model)


def test_identity_on_a_sequence_is_refused_naming_the_tensor():
    nodes = [helper.make_node("SequenceConstruct", ["x"], ["s"]),
             helper.make_node("Identity", ["s"], ["s2"]),
             helper.make_node("SequenceAt", ["s2", "i"], ["y"])]
    graph = helper.make_graph(nodes, "g", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
        helper.make_tensor_value_info("i", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(GraphError, match="tensor 's' is a sequence"):
        qsim.load_onnx(model)
