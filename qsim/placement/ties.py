"""§3: tied (shared) quantizers — backward through Concat/Scatter*, forward through
AveragePool/Relu/Resize/Upsample. A tie points several tensors at one quantizer object."""
from __future__ import annotations

from typing import Optional

from ..ir import Node
from .state import Context, WorkQuantizer, is_float
from .tables import BACKWARD_TIE_OPS, FORWARD_TIE_OPS, GRID_PRESERVING


def _tie_sources(ctx: Context, op: Node, visited: set) -> tuple[list, list]:
    """Source tensors of a backward tie at ``op`` and the fixed ranges seen on the way,
    recursing into tie / grid-preserving producers.

    The fixed range of EVERY float input (``None`` when it has none, or no quantizer) is
    collected before the "feeds more than one op: skip" check, as AIMET's
    ``_propagate_output_encodings`` appends it first: a skipped input still counts when the
    ranges are compared (placement.md §3, the ShuffleNetV2 example)."""
    visited.add(op.name)
    inputs = op.inputs[:1] if op.op_type in GRID_PRESERVING else op.inputs
    sources, ranges = [], []
    for tensor in dict.fromkeys(t for t in inputs if t):
        if not is_float(ctx.graph, tensor):
            continue
        source, path = ctx.effective_path(tensor)
        if source is None:
            source, path = tensor, [tensor]
        quantizer = ctx.qmap.get(source)
        ranges.append(None if quantizer is None else quantizer.fixed)
        if any(ctx.readers(t) > 1 for t in path) or quantizer is None \
                or quantizer.role == "param":
            continue
        sources.append(source)
        producer = ctx.producers.get(source)
        if producer is not None and producer.name not in visited and (
                producer.op_type in BACKWARD_TIE_OPS or producer.op_type in GRID_PRESERVING):
            more_sources, more_ranges = _tie_sources(ctx, producer, visited)
            sources += more_sources
            ranges += more_ranges
    return sources, ranges


def tie_backward(ctx: Context) -> None:
    """§3: Concat/Scatter*: each source quantizer is replaced by the op's output quantizer.

    If every collected range is the same, the output inherits it; otherwise sources with a fixed
    range are left out of the tie."""
    for op in reversed(ctx.ops):
        if op.op_type not in BACKWARD_TIE_OPS or op.outputs[0] not in ctx.qmap:
            continue
        group = ctx.qmap[op.outputs[0]]
        found, ranges = _tie_sources(ctx, op, set())
        sources = [s for s in dict.fromkeys(found) if ctx.qmap[s] is not group]
        if len(set(ranges)) == 1:
            common = ranges[0]
            if common is not None:
                group.set("fixed", common, f"backward tie at {op.name}: all sources fixed")
        else:
            sources = [s for s in sources if ctx.qmap[s].fixed is None]
        for s in sources:
            ctx.qmap[s] = group
            group.notes.append(f"{s} tied to {op.outputs[0]} by {op.op_type} {op.name}")


def _absorbed_range(q: WorkQuantizer, out: WorkQuantizer) -> Optional[tuple]:
    """Q's fixed range, else the output's (made ±absmax if Q is symmetric)."""
    if q.fixed is not None or out.fixed is None:
        return q.fixed
    if not q.symmetric:
        return out.fixed
    m = max(abs(v) for v in out.fixed if v is not None)
    return (-m, m)


def tie_forward(ctx: Context) -> None:
    """§3: AveragePool/Relu/Resize/Upsample output shares input 0's effective quantizer."""
    for op in ctx.ops:
        if op.op_type not in FORWARD_TIE_OPS or not op.outputs or op.outputs[0] not in ctx.qmap:
            continue
        out = ctx.qmap[op.outputs[0]]
        if not out.enabled:
            continue
        source, path = ctx.effective_path(op.inputs[0])
        if source is None:
            continue
        q = ctx.qmap[source]
        if q is out:
            continue
        if out.fixed is not None and out.fixed != q.fixed and any(ctx.readers(t) > 1 for t in path):
            continue
        text = f"forward tie {op.op_type} {op.name}"
        if out.bitwidth < q.bitwidth:
            q.set("bitwidth", out.bitwidth, text)
        if out.symmetric and not q.symmetric:
            q.set("symmetric", True, text)
        if out.unsigned and not q.unsigned:
            q.unsigned = True
            q.why["unsigned"] = f"unsigned=True by {text}"
        fixed = _absorbed_range(q, out)
        if fixed != q.fixed:
            q.set("fixed", fixed, text)
        ctx.qmap[op.outputs[0]] = q
        q.notes.append(f"{op.outputs[0]} tied to {source} by {op.op_type} {op.name}")
