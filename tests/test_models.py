"""Whole-model FP32 parity with ONNX Runtime on models built here with onnx.helper, and on the
bundled digits example. Every model runs through load_onnx → run and must match ORT (graph
optimizations off) to 1e-5 relative."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import qsim

EXAMPLES = Path(__file__).parent.parent / "examples"
RTOL, ATOL = 1e-5, 1e-6


class Builder:
    """Collects nodes and seeded random initializers; node names are the output names."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []

    def param(self, name: str, shape, scale: float = 0.3, dtype=np.float32) -> str:
        self.inits.append(numpy_helper.from_array(
            (self.rng.normal(size=shape) * scale).astype(dtype), name))
        return name

    def const(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"{op_type}_{out}", **attrs))
        return out

    def model(self, inputs: dict, outputs: list[str], opset: int = 17) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "test_model",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
            initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 9
        return model


def assert_matches_ort(model: onnx.ModelProto, feeds: dict, *, rtol=RTOL, atol=ATOL) -> dict:
    """qsim and ORT agree on every graph output (and on the dtype and shape).

    ``|qsim − ort| ≤ rtol·|ort| + atol·max(1, max|ort|)``: the absolute floor scales with the
    tensor's magnitude, since float32 sums in a different order differ by a few ulps of the
    largest partial sums, not of each (possibly near-zero) result."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    want = dict(zip(names, sess.run(None, feeds)))
    got = qsim.run(qsim.load_onnx(model), feeds)
    assert list(got) == names
    for name in names:
        assert got[name].shape == want[name].shape and got[name].dtype == want[name].dtype, name
        scale = max(1.0, float(np.abs(want[name]).max(initial=0.0)))
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol * scale,
                                   err_msg=name)
    return got


def _x(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


# ---- the models ----------------------------------------------------------------------------------

def test_small_cnn():
    b = Builder(1)
    t = b.op("Conv", ["x", b.param("w1", (8, 3, 3, 3)), b.param("b1", (8,))], "c1",
             pads=[1, 1, 1, 1], strides=[2, 2])
    t = b.op("BatchNormalization", [t, b.const("g", np.linspace(0.5, 1.5, 8, dtype=np.float32)),
                                    b.param("be", (8,)), b.param("mu", (8,)),
                                    b.const("var", np.linspace(0.2, 2, 8, dtype=np.float32))],
             "bn1", epsilon=1e-5)
    t = b.op("Relu", [t], "r1")
    t = b.op("Conv", [t, b.param("w2", (16, 8, 3, 3)), b.param("b2", (16,))], "c2",
             pads=[1, 0, 1, 0], dilations=[1, 2])
    t = b.op("Relu", [t], "r2")
    t = b.op("GlobalAveragePool", [t], "gap")
    t = b.op("Flatten", [t], "flat", axis=1)
    b.op("Gemm", [t, b.param("fw", (10, 16)), b.param("fb", (10,))], "y", transB=1)
    assert_matches_ort(b.model({"x": ["n", 3, 16, 16]}, ["y"]), {"x": _x((4, 3, 16, 16))})


def test_mobilenet_v2_inverted_residual_block():
    c, expand = 8, 6
    b = Builder(2)
    zero, six = b.const("zero", np.float32(0)), b.const("six", np.float32(6))
    t = b.op("Conv", ["x", b.param("we", (c * expand, c, 1, 1)), b.param("be", (c * expand,))], "expand")
    t = b.op("Clip", [t, zero, six], "relu6_a")
    t = b.op("Conv", [t, b.param("wd", (c * expand, 1, 3, 3)), b.param("bd", (c * expand,))], "dw",
             group=c * expand, pads=[1, 1, 1, 1])
    t = b.op("Clip", [t, zero, six], "relu6_b")
    t = b.op("Conv", [t, b.param("wp", (c, c * expand, 1, 1)), b.param("bp", (c,))], "project")
    b.op("Add", ["x", t], "y")
    assert_matches_ort(b.model({"x": ["n", c, 10, 10]}, ["y"]), {"x": _x((2, c, 10, 10)) * 3})


def test_mobilenet_v2_strided_block_with_max_only_clip():
    """A stride-2 depthwise block without residual, Clip with only a max (min absent)."""
    b = Builder(3)
    six = b.const("six", np.float32(6))
    t = b.op("Conv", ["x", b.param("we", (24, 4, 1, 1))], "expand")
    t = b.op("Clip", [t, "", six], "clip_a")
    t = b.op("Conv", [t, b.param("wd", (24, 1, 3, 3))], "dw", group=24, pads=[1, 1, 1, 1],
             strides=[2, 2])
    t = b.op("Relu", [t], "relu")
    b.op("Conv", [t, b.param("wp", (6, 24, 1, 1)), b.param("bp", (6,))], "y")
    assert_matches_ort(b.model({"x": ["n", 4, 9, 9]}, ["y"]), {"x": _x((3, 4, 9, 9), seed=1) * 2})


def test_mlp_ending_in_softmax():
    b = Builder(4)
    t = b.op("Gemm", ["x", b.param("w1", (20, 32)), b.param("b1", (32,))], "fc1")
    t = b.op("Relu", [t], "r1")
    t = b.op("MatMul", [t, b.param("w2", (32, 16))], "mm2")
    t = b.op("Add", [t, b.param("b2", (16,))], "fc2")
    t = b.op("Tanh", [t], "t2")
    t = b.op("Gemm", [t, b.param("w3", (10, 16), scale=1.0), b.param("b3", (10,))], "logits",
             transB=1)
    b.op("Softmax", [t], "y", axis=-1)
    got = assert_matches_ort(b.model({"x": ["n", 20]}, ["y"]), {"x": _x((16, 20)) * 2})
    np.testing.assert_allclose(got["y"].sum(axis=-1), 1.0, rtol=1e-6)


def _encoder_block(b: Builder, *, seq: int, dim: int, heads: int, gelu: str) -> None:
    """Pre-norm transformer encoder block: LN → multi-head self-attention → residual → LN →
    MLP with GELU → residual. Heads are split with Reshape/Transpose."""
    dh = dim // heads
    split = b.const("split_shape", np.array([0, seq, heads, dh], np.int64))
    merge = b.const("merge_shape", np.array([0, seq, dim], np.int64))

    def layer_norm(x, name):
        return b.op("LayerNormalization", [x, b.const(f"{name}_g", np.linspace(0.8, 1.2, dim, dtype=np.float32)),
                                           b.param(f"{name}_b", (dim,), scale=0.1)], name,
                    axis=-1, epsilon=1e-5)

    def linear(x, name, d_in, d_out):
        t = b.op("MatMul", [x, b.param(f"{name}_w", (d_in, d_out), scale=d_in ** -0.5)], f"{name}_mm")
        return b.op("Add", [t, b.param(f"{name}_b", (d_out,), scale=0.1)], name)

    def heads_of(x, name, perm):
        t = b.op("Reshape", [x, split], f"{name}_split")
        return b.op("Transpose", [t], f"{name}_heads", perm=perm)

    h = layer_norm("x", "ln1")
    q = heads_of(linear(h, "q", dim, dim), "q", [0, 2, 1, 3])
    k = heads_of(linear(h, "k", dim, dim), "k", [0, 2, 3, 1])   # already transposed for q·kᵀ
    v = heads_of(linear(h, "v", dim, dim), "v", [0, 2, 1, 3])
    scores = b.op("MatMul", [q, k], "scores")
    scores = b.op("Div", [scores, b.const("sqrt_dh", np.float32(np.sqrt(dh)))], "scaled")
    attn = b.op("Softmax", [scores], "attn", axis=-1)
    ctx = b.op("MatMul", [attn, v], "ctx")
    ctx = b.op("Transpose", [ctx], "ctx_t", perm=[0, 2, 1, 3])
    ctx = b.op("Reshape", [ctx, merge], "ctx_merged")
    r1 = b.op("Add", ["x", linear(ctx, "o", dim, dim)], "res1")
    u = linear(layer_norm(r1, "ln2"), "fc1", dim, 4 * dim)
    if gelu == "op":
        a = b.op("Gelu", [u], "gelu")
    else:  # the Erf decomposition exporters emit: 0.5·x·(1 + erf(x/√2))
        t = b.op("Div", [u, b.const("sqrt2", np.float32(np.sqrt(2)))], "gelu_div")
        t = b.op("Erf", [t], "gelu_erf")
        t = b.op("Add", [t, b.const("one", np.float32(1))], "gelu_add")
        t = b.op("Mul", [u, t], "gelu_mul")
        a = b.op("Mul", [t, b.const("half", np.float32(0.5))], "gelu")
    b.op("Add", [r1, linear(a, "fc2", 4 * dim, dim)], "y")


@pytest.mark.parametrize("gelu,opset", [("erf", 17), ("op", 20)], ids=["erf_gelu", "gelu_op"])
def test_transformer_encoder_block(gelu, opset):
    seq, dim = 6, 16
    b = Builder(5)
    _encoder_block(b, seq=seq, dim=dim, heads=4, gelu=gelu)
    model = b.model({"x": ["n", seq, dim]}, ["y"], opset=opset)
    assert_matches_ort(model, {"x": _x((3, seq, dim))})


def test_pools_concat_sigmoid_gating_and_conv_transpose():
    b = Builder(6)
    t = b.op("Conv", ["x", b.param("w1", (6, 3, 3, 3)), b.param("b1", (6,))], "c1", pads=[1, 1, 1, 1])
    mp = b.op("MaxPool", [t], "mp", kernel_shape=[2, 2], strides=[2, 2])
    ap = b.op("AveragePool", [t], "ap", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
              count_include_pad=0)
    cat = b.op("Concat", [mp, ap], "cat", axis=1)
    gate = b.op("Sigmoid", [b.op("Conv", [cat, b.param("wg", (12, 12, 1, 1))], "gate_logits")], "gate")
    gated = b.op("Mul", [cat, gate], "gated")
    up = b.op("ConvTranspose", [gated, b.param("wt", (12, 4, 3, 3)), b.param("bt", (4,))], "up",
              strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])
    skip = b.op("MaxPool", [t], "mp_same", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    b.op("Concat", [up, skip], "y", axis=1)
    assert_matches_ort(b.model({"x": ["n", 3, 12, 12]}, ["y"]), {"x": _x((2, 3, 12, 12))})


def test_bundled_digits_example_matches_ort_and_classifies_well():
    model = onnx.load(str(EXAMPLES / "digits_cnn.onnx"))
    data = np.load(EXAMPLES / "digits.npz")
    assert data["test_x"].dtype == np.float32 and data["test_y"].dtype == np.int64
    got = assert_matches_ort(model, {"input": data["test_x"]})
    accuracy = float((got["logits"].argmax(axis=1) == data["test_y"]).mean())
    assert accuracy > 0.95, accuracy
