"""How often does fixed-point requantization (gemmlowp / TFLite) disagree with ONNX Runtime's
float requantization (MLAS: rne(float32(acc) * M))? Prints the fraction of differing outputs
for each rounding of qsim.integer.fixed_point, over random accumulators and multipliers.

    .venv/bin/python benchmarks/fixed_point_vs_float.py
"""
from __future__ import annotations

import numpy as np

from qsim.integer import fixed_point as fp

TWINS = {"double": fp.np_mbqm, "single": fp.np_mbqm_single, "int64": fp.np_mbqm64}


def main(trials: int = 200, n: int = 20_000, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    differ = dict.fromkeys(TWINS, 0)
    worst = dict.fromkeys(TWINS, 0)
    for _ in range(trials):
        m = np.float32(np.exp(rng.uniform(-12, -2)))
        acc = rng.integers(-2**20, 2**20, n).astype(np.int32)
        y_float = np.rint(acc.astype(np.float32) * m).astype(np.int64)
        q, shift = fp.quantize_multiplier(float(m))
        for name, f in TWINS.items():
            d = np.abs(f(acc, q, shift) - y_float)
            differ[name] += int(np.count_nonzero(d))
            worst[name] = max(worst[name], int(d.max()))
    total = trials * n
    print(f"{total} accumulators |acc| < 2^20, M = float32(exp(U(-12, -2)))")
    for name in TWINS:
        print(f"  {name:7s} differs from the float path in {100 * differ[name] / total:.3f} % "
              f"(at most {worst[name]} step(s))")


if __name__ == "__main__":
    main()
