"""§1.2-§1.3: which tensors get a quantizer object (parameters first, then activations)."""
from __future__ import annotations

from ..ir import Node
from .fusion import static_value
from .state import Context, is_float
from .tables import FUSED_DOMAIN, NO_QUANTIZER_PRODUCERS, PARAM_SLOTS


def _through_identity(ctx: Context, tensor: str) -> str:
    seen = set()
    while tensor not in seen:
        seen.add(tensor)
        node = ctx.producers.get(tensor)
        if node is None or node.op_type != "Identity":
            return tensor
        tensor = node.inputs[0]
    return tensor


def _param_tensor(ctx: Context, op: Node, index: int) -> tuple:
    """(parameter tensor or None, read through a Transpose?) for one slot of ``op``."""
    if index >= len(op.inputs) or not op.inputs[index]:
        return None, False
    tensor = _through_identity(ctx, op.inputs[index])
    if static_value(ctx.graph, tensor, ctx.producers) is not None:
        return tensor, False
    node = ctx.producers.get(tensor)
    if op.op_type == "MatMul" and node is not None and node.op_type == "Transpose":
        inner = _through_identity(ctx, node.inputs[0])
        if static_value(ctx.graph, inner, ctx.producers) is not None:
            return inner, True
    return None, False


def create_params(ctx: Context, bitwidth: int) -> None:
    """§1.2: one quantizer per parameter tensor, in the order ops first use them."""
    for op in ctx.ops:
        for index, kind in PARAM_SLOTS.get(op.op_type, {}).items():
            tensor, transposed = _param_tensor(ctx, op, index)
            if tensor is None or not is_float(ctx.graph, tensor):
                continue
            if tensor not in ctx.qmap:
                ctx.new(tensor, "param", kind, bitwidth)
            ctx.op_params.setdefault(op.name, []).append((kind, tensor))
            if transposed:
                ctx.transposed.add(tensor)


def _gets_activation_quantizer(ctx: Context, tensor: str) -> bool:
    """§1.3 filters: float, not a parameter, no Resize roi/scales/sizes use, not only a fused
    MaskedSoftmax's mask value, a real producer."""
    if not tensor or tensor in ctx.qmap or not is_float(ctx.graph, tensor):
        return False
    readers = ctx.consumers.get(tensor, [])
    for n in readers:
        if n.op_type == "Resize" and tensor in n.inputs[1:]:
            return False
    if readers and all(n.op_type == "MaskedSoftmax" and n.domain.startswith(FUSED_DOMAIN)
                       and len(n.inputs) > 2 and n.inputs[2] == tensor for n in readers):
        return False            # a fused MaskedSoftmax's mask value: never simulated
    node = ctx.producers.get(tensor)
    return node is None or node.op_type not in NO_QUANTIZER_PRODUCERS


def create_activations(ctx: Context, bitwidth: int) -> None:
    """§1.3: graph inputs, then per node (graph order) unseen inputs, then outputs."""
    seen = set()
    for name in ctx.graph.input_names:
        seen.add(name)
        if _gets_activation_quantizer(ctx, name):
            ctx.new(name, "graph_input", None, bitwidth)
    for node in ctx.graph.nodes:
        for name in node.inputs:
            if name and name not in seen:
                seen.add(name)
                if _gets_activation_quantizer(ctx, name):
                    ctx.new(name, "constant", None, bitwidth)
        constant_like = node.op_type in ("Constant", "ConstantOfShape")
        for name in node.outputs:
            if name and name not in seen:
                seen.add(name)
                if _gets_activation_quantizer(ctx, name):
                    ctx.new(name, "constant" if constant_like else "activation", None, bitwidth)


def find_unfused_matmul_add(ctx: Context) -> list:
    """§2.I: (MatMul, Add, bias tensor) for MatMul+Add pairs that fusion did not take."""
    found = []
    for op in ctx.ops:
        if op.op_type != "MatMul" or not any(k == "weight" for k, _ in ctx.op_params.get(op.name, [])):
            continue
        readers = ctx.consumers.get(op.outputs[0], [])
        if len(readers) != 1 or readers[0].op_type != "Add":
            continue
        add = readers[0]
        others = [t for t in add.inputs if t != op.outputs[0]]
        if len(others) != 1 or others[0] not in ctx.graph.params:
            continue
        bias = ctx.qmap.get(others[0])
        if ctx.graph.params[others[0]].ndim != 1 or bias is None or bias.role != "constant":
            continue
        found.append((op, add, others[0]))
    return found
