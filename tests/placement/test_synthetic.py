"""Rules no golden case covers, on tiny graphs (facts from placement.md, confirmed on AIMET)."""
from __future__ import annotations

import numpy as np
import pytest

from qsim.interpreter import run
from qsim.placement import place_quantizers
from tests.placement.synth import DEFAULT, HTP_V75, PER_CHANNEL, config, graph, node, rand


def place(g, cfg, p=8, a=8):
    return place_quantizers(g, cfg, param_bitwidth=p, activation_bitwidth=a)


# ---- forward ties -----------------------------------------------------------------------------

def _matmul_relu():
    return graph([node("MatMul", ["x", "W"], ["mm_out"]), node("Relu", ["mm_out"], ["y"], "relu")],
                 {"x": [2, 4]}, {"y": [2, 3]}, {"W": rand(4, 3)})


def test_relu_after_matmul_shares_its_quantizer():
    p = place(_matmul_relu(), DEFAULT)
    assert p.spec("mm_out").enabled and p.quantizer_of["mm_out"] == p.quantizer_of["y"]
    assert p.spec("y").tensors == ("mm_out", "y")
    assert p.update_order().index("mm_out") < p.update_order().index("y")


def test_relu_min_zero_moves_onto_matmul_output_in_htp():
    p = place(_matmul_relu(), HTP_V75, 8, 16)
    q = p.spec("mm_out")
    assert q is p.spec("y") and q.fixed_range == (0.0, None) and q.bitwidth == 16
    assert p.spec("W").axis == 1  # MatMul with a static weight: last axis


def test_relu_after_disabled_output_is_not_tied():
    g = graph([node("Conv", ["x", "w", "b"], ["conv_out"]), node("Relu", ["conv_out"], ["y"], "relu")],
              {"x": [1, 2, 4, 4]}, {"y": [1, 3, 4, 4]}, {"w": rand(3, 2, 1, 1), "b": rand(3)})
    p = place(g, DEFAULT)
    assert not p.spec("conv_out").enabled
    assert p.quantizer_of["conv_out"] != p.quantizer_of["y"]


# ---- backward ties ----------------------------------------------------------------------------

def _concat_of_concats(extra_reader=False):
    nodes = [node("Tanh", ["x1"], ["a"], "ta"), node("Tanh", ["x2"], ["b"], "tb"),
             node("Tanh", ["x3"], ["c"], "tc"),
             node("Concat", ["a", "b"], ["inner"], "inner", axis=1),
             node("Concat", ["inner", "c"], ["outer"], "outer", axis=1)]
    outputs = {"outer": [1, 6]}
    if extra_reader:
        nodes.append(node("Neg", ["a"], ["a_neg"], "neg"))
        outputs["a_neg"] = [1, 2]
    return graph(nodes, {"x1": [1, 2], "x2": [1, 2], "x3": [1, 2]}, outputs)


def test_concat_of_concats_is_one_group():
    p = place(_concat_of_concats(), DEFAULT)
    assert p.spec("outer").tensors == ("a", "b", "c", "inner", "outer")
    assert len({p.quantizer_of[t] for t in ("a", "b", "c", "inner", "outer")}) == 1


def test_concat_source_with_another_reader_is_not_tied():
    p = place(_concat_of_concats(extra_reader=True), DEFAULT)
    assert p.quantizer_of["a"] != p.quantizer_of["outer"]
    assert p.spec("outer").tensors == ("b", "c", "inner", "outer")


def test_concat_of_sigmoids_keeps_0_1_and_mixed_ranges_are_not_tied():
    same = graph([node("Sigmoid", ["x1"], ["s1"], "s1"), node("Sigmoid", ["x2"], ["s2"], "s2"),
                  node("Concat", ["s1", "s2"], ["cat"], "cat", axis=1)],
                 {"x1": [1, 2], "x2": [1, 2]}, {"cat": [1, 4]})
    p = place(same, HTP_V75, 8, 16)
    assert p.spec("cat").tensors == ("s1", "s2", "cat") and p.spec("cat").fixed_range == (0.0, 1.0)
    mixed = graph([node("Sigmoid", ["x1"], ["s1"], "s1"), node("Tanh", ["x2"], ["t2"], "t2"),
                   node("Concat", ["s1", "t2"], ["cat"], "cat", axis=1)],
                  {"x1": [1, 2], "x2": [1, 2]}, {"cat": [1, 4]})
    p = place(mixed, HTP_V75, 8, 16)
    assert p.spec("cat").tensors == ("cat",) and p.spec("cat").fixed_range is None
    assert p.spec("t2").fixed_range == (-1.0, 1.0) and p.spec("t2").symmetric


