"""Load and validate AIMET quantsim configuration files.

A config source is a file path (str or os.PathLike), a dict, the name of a built-in config
(``available_configs()``) or None (the built-in "default"). Validation runs the JSON Schema
``qsim/schemas/quantsim_config.schema.json`` (draft 2020-12, every error collected at once) and
then the rules a schema cannot express (encoding_constraints must be finite with min <= max).
Every problem is reported as ``(json_path, message)``; ``load_config`` raises one ConfigError
listing all of them.

Rules AIMET enforces at run time are part of the schema, each with a message that says why
(placement.md §7): ``is_input_quantized`` is not a key of ``defaults.ops``;
``defaults.ops.is_output_quantized``, ``op_type.{T}.is_input_quantized``,
``model_input.is_input_quantized`` and ``model_output.is_output_quantized`` accept only "True";
a supergroup ``op_list`` has at least 2 op types; ``supergroup_pass_list`` names only the passes
in ``KNOWN_SUPERGROUP_PASSES``.

Where qsim is stricter than AIMET's schema: ``encoding_constraints`` accepts only min/max (AIMET
ignores other keys, so a misspelt "max" would silently drop the constraint), and min/max must
be finite with min <= max. Where it is looser: JSON true/false are accepted next to "True"/"False".
"""
from __future__ import annotations

import difflib
import json
import math
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from ..errors import ConfigError
from .model import QuantsimConfig, from_json_dict

ConfigSource = Union[str, os.PathLike, Mapping, None]
Problem = tuple[str, str]

DEFAULT_CONFIG = "default"
# Extra names for shipped configs: AIMET's own file names for the same content.
CONFIG_ALIASES = {"aimet_default": "per_tensor", "aimet_per_channel": "default"}
# Graph passes registered in aimet-onnx 2.42 (must match the schema's "supergroup_pass" enum).
KNOWN_SUPERGROUP_PASSES = ("MatmulAdd", "LayerNormalization", "RMSNormalization", "MaskedSoftmax")

_BOOL_VALUES = ["True", "False", True, False]
_TRUE_ONLY_VALUES = ["True", True]
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_JSON_TYPE_NAMES = {"object": "an object", "array": "an array", "string": "a string",
                    "number": "a number", "integer": "an integer", "boolean": "a boolean",
                    "null": "null"}
# Extra advice for unknown keys that AIMET users are known to write.
_UNKNOWN_KEY_HINTS = {
    ("defaults", "ops", "is_input_quantized"):
        "AIMET rejects is_input_quantized in defaults.ops; set it per op type in op_type, "
        "or quantize graph inputs with model_input",
}


# --- resources shipped in the package ------------------------------------------------------

def load_schema() -> dict:
    """The JSON Schema of quantsim configs, as shipped inside the package."""
    text = resources.files("qsim").joinpath("schemas", "quantsim_config.schema.json").read_text(
        encoding="utf-8")
    return json.loads(text)


def available_configs() -> tuple[str, ...]:
    """Names accepted by ``load_config`` besides file paths, sorted (aliases included)."""
    folder = resources.files("qsim").joinpath("configs")
    names = {entry.name[:-len(".json")] for entry in folder.iterdir()
             if entry.name.endswith(".json")}
    return tuple(sorted(names | set(CONFIG_ALIASES)))


def _builtin_text(name: str) -> str:
    """The JSON text of a built-in config (``name`` already checked against the list)."""
    file_name = CONFIG_ALIASES.get(name, name) + ".json"
    return resources.files("qsim").joinpath("configs", file_name).read_text(encoding="utf-8")


# --- reading a source ----------------------------------------------------------------------

