"""Batch-norm folding: folded graphs compute what the unfolded ones compute (checked with ONNX
Runtime), reproduce AIMET's folded model bit for bit, and fold only where it is legal."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import example, given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

import qsim
from qsim.transforms import Fold, fold_batch_norms

HERE = Path(__file__).parent
AIMET_CASE = HERE / "data" / "golden" / "models" / "cnn_bn_s34_unsigned_sym_tfe_w8a8"
EXAMPLES = HERE.parent / "examples"
RTOL, ATOL = 1e-5, 1e-5


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _model(nodes, inputs, outputs, params: dict) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "bn_fold",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in params.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


def _bn(rng, name: str, channels: int, x: str, y: str, *, eps: float = 1e-5):
    """A BatchNormalization node and its parameters (γ of both signs, σ² in [0.05, 2])."""
    params = {f"{name}.gamma": rng.uniform(0.3, 2.0, channels) * rng.choice([-1, 1], channels),
              f"{name}.beta": rng.normal(size=channels),
              f"{name}.mean": rng.normal(size=channels),
              f"{name}.var": rng.uniform(0.05, 2.0, channels)}
    node = helper.make_node("BatchNormalization", [x, *params], [y], name=name, epsilon=eps)
    return node, params


# ---- layer → BN and BN → conv, hypothesis-chosen configurations ---------------------------------

@st.composite
def fold_configs(draw):
    kind = draw(st.sampled_from(["Conv", "ConvTranspose", "Gemm", "BN_Conv"]))
    group = draw(st.sampled_from([1, 2])) if kind in ("Conv", "ConvTranspose") else 1
    return dict(kind=kind, group=group,
                c_in=group * draw(st.integers(1, 3)), c_out=group * draw(st.integers(1, 3)),
                k=draw(st.integers(1, 3)), pad=0 if kind == "BN_Conv" else draw(st.integers(0, 1)),
                stride=draw(st.integers(1, 2)), bias=draw(st.booleans()),
                trans_b=draw(st.booleans()), spatial=draw(st.integers(1, 2)),
                seed=draw(st.integers(0, 2**32 - 1)))


def _fold_case(cfg):
    """A model ``layer → BN → Relu`` (or ``BN → Conv → Relu``) and a feed for it."""
    rng = np.random.default_rng(cfg["seed"])
    c_in, c_out, k, g = cfg["c_in"], cfg["c_out"], cfg["k"], cfg["group"]
    spatial = (5,) * cfg["spatial"]
    kernel = (k,) * cfg["spatial"]
    params, nodes = {}, []
    if cfg["kind"] == "Gemm":
        x_shape = [3, c_in]
        params["W"] = rng.normal(size=(c_out, c_in) if cfg["trans_b"] else (c_in, c_out))
        attrs = dict(transB=int(cfg["trans_b"]))
    elif cfg["kind"] == "ConvTranspose":
        x_shape = [2, c_in, *spatial]
        params["W"] = rng.normal(size=(c_in, c_out // g, *kernel))
        attrs = dict(group=g, pads=[cfg["pad"]] * 2 * len(spatial), strides=[cfg["stride"]] * len(spatial))
    else:
        x_shape = [2, c_in, *spatial]
        params["W"] = rng.normal(size=(c_out, c_in // g, *kernel))
        attrs = dict(group=g, pads=[cfg["pad"]] * 2 * len(spatial), strides=[cfg["stride"]] * len(spatial))
    if cfg["bias"]:
        params["B"] = rng.normal(size=c_out)
    layer_inputs = ["x" if cfg["kind"] != "BN_Conv" else "bn_out", "W"] + (["B"] if cfg["bias"] else [])
    layer_op = "Conv" if cfg["kind"] == "BN_Conv" else cfg["kind"]
    if cfg["kind"] == "BN_Conv":
        bn, bn_params = _bn(rng, "bn", c_in, "x", "bn_out")
        nodes = [bn, helper.make_node(layer_op, layer_inputs, ["conv_out"], name="layer", **attrs),
                 helper.make_node("Relu", ["conv_out"], ["y"], name="relu")]
    else:
        bn, bn_params = _bn(rng, "bn", c_out, "layer_out", "bn_out")
        nodes = [helper.make_node(layer_op, layer_inputs, ["layer_out"], name="layer", **attrs), bn,
                 helper.make_node("Relu", ["bn_out"], ["y"], name="relu")]
    params.update(bn_params)
    model = _model(nodes, [("x", x_shape)], ["y"], params)
    return model, {"x": rng.normal(size=x_shape).astype(np.float32)}


_BASE = dict(group=1, c_in=3, c_out=4, k=3, pad=1, stride=1, bias=True, trans_b=False,
             spatial=2, seed=1)


@settings(max_examples=40, deadline=None)
@given(cfg=fold_configs())
@example(cfg={**_BASE, "kind": "Conv", "group": 2, "c_in": 4})
@example(cfg={**_BASE, "kind": "ConvTranspose", "group": 2, "c_in": 4, "stride": 2, "bias": False})
@example(cfg={**_BASE, "kind": "Gemm", "trans_b": True})
@example(cfg={**_BASE, "kind": "Gemm", "bias": False})
@example(cfg={**_BASE, "kind": "BN_Conv", "pad": 0})
@example(cfg={**_BASE, "kind": "BN_Conv", "pad": 0, "bias": False, "spatial": 1})
def test_folded_graph_computes_what_the_unfolded_graph_computes(cfg):
    model, feeds = _fold_case(cfg)
    graph = qsim.load_onnx(model)
    folded, folds = fold_batch_norms(graph)
    direction = "bn_conv" if cfg["kind"] == "BN_Conv" else "conv_bn"
    assert folds == [Fold(conv="layer", bn="bn", direction=direction)]
    assert [n.op_type for n in folded.nodes] == [n.op_type for n in graph.nodes
                                                  if n.op_type != "BatchNormalization"]
    (want,) = _ort(model, feeds)
    np.testing.assert_allclose(qsim.run(folded, feeds)["y"], want, rtol=RTOL, atol=ATOL)
    (got_ort,) = _ort(qsim.to_onnx(folded), feeds)
    np.testing.assert_allclose(got_ort, want, rtol=RTOL, atol=ATOL)
    # folded weights and biases are float32 and read-only like every parameter
    for name in folded.node("layer").inputs[1:]:
        assert folded.params[name].dtype == np.float32 and not folded.params[name].flags.writeable


def test_folding_does_not_modify_the_input_graph_and_is_idempotent():
    model, feeds = _fold_case(dict(kind="Conv", group=1, c_in=2, c_out=3, k=3, pad=1, stride=1,
                                   bias=False, trans_b=False, spatial=2, seed=3))
    graph = qsim.load_onnx(model)
    before = {k: v.copy() for k, v in graph.params.items()}
    nodes_before = graph.nodes
    folded, folds = fold_batch_norms(graph)
    assert len(folds) == 1 and graph.nodes == nodes_before
    for k, v in before.items():
        np.testing.assert_array_equal(graph.params[k], v)
    # the BN parameters are gone, a bias was created for the bias-less conv
    assert not any(k.startswith("bn.") for k in folded.params)
    assert folded.node("layer").inputs[2] in folded.params
    again, more = fold_batch_norms(folded)
    assert more == [] and again is folded


# ---- against AIMET ---------------------------------------------------------------------------------

def test_matches_aimets_folded_model_bit_for_bit():
    """AIMET 2.42 folded bn1 into conv1; we get the same nodes, tensor names and exact weights."""
    unfolded = qsim.load_onnx(AIMET_CASE / "model_unfolded.onnx")
    aimet = qsim.load_onnx(AIMET_CASE / "model.onnx")
    folded, folds = fold_batch_norms(unfolded)
    assert folds == [Fold(conv="conv1", bn="bn1", direction="conv_bn")]
    assert [(n.name, n.op_type, n.inputs, n.outputs) for n in folded.nodes] == \
        [(n.name, n.op_type, n.inputs, n.outputs) for n in aimet.nodes]
    assert sorted(folded.params) == sorted(aimet.params)
    for name, value in aimet.params.items():
        assert folded.params[name].dtype == value.dtype
        np.testing.assert_array_equal(folded.params[name], value, err_msg=name)


def test_folded_aimet_case_reproduces_the_recorded_fp32_outputs():
    folded, _ = fold_batch_norms(qsim.load_onnx(AIMET_CASE / "model_unfolded.onnx"))
    feeds = dict(np.load(AIMET_CASE / "eval.npz"))
    want = np.load(AIMET_CASE / "fp32_outputs.npz")["output"]
    np.testing.assert_allclose(qsim.run(folded, feeds)["output"], want, rtol=RTOL, atol=1e-6)


def test_bundled_example_folds_both_batch_norms_and_keeps_its_predictions():
    model = onnx.load(str(EXAMPLES / "digits_cnn.onnx"))
    data = np.load(EXAMPLES / "digits.npz")
    x = data["test_x"][:128]
    folded, folds = fold_batch_norms(qsim.load_onnx(model))
    assert [f.direction for f in folds] == ["conv_bn", "conv_bn"]
    assert not any(n.op_type == "BatchNormalization" for n in folded.nodes)
    (want,) = _ort(model, {"input": x})
    got = qsim.run(folded, {"input": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    assert np.array_equal(got.argmax(1), want.argmax(1))


# ---- when folding is not legal ------------------------------------------------------------------------

def _conv_bn_model(*, extra_reader=False, shared_weight=False, bn_is_output=False):
    rng = np.random.default_rng(0)
    bn, params = _bn(rng, "bn", 3, "conv_out", "bn_out")
    params.update(W=rng.normal(size=(3, 2, 1, 1)), B=rng.normal(size=3))
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["conv_out"], name="conv"), bn]
    outputs = ["bn_out"] if bn_is_output else ["y"]
    if not bn_is_output:
        nodes.append(helper.make_node("Relu", ["bn_out"], ["y"], name="relu"))
    if extra_reader:
        nodes.append(helper.make_node("Neg", ["conv_out"], ["z"], name="peek"))
        outputs.append("z")
    if shared_weight:
        nodes.append(helper.make_node("Conv", ["x", "W"], ["z2"], name="twin"))
        outputs.append("z2")
    return _model(nodes, [("x", [1, 2, 4, 4])], outputs, params), \
        {"x": rng.normal(size=(1, 2, 4, 4)).astype(np.float32)}


def test_conv_output_read_by_another_node_is_not_folded():
    model, _ = _conv_bn_model(extra_reader=True)
    graph = qsim.load_onnx(model)
    assert fold_batch_norms(graph) == (graph, [])


def test_conv_weight_shared_with_another_node_is_not_folded():
    model, _ = _conv_bn_model(shared_weight=True)
    graph = qsim.load_onnx(model)
    assert fold_batch_norms(graph) == (graph, [])


def test_bn_output_that_is_a_graph_output_keeps_its_name():
    model, feeds = _conv_bn_model(bn_is_output=True)
    folded, folds = fold_batch_norms(qsim.load_onnx(model))
    assert len(folds) == 1
    assert folded.output_names == ("bn_out",) and folded.node("conv").outputs == ("bn_out",)
    (want,) = _ort(model, feeds)
    np.testing.assert_allclose(qsim.run(folded, feeds)["bn_out"], want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("attrs", [dict(pads=[1, 1, 1, 1]), dict(group=2), dict(auto_pad="SAME_UPPER")],
                         ids=["padded", "grouped", "auto_pad"])
def test_bn_before_a_padded_or_grouped_conv_is_not_folded(attrs):
    rng = np.random.default_rng(1)
    bn, params = _bn(rng, "bn", 4, "x", "bn_out")
    params["W"] = rng.normal(size=(4, 4 // attrs.get("group", 1), 3, 3))
    nodes = [bn, helper.make_node("Conv", ["bn_out", "W"], ["y"], name="conv", **attrs)]
    graph = qsim.load_onnx(_model(nodes, [("x", [1, 4, 5, 5])], ["y"], params))
    assert fold_batch_norms(graph) == (graph, [])


def test_gemm_with_alpha_or_beta_is_not_folded():
    rng = np.random.default_rng(2)
    bn, params = _bn(rng, "bn", 3, "g", "y")
    params.update(W=rng.normal(size=(4, 3)), C=rng.normal(size=3))
    nodes = [helper.make_node("Gemm", ["x", "W", "C"], ["g"], name="gemm", alpha=0.5), bn]
    graph = qsim.load_onnx(_model(nodes, [("x", [2, 4])], ["y"], params))
    assert fold_batch_norms(graph) == (graph, [])


def test_conv_bn_conv_folds_the_first_pair_forward_and_leaves_the_second_conv_alone():
    rng = np.random.default_rng(5)
    bn, params = _bn(rng, "bn", 3, "c1", "b1")
    params.update(W1=rng.normal(size=(3, 2, 3, 3)), W2=rng.normal(size=(4, 3, 1, 1)))
    nodes = [helper.make_node("Conv", ["x", "W1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]), bn,
             helper.make_node("Conv", ["b1", "W2"], ["y"], name="conv2")]
    model = _model(nodes, [("x", [2, 2, 6, 6])], ["y"], params)
    folded, folds = fold_batch_norms(qsim.load_onnx(model))
    assert folds == [Fold(conv="conv1", bn="bn", direction="conv_bn")]
    np.testing.assert_array_equal(folded.params["W2"], np.float32(params["W2"]))
    feeds = {"x": rng.normal(size=(2, 2, 6, 6)).astype(np.float32)}
    (want,) = _ort(model, feeds)
    np.testing.assert_allclose(qsim.run(folded, feeds)["y"], want, rtol=RTOL, atol=ATOL)


def test_docstring_examples():
    import doctest

    import qsim.transforms

    result = doctest.testmod(qsim.transforms)
    assert result.failed == 0 and result.attempted >= 1
