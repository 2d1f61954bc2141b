"""The ONNX QDQ model: the FP32 graph with QuantizeLinear → DequantizeLinear on every quantized
tensor, runnable by ONNX Runtime.

For every enabled, calibrated quantizer, on each of its tensors ``T`` (params, graph inputs,
constant inputs, activations, every tie member)::

    T ─QuantizeLinear(T_scale, T_zero_point[, axis])─▶ T_q ─DequantizeLinear(same)─▶ T_dq

and every reader of ``T`` reads ``T_dq`` (a graph output ``T`` stays named ``T``: its producer
then writes ``T_float``). The integer type and zero point are those of the 2.0.0 file
(:func:`qsim.export.entry_v2`): activations unsigned with ``zero_point = -offset``, symmetric
params signed with ``zero_point = -offset - 2^(bw-1)`` — both give the same grid, since ONNX's

    q = saturate(rint(x / scale) + zero_point),   x̂ = (q - zero_point) · scale

with ``rint`` ties-to-even is exactly qsim's ``rounding_mode="half_even"`` kernel
``q' = clamp(rint(x/delta) - offset, 0, 2^bw - 1)``, ``x̂ = (q' + offset)·delta`` (q = q' shifted
by ``2^(bw-1)`` for a signed type). Types: 8-bit (opset ≥ 13), 16-bit and 4-bit (opset 21;
the model's opset is raised with ``onnx.version_converter`` when needed). Other bitwidths have no
ONNX integer type with exactly their range: :class:`~qsim.errors.ExportError`.

Biases with a 2.0.0 int32 encoding (``quantize_bias=True``) are stored as int32 initializers
``rint(b/scale)`` read through ``DequantizeLinear`` (QuantizeLinear cannot output int32). qsim's
simulation does not quantize those biases (AIMET's does not either), so they are the one place
where the QDQ model differs from ``sim.run`` (by at most ``scale/2`` per bias value);
``quantize_bias=False`` keeps them float. Derived 2.0.0 encodings get no QDQ node: the sim does not
quantize those tensors.

Fused MatMul+Add nodes (domain ``aimet.supergroup.*``) are written back as MatMul (+ Transpose
for ``transB=1``) and Add, so that ONNX Runtime runs every op.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExportError
from .export import bias_entries, check_scales, exported_encodings, v2_signed, write_atomic
from .ir import Graph, Node
from .quant import Encoding, onnx_zero_point

FUSED_PREFIX = "aimet.supergroup"
#: (bitwidth, signed) → (ONNX TensorProto type name, minimum opset)
QDQ_TYPES = {(8, False): ("UINT8", 13), (8, True): ("INT8", 13),
             (16, False): ("UINT16", 21), (16, True): ("INT16", 21),
             (4, False): ("UINT4", 21), (4, True): ("INT4", 21)}


def unfuse(graph: Graph) -> Graph:
    """Fused ``Gemm`` nodes (domain ``aimet.supergroup.*``) back to standard ops::

        Gemm(x, W, b, transB=0) → MatMul(x, W) → Add(·, b)
        Gemm(x, W, b, transB=1) → MatMul(x, Transpose(W)) → Add(·, b)
    """
    nodes = []
    for n in graph.nodes:
        if not (n.domain or "").startswith(FUSED_PREFIX):
            nodes.append(n)
            continue
        x, w, b = n.inputs
        if n.attrs.get("transB", 0):
            wt = f"{n.name}.weight_t"
            nodes.append(Node(name=f"{n.name}.transpose", op_type="Transpose", inputs=(w,),
                              outputs=(wt,), attrs={"perm": [1, 0]}))
            w = wt
        mm = f"{n.name}.matmul_out"
        nodes.append(Node(name=n.name, op_type="MatMul", inputs=(x, w), outputs=(mm,)))
        nodes.append(Node(name=f"{n.name}.add", op_type="Add", inputs=(mm, b), outputs=n.outputs))
    return graph.with_nodes(nodes)


def qdq_type(enc: Encoding, signed: bool, tensor: str) -> tuple[str, int]:
    """ONNX type name and minimum opset of ``enc``'s grid, or ExportError naming the tensor."""
    key = (enc.bitwidth, signed)
    if key not in QDQ_TYPES:
        raise ExportError(f"tensor '{tensor}': a {enc.bitwidth}-bit encoding has no ONNX "
                          f"QuantizeLinear type (supported: 4, 8 and 16 bits)")
    return QDQ_TYPES[key]


