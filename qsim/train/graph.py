"""A graph with aimet-torch's learnable quantizers inserted, and one training forward/backward.

Every quantized tensor ``T`` gets a node ``QatQuantize(T, "T.min", "T.max") → "T.qat"`` (the
learnable ``θmin``, ``θmax`` are graph parameters named ``"<tensor>.min"``/``"<tensor>.max"``)
and its consumers read ``"T.qat"``. ``QatQuantize`` runs the training path of
:mod:`qsim.quant.training` and its VJP gives ``dx``, ``dθmin``, ``dθmax``; ``QatQuantizeFrozen``
(ranges frozen) runs the frozen path and passes only ``dx`` (qat.md §3–§4).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from ..errors import QsimError
from ..grad.backward import backward, forward
from ..grad.blas import blas_threads, run_all
from ..grad.ops import TRAINING_FORWARD
from ..grad.registry import Vjp
from ..ir import Graph, Node, ValueInfo
from ..quant import training as tr


@dataclass(frozen=True)
class Slot:
    """One learnable quantizer: the tensor it quantizes and its grid."""

    tensor: str
    grid: tr.Grid
    key: str = ""   # the range's parameter name base (tied tensors share one); default: tensor

    @property
    def range_base(self) -> str:
        return self.key or self.tensor


def _parts(x) -> int:
    """Channel ranges for a quantizer kernel on threads: two from 2^18 elements on."""
    return 2 if np.size(x) >= 1 << 18 else 1


def _qat_quantize(x, tmin, tmax, *, qmin, qmax, symmetric):
    grid = tr.Grid(qmin, qmax, bool(symmetric))
    return tr.quantize_train(x, tr.training_encoding(tmin, tmax, grid), grid, run=run_all,
                             parts=_parts(x))


def _qat_quantize_frozen(x, tmin, tmax, *, qmin, qmax, symmetric):
    grid = tr.Grid(qmin, qmax, bool(symmetric))
    return tr.quantize_frozen(x, tr.training_encoding(tmin, tmax, grid), grid)


def _qat_vjp(gy, *, inputs, outputs, qmin, qmax, symmetric):
    """dx (straight-through), dθmin, dθmax of qat.md §4."""
    x, tmin, tmax = inputs
    grid = tr.Grid(qmin, qmax, bool(symmetric))
    enc = tr.training_encoding(tmin, tmax, grid)
    return tr.quantize_train_backward(x, gy, tmin, enc, grid, run=run_all, parts=_parts(x))


def _qat_frozen_vjp(gy, *, inputs, outputs, qmin, qmax, symmetric):
    """dx = g·m' of the frozen path; the frozen ranges get no gradient."""
    x, tmin, tmax = inputs
    grid = tr.Grid(qmin, qmax, bool(symmetric))
    return tr.quantize_frozen_backward(x, gy, tr.training_encoding(tmin, tmax, grid), grid), \
        None, None


#: the quantizer ops and their backwards, passed to qsim.grad's forward/backward
QAT_OPS: Mapping[str, Callable] = {"QatQuantize": _qat_quantize,
                                   "QatQuantizeFrozen": _qat_quantize_frozen,
                                   **TRAINING_FORWARD}
QAT_VJPS: Mapping[str, Vjp] = {
    "QatQuantize": Vjp(fn=_qat_vjp, saves=frozenset({"inputs"}), multi=False),
    "QatQuantizeFrozen": Vjp(fn=_qat_frozen_vjp, saves=frozenset({"inputs"}), multi=False)}


def range_names(tensor: str) -> tuple[str, str]:
    """The parameter names of a quantizer's learnable range: ``"<tensor>.min"``, ``"<tensor>.max"``."""
    return f"{tensor}.min", f"{tensor}.max"


def training_graph(graph: Graph, slots: tuple[Slot, ...], ranges: Mapping[str, np.ndarray], *,
                   frozen: bool) -> Graph:
    """``graph`` with a quantizer node after every slot's tensor (qat.md §6: input quantizer,
    weight quantizer, op, output quantizer). ``ranges`` holds ``"<tensor>.min"``/``".max"``.
    A graph output that is quantized keeps its name (the unquantized value is renamed)."""
    op = "QatQuantizeFrozen" if frozen else "QatQuantize"
    by_tensor = {s.tensor: s for s in slots}
    known = set(graph.params) | set(graph.input_names) | {o for n in graph.nodes for o in n.outputs}
    unknown = sorted(set(by_tensor) - known)
    if unknown:
        raise QsimError(f"quantized tensor(s) {unknown} are not in graph '{graph.name}'")
    outs = set(graph.output_names)
    raw = {t: (f"{t}.fp" if t in outs else t) for t in by_tensor}
    qname = {t: (t if t in outs else f"{t}.qat") for t in by_tensor}

    def qnode(t):
        s = by_tensor[t]
        mn, mx = range_names(s.range_base)
        return Node(f"{t}.quantizer", op, (raw[t], mn, mx), (qname[t],),
                    {"qmin": s.grid.qmin, "qmax": s.grid.qmax, "symmetric": int(s.grid.symmetric)})

    # a quantized parameter's or graph input's quantizer goes right before its first consumer, so
    # the reverse sweep runs its VJP right after the consumers' and frees their gradient at once
    pending = {t for t in by_tensor if t in graph.params or t in graph.input_names}
    nodes = []
    for n in graph.nodes:
        for i in n.inputs:
            if i in pending:
                pending.discard(i)
                nodes.append(qnode(i))
        ins = tuple(qname.get(i, i) if i else i for i in n.inputs)
        outs_n = tuple(raw.get(o, o) for o in n.outputs)
        nodes.append(dataclasses.replace(n, inputs=ins, outputs=outs_n))
        nodes.extend(qnode(o) for o in n.outputs if o in by_tensor)
    nodes.extend(qnode(t) for t in by_tensor if t in pending)   # quantized but never read
    params = dict(graph.params)
    for s in slots:
        for name in range_names(s.range_base):
            params[name] = np.asarray(ranges[name], np.float32)
    return dataclasses.replace(graph, nodes=tuple(nodes), params=params)


def value_and_grad(tgraph: Graph, params: Mapping[str, np.ndarray], feeds, loss_fn, *,
                   trainable) -> tuple[float, dict, dict]:
    """One training forward and backward: ``(loss, outputs, {name: ∂loss/∂name})`` for the names
    in ``trainable``. ``loss_fn(outputs) -> (loss, {output: ∂loss/∂output})``. Only the
    values each VJP needs are kept, and each is dropped once used (qsim.grad.backward)."""
    trainable = list(trainable)
    with blas_threads(1):     # see qsim.grad.blas: robust on shared cores
        tape = forward(tgraph, feeds, params=params, ops=QAT_OPS, vjps=QAT_VJPS)
        loss, seeds = loss_fn(tape.outputs)
        grads = backward(tgraph, tape, seeds, vjps=QAT_VJPS, wrt=trainable, consume=True)
    out = {}
    for name in trainable:
        g = grads.get(name)
        shape = np.shape(params.get(name, tgraph.params.get(name)))
        out[name] = np.zeros(shape, np.float32) if g is None else np.asarray(g, np.float32).reshape(shape)
    return loss, dict(tape.outputs), out
