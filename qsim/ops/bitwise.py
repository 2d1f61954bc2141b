"""Integer bit operations (ONNX opsets 11-28): BitwiseAnd / Or / Xor / Not and BitShift.

Calling convention as in :mod:`qsim.ops.registry`. Exact in every integer type (ONNX Runtime
runs all five on the eight integer types; BitShift on signed ones from opset 28).
"""
from __future__ import annotations

import numpy as np

from ..errors import OpError
from .elementwise import _broadcast
from .registry import register

#: the integer types ONNX Runtime's CPU kernels take
INTEGERS = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def _operands(op: str, allowed: tuple, *xs) -> list:
    """The inputs as arrays of one allowed integer type, or OpError naming what is wrong."""
    xs = [np.asarray(x) for x in xs]
    for i, x in enumerate(xs):
        if x.dtype.name not in allowed:
            raise OpError(f"{op}: input {i} has type {x.dtype}; expected one of {list(allowed)}")
    if len({x.dtype for x in xs}) > 1:
        raise OpError(f"{op}: inputs have types {[x.dtype.name for x in xs]}; they must be one "
                      f"type")
    _broadcast(op, *xs)
    return xs


def _bitwise(op: str, fn, a, b) -> np.ndarray:
    a, b = _operands(op, INTEGERS, a, b)
    return np.asarray(fn(a, b), dtype=a.dtype)


@register("BitwiseAnd")
def bitwise_and(a, b):
    """C = A & B (two's complement bits, broadcasting)."""
    return _bitwise("BitwiseAnd", np.bitwise_and, a, b)


@register("BitwiseOr")
def bitwise_or(a, b):
    """C = A | B (two's complement bits, broadcasting)."""
    return _bitwise("BitwiseOr", np.bitwise_or, a, b)


@register("BitwiseXor")
def bitwise_xor(a, b):
    """C = A ^ B (two's complement bits, broadcasting)."""
    return _bitwise("BitwiseXor", np.bitwise_xor, a, b)


@register("BitwiseNot")
def bitwise_not(x):
    """Y = ~X (every bit flipped; ``-x - 1`` for signed types)."""
    (x,) = _operands("BitwiseNot", INTEGERS, x)
    return np.asarray(np.invert(x), dtype=x.dtype)


@register("BitShift")
def bit_shift(x, y, *, direction=None):
    """Z = X << Y (``direction="LEFT"``; bits moved past the top, the sign bit included, are
    lost) or X >> Y (``"RIGHT"``: logical for unsigned types, arithmetic — sign-extending — for
    signed ones), broadcasting.

    Opset 28's rule for shifts out of range: Y < 0 or Y ≥ the type's width gives what the sign
    fill alone gives, -1 for a right shift of a negative X and 0 otherwise (ONNX Runtime 1.32
    computes the same; before opset 28 only unsigned types exist and the case was undefined)."""
    x, y = _operands("BitShift", INTEGERS, x, y)
    if direction not in ("LEFT", "RIGHT"):
        raise OpError(f"BitShift: attribute direction={direction!r}, expected 'LEFT' or 'RIGHT'")
    width = 8 * x.dtype.itemsize
    signed = x.dtype.kind == "i"
    amount = y.astype(np.int64) if signed else np.minimum(y, width).astype(np.int64)
    outside = (amount < 0) | (amount >= width)
    inside = np.where(outside, 0, amount)
    if direction == "LEFT":
        bits = x.view(np.dtype(f"uint{width}"))
        shifted = (bits << inside.astype(bits.dtype)).astype(bits.dtype).view(x.dtype)
        return np.where(outside, np.zeros((), x.dtype), shifted).astype(x.dtype)
    shifted = (x >> inside.astype(x.dtype)).astype(x.dtype)
    fill = np.where(x < 0, -1, 0).astype(x.dtype) if signed else np.zeros((), x.dtype)
    return np.where(outside, fill, shifted).astype(x.dtype)
