"""Which quantizer costs the accuracy? Per-quantizer analysis of a calibrated simulation.

::

    sim.compute_encodings(calibration_batches)
    result = analyze(sim, calib, eval_data=x_test, labels=y_test)   # arrays, first axis = samples
    html, json_file = write_report(result, "qsim_analysis")           # needs matplotlib

For every quantizer object (a tie group counts once) it measures, on the calibration data:

* **SQNR alone** — the quantizer's own noise: ``qdq(T)`` against the FP32 tensor ``T``;
* **SQNR in the simulation** — the tensor as the simulated model computes it (every upstream
  quantizer on) against ``T``: where noise accumulates;
* the **encoding range** ``[min, max]`` (per channel when per-channel), the observed FP32 range
  and the fraction of values the range clips, and a **histogram** of ``T``;

and on the evaluation data (``eval_data``, else the calibration data) two **sweeps** of the model
metric — accuracy (%) of the first output's argmax when ``labels`` are given, else the SQNR (dB)
of the graph outputs against FP32:

* **only this one enabled** (every other quantizer off): what this quantizer alone costs;
* **only this one disabled** (every other enabled quantizer on): what turning it off buys back.

SQNR is ``10·log10(Σ T² / Σ (T - T̂)²)`` summed over all samples (and all tensors of a tie
group); ``inf`` when there is no noise. The simulation's enabled flags are restored afterwards.

With ``target`` ("onnxruntime" or "fixed_point") it also runs the sim's integer model
(:func:`qsim.integer.to_integer`) on the evaluation data: the target's metric, and per quantized
tensor how far the float simulation is from what the target computes, in LSB
(:func:`qsim.integer.gap`): counts at 0 / 1 / 2 / >2 LSB, the maximum, and the first tensor
that drifts.
"""
from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import FeedError, NotCalibratedError, QsimError
from .interpreter import run as run_graph

#: histogram bins of the report
HIST_BINS = 128
#: how many quantizers the report ranks as "worst"
WORST = 5


# ============================================================================ small pure pieces

def sqnr_db(signal_power: float, noise_power: float) -> float:
    """``10·log10(signal/noise)`` in dB; ``inf`` without noise, ``-inf`` without signal."""
    if noise_power == 0.0:
        return float("inf")
    if signal_power == 0.0:
        return float("-inf")
    return float(10.0 * np.log10(signal_power / noise_power))


def tensor_sqnr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """SQNR of ``test`` against ``reference``: ``10·log10(Σ ref² / Σ (ref - test)²)`` (float64)."""
    ref = np.asarray(reference, dtype=np.float64)
    return sqnr_db(float(np.sum(ref ** 2)), float(np.sum((ref - np.asarray(test, np.float64)) ** 2)))


