"""The ONNX Runtime rewrite on QDQ models another tool made: the digits CNN (BatchNormalization
not folded, opset 21) quantized by ONNX Runtime's own ``quantize_static`` in QDQ format, with
8-bit (unsigned and signed activations), 16-bit and 4-bit-weight settings. qsim's rewritten graph
has the node multiset of ONNX Runtime's optimized dump, and the integer model returns its default
session's bits."""
from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

import qsim
from qsim.integer import integer_model
from qsim.integer.ort_fusion import ort_graph
from tests.ort_util import CalibrationBatches, converted_model

DATA_DIR = Path(qsim.__file__).parent / "data"


@pytest.fixture(scope="module")
def opset21(tmp_path_factory) -> Path:
    return converted_model(DATA_DIR / "digits_cnn.onnx",
                           tmp_path_factory.mktemp("digits") / "digits21.onnx", 21)


@pytest.mark.parametrize("act, weight, per_channel", [
    (QuantType.QUInt8, QuantType.QInt8, True),
    (QuantType.QInt8, QuantType.QInt8, False),     # int8 activations: ORT's S8 -> U8 rewrite
    (QuantType.QUInt8, QuantType.QUInt8, False),
    (QuantType.QUInt16, QuantType.QInt8, True),
    (QuantType.QInt16, QuantType.QInt16, False),
    (QuantType.QUInt8, QuantType.QInt4, True),
])
def test_quantize_static_models(tmp_path, opset21, act, weight, per_channel):
    data = np.load(DATA_DIR / "digits.npz")
    out = tmp_path / "q.onnx"
    quantize_static(str(opset21), str(out), CalibrationBatches(data["calib_x"][:64]),
                    quant_format=QuantFormat.QDQ, activation_type=act, weight_type=weight,
                    per_channel=per_channel)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "dump.onnx")
    ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    graph = qsim.load_onnx(out, check=False)
    mine = collections.Counter(f"{n.domain}:{n.op_type}" for n in ort_graph(graph).nodes)
    theirs = collections.Counter(f"{n.domain}:{n.op_type}"
                                 for n in onnx.load(tmp_path / "dump.onnx").graph.node)
    assert mine == theirs, (dict(mine - theirs), dict(theirs - mine))
    feeds = {"input": data["test_x"][:64]}
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    want = session.run(None, feeds)
    got = integer_model(graph).run(feeds)
    for g, w in zip(got.values(), want):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g.view(np.uint8), w.view(np.uint8))
