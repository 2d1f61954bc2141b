"""The executor computes float32 models bit for bit as ONNX Runtime's CPU provider does
(graph optimizations off, as in AIMET's simulation session)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import qsim

GOLDEN = Path(__file__).parent / "data" / "golden" / "models"


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.mark.parametrize("case", sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()))
def test_golden_models_bitwise_equal_to_ort(case):
    model = onnx.load(str(GOLDEN / case / "model.onnx"))
    feeds = dict(np.load(GOLDEN / case / "eval.npz"))
    expected = _ort(model, feeds)
    graph = qsim.load_onnx(model)
    got = qsim.run(graph, feeds)
    for name, e in zip(graph.output_names, expected):
        np.testing.assert_array_equal(got[name], e, err_msg=name)


@pytest.mark.parametrize("k", [64, 300, 700])
def test_initializer_operands_are_prepacked_like_ort(k):
    """ORT pre-packs a MatMul/Gemm B that is an initializer (other summation blocks than a
    computed B); the executor tells the op, and the sim does not (AIMET's weights are computed)."""
    rng = np.random.default_rng(k)
    w = rng.standard_normal((k, 40)).astype(np.float32)
    b = rng.standard_normal((40, k)).astype(np.float32)
    x = rng.standard_normal((33, k)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"]),
         helper.make_node("Gemm", ["x", "B"], ["z"], transB=1)], "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    y, z = _ort(model, {"x": x})
    got = qsim.run(qsim.load_onnx(model), {"x": x})
    np.testing.assert_array_equal(got["y"], y)
    np.testing.assert_array_equal(got["z"], z)


def test_relu_folded_into_conv_and_batchnorm_is_bitwise_ort():
    """A Relu that alone reads a Conv's or a BatchNormalization's output runs inside that node
    (one pass less); a Relu whose input is also read elsewhere or requested stays a node. Every
    result, the requested intermediate included, is ORT's, and equals the run with every tensor
    observed (which folds nothing)."""
    from qsim.interpreter import _relu_fusions
    rng = np.random.default_rng(5)
    c = 8
    params = {"W1": rng.standard_normal((c, 3, 3, 3)), "B1": rng.standard_normal(c),
              "W2": rng.standard_normal((c, c, 1, 1)), "W3": rng.standard_normal((c, c, 3, 3)),
              "S": rng.uniform(0.5, 2, c), "T": rng.standard_normal(c),
              "M": rng.standard_normal(c), "V": rng.uniform(0.5, 2, c)}
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),                         # folded
             helper.make_node("Conv", ["r1", "W2"], ["c2"]),
             helper.make_node("BatchNormalization", ["c2", "S", "T", "M", "V"], ["n2"]),
             helper.make_node("Relu", ["n2"], ["r2"]),                         # folded
             helper.make_node("Conv", ["r2", "W3"], ["c3"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c3"], ["r3"]),                         # c3 requested
             helper.make_node("Conv", ["r3", "W2"], ["c4"]),
             helper.make_node("Relu", ["c4"], ["r4"]),                         # c4 read twice
             helper.make_node("Add", ["r4", "c4"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, (2, 3, 9, 9))],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None),
         helper.make_tensor_value_info("c3", onnx.TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v.astype(np.float32), k) for k, v in params.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    y, c3 = _ort(model, {"x": x})
    g = qsim.load_onnx(model)
    assert _relu_fusions(g, g.output_names, None) == {0: 1, 3: 4}
    got = qsim.run(g, {"x": x})
    observed = qsim.run(g, {"x": x}, observe=lambda name, value: None)
    for name, want in (("y", y), ("c3", c3)):
        np.testing.assert_array_equal(got[name].view(np.uint32), want.view(np.uint32))
        np.testing.assert_array_equal(observed[name].view(np.uint32), want.view(np.uint32))
    assert (got["y"] < 0).any() and (c3 < 0).any()      # the Relus had something to clip
