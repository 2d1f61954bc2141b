"""§1.1: fuse ``MatMul`` + ``Add`` into one ``Gemm`` node before quantizers are created.

Pattern (``MatmulAdd`` in ``supergroup_pass_list``)::

    MatMul(x, W) -> m ; Add(m, b) or Add(b, m) -> y        ⇒   Gemm(x, W, b, transB=0) -> y
    MatMul(x, Transpose(W)) -> m ; Add(m, b) -> y           ⇒   Gemm(x, W, b, transB=1) -> y

with W static and 2-D (Transpose perm [1, 0] or absent), b static and 1-D, and ``m`` read only
by that Add (and not a graph output). The fused node keeps the MatMul's name and position and
has domain ``aimet.supergroup.<k>`` (k = 0, 1, ... in graph order); for every later rule it is a
Gemm. ``y = x @ W + b`` either way, so the FP32 result is unchanged. A Transpose left without
readers is removed; the tensor ``m`` disappears.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..ir import Graph, Node
from .tables import FUSED_DOMAIN


def static_value(graph: Graph, tensor: str, producers: dict) -> Optional[np.ndarray]:
    """The value of a static tensor (initializer or ``Constant`` output), else None."""
    if tensor in graph.params:
        return graph.params[tensor]
    node = producers.get(tensor)
    if node is not None and node.op_type == "Constant" and "value" in node.attrs:
        return np.asarray(node.attrs["value"])
    return None


def _static_weight(graph: Graph, tensor: str, producers: dict, consumers: dict):
    """(W name, transB, Transpose node or None) if ``tensor`` is a static 2-D W or W^T."""
    w = static_value(graph, tensor, producers)
    if w is not None:
        return (tensor, 0, None) if w.ndim == 2 else None
    node = producers.get(tensor)
    if node is None or node.op_type != "Transpose":
        return None
    perm = node.attrs.get("perm")
    w = static_value(graph, node.inputs[0], producers)
    if w is None or w.ndim != 2 or (perm is not None and tuple(perm) != (1, 0)):
        return None
    return node.inputs[0], 1, node


def _match(graph: Graph, mm: Node, producers: dict, consumers: dict):
    """The fused Gemm's pieces for MatMul ``mm``, or None if the pattern does not hold."""
    m = mm.outputs[0]
    readers = consumers.get(m, [])
    if len(readers) != 1 or m in graph.output_names or readers[0].op_type != "Add":
        return None
    add = readers[0]
    if len(add.inputs) != 2 or add.inputs[0] == add.inputs[1]:
        return None
    b_name = add.inputs[1] if add.inputs[0] == m else add.inputs[0]
    b = static_value(graph, b_name, producers)
    if b is None or b.ndim != 1:
        return None
    weight = _static_weight(graph, mm.inputs[1], producers, consumers)
    if weight is None:
        return None
    w_name, trans_b, transpose = weight
    return add, w_name, b_name, trans_b, transpose


def fuse_matmul_add(graph: Graph) -> Graph:
    """Return ``graph`` with every MatmulAdd pattern replaced by one Gemm node (see module doc)."""
    producers, consumers = graph.producers(), graph.consumers()
    replace: dict[str, Node] = {}
    drop: set[str] = set()
    dropped_tensors: set[str] = set()
    count = 0
    for node in graph.nodes:
        if node.op_type != "MatMul" or node.name in drop:
            continue
        found = _match(graph, node, producers, consumers)
        if found is None:
            continue
        add, w_name, b_name, trans_b, transpose = found
        replace[node.name] = Node(name=node.name, op_type="Gemm",
                                  inputs=(node.inputs[0], w_name, b_name),
                                  outputs=add.outputs, attrs={"transB": trans_b},
                                  domain=f"{FUSED_DOMAIN}.{count}")
        count += 1
        drop.add(add.name)
        dropped_tensors.add(node.outputs[0])
        if transpose is not None and len(consumers.get(transpose.outputs[0], [])) == 1 \
                and transpose.outputs[0] not in graph.output_names:
            drop.add(transpose.name)
            dropped_tensors.add(transpose.outputs[0])
    if not replace:
        return graph
    nodes = [replace.get(n.name, n) for n in graph.nodes if n.name not in drop]
    value_info = {k: v for k, v in graph.value_info.items() if k not in dropped_tensors}
    return graph.with_nodes(nodes, value_info=value_info).validate()
