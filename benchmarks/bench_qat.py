"""Quantization-aware training: what one step costs (what it recovers: bench_qat_recovery.py).

Prints, in one run, for the ResNet-18-shaped model: one training step (forward + backward, quantizers learning) vs the
  simulated forward alone (``sim.run``, ONNX Runtime's exact kernels), each the median of a few
  repetitions timed in turn (goal ≤ 3×), their CPU times (all threads; less sensitive to other
  processes on the machine), and the peak traced memory of one step vs one forward.

    python benchmarks/bench_qat.py [--batch 2] [--size 64] [--repeats 7]
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
import qsim.train  # noqa: E402



def _interleaved(fns, repeats):
    """Median wall and CPU (all threads) seconds of each fn, the fns timed in turn ``repeats``
    times, so load from other processes hits each alike."""
    wall = [[] for _ in fns]
    cpu = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return [statistics.median(w) for w in wall], [statistics.median(c) for c in cpu]


def _peak(fn) -> int:
    """Peak bytes traced (tracemalloc: NumPy's buffers included) while ``fn`` runs."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def resnet_step(batch: int, size: int, repeats: int) -> None:
    graph, _ = qsim.fold_batch_norms(qsim.load_onnx(resnet18(batch, size)))
    sim = qsim.QuantizationSimModel(graph, quant_scheme="training_range_learning_with_tf_init",
                                    config_file="default")
    feeds = {"input": np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)}
    sim.compute_encodings([feeds])
    labels = np.zeros(batch, np.int64)
    out = graph.output_names[0]
    loss_fn = qsim.train.cross_entropy(labels, output=out)
    sim.run(feeds)
    sim.value_and_grad(feeds, loss_fn)   # warm-up (Numba compilation)
    (t_fwd, t_step), (c_fwd, c_step) = _interleaved(
        [lambda: sim.run(feeds), lambda: sim.value_and_grad(feeds, loss_fn)], repeats)
    peak_fwd = _peak(lambda: sim.run(feeds))
    peak_step = _peak(lambda: sim.value_and_grad(feeds, loss_fn))
    params = sum(v.nbytes for v in sim.graph.params.values())
    print(f"ResNet-18 shape, batch {batch}, {size}x{size}: forward (sim.run) {t_fwd * 1e3:.0f} ms, "
          f"training step {t_step * 1e3:.0f} ms, ratio {t_step / t_fwd:.2f}x (goal <= 3x); "
          f"CPU time {c_fwd * 1e3:.0f} vs {c_step * 1e3:.0f} ms ({c_step / c_fwd:.2f}x); "
          f"peak memory beyond the {params / 2**20:.0f} MiB of weights: forward "
          f"{peak_fwd / 2**20:.0f} MiB, step {peak_step / 2**20:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    resnet_step(args.batch, args.size, args.repeats)


if __name__ == "__main__":
    main()
