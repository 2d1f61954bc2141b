"""The nine light model-zoo models shipped in the onnx wheel (opset 9: AlexNet, DenseNet-121,
Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512 — LRN, old-opset Softmax,
Dropout and BatchNormalization forms) load, run and give ONNX Runtime's output bit for bit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import qsim

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MODELS = sorted(p.name for p in LIGHT.glob("light_*.onnx"))


def test_the_nine_models_are_there():
    assert len(MODELS) == 9, MODELS


@pytest.mark.parametrize("name", MODELS)
def test_light_zoo_model_equals_onnxruntime(name):
    model = onnx.load(str(LIGHT / name))
    params = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.uniform(0, 1, [d.dim_value or 1 for d in i.type.tensor_type.shape.dim])
             .astype(np.float32) for i in model.graph.input if i.name not in params}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    expected = ort.InferenceSession(model.SerializeToString(), options,
                                    providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = qsim.run(qsim.load_onnx(model), feeds)[model.graph.output[0].name]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    assert expected.std() > 0  # not a saturated or constant output


@pytest.mark.parametrize("opset", [10, 11, 12, 13, 18, 21])
@pytest.mark.parametrize("name", ["light_squeezenet.onnx", "light_inception_v1.onnx",
                                  "light_shufflenet.onnx"])
def test_light_zoo_model_at_other_opsets_equals_onnxruntime(name, opset):
    """The same models upgraded by onnx's version converter (Softmax before and after 13,
    Dropout/Clip/Pad/Squeeze/Reduce forms of each opset) still equal ORT bit for bit."""
    from onnx import version_converter
    model = version_converter.convert_version(onnx.load(str(LIGHT / name)), opset)
    assert {i.version for i in model.opset_import if i.domain in ("", "ai.onnx")} == {opset}
    params = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(opset)
    feeds = {i.name: rng.uniform(0, 1, [d.dim_value or 1 for d in i.type.tensor_type.shape.dim])
             .astype(np.float32) for i in model.graph.input if i.name not in params}
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    expected = ort.InferenceSession(model.SerializeToString(), options,
                                    providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    got = qsim.run(qsim.load_onnx(model), feeds)[model.graph.output[0].name]
    np.testing.assert_array_equal(got, expected)
