"""Speed of the quantization kernels against NumPy baselines timed in the same run, same array.

Prints, for 1M and 16M float32 elements, the median over rounds in which each function runs
once in turn (so qsim and its baseline see the same load of a shared machine) of the per-round
ratio, with its quartiles:
  min/max statistics          vs np.max(x)                            goal <= 1.5x
  tf-enhanced histogram update vs np.max(x)                           goal <= 4x
                              vs np.histogram(x, bins=same edges)     goal >= 5x faster
    (the default, which counts a channel of >= 2^20 elements on the cores no other task is
    running on, threads=1, threads=2, and the default on Relu-shaped data, half zeros; np.max
    is single-threaded)
  quantize-dequantize         vs np.clip(x, lo, hi, out=y)            goal <= 3x
with how many cores' worth of CPU other processes used meanwhile and in how many rounds the
default would have used more than one thread; then the tf-enhanced search (1536 bins, 8-bit
asymmetric, goal < 1 ms) and the first-call cost (compilation or on-disk cache load) of each
kernel, measured in a fresh interpreter.

Run: .venv/bin/python benchmarks/bench_quant.py
     .venv/bin/python benchmarks/bench_quant.py --idle 60   (histogram rounds in idle windows only)
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


def _busy_jiffies() -> tuple[int, int] | None:
    """(busy, total) CPU jiffies of the whole machine from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
    except OSError:
        return None
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


