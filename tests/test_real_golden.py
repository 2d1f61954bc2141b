"""End-to-end parity with AIMET 2.42 on real architectures (torchvision exports, random weights).

``tests/data/golden/real/<case>/`` has the published golden layout (``make_real_cases.py`` there
says how AIMET was driven). Each case is run as its ``case.json`` says, with
``fp32_kernels=<the family ONNX Runtime used when the case was made>``, so the float32 bits
under the quantizers are those AIMET saw whatever CPU runs the suite. Checked per case: AIMET's
quantizers (names and flags of every one, so the enabled set too), the exported encodings in all
three formats (every field, every number exactly, as tests/export/test_sim_export.py), and the
simulated outputs bit for bit.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import qsim
from qsim.export import encodings_document
from tests.placement.golden_util import golden_facts, predicted_facts
from tests.export.golden import differences

REAL = Path(__file__).parent / "data" / "golden" / "real"
CASES = sorted(p.name for p in REAL.iterdir() if (p / "case.json").is_file())
FILES = {"1.0.0": "aimet.encodings", "0.6.1": "aimet_v0.6.1.encodings",
         "2.0.0": "aimet_v2.0.0.encodings"}


def _info(case_id: str) -> dict:
    return json.loads((REAL / case_id / "case.json").read_text())


def _batches(case_id: str) -> list[dict]:
    calib = dict(np.load(REAL / case_id / "calib.npz"))
    starts = np.cumsum([0] + _info(case_id)["calib_batch_sizes"])
    return [{k: v[a:b] for k, v in calib.items()} for a, b in zip(starts[:-1], starts[1:])]


def _calibrated(case_id: str, fp32_kernels: str | None = None) -> qsim.QuantizationSimModel:
    """The case's sim, calibrated as AIMET was; ``fp32_kernels`` defaults to the case's family."""
    info, folder = _info(case_id), REAL / case_id
    sim = qsim.QuantizationSimModel(qsim.load_onnx(folder / "model.onnx"),
                                    quant_scheme=info["scheme"], param_type=info["param_type"],
                                    activation_type=info["activation_type"],
                                    config_file=str(folder / "config.json"),
                                    fp32_kernels=fp32_kernels or info["fp32_kernels"])
    if info["percentile"] is not None:
        sim.set_percentile_value(info["percentile"])
    sim.compute_encodings(_batches(case_id))
    return sim


@pytest.fixture(scope="module", params=CASES)
def real(request):
    return request.param, _calibrated(request.param)


def test_corpus_is_there():
    """Every architecture of the corpus has cases, ShuffleNetV2 one under htp_v75 (Concat ties)."""
    models = {_info(c)["model"] for c in CASES}
    assert {"shufflenet_v2_x0_5", "mobilenet_v3_small", "squeezenet1_1", "mnasnet0_5",
            "vit_tiny"} <= models
    assert any(c.startswith("shufflenet_v2_x0_5") and "_htp_v75_" in c for c in CASES)
    assert all(_info(c)["fp32_kernels"] in ("avx2", "avx512") for c in CASES)


def test_quantizers_and_flags_match_aimet(real):
    """The same quantizers as AIMET created (enabled or not), each with AIMET's flags
    (enabled, bitwidth, symmetric/strict/unsigned, per-channel and axis)."""
    case_id, sim = real
    dump = json.loads((REAL / case_id / "aimet_quantizers.json").read_text())
    golden = golden_facts(dump)
    predicted = predicted_facts(sim.placement, _info(case_id)["export_2.0.0"] == "ok")
    assert set(sim.enabled_quantizers()) == {n for n, q in dump.items() if q["enabled"]}
    assert set(predicted) == set(golden)
    wrong = {n: (predicted[n], golden[n]) for n in golden if predicted[n] != golden[n]}
    assert wrong == {}


@pytest.mark.parametrize("version", list(FILES))
def test_exported_encodings_equal_aimet_files(real, version):
    """Every entry of every format: names, order, fields, types, numbers exactly equal."""
    case_id, sim = real
    mine = json.loads(json.dumps(encodings_document(sim, version)))
    gold = json.loads((REAL / case_id / FILES[version]).read_text())
    mine.pop("producer")
    gold.pop("producer")
    assert differences(mine, gold) == []


def test_sim_outputs_bit_identical(real):
    case_id, sim = real
    outputs = sim.run(dict(np.load(REAL / case_id / "eval.npz")))
    for name, expected in np.load(REAL / case_id / "aimet_sim_outputs.npz").items():
        got = outputs[name]
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32),
                                      err_msg=name)


@pytest.mark.parametrize("case_id", CASES)
def test_fp32_outputs_bit_identical(case_id):
    """The FP32 model on eval.npz equals ONNX Runtime's outputs stored with the case."""
    info, folder = _info(case_id), REAL / case_id
    got = qsim.run(qsim.load_onnx(folder / "model.onnx"), dict(np.load(folder / "eval.npz")),
                   fp32_kernels=info["fp32_kernels"])
    for name, expected in np.load(folder / "fp32_outputs.npz").items():
        np.testing.assert_array_equal(got[name].view(np.uint32), expected.view(np.uint32),
                                      err_msg=name)


def test_vit_case_depends_on_the_kernel_family():
    """The ViT's attention Softmax rows (17 long) come out of the AVX2 and AVX-512 kernels with
    different bits, and AIMET's results follow its own family: with the other family, 39 of the
    40 simulated outputs of this case differ. So the corpus checks the family-specific kernels,
    not only the arithmetic the families share."""
    case_id = "vit_tiny_s44_per_channel_tfe_w8a16"
    other = {"avx512": "avx2", "avx2": "avx512"}[_info(case_id)["fp32_kernels"]]
    got = _calibrated(case_id, other).run(dict(np.load(REAL / case_id / "eval.npz")))["output"]
    expected = np.load(REAL / case_id / "aimet_sim_outputs.npz")["output"]
    assert np.count_nonzero(got != expected) > expected.size // 2
