"""Quantized models made by another tool (ONNX Runtime's own quantizer, quantize_static) run in
qsim exactly as ONNX Runtime runs them (graph optimizations off, so ONNX Runtime executes the
nodes as written): QOperator models (QuantizeLinear → QLinearConv → DequantizeLinear) and QDQ
models with 8-, 16- and 4-bit types, per tensor and per channel, on the bundled digits CNN.

ONNX Runtime's float kernels (the Conv/Gemm between Q/DQ pairs in QDQ models) are its live
kernel family, which qsim's ``fp32_kernels="auto"`` picks too, so the test holds on AVX2 and
AVX-512 machines alike.
"""
from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

import qsim
from tests.ort_util import CalibrationBatches, converted_model

ROOT = pathlib.Path(__file__).parent.parent.parent
MODEL = ROOT / "examples" / "digits_cnn.onnx"
DATA = np.load(ROOT / "examples" / "digits.npz")


@pytest.fixture(scope="module")
def opset21_model(tmp_path_factory) -> pathlib.Path:
    """The digits CNN at opset 21 (16- and 4-bit QuantizeLinear need it)."""
    return converted_model(MODEL, tmp_path_factory.mktemp("models") / "digits_opset21.onnx", 21)


@pytest.mark.parametrize("fmt, act, weight, per_channel", [
    ("QOperator", QuantType.QUInt8, QuantType.QInt8, False),
    ("QOperator", QuantType.QUInt8, QuantType.QInt8, True),
    ("QOperator", QuantType.QInt8, QuantType.QInt8, True),
    ("QDQ", QuantType.QUInt8, QuantType.QInt8, True),
    ("QDQ", QuantType.QInt8, QuantType.QInt8, False),
    ("QDQ", QuantType.QUInt16, QuantType.QInt8, True),
    ("QDQ", QuantType.QInt16, QuantType.QInt16, False),
    ("QDQ", QuantType.QUInt8, QuantType.QInt4, True),
    ("QDQ", QuantType.QUInt16, QuantType.QUInt4, False),
])
def test_onnxruntime_quantized_model_runs_bit_exact(tmp_path, opset21_model, fmt, act, weight,
                                                     per_channel):
    source = MODEL if fmt == "QOperator" else opset21_model
    out = tmp_path / "quantized.onnx"
    # QOperator: only Conv, so that no com.microsoft op (QGemm, QLinearGlobalAveragePool)
    # appears; 7-bit weights (reduce_range), which ONNX Runtime's non-VNNI x86 kernels multiply
    # without saturating, so AVX2 machines agree too
    extra = {"op_types_to_quantize": ["Conv"], "reduce_range": True} if fmt == "QOperator" \
        else {}
    quantize_static(str(source), str(out), CalibrationBatches(DATA["calib_x"][:64]),
                    quant_format=getattr(QuantFormat, fmt), activation_type=act,
                    weight_type=weight, per_channel=per_channel, **extra)
    ops = {n.op_type for n in onnx.load(out).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert ("QLinearConv" in ops) == (fmt == "QOperator")
    x = DATA["test_x"][:64]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    expected = sess.run(None, {"input": x})
    graph = qsim.load_onnx(out)
    intermediate = [n.outputs[0] for n in graph.nodes
                    if n.op_type in ("QuantizeLinear", "QLinearConv")]
    got = qsim.run(graph, {"input": x}, outputs=names + intermediate)
    for name, e in zip(names, expected):
        assert got[name].dtype == e.dtype
        np.testing.assert_array_equal(got[name].view(np.uint32), e.view(np.uint32))
    # every integer tensor as well (fetched from ONNX Runtime as extra graph outputs)
    model = onnx.load(out)
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in intermediate)
    sess = ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])
    for name, e in zip(intermediate, sess.run(intermediate, {"input": x})):
        assert got[name].dtype == e.dtype
        np.testing.assert_array_equal(got[name], e, err_msg=name)
