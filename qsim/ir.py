"""The layer-graph IR: frozen nodes and graphs in topological order.

A :class:`Graph` is a tuple of :class:`Node` (ONNX op type, named inputs and outputs, attributes),
named parameters (initializers, read-only arrays), graph inputs/outputs with dtype and shape, and
the inferred type of every other tensor where ONNX could infer it. Transforms return new graphs
(``dataclasses.replace`` or :meth:`Graph.with_nodes`); nothing mutates a graph in place.

An absent optional input is the empty string ``""``, as in ONNX.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Iterable, Mapping

import numpy as np

from .errors import GraphError

Shape = tuple  # of int (known), str (symbolic) or None (unknown) per dimension


def _frozen_mapping(d: Mapping | None) -> Mapping:
    return MappingProxyType(dict(d or {}))


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.flags.writeable:
        a = a.copy()
        a.flags.writeable = False
    return a


@dataclass(frozen=True)
class Node:
    """One ONNX node. ``attrs`` holds plain Python values (int, float, str, tuples, ndarrays)."""

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    domain: str = ""

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "attrs", _frozen_mapping(self.attrs))

    def describe(self) -> str:
        """``'conv1' (Conv)`` — how errors name a node."""
        return f"node '{self.name}' ({self.op_type})"


@dataclass(frozen=True)
class ValueInfo:
    """Name, NumPy dtype and shape (None if unknown) of a tensor."""

    name: str
    dtype: np.dtype | None = None
    shape: Shape | None = None


@dataclass(frozen=True)
class Graph:
    """A model: nodes in topological order, parameters, graph inputs and outputs."""

    nodes: tuple[Node, ...]
    inputs: tuple[ValueInfo, ...]
    outputs: tuple[ValueInfo, ...]
    params: Mapping[str, np.ndarray] = field(default_factory=dict)
    value_info: Mapping[str, ValueInfo] = field(default_factory=dict)
    opset: int = 17
    name: str = "graph"
    declared_shapes: frozenset = frozenset()  # tensors whose shape the model file itself states
                                              # (its inputs, outputs, value_info), not inferred

    def __post_init__(self):
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "params",
                           _frozen_mapping({k: _readonly(v) for k, v in dict(self.params).items()}))
        object.__setattr__(self, "value_info", _frozen_mapping(self.value_info))

    @functools.cached_property
    def memo(self) -> dict:
        """Values derived from this graph on first use and kept with it (the executor's run
        plans, :func:`qsim.interpreter.run`). A graph never changes, so they never go stale; a
        transformed graph is a new object with an empty memo. Not a field: not compared."""
        return {}

    # ---- queries -------------------------------------------------------------------------
    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.outputs)

    def producers(self) -> dict[str, Node]:
        """Tensor name → the node that produces it."""
        return {out: n for n in self.nodes for out in n.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        """Tensor name → nodes that read it, in graph order (a node reading it twice counts once)."""
        result: dict[str, list[Node]] = {}
        for n in self.nodes:
            for name in dict.fromkeys(i for i in n.inputs if i):
                result.setdefault(name, []).append(n)
        return result

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise GraphError(f"no node named '{name}' in graph '{self.name}'")

    def dtype_of(self, tensor: str) -> np.dtype | None:
        """The element type of a tensor if known (parameter, graph input/output or inferred)."""
        if tensor in self.params:
            return self.params[tensor].dtype
        for v in (*self.inputs, *self.outputs):
            if v.name == tensor and v.dtype is not None:
                return v.dtype
        info = self.value_info.get(tensor)
        return info.dtype if info is not None else None

    def shape_of(self, tensor: str) -> Shape | None:
        if tensor in self.params:
            return tuple(self.params[tensor].shape)
        for v in (*self.inputs, *self.outputs):
            if v.name == tensor and v.shape is not None:
                return v.shape
        info = self.value_info.get(tensor)
        return info.shape if info is not None else None

    # ---- transforms ----------------------------------------------------------------------
    def with_nodes(self, nodes: Iterable[Node], **changes) -> "Graph":
        """A new graph with other nodes (and any other field changed)."""
        return replace(self, nodes=tuple(nodes), **changes)

    # ---- checks ---------------------------------------------------------------------------
    def _depends_on(self, j: int, i: int, producer_index: Mapping[str, int]) -> bool:
        """Whether node ``j`` reads (directly or through other nodes) an output of node ``i``."""
        stack, seen = [j], set()
        while stack:
            k = stack.pop()
            if k == i:
                return True
            if k in seen:
                continue
            seen.add(k)
            stack.extend(producer_index[t] for t in self.nodes[k].inputs if t in producer_index)
        return False

    def validate(self) -> "Graph":
        """Check names and order; raise :class:`GraphError` naming the first offending node.

        Rejects: duplicate node names, a tensor produced twice (or produced and also a graph
        input/parameter), inputs that nothing defines (dangling), nodes out of topological order
        or in a cycle, and graph outputs that nothing defines. Returns the graph itself.
        """
        defined: dict[str, str] = {}
        for v in self.inputs:
            if v.name in defined:
                raise GraphError(f"graph input '{v.name}' is declared twice")
            defined[v.name] = "graph input"
        for p in self.params:
            if p in defined:
                raise GraphError(f"tensor '{p}' is both a graph input and a parameter")
            defined[p] = "parameter"
        producer_index = {o: i for i, n in enumerate(self.nodes) for o in n.outputs if o}
        seen_nodes: set[str] = set()
        for i, n in enumerate(self.nodes):
            if n.name in seen_nodes:
                raise GraphError(f"{n.describe()}: duplicate node name '{n.name}'; "
                                 f"node names must be unique")
            seen_nodes.add(n.name)
            for inp in n.inputs:
                if not inp or inp in defined:
                    continue
                if inp in producer_index:
                    j = producer_index[inp]
                    kind = ("a cycle" if self._depends_on(j, i, producer_index)
                            else "nodes out of topological order")
                    raise GraphError(
                        f"{n.describe()}: input '{inp}' is produced by node "
                        f"'{self.nodes[j].name}' which does not come before it "
                        f"({kind}); the graph must be acyclic and topologically sorted")
                raise GraphError(f"{n.describe()}: input '{inp}' is dangling: no node, graph "
                                 f"input or parameter defines it")
            for out in n.outputs:
                if not out:
                    continue
                if out in defined:
                    raise GraphError(f"{n.describe()}: output '{out}' is already defined "
                                     f"as a {defined[out]}; tensor names must be unique")
                defined[out] = f"output of node '{n.name}'"
        for v in self.outputs:
            if v.name not in defined:
                raise GraphError(f"graph output '{v.name}' is not produced by any node, "
                                 f"graph input or parameter")
        return self
