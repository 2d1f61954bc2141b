"""Run ONNX's backend node test cases (generated from the installed onnx wheel) in qsim and in
ONNX Runtime, and classify each case. Used by tests/test_backend_suite.py; run it as a script
for the figures: ``python -m tests.backend_suite``."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

import qsim
from qsim.errors import QsimError

_OPTIONS = ort.SessionOptions()
_OPTIONS.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
_OPTIONS.intra_op_num_threads = 1
_OPTIONS.log_severity_level = 4


@dataclass(frozen=True)
class Result:
    name: str
    status: str      # "exact", "close", "differs", "qsim-refused", "qsim-crash", "ort-refused",
    #                  "unsupported", "reference-close"/"reference-differs" (ORT refused: qsim
    #                  against the outputs shipped with the case, rtol 1e-4 / atol 1e-5)
    detail: str = ""
    float_outputs: int = 0


def cases():
    """Every node test case ONNX generates, then the model folders the wheel ships
    (pytorch-converted, pytorch-operator, simple): (name, model, [(inputs, outputs)])."""
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return [(c.name, c.model, c.data_sets) for c in collect_testcases("")] + folder_cases()


def folder_cases():
    """The shipped model folders with their first data set (outputs computed by the framework
    that made the model: PyTorch for the converted ones)."""
    from pathlib import Path

    import onnx
    from onnx import numpy_helper
    root = Path(onnx.__file__).parent / "backend" / "test" / "data"
    found = []
    for kind in ("pytorch-converted", "pytorch-operator", "simple"):
        for folder in sorted((root / kind).glob("*")):
            data = sorted(folder.glob("test_data_set_*"))
            if not (folder / "model.onnx").exists() or not data:
                continue
            read = lambda pattern: [numpy_helper.to_array(onnx.load_tensor(str(p)))  # noqa: E731
                                    for p in sorted(data[0].glob(pattern))]
            found.append((f"{kind}/{folder.name}", onnx.load(str(folder / "model.onnx")),
                          [(read("input_*.pb"), read("output_*.pb"))]))
    return found


def _ort(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), _OPTIONS,
                                providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _compare(expected, got) -> tuple[str, str, int]:
    status, detail, floats = "exact", "", 0
    for i, (e, g) in enumerate(zip(expected, got)):
        e, g = np.asarray(e), np.asarray(g)
        if e.shape != g.shape or e.dtype != g.dtype:
            return "differs", f"output {i}: {g.dtype}{list(g.shape)} vs ORT {e.dtype}{list(e.shape)}", floats
        if e.dtype.kind == "f":
            floats += 1
            if np.array_equal(e, g, equal_nan=True):
                continue
            if np.allclose(g, e, rtol=1e-5, atol=1e-6, equal_nan=True):
                status, detail = "close", f"output {i}: max |diff| {np.nanmax(np.abs(g.astype(float) - e)):.3g}"
                continue
            return "differs", f"output {i}: max |diff| {np.nanmax(np.abs(g.astype(float) - e)):.3g}", floats
        if e.dtype.kind == "O" or not np.array_equal(e, g):
            return "differs", f"output {i}: values differ", floats
    return status, detail, floats


def run_case(name, model, data_sets) -> Result:
    inputs, reference = data_sets[0]
    params = {i.name for i in model.graph.initializer}
    feeds = {v.name: a for v, a in zip([v for v in model.graph.input if v.name not in params],
                                        inputs)}
    ort_refusal = None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            expected = _ort(model, feeds)
        except Exception as exc:
            ort_refusal = str(exc).splitlines()[0][:160]
            if not reference or name.startswith("test_"):
                return Result(name, "ort-refused", ort_refusal)
            expected = reference
        try:
            graph = qsim.load_onnx(model)
        except QsimError as exc:
            unsupported = "not supported" in str(exc) or "qsim runs tensors only" in str(exc)
            return Result(name, "unsupported" if unsupported else "qsim-refused",
                          str(exc).splitlines()[-1].strip()[:200])
        try:
            outputs = qsim.run(graph, feeds)
        except QsimError as exc:
            return Result(name, "qsim-refused", str(exc)[:200])
        except Exception as exc:  # noqa: BLE001 - a crash is what this classifies
            return Result(name, "qsim-crash", f"{type(exc).__name__}: {exc}"[:200])
    got = [outputs[o.name] for o in model.graph.output]
    if ort_refusal is not None:
        ok = all(np.asarray(g).shape == np.asarray(e).shape
                 and np.allclose(g, e, rtol=1e-4, atol=1e-5, equal_nan=True)
                 for e, g in zip(expected, got))
        return Result(name, "reference-close" if ok else "reference-differs", ort_refusal)
    status, detail, floats = _compare(expected, got)
    return Result(name, status, detail, floats)


def run_all():
    return [run_case(*c) for c in cases()]


if __name__ == "__main__":  # pragma: no cover - the figures for a report
    import collections
    results = run_all()
    counts = collections.Counter(r.status for r in results)
    print(dict(counts))
    for r in results:
        if r.status not in ("exact", "unsupported"):
            print(f"{r.status:13s} {r.name}: {r.detail}")
