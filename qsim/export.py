"""Export: the FP32 model without quantizers plus an AIMET encodings file.

The only place where qsim's internal :class:`~qsim.quant.Encoding` (AIMET sign convention) is
turned into file formats (config-and-export.md, placement.md §6):

* 1.0.0 — ``{"activation_encodings": [...], "param_encodings": [...], "producer",
  "quantizer_args", "version"}``; each entry ``{bw, dtype: "INT", enc_type, is_sym, name,
  offset: [...], scale: [...]}``.
* 0.6.1 — dicts keyed by tensor name, each a list (one element per channel) of
  ``{bitwidth, dtype: "int", is_symmetric: "True"|"False", max, min, offset, scale}`` with
  ``min = scale·offset`` and ``max = scale·(2^bw - 1 + offset)`` recomputed in float64 (also for
  strict symmetric encodings: AIMET writes the full grid's top there).
* 2.0.0 — ``{"encodings": [...], "producer", "version"}``, each entry ``{name, output_dtype,
  y_scale, y_zero_point?, axis?}`` as ONNX QuantizeLinear reads it (:func:`entry_v2`); after the
  enabled quantizers' entries it adds int32 biases (:func:`bias_entries`) and encodings derived
  through grid-equivariant ops (:func:`derived_encodings`). Order, as AIMET writes it: every
  parameter (each int32 bias right after its op's weight), then activations, then derived ones.

Files are written atomically (a temporary file in the same folder, then ``os.replace``): a failure
leaves no half-written file and keeps what was there; a new file gets the permissions of the
user's umask (``0o666 & ~umask``), a replaced one keeps its mode.

No file ever holds a NaN, infinite or non-positive scale (:func:`check_scales`): such an encoding
comes from non-finite calibration data (or AIMET's "no finite cost" sentinel ``delta = -1``), and
export refuses it with one :class:`~qsim.errors.ExportError` naming every such quantizer.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from .errors import ExportError
from .ir import Graph, Node
from .quant import Encoding, onnx_zero_point

PRODUCER = {"package": "qsim", "version": "0.1.0"}
ENCODING_VERSIONS = ("1.0.0", "0.6.1", "2.0.0")

#: §3 grid-preserving ops (their output lies on input 0's grid), placement.md §3.
GRID_PRESERVING = frozenset({
    "Col2Im", "Compress", "DepthToSpace", "Dropout", "Expand", "Flatten", "Gather",
    "GatherElements", "GatherND", "Identity", "MaxPool", "MaxRoiPool", "NonZero", "Pad",
    "ReduceMax", "ReduceMin", "Reshape", "Slice", "SpaceToDepth", "Split", "SplitToSequence",
    "Squeeze", "Tile", "TopK", "Transpose", "Unsqueeze"})
#: 2.0.0 (b): ops through which an encoding is copied (placement.md §6).
DERIVED_OPS = GRID_PRESERVING | {"Clip", "Max", "Min", "Pad", "Where"}
#: 2.0.0 (a): ops whose int32 bias scale is ``max|b|/2^31``: op type → (weight slot, bias slot).
NORM_OPS = {"LayerNormalization": (1, 2), "BatchNormalization": (1, 2),
            "InstanceNormalization": (1, 2), "GroupNormalization": (1, 2),
            "RNN": (1, 3), "LSTM": (1, 3), "GRU": (1, 3)}
#: smallest int32 bias scale of a norm/recurrent op
BIAS_SCALE_FLOOR = np.float32(2.33e-12)


@dataclass(frozen=True, kw_only=True)
class Exported:
    """One tensor's entry: its name, whether it is a parameter, its encoding."""

    name: str
    is_param: bool
    encoding: Encoding


# ---- atomic files ------------------------------------------------------------------------------

def current_umask() -> int:
    """The process umask, read without changing it where Linux tells it (/proc), else the
    classic set-and-restore."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode(path: Path) -> int:
    """Mode for a file written at ``path``: the existing file's, else ``0o666 & ~umask``
    (what ``open(path, "w")`` gives; mkstemp alone would give 0o600)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~current_umask()


