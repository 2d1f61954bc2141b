"""Make ``<family>/extra.json`` + ``extra.npz``: random cases of the ops whose float32 bits
depend on ONNX Runtime's kernel family (Softmax, LogSoftmax, the depthwise multiplier-2 Conv)
and of Pow, with ONNX Runtime's outputs on this CPU (run from a qsim checkout)::

    .venv/bin/python tests/data/ort_fp32/make_cases.py                    # this CPU's family
    qemu-x86_64 -cpu Haswell .venv/bin/python tests/data/ort_fp32/make_cases.py   # AVX2

The family is read from the (possibly emulated) CPU as qsim's ``"auto"`` reads it. The cases come
from a seeded generator (the same on every machine): row lengths across the 8/16/32/48-element
blocks of the max and sum-of-exponentials kernels, attention masks (-inf, -1e9, -FLT_MAX, NaN,
+inf, whole masked rows), depthwise Convs with a channel multiplier of 2 and 7x7 / 2 kernels of
every input size from 1 to 31 and near misses of MLAS's dispatch test (group 1, other pads,
multiplier 3), and Pow with every exponent shape and dtype. ``c{i}_in{j}`` are the inputs,
``c{i}_out_t{t}`` ONNX Runtime's output with ``intra_op_num_threads`` = t (1 and 2), graph
optimizations off. tests/test_fp32_families.py reads them.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[2]))
from make_family_cases import session, single_op_model  # noqa: E402
from qsim.kernels.family import host_family  # noqa: E402

THREADS = (1, 2)
MASKS = np.array([-np.inf, -1e9, np.finfo(np.float32).min, np.nan, np.inf, -100.0], np.float32)


def softmax_case(rng) -> dict:
    d = int(rng.choice([int(rng.integers(1, 70)), int(rng.integers(70, 200)),
                        int(rng.choice([127, 128, 129, 255, 256, 257, 513]))]))
    rows = int(rng.integers(1, 4))
    x = (rng.standard_normal((rows, d)) * rng.choice([0.5, 3.0, 30.0])).astype(np.float32)
    tag = f"{rows}x{d}"
    if rng.random() < 0.4:          # masks
        r = int(rng.integers(0, rows))
        picks = rng.random(d) < rng.choice([0.1, 0.5, 1.0])
        x[r, picks] = rng.choice(MASKS[:3] if rng.random() < 0.8 else MASKS, int(picks.sum()))
        tag += " masked"
    op = str(rng.choice(["Softmax", "LogSoftmax"]))
    if rng.random() < 0.2:          # another axis: ORT transposes it last
        x = x.reshape(rows, 1, d).transpose(2, 1, 0).copy()
        return dict(op=op, inputs=[x], attrs={"axis": 0}, initializers=(), opset=13,
                    tag=tag + " axis0")
    return dict(op=op, inputs=[x], attrs={"axis": -1}, initializers=(), opset=13, tag=tag)


def depthwise_case(rng, h: int, w: int, variant: str) -> dict:
    n, c = 1, int(rng.integers(2, 4))
    group, mult, pads = c, 2, [3, 3, 3, 3]
    if variant == "group1":
        c, group = 1, 1
    elif variant == "pads":
        pads = [3, 3, 2, 2]
    elif variant == "mult3":
        mult = 3
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((c * mult, c // group, 7, 7)) * 0.3).astype(np.float32)
    inputs, inits = [x, wt], (1,)
    if rng.random() < 0.7:
        inputs.append((rng.standard_normal(c * mult) * 0.1).astype(np.float32))
        inits = (1, 2)
    return dict(op="Conv", inputs=inputs, initializers=inits, opset=17,
                attrs={"group": group, "kernel_shape": [7, 7], "strides": [2, 2], "pads": pads},
                tag=f"{variant} n{n} c{c} m{mult} {h}x{w} bias{len(inputs) == 3}")


def pow_case(rng) -> dict:
    shape = tuple(int(v) for v in rng.integers(1, 6, int(rng.integers(1, 4))))
    x = (np.abs(rng.standard_normal(shape)) * 3 + 0.05).astype(np.float32)
    kind = str(rng.choice(["scalar", "size1", "full", "broadcast"]))
    dtype = rng.choice([np.float32, np.float32, np.float64, np.int64])
    values = [2.0, 3.0, 0.5, 1.5, -1.0, float(rng.standard_normal() * 2)]
    if kind == "scalar":
        y = np.array(rng.choice(values))
    elif kind == "size1":
        y = np.full((1,) * int(rng.integers(1, len(shape) + 1)), rng.choice(values))
    elif kind == "full":
        y = rng.standard_normal(shape) * 2
    else:
        y = rng.standard_normal(shape[-1:]) * 2
    y = np.round(y) if dtype == np.int64 else y
    y = np.asarray(y).astype(dtype)
    return dict(op="Pow", inputs=[x, y], attrs={}, initializers=(), opset=15,
                tag=f"x{shape} y{y.shape} {y.dtype} {kind}")


def extra_cases() -> list[dict]:
    rng = np.random.default_rng(20261205)
    cases = [softmax_case(rng) for _ in range(160)]
    for h in range(1, 32, 2):
        cases.append(depthwise_case(rng, h, int(rng.integers(1, 32)), "dw"))
        cases.append(depthwise_case(rng, int(rng.integers(1, 32)), h + 1, "dw"))
    for variant in ("group1", "pads", "mult3"):
        for _ in range(4):
            cases.append(depthwise_case(rng, int(rng.integers(8, 16)), int(rng.integers(8, 16)),
                                        variant))
    cases += [pow_case(rng) for _ in range(90)]
    return cases


def main() -> None:
    family = host_family()
    folder = HERE / family
    folder.mkdir(exist_ok=True)
    records, arrays = [], {}
    for i, case in enumerate(extra_cases()):
        model, feeds = single_op_model(case["op"], case["inputs"], case["attrs"],
                                       case["initializers"], case["opset"])
        for j, a in enumerate(case["inputs"]):
            arrays[f"c{i}_in{j}"] = a
        for t in THREADS:
            with np.errstate(all="ignore"):
                arrays[f"c{i}_out_t{t}"] = session(model, t).run(None, feeds)[0]
        records.append(dict(id=i, op=case["op"], tag=case["tag"], attrs=case["attrs"],
                            initializers=list(case["initializers"]), opset=case["opset"]))
    np.savez_compressed(folder / "extra.npz", **arrays)
    meta = dict(family=family, onnxruntime=ort.__version__, onnx=onnx.__version__,
                graph_optimization="ORT_DISABLE_ALL", threads=list(THREADS), cases=records)
    (folder / "extra.json").write_text(json.dumps(meta, indent=0))
    print(f"{len(records)} cases -> {folder}/extra.*")


if __name__ == "__main__":
    main()