def _parse_json(text: str, *, label: str) -> Any:
    """``json.loads`` that reports a syntax error as ConfigError with file, line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise ConfigError(f"{label}:{exc.lineno}:{exc.colno}: invalid JSON ({where}): {exc.msg}",
                          problems=[("$", f"invalid JSON at {where}: {exc.msg}")]) from None


def _read_file(path: Path, *, as_given: str) -> Any:
    """Parse a config file; a missing/unreadable file is a ConfigError naming the path."""
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        message = (f"config {as_given!r} is not a built-in config name and the file {str(path)!r} "
                   f"{what}; built-in configs: {', '.join(available_configs())}")
        raise ConfigError(message, problems=[("$", message)])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        message = f"cannot read config file {str(path)!r}: {exc}"
        raise ConfigError(message, problems=[("$", message)]) from None
    return _parse_json(text, label=str(path))


def read_source(source: ConfigSource) -> tuple[Any, str]:
    """Resolve a config source to its JSON content (unvalidated) and a label for messages.

    A str that is a built-in name (``available_configs()``) means the built-in, even if a file
    of that name exists in the working directory (write ``./default`` to mean the file).
    """
    if source is None:
        source = DEFAULT_CONFIG
    if isinstance(source, Mapping):
        return source, "<dict>"
    if isinstance(source, str) and source in available_configs():
        return _parse_json(_builtin_text(source), label=f"built-in:{source}"), source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return _read_file(path, as_given=os.fspath(source)), str(path)
    message = (f"a config source is a file path, a dict, a built-in name "
               f"({', '.join(available_configs())}) or None; got {type(source).__name__}")
    raise ConfigError(message, problems=[("$", message)])


# --- validation ------------------------------------------------------------------------------

def format_json_path(parts: Iterable[Union[str, int]]) -> str:
    """JSONPath of a location: ``$.op_type.Conv.params['my kind'][0]``.

    >>> format_json_path(["supergroups", 2, "op_list"])
    '$.supergroups[2].op_list'
    """
    text = "$"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(part):
            text += f".{part}"
        else:
            text += "[" + json.dumps(part) + "]"
    return text


def _shown(value: Any) -> str:
    """A value as it would appear in the JSON file."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return f"a Python {type(value).__name__} (not JSON)"


def _enum_message(error: ValidationError) -> str:
    allowed = error.validator_value
    shown = _shown(error.instance)
    if allowed == _BOOL_VALUES:
        return (f"{shown} is not a boolean; allowed: \"True\" or \"False\" "
                f"(JSON true/false are accepted too)")
    if allowed == _TRUE_ONLY_VALUES:
        return (f"{shown} is not allowed; the only allowed value is \"True\" (or JSON true): "
                f"AIMET rejects \"False\" here, omit the key instead")
    if list(allowed) == list(KNOWN_SUPERGROUP_PASSES):
        return f"unknown supergroup pass {shown}; known passes: {', '.join(allowed)}"
    return f"{shown} is not allowed; allowed: {', '.join(_shown(item) for item in allowed)}"


def _unknown_key_problems(error: ValidationError) -> list[Problem]:
    """One problem per unexpected key, located at the key itself."""
    known = sorted(error.schema.get("properties", {}))
    problems = []
    for key in error.instance:
        if key in known:
            continue
        location = [*error.absolute_path, key]
        message = f"unknown key {key!r}; allowed keys here: {', '.join(known) or '(none)'}"
        hint = _UNKNOWN_KEY_HINTS.get(tuple(location))
        close = difflib.get_close_matches(str(key), known, n=1)
        if hint:
            message += f"; {hint}"
        elif close:
            message += f" (did you mean {close[0]!r}?)"
        problems.append((format_json_path(location), message))
    return problems


def _missing_key_problems(error: ValidationError) -> list[Problem]:
    """One problem per missing required key, located where the key should be."""
    return [(format_json_path([*error.absolute_path, key]),
             f"required key {key!r} is missing")
            for key in error.validator_value if key not in error.instance]


