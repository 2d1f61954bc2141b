"""QAT on a :class:`qsim.sim.QuantizationSimModel`: what its thin training methods delegate to.

Trainable state = every float32 initializer (weights, biases) under its name, plus each enabled
quantizer's ``"<tensor>.min"``/``"<tensor>.max"`` (qat.md's θmin/θmax; tied tensors share the
first tensor's). Ranges start from the calibrated encodings (θmin = min, θmax = max).

Schemes: ``training_range_learning_*`` learn every range (training path, qat.md §3–§4);
``post_training_*`` keep activation ranges fixed and recompute parameter ranges from the current
weights (min-max, qat.md §5) before every step, through the frozen path. ``freeze_ranges`` /
``unfreeze_ranges`` override the scheme. (aimet-torch 2.42 learns every range under all four
schemes: ``sim.unfreeze_ranges()`` gives its behaviour.)

After every update the learned encodings are written back to the sim's quantizers
(``delta = s``, AIMET offset ``o + qmin``, ``min/max = f32((o + qmin|qmax)·s)``, qat.md §7), so
``sim.run`` and ``sim.export`` use them.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field

import numpy as np

from ..errors import NotCalibratedError, QsimError
from ..quant import training as tr
from ..quant.encoding import Encoding
from .graph import Slot, range_names, training_graph, value_and_grad as _vg

F32 = np.float32


@dataclass
class TrainingState:
    """Per-sim training settings: ``frozen`` None = as the scheme says."""

    frozen: bool | None = None
    history: list = field(default_factory=list)


def _state(sim) -> TrainingState:
    if getattr(sim, "_training", None) is None:
        sim._training = TrainingState()
    return sim._training


def range_learning(sim) -> bool:
    """Whether ranges are learned now (the scheme, unless frozen/unfrozen explicitly)."""
    st = _state(sim)
    if st.frozen is not None:
        return not st.frozen
    return getattr(sim, "range_learning_scheme", False)


def grid_of(spec, encoding: Encoding | None = None) -> tr.Grid:
    """The integer grid of a sim quantizer in training (qat.md §1–§2).

    * asymmetric: ``[0, 2^bw-1]`` (θmin, θmax both learned; ``o`` from θmin);
    * symmetric: ``[-2^(bw-1), 2^(bw-1)-1]`` (strict: from ``-(2^(bw-1)-1)``), ``o = 0``;
    * unsigned symmetric (config ``unsigned_symmetric``; aimet-torch's sim rejects it, its
      quantizer takes the grid): the calibrated ``encoding`` decides, as aimet-onnx did
      (numerics.md §2.6). Data with negative values was given a signed symmetric encoding
      (AIMET offset ``-2^(bw-1)``, strict ``-(2^(bw-1)-1)`` in every channel): it trains on
      qat.md's unsigned-symmetric grid ``[0, 2^bw-1]`` (strict ``[0, 2^bw-2]``) whose offset is
      the constant ``-rne(qmax/2)``, the same codes. Non-negative data (offset 0, range
      ``[0, N'·δ]``) trains on the asymmetric grid ``[0, N']`` (``N' = 2^bw-1``, strict
      ``2^bw-2``): ``o`` stays 0 while θmin stays above ``-s/2``.
    """
    bw = spec.bitwidth
    if spec.symmetric and spec.unsigned_symmetric:
        top = 2 ** bw - (2 if spec.strict_symmetric else 1)
        signed = -(2 ** (bw - 1)) + (1 if spec.strict_symmetric else 0)
        if encoding is not None and np.all(np.asarray(encoding.offset) == signed):
            return tr.Grid(0, top, True)
        return tr.Grid(0, top, False)
    if not spec.symmetric:
        return tr.Grid(0, 2 ** bw - 1, False)
    lo = -(2 ** (bw - 1)) + (1 if spec.strict_symmetric else 0)
    return tr.Grid(lo, 2 ** (bw - 1) - 1, True)


def _param_shape(spec, tensor_shape):
    if spec.axis is None:
        return ()
    return tuple(n if i == spec.axis else 1 for i, n in enumerate(tensor_shape))


def _slots(sim):
    out = []
    for h in sim._handles.values():
        if h.enabled:
            for t in h.spec.tensors:
                out.append((h, Slot(t, grid_of(h.spec, h.encoding), key=h.spec.tensors[0])))
    return out


def _tensor_shape(sim, t, handle):
    if t in sim.graph.params:
        return np.shape(sim.graph.params[t])
    enc = handle.encoding
    n = 1 if enc.axis is None else enc.delta.shape[0]
    return (1,) * (enc.axis or 0) + (n,) if enc.axis is not None else ()


def parameters(sim, *, copy: bool = True) -> dict:
    """``{name: copy}``: float32 initializers and every enabled quantizer's θmin/θmax
    (``copy=False``: the sim's own read-only arrays, for internal use)."""
    if not sim.is_calibrated:
        raise NotCalibratedError("training needs encodings: call sim.compute_encodings first")
    take = (lambda v: np.array(v, F32)) if copy else (lambda v: np.asarray(v, F32))
    out = {k: take(v) for k, v in sim.graph.params.items() if np.asarray(v).dtype == np.float32}
    for h, s in _slots(sim):
        mn, mx = range_names(s.range_base)
        if mn in out:
            continue
        theta = getattr(h, "_theta", None)
        if theta is not None and theta[0] is h.encoding:   # still the encoding we learned
            theta = theta[1]
        else:
            shape = _param_shape(h.spec, _tensor_shape(sim, s.tensor, h))
            enc = h.encoding
            theta = (np.asarray(enc.min, F32).reshape(shape), np.asarray(enc.max, F32).reshape(shape))
        out[mn], out[mx] = take(theta[0]), take(theta[1])
    return out


def set_parameters(sim, values) -> None:
    """Set any of :func:`parameters` (all checked first: unknown name or wrong shape → QsimError,
    nothing changed); then write the learned encodings and weights into the sim."""
    current = parameters(sim, copy=False)
    unknown = sorted(set(values) - set(current))
    if unknown:
        raise QsimError(f"unknown parameter(s) {unknown}; sim.parameters() has "
                        f"{len(current)} names, e.g. {sorted(current)[:5]}")
    bad = [f"{k}: {np.shape(v)} (expected {current[k].shape})" for k, v in values.items()
           if np.shape(v) != current[k].shape]
    if bad:
        raise QsimError(f"wrong shape for parameter(s): {'; '.join(bad)}")
    new = {**current, **{k: np.array(v, F32) for k, v in values.items()}}
    weights = {k: v for k, v in new.items() if k in sim.graph.params}
    sim.graph = dataclasses.replace(sim.graph, params={**sim.graph.params, **weights})
    if hasattr(sim.model, "params"):
        sim.model = dataclasses.replace(sim.model, params={
            **sim.model.params, **{k: v for k, v in weights.items() if k in sim.model.params}})
    for h, s in _slots(sim):
        if s.tensor != s.range_base:
            continue
        mn, mx = range_names(s.range_base)
        h.encoding = learned_encoding(h.spec, new[mn], new[mx], s.grid)
        h._theta = (h.encoding, (new[mn], new[mx]))
    sim._run_graph = None


def learned_encoding(spec, theta_min, theta_max, grid: tr.Grid | None = None) -> Encoding:
    """The sim Encoding in force for θmin/θmax on ``grid`` (default :func:`grid_of` the spec)
    (qat.md §2, §7)."""
    grid = grid_of(spec) if grid is None else grid
    e = tr.training_encoding(theta_min, theta_max, grid)
    s = e.scale.reshape(-1) if spec.axis is not None else e.scale.reshape(())
    o = e.offset.reshape(s.shape)
    return Encoding(min=((o + F32(grid.qmin)) * s).astype(F32).astype(np.float64),
                    max=((o + F32(grid.qmax)) * s).astype(F32).astype(np.float64),
                    delta=s.astype(np.float64), offset=(o + F32(grid.qmin)).astype(np.float64),
                    bitwidth=spec.bitwidth, symmetric=spec.symmetric,
                    strict_symmetric=spec.strict_symmetric,
                    unsigned_symmetric=spec.unsigned_symmetric, axis=spec.axis)


def minmax_range(w, grid: tr.Grid, axis):
    """aimet-torch's min-max range of a weight (qat.md §5), float32, per channel along ``axis``."""
    w = np.asarray(w, F32)
    red = tuple(i for i in range(w.ndim) if i != axis) if axis is not None else None
    mn = np.minimum(w.min(axis=red, keepdims=axis is not None), F32(0)).astype(F32)
    mx = np.maximum(w.max(axis=red, keepdims=axis is not None), F32(0)).astype(F32)
    m = grid.steps
    smin = grid.scale_floor
    small = (mx - mn) / F32(m) < smin
    lo_n, hi_n = -(-m // 2), m // 2
    if grid.symmetric:
        mn = np.where(small, mn - F32(lo_n) * smin, mn).astype(F32)
        mx = np.where(small, mx + F32(hi_n) * smin, mx).astype(F32)
        den = F32(hi_n + 1) if m == 3 else F32(hi_n)
        d = np.maximum(mx / den, -mn / F32(lo_n)).astype(F32)
        mn, mx = (F32(-lo_n) * d).astype(F32), (F32(hi_n) * d).astype(F32)
    else:
        mx = np.where(small, mx + F32(m) * smin, mx).astype(F32)
    return mn, mx


def value_and_grad(sim, feeds, loss_fn):
    """``(loss, grads)`` of one training forward/backward; ``grads`` has the trainable names."""
    params = parameters(sim, copy=False)
    learn = range_learning(sim)
    slots = _slots(sim)
    if _state(sim).frozen is None and not learn:   # post-training: param ranges follow weights
        upd = {}
        for h, s in slots:
            if h.spec.is_param and s.tensor in params and s.tensor == s.range_base:
                mn, mx = range_names(s.range_base)
                upd[mn], upd[mx] = minmax_range(params[s.tensor], s.grid, h.spec.axis)
                upd[mn] = upd[mn].reshape(params[mn].shape)
                upd[mx] = upd[mx].reshape(params[mx].shape)
        if upd:
            set_parameters(sim, upd)
            params = {**params, **upd}
    tgraph = training_graph(sim.graph, tuple(s for _, s in slots), params, frozen=not learn)
    ranges = {n for _, s in slots for n in range_names(s.range_base)}
    trainable = [k for k in params if learn or k not in ranges]
    # the training graph keeps the model's output names (training_graph renames the raw value)
    loss, _, grads = _vg(tgraph, params, feeds, loss_fn, trainable=trainable)
    return loss, grads


def _progress_bar(total: int, progress):
    """A tqdm bar on stderr (``progress`` True, or None and stderr a terminal), else None;
    without tqdm (the ``cli`` extra) training runs quietly."""
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="qat", unit="step", file=sys.stderr)


def fit(sim, batches, loss_fn, optimizer, epochs: int = 1, *, progress=None) -> list:
    """Train: for each epoch, each ``(feeds, target)`` in ``batches``:
    ``loss, g = value_and_grad(feeds, loss_fn(target)); optimizer.step(sim, g)``. Returns the
    losses. ``progress``: a tqdm bar with the running loss (None: when stderr is a terminal)."""
    batches = list(batches)
    losses = []
    bar = _progress_bar(epochs * len(batches), progress)
    try:
        for _ in range(epochs):
            for feeds, target in batches:
                loss, grads = value_and_grad(sim, feeds, loss_fn(target))
                optimizer.step(sim, grads)
                losses.append(loss)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    _state(sim).history.extend(losses)
    return losses