def channel_min_max(x: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """NaN-ignoring min and max of ``x``: scalars per tensor, shape (C,) along ``axis``."""
    x = np.asarray(x, dtype=np.float64)
    if axis is None:
        return np.asarray(np.nanmin(x)), np.asarray(np.nanmax(x))
    rest = tuple(i for i in range(x.ndim) if i != axis)
    return np.nanmin(x, axis=rest), np.nanmax(x, axis=rest)


def clipped_count(x: np.ndarray, enc) -> int:
    """Number of elements of ``x`` that the encoding clips: farther than half a step outside
    ``[min, max]`` (``x < min - delta/2`` or ``x > max + delta/2``, per channel along the axis),
    i.e. whose error exceeds the rounding error bound."""
    x = np.asarray(x, dtype=np.float64)
    lo = np.asarray(enc.min) - np.asarray(enc.delta) / 2
    hi = np.asarray(enc.max) + np.asarray(enc.delta) / 2
    if enc.axis is not None:
        shape = [1] * x.ndim
        shape[enc.axis] = -1
        lo, hi = lo.reshape(shape), hi.reshape(shape)
    return int(np.count_nonzero((x < lo) | (x > hi)))


def accuracy_percent(logits: np.ndarray, labels: np.ndarray) -> float:
    """``100 · mean(argmax(logits, axis=1) == labels)``; FeedError if a label is not a class
    index ``0 ≤ label < logits.shape[1]`` (it could never match)."""
    labels = np.asarray(labels)
    classes = logits.shape[1] if np.ndim(logits) >= 2 else 0
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        bad = labels.min() if labels.min() < 0 else labels.max()
        raise FeedError(f"label {bad} is not a class of the model's output (shape "
                        f"{list(np.shape(logits))}: classes 0..{classes - 1} along axis 1)")
    return float(np.mean(np.argmax(logits, axis=1) == labels) * 100.0)


def split_batches(data: Mapping[str, np.ndarray], batch_size: int) -> list[dict[str, np.ndarray]]:
    """Consecutive batches of ``batch_size`` samples (first axis), the last one maybe shorter."""
    n = len(next(iter(data.values())))
    return [{k: v[i:i + batch_size] for k, v in data.items()} for i in range(0, n, batch_size)]


def number(v) -> float | str | None:
    """A float for JSON: finite as is, ``inf``/``-inf``/``nan`` as strings (strict JSON)."""
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else ("nan" if np.isnan(v) else ("inf" if v > 0 else "-inf"))


def numbers(a) -> list:
    return [number(v) for v in np.asarray(a, dtype=np.float64).reshape(-1)]


# ============================================================================ results

@dataclass(frozen=True)
class Histogram:
    """Counts of FP32 values in ``len(counts)`` equal bins between ``edges[0]`` and ``edges[-1]``.

    ``unit`` is ``"value"`` (per-tensor encodings) or ``"steps"``: per-channel tensors are
    histogrammed as ``x / delta_c`` (each value in grid steps of its own channel) so that every
    channel shares one grid. ``range_lo, range_hi`` is the encoding range in that unit."""

    edges: np.ndarray
    counts: np.ndarray
    unit: str
    range_lo: float
    range_hi: float


@dataclass(frozen=True)
class QuantizerAnalysis:
    """Everything measured about one quantizer object (see the module docstring)."""

    qid: int
    tensors: tuple            # tensor names (≥ 2 for a tie group)
    role: str                 # "param", "graph_input", "constant" or "activation"
    bitwidth: int
    symmetric: bool
    axis: int | None          # channel axis of a per-channel encoding, None per tensor
    enc_min: np.ndarray       # encoding range, shape () or (C,)
    enc_max: np.ndarray
    delta: np.ndarray
    offset: np.ndarray
    data_min: np.ndarray      # observed FP32 range on the calibration data, same shape
    data_max: np.ndarray
    clipped_fraction: float   # share of FP32 values clipped (see clipped_count)
    sqnr_alone_db: float      # qdq(T) vs T
    sqnr_sim_db: float        # T in the simulated model vs T
    only_enabled: float       # metric with only this quantizer enabled
    only_disabled: float      # metric with only this quantizer disabled
    histogram: Histogram

    @property
    def name(self) -> str:
        return self.tensors[0]


@dataclass(frozen=True)
class Analysis:
    """The result of :func:`analyze`; :meth:`to_json` gives every number."""

    model: str
    settings: Mapping          # scheme, bitwidths, config, rounding
    metric: str                # "accuracy" (%) or "output SQNR" (dB)
    unit: str                  # "%" or "dB"
    fp32: float                # metric of the FP32 model
    quantized: float           # metric of the simulated model as calibrated
    calib_samples: int
    eval_samples: int
    quantizers: tuple = field(default_factory=tuple)   # QuantizerAnalysis, placement order
    target: str | None = None  # integer target compared with ("onnxruntime", "fixed_point")
    target_metric: float | None = None   # the metric of the integer model
    gap: object = None         # qsim.integer.GapReport of sim vs target on the evaluation data

    def ranked(self) -> list[QuantizerAnalysis]:
        """Quantizers by how much disabling each one alone recovers (most first)."""
        return sorted(self.quantizers, key=lambda q: -(q.only_disabled - self.quantized))

    def to_json(self) -> dict:
        """A JSON-ready dict (non-finite numbers as the strings 'inf', '-inf', 'nan')."""
        return {
            "model": self.model, "settings": dict(self.settings), "metric": self.metric,
            "unit": self.unit, "fp32": number(self.fp32), "quantized": number(self.quantized),
            "calibration_samples": self.calib_samples, "evaluation_samples": self.eval_samples,
            "worst": [q.name for q in self.ranked()[:WORST]],
            "quantizers": [{
                "qid": q.qid, "tensors": list(q.tensors), "role": q.role,
                "bitwidth": q.bitwidth, "symmetric": q.symmetric, "axis": q.axis,
                "encoding": {"min": numbers(q.enc_min), "max": numbers(q.enc_max),
                             "scale": numbers(q.delta), "offset": numbers(q.offset)},
                "observed": {"min": numbers(q.data_min), "max": numbers(q.data_max)},
                "clipped_fraction": number(q.clipped_fraction),
                "sqnr_alone_db": number(q.sqnr_alone_db), "sqnr_sim_db": number(q.sqnr_sim_db),
                "only_enabled": number(q.only_enabled), "only_disabled": number(q.only_disabled),
                "histogram": {"unit": q.histogram.unit, "edges": numbers(q.histogram.edges),
                              "counts": [int(c) for c in q.histogram.counts],
                              "range": [number(q.histogram.range_lo),
                                        number(q.histogram.range_hi)]},
            } for q in self.quantizers],
            "target": None if self.target is None else {
                "name": self.target, "metric": number(self.target_metric),
                "first_tensor_that_differs": self.gap.first,
                "tensors": [{"tensor": t.tensor, "lsb_0": t.counts[0], "lsb_1": t.counts[1],
                             "lsb_2": t.counts[2], "lsb_more": t.counts[3], "max_lsb": t.max_lsb}
                            for t in self.gap.tensors]},
        }


# ============================================================================ the measurements

@dataclass
class _Accumulator:
    """Running sums for one quantizer over calibration batches (local to :func:`analyze`)."""

    signal: float = 0.0
    noise_alone: float = 0.0
    noise_sim: float = 0.0
    clipped: int = 0
    count: int = 0
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None

    def add(self, ref, alone, sim_value, enc, axis) -> None:
        ref64 = np.asarray(ref, np.float64)
        self.signal += float(np.sum(ref64 ** 2))
        self.noise_alone += float(np.sum((ref64 - alone) ** 2))
        self.noise_sim += float(np.sum((ref64 - sim_value) ** 2))
        self.clipped += clipped_count(ref64, enc)
        self.count += ref64.size
        lo, hi = channel_min_max(ref64, axis)
        self.lo = lo if self.lo is None else np.fmin(self.lo, lo)
        self.hi = hi if self.hi is None else np.fmax(self.hi, hi)


def _unique_enabled(sim) -> list:
    """The enabled quantizer handles, each once, in placement order."""
    seen: dict[int, object] = {}
    for handle in sim.quantizers.values():
        if handle.enabled and handle.spec.qid not in seen:
            seen[handle.spec.qid] = handle
    return sorted(seen.values(), key=lambda h: h.spec.qid)


def _check_data(sim, data: Mapping[str, np.ndarray], what: str) -> None:
    names = list(sim.graph.input_names)
    if sorted(data) != sorted(names):
        raise FeedError(f"{what} has arrays {sorted(data)}, the model's inputs are {names}")
    lengths = {k: len(v) for k, v in data.items()}
    if len(set(lengths.values())) != 1 or 0 in lengths.values():
        raise FeedError(f"{what}: every input needs the same, non-zero number of samples, "
                        f"got {lengths}")


def _tensor_pass(sim, batches, handles, progress) -> dict[int, _Accumulator]:
    """Pass 1 over the calibration batches: FP32 tensors, their qdq alone and in the sim."""
    from .sim import updated_name
    acc = {h.spec.qid: _Accumulator() for h in handles}
    activations = [(h, t) for h in handles if not h.spec.is_param for t in h.spec.tensors]
    for h in handles:                                  # parameters: no data dependence
        if h.spec.is_param:
            for t in h.spec.tensors:
                w = np.asarray(sim.graph.params[t], np.float32)
                q = h.quantizer.quantize_dequantize(w)
                acc[h.spec.qid].add(w, q, q, h.encoding, h.spec.axis)
    if not activations:
        return acc
    names = [t for _, t in activations]
    sim_names = [updated_name(h.spec, t) for h, t in activations]
    for feeds in progress(batches, "tensors"):
        fp32 = run_graph(sim.graph, feeds, outputs=names, fp32_kernels=sim.fp32_kernels)
        simulated = sim.run(feeds, outputs=sim_names)
        for (h, t), s in zip(activations, sim_names):
            ref = fp32[t]
            alone = h.quantizer.quantize_dequantize(np.asarray(ref, np.float32))
            value = simulated[s] if s in simulated else simulated[t]  # graph outputs keep their name
            acc[h.spec.qid].add(ref, alone, value, h.encoding, h.spec.axis)
    return acc


def in_grid_steps(x: np.ndarray, enc) -> np.ndarray:
    """``x / delta`` with each channel's delta (along ``enc.axis``): values in grid steps."""
    x = np.asarray(x, dtype=np.float64)
    delta = np.asarray(enc.delta, dtype=np.float64)
    if enc.axis is not None:
        shape = [1] * x.ndim
        shape[enc.axis] = -1
        delta = delta.reshape(shape)
    return x / delta


def _histogram_range(enc, lo: float, hi: float) -> tuple[str, float, float, float, float]:
    """(unit, encoding lo, encoding hi, bins lo, bins hi) for one quantizer's histogram."""
    if enc.axis is None:
        unit, r_lo, r_hi = "value", float(enc.min), float(enc.max)
    else:   # grid steps: the range is offset .. offset + N' for every channel
        unit = "steps"
        r_lo = float(np.max(enc.offset))
        r_hi = float(np.min(np.asarray(enc.max) / np.asarray(enc.delta)))
    # Non-finite data or encodings (README "Non-finite data") do not get bins: the bins span
    # what is finite of the data and the encoding range, else [-1, 1].
    ends = [v for v in (lo, hi, r_lo, r_hi) if np.isfinite(v)] or [-1.0, 1.0]
    b_lo, b_hi = min(ends), max(ends)
    if not b_hi > b_lo:
        b_lo, b_hi = b_lo - 0.5, b_hi + 0.5
    return unit, r_lo, r_hi, b_lo, b_hi


def _histograms(sim, batches, handles, acc, progress) -> dict[int, Histogram]:
    """Pass 2: a histogram per quantizer over the union of the data and the encoding range."""
    layout, counts = {}, {}
    for h in handles:
        a, enc = acc[h.spec.qid], h.encoding
        if enc.axis is None:
            lo, hi = float(np.nanmin(a.lo)), float(np.nanmax(a.hi))
        else:
            steps_lo, steps_hi = a.lo / enc.delta, a.hi / enc.delta     # (C,) per channel
            lo, hi = float(np.nanmin(steps_lo)), float(np.nanmax(steps_hi))
        unit, r_lo, r_hi, b_lo, b_hi = _histogram_range(enc, lo, hi)
        layout[h.spec.qid] = (unit, r_lo, r_hi, np.linspace(b_lo, b_hi, HIST_BINS + 1))
        counts[h.spec.qid] = np.zeros(HIST_BINS, np.int64)

    def add(h, x):
        x = in_grid_steps(x, h.encoding) if h.encoding.axis is not None else np.asarray(x, np.float64)
        counts[h.spec.qid] += np.histogram(x, bins=layout[h.spec.qid][3])[0]

    for h in handles:
        if h.spec.is_param:
            for t in h.spec.tensors:
                add(h, sim.graph.params[t])
    activations = [(h, t) for h in handles if not h.spec.is_param for t in h.spec.tensors]
    if activations:
        for feeds in progress(batches, "histograms"):
            fp32 = run_graph(sim.graph, feeds, outputs=[t for _, t in activations],
                             fp32_kernels=sim.fp32_kernels)
            for h, t in activations:
                add(h, fp32[t])
    return {qid: Histogram(edges=edges, counts=counts[qid], unit=unit, range_lo=r_lo, range_hi=r_hi)
            for qid, (unit, r_lo, r_hi, edges) in layout.items()}


def _metric_function(sim, batches, labels) -> tuple[str, str, Callable[[Callable], float]]:
    """(name, unit, metric(run_batch)) where ``run_batch(feeds) -> {output: array}``."""
    outputs = list(sim.graph.output_names)
    if labels is not None:
        def accuracy(run_batch):
            logits = np.concatenate([run_batch(f)[outputs[0]] for f in batches])
            return accuracy_percent(logits, labels)
        return "accuracy", "%", accuracy

    reference = [run_graph(sim.graph, f, outputs=outputs, fp32_kernels=sim.fp32_kernels)
                 for f in batches]

    def output_sqnr(run_batch):
        signal = noise = 0.0
        for feeds, ref in zip(batches, reference):
            got = run_batch(feeds)
            for name in outputs:
                r = np.asarray(ref[name], np.float64)
                signal += float(np.sum(r ** 2))
                noise += float(np.sum((r - np.asarray(got[name], np.float64)) ** 2))
        return sqnr_db(signal, noise)
    return "output SQNR", "dB", output_sqnr


def _sweeps(sim, handles, metric, progress) -> dict[int, tuple[float, float]]:
    """qid → (metric with only it enabled, metric with only it disabled); flags restored."""
    saved = {h.spec.qid: h.enabled for h in handles}
    result = {}
    try:
        for h in progress(handles, "sweeps"):
            for g in handles:
                g.enabled = g is h
            only_on = metric(sim.run)
            for g in handles:
                g.enabled = g is not h
            result[h.spec.qid] = (only_on, metric(sim.run))
    finally:
        for g in handles:
            g.enabled = saved[g.spec.qid]
    return result


def _no_progress(items, desc):
    return items


def analyze(sim, calib: Mapping[str, np.ndarray], *, eval_data: Mapping[str, np.ndarray] | None = None,
            labels: Sequence[int] | np.ndarray | None = None, batch_size: int = 32,
            eval_batch_size: int = 256,
            model_name: str = "model",
            progress: Callable[[Sequence, str], Iterable] | None = None,
            target: str | None = None) -> Analysis:
    """Measure every enabled quantizer of the calibrated ``sim`` (see the module docstring).

    ``calib`` and ``eval_data`` map each graph input to an array whose first axis is samples;
    ``labels`` (integer classes, one per evaluation sample) switch the metric to accuracy.
    The tensor passes run ``batch_size`` samples at a time and keep every quantized tensor of a
    batch alive at once; the sweeps only keep the live activations, in batches of
    ``eval_batch_size`` (larger batches: fewer executor steps, more memory).
    ``progress(items, description)`` may wrap the loops (e.g. a progress bar). ``target``
    ("onnxruntime", "fixed_point"): also compare with the sim's integer model (module doc).
    """
    if target is not None:
        from .integer.model import check_target
        check_target(target)
    if not sim.is_calibrated:
        raise NotCalibratedError("analyze() needs a calibrated simulation: call "
                                 "sim.compute_encodings(batches) first")
    for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        if value < 1:
            raise QsimError(f"{name} must be ≥ 1, got {value}")
    progress = _no_progress if progress is None else progress
    _check_data(sim, calib, "the calibration data")
    evaluation = calib if eval_data is None else eval_data
    _check_data(sim, evaluation, "the evaluation data")
    n_eval = len(next(iter(evaluation.values())))
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != n_eval:
            raise FeedError(f"{len(labels)} labels for {n_eval} evaluation samples; give one "
                            f"label per sample")
    calib_batches = split_batches(calib, batch_size)
    eval_batches = split_batches(evaluation, eval_batch_size)
    handles = _unique_enabled(sim)

    acc = _tensor_pass(sim, calib_batches, handles, progress)
    hists = _histograms(sim, calib_batches, handles, acc, progress)
    metric_name, unit, metric = _metric_function(sim, eval_batches, labels)
    fp32 = metric(lambda feeds: run_graph(sim.graph, feeds, fp32_kernels=sim.fp32_kernels))
    quantized = metric(sim.run)
    sweeps = _sweeps(sim, handles, metric, progress)

    results = []
    for h in handles:
        a, enc = acc[h.spec.qid], h.encoding
        results.append(QuantizerAnalysis(
            qid=h.spec.qid, tensors=tuple(h.spec.tensors), role=h.spec.role,
            bitwidth=enc.bitwidth, symmetric=enc.symmetric, axis=enc.axis,
            enc_min=enc.min, enc_max=enc.max, delta=enc.delta, offset=enc.offset,
            data_min=np.asarray(a.lo), data_max=np.asarray(a.hi),
            clipped_fraction=a.clipped / max(a.count, 1),
            sqnr_alone_db=sqnr_db(a.signal, a.noise_alone),
            sqnr_sim_db=sqnr_db(a.signal, a.noise_sim),
            only_enabled=sweeps[h.spec.qid][0], only_disabled=sweeps[h.spec.qid][1],
            histogram=hists[h.spec.qid]))
    target_metric = gap_report = None
    if target is not None:
        from .integer import gap_over
        model = sim.to_integer(target)
        target_metric = metric(model.run)
        gap_report = gap_over(sim, model, progress(eval_batches, f"sim vs {target}"))
    settings = {"scheme": sim.quant_scheme.value, "param_bitwidth": sim.param_bitwidth,
                "activation_bitwidth": sim.activation_bitwidth, "config": sim.config.source,
                "rounding": sim.rounding_mode}
    return Analysis(model=model_name, settings=settings, metric=metric_name, unit=unit,
                    fp32=fp32, quantized=quantized,
                    calib_samples=len(next(iter(calib.values()))), eval_samples=n_eval,
                    quantizers=tuple(results), target=target, target_metric=target_metric,
                    gap=gap_report)


# ============================================================================ the report

def _matplotlib():
    """The matplotlib Figure class and Agg canvas (no pyplot: no global figure state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("the analysis report draws its plots with matplotlib: "
                          "pip install 'qsim-ref[analyze]'") from None
    return Figure, FigureCanvasAgg


def _save(fig, canvas_cls, path: Path) -> Path:
    canvas_cls(fig)
    fig.savefig(path, dpi=100)
    return path


def _short(name: str, width: int = 38) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _file_stem(q: QuantizerAnalysis) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", q.name).strip("_.")[:40]
    return f"q{q.qid:03d}_{safe}"


def _finite(v: float, fallback: float) -> float:
    return v if np.isfinite(v) else fallback


def plot_sweeps(result: Analysis, path: Path) -> Path:
    """Dots: the metric with only each quantizer enabled / disabled, against the baselines."""
    Figure, Canvas = _matplotlib()
    qs = list(result.quantizers)
    fig = Figure(figsize=(9, 1.4 + 0.32 * max(len(qs), 1)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(qs))
    values = [v for q in qs for v in (q.only_enabled, q.only_disabled)]
    finite = [v for v in values + [result.fp32, result.quantized] if np.isfinite(v)] or [0.0]
    lo, hi = min(finite), max(finite)
    pad = max(0.08 * (hi - lo), 0.5)
    beyond = hi + pad / 2                               # where "inf" (no noise at all) is drawn
    show = lambda v: v if np.isfinite(v) else beyond   # noqa: E731
    ax.scatter([show(q.only_enabled) for q in qs], y - 0.12, marker="o",
               label="only this one enabled")
    ax.scatter([show(q.only_disabled) for q in qs], y + 0.12, marker="s",
               label="only this one disabled")
    if np.isfinite(result.fp32):
        ax.axvline(result.fp32, color="k", linestyle="--", label=f"FP32 ({result.fp32:.2f})")
    ax.axvline(show(result.quantized), color="r", linestyle=":",
               label=f"all enabled ({result.quantized:.2f})")
    ax.set_yticks(y, [_short(q.name) for q in qs], fontsize=7)
    ax.set_ylim(len(qs) - 0.5, -0.5)
    ax.set_xlim(lo - pad, hi + pad)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel(f"{result.metric} ({result.unit})" + ("; ∞ drawn at the right edge"
                                                         if not all(map(np.isfinite, values)) else ""))
    ax.set_title("Per-quantizer sweeps: what does each quantizer cost?")
    ax.legend(fontsize=7, loc="best")
    return _save(fig, Canvas, path)


def plot_sqnr(result: Analysis, path: Path) -> Path:
    """Per-quantizer SQNR, alone and in the simulation, in placement order."""
    Figure, Canvas = _matplotlib()
    qs = list(result.quantizers)
    fig = Figure(figsize=(9, 1.2 + 0.32 * max(len(qs), 1)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(qs))
    finite = [v for q in qs for v in (q.sqnr_alone_db, q.sqnr_sim_db) if np.isfinite(v)]
    top = max(finite, default=1.0) * 1.1 + 1.0
    ax.barh(y - 0.2, [_finite(q.sqnr_alone_db, top) for q in qs], height=0.4,
            label="alone: qdq(T) vs T")
    ax.barh(y + 0.2, [_finite(q.sqnr_sim_db, top) for q in qs], height=0.4,
            label="in the simulated model vs FP32")
    ax.set_yticks(y, [_short(q.name) for q in qs], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("SQNR (dB), higher is better")
    ax.set_title("Per-quantizer SQNR on the calibration data")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, Canvas, path)


def plot_gap(result: Analysis, path: Path) -> Path:
    """Per quantized tensor (graph order), the share of its elements where the float simulation
    and the integer target differ, stacked by 1 / 2 / >2 LSB, each bar labelled with the count;
    the first drifting tensor marked ▶."""
    Figure, Canvas = _matplotlib()
    rows = list(result.gap.tensors)
    fig = Figure(figsize=(9, 1.4 + 0.3 * max(len(rows), 1)), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    left = np.zeros(len(rows))
    for k, (label, colour) in enumerate((("1 LSB", "#f2b134"), ("2 LSB", "#e3672b"),
                                         (">2 LSB", "#b3202a")), start=1):
        share = np.array([t.counts[k] / max(t.size, 1) for t in rows]) * 100
        ax.barh(y, share, left=left, color=colour, label=label, height=0.7)
        left += share
    top = max(float(left.max(initial=0.0)), 1e-3)
    for i, t in enumerate(rows):
        off = t.size - t.counts[0]
        ax.text(left[i] + top * 0.01, i, f"{off} of {t.size}", va="center", fontsize=7)
    names = [("▶ " if t.tensor == result.gap.first else "") + _short(t.tensor) for t in rows]
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, top * 1.35)
    ax.set_xlabel(f"elements that differ (% of the tensor), {result.eval_samples} samples")
    ax.set_title(f"Float simulation vs integer target ({result.target})"
                 + ("; drift starts at ▶" if result.gap.first else ": identical"))
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, Canvas, path)


def plot_histogram(q: QuantizerAnalysis, path: Path) -> Path:
    """The FP32 histogram with the encoding range drawn on it (clipped regions shaded).

    Per-channel quantizers are drawn in grid steps (``x / delta_c``), where all channels share
    the range ``[offset, offset + N']``."""
    Figure, Canvas = _matplotlib()
    fig = Figure(figsize=(6, 3))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.16, top=0.9)
    ax = fig.add_subplot()
    hist = q.histogram
    e, c = hist.edges, hist.counts
    ax.stairs(c, e, fill=True, alpha=0.6, label="FP32 values")
    lo, hi = hist.range_lo, hist.range_hi
    if np.isfinite(lo) and np.isfinite(hi):      # not so after non-finite calibration data
        ax.axvline(lo, color="r", label=f"encoding range [{lo:.4g}, {hi:.4g}]")
        ax.axvline(hi, color="r")
        ax.axvspan(e[0], lo, color="r", alpha=0.08)
        ax.axvspan(hi, e[-1], color="r", alpha=0.08)
    ax.set_yscale("log" if c.max() > 0 else "linear")
    ax.set_xlim(e[0], e[-1])
    ax.set_xlabel("value" if hist.unit == "value" else f"value / scale of its channel (axis {q.axis})")
    ax.set_title(f"{_short(q.name, 60)}: {q.bitwidth}-bit, {q.clipped_fraction:.2%} clipped",
                 fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, Canvas, path)


def plot_channels(q: QuantizerAnalysis, path: Path) -> Path:
    """Per-channel encoding ranges (bars) against the observed per-channel range (ticks)."""
    Figure, Canvas = _matplotlib()
    c = np.arange(np.size(q.enc_min))
    fig = Figure(figsize=(6, 3))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.16, top=0.9)
    ax = fig.add_subplot()
    def finite(a):   # non-finite calibration data: those channels are left out
        a = np.asarray(a, np.float64)
        return np.where(np.isfinite(a), a, np.nan)

    enc_min, enc_max = finite(q.enc_min), finite(q.enc_max)
    ax.bar(c, np.nan_to_num(enc_max - enc_min), bottom=np.nan_to_num(enc_min), width=0.8,
           alpha=0.5, label="encoding [min, max]")
    ax.scatter(c, finite(q.data_min), marker="_", color="k", label="observed min / max")
    ax.scatter(c, finite(q.data_max), marker="_", color="k")
    ax.set_xlabel(f"channel (axis {q.axis})")
    ax.set_title(f"{_short(q.name, 60)}: per-channel ranges", fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, Canvas, path)


