"""FP32 execution matches the FP32 results recorded with AIMET 2.42 (ONNX Runtime underneath):
the whole-model output and every intermediate tensor of cnn-seed0, and each golden model case."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import qsim

GOLDEN = Path(__file__).parent / "data" / "golden"
CNN = GOLDEN / "cnn-seed0"
CASES = sorted(p.parent.name for p in (GOLDEN / "models").glob("*/model.onnx"))
RTOL, ATOL = 1e-5, 1e-6


def test_golden_corpus_is_present():
    index = json.loads((GOLDEN / "models" / "INDEX.json").read_text())
    assert sorted(c["case_id"] for c in index["cases"]) == CASES
    assert len(CASES) >= 9


def test_cnn_seed0_output_and_every_intermediate_tensor():
    graph = qsim.load_onnx(CNN / "model.onnx")
    x = np.load(CNN / "eval_input.npz")["input"]
    expected = dict(np.load(CNN / "fp32_intermediates.npz"))
    produced = {o for n in graph.nodes for o in n.outputs}
    # the golden file records every tensor a node produces
    assert produced <= set(expected), sorted(produced - set(expected))
    names = sorted(expected)
    got = qsim.run(graph, {"input": x}, outputs=names)
    for name in names:
        np.testing.assert_allclose(got[name], expected[name], rtol=RTOL, atol=ATOL, err_msg=name)
        assert got[name].dtype == expected[name].dtype, name
    out = qsim.run(graph, {"input": x})[graph.output_names[0]]
    np.testing.assert_allclose(out, np.load(CNN / "fp32_output.npy"), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", CASES)
def test_golden_model_fp32_outputs(case):
    folder = GOLDEN / "models" / case
    graph = qsim.load_onnx(folder / "model.onnx")
    feeds = dict(np.load(folder / "eval.npz"))
    expected = dict(np.load(folder / "fp32_outputs.npz"))
    assert sorted(expected) == sorted(graph.output_names)
    got = qsim.run(graph, feeds)
    for name, want in expected.items():
        assert got[name].shape == want.shape and got[name].dtype == want.dtype, name
        np.testing.assert_allclose(got[name], want, rtol=RTOL, atol=ATOL, err_msg=f"{case}: {name}")
