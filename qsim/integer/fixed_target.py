"""``target="fixed_point"``: the integer graph of ONNX Runtime with the requantization DSPs and
NPUs use (gemmlowp / TensorFlow Lite, :mod:`qsim.integer.fixed_point`) instead of MLAS's float
multiplier.

The graph is :func:`qsim.integer.ort_fusion.ort_graph`'s, with two changes:

* every requantizing product kernel — QLinearConv, QLinearMatMul and QGemm with a quantized
  output — becomes ``FixedPointConv`` / ``FixedPointMatMul`` / ``FixedPointGemm`` (same inputs,
  same attributes);
* the Conv / MatMul / Gemm groups ONNX Runtime leaves in float because their activations are
  16-bit (``DQ(x16), DQ(w8)[, DQ(int32 b)] → op → Q(16)``) become the same kernels (ONNX
  Runtime's MatMulNBits rewrite is not applied);
* a linear layer written as MatMul + Add — ``MatMul(DQ x, DQ w) → Add(·, DQ(int32 b[N])) → Q``
  at 16 bits, or ``MatMulIntegerToFloat → Add(·, DQ(int32 b[N])) → Q`` at 8 bits — becomes
  ``FixedPointMatMul`` with the int32 bias.

Each kernel computes, per output channel ``c`` (Conv: ``M``-axis; MatMul/Gemm: column)::

    acc[c] = Σ (x - zp_x)(w[c] - zp_w[c])                   exact integers
    M[c]   = double(s_x) · double(s_w[c]) / double(s_y)      (TFLite's effective scale)
    (q[c], shift[c]) = quantize_multiplier(M[c])             Q0.31 multiplier and exponent
    y      = clamp(MBQM(acc + b[c], q[c], shift[c]) + zp_y, qmin, qmax)

with 8-bit activations: ``acc + b`` wraps in int32 and MBQM is TFLite's two-step
``RDBPOT(SRDHM(·))`` (``rounding="double"``); with 16-bit activations: int64 accumulators and
TFLite's 16x8 single rounding with a 16-bit reduced multiplier (``rounding="int64"``). Every
other node runs as in the ``onnxruntime`` target.
"""
from __future__ import annotations

import numpy as np

from ..errors import OpError
from ..ir import Node
from ..ops.nn import _pad, _windows
from ..ops.quantized import _conv_geometry
from .fixed_point import quantize_multipliers, requantize

QSIM = "qsim.integer"
_REPLACE = {"QLinearConv": "FixedPointConv", "QLinearMatMul": "FixedPointMatMul"}


def _multiplier(s_x, s_w, s_y) -> tuple[np.ndarray, np.ndarray]:
    """``quantize_multipliers(double(s_x) · double(s_w) / double(s_y))`` (1-D, one per channel)."""
    m = np.float64(np.asarray(s_x, np.float32).reshape(())) * \
        np.asarray(s_w, np.float32).astype(np.float64).reshape(-1) / \
        np.float64(np.asarray(s_y, np.float32).reshape(()))
    return quantize_multipliers(m)


def _centered(v, zp) -> np.ndarray:
    v = np.asarray(v)
    if v.dtype.kind not in "iu":
        raise OpError(f"integer operand expected, got {v.dtype}")
    return v.astype(np.int64) - (0 if zp is None else np.asarray(zp).astype(np.int64))


def _requantize(acc64: np.ndarray, x_dtype, s_x, s_w, s_y, y_zero_point, bias, axis):
    """``y = clamp(MBQM(acc + b, q, shift) + zp_y)`` (module docstring); ``acc64`` exact."""
    q, shift = _multiplier(s_x, s_w, s_y)
    zp = np.asarray(y_zero_point)
    wide = np.dtype(x_dtype).itemsize == 2
    acc = acc64 if wide else acc64.astype(np.int32)       # int32 wraps as on the target
    b = None if bias is None else np.asarray(bias, np.int64).reshape(-1)
    out = requantize(acc, q if q.size > 1 else q.reshape(()), shift if shift.size > 1
                     else shift.reshape(()), zero_point=int(zp.reshape(-1)[0]), bias=b,
                     output=zp.dtype.name, axis=axis, rounding="int64" if wide else "double")
    return out


