"""The typed quantsim configuration: frozen values with real Python booleans.

The JSON file spells booleans as the strings "True"/"False"; they are converted ONCE, in
``from_json_dict``, and nothing downstream ever sees the strings. A key the file does not set is
``None`` here, never ``False``: the placement rules treat "absent" and "False" differently
(an op type not named in ``op_type`` is not the same as one with ``is_output_quantized: False``;
``defaults.params.is_symmetric`` absent falls back to the per-channel flag in export).

``from_json_dict`` trusts its input: call it only on a dict that passed
``qsim.config.load.validate_dict`` (``load_config`` does both).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional


class FrozenMap(Mapping):
    """A read-only dict (no item assignment), equal to a dict with the same items.

    Unlike ``types.MappingProxyType`` it can be copied, deep-copied and pickled.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping = ()):
        self._items = dict(items)

    def __getitem__(self, key: Any) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


@dataclass(frozen=True, kw_only=True)
class ParamSettings:
    """Settings for the parameter quantizers of one kind (``{"is_quantized", "is_symmetric"}``)."""

    is_quantized: Optional[bool] = None  # quantize these parameters; None = key absent
    is_symmetric: Optional[bool] = None  # symmetric encodings for them; None = key absent


@dataclass(frozen=True, kw_only=True)
class KernelSpec:
    """One side (activation or param) of a supported kernel."""

    bitwidth: int  # 4, 8, 16 or 32
    dtype: str  # "int" or "float"


@dataclass(frozen=True, kw_only=True)
class SupportedKernel:
    """One entry of ``supported_kernels`` (parsed, but it changes no bitwidth in aimet-onnx 2.42)."""

    activation: KernelSpec  # activation bitwidth/dtype of the kernel
    param: Optional[KernelSpec] = None  # param bitwidth/dtype; may be absent in op_type entries


@dataclass(frozen=True, kw_only=True)
class EncodingConstraints:
    """A fixed output range for an op type (hardware configs pin Sigmoid/Softmax to [0, 1])."""

    min: float  # fixed minimum of the output range (required by AIMET's schema)
    max: Optional[float] = None  # fixed maximum; None = computed from statistics


@dataclass(frozen=True, kw_only=True)
class DefaultOps:
    """``defaults.ops``: applied to every op."""

    is_output_quantized: Optional[bool] = None  # only True is accepted; None = key absent
    is_symmetric: Optional[bool] = None  # symmetric input/output quantizers; None = key absent


@dataclass(frozen=True, kw_only=True)
class Defaults:
    """``defaults``: settings for every op and every parameter."""

    ops: DefaultOps  # settings for op outputs
    params: ParamSettings  # settings for every parameter
    strict_symmetric: Optional[bool] = None  # symmetric grids drop the most negative level
    unsigned_symmetric: Optional[bool] = None  # symmetric grids of non-negative data go unsigned
    per_channel_quantization: Optional[bool] = None  # per-channel params unless op_type says
    hw_version: Optional[str] = None  # e.g. "V75"; switches on hardware exception rules
    supported_kernels: Optional[tuple[SupportedKernel, ...]] = None  # None = key absent


@dataclass(frozen=True, kw_only=True)
class OpTypeSettings:
    """One ``op_type.{T}`` entry: settings for every op of ONNX type T."""

    is_input_quantized: Optional[bool] = None  # only True is accepted; None = key absent
    is_output_quantized: Optional[bool] = None  # enable/disable the op's outputs; None = absent
    is_symmetric: Optional[bool] = None  # symmetric inputs AND outputs; None = key absent
    params: Mapping[str, ParamSettings] = field(  # kind -> settings for this op type
        default_factory=lambda: FrozenMap({}))
    per_channel_quantization: Optional[bool] = None  # overrides defaults; None = key absent
    supported_kernels: Optional[tuple[SupportedKernel, ...]] = None  # None = key absent
    encoding_constraints: Optional[EncodingConstraints] = None  # fixed output range; None = none


