"""Malformed configs: each mutation of a valid config must be rejected at the right JSON path.

The base is AIMET's htp_v75 hardware config (the richest golden config: hw_version, op_type
params, encoding_constraints, 3-op supergroups). Expected paths and allowed values come from the
file format (config-and-export.md) and AIMET's rejections (placement.md §7).
"""
from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsim.config import load_config, validate_config
from qsim.errors import ConfigError

from .conftest import GOLDEN_HTP_V75, read_json

BASE = read_json(GOLDEN_HTP_V75)
KERNEL = {"activation": {"bitwidth": 16, "dtype": "int"}, "param": {"bitwidth": 8, "dtype": "int"}}


def put(*path, value):
    """Mutation: set the value at a path (creating nothing: every parent must exist)."""
    def mutate(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def drop(*path):
    """Mutation: delete the key or item at a path."""
    def mutate(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return mutate


def replace_all(value):
    """Mutation: replace the whole document."""
    def mutate(config):
        config.clear()
        config["__replace__"] = value
    return mutate


# (id, mutation, JSON path that must be among the reported problems)
CASES = [
    # top level
    ("unknown-top-level-key", put("quantizers", value={}), "$.quantizers"),
    ("missing-defaults", drop("defaults"), "$.defaults"),
    ("missing-params", drop("params"), "$.params"),
    ("missing-op_type", drop("op_type"), "$.op_type"),
    ("missing-supergroups", drop("supergroups"), "$.supergroups"),
    ("missing-model_input", drop("model_input"), "$.model_input"),
    ("missing-model_output", drop("model_output"), "$.model_output"),
    ("document-is-a-list", replace_all([]), "$"),
    # defaults
    ("defaults-ops-is_input_quantized", put("defaults", "ops", "is_input_quantized", value="True"),
     "$.defaults.ops.is_input_quantized"),
    ("defaults-ops-output-False", put("defaults", "ops", "is_output_quantized", value="False"),
     "$.defaults.ops.is_output_quantized"),
    ("defaults-ops-symmetric-yes", put("defaults", "ops", "is_symmetric", value="yes"),
     "$.defaults.ops.is_symmetric"),
    ("defaults-params-quantized-lowercase", put("defaults", "params", "is_quantized", value="true"),
     "$.defaults.params.is_quantized"),
    ("defaults-params-symmetric-int", put("defaults", "params", "is_symmetric", value=1),
     "$.defaults.params.is_symmetric"),
    ("defaults-strict-uppercase", put("defaults", "strict_symmetric", value="TRUE"),
     "$.defaults.strict_symmetric"),
    ("defaults-unsigned-null", put("defaults", "unsigned_symmetric", value=None),
     "$.defaults.unsigned_symmetric"),
    ("defaults-per-channel-digit-string", put("defaults", "per_channel_quantization", value="1"),
     "$.defaults.per_channel_quantization"),
    ("defaults-hw_version-number", put("defaults", "hw_version", value=75),
     "$.defaults.hw_version"),
    ("defaults-missing-ops", drop("defaults", "ops"), "$.defaults.ops"),
    ("defaults-missing-params", drop("defaults", "params"), "$.defaults.params"),
    ("defaults-unknown-key", put("defaults", "per_channel", value="True"), "$.defaults.per_channel"),
    ("defaults-ops-not-object", put("defaults", "ops", value="True"), "$.defaults.ops"),
    ("kernels-empty", put("defaults", "supported_kernels", value=[]),
     "$.defaults.supported_kernels"),
    ("kernels-bitwidth-12", put("defaults", "supported_kernels",
                                value=[{**KERNEL, "activation": {"bitwidth": 12, "dtype": "int"}}]),
     "$.defaults.supported_kernels[0].activation.bitwidth"),
    ("kernels-dtype-fp", put("defaults", "supported_kernels",
                             value=[KERNEL, {**KERNEL, "param": {"bitwidth": 8, "dtype": "fp"}}]),
     "$.defaults.supported_kernels[1].param.dtype"),
    ("kernels-defaults-need-param", put("defaults", "supported_kernels",
                                        value=[{"activation": KERNEL["activation"]}]),
     "$.defaults.supported_kernels[0].param"),
    # params
    ("params-bias-quantized-no", put("params", "bias", "is_quantized", value="no"),
     "$.params.bias.is_quantized"),
    ("params-kind-not-object", put("params", "weight", value="True"), "$.params.weight"),
    ("params-unknown-setting", put("params", "bias", "bitwidth", value=8),
     "$.params.bias.bitwidth"),
    # op_type
    ("op-input-quantized-False", put("op_type", "Conv", "is_input_quantized", value="False"),
     "$.op_type.Conv.is_input_quantized"),
    ("op-output-quantized-lowercase", put("op_type", "Cast", "is_output_quantized", value="false"),
     "$.op_type.Cast.is_output_quantized"),
    ("op-per-channel-Yes", put("op_type", "Gemm", "per_channel_quantization", value="Yes"),
     "$.op_type.Gemm.per_channel_quantization"),
    ("op-symmetric-float", put("op_type", "Relu", "is_symmetric", value=1.0),
     "$.op_type.Relu.is_symmetric"),
    ("op-unknown-key", put("op_type", "Conv", "bitwidth", value=8), "$.op_type.Conv.bitwidth"),
    ("op-entry-not-object", put("op_type", "Conv", value=[]), "$.op_type.Conv"),
    ("op-name-empty", put("op_type", "", value={}), '$.op_type[""]'),
    ("op-name-with-space", put("op_type", "My Op", value={"bitwidth": 8}),
     '$.op_type["My Op"].bitwidth'),
    ("op-params-symmetric-lowercase",
     put("op_type", "LayerNormalization", "params", "weight", "is_symmetric", value="false"),
     "$.op_type.LayerNormalization.params.weight.is_symmetric"),
    ("op-kernels-need-activation", put("op_type", "Conv", "supported_kernels",
                                       value=[{"param": KERNEL["param"]}]),
     "$.op_type.Conv.supported_kernels[0].activation"),
    ("constraints-min-above-max", put("op_type", "Sigmoid", "encoding_constraints",
                                      value={"min": 1.0, "max": 0.0}),
     "$.op_type.Sigmoid.encoding_constraints"),
    ("constraints-missing-min", put("op_type", "Sigmoid", "encoding_constraints",
                                    value={"max": 1.0}),
     "$.op_type.Sigmoid.encoding_constraints.min"),
    ("constraints-max-string", put("op_type", "Softmax", "encoding_constraints", "max", value="1.0"),
     "$.op_type.Softmax.encoding_constraints.max"),
    ("constraints-misspelt-key", put("op_type", "Tanh", "encoding_constraints", "maximum", value=1.0),
     "$.op_type.Tanh.encoding_constraints.maximum"),
    ("constraints-min-nan", put("op_type", "Relu", "encoding_constraints", "min",
                                value=float("nan")),
     "$.op_type.Relu.encoding_constraints.min"),
    ("constraints-max-infinite", put("op_type", "Cos", "encoding_constraints", "max",
                                     value=float("inf")),
     "$.op_type.Cos.encoding_constraints.max"),
    ("constraints-min-bool", put("op_type", "Sin", "encoding_constraints", "min", value=False),
     "$.op_type.Sin.encoding_constraints.min"),
    # supergroups
    ("supergroup-one-op", put("supergroups", 0, "op_list", value=["Add"]),
     "$.supergroups[0].op_list"),
    ("supergroup-missing-op_list", put("supergroups", 1, value={"ops": ["Conv", "Relu"]}),
     "$.supergroups[1].op_list"),
    ("supergroup-non-string-op", put("supergroups", 2, "op_list", value=["Conv", 3]),
     "$.supergroups[2].op_list[1]"),
    ("supergroup-empty-op-name", put("supergroups", 3, "op_list", value=["Conv", ""]),
     "$.supergroups[3].op_list[1]"),
    ("supergroups-not-list", put("supergroups", value={"op_list": ["Conv", "Relu"]}),
     "$.supergroups"),
    ("pass-list-unknown-name", put("supergroup_pass_list", 2, value="MatMulAdd"),
     "$.supergroup_pass_list[2]"),
    ("pass-list-not-list", put("supergroup_pass_list", value="MatmulAdd"),
     "$.supergroup_pass_list"),
    # model_input / model_output
    ("model-input-False", put("model_input", "is_input_quantized", value="False"),
     "$.model_input.is_input_quantized"),
    ("model-input-json-false", put("model_input", "is_input_quantized", value=False),
     "$.model_input.is_input_quantized"),
    ("model-input-wrong-key", put("model_input", value={"is_output_quantized": "True"}),
     "$.model_input.is_output_quantized"),
    ("model-output-False", put("model_output", value={"is_output_quantized": "False"}),
     "$.model_output.is_output_quantized"),
    ("model-output-string", put("model_output", value="True"), "$.model_output"),
]


def _mutated(mutation) -> object:
    config = copy.deepcopy(BASE)
    mutation(config)
    return config.get("__replace__", config) if isinstance(config, dict) else config


def test_corpus_is_large_enough():
    assert len(CASES) >= 30
    assert len({case_id for case_id, _, _ in CASES}) == len(CASES)


def test_base_is_valid():
    assert validate_config(copy.deepcopy(BASE)) == []


@pytest.mark.parametrize("mutation, path", [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_malformed_config_is_rejected_at_its_path(mutation, path, tmp_path):
    # Through a file, as users meet it (json.dumps writes NaN/Infinity as Python's json reads them).
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(_mutated(mutation), indent=2), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(config_file)
    paths = [problem_path for problem_path, _ in info.value.problems]
    assert path in paths
    assert path in str(info.value)  # the message lists it too
    assert str(config_file) in str(info.value)  # and names the file
    assert validate_config(config_file) == info.value.problems


def test_several_problems_are_reported_at_once():
    config = copy.deepcopy(BASE)
    config["defaults"]["ops"]["is_input_quantized"] = "True"
    config["params"]["bias"]["is_quantized"] = "yes"
    config["op_type"]["Conv"]["is_output_quantized"] = "TRUE"
    config["op_type"]["Sigmoid"]["encoding_constraints"] = {"min": 2.0, "max": 1.0}
    config["supergroups"][4]["op_list"] = ["Conv"]
    config["supergroup_pass_list"].append("GeluFusion")
    config["model_output"] = {"is_output_quantized": "False"}
    del config["model_input"]
    expected = {
        "$.defaults.ops.is_input_quantized", "$.params.bias.is_quantized",
        "$.op_type.Conv.is_output_quantized", "$.op_type.Sigmoid.encoding_constraints",
        "$.supergroups[4].op_list", "$.supergroup_pass_list[3]",
        "$.model_output.is_output_quantized", "$.model_input",
    }
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert {path for path, _ in info.value.problems} == expected
    assert f"{len(expected)} problems" in str(info.value)
    for path in expected:
        assert path in str(info.value)


def test_messages_name_the_bad_value_and_what_is_allowed():
    config = copy.deepcopy(BASE)
    config["supergroup_pass_list"] = ["MatMulAdd"]
    config["defaults"]["supported_kernels"] = [{**KERNEL, "param": {"bitwidth": 12, "dtype": "int"}}]
    config["defaults"]["ops"]["is_symetric"] = "True"
    messages = dict(validate_config(config))
    assert "MatMulAdd" in messages["$.supergroup_pass_list[0]"]
    assert "MatmulAdd" in messages["$.supergroup_pass_list[0]"]  # the known names
    bitwidth = messages["$.defaults.supported_kernels[0].param.bitwidth"]
    assert "12" in bitwidth and all(str(bits) in bitwidth for bits in (4, 8, 16, 32))
    assert "is_symmetric" in messages["$.defaults.ops.is_symetric"]  # the allowed keys


def test_input_quantized_in_defaults_ops_explains_aimet_rule():
    config = copy.deepcopy(BASE)
    config["defaults"]["ops"]["is_input_quantized"] = "True"
    messages = dict(validate_config(config))
    assert "AIMET rejects is_input_quantized in defaults.ops" in \
        messages["$.defaults.ops.is_input_quantized"]


# --- booleans: exactly "True"/"False" (or JSON true/false) --------------------------------------

BAD_BOOLEANS = ["true", "TRUE", "false", "FALSE", "yes", "1", 1, 0, 1.0, None, "True ", "", [], {}]
BOOL_PATHS = [
    (("defaults", "strict_symmetric"), "$.defaults.strict_symmetric"),
    (("defaults", "params", "is_symmetric"), "$.defaults.params.is_symmetric"),
    (("params", "bias", "is_quantized"), "$.params.bias.is_quantized"),
    (("op_type", "Cast", "is_output_quantized"), "$.op_type.Cast.is_output_quantized"),
]


@pytest.mark.parametrize("value", BAD_BOOLEANS, ids=repr)
@pytest.mark.parametrize("keys, path", BOOL_PATHS, ids=[p for _, p in BOOL_PATHS])
def test_bad_boolean_spellings_are_rejected_with_the_allowed_values(keys, path, value):
    config = _mutated(put(*keys, value=value))
    messages = dict(validate_config(config))
    assert path in messages
    assert json.dumps(value) in messages[path]  # the bad value, as written in JSON
    assert '"True"' in messages[path] and '"False"' in messages[path]


@pytest.mark.parametrize("value", [True, False, "True", "False"], ids=repr)
@pytest.mark.parametrize("keys, path", BOOL_PATHS, ids=[p for _, p in BOOL_PATHS])
def test_good_boolean_spellings_are_accepted(keys, path, value):
    config = _mutated(put(*keys, value=value))
    assert validate_config(config) == []


JSON_SCALARS = st.one_of(
    st.sampled_from(["True", "False", "true", "false", "TRUE", "True\n", "T", "None"]),
    st.text(max_size=6), st.booleans(), st.none(), st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=50, deadline=None)
@given(value=JSON_SCALARS, slot=st.sampled_from(BOOL_PATHS))
def test_boolean_slots_accept_exactly_the_four_spellings(value, slot):
    # Spec (config-and-export.md): a boolean is the string "True" or "False"; qsim also takes
    # JSON true/false. Nothing else — not 1, not "true", not "True\n".
    keys, path = slot
    allowed = isinstance(value, bool) or (isinstance(value, str) and value in ("True", "False"))
    paths = [problem_path for problem_path, _ in validate_config(_mutated(put(*keys, value=value)))]
    assert paths == ([] if allowed else [path])
