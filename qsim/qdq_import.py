"""A QDQ model read back into an FP32 graph and the quantizers its Q/DQ nodes describe
(``QuantizationSimModel.from_qdq``).

A QDQ model (``sim.export_qdq``'s, ONNX Runtime's ``quantize_static``'s, ...) marks every
quantized tensor ``T`` with one of two shapes::

    T ─QuantizeLinear(s, zp)─▶ T_q ─DequantizeLinear(s, zp)─▶ T_dq ─▶ readers    (a "pair")
    W_int (initializer) ─DequantizeLinear(s, zp)─▶ W_dq ─▶ readers               (a constant)

Reading it back:

* a pair is removed, its readers read ``T`` again, and ``T`` gets a quantizer whose encoding is
  ``delta = s``, ``offset = -zp`` (unsigned types) or ``-zp - 2^(bw-1)`` (signed), per tensor or
  per channel along the pair's axis (the 2.0.0 encodings format says the same thing, so the
  encodings go through :func:`qsim.encodings_io.load_encodings_into`);
* a constant becomes the float32 initializer ``W_dq = float32(W_int - zp) ⊗ s`` (ONNX Runtime's
  DequantizeLinear, :func:`qsim.ops.quantized.dequantize_linear`) with a quantizer of the same
  encoding, which gives back ``W_int``'s grid exactly; an int32/uint32 constant (a bias) becomes
  the float32 initializer only (qsim's simulation does not quantize biases);
* a graph output that is a pair's ``T_dq`` keeps its name: ``T``'s producer writes it.

Quantizer flags come from the zero point: symmetric when it is the middle of the grid
(0 for a signed type, ``2^(bw-1)`` for an unsigned one), asymmetric otherwise (a signed grid
with another zero point, such as a strict-symmetric export's ``zp = -1``, is the same grid of
the unsigned type, which the sim quantizes to exactly as ONNX Runtime does). Anything else a
quantized model can hold (QOperator ops such as QLinearConv, Q → DQ → Q chains, a quantized
tensor also read in float, blocked Q/DQ) is refused with a :class:`~qsim.errors.GraphError`
naming the node: ``qsim.load_onnx`` runs those models as they are.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import numpy as np

from .errors import GraphError
from .ir import Graph, Node
from .placement import Placement, QuantizerSpec
from .placement.order import activation_update_order
from .placement.tables import PARAM_SLOTS

#: NumPy dtype name of a Q/DQ integer → (bitwidth, signed)
GRIDS = {"uint4": (4, False), "int4": (4, True), "uint8": (8, False), "int8": (8, True),
         "uint16": (16, False), "int16": (16, True)}
#: dtypes of dequantized constants that are biases: float initializers, no quantizer
BIAS_DTYPES = frozenset({"int32", "uint32"})


@dataclass(frozen=True)
class QdqGrid:
    """One quantized tensor's grid as its Q/DQ nodes give it."""

    tensor: str             # the float tensor of the FP32 graph the quantizer sits on
    scale: np.ndarray       # float32, shape () or (C,)
    zero_point: np.ndarray  # int64, the scale's shape
    dtype: str              # a key of GRIDS
    axis: int | None        # channel axis (normalised), None per tensor
    nodes: tuple            # the Q/DQ node names that describe it

    @property
    def symmetric(self) -> bool:
        """The zero point is the middle of the grid: 0 (signed) or ``2^(bw-1)`` (unsigned)."""
        bw, signed = GRIDS[self.dtype]
        middle = 0 if signed else 2 ** (bw - 1)
        return bool(np.all(self.zero_point == middle))

    def entry(self) -> dict:
        """The grid as a 2.0.0 encodings entry (``output_dtype``, ``y_scale``, ``y_zero_point``,
        ``axis`` when per channel). A signed grid whose zero point is not 0 is written as the
        same grid of the unsigned type (``zp + 2^(bw-1)``): the 2.0.0 format keeps signed types
        for symmetric grids."""
        bw, signed = GRIDS[self.dtype]
        dtype, zp = self.dtype, self.zero_point
        if signed and not self.symmetric:
            dtype, zp = "u" + self.dtype, zp + 2 ** (bw - 1)
        out = {"name": self.tensor, "output_dtype": dtype}
        if self.axis is None:
            out.update(y_scale=float(self.scale), y_zero_point=int(zp))
        else:
            out.update(y_scale=[float(v) for v in self.scale],
                       y_zero_point=[int(v) for v in zp], axis=self.axis)
        return out


