"""§1.1: decomposed LayerNormalization / RMSNormalization (and MaskedSoftmax) become one node.

With ``LayerNormalization`` / ``RMSNormalization`` in ``supergroup_pass_list`` aimet-onnx 2.42
rewrites hand-written norms into one function node (domain ``aimet.supergroup``) before it
creates quantizers, so their intermediate tensors get no quantizer, the scale becomes the norm's
``weight`` parameter and a LayerNorm's trailing Add vector its ``bias``. The patterns, with
``m(v) = ReduceMean(v)`` (axes as attribute or as second input), ``eps`` any tensor::

    sq(x)     = Mul(x, x) | Pow(x, 2)                        (2: a scalar or a [2] constant)
    inv(d)    = Reciprocal(Sqrt(d)) | Div(1, Sqrt(d)) | Pow(d, -0.5)     (1: a scalar)
    rms(x)    = Div(x, Sqrt(d)) | Mul(x, inv(d)) | Mul(inv(d), x)   with d = Add(m(sq(x)), eps)
                                                                    or Add(eps, m(sq(x)))
    RMS(x)    = rms(x) or an already fused RMSNormalization(x)
    RMSNorm   : rms(x)                                       -> RMSNormalization(x)
                Mul(RMS(x) [Cast], s) | Mul(s, RMS(x) [Cast]) -> RMSNormalization(x, s)
    LayerNorm : Mul(RMS(c) [Cast], s) | Mul(s, RMS(c) [Cast]) -> LayerNormalization(x, s)
                with c = Sub(x, ReduceMean(x)), the ReduceMean's axes an ATTRIBUTE (so the
                pattern never matches at opset >= 18, where axes is an input)
                Add(b, LN(x, s)) | Add(LN(x, s), b)            -> LayerNormalization(x, s, b)

as onnxscript's rewriter applies them: nodes are visited in graph order, at each node the rules
are tried in the order aimet registers them and the first match replaces the matched nodes by
one node at the matched root's place (the visit goes on with that new node). A match is refused
when a matched intermediate tensor is read outside the match or is a graph output, and by each
rule's checks (single-element constant axes; epsilon a constant >= 0 where required; a LayerNorm
whose inner axis is 0 or differs from the outer one; Casts to non-float types). Unused nodes
are removed afterwards, as aimet's cleanup does.

``MaskedSoftmax`` (in no shipped config) fuses ``Softmax(Where(mask, x, ReduceMin(x) + v))``
likewise (see :func:`_masked_softmax`); its constant ``v`` gets no quantizer.

The fused graph is only what placement reasons on: qsim still EXECUTES the original nodes
(aimet's function bodies are those very nodes, so ONNX Runtime computes the same float32), and
every tensor that keeps a quantizer (x, s, b, the output) exists in both graphs.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from ..ir import Graph, Node
from .fusion import static_value
from .tables import FUSED_DOMAIN

#: ONNX float element types a Cast inside an RMSNorm pattern may convert to (FLOAT, FLOAT16,
#: BFLOAT16)
_FLOAT_TYPES = (1, 10, 16)


class _Graph:
    """The working graph of one fusion run: nodes in order, producers, readers (cached until
    the node list changes)."""

    def __init__(self, base: Graph) -> None:
        self.base = base
        self._nodes = list(base.nodes)
        self._producers: Optional[dict] = None
        self._readers: Optional[dict] = None

    @property
    def nodes(self) -> list:
        return self._nodes

    @nodes.setter
    def nodes(self, value: list) -> None:
        self._nodes, self._producers, self._readers = value, None, None

    def _producer_map(self) -> dict:
        if self._producers is None:
            self._producers = {o: n for n in self._nodes for o in n.outputs if o}
        return self._producers

    def producer(self, tensor: str) -> Optional[Node]:
        return self._producer_map().get(tensor)

    def readers(self, tensor: str) -> list:
        if self._readers is None:
            self._readers = {}
            for n in self._nodes:
                for t in dict.fromkeys(i for i in n.inputs if i):
                    self._readers.setdefault(t, []).append(n)
        return self._readers.get(tensor, [])

    def const(self, tensor: str) -> Optional[np.ndarray]:
        """An initializer's or a Constant node's value, else None (fusion.static_value)."""
        return static_value(self.base, tensor, self._producer_map())

    def is_const(self, tensor: str, value: float, *, vector_too: bool) -> bool:
        """onnxscript's ``Constant(value)`` (a scalar) or ``Constant([value])`` (shape (1,))."""
        c = self.const(tensor)
        if c is None or not (c.ndim == 0 or (vector_too and c.shape == (1,))):
            return False
        return math.isclose(float(c.reshape(-1)[0]), value, rel_tol=1e-5, abs_tol=1e-8)


