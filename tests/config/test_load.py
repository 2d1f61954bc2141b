"""Loading valid configs: built-ins, golden files, typed values, sources and I/O errors."""
from __future__ import annotations

import dataclasses
import doctest
import json
from pathlib import Path

import pytest

from qsim.config import (QuantsimConfig, available_configs, load_config, validate_config)
from qsim.errors import ConfigError

from .conftest import (GOLDEN_FILES, GOLDEN_HTP_V75, GOLDEN_PER_CHANNEL, GOLDEN_PER_TENSOR,
                       read_json)

BUILTINS = ("default", "per_tensor", "htp_v75", "aimet_default", "aimet_per_channel")
SPELLING = {"True": True, "False": False}  # the file format's booleans (config-and-export.md)


def _expected(section: dict, key: str):
    """What a typed bool field must hold for this raw section: None when the key is absent."""
    return SPELLING[section[key]] if key in section else None


# --- every shipped and golden config loads -----------------------------------------------------

def test_available_configs_lists_the_built_ins():
    assert set(available_configs()) == set(BUILTINS)


@pytest.mark.parametrize("name", BUILTINS)
def test_every_built_in_validates_and_loads(name):
    assert validate_config(name) == []
    config = load_config(name)
    assert isinstance(config, QuantsimConfig)
    assert config.source == name


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_every_golden_config_validates(path):
    assert validate_config(path) == []
    assert validate_config(str(path)) == []


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_typed_values_match_the_raw_json_text(path):
    raw = read_json(path)
    config = load_config(path)
    defaults = raw["defaults"]
    assert config.defaults.ops.is_output_quantized == _expected(defaults["ops"], "is_output_quantized")
    assert config.defaults.ops.is_symmetric == _expected(defaults["ops"], "is_symmetric")
    assert config.defaults.params.is_quantized == _expected(defaults["params"], "is_quantized")
    assert config.defaults.params.is_symmetric == _expected(defaults["params"], "is_symmetric")
    for key in ("strict_symmetric", "unsigned_symmetric", "per_channel_quantization"):
        assert getattr(config.defaults, key) == _expected(defaults, key)
    assert config.defaults.hw_version == defaults.get("hw_version")
    assert set(config.params) == set(raw["params"])
    assert set(config.op_type) == set(raw["op_type"])
    for name, entry in raw["op_type"].items():
        typed = config.op_type[name]
        for key in ("is_input_quantized", "is_output_quantized", "is_symmetric",
                    "per_channel_quantization"):
            assert getattr(typed, key) == _expected(entry, key), (name, key)
        for kind, settings in entry.get("params", {}).items():
            assert typed.params[kind].is_quantized == _expected(settings, "is_quantized")
            assert typed.params[kind].is_symmetric == _expected(settings, "is_symmetric")
        if "encoding_constraints" in entry:
            assert typed.encoding_constraints.min == entry["encoding_constraints"]["min"]
            assert typed.encoding_constraints.max == entry["encoding_constraints"].get("max")
        else:
            assert typed.encoding_constraints is None
    assert config.supergroups == tuple(tuple(group["op_list"]) for group in raw["supergroups"])
    assert config.supergroup_pass_list == tuple(raw.get("supergroup_pass_list", []))
    assert config.model_input == _expected(raw["model_input"], "is_input_quantized")
    assert config.model_output == _expected(raw["model_output"], "is_output_quantized")
    assert config.raw_dict() == raw


# --- the built-ins are AIMET's files ------------------------------------------------------------

def test_default_is_aimet_per_channel_config():
    expected = read_json(GOLDEN_PER_CHANNEL)
    assert load_config("default").raw_dict() == expected
    assert load_config(None).raw_dict() == expected
    assert load_config().raw_dict() == expected
    assert load_config("aimet_per_channel").raw_dict() == expected


def test_per_tensor_is_aimet_default_config():
    expected = read_json(GOLDEN_PER_TENSOR)
    assert load_config("per_tensor").raw_dict() == expected
    assert load_config("aimet_default").raw_dict() == expected


