"""ONNX ModelProto ⇄ :class:`~qsim.ir.Graph`. ``onnx`` is imported lazily (an optional extra).

``load_onnx(path | ModelProto)`` turns initializers into parameters, keeps ``Constant`` nodes as
nodes, expands ONNX ops that qsim has no kernel for but that ONNX defines as a function
(Attention, FlexAttention, ...) into their function bodies, infers tensor
types with ONNX shape inference where it can, sorts nodes topologically and reports every
unsupported op or attribute at once (:class:`UnknownOpError`) before anything runs. Sequence,
optional and map tensors are refused with an error naming the tensor.
``to_onnx(graph)`` writes a graph back (export uses it).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import GraphError, UnknownOpError
from .interpreter import unsupported
from .ir import Graph, Node, ValueInfo


def _onnx():
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise GraphError("reading ONNX needs the 'onnx' package: pip install 'qsim-ref[onnx]'") from exc
    return onnx


def load_onnx(model: Any, *, check: bool = True) -> Graph:
    """Load an ONNX model (a path or a ``ModelProto``) into a validated :class:`Graph`.

    With ``check`` (default) every node is checked against the op library and an
    :class:`UnknownOpError` lists all unsupported ops/attributes at once.
    """
    onnx = _onnx()
    proto = _read_model(model) if isinstance(model, (str, os.PathLike)) else model
    if not isinstance(proto, onnx.ModelProto):
        raise GraphError(f"load_onnx expects a file path or an onnx.ModelProto, got {type(model).__name__}")
    _refuse_non_tensors(proto, None)
    proto = _expand_functions(proto)
    inferred = _infer_types(proto)
    _refuse_non_tensors(proto, inferred)
    graph = _graph_from_proto(proto, inferred)
    graph.validate()
    # Attribute kinds qsim cannot represent (sub-graphs, ...) are reported even without
    # ``check``, in the same error as unsupported ops so the user sees every problem at once.
    problems = _unsupported_attribute_kinds(graph) + (unsupported(graph) if check else [])
    if problems:
        raise UnknownOpError(f"graph '{graph.name}' has {len(problems)} unsupported "
                             f"op(s)/attribute(s):\n  " + "\n  ".join(problems))
    return graph


#: domain of the model-local functions through which ONNX function bodies are inlined
_EXPAND_DOMAIN = "qsim.expand"
#: function bodies may call other function ops: expand at most this deep
_EXPAND_DEPTH = 4


def _function_body(node, schema, types: dict):
    """The FunctionProto ONNX defines for ``node`` (None if it defines none or the
    context-dependent body needs input types that shape inference did not give)."""
    onnx = _onnx()
    if schema.has_function:
        return schema.function_body
    if schema.has_context_dependent_function:
        if any(i and i not in types for i in node.input):
            return None
        try:
            body = schema.get_context_dependent_function(
                node.SerializeToString(),
                [types[i].SerializeToString() if i else onnx.TypeProto().SerializeToString()
                 for i in node.input])
        except Exception:  # the schema rejects this node: leave it to the support check
            return None
        f = onnx.FunctionProto()
        f.ParseFromString(body)
        return f
    return None


def _expand_functions(proto):
    """Inline ONNX's function body for every default-domain node whose op qsim has no kernel
    for (and ONNX defines as a function at the model's opset), as ONNX Runtime does. The body
    becomes a model-local function that ``onnx.inliner`` inlines (renaming its tensors and
    binding its attribute references); bodies that call other function ops expand again."""
    from .ops import OPS
    onnx = _onnx()
    from onnx import inliner
    opset = _opset(proto)
    for depth in range(_EXPAND_DEPTH):
        todo = [i for i, n in enumerate(proto.graph.node)
                if n.domain in ("", "ai.onnx") and n.op_type not in OPS]
        if not todo:
            return proto
        inferred = _infer_types(proto)
        types = {v.name: v.type for v in (*inferred.graph.input, *inferred.graph.value_info,
                                           *inferred.graph.output)}
        model = onnx.ModelProto()
        model.CopyFrom(proto)
        expanded = 0
        for i in todo:
            node = model.graph.node[i]
            try:
                schema = onnx.defs.get_schema(node.op_type, opset, "")
            except Exception:  # not an ONNX op at this opset: the support check reports it
                continue
            body = _function_body(node, schema, types)
            if body is None:
                continue
            f = onnx.FunctionProto()
            f.CopyFrom(body)
            f.domain, f.name = _EXPAND_DOMAIN, f"{node.op_type}_{depth}_{i}"
            node.domain, node.op_type = _EXPAND_DOMAIN, f.name
            model.functions.append(f)
            expanded += 1
        if not expanded:
            return proto
        model.opset_import.append(onnx.helper.make_opsetid(_EXPAND_DOMAIN, 1))
        try:
            proto = inliner.inline_local_functions(model)
        except Exception as exc:
            raise GraphError(f"expanding the ONNX function bodies of "
                             f"{sorted({proto.graph.node[i].op_type for i in todo})} failed: "
                             f"{type(exc).__name__}: {exc}") from None
        del proto.opset_import[:]
        proto.opset_import.extend(i for i in model.opset_import if i.domain != _EXPAND_DOMAIN)
    return proto


def _refuse_non_tensors(proto, inferred) -> None:
    """Sequence, optional and map values cannot be run: refuse a graph input or output of such
    a type, or (given the ``inferred`` model) any node reading or writing one, naming the
    tensor."""
    def kind(t) -> str | None:
        for k in ("sequence_type", "optional_type", "map_type", "sparse_tensor_type"):
            if t.HasField(k):
                return k.replace("_type", "")
        return None

    g = proto.graph
    for where, values in (("graph input", g.input), ("graph output", g.output)):
        for v in values:
            if kind(v.type):
                raise GraphError(f"{where} '{v.name}' is a {kind(v.type)}; qsim runs tensors only "
                                 f"(make it a tensor input/output)")
    if inferred is None:
        return
    non_tensor = {v.name: kind(v.type) for v in inferred.graph.value_info if kind(v.type)}
    for n in g.node:
        for name in (*n.input, *n.output):
            if name in non_tensor:
                raise GraphError(f"node '{n.name or n.op_type}' ({n.op_type}): tensor '{name}' is a "
                                 f"{non_tensor[name]}; qsim runs tensors only")


def _unsupported_attribute_kinds(graph: Graph) -> list[str]:
    return [f"{n.describe()}: attribute '{k}' is a {v.kind}, which qsim cannot run"
            for n in graph.nodes for k, v in n.attrs.items() if isinstance(v, _Unsupported)]


def _read_model(path) -> Any:
    onnx = _onnx()
    path = Path(path)
    if not path.is_file():
        raise GraphError(f"ONNX file '{path}' does not exist")
    try:
        return onnx.load(str(path))  # loads external data files next to the model
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise GraphError(f"'{path}' is not a readable ONNX model: {type(exc).__name__}: {exc}") from None


def _opset(proto) -> int:
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 17


def _infer_types(proto):
    """Run ONNX shape inference; fall back to the model as given if inference fails."""
    onnx = _onnx()
    try:
        return onnx.shape_inference.infer_shapes(proto, strict_mode=False)
    except Exception:  # inference is a best effort: types of intermediates become unknown
        return proto


def _value_info(vi) -> ValueInfo:
    onnx = _onnx()
    t = vi.type.tensor_type
    dtype = None
    if vi.type.HasField("tensor_type") and t.elem_type:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
    shape = None
    if t.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                      for d in t.shape.dim)
    return ValueInfo(vi.name, dtype, shape)


def _attr_value(attr) -> Any:
    """An ONNX attribute as a plain Python value (tuples for lists, ndarray for tensors)."""
    onnx = _onnx()
    A = onnx.AttributeProto
    if attr.type == A.FLOAT:
        return float(attr.f)
    if attr.type == A.INT:
        return int(attr.i)
    if attr.type == A.STRING:
        return attr.s.decode("utf-8")
    if attr.type == A.TENSOR:
        return onnx.numpy_helper.to_array(attr.t)
    if attr.type == A.FLOATS:
        return tuple(float(v) for v in attr.floats)
    if attr.type == A.INTS:
        return tuple(int(v) for v in attr.ints)
    if attr.type == A.STRINGS:
        return tuple(s.decode("utf-8") for s in attr.strings)
    return _Unsupported(A.AttributeType.Name(attr.type))


class _Unsupported:
    """Marker for attribute kinds qsim cannot run (sub-graphs, sparse tensors, type protos)."""

    def __init__(self, kind: str):
        self.kind = kind

    def __repr__(self):
        return f"<unsupported {self.kind} attribute>"


def _topological(nodes: list[Node], available: set[str]) -> list[Node]:
    """Nodes in a topological order that keeps the file's order where it is already valid."""
    done = set(available)
    ordered, pending = [], list(nodes)
    while pending:
        progressed, rest = False, []
        for n in pending:
            if all((not i) or i in done for i in n.inputs):
                ordered.append(n)
                done.update(o for o in n.outputs if o)
                progressed = True
            else:
                rest.append(n)
        if not progressed:
            stuck = rest[0]
            missing = [i for i in stuck.inputs if i and i not in done]
            raise GraphError(f"{stuck.describe()}: inputs {missing} are never defined or form a "
                             f"cycle; {len(rest)} node(s) cannot be ordered")
        pending = rest
    return ordered


def _graph_from_proto(proto, inferred=None) -> Graph:
    onnx = _onnx()
    inferred = _infer_types(proto) if inferred is None else inferred
    g = proto.graph
    params = {}
    for init in g.initializer:
        try:
            params[init.name] = onnx.numpy_helper.to_array(init)
        except Exception as exc:
            raise GraphError(f"initializer '{init.name}' cannot be read: {exc}") from None
    inputs = tuple(_value_info(v) for v in g.input if v.name not in params)
    outputs = tuple(_value_info(v) for v in g.output)
    value_info = {}
    for v in (*inferred.graph.value_info, *inferred.graph.output):
        info = _value_info(v)
        if info.dtype is not None:
            value_info[v.name] = info
    # Outputs whose type was missing in the file take the inferred one.
    outputs = tuple(value_info.get(o.name, o) if o.dtype is None else o for o in outputs)
    nodes, names = [], set()
    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        while name in names:  # ONNX allows empty/duplicate node names; the IR does not
            name = f"{name}_{i}"
        names.add(name)
        nodes.append(Node(name=name, op_type=n.op_type, inputs=tuple(n.input),
                          outputs=tuple(n.output),
                          attrs={a.name: _attr_value(a) for a in n.attribute}, domain=n.domain))
    nodes = _topological(nodes, {v.name for v in inputs} | set(params))
    declared = frozenset(v.name for v in (*g.input, *g.output, *g.value_info)
                         if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"))
    return Graph(nodes=tuple(nodes), inputs=inputs, outputs=outputs, params=params,
                 value_info=value_info, opset=_opset(proto), name=g.name or "graph",
                 declared_shapes=declared)


# ---- Graph → ONNX ------------------------------------------------------------------------------

def _make_value_info(info: ValueInfo):
    onnx = _onnx()
    if info.dtype is None:
        return onnx.helper.make_value_info(info.name, onnx.TypeProto())
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(info.dtype))
    shape = None if info.shape is None else [d if d is not None else None for d in info.shape]
    return onnx.helper.make_tensor_value_info(info.name, elem, shape)


def _make_attr(value: Any) -> Any:
    onnx = _onnx()
    if isinstance(value, np.ndarray):
        return onnx.numpy_helper.from_array(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def to_onnx(graph: Graph, *, ir_version: int | None = None) -> Any:
    """Write ``graph`` as an ``onnx.ModelProto`` (same tensor names, opset and parameters)."""
    onnx = _onnx()
    nodes = [onnx.helper.make_node(n.op_type, list(n.inputs), list(n.outputs), name=n.name,
                                   domain=n.domain or None,
                                   **{k: _make_attr(v) for k, v in n.attrs.items()})
             for n in graph.nodes]
    inits = [onnx.numpy_helper.from_array(np.asarray(a), name) for name, a in graph.params.items()]
    g = onnx.helper.make_graph(nodes, graph.name, [_make_value_info(v) for v in graph.inputs],
                               [_make_value_info(v) for v in graph.outputs], initializer=inits)
    domains = {n.domain for n in graph.nodes if n.domain not in ("", "ai.onnx")}
    opsets = [onnx.helper.make_opsetid("", graph.opset)] + [
        onnx.helper.make_opsetid(d, 1) for d in sorted(domains)]
    model = onnx.helper.make_model(g, opset_imports=opsets, producer_name="qsim")
    model.ir_version = ir_version if ir_version is not None else min(model.ir_version, 9)
    return model
