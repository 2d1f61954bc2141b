"""Single rules of placement.md §1-§4 on tiny graphs: exception rules (K), per-channel axes,
Resize, integer tensors, Cast, model_output."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from onnx import TensorProto, helper

from qsim.placement import place_quantizers
from tests.placement.synth import DEFAULT, HTP_V75, PER_CHANNEL, config, graph, node, rand


def place(g, cfg, p=8, a=8):
    return place_quantizers(g, cfg, param_bitwidth=p, activation_bitwidth=a)


def _layer_norm():
    return graph([node("LayerNormalization", ["x", "g", "b"], ["y"], "ln")],
                 {"x": [2, 4]}, {"y": [2, 4]}, {"g": rand(4), "b": rand(4)})


@pytest.mark.parametrize("bits, cfg, want_bits, want_sym", [
    (8, DEFAULT, 8, False),            # golden transformer ln1.weight: asymmetric at w8
    (4, DEFAULT, 8, False),            # at least 8 bits
    (16, DEFAULT, 16, True),           # symmetric from 16 bits on, whatever the config says
    (16, config(HTP_V75, hw_version="V68"), 8, False),  # V66/V68/V69: always 8-bit
])
def test_layer_norm_weight_exception_rule(bits, cfg, want_bits, want_sym):
    q = place(_layer_norm(), cfg, bits, 8).spec("g")
    assert (q.enabled, q.bitwidth, q.symmetric) == (True, want_bits, want_sym)
    assert not place(_layer_norm(), cfg, bits, 8).spec("b").enabled  # bias stays off, untouched


def test_instance_norm_weight_follows_its_output_quantizer():
    g = graph([node("InstanceNormalization", ["x", "s", "b"], ["y"], "inorm")],
              {"x": [1, 3, 4, 4]}, {"y": [1, 3, 4, 4]}, {"s": rand(3), "b": rand(3)})
    q = place(g, DEFAULT, 8, 16).spec("s")
    assert (q.bitwidth, q.symmetric) == (16, False)
    sym = copy.deepcopy(DEFAULT)
    sym["defaults"]["ops"]["is_symmetric"] = "True"
    q = place(g, sym, 8, 16).spec("s")
    assert (q.bitwidth, q.symmetric) == (16, True)


def test_grouped_conv_transpose_weight_goes_back_to_per_tensor():
    def conv_t(group):
        return graph([node("ConvTranspose", ["x", "w", "b"], ["y"], "up", group=group)],
                     {"x": [1, 4, 3, 3]}, {"y": [1, 2 * group, 4, 4]},
                     {"w": rand(4, 2, 2, 2), "b": rand(2 * group)})
    assert place(conv_t(1), PER_CHANNEL).spec("w").axis == 1
    grouped = place(conv_t(2), PER_CHANNEL)
    assert grouped.spec("w").axis is None and grouped.spec("b").axis == 0


def test_resize_scales_get_no_quantizer_and_output_ties_forward():
    g = graph([node("Relu", ["x"], ["r"], "relu"),
               node("Resize", ["r", "", "scales"], ["y"], "resize", mode="nearest")],
              {"x": [1, 2, 2, 2]}, {"y": [1, 2, 4, 4]},
              {"scales": np.array([1, 1, 2, 2], dtype=np.float32)})
    empty_input = copy.deepcopy(DEFAULT)
    empty_input["model_input"] = {}  # no float constant input left, so no AIMET crash
    for cfg in (DEFAULT, empty_input):
        p = place(g, cfg)
        assert "scales" not in p.quantizer_of
        assert p.quantizer_of["y"] == p.quantizer_of["r"]


def test_integer_tensors_and_float_cast():
    nodes = [node("Relu", ["x"], ["r"], "relu"), node("Shape", ["r"], ["s"], "shape"),
             helper.make_node("Cast", ["s"], ["sf"], name="cast", to=TensorProto.FLOAT)]
    g = graph(nodes, {"x": [1, 4]}, {"r": [1, 4], "sf": [2]})
    p = place(g, DEFAULT)
    assert "s" not in p.quantizer_of                       # int64 Shape output
    assert not p.spec("sf").enabled and any("op_type.Cast" in r for r in p.spec("sf").reasons)
    out = copy.deepcopy(DEFAULT)
    out["model_output"] = {"is_output_quantized": "True"}
    p = place(g, out)
    assert p.spec("sf").enabled                            # Cast has no consuming op
    assert any("model_output" in r for r in p.spec("sf").reasons)


def test_model_output_ignores_ops_whose_output_is_also_read():
    g = graph([node("Conv", ["x", "w", "b"], ["conv_out"]), node("Relu", ["conv_out"], ["y"], "relu")],
              {"x": [1, 2, 4, 4]}, {"y": [1, 3, 4, 4], "conv_out": [1, 3, 4, 4]},
              {"w": rand(3, 2, 1, 1), "b": rand(3)})
    out = copy.deepcopy(DEFAULT)
    out["model_output"] = {"is_output_quantized": "True"}
    assert not place(g, out).spec("conv_out").enabled  # graph output, but Relu reads it


def test_dynamic_weight_reached_through_float_cast():
    g = graph([node("Tanh", ["k"], ["t"], "tanh"),
               helper.make_node("Cast", ["t"], ["tc"], name="cast", to=TensorProto.FLOAT),
               node("MatMul", ["x", "tc"], ["y"], "mm")],
              {"x": [2, 3], "k": [3, 4]}, {"y": [2, 4]})
    p = place(g, DEFAULT)
    assert not p.spec("tc").enabled and p.spec("t").symmetric and not p.spec("x").symmetric
    assert p.effective_quantizer("tc") == p.quantizer_of["t"]
