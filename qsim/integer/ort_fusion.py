"""The graph ONNX Runtime's CPU session runs for a QDQ model, rewritten inside qsim.

ONNX Runtime (1.32, default ``SessionOptions``: ``ORT_ENABLE_ALL``) does not run a QDQ model as
written: before the first run it rewrites the graph, and the rewritten graph decides the bits.
:func:`ort_graph` applies the same rewrites, in the same order, to a qsim :class:`~qsim.ir.Graph`
read from the QDQ model (``qsim.qdq.qdq_model``); :mod:`qsim.integer.model` then runs the result
with qsim's op library. The rewrites (facts from ONNX Runtime's ``core/optimizer`` sources:
``constant_folding.cc``, ``qdq_transformer/*.cc``, ``selectors_actions/qdq_selectors.cc``,
``qdq_actions.cc``, ``qdq_selector_action_transformer.cc``, ``qdq_util.cc``, ``div_mul_fusion.cc``,
``reshape_fusion.cc``, ``gemm_activation_fusion.cc``, ``layer_norm_fusion.cc``,
``double_qdq_pairs_remover.cc``; where the stored sources and ONNX Runtime 1.32 disagree, its
dumps decide, as noted):

1. **Constant folding** — every node whose inputs are all initializers is computed once and
   becomes an initializer, except DequantizeLinear (kept so that QDQ groups stay visible). A
   weight's ``QuantizeLinear`` becomes its integer initializer (``<w>_q``).
   **DivMulFusion** (a level-1 rule): ``Mul(Div(1, d), m)`` → ``Div(m, d)`` (changes bits).
2. **Unique DQ per consumer** (``EnsureUniqueDQForNodeUnit``) — a DequantizeLinear read by n
   nodes is copied so that each reader has its own (one copy per reader when its output is
   also a graph output). **ReshapeFusion**: a Reshape's ``Concat`` shape built from constants and
   ``Shape → Gather → Unsqueeze`` of its own input becomes one int64 initializer (0: copy the
   dimension, -1: the one one-element piece).
3. **Redundant Relu / Clip before Q** (``ReluQuantFusion``, ``ClipQuantFusion``;
   ``IsClipMadeRedundantByQ``) — ``Relu → Q`` loses the Relu when ``zp = qmin`` of the Q type;
   ``Clip(lo, hi) → Q`` loses the Clip when ``rint(lo / s) + zp <= qmin`` and
   ``rint(hi / s) + zp >= qmax`` (float32 division, ties to even). The Q clamps to the same
   integers, so the bits do not change.
4. **QDQ propagation** — through MaxPool, Reshape, Transpose, Squeeze, Unsqueeze and Slice: a
   per-tensor DQ is carried forward (``Q → DQ`` inserted after the op with the DQ's scale and
   zero point) and a per-tensor Q backward, so that those ops can run on integers. Then the
   transpose optimizer's Shape handler: ``Shape(Transpose(x, p))`` → ``Gather(Shape(x), p)``
   (the rest of that optimizer — pushing Transposes through Split etc. — is not reproduced).
5. **QDQ node groups → kernels** (the selector/action table, 8-bit unless said otherwise; run
   after 6):

   ==============================================  ===========================================
   group                                           becomes
   ==============================================  ===========================================
   DQ → {Reshape, Transpose, Flatten, Squeeze,     the op on the integers (same scale and zero
   Unsqueeze, Slice, Gather, Expand, Tile} → Q     point on both sides; 16-bit too)
   DQ → {MaxPool, ReduceMax, ReduceMin} → Q        the op on the integers (positive scale)
   DQ → Resize → Q                                 the op on the integers (8-bit)
   DQ → {GlobalAveragePool, AveragePool,           com.microsoft QLinear<op>
   Sigmoid, LeakyRelu, Softmax} → Q
   DQ, DQ → {Add, Mul} → Q                         com.microsoft QLinearAdd / QLinearMul
   DQ… → Concat → Q                                com.microsoft QLinearConcat
   DQ x, DQ y → Where → Q                          com.microsoft QLinearWhere
   DQ x, DQ w[, DQ int32 b] → Conv → Q             QLinearConv (bias: the int32 values)
   DQ a, DQ b → MatMul → Q                         QLinearMatMul
   DQ a, DQ b → MatMul (no Q)                      com.microsoft MatMulIntegerToFloat
   DQ a, DQ b[, DQ int32 c] → Gemm [→ Q]           com.microsoft QGemm (float out without Q)
   DQ(const 2-D 8/4-bit w) → MatMul / Gemm         com.microsoft MatMulNBits (block 32,
   (when no rule above applies: 16-bit A)          accuracy_level 4)
   ==============================================  ===========================================

   A Relu/Clip between the op and its Q that the Q makes redundant (3.) joins the group.
6. **int8 → uint8** (``QDQS8ToU8Transformer``) — an int8 ``Q → DQ`` activation pair becomes
   uint8 with ``zp + 128`` (same reals), so that x86's uint8 kernels take the group.
7. **Float fusions** — ``Conv → Relu/Clip/…`` (one reader) becomes com.microsoft ``FusedConv``
   (the same float32 bits: MLAS applies the activation to each finished output),
   ``MatMul(2-D) → Add(bias)`` becomes ``Gemm``, ``Gemm → activation`` com.microsoft
   ``FusedGemm`` (same bits), and the RMSNorm pattern ``Pow → ReduceMean → Add → Sqrt → Div →
   Mul`` ``SimplifiedLayerNormalization`` (ONNX Runtime's RMSNorm kernel: changes bits).

Level-3 layout rewrites (NCHWc) do not change any bit of the tested models (checked against
``ORT_ENABLE_EXTENDED``); they are not applied. A group the table does not list stays as
``DQ → op → Q`` and runs in float, as ONNX Runtime runs it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import GraphError
from ..interpreter import call_op
from ..ir import Graph, Node

MS = "com.microsoft"
Q, DQ = "QuantizeLinear", "DequantizeLinear"
#: ops QDQ propagation passes Q/DQ through (qdq_propagation.cc ``CanNodePropagate``)
PROPAGATE = frozenset({"MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice"})
#: DQ → op → Q groups that become the op on integers, 16-bit allowed
DROP = frozenset({"Expand", "Flatten", "Gather", "GatherElements", "Reshape", "Slice", "Squeeze",
                  "Tile", "Transpose", "Unsqueeze"})
#: the same, 8-bit only and the scale must be positive
DROP_POSITIVE = frozenset({"MaxPool", "ReduceMax", "ReduceMin"})
#: the same, 8-bit only (Resize: ONNX Runtime's CPU kernel has no 16-bit integer version)
DROP_8BIT = frozenset({"Resize"})
UNARY = frozenset({"AveragePool", "LeakyRelu", "GlobalAveragePool", "Sigmoid", "Softmax"})
BINARY = frozenset({"Add", "Mul"})
#: activations ConvActivationFusion folds into FusedConv
CONV_ACTIVATIONS = frozenset({"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid"})
EIGHT = frozenset({"int8", "uint8"})
SIXTEEN = frozenset({"int16", "uint16"})
FOUR = frozenset({"int4", "uint4"})
RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767),
          "uint16": (0, 65535), "int4": (-8, 7), "uint4": (0, 15)}
#: MatMulNBits block size and accuracy level ONNX Runtime's session uses by default
NBITS_BLOCK = 32
NBITS_ACCURACY = 4


class _Nodes(list):
    """A node list that counts its changes (so that :class:`_Work` can cache its indices)."""

    version = 0

    def _changed(self):
        self.version += 1

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key):
        super().__delitem__(key)
        self._changed()

    def insert(self, index, value):
        super().insert(index, value)
        self._changed()

    def remove(self, value):
        super().remove(value)
        self._changed()


class _Work:
    """The graph being rewritten (private, mutable): nodes in topological order, initializers,
    graph output names, the default-domain opset, and a counter for fresh names. Producer,
    reader and position lookups are cached until the node list changes."""

    def __init__(self, *, nodes, params: dict, outputs: frozenset, opset: int = 17):
        self.nodes = nodes
        self.params = params
        self.outputs = outputs
        self.opset = opset
        self.counter = 0
        self._cache_version = None

    @property
    def nodes(self) -> list:
        return self._nodes

    @nodes.setter
    def nodes(self, value) -> None:
        self._nodes = _Nodes(value)
        self._cache_version = None

    def _maps(self):
        if self._cache_version != (id(self._nodes), self._nodes.version):
            producers, readers, where = {}, {}, {}
            for i, n in enumerate(self._nodes):
                where[n.name] = i
                for o in n.outputs:
                    if o:
                        producers.setdefault(o, n)
                for x in n.inputs:
                    if x:
                        readers.setdefault(x, []).append(n)
            self._maps_cached = (producers, readers, where)
            self._cache_version = (id(self._nodes), self._nodes.version)
        return self._maps_cached

    def fresh(self, base: str, exact: bool = False) -> str:
        """A new tensor/node name: ``base`` itself when ``exact`` and unused (ONNX Runtime's
        name for it), else ``base__ortN``."""
        producers, _, where = self._maps()
        taken = set(producers) | set(where) | set(self.params)
        if exact and base not in taken:
            return base
        self.counter += 1
        while f"{base}__ort{self.counter}" in taken:
            self.counter += 1
        return f"{base}__ort{self.counter}"

    def producer(self, tensor: str):
        return self._maps()[0].get(tensor)

    def index(self, node: Node) -> int:
        """Where the node named like ``node`` is now (nodes are replaced, names stay)."""
        where = self._maps()[2]
        if node.name not in where:
            raise GraphError(f"internal: node '{node.name}' is gone")
        return where[node.name]

    def readers(self, tensor: str) -> list:
        """One entry per input edge that reads ``tensor`` (a node reading it twice: twice)."""
        return list(self._maps()[1].get(tensor, ()))


# ---------------------------------------------------------------------------------------------
# small queries
# ---------------------------------------------------------------------------------------------
def _type_of(w: _Work, node: Node) -> str | None:
    """The integer type of a Q's output / a DQ's input (the zero point's, else the input's)."""
    if node.op_type == Q:
        if len(node.inputs) > 2 and node.inputs[2] in w.params:
            return w.params[node.inputs[2]].dtype.name
        return "uint8"
    src = node.inputs[0]
    if src in w.params:
        return w.params[src].dtype.name
    if len(node.inputs) > 2 and node.inputs[2] in w.params:
        return w.params[node.inputs[2]].dtype.name
    return None


def _scalar_const(w: _Work, name: str) -> bool:
    return name in w.params and w.params[name].size == 1 and w.params[name].ndim <= 1


def _qdq_scalar(w: _Work, node: Node) -> bool:
    """Constant scalar scale and (present) zero point: ``QOrDQNodeHasConstantScalarScaleAndZeroPoint``."""
    if not _scalar_const(w, node.inputs[1]):
        return False
    return len(node.inputs) < 3 or not node.inputs[2] or _scalar_const(w, node.inputs[2])


def _same_params(w: _Work, q: Node, dq: Node) -> bool:
    """``IsQDQPairSupported``: both scalar constants, equal scale and zero point (and type)."""
    if len(q.inputs) < 3 or len(dq.inputs) < 3 or not (_qdq_scalar(w, q) and _qdq_scalar(w, dq)):
        return False
    zq, zd = w.params[q.inputs[2]], w.params[dq.inputs[2]]
    return zq.dtype == zd.dtype and zq.reshape(-1)[0] == zd.reshape(-1)[0] and \
        w.params[q.inputs[1]].reshape(-1)[0] == w.params[dq.inputs[1]].reshape(-1)[0]


def _single_reader(w: _Work, tensor: str) -> Node | None:
    """The one node reading ``tensor`` through one edge, if it is not a graph output."""
    readers = w.readers(tensor)
    if len(readers) != 1 or tensor in w.outputs:
        return None
    return readers[0]


def clip_redundant(w: _Work, clip: Node, q: Node) -> bool:
    """``IsClipMadeRedundantByQ``: Relu when ``zp == qmin``; Clip when
    ``rint(lo ⊘ s) + zp <= qmin`` and ``rint(hi ⊘ s) + zp >= qmax`` (float32 division)."""
    if not _scalar_const(w, q.inputs[1]) or w.params[q.inputs[1]].dtype != np.float32:
        return False
    scale = np.float32(w.params[q.inputs[1]].reshape(-1)[0])
    dtype = _type_of(w, q)
    if dtype not in ("int8", "uint8", "int16", "uint16"):
        return False
    zp = int(w.params[q.inputs[2]].reshape(-1)[0]) if len(q.inputs) > 2 and q.inputs[2] else 0
    if len(q.inputs) > 2 and q.inputs[2] and not _scalar_const(w, q.inputs[2]):
        return False
    lo, hi = RANGES[dtype]
    if clip.op_type == "Relu":
        return zp == lo
    if clip.op_type != "Clip":
        return False
    bounds = _clip_bounds(w, clip)
    if bounds is None:
        return False
    with np.errstate(over="ignore"):
        q_lo = float(np.rint(np.float32(bounds[0]) / scale)) + zp    # ±inf compares as such
        q_hi = float(np.rint(np.float32(bounds[1]) / scale)) + zp
    return q_lo <= lo and q_hi >= hi


def _clip_bounds(w: _Work, clip: Node):
    """Constant (min, max) of a Clip (attributes before opset 11, inputs after), or None."""
    if "min" in clip.attrs or "max" in clip.attrs:
        return (float(clip.attrs.get("min", -np.finfo(np.float32).max)),
                float(clip.attrs.get("max", np.finfo(np.float32).max)))
    vals = []
    for k, default in ((1, -np.finfo(np.float32).max), (2, np.finfo(np.float32).max)):
        name = clip.inputs[k] if len(clip.inputs) > k else ""
        if not name:
            vals.append(float(default))
        elif name in w.params:
            vals.append(float(w.params[name].reshape(-1)[0]))
        else:
            value = _constant_dq(w, name)
            if value is None:
                return None
            vals.append(value)
    return tuple(vals)


def _constant_dq(w: _Work, name: str) -> float | None:
    """The value of a scalar ``DQ(constant)`` output (ONNX Runtime reads a Clip bound through
    such a DQ as a constant): ``float32(q - zp) ⊗ s``."""
    p = w.producer(name)
    if p is None or p.op_type != DQ or not all((not i) or i in w.params for i in p.inputs):
        return None
    args = [w.params[i] if i else None for i in p.inputs]
    value = np.asarray(call_op(p, args, None, set(w.params))[0])
    return float(value.reshape(-1)[0]) if value.size == 1 else None


# ---------------------------------------------------------------------------------------------
# level 1: constant folding, unique DQ, Relu/Clip → Q, propagation
# ---------------------------------------------------------------------------------------------
def fold_constants(w: _Work, opset: int, shapes=None) -> None:
    """Compute every non-DQ node whose inputs are all initializers (and whose outputs are not
    graph outputs) once; its outputs become initializers. ``Shape`` of a tensor whose shape is
    fully known (``shapes(name)``: ints only) folds too."""
    changed = True
    while changed:
        changed = False
        for n in list(w.nodes):
            if n.op_type == "Shape" and shapes is not None and n.outputs[0] not in w.outputs:
                known = shapes(n.inputs[0])
                if known is not None and all(isinstance(d, (int, np.integer)) for d in known):
                    dims = np.array([int(d) for d in known], np.int64)
                    start, end = n.attrs.get("start", 0), n.attrs.get("end", None)
                    w.params[n.outputs[0]] = dims[int(start):None if end is None else int(end)]
                    w.nodes.remove(n)
                    changed = True
                    continue
            if n.op_type == DQ or n.domain not in ("", "ai.onnx"):
                continue
            if not n.inputs and n.op_type != "Constant":
                continue
            if not all((not i) or i in w.params for i in n.inputs):
                continue
            if any(o in w.outputs for o in n.outputs):
                continue
            args = [w.params[i] if i else None for i in n.inputs]
            results = call_op(n, args, None, set(w.params), family="avx2", opset=opset)
            for name, value in zip(n.outputs, results):
                if name:
                    w.params[name] = np.asarray(value)
            w.nodes.remove(n)
            changed = True


def _value_key(w: _Work, name: str):
    """Inputs compare equal when they are the same tensor or equal one-element initializers
    (``ConstantSharing``)."""
    v = w.params.get(name)
    if v is not None and v.size == 1:
        return ("const", v.dtype.str, v.shape, v.tobytes())
    return name


def eliminate_common(w: _Work, dtype_of) -> None:
    """Level-1 rules that change no bit: ``CastElimination`` (a Cast to its input's type),
    ``NoopElimination`` (``x + 0``, ``x - 0``, ``x · 1``, ``x / 1`` with a one-element constant,
    on integers) and ``CommonSubexpressionElimination`` (nodes with equal op, attributes and
    inputs, except Q/DQ, computed once)."""
    def bypass(node: Node, keep: str) -> bool:
        out = node.outputs[0]
        if out in w.outputs:
            return False
        for i, n in enumerate(w.nodes):
            if out in n.inputs:
                w.nodes[i] = _with(n, inputs=tuple(keep if x == out else x for x in n.inputs))
        w.nodes = [x for x in w.nodes if x.name != node.name]
        return True

    changed = True
    while changed:
        changed = False
        for name in [n.name for n in w.nodes]:
            n = next((x for x in w.nodes if x.name == name), None)
            if n is None or n.domain not in ("", "ai.onnx"):
                continue
            if n.op_type == "Cast" and n.inputs[0] not in w.params:
                src = dtype_of(n.inputs[0])
                if src is not None and _onnx_code(src) == int(n.attrs.get("to", 0)):
                    changed |= bypass(n, n.inputs[0])
            elif n.op_type in ("Add", "Sub", "Mul", "Div") and len(n.inputs) == 2:
                a, b = n.inputs
                neutral = 0 if n.op_type in ("Add", "Sub") else 1
                for x, c in ((a, b), (b, a)) if n.op_type in ("Add", "Mul") else ((a, b),):
                    v = w.params.get(c)
                    t = dtype_of(x)
                    if v is not None and x not in w.params and v.size == 1 and v.ndim <= 1 \
                            and t is not None and np.dtype(t).kind in "iu" \
                            and v.reshape(-1)[0] == neutral:
                        changed |= bypass(n, x)
                        break
        seen: dict = {}
        for name in [n.name for n in w.nodes]:
            n = next((x for x in w.nodes if x.name == name), None)
            if n is None or n.op_type in (Q, DQ, "Constant") or not n.outputs or len(n.outputs) != 1:
                continue
            key = (n.op_type, n.domain, repr(sorted((k, repr(v)) for k, v in n.attrs.items())),
                   tuple(_value_key(w, i) for i in n.inputs))
            if key in seen and n.outputs[0] not in w.outputs:
                changed |= bypass(n, seen[key].outputs[0])
            else:
                seen.setdefault(key, n)


def _onnx_code(dtype) -> int:
    """The ONNX TensorProto type code of a NumPy dtype (0 if none)."""
    codes = {"float32": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6,
             "int64": 7, "bool": 9, "float16": 10, "float64": 11, "uint32": 12, "uint64": 13}
    return codes.get(np.dtype(dtype).name, 0)


def inline_functions(w: _Work) -> None:
    """ONNX Runtime runs ``HardSwish`` as its ONNX function body
    ``Mul(x, HardSigmoid(x, alpha=1/6, beta=0.5))``."""
    for hs in [n for n in w.nodes if n.op_type == "HardSwish" and n.domain in ("", "ai.onnx")]:
        mid = w.fresh(hs.outputs[0] + "_hardsigmoid")
        i = w.index(hs)
        w.nodes[i:i + 1] = [
            Node(name=w.fresh(hs.name), op_type="HardSigmoid", inputs=hs.inputs[:1],
                 outputs=(mid,), attrs={"alpha": float(np.float32(1 / 6)), "beta": 0.5}),
            Node(name=hs.name, op_type="Mul", inputs=(hs.inputs[0], mid), outputs=hs.outputs)]


def remove_dead(w: _Work) -> None:
    """Drop nodes none of whose outputs is read or a graph output (repeatedly)."""
    while True:
        used = {i for n in w.nodes for i in n.inputs if i} | set(w.outputs)
        dead = [n for n in w.nodes if not any(o in used for o in n.outputs if o)]
        if not dead:
            return
        w.nodes = [n for n in w.nodes if n not in dead]


def unique_dq(w: _Work) -> None:
    """``EnsureUniqueDQForNodeUnit``: a DQ read by several edges gets one copy per extra edge;
    a DQ whose output is also a graph output gets one copy per reading edge."""
    for dq in [n for n in w.nodes if n.op_type == DQ]:
        readers = w.readers(dq.outputs[0])
        output = dq.outputs[0] in w.outputs
        if len(readers) < (1 if output else 2):
            continue
        for reader in readers if output else readers[1:]:
            out = w.fresh(dq.outputs[0])
            copy = Node(name=w.fresh(dq.name), op_type=DQ, inputs=dq.inputs, outputs=(out,),
                        attrs=dict(dq.attrs), domain=dq.domain)
            i = w.index(reader)
            ins = list(reader.inputs)
            ins[ins.index(dq.outputs[0])] = out
            w.nodes[i] = _with(reader, inputs=tuple(ins))
            w.nodes.insert(i, copy)


def _with(node: Node, **changes) -> Node:
    fields = dict(name=node.name, op_type=node.op_type, inputs=node.inputs,
                  outputs=node.outputs, attrs=dict(node.attrs), domain=node.domain)
    fields.update(changes)
    return Node(**fields)


def drop_redundant_clips(w: _Work) -> None:
    """``ReluQuantFusion`` / ``ClipQuantFusion``: remove a Relu/Clip whose only reader is a Q
    that clamps to the same integers (:func:`clip_redundant`)."""
    for clip in [n for n in w.nodes if n.op_type in ("Relu", "Clip")]:
        reader = _single_reader(w, clip.outputs[0])
        if reader is None or reader.op_type != Q or not clip_redundant(w, clip, reader):
            continue
        if any(i and i not in w.params for i in clip.inputs[1:]):
            continue              # bounds read through a DQ: only a QDQ group drops the Clip
        i = w.index(reader)
        w.nodes[i] = _with(reader, inputs=(clip.inputs[0],) + reader.inputs[1:])
        w.nodes.remove(clip)


def remove_double_qdq(w: _Work, after_clips: bool = False) -> None:
    """``DoubleQDQPairsRemover``: ``Q1 → DQ1 → Q2 → DQ2…`` (8- and 16-bit, each pair with equal
    scalar parameters, Q1 and DQ1 read once, Q2 read only by DQs, no graph output) loses
    ``DQ1 → Q2``; Q1 and every DQ2 then share a new grid covering the intersection of both
    ranges (float32)::

        lo = max((qmin - zp1)·s1, (qmin - zp2)·s2),   hi = min((qmax - zp1)·s1, (qmax - zp2)·s2)
        s = (hi - lo) / (qmax - qmin),   zp = T(round_half_away(qmin - lo / s))

    (no change when both pairs already have equal parameters).

    Run twice, as ONNX Runtime 1.32's results require (checked against its dumps): before the
    redundant Relu/Clip removal with any number of DQ2 readers; after it (``after_clips``) only
    for one DQ2 and equal grids (``Q1 → DQ1 → Relu → Q2 → DQ2, DQ2'`` keeps its pairs, and so
    does a single DQ2 whose grid differs)."""
    changed = True
    while changed:
        changed = False
        for dq1 in [n for n in w.nodes if n.op_type == DQ]:
            q1 = w.producer(dq1.inputs[0])
            q2 = _single_reader(w, dq1.outputs[0])
            if q1 is None or q1.op_type != Q or q2 is None or q2.op_type != Q:
                continue
            if _single_reader(w, q1.outputs[0]) is None:
                continue
            dq2s = w.readers(q2.outputs[0])
            if not dq2s or q2.outputs[0] in w.outputs or any(d.op_type != DQ for d in dq2s) \
                    or (len(dq2s) > 1 and after_clips):
                continue
            if not (_same_params(w, q1, dq1) and all(_same_params(w, q2, d) for d in dq2s)):
                continue
            zt = w.params[dq1.inputs[2]].dtype
            if zt.name not in EIGHT | SIXTEEN:
                continue
            new = _merged_grid(w, dq1, q2, zt)
            if new is not None and after_clips:
                continue
            q1n = q1
            if new is not None:
                names = []
                for value in new:
                    names.append(w.fresh("DoubleQDQRemoved"))
                    w.params[names[-1]] = value
                q1n = _with(q1, inputs=(q1.inputs[0], names[0], names[1]))
            w.nodes[w.index(q1)] = q1n
            for dq2 in dq2s:
                params = tuple(names) if new is not None else dq2.inputs[1:]
                w.nodes[w.index(dq2)] = _with(dq2, inputs=(q1.outputs[0],) + params)
            w.nodes = [n for n in w.nodes if n.name not in (dq1.name, q2.name)]
            changed = True
            break


def _merged_grid(w: _Work, a: Node, b: Node, zt: np.dtype):
    """``(scale, zero point)`` arrays of :func:`remove_double_qdq`, or None (no change)."""
    if a.inputs[1] == b.inputs[1] and a.inputs[2] == b.inputs[2]:
        return None
    s1 = np.float32(w.params[a.inputs[1]].reshape(-1)[0])
    s2 = np.float32(w.params[b.inputs[1]].reshape(-1)[0])
    z1 = int(w.params[a.inputs[2]].reshape(-1)[0])
    z2 = int(w.params[b.inputs[2]].reshape(-1)[0])
    if z1 == z2 and abs(float(s1) - float(s2)) < 1e-20:
        return None
    lo_q, hi_q = RANGES[zt.name]
    lo = max(np.float32(lo_q - z1) * s1, np.float32(lo_q - z2) * s2)
    hi = min(np.float32(hi_q - z1) * s1, np.float32(hi_q - z2) * s2)
    scale = np.float32((hi - lo) / np.float32(hi_q - lo_q))
    v = np.float32(np.float32(lo_q) - np.float32(lo / scale))
    zp = int(np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)))      # std::round
    shape1, shape2 = w.params[a.inputs[1]].shape, w.params[a.inputs[2]].shape
    return (np.full(shape1, scale, np.float32),
            np.full(shape2, zp, np.int64).astype(zt))


def _insert_qdq(w: _Work, tensor: str, like: Node, readers: list, after: Node | None) -> None:
    """Insert ``Q → DQ`` (scale and zero point of ``like``) on ``tensor`` for ``readers``."""
    params = like.inputs[1:]
    pre = w.fresh(tensor + "_pre_q", True) if after is not None else tensor
    mid = w.fresh(tensor + "_q_to_dq", True)
    if after is not None:                  # the producer now writes `pre`
        i = w.index(after)
        w.nodes[i] = _with(after, outputs=tuple(pre if o == tensor else o for o in after.outputs))
    q = Node(name=w.fresh(tensor + "_q"), op_type=Q, inputs=(pre,) + params, outputs=(mid,))
    new = [q]
    for k, reader in enumerate(readers):
        out = tensor if reader is None else w.fresh(tensor + "_post_dq" + (str(k) if k else ""),
                                                    True)
        new.append(Node(name=w.fresh(tensor + "_dq"), op_type=DQ, inputs=(mid,) + params,
                        outputs=(out,)))
        if reader is not None:
            i = w.index(reader)
            w.nodes[i] = _with(reader, inputs=tuple(out if x == tensor else x
                                                    for x in reader.inputs))
    pos = 0 if after is None else next(j for j, n in enumerate(w.nodes) if n.outputs
                                        and pre in n.outputs) + 1
    w.nodes[pos:pos] = new


def propagate(w: _Work) -> None:
    """QDQ propagation: Q backward, then DQ forward, through :data:`PROPAGATE` ops
    (per-tensor constant scale and zero point only; one edge at a time, stopping at a DQ /
    before a Q, a tensor read more than once or a graph output)."""
    for q in [n for n in w.nodes if n.op_type == Q]:
        if not _qdq_scalar(w, q):
            continue
        tensor = q.inputs[0]
        while True:
            src = w.producer(tensor)
            if src is None or src.op_type not in PROPAGATE or tensor in w.outputs \
                    or len(w.readers(tensor)) != 1:
                break
            up = src.inputs[0]
            before = w.producer(up)
            if before is not None and before.op_type == DQ:
                break
            if up in w.outputs or len(w.readers(up)) != 1:
                break
            _insert_qdq(w, up, q, [src], before)
            tensor = up
    for dq in [n for n in w.nodes if n.op_type == DQ]:
        if not _qdq_scalar(w, dq):
            continue
        reader = _single_reader(w, dq.outputs[0])
        if reader is None:
            continue
        pending = [reader]
        while pending:
            op = pending.pop()
            op = w.nodes[w.index(op)]
            if op.op_type not in PROPAGATE:
                continue
            out = op.outputs[0]
            readers = w.readers(out)
            if out in w.outputs:
                if readers:
                    continue
                targets = [None]
            else:
                targets = [r for r in readers if r.op_type != Q]
            if not targets:
                continue
            _insert_qdq(w, out, dq, targets, op)
            pending.extend(t for t in targets if t is not None)


def s8_to_u8(w: _Work) -> None:
    """``QDQS8ToU8Transformer`` (x86, where int8 activations are not fused): a ``Q → DQ`` pair
    (the Q's only reader) with equal one-element int8 zero points becomes uint8 with
    ``zp + 128`` — the same reals, ``q_u8 = q_s8 + 128``. Its integer tensor gets a new name."""
    for q in [n for n in w.nodes if n.op_type == Q]:
        dq = _single_reader(w, q.outputs[0])
        if dq is None or dq.op_type != DQ or len(q.inputs) != 3 or len(dq.inputs) != 3:
            continue
        zq, zd = w.params.get(q.inputs[2]), w.params.get(dq.inputs[2])
        if zq is None or zd is None or zq.size != 1 or zd.size != 1 \
                or zq.dtype != np.int8 or zd.dtype != np.int8 \
                or zq.reshape(-1)[0] != zd.reshape(-1)[0]:
            continue
        zp = w.fresh("qdq_s8_to_u8_zp_conversion", True)
        w.params[zp] = np.asarray(int(zq.reshape(-1)[0]) + 128, np.uint8).reshape(zq.shape)
        out = w.fresh("qdq_s8_to_u8_quant", True)
        w.nodes[w.index(q)] = _with(q, inputs=(q.inputs[0], q.inputs[1], zp), outputs=(out,))
        w.nodes[w.index(dq)] = _with(dq, inputs=(out, dq.inputs[1], zp))


# ---------------------------------------------------------------------------------------------
# level 1: ReshapeFusion
# ---------------------------------------------------------------------------------------------
def _int_values(w: _Work, name: str) -> list | None:
    """The values of an integer initializer (``AppendTensorFromInitializer``), else None."""
    v = w.params.get(name) if name else None
    if v is None or v.dtype.kind not in "iu":
        return None
    return [int(x) for x in v.reshape(-1)]


def _unsqueeze_axes(w: _Work, node: Node) -> list | None:
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    return _int_values(w, node.inputs[1]) if len(node.inputs) > 1 else None


def _same_dim(a, b, k: int) -> bool:
    """Dimension ``k`` of shapes ``a`` and ``b`` is known to be equal: the same number or the
    same named symbol (not one generated by shape inference, ``unk__N``). (ONNX Runtime 1.32
    compares the one dimension the Gather reads: checked against its dump.)"""
    if a is None or b is None or not (0 <= k < len(a) and k < len(b)):
        return False
    da, db = a[k], b[k]
    if isinstance(da, str) and da.startswith("unk__"):
        return False
    return da is not None and da == db


def _one_element(shapes, name: str) -> bool:
    """``Is_One_Element_Input``: the inferred shape is known and holds one element."""
    s = shapes(name)
    return s is not None and all(isinstance(d, (int, np.integer)) for d in s) and \
        int(np.prod(s, dtype=np.int64)) == 1


def _shape_gather_unsqueeze(w: _Work, name: str) -> tuple | None:
    """``(unsqueeze, gather, shape)`` when ``name`` is ``Unsqueeze(Gather(Shape(t), i),
    axes=[0])`` with a whole-tensor Shape, else None."""
    unsq = w.producer(name)
    if unsq is None or unsq.op_type != "Unsqueeze" or unsq.outputs[0] != name:
        return None
    gather = w.producer(unsq.inputs[0])
    if gather is None or gather.op_type != "Gather":
        return None
    shape = w.producer(gather.inputs[0])
    if shape is None or shape.op_type != "Shape":
        return None
    if int(shape.attrs.get("start", 0)) != 0 or "end" in shape.attrs:
        return None
    if _unsqueeze_axes(w, unsq) != [0]:
        return None
    return unsq, gather, shape


def fuse_reshape(w: _Work, shapes) -> None:
    """``ReshapeFusion``: the shape input of a ``Reshape`` (``allowzero`` 0) built by a
    ``Concat`` (read once) of int64 pieces becomes one int64 initializer (named like the
    Concat's output) when every piece is

    * a constant initializer (its values),
    * ``Unsqueeze(Gather(Shape(t), k), axes=[0])`` with k the piece's position and ``t`` the
      Reshape's own input (or a tensor whose dimension k is known to equal the input's):
      ``0`` (copy that dimension),
    * a tensor of known one-element shape, or an ``Unsqueeze(axes=[0])`` of one (at most one such
      piece): ``-1``.

    The nodes that computed only the pieces are removed."""
    for reshape in [n for n in w.nodes if n.op_type == "Reshape"
                    and n.domain in ("", "ai.onnx")]:
        if int(reshape.attrs.get("allowzero", 0)) != 0 or len(reshape.inputs) < 2:
            continue
        root = reshape.inputs[0]
        concat = w.producer(reshape.inputs[1])
        if concat is None or concat.op_type != "Concat" or concat.domain not in ("", "ai.onnx"):
            continue
        if _single_reader(w, concat.outputs[0]) is None:
            continue
        value = []
        for k, piece in enumerate(concat.inputs):
            const = _int_values(w, piece)
            if const is not None:
                value.extend(const)
                continue
            chain = _shape_gather_unsqueeze(w, piece)
            if chain is not None:
                index = _int_values(w, chain[1].inputs[1])
                source = chain[2].inputs[0]
                if index is not None and len(index) == 1 and index[0] == len(value) and (
                        source == root or _same_dim(shapes(source), shapes(root), index[0])):
                    value.append(0)
                    continue
            if _one_element(shapes, piece) or _one_element_unsqueeze(w, shapes, piece):
                value.append(-1)
                continue
            break
        else:
            if value.count(-1) > 1:
                continue
            ancestors = _ancestors(w, concat)
            w.params[concat.outputs[0]] = np.array(value, np.int64)
            w.nodes.remove(concat)
            _remove_unread(w, ancestors)


def _one_element_unsqueeze(w: _Work, shapes, name: str) -> bool:
    """``Unsqueeze(axes=[0])`` of a one-element tensor, or the Shape → Gather → Unsqueeze chain
    with a one-element index."""
    chain = _shape_gather_unsqueeze(w, name)
    if chain is not None:
        return _one_element(shapes, chain[1].inputs[1])
    unsq = w.producer(name)
    if unsq is None or unsq.op_type != "Unsqueeze" or _unsqueeze_axes(w, unsq) != [0]:
        return False
    return _one_element(shapes, unsq.inputs[0])


def _ancestors(w: _Work, node: Node) -> set:
    """Names of the nodes ``node`` depends on."""
    seen, todo = set(), [node]
    while todo:
        for name in todo.pop().inputs:
            p = w.producer(name) if name else None
            if p is not None and p.name not in seen:
                seen.add(p.name)
                todo.append(p)
    return seen


def _remove_unread(w: _Work, names: set) -> None:
    """Remove, repeatedly, the nodes named in ``names`` none of whose outputs is read or a graph
    output (``RemoveNodesWithOneOutputBottomUp``)."""
    while True:
        read = {i for n in w.nodes for i in n.inputs if i} | set(w.outputs)
        dead = {n.name for n in w.nodes if n.name in names
                and not any(o in read for o in n.outputs if o)}
        if not dead:
            return
        w.nodes = [n for n in w.nodes if n.name not in dead]


def shape_through_transpose(w: _Work) -> None:
    """The transpose optimizer's Shape handler: ``Shape(Transpose(x, perm))`` (a whole-tensor
    Shape) → ``Gather(Shape(x), perm, axis=0)``; the Transpose stays while others read it."""
    for shape in [n for n in w.nodes if n.op_type == "Shape" and n.domain in ("", "ai.onnx")]:
        if int(shape.attrs.get("start", 0)) != 0 or "end" in shape.attrs:
            continue
        tr = w.producer(shape.inputs[0])
        if tr is None or tr.op_type != "Transpose" or tr.domain not in ("", "ai.onnx") \
                or "perm" not in tr.attrs:
            continue
        perm = w.fresh("const_transpose_optimizer_token")
        w.params[perm] = np.array([int(p) for p in tr.attrs["perm"]], np.int64)
        mid = w.fresh(shape.outputs[0] + "_untransposed")
        i = w.index(shape)
        w.nodes[i:i + 1] = [
            _with(shape, inputs=(tr.inputs[0],), outputs=(mid,)),
            Node(name=w.fresh(shape.name + "_gather"), op_type="Gather", inputs=(mid, perm),
                 outputs=shape.outputs, attrs={"axis": 0})]
    remove_dead_transposes(w)


def remove_dead_transposes(w: _Work) -> None:
    """Drop Transposes none of whose outputs is read or a graph output."""
    read = {i for n in w.nodes for i in n.inputs if i} | set(w.outputs)
    w.nodes = [n for n in w.nodes if n.op_type != "Transpose" or n.outputs[0] in read]

# ---------------------------------------------------------------------------------------------
# level 2: the QDQ selector/action table
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Group:
    target: Node
    dqs: tuple          # DQ nodes feeding the target, in input order
    qs: tuple           # Q nodes reading the target (or its redundant clip)
    clip: Node | None


def _group(w: _Work, node: Node) -> _Group:
    dqs = []
    for name in node.inputs:
        p = w.producer(name) if name else None
        if p is not None and p.op_type == DQ:
            dqs.append(p)
    clip = None
    readers = w.readers(node.outputs[0]) if node.outputs else []
    if len(readers) == 1 and readers[0].op_type in ("Relu", "Clip") \
            and len(w.readers(readers[0].outputs[0])) == 1 \
            and readers[0].outputs[0] not in w.outputs:
        clip = readers[0]
    end = clip if clip is not None else node
    qs = [r for r in w.readers(end.outputs[0]) if r.op_type == Q]
    if clip is not None and (len(qs) != 1 or not clip_redundant(w, clip, qs[0])):
        return _Group(node, (), (), None)
    return _Group(node, tuple(dqs), tuple(qs), clip)


def _check_nodes(w: _Work, g: _Group, num_dq: int, empty_q_ok: bool = False) -> bool:
    """``CheckQDQNodes``: every input a DQ read only by the target; the outputs read only by
    Qs; nothing a graph output."""
    if len(g.dqs) != num_dq or not g.dqs:
        return False
    for dq in g.dqs:
        if dq.outputs[0] in w.outputs or len(w.readers(dq.outputs[0])) != 1:
            return False
    if not g.qs:
        return empty_q_ok
    end = g.clip if g.clip is not None else g.target
    if any(o in w.outputs for o in g.target.outputs if o) or end.outputs[0] in w.outputs:
        return False
    return len(g.qs) == len(w.readers(end.outputs[0])) and len([o for o in g.target.outputs
                                                                if o]) == len(g.qs)


def _actual_inputs(node: Node) -> int:
    return sum(1 for i in node.inputs if i)


def _dq_params(dq: Node) -> tuple:
    """``(x, scale, zero point)`` of a DQ (zero point may be '')."""
    return (dq.inputs[0], dq.inputs[1], dq.inputs[2] if len(dq.inputs) > 2 else "")


def _apply(w: _Work, g: _Group, new: Node) -> None:
    old = [*g.dqs, g.target, *g.qs] + ([g.clip] if g.clip is not None else [])
    pos = next(j for j, n in enumerate(w.nodes) if n is g.target)
    gone = {id(n) for n in old}
    before = sum(1 for n in w.nodes[:pos] if id(n) not in gone)
    w.nodes = [n for n in w.nodes if id(n) not in gone]
    w.nodes.insert(before, new)


def _drop(w: _Work, g: _Group, allow16: bool, positive: bool) -> bool:
    if g.clip is not None or not _check_nodes(w, g, 1) or len(g.qs) != 1:
        return False
    dq, q = g.dqs[0], g.qs[0]
    if g.target.inputs[0] != dq.outputs[0]:
        return False
    t = _type_of(w, dq)
    if t != _type_of(w, q) or t in FOUR or (t in SIXTEEN and not allow16):
        return False
    if positive and not (_scalar_const(w, q.inputs[1]) and
                         float(w.params[q.inputs[1]].reshape(-1)[0]) > 0):
        return False
    if not _same_params(w, q, dq):
        return False
    ins = (dq.inputs[0],) + g.target.inputs[1:]
    _apply(w, g, _with(g.target, inputs=ins, outputs=q.outputs))
    return True


def _io_types(w: _Work, g: _Group) -> tuple:
    return tuple(_type_of(w, d) for d in g.dqs), tuple(_type_of(w, q) for q in g.qs)


def _unary(w: _Work, g: _Group) -> bool:
    if not _check_nodes(w, g, 1) or _actual_inputs(g.target) != 1 or len(g.qs) != 1:
        return False
    (ti,), (to,) = _io_types(w, g)
    if ti != to or ti not in EIGHT:
        return False
    x, s, z = _dq_params(g.dqs[0])
    q = g.qs[0]
    attrs = dict(g.target.attrs)
    if g.target.op_type == "Softmax":
        # the Softmax schema version the node resolves to (ORT: SinceVersion()): 1, 11 or 13
        attrs["opset"] = 13 if w.opset >= 13 else 11 if w.opset >= 11 else 1
    if g.target.op_type == "GlobalAveragePool":
        attrs["channels_last"] = 0
    new = Node(name=g.target.name, op_type="QLinear" + g.target.op_type,
               inputs=(x, s, z, q.inputs[1], q.inputs[2]), outputs=q.outputs,
               attrs=attrs, domain=MS)
    _apply(w, g, new)
    return True


def _binary(w: _Work, g: _Group) -> bool:
    if not _check_nodes(w, g, _actual_inputs(g.target)) or len(g.dqs) != 2 or len(g.qs) != 1:
        return False
    (a, b), (y,) = _io_types(w, g)
    if not (a == b == y) or a not in EIGHT:
        return False
    q = g.qs[0]
    dqa = next(d for d in g.dqs if d.outputs[0] == g.target.inputs[0])
    dqb = next(d for d in g.dqs if d.outputs[0] == g.target.inputs[1])
    new = Node(name=g.target.name, op_type="QLinear" + g.target.op_type,
               inputs=(*_dq_params(dqa), *_dq_params(dqb), q.inputs[1], q.inputs[2]),
               outputs=q.outputs, domain=MS)
    _apply(w, g, new)
    return True


def _where(w: _Work, g: _Group) -> bool:
    """``WhereNodeGroupSelector``: ``DQ x, DQ y → Where(condition, ·, ·) → Q``, all three of
    one 8-bit type → com.microsoft ``QLinearWhere(condition, x, s_x, z_x, y, s_y, z_y, s_z,
    z_z)``."""
    if not _check_nodes(w, g, 2) or len(g.qs) != 1 or g.clip is not None:
        return False
    dx, dy = _by_input(g, 1), _by_input(g, 2)
    if dx is None or dy is None:
        return False
    tx, ty, tz = _type_of(w, dx), _type_of(w, dy), _type_of(w, g.qs[0])
    if not (tx == ty == tz) or tx not in EIGHT:
        return False
    q = g.qs[0]
    _apply(w, g, Node(name=g.target.name, op_type="QLinearWhere", domain=MS,
                      inputs=(g.target.inputs[0], *_dq_params(dx), *_dq_params(dy),
                              q.inputs[1], q.inputs[2]), outputs=q.outputs))
    return True


def _concat(w: _Work, g: _Group) -> bool:
    if not _check_nodes(w, g, _actual_inputs(g.target)) or len(g.qs) != 1:
        return False
    ins, (y,) = _io_types(w, g)
    if len(set(ins)) != 1 or ins[0] != y or y not in EIGHT:
        return False
    q = g.qs[0]
    by_out = {d.outputs[0]: d for d in g.dqs}
    args = [q.inputs[1], q.inputs[2]]
    for name in g.target.inputs:
        args += list(_dq_params(by_out[name]))
    _apply(w, g, Node(name=g.target.name, op_type="QLinearConcat", inputs=tuple(args),
                      outputs=q.outputs, attrs=dict(g.target.attrs), domain=MS))
    return True


def _by_input(g: _Group, k: int):
    name = g.target.inputs[k] if len(g.target.inputs) > k else ""
    return next((d for d in g.dqs if name and d.outputs[0] == name), None)


def _conv(w: _Work, g: _Group) -> bool:
    if not _check_nodes(w, g, _actual_inputs(g.target)) or len(g.qs) != 1:
        return False
    dx, dw, db = _by_input(g, 0), _by_input(g, 1), _by_input(g, 2)
    if dx is None or dw is None or (len(g.dqs) == 3 and db is None):
        return False
    tx, tw, ty = _type_of(w, dx), _type_of(w, dw), _type_of(w, g.qs[0])
    if tx != ty or tx not in EIGHT or tw not in EIGHT or tx == "int8":
        return False
    if db is not None and _type_of(w, db) != "int32":
        return False
    q = g.qs[0]
    ins = (*_dq_params(dx), *_dq_params(dw), q.inputs[1], q.inputs[2])
    if db is not None:
        ins += (db.inputs[0],)
    _apply(w, g, Node(name=g.target.name, op_type="QLinearConv", inputs=ins, outputs=q.outputs,
                      attrs=dict(g.target.attrs)))
    return True


def _matmul(w: _Work, g: _Group) -> bool:
    if len(g.dqs) != 2:
        return False
    da, db = _by_input(g, 0), _by_input(g, 1)
    if da is None or db is None:
        return False
    ta, tb = _type_of(w, da), _type_of(w, db)
    if ta not in EIGHT or tb not in EIGHT or (ta == "int8"):
        return False
    if g.qs:
        if not _check_nodes(w, g, 2) or len(g.qs) != 1 or _type_of(w, g.qs[0]) != ta:
            return False
        q = g.qs[0]
        _apply(w, g, Node(name=g.target.name, op_type="QLinearMatMul",
                          inputs=(*_dq_params(da), *_dq_params(db), q.inputs[1], q.inputs[2]),
                          outputs=q.outputs))
        return True
    xa, sa, za = _dq_params(da)
    xb, sb, zb = _dq_params(db)
    _apply(w, g, Node(name=g.target.name, op_type="MatMulIntegerToFloat",
                      inputs=(xa, xb, sa, sb, za, zb), outputs=g.target.outputs, domain=MS))
    return True


def _gemm(w: _Work, g: _Group) -> bool:
    if not _check_nodes(w, g, _actual_inputs(g.target), empty_q_ok=True):
        return False
    da, db, dc = _by_input(g, 0), _by_input(g, 1), _by_input(g, 2)
    if da is None or db is None:
        return False
    ta, tb = _type_of(w, da), _type_of(w, db)
    if ta not in EIGHT or tb not in EIGHT or (ta == "int8" and tb != "int8"):
        return False
    if g.qs and _type_of(w, g.qs[0]) != ta:
        return False
    if dc is not None and (float(g.target.attrs.get("beta", 1.0)) != 1.0
                           or _type_of(w, dc) != "int32"):
        return False
    ins = (*_dq_params(da), *_dq_params(db), dc.inputs[0] if dc is not None else "")
    if g.qs:
        ins += (g.qs[0].inputs[1], g.qs[0].inputs[2])
        outs = g.qs[0].outputs
    else:
        outs = g.target.outputs
    attrs = {k: v for k, v in g.target.attrs.items() if k != "beta"}
    attrs.setdefault("transA", 0)
    attrs.setdefault("transB", 0)
    attrs.setdefault("alpha", 1.0)
    _apply(w, g, Node(name=g.target.name, op_type="QGemm", inputs=ins, outputs=outs,
                      attrs=attrs, domain=MS))
    return True


def _nbits(w: _Work, node: Node) -> bool:
    """DQ(constant 2-D 8/4-bit weight) → MatMul / Gemm → com.microsoft MatMulNBits.

    The weight ``q[K, N]`` (zero point ``zp``) is stored transposed in blocks of 32 along K:
    ``B[n, k // 32, k % 32] = q[k, n] + 128`` for int8 (``q`` for uint8), K padded with the
    zero point; one scale and one zero point per ``(n, block)`` (per tensor: repeated; per
    column: the column's)."""
    name = node.inputs[1] if len(node.inputs) > 1 else ""
    dq = w.producer(name) if name else None
    if dq is None or dq.op_type != DQ or len(w.readers(dq.outputs[0])) != 1 \
            or dq.outputs[0] in w.outputs:
        return False
    wq = w.params.get(dq.inputs[0])
    scale = w.params.get(dq.inputs[1])
    zp = w.params.get(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] else None
    if wq is None or scale is None or wq.ndim != 2 or wq.dtype.name not in EIGHT \
            or scale.dtype != np.float32:
        return False
    if len(dq.inputs) > 2 and dq.inputs[2] and zp is None:
        return False
    if int(dq.attrs.get("block_size", 0)):
        return False          # blocked 8-bit weights: not met in qsim's exports
    k, n = wq.shape
    if scale.ndim == 0 or scale.size == 1 and scale.ndim == 1 and n != 1:
        if scale.ndim != 0:
            return False
        col_scale = np.full(n, scale, np.float32)
        col_zp = np.full(n, 0 if zp is None else zp.reshape(()), wq.dtype)
    elif scale.shape == (n,) and int(dq.attrs.get("axis", 1)) == 1:
        col_scale = scale
        col_zp = np.zeros(n, wq.dtype) if zp is None else zp
    else:
        return False
    bias = ""
    if node.op_type == "Gemm":
        a = node.attrs
        if float(a.get("alpha", 1.0)) != 1.0 or int(a.get("transA", 0)) or int(a.get("transB", 0)):
            return False
        if len(node.inputs) > 2 and node.inputs[2]:
            if float(a.get("beta", 1.0)) != 1.0:
                return False
            bias = node.inputs[2]
    blocks = -(-k // NBITS_BLOCK)
    shift = 128 if wq.dtype == np.int8 else 0
    u = (wq.astype(np.int32) + shift).astype(np.uint8)
    uzp = (col_zp.astype(np.int32) + shift).astype(np.uint8)
    packed = np.repeat(uzp[:, None], blocks * NBITS_BLOCK, axis=1)
    packed[:, :k] = u.T
    base = dq.inputs[0]
    names = (w.fresh(base + "_T"), w.fresh(dq.inputs[1] + "_T"), w.fresh(base + "_zp_T"))
    w.params[names[0]] = packed.reshape(n, blocks, NBITS_BLOCK)
    w.params[names[1]] = np.repeat(col_scale.astype(np.float32), blocks)
    w.params[names[2]] = np.repeat(uzp, blocks)
    new = Node(name=node.name, op_type="MatMulNBits", domain=MS,
               inputs=(node.inputs[0], *names, "", bias) if bias else (node.inputs[0], *names),
               outputs=node.outputs,
               attrs={"K": k, "N": n, "bits": 8, "block_size": NBITS_BLOCK,
                      "accuracy_level": NBITS_ACCURACY})
    i = w.index(node)
    w.nodes[i] = new
    w.nodes.remove(dq)
    return True


def select_and_fuse(w: _Work, nbits: bool = True) -> None:
    """Walk the nodes in order; fuse each target whose group passes its selector (without the
    MatMulNBits rewrite when ``nbits`` is False)."""
    i = 0
    while i < len(w.nodes):
        node = w.nodes[i]
        op = node.op_type
        done = False
        if node.domain in ("", "ai.onnx") and op not in (Q, DQ):
            g = _group(w, node)
            if op in DROP:
                done = _drop(w, g, True, False)
            elif op in DROP_POSITIVE:
                done = _drop(w, g, False, True)
            elif op in DROP_8BIT:
                done = _drop(w, g, False, False)
            elif op in UNARY:
                done = _unary(w, g)
            elif op in BINARY:
                done = _binary(w, g)
            elif op == "Where":
                done = _where(w, g)
            elif op == "Concat":
                done = _concat(w, g)
            elif op == "Conv":
                done = _conv(w, g)
            elif op == "MatMul":
                done = _matmul(w, g) or (nbits and _nbits(w, node))
            elif op == "Gemm":
                done = _gemm(w, g) or (nbits and _nbits(w, node))
        i = w.index(node) + 1 if done else i + 1     # one pass in order, as ONNX Runtime

# ---------------------------------------------------------------------------------------------
# float fusions
# ---------------------------------------------------------------------------------------------
def fuse_nbits_bias(w: _Work, shapes) -> None:
    """``MatMulNBits → Add(·, c[N])`` (its only reader) → MatMulNBits with bias input ``c``."""
    for mm in [n for n in w.nodes if n.op_type == "MatMulNBits" and len(n.inputs) < 6]:
        add = _single_reader(w, mm.outputs[0])
        if add is None or add.op_type != "Add":
            continue
        other = add.inputs[1] if add.inputs[0] == mm.outputs[0] else add.inputs[0]
        sc = shapes(other)
        if sc is None or tuple(sc) != (int(mm.attrs["N"]),):
            continue
        ins = tuple(mm.inputs) + ("",) * (5 - len(mm.inputs)) + (other,)
        w.nodes[w.index(mm)] = _with(mm, inputs=ins, outputs=add.outputs)
        w.nodes.remove(add)


def fuse_conv_activation(w: _Work) -> None:
    """``ConvActivationFusion``: float ``Conv → act`` (the Conv's only reader) → ``FusedConv``
    with ``activation`` (and ``activation_params`` for Clip / LeakyRelu / HardSigmoid)."""
    for conv in [n for n in w.nodes if n.op_type == "Conv" and n.domain in ("", "ai.onnx")]:
        act = _single_reader(w, conv.outputs[0])
        if act is None or act.op_type not in CONV_ACTIVATIONS or act.domain not in ("", "ai.onnx"):
            continue
        attrs = dict(conv.attrs)
        attrs["activation"] = act.op_type
        if act.op_type == "Clip":
            bounds = _clip_bounds(w, act)
            if bounds is None:
                continue
            attrs["activation_params"] = [float(bounds[0]), float(bounds[1])]
        elif act.op_type == "LeakyRelu":
            attrs["activation_params"] = [float(act.attrs.get("alpha", 0.01))]
        elif act.op_type == "HardSigmoid":
            attrs["activation_params"] = [float(act.attrs.get("alpha", 0.2)),
                                          float(act.attrs.get("beta", 0.5))]
        fused = Node(name=conv.name, op_type="FusedConv", inputs=conv.inputs,
                     outputs=act.outputs, attrs=attrs, domain=MS)
        i = w.index(conv)
        w.nodes[i] = fused
        w.nodes.remove(act)


def fuse_matmul_add(w: _Work, shapes) -> None:
    """``MatMulAddFusion``: ``MatMul(A[M, K], B[K, N]) → Add(·, c[N])`` → ``Gemm(A, B, c)``
    when A is 2-D, the MatMul's only reader is the Add and c is 1-D of length N."""
    for mm in [n for n in w.nodes if n.op_type == "MatMul" and n.domain in ("", "ai.onnx")]:
        add = _single_reader(w, mm.outputs[0])
        if add is None or add.op_type != "Add":
            continue
        other = add.inputs[1] if add.inputs[0] == mm.outputs[0] else add.inputs[0]
        sa, sb, sc = shapes(mm.inputs[0]), shapes(mm.inputs[1]), shapes(other)
        if sa is None or sb is None or sc is None or len(sa) != 2 or len(sb) != 2:
            continue
        if len(sc) not in (1, 2) or (len(sc) == 1 and sc[0] != sb[1]):
            continue
        gemm = Node(name=mm.name, op_type="Gemm", inputs=(mm.inputs[0], mm.inputs[1], other),
                    outputs=add.outputs)
        i = w.index(mm)
        w.nodes[i] = gemm
        w.nodes.remove(add)


# ---------------------------------------------------------------------------------------------
# level-1 rule DivMulFusion; level-2 GemmActivationFusion and SimplifiedLayerNormFusion
# ---------------------------------------------------------------------------------------------
def fuse_div_mul(w: _Work) -> None:
    """``DivMulFusion`` (a level-1 rewrite rule): ``Mul(Div(1, d), m)`` → ``Div(m, d)`` when the
    Div's numerator is a one-element initializer equal to 1 (float, double, float16, int32 or
    int64), its output is read by exactly one edge, a Mul, and is no graph output. The Div keeps
    its name and takes the Mul's output. (``m ⊘ d`` is not ``(1 ⊘ d) ⊗ m`` in float32: this
    changes bits.)"""
    for div in [n for n in w.nodes if n.op_type == "Div" and n.domain in ("", "ai.onnx")]:
        one = w.params.get(div.inputs[0])
        if one is None or one.size != 1 or one.dtype.name not in (
                "float32", "float64", "float16", "int32", "int64") or one.reshape(-1)[0] != 1:
            continue
        mul = _single_reader(w, div.outputs[0])
        if mul is None or mul.op_type != "Mul" or mul.domain not in ("", "ai.onnx"):
            continue
        other = mul.inputs[1] if mul.inputs[0] == div.outputs[0] else mul.inputs[0]
        w.nodes[w.index(div)] = _with(div, inputs=(other, div.inputs[1]), outputs=mul.outputs)
        w.nodes.remove(mul)


#: GemmActivationFusion's activations (ONNX Runtime 1.32 fuses each of them at every opset
#: from 11 to 22: checked against its dump)
GEMM_ACTIVATIONS = frozenset({"Elu", "HardSigmoid", "LeakyRelu", "Relu", "Selu", "Sigmoid",
                              "Softplus", "Softsign", "Tanh", "ThresholdedRelu"})


def fuse_gemm_activation(w: _Work) -> None:
    """``GemmActivationFusion``: a float ``Gemm`` whose output is read by one edge, an activation
    of :data:`GEMM_ACTIVATIONS`, and is no graph output → com.microsoft ``FusedGemm`` with the
    Gemm's attributes, ``activation`` and the activation's attributes as ``activation_<name>``."""
    for gemm in [n for n in w.nodes if n.op_type == "Gemm" and n.domain in ("", "ai.onnx")]:
        act = _single_reader(w, gemm.outputs[0])
        if act is None or act.op_type not in GEMM_ACTIVATIONS \
                or act.domain not in ("", "ai.onnx"):
            continue
        attrs = dict(gemm.attrs)
        attrs["activation"] = act.op_type
        attrs.update({f"activation_{k}": v for k, v in act.attrs.items()})
        fused = Node(name=w.fresh("fused " + gemm.name, True), op_type="FusedGemm",
                     inputs=gemm.inputs, outputs=act.outputs, attrs=attrs, domain=MS)
        w.nodes[w.index(gemm)] = fused
        w.nodes.remove(act)


FLOATS = frozenset({"float16", "float32", "float64", "bfloat16"})


def _reduce_axes(w: _Work, node: Node) -> list:
    """``GetAxesFromReduceMeanNode``: the ``axes`` attribute, else a constant ``axes`` input."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) == 2 and node.inputs[1] in w.params:
        return [int(a) for a in w.params[node.inputs[1]].reshape(-1)]
    return []


def _axes_are_last(axes: list, rank: int | None) -> bool:
    """``CheckAxesOnReduceMean``: the axes (negative or, with a known rank, positive) are
    consecutive and end at the last axis."""
    axes = sorted(axes)
    if axes[-1] > 0:
        if rank is None:
            return False
        axes = sorted(a - rank if a >= 0 else a for a in axes)
    return all(b == a + 1 for a, b in zip(axes, axes[1:])) and axes[-1] == -1


def fuse_simplified_layer_norm(w: _Work, dtype_of, shapes) -> None:
    """``SimplifiedLayerNormFusion`` (CPU): ``Pow(x, ·) → ReduceMean → Add(·, eps) → Sqrt →
    Div(x, ·) → Mul(·, scale)`` → ``SimplifiedLayerNormalization(x, scale, axis, epsilon)``.

    Every input of Pow, Add, Div and Mul (ReduceMean: the data) is a float tensor; Pow,
    ReduceMean, Add, Sqrt and Div are each read by exactly one edge, the next node of the chain
    (Pow's output is no graph output); the Div's numerator is the Pow's base itself (the same
    tensor: a DQ copied per reader does not match); ReduceMean reduces one axis, the last;
    ``scale`` is the Mul input of rank 1 (the last one if both are); ``epsilon`` is the Add's
    second input when that is a float32 initializer, else 1e-5. The Pow's exponent is not
    checked. The fused node takes the Mul's outputs."""
    def floats(node: Node, first: int | None = None) -> bool:
        names = node.inputs if first is None else node.inputs[:first]
        return all(name and _dtype_name(w, name, dtype_of) in FLOATS for name in names)

    def next_of(node: Node, op: str) -> Node | None:
        reader = _single_reader(w, node.outputs[0])
        ok = reader is not None and reader.op_type == op and reader.domain in ("", "ai.onnx")
        return reader if ok else None

    for pow_ in [n for n in w.nodes if n.op_type == "Pow" and n.domain in ("", "ai.onnx")]:
        if not floats(pow_):
            continue
        mean = next_of(pow_, "ReduceMean")
        add = next_of(mean, "Add") if mean is not None and floats(mean, 1) else None
        sqrt = next_of(add, "Sqrt") if add is not None and floats(add) else None
        div = next_of(sqrt, "Div") if sqrt is not None and floats(sqrt) else None
        if div is None or not floats(div) or div.inputs[0] != pow_.inputs[0]:
            continue
        mul = _single_reader(w, div.outputs[0])        # CheckOutputEdges(div, 1)
        if mul is None or mul.op_type != "Mul" or mul.domain not in ("", "ai.onnx") \
                or not floats(mul):
            continue
        axes = _reduce_axes(w, mean)
        rank = shapes(mean.inputs[0])
        if len(axes) != 1 or not _axes_are_last(axes, None if rank is None else len(rank)):
            continue
        scale = None
        for name in mul.inputs:
            s = shapes(name)
            if s is not None and len(s) == 1:
                scale = name
        if scale is None or _dtype_name(w, pow_.inputs[0], dtype_of) == "float16":
            continue
        eps = w.params.get(add.inputs[1])
        epsilon = float(eps.reshape(-1)[0]) if eps is not None and eps.dtype == np.float32 \
            else float(np.float32(1e-5))
        fused = Node(name=w.fresh(mul.name + "/SimplifiedLayerNormFusion/", True),
                     op_type="SimplifiedLayerNormalization", inputs=(pow_.inputs[0], scale),
                     outputs=mul.outputs,
                     attrs={"axis": axes[0], "epsilon": epsilon, "stash_type": 1})
        w.nodes[w.index(mul)] = fused
        gone = {pow_.name, mean.name, add.name, sqrt.name, div.name}
        w.nodes = [n for n in w.nodes if n.name not in gone]


def _dtype_name(w: _Work, name: str, dtype_of) -> str | None:
    """The element type of a tensor: an initializer's, the graph's, or float32 for a
    DequantizeLinear output (its scale's type in the graphs rewritten here)."""
    if name in w.params:
        return w.params[name].dtype.name
    t = dtype_of(name)
    if t is not None:
        return np.dtype(t).name
    p = w.producer(name)
    if p is not None and p.op_type == DQ and p.inputs[1] in w.params:
        return w.params[p.inputs[1]].dtype.name
    return None


# ---------------------------------------------------------------------------------------------
# the whole pipeline
# ---------------------------------------------------------------------------------------------
def grids_of(w: _Work) -> dict:
    """``{integer tensor: (scale, zero point, axis)}`` read off the Q and DQ nodes (axis None
    per tensor)."""
    grids = {}
    for n in w.nodes:
        if n.op_type not in (Q, DQ) or len(n.inputs) < 3 or not n.inputs[2]:
            continue
        tensor = n.outputs[0] if n.op_type == Q else n.inputs[0]
        per_tensor = n.inputs[1] in w.params and w.params[n.inputs[1]].size == 1
        axis = None if per_tensor else int(n.attrs.get("axis", 1))
        grids.setdefault(tensor, (n.inputs[1], n.inputs[2], axis))
    return grids


def ort_graph(graph: Graph, *, with_grids: bool = False, fixed_point: bool = False):
    """The graph ONNX Runtime's default CPU session runs for the QDQ graph ``graph`` (see the
    module docstring for the rewrites, in order); with ``with_grids`` also
    ``{integer tensor: (scale name, zero point name, axis)}`` (:func:`grids_of`). With
    ``fixed_point``: the graph of the fixed-point target (:mod:`qsim.integer.fixed_target`)."""
    w = _Work(nodes=list(graph.nodes), params=dict(graph.params),
              outputs=frozenset(graph.output_names), opset=graph.opset)

    def dtype_of(name):
        return w.params[name].dtype if name in w.params else graph.dtype_of(name)

    def shape(name):
        if name in w.params:
            return w.params[name].shape
        s = graph.shape_of(name)
        if s is None:
            p = w.producer(name)
            if p is not None and p.op_type == DQ:
                s = graph.shape_of(p.inputs[0]) if p.inputs[0] not in w.params \
                    else w.params[p.inputs[0]].shape
        return s

    fold_constants(w, graph.opset, graph.shape_of)
    fuse_div_mul(w)
    unique_dq(w)
    eliminate_common(w, dtype_of)
    fold_constants(w, graph.opset, graph.shape_of)
    fuse_reshape(w, shape)
    remove_double_qdq(w)
    drop_redundant_clips(w)
    remove_double_qdq(w, after_clips=True)
    propagate(w)
    shape_through_transpose(w)
    inline_functions(w)
    s8_to_u8(w)
    grids = grids_of(w)
    select_and_fuse(w, nbits=not fixed_point)
    if fixed_point:
        from .fixed_target import fixed_point_graph
        fixed_point_graph(w)

    fuse_matmul_add(w, shape)
    fuse_nbits_bias(w, shape)
    fuse_gemm_activation(w)
    fuse_conv_activation(w)
    fuse_simplified_layer_norm(w, dtype_of, shape)
    tensors = {o for n in w.nodes for o in n.outputs} | set(w.params) | set(graph.input_names)
    grids = {t: g for t, g in grids.items() if t in tensors}
    used = {i for n in w.nodes for i in n.inputs if i} | {x for g in grids.values()
                                                          for x in g[:2]}
    params = {k: v for k, v in w.params.items() if k in used or k in w.outputs}
    out = graph.with_nodes(w.nodes, params=params)
    try:
        out = out.validate()
    except GraphError as exc:  # pragma: no cover - a rewrite bug, not user input
        raise GraphError(f"the ONNX Runtime rewrite produced an invalid graph: {exc}") from None
    return (out, grids) if with_grids else out