@dataclass(frozen=True, kw_only=True)
class QuantsimConfig:
    """A validated AIMET quantsim configuration.

    Read it as the sections of the file, from general to specific. ``raw`` is the file's own
    content (read-only; ``raw_dict()`` gives a plain, mutable copy for writing it back out).
    """

    defaults: Defaults  # the "defaults" section
    params: Mapping[str, ParamSettings]  # the "params" section: kind -> settings
    op_type: Mapping[str, OpTypeSettings]  # the "op_type" section: ONNX op type -> settings
    supergroups: tuple[tuple[str, ...], ...]  # op-type chains, in config order
    supergroup_pass_list: tuple[str, ...]  # graph passes, in config order; () when absent
    model_input: Optional[bool]  # True: quantize graph inputs; None: "model_input" is {}
    model_output: Optional[bool]  # True: quantize outputs of sink ops; None: "model_output" is {}
    raw: Mapping[str, Any]  # the validated JSON content, deeply read-only
    source: str = "<dict>"  # where it came from: built-in name or file path, for messages

    def raw_dict(self) -> dict:
        """A plain, mutable deep copy of ``raw`` (dicts and lists), ready for ``json.dump``."""
        return _thaw(self.raw)

    def per_channel_for(self, op_type: str) -> bool:
        """Whether ops of this type get per-channel params (placement.md §4).

        ``op_type.{T}.per_channel_quantization`` if set, else ``defaults.per_channel_quantization``,
        else False.
        """
        entry = self.op_type.get(op_type)
        if entry is not None and entry.per_channel_quantization is not None:
            return entry.per_channel_quantization
        return self.defaults.per_channel_quantization is True

    def export_per_channel_flag(self) -> bool:
        """``quantizer_args.per_channel_quantization`` of the exported encodings (placement.md §6).

        True if ``defaults`` or any ``op_type`` entry enables per-channel quantization.
        """
        if self.defaults.per_channel_quantization is True:
            return True
        return any(entry.per_channel_quantization is True for entry in self.op_type.values())

    def export_is_symmetric_flag(self) -> bool:
        """``quantizer_args.is_symmetric`` of the exported encodings (placement.md §6).

        ``defaults.params.is_symmetric``; if absent, ``export_per_channel_flag()``.
        """
        if self.defaults.params.is_symmetric is not None:
            return self.defaults.params.is_symmetric
        return self.export_per_channel_flag()


# --- conversion from the validated JSON dict (the only place "True"/"False" are read) ---------

def to_bool(value: Any) -> Optional[bool]:
    """"True"/True -> True, "False"/False -> False, None (key absent) -> None.

    >>> to_bool("True"), to_bool(False), to_bool(None)
    (True, False, None)
    """
    if value is None:
        return None
    return value is True or value == "True"


def _param_settings(section: Optional[Mapping]) -> ParamSettings:
    section = section or {}
    return ParamSettings(is_quantized=to_bool(section.get("is_quantized")),
                         is_symmetric=to_bool(section.get("is_symmetric")))


def _params_by_kind(section: Optional[Mapping]) -> Mapping[str, ParamSettings]:
    return FrozenMap({kind: _param_settings(value) for kind, value in (section or {}).items()})


def _kernel_spec(spec: Optional[Mapping]) -> Optional[KernelSpec]:
    if spec is None:
        return None
    return KernelSpec(bitwidth=int(spec["bitwidth"]), dtype=spec["dtype"])


def _kernels(entries: Optional[list]) -> Optional[tuple[SupportedKernel, ...]]:
    if entries is None:
        return None
    return tuple(SupportedKernel(activation=_kernel_spec(entry["activation"]),
                                 param=_kernel_spec(entry.get("param")))
                 for entry in entries)


def _constraints(section: Optional[Mapping]) -> Optional[EncodingConstraints]:
    if section is None:
        return None
    high = section.get("max")
    return EncodingConstraints(min=float(section["min"]),
                               max=None if high is None else float(high))


def _op_type_settings(section: Mapping) -> OpTypeSettings:
    return OpTypeSettings(
        is_input_quantized=to_bool(section.get("is_input_quantized")),
        is_output_quantized=to_bool(section.get("is_output_quantized")),
        is_symmetric=to_bool(section.get("is_symmetric")),
        params=_params_by_kind(section.get("params")),
        per_channel_quantization=to_bool(section.get("per_channel_quantization")),
        supported_kernels=_kernels(section.get("supported_kernels")),
        encoding_constraints=_constraints(section.get("encoding_constraints")),
    )


def _defaults(section: Mapping) -> Defaults:
    ops = section["ops"]
    return Defaults(
        ops=DefaultOps(is_output_quantized=to_bool(ops.get("is_output_quantized")),
                       is_symmetric=to_bool(ops.get("is_symmetric"))),
        params=_param_settings(section["params"]),
        strict_symmetric=to_bool(section.get("strict_symmetric")),
        unsigned_symmetric=to_bool(section.get("unsigned_symmetric")),
        per_channel_quantization=to_bool(section.get("per_channel_quantization")),
        hw_version=section.get("hw_version"),
        supported_kernels=_kernels(section.get("supported_kernels")),
    )


def _freeze(value: Any) -> Any:
    """Deep read-only copy: dicts -> FrozenMap, lists -> tuples."""
    if isinstance(value, Mapping):
        return FrozenMap({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    """Inverse of ``_freeze``: plain dicts and lists again."""
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw(item) for item in value]
    return value


def from_json_dict(data: Mapping, *, source: str = "<dict>") -> QuantsimConfig:
    """Build the typed config from an already validated JSON dict."""
    data = json.loads(json.dumps(data))  # detach from the caller's objects
    return QuantsimConfig(
        defaults=_defaults(data["defaults"]),
        params=_params_by_kind(data["params"]),
        op_type=FrozenMap({name: _op_type_settings(entry)
                                  for name, entry in data["op_type"].items()}),
        supergroups=tuple(tuple(group["op_list"]) for group in data["supergroups"]),
        supergroup_pass_list=tuple(data.get("supergroup_pass_list", ())),
        model_input=to_bool(data["model_input"].get("is_input_quantized")),
        model_output=to_bool(data["model_output"].get("is_output_quantized")),
        raw=_freeze(data),
        source=source,
    )
