"""A training step runs through the golden MobileNetV2 blocks (Clip6, depthwise Conv, Add), the misc
model (ConvTranspose) and the transformer encoder block (MatMul attention, Softmax,
LayerNormalization): every parameter of ``sim.parameters()`` gets a finite gradient of its own
shape, and a small SGD step against it lowers the loss on the same batch."""
from pathlib import Path

import numpy as np
import pytest

from qsim.sim import QuantizationSimModel
from qsim.train import SGD, mse

MODELS = Path(__file__).resolve().parents[1] / "data" / "golden" / "models"


@pytest.mark.parametrize("case", ["mbv2_s30_default_tf_w8a8", "transformer_s31_default_tf_w8a8",
                                  "misc_s32_default_tf_w8a8"])
def test_training_step_through_golden_model(case):
    d = MODELS / case
    sim = QuantizationSimModel(str(d / "model.onnx"), quant_scheme="training_range_learning_with_tf_init",
                               config_file=str(d / "config.json"))
    x = np.load(d / "calib.npz")["input"]
    sim.compute_encodings([{"input": x[i:i + 4]} for i in range(0, len(x), 4)])
    feeds = {"input": x[:8]}
    out = sim.run(feeds)
    name = next(iter(out))
    target = np.random.default_rng(0).standard_normal(out[name].shape).astype(np.float32)
    loss_fn = mse(target)
    loss0, grads = sim.value_and_grad(feeds, loss_fn)
    params = sim.parameters()
    assert set(grads) == set(params)
    for k, g in grads.items():
        assert g.shape == params[k].shape and g.dtype == np.float32, k
        assert np.all(np.isfinite(g)), k
    assert any(np.any(g != 0) for g in grads.values())
    SGD(lr=1e-3).step(sim, grads)
    loss1, _ = sim.value_and_grad(feeds, loss_fn)
    assert np.isfinite(loss0) and loss1 < loss0
