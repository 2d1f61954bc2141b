"""The part of a quantsim configuration that placement reads, as one small frozen value.

:func:`rules_from` accepts the project's ``QuantsimConfig`` (``qsim.config.load_config``) or a
raw configuration dict (already validated, booleans as the strings "True"/"False"), and returns
:class:`Rules`. ``None`` always means "key absent" (AIMET then leaves the flag alone); ``False``
means the file says "False".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Optional

from ..errors import ConfigError


@dataclass(frozen=True)
class ParamRule:
    """``{is_quantized, is_symmetric}`` of one parameter kind."""

    is_quantized: Optional[bool] = None  # params.<kind>.is_quantized (None = absent)
    is_symmetric: Optional[bool] = None  # params.<kind>.is_symmetric (None = absent)


@dataclass(frozen=True)
class OpRule:
    """One ``op_type.<T>`` entry."""

    is_input_quantized: Optional[bool] = None   # only "True" is legal in AIMET
    is_output_quantized: Optional[bool] = None
    is_symmetric: Optional[bool] = None         # hits the op's inputs AND outputs
    params: Mapping[str, ParamRule] = field(default_factory=dict)  # kind → rule
    per_channel: Optional[bool] = None          # per_channel_quantization
    constraint: Optional[tuple] = None          # encoding_constraints as (min|None, max|None)


@dataclass(frozen=True)
class Rules:
    """Everything placement needs from a configuration file."""

    ops_is_output_quantized: Optional[bool]  # defaults.ops.is_output_quantized
    ops_is_symmetric: Optional[bool]         # defaults.ops.is_symmetric
    default_params: ParamRule                # defaults.params
    strict_symmetric: bool                   # defaults.strict_symmetric (absent = False)
    unsigned_symmetric: bool                 # defaults.unsigned_symmetric (absent = False)
    per_channel: bool                        # defaults.per_channel_quantization (absent = False)
    hw_version: Optional[str]                # defaults.hw_version, e.g. "V75"
    params: Mapping[str, ParamRule]          # params.<kind>
    op_type: Mapping[str, OpRule]            # op_type.<T>
    supergroups: tuple                       # tuple of op-type tuples, config order
    pass_list: tuple                         # supergroup_pass_list
    model_input: Optional[bool]              # model_input.is_input_quantized (None for {})
    model_output: Optional[bool]             # model_output.is_output_quantized (None for {})


def _bool(value: Any, path: str) -> Optional[bool]:
    if value is None or isinstance(value, bool):
        return value
    if value in ("True", "False"):
        return value == "True"
    raise ConfigError(f"{path}: expected the string \"True\" or \"False\", got {value!r}",
                      [(path, f"not a boolean string: {value!r}")])


def _param_rule(d: Mapping | None, path: str) -> ParamRule:
    d = d or {}
    return ParamRule(is_quantized=_bool(d.get("is_quantized"), f"{path}.is_quantized"),
                     is_symmetric=_bool(d.get("is_symmetric"), f"{path}.is_symmetric"))


def _constraint(d: Mapping | None) -> Optional[tuple]:
    if not d:
        return None
    lo, hi = d.get("min"), d.get("max")
    return (None if lo is None else float(lo), None if hi is None else float(hi))


def rules_from_dict(raw: Mapping) -> Rules:
    """Read :class:`Rules` from a configuration dict in AIMET's file format."""
    defaults = raw.get("defaults", {}) or {}
    ops = defaults.get("ops", {}) or {}
    op_type = {}
    for name, entry in (raw.get("op_type", {}) or {}).items():
        path = f"op_type.{name}"
        op_type[name] = OpRule(
            is_input_quantized=_bool(entry.get("is_input_quantized"), f"{path}.is_input_quantized"),
            is_output_quantized=_bool(entry.get("is_output_quantized"), f"{path}.is_output_quantized"),
            is_symmetric=_bool(entry.get("is_symmetric"), f"{path}.is_symmetric"),
            params=MappingProxyType({k: _param_rule(v, f"{path}.params.{k}")
                                     for k, v in (entry.get("params", {}) or {}).items()}),
            per_channel=_bool(entry.get("per_channel_quantization"),
                              f"{path}.per_channel_quantization"),
            constraint=_constraint(entry.get("encoding_constraints")))
    model_input = raw.get("model_input", {}) or {}
    model_output = raw.get("model_output", {}) or {}
    return Rules(
        ops_is_output_quantized=_bool(ops.get("is_output_quantized"), "defaults.ops.is_output_quantized"),
        ops_is_symmetric=_bool(ops.get("is_symmetric"), "defaults.ops.is_symmetric"),
        default_params=_param_rule(defaults.get("params"), "defaults.params"),
        strict_symmetric=bool(_bool(defaults.get("strict_symmetric"), "defaults.strict_symmetric")),
        unsigned_symmetric=bool(_bool(defaults.get("unsigned_symmetric"), "defaults.unsigned_symmetric")),
        per_channel=bool(_bool(defaults.get("per_channel_quantization"),
                               "defaults.per_channel_quantization")),
        hw_version=defaults.get("hw_version"),
        params=MappingProxyType({k: _param_rule(v, f"params.{k}")
                                 for k, v in (raw.get("params", {}) or {}).items()}),
        op_type=MappingProxyType(op_type),
        supergroups=tuple(tuple(g["op_list"]) for g in raw.get("supergroups", []) or []),
        pass_list=tuple(raw.get("supergroup_pass_list", []) or []),
        model_input=_bool(model_input.get("is_input_quantized"), "model_input.is_input_quantized"),
        model_output=_bool(model_output.get("is_output_quantized"), "model_output.is_output_quantized"),
    )


def rules_from(config: Any) -> Rules:
    """:class:`Rules` from a ``QuantsimConfig``, a raw dict, or an existing :class:`Rules`."""
    if isinstance(config, Rules):
        return config
    if isinstance(config, Mapping):
        return rules_from_dict(config)
    raw = getattr(config, "raw", None)
    if isinstance(raw, Mapping):
        return rules_from_dict(raw)
    raise ConfigError(f"place_quantizers needs a QuantsimConfig (qsim.config.load_config) or a "
                      f"configuration dict, got {type(config).__name__}")
