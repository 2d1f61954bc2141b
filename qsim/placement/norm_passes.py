"""§2.I for norms: aimet's LayerNormalization / RMSNormalization graph passes on what fusion left.

After fusion (norm_fusion.py) and the configuration stages, aimet-onnx 2.42 runs, for each name
of ``supergroup_pass_list``, a pass over every op (graph order) that disables quantizers inside
norm patterns fusion did not take (a LayerNorm at opset >= 18, whose ReduceMean reads its axes
as an input, say). Its ops are also never the start of a ``supergroups`` chain (stage E).
"Constants" here are static inputs that are not parameters (aimet's ``is_const``).

LayerNormalization, from a ``ReduceMean`` ``r`` with one reader::

    s = Sub(x, r(x)) read by exactly two ops, a Pow p and a Div d
    p -> ReduceMean -> Add -> Sqrt   each the single reader of the one before; Sqrt read <= once
    d = Div(s, Sqrt)
    => outputs of r, s, p, ReduceMean, Add, Sqrt off; constants of those and of d off
    then, if d's single reader is a Mul (read <= once): d's output off (the Mul's other input,
    the weight, becomes symmetric if its quantizer is 16-bit); if that Mul's single reader is an
    Add: the Mul's output and the Add's constants off.

RMSNormalization, from an op ``o``: ``o`` is an RMSNormalization (a fused or a native one) =>
``[o]``; or ``o = Mul(x, x) | Pow(x, 2)`` (2 a scalar) with one reader, then ReduceMean -> Add
(each the single reader), the Add read once, then ``Div(x, Sqrt(·))``, ``Mul(x, Div(1, Sqrt(·)))``
/ ``Mul(x, Reciprocal(Sqrt(·)))`` (1 a scalar; the Sqrt read once) or ``Mul(x, Pow(·, -0.5))``.
Followed by single-reader Casts and a single-reader Mul, the pattern is affine: that Mul joins.
=> outputs of all but the last op off; constants of all but the last (affine) or of all off.
"""
from __future__ import annotations

from typing import Optional

from ..ir import Node
from .fusion import static_value
from .state import Context


def _readers(ctx: Context, op: Node) -> list:
    return ctx.consuming_ops(op)


def _single(ctx: Context, op: Node) -> Optional[Node]:
    readers = _readers(ctx, op)
    return readers[0] if len(readers) == 1 else None


def _chain(ctx: Context, op: Node, types: list, *, last_single: bool = True) -> Optional[list]:
    """aimet's ``check_consecutive_ops``: ``op`` and its single readers have ``types``."""
    ops = []
    for t in types[:-1]:
        if op.op_type != t or len(_readers(ctx, op)) != 1:
            return None
        ops.append(op)
        op = _readers(ctx, op)[0]
    if op.op_type != types[-1] or (last_single and len(_readers(ctx, op)) > 1):
        return None
    return ops + [op]


def _scalar(ctx: Context, tensor: str, value: float) -> bool:
    c = static_value(ctx.graph, tensor, ctx.producers)
    return c is not None and c.ndim == 0 and float(c) == value


class NormMatch:
    """One matched pattern: its ops, and what the pass disables or makes symmetric."""

    def __init__(self, ops: list, outputs_off: list, constants_off: list,
                 weight: Optional[str] = None) -> None:
        self.ops, self.outputs_off, self.constants_off, self.weight = \
            ops, outputs_off, constants_off, weight


def _layernorm(ctx: Context, op: Node) -> Optional[NormMatch]:
    if op.op_type != "ReduceMean" or _single(ctx, op) is None:
        return None
    sub = _single(ctx, op)
    if sub.op_type != "Sub" or len(_readers(ctx, sub)) != 2 or sub.inputs[0] != op.inputs[0]:
        return None
    pow_ = next((n for n in _readers(ctx, sub) if n.op_type == "Pow"), None)
    div = next((n for n in _readers(ctx, sub) if n.op_type == "Div"), None)
    if pow_ is None or div is None:
        return None
    denominator = _chain(ctx, pow_, ["Pow", "ReduceMean", "Add", "Sqrt"])
    if denominator is None:
        return None
    if ctx.producers.get(div.inputs[0]) is not sub \
            or ctx.producers.get(div.inputs[1]) is not denominator[-1]:
        return None
    ops = [op, sub] + denominator + [div]
    outputs_off, constants_off = ops[:-1], list(ops)
    div_mul = _chain(ctx, div, ["Div", "Mul"])
    if div_mul is None:
        return NormMatch(ops, outputs_off, constants_off)
    mul = div_mul[1]
    weight = mul.inputs[1] if ctx.producers.get(mul.inputs[0]) is div else mul.inputs[0]
    ops.append(mul)
    outputs_off = outputs_off + [div]
    mul_add = _chain(ctx, mul, ["Mul", "Add"], last_single=False)
    if mul_add is None:
        return NormMatch(ops, outputs_off, constants_off, weight)
    ops.append(mul_add[1])
    return NormMatch(ops, outputs_off + [mul], constants_off + [mul_add[1]], weight)


