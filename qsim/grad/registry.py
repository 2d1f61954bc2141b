"""The backward registry: ONNX op type → vector-Jacobian product (VJP), one small function each.

Calling convention::

    @register_vjp("Relu", saves=("outputs",))
    def relu(gy, *, inputs, outputs, **attrs):
        return (gy * (outputs[0] > 0),)

* ``gy`` is the gradient arriving at output 0 (multi-output ops get ``gys``, a tuple, instead:
  ``multi=True``); attributes come as keywords with ONNX's defaults.
* ``saves`` says which forward values the VJP reads: ``"inputs"`` and/or ``"outputs"``. The
  training forward keeps only those (memory: a Relu keeps its output, an Add keeps nothing but
  the input shapes).
* It returns one gradient per node input (float32, the input's shape), None for an input that
  gets no gradient (shapes, indices, absent optionals).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Vjp:
    """A registered backward: ``fn`` and what of the forward it needs."""

    fn: Callable
    saves: frozenset
    multi: bool


#: op type → its backward. Filled by the ``@register_vjp`` decorators of qsim.grad.ops.
VJPS: dict[str, Vjp] = {}


def register_vjp(op_type: str, *, saves=(), multi: bool = False):
    """Register the VJP of ``op_type``; ``saves`` ⊆ {"inputs", "outputs"}."""

    def deco(fn):
        if op_type in VJPS:
            raise RuntimeError(f"backward of {op_type} registered twice")
        VJPS[op_type] = Vjp(fn=fn, saves=frozenset(saves), multi=multi)
        return fn

    return deco


def unbroadcast(g: np.ndarray, shape) -> np.ndarray:
    """Sum ``g`` over the axes NumPy broadcasting added or stretched to reach ``g.shape`` from
    ``shape`` (the VJP of broadcasting), float32."""
    shape = tuple(shape)
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, n in enumerate(shape)
                                      if n == 1 and g.shape[lead + i] != 1)
    if axes:
        g = g.sum(axis=axes, dtype=np.float32)
    return np.array(g.reshape(shape), dtype=np.float32)
