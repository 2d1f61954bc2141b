"""The sim's exports against AIMET's files, round trips through every format, and AIMET's own
files loaded into qsim."""
from __future__ import annotations

import json

import numpy as np
import pytest

from qsim.encodings_io import load_encodings_into, read_encodings
from qsim.export import encodings_document, write_encodings

from .golden import (CASES, FILES, aimet_outputs, differences, eval_feeds, folder, golden_doc,
                     new_sim, shared_calibrated_sim)

VERSIONS = ["1.0.0", "0.6.1", "2.0.0"]


def _doc(sim, version):
    doc = json.loads(json.dumps(encodings_document(sim, version)))
    doc.pop("producer")
    return doc


def _gold(case_id, version):
    doc = golden_doc(case_id, version)
    doc.pop("producer")
    return doc


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case_id", CASES)
def test_export_of_aimet_encodings_equals_aimet_file(case_id, version):
    """With AIMET's encodings loaded, qsim writes AIMET's three files bit for bit: names, order
    (tie members, params/activations, int32 biases, derived entries), fields, types, numbers."""
    sim = new_sim(case_id)
    load_encodings_into(sim, folder(case_id) / FILES["1.0.0"])
    assert differences(_doc(sim, version), _gold(case_id, version)) == []


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case_id", CASES)
def test_export_of_calibrated_sim_matches_aimet_file(case_id, version):
    """After qsim's own calibration: the same document, every number exactly equal (the
    FP32 arithmetic under the quantizers is ONNX Runtime's, bit for bit)."""
    sim = shared_calibrated_sim(case_id)
    assert differences(_doc(sim, version), _gold(case_id, version)) == []


def _as_kernels_see_it(enc):
    """Settings and the float32 min/max/delta/offset the quantize kernels use."""
    arrays = tuple(np.asarray(getattr(enc, n), dtype=np.float32).tobytes()
                   for n in ("min", "max", "delta", "offset"))
    return (enc.bitwidth, enc.axis, enc.symmetric, enc.strict_symmetric) + arrays


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case_id", CASES)
def test_round_trip_gives_identical_outputs(case_id, version, tmp_path):
    sim = shared_calibrated_sim(case_id)
    path = write_encodings(encodings_document(sim, version), tmp_path / "x.encodings")
    fresh = new_sim(case_id)
    report = load_encodings_into(fresh, path)
    assert report.problems == () and report.disabled == ()
    for tensor, handle in sim.quantizers.items():
        if handle.enabled:
            assert _as_kernels_see_it(fresh.quantizers[tensor].encoding) == \
                _as_kernels_see_it(handle.encoding), tensor
    feeds = eval_feeds(case_id)
    want, got = sim.run(feeds), fresh.run(feeds)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("case_id", CASES)
def test_aimet_files_give_aimet_outputs(case_id, version):
    """Loading AIMET's own file (any format) into an uncalibrated sim reproduces AIMET's
    simulated outputs on eval.npz (to 1e-5 of an output LSB, as tests/test_sim_golden.py)."""
    sim = new_sim(case_id)
    load_encodings_into(sim, folder(case_id) / FILES[version])
    got = sim.run(eval_feeds(case_id))
    for name, expected in aimet_outputs(case_id).items():
        handle = sim.quantizers.get(name)
        lsb = float(handle.encoding.delta) if handle is not None and handle.enabled else 0.0
        np.testing.assert_allclose(got[name], expected, rtol=0, atol=1e-5 * lsb, err_msg=name)


@pytest.mark.parametrize("case_id", CASES)
def test_files_of_every_format_load_to_the_same_encodings(case_id):
    sims = {}
    for version in VERSIONS:
        sims[version] = new_sim(case_id)
        load_encodings_into(sims[version], folder(case_id) / FILES[version])
    for tensor, handle in sims["1.0.0"].quantizers.items():
        if handle.enabled:
            for version in ("0.6.1", "2.0.0"):
                assert _as_kernels_see_it(sims[version].quantizers[tensor].encoding) == \
                    _as_kernels_see_it(handle.encoding), (version, tensor)
