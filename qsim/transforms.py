"""Graph → graph transforms applied before simulation. Each returns a new graph; none mutates.

:func:`fold_batch_norms` folds inference-mode ``BatchNormalization`` nodes into the weights and
bias of an adjacent Conv / ConvTranspose / Gemm, as AIMET's ``fold_all_batch_norms_to_weight``
does before it builds a quantization simulation.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np

from .ir import Graph, Node

#: ops whose output a following BatchNormalization can be folded into
_FOLD_INTO_OUTPUT = ("Conv", "ConvTranspose", "Gemm")


@dataclass(frozen=True, kw_only=True)
class Fold:
    """One folded pair: the layer that absorbed the batch norm and the batch norm removed.

    ``direction`` is ``"conv_bn"`` (the BN followed the layer) or ``"bn_conv"`` (the BN preceded
    a Conv).
    """

    conv: str
    bn: str
    direction: str


# ---- the arithmetic (float32 throughout, the order AIMET uses) --------------------------------

def bn_scale(gamma, var, eps) -> np.ndarray:
    """Per-channel scale ``s = γ / sqrt(running_var + eps)``, in float32.

    Computed in float32 like AIMET (float64 would differ from AIMET's folded weights by 1 ulp).

    >>> bn_scale(np.float32([2.0]), np.float32([3.0]), 1.0)
    array([1.], dtype=float32)
    """
    return (gamma / np.sqrt(var + np.float32(eps))).astype(np.float32)


def fold_into_output_channels(w, b, *, gamma, beta, mean, var, eps, out_axis_shape):
    """BN after a layer: ``W' = W·s`` per output channel, ``b' = β + (b − μ)·s``.

    ``out_axis_shape`` reshapes ``s`` so it broadcasts over ``W``'s output channels
    (e.g. ``(-1, 1, 1, 1)`` for Conv). ``b`` is zeros when the layer had no bias.
    """
    s = bn_scale(gamma, var, eps)
    w_new = (w * s.reshape(out_axis_shape)).astype(np.float32)
    b_new = (beta + (b - mean) * s).astype(np.float32)
    return w_new, b_new


def fold_into_input_channels(w, b, *, gamma, beta, mean, var, eps):
    """BN before an unpadded, ungrouped Conv: ``W' = W·s`` per input channel and
    ``b' = b + Σ_{c,k} W[o,c,k]·(β − μ·s)[c]`` (the BN's shift pushed through the conv)."""
    s = bn_scale(gamma, var, eps)
    shift = (beta - mean * s).astype(np.float32)
    channel = (1, -1) + (1,) * (w.ndim - 2)
    w_new = (w * s.reshape(channel)).astype(np.float32)
    b_new = (b + (w * shift.reshape(channel)).sum(axis=tuple(range(1, w.ndim)))).astype(np.float32)
    return w_new, b_new


def _convtranspose_out_shape(w: np.ndarray, group: int) -> tuple:
    """How ``s`` broadcasts over ConvTranspose weights ``(C_in, C_out/group, k...)`` viewed as
    ``(group, C_in/group, C_out/group, k...)``: output channel ``o = g·C_out/group + j`` is
    column ``j`` of the rows of group ``g``."""
    return (group, 1, w.shape[1]) + (1,) * (w.ndim - 2)


# ---- legality --------------------------------------------------------------------------------

def _bn_params(graph: Graph, bn: Node):
    """``(γ, β, μ, σ², eps)`` if ``bn`` is an inference-mode BN with constant parameters."""
    if bn.op_type != "BatchNormalization" or len(bn.inputs) < 5:
        return None
    if bn.attrs.get("training_mode", 0) or len([o for o in bn.outputs if o]) != 1:
        return None
    if not all(name in graph.params for name in bn.inputs[1:5]):
        return None
    gamma, beta, mean, var = (np.asarray(graph.params[n], dtype=np.float32) for n in bn.inputs[1:5])
    if gamma.ndim != 1 or not beta.shape == mean.shape == var.shape == gamma.shape:
        return None
    return gamma, beta, mean, var, float(bn.attrs.get("epsilon", 1e-5))


def _only_reader(graph: Graph, consumers: Mapping, tensor: str, node: Node) -> bool:
    """``tensor`` is read by ``node`` alone and is not a graph output."""
    readers = consumers.get(tensor, [])
    return (len(readers) == 1 and readers[0].name == node.name
            and tensor not in graph.output_names)


def _owned_param(graph: Graph, consumers: Mapping, name: str, node: Node) -> bool:
    """``name`` is a parameter read only by ``node`` (so changing it changes nothing else)."""
    return name in graph.params and len(consumers.get(name, [])) == 1 \
        and consumers[name][0].name == node.name


def _layer_weights(graph: Graph, consumers: Mapping, layer: Node):
    """``(W, b or None)`` of a Conv/ConvTranspose/Gemm whose weight and bias are owned params."""
    if len(layer.inputs) < 2 or not _owned_param(graph, consumers, layer.inputs[1], layer):
        return None
    bias_name = layer.inputs[2] if len(layer.inputs) > 2 and layer.inputs[2] else None
    if bias_name is not None and not _owned_param(graph, consumers, bias_name, layer):
        return None
    w = np.asarray(graph.params[layer.inputs[1]])
    b = None if bias_name is None else np.asarray(graph.params[bias_name])
    if w.dtype != np.float32 or (b is not None and b.dtype != np.float32):
        return None
    return w, b


def _output_channel_shape(layer: Node, w: np.ndarray, b, channels: int):
    """How ``s`` broadcasts over ``W``'s output channels, or None if the layer cannot absorb it."""
    if layer.op_type == "Conv":
        shape = (-1,) + (1,) * (w.ndim - 1)
        n_out = w.shape[0]
    elif layer.op_type == "ConvTranspose":
        group = int(layer.attrs.get("group", 1))
        shape = _convtranspose_out_shape(w, group)
        n_out = w.shape[1] * group
    else:  # Gemm: Y = A·op(B) + C; only the plain form alpha = beta = 1 folds exactly
        if layer.attrs.get("alpha", 1.0) != 1.0 or layer.attrs.get("beta", 1.0) != 1.0 \
                or w.ndim != 2:
            return None
        trans_b = int(layer.attrs.get("transB", 0))
        shape = (-1, 1) if trans_b else (1, -1)
        n_out = w.shape[0] if trans_b else w.shape[1]
    if n_out != channels or (b is not None and b.shape != (channels,)):
        return None
    return shape


