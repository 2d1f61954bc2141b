"""Per-channel epilogues: the ops after a Conv that the Conv may compute in its bias pass.

A float32 Conv output ``Y (N, M, *spatial)`` is often read by one chain of per-channel ops
(BatchNormalization, Mul or Add by a constant per-channel vector, Relu), each of which is one
more pass over the whole tensor. Every one of them is, per element, float32 operations on ``y``
and a value of its channel:

* ``Mul(Y, p)``: ``y · p[m]`` (one rounding);
* ``Add(Y, p)``: ``y + p[m]`` (one rounding);
* ``BatchNormalization`` (inference): ``y · s[m]`` then ``+ shift[m]`` (two roundings; ``s`` and
  ``shift`` exactly as :func:`qsim.ops.nn.batch_normalization` computes them);
* ``Relu``: ``0 if y < 0 else y``.

So the chain is a tuple of :class:`Step` that the Conv applies to each output row while it is
still in cache (:func:`qsim.kernels.gemm.conv`): the same operations in the same order, so the
same bits as running the nodes. The executor (:mod:`qsim.interpreter`) decides where a chain
applies; this module says which nodes are steps and what their per-channel values are.

Only finite constants become steps: with a NaN constant the product's NaN payload could depend
on the operand order, which a step does not keep.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from ..ir import Node
from ..kernels.gemm import STEP_ADD as ADD, STEP_MUL as MUL, STEP_RELU as RELU


@dataclass(frozen=True)
class Step:
    """One per-channel operation: ``code`` (:data:`MUL`, :data:`ADD` or :data:`RELU`) and, for
    MUL/ADD, the float32 value of each of the ``M`` channels (read-only)."""

    code: int
    values: np.ndarray | None = None


def _channel_vector(value: np.ndarray, channels: int, rank: int) -> np.ndarray | None:
    """``value`` as one float32 per channel if it broadcasts against ``(N, channels, *spatial)``
    (rank ``rank``) without changing that shape and varies at most along axis 1; else None."""
    if value.dtype != np.float32 or value.ndim > rank:
        return None
    shape = (1,) * (rank - value.ndim) + value.shape
    if shape[0] != 1 or any(d != 1 for d in shape[2:]) or shape[1] not in (1, channels):
        return None
    vector = np.ascontiguousarray(np.broadcast_to(value.reshape(-1), (channels,)))
    if not np.isfinite(vector).all():
        return None
    vector.flags.writeable = False
    return vector


def batch_norm_affine(scale, b, mean, var, *, epsilon):
    """Inference batch norm as ``Y = X · s + shift``, computed as ONNX Runtime does (each step
    rounded in the parameters' dtype, bit for bit): ``s = (1 / sqrt(var + epsilon)) · scale``,
    ``shift = B - mean · s``."""
    t = np.asarray(var).dtype.type
    inv_std = t(1) / np.sqrt(var + t(epsilon))
    s = inv_std * scale
    return s, b - mean * s


def node_steps(node: Node, x: str, constant: Callable[[str], "np.ndarray | None"],
               channels: int, rank: int) -> tuple[Step, ...] | None:
    """The steps computing ``node`` from its input tensor ``x`` (a float32 ``(N, channels, ...)``
    tensor of rank ``rank``), or None if ``node`` is not a per-channel epilogue of ``x``.
    ``constant(name)`` gives a constant input's value (None for a computed tensor)."""
    outputs = [o for o in node.outputs if o]
    if len(outputs) != 1 or len(node.outputs) != 1:
        return None
    if node.op_type == "Relu" and list(node.inputs) == [x]:
        return (Step(RELU),)
    if node.op_type in ("Mul", "Add") and len(node.inputs) == 2 and node.inputs.count(x) == 1:
        other = constant(node.inputs[1] if node.inputs[0] == x else node.inputs[0])
        vector = None if other is None else _channel_vector(np.asarray(other), channels, rank)
        if vector is None:
            return None
        return (Step(MUL if node.op_type == "Mul" else ADD, vector),)
    if node.op_type == "BatchNormalization" and len(node.inputs) == 5 and node.inputs[0] == x:
        return _batch_norm_steps(node, constant, channels)
    return None


def _batch_norm_steps(node: Node, constant, channels: int) -> tuple[Step, ...] | None:
    """BatchNormalization in inference form with constant float32 per-channel parameters."""
    attrs: Mapping = node.attrs
    if attrs.get("training_mode", 0) or attrs.get("spatial", 1) != 1 \
            or attrs.get("is_test", 1) != 1:
        return None
    params = [constant(name) for name in node.inputs[1:]]
    if any(p is None or p.dtype != np.float32 or p.shape != (channels,) for p in params):
        return None
    s, shift = batch_norm_affine(*params, epsilon=attrs.get("epsilon", 1e-5))
    vectors = [_channel_vector(v, channels, 2) for v in (s, shift)]
    if any(v is None for v in vectors):
        return None
    return Step(MUL, vectors[0]), Step(ADD, vectors[1])


def apply_steps(y: np.ndarray, steps: tuple[Step, ...]) -> None:
    """NumPy twin of the steps: ``y`` ``(N, M, P)`` float32, updated in place, one pass per
    step."""
    for step in steps:
        if step.code == MUL:
            y *= step.values.reshape(-1, 1)
        elif step.code == ADD:
            y += step.values.reshape(-1, 1)
        else:
            np.copyto(y, np.float32(0.0), where=y < 0)


def packed(steps: tuple[Step, ...], channels: int) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, values)`` for the compiled kernel: ``codes`` int64 ``(S,)``, ``values`` float32
    ``(S, channels)`` (zeros for RELU)."""
    codes = np.array([s.code for s in steps], dtype=np.int64)
    values = np.zeros((len(steps), channels), dtype=np.float32)
    for i, s in enumerate(steps):
        if s.values is not None:
            values[i] = s.values
    return codes, values