def _tensor(onnx, name: str, type_name: str, values: np.ndarray) -> Any:
    """An initializer of ONNX type ``type_name`` holding ``values``."""
    elem = getattr(onnx.TensorProto, type_name)
    values = np.asarray(values)
    if type_name in ("INT4", "UINT4"):
        return onnx.helper.make_tensor(name, elem, list(values.shape),
                                       [int(v) for v in values.reshape(-1)])
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem)
    return onnx.numpy_helper.from_array(values.astype(dtype), name)


def qdq_pair(tensor: str, enc: Encoding, signed: bool, *, src: str, dst: str) -> tuple:
    """``([QuantizeLinear, DequantizeLinear], [scale, zero point initializers])`` reading ``src``
    and writing ``dst``: ``scale = f32(delta)``, zero point from
    :func:`qsim.quant.encoding.onnx_zero_point` in the type of :func:`qdq_type`, ``axis`` if
    per channel."""
    import onnx
    type_name, _ = qdq_type(enc, signed, tensor)
    zp = onnx_zero_point(enc, signed=signed)
    inits = [_tensor(onnx, f"{tensor}_scale", "FLOAT", np.asarray(enc.delta, dtype=np.float32)),
             _tensor(onnx, f"{tensor}_zero_point", type_name, zp)]
    axis = {} if enc.axis is None else {"axis": int(enc.axis)}
    args = [f"{tensor}_scale", f"{tensor}_zero_point"]
    nodes = [onnx.helper.make_node("QuantizeLinear", [src, *args], [f"{tensor}_q"],
                                   name=f"{tensor}_quantize", **axis),
             onnx.helper.make_node("DequantizeLinear", [f"{tensor}_q", *args], [dst],
                                   name=f"{tensor}_dequantize", **axis)]
    return nodes, inits


def _qdq_plan(sim, quantize_bias: bool):
    """``[(tensor, encoding, signed)]`` for QDQ pairs and ``{bias: 2.0.0 int32 entry}``."""
    exported = list(exported_encodings(sim))
    pairs = [(e.name, e.encoding, v2_signed(e.encoding, e.is_param)) for e in exported]
    # no Q/DQ pair with a NaN, infinite or non-positive scale (README "Non-finite data")
    check_scales({"encodings": [{"name": t, "y_scale": np.ravel(enc.delta).tolist()}
                                for t, enc, _ in pairs]})
    biases = {}
    if quantize_bias:
        biases = {b["name"]: b for b in bias_entries(sim.graph, exported).values()}
        check_scales({"encodings": list(biases.values())})
    return pairs, biases


def _base_model(sim, need: int, opset: int | None) -> Any:
    """The FP32 model (fused nodes unfused) at opset ``opset`` (default: ``need``)."""
    from onnx import version_converter
    from .onnx_io import to_onnx
    graph = unfuse(sim.graph)
    need = max(need, graph.opset, 13)
    target = need if opset is None else opset
    if target < need:
        raise ExportError(f"opset {opset} is too old for this model's QDQ types; use "
                          f"opset ≥ {need} (16-bit and 4-bit need 21)")
    model = to_onnx(graph)
    if target != graph.opset:
        try:
            model = version_converter.convert_version(model, target)
        except Exception as exc:  # the converter raises plain RuntimeError/ValueError
            raise ExportError(f"cannot convert the model from opset {graph.opset} to {target} "
                              f"for the QDQ types: {exc}") from None
    if target >= 21:
        model.ir_version = max(model.ir_version, 10)
    return model


