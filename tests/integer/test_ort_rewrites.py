"""The float rewrites of ``qsim.integer.ort_fusion`` on small hand-made models, against ONNX
Runtime: the rewritten graph has the node multiset of ORT's own optimized dump, and the integer
model's outputs equal ORT's default session bit for bit.

Covered: SimplifiedLayerNormFusion (and the cases where ORT does not fuse: x read through two
different tensors, a Cast on the way, a 2-D scale, several reduced axes), DivMulFusion,
GemmActivationFusion (FusedGemm), ReshapeFusion (shape pieces from the Reshape's own input, a
one-element piece, constants) and Shape(Transpose) → Gather(Shape)."""
from __future__ import annotations

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import qsim
from qsim.integer.model import integer_model
from qsim.integer.ort_fusion import ort_graph


def _model(nodes, inputs, outputs, inits, opset=17, out_type=T.FLOAT):
    graph = h.make_graph(nodes, "g", inputs, [h.make_tensor_value_info(o, out_type, None)
                                              for o in outputs],
                         initializer=[nh.from_array(v, k) for k, v in inits.items()])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _check(tmp_path, model, feeds):
    """ORT's dump multiset == qsim's rewritten graph's; outputs bit-identical."""
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(tmp_path / "ort.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    theirs = collections.Counter(f"{n.domain}:{n.op_type}"
                                 for n in onnx.load(tmp_path / "ort.onnx").graph.node)
    graph = qsim.load_onnx(path, check=False)
    mine = collections.Counter(f"{n.domain}:{n.op_type}" for n in ort_graph(graph).nodes)
    assert mine == theirs, (dict(mine - theirs), dict(theirs - mine))
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = integer_model(graph).run(feeds)
    for w, g in zip(want, got.values()):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(np.ascontiguousarray(g).view(np.uint8),
                                      np.ascontiguousarray(w).view(np.uint8))
    return mine


def _rms_nodes(x="x", x_div="x", scale="scale", eps="eps", axes=(-1,)):
    return [h.make_node("Pow", [x, "two"], ["p"]),
            h.make_node("ReduceMean", ["p"], ["m"], axes=list(axes), keepdims=1),
            h.make_node("Add", ["m", eps], ["a"]),
            h.make_node("Sqrt", ["a"], ["r"]),
            h.make_node("Div", [x_div, "r"], ["d"]),
            h.make_node("Mul", ["d", scale], ["y"])]


SETTINGS = settings(max_examples=12, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.sampled_from([4, 15, 16, 24, 37, 64]), st.sampled_from([1e-6, 1e-5, 0.5]),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_rms_norm_pattern_becomes_simplified_layer_norm(tmp_path, n, eps, scale_first, seed):
    rng = np.random.default_rng(seed)
    nodes = _rms_nodes()
    if scale_first:
        nodes[-1] = h.make_node("Mul", ["scale", "d"], ["y"])
    inits = {"two": np.array(2.0, np.float32), "eps": np.array(eps, np.float32),
             "scale": rng.standard_normal(n).astype(np.float32)}
    model = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["b", 3, n])], ["y"], inits)
    mine = _check(tmp_path, model, {"x": rng.standard_normal((2, 3, n)).astype(np.float32)})
    assert mine[":SimplifiedLayerNormalization"] == 1


@pytest.mark.parametrize("variant", ["two_tensors", "cast", "scale_2d", "two_axes",
                                     "eps_computed"])
def test_rms_norm_patterns_orts_fusion_refuses_or_changes(tmp_path, variant):
    rng = np.random.default_rng(0)
    n = 32
    inits = {"two": np.array(2.0, np.float32), "eps": np.array(1e-5, np.float32),
             "scale": rng.standard_normal(n).astype(np.float32)}
    nodes = _rms_nodes()
    axes = (-1,)
    if variant == "two_tensors":            # Pow and Div read different tensors
        nodes = [h.make_node("Abs", ["x"], ["x2"])] + _rms_nodes(x_div="x2")
    elif variant == "cast":                 # a Cast between Div and Mul: CPU does not fuse
        nodes = _rms_nodes()
        nodes[-1] = h.make_node("Cast", ["d"], ["dc"], to=T.FLOAT)
        nodes.append(h.make_node("Mul", ["dc", "scale"], ["y"]))
    elif variant == "scale_2d":
        inits["scale"] = rng.standard_normal((3, n)).astype(np.float32)
    elif variant == "two_axes":
        axes = (-2, -1)
        nodes = _rms_nodes(axes=axes)
        inits["scale"] = rng.standard_normal(n).astype(np.float32)
    elif variant == "eps_computed":         # epsilon not an initializer: the fused node uses 1e-5
        nodes = [h.make_node("Abs", ["eps"], ["eps_abs"])] + _rms_nodes(eps="eps_abs")
        inits["eps"] = np.array(-0.25, np.float32)
    model = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["b", 3, n])], ["y"], inits)
    _check(tmp_path, model, {"x": rng.standard_normal((2, 3, n)).astype(np.float32)})


