"""Read AIMET / qsim encodings files (1.0.0, 0.6.1, 2.0.0) and load them into a sim.

A file becomes an :class:`EncodingsFile`: one :class:`EncodingEntry` per tensor, in file order,
each holding the grid in AIMET's sign convention (``x̂ = scale·(q + offset)``, ``offset ≤ 0``):

* 1.0.0 — ``{bw, dtype: "INT", enc_type, is_sym, name, offset: [...], scale: [...]}``;
* 0.6.1 — ``name → [{bitwidth, dtype: "int", is_symmetric: "True"|"False", offset, scale, min,
  max}, ...]`` (one dict per channel; min/max are ignored: they follow from scale and offset);
* 2.0.0 — ``{name, output_dtype, y_scale, y_zero_point?, axis?}`` with the ONNX zero point
  converted back by :func:`qsim.quant.encoding.offset_from_onnx_zero_point`.

Every problem of a file is collected and reported at once (:class:`~qsim.errors.ExportError`,
each line with the JSON path, the value and what would be valid). Neither 1.0.0 nor 0.6.1 stores
the channel axis of a per-channel encoding: :attr:`EncodingEntry.axis` is None there and the
sim's quantizer supplies it when loading.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import EncodingError, ExportError
from .quant import Encoding
from .quant.encoding import offset_from_onnx_zero_point

#: 2.0.0 ``output_dtype`` → (bitwidth, signed)
ONNX_INT_DTYPES = {f"{s}int{b}": (b, s == "") for s in ("", "u") for b in (4, 8, 16, 32)}
SUPPORTED_VERSIONS = ("1.0.0", "0.6.1", "2.0.0")


@dataclass(frozen=True, kw_only=True)
class EncodingEntry:
    """One tensor's encoding as the file states it (AIMET sign convention, float64 arrays).

    ``scale``/``offset`` have shape ``(C,)`` (C = 1 per tensor); ``symmetric`` is None when the
    format does not say (2.0.0); ``axis`` is None when per tensor or not stated (1.0.0, 0.6.1);
    ``is_param`` is None when the format does not say (2.0.0); ``dtype`` is the integer type the
    file names ("int8", "uint16", ...; 1.0.0/0.6.1: "int" + bitwidth).
    """

    name: str
    scale: np.ndarray
    offset: np.ndarray
    bitwidth: int
    per_channel: bool
    symmetric: bool | None
    axis: int | None
    is_param: bool | None
    dtype: str
    path: str                      # JSON path of the entry, for error messages

    @property
    def num_channels(self) -> int:
        return int(self.scale.shape[0])

    def to_encoding(self, *, axis: int | None = None, symmetric: bool | None = None,
                    strict_symmetric: bool | None = None,
                    unsigned_symmetric: bool = False) -> Encoding:
        """The :class:`Encoding` of this entry.

        ``min = scale·offset``, ``max = scale·(offset + N)`` in float64 with ``N = 2^bw - 1``
        (``N - 1`` if strict symmetric, as qsim's own encodings); flags not given come from the
        file (strict = symmetric with ``offset = -(2^(bw-1) - 1)``); a per-channel entry without
        a stated axis gets ``axis`` (default 0).
        """
        sym = bool(self.symmetric) if symmetric is None else bool(symmetric)
        if strict_symmetric is None:
            strict_offset = -(2.0 ** (self.bitwidth - 1) - 1)
            strict_symmetric = sym and bool(np.all(self.offset == strict_offset))
        steps = 2.0 ** self.bitwidth - 1 - (1.0 if sym and strict_symmetric else 0.0)
        ax = None
        if self.per_channel:
            ax = axis if axis is not None else (self.axis if self.axis is not None else 0)
        values = slice(None) if self.per_channel else 0    # (C,) or a scalar
        scale, offset = self.scale[values], self.offset[values]
        return Encoding(min=scale * offset, max=scale * (offset + steps), delta=scale,
                        offset=offset, bitwidth=self.bitwidth, symmetric=sym,
                        strict_symmetric=bool(strict_symmetric),
                        unsigned_symmetric=unsigned_symmetric, axis=ax)

    @property
    def encoding(self) -> Encoding:
        """:meth:`to_encoding` with the file's own flags."""
        return self.to_encoding()


@dataclass(frozen=True, kw_only=True)
class EncodingsFile:
    """A parsed encodings file: ``entries`` in file order (params first in 2.0.0 files)."""

    version: str
    entries: tuple
    quantizer_args: Mapping | None = None
    producer: Mapping | None = None
    source: str = "<document>"
    by_name: Mapping = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "by_name", {e.name: e for e in self.entries})

    def params(self) -> list:
        return [e for e in self.entries if e.is_param]

    def activations(self) -> list:
        return [e for e in self.entries if e.is_param is False]


