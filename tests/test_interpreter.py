"""The executor: observer hook, intermediate tensors, feed checks and op failures."""
from __future__ import annotations

import numpy as np
import pytest

from qsim import FeedError, Graph, GraphError, Node, OpError, ValueInfo, run

F32 = np.dtype(np.float32)


def _chain() -> Graph:
    """y = relu(x + b) * x ;  t1 = x + b, t2 = relu(t1)"""
    return Graph(
        nodes=(Node(name="add", op_type="Add", inputs=("x", "b"), outputs=("t1",)),
               Node(name="relu", op_type="Relu", inputs=("t1",), outputs=("t2",)),
               Node(name="mul", op_type="Mul", inputs=("t2", "x"), outputs=("y",))),
        inputs=(ValueInfo("x", F32, ("batch", 3)),),
        outputs=(ValueInfo("y", F32, ("batch", 3)),),
        params={"b": np.array([-1.0, 0.5, 2.0], np.float32)},
    ).validate()


def _x(rows=2):
    return np.random.default_rng(0).normal(size=(rows, 3)).astype(np.float32)


def _numpy_reference(x, b):
    t1 = x + b
    t2 = np.maximum(t1, 0)
    return t1, t2, t2 * x


def test_run_returns_the_graph_outputs():
    g, x = _chain(), _x()
    out = run(g, {"x": x})
    assert list(out) == ["y"]
    np.testing.assert_array_equal(out["y"], _numpy_reference(x, g.params["b"])[2])


def test_intermediate_tensors_inputs_and_params_can_be_requested_by_name():
    g, x = _chain(), _x()
    t1, t2, y = _numpy_reference(x, g.params["b"])
    out = run(g, {"x": x}, outputs=["t2", "t1", "x", "b", "y"])
    assert list(out) == ["t2", "t1", "x", "b", "y"]
    np.testing.assert_array_equal(out["t1"], t1)
    np.testing.assert_array_equal(out["t2"], t2)
    np.testing.assert_array_equal(out["y"], y)
    np.testing.assert_array_equal(out["x"], x)
    np.testing.assert_array_equal(out["b"], g.params["b"])


def test_asking_for_an_unknown_tensor_is_a_graph_error():
    with pytest.raises(GraphError, match=r"'nope'"):
        run(_chain(), {"x": _x()}, outputs=["nope"])