def _fmt(v: float, unit: str = "") -> str:
    if not np.isfinite(v):
        return "∞" if v > 0 else ("−∞" if v < 0 else "nan")
    return f"{v:.2f}{unit}"


_CSS = """body{font-family:sans-serif;max-width:70em;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:.2em .5em}
th{background:#f0f0f0}td.n{text-align:right}code{font-size:.9em}.bad{background:#fde2e2}
img{max-width:100%}section{margin-top:2em}"""


def _target_section(result: Analysis, plots: Mapping[str, str]) -> str:
    """The report's "simulation vs integer target" section ('' without a target)."""
    if result.target is None:
        return ""
    e, u = html.escape, result.unit
    rows = "".join(
        f"<tr class='{'bad' if t.max_lsb > 2 else ''}'><td><code>{e(t.tensor)}</code></td>"
        + "".join(f"<td class=n>{c}</td>" for c in t.counts)
        + f"<td class=n>{t.max_lsb}</td></tr>" for t in result.gap.tensors)
    first = (f"the first tensor that differs is <code>{e(result.gap.first)}</code>"
             if result.gap.first else "no quantized tensor differs")
    return f"""<section><h2>Simulation vs integer target ({e(result.target)})</h2>
<p>The integer model computes what {e('ONNX Runtime (default session) computes for the QDQ export'
if result.target == 'onnxruntime' else 'a fixed-point (int32 multiplier and shift) target computes')};
its {e(result.metric)}: {_fmt(result.target_metric, ' ' + u)} (simulation:
{_fmt(result.quantized, ' ' + u)}). Per quantized tensor, on the evaluation data, how many
elements the float simulation and the target differ by 0, 1, 2 and more LSB; {first}.</p>
<img src='{e(plots['gap'])}' alt='gap'>
<table><tr><th>tensor</th><th>0 LSB</th><th>1 LSB</th><th>2 LSB</th><th>&gt;2 LSB</th>
<th>max</th></tr>{rows}</table></section>"""