def _a_div_b(ctx: Context, a: str, sqrt: Node) -> list:
    """aimet's ``match_a_div_b_pattern(a, sqrt output)``: the ops dividing ``a`` by it."""
    op = _single(ctx, sqrt)
    if op is None:
        return []
    if op.op_type == "Div" and op.inputs[0] == a and op.inputs[1] == sqrt.outputs[0]:
        return [op]
    mul = _single(ctx, op)
    if mul is None:
        return []
    if not ((op.op_type == "Div" and _scalar(ctx, op.inputs[0], 1.0)
             and op.inputs[1] == sqrt.outputs[0])
            or (op.op_type == "Reciprocal" and op.inputs[0] == sqrt.outputs[0])):
        return []
    if mul.op_type != "Mul" or a not in mul.inputs[:2]:
        return []
    return [op, mul]


def _rms_core(ctx: Context, op: Node) -> list:
    if op.op_type == "RMSNormalization":
        return [op]
    square = (op.op_type == "Mul" and len(op.inputs) == 2 and op.inputs[0] == op.inputs[1]) or \
        (op.op_type == "Pow" and _scalar(ctx, op.inputs[1], 2.0))
    if not square or _single(ctx, op) is None:
        return []
    denominator = _chain(ctx, _single(ctx, op), ["ReduceMean", "Add"], last_single=False)
    if denominator is None or _single(ctx, denominator[-1]) is None:
        return []
    ops = [op] + denominator
    nxt = _single(ctx, denominator[-1])
    if nxt.op_type == "Sqrt" and _single(ctx, nxt) is not None:
        div_ops = _a_div_b(ctx, op.inputs[0], nxt)
        if div_ops:
            return ops + [nxt] + div_ops
    if nxt.op_type == "Pow" and _scalar(ctx, nxt.inputs[1], -0.5) and _single(ctx, nxt):
        mul = _single(ctx, nxt)
        if mul.op_type == "Mul" and op.inputs[0] in mul.inputs[:2]:
            return ops + [nxt, mul]
    return []


def _rmsnorm(ctx: Context, op: Node) -> Optional[NormMatch]:
    ops = _rms_core(ctx, op)
    if not ops:
        return None
    nxt, casts = ops[-1], []
    while _single(ctx, nxt) is not None and _single(ctx, nxt).op_type == "Cast":
        nxt = _single(ctx, nxt)
        casts.append(nxt)
    affine = _single(ctx, nxt) is not None and _single(ctx, nxt).op_type == "Mul"
    if affine:
        ops = ops + casts + [_single(ctx, nxt)]
    return NormMatch(ops, ops[:-1], ops[:-1] if affine else list(ops))


_PASSES = {"LayerNormalization": _layernorm, "RMSNormalization": _rmsnorm}


def norm_pass_matches(ctx: Context, passes) -> list:
    """(pass name, NormMatch) for every op where a pass of ``passes`` matches, in pass order."""
    return [(name, found) for name in passes if name in _PASSES
            for op in ctx.ops if (found := _PASSES[name](ctx, op)) is not None]


def stage_i_norm_passes(ctx: Context, matches: list) -> None:
    """I: apply the norm passes' matches (see module doc)."""
    for name, m in matches:
        text = f"supergroup_pass_list {name} (unfused pattern at {m.ops[0].name})"
        for op in m.outputs_off:
            for q in ctx.outs(op):
                q.set("enabled", False, text)
        for op in m.constants_off:
            for t in op.inputs:
                q = ctx.qmap.get(t)
                if q is not None and q.role != "param" \
                        and static_value(ctx.graph, t, ctx.producers) is not None:
                    q.set("enabled", False, text)
    for name, m in matches:
        q = ctx.qmap.get(m.weight) if m.weight else None
        if q is not None and q.bitwidth == 16:
            q.set("symmetric", True, f"supergroup_pass_list {name}: 16-bit norm weight")