@dataclass(frozen=True)
class ReadQdq:
    """What :func:`read_qdq` finds: the FP32 graph, the quantizers on it, their encodings."""

    graph: Graph
    grids: tuple            # QdqGrid, in graph order
    placement: Placement
    encodings: Any          # qsim.encodings_io.EncodingsFile (2.0.0)

    @property
    def param_bitwidth(self) -> int:
        return _most_common([GRIDS[g.dtype][0] for g in self.grids if g.tensor in self.graph.params])

    @property
    def activation_bitwidth(self) -> int:
        return _most_common([GRIDS[g.dtype][0] for g in self.grids
                             if g.tensor not in self.graph.params])


def _most_common(values: list) -> int:
    return collections.Counter(values).most_common(1)[0][0] if values else 8


def _constant(graph: Graph, node: Node, index: int, what: str):
    """Input ``index`` of a Q/DQ node as an initializer value (None when the input is absent)."""
    if index >= len(node.inputs) or not node.inputs[index]:
        return None
    name = node.inputs[index]
    if name not in graph.params:
        raise GraphError(f"node '{node.name}' ({node.op_type}): {what} '{name}' is computed in "
                         f"the graph; from_qdq needs it as an initializer")
    return np.asarray(graph.params[name])


def _grid_of(graph: Graph, node: Node, data_shape) -> tuple:
    """``(scale, zero point, dtype name, axis)`` of a QuantizeLinear / DequantizeLinear node."""
    if int(node.attrs.get("block_size", 0)):
        raise GraphError(f"node '{node.name}' ({node.op_type}): blocked quantization "
                         f"(block_size={node.attrs['block_size']}) has no qsim quantizer; use "
                         f"per-tensor or per-axis Q/DQ")
    scale = _constant(graph, node, 1, "the scale")
    if scale.dtype != np.float32:
        raise GraphError(f"node '{node.name}' ({node.op_type}): scale '{node.inputs[1]}' is "
                         f"{scale.dtype}; from_qdq reads float32 scales")
    zp = _constant(graph, node, 2, "the zero point")
    if zp is not None:
        dtype = zp.dtype.name
    elif node.op_type == "DequantizeLinear":
        source = node.inputs[0]
        dtype = np.dtype(graph.params[source].dtype if source in graph.params
                         else graph.dtype_of(source) or np.uint8).name
    else:
        dtype = {0: "uint8", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 21: "uint4",
                 22: "int4"}.get(int(node.attrs.get("output_dtype", 0)), "?")
    if zp is None:
        zp = np.zeros(scale.shape, np.int64)
    if scale.ndim > 1 or zp.shape != scale.shape:
        raise GraphError(f"node '{node.name}' ({node.op_type}): scale {list(scale.shape)} and "
                         f"zero point {list(zp.shape)} must both be scalars or 1-D of one length")
    per_axis = scale.size > 1
    axis = None
    if per_axis:
        rank = len(data_shape) if data_shape is not None else None
        axis = int(node.attrs.get("axis", 1))
        if rank is not None:
            if not -rank <= axis < rank:
                raise GraphError(f"node '{node.name}' ({node.op_type}): axis={axis} is out of "
                                 f"range for a tensor of rank {rank}")
            axis %= rank
    else:
        scale, zp = scale.reshape(()), zp.reshape(())
    return scale, zp.astype(np.int64), dtype, axis


def _same_grid(a: tuple, b: tuple) -> bool:
    return (a[2] == b[2] and a[3] == b[3] and np.array_equal(a[0], b[0])
            and np.array_equal(a[1], b[1]))


def _dequantized(graph: Graph, node: Node) -> np.ndarray:
    """ONNX Runtime's DequantizeLinear of a constant (float32)."""
    from .ops.quantized import dequantize_linear
    inputs = [graph.params[i] if i else None for i in node.inputs]
    return np.asarray(dequantize_linear(*inputs, **dict(node.attrs)))