def fixed_point_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point,
                     B=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                     pads=None, strides=None):
    """QLinearConv's integer convolution, requantized in fixed point (module docstring)."""
    x, w = np.asarray(x), np.asarray(w)
    m = w.shape[0]
    w_zp = np.asarray(w_zero_point).astype(np.int64).reshape(-1)
    wc = _centered(w, None) - (w_zp.reshape((-1,) + (1,) * (w.ndim - 1)) if w_zp.size > 1
                               else w_zp.reshape(()))
    xc = _centered(x, x_zero_point)
    g = _conv_geometry(x, w, auto_pad, dilations, strides, pads)
    nsp = x.ndim - 2
    n, channels = x.shape[0], x.shape[1]
    kernel = w.shape[2:]
    cols = _windows(_pad(xc.astype(np.float64), g["begins"], g["ends"]), kernel, g["strides"],
                    g["dilations"], g["out"])
    cols = np.moveaxis(cols, 0, 1 + nsp).reshape(int(group), channels // int(group)
                                                  * int(np.prod(kernel)), -1)
    acc = np.matmul(wc.astype(np.float64).reshape(int(group), m // int(group), -1), cols)
    acc = np.moveaxis(acc.reshape((m, n) + tuple(g["out"])), 0, 1).astype(np.int64)
    return _requantize(acc, x.dtype, x_scale, w_scale, y_scale, y_zero_point, B, axis=1)


def fixed_point_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale,
                       y_zero_point, bias=None):
    """QLinearMatMul's integer product (+ an int32 ``bias`` per column), requantized in fixed
    point per column of B."""
    a, b = np.asarray(a), np.asarray(b)
    acc = np.matmul(_centered(a, a_zero_point).astype(np.float64),
                    _centered(b, np.asarray(b_zero_point).reshape(-1) if np.size(b_zero_point) > 1
                              else b_zero_point).astype(np.float64)).astype(np.int64)
    return _requantize(acc, a.dtype, a_scale, b_scale, y_scale, y_zero_point, bias,
                       axis=acc.ndim - 1)


def fixed_point_gemm(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c=None, y_scale=None,
                     y_zero_point=None, *, alpha=1.0, transA=0, transB=0):
    """QGemm's integer product (+ int32 bias ``c``), requantized in fixed point per column."""
    if float(alpha) != 1.0:
        raise OpError(f"FixedPointGemm: alpha={alpha} is not supported (only 1)")
    a, b = np.asarray(a), np.asarray(b)
    a = a.T if int(transA) else a
    b_zp = np.asarray(b_zero_point).reshape(-1)
    b_scale = np.asarray(b_scale).reshape(-1)
    b = b.T if int(transB) else b
    acc = np.matmul(_centered(a, a_zero_point).astype(np.float64),
                    (_centered(b, None) - (b_zp if b_zp.size > 1 else b_zp[0]))
                    .astype(np.float64)).astype(np.int64)
    bias = None if c is None else np.asarray(c).reshape(-1)
    return _requantize(acc, a.dtype, a_scale, b_scale, y_scale, y_zero_point, bias, axis=1)


#: the op implementations of the fixed-point kernels (run through the interpreter's ``ops``)
FIXED_POINT_OPS = {"FixedPointConv": fixed_point_conv, "FixedPointMatMul": fixed_point_matmul,
                   "FixedPointGemm": fixed_point_gemm}


def _fuse_matmul_bias(w) -> None:
    """MatMul(+DQs) / MatMulIntegerToFloat → Add(int32 bias DQ) → Q → FixedPointMatMul."""
    from .ort_fusion import DQ, Q, _single_reader, _type_of
    for add in [n for n in w.nodes if n.op_type == "Add" and n.domain in ("", "ai.onnx")]:
        srcs = [w.producer(x) for x in add.inputs]
        if len(srcs) != 2 or any(p is None for p in srcs):
            continue
        mm = next((p for p in srcs if p.op_type in ("MatMul", "MatMulIntegerToFloat")), None)
        bdq = next((p for p in srcs if p.op_type == DQ), None)
        q = _single_reader(w, add.outputs[0])
        if mm is None or bdq is None or q is None or q.op_type != Q \
                or _single_reader(w, mm.outputs[0]) is None \
                or _single_reader(w, bdq.outputs[0]) is None:
            continue
        bias = w.params.get(bdq.inputs[0])
        if bias is None or bias.dtype != np.int32 or bias.ndim != 1:
            continue
        if mm.op_type == "MatMul":
            dqs = [w.producer(x) for x in mm.inputs]
            if any(d is None or d.op_type != DQ or _single_reader(w, d.outputs[0]) is None
                   for d in dqs):
                continue
            x, w8 = dqs[0].inputs, dqs[1].inputs
            gone = {d.name for d in dqs}
        else:
            a, b, sa, sb = mm.inputs[:4]
            za = mm.inputs[4] if len(mm.inputs) > 4 else ""
            zb = mm.inputs[5] if len(mm.inputs) > 5 else ""
            x, w8, gone = (a, sa, za), (b, sb, zb), set()
        if w8[0] not in w.params or bias.shape[0] != w.params[w8[0]].shape[-1]:
            continue
        tx = w.params[x[2]].dtype.name if x[2] in w.params else None
        if tx is None or tx != _type_of(w, q):
            continue
        new = Node(name=mm.name, op_type="FixedPointMatMul", domain=QSIM,
                   inputs=(*x[:3], *w8[:3], q.inputs[1], q.inputs[2], bdq.inputs[0]),
                   outputs=q.outputs)
        gone |= {mm.name, add.name, q.name, bdq.name}
        pos = w.index(add)
        before = sum(1 for m in w.nodes[:pos] if m.name not in gone)
        w.nodes = [m for m in w.nodes if m.name not in gone]
        w.nodes.insert(before, new)


def fixed_point_graph(w) -> None:
    """Rewrite an ONNX Runtime work graph (:class:`qsim.integer.ort_fusion._Work`, after
    ``select_and_fuse`` without MatMulNBits) in place for the fixed-point target."""
    from .ort_fusion import DQ, Q, _single_reader, _type_of, _with
    for i, n in enumerate(w.nodes):
        if n.op_type in _REPLACE:
            w.nodes[i] = _with(n, op_type=_REPLACE[n.op_type], domain=QSIM)
        elif n.op_type == "QGemm" and len(n.inputs) >= 9:
            w.nodes[i] = _with(n, op_type="FixedPointGemm", domain=QSIM)
    for node in [n for n in w.nodes if n.op_type in ("Conv", "MatMul", "Gemm")
                 and n.domain in ("", "ai.onnx")]:
        dqs = [w.producer(x) if x else None for x in node.inputs]
        if len(dqs) < 2 or any(d is None or d.op_type != DQ for d in dqs):
            continue
        q = _single_reader(w, node.outputs[0])
        tx, tw, ty = _type_of(w, dqs[0]), _type_of(w, dqs[1]), None if q is None else \
            _type_of(w, q)
        if q is None or q.op_type != Q or tx not in ("int16", "uint16") or ty != tx \
                or tw not in ("int8", "uint8") or dqs[1].inputs[0] not in w.params:
            continue
        if len(dqs) == 3 and _type_of(w, dqs[2]) != "int32":
            continue
        if any(d.outputs[0] in w.outputs or len(w.readers(d.outputs[0])) != 1 for d in dqs):
            continue
        if node.op_type == "Gemm" and float(node.attrs.get("beta", 1.0)) != 1.0:
            continue
        x, w8 = dqs[0].inputs, dqs[1].inputs
        bias = (dqs[2].inputs[0],) if len(dqs) == 3 else ()
        attrs = {k: v for k, v in node.attrs.items() if k != "beta"}
        if node.op_type == "Conv":
            new = Node(name=node.name, op_type="FixedPointConv", domain=QSIM,
                       inputs=(*x[:3], *w8[:3], q.inputs[1], q.inputs[2], *bias),
                       outputs=q.outputs, attrs=attrs)
        elif node.op_type == "MatMul":
            new = Node(name=node.name, op_type="FixedPointMatMul", domain=QSIM,
                       inputs=(*x[:3], *w8[:3], q.inputs[1], q.inputs[2]), outputs=q.outputs)
        else:
            new = Node(name=node.name, op_type="FixedPointGemm", domain=QSIM,
                       inputs=(*x[:3], *w8[:3], bias[0] if bias else "", q.inputs[1],
                               q.inputs[2]), outputs=q.outputs, attrs=attrs)
        pos = w.index(node)
        gone = {d.name for d in dqs} | {node.name, q.name}
        before = sum(1 for m in w.nodes[:pos] if m.name not in gone)
        w.nodes = [m for m in w.nodes if m.name not in gone]
        w.nodes.insert(before, new)
    _fuse_matmul_bias(w)
