"""The weight-scale adjustment aimet-onnx 2.42 applies after calibration (placement.md §5.2).

It makes sure the int32 bias and the requantization scale of a Conv/ConvTranspose/Gemm/MatMul
cannot overflow on the target, enlarging the weight scale where they would. With
``K = 2^31 - 2^15`` and float32 scales ``s_in`` (input 0), ``s_w`` (weight), ``s_out``/``o_out``
(output scale/offset), ``b`` the float32 bias (zeros if none), per output channel::

    s1 = f32(max(s_w, |b| / (K·s_in)))                              (float64; per-tensor: max|b|)
    if the output has an enabled effective quantizer:
        s2  = max(s1, f32(2^-23.5)·s_out/s_in)                      (float32)
        bs  = f32(s_in·s2)
        acc = rint(b/bs) + rint(o_out·s_out/bs)                     (float32, half-even)
        s3  = f32(max(s2, |acc·bs| / (K·s_in)))                     (float64; per-tensor: max)
    else: s3 = s1

Whether or not it fires, the weight encoding is rewritten in float32: ``delta = s3``, offset
kept, ``min = delta·offset``, ``max = delta·(N + offset)`` (N = 2^bw - 1, minus 1 if strict).
"""
from __future__ import annotations

import numpy as np

from .quant import Encoding

K = 2.0 ** 31 - 2.0 ** 15
WEIGHT_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_F32 = np.float32


def adjusted_weight_scale(s_w, s_in, b, *, per_channel: bool, s_out=None, o_out=None) -> np.ndarray:
    """``s3`` of the module docstring (float32 values in a float64 array, shape of ``s_w``)."""
    s_w = np.asarray(s_w, dtype=_F32).astype(np.float64)
    s_in64 = float(_F32(s_in))
    b32 = np.asarray(b, dtype=_F32)
    b_abs = np.abs(b32).astype(np.float64)
    if not per_channel:
        b_abs = np.max(b_abs, initial=0.0)
    s1 = np.maximum(s_w, b_abs / (K * s_in64)).astype(_F32)
    if s_out is None:
        return s1.astype(np.float64)
    s_in32, s_out32, o_out32 = _F32(s_in), _F32(s_out), _F32(o_out)
    floor = _F32(_F32(2.0 ** -23.5) * s_out32) / s_in32
    s2 = np.maximum(s1, floor).astype(_F32)
    bs = (s_in32 * s2).astype(_F32)
    acc = (np.rint(b32 / bs) + np.rint(_F32(o_out32 * s_out32) / bs)).astype(_F32)
    need = np.abs((acc * bs).astype(_F32)).astype(np.float64) / (K * s_in64)
    if not per_channel:
        need = np.max(need, initial=0.0)
    return np.maximum(s2.astype(np.float64), need).astype(_F32).astype(np.float64)


def rewrite_weight_encoding(enc: Encoding, delta) -> Encoding:
    """``enc`` with ``delta`` (float32), offset kept, min/max recomputed in float32."""
    n = enc.num_steps - (1 if enc.symmetric and enc.strict_symmetric else 0)
    d = np.asarray(delta, dtype=_F32).reshape(enc.delta.shape)
    o = enc.offset.astype(_F32)
    return Encoding(min=(d * o).astype(_F32), max=(d * (_F32(n) + o)).astype(_F32), delta=d,
                    offset=enc.offset, bitwidth=enc.bitwidth, symmetric=enc.symmetric,
                    strict_symmetric=enc.strict_symmetric,
                    unsigned_symmetric=enc.unsigned_symmetric, axis=enc.axis)


def adjust_weight_scales(sim) -> None:
    """Apply the adjustment to every eligible weight quantizer of ``sim`` (in place on its
    quantizers: this is the last step of calibration)."""
    placement, handles = sim.placement, sim._handles
    graph = placement.graph
    for node in graph.nodes:
        if node.op_type not in WEIGHT_OPS or len(node.inputs) < 2:
            continue
        w_qid = placement.quantizer_of.get(node.inputs[1])
        if w_qid is None or not handles[w_qid].enabled or not handles[w_qid].spec.is_param:
            continue
        in_qid = placement.effective_quantizer(node.inputs[0])
        if in_qid is None or not handles[in_qid].enabled:
            continue
        w_enc = handles[w_qid].quantizer.encoding
        s_in = float(handles[in_qid].quantizer.encoding.delta)
        bias_name = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else None
        n_out = w_enc.delta.shape[0] if w_enc.axis is not None else 1
        b = (np.asarray(graph.params[bias_name], dtype=_F32).reshape(-1) if bias_name in graph.params
             else np.zeros(n_out, dtype=_F32))
        out_qid = placement.effective_quantizer(node.outputs[0])
        s_out = o_out = None
        if out_qid is not None and handles[out_qid].enabled:
            out_enc = handles[out_qid].quantizer.encoding
            s_out, o_out = float(out_enc.delta), float(out_enc.offset)
        s3 = adjusted_weight_scale(w_enc.delta, s_in, b, per_channel=w_enc.axis is not None,
                                   s_out=s_out, o_out=o_out)
        handles[w_qid].quantizer.encoding = rewrite_weight_encoding(w_enc, s3)