def render_html(result: Analysis, plots: Mapping[str, str]) -> str:
    """The report page; ``plots`` maps a plot key (``sweeps``, ``sqnr``, ``hist:<qid>``,
    ``channels:<qid>``) to its file name relative to the page."""
    e = html.escape
    u = result.unit
    worst = {q.qid for q in result.ranked()[:WORST] if q.only_disabled > result.quantized}
    rows = []
    for q in result.quantizers:
        rows.append(
            f"<tr class='{'bad' if q.qid in worst else ''}'><td><a href='#q{q.qid}'>"
            f"<code>{e(' = '.join(q.tensors))}</code></a></td><td>{e(q.role)}</td>"
            f"<td class=n>{q.bitwidth}</td><td>{'per-channel' if q.axis is not None else 'per-tensor'}"
            f"{' sym' if q.symmetric else ''}</td>"
            f"<td class=n>{_fmt(q.sqnr_alone_db)}</td><td class=n>{_fmt(q.sqnr_sim_db)}</td>"
            f"<td class=n>{q.clipped_fraction:.3%}</td><td class=n>{_fmt(q.only_enabled)}</td>"
            f"<td class=n>{_fmt(q.only_disabled)}</td></tr>")
    ranked = "".join(
        f"<li><code>{e(q.name)}</code>: disabling it alone gives {_fmt(q.only_disabled, ' ' + u)} "
        f"(all enabled: {_fmt(result.quantized, ' ' + u)}); SQNR alone {_fmt(q.sqnr_alone_db)} dB, "
        f"{q.clipped_fraction:.2%} of its values clipped</li>"
        for q in result.ranked()[:WORST])
    details = []
    for q in result.quantizers:
        imgs = "".join(f"<img src='{e(plots[k])}' alt='{e(k)}'>"
                       for k in (f"hist:{q.qid}", f"channels:{q.qid}") if k in plots)
        rng = (f"[{float(q.enc_min):.6g}, {float(q.enc_max):.6g}], scale {float(q.delta):.6g}, "
               f"offset {float(q.offset):.0f}" if q.axis is None else
               f"{np.size(q.enc_min)} channels, widest [{np.min(q.enc_min):.6g}, "
               f"{np.max(q.enc_max):.6g}]")
        details.append(f"<section id='q{q.qid}'><h3><code>{e(' = '.join(q.tensors))}</code></h3>"
                       f"<p>{e(q.role)}, {q.bitwidth}-bit; encoding {e(rng)}; observed "
                       f"[{np.min(q.data_min):.6g}, {np.max(q.data_max):.6g}]</p>{imgs}</section>")
    s = result.settings
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>qsim analysis: {e(result.model)}</title>
<style>{_CSS}</style></head><body>
<h1>qsim analysis: <code>{e(result.model)}</code></h1>
<p>Scheme {e(str(s['scheme']))}, weights {s['param_bitwidth']}-bit, activations
{s['activation_bitwidth']}-bit, config <code>{e(str(s['config']))}</code>, rounding
{e(str(s['rounding']))}. Calibration: {result.calib_samples} samples; evaluation:
{result.eval_samples} samples.</p>
<table><tr><th>model</th><th>{e(result.metric)}</th></tr>
<tr><td>FP32</td><td class=n>{_fmt(result.fp32, ' ' + u)}</td></tr>
<tr><td>quantized (every quantizer as configured)</td>
<td class=n>{_fmt(result.quantized, ' ' + u)}</td></tr></table>
<section><h2>Which quantizer costs the most?</h2>
<p><b>Only disabled</b>: the {e(result.metric)} with every other quantizer on and this one off —
what keeping this tensor in higher precision buys back. <b>Only enabled</b>: the
{e(result.metric)} with this quantizer alone on — what it costs by itself. Ranked by the first:</p>
<ol>{ranked}</ol>
<img src='{e(plots['sweeps'])}' alt='sweeps'></section>
<section><h2>SQNR per quantizer</h2>
<p><b>Alone</b>: the quantizer applied to the FP32 tensor, its own noise. <b>In the
simulation</b>: the tensor as the quantized model computes it against FP32, the noise accumulated
from every quantizer upstream. Both on the calibration data; higher is better.</p>
<img src='{e(plots['sqnr'])}' alt='sqnr'></section>
{_target_section(result, plots)}
<section><h2>All quantizers</h2><table><tr><th>tensor</th><th>role</th><th>bits</th>
<th>grid</th><th>SQNR alone (dB)</th><th>SQNR in sim (dB)</th><th>clipped</th>
<th>only enabled ({e(u)})</th><th>only disabled ({e(u)})</th></tr>{''.join(rows)}</table></section>
<section><h2>Ranges and histograms</h2>
<p>FP32 values on the calibration data with the encoding range in red; shaded regions are
clipped. Per-channel quantizers are drawn in grid steps (each value divided by its channel's
scale), where every channel shares one range; their second plot compares each channel's encoding
range with its observed range.</p>{''.join(details)}</section>
<p>Every number is also in <code>analysis.json</code>.</p>
</body></html>
"""


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    json: Path
    plots: tuple


#: what a report folder holds; :func:`replace_report` replaces only folders made of these
REPORT_ENTRIES = frozenset({"analysis.html", "analysis.json", "plots"})


def check_report_folder(out_dir) -> None:
    """QsimError unless ``out_dir`` may be replaced by a new report: it does not exist, is an
    empty folder, or holds only a previous report (:data:`REPORT_ENTRIES`)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise QsimError(f"output folder '{out}' is a file; choose another --out")
    if out.is_dir():
        other = sorted(p.name for p in out.iterdir() if p.name not in REPORT_ENTRIES)
        if other:
            raise QsimError(f"output folder '{out}' holds files that are not a qsim report "
                            f"({', '.join(repr(n) for n in other[:3])}); the report replaces the "
                            f"whole folder: choose a new or empty --out")


