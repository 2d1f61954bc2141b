"""ONNX ⇄ Graph: malformed files, unsupported ops, external data, and the round trip via ORT."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import qsim
from qsim import GraphError, UnknownOpError

GOLDEN = Path(__file__).parent / "data" / "golden"
ROUND_TRIP_MODELS = [GOLDEN / "cnn-seed0" / "model.onnx",
                     *sorted((GOLDEN / "models").glob("*/model.onnx")),
                     GOLDEN / "models" / "cnn_bn_s34_unsigned_sym_tfe_w8a8" / "model_unfolded.onnx"]


def _ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _small_model() -> onnx.ModelProto:
    """y = relu(x @ W + b), W and b initializers."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    b = rng.normal(size=(3,)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "b"], ["hb"], name="add"),
             helper.make_node("Relu", ["hb"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "small",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
                              initializer=[numpy_helper.from_array(w, "W"),
                                           numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model


# ---- malformed input ---------------------------------------------------------------------------

def test_random_bytes_are_a_graph_error_naming_the_file(tmp_path):
    path = tmp_path / "noise.onnx"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(GraphError, match=r"noise\.onnx"):
        qsim.load_onnx(path)


def test_a_truncated_file_is_a_graph_error(tmp_path):
    data = (GOLDEN / "cnn-seed0" / "model.onnx").read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(GraphError, match=r"truncated\.onnx"):
        qsim.load_onnx(path)


def test_a_missing_path_is_a_graph_error(tmp_path):
    with pytest.raises(GraphError, match=r"does-not-exist\.onnx.*does not exist"):
        qsim.load_onnx(tmp_path / "does-not-exist.onnx")
    with pytest.raises(GraphError, match=r"does not exist"):
        qsim.load_onnx(str(tmp_path))  # a directory is not a model file


def test_something_that_is_not_a_model_is_a_graph_error():
    with pytest.raises(GraphError, match=r"ModelProto.*int"):
        qsim.load_onnx(42)


def test_a_model_whose_nodes_form_a_cycle_is_a_graph_error():
    nodes = [helper.make_node("Add", ["x", "t2"], ["t1"], name="a"),
             helper.make_node("Relu", ["t1"], ["t2"], name="b"),
             helper.make_node("Relu", ["t2"], ["y"], name="c")]
    graph = helper.make_graph(nodes, "cyclic",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(GraphError, match=r"cycle"):
        qsim.load_onnx(model)


# ---- unsupported ops and attributes --------------------------------------------------------------

def test_unsupported_op_and_attribute_are_reported_together_naming_every_node():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="odd_relu", not_an_onnx_attr=3),
             helper.make_node("FancyNewOp", ["a"], ["b"], name="fancy"),
             helper.make_node("Neg", ["b"], ["y"], name="fine")]
    graph = helper.make_graph(nodes, "bad",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnknownOpError) as info:
        qsim.load_onnx(model)
    message = str(info.value)
    assert "'odd_relu'" in message and "not_an_onnx_attr" in message
    assert "'fancy'" in message and "FancyNewOp" in message
    assert "'fine'" not in message
    # check=False loads the graph anyway (for inspection)
    assert [n.name for n in qsim.load_onnx(model, check=False).nodes] == ["odd_relu", "fancy", "fine"]


def test_sub_graph_attribute_and_unknown_op_are_reported_together():
    then_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["t"])], "then", [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2])])
    nodes = [helper.make_node("FancyNewOp", ["x"], ["c"], name="fancy"),
             helper.make_node("If", ["c"], ["y"], name="branchy", then_branch=then_branch,
                              else_branch=then_branch)]
    graph = helper.make_graph(nodes, "bad",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnknownOpError) as info:
        qsim.load_onnx(model)
    message = str(info.value)
    assert "'fancy'" in message and "'branchy'" in message


# ---- what load_onnx keeps ----------------------------------------------------------------------------

def test_params_inputs_outputs_and_nodes_are_loaded():
    g = qsim.load_onnx(_small_model())
    assert g.input_names == ("x",) and g.output_names == ("y",)
    assert g.inputs[0].dtype == np.float32 and g.inputs[0].shape == ("n", 4)
    assert [n.name for n in g.nodes] == ["mm", "add", "relu"]
    assert sorted(g.params) == ["W", "b"]
    assert not g.params["W"].flags.writeable
    assert g.opset == 17
    assert g.dtype_of("h") == np.float32  # inferred by ONNX shape inference


def test_nodes_out_of_order_in_the_file_are_sorted():
    model = _small_model()
    reordered = list(reversed(model.graph.node))
    del model.graph.node[:]
    model.graph.node.extend(reordered)
    assert [n.name for n in qsim.load_onnx(model).nodes] == ["mm", "add", "relu"]


def test_unnamed_and_duplicate_node_names_get_unique_names():
    model = _small_model()
    model.graph.node[0].name = ""
    model.graph.node[1].name = "same"
    model.graph.node[2].name = "same"
    names = [n.name for n in qsim.load_onnx(model).nodes]
    assert len(set(names)) == 3 and all(names)


def test_external_data_files_are_loaded(tmp_path):
    model = _small_model()
    expected = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    path = tmp_path / "external.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="external.data", size_threshold=0)
    assert (tmp_path / "external.data").stat().st_size > 0
    assert path.stat().st_size < 400  # the weights really are outside the model file
    g = qsim.load_onnx(path)
    assert sorted(g.params) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(g.params[name], value)


def test_missing_external_data_file_is_a_graph_error(tmp_path):
    path = tmp_path / "external.onnx"
    onnx.save(_small_model(), str(path), save_as_external_data=True,
              all_tensors_to_one_file=True, location="external.data", size_threshold=0)
    (tmp_path / "external.data").unlink()
    with pytest.raises(GraphError, match=r"external\.onnx"):
        qsim.load_onnx(path)


# ---- round trip ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ROUND_TRIP_MODELS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_to_onnx_of_load_onnx_runs_in_ort_with_the_same_outputs(path):
    original = onnx.load(str(path))
    rebuilt = qsim.to_onnx(qsim.load_onnx(original, check=False))
    onnx.checker.check_model(rebuilt)
    rng = np.random.default_rng(7)
    feeds = {}
    for vi in original.graph.input:
        if vi.name in {i.name for i in original.graph.initializer}:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 3 for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = rng.normal(size=dims).astype(np.float32)
    want, got = _ort(original, feeds), _ort(rebuilt, feeds)
    assert [o.name for o in rebuilt.graph.output] == [o.name for o in original.graph.output]
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)


def test_to_onnx_keeps_names_attributes_and_parameters():
    model = _small_model()
    g = qsim.load_onnx(model)
    back = qsim.load_onnx(qsim.to_onnx(g))
    assert [(n.name, n.op_type, n.inputs, n.outputs, dict(n.attrs)) for n in back.nodes] == \
        [(n.name, n.op_type, n.inputs, n.outputs, dict(n.attrs)) for n in g.nodes]
    assert back.inputs == g.inputs and back.outputs == g.outputs
    for k in g.params:
        np.testing.assert_array_equal(back.params[k], g.params[k])