@pytest.mark.parametrize("one", [np.float32(1.0), np.int64(1), np.float32(2.0)])
def test_reciprocal_times_y_becomes_division(tmp_path, one):
    rng = np.random.default_rng(1)
    dtype = T.FLOAT if one.dtype == np.float32 else T.INT64
    nodes = [h.make_node("Div", ["one", "x"], ["r"]), h.make_node("Mul", ["y", "r"], ["out"])]
    model = _model(nodes, [h.make_tensor_value_info("x", dtype, [64]),
                           h.make_tensor_value_info("y", dtype, [64])], ["out"],
                   {"one": np.array(one)}, out_type=dtype)
    if one.dtype == np.float32:
        feeds = {"x": rng.uniform(0.1, 3, 64).astype(np.float32),
                 "y": rng.uniform(-3, 3, 64).astype(np.float32)}
    else:
        feeds = {"x": rng.integers(1, 5, 64), "y": rng.integers(-9, 9, 64)}
    mine = _check(tmp_path, model, feeds)
    assert mine[":Mul"] == (1 if one == 2 else 0)


@pytest.mark.parametrize("opset", [13, 17, 21])
@pytest.mark.parametrize("act, attrs", [("Tanh", {}), ("Relu", {}), ("LeakyRelu", {"alpha": 0.2}),
                                        ("Sigmoid", {}), ("HardSigmoid", {"alpha": 0.3}),
                                        ("Elu", {"alpha": 0.5}), ("Softsign", {})])
def test_gemm_activation_becomes_fused_gemm(tmp_path, act, attrs, opset):
    rng = np.random.default_rng(2)
    nodes = [h.make_node("Gemm", ["a", "w", "c"], ["g"], transB=1),
             h.make_node(act, ["g"], ["y"], **attrs)]
    inits = {"w": rng.standard_normal((24, 40)).astype(np.float32),
             "c": rng.standard_normal(24).astype(np.float32)}
    model = _model(nodes, [h.make_tensor_value_info("a", T.FLOAT, [5, 40])], ["y"], inits,
                   opset=opset)
    if opset >= 21:
        model.ir_version = 10
    mine = _check(tmp_path, model, {"a": rng.standard_normal((5, 40)).astype(np.float32)})
    assert mine["com.microsoft:FusedGemm"] == 1


def test_gemm_read_twice_is_not_fused(tmp_path):
    rng = np.random.default_rng(3)
    nodes = [h.make_node("Gemm", ["a", "w"], ["g"]), h.make_node("Relu", ["g"], ["y"]),
             h.make_node("Neg", ["g"], ["z"])]
    model = _model(nodes, [h.make_tensor_value_info("a", T.FLOAT, [5, 8])], ["y", "z"],
                   {"w": rng.standard_normal((8, 6)).astype(np.float32)})
    mine = _check(tmp_path, model, {"a": rng.standard_normal((5, 8)).astype(np.float32)})
    assert mine[":Gemm"] == 1