def strip_qdq(graph: Graph) -> tuple[Graph, tuple]:
    """The FP32 graph without the Q/DQ nodes, and the :class:`QdqGrid` of every quantized
    tensor (see the module docstring for the rules and what is refused)."""
    producers, consumers = graph.producers(), graph.consumers()
    outputs = set(graph.output_names)
    params = dict(graph.params)
    removed: set[str] = set()
    renamed: dict[str, str] = {}        # a DQ's output → the float tensor its readers read now
    grids: dict[str, QdqGrid] = {}
    for node in graph.nodes:
        if node.op_type != "DequantizeLinear":
            continue
        if node.domain not in ("", "ai.onnx"):
            raise GraphError(f"node '{node.name}': DequantizeLinear of domain '{node.domain}' "
                             f"is not read by from_qdq; use the ONNX domain")
        source, out = node.inputs[0], node.outputs[0]
        if source in graph.params:                                  # a quantized constant
            value = np.asarray(graph.params[source])
            dtype = value.dtype.name
            params[out] = _dequantized(graph, node)
            removed.add(node.name)
            if dtype in BIAS_DTYPES:
                continue
            if dtype not in GRIDS:
                raise GraphError(f"node '{node.name}': initializer '{source}' has type {dtype}; "
                                 f"from_qdq reads {sorted(GRIDS)} (and int32 biases)")
            scale, zp, _, axis = _grid_of(graph, node, value.shape)
            grids[out] = QdqGrid(out, scale, zp, dtype, axis, (node.name,))
            continue
        quantize = producers.get(source)
        if quantize is None or quantize.op_type != "QuantizeLinear":
            what = "a graph input" if quantize is None else f"node '{quantize.name}' " \
                                                             f"({quantize.op_type})"
            raise GraphError(f"node '{node.name}' (DequantizeLinear) reads '{source}' from "
                             f"{what}, not from a QuantizeLinear or an integer initializer: this "
                             f"is not a QDQ model from_qdq can read (run it with qsim.load_onnx)")
        tensor = quantize.inputs[0]
        shape = graph.params[tensor].shape if tensor in graph.params else graph.shape_of(tensor)
        grid = _grid_of(graph, quantize, shape)
        if not _same_grid(grid, _grid_of(graph, node, shape)):
            raise GraphError(f"nodes '{quantize.name}' and '{node.name}': the QuantizeLinear and "
                             f"its DequantizeLinear have different scales, zero points, types or "
                             f"axes; from_qdq needs matching pairs")
        if tensor in producers and producers[tensor].op_type == "DequantizeLinear":
            raise GraphError(f"node '{quantize.name}' quantizes '{tensor}', the output of "
                             f"DequantizeLinear '{producers[tensor].name}' (a requantization "
                             f"chain); from_qdq reads one Q/DQ pair per tensor")
        others = [c.name for c in consumers.get(tensor, []) if c.op_type != "QuantizeLinear"]
        if others or tensor in outputs:
            where = f"node(s) {others}" if others else "the graph's outputs"
            raise GraphError(f"tensor '{tensor}' is quantized by '{quantize.name}' but also read "
                             f"in float by {where}; a qsim quantizer applies to every reader")
        readers = consumers.get(source, [])
        if source in outputs or any(c.op_type != "DequantizeLinear" for c in readers):
            bad = [c.name for c in readers if c.op_type != "DequantizeLinear"]
            raise GraphError(f"the integer tensor '{source}' of QuantizeLinear '{quantize.name}' "
                             f"is read by {bad or 'the graph outputs'}, not only by "
                             f"DequantizeLinear: this is a QOperator model (run it with "
                             f"qsim.load_onnx)")
        if grid[2] not in GRIDS:
            raise GraphError(f"node '{quantize.name}' quantizes to {grid[2]}; from_qdq reads "
                             f"{sorted(GRIDS)}")
        removed |= {node.name, quantize.name}
        renamed[out] = tensor
        previous = grids.get(tensor)
        new = QdqGrid(tensor, grid[0], grid[1], grid[2], grid[3], (quantize.name, node.name))
        if previous is not None and not _same_grid(
                (previous.scale, previous.zero_point, previous.dtype, previous.axis), grid):
            raise GraphError(f"tensor '{tensor}' has Q/DQ pairs with different grids "
                             f"({previous.nodes} and {new.nodes}); a qsim quantizer has one")
        grids[tensor] = previous or new
    for node in graph.nodes:
        if node.op_type == "QuantizeLinear" and node.name not in removed:
            raise GraphError(f"node '{node.name}' (QuantizeLinear) is not followed by a "
                             f"DequantizeLinear: this is a QOperator model (run it with "
                             f"qsim.load_onnx)")
    return _rewired(graph, params, removed, renamed, grids)


