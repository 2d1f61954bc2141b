"""The IR: Graph.validate() rejects malformed graphs naming the node; graphs are frozen."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from qsim import Graph, GraphError, Node, ValueInfo

F32 = np.dtype(np.float32)


def _graph(nodes, *, inputs=("x",), outputs=("y",), params=None) -> Graph:
    return Graph(nodes=nodes, inputs=tuple(ValueInfo(n, F32, (2,)) for n in inputs),
                 outputs=tuple(ValueInfo(n, F32, (2,)) for n in outputs), params=params or {})


def test_a_well_formed_graph_validates_and_returns_itself():
    g = _graph([Node(name="relu", op_type="Relu", inputs=("x",), outputs=("t",)),
                Node(name="add", op_type="Add", inputs=("t", "b"), outputs=("y",))],
               params={"b": np.ones(2, np.float32)})
    assert g.validate() is g


def test_dangling_input_is_rejected_naming_node_and_tensor():
    g = _graph([Node(name="add", op_type="Add", inputs=("x", "nowhere"), outputs=("y",))])
    with pytest.raises(GraphError, match=r"'add'.*'nowhere'.*dangling"):
        g.validate()


def test_duplicate_node_names_are_rejected():
    g = _graph([Node(name="n", op_type="Relu", inputs=("x",), outputs=("t",)),
                Node(name="n", op_type="Relu", inputs=("t",), outputs=("y",))])
    with pytest.raises(GraphError, match=r"duplicate node name 'n'"):
        g.validate()


def test_a_tensor_produced_twice_is_rejected_naming_the_second_producer():
    g = _graph([Node(name="first", op_type="Relu", inputs=("x",), outputs=("y",)),
                Node(name="second", op_type="Neg", inputs=("x",), outputs=("y",))])
    with pytest.raises(GraphError, match=r"node 'second'.*output 'y' is already defined"):
        g.validate()


def test_a_node_output_that_shadows_a_parameter_or_input_is_rejected():
    g = _graph([Node(name="shadow", op_type="Relu", inputs=("x",), outputs=("w",)),
                Node(name="add", op_type="Add", inputs=("x", "w"), outputs=("y",))],
               params={"w": np.ones(2, np.float32)})
    with pytest.raises(GraphError, match=r"node 'shadow'.*'w'.*parameter"):
        g.validate()
    g = _graph([Node(name="shadow", op_type="Relu", inputs=("x",), outputs=("x",))],
               outputs=("x",))
    with pytest.raises(GraphError, match=r"node 'shadow'.*'x'.*graph input"):
        g.validate()


def test_a_parameter_with_the_name_of_a_graph_input_is_rejected():
    g = _graph([Node(name="relu", op_type="Relu", inputs=("x",), outputs=("y",))],
               params={"x": np.ones(2, np.float32)})
    with pytest.raises(GraphError, match=r"'x'.*graph input and a parameter"):
        g.validate()


def test_a_cycle_is_rejected_naming_a_node_on_it():
    g = _graph([Node(name="a", op_type="Add", inputs=("x", "t2"), outputs=("t1",)),
                Node(name="b", op_type="Relu", inputs=("t1",), outputs=("t2",)),
                Node(name="c", op_type="Relu", inputs=("t2",), outputs=("y",))])
    with pytest.raises(GraphError, match=r"node 'a'.*'t2'.*node 'b'.*cycle"):
        g.validate()


def test_a_self_loop_is_rejected():
    g = _graph([Node(name="loop", op_type="Add", inputs=("x", "y"), outputs=("y",))])
    with pytest.raises(GraphError, match=r"node 'loop'.*'y'"):
        g.validate()


def test_a_graph_output_nothing_produces_is_rejected():
    g = _graph([Node(name="relu", op_type="Relu", inputs=("x",), outputs=("t",))])
    with pytest.raises(GraphError, match=r"graph output 'y'"):
        g.validate()


def test_absent_optional_inputs_are_allowed():
    g = _graph([Node(name="clip", op_type="Clip", inputs=("x", "", "hi"), outputs=("y",))],
               params={"hi": np.float32(6)})
    assert g.validate() is g


def test_graph_and_node_fields_cannot_be_reassigned():
    node = Node(name="relu", op_type="Relu", inputs=("x",), outputs=("y",), attrs={"k": 1})
    g = _graph([node])
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.nodes = ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.name = "other"
    with pytest.raises(TypeError):
        node.attrs["k"] = 2
    assert isinstance(node.inputs, tuple) and isinstance(g.nodes, tuple)


def test_params_are_read_only_and_do_not_alias_the_callers_arrays():
    w = np.arange(4, dtype=np.float32)
    g = _graph([Node(name="add", op_type="Add", inputs=("x", "w"), outputs=("y",))],
               params={"w": w})
    with pytest.raises(ValueError):
        g.params["w"][0] = 42.0
    with pytest.raises(TypeError):
        g.params["w"] = np.zeros(4, np.float32)
    w[0] = 42.0  # the caller's array stays theirs; the graph kept its own copy
    assert g.params["w"][0] == 0.0


def test_with_nodes_returns_a_new_graph_and_leaves_the_old_one_alone():
    relu = Node(name="relu", op_type="Relu", inputs=("x",), outputs=("y",))
    neg = Node(name="neg", op_type="Neg", inputs=("x",), outputs=("y",))
    g = _graph([relu])
    h = g.with_nodes([neg])
    assert g.nodes == (relu,) and h.nodes == (neg,)
    assert h.params is not g.params or dict(h.params) == dict(g.params)


def test_producers_consumers_and_lookup():
    a = Node(name="a", op_type="Relu", inputs=("x",), outputs=("t",))
    b = Node(name="b", op_type="Mul", inputs=("t", "t"), outputs=("y",))
    g = _graph([a, b])
    assert g.producers() == {"t": a, "y": b}
    assert g.consumers() == {"x": [a], "t": [b]}
    assert g.node("b") is b
    with pytest.raises(GraphError, match=r"no node named 'zzz'"):
        g.node("zzz")


def test_nodes_out_of_order_are_rejected_and_not_called_a_cycle():
    g = _graph([Node(name="late", op_type="Relu", inputs=("t",), outputs=("y",)),
                Node(name="early", op_type="Relu", inputs=("x",), outputs=("t",))])
    with pytest.raises(GraphError, match=r"node 'late'.*'t'.*node 'early'.*out of topological order") as info:
        g.validate()
    assert "cycle" not in str(info.value).split(";")[0]
