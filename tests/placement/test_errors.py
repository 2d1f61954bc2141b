"""Model-dependent configuration errors (placement.md §7) raise ConfigError with a useful text."""
from __future__ import annotations

import copy

import pytest

from qsim.errors import ConfigError, EncodingError
from qsim.placement import place_quantizers
from tests.placement.golden_util import load_case
from tests.placement.synth import DEFAULT, PER_CHANNEL, config, graph, node, rand


def place(g, cfg):
    return place_quantizers(g, cfg, param_bitwidth=8, activation_bitwidth=8)


def _lstm():
    hidden, size = 3, 4
    return graph([node("LSTM", ["x", "W", "R", "B"], ["y"], "lstm", hidden_size=hidden)],
                 {"x": [5, 1, size]}, {"y": [5, 1, 1, hidden]},
                 {"W": rand(1, 4 * hidden, size), "R": rand(1, 4 * hidden, hidden),
                  "B": rand(1, 8 * hidden)})


def test_per_channel_on_an_op_without_axis_names_the_parameter():
    with pytest.raises(ConfigError) as err:
        place(_lstm(), config(DEFAULT, per_channel_quantization="True"))
    text = str(err.value)
    assert "'W'" in text and "LSTM" in text and "per_channel_quantization" in text
    assert '"False"' in text  # says what to change
    # the shipped per-channel config only enables it for Conv/ConvTranspose/Gemm/MatMul/PRelu
    p = place(_lstm(), PER_CHANNEL)
    assert p.spec("W").axis is None and p.spec("W").kind == "weight"
    assert p.spec("R").kind == "weight_r" and p.spec("B").kind == "bias"


def test_model_input_empty_with_float_constant_inputs():
    g, cfg, _, _, _, _ = load_case("transformer_s31_default_tf_w8a8")
    cfg = copy.deepcopy(cfg)
    cfg["model_input"] = {}
    with pytest.raises(ConfigError) as err:
        place(g, cfg)
    assert "'attn.scale'" in str(err.value) and "is_input_quantized" in str(err.value)


def test_model_input_empty_without_constant_inputs_leaves_inputs_off():
    g, cfg, _, _, _, _ = load_case("misc_s32_default_tf_w8a8")
    cfg = copy.deepcopy(cfg)
    cfg["model_input"] = {}
    p = place(g, cfg)
    assert not p.spec("input").enabled and p.spec("stem_relu_out").enabled


def _conv_relu():
    return graph([node("Conv", ["x", "w", "b"], ["conv_out"]), node("Relu", ["conv_out"], ["r"], "relu"),
                  node("Sigmoid", ["r"], ["y"], "sig")],
                 {"x": [1, 2, 4, 4]}, {"y": [1, 3, 4, 4]}, {"w": rand(3, 2, 1, 1), "b": rand(3)})


def test_conflicting_enable_within_op_type_stage():
    cfg = copy.deepcopy(DEFAULT)
    cfg["op_type"]["Conv"] = {"is_output_quantized": "False"}
    cfg["op_type"]["Relu"] = {"is_input_quantized": "True"}
    with pytest.raises(ConfigError) as err:
        place(_conv_relu(), cfg)
    text = str(err.value)
    assert "'conv_out'" in text and "'conv'" in text and "'relu'" in text
    assert "enabled=False" in text and "enabled=True" in text


def test_conflicting_symmetry_within_op_type_stage():
    cfg = copy.deepcopy(DEFAULT)
    cfg["op_type"]["Relu"] = {"is_symmetric": "True"}
    cfg["op_type"]["Sigmoid"] = {"is_symmetric": "False"}
    with pytest.raises(ConfigError) as err:
        place(_conv_relu(), cfg)
    assert "'r'" in str(err.value) and "symmetric" in str(err.value)


def test_agreeing_settings_are_not_a_conflict():
    cfg = copy.deepcopy(DEFAULT)
    cfg["op_type"]["Relu"] = {"is_symmetric": "True"}
    cfg["op_type"]["Sigmoid"] = {"is_symmetric": "True"}
    p = place(_conv_relu(), cfg)
    assert p.spec("r").symmetric and p.spec("y").symmetric


def test_invalid_config_and_bitwidth_are_rejected():
    with pytest.raises(ConfigError):
        place(_conv_relu(), {"defaults": {}})
    with pytest.raises(EncodingError):
        place_quantizers(_conv_relu(), DEFAULT, param_bitwidth=0, activation_bitwidth=8)
