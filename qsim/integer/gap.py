"""The gap between the float simulation and the integer target, per quantized tensor.

For every enabled quantizer's tensor ``T`` (parameters first, then in the simulated graph's
order), with ``x_sim`` the sim's quantize-dequantized value and ``x_int`` the integer model's
value dequantized on its own grid (``float32(q - zp) ⊗ s``)::

    d = rint(|x_sim - x_int| / Δ)            (float64; Δ the sim's scale, per channel on its axis)

counted as ``d = 0``, ``1``, ``2``, ``> 2`` LSB, with the maximum. The **first** tensor is the
earliest one (in that order) with any ``d > 0``: where the target starts to drift. A tensor the
integer model does not keep (fused away with no integer form) is left out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np


@dataclass(frozen=True)
class TensorGap:
    """One tensor: how many elements differ by 0, 1, 2 and more than 2 LSB, and the maximum."""

    tensor: str
    counts: tuple[int, int, int, int]
    max_lsb: int

    @property
    def size(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True)
class GapReport:
    """The per-tensor gaps in graph order and the first tensor that differs (None: none)."""

    tensors: tuple[TensorGap, ...]
    first: str | None

    def table(self) -> str:
        """A plain-text table: one row per tensor."""
        width = max([len(t.tensor) for t in self.tensors] + [6])
        head = f"{'tensor':<{width}}  {'0 LSB':>9} {'1 LSB':>9} {'2 LSB':>9} {'>2 LSB':>9} {'max':>6}"
        rows = [head, "-" * len(head)]
        for t in self.tensors:
            c = t.counts
            rows.append(f"{t.tensor:<{width}}  {c[0]:>9} {c[1]:>9} {c[2]:>9} {c[3]:>9} "
                        f"{t.max_lsb:>6}")
        rows.append(f"first tensor that differs: {self.first or 'none'}")
        return "\n".join(rows)


def lsb_counts(sim_value: np.ndarray, target_value: np.ndarray, delta, axis) -> tuple:
    """``((n0, n1, n2, n_more), max)`` of ``rint(|sim - target| / Δ)`` (float64).

    >>> lsb_counts(np.array([0., 1., 3.]), np.array([0., 0., 0.]), 1.0, None)
    ((1, 1, 0, 1), 3)
    """
    delta = np.asarray(delta, np.float64)
    a = np.asarray(sim_value, np.float64)
    if axis is not None and delta.ndim == 1 and delta.size > 1:
        shape = [1] * a.ndim
        shape[axis] = -1
        delta = delta.reshape(shape)
    d = np.rint(np.abs(a - np.asarray(target_value, np.float64)) / delta).astype(np.int64)
    counts = (int(np.sum(d == 0)), int(np.sum(d == 1)), int(np.sum(d == 2)), int(np.sum(d > 2)))
    return counts, int(d.max()) if d.size else 0


def _sim_values(sim, feeds, tensors: list[str]) -> dict:
    from ..sim import updated_name
    names = {}
    for t in tensors:
        handle = sim.quantizers[t]
        names[t] = t if t in sim.graph.output_names else updated_name(handle.spec, t)
    out = sim.run(feeds, outputs=list(dict.fromkeys(names.values())))
    return {t: out[n] for t, n in names.items()}


def gap(sim, integer_model, feeds: Mapping[str, np.ndarray]) -> GapReport:
    """The :class:`GapReport` of ``sim`` against ``integer_model`` (``sim.to_integer(...)``) on
    ``feeds`` (see the module docstring)."""
    from .model import QuantizedTensor
    order = list(sim.graph.params) + list(sim.graph.input_names) + \
        [o for n in sim.graph.nodes for o in n.outputs]
    enabled = set(sim.enabled_quantizers())
    tensors = [t for t in dict.fromkeys(order) if t in enabled]
    known = {o for n in integer_model.graph.nodes for o in n.outputs} | \
        set(integer_model.graph.params) | set(integer_model.graph.input_names)
    kept = [t for t in tensors if f"{t}_q" in known or (t in integer_model.grids)]
    sim_values = _sim_values(sim, feeds, kept)
    got = integer_model.run(feeds, outputs=[f"{t}_q" if f"{t}_q" in known else t for t in kept],
                            integers=True)
    rows, first = [], None
    for t in kept:
        value = got[f"{t}_q" if f"{t}_q" in known else t]
        target = value.dequantize() if isinstance(value, QuantizedTensor) else value
        enc = sim.quantizers[t].encoding
        counts, worst = lsb_counts(sim_values[t], target, enc.delta, enc.axis)
        rows.append(TensorGap(tensor=t, counts=counts, max_lsb=worst))
        if first is None and worst > 0:
            first = t
    return GapReport(tensors=tuple(rows), first=first)


def merge_gaps(reports) -> GapReport:
    """One report over several batches: counts summed and maxima taken per tensor (the reports
    must come from the same sim and integer model); the first tensor that differs is the
    earliest, in their common order, that differs in any batch."""
    reports = list(reports)
    if not reports:
        return GapReport(tensors=(), first=None)
    rows = []
    for parts in zip(*(r.tensors for r in reports)):
        counts = tuple(int(sum(c)) for c in zip(*(t.counts for t in parts)))
        rows.append(TensorGap(tensor=parts[0].tensor, counts=counts,
                              max_lsb=max(t.max_lsb for t in parts)))
    first = next((t.tensor for t in rows if t.max_lsb > 0), None)
    return GapReport(tensors=tuple(rows), first=first)


def gap_over(sim, integer_model, batches) -> GapReport:
    """:func:`gap` over ``batches`` (feeds dicts), merged (:func:`merge_gaps`)."""
    return merge_gaps(gap(sim, integer_model, feeds) for feeds in batches)
