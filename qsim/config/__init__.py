"""Quantsim configuration files: JSON Schema validation, loading, the typed config.

    cfg = load_config("htp_v75")          # built-in name, file path, dict, or None ("default")
    cfg.op_type["Sigmoid"].encoding_constraints.max   # 1.0
    validate_config("my_config.json")    # [(json_path, message), ...], [] when valid
"""
from .load import (CONFIG_ALIASES, DEFAULT_CONFIG, KNOWN_SUPERGROUP_PASSES, available_configs,
                   format_json_path, load_config, load_schema, validate_config, validate_dict)
from .model import (DefaultOps, Defaults, EncodingConstraints, KernelSpec, OpTypeSettings,
                    ParamSettings, QuantsimConfig, SupportedKernel)

__all__ = [
    "load_config", "validate_config", "validate_dict", "available_configs", "load_schema",
    "format_json_path", "DEFAULT_CONFIG", "CONFIG_ALIASES", "KNOWN_SUPERGROUP_PASSES",
    "QuantsimConfig", "Defaults", "DefaultOps", "ParamSettings", "OpTypeSettings",
    "EncodingConstraints", "SupportedKernel", "KernelSpec",
]
