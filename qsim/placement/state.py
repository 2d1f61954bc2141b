"""Working state of one placement run: a mutable record per quantizer and the graph facts.

Local to one ``place_quantizers`` call; frozen into :class:`~qsim.placement.result.Placement` at
the end. Ties make several tensors map to the same :class:`WorkQuantizer`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..errors import ConfigError
from ..ir import Graph, Node
from .fusion import static_value
from .result import is_float_cast
from .tables import FLOAT_DTYPES, GRID_PRESERVING


@dataclass
class WorkQuantizer:
    """A quantizer while placement runs (mutable, local to one ``place_quantizers`` call)."""

    uid: int                       # creation order
    tensor: str                    # the tensor it was created for
    role: str                      # "param", "graph_input", "constant", "activation"
    kind: Optional[str]            # parameter kind or None
    bitwidth: int
    enabled: bool = False
    symmetric: bool = False
    strict: bool = False
    unsigned: bool = False
    axis: Optional[int] = None
    fixed: Optional[tuple] = None
    why: dict = field(default_factory=dict)    # flag → the rule that last set it
    notes: list = field(default_factory=list)  # tie notes

    def set(self, flag: str, value, rule: str) -> None:
        setattr(self, flag, value)
        self.why[flag] = f"{flag}={value} by {rule}"


@dataclass
class Context:
    """Graph facts and the quantizers created on it."""

    graph: Graph
    ops: list                                    # every node except Constant, graph order
    producers: dict
    consumers: dict                              # tensor → consuming nodes
    qmap: dict = field(default_factory=dict)     # tensor → WorkQuantizer (ties make entries share one)
    created: list = field(default_factory=list)  # every WorkQuantizer, creation order
    op_params: dict = field(default_factory=dict)  # op name → [(kind, tensor)]
    transposed: set = field(default_factory=set)   # MatMul weights read through a Transpose
    origin: dict = field(default_factory=dict)     # tensor → role it was created with (ties
                                                   # share objects, never change this)

    def new(self, tensor: str, role: str, kind: Optional[str], bitwidth: int) -> WorkQuantizer:
        q = WorkQuantizer(uid=len(self.created), tensor=tensor, role=role, kind=kind, bitwidth=bitwidth)
        self.created.append(q)
        self.qmap[tensor] = q
        self.origin[tensor] = role
        return q

    def acts(self, tensors) -> list:
        """Activation quantizers (not params) of ``tensors``, each once."""
        return [self.qmap[t] for t in dict.fromkeys(tensors)
                if t and t in self.qmap and self.qmap[t].role != "param"]

    def ins(self, op: Node) -> list:
        return self.acts(op.inputs)

    def outs(self, op: Node) -> list:
        return self.acts(op.outputs)

    def params_of(self, op: Node) -> list:
        return [(kind, self.qmap[t]) for kind, t in self.op_params.get(op.name, [])]

    def consuming_ops(self, op: Node) -> list:
        """Distinct ops reading any output of ``op`` (a graph output is not a consumer)."""
        found = {}
        for out in op.outputs:
            for n in self.consumers.get(out, []):
                found[n.name] = n
        return list(found.values())

    def readers(self, tensor: str) -> int:
        return len(self.consumers.get(tensor, []))

    def weight(self, op: Node) -> Optional[np.ndarray]:
        if len(op.inputs) < 2 or not op.inputs[1]:
            return None
        return static_value(self.graph, op.inputs[1], self.producers)

    def effective_path(self, tensor: str) -> tuple:
        """(source tensor with an enabled quantizer or None, tensors walked from ``tensor``)."""
        path = []
        while tensor not in path:
            path.append(tensor)
            q = self.qmap.get(tensor)
            if q is not None and q.enabled:
                return tensor, path
            node = self.producers.get(tensor)
            if node is None or not (node.op_type in GRID_PRESERVING
                                    or is_float_cast(self.graph, node)):
                return None, path
            tensor = node.inputs[0]
        return None, path

    def effective(self, tensor: str) -> Optional[WorkQuantizer]:
        source, _ = self.effective_path(tensor)
        return None if source is None else self.qmap[source]


class StageLog:
    """Remembers who set which activation flag in one stage, to reject conflicting settings."""

    def __init__(self, stage: str):
        self.stage = stage
        self.seen: dict = {}

    def apply(self, q: WorkQuantizer, flag: str, value, op: Node, rule: str) -> None:
        key = (q.uid, flag)
        if key in self.seen and self.seen[key][0] != value:
            old_value, old_op, old_rule = self.seen[key]
            raise ConfigError(
                f"stage {self.stage}: the activation quantizer on '{q.tensor}' gets "
                f"{flag}={old_value} from {old_op.describe()} ({old_rule}) and {flag}={value} "
                f"from {op.describe()} ({rule}); AIMET 2.42 rejects such a configuration "
                f"(AssertionError). Make the two op_type entries agree on this tensor.",
                [(rule, f"conflicts with {old_rule} on '{q.tensor}'")])
        self.seen[key] = (value, op, rule)
        q.set(flag, value, rule)


def is_float(graph: Graph, tensor: str) -> bool:
    dtype = graph.dtype_of(tensor)
    return dtype is None or np.dtype(dtype).name in FLOAT_DTYPES
