"""End-to-end parity with AIMET 2.42 on every golden case: placement, encodings, simulated outputs.

Each case is driven exactly as its ``case.json`` says AIMET was driven: the same config file,
scheme, bitwidths, calibration batches in order, and one eval batch.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import qsim

GOLDEN = Path(__file__).parent / "data" / "golden"
MODEL_CASES = sorted(p.name for p in (GOLDEN / "models").iterdir() if p.is_dir())
CNN_RUNS = ["default_tf", "default_tf_enhanced", "per_channel_tf", "per_channel_tf_enhanced"]


def _model_case(case_id: str):
    folder = GOLDEN / "models" / case_id
    case = json.loads((folder / "case.json").read_text())
    calib = dict(np.load(folder / "calib.npz"))
    sizes = case["calib_batch_sizes"]
    starts = np.cumsum([0] + sizes)
    batches = [{k: v[a:b] for k, v in calib.items()} for a, b in zip(starts[:-1], starts[1:])]
    return dict(folder=folder, model=folder / "model.onnx", config=folder / "config.json",
                scheme=case["scheme"], percentile=case["percentile"],
                param_type=case["param_type"], activation_type=case["activation_type"],
                batches=batches, eval=dict(np.load(folder / "eval.npz")),
                sim_outputs=dict(np.load(folder / "aimet_sim_outputs.npz")),
                encodings=json.loads((folder / "aimet.encodings").read_text()),
                quantizers=json.loads((folder / "aimet_quantizers.json").read_text()))


def _cnn_case(run: str):
    folder = GOLDEN / "cnn-seed0"
    config, scheme = run.split("_t", 1)
    cfg = "default_config.json" if config == "default" else "default_config_per_channel.json"
    calib = np.load(folder / "calib_inputs.npz")["input"]
    return dict(folder=folder / run, model=folder / "model.onnx", config=folder / "configs" / cfg,
                scheme="t" + scheme, percentile=None, param_type="int8", activation_type="int8",
                batches=[{"input": b} for b in calib],
                eval={"input": np.load(folder / "eval_input.npz")["input"]},
                sim_outputs={"output": np.load(folder / run / "sim_output.npy")},
                encodings=json.loads((folder / run / "sim.encodings").read_text()),
                quantizers=json.loads((folder / run / "quantizers.json").read_text()))


def _calibrated(case) -> qsim.QuantizationSimModel:
    sim = qsim.QuantizationSimModel(qsim.load_onnx(case["model"]), quant_scheme=case["scheme"],
                                    param_type=case["param_type"],
                                    activation_type=case["activation_type"],
                                    config_file=str(case["config"]))
    if case["percentile"] is not None:
        sim.set_percentile_value(case["percentile"])
    sim.compute_encodings(case["batches"])
    return sim


CASES = [pytest.param((_model_case, c), id=c) for c in MODEL_CASES] + \
        [pytest.param((_cnn_case, r), id=f"cnn-seed0-{r}") for r in CNN_RUNS]


@pytest.fixture(scope="module", params=CASES)
def golden(request):
    make, name = request.param
    case = make(name)
    return case, _calibrated(case)


def test_enabled_quantizers_match(golden):
    case, sim = golden
    expected = {name for name, q in case["quantizers"].items() if q["enabled"]}
    assert set(sim.enabled_quantizers()) == expected


def _entries(doc):
    return {e["name"]: (kind, e) for kind in ("activation_encodings", "param_encodings")
            for e in doc[kind]}


def test_encodings_match(golden):
    case, sim = golden
    ours = _entries(qsim.export.encodings_document(sim, "1.0.0"))
    theirs = _entries(case["encodings"])
    assert set(ours) == set(theirs)
    for name, (kind, e) in theirs.items():
        our_kind, o = ours[name]
        assert our_kind == kind, name
        for field in ("bw", "dtype", "enc_type", "is_sym"):
            assert o[field] == e[field], (name, field, o[field], e[field])
        assert o["offset"] == e["offset"], (name, o["offset"], e["offset"])
        np.testing.assert_allclose(o["scale"], e["scale"], rtol=1e-15, atol=0, err_msg=name)


def test_sim_outputs_match(golden):
    """Simulated outputs equal AIMET's to 1e-5 of an output LSB (in practice: identical)."""
    case, sim = golden
    outputs = sim.run(case["eval"])
    for name, expected in case["sim_outputs"].items():
        got = outputs[name]
        assert got.dtype == expected.dtype and got.shape == expected.shape
        handle = sim.quantizers.get(name)
        lsb = float(handle.encoding.delta) if handle is not None and handle.enabled else 0.0
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * lsb, err_msg=name)
