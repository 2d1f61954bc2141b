"""Shared helpers of the export tests: the golden AIMET 2.42 cases and document comparison."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

import qsim

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden" / "models"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())
FILES = {"1.0.0": "aimet.encodings", "0.6.1": "aimet_v0.6.1.encodings",
         "2.0.0": "aimet_v2.0.0.encodings"}


def folder(case_id: str) -> Path:
    return GOLDEN / case_id


def golden_doc(case_id: str, version: str) -> dict:
    return json.loads((GOLDEN / case_id / FILES[version]).read_text())


@lru_cache(maxsize=None)
def case_info(case_id: str) -> dict:
    return json.loads((GOLDEN / case_id / "case.json").read_text())


def batches(case_id: str) -> list[dict]:
    calib = dict(np.load(GOLDEN / case_id / "calib.npz"))
    starts = np.cumsum([0] + case_info(case_id)["calib_batch_sizes"])
    return [{k: v[a:b] for k, v in calib.items()} for a, b in zip(starts[:-1], starts[1:])]


def eval_feeds(case_id: str) -> dict:
    return dict(np.load(GOLDEN / case_id / "eval.npz"))


def aimet_outputs(case_id: str) -> dict:
    return dict(np.load(GOLDEN / case_id / "aimet_sim_outputs.npz"))


def new_sim(case_id: str, rounding_mode: str = "nearest"):
    """A fresh, uncalibrated sim configured as AIMET was for this case."""
    info = case_info(case_id)
    sim = qsim.QuantizationSimModel(qsim.load_onnx(GOLDEN / case_id / "model.onnx"),
                                    quant_scheme=info["scheme"], param_type=info["param_type"],
                                    activation_type=info["activation_type"],
                                    config_file=str(GOLDEN / case_id / "config.json"),
                                    rounding_mode=rounding_mode)
    if info["percentile"] is not None:
        sim.set_percentile_value(info["percentile"])
    return sim


def calibrated_sim(case_id: str, rounding_mode: str = "nearest"):
    sim = new_sim(case_id, rounding_mode)
    sim.compute_encodings(batches(case_id))
    return sim


def differences(mine, gold, path: str = "$", rtol: float = 0.0) -> list[str]:
    """Every place where two JSON documents differ: keys, list lengths, types, values.

    Numbers (not bools) compare equal within ``rtol`` (0: exactly); everything else exactly.
    """
    if isinstance(gold, dict):
        if not isinstance(mine, dict):
            return [f"{path}: {mine!r} is not an object"]
        out = [f"{path}: keys {sorted(set(mine) ^ set(gold))} differ"] \
            if set(mine) != set(gold) else []
        for k in gold:
            if k in mine:
                out += differences(mine[k], gold[k], f"{path}.{k}", rtol)
        return out
    if isinstance(gold, list):
        if not isinstance(mine, list) or len(mine) != len(gold):
            return [f"{path}: {len(mine) if isinstance(mine, list) else mine!r} items, "
                    f"expected {len(gold)}"]
        out = []
        for i, (a, b) in enumerate(zip(mine, gold)):
            out += differences(a, b, f"{path}[{i}]", rtol)
        return out
    if type(mine) is not type(gold):
        return [f"{path}: {mine!r} ({type(mine).__name__}), expected {gold!r} "
                f"({type(gold).__name__})"]
    if isinstance(gold, float):
        ok = mine == gold if rtol == 0 else abs(mine - gold) <= rtol * abs(gold)
        return [] if ok else [f"{path}: {mine!r}, expected {gold!r}"]
    return [] if mine == gold else [f"{path}: {mine!r}, expected {gold!r}"]


_CALIBRATED: dict = {}


def shared_calibrated_sim(case_id: str, rounding_mode: str = "nearest"):
    """One calibrated sim per case and mode for tests that only read it (never load into it)."""
    key = (case_id, rounding_mode)
    if key not in _CALIBRATED:
        _CALIBRATED[key] = calibrated_sim(case_id, rounding_mode)
    return _CALIBRATED[key]