# ---- parsing -----------------------------------------------------------------------------------

class _Problems:
    """Collects ``(json path, message)`` pairs; :meth:`raise_if_any` raises them all at once."""

    def __init__(self, source: str):
        self.source = source
        self.items: list[tuple[str, str]] = []

    def add(self, path: str, message: str) -> None:
        self.items.append((path, message))

    def raise_if_any(self, error=ExportError, what: str = "encodings file") -> None:
        if self.items:
            lines = "\n".join(f"  {p}: {m}" for p, m in self.items)
            raise error(f"{what} {self.source}: {len(self.items)} problem(s):\n{lines}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(value, path: str, probs: _Problems, *, integral: bool = False) -> list | None:
    """A non-empty list of finite numbers (integral ones if asked), else a problem."""
    if not isinstance(value, list) or not value:
        probs.add(path, f"must be a non-empty list of numbers, got {value!r}")
        return None
    bad = [v for v in value if not _is_num(v) or (integral and float(v) != int(v))]
    if bad:
        kind = "integral numbers" if integral else "finite numbers"
        probs.add(path, f"must hold {kind}, got {bad[0]!r}")
        return None
    return [float(v) for v in value]


def _check_grid(scale, offset, bw, path, probs) -> bool:
    """scale > 0 and offset in [-(2^bw - 1), 2^bw - 1] (AIMET writes offset ≤ 0)."""
    ok = True
    bad = [s for s in scale if not s > 0.0]
    if bad:
        probs.add(f"{path}.scale", f"scale must be > 0 (the grid step), got {bad[0]!r}")
        ok = False
    n = 2 ** bw - 1
    if any(not -n <= o <= n for o in offset):
        probs.add(f"{path}.offset", f"offset {offset} is outside [-{n}, {n}] for bw={bw}")
        ok = False
    return ok


def _bitwidth(value, path, probs) -> int | None:
    if not _is_int(value) or not 2 <= value <= 32:
        probs.add(path, f"bitwidth must be an integer in 2..32, got {value!r}")
        return None
    return int(value)


def _entry(name, scale, offset, bw, *, per_channel, symmetric, axis, is_param, dtype, path):
    return EncodingEntry(name=name, scale=_ro(scale), offset=_ro(offset), bitwidth=bw,
                         per_channel=per_channel, symmetric=symmetric, axis=axis,
                         is_param=is_param, dtype=dtype, path=path)


def _ro(values) -> np.ndarray:
    a = np.array(values, dtype=np.float64).reshape(-1)
    a.setflags(write=False)
    return a


def _parse_v1(doc: dict, probs: _Problems) -> list:
    """1.0.0: ``activation_encodings`` / ``param_encodings`` lists of dicts."""
    out = []
    for key, is_param in (("activation_encodings", False), ("param_encodings", True)):
        items = doc.get(key)
        if not isinstance(items, list):
            probs.add(key, f"must be a list of encoding dicts, got {type(items).__name__}")
            continue
        for i, e in enumerate(items):
            path = f"{key}[{i}]"
            if not isinstance(e, dict):
                probs.add(path, f"must be a dict, got {e!r}")
                continue
            name = e.get("name")
            if isinstance(name, str) and name:
                path = f"{key}[{i}] ('{name}')"
            else:
                probs.add(f"{path}.name", f"must be a non-empty string, got {name!r}")
                continue
            missing = [k for k in ("bw", "dtype", "enc_type", "is_sym", "offset", "scale")
                       if k not in e]
            if missing:
                probs.add(path, f"missing field(s) {missing}")
                continue
            if e["dtype"] != "INT":
                probs.add(f"{path}.dtype", f"only integer encodings ('INT') are supported, got "
                                           f"{e['dtype']!r}")
                continue
            if e["enc_type"] not in ("PER_TENSOR", "PER_CHANNEL"):
                probs.add(f"{path}.enc_type", f"must be 'PER_TENSOR' or 'PER_CHANNEL' "
                                              f"(PER_BLOCK/LPBQ are not supported), got "
                                              f"{e['enc_type']!r}")
                continue
            if not isinstance(e["is_sym"], bool):
                probs.add(f"{path}.is_sym", f"must be true or false, got {e['is_sym']!r}")
                continue
            bw = _bitwidth(e["bw"], f"{path}.bw", probs)
            scale = _numbers(e["scale"], f"{path}.scale", probs)
            offset = _numbers(e["offset"], f"{path}.offset", probs, integral=True)
            if bw is None or scale is None or offset is None:
                continue
            if len(scale) != len(offset):
                probs.add(path, f"scale has {len(scale)} values but offset has {len(offset)}")
                continue
            per_channel = e["enc_type"] == "PER_CHANNEL"
            if not per_channel and len(scale) != 1:
                probs.add(f"{path}.scale", f"PER_TENSOR needs exactly 1 value, got {len(scale)}")
                continue
            if not _check_grid(scale, offset, bw, path, probs):
                continue
            out.append(_entry(name, scale, offset, bw, per_channel=per_channel,
                              symmetric=e["is_sym"], axis=None, is_param=is_param,
                              dtype=f"int{bw}", path=path))
    return out


def _parse_v061(doc: dict, probs: _Problems) -> list:
    """0.6.1: ``name → [per-channel dict, ...]``."""
    out = []
    for key, is_param in (("activation_encodings", False), ("param_encodings", True)):
        items = doc.get(key)
        if not isinstance(items, dict):
            probs.add(key, f"must be a dict tensor name → list of encodings, got "
                           f"{type(items).__name__}")
            continue
        for name, channels in items.items():
            path = f"{key}['{name}']"
            if not isinstance(channels, list) or not channels \
                    or not all(isinstance(c, dict) for c in channels):
                probs.add(path, f"must be a non-empty list of encoding dicts, got {channels!r}")
                continue
            scale, offset, bws, syms, ok = [], [], set(), set(), True
            for i, c in enumerate(channels):
                cpath = f"{path}[{i}]"
                missing = [k for k in ("bitwidth", "is_symmetric", "offset", "scale") if k not in c]
                if missing:
                    probs.add(cpath, f"missing field(s) {missing}")
                    ok = False
                    continue
                if c.get("dtype", "int") != "int":
                    probs.add(f"{cpath}.dtype", f"only 'int' encodings are supported, got "
                                                f"{c['dtype']!r}")
                    ok = False
                    continue
                if c["is_symmetric"] not in ("True", "False"):
                    probs.add(f"{cpath}.is_symmetric", f"must be the string 'True' or 'False', "
                                                       f"got {c['is_symmetric']!r}")
                    ok = False
                bw = _bitwidth(c["bitwidth"], f"{cpath}.bitwidth", probs)
                s = _numbers([c["scale"]], f"{cpath}.scale", probs)
                o = _numbers([c["offset"]], f"{cpath}.offset", probs, integral=True)
                if bw is None or s is None or o is None:
                    ok = False
                    continue
                bws.add(bw)
                syms.add(c["is_symmetric"])
                scale += s
                offset += o
            if not ok:
                continue
            if len(bws) != 1 or len(syms) != 1:
                probs.add(path, f"channels disagree on bitwidth {sorted(bws)} or is_symmetric "
                                f"{sorted(syms)}")
                continue
            (bw,), (sym,) = bws, syms
            if not _check_grid(scale, offset, bw, path, probs):
                continue
            out.append(_entry(name, scale, offset, bw, per_channel=len(scale) > 1,
                              symmetric=sym == "True", axis=None, is_param=is_param,
                              dtype=f"int{bw}", path=path))
    return out


def _parse_v2(doc: dict, probs: _Problems) -> list:
    """2.0.0: ``encodings`` list of ONNX-QuantizeLinear-like dicts."""
    items = doc.get("encodings")
    if not isinstance(items, list):
        probs.add("encodings", f"must be a list of encoding dicts, got {type(items).__name__}")
        return []
    out = []
    for i, e in enumerate(items):
        path = f"encodings[{i}]"
        if not isinstance(e, dict):
            probs.add(path, f"must be a dict, got {e!r}")
            continue
        name = e.get("name")
        if not isinstance(name, str) or not name:
            probs.add(f"{path}.name", f"must be a non-empty string, got {name!r}")
            continue
        path = f"encodings[{i}] ('{name}')"
        dtype = e.get("output_dtype")
        if dtype not in ONNX_INT_DTYPES:
            probs.add(f"{path}.output_dtype", f"must be one of {sorted(ONNX_INT_DTYPES)}, got "
                                              f"{dtype!r}")
            continue
        if "block_size" in e:
            probs.add(f"{path}.block_size", "blockwise encodings are not supported")
            continue
        if "y_scale" not in e:
            probs.add(path, "missing field 'y_scale'")
            continue
        bw, signed = ONNX_INT_DTYPES[dtype]
        per_channel = isinstance(e["y_scale"], list)
        scale = _numbers(e["y_scale"] if per_channel else [e["y_scale"]], f"{path}.y_scale", probs)
        zp_raw = e.get("y_zero_point", 0)
        zp = _numbers(zp_raw if isinstance(zp_raw, list) else [zp_raw], f"{path}.y_zero_point",
                      probs, integral=True)
        axis = e.get("axis")
        if scale is None or zp is None:
            continue
        if per_channel != ("axis" in e):
            probs.add(path, "a list y_scale needs 'axis' and a scalar y_scale must not have one")
            continue
        if axis is not None and not _is_int(axis):
            probs.add(f"{path}.axis", f"must be an integer, got {axis!r}")
            continue
        if len(zp) == 1 and len(scale) > 1:
            zp = zp * len(scale)
        if len(zp) != len(scale):
            probs.add(path, f"y_scale has {len(scale)} values but y_zero_point has {len(zp)}")
            continue
        lo, hi = (-(2 ** (bw - 1)), 2 ** (bw - 1) - 1) if signed else (0, 2 ** bw - 1)
        if any(not lo <= z <= hi for z in zp):
            probs.add(f"{path}.y_zero_point", f"{zp_raw!r} is outside {dtype}'s range [{lo}, {hi}]")
            continue
        offset = offset_from_onnx_zero_point(np.array(zp), bitwidth=bw, signed=signed)
        if any(s <= 0.0 for s in scale):
            probs.add(f"{path}.y_scale", f"must be > 0, got {e['y_scale']!r}")
            continue
        out.append(_entry(name, scale, offset, bw, per_channel=per_channel, symmetric=None,
                          axis=axis, is_param=None, dtype=dtype, path=path))
    return out


_PARSERS = {"1.0.0": _parse_v1, "0.6.1": _parse_v061, "2.0.0": _parse_v2}


def parse_encodings(doc: Any, source: str = "<document>") -> EncodingsFile:
    """An :class:`EncodingsFile` from a decoded JSON document (format from its ``version``)."""
    probs = _Problems(source)
    if not isinstance(doc, dict):
        probs.add("$", f"must be a JSON object, got {type(doc).__name__}")
        probs.raise_if_any()
    version = doc.get("version")
    if version not in _PARSERS:
        probs.add("version", f"must be one of {list(SUPPORTED_VERSIONS)}, got {version!r}")
        probs.raise_if_any()
    entries = _PARSERS[version](doc, probs)
    seen: dict[str, str] = {}
    for e in entries:
        if e.name in seen:
            probs.add(e.path, f"tensor '{e.name}' already has an encoding at {seen[e.name]}")
        seen.setdefault(e.name, e.path)
    probs.raise_if_any()
    return EncodingsFile(version=version, entries=tuple(entries),
                         quantizer_args=doc.get("quantizer_args"), producer=doc.get("producer"),
                         source=source)


def read_encodings(path: "str | os.PathLike") -> EncodingsFile:
    """Read an encodings file (1.0.0, 0.6.1 or 2.0.0, detected from ``version``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExportError(f"cannot read encodings file '{path}': {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ExportError(f"encodings file '{path}' is not UTF-8 text (byte {exc.object[exc.start]:#04x} "
                          f"at offset {exc.start}); give an AIMET .encodings JSON file") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ExportError(f"encodings file '{path}' is not valid JSON: {exc.msg} at line "
                          f"{exc.lineno} column {exc.colno}") from None
    return parse_encodings(doc, source=f"'{path}'")


# ---- loading into a sim ------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class LoadReport:
    """What :func:`load_encodings_into` did: tensor names per outcome, and each problem found."""

    applied: tuple             # tensors whose quantizer got the file's encoding
    implied: tuple             # 2.0.0 int32 bias / derived entries (checked, nothing to apply)
    disabled: tuple            # strict=False: enabled quantizers left without encoding (now off)
    problems: tuple            # (tensor, message) for each missing, extra or mismatched entry


def _shape_of(sim, tensor: str):
    if tensor in sim.graph.params:
        return tuple(np.shape(sim.graph.params[tensor]))
    shape = sim.graph.shape_of(tensor)
    return None if shape is None else tuple(shape)


def _check_entry(sim, handle, tensor: str, entry: EncodingEntry) -> list[str]:
    """Every way ``entry`` disagrees with the quantizer ``handle`` on ``tensor``."""
    spec = handle.spec
    out = []
    if entry.is_param is not None and entry.is_param != spec.is_param:
        want = "param_encodings" if spec.is_param else "activation_encodings"
        out.append(f"is listed as {'a parameter' if entry.is_param else 'an activation'}; "
                   f"its quantizer is {'a parameter' if spec.is_param else 'an activation'} "
                   f"quantizer (move it to {want})")
    if entry.bitwidth != spec.bitwidth:
        out.append(f"bitwidth {entry.bitwidth} ({entry.dtype}); the quantizer is "
                   f"{spec.bitwidth}-bit")
    signed_v2 = entry.symmetric is None and entry.dtype.startswith("int")
    if signed_v2 and entry.bitwidth == spec.bitwidth and not spec.symmetric:
        out.append(f"output_dtype {entry.dtype!r} is a signed type; the quantizer is asymmetric "
                   f"(use 'uint{spec.bitwidth}')")
    if entry.symmetric is not None and entry.symmetric != spec.symmetric:
        out.append(f"is_sym = {entry.symmetric}; the quantizer is "
                   f"{'symmetric' if spec.symmetric else 'asymmetric'}")
    if entry.per_channel != (spec.axis is not None):
        granularity = "per-tensor" if spec.axis is None else f"per-channel along axis {spec.axis}"
        out.append(f"is {'per-channel' if entry.per_channel else 'per-tensor'} "
                   f"({entry.num_channels} values); the quantizer is {granularity}")
    elif spec.axis is not None:
        shape = _shape_of(sim, tensor)
        axis = spec.axis % len(shape) if shape else spec.axis
        if entry.axis is not None and shape and entry.axis % len(shape) != axis:
            out.append(f"axis {entry.axis}; the quantizer's channel axis is {spec.axis}")
        if shape and shape[axis] != entry.num_channels:
            out.append(f"has {entry.num_channels} channels; the tensor (shape {list(shape)}) has "
                       f"{shape[axis]} along axis {spec.axis}")
    return out


def _v2_implied_problems(sim, f: EncodingsFile, encodings: Mapping, entries: list) -> list:
    """2.0.0 entries without an enabled quantizer of their own must be the int32 biases or the
    derived encodings that the file's quantizer entries imply (:func:`qsim.export.document_v2`);
    scales are compared to float32 round-off (rtol 1e-6), types and zero points exactly."""
    from .export import Exported, asymmetric_biases, document_v2
    handles = sim._handles
    exported = [Exported(name=t, is_param=handles[qid].spec.is_param, encoding=encodings[qid])
                for t, qid in sim.placement.quantizer_of.items() if qid in encodings]
    implied = {e.name: e for e in _parse_v2(document_v2(sim.placement.graph, exported, asymmetric_biases=asymmetric_biases(sim)),
                                            _Problems("(implied)"))}
    out = []
    for entry in entries:
        want = implied.get(entry.name)
        if want is None:
            out.append((entry.name, f"extra entry at {entry.path}: tensor '{entry.name}' has no "
                                    f"enabled quantizer and is neither an int32 bias nor an "
                                    f"encoding derived through a grid-preserving op in this sim"))
        elif entry.dtype != want.dtype or entry.per_channel != want.per_channel \
                or entry.num_channels != want.num_channels \
                or not np.allclose(entry.scale, want.scale, rtol=1e-6, atol=0) \
                or not np.array_equal(entry.offset, want.offset):
            out.append((entry.name, f"{entry.path}: output_dtype {entry.dtype!r}, y_scale "
                                    f"{entry.scale.tolist()}, offset {entry.offset.tolist()}; the "
                                    f"file's other encodings imply {want.dtype!r}, "
                                    f"{want.scale.tolist()}, {want.offset.tolist()}"))
    return out


def load_encodings_into(sim, path_or_file: "str | os.PathLike | EncodingsFile", *,
                        strict: bool = True) -> LoadReport:
    """Load an encodings file into ``sim``'s quantizers; the sim is then calibrated.

    Every enabled quantizer's tensors must have an entry (tie members: identical entries) with
    the quantizer's bitwidth, symmetry, granularity and channel count; an entry for a tensor
    without an enabled quantizer is extra, except in 2.0.0 files the int32 biases and derived
    encodings, which must equal what the other entries imply.
    ``strict=True``: any problem raises one :class:`~qsim.errors.EncodingError` listing them all
    (tensor, field, value) and nothing is changed. ``strict=False``: matching entries are
    applied, the rest skipped; enabled quantizers left without an encoding are disabled.

    The encoding takes the quantizer's flags (strict/unsigned symmetric, axis) and
    ``min = scale·offset``, ``max = scale·(offset + N)`` (N - 1 if strict symmetric).
    """
    f = path_or_file if isinstance(path_or_file, EncodingsFile) else read_encodings(path_or_file)
    placement, handles = sim.placement, sim._handles
    problems: list[tuple[str, str]] = []
    implied, chosen = [], {}
    for entry in f.entries:
        qid = placement.quantizer_of.get(entry.name)
        handle = None if qid is None else handles[qid]
        if handle is None or not handle.enabled:
            if f.version == "2.0.0":
                implied.append(entry)
                continue
            why = "has no quantizer" if handle is None else "has a disabled quantizer"
            problems.append((entry.name, f"extra entry at {entry.path}: tensor '{entry.name}' "
                                         f"{why} in this sim"))
            continue
        bad = _check_entry(sim, handle, entry.name, entry)
        problems += [(entry.name, f"{entry.path}: {m}") for m in bad]
        if not bad:
            chosen.setdefault(qid, []).append(entry)
    encodings: dict[int, Encoding] = {}
    for qid, entries in chosen.items():
        spec = handles[qid].spec
        shape = _shape_of(sim, entries[0].name)
        axis = None if spec.axis is None else (spec.axis % len(shape) if shape else spec.axis)
        encs = [e.to_encoding(axis=axis, symmetric=spec.symmetric,
                              strict_symmetric=spec.strict_symmetric,
                              unsigned_symmetric=spec.unsigned_symmetric) for e in entries]
        if any(not e.same_as(encs[0]) for e in encs[1:]):
            names = [e.name for e in entries]
            problems.append((names[0], f"tied tensors {names} share one quantizer but their "
                                       f"entries differ (scale/offset must be identical)"))
            continue
        encodings[qid] = encs[0]
    for qid, handle in handles.items():
        if not handle.enabled:
            continue
        missing = [t for t in handle.spec.tensors if t not in f.by_name]
        problems += [(t, f"missing entry: tensor '{t}' has an enabled "
                         f"{'parameter' if handle.spec.is_param else 'activation'} quantizer "
                         f"({handle.spec.bitwidth}-bit) but {f.source} has no encoding for it")
                     for t in missing]
        if missing and qid in encodings and strict:
            del encodings[qid]
    if implied:
        problems += _v2_implied_problems(sim, f, encodings, implied)
    if strict and problems:
        lines = "\n".join(f"  {t}: {m}" for t, m in problems)
        raise EncodingError(f"encodings file {f.source} does not fit this sim "
                            f"({len(problems)} problem(s); load with strict=False to apply "
                            f"what matches):\n{lines}")
    applied, disabled = [], []
    for qid, enc in encodings.items():
        handles[qid].quantizer.encoding = enc
        applied += list(handles[qid].spec.tensors)
    for qid, handle in handles.items():
        if handle.enabled and qid not in encodings and handle.quantizer.encoding is None:
            handle.enabled = False
            disabled += list(handle.spec.tensors)
    sim._calibrated = True
    sim._run_graph = None
    return LoadReport(applied=tuple(applied), implied=tuple(e.name for e in implied),
                      disabled=tuple(disabled),
                      problems=tuple(problems))


def load_encodings(sim, path: "str | os.PathLike", *, strict: bool = True) -> LoadReport:
    """Plain-function twin of ``sim.load_encodings(path, strict=...)``."""
    return load_encodings_into(sim, path, strict=strict)