@pytest.mark.parametrize("source", ["root", "same_dim", "other_dim", "one_element"])
def test_reshape_shape_subgraph_becomes_a_constant(tmp_path, source):
    rng = np.random.default_rng(4)
    shapes = {"root": ["b", 4, 6], "same_dim": ["b", 5, 5], "other_dim": ["c", 5, 5]}
    nodes = [h.make_node("Relu", ["x"], ["xr"])]
    inputs = [h.make_tensor_value_info("x", T.FLOAT, ["b", 4, 6])]
    feeds = {"x": rng.standard_normal((2, 4, 6)).astype(np.float32)}
    if source == "one_element":
        inputs.append(h.make_tensor_value_info("k", T.INT64, [1]))
        feeds["k"] = np.array([6], np.int64)
        nodes.append(h.make_node("Identity", ["k"], ["u"]))
        pieces = ["c0", "c4", "u"]
    else:
        src = "xr"
        if source != "root":
            inputs.append(h.make_tensor_value_info("z", T.FLOAT, shapes[source]))
            feeds["z"] = rng.standard_normal((2, 5, 5)).astype(np.float32)
            nodes.append(h.make_node("Relu", ["z"], ["zr"]))
            src = "zr"
        nodes += [h.make_node("Shape", [src], ["s"]),
                  h.make_node("Gather", ["s", "i0"], ["g"], axis=0),
                  h.make_node("Unsqueeze", ["g", "ax"], ["u"])]
        pieces = ["u", "c4", "cm1"]
    nodes += [h.make_node("Concat", pieces, ["shape"], axis=0),
              h.make_node("Reshape", ["xr", "shape"], ["y"])]
    inits = {"i0": np.array(0, np.int64), "ax": np.array([0], np.int64),
             "c4": np.array([4], np.int64), "cm1": np.array([-1], np.int64),
             "c0": np.array([0], np.int64)}
    model = _model(nodes, inputs, ["y"], inits)
    mine = _check(tmp_path, model, feeds)
    assert mine[":Concat"] == (1 if source == "other_dim" else 0)


def test_shape_of_a_transpose_reads_the_transpose_input(tmp_path):
    rng = np.random.default_rng(5)
    nodes = [h.make_node("Relu", ["x"], ["xr"]),
             h.make_node("Transpose", ["xr"], ["t"], perm=[0, 2, 1]),
             h.make_node("Shape", ["t"], ["s"]),
             h.make_node("Cast", ["s"], ["sf"], to=T.FLOAT),
             h.make_node("Neg", ["t"], ["y"])]
    model = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, ["b", "h", 6])], ["y", "sf"],
                   {})
    mine = _check(tmp_path, model, {"x": rng.standard_normal((2, 3, 6)).astype(np.float32)})
    assert mine[":Gather"] == 1


@pytest.mark.parametrize("same_grid", [True, False])
@pytest.mark.parametrize("readers", [1, 2])
@pytest.mark.parametrize("consumer", ["Sqrt", "Sigmoid"])
@pytest.mark.parametrize("middle", ["none", "Relu", "Cast"])
def test_double_qdq_pairs_as_ort_removes_them(tmp_path, middle, consumer, readers, same_grid):
    """``Q1 → DQ1 [→ Relu | Cast] → Q2 → DQ2`` read by one or two nodes, the two grids equal
    or not: ORT drops ``DQ1 → Q2`` except after a redundant Relu unless DQ2 has one reader and
    the grids are equal."""
    nodes = [h.make_node("QuantizeLinear", ["x", "s", "z"], ["q1"]),
             h.make_node("DequantizeLinear", ["q1", "s", "z"], ["dq1"])]
    src = "dq1"
    if middle == "Relu":
        nodes.append(h.make_node("Relu", ["dq1"], ["m"]))
        src = "m"
    elif middle == "Cast":
        nodes.append(h.make_node("Cast", ["dq1"], ["m"], to=T.FLOAT))
        src = "m"
    nodes += [h.make_node("QuantizeLinear", [src, "s2", "z2"], ["q2"]),
              h.make_node("DequantizeLinear", ["q2", "s2", "z2"], ["dq2"])]
    outs = []
    for k in range(readers):
        if consumer == "Sqrt":
            nodes.append(h.make_node("Sqrt", ["dq2"], [f"y{k}"]))
        else:
            nodes += [h.make_node("Sigmoid", ["dq2"], [f"p{k}"]),
                      h.make_node("QuantizeLinear", [f"p{k}", "s", "z"], [f"pq{k}"]),
                      h.make_node("DequantizeLinear", [f"pq{k}", "s", "z"], [f"y{k}"])]
        outs.append(f"y{k}")
    inits = {"s": np.array(0.01, np.float32), "s2": np.array(0.012, np.float32),
             "z": np.array(3, np.uint8), "z2": np.array(0, np.uint8)}   # z2 = 0: Relu redundant
    if same_grid:
        inits.update(s2=inits["s"], z=inits["z2"])
    model = _model(nodes, [h.make_tensor_value_info("x", T.FLOAT, [1, 4, 2, 2])], outs, inits)
    x = np.random.default_rng(6).uniform(-1, 3, (1, 4, 2, 2)).astype(np.float32)
    _check(tmp_path, model, {"x": x})
