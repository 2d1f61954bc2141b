"""qsim's executor vs ONNX Runtime on a ResNet-18-shaped model (random weights).

Builds the model with ``onnx.helper`` (Conv / BatchNormalization / Relu / MaxPool / residual Add /
GlobalAveragePool / Flatten / Gemm, BN not folded), runs it in the same process with qsim's
``run`` and with an ONNX Runtime session (default session options), takes the median of a few
repetitions of each (interleaved, so both see the same machine load), checks the outputs agree,
and prints both times, the ratio, and qsim's time per op type.

qsim's float32 Conv / Gemm / MatMul run its own bit-exact kernels (``qsim.kernels.gemm``, two
threads on two cores), not BLAS. ONNX Runtime's intra-op threads keep spinning for a while after
``session.run`` returns (its default ``allow_spinning``); timing qsim right after ORT would charge
qsim for that (~15% on 2 cores), so each qsim repetition starts after a short pause.

    python benchmarks/bench_executor.py [--batch 8] [--size 112] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from qsim.interpreter import run
from qsim.onnx_io import load_onnx
from qsim.kernels.gemm import DEFAULT_THREADS

_SETTLE_SECONDS = 0.2    # pause after an ONNX Runtime run before timing qsim


class _Builder:
    """Accumulates nodes and random initializers of a ResNet-18-shaped graph."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits = [], []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def param(self, prefix: str, array: np.ndarray) -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower() + "_out")
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.name(op.lower()), **attrs))
        return out

    def conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int, relu: bool) -> str:
        fan_in = cin * k * k
        w = self.param("w", self.rng.normal(0, np.sqrt(2 / fan_in), (cout, cin, k, k)))
        y = self.node("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride],
                      pads=[k // 2] * 4)
        bn = [self.param("gamma", self.rng.uniform(0.5, 1.5, cout)),
              self.param("beta", self.rng.uniform(-0.1, 0.1, cout)),
              self.param("mean", self.rng.uniform(-0.1, 0.1, cout)),
              self.param("var", self.rng.uniform(0.5, 1.5, cout))]
        y = self.node("BatchNormalization", [y, *bn], epsilon=1e-5)
        return self.node("Relu", [y]) if relu else y

    def basic_block(self, x: str, cin: int, cout: int, stride: int) -> str:
        y = self.conv_bn(x, cin, cout, 3, stride, relu=True)
        y = self.conv_bn(y, cout, cout, 3, 1, relu=False)
        shortcut = x if stride == 1 and cin == cout else self.conv_bn(x, cin, cout, 1, stride,
                                                                      relu=False)
        return self.node("Relu", [self.node("Add", [y, shortcut])])


def resnet18(batch: int, size: int, seed: int = 0) -> onnx.ModelProto:
    """ResNet-18 topology: 7x7/2 stem, 3x3/2 max pool, 4 stages of 2 basic blocks, GAP, FC."""
    b = _Builder(seed)
    x = b.conv_bn("input", 3, 64, 7, 2, relu=True)
    x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        x = b.basic_block(x, cin, cout, stride)
        x = b.basic_block(x, cout, cout, 1)
        cin = cout
    x = b.node("Flatten", [b.node("GlobalAveragePool", [x])], axis=1)
    fc_w = b.param("fc_w", b.rng.normal(0, np.sqrt(1 / 512), (1000, 512)))
    fc_b = b.param("fc_b", b.rng.uniform(-0.1, 0.1, 1000))
    logits = b.node("Gemm", [x, fc_w, fc_b], transB=1)
    graph = helper.make_graph(
        b.nodes, "resnet18", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                            [batch, 3, size, size])],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, [batch, 1000])],
        initializer=b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def profile_by_op(graph, feeds) -> dict[str, float]:
    """Seconds per op type in one qsim run, timed between successive observer calls."""
    op_of = {out: node.op_type for node in graph.nodes for out in node.outputs}
    totals: dict[str, float] = defaultdict(float)
    last = [time.perf_counter()]

    def observe(name, _value):
        now = time.perf_counter()
        if name in op_of:
            totals[op_of[name]] += now - last[0]
        last[0] = now

    run(graph, feeds, observe=observe)
    return dict(totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    model = resnet18(args.batch, args.size)
    graph = load_onnx(model)
    session = ort.InferenceSession(model.SerializeToString(), ort.SessionOptions(),
                                   providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((args.batch, 3, args.size, args.size),
                                                 dtype=np.float32)
    feeds = {"input": x}
    out_name = graph.output_names[0]

    expected = session.run(None, feeds)[0]      # warm-up, and the reference output
    got = run(graph, feeds)[out_name]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)

    times: dict[str, list[float]] = {"ort": [], "qsim": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        session.run(None, feeds)
        times["ort"].append(time.perf_counter() - t0)
        time.sleep(_SETTLE_SECONDS)      # let ONNX Runtime's spinning threads go idle
        t0 = time.perf_counter()
        run(graph, feeds)
        times["qsim"].append(time.perf_counter() - t0)
    median = {name: statistics.median(ts) for name, ts in times.items()}

    print(f"ResNet-18 shape, batch {args.batch}, 3x{args.size}x{args.size}, "
          f"{len(graph.nodes)} nodes, median of {args.repeats} (interleaved)")
    print(f"  onnxruntime {ort.__version__} (default session):   {median['ort'] * 1e3:8.1f} ms")
    print(f"  qsim run() (bit-exact float32 kernels, {DEFAULT_THREADS} threads): "
          f"{median['qsim'] * 1e3:8.1f} ms   ratio qsim / ORT {median['qsim'] / median['ort']:5.2f}x")
    time.sleep(_SETTLE_SECONDS)
    profile = profile_by_op(graph, feeds)
    total = sum(profile.values())
    print("  qsim time per op type (one run):")
    for op, seconds in sorted(profile.items(), key=lambda kv: -kv[1]):
        print(f"    {op:20s} {seconds * 1e3:8.1f} ms  {100 * seconds / total:5.1f}%")


if __name__ == "__main__":
    main()
