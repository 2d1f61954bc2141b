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
