"""AIMET golden tensor cases (aimet-onnx 2.42): encodings and quantize-dequantize, bit for bit.

Each of the 240 cases feeds its calibration batches in order into one TensorQuantizer; AIMET's
delta and offset must come out exactly, min/max to 1e-12 relative, and the qdq of the probe
vector must equal AIMET's bits.
"""
from __future__ import annotations

import numpy as np
import pytest

from qsim.quant import TensorQuantizer

from .conftest import load_cases

CASES = load_cases()


def _quantizer(case: dict, **overrides) -> TensorQuantizer:
    settings = dict(scheme=case["scheme"], bitwidth=case["bitwidth"], symmetric=case["symmetric"],
                    strict_symmetric=case["strict_symmetric"],
                    unsigned_symmetric=case["unsigned_symmetric"], percentile=case["percentile"],
                    name=case["id"])
    settings.update(overrides)
    return TensorQuantizer(**settings)


def _batches(case, data):
    return [data[f"{case['id']}_batch{b}"] for b in range(case["num_batches"])]


def test_corpus_is_complete():
    assert len(CASES) == 240
    assert {c["scheme"] for c in CASES} == {"tf", "tf_enhanced", "percentile"}


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_encoding_and_qdq_match_aimet(case, tensor_data):
    q = _quantizer(case)
    for batch in _batches(case, tensor_data):
        q.update_stats(batch)
    enc = q.compute_encodings()
    want = case["expected"]
    assert enc.bitwidth == want["bw"]
    assert float(enc.delta) == want["delta"]
    assert float(enc.offset) == want["offset"]
    np.testing.assert_allclose(float(enc.min), want["min"], rtol=1e-12, atol=0)
    np.testing.assert_allclose(float(enc.max), want["max"], rtol=1e-12, atol=0)
    got = q.quantize_dequantize(tensor_data[f"{case['id']}_probe"])
    want_qdq = tensor_data[f"{case['id']}_qdq"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.int32), want_qdq.view(np.int32))


SAME_SETTINGS = [c for c in CASES if c["scheme"] == "tf_enhanced" and not c["symmetric"]
                 and c["bitwidth"] == 8 and c["num_batches"] == 1][:4]


def test_per_channel_equals_each_golden_case(tensor_data):
    """Stack single-batch cases of one setting as channels: each channel gives AIMET's encoding."""
    cases = [c for c in SAME_SETTINGS
             if tensor_data[f"{c['id']}_batch0"].shape == tensor_data[f"{SAME_SETTINGS[0]['id']}_batch0"].shape]
    assert len(cases) >= 2
    stacked = np.stack([tensor_data[f"{c['id']}_batch0"] for c in cases], axis=1)
    q = _quantizer(cases[0], axis=1)
    q.update_stats(stacked)
    enc = q.compute_encodings()
    assert enc.delta.shape == (len(cases),)
    for i, case in enumerate(cases):
        assert enc.delta[i] == case["expected"]["delta"]
        assert enc.offset[i] == case["expected"]["offset"]
