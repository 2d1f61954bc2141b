"""Quantization-aware training: what it recovers, and what one step costs.

Prints, in one run:
* the bundled digits CNN at W4A4 (BatchNorm folded): FP32 accuracy, accuracy after calibration
  alone, after QAT with range learning (Adam), and the fraction of the calibration loss that QAT
  recovers (goal ≥ 0.5). The bundle has labels only for its 597 test images: the first half
  trains, the second half evaluates (disjoint).
* the ResNet-18-shaped model: one training step (forward + backward, quantizers learning) vs the
  simulated forward alone (``sim.run``, ONNX Runtime's exact kernels), each the median of a few
  repetitions timed in turn (goal ≤ 3×), their CPU times (all threads; less sensitive to other
  processes on the machine), and the peak traced memory of one step vs one forward.

    python benchmarks/bench_qat.py [--epochs 6] [--batch 2] [--size 64] [--repeats 7]
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

DATA = Path(qsim.__file__).parent / "data"


def _accuracy(sim, x, y) -> float:
    return float(np.mean(np.argmax(sim.run({"input": x})["logits"], axis=1) == y))


def digits(epochs: int, lr: float) -> None:
    d = np.load(DATA / "digits.npz")
    x, y = d["test_x"], d["test_y"]
    half = len(x) // 2
    graph, _ = qsim.fold_batch_norms(qsim.load_onnx(str(DATA / "digits_cnn.onnx")))
    fp_logits = qsim.run(graph, {"input": x[half:]})["logits"]
    acc_fp = float(np.mean(np.argmax(fp_logits, axis=1) == y[half:]))
    sim = qsim.QuantizationSimModel(graph, quant_scheme="training_range_learning_with_tf_init",
                                    param_type="int4", activation_type="int4",
                                    config_file="default")
    sim.compute_encodings([{"input": d["calib_x"][i:i + 64]} for i in range(0, 256, 64)])
    acc_cal = _accuracy(sim, x[half:], y[half:])
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(epochs):
        order = rng.permutation(half)
        batches += [({"input": x[order[i:i + 32]]}, y[order[i:i + 32]]) for i in range(0, half, 32)]
    t0 = time.perf_counter()
    sim.fit(batches, qsim.train.cross_entropy, qsim.train.Adam(lr=lr), epochs=1)
    t_fit = time.perf_counter() - t0
    acc_qat = _accuracy(sim, x[half:], y[half:])
    lost = acc_fp - acc_cal
    rec = (acc_qat - acc_cal) / lost if lost > 0 else float("nan")
    print(f"digits CNN W4A4 (eval on {len(x) - half} images): FP32 {acc_fp:.3f}  "
          f"calibrated {acc_cal:.3f}  after QAT {acc_qat:.3f}  "
          f"recovered {rec:.2f} of the loss (goal >= 0.5); {len(batches)} steps in {t_fit:.1f} s")


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
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    digits(args.epochs, args.lr)
    resnet_step(args.batch, args.size, args.repeats)


if __name__ == "__main__":
    main()