def _unpadded_plain_conv(layer: Node) -> bool:
    pads = layer.attrs.get("pads")
    auto_pad = layer.attrs.get("auto_pad", "NOTSET")
    return (layer.op_type == "Conv" and int(layer.attrs.get("group", 1)) == 1
            and (pads is None or not any(pads)) and auto_pad in ("NOTSET", "VALID"))


# ---- the pass --------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class _Rewrite:
    """What one fold changes: the layer node as rewritten, its new weight and bias values, and
    (layer → BN only) the BN output that its readers now read under another name."""

    layer: Node
    weight: np.ndarray
    bias: np.ndarray
    fold: Fold
    rename: tuple[str, str] | None = None


def _with_bias_slot(layer: Node, taken: set) -> list[str]:
    """The layer's inputs with a bias name filled in (``<layer>.bias``, made unique) if absent."""
    inputs = list(layer.inputs) + [""] * (3 - len(layer.inputs))
    if not inputs[2]:
        name, i = f"{layer.name}.bias", 1
        while name in taken:
            name, i = f"{layer.name}.bias_{i}", i + 1
        taken.add(name)
        inputs[2] = name
    return inputs


def _fold_layer_then_bn(graph: Graph, producers, consumers, bn: Node, taken: set):
    """Conv/ConvTranspose/Gemm → BN, or None if this pair cannot fold."""
    bnp = _bn_params(graph, bn)
    layer = producers.get(bn.inputs[0]) if bnp else None
    if layer is None or layer.op_type not in _FOLD_INTO_OUTPUT or len(layer.outputs) != 1 \
            or not _only_reader(graph, consumers, bn.inputs[0], bn):
        return None
    wb = _layer_weights(graph, consumers, layer)
    if wb is None:
        return None
    (w, b), (gamma, beta, mean, var, eps) = wb, bnp
    shape = _output_channel_shape(layer, w, b, gamma.shape[0])
    if shape is None:
        return None
    w_view = w  # ConvTranspose: view (C_in, C_out/g, k...) as (g, C_in/g, C_out/g, k...)
    if layer.op_type == "ConvTranspose":
        w_view = w.reshape((shape[0], w.shape[0] // shape[0]) + w.shape[1:])
    w_new, b_new = fold_into_output_channels(
        w_view, np.zeros(gamma.shape, np.float32) if b is None else b, gamma=gamma, beta=beta,
        mean=mean, var=var, eps=eps, out_axis_shape=shape)
    inputs = _with_bias_slot(layer, taken)
    if bn.outputs[0] in graph.output_names:  # graph outputs keep their names
        new_layer, rename = replace(layer, inputs=tuple(inputs), outputs=bn.outputs), None
    else:  # like AIMET: the layer keeps its output name, the BN's readers read it
        new_layer, rename = replace(layer, inputs=tuple(inputs)), (bn.outputs[0], layer.outputs[0])
    return _Rewrite(layer=new_layer, weight=w_new.reshape(w.shape), bias=b_new, rename=rename,
                    fold=Fold(conv=layer.name, bn=bn.name, direction="conv_bn"))


def _fold_bn_then_conv(graph: Graph, consumers, bn: Node, taken: set):
    """BN → unpadded, ungrouped Conv, or None if this pair cannot fold."""
    bnp = _bn_params(graph, bn)
    readers = consumers.get(bn.outputs[0], []) if bnp else []
    if len(readers) != 1 or bn.outputs[0] in graph.output_names:
        return None
    conv = readers[0]
    if not _unpadded_plain_conv(conv) or conv.inputs[0] != bn.outputs[0] \
            or bn.outputs[0] in conv.inputs[1:]:
        return None
    wb = _layer_weights(graph, consumers, conv)
    if wb is None or wb[0].ndim < 3 or wb[0].shape[1] != bnp[0].shape[0]:
        return None
    (w, b), (gamma, beta, mean, var, eps) = wb, bnp
    w_new, b_new = fold_into_input_channels(
        w, np.zeros(w.shape[0], np.float32) if b is None else b,
        gamma=gamma, beta=beta, mean=mean, var=var, eps=eps)
    inputs = _with_bias_slot(conv, taken)
    inputs[0] = bn.inputs[0]
    return _Rewrite(layer=replace(conv, inputs=tuple(inputs)), weight=w_new, bias=b_new,
                    fold=Fold(conv=conv.name, bn=bn.name, direction="bn_conv"))


def _apply(graph: Graph, rewrites: list[_Rewrite]) -> Graph:
    """The graph with every rewrite applied: BN nodes dropped, layers replaced, readers renamed,
    new weights stored and the removed BNs' now unused parameters dropped."""
    removed = {r.fold.bn for r in rewrites}
    layers = {r.layer.name: r.layer for r in rewrites}
    renames = dict(r.rename for r in rewrites if r.rename is not None)
    nodes = []
    for n in graph.nodes:
        if n.name in removed:
            continue
        n = layers.get(n.name, n)
        if any(i in renames for i in n.inputs):
            n = replace(n, inputs=tuple(renames.get(i, i) for i in n.inputs))
        nodes.append(n)
    params = dict(graph.params)
    for r in rewrites:
        params[r.layer.inputs[1]] = r.weight
        params[r.layer.inputs[2]] = r.bias
    used = {i for n in nodes for i in n.inputs} | set(graph.output_names)
    bn_params = {p for n in graph.nodes if n.name in removed for p in n.inputs[1:]}
    params = {k: v for k, v in params.items() if k in used or k not in bn_params}
    value_info = {k: v for k, v in graph.value_info.items() if k not in renames}
    return graph.with_nodes(nodes, params=params, value_info=value_info).validate()


def fold_batch_norms(graph: Graph) -> tuple[Graph, list[Fold]]:
    """Fold every foldable BatchNormalization into its neighbouring layer.

    First, Conv/ConvTranspose/Gemm → BN pairs (the layer's output feeds only that BN):
    ``W' = W·s`` per output channel and ``b' = β + (b − μ)·s``, with ``s = γ/sqrt(σ² + eps)``.
    Then BN → Conv pairs (the BN's output feeds only that Conv, which is unpadded and not
    grouped): ``W' = W·s`` per input channel and ``b' = b + Σ W·(β − μ·s)``.
    A layer absorbs at most one BN; its weight and bias must be parameters no other node reads.
    Weights and biases keep their names (a new bias is ``<layer>.bias``); the BN node goes away.
    Tensor names follow AIMET: for a layer → BN pair the layer keeps its output name and the BN's
    readers read it instead, unless the BN's output is a graph output, which then keeps its name.
    Returns the new graph (``graph`` itself if nothing folds) and the folds, in graph order.
    """
    producers, consumers = graph.producers(), graph.consumers()
    taken = set(graph.params) | set(graph.input_names) \
        | {t for n in graph.nodes for t in (*n.inputs, *n.outputs)}
    rewrites: list[_Rewrite] = []
    for bn in graph.nodes:
        r = _fold_layer_then_bn(graph, producers, consumers, bn, taken)
        if r is not None and r.layer.name not in {x.layer.name for x in rewrites}:
            rewrites.append(r)
    for bn in graph.nodes:
        if bn.name in {x.fold.bn for x in rewrites}:
            continue
        r = _fold_bn_then_conv(graph, consumers, bn, taken)
        if r is not None and r.layer.name not in {x.layer.name for x in rewrites}:
            rewrites.append(r)
    if not rewrites:
        return graph, []
    order = {n.name: i for i, n in enumerate(graph.nodes)}
    folds = sorted((r.fold for r in rewrites), key=lambda f: order[f.conv])
    return _apply(graph, rewrites), folds
