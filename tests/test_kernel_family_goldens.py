"""Both of ONNX Runtime's float32 kernel families, on any CPU.

``tests/data/ort_fp32/<family>/`` holds what ONNX Runtime computed with its AVX2/FMA3 kernels
(made under QEMU with an AVX2-only CPU model) and with its AVX-512F kernels (made on an AVX-512
CPU): single ops with 1 and 2 threads, and whole models (``make_family_cases.py`` there). qsim
with ``fp32_kernels=<family>`` must give the same bits on whatever CPU runs the suite, so a
machine of one family still checks the other. The live ONNX Runtime of this machine is checked
against the golden files of its own family, which ties the files to the pinned ONNX Runtime.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import qsim
from qsim.kernels.family import FAMILIES, host_family
from qsim.kernels.gemm import DEFAULT_THREADS
from qsim.ops import OPS
from qsim.ops.registry import internal_keywords
from tests.ort_util import ort_run_op

DATA = Path(__file__).parent / "data" / "ort_fp32"
GOLDEN = Path(__file__).parent / "data" / "golden"
#: the thread count whose ONNX Runtime output qsim's kernels follow (machines here have 2 cores)
THREADS = min(DEFAULT_THREADS, 2)


def _ops(family: str) -> tuple[list[dict], dict]:
    meta = json.loads((DATA / family / "ops.json").read_text())
    return meta["cases"], np.load(DATA / family / "ops.npz")


def _inputs(arrays, case) -> list[np.ndarray]:
    inputs, j = [], 0
    while f"c{case['id']}_in{j}" in arrays:
        inputs.append(arrays[f"c{case['id']}_in{j}"])
        j += 1
    return inputs


def _run_op(case: dict, inputs: list[np.ndarray], family: str) -> np.ndarray:
    """qsim's op with the registry's calling convention, as the executor calls it."""
    fn = OPS[case["op"]]
    kwargs = dict(case["attrs"])
    wanted = internal_keywords(fn)
    if "constant_b" in wanted:
        kwargs["constant_b"] = 1 in case["initializers"]
    if "fp32_kernels" in wanted:
        kwargs["fp32_kernels"] = family
    return np.asarray(fn(*inputs, **kwargs))


def _bits_differ(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    same = (got.view(np.uint32) == expected.view(np.uint32)) | (np.isnan(got) & np.isnan(expected))
    return np.flatnonzero(~same)


def _case_ids(family: str) -> list[str]:
    cases, _ = _ops(family)
    return [f"{c['id']}-{c['op']}-{c['tag']}" for c in cases]


@pytest.mark.parametrize("family", FAMILIES)
def test_single_ops_equal_onnxruntime_of_each_family(family):
    """Every single-op case of the family's golden file, bit for bit (NaN = NaN)."""
    cases, arrays = _ops(family)
    wrong = []
    for case in cases:
        expected = arrays[f"c{case['id']}_out_t{THREADS}"]
        got = _run_op(case, _inputs(arrays, case), family)
        if got.shape != expected.shape or got.dtype != expected.dtype:
            wrong.append(f"{case['op']} {case['tag']}: {got.dtype}{got.shape} vs ORT "
                         f"{expected.dtype}{expected.shape}")
            continue
        bad = _bits_differ(got.ravel(), expected.ravel())
        if bad.size:
            wrong.append(f"{case['op']} {case['tag']}: {bad.size} of {got.size} elements differ, "
                         f"first at {bad[0]}: qsim {got.ravel()[bad[0]]!r} vs ORT "
                         f"{expected.ravel()[bad[0]]!r}")
    assert not wrong, f"{family}: {len(wrong)} of {len(cases)} cases differ:\n" + "\n".join(wrong)


def _model_cases() -> list[tuple[str, Path, dict]]:
    cases = [(p.name, p / "model.onnx", dict(np.load(p / "eval.npz")))
             for p in sorted((GOLDEN / "models").iterdir()) if p.is_dir()]
    cnn = GOLDEN / "cnn-seed0"
    cases.append(("cnn-seed0", cnn / "model.onnx", dict(np.load(cnn / "eval_input.npz"))))
    root = Path(__file__).parents[1] / "examples"
    model = onnx.load(str(root / "digits_cnn.onnx"))
    cases.append(("digits_cnn", root / "digits_cnn.onnx",
                  {model.graph.input[0].name: np.load(root / "digits.npz")["test_x"][:64]}))
    return cases


@pytest.mark.parametrize("family", FAMILIES)
def test_whole_models_equal_onnxruntime_of_each_family(family):
    """The golden AIMET models' FP32 graphs and the digits CNN, every output bit for bit."""
    expected = np.load(DATA / family / "models.npz")
    wrong = []
    for name, path, feeds in _model_cases():
        graph = qsim.load_onnx(path)
        got = qsim.run(graph, feeds, fp32_kernels=family)
        for out in graph.output_names:
            bad = _bits_differ(got[out].ravel(), expected[f"{name}/{out}"].ravel())
            if bad.size:
                wrong.append(f"{name} {out}: {bad.size} of {got[out].size} elements differ")
    assert not wrong, f"{family}:\n" + "\n".join(wrong)


def test_this_machines_onnxruntime_equals_its_familys_golden_files():
    """The live ONNX Runtime reproduces the committed files of this CPU's family (1 and 2
    threads), so the files are what the pinned ONNX Runtime computes, not stale numbers."""
    family = host_family()
    cases, arrays = _ops(family)
    wrong = []
    for case in cases:
        inputs = _inputs(arrays, case)
        for t in (1, 2):
            live = ort_run_op(case["op"], inputs, case["attrs"], opset=case["opset"],
                              initializers=case["initializers"], threads=t)[0]
            if _bits_differ(live.ravel(), arrays[f"c{case['id']}_out_t{t}"].ravel()).size:
                wrong.append(f"{case['op']} {case['tag']} t{t}")
    assert not wrong, f"live ONNX Runtime {ort.__version__} ({family}) differs from the golden files: {wrong}"