def test_htp_v75_is_the_golden_hardware_config():
    assert load_config("htp_v75").raw_dict() == read_json(GOLDEN_HTP_V75)


# --- facts stated in the reference documents ------------------------------------------------------

def test_default_config_facts():
    # config-and-export.md / placement.md §2, §4, §6.
    config = load_config("default")
    assert config.defaults.per_channel_quantization is False
    for op in ("Conv", "ConvTranspose", "Gemm", "MatMul", "PRelu"):
        assert config.per_channel_for(op) is True
    assert config.per_channel_for("Relu") is False
    assert config.params["bias"].is_quantized is False
    assert config.params["bias"].is_symmetric is None  # absent, not False
    batch_norm = config.op_type["BatchNormalization"].params
    assert batch_norm["running_mean"].is_quantized is False
    assert batch_norm["running_var"].is_quantized is False
    assert config.op_type["Cast"].is_output_quantized is False
    assert "MaxPool" not in config.op_type  # absent: the grid-preserving rule applies
    assert config.model_input is True
    assert config.model_output is None
    assert config.supergroup_pass_list == ("MatmulAdd",)
    assert config.export_per_channel_flag() is True
    assert config.export_is_symmetric_flag() is True


def test_per_tensor_config_facts():
    config = load_config("per_tensor")
    assert config.per_channel_for("Conv") is False
    assert config.export_per_channel_flag() is False
    assert ("Conv", "Relu") in config.supergroups and ("Gemm", "Relu") in config.supergroups


def test_htp_v75_facts():
    # placement.md §2 "Encoding constraints of the shipped htp configs".
    config = load_config("htp_v75")
    assert config.defaults.hw_version == "V75"
    assert config.defaults.unsigned_symmetric is False
    bounds = {op: (config.op_type[op].encoding_constraints.min,
                   config.op_type[op].encoding_constraints.max)
              for op in ("Sigmoid", "Softmax", "Tanh", "Sin", "Cos", "Relu")}
    assert bounds == {"Sigmoid": (0.0, 1.0), "Softmax": (0.0, 1.0), "Tanh": (-1.0, 1.0),
                      "Sin": (-1.0, 1.0), "Cos": (-1.0, 1.0), "Relu": (0.0, None)}
    assert config.op_type["GroupNormalization"].params["bias"].is_quantized is True
    assert config.op_type["LayerNormalization"].params["weight"].is_symmetric is False
    assert config.per_channel_for("ConvTranspose") is True
    assert config.supergroups[0] == ("Add", "Relu")
    assert ("Conv", "BatchNormalization", "HardSwish") in config.supergroups
    assert len(config.supergroups) == 14
    assert config.supergroup_pass_list == ("LayerNormalization", "RMSNormalization", "MatmulAdd")


def test_unsigned_and_strict_golden_configs():
    unsigned = load_config(Path(GOLDEN_PER_CHANNEL).with_name(
        "golden_cnn_bn_s34_unsigned_sym_tfe_w8a8.json"))
    assert unsigned.defaults.unsigned_symmetric is True
    assert unsigned.defaults.ops.is_symmetric is True
    strict = load_config(Path(GOLDEN_PER_CHANNEL).with_name("golden_mlp_s33_strict_sym_tf_w8a8.json"))
    assert strict.defaults.strict_symmetric is True


@pytest.mark.parametrize("per_channel", [True, False])
def test_export_symmetric_flag_falls_back_to_per_channel_flag(per_channel):
    # placement.md §6: is_symmetric = defaults.params.is_symmetric, if absent the per-channel flag.
    raw = read_json(GOLDEN_PER_TENSOR)
    del raw["defaults"]["params"]["is_symmetric"]
    raw["defaults"]["per_channel_quantization"] = "True" if per_channel else "False"
    config = load_config(raw)
    assert config.defaults.params.is_symmetric is None
    assert config.export_is_symmetric_flag() is per_channel


def test_op_type_per_channel_false_overrides_default_true():
    raw = read_json(GOLDEN_PER_TENSOR)
    raw["defaults"]["per_channel_quantization"] = "True"
    raw["op_type"]["Gemm"] = {"per_channel_quantization": "False"}
    config = load_config(raw)
    assert config.per_channel_for("Gemm") is False
    assert config.per_channel_for("Conv") is True