def write_atomic(path: "str | os.PathLike", data: bytes) -> Path:
    """Write ``data`` to ``path`` all at once: temp file + fsync + rename (old file kept on
    error, temp file removed; an OSError becomes ExportError naming the path or folder).
    The file gets :func:`file_mode`."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ExportError(f"cannot write into folder '{path.parent}': {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), file_mode(path))
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise ExportError(f"cannot write '{path}': {exc.strerror or exc}") from None
        raise
    return path


def dumps_encodings(doc: dict) -> bytes:
    """JSON with sorted keys and 4-space indentation, as AIMET writes it; strict JSON (a NaN or
    infinite number anywhere is an ExportError, never a bare ``NaN`` token)."""
    check_scales(doc)
    try:
        return (json.dumps(doc, sort_keys=True, indent=4, allow_nan=False) + "\n").encode("utf-8")
    except ValueError as exc:
        raise ExportError(f"cannot write the encodings as JSON: {exc}") from None


def _doc_scales(doc: Mapping) -> Iterator[tuple[str, list]]:
    """``(tensor name, [scale, ...])`` of every entry of a 1.0.0, 0.6.1 or 2.0.0 document."""
    for key in ("param_encodings", "activation_encodings"):
        entries = doc.get(key, [])
        if isinstance(entries, Mapping):                       # 0.6.1: {name: [per channel]}
            for name, channels in entries.items():
                yield name, [c.get("scale") for c in channels]
        else:                                                  # 1.0.0
            for e in entries:
                yield e["name"], list(e["scale"])
    for e in doc.get("encodings", []):                         # 2.0.0
        scale = e["y_scale"]
        yield e["name"], list(scale) if isinstance(scale, list) else [scale]


def bad_scale(values) -> "float | None":
    """The first scale that is not a finite number > 0, else None."""
    for v in values:
        if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
            return v
    return None


def check_scales(doc: Mapping) -> None:
    """ExportError naming every tensor whose scale is NaN, infinite or ≤ 0 (all of them at once).

    Such scales come from calibration data that held ±Inf or only NaN (README "Non-finite
    data"); no encodings file, nor a QDQ model, is written with one."""
    bad = [(name, v) for name, scales in _doc_scales(doc)
           if (v := bad_scale(scales)) is not None]
    if bad:
        listed = ", ".join(f"'{n}' (scale {v})" for n, v in bad[:10])
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ExportError(f"cannot export: {len(bad)} quantizer(s) have a NaN, infinite or "
                          f"non-positive scale: {listed}{more}; their calibration data held "
                          f"±Inf or only NaN (or nothing binnable): calibrate with finite data, "
                          f"or disable those quantizers")


# ---- one encoding in each format ---------------------------------------------------------------

def _values(a: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(a, dtype=np.float64).reshape(-1)]


def entry_v1(name: str, enc: Encoding) -> dict:
    """A 1.0.0 entry (offset ≤ 0, AIMET's sign)."""
    return {"bw": enc.bitwidth, "dtype": "INT",
            "enc_type": "PER_TENSOR" if enc.axis is None else "PER_CHANNEL",
            "is_sym": bool(enc.symmetric), "name": name,
            "offset": _values(enc.offset), "scale": _values(enc.delta)}


def entry_v061(enc: Encoding) -> list[dict]:
    """A 0.6.1 list, one dict per channel: ``min = scale·offset``, ``max = scale·(2^bw-1+offset)``
    in float64 (the full grid, strict symmetric included, as AIMET writes it)."""
    n = float(enc.num_steps)
    return [{"bitwidth": enc.bitwidth, "dtype": "int",
             "is_symmetric": "True" if enc.symmetric else "False",
             "max": delta * (n + offset), "min": delta * offset, "offset": offset, "scale": delta}
            for delta, offset in zip(_values(enc.delta), _values(enc.offset))]


def v2_signed(enc: Encoding, is_param: bool) -> bool:
    """2.0.0 integer type: parameters with a symmetric signed grid (offset < 0) are ``int``;
    everything else — every activation, symmetric ones included — is written ``uint``."""
    return bool(is_param and enc.symmetric and np.all(enc.offset < 0))


def entry_v2(name: str, enc: Encoding, *, is_param: bool) -> dict:
    """A 2.0.0 entry: ``output_dtype = [u]int<bw>``, ``y_scale = delta`` (a list per channel, with
    ``axis``), ``y_zero_point = -offset`` (uint) or ``-offset - 2^(bw-1)`` (int), written when
    non-zero or when the grid is symmetric and written unsigned (AIMET's files do both)."""
    signed = v2_signed(enc, is_param)
    zp = onnx_zero_point(enc, signed=signed)
    out = {"name": name, "output_dtype": f"{'' if signed else 'u'}int{enc.bitwidth}"}
    if enc.axis is None:
        out["y_scale"] = float(enc.delta)
        if int(zp) != 0 or (enc.symmetric and not signed):
            out["y_zero_point"] = int(zp)
    else:
        out["y_scale"] = _values(enc.delta)
        out["axis"] = int(enc.axis)
        if np.any(zp != 0) or (enc.symmetric and not signed):
            out["y_zero_point"] = [int(z) for z in zp]
    return out


def int32_entry(name: str, scale, *, per_channel: bool, symmetric: bool = True) -> dict:
    """A 2.0.0 32-bit bias entry, offset -2^31 (per channel along axis 0): ``int32`` without a
    zero point when the bias quantizer is symmetric, else ``uint32`` with zero point 2^31 (aimet
    writes the bias quantizer's own signedness: asymmetric parameters, e.g. its DSP config)."""
    out = {"name": name, "output_dtype": "int32" if symmetric else "uint32"}
    if per_channel:
        out["y_scale"], out["axis"] = _values(scale), 0
    else:
        out["y_scale"] = float(np.asarray(scale).reshape(()))
    if not symmetric:
        out["y_zero_point"] = ([2 ** 31] * len(out["y_scale"]) if per_channel else 2 ** 31)
    return out


# ---- 2.0.0 additions: int32 biases and derived encodings ---------------------------------------

def effective_encoding(graph: Graph, producers: Mapping[str, Node],
                       encoding_of: Callable[[str], "Encoding | None"], tensor: str):
    """The encoding deciding ``tensor``'s grid: its own, else walk up through grid-preserving
    producers (and float-to-float Cast) via input 0; None at any other producer."""
    seen = set()
    while tensor not in seen:
        seen.add(tensor)
        enc = encoding_of(tensor)
        if enc is not None:
            return enc
        node = producers.get(tensor)
        if node is None or not (node.op_type in GRID_PRESERVING or _float_cast(graph, node)):
            return None
        tensor = node.inputs[0]
    return None


def _float_cast(graph: Graph, node: Node) -> bool:
    if node.op_type != "Cast":
        return False
    kinds = [graph.dtype_of(t) for t in (node.inputs[0], node.outputs[0])]
    return all(k is not None and (k.kind == "f" or k.name == "bfloat16") for k in kinds)


def weight_and_bias(graph: Graph, node: Node, producers, consumers) -> tuple | None:
    """``(weight, bias, kind)`` of an op that can take an int32 bias, or None.

    Conv/ConvTranspose/Gemm (fused MatMul+Add included): inputs 1 and 2, kind "linear".
    MatMul with static W (or ``Transpose(W)``) read by one Add with a static 1-D vector (the
    unfused MatMul+Add): W and that vector, "linear". Norm and recurrent ops: their weight and
    bias slots, kind "norm".
    """
    def arg(i):
        return node.inputs[i] if len(node.inputs) > i and node.inputs[i] else None

    if node.op_type in ("Conv", "ConvTranspose", "Gemm"):
        w, b = arg(1), arg(2)
        return (w, b, "linear") if w and b else None
    if node.op_type in NORM_OPS:
        wi, bi = NORM_OPS[node.op_type]
        w, b = arg(wi), arg(bi)
        return (w, b, "norm") if w and b else None
    if node.op_type == "MatMul":
        w = arg(1)
        if w is None:
            return None
        if w not in graph.params:
            prod = producers.get(w)
            if prod is None or prod.op_type != "Transpose" or prod.inputs[0] not in graph.params:
                return None
            w = prod.inputs[0]
        readers = consumers.get(node.outputs[0], [])
        if len(readers) != 1 or readers[0].op_type != "Add":
            return None
        other = [t for t in readers[0].inputs if t != node.outputs[0]]
        if len(other) != 1 or other[0] not in graph.params or np.ndim(graph.params[other[0]]) != 1:
            return None
        return w, other[0], "linear"
    return None


def bias_scale(kind: str, s_in: Encoding, s_w: Encoding, bias: np.ndarray) -> np.ndarray:
    """The int32 bias scale, float32 arithmetic.

    linear: ``f32(s_in)·f32(s_w)`` (per channel if the weight is);
    norm / recurrent: ``max(f32(max|b|)/2^31, 2.33e-12)`` (per channel ``|b_c|`` if the weight is).
    """
    if kind == "linear":
        return (np.float32(s_in.delta) * s_w.delta.astype(np.float32)).astype(np.float32)
    b = np.abs(np.asarray(bias, dtype=np.float32))
    b = b.reshape(-1) if s_w.axis is not None else np.max(b, initial=np.float32(0.0))
    return np.maximum(b / np.float32(2.0 ** 31), BIAS_SCALE_FLOOR).astype(np.float32)


def bias_entries(graph: Graph, exported: Iterable[Exported],
                 asymmetric: frozenset = frozenset()) -> dict[str, dict]:
    """weight name → the int32 entry of its op's bias (placement.md §6 (a)).

    For every op with a bias that has no entry of its own, whose weight has one, and whose
    input 0 has an effective encoding. Biases in ``asymmetric`` (their quantizer is not
    symmetric) are written ``uint32`` (:func:`int32_entry`)."""
    by_name = {e.name: e for e in exported}
    producers, consumers = graph.producers(), graph.consumers()

    def encoding_of(t):
        e = by_name.get(t)
        return None if e is None else e.encoding

    out: dict[str, dict] = {}
    for node in graph.nodes:
        found = weight_and_bias(graph, node, producers, consumers)
        if found is None:
            continue
        w, b, kind = found
        if w not in by_name or b in by_name or b not in graph.params:
            continue
        s_in = effective_encoding(graph, producers, encoding_of, node.inputs[0])
        if s_in is None or s_in.axis is not None:
            continue
        s_w = by_name[w].encoding
        scale = bias_scale(kind, s_in, s_w, graph.params[b])
        out.setdefault(w, int32_entry(b, scale, per_channel=s_w.axis is not None,
                                      symmetric=b not in asymmetric))
    return out


def _data_inputs(node: Node) -> tuple:
    """Inputs whose grid an op's output follows: Where → inputs 1, 2; Max/Min → all; else 0."""
    if node.op_type == "Where":
        return tuple(node.inputs[1:3])
    if node.op_type in ("Max", "Min"):
        return tuple(t for t in node.inputs if t)
    return tuple(node.inputs[:1])


def _constant(graph: Graph, tensor: str, producers) -> np.ndarray | None:
    """An initializer, a Constant's value, or either through Identity nodes; else None."""
    seen = set()
    while tensor not in seen:
        seen.add(tensor)
        if tensor in graph.params:
            return np.asarray(graph.params[tensor])
        node = producers.get(tensor)
        if node is None:
            return None
        if node.op_type == "Constant" and "value" in node.attrs:
            return np.asarray(node.attrs["value"])
        if node.op_type != "Identity":
            return None
        tensor = node.inputs[0]
    return None


def is_masked_softmax_reducemin(graph: Graph, node: Node, producers, consumers) -> bool:
    """aimet 2.42 derives no encoding for the ReduceMin of an HTP masked softmax,
    ``Softmax(Where(mask, x, ReduceMin(x, axes) + B), axis)``: axes a constant -1 or 3, B a
    constant single value <= -20, each op the only reader of the one before, the Softmax's
    ``axis`` attribute written and -1 or 3."""
    if node.op_type != "ReduceMin" or len(node.inputs) < 2:
        return False
    axes = _constant(graph, node.inputs[1], producers)
    if axes is None or axes.size != 1 or axes.reshape(-1)[0] not in (-1, 3):
        return False

    def only_reader(tensor, op_type):
        readers = consumers.get(tensor, [])
        return readers[0] if len(readers) == 1 and readers[0].op_type == op_type else None

    add = only_reader(node.outputs[0], "Add")
    if add is None:
        return False
    b = _constant(graph, next((t for t in add.inputs if t != node.outputs[0]), ""), producers)
    if b is None or b.size != 1 or b.reshape(-1)[0] > -20:
        return False
    where = only_reader(add.outputs[0], "Where")
    softmax = where and only_reader(where.outputs[0], "Softmax")
    return bool(softmax) and softmax.attrs.get("axis") in (-1, 3)


def derived_encodings(graph: Graph, encoding_of: Callable[[str], "Encoding | None"]
                      ) -> list[tuple[str, Encoding]]:
    """Encodings copied through grid-equivariant ops and Clip/Max/Min/Pad/Where (§6 (b)).

    In graph order, for each such op: forward, if every data input has the same per-tensor
    encoding and a float output has none, that output gets it; backward, if an output has a
    per-tensor encoding, each non-static float data input with none and a single consumer gets
    it. Derived encodings count for later ops. The ReduceMin of an HTP masked softmax derives
    nothing (:func:`is_masked_softmax_reducemin`)."""
    consumers, producers = graph.consumers(), graph.producers()
    known: dict[str, Encoding] = {}

    def enc(t):
        return known.get(t) if t in known else encoding_of(t)

    def is_float(t):
        d = graph.dtype_of(t)
        return d is not None and (d.kind == "f" or d.name == "bfloat16")

    out: list[tuple[str, Encoding]] = []
    for node in graph.nodes:
        if node.op_type not in DERIVED_OPS \
                or is_masked_softmax_reducemin(graph, node, producers, consumers):
            continue
        data = [t for t in _data_inputs(node) if is_float(t)]
        encs = [enc(t) for t in data]
        if data and all(e is not None and e.axis is None for e in encs) \
                and all(e.same_as(encs[0]) for e in encs[1:]):
            for t in node.outputs:
                if t and is_float(t) and enc(t) is None:
                    known[t] = encs[0]
                    out.append((t, encs[0]))
            continue
        outs = [enc(t) for t in node.outputs if t and is_float(t)]
        if not outs or outs[0] is None or outs[0].axis is not None:
            continue
        for t in data:
            if enc(t) is None and t not in graph.params and len(consumers.get(t, [])) == 1:
                known[t] = outs[0]
                out.append((t, outs[0]))
    return out


def document_v2(graph: Graph, exported: list[Exported], producer: Mapping | None = None,
                asymmetric_biases: frozenset = frozenset()) -> dict:
    """The 2.0.0 document of ``exported`` (params, then activations, in order) on ``graph``."""
    by_name = {e.name: e for e in exported}
    biases = bias_entries(graph, exported, asymmetric_biases)
    entries = []
    for e in (x for x in exported if x.is_param):
        entries.append(entry_v2(e.name, e.encoding, is_param=True))
        if e.name in biases:
            entries.append(biases[e.name])
    entries += [entry_v2(e.name, e.encoding, is_param=False) for e in exported if not e.is_param]
    for name, enc in derived_encodings(graph, lambda t: by_name[t].encoding
                                       if t in by_name else None):
        entries.append(entry_v2(name, enc, is_param=False))
    return {"encodings": entries, "producer": dict(producer or PRODUCER), "version": "2.0.0"}


# ---- the whole file ----------------------------------------------------------------------------

def document(exported: list[Exported], version: str, *, quantizer_args: Mapping | None = None,
             producer: Mapping | None = None, graph: Graph | None = None,
             asymmetric_biases: frozenset = frozenset()) -> dict:
    """The encodings document of ``exported`` in format ``version`` (2.0.0 needs ``graph``);
    ExportError first if a scale is NaN, infinite or ≤ 0 (:func:`check_scales`)."""
    check_scales({"encodings": [{"name": e.name, "y_scale": _values(e.encoding.delta)}
                                for e in exported]})
    head = {"producer": dict(producer or PRODUCER)}
    if version == "1.0.0":
        return {"activation_encodings": [entry_v1(e.name, e.encoding) for e in exported
                                         if not e.is_param],
                "param_encodings": [entry_v1(e.name, e.encoding) for e in exported if e.is_param],
                **head, "quantizer_args": dict(quantizer_args or {}), "version": "1.0.0"}
    if version == "0.6.1":
        return {"activation_encodings": {e.name: entry_v061(e.encoding) for e in exported
                                         if not e.is_param},
                "param_encodings": {e.name: entry_v061(e.encoding) for e in exported
                                    if e.is_param},
                **head, "quantizer_args": dict(quantizer_args or {}), "version": "0.6.1"}
    if version == "2.0.0":
        if graph is None:
            raise ExportError("a 2.0.0 encodings file needs the model graph (int32 biases and "
                              "derived encodings depend on it)")
        return document_v2(graph, exported, producer, asymmetric_biases)
    raise ExportError(f"encoding_version {version!r} is not supported; use one of "
                      f"{list(ENCODING_VERSIONS)}")


def exported_encodings(sim) -> Iterator[Exported]:
    """Every enabled, calibrated quantizer's tensors, in the placement's tensor order."""
    for tensor, qid in sim.placement.quantizer_of.items():
        handle = sim._handles[qid]
        if handle.enabled and handle.quantizer.encoding is not None:
            yield Exported(name=tensor, is_param=handle.spec.is_param,
                           encoding=handle.quantizer.encoding)


def quantizer_args(sim) -> dict:
    """``quantizer_args`` as AIMET writes it (placement.md §6)."""
    cfg = sim.config
    per_channel = bool(cfg.defaults.per_channel_quantization) or any(
        bool(op.per_channel_quantization) for op in cfg.op_type.values())
    symmetric = cfg.defaults.params.is_symmetric
    return {"activation_bitwidth": sim.activation_bitwidth, "dtype": "int",
            "is_symmetric": bool(per_channel if symmetric is None else symmetric),
            "param_bitwidth": sim.param_bitwidth, "per_channel_quantization": per_channel,
            "quant_scheme": sim.quant_scheme.value}


def encodings_document(sim, version: str = "1.0.0") -> dict:
    """The encodings file of ``sim`` in format ``version`` as a dict."""
    return document(list(exported_encodings(sim)), version, quantizer_args=quantizer_args(sim),
                    graph=sim.placement.graph, asymmetric_biases=asymmetric_biases(sim))


def asymmetric_biases(sim) -> frozenset:
    """Bias parameters whose quantizer is not symmetric (their 2.0.0 entry is uint32)."""
    return frozenset(t for q in sim.placement.quantizers
                     if q.is_param and q.kind == "bias" and not q.symmetric for t in q.tensors)


def export_sim(sim, path: "str | os.PathLike", prefix: str, *,
               encoding_version: str = "1.0.0") -> tuple[Path, Path]:
    """Write ``<path>/<prefix>.onnx`` (FP32, after graph passes) and ``<prefix>.encodings``."""
    from .onnx_io import to_onnx
    folder = Path(path)
    if not prefix or os.sep in prefix:
        raise ExportError(f"filename prefix {prefix!r} must be a plain file name (no '{os.sep}')")
    # before writing anything: an unknown version or a bad scale raises here
    enc_bytes = dumps_encodings(encodings_document(sim, encoding_version))
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"export folder '{folder}' is a file; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create export folder '{folder}': {exc.strerror or exc}") from None
    # The FP32 model as given (fused MatMul+Add nodes are not valid ONNX Gemms); tensor names
    # are the same as those of the fused graph, which only drops the MatMul outputs.
    model_bytes = to_onnx(sim.model).SerializeToString()
    enc_path = write_atomic(folder / f"{prefix}.encodings", enc_bytes)
    onnx_path = write_atomic(folder / f"{prefix}.onnx", model_bytes)
    return onnx_path, enc_path


def write_encodings(doc: dict, path: "str | os.PathLike") -> Path:
    """Write an encodings document atomically (sorted keys, 4-space indentation)."""
    return write_atomic(path, dumps_encodings(doc))
