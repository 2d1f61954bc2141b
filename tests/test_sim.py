"""QuantizationSimModel behaviour beyond golden parity: API forms, bad input, state changes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import qsim
from qsim.errors import ConfigError, FeedError, NotCalibratedError, QsimError

GOLDEN = Path(__file__).parent / "data" / "golden"
CNN = GOLDEN / "cnn-seed0"


@pytest.fixture(scope="module")
def model():
    return qsim.load_onnx(CNN / "model.onnx")


@pytest.fixture(scope="module")
def batches():
    return [{"input": b} for b in np.load(CNN / "calib_inputs.npz")["input"]]


@pytest.fixture(scope="module")
def eval_feeds():
    return {"input": np.load(CNN / "eval_input.npz")["input"]}


def _sim(model, **kw):
    kw.setdefault("quant_scheme", "tf")
    kw.setdefault("config_file", str(CNN / "configs" / "default_config.json"))
    return qsim.QuantizationSimModel(model, **kw)


def test_run_and_export_before_calibration_raise(model, eval_feeds, tmp_path):
    sim = _sim(model)
    with pytest.raises(NotCalibratedError, match="compute_encodings"):
        sim.run(eval_feeds)
    with pytest.raises(NotCalibratedError):
        sim.export(tmp_path, "model")
    assert list(tmp_path.iterdir()) == []


def test_empty_calibration_raises(model):
    with pytest.raises(FeedError, match="no calibration batch"):
        _sim(model).compute_encodings([])


def test_single_dict_instead_of_iterable_raises(model, batches):
    with pytest.raises(FeedError, match="wrap it in a list"):
        _sim(model).compute_encodings(batches[0])


@pytest.mark.parametrize("feeds, match", [
    ({"x": np.zeros((4, 3, 16, 16), np.float32)}, "missing"),
    ({"input": np.zeros((4, 3, 16, 16), np.float64)}, "dtype float64"),
    ({"input": np.zeros((4, 3, 8, 8), np.float32)}, "shape"),
])
def test_bad_calibration_feeds_name_the_problem(model, feeds, match):
    with pytest.raises(FeedError, match=match):
        _sim(model).compute_encodings([feeds])


def test_callback_form_equals_iterable_form(model, batches, eval_feeds):
    a = _sim(model)
    a.compute_encodings(batches)

    def callback(session, args):
        for feeds in args:
            session.run(None, feeds)

    b = _sim(model)
    b.compute_encodings(callback, batches)
    np.testing.assert_array_equal(a.run(eval_feeds)["output"], b.run(eval_feeds)["output"])


def test_calibration_is_repeatable(model, batches, eval_feeds):
    sim = _sim(model)
    sim.compute_encodings(batches)
    first = sim.run(eval_feeds)["output"]
    sim.compute_encodings(batches)
    np.testing.assert_array_equal(first, sim.run(eval_feeds)["output"])


def test_disabling_every_quantizer_gives_fp32(model, batches, eval_feeds):
    sim = _sim(model)
    sim.compute_encodings(batches)
    for handle in sim.quantizers.values():
        handle.enabled = False
    np.testing.assert_array_equal(sim.run(eval_feeds)["output"],
                                  qsim.run(model, eval_feeds)["output"])


def test_setting_an_encoding_changes_the_output(model, batches, eval_feeds):
    sim = _sim(model)
    sim.compute_encodings(batches)
    before = sim.run(eval_feeds)["output"]
    handle = sim.quantizers["output"]
    enc = handle.encoding
    from qsim.quant.encoding import from_min_max
    handle.encoding = from_min_max(float(enc.min) * 4, float(enc.max) * 4, bitwidth=enc.bitwidth)
    after = sim.run(eval_feeds)["output"]
    assert not np.array_equal(before, after)
    grid = (after / handle.encoding.delta.astype(np.float32))
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-3)


@pytest.mark.parametrize("kwargs, match", [
    ({"quant_scheme": "nonsense"}, "quant_scheme"),
    ({"param_type": "int32"}, "param_type"),
    ({"activation_type": "float8"}, "activation_type"),
    ({"rounding_mode": "floor"}, "rounding_mode"),
])
def test_bad_constructor_arguments(model, kwargs, match):
    with pytest.raises(QsimError, match=match):
        _sim(model, **kwargs)


def test_bad_config_is_a_config_error(model):
    with pytest.raises(ConfigError):
        _sim(model, config_file={"defaults": {"ops": {"is_output_quantized": "Maybe"}}})


def test_percentile_setter_checks_scheme_and_range(model):
    with pytest.raises(QsimError, match="percentile"):
        _sim(model, quant_scheme="tf").set_percentile_value(99.9)
    with pytest.raises(QsimError, match=r"\[50, 100\]"):
        _sim(model, quant_scheme="percentile").set_percentile_value(20)


def test_export_writes_model_and_encodings(model, batches, tmp_path):
    import onnxruntime as ort
    sim = _sim(model)
    sim.compute_encodings(batches)
    onnx_path, enc_path = sim.export(tmp_path, "model")
    doc = json.loads(enc_path.read_text())
    assert doc["version"] == "1.0.0"
    names = {e["name"] for e in doc["activation_encodings"] + doc["param_encodings"]}
    assert names == set(sim.enabled_quantizers())
    feeds = {"input": np.load(CNN / "eval_input.npz")["input"]}
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, feeds)[0], qsim.run(model, feeds)["output"],
                               rtol=1e-5, atol=1e-6)


def test_export_creates_a_missing_folder_and_rejects_a_file(model, batches, tmp_path):
    sim = _sim(model)
    sim.compute_encodings(batches)
    onnx_path, enc_path = sim.export(tmp_path / "new" / "dir", "model")
    assert onnx_path.is_file() and enc_path.is_file()
    (tmp_path / "file").write_text("x")
    with pytest.raises(qsim.ExportError, match="is a file"):
        sim.export(tmp_path / "file", "model")
    assert (tmp_path / "file").read_text() == "x"


def test_explain_lists_every_quantizer(model):
    text = _sim(model).explain()
    for name in ("conv1.weight", "conv1.bias", "input", "conv1_out", "relu1_out", "output"):
        assert name in text


def test_failed_calibration_leaves_previous_encodings(model, batches, eval_feeds):
    sim = _sim(model)
    sim.compute_encodings(batches)
    before = sim.run(eval_feeds)["output"]
    bad = batches[:2] + [{"input": np.zeros((4, 3, 16, 16), np.float64)}]
    with pytest.raises(FeedError, match="calibration batch 2"):
        sim.compute_encodings(bad)
    np.testing.assert_array_equal(sim.run(eval_feeds)["output"], before)


def test_failed_first_calibration_leaves_sim_uncalibrated(model, batches, eval_feeds):
    sim = _sim(model)
    with pytest.raises(FeedError):
        sim.compute_encodings(batches[:1] + [{"x": batches[0]["input"]}])
    with pytest.raises(NotCalibratedError):
        sim.run(eval_feeds)
    assert all(h.encoding is None for h in sim.quantizers.values())