def _schema_problems(error: ValidationError) -> list[Problem]:
    """Turn one jsonschema error into problems with a JSON path, the bad value and what is allowed."""
    keyword = error.validator
    if keyword == "additionalProperties":
        return _unknown_key_problems(error)
    if keyword == "required":
        return _missing_key_problems(error)
    path = format_json_path(error.absolute_path)
    if "propertyNames" in error.schema_path:  # the key itself is bad: point at the key
        return [(format_json_path([*error.absolute_path, error.instance]),
                 f"the key {_shown(error.instance)} is not a valid name; a non-empty name is "
                 f"required")]
    if keyword == "enum":
        message = _enum_message(error)
    elif keyword == "type":
        expected = _JSON_TYPE_NAMES.get(error.validator_value, error.validator_value)
        message = f"{_shown(error.instance)} is {_json_type(error.instance)}; expected {expected}"
    elif keyword == "minItems":
        message = (f"{_shown(error.instance)} has {len(error.instance)} item(s); at least "
                   f"{error.validator_value} required")
        if error.absolute_path and error.absolute_path[-1] == "op_list":
            message += " (a supergroup chains at least 2 op types)"
    elif keyword == "minLength":
        message = f"{_shown(error.instance)} is an empty string; a non-empty name is required"
    else:
        message = error.message
    return [(path, message)]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _constraint_problems(op_type: str, constraints: Mapping) -> list[Problem]:
    """encoding_constraints: min and max finite, min <= max."""
    base = ["op_type", op_type, "encoding_constraints"]
    problems = []
    for key in ("min", "max"):
        value = constraints.get(key)
        if _is_number(value) and not math.isfinite(value):
            problems.append((format_json_path([*base, key]),
                             f"{_shown(value)} is not a finite number; a finite number is required"))
    low, high = constraints.get("min"), constraints.get("max")
    if _is_number(low) and _is_number(high) and math.isfinite(low) and math.isfinite(high) \
            and low > high:
        problems.append((format_json_path(base),
                         f"min {_shown(low)} is greater than max {_shown(high)}; min <= max is "
                         f"required"))
    return problems


def _semantic_problems(data: Any) -> list[Problem]:
    """Rules the schema cannot express; safe on data that failed the schema."""
    if not isinstance(data, Mapping) or not isinstance(data.get("op_type"), Mapping):
        return []
    problems = []
    for name, entry in data["op_type"].items():
        if isinstance(entry, Mapping) and isinstance(entry.get("encoding_constraints"), Mapping):
            problems.extend(_constraint_problems(name, entry["encoding_constraints"]))
    return problems


def validate_dict(data: Any) -> list[Problem]:
    """Every problem of a config's JSON content, as ``(json_path, message)``; [] when valid."""
    validator = Draft202012Validator(load_schema())
    problems: list[Problem] = []
    for error in validator.iter_errors(data):
        problems.extend(_schema_problems(error))
    problems.extend(_semantic_problems(data))
    unique = list(dict.fromkeys(problems))
    return sorted(unique, key=lambda problem: problem[0])


def _error_message(label: str, problems: list[Problem]) -> str:
    count = f"{len(problems)} problem" + ("" if len(problems) == 1 else "s")
    lines = [f"invalid quantsim config {label}: {count}"]
    lines += [f"  {path}: {message}" for path, message in problems]
    return "\n".join(lines)


def validate_config(source: ConfigSource) -> list[Problem]:
    """Every problem of a config source as ``(json_path, message)``; [] when it is valid.

    Unreadable sources (missing file, invalid JSON) give one problem at ``$``.
    """
    try:
        data, _ = read_source(source)
    except ConfigError as exc:
        return list(exc.problems) or [("$", str(exc))]
    return validate_dict(data)


def load_config(source: ConfigSource = None) -> QuantsimConfig:
    """Read, validate and convert a quantsim config.

    ``source``: a file path, a dict, a built-in name (``available_configs()``), or None for the
    built-in "default" (per-channel symmetric int8 weights, per-tensor asymmetric activations).
    Raises ConfigError listing every problem with its JSON path.
    """
    data, label = read_source(source)
    problems = validate_dict(data)
    if problems:
        raise ConfigError(_error_message(label, problems), problems=problems)
    return from_json_dict(data, source=label)