class OtherLoad:
    """Cores' worth of CPU time used by OTHER processes while the block runs (machine busy time
    from /proc/stat minus this process's CPU time): 0 on an idle machine, up to the core count
    when other jobs keep every core busy. It tells whether a second thread had a core to run on."""

    def __enter__(self):
        self.j0, self.p0, self.t0 = _busy_jiffies(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        j1, p1, t1 = _busy_jiffies(), time.process_time(), time.perf_counter()
        if self.j0 is None or j1 is None:
            self.cores = float("nan")
            return
        hz = os.sysconf("SC_CLK_TCK")
        busy = (j1[0] - self.j0[0]) / hz - (p1 - self.p0)
        self.cores = max(0.0, busy / (t1 - self.t0))


def interleaved(fns: dict, repeats: int) -> dict:
    """Wall times (ms) of each function in ``fns``, called in turn ``repeats`` times (after
    one warm-up round), so that all of them see the same moments of a shared machine's load."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(1e3 * (time.perf_counter() - t))
    return times


def idle_rounds(fns: dict, seconds: float, per_batch: int) -> tuple[dict, int, int]:
    """Like :func:`interleaved`, for ``seconds``, keeping only the batches of ``per_batch``
    rounds that ran while the rest of the machine was idle: /proc/loadavg showed no runnable
    task but this thread (and this process's spinning histogram workers) when the batch began,
    and /proc/stat counted less than 0.05 cores of other CPU use over it (jiffies of 10 ms: a
    short burst of another task can slip through). Returns the kept times, the batches kept
    and the batches tried."""
    from qsim.quant import stats as S

    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    kept = tried = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ours = sum(w.awake() for w in S._team(os.getpid()))
        if S._runnable_tasks() != 1 + ours:
            time.sleep(0.003)
            continue
        tried += 1
        batch = {name: [] for name in fns}
        with OtherLoad() as load:
            for _ in range(per_batch):
                for name, fn in fns.items():
                    t = time.perf_counter()
                    fn()
                    batch[name].append(1e3 * (time.perf_counter() - t))
        if load.cores < 0.05:
            kept += 1
            for name in fns:
                times[name] += batch[name]
        time.sleep(0.001)
    return times, kept, tried


def ratio(times: dict, name: str, base: str) -> tuple[float, float, float]:
    """Median, lower and upper quartile over the rounds of ``times[name][i] / times[base][i]``."""
    q = np.quantile(np.array(times[name]) / np.array(times[base]), [0.5, 0.25, 0.75])
    return float(q[0]), float(q[1]), float(q[2])


def bench_size(n: int, idle_seconds: float = 0.0) -> None:
    from qsim.quant import HistogramStats, MinMaxStats, TensorQuantizer

    from qsim.quant.stats import _as_batch, default_threads

    x3 = _as_batch(np.zeros(n, np.float32), None)
    chosen = []         # threads the default picks, sampled once per round
    rng = np.random.default_rng(0)
    x = rng.normal(size=n).astype(np.float32)
    relu = np.maximum(x, np.float32(0))
    y = np.empty_like(x)
    reps = 41 if n <= 1 << 20 else 11

    minmax = MinMaxStats.empty()
    hist = HistogramStats.empty().update(x)          # bins fixed: later updates only bin
    hist_relu = HistogramStats.empty().update(relu)
    fns = {"max": lambda: np.max(x),
           "minmax": lambda: minmax.update(x),
           "threads": lambda: chosen.append(default_threads(x3)),
           "hist": lambda: hist.update(x),
           "hist1": lambda: hist.update(x, threads=1),
           "hist2": lambda: hist.update(x, threads=2),
           "max_relu": lambda: np.max(relu),
           "hist_relu": lambda: hist_relu.update(relu)}
    if idle_seconds:
        t, kept, tried = idle_rounds(fns, idle_seconds, 5 if n <= 1 << 20 else 1)
        print(f"n = {n:>9,d}   IDLE WINDOWS ONLY: {len(t['max'])} rounds in {kept} of {tried} "
              f"batches tried over {idle_seconds:.0f} s (the others saw another task)")
        if not kept:
            return
        for label, name, base in (("np.max", "max", None), ("min/max stats", "minmax", "max"),
                                  ("histogram update, default", "hist", "max"),
                                  ("histogram update, 1 thread", "hist1", "max"),
                                  ("histogram update, 2 threads", "hist2", "max"),
                                  ("  Relu-shaped data, default", "hist_relu", "max_relu")):
            if base is None:
                print(f"  {label:<26} {np.median(t[name]):8.3f} ms")
                continue
            med, q1, q3 = ratio(t, name, base)
            print(f"  {label:<26} {np.median(t[name]):8.3f} ms   {med:5.2f}x {base:<9}"
                  f" (quartiles {q1:.2f}-{q3:.2f})")
        print(f"  (default used 2+ threads in {np.mean(np.array(chosen) > 1):.0%} of the rounds)")
        return
    with OtherLoad() as load:
        t = interleaved(fns, reps)
    edges = hist.edges(0)
    t_np = interleaved({"hist": lambda: hist.update(x),
                        "np.histogram": lambda: np.histogram(x, bins=edges)}, max(3, reps // 6))

    q = TensorQuantizer(scheme="tf", bitwidth=8)
    q.update_stats(x)
    enc = q.compute_encodings()
    lo, hi = np.float32(enc.min), np.float32(enc.max)
    t_q = interleaved({"clip": lambda: np.clip(x, lo, hi, out=y),
                       "qdq": lambda: q.quantize_dequantize(x, out=y)}, reps)

    def line(label, times, name, base, goal=""):
        med, q1, q3 = ratio(times, name, base)
        print(f"  {label:<26} {np.median(times[name]):8.3f} ms   {med:5.2f}x {base:<9}"
              f" (quartiles {q1:.2f}-{q3:.2f}){goal}")

    print(f"n = {n:>9,d}   (medians of {reps} interleaved rounds; other processes used "
          f"{load.cores:.2f} of {os.cpu_count()} cores meanwhile)")
    print(f"  np.max                     {np.median(t['max']):8.3f} ms")
    print(f"  (the default histogram update would have used 2+ threads in "
          f"{sum(c > 1 for c in chosen[1:])} of {reps} rounds: only on cores no other task ran on)")
    line("min/max stats", t, "minmax", "max", "   goal <= 1.5x")
    line("histogram update, default", t, "hist", "max", "   goal <= 4x")
    line("histogram update, 1 thread", t, "hist1", "max")
    line("histogram update, 2 threads", t, "hist2", "max")
    line("  Relu-shaped data, default", t, "hist_relu", "max_relu")
    med, q1, q3 = ratio(t_np, "np.histogram", "hist")
    print(f"  np.histogram               {np.median(t_np['np.histogram']):8.3f} ms   "
          f"{med:5.2f}x slower than ours (goal >= 5x)")
    print(f"  np.clip(out=y)             {np.median(t_q['clip']):8.3f} ms")
    line("quantize-dequantize", t_q, "qdq", "clip", "   goal <= 3x")


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
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--idle", type=float, default=0.0, metavar="SECONDS",
                        help="histogram only: measure for SECONDS per size, keeping only rounds "
                             "run while no other task used the machine")
    args = parser.parse_args()
    if args.idle:
        for size in (1 << 20, 1 << 24):
            bench_size(size, args.idle)
    else:
        bench_first_call()
        for size in (1 << 20, 1 << 24):
            bench_size(size)
        bench_search()
