"""update_order() against ONNX Runtime's real execution order of the sim graph.

The sim graph is built here the way AIMET builds it (one quantize node per quantized tensor,
right after its producer; graph-input and initializer quantizers first), with ``Identity`` nodes
standing in for the quantize ops; ORT's profiler then reports the order it ran them in.
"""
from __future__ import annotations

import json
import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from qsim.onnx_io import load_onnx
from qsim.placement import place_quantizers
from tests.placement.golden_util import GOLDEN, MODEL_CASES, place_case
from tests.placement.synth import DEFAULT


def _sim_model(model: onnx.ModelProto, placement) -> onnx.ModelProto:
    g = model.graph
    quantized = set(placement.quantizer_of)
    produced = {o for n in g.node for o in n.output}

    def read(t):
        return t + "_updated" if t in quantized else t

    def qnode(t):
        return helper.make_node("Identity", [t], [t + "_updated"], name="q::" + t)

    inits = {i.name for i in g.initializer}
    first = [i.name for i in g.input if i.name in quantized]
    first += [t for t in placement.quantizer_of if t in inits and placement.spec(t).is_param]
    first += [t for t in placement.quantizer_of if t in inits and not placement.spec(t).is_param]
    nodes = [qnode(t) for t in first]
    for n in g.node:
        copy = helper.make_node(n.op_type, [read(i) if i else "" for i in n.input], list(n.output),
                                name=n.name, domain=n.domain)
        copy.attribute.extend(n.attribute)
        nodes.append(copy)
        nodes += [qnode(o) for o in n.output if o in quantized]
    outputs = []
    for o in g.output:
        renamed = onnx.ValueInfoProto()
        renamed.CopyFrom(o)
        renamed.name = read(o.name)
        outputs.append(renamed)
    sim = helper.make_graph(nodes, g.name, list(g.input), outputs, initializer=list(g.initializer))
    out = helper.make_model(sim, opset_imports=model.opset_import)
    out.ir_version = model.ir_version
    return out


def _ort_quantizer_order(sim: onnx.ModelProto, feeds: dict, placement) -> tuple:
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.log_severity_level = 3  # no warnings about unused initializers
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(sim.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        session.run(None, feeds)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    ran = [e["name"][: -len("_kernel_time")] for e in events
           if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    params = {i.name for i in sim.graph.initializer if placement.spec(i.name) is not None
              and placement.spec(i.name).is_param}
    return tuple(n[3:] for n in ran if n.startswith("q::") and n[3:] not in params)


@pytest.mark.parametrize("case", MODEL_CASES)
def test_update_order_matches_onnx_runtime_on_golden_models(case):
    placement, _, _ = place_case(case)
    model = onnx.load(GOLDEN / "models" / case / "model.onnx")
    data = np.load(GOLDEN / "models" / case / "eval.npz")
    feeds = {k: data[k][:2] for k in data.files}
    assert _ort_quantizer_order(_sim_model(model, placement), feeds, placement) == placement.update_order()


def test_misc_concat_branches_run_later_defined_first():
    placement, _, _ = place_case("misc_s32_default_tf_w8a8")
    order = placement.update_order()
    assert order.index("branch_b_out") < order.index("branch_a_out") < order.index("concat_out")


UNARY, BINARY = ("Relu", "Tanh", "Sigmoid", "Neg", "Reshape"), ("Add", "Mul", "Sub")


@st.composite
def random_dags(draw):
    """Shape-preserving DAGs with fan-out, shared inputs, constants and Reshapes."""
    n_inputs = draw(st.integers(1, 3))
    tensors = [f"in{i}" for i in range(n_inputs)]
    nodes, inits = [], {"shape": np.array([1, 4], dtype=np.int64),
                        "c0": np.float32(0.5) * np.ones((1, 4), np.float32)}
    for i in range(draw(st.integers(1, 12))):
        op = draw(st.sampled_from(UNARY + BINARY))
        pick = st.sampled_from(tensors + ["c0"])
        first = draw(st.sampled_from(tensors))
        if op == "Reshape":
            ins = [first, "shape"]
        elif op in BINARY:
            ins = [first, draw(pick)]
        else:
            ins = [first]
        nodes.append(helper.make_node(op, ins, [f"t{i}"], name=f"n{i}"))
        tensors.append(f"t{i}")
    read = {i for n in nodes for i in n.input}
    outputs = [t for t in tensors if t not in read and t.startswith("t")] or [tensors[-1]]
    inputs = [t for t in tensors if t.startswith("in")]
    g = helper.make_graph(
        nodes, "dag", [helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, 4]) for t in inputs],
        [helper.make_tensor_value_info(t, TensorProto.FLOAT, [1, 4]) for t in outputs],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    return model, {t: np.ones((1, 4), np.float32) for t in inputs}


@settings(max_examples=30, deadline=None)
@given(random_dags())
def test_update_order_matches_onnx_runtime_on_random_dags(dag):
    model, feeds = dag
    placement = place_quantizers(load_onnx(model, check=False), DEFAULT,
                                 param_bitwidth=8, activation_bitwidth=8)
    assert _ort_quantizer_order(_sim_model(model, placement), feeds, placement) == placement.update_order()
