"""Speed of the quantization kernels against NumPy baselines timed in the same run, same array.

Prints, for 1M and 16M float32 elements (best of several repeats, milliseconds):
  min/max statistics          vs np.max(x)                            goal <= 1.5x
  tf-enhanced histogram update vs np.max(x)                           goal <= 4x
                              vs np.histogram(x, bins=same edges)     goal >= 5x faster
    (the default, which counts a channel of >= 2^18 elements on every core, and threads=1;
    np.max is single-threaded)
  quantize-dequantize         vs np.clip(x, lo, hi, out=y)            goal <= 3x
and the tf-enhanced search (1536 bins, 8-bit asymmetric, goal < 1 ms) and the first-call cost
(compilation or on-disk cache load) of each kernel, measured in a fresh interpreter.

Run: .venv/bin/python benchmarks/bench_quant.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

FIRST_CALL = r"""
import time, numpy as np
x = np.linspace(-1, 1, 1000, dtype=np.float32)
t0 = time.perf_counter()
from qsim.quant import TensorQuantizer, from_min_max, dequantize
t1 = time.perf_counter()
dequantize(np.zeros(3, np.int64), from_min_max(-1.0, 1.0, bitwidth=8)); t2 = time.perf_counter()
q = TensorQuantizer(scheme="tf_enhanced", bitwidth=8)
q.update_stats(x); t3 = time.perf_counter()
q.compute_encodings(); t4 = time.perf_counter()
q.quantize_dequantize(x); t5 = time.perf_counter()
m = TensorQuantizer(scheme="tf", bitwidth=8); m.update_stats(x); t6 = time.perf_counter()
print(f"import {1e3*(t1-t0):.0f} ms; first kernel (Numba start-up + its own load) "
      f"{1e3*(t2-t1):.0f} ms; then histogram {1e3*(t3-t2):.0f} ms, "
      f"tf-enhanced search {1e3*(t4-t3):.0f} ms, qdq {1e3*(t5-t4):.0f} ms, "
      f"min/max {1e3*(t6-t5):.0f} ms")
"""


def best_ms(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` in milliseconds (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return 1e3 * best


def bench_size(n: int) -> None:
    from qsim.quant import HistogramStats, MinMaxStats, TensorQuantizer

    from qsim.quant.stats import _as_batch, default_threads

    threads = default_threads(_as_batch(np.zeros(n, np.float32), None))
    rng = np.random.default_rng(0)
    x = rng.normal(size=n).astype(np.float32)
    y = np.empty_like(x)
    reps = 10 if n <= 1 << 20 else 4

    t_max = best_ms(lambda: np.max(x), reps)
    minmax = MinMaxStats.empty()
    t_mm = best_ms(lambda: minmax.update(x), reps)

    hist = HistogramStats.empty().update(x)          # bins fixed: later updates only bin
    t_hist = best_ms(lambda: hist.update(x), reps)
    t_hist_1 = best_ms(lambda: hist.update(x, threads=1), reps)
    edges = hist.edges(0)
    t_nphist = best_ms(lambda: np.histogram(x, bins=edges), max(2, reps // 3))

    q = TensorQuantizer(scheme="tf", bitwidth=8)
    q.update_stats(x)
    enc = q.compute_encodings()
    lo, hi = np.float32(enc.min), np.float32(enc.max)
    t_clip = best_ms(lambda: np.clip(x, lo, hi, out=y), reps)
    t_qdq = best_ms(lambda: q.quantize_dequantize(x, out=y), reps)

    print(f"n = {n:>9,d}")
    print(f"  np.max               {t_max:8.3f} ms")
    print(f"  min/max stats        {t_mm:8.3f} ms   {t_mm / t_max:5.2f}x np.max        (goal <= 1.5x)")
    print(f"  histogram update     {t_hist:8.3f} ms   {t_hist / t_max:5.2f}x np.max        (goal <= 4x; "
          f"default: {threads} thread(s))")
    print(f"    threads=1          {t_hist_1:8.3f} ms   {t_hist_1 / t_max:5.2f}x np.max")
    print(f"  np.histogram         {t_nphist:8.3f} ms   {t_nphist / t_hist:5.2f}x slower than ours (goal >= 5x)")
    print(f"  np.clip(out=y)       {t_clip:8.3f} ms")
    print(f"  quantize-dequantize  {t_qdq:8.3f} ms   {t_qdq / t_clip:5.2f}x np.clip       (goal <= 3x)")


def bench_search() -> None:
    from qsim.quant import HistogramStats, tf_enhanced

    x = np.random.default_rng(1).normal(size=1 << 16).astype(np.float32)
    stats = HistogramStats.empty().update(x)
    t = best_ms(lambda: tf_enhanced(stats, bitwidth=8), 50)
    print(f"tf-enhanced search, 1536 bins, 8-bit asymmetric: {t:.3f} ms (goal < 1 ms)")


def bench_first_call() -> None:
    """First calls in fresh processes: with an empty Numba cache (compilation) and with the
    on-disk cache of the package (what users see after the first run)."""
    with tempfile.TemporaryDirectory() as empty_cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=empty_cache)
        cold = subprocess.run([sys.executable, "-c", FIRST_CALL], capture_output=True, text=True,
                              check=True, env=env)
    warm = subprocess.run([sys.executable, "-c", FIRST_CALL], capture_output=True, text=True,
                          check=True)
    print(f"first call, empty cache (compiles): {cold.stdout.strip()}")
    print(f"first call, cached:                 {warm.stdout.strip()}")


if __name__ == "__main__":
    bench_first_call()
    for size in (1 << 20, 1 << 24):
        bench_size(size)
    bench_search()