# ---- dynamic MatMul ---------------------------------------------------------------------------

def _dynamic_matmul():
    return graph([node("Relu", ["x"], ["a"], "ra"), node("Tanh", ["y"], ["k"], "tk"),
                  node("Transpose", ["k"], ["k_t"], "kt", perm=[1, 0]),
                  node("MatMul", ["a", "k_t"], ["s"], "qk")],
                 {"x": [3, 4], "y": [5, 4]}, {"s": [3, 5]})


def test_dynamic_matmul_weight_is_symmetric_through_transpose():
    p = place(_dynamic_matmul(), DEFAULT)
    assert "k_t" not in p.quantizer_of  # Transpose outputs get no quantizer
    assert p.spec("k").symmetric and not p.spec("a").symmetric and not p.spec("s").symmetric
    assert p.effective_quantizer("k_t") == p.quantizer_of["k"]
    assert any("dynamic weight of qk" in r for r in p.spec("k").reasons)


def test_dynamic_matmul_exception_rules_by_hw_version():
    p = place(_dynamic_matmul(), config(HTP_V75, hw_version="V68"), 8, 16)
    assert p.spec("k").bitwidth == 8 and p.spec("k").symmetric
    p = place(_dynamic_matmul(), HTP_V75, 8, 16)  # V75: 16-bit input 1 → symmetric, input 0 16
    assert p.spec("k").bitwidth == 16 and p.spec("k").symmetric and p.spec("a").bitwidth == 16


# ---- MatmulAdd ---------------------------------------------------------------------------------

def _matmul_add(w, transpose=False, relu=False):
    nodes, wname = [], "W"
    if transpose:
        nodes.append(node("Transpose", ["W"], ["W_t"], "wt", perm=[1, 0]))
        wname = "W_t"
    nodes += [node("MatMul", ["x", wname], ["mm_out"], "mm"), node("Add", ["mm_out", "b"], ["y"], "add")]
    out = "y"
    if relu:
        nodes.append(node("Relu", ["y"], ["r"], "relu"))
        out = "r"
    k, n = (w.shape[-1], w.shape[-2]) if transpose else (w.shape[-2], w.shape[-1])
    batch = [2, 3] if w.ndim == 3 else [2]
    return graph(nodes, {"x": batch + [k]}, {out: batch + [n]}, {"W": w, "b": rand(n, seed=1)})


def test_unfused_matmul_add_with_3d_weight():
    g = _matmul_add(rand(2, 4, 5), relu=True)
    p = place(g, PER_CHANNEL)
    assert p.graph.node("mm").op_type == "MatMul"  # 3-D weight: not fused
    assert not p.spec("mm_out").enabled
    bias = p.spec("b")
    assert bias.is_param and bias.kind == "bias" and not bias.enabled and bias.symmetric
    assert p.spec("W").axis == 2 and bias.axis == 2
    assert p.spec("y").enabled  # Add,Relu does not start at a MatmulAdd-matched Add
    assert p.quantizer_of["y"] == p.quantizer_of["r"]  # ... so the Relu ties forward to it


@pytest.mark.parametrize("transpose", [False, True])
def test_fused_matmul_add_is_a_gemm_with_the_same_fp32_result(transpose):
    w = rand(3, 4) if transpose else rand(4, 3)
    g = _matmul_add(w, transpose=transpose, relu=True)
    p = place(g, PER_CHANNEL)
    gemm = p.graph.node("mm")
    assert gemm.op_type == "Gemm" and gemm.inputs == ("x", "W", "b")
    assert gemm.attrs["transB"] == int(transpose) and gemm.outputs == ("y",)
    assert "mm_out" not in p.quantizer_of and [n.op_type for n in p.graph.nodes] == ["Gemm", "Relu"]
    assert p.spec("W").axis == (0 if transpose else 1)
    assert not p.spec("y").enabled  # Gemm,Relu supergroup
    feeds = {"x": rand(2, 4, seed=5)}
    expected = run(g, feeds)["r"]
    np.testing.assert_array_equal(run(p.graph, feeds)["r"], expected)


