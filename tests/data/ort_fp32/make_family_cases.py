"""Make the float32 golden files of one ONNX Runtime kernel family (run from a qsim checkout).

ONNX Runtime's MLAS picks its kernels from the CPU, so the outputs below depend on the machine:

    .venv/bin/python tests/data/ort_fp32/make_family_cases.py                 # this CPU's family
    qemu-x86_64 -cpu Haswell .venv/bin/python tests/data/ort_fp32/make_family_cases.py   # AVX2

(QEMU user-mode emulation of an AVX2-only CPU makes ONNX Runtime take its AVX2/FMA3 kernels on an
AVX-512 machine; QEMU cannot emulate AVX-512, so that family needs a real AVX-512 CPU.) The family
is read from the (possibly emulated) CPU as qsim's ``"auto"`` reads it, and the files go to
``tests/data/ort_fp32/<family>/`` (or ``<first argument>/<family>/``):

* ``ops.json`` + ``ops.npz``: single-op cases, ``c{i}_in{j}`` inputs and ``c{i}_out_t{t}`` ONNX
  Runtime's output with ``intra_op_num_threads`` = t (1 and 2), graph optimizations off;
* ``models.npz``: ``{model}/{output}`` outputs of whole models (the golden AIMET models' FP32
  graphs on their eval inputs, the digits CNN on its first 64 held-out digits), 2 threads.

The cases are fixed by a seeded generator, so two families' files hold the same inputs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from qsim.kernels.family import host_family  # noqa: E402
from tests.ort_util import ort_run_op, session_options  # noqa: E402

THREADS = (1, 2)


def session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                providers=["CPUExecutionProvider"])


def op_cases() -> list[dict]:
    """Every op whose float32 bits come from an MLAS/Eigen kernel, over lengths that cross the
    8- and 16-lane boundaries of both families."""
    rng = np.random.default_rng(20261205)

    def randn(*shape, scale=3.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    cases = []

    def add(op, inputs, attrs=None, initializers=(), opset=17, tag=""):
        cases.append(dict(op=op, inputs=inputs, attrs=attrs or {}, initializers=initializers,
                          opset=opset, tag=tag))

    lengths = list(range(1, 41)) + [47, 48, 49, 63, 64, 65, 127, 128, 129, 197, 255, 256, 257,
                                     1000, 4096]
    for d in lengths:
        for op in ("Softmax", "LogSoftmax"):
            add(op, [randn(3, d)], {"axis": -1}, tag=f"rows3 d{d}")
        for op in ("Exp", "Sigmoid", "Tanh", "Erf", "Softsign"):
            add(op, [randn(d)], tag=f"n{d}")
        add("Log", [np.abs(randn(d)) + np.float32(1e-3)], tag=f"n{d}")
        add("Gelu", [randn(d)], opset=20, tag=f"n{d}")
        add("ReduceSum", [randn(2, d), np.array([1], np.int64)], {"keepdims": 1}, (1,), tag=f"row d{d}")
        add("ReduceMean", [randn(2, d)], {"axes": [1], "keepdims": 1}, tag=f"row d{d}")
        add("ReduceMax", [randn(2, d)], {"axes": [1], "keepdims": 1}, tag=f"row d{d}")
        add("ReduceL2", [randn(2, d)], {"axes": [1], "keepdims": 1}, tag=f"row d{d}")
        add("LayerNormalization", [randn(2, d), randn(d, scale=1), randn(d, scale=1)],
            {"axis": -1, "epsilon": 1e-5}, tag=f"d{d}")
        add("GlobalAveragePool", [randn(1, 3, 1, d)], tag=f"hw1x{d}")
    # masked attention rows: -inf / -1e9 entries, and an all -inf row
    for d in (8, 17, 33, 128):
        x = randn(4, d)
        x[0, d // 2:] = -np.inf
        x[1, ::3] = np.float32(-1e9)
        x[3, :] = -np.inf
        for op in ("Softmax", "LogSoftmax"):
            add(op, [x], {"axis": -1}, tag=f"masked d{d}")
    for n in (1, 2, 3, 7, 8, 9, 16, 17, 33):
        for e in (2.0, 3.0, 0.5, 1.5, -1.0):
            add("Pow", [np.abs(randn(n)) + np.float32(0.1), np.array([e], np.float32)],
                tag=f"n{n} e{e}")
    for (c, mult, k, s, hw) in [(4, 1, 3, 1, 8), (4, 1, 3, 2, 9), (8, 1, 5, 1, 12), (8, 1, 7, 2, 14),
                                (6, 2, 7, 2, 14), (6, 2, 3, 1, 8), (3, 2, 5, 2, 11), (16, 1, 3, 1, 16),
                                (32, 1, 3, 2, 17), (8, 4, 3, 1, 10), (24, 1, 3, 1, 7)]:
        add("Conv", [randn(2, c, hw, hw), randn(c * mult, 1, k, k, scale=0.3),
                     randn(c * mult, scale=0.1)],
            {"group": c, "kernel_shape": [k, k], "strides": [s, s], "pads": [k // 2] * 4},
            (1, 2), tag=f"depthwise c{c} m{mult} k{k} s{s} hw{hw}")
    for (cin, cout, k, s, hw, g) in [(3, 8, 3, 1, 16, 1), (16, 16, 3, 2, 9, 1), (8, 8, 3, 1, 10, 2),
                                     (32, 32, 3, 1, 7, 1), (3, 16, 7, 2, 20, 1), (16, 24, 1, 1, 12, 1)]:
        add("Conv", [randn(2, cin, hw, hw), randn(cout, cin // g, k, k, scale=0.2),
                     randn(cout, scale=0.1)],
            {"group": g, "kernel_shape": [k, k], "strides": [s, s], "pads": [k // 2] * 4},
            (1, 2), tag=f"conv {cin}->{cout} k{k} s{s} hw{hw} g{g}")
    for (m, k, n) in [(1, 7, 5), (3, 16, 16), (17, 33, 65), (8, 300, 24), (2, 1000, 10)]:
        add("MatMul", [randn(m, k), randn(k, n, scale=0.1)], tag=f"{m}x{k}x{n}")
        add("MatMul", [randn(m, k), randn(k, n, scale=0.1)], initializers=(1,),
            tag=f"{m}x{k}x{n} constB")
        add("Gemm", [randn(m, k), randn(n, k, scale=0.1), randn(n, scale=0.1)], {"transB": 1},
            (1, 2), tag=f"{m}x{k}x{n}")
    for (hw, k, s) in [(8, 2, 2), (9, 3, 2), (14, 3, 1), (7, 7, 1), (32, 3, 2)]:
        for op in ("AveragePool", "MaxPool"):
            add(op, [randn(2, 4, hw, hw)], {"kernel_shape": [k, k], "strides": [s, s]},
                tag=f"hw{hw} k{k} s{s}")
    for hw in (1, 3, 7, 8, 9, 17):
        add("BatchNormalization", [randn(2, 5, hw, hw), randn(5, scale=1), randn(5, scale=1),
                                   randn(5, scale=1), np.abs(randn(5, scale=1)) + 0.1],
            {"epsilon": 1e-5}, tag=f"hw{hw}")
        add("InstanceNormalization", [randn(2, 5, hw, hw), randn(5, scale=1), randn(5, scale=1)],
            {"epsilon": 1e-5}, tag=f"hw{hw}")
    return cases


def model_cases() -> list[tuple[str, onnx.ModelProto, dict]]:
    golden = ROOT / "tests" / "data" / "golden"
    out = []
    for case in sorted(p for p in (golden / "models").iterdir() if p.is_dir()):
        out.append((case.name, onnx.load(str(case / "model.onnx")), dict(np.load(case / "eval.npz"))))
    cnn = golden / "cnn-seed0"
    out.append(("cnn-seed0", onnx.load(str(cnn / "model.onnx")), dict(np.load(cnn / "eval_input.npz"))))
    digits = np.load(ROOT / "examples" / "digits.npz")
    model = onnx.load(str(ROOT / "examples" / "digits_cnn.onnx"))
    name = model.graph.input[0].name
    out.append(("digits_cnn", model, {name: digits["test_x"][:64]}))
    return out


def main() -> None:
    family = host_family()
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    folder = root / family
    folder.mkdir(parents=True, exist_ok=True)
    records, arrays = [], {}
    for i, case in enumerate(op_cases()):
        for j, a in enumerate(case["inputs"]):
            arrays[f"c{i}_in{j}"] = a
        for t in THREADS:
            arrays[f"c{i}_out_t{t}"] = ort_run_op(case["op"], case["inputs"], case["attrs"],
                                                 opset=case["opset"],
                                                 initializers=case["initializers"], threads=t)[0]
        records.append(dict(id=i, op=case["op"], tag=case["tag"], attrs=case["attrs"],
                            initializers=list(case["initializers"]), opset=case["opset"]))
        print(f"{family} op case {i}: {case['op']} {case['tag']}", flush=True)
    np.savez_compressed(folder / "ops.npz", **arrays)
    meta = dict(family=family, onnxruntime=ort.__version__, onnx=onnx.__version__,
                graph_optimization="ORT_DISABLE_ALL", threads=list(THREADS), cases=records)
    (folder / "ops.json").write_text(json.dumps(meta, indent=0))
    outputs = {}
    for name, model, feeds in model_cases():
        sess = session(model, 2)
        for out_name, value in zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)):
            outputs[f"{name}/{out_name}"] = value
        print(f"{family} model {name}", flush=True)
    np.savez_compressed(folder / "models.npz", **outputs)


if __name__ == "__main__":
    main()
