"""The order in which ONNX Runtime runs the activation quantize ops of the sim graph (§3).

The sim graph: first one quantize node per graph input, parameter and constant-input initializer
(in that order), then the model's nodes in graph order, each followed by one quantize node per
output that has a quantizer. A consumer reads the quantize node's output instead of the tensor.
ORT (default options) runs the post-order of a depth-first search that starts from the sink
nodes (last one first) and, at each node, descends into its producers latest-defined first.
"""
from __future__ import annotations

from typing import Mapping

from ..ir import Graph


def _sim_nodes(graph: Graph, roles: Mapping[str, str]) -> tuple:
    """(entries, index of each quantize node, index of each model node).

    An entry is ``("q", tensor)`` or ``("n", node)``.
    """
    producers = graph.producers()
    first = [t for t in roles if roles[t] == "graph_input"]
    first += [t for t in roles if roles[t] == "param" and t not in producers]
    first += [t for t in roles if roles[t] == "constant" and t not in producers]
    entries = [("q", t) for t in first]
    for node in graph.nodes:
        entries.append(("n", node))
        entries += [("q", t) for t in node.outputs if t in roles]
    q_index = {e[1]: i for i, e in enumerate(entries) if e[0] == "q"}
    n_index = {e[1].name: i for i, e in enumerate(entries) if e[0] == "n"}
    return entries, q_index, n_index


def activation_update_order(graph: Graph, roles: Mapping[str, str]) -> tuple:
    """Activation tensors (role ≠ "param") with a quantizer, in ORT's execution order.

    ``roles``: tensor → role of its quantizer ("param", "graph_input", "constant",
    "activation"), in quantizer creation order.
    """
    entries, q_index, n_index = _sim_nodes(graph, roles)
    producers = graph.producers()

    def source(tensor: str):
        if tensor in q_index:
            return q_index[tensor]
        node = producers.get(tensor)
        return None if node is None else n_index[node.name]

    inputs = []
    for kind, item in entries:
        if kind == "q":
            node = producers.get(item)
            inputs.append([] if node is None else [n_index[node.name]])
        else:
            inputs.append(sorted({s for t in item.inputs if t and (s := source(t)) is not None}))
    has_consumer = {s for ins in inputs for s in ins}
    sinks = [i for i in range(len(entries)) if i not in has_consumer]

    visited, post = set(), []
    stack = [(i, False) for i in sinks]  # popped last first: the last sink starts
    while stack:
        i, leaving = stack.pop()
        if leaving:
            post.append(i)
            continue
        if i in visited:
            continue
        visited.add(i)
        stack.append((i, True))
        stack += [(s, False) for s in inputs[i] if s not in visited]  # latest-defined popped first
    return tuple(entries[i][1] for i in post
                 if entries[i][0] == "q" and roles[entries[i][1]] != "param")
