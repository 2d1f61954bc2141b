"""The output of placement: frozen quantizer specs and the :class:`Placement` that holds them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

from ..errors import GraphError
from ..ir import Graph
from .tables import GRID_PRESERVING


@dataclass(frozen=True, kw_only=True)
class QuantizerSpec:
    """One quantizer object as AIMET creates it (tied tensors share one)."""

    qid: int                        # index in Placement.quantizers; tie members share it
    tensors: tuple                  # tensor names it sits on, in graph order (≥ 2 when tied)
    enabled: bool                   # quantize-dequantize on, statistics collected
    is_param: bool                  # parameter quantizer (weights, biases, BN/LN vectors)
    kind: Optional[str]             # "weight", "bias", "running_mean", ... ; None for activations
    role: str                       # "param", "graph_input", "constant" (constant input or
                                    # Constant/ConstantOfShape output) or "activation" (op output)
    bitwidth: int                   # integer bitwidth
    symmetric: bool                 # use_symmetric_encodings
    strict_symmetric: bool          # use_strict_symmetric
    unsigned_symmetric: bool        # use_unsigned_symmetric
    axis: Optional[int]             # channel axis; None = per-tensor (AIMET reports axis 0 then)
    fixed_range: Optional[tuple]    # (min or None, max or None) from encoding_constraints / ties
    ops: tuple                      # names of the ops reading the tensor(s) (params: their ops)
    reasons: tuple                  # the config rules that decided each flag, and tie notes

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    def describe(self) -> str:
        """One readable line: tensors, flags, rules."""
        state = "enabled " if self.enabled else "disabled"
        what = f"param:{self.kind}" if self.is_param else self.role
        sym = "sym" if self.symmetric else "asym"
        if self.strict_symmetric:
            sym += "+strict"
        if self.unsigned_symmetric:
            sym += "+unsigned"
        axis = "per-tensor" if self.axis is None else f"per-channel axis {self.axis}"
        fixed = ""
        if self.fixed_range is not None:
            lo, hi = self.fixed_range
            fixed = f" fixed [{_num(lo)}, {_num(hi)}]"
        tie = f" tie group of {len(self.tensors)}" if len(self.tensors) > 1 else ""
        return (f"q{self.qid:<3} {state} {' = '.join(self.tensors)} | {what} {self.bitwidth}-bit "
                f"{sym} {axis}{fixed}{tie} | " + "; ".join(self.reasons))


def _num(x) -> str:
    return "free" if x is None else format(x, "g")


@dataclass(frozen=True, kw_only=True)
class Placement:
    """The graph after fusion and every quantizer AIMET would create on it.

    ``quantizer_of`` maps each quantized tensor to its quantizer's ``qid``;
    ``activation_order`` is the sim graph's per-batch statistics order (see :meth:`update_order`).
    """

    graph: Graph                    # the model after §1.1 fusion: what the rules reason on
    quantizers: tuple               # QuantizerSpec, indexed by qid
    quantizer_of: Mapping           # tensor name → qid
    activation_order: tuple         # activation tensors with a quantizer, ORT execution order
    executed_graph: Optional[Graph] = None  # what runs (fused norms unfused again: same nodes
                                            # as aimet's function bodies); None = ``graph``
    bodies: tuple = ()              # node names of executed_graph making each fused norm
                                    # (aimet's function bodies, see norm_fusion.py)
    _producers: dict = field(init=False, repr=False, compare=False)  # tensor → node (cache)

    def __post_init__(self):
        if self.executed_graph is None:
            object.__setattr__(self, "executed_graph", self.graph)
        object.__setattr__(self, "_producers", self.executed_graph.producers())

    def spec(self, tensor: str) -> Optional[QuantizerSpec]:
        """The quantizer on ``tensor`` or None."""
        qid = self.quantizer_of.get(tensor)
        return None if qid is None else self.quantizers[qid]

    def effective_quantizer(self, tensor: str) -> Optional[int]:
        """qid of the quantizer that decides ``tensor``'s grid, or None.

        Its own quantizer if enabled; otherwise walk up through producers that are
        grid-preserving ops or float-to-float Cast, always via input 0, stopping at the first
        enabled quantizer; None as soon as another producer (or no producer) is reached.
        """
        graph = self.executed_graph
        known = (tensor in self._producers or tensor in graph.params
                 or tensor in graph.input_names)
        if not known:
            raise GraphError(f"effective_quantizer: tensor '{tensor}' is not in graph "
                             f"'{graph.name}' (after fusion)")
        return effective_tensor_qid(graph, self._producers, self.spec, tensor)

    def update_order(self) -> tuple:
        """Activation tensors with a quantizer (enabled or not), in the order ONNX Runtime runs
        their quantize ops in each calibration batch (placement.md §3): the post-order of a DFS
        over the sim graph from the sinks, last sink first, producers latest-defined first."""
        return self.activation_order

    def explain(self) -> str:
        """Every quantizer on one line: tensors, state, kind, flags, tie group, deciding rules."""
        enabled_tensors = sum(len(q.tensors) for q in self.quantizers if q.enabled)
        lines = [f"{len(self.quantizers)} quantizer objects on {len(self.quantizer_of)} tensors; "
                 f"{enabled_tensors} enabled quantizers counted per tensor (as AIMET lists them), "
                 f"{sum(1 for q in self.quantizers if q.enabled)} distinct enabled objects"]
        lines += [q.describe() for q in self.quantizers]
        return "\n".join(lines)


def is_float_cast(graph: Graph, node) -> bool:
    """A Cast whose input and output are both floating point."""
    if node.op_type != "Cast":
        return False
    dtypes = (graph.dtype_of(node.inputs[0]), graph.dtype_of(node.outputs[0]))
    return all(d is not None and d.kind == "f" or (d is not None and d.name == "bfloat16")
               for d in dtypes)


def effective_tensor_qid(graph: Graph, producers: dict, spec_of, tensor: str):
    """Shared walk of :meth:`Placement.effective_quantizer` over any ``spec_of(tensor)``."""
    seen = set()
    while tensor not in seen:
        seen.add(tensor)
        q = spec_of(tensor)
        if q is not None and q.enabled:
            return q.qid
        node = producers.get(tensor)
        if node is None or not (node.op_type in GRID_PRESERVING or is_float_cast(graph, node)):
            return None
        tensor = node.inputs[0]
    return None
