"""qsim's LRN vs ONNX Runtime's, on the LRN nodes of the light zoo models (Inception-v1, AlexNet,
ZFNet-512: shapes and attributes as in the onnx wheel's ``light_*.onnx``), at batch 1 and 8.

For each node, in the same process: the input is the ReLU-like output LRN sees in these models
(uniform in [0, 8)); qsim's result is first checked bit-identical to ONNX Runtime with graph
optimizations off (what AIMET runs); then qsim's registered LRN and an ONNX Runtime session with
DEFAULT options (one node, one intra-op thread per core) run interleaved ``--repeats`` times.
Prints the median wall ms of each, their ratio, and the median CPU ms of qsim's calls (all
threads of the process: on a shared machine the column to compare two versions of qsim with).

    python benchmarks/bench_lrn.py [--repeats 9] [--batches 1,8]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from qsim.ops import OPS

_SETTLE_SECONDS = 0.1    # ORT's threads spin after a run: pause before timing qsim
ATTRS = {"inception": {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0},
         "zfnet": {"size": 5, "alpha": 5e-4, "beta": 0.75, "bias": 2.0}}
#: (model, node input shape without the batch, attributes)
NODES = [("inception_v1", (64, 55, 55), ATTRS["inception"]),
         ("inception_v1", (192, 55, 55), ATTRS["inception"]),
         ("bvlc_alexnet", (96, 54, 54), ATTRS["inception"]),
         ("bvlc_alexnet", (256, 26, 26), ATTRS["inception"]),
         ("zfnet512", (96, 109, 109), ATTRS["zfnet"]),
         ("zfnet512", (256, 25, 25), ATTRS["zfnet"])]


def _session(shape, attrs, optimized: bool) -> ort.InferenceSession:
    node = helper.make_node("LRN", ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "lrn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 9
    options = ort.SessionOptions()
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()
    print(f"{'model':14s} {'input':>18s}  qsim ms   ORT ms  ratio  qsim cpu ms")
    for batch in (int(b) for b in args.batches.split(",")):
        for model, shape, attrs in NODES:
            shape = (batch, *shape)
            x = np.random.default_rng(batch).uniform(0, 8, shape).astype(np.float32)
            lrn = OPS["LRN"]
            expected = _session(shape, attrs, False).run(None, {"x": x})[0]
            got = lrn(x, **attrs)
            if got.tobytes() != expected.tobytes():
                raise SystemExit(f"{model} {shape}: qsim's LRN differs from ONNX Runtime's")
            fast = _session(shape, attrs, True)
            fast.run(None, {"x": x})
            q_wall, q_cpu, o_wall = [], [], []
            for _ in range(args.repeats):
                o_wall.append(_timed(lambda: fast.run(None, {"x": x}))[0])
                time.sleep(_SETTLE_SECONDS)
                w, c = _timed(lambda: lrn(x, **attrs))
                q_wall.append(w)
                q_cpu.append(c)
            q, o = statistics.median(q_wall) * 1e3, statistics.median(o_wall) * 1e3
            print(f"{model:14s} {str(shape):>18s} {q:8.2f} {o:8.2f} {q / o:6.2f} "
                  f"{statistics.median(q_cpu) * 1e3:11.2f}")


if __name__ == "__main__":
    main()