def replace_report(result: Analysis, out_dir, *, per_quantizer_plots: bool = True) -> ReportFiles:
    """:func:`write_report` into a new folder beside ``out_dir``, then swapped in for it at the
    end: an error or Ctrl-C leaves the previous report (or nothing) as it was, never a mix.

    ``out_dir`` must pass :func:`check_report_folder`. Swap: old → ``.<name>.old-*``, new →
    ``out_dir``, old removed (if the second rename fails the old one is put back)."""
    import shutil
    import tempfile
    from .export import current_umask
    out = Path(out_dir)
    check_report_folder(out)
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fresh = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=parent))
    except OSError as exc:
        raise QsimError(f"cannot create the report folder in '{parent}': "
                        f"{exc.strerror or exc}") from None
    old = None
    try:
        fresh.chmod(0o777 & ~current_umask())   # mkdtemp gives 0o700
        write_report(result, fresh, per_quantizer_plots=per_quantizer_plots)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            os.replace(out, old / out.name)
        try:
            os.replace(fresh, out)
        except BaseException:
            if old is not None:
                os.replace(old / out.name, out)
            raise
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        if old is not None and not (old / out.name).exists():
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    plots = tuple(out / "plots" / p.name for p in sorted((out / "plots").iterdir()))
    return ReportFiles(html=out / "analysis.html", json=out / "analysis.json", plots=plots)