# --- JSON booleans --------------------------------------------------------------------------------

def _with_json_booleans(value):
    if isinstance(value, dict):
        return {key: _with_json_booleans(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_json_booleans(item) for item in value]
    return SPELLING.get(value, value) if isinstance(value, str) else value


def _typed_fields(config: QuantsimConfig) -> dict:
    fields = dataclasses.asdict(config)
    del fields["raw"], fields["source"]
    return fields


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_json_booleans_load_like_strings(path):
    raw = read_json(path)
    converted = _with_json_booleans(raw)
    assert "True" not in json.dumps(converted) and "False" not in json.dumps(converted)
    assert _typed_fields(load_config(converted)) == _typed_fields(load_config(raw))


# --- sources ----------------------------------------------------------------------------------------

def test_dict_source_is_copied_not_shared():
    raw = read_json(GOLDEN_PER_TENSOR)
    config = load_config(raw)
    raw["defaults"]["per_channel_quantization"] = "True"
    raw["supergroups"].clear()
    assert config.defaults.per_channel_quantization is False
    assert len(config.supergroups) == 5
    assert config.source == "<dict>"


def test_config_is_frozen_and_raw_is_read_only():
    config = load_config("default")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model_input = False
    with pytest.raises(TypeError):
        config.raw["model_input"] = {}
    with pytest.raises(TypeError):
        config.op_type["Conv"] = None
    assert isinstance(config.raw["supergroups"], tuple)
    copy = config.raw_dict()
    copy["model_input"] = {}
    assert config.raw_dict()["model_input"] == {"is_input_quantized": "True"}


def test_file_source_by_str_and_pathlib(tmp_path):
    target = tmp_path / "mine.json"
    target.write_text(json.dumps(read_json(GOLDEN_HTP_V75)), encoding="utf-8")
    assert load_config(str(target)).defaults.hw_version == "V75"
    assert load_config(target).source == str(target)


def test_unknown_name_lists_the_valid_names():
    with pytest.raises(ConfigError) as info:
        load_config("htp_v99")
    for name in BUILTINS:
        assert name in str(info.value)
    assert "htp_v99" in str(info.value)


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "no_such_dir" / "config.json"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(missing) in str(info.value)
    assert info.value.problems and info.value.problems[0][0] == "$"
    problems = validate_config(str(missing))
    assert len(problems) == 1 and str(missing) in problems[0][1]


def test_directory_is_not_a_config(tmp_path):
    with pytest.raises(ConfigError, match="directory"):
        load_config(tmp_path)


def test_invalid_json_reports_file_line_and_column(tmp_path):
    bad = tmp_path / "broken.json"
    # The stray comma is on line 3; "    \"ops\": " is 11 characters, so it sits at column 12.
    bad.write_text('{\n  "defaults": {\n    "ops": ,\n  }\n}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert f"{bad}:3:12" in str(info.value)
    assert "line 3, column 12" in info.value.problems[0][1]
    assert validate_config(bad) == info.value.problems


def test_trailing_comma_is_reported_with_its_line(tmp_path):
    bad = tmp_path / "trailing.json"
    bad.write_text('{\n  "model_input": {},\n}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert f"{bad}:3:" in str(info.value)


def test_source_of_wrong_type_is_a_config_error():
    with pytest.raises(ConfigError, match="file path, a dict, a built-in name"):
        load_config(42)


def test_docstring_examples():
    import qsim.config.load
    import qsim.config.model
    for module in (qsim.config.load, qsim.config.model):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0


AIMET_QUANTIZER_ARGS = read_json(GOLDEN_PER_TENSOR.with_name("aimet_quantizer_args.json"))


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_export_flags_match_aimet_quantizer_args(path):
    # AIMET's own exported quantizer_args for a run with this exact config file.
    expected = AIMET_QUANTIZER_ARGS[path.name]
    config = load_config(path)
    assert config.export_per_channel_flag() is expected["per_channel_quantization"]
    assert config.export_is_symmetric_flag() is expected["is_symmetric"]
