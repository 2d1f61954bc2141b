"""The executor's run plan: per-channel chains after a Conv (BatchNormalization, Mul/Add by a
constant per-channel vector, Relu) computed in the Conv's bias pass, and nodes of constants
computed once. Every result must stay ONNX Runtime's (graph optimizations off), bit for bit."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings, strategies as st
from onnx import helper, numpy_helper

import qsim
from qsim.interpreter import _plan
from qsim.kernels import gemm

F = onnx.TensorProto.FLOAT


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"]).run(None, feeds)


def _model(rng, c=8):
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    params = {
        "W1": f32(c, 3, 3, 3), "B1": f32(c), "S": rng.uniform(0.5, 2, c).astype(np.float32),
        "T": f32(c), "M": f32(c), "V": rng.uniform(0.5, 2, c).astype(np.float32),
        "G": f32(c), "axes": np.array([1, 2], np.int64), "A": f32(c, 1, 1),
        "W2": f32(c, c, 1, 1), "k": np.array([0.75], np.float32), "A4": f32(1, c, 1, 1),
        "W3": f32(c, c, 3, 3), "full": f32(1, c, 9, 9),
        "nan": np.where(np.arange(c) == 3, np.nan, 1.5).astype(np.float32).reshape(c, 1, 1),
        "W4": f32(c, c, 1, 1)}
    nodes = [
        # chain 1: Conv -> BN -> Mul(Unsqueeze(G)) -> Add(A (C,1,1)) -> Relu: all fused
        helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "S", "T", "M", "V"], ["n1"]),
        helper.make_node("Unsqueeze", ["G", "axes"], ["g"]),       # a node of constants
        helper.make_node("Mul", ["n1", "g"], ["m1"]),
        helper.make_node("Add", ["A", "m1"], ["a1"]),               # constant first
        helper.make_node("Relu", ["a1"], ["r1"]),
        # chain 2: Conv (no bias) -> Mul by a (1,) scalar -> Add (1,C,1,1); then Relu read twice
        helper.make_node("Conv", ["r1", "W2"], ["c2"]),
        helper.make_node("Mul", ["c2", "k"], ["m2"]),
        helper.make_node("Add", ["m2", "A4"], ["a2"]),
        # chain 3 stops at the requested BN output
        helper.make_node("Conv", ["a2", "W3"], ["c3"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c3", "S", "T", "M", "V"], ["n3"]),
        helper.make_node("Relu", ["n3"], ["r3"]),
        # not fused: a constant of the full shape, then one with a NaN
        helper.make_node("Conv", ["r3", "W4"], ["c4"]),
        helper.make_node("Mul", ["c4", "full"], ["m4"]),
        helper.make_node("Conv", ["m4", "W4"], ["c5"]),
        helper.make_node("Mul", ["c5", "nan"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", F, (2, 3, 9, 9))],
        [helper.make_tensor_value_info("y", F, None), helper.make_tensor_value_info("n3", F, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in params.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def test_conv_chains_are_fused_and_bitwise_ort():
    rng = np.random.default_rng(11)
    model = _model(rng)
    g = qsim.load_onnx(model)
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    y, n3 = _ort(model, {"x": x})
    got = qsim.run(g, {"x": x})
    observed = qsim.run(g, {"x": x}, observe=lambda name, value: None)    # fuses nothing
    for name, want in (("y", y), ("n3", n3)):
        np.testing.assert_array_equal(got[name].view(np.uint32), want.view(np.uint32))
        np.testing.assert_array_equal(observed[name].view(np.uint32), want.view(np.uint32))
    plan = _plan(g, ("y", "n3"), None, frozenset(), False, "avx2")
    names = [n.name or n.output[0] for n in model.graph.node]
    fused = {names[i]: [names[j] for j in absorbed] for i, (absorbed, _) in plan.fusions.items()}
    order = [n.op_type for n in model.graph.node]
    assert {order[i] for i in plan.fusions} == {"Conv"}
    chains = sorted(len(absorbed) for absorbed in fused.values())
    assert chains == [1, 2, 4], fused            # BN; Mul+Add; BN+Mul+Add+Relu
    assert "g" in plan.folded and "y" not in plan.folded
    assert (got["y"] < 0).any() and np.isnan(got["y"]).any()


def test_plan_is_made_once_per_graph_and_options():
    rng = np.random.default_rng(12)
    g = qsim.load_onnx(_model(rng))
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    qsim.run(g, {"x": x})
    qsim.run(g, {"x": x})
    qsim.run(g, {"x": x}, outputs=["c1"])
    plans = [k for k in g.memo if k[0] == "run-plan"]
    assert len(plans) == 2
    with_c1 = g.memo[next(k for k in plans if "c1" in k[1])]
    conv1 = 0
    assert conv1 not in with_c1.fusions      # c1 requested: its chain cannot start there


_special = st.sampled_from([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -3.5, 2.0])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@settings(max_examples=60, deadline=None)
@given(data=st.data(), m=st.integers(1, 5), p=st.integers(1, 40), n=st.integers(1, 2),
       add=st.booleans(), relu=st.booleans())
def test_bias_steps_kernel_equals_numpy_twin(data, m, p, n, add, relu):
    """The compiled bias+steps pass and its NumPy twin give the same bits, special values
    included (each step one float32 operation, never fused into an fma)."""
    codes = np.array(data.draw(st.lists(st.sampled_from([0, 1, 2]), min_size=1, max_size=5)),
                     np.int64)
    values = np.array(data.draw(st.lists(st.floats(-4, 4, width=32), min_size=codes.size * m,
                                         max_size=codes.size * m)),
                      np.float32).reshape(codes.size, m)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    y = rng.standard_normal((n, m, p)).astype(np.float32) * 1e3
    y.reshape(-1)[rng.integers(0, y.size, 4)] = data.draw(st.lists(_special, min_size=4,
                                                                   max_size=4))
    bias = rng.standard_normal(m).astype(np.float32) if add else None
    a, b = y.copy(), y.copy()
    gemm._bias_relu(a, bias, relu, True, (codes, values))
    gemm._bias_relu(b, bias, relu, False, (codes, values))
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    want = y.copy()                       # the nodes one by one, in float32
    if add:
        want = want + bias.reshape(-1, 1)
    if relu:
        want = np.where(want < 0, np.float32(0), want)
    for code, v in zip(codes, values):
        if code == 0:
            want = want * v.reshape(-1, 1)
        elif code == 1:
            want = want + v.reshape(-1, 1)
        else:
            want = np.where(want < 0, np.float32(0), want)
    np.testing.assert_array_equal(a.view(np.uint32), want.astype(np.float32).view(np.uint32))


def test_relu_after_add_and_sum_runs_in_place_and_is_bitwise_ort():
    """Add → Relu and Sum → Relu (ResNet's and ShuffleNet's residual joins) run as one node;
    -0, NaN and inf pass through the Relu as in ORT."""
    rng = np.random.default_rng(13)
    shape = (2, 5, 6, 7)
    nodes = [helper.make_node("Add", ["x", "z"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Sum", ["r", "x", "z"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, F, shape) for n in ("x", "z")],
        [helper.make_tensor_value_info("y", F, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    x = rng.standard_normal(shape).astype(np.float32)
    z = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[:6] = [-0.0, np.nan, np.inf, -np.inf, -0.0, 1.0]
    z.reshape(-1)[:6] = [-0.0, 1.0, 1.0, 1.0, 0.0, -1.0]
    (want,) = _ort(model, {"x": x, "z": z})
    g = qsim.load_onnx(model)
    got = qsim.run(g, {"x": x, "z": z})["y"]
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    plan = _plan(g, ("y",), None, frozenset(), False, "avx2")
    assert {i: absorbed for i, (absorbed, _) in plan.fusions.items()} == {0: (1,), 2: (3,)}