def write_report(result: Analysis, out_dir, *, per_quantizer_plots: bool = True) -> ReportFiles:
    """Write ``analysis.html``, ``analysis.json`` and ``plots/*.png`` into ``out_dir``.

    ``per_quantizer_plots=False`` draws only the two summary plots (faster on big models)."""
    out = Path(out_dir)
    plot_dir = out / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    json_path = out / "analysis.json"
    json_path.write_text(json.dumps(result.to_json(), indent=1, allow_nan=False) + "\n",
                         encoding="utf-8")
    plots = {"sweeps": plot_sweeps(result, plot_dir / "sweeps.png"),
             "sqnr": plot_sqnr(result, plot_dir / "sqnr.png")}
    if result.target is not None:
        plots["gap"] = plot_gap(result, plot_dir / "target_gap.png")
    for q in result.quantizers if per_quantizer_plots else ():
        stem = _file_stem(q)
        plots[f"hist:{q.qid}"] = plot_histogram(q, plot_dir / f"{stem}_hist.png")
        if q.axis is not None and np.size(q.enc_min) > 1:
            plots[f"channels:{q.qid}"] = plot_channels(q, plot_dir / f"{stem}_channels.png")
    rel = {k: p.relative_to(out).as_posix() for k, p in plots.items()}
    html_path = out / "analysis.html"
    html_path.write_text(render_html(result, rel), encoding="utf-8")
    return ReportFiles(html=html_path, json=json_path, plots=tuple(plots.values()))
