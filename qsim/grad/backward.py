"""Training forward and reverse sweep over a :class:`~qsim.ir.Graph`.

``forward(graph, feeds)`` runs the nodes in order (the same op functions as
:func:`qsim.interpreter.run`) and keeps, per node, only what its VJP declares it needs
(``saves``); every other intermediate is dropped after its last forward use.
``backward(graph, tape, seeds, wrt=...)`` walks the nodes in reverse, calls each VJP, and
accumulates ∂L/∂t for every tensor t (float32; fan-out sums), dropping each gradient and (with
``consume=True``) each saved value as soon as nothing later in the sweep needs it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import numpy as np

from ..errors import GraphError, QsimError
from ..interpreter import call_op, check_feeds
from ..ir import Graph
from .registry import VJPS, Vjp


def missing_backward(graph: Graph, vjps: Mapping[str, Vjp] | None = None) -> list[str]:
    """Descriptions of the nodes whose op type has no registered VJP (in graph order)."""
    table = {**VJPS, **(vjps or {})}
    return [node.describe() for node in graph.nodes if node.op_type not in table]


def check_backward_supported(graph: Graph, vjps: Mapping[str, Vjp] | None = None) -> None:
    """Raise one GraphError naming every node that has no backward (before any training)."""
    missing = missing_backward(graph, vjps)
    if missing:
        known = ", ".join(sorted({**VJPS, **(vjps or {})}))
        raise GraphError(f"{len(missing)} node(s) have no backward, so graph '{graph.name}' "
                         f"cannot be trained: {'; '.join(missing)} (ops with a backward: {known})")


@dataclass(frozen=True)
class Tape:
    """What the reverse sweep needs: per node index, the saved inputs and/or outputs (None where
    not saved), plus the forward's requested outputs. ``backward(..., consume=True)`` empties
    ``saved`` as it goes."""

    saved: dict[int, tuple]
    outputs: Mapping[str, np.ndarray]


def forward(graph: Graph, feeds: Mapping[str, np.ndarray], *,
            params: Mapping[str, np.ndarray] | None = None,
            ops: Mapping[str, Callable] | None = None,
            vjps: Mapping[str, Vjp] | None = None,
            outputs: Iterable[str] | None = None) -> Tape:
    """Run ``graph`` (``params`` override its initializers) and record a :class:`Tape`."""
    table = {**VJPS, **(vjps or {})}
    check_backward_supported(graph, vjps)
    wanted = list(graph.output_names if outputs is None else outputs)
    env: dict[str, np.ndarray] = dict(graph.params)
    env.update(params or {})
    env.update(check_feeds(graph, feeds))
    last = {}
    for i, node in enumerate(graph.nodes):
        for name in node.inputs:
            last[name] = i
    saved = {}
    for i, node in enumerate(graph.nodes):
        args = [env[n] if n else None for n in node.inputs]
        results = call_op(node, list(args), ops, frozenset(), opset=graph.opset)
        for name, value in zip(node.outputs, results):
            if name:
                env[name] = value
        saves = table[node.op_type].saves
        saved[i] = (tuple(args) if "inputs" in saves else None,
                    tuple(results) if "outputs" in saves else None)
        for name in node.inputs:
            if name and last.get(name) == i and name not in wanted and name not in graph.params:
                env.pop(name, None)
    return Tape(saved=saved, outputs={n: env[n] for n in wanted})


def backward(graph: Graph, tape: Tape, seeds: Mapping[str, np.ndarray], *,
             vjps: Mapping[str, Vjp] | None = None, wrt: Iterable[str] | None = None,
             consume: bool = False) -> dict[str, np.ndarray]:
    """``{tensor: ∂L/∂tensor}`` for every tensor reached from ``seeds`` (``{output: ∂L/∂output}``),
    graph inputs and parameters included; with ``wrt``, only for those names, and every other
    gradient is dropped as soon as the VJP of the node producing it has run (memory: at any time
    only the gradients still to be propagated are alive). ``consume=True`` also drops each
    node's saved values from ``tape`` once its VJP has run (the tape cannot be reused)."""
    table = {**VJPS, **(vjps or {})}
    keep = None if wrt is None else set(wrt)
    grads: dict[str, np.ndarray] = {k: np.asarray(v, np.float32) for k, v in seeds.items()}
    saved = tape.saved
    for i in range(len(graph.nodes) - 1, -1, -1):
        node = graph.nodes[i]
        ins, outs = saved.pop(i) if consume else saved[i]
        if not any(o in grads for o in node.outputs if o):
            continue
        vjp = table[node.op_type]
        attrs = dict(node.attrs)
        if vjp.multi:
            gys = tuple(grads.get(o) for o in node.outputs)
            res = vjp.fn(gys, inputs=ins, outputs=outs, **attrs)
        else:
            gy = grads.get(node.outputs[0])
            if gy is None:
                continue
            try:
                res = vjp.fn(gy, inputs=ins, outputs=outs, **attrs)
            except QsimError as exc:
                raise type(exc)(f"{node.describe()}: {exc}") from None
            del gy
        del ins, outs
        if keep is not None:
            for o in node.outputs:
                if o not in keep:
                    grads.pop(o, None)
        for name, g in zip(node.inputs, res):
            if not name or g is None:
                continue
            grads[name] = g if name not in grads else grads[name] + g
        del res
    if keep is not None:
        grads = {k: v for k, v in grads.items() if k in keep}
    return grads