def int32_bias(bias: str, values: np.ndarray, entry: dict) -> tuple:
    """``(DequantizeLinear node, [int32 values, scale])`` of a 2.0.0 int32 bias entry:
    ``q = clip(rint(b / scale), int32)`` (per channel along axis 0 if the entry has one)."""
    import onnx
    scale = np.asarray(entry["y_scale"], dtype=np.float32)
    q = np.clip(np.rint(np.asarray(values, dtype=np.float64) / scale.astype(np.float64)),
                -2.0 ** 31, 2.0 ** 31 - 1).astype(np.int32)
    axis = {"axis": 0} if "axis" in entry else {}
    node = onnx.helper.make_node("DequantizeLinear", [f"{bias}_int32", f"{bias}_scale"],
                                 [f"{bias}_dq"], name=f"{bias}_dequantize", **axis)
    return node, [_tensor(onnx, f"{bias}_int32", "INT32", q),
                  _tensor(onnx, f"{bias}_scale", "FLOAT", scale)]


def qdq_model(sim, *, quantize_bias: bool = True, opset: int | None = None) -> Any:
    """The QDQ ``onnx.ModelProto`` of a calibrated sim (see the module docstring).

    Each Q/DQ pair goes right after its tensor's producer (graph inputs' and initializers'
    pairs and the int32 bias DequantizeLinear nodes first); readers are rewired to ``T_dq``.
    """
    pairs, biases = _qdq_plan(sim, quantize_bias)
    need = max([qdq_type(enc, signed, t)[1] for t, enc, signed in pairs], default=13)
    model = _base_model(sim, need, opset)
    g = model.graph
    sources = {i.name for i in g.initializer} | {i.name for i in g.input}
    outputs = {o.name for o in g.output}
    renamed: dict[str, str] = {}       # tensor → what its readers read now
    new_inits, head, after = [], [], {}
    for t, enc, signed in pairs:
        is_output = t in outputs and t not in sources
        src = f"{t}_float" if is_output else t      # a graph output keeps its name after DQ
        nodes, pair_inits = qdq_pair(t, enc, signed, src=src, dst=t if is_output else f"{t}_dq")
        new_inits += pair_inits
        if is_output:
            for n in g.node:
                n.output[:] = [src if o == t else o for o in n.output]
        else:
            renamed[t] = f"{t}_dq"
        if src in sources:
            head += nodes
        else:
            after.setdefault(src, []).extend(nodes)
    for b, entry in biases.items():
        node, bias_inits = int32_bias(b, sim.graph.params[b], entry)
        head.append(node)
        new_inits += bias_inits
        renamed[b] = f"{b}_dq"
    body = []
    for n in g.node:
        n.input[:] = [renamed.get(i, i) for i in n.input]
        body.append(n)
        for o in n.output:
            body.extend(after.pop(o, []))
    if after:
        raise ExportError(f"QDQ export: tensors {sorted(after)} have an encoding but no "
                          f"producer in the model")
    del g.node[:]
    g.node.extend(head + body)
    still_read = {i for n in g.node for i in n.input} | outputs
    kept = [i for i in g.initializer if i.name in still_read]   # float biases now int32
    del g.initializer[:]
    g.initializer.extend(kept + new_inits)
    model.producer_name = "qsim"
    return model


def export_qdq(sim, path: "str | os.PathLike", *, quantize_bias: bool = True,
               opset: int | None = None) -> Path:
    """Write the QDQ model of a calibrated ``sim`` to ``path`` (atomically); returns the path."""
    if not sim.is_calibrated:
        from .errors import NotCalibratedError
        raise NotCalibratedError("export_qdq() needs encodings: call sim.compute_encodings(...) "
                                 "or sim.load_encodings(...) first")
    path = Path(path)
    if not path.parent.is_dir():
        raise ExportError(f"export folder '{path.parent}' does not exist; create it first")
    model = qdq_model(sim, quantize_bias=quantize_bias, opset=opset)
    return write_atomic(path, model.SerializeToString())