# ---- supergroups ------------------------------------------------------------------------------

def test_supergroup_skipped_when_the_first_op_has_two_consumers():
    w, b = rand(3, 3, 1, 1), rand(3)
    single = graph([node("Conv", ["x", "w", "b"], ["conv_out"]), node("Relu", ["conv_out"], ["y"], "relu")],
                   {"x": [1, 3, 4, 4]}, {"y": [1, 3, 4, 4]}, {"w": w, "b": b})
    double = graph([node("Conv", ["x", "w", "b"], ["conv_out"]), node("Relu", ["conv_out"], ["r"], "relu"),
                    node("Add", ["conv_out", "r"], ["y"], "add")],
                   {"x": [1, 3, 4, 4]}, {"y": [1, 3, 4, 4]}, {"w": w, "b": b})
    assert not place(single, DEFAULT).spec("conv_out").enabled
    p = place(double, DEFAULT)
    assert p.spec("conv_out").enabled
    assert p.quantizer_of["r"] == p.quantizer_of["conv_out"]  # then the Relu ties forward


def test_depthwise_conv_never_starts_a_chain():
    g = graph([node("Conv", ["x", "w", "b"], ["dw_out"], "dw", group=3),
               node("Relu", ["dw_out"], ["y"], "relu")],
              {"x": [1, 3, 4, 4]}, {"y": [1, 3, 4, 4]}, {"w": rand(3, 1, 3, 3), "b": rand(3)})
    p = place(g, DEFAULT)
    assert p.spec("dw_out").enabled and p.quantizer_of["y"] == p.quantizer_of["dw_out"]


def _conv_relu_add():
    return graph([node("Conv", ["x", "w", "b"], ["conv_out"]), node("Relu", ["conv_out"], ["r"], "relu"),
                  node("Add", ["r", "x"], ["y"], "add")],
                 {"x": [1, 3, 4, 4]}, {"y": [1, 3, 4, 4]}, {"w": rand(3, 3, 1, 1), "b": rand(3)})


@pytest.mark.parametrize("groups, disabled", [
    ([["Conv", "Relu"], ["Relu", "Add"]], {"conv_out"}),        # equal length: config order,
    ([["Relu", "Add"], ["Conv", "Relu"]], {"r"}),               # the later match shares an op
    ([["Conv", "Relu"], ["Relu", "Add"], ["Conv", "Relu", "Add"]], {"conv_out", "r"}),  # longest
])
def test_supergroup_order_and_shared_ops(groups, disabled):
    cfg = config(DEFAULT)
    cfg["supergroups"] = [{"op_list": g} for g in groups]
    p = place(_conv_relu_add(), cfg)
    assert {t for t in ("conv_out", "r", "y") if not p.spec(t).enabled} == disabled


def test_skipped_concat_input_still_counts_in_the_range_comparison():
    """placement.md §3, ShuffleNetV2 under htp_v75: Concat(slice of an earlier concat, relu_out).
    The slice's source has several readers (skipped, range None); the Relu's range is (0, None).
    AIMET collects both ranges before the skip, sees two different ones, leaves the fixed-range
    Relu out, and so ties nothing (collecting from unskipped inputs only would tie the Relu and
    fix the Concat's min at 0)."""
    g = graph([node("Tanh", ["x1"], ["t"], "t"),
               node("Concat", ["t", "x2"], ["cat0"], "cat0", axis=1),
               node("Slice", ["cat0", "starts", "ends", "axes"], ["half"], "slice"),
               node("Neg", ["cat0"], ["other"], "other"),
               node("Relu", ["x3"], ["r"], "relu"),
               node("Concat", ["half", "r"], ["cat1"], "cat1", axis=1)],
              {"x1": [1, 2], "x2": [1, 2], "x3": [1, 2]}, {"cat1": [1, 4], "other": [1, 4]},
              {"starts": np.array([0], np.int64), "ends": np.array([2], np.int64),
               "axes": np.array([1], np.int64)})
    p = place(g, HTP_V75, 8, 16)
    assert p.spec("r").fixed_range == (0.0, None)
    assert p.quantizer_of["r"] != p.quantizer_of["cat1"]
    assert p.spec("cat1").fixed_range is None and p.spec("cat1").tensors == ("cat1",)
