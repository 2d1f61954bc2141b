"""Make the golden files of ONNX Runtime's MatMulNBits with int8 compute for one kernel family.

    .venv/bin/python tests/data/ort_nbits_int8/make_cases.py                    # this CPU
    qemu-x86_64 -cpu Haswell .venv/bin/python tests/data/ort_nbits_int8/make_cases.py

ONNX Runtime's CPU session rewrites ``DequantizeLinear(8-bit weight) → MatMul`` with 16-bit
activations into com.microsoft MatMulNBits with ``bits=8``, ``block_size=32`` and
``accuracy_level=4`` (MLAS's ``SQNBIT_CompInt8``), whose arithmetic depends on the CPU's kernel
family (QEMU's Haswell makes ONNX Runtime take its AVX2 kernels on an AVX-512 machine). The
family is read from the (possibly emulated) CPU and the files go to ``<family>/cases.json``
(attributes and shapes) and ``<family>/cases.npz`` (``c{i}_in{j}`` inputs, absent ones left
out, and ``c{i}_out`` ONNX Runtime's output, 2 intra-op threads, B, scales, zero points and bias
stored as initializers as in an exported model). A seeded generator fixes the cases, so both
families' files hold the same inputs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from qsim.kernels.family import host_family  # noqa: E402
from tests.ort_util import ort_run_op  # noqa: E402

F32 = np.float32
BLOCK = 32


def cases() -> list[dict]:
    """Shapes that reach every path of the kernels: one row and many (batch dims), K a multiple
    of 4 blocks or not (a partial last block), N a multiple of 4 or not and above 128, bias and
    no bias, random and saturating operands."""
    rng = np.random.default_rng(20261206)
    shapes = [((1,), 32, 16, False), ((1,), 64, 5, True), ((1,), 96, 40, False),
              ((1,), 128, 16, True), ((1,), 160, 7, False), ((1,), 100, 20, True),
              ((2,), 256, 130, False), ((4,), 256, 48, True), ((3, 5), 96, 40, True),
              ((2, 3, 4), 200, 33, False), ((7,), 1024, 64, False), ((1,), 700, 131, True),
              ((17,), 384, 66, True), ((2, 65), 64, 24, False)]
    out = []
    for i, (lead, k, n, bias) in enumerate(shapes):
        blocks = -(-k // BLOCK)
        a = (rng.standard_normal(lead + (k,)) * np.exp(rng.uniform(-3, 3))).astype(F32)
        q = rng.integers(0, 256, (n, blocks, BLOCK)).astype(np.uint8)
        s = np.exp(rng.uniform(-7, 0, n * blocks)).astype(F32)
        z = rng.integers(0, 256, n * blocks).astype(np.uint8)
        if i % 4 == 3:                  # saturating products: |A| at its block maximum, B extreme
            a = np.where(rng.random(a.shape) < 0.5, -1.0, 1.0).astype(F32) * F32(3.5)
            q = np.where(rng.random(q.shape) < 0.8, 255, 0).astype(np.uint8)
        b = rng.standard_normal(n).astype(F32) if bias else None
        out.append(dict(attrs={"K": k, "N": n, "bits": 8, "block_size": BLOCK,
                               "accuracy_level": 4},
                        inputs=[a, q, s, z, None, b]))
    return out


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    family = host_family()
    meta, arrays = [], {}
    for i, case in enumerate(cases()):
        inputs = case["inputs"]
        inits = [j for j in (1, 2, 3, 5) if inputs[j] is not None]
        y = ort_run_op("MatMulNBits", inputs, case["attrs"], domain="com.microsoft",
                       initializers=inits, threads=2)[0]
        meta.append(dict(attrs=case["attrs"], ninputs=len(inputs)))
        for j, x in enumerate(inputs):
            if x is not None:
                arrays[f"c{i}_in{j}"] = x
        arrays[f"c{i}_out"] = y
    out = folder / family
    out.mkdir(parents=True, exist_ok=True)
    (out / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")
    np.savez_compressed(out / "cases.npz", **arrays)
    print(f"{len(meta)} cases -> {out}")


if __name__ == "__main__":
    main()
