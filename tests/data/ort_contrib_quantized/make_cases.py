"""Make the golden files of ONNX Runtime's com.microsoft quantized ops for one kernel family.

    .venv/bin/python tests/data/ort_contrib_quantized/make_cases.py                   # this CPU
    qemu-x86_64 -cpu Haswell .venv/bin/python tests/data/ort_contrib_quantized/make_cases.py

(QEMU's Haswell makes ONNX Runtime take its AVX2 kernels on an AVX-512 machine.) The family is
read from the (possibly emulated) CPU and the files go to ``<family>/cases.json`` (op, attrs,
number of inputs) and ``<family>/cases.npz`` (``c{i}_in{j}`` inputs, absent ones left out, and
``c{i}_out`` ONNX Runtime's output with qsim's default thread count, graph optimizations off). A seeded generator
fixes the cases, so both families' files hold the same inputs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from qsim.kernels.family import host_family  # noqa: E402
from qsim.kernels.mlas_math import DEFAULT_THREADS  # noqa: E402
from tests.ort_util import ort_run_op  # noqa: E402

F32 = np.float32


def cases() -> list[dict]:
    rng = np.random.default_rng(20261205)

    def ints(dtype, shape):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max + 1, shape).astype(dtype)

    def zp(dtype):
        return ints(dtype, ())

    def scale(lo=-6.0, hi=1.0):
        return F32(np.exp(rng.uniform(lo, hi)))

    out = []

    def add(op, inputs, attrs=None):
        out.append(dict(op=op, inputs=inputs, attrs=attrs or {}))

    for dt in (np.uint8, np.int8):
        for sa, sb in [((4, 37), (4, 37)), ((4, 37), (37,)), ((1,), (4, 37)), ((4, 1), (1, 9))]:
            for op in ("QLinearAdd", "QLinearMul"):
                add(op, [ints(dt, sa), scale(), zp(dt), ints(dt, sb), scale(), zp(dt), scale(),
                         zp(dt)])
        x = ints(dt, (2, 3, 5, 7))
        add("QLinearSigmoid", [x, scale(-5, 0), zp(dt), scale(-9, -3), zp(dt)])
        add("QLinearLeakyRelu", [x, scale(), zp(dt), scale(), zp(dt)], {"alpha": 0.1})
        for cl in (0, 1):
            add("QLinearGlobalAveragePool", [x, scale(-3, 0), zp(dt), scale(-3, 0), zp(dt)],
                {"channels_last": cl})
        add("QLinearAveragePool", [x, scale(), zp(dt), scale(), zp(dt)],
            {"kernel_shape": [3, 3], "strides": [2, 1], "pads": [1, 1, 1, 0],
             "count_include_pad": 1})
        s_y, z_y = scale(), zp(dt)
        add("QLinearConcat", [s_y, z_y, x, scale(), zp(dt), ints(dt, (2, 2, 5, 7)), s_y, z_y],
            {"axis": 1})
        for opset, axis in ((12, 1), (13, 2)):
            z = dt(0) if dt == np.uint8 else dt(-128)
            add("QLinearSoftmax", [x, scale(-5, 0), zp(dt), F32(1 / 256), z],
                {"axis": axis, "opset": opset})
    for ta, tb in ((np.uint8, np.uint8), (np.uint8, np.int8), (np.int8, np.int8)):
        lo, hi = (-64, 64) if tb == np.int8 else (0, 256)
        a = ints(ta, (5, 33))
        b = rng.integers(lo, hi, (33, 19)).astype(tb)
        s_b = np.exp(rng.uniform(-6, 0, 19)).astype(F32)
        z_b = rng.integers(lo, hi, 19).astype(tb)
        c = rng.integers(-20000, 20000, (19,)).astype(np.int32)
        add("QGemm", [a, scale(), zp(ta), b, s_b, z_b, c, scale(-3, 1), zp(ta)], {"alpha": 1.0})
        add("QGemm", [a, scale(), zp(ta), b, s_b, z_b, c], {"alpha": 0.5})
        if ta == np.uint8:
            add("MatMulIntegerToFloat", [ints(np.uint8, (2, 5, 33)), b, scale(), s_b,
                                         zp(np.uint8), z_b, rng.standard_normal(19).astype(F32)])
            add("DynamicQuantizeMatMul", [(rng.standard_normal((2, 5, 33)) * 4).astype(F32), b,
                                          scale(), tb(lo + 3),
                                          rng.standard_normal(19).astype(F32)])
    for bits, rows in ((4, 3), (8, 1), (8, 4)):
        k, n, block = 70, 45, 32
        blocks = -(-k // block)
        q = rng.integers(0, 1 << bits, (n, blocks * block)).astype(np.uint8)
        q[:, k:] = 0
        q = q.reshape(n, blocks, block)
        b = q if bits == 8 else (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
        add("MatMulNBits", [(rng.standard_normal((rows, k)) * 2).astype(F32), b,
                            np.exp(rng.uniform(-6, -2, n * blocks)).astype(F32), None, None,
                            rng.standard_normal(n).astype(F32)],
            {"K": k, "N": n, "bits": bits, "block_size": block, "accuracy_level": 0})
    return out


def main() -> None:
    family = host_family()
    folder = Path(__file__).parent / family
    folder.mkdir(parents=True, exist_ok=True)
    records, arrays = [], {}
    for i, case in enumerate(cases()):
        for j, a in enumerate(case["inputs"]):
            if a is not None:
                arrays[f"c{i}_in{j}"] = np.asarray(a)
        constant = (1, 2, 3, 5) if case["op"] == "MatMulNBits" else ()
        arrays[f"c{i}_out"] = ort_run_op(case["op"], case["inputs"], case["attrs"], opset=17,
                                         domain="com.microsoft", initializers=constant,
                                         threads=DEFAULT_THREADS)[0]
        records.append(dict(id=i, op=case["op"], attrs=case["attrs"],
                            ninputs=len(case["inputs"])))
        print(f"{family} case {i}: {case['op']}", flush=True)
    np.savez_compressed(folder / "cases.npz", **arrays)
    meta = dict(family=family, onnxruntime=ort.__version__, graph_optimization="ORT_DISABLE_ALL",
                threads=DEFAULT_THREADS, cases=records)
    (folder / "cases.json").write_text(json.dumps(meta, indent=0))


if __name__ == "__main__":
    main()