def _rewired(graph: Graph, params: dict, removed: set, renamed: dict, grids: dict) -> tuple:
    """The graph without the ``removed`` nodes, readers of a DQ output reading its float tensor;
    a DQ output that is a graph output is written by the float tensor's producer instead."""
    keep_name = {renamed[o]: o for o in graph.output_names if o in renamed}
    for tensor, name in keep_name.items():
        if tensor in graph.params or tensor in graph.input_names:
            raise GraphError(f"graph output '{name}' is the Q/DQ of '{tensor}', an input or "
                             f"initializer; from_qdq needs an op between them")
    final = {d: keep_name.get(t, t) for d, t in renamed.items()}
    final.update(keep_name)

    def name(t: str) -> str:
        return final.get(t, t)

    nodes = [replace(n, inputs=tuple(name(i) for i in n.inputs),
                     outputs=tuple(name(o) for o in n.outputs))
             for n in graph.nodes if n.name not in removed]
    used = {i for n in nodes for i in n.inputs} | set(graph.output_names)
    kept = {k: v for k, v in params.items() if k in used}
    value_info = {k: v for k, v in graph.value_info.items() if k in used or k in final}
    stripped = graph.with_nodes(nodes, params=kept, value_info=value_info)
    moved = tuple(replace(g, tensor=name(g.tensor)) for g in grids.values())
    order = {t: i for i, t in enumerate(list(stripped.input_names) + list(kept)
                                        + [o for n in nodes for o in n.outputs])}
    return stripped.validate(), tuple(sorted(moved, key=lambda g: order.get(g.tensor, -1)))


def _spec(graph: Graph, qid: int, grid: QdqGrid, readers: list) -> QuantizerSpec:
    """The quantizer of one grid: role from where the tensor comes from, kind from the slot of
    its first weight-reading op (placement's PARAM_SLOTS)."""
    tensor = grid.tensor
    kind = None
    if tensor in graph.params:
        slots = [PARAM_SLOTS.get(n.op_type, {}).get(n.inputs.index(tensor)) for n in readers]
        kind = next((k for k in slots if k is not None), None)
    role = ("param" if kind is not None else "constant" if tensor in graph.params
            else "graph_input" if tensor in graph.input_names else "activation")
    bw, signed = GRIDS[grid.dtype]
    return QuantizerSpec(qid=qid, tensors=(tensor,), enabled=True, is_param=role == "param",
                         kind=kind, role=role, bitwidth=bw, symmetric=grid.symmetric,
                         strict_symmetric=False, unsigned_symmetric=False, axis=grid.axis,
                         fixed_range=None, ops=tuple(n.name for n in readers),
                         reasons=(f"Q/DQ {' → '.join(grid.nodes)}: {grid.dtype}, zero point "
                                  f"{'symmetric' if grid.symmetric else 'asymmetric'}",))


def read_qdq(model: Any) -> ReadQdq:
    """Load a QDQ model (path, ``onnx.ModelProto`` or :class:`~qsim.ir.Graph`) and read it back:
    the FP32 graph, one :class:`QdqGrid` and quantizer per quantized tensor, and the 2.0.0
    encodings of those quantizers."""
    from .encodings_io import parse_encodings
    from .onnx_io import load_onnx
    graph = model if isinstance(model, Graph) else load_onnx(model)
    stripped, grids = strip_qdq(graph)
    if not grids:
        raise GraphError(f"graph '{graph.name}' has no QuantizeLinear/DequantizeLinear pair and "
                         f"no dequantized integer initializer: it is not a QDQ model")
    consumers = stripped.consumers()
    specs = [_spec(stripped, i, g, consumers.get(g.tensor, [])) for i, g in enumerate(grids)]
    roles = {s.tensors[0]: s.role for s in specs}
    placement = Placement(graph=stripped, quantizers=tuple(specs),
                          quantizer_of=MappingProxyType({s.tensors[0]: s.qid for s in specs}),
                          activation_order=activation_update_order(stripped, roles))
    encodings = parse_encodings({"version": "2.0.0", "encodings": [g.entry() for g in grids]},
                                source=f"the Q/DQ nodes of graph '{graph.name}'")
    return ReadQdq(graph=stripped, grids=grids, placement=placement, encodings=encodings)
