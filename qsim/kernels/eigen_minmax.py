"""ONNX Runtime's Max/Min (opset 8 and later) bit for bit: which operand a tie or a NaN returns.

ORT folds the inputs left to right, ``acc = f(acc, x_k)``, each step a broadcast over *spans*
(:func:`span_and_functor`) that evaluates an Eigen expression ``a.max<PropagateNaN>(b)`` per
span. The result differs from ``np.maximum`` only in which operand comes back when both are
equal (+0 and -0) or one is NaN:

    f(a, b) = a             if a is NaN
              b             if b is NaN
              b             if a == b and the element is in an SSE packet of the span
              a             if a == b and the element is computed alone
              max(a, b)     otherwise                                   (min likewise)

(the packet form is ``select(a == a, maxps(a, b), a)``, and ``maxps`` returns its second operand
on a tie or a NaN; the scalar form is ``std::max(a, b) = a < b ? b : a``). Which of the two
inputs is ``a`` depends on the span's functor: the span of input 1 against a repeated input 0
computes ``x1.max(scalar x0)`` (``a`` = input 1), every other span ``x0.max(x1)``.

Eigen writes a span of ``S`` elements starting at output offset ``o`` in three pieces: elements
up to the first 16-byte-aligned one one at a time (``h = min((-o) mod P, S)``, ``P`` = 16 bytes /
item size: 4 for float32, 2 for float64), then whole packets of ``P``, then the remaining
``(S - h) mod P`` one at a time. Outputs start 16-byte aligned (ORT's allocator). float16 has
no SSE packets: every element is computed alone. Integer ties are the same bits either way.
"""
from __future__ import annotations

import numpy as np

#: the functors of ORT's ProcessBroadcastSpanFuncs
INPUT0_SCALAR, INPUT1_SCALAR, GENERAL = "input0scalar", "input1scalar", "general"

#: SSE packet size (elements in 16 bytes) per float dtype; float16 is never vectorized
PACKET = {np.dtype(np.float32): 4, np.dtype(np.float64): 2}


def _first_run(steps: list[tuple[int, int]]) -> tuple[int, bool]:
    """``(count, repeated)`` of one input's innermost run of axes: the product of the output
    dimensions, innermost first, while the input's "is this axis > 1" stays as on the first
    axis; ``steps`` are ``(input dim, output dim)`` from the innermost axis ORT starts at."""
    first_dim, count = steps[0]
    moving = first_dim > 1
    for dim, out in steps[1:]:
        if (dim > 1) != moving:
            break
        count *= out
    return count, not moving


def span_and_functor(shape0: tuple[int, ...], shape1: tuple[int, ...]) -> tuple[int, str]:
    """``(span size, functor)`` of ORT's Broadcaster for inputs of ``shape0`` and ``shape1``
    (non-empty output).

    ORT walks the axes from the innermost. It starts at the first axis whose output dimension
    is > 1 (but at the latest at the last axis both shapes have; at the innermost if one input
    is a scalar), then skips the axes both shapes have whose output dimension is 1; the leading
    axes only the longer shape has are all visited. Each input's first run continues while its
    dimension (1 where the input has no such axis) stays > 1 (moving) or stays 1 (repeated);
    the span is the shorter of the two runs. The functor is ``input0scalar`` if input 0 is
    repeated in its first run, else ``input1scalar`` if input 1 is, else ``general``.

    >>> span_and_functor((3, 5), (5,))
    (5, 'general')
    >>> span_and_functor((3, 1), (1,))
    (1, 'input0scalar')
    >>> span_and_functor((3, 1, 5), (1,))
    (5, 'input1scalar')
    """
    r = max(len(shape0), len(shape1))
    rmin = min(len(shape0), len(shape1))
    if r == 0:                                 # two scalars
        return 1, INPUT0_SCALAR
    s0 = (1,) * (r - len(shape0)) + tuple(shape0)
    s1 = (1,) * (r - len(shape1)) + tuple(shape1)
    out = [max(a, b) for a, b in zip(s0, s1)]
    start = 0                                  # position counted from the innermost axis
    while start < rmin - 1 and out[r - 1 - start] <= 1:
        start += 1
    visited = [r - 1 - p for p in range(start, r) if p == start or p >= rmin or out[r - 1 - p] > 1]
    count0, rep0 = _first_run([(s0[k], out[k]) for k in visited])
    count1, rep1 = _first_run([(s1[k], out[k]) for k in visited])
    functor = INPUT0_SCALAR if rep0 else INPUT1_SCALAR if rep1 else GENERAL
    return min(count0, count1), functor


def packet_positions(index: np.ndarray, span: int, packet: int) -> np.ndarray:
    """Whether Eigen computes the output elements at flat ``index`` inside SSE packets of
    ``packet`` (a power of 2) elements when it writes spans of ``span`` elements to a
    16-byte-aligned output: per span starting at ``o``, positions
    ``h <= j < h + (span - h) // packet * packet`` with ``h = min((-o) mod packet, span)``.

    >>> packet_positions(np.arange(10), 5, 4).astype(int).tolist()
    [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    """
    j = index % span
    head = np.minimum((j - index) & (packet - 1), span)
    return (j >= head) & (j < head + (span - head) // packet * packet)


def fold_step(x0: np.ndarray, x1: np.ndarray, maximum: bool) -> np.ndarray:
    """One step ``f(x0, x1)`` of ORT's Max (``maximum``) or Min fold, float inputs of one dtype
    that broadcast (formula in the module docstring)."""
    out = np.asarray(np.maximum(x0, x1) if maximum else np.minimum(x0, x1))
    # only a NaN or a zero result can come from the "wrong" operand: done without them
    if out.size == 0 or not (np.isnan(out).any() or (out == 0).any()):
        return out
    span, functor = span_and_functor(x0.shape, x1.shape)
    a, b = np.broadcast_to(x0, out.shape), np.broadcast_to(x1, out.shape)
    if functor == INPUT0_SCALAR:
        a, b = b, a
    # ties that matter: +0 against -0 (equal values otherwise have equal bits)
    tie = (a == b) & (np.signbit(a) != np.signbit(b))
    if tie.any():
        packet = PACKET.get(out.dtype)
        in_packet = (np.zeros(1, bool) if packet is None
                     else packet_positions(np.flatnonzero(tie), span, packet))
        out[tie] = np.where(in_packet, b[tie], a[tie])
    for operand in (b, a):              # a NaN a wins over a NaN b
        nan = np.isnan(operand)
        if nan.any():
            out[nan] = operand[nan]
    return out


def max_min(inputs, maximum: bool) -> np.ndarray:
    """ORT's Max (``maximum``) or Min of float ``inputs`` (2 or more, one dtype, broadcasting):
    ``f(...f(f(x0, x1), x2)..., xn)`` with :func:`fold_step`."""
    acc = np.asarray(inputs[0])
    for x in inputs[1:]:
        acc = fold_step(acc, np.asarray(x), maximum)
    return acc
