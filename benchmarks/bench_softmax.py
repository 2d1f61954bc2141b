"""qsim's Softmax (both kernel families) vs ONNX Runtime's, on attention-shaped inputs.

For each shape, in the same process and interleaved (so all see the same machine load): ONNX
Runtime's Softmax over the last axis (one node, graph optimizations off, default threads), and
qsim's registered Softmax with ``fp32_kernels="avx2"`` and ``"avx512"``. Prints the median
times and each family's ratio to ONNX Runtime (ONNX Runtime runs the family of this CPU; qsim
computes either family on any CPU). Before timing, each family's output is compared with ONNX
Runtime's where that family is this CPU's.

    python benchmarks/bench_softmax.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from qsim.kernels.family import FAMILIES, host_family
from qsim.ops import OPS

SHAPES = [(64, 197), (8, 12, 128, 128)]


def _session(shape) -> ort.InferenceSession:
    node = helper.make_node("Softmax", ["x"], ["y"], axis=-1)
    graph = helper.make_graph([node], "softmax",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 9
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"this CPU: {host_family()}; onnxruntime {ort.__version__}; onnx {onnx.__version__}")
    print(f"{'shape':>20} {'ORT ms':>9} " + " ".join(f"{f + ' ms':>11} {f + '/ORT':>10}"
                                                     for f in FAMILIES))
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        x = (rng.standard_normal(shape) * 3).astype(np.float32)
        sess = _session(shape)
        expected = sess.run(None, {"x": x})[0]
        for family in FAMILIES:
            got = OPS["Softmax"](x, axis=-1, fp32_kernels=family)    # also compiles the kernels
            if family == host_family() and not np.array_equal(got.view(np.uint32),
                                                              expected.view(np.uint32)):
                raise SystemExit(f"{family} Softmax differs from ONNX Runtime on {shape}")
        times = {"ort": [], **{f: [] for f in FAMILIES}}
        for _ in range(args.repeats):
            times["ort"].append(_seconds(lambda: sess.run(None, {"x": x})))
            time.sleep(0.1)     # ORT's worker threads spin for a while after run()
            for family in FAMILIES:
                times[family].append(_seconds(lambda: OPS["Softmax"](x, axis=-1,
                                                                    fp32_kernels=family)))
        ort_t = statistics.median(times["ort"])
        row = f"{str(shape):>20} {ort_t * 1e3:9.2f} "
        row += " ".join(f"{statistics.median(times[f]) * 1e3:11.2f} "
                        f"{statistics.median(times[f]) / ort_t:10.2f}" for f in FAMILIES)
        print(row)


if __name__ == "__main__":
    main()
