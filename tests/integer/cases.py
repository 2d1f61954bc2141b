"""The models the integer target is checked on: the bundled digits CNN (default W8A8 config) and
the golden AIMET cases: cnn-seed0 and models/* each at 8- and 16-bit activations, real/* at the
case's own activation bitwidth (8 or 16; the real architectures are the slow ones to run), with
their calibration data. ``case(name)`` is cached: each sim is calibrated once per session."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

import qsim
from qsim.transforms import fold_batch_norms

ROOT = Path(__file__).resolve().parents[1] / "data" / "golden"
DIGITS = Path(qsim.__file__).parent / "data"


def _golden_folders() -> list[Path]:
    models = sorted(p for p in (ROOT / "models").iterdir() if (p / "case.json").is_file())
    real = sorted(p for p in (ROOT / "real").iterdir() if (p / "case.json").is_file())
    return models + real


#: case id → (folder or None, activation type)
CASES = {"digits_a8": (None, "int8")}
CASES.update({"cnn-seed0_a8": (ROOT / "cnn-seed0", "int8"),
              "cnn-seed0_a16": (ROOT / "cnn-seed0", "int16")})
for _f in _golden_folders():
    _own = json.loads((_f / "case.json").read_text())["activation_type"]
    for _act in ("int8", "int16") if _f.parent.name == "models" else (_own,):
        CASES[f"{_f.parent.name}/{_f.name}_a{_act[3:]}"] = (_f, _act)


def digits_sim():
    """The bundled digits CNN (batch norms folded, default W8A8 config, tf_enhanced) calibrated
    on its 256 calibration digits in batches of 32, and its 597 held-out digits."""
    graph, _ = fold_batch_norms(qsim.load_onnx(DIGITS / "digits_cnn.onnx"))
    data = np.load(DIGITS / "digits.npz")
    sim = qsim.QuantizationSimModel(graph, quant_scheme="tf_enhanced", param_type="int8",
                                    activation_type="int8", config_file="default")
    x = data["calib_x"]
    sim.compute_encodings([{"input": x[i:i + 32]} for i in range(0, len(x), 32)])
    return sim, data["test_x"]


def _digits():
    sim, test_x = digits_sim()
    return sim, {"input": test_x[:64]}


def _cnn_seed0(act: str):
    folder = ROOT / "cnn-seed0"
    sim = qsim.QuantizationSimModel(qsim.load_onnx(folder / "model.onnx"),
                                    quant_scheme="tf_enhanced", param_type="int8",
                                    activation_type=act,
                                    config_file=str(folder / "configs" /
                                                    "default_config_per_channel.json"))
    calib = np.load(folder / "calib_inputs.npz")["input"]
    sim.compute_encodings([{"input": b} for b in calib])
    return sim, dict(np.load(folder / "eval_input.npz"))


def _golden(folder: Path, act: str):
    info = json.loads((folder / "case.json").read_text())
    sim = qsim.QuantizationSimModel(qsim.load_onnx(folder / "model.onnx"),
                                    quant_scheme=info["scheme"], param_type=info["param_type"],
                                    activation_type=act, config_file=str(folder / "config.json"))
    if info["percentile"] is not None:
        sim.set_percentile_value(info["percentile"])
    calib = dict(np.load(folder / "calib.npz"))
    starts = np.cumsum([0] + info["calib_batch_sizes"])
    sim.compute_encodings([{k: v[a:b] for k, v in calib.items()}
                           for a, b in zip(starts[:-1], starts[1:])])
    return sim, dict(np.load(folder / "eval.npz"))


@lru_cache(maxsize=None)
def case(case_id: str):
    """``(calibrated sim, eval feeds)`` of a case."""
    folder, act = CASES[case_id]
    if folder is None:
        return _digits()
    if folder.name == "cnn-seed0":
        return _cnn_seed0(act)
    return _golden(folder, act)