def _singleton(value) -> Optional[float]:
    """aimet's ``get_constant_singleton_value``: the one element of a constant/attribute."""
    if value is None:
        return None
    arr = np.asarray(value)
    return arr.reshape(-1)[0].item() if arr.size == 1 else None


class _Match:
    """Nodes matched so far and the pattern variables bound."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.vars: dict = {}

    def take(self, g: _Graph, tensor: str, op_type: str, *, fused: bool = False) -> Optional[Node]:
        node = g.producer(tensor)
        if node is None or node.op_type != op_type:
            return None
        if fused != node.domain.startswith(FUSED_DOMAIN) and op_type in (
                "LayerNormalization", "RMSNormalization"):
            return None
        if any(node is n for n in self.nodes):
            return node
        self.nodes.append(node)
        return node

    def bind(self, name: str, value) -> bool:
        if name in self.vars:
            return self.vars[name] == value
        self.vars[name] = value
        return True


def _attempt(fn: Callable[[_Match], bool], base: Optional[_Match] = None) -> Optional[_Match]:
    """Run one alternative on a copy of ``base`` (backtracking): the new state, or None."""
    m = _Match()
    if base is not None:
        m.nodes, m.vars = list(base.nodes), dict(base.vars)
    return m if fn(m) else None


def _first(alternatives, base: _Match) -> Optional[_Match]:
    for alt in alternatives:
        found = _attempt(alt, base)
        if found is not None:
            return found
    return None


def _adopt(m: _Match, found: Optional[_Match]) -> bool:
    if found is None:
        return False
    m.nodes, m.vars = found.nodes, found.vars
    return True


# ---- pattern pieces (each binds into the match; False = no match) -------------------------------

def _square(g: _Graph, m: _Match, t: str, x: str) -> bool:
    def mul(m2):
        n = m2.take(g, t, "Mul")
        return n is not None and len(n.inputs) == 2 and n.inputs[0] == x and n.inputs[1] == x

    def pow_(m2):
        n = m2.take(g, t, "Pow")
        return n is not None and len(n.inputs) == 2 and n.inputs[0] == x \
            and g.is_const(n.inputs[1], 2.0, vector_too=True)
    return _adopt(m, _first([mul, pow_], m))


def _mean(g: _Graph, m: _Match, t: str, x: str, axes_var: str) -> bool:
    """``ReduceMean(sq(x), axes)`` with axes an input (any tensor) or an attribute (or none)."""
    def as_input(m2):
        n = m2.take(g, t, "ReduceMean")
        if n is None or len(n.inputs) != 2 or not n.inputs[1]:
            return False
        return m2.bind(axes_var, ("input", n.inputs[1])) and _square(g, m2, n.inputs[0], x)

    def as_attr(m2):
        n = m2.take(g, t, "ReduceMean")
        if n is None or len([i for i in n.inputs if i]) != 1:
            return False
        axes = n.attrs.get("axes")
        return m2.bind(axes_var, None if axes is None else ("attr", tuple(axes))) \
            and _square(g, m2, n.inputs[0], x)
    return _adopt(m, _first([as_input, as_attr], m))


def _mean_eps(g: _Graph, m: _Match, t: str, x: str) -> bool:
    def order(i):
        def alt(m2):
            n = m2.take(g, t, "Add")
            return n is not None and len(n.inputs) == 2 and m2.bind("eps", n.inputs[1 - i]) \
                and _mean(g, m2, n.inputs[i], x, "axis")
        return alt
    return _adopt(m, _first([order(0), order(1)], m))


def _inv_sqrt(g: _Graph, m: _Match, t: str, x: str) -> bool:
    def reciprocal(m2):
        n = m2.take(g, t, "Reciprocal")
        s = n and m2.take(g, n.inputs[0], "Sqrt")
        return bool(s) and _mean_eps(g, m2, s.inputs[0], x)

    def one_over(m2):
        n = m2.take(g, t, "Div")
        if n is None or not g.is_const(n.inputs[0], 1.0, vector_too=False):
            return False
        s = m2.take(g, n.inputs[1], "Sqrt")
        return s is not None and _mean_eps(g, m2, s.inputs[0], x)

    def pow_(m2):
        n = m2.take(g, t, "Pow")
        return n is not None and g.is_const(n.inputs[1], -0.5, vector_too=True) \
            and _mean_eps(g, m2, n.inputs[0], x)
    return _adopt(m, _first([reciprocal, one_over, pow_], m))


def _rms_form(g: _Graph, idx: int) -> Callable:
    """Non-affine RMS normalisation of the tensor bound to ``x`` (aimet's pattern_idx 0, 1, 2)."""
    def match(m: _Match, t: str, x_var: str = "x") -> bool:
        if idx == 0:
            n = m.take(g, t, "Div")
            if n is None or len(n.inputs) != 2 or not m.bind(x_var, n.inputs[0]):
                return False
            s = m.take(g, n.inputs[1], "Sqrt")
            return s is not None and _mean_eps(g, m, s.inputs[0], n.inputs[0])
        n = m.take(g, t, "Mul")
        if n is None or len(n.inputs) != 2:
            return False
        xi = 0 if idx == 1 else 1
        return m.bind(x_var, n.inputs[xi]) and _inv_sqrt(g, m, n.inputs[1 - xi], n.inputs[xi])
    return match


def _normalized(g: _Graph, m: _Match, t: str, x_var: str) -> bool:
    """RMS(x) [Cast]: the non-affine forms (Div, x*inv, inv*x) or a fused RMSNormalization(x)."""
    def plain(t2):
        def fused(m2):
            n = m2.take(g, t2, "RMSNormalization", fused=True)
            if n is None or len(n.inputs) != 1:
                return False
            m2.vars["axis"] = ("fused", n.attrs.get("axis"))
            m2.vars["eps"] = ("fused", n.attrs.get("epsilon"))
            return m2.bind(x_var, n.inputs[0])
        forms = [lambda m2, i=i: _rms_form(g, i)(m2, t2, x_var) for i in (0, 1, 2)]
        return forms + [fused]

    def cast(m2):
        n = m2.take(g, t, "Cast")
        if n is None or not m2.bind("output_type", n.attrs.get("to")):
            return False
        return _adopt(m2, _first(plain(n.inputs[0]), m2))
    return _adopt(m, _first(plain(t) + [cast], m))


# ---- values of bound variables -------------------------------------------------------------------

def _axis_value(g: _Graph, bound) -> tuple:
    """(present, singleton value or None) of the inner ``axis`` variable."""
    if bound is None:
        return False, None
    kind, value = bound
    if kind == "input":
        return True, _singleton(g.const(value))
    return (value is not None), _singleton(value)


def _eps_value(g: _Graph, bound) -> Optional[float]:
    if isinstance(bound, tuple):            # from a fused node's attribute
        return bound[1]
    return _singleton(g.const(bound))


def _valid_to_replace(g: _Graph, m: _Match, root: Node) -> bool:
    """onnxscript: every tensor a matched node makes, but the root's, is read only inside."""
    inside = {id(n) for n in m.nodes}
    for n in m.nodes:
        for out in n.outputs:
            if n is root or not out:
                continue
            if out in g.base.output_names:
                return False
            if any(id(r) not in inside for r in g.readers(out)):
                return False
    return True


# ---- the rules -----------------------------------------------------------------------------------

def _rms_nonaffine(idx: int):
    def rule(g: _Graph, node: Node) -> Optional[tuple]:
        m = _Match()
        if not _rms_form(g, idx)(m, node.outputs[0]) or m.nodes[0] is not node:
            return None
        present, axis = _axis_value(g, m.vars.get("axis"))
        eps = _eps_value(g, m.vars.get("eps"))
        if (present and axis is None) or eps is None or eps < 0:
            return None
        attrs = {"axis": int(axis) if axis is not None else -1, "epsilon": float(eps)}
        return m, "RMSNormalization", (m.vars["x"],), attrs
    return rule


def _scaled(g: _Graph, node: Node, idx: int, x_var: str) -> Optional[_Match]:
    """``Mul(RMS(x) [Cast], s)`` (idx 0) or ``Mul(s, RMS(x) [Cast])`` (idx 1) at ``node``."""
    if node.op_type != "Mul" or len(node.inputs) != 2:
        return None
    m = _Match()
    m.nodes.append(node)
    ni = 0 if idx == 0 else 1
    if not m.bind("scale", node.inputs[1 - ni]) or not _normalized(g, m, node.inputs[ni], x_var):
        return None
    return m


def _rms_affine(idx: int):
    def rule(g: _Graph, node: Node) -> Optional[tuple]:
        m = _scaled(g, node, idx, "x")
        if m is None:
            return None
        present, axis = _axis_value(g, m.vars.get("axis"))
        eps = _eps_value(g, m.vars.get("eps"))
        if (present and axis is None) or eps is None or eps < 0:
            return None
        upstream = g.producer(m.vars["x"])
        stash = upstream.attrs.get("to") if upstream is not None and upstream.op_type == "Cast" \
            and not upstream.domain else None
        out_type = m.vars.get("output_type")
        if stash is not None and stash not in _FLOAT_TYPES:
            return None
        if out_type is not None and (out_type not in _FLOAT_TYPES or stash is None):
            return None
        attrs = {"axis": int(axis) if axis is not None else -1, "epsilon": float(eps)}
        return m, "RMSNormalization", (m.vars["x"], m.vars["scale"]), attrs
    return rule


def _centered(g: _Graph, m: _Match) -> Optional[tuple]:
    """``c = Sub(x, ReduceMean(x))`` (axes an attribute): (x, outer axes) or None."""
    sub = m.take(g, m.vars["c"], "Sub")
    if sub is None or len(sub.inputs) != 2:
        return None
    mean = m.take(g, sub.inputs[1], "ReduceMean")
    if mean is None or len([i for i in mean.inputs if i]) != 1 or mean.inputs[0] != sub.inputs[0]:
        return None
    if "axes" not in mean.attrs:
        return None
    return sub.inputs[0], tuple(mean.attrs["axes"])


def _ln_no_bias(idx: int):
    def rule(g: _Graph, node: Node) -> Optional[tuple]:
        if idx == 2:
            if node.op_type != "RMSNormalization" or not node.domain.startswith(FUSED_DOMAIN) \
                    or len(node.inputs) != 2:
                return None
            m = _Match()
            m.nodes.append(node)
            m.vars.update(c=node.inputs[0], scale=node.inputs[1],
                          axis=("fused", node.attrs.get("axis")),
                          eps=("fused", node.attrs.get("epsilon")))
        else:
            m = _scaled(g, node, idx, "c")
            if m is None:
                return None
        found = _centered(g, m)
        if found is None:
            return None
        x, outer = found
        present, axis = _axis_value(g, m.vars.get("axis"))
        if present and not axis:                       # aimet: `not value` (0 fails too)
            return None
        if present and len(outer) == 1 and axis != outer[0]:
            return None
        if len(outer) != 1:
            return None
        eps = _eps_value(g, m.vars.get("eps"))
        if eps is not None and eps < 0:
            return None
        attrs = {"axis": int(outer[0])}
        if eps is not None:
            attrs["epsilon"] = float(eps)
        return m, "LayerNormalization", (x, m.vars["scale"]), attrs
    return rule


def _ln_bias(idx: int):
    def rule(g: _Graph, node: Node) -> Optional[tuple]:
        if node.op_type != "Add" or len(node.inputs) != 2:
            return None
        li = 1 if idx == 0 else 0                      # idx 0: Add(b, LN); idx 1: Add(LN, b)
        ln = g.producer(node.inputs[li])
        if ln is None or ln.op_type != "LayerNormalization" \
                or not ln.domain.startswith(FUSED_DOMAIN) or len(ln.inputs) != 2 \
                or "epsilon" not in ln.attrs or "axis" not in ln.attrs:
            return None
        m = _Match()
        m.nodes += [node, ln]
        return m, "LayerNormalization", ln.inputs + (node.inputs[1 - li],), dict(ln.attrs)
    return rule


def _masked_softmax(g: _Graph, node: Node) -> Optional[tuple]:
    """``Softmax(Where(mask, x, Add(ReduceMin(x, axes), v)), axis=a)`` -> MaskedSoftmax(x, mask, v)
    when the model file states x's shape and it is 4-D, a (an attribute, present) and the axes input are -1 or 3, and v is a constant
    single value <= -20 (aimet's MaskedSoftmax fusion; ReduceMin must take its axes as an input,
    opset >= 18)."""
    if node.op_type != "Softmax" or "axis" not in node.attrs or len(node.inputs) != 1:
        return None
    m = _Match()
    m.nodes.append(node)
    where = m.take(g, node.inputs[0], "Where")
    if where is None or len(where.inputs) != 3:
        return None
    mask, x, floor = where.inputs
    add = m.take(g, floor, "Add")
    if add is None or len(add.inputs) != 2:
        return None
    rmin = m.take(g, add.inputs[0], "ReduceMin")
    if rmin is None or len(rmin.inputs) != 2 or rmin.inputs[0] != x or not rmin.inputs[1]:
        return None
    shape = g.base.shape_of(x) if x in g.base.declared_shapes else None
    if shape is None or len(shape) != 4:     # aimet sees the file's shapes only (no inference)
        return None
    value = _singleton(g.const(add.inputs[1]))
    if int(node.attrs["axis"]) not in (-1, 3) or _singleton(g.const(rmin.inputs[1])) not in (-1, 3) \
            or value is None or value > -20:
        return None
    return m, "MaskedSoftmax", (x, mask, add.inputs[1]), {"axis": -1}


def _rules(passes) -> list:
    """The fusion rules in aimet's registration order (decorators apply bottom-up)."""
    table = {"LayerNormalization": [_ln_no_bias(2), _ln_no_bias(1), _ln_no_bias(0),
                                    _ln_bias(1), _ln_bias(0)],
             "RMSNormalization": [_rms_nonaffine(2), _rms_nonaffine(1), _rms_nonaffine(0),
                                  _rms_affine(1), _rms_affine(0)],
             "MaskedSoftmax": [_masked_softmax]}
    return [rule for name in passes for rule in table.get(name, [])]


def _remove_unused(graph: Graph, nodes: list) -> list:
    """Drop nodes none of whose outputs is read or a graph output, until none is left."""
    while True:
        read = {i for n in nodes for i in n.inputs if i} | set(graph.output_names)
        kept = [n for n in nodes if any(o in read for o in n.outputs if o)]
        if len(kept) == len(nodes):
            return kept
        nodes = kept


#: the supergroup_pass_list names this module fuses (MatmulAdd is fusion.py's)
FUSED_PASSES = ("LayerNormalization", "RMSNormalization", "MaskedSoftmax")


def _is_fused_norm(node: Node) -> bool:
    return node.domain.startswith(f"{FUSED_DOMAIN}.norm")


def fuse_norms(graph: Graph, passes) -> tuple:
    """``(fused graph, bodies)``: ``graph`` with the decomposed norms of ``passes``
    (``LayerNormalization``, ``RMSNormalization`` in ``supergroup_pass_list`` order) replaced as
    the module doc says, and for each fused node the names of the original nodes it stands for
    (aimet's function body). The fused graph is for placement only (see the module doc);
    ``(graph, ())`` when nothing matches."""
    rules = _rules(passes)
    if not rules:
        return graph, ()
    g = _Graph(graph)
    body_of: dict = {}
    count, i = 0, 0
    while i < len(g.nodes):
        node = g.nodes[i]
        for rule in rules:
            found = rule(g, node) if node.outputs else None
            if found is None:
                continue
            m, op_type, inputs, attrs = found
            if not _valid_to_replace(g, m, node):
                continue
            fused = Node(name=node.name, op_type=op_type, inputs=tuple(inputs),
                         outputs=(node.outputs[0],), attrs=attrs,
                         domain=f"{FUSED_DOMAIN}.norm{count}")
            count += 1
            body_of[fused.name] = frozenset().union(
                *(body_of[n.name] if _is_fused_norm(n) else {n.name} for n in m.nodes))
            gone = {id(n) for n in m.nodes if n is not node}
            before = sum(1 for n in g.nodes[:i] if id(n) in gone)
            g.nodes = [fused if n is node else n for n in g.nodes if id(n) not in gone]
            i -= before
            break
        else:
            i += 1
    if count == 0:
        return graph, ()
    nodes = _remove_unused(graph, g.nodes)
    bodies = tuple(body_of[n.name] for n in nodes if _is_fused_norm(n))
    return graph.with_nodes(nodes).validate(), bodies


def fold_reciprocal_mul(graph: Graph, bodies) -> Graph:
    """What ONNX Runtime's default session (``ORT_ENABLE_ALL``, as aimet's) does to the inlined
    function bodies, where no quantize node separates two ops: its DivMulFusion rewrites
    ``Mul(Div(1, d), x)`` (either operand order) into ``Div(x, d)`` when the 1 is a constant of at
    most one element equal to 1.0 and the Div output feeds that Mul only (one edge). ``x·(1/d)``
    and ``x/d`` can differ by an ulp, so the simulation must divide as aimet's session does. In
    the main graph a quantize node follows every op, so nothing else is rewritten."""
    inside = frozenset().union(*bodies) if bodies else frozenset()
    if not inside:
        return graph
    producers = graph.producers()
    edges: dict = {}
    for n in graph.nodes:
        for t in n.inputs:
            if t:
                edges.setdefault(t, []).append(n)
    replace_by: dict = {}
    drop: set = set()
    for div in graph.nodes:
        if div.name not in inside or div.op_type != "Div" or len(div.inputs) != 2:
            continue
        one = static_value(graph, div.inputs[0], producers)
        out = div.outputs[0]
        readers = edges.get(out, [])
        if one is None or one.size > 1 or one.dtype != np.float32 or float(one.reshape(-1)[0]) != 1.0:
            continue
        if len(readers) != 1 or readers[0].op_type != "Mul" or out in graph.output_names \
                or readers[0].name not in inside or readers[0].name in replace_by:
            continue
        mul = readers[0]
        other = mul.inputs[1] if mul.inputs[0] == out else mul.inputs[0]
        replace_by[mul.name] = Node(name=mul.name, op_type="Div", inputs=(other, div.inputs[1]),
                                    outputs=mul.outputs, attrs={}, domain=mul.domain)
        drop.add(div.name)
    if not replace_by:
        return graph
    nodes = [replace_by.get(n.name, n) for n in graph.nodes if n.name not in drop]
    return graph.with_nodes(nodes).validate()