def test_observer_sees_the_graph_input_then_every_node_output_in_order():
    g, x = _chain(), _x()
    seen = []

    def observe(name, value):
        seen.append((name, value.copy()))

    out = run(g, {"x": x}, observe=observe)
    assert [name for name, _ in seen] == ["x", "t1", "t2", "y"]
    t1, t2, y = _numpy_reference(x, g.params["b"])
    for (_, got), want in zip(seen, (x, t1, t2, y)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(out["y"], y)


def test_observer_can_replace_tensors_downstream():
    g, x = _chain(), _x()
    b = g.params["b"]

    def observe(name, value):
        if name == "x":
            return value * 2
        if name == "t1":
            return np.full_like(value, -1.0)  # relu then gives zeros
        return None

    out = run(g, {"x": x}, observe=observe, outputs=["t1", "t2", "y"])
    np.testing.assert_array_equal(out["t1"], np.full((2, 3), -1.0, np.float32))
    np.testing.assert_array_equal(out["t2"], np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(out["y"], np.zeros((2, 3), np.float32))
    # a replaced graph input feeds every reader, including the last node
    out = run(g, {"x": x}, observe=lambda n, v: v * 2 if n == "x" else None)
    np.testing.assert_array_equal(out["y"], _numpy_reference(2 * x, b)[2])


def test_symbolic_batch_dimension_accepts_any_size():
    g = _chain()
    for rows in (1, 5):
        assert run(g, {"x": _x(rows)})["y"].shape == (rows, 3)


def test_run_does_not_modify_the_feeds():
    g, x = _chain(), _x()
    before = x.copy()
    run(g, {"x": x}, observe=lambda n, v: None)
    np.testing.assert_array_equal(x, before)


def test_missing_feed_is_named():
    with pytest.raises(FeedError, match=r"missing \['x'\].*expected exactly \['x'\]"):
        run(_chain(), {})


def test_extra_feed_is_named():
    with pytest.raises(FeedError, match=r"unknown \['z'\].*expected exactly \['x'\]"):
        run(_chain(), {"x": _x(), "z": _x()})


def test_wrong_dtype_names_the_input_the_dtype_and_the_expected_dtype():
    with pytest.raises(FeedError, match=r"'x'.*float64.*expected float32"):
        run(_chain(), {"x": _x().astype(np.float64)})


def test_wrong_shape_names_the_input_the_shape_and_the_expected_shape():
    with pytest.raises(FeedError, match=r"'x'.*\(2, 4\).*expected \(batch, 3\)"):
        run(_chain(), {"x": np.zeros((2, 4), np.float32)})
    with pytest.raises(FeedError, match=r"'x'.*\(6,\).*expected \(batch, 3\)"):
        run(_chain(), {"x": np.zeros(6, np.float32)})


def test_feeds_that_are_not_a_mapping_are_rejected():
    with pytest.raises(FeedError, match=r"dict"):
        run(_chain(), [_x()])


def test_a_failing_op_raises_op_error_naming_the_node_and_its_inputs():
    g = Graph(nodes=(Node(name="bad_add", op_type="Add", inputs=("x", "w"), outputs=("y",)),),
              inputs=(ValueInfo("x", F32, None),), outputs=(ValueInfo("y", F32, None),),
              params={"w": np.zeros((4,), np.float32)}).validate()
    with pytest.raises(OpError, match=r"node 'bad_add' \(Add\).*2, 3.*4"):
        run(g, {"x": _x()})


def test_an_unsupported_op_at_run_time_names_the_node():
    g = Graph(nodes=(Node(name="mystery", op_type="NoSuchOp", inputs=("x",), outputs=("y",)),),
              inputs=(ValueInfo("x", F32, None),), outputs=(ValueInfo("y", F32, None),))
    with pytest.raises(GraphError, match=r"node 'mystery' \(NoSuchOp\).*not supported"):
        run(g, {"x": _x()})


def _custom_graph() -> Graph:
    return Graph(nodes=(Node(name="custom", op_type="MyOp", inputs=("x", "b"), outputs=("y",),
                             attrs={"k": 3}),),
                 inputs=(ValueInfo("x", F32, None),), outputs=(ValueInfo("y", F32, None),),
                 params={"b": np.ones(3, np.float32)}).validate()


def test_extra_op_implementations_run_with_the_registry_calling_convention():
    def my_op(x, b, *, k):
        return x * k + b

    x = _x()
    out = run(_custom_graph(), {"x": x}, ops={"MyOp": my_op})
    np.testing.assert_array_equal(out["y"], x * 3 + 1)


def test_a_python_exception_inside_an_op_becomes_op_error_naming_node_and_input_shapes():
    def broken(x, b, *, k):
        raise ZeroDivisionError("boom")

    with pytest.raises(OpError, match=r"node 'custom' \(MyOp\).*x: float32\[2, 3\].*b: float32\[3\]"
                                      r".*ZeroDivisionError: boom"):
        run(_custom_graph(), {"x": _x()}, ops={"MyOp": broken})


def test_a_qsim_error_inside_an_op_keeps_its_type_and_gains_the_node_name():
    def picky(x, b, *, k):
        raise OpError("k must be even, got 3")

    with pytest.raises(OpError, match=r"node 'custom' \(MyOp\): k must be even, got 3"):
        run(_custom_graph(), {"x": _x()}, ops={"MyOp": picky})


def test_an_op_returning_too_few_outputs_is_an_op_error():
    g = Graph(nodes=(Node(name="two", op_type="MyOp", inputs=("x",), outputs=("a", "b")),),
              inputs=(ValueInfo("x", F32, None),), outputs=(ValueInfo("a", F32, None),)).validate()
    with pytest.raises(OpError, match=r"node 'two'.*1 output.*declares 2"):
        run(g, {"x": _x()}, ops={"MyOp": lambda x: x})
