"""The simulation's cost against the FP32 executor on the ResNet-18-shaped model.

Prints, in one run on the same machine and the same data (median of a few repetitions):
* simulated forward (``sim.run``) vs the executor's FP32 forward (goal ≤ 1.3×);
* tf-enhanced calibration per batch vs an FP32 forward (goal ≤ 1.5×);
* peak traced memory of calibrating 64 batches vs 8 batches (goal ≤ 1.1×): streaming statistics.

    python benchmarks/bench_sim.py [--batch 8] [--size 112] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_executor import resnet18  # noqa: E402

import qsim  # noqa: E402


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_calibration_memory(graph, batch, n_batches: int) -> int:
    """Peak bytes traced while calibrating ``n_batches`` batches (the same array each time)."""
    sim = qsim.QuantizationSimModel(graph, quant_scheme="tf_enhanced", config_file="default")
    feeds = {"input": batch}
    tracemalloc.start()
    tracemalloc.reset_peak()
    sim.compute_encodings(feeds for _ in range(n_batches))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    graph, folds = qsim.fold_batch_norms(qsim.load_onnx(resnet18(args.batch, args.size)))
    rng = np.random.default_rng(1)
    batches = [{"input": rng.standard_normal((args.batch, 3, args.size, args.size),
                                             dtype=np.float32)} for _ in range(max(args.repeats, 2))]
    feeds = batches[0]
    sim = qsim.QuantizationSimModel(graph, quant_scheme="tf_enhanced", config_file="default")
    qsim.run(graph, feeds)  # warm-up (BLAS threads, Numba cache)

    sim.compute_encodings(batches[:1])  # warm-up: Numba kernels, parameter encodings
    t_one = _median_time(lambda: sim.compute_encodings(batches[:1]), 1)
    t_all = _median_time(lambda: sim.compute_encodings(batches), 1)
    # Parameter encodings (per-channel SQNR searches) are paid once per compute_encodings; the
    # per-batch cost is the slope between calibrating 1 and len(batches) batches.
    calib_per_batch = (t_all - t_one) / (len(batches) - 1)
    param_once = t_one - calib_per_batch
    fp32 = _median_time(lambda: qsim.run(graph, feeds), args.repeats)
    simulated = _median_time(lambda: sim.run(feeds), args.repeats)

    print(f"ResNet-18 shape (BN folded: {len(folds)}), batch {args.batch}, 3x{args.size}x{args.size}, "
          f"{len(sim.enabled_quantizers())} enabled quantizers, tf_enhanced, default config")
    print(f"  FP32 forward (qsim.run):       {fp32 * 1e3:8.1f} ms")
    print(f"  simulated forward (sim.run):   {simulated * 1e3:8.1f} ms   ratio {simulated / fp32:5.2f}x  (goal <= 1.3x)")
    print(f"  calibration per batch:         {calib_per_batch * 1e3:8.1f} ms   ratio {calib_per_batch / fp32:5.2f}x  (goal <= 1.5x)")
    print(f"  parameter encodings (once):    {param_once * 1e3:8.1f} ms")

    small = np.ascontiguousarray(feeds["input"][:2, :, :56, :56])
    small_graph, _ = qsim.fold_batch_norms(qsim.load_onnx(resnet18(2, 56)))
    m8 = _peak_calibration_memory(small_graph, small, 8)
    m64 = _peak_calibration_memory(small_graph, small, 64)
    print(f"  peak memory calibrating  8 batches: {m8 / 2**20:8.1f} MiB (batch 2, 56x56)")
    print(f"  peak memory calibrating 64 batches: {m64 / 2**20:8.1f} MiB   ratio {m64 / m8:5.2f}x  (goal <= 1.1x)")


if __name__ == "__main__":
    main()
