"""``sim.to_integer("onnxruntime").run`` vs ONNX Runtime's default session on the QDQ export.

Two models: the bundled digits CNN (default W8A8 config, tf_enhanced, 597 test digits in one
batch) and the ResNet-18-shaped model of ``bench_executor.py`` (BN folded, W8A8 default config,
calibrated on 4 random batches). For each, the export is run by an ONNX Runtime CPU session with
default options and by qsim's integer model, interleaved, median of a few repetitions; the
outputs are checked bit for bit and the ratio of the medians printed (the issue's target:
ResNet-18 shape at most 3x ONNX Runtime), the ratio of the fastest runs, and the median and range
of the ratios of the back-to-back pairs: on a machine shared with other work, both sides'
multi-threaded calls stall whenever another process holds a core, and the medians swing by 2-3x
between runs.

    python benchmarks/bench_integer.py [--batch 8] [--size 112] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import qsim
from qsim.transforms import fold_batch_norms

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_executor import resnet18  # noqa: E402
from tests.integer.cases import digits_sim  # noqa: E402

_SETTLE_SECONDS = 0.2


def _digits():
    """The integer-target tests' digits sim (tests/integer/cases.py), on all 597 test digits."""
    sim, test_x = digits_sim()
    return sim, {"input": test_x}


def _resnet(batch: int, size: int):
    graph, _ = fold_batch_norms(qsim.load_onnx(resnet18(batch, size)))
    rng = np.random.default_rng(1)
    sim = qsim.QuantizationSimModel(graph, quant_scheme="tf", param_type="int8",
                                    activation_type="int8", config_file="default")
    sim.compute_encodings([{"input": rng.standard_normal((batch, 3, size, size), np.float32)}
                           for _ in range(4)])
    return sim, {"input": rng.standard_normal((batch, 3, size, size), np.float32)}


def bench(name: str, sim, feeds, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = sim.export_qdq(Path(tmp) / "model.onnx")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        model = sim.to_integer("onnxruntime")
        want = session.run(None, feeds)
        got = model.run(feeds)
        exact = all(np.array_equal(g.view(np.uint8), w.view(np.uint8))
                    for g, w in zip(got.values(), want))
        t_ort, t_qsim = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            session.run(None, feeds)
            t_ort.append(time.perf_counter() - t0)
            time.sleep(_SETTLE_SECONDS)
            t0 = time.perf_counter()
            model.run(feeds)
            t_qsim.append(time.perf_counter() - t0)
    o, q = statistics.median(t_ort), statistics.median(t_qsim)
    pairs = sorted(b / a for a, b in zip(t_ort, t_qsim))
    print(f"{name}: ONNX Runtime {o * 1e3:8.1f} ms   qsim integer model {q * 1e3:8.1f} ms   "
          f"ratio {q / o:5.1f}x   (fastest runs: {min(t_ort) * 1e3:.1f} / "
          f"{min(t_qsim) * 1e3:.1f} ms, {min(t_qsim) / min(t_ort):.1f}x; ratio of each "
          f"back-to-back pair: median {statistics.median(pairs):.1f}x, range "
          f"{pairs[0]:.1f}-{pairs[-1]:.1f}x)   bit-exact: {exact}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    bench("digits CNN, 597 x 1x8x8", *_digits(), args.repeats)
    bench(f"ResNet-18 shape, {args.batch} x 3x{args.size}x{args.size}",
          *_resnet(args.batch, args.size), args.repeats)


if __name__ == "__main__":
    main()
