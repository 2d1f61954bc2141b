"""Export: the FP32 model without quantizers plus an AIMET encodings file.

The only place where qsim's internal :class:`~qsim.quant.Encoding` (AIMET sign convention) is
turned into file formats (config-and-export.md, placement.md §6):

* 1.0.0 — ``{"activation_encodings": [...], "param_encodings": [...], "producer", "quantizer_args",
  "version"}``; each entry ``{bw, dtype: "INT", enc_type, is_sym, name, offset: [...], scale: [...]}``.
* 0.6.1 — dicts keyed by tensor name, each a list (one element per channel) of
  ``{bitwidth, dtype: "int", is_symmetric: "True"|"False", max, min, offset, scale}`` with
  ``min = scale·offset`` and ``max = scale·(N + offset)`` recomputed in float64.

Files are written atomically (a temporary file in the same folder, then ``os.replace``): a failure
leaves no half-written file and keeps what was there.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import ExportError
from .quant import Encoding

PRODUCER = {"package": "qsim", "version": "0.1.0"}
ENCODING_VERSIONS = ("1.0.0", "0.6.1")


# ---- atomic files ------------------------------------------------------------------------------

def write_atomic(path: "str | os.PathLike", data: bytes) -> Path:
    """Write ``data`` to ``path`` all at once: temp file + fsync + rename; old file kept on error."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ExportError(f"cannot write into folder '{path.parent}': {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
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
    """JSON with sorted keys and 4-space indentation, as AIMET writes it."""
    return (json.dumps(doc, sort_keys=True, indent=4) + "\n").encode("utf-8")


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
    """A 0.6.1 list: one dict per channel, min/max rebuilt from scale and offset in float64."""
    n = enc.num_steps - (1 if enc.symmetric and enc.strict_symmetric else 0)
    out = []
    for delta, offset in zip(_values(enc.delta), _values(enc.offset)):
        out.append({"bitwidth": enc.bitwidth, "dtype": "int",
                    "is_symmetric": "True" if enc.symmetric else "False",
                    "max": delta * (n + offset), "min": delta * offset,
                    "offset": offset, "scale": delta})
    return out


# ---- the whole file ----------------------------------------------------------------------------

def exported_encodings(sim) -> Iterator[tuple[str, bool, Encoding]]:
    """``(tensor name, is_param, encoding)`` of every enabled, calibrated quantizer member."""
    for handle in sim._handles.values():
        if not handle.enabled or handle.quantizer.encoding is None:
            continue
        for tensor in handle.spec.tensors:
            yield tensor, handle.spec.is_param, handle.quantizer.encoding


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
    entries = list(exported_encodings(sim))
    if version == "1.0.0":
        return {"activation_encodings": [entry_v1(n, e) for n, p, e in entries if not p],
                "param_encodings": [entry_v1(n, e) for n, p, e in entries if p],
                "producer": dict(PRODUCER), "quantizer_args": quantizer_args(sim),
                "version": "1.0.0"}
    if version == "0.6.1":
        return {"activation_encodings": {n: entry_v061(e) for n, p, e in entries if not p},
                "param_encodings": {n: entry_v061(e) for n, p, e in entries if p},
                "producer": dict(PRODUCER), "quantizer_args": quantizer_args(sim),
                "version": "0.6.1"}
    raise ExportError(f"encoding_version {version!r} is not supported; use one of "
                      f"{list(ENCODING_VERSIONS)}")


def export_sim(sim, path: "str | os.PathLike", prefix: str, *,
               encoding_version: str = "1.0.0") -> tuple[Path, Path]:
    """Write ``<path>/<prefix>.onnx`` (FP32, after graph passes) and ``<prefix>.encodings``."""
    from .onnx_io import to_onnx
    folder = Path(path)
    if not folder.is_dir():
        raise ExportError(f"export folder '{folder}' does not exist; create it first")
    if not prefix or os.sep in prefix:
        raise ExportError(f"filename prefix {prefix!r} must be a plain file name (no '{os.sep}')")
    doc = encodings_document(sim, encoding_version)  # before writing anything: may raise
    model_bytes = to_onnx(sim.graph).SerializeToString()
    enc_path = write_atomic(folder / f"{prefix}.encodings", dumps_encodings(doc))
    onnx_path = write_atomic(folder / f"{prefix}.onnx", model_bytes)
    return onnx_path, enc_path
