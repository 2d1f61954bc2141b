"""The quantizer in training: aimet-torch 2.42's learnable ``QuantizeDequantize`` (qat.md §2–§4).

Not the post-training kernel of :mod:`qsim.quant.kernels`: the encoding is derived in float32
from two learnable parameters ``θmin``, ``θmax`` at every forward, ties round to even on ``x/s``,
and the clamp is in the integer domain. ``M = qmax - qmin``, ``s_min = min(2^-23, 0.01/M)``.

Encoding (§2)::

    r = f32(θmax - θmin) / M;   s = max(|r|, s_min)
    asymmetric: o_raw = rne(θmin / s) - qmin;  o = clamp(o_raw, -qmax, -qmin)
    symmetric:  o = -rne((qmin + qmax) / 2)

Training path (§3), and its backward (§4)::

    t = x / s;  r = rne(t);  q = r - o;  m = qmin <= q <= qmax
    x̂ = f32((clamp(q, qmin, qmax) + o) · s)
    dx = m ? g : 0
    e  = m ? r - t : clamp(r, o + qmin, o + qmax);  gs = f32(g·e);  go = m ? 0 : f32(g·s)

Frozen path (``torch.fake_quantize_*``; quantizer parameters without grad)::

    v = rne(f32(x · f32(1/s))) - o;  m' = qmin <= v <= qmax
    x̂ = f32((clamp(v, qmin, qmax) + o) · s);  dx = g · m'   (a product: -0.0 where g < 0)

``gs``, ``go`` are summed (float64, rounded once) over the elements that share one quantizer
element and turned into ``dθmin``, ``dθmax`` by :func:`range_gradients`.

Every elementwise kernel exists twice, a Numba loop (``_nb_*``) and a NumPy twin (``_np_*``),
giving the same bits. Tensors are viewed as ``(outer, C, inner)`` around the channel axis
(``C = 1`` per tensor); the per-element parameters ``s``, ``o`` are float32 arrays of shape (C,).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..errors import EncodingError
from ..jit import USE_NUMBA, kernel

F32 = np.float32
EPS32 = F32(2.0 ** -23)


@dataclass(frozen=True)
class Grid:
    """The integer grid of a quantizer: codes ``qmin..qmax``; symmetric ⇒ constant offset."""

    qmin: int
    qmax: int
    symmetric: bool

    @property
    def steps(self) -> int:
        """``M = qmax - qmin``."""
        return self.qmax - self.qmin

    @property
    def scale_floor(self) -> np.float32:
        """``s_min = f32(min(2^-23, 0.01/M))``."""
        return F32(min(2.0 ** -23, 0.01 / self.steps))


@dataclass(frozen=True)
class TrainingEncoding:
    """The encoding in force for given ``θmin``, ``θmax`` (float32 arrays of the parameter shape).

    ``r`` signed step ``f32(θmax-θmin)/M``; ``scale`` = ``s``; ``offset`` = ``o``;
    ``offset_raw`` = ``o_raw`` before the clamp (asymmetric; equal to ``o`` when symmetric).
    """

    r: np.ndarray
    scale: np.ndarray
    offset: np.ndarray
    offset_raw: np.ndarray


def training_encoding(theta_min, theta_max, grid: Grid) -> TrainingEncoding:
    """§2: ``s = max(|f32(θmax-θmin)/M|, s_min)``; ``o`` as in the module docstring.

    >>> e = training_encoding(np.float32(-1.0), np.float32(3.0), Grid(0, 255, False))
    >>> float(e.scale), float(e.offset)
    (0.01568627543747425, -64.0)
    """
    tmin = np.asarray(theta_min, dtype=F32)
    tmax = np.asarray(theta_max, dtype=F32)
    with np.errstate(all="ignore"):
        r = F32(tmax - tmin) / F32(grid.steps)
        r = np.asarray(r, dtype=F32)
        s = np.maximum(np.abs(r), grid.scale_floor).astype(F32)
        if grid.symmetric:
            o = np.full(s.shape, -np.rint((grid.qmin + grid.qmax) / 2.0), dtype=F32)
            o_raw = o
        else:
            o_raw = (np.rint((tmin / s).astype(F32)) - F32(grid.qmin)).astype(F32)
            o = np.clip(o_raw, F32(-grid.qmax), F32(-grid.qmin)).astype(F32)
    return TrainingEncoding(r=r, scale=s, offset=o, offset_raw=o_raw)


# ---------------------------------------------------------------- Numba kernels

@kernel
def _nb_train_forward(x, s, o, qmin, qmax, out):
    """Training-path x̂ on ``x`` (outer, C, inner); ``s``, ``o`` float32 (C,)."""
    n_outer, n_ch, n_inner = x.shape
    lo = np.float64(qmin)
    hi = np.float64(qmax)
    for a in range(n_outer):
        for c in range(n_ch):
            sc = s[c]
            oc = np.float64(o[c])
            for i in range(n_inner):
                r = np.rint(x[a, c, i] / sc)
                q = np.float64(r) - oc
                if q < lo:
                    q = lo
                if q > hi:
                    q = hi
                out[a, c, i] = np.float32(q + oc) * sc


@kernel
def _nb_train_backward(x, g, s, o, qmin, qmax, dx, gs, go):
    """Training-path ``dx`` and elementwise ``gs``, ``go`` (float32), module docstring."""
    n_outer, n_ch, n_inner = x.shape
    lo = np.float64(qmin)
    hi = np.float64(qmax)
    for a in range(n_outer):
        for c in range(n_ch):
            sc = s[c]
            oc = np.float64(o[c])
            elo = np.float32(oc + lo)
            ehi = np.float32(oc + hi)
            for i in range(n_inner):
                t = x[a, c, i] / sc
                r = np.rint(t)
                q = np.float64(r) - oc
                gi = g[a, c, i]
                if lo <= q and q <= hi:
                    dx[a, c, i] = gi
                    gs[a, c, i] = gi * (r - t)
                    go[a, c, i] = np.float32(0.0)
                else:
                    dx[a, c, i] = np.float32(0.0)
                    e = r
                    if e < elo:
                        e = elo
                    if e > ehi:
                        e = ehi
                    gs[a, c, i] = gi * e
                    go[a, c, i] = gi * sc


@kernel
def _nb_train_backward_sums(x, g, s, o, qmin, qmax, dx, gs_sum, go_sum):
    """:func:`_nb_train_backward` fused with the reduction: ``dx`` and, per channel, the float64
    sums of ``gs`` and ``go`` accumulated in element order (outer-major, then inner), without
    writing ``gs``/``go``. ``gs_sum``, ``go_sum``: float64 (C,), zero on entry."""
    n_outer, n_ch, n_inner = x.shape
    lo = np.float64(qmin)
    hi = np.float64(qmax)
    for a in range(n_outer):
        for c in range(n_ch):
            sc = s[c]
            oc = np.float64(o[c])
            elo = np.float32(oc + lo)
            ehi = np.float32(oc + hi)
            acc_s = gs_sum[c]
            acc_o = go_sum[c]
            for i in range(n_inner):
                t = x[a, c, i] / sc
                r = np.rint(t)
                q = np.float64(r) - oc
                gi = g[a, c, i]
                if lo <= q and q <= hi:
                    dx[a, c, i] = gi
                    acc_s += np.float64(np.float32(gi * (r - t)))
                else:
                    dx[a, c, i] = np.float32(0.0)
                    e = r
                    if e < elo:
                        e = elo
                    if e > ehi:
                        e = ehi
                    acc_s += np.float64(np.float32(gi * e))
                    acc_o += np.float64(np.float32(gi * sc))
            gs_sum[c] = acc_s
            go_sum[c] = acc_o


@kernel
def _nb_frozen(x, g, s, o, qmin, qmax, out, dx):
    """Frozen-path x̂ and ``dx`` (``g`` may be ``x`` itself when only x̂ is wanted)."""
    n_outer, n_ch, n_inner = x.shape
    lo = np.float64(qmin)
    hi = np.float64(qmax)
    for a in range(n_outer):
        for c in range(n_ch):
            sc = s[c]
            inv = np.float32(1.0) / sc
            oc = np.float64(o[c])
            for i in range(n_inner):
                v = np.float64(np.rint(x[a, c, i] * inv)) - oc
                if lo <= v and v <= hi:
                    dx[a, c, i] = g[a, c, i] * np.float32(1.0)
                else:
                    dx[a, c, i] = g[a, c, i] * np.float32(0.0)
                if v < lo:
                    v = lo
                if v > hi:
                    v = hi
                out[a, c, i] = np.float32(v + oc) * sc


@kernel
def _nb_frozen_forward(x, s, o, qmin, qmax, out):
    """Frozen-path x̂ alone (:func:`_nb_frozen` without ``dx``)."""
    n_outer, n_ch, n_inner = x.shape
    lo = np.float64(qmin)
    hi = np.float64(qmax)
    for a in range(n_outer):
        for c in range(n_ch):
            sc = s[c]
            inv = np.float32(1.0) / sc
            oc = np.float64(o[c])
            for i in range(n_inner):
                v = np.float64(np.rint(x[a, c, i] * inv)) - oc
                if v < lo:
                    v = lo
                if v > hi:
                    v = hi
                out[a, c, i] = np.float32(v + oc) * sc


@kernel
def _nb_frozen_backward(x, g, s, o, qmin, qmax, dx):
    """Frozen-path ``dx = g·m'`` alone (:func:`_nb_frozen` without x̂)."""
    n_outer, n_ch, n_inner = x.shape
    lo = np.float64(qmin)
    hi = np.float64(qmax)
    for a in range(n_outer):
        for c in range(n_ch):
            inv = np.float32(1.0) / s[c]
            oc = np.float64(o[c])
            for i in range(n_inner):
                v = np.float64(np.rint(x[a, c, i] * inv)) - oc
                if lo <= v and v <= hi:
                    dx[a, c, i] = g[a, c, i] * np.float32(1.0)
                else:
                    dx[a, c, i] = g[a, c, i] * np.float32(0.0)


# ---------------------------------------------------------------- NumPy twins

def _np_codes(x3, s3, o3, qmin, qmax, frozen):
    """``(t, r, q, m)``: ``t`` = x/s (or x·f32(1/s)), ``r`` = rne(t), ``q`` = r - o (float64)."""
    with np.errstate(all="ignore"):
        t = (x3 * (F32(1.0) / s3)).astype(F32) if frozen else (x3 / s3).astype(F32)
        r = np.rint(t)
        q = r.astype(np.float64) - o3.astype(np.float64)
    m = (q >= qmin) & (q <= qmax)
    return t, r, q, m


def _np_train_forward(x3, s, o, qmin, qmax):
    s3, o3 = s[None, :, None], o[None, :, None]
    _, _, q, _ = _np_codes(x3, s3, o3, qmin, qmax, False)
    with np.errstate(all="ignore"):
        return ((np.clip(q, qmin, qmax) + o3).astype(F32) * s3).astype(F32)


def _np_train_backward(x3, g3, s, o, qmin, qmax):
    s3, o3 = s[None, :, None], o[None, :, None]
    t, r, _, m = _np_codes(x3, s3, o3, qmin, qmax, False)
    with np.errstate(all="ignore"):
        dx = np.where(m, g3, F32(0.0)).astype(F32)
        e_out = np.clip(r, (o3 + F32(qmin)).astype(F32), (o3 + F32(qmax)).astype(F32))
        e = np.where(m, (r - t).astype(F32), e_out).astype(F32)
        gs = (g3 * e).astype(F32)
        go = np.where(m, F32(0.0), (g3 * s3).astype(F32)).astype(F32)
    return dx, gs, go


def _sequential_channel_sums(a3):
    """Per channel, the float64 sum of ``a3`` (outer, C, inner) in element order (outer-major,
    then inner), one addition at a time (``np.cumsum`` is sequential), as the Numba kernel adds."""
    rows = a3.astype(np.float64).transpose(1, 0, 2).reshape(a3.shape[1], -1)
    if rows.shape[1] == 0:
        return np.zeros(a3.shape[1], np.float64)
    return np.cumsum(rows, axis=1)[:, -1] + 0.0     # the kernel starts from +0.0: never -0.0


def _np_train_backward_sums(x3, g3, s, o, qmin, qmax):
    """Twin of :func:`_nb_train_backward_sums`: ``(dx, Σgs, Σgo)`` (sums float64, per channel)."""
    dx, gs, go = _np_train_backward(x3, g3, s, o, qmin, qmax)
    return dx, _sequential_channel_sums(gs), _sequential_channel_sums(go)


def _np_frozen(x3, g3, s, o, qmin, qmax):
    s3, o3 = s[None, :, None], o[None, :, None]
    _, _, v, m = _np_codes(x3, s3, o3, qmin, qmax, True)
    with np.errstate(all="ignore"):
        out = ((np.clip(v, qmin, qmax) + o3).astype(F32) * s3).astype(F32)
    with np.errstate(all="ignore"):
        return out, (g3 * m.astype(F32)).astype(F32)


# ---------------------------------------------------------------- public functions

def channel_axis_of(param_shape, x_shape):
    """The axis of ``x`` along which a parameter of ``param_shape`` (NumPy-broadcastable against
    ``x_shape``) varies, or None when it holds one element. More than one such axis: EncodingError.
    """
    p = (1,) * (len(x_shape) - len(param_shape)) + tuple(param_shape)
    if len(p) != len(x_shape):
        raise EncodingError(f"quantizer parameter shape {tuple(param_shape)} has more axes than "
                            f"the tensor {tuple(x_shape)}")
    axes = [i for i, n in enumerate(p) if n != 1]
    if len(axes) > 1 or any(p[i] != x_shape[i] for i in axes):
        raise EncodingError(f"quantizer parameter shape {tuple(param_shape)} is not per tensor or "
                            f"per channel for a tensor of shape {tuple(x_shape)}: expected () or "
                            f"one axis equal to the tensor's, 1 elsewhere")
    return axes[0] if axes else None


def _view3(a, axis):
    """``a`` as a contiguous float32 (outer, C, inner) array around ``axis`` (None: C = 1)."""
    a = np.ascontiguousarray(a, dtype=F32)
    if axis is None:
        return a.reshape(1, 1, -1)
    outer = int(np.prod(a.shape[:axis], dtype=np.int64))
    return a.reshape(outer, a.shape[axis], -1)


def _flat(p):
    return np.ascontiguousarray(np.asarray(p, dtype=F32).reshape(-1))


def quantize_train(x, enc: TrainingEncoding, grid: Grid, *, run=None,
                   parts: int = 1) -> np.ndarray:
    """Training-path forward ``x̂ = f32((clamp(rne(x/s) - o, qmin, qmax) + o)·s)`` (§3).

    With ``run`` (a function that calls a list of zero-argument jobs, e.g. on threads) the Numba
    kernel is cut into ``parts`` channel ranges run by it; the result is the same to the bit."""
    x = np.asarray(x, dtype=F32)
    axis = channel_axis_of(enc.scale.shape, x.shape)
    x3, s, o = _view3(x, axis), _flat(enc.scale), _flat(enc.offset)
    if USE_NUMBA:
        out = np.empty_like(x3)

        def call(sl):
            _nb_train_forward(x3[:, sl], s[sl], o[sl], grid.qmin, grid.qmax, out[:, sl])

        _run_jobs(_channel_jobs(call, x3.shape[1], parts if run is not None else 1), run)
    else:
        out = _np_train_forward(x3, s, o, grid.qmin, grid.qmax)
    return out.reshape(x.shape)


def quantize_frozen(x, enc: TrainingEncoding, grid: Grid, g=None):
    """Frozen-path forward ``x̂`` (and ``dx = g·m'`` when ``g`` is given), §3.

    Returns ``x̂`` alone when ``g`` is None, else ``(x̂, dx)``.
    """
    x = np.asarray(x, dtype=F32)
    axis = channel_axis_of(enc.scale.shape, x.shape)
    x3, s, o = _view3(x, axis), _flat(enc.scale), _flat(enc.offset)
    if g is None:
        if USE_NUMBA:
            out = np.empty_like(x3)
            _nb_frozen_forward(x3, s, o, grid.qmin, grid.qmax, out)
        else:
            out = _np_frozen(x3, x3, s, o, grid.qmin, grid.qmax)[0]
        return out.reshape(x.shape)
    g3 = _view3(g, axis)
    if USE_NUMBA:
        out, dx = np.empty_like(x3), np.empty_like(x3)
        _nb_frozen(x3, g3, s, o, grid.qmin, grid.qmax, out, dx)
    else:
        out, dx = _np_frozen(x3, g3, s, o, grid.qmin, grid.qmax)
    return out.reshape(x.shape), dx.reshape(x.shape)


def quantize_frozen_backward(x, g, enc: TrainingEncoding, grid: Grid) -> np.ndarray:
    """Frozen-path backward alone, ``dx = g·m'`` (§4; x̂ is not recomputed)."""
    x = np.asarray(x, dtype=F32)
    axis = channel_axis_of(enc.scale.shape, x.shape)
    x3, g3, s, o = _view3(x, axis), _view3(g, axis), _flat(enc.scale), _flat(enc.offset)
    if USE_NUMBA:
        dx = np.empty_like(x3)
        _nb_frozen_backward(x3, g3, s, o, grid.qmin, grid.qmax, dx)
    else:
        dx = _np_frozen(x3, g3, s, o, grid.qmin, grid.qmax)[1]
    return dx.reshape(x.shape)


def range_gradients(gs_sum, go_sum, theta_min, enc: TrainingEncoding, grid: Grid):
    """§4, per quantizer element, from the float32 sums ``Gs``, ``Go``::

        asymmetric: Go' = (-qmax <= o_raw <= -qmin) ? Go : 0;  dθmin_o = f32(Go'/s)
                    Gs' = f32(Gs + f32(-Go' · f32(f32(θmin/s)/s)))
        symmetric:  dθmin_o = 0;  Gs' = Gs
        Gr = (|r| >= s_min ? Gs' : 0) · sign(r);  D = f32(Gr/M)
        dθmax = D;  dθmin = f32(-D + dθmin_o)
    """
    s, r = enc.scale, enc.r
    gs_sum = np.asarray(gs_sum, dtype=F32)
    with np.errstate(all="ignore"):
        if grid.symmetric:
            d_o = np.zeros_like(s)
            gs_p = gs_sum
        else:
            tmin = np.asarray(theta_min, dtype=F32)
            passes = (enc.offset_raw >= -grid.qmax) & (enc.offset_raw <= -grid.qmin)
            go_p = np.where(passes, np.asarray(go_sum, dtype=F32), F32(0.0)).astype(F32)
            d_o = (go_p / s).astype(F32)
            ratio = ((tmin / s).astype(F32) / s).astype(F32)
            gs_p = (gs_sum + (-go_p * ratio).astype(F32)).astype(F32)
        gr = (np.where(np.abs(r) >= grid.scale_floor, gs_p, F32(0.0)) * np.sign(r)).astype(F32)
        d = (gr / F32(grid.steps)).astype(F32)
        dmin = (-d + d_o).astype(F32)
    return dmin.reshape(s.shape), d.reshape(s.shape)


def _channel_jobs(call, n: int, parts: int) -> list:
    """Zero-argument jobs ``call(slice)`` over ``parts`` disjoint ranges of the ``n`` channels
    (the kernels never mix channels, so a split changes no bit)."""
    parts = max(1, min(parts, n))
    edges = [n * k // parts for k in range(parts + 1)]
    return [functools.partial(call, slice(a, b)) for a, b in zip(edges[:-1], edges[1:])]


def _run_jobs(jobs, run):
    if run is None:
        for job in jobs:
            job()
    else:
        run(jobs)


def quantize_train_backward(x, g, theta_min, enc: TrainingEncoding, grid: Grid, *, run=None,
                            parts: int = 1):
    """Training-path backward (§4): ``(dx, dθmin, dθmax)`` for upstream gradient ``g``.

    With ``run`` (a function that calls a list of zero-argument jobs, e.g. on threads) the Numba
    kernel is cut into ``parts`` channel ranges run by it; the result is the same to the bit.

    ``dx = m ? g : 0``; ``Gs = Σ gs``, ``Go = Σ go`` over every axis but the channel axis, summed
    in float64 in element order (fused with ``dx``: ``gs``, ``go`` are never stored) and rounded
    once; then :func:`range_gradients`.
    """
    x = np.asarray(x, dtype=F32)
    axis = channel_axis_of(enc.scale.shape, x.shape)
    x3, g3 = _view3(x, axis), _view3(g, axis)
    s, o = _flat(enc.scale), _flat(enc.offset)
    if USE_NUMBA:
        dx = np.empty_like(x3)
        gs64, go64 = np.zeros(s.shape, np.float64), np.zeros(s.shape, np.float64)

        def call(sl):
            _nb_train_backward_sums(x3[:, sl], g3[:, sl], s[sl], o[sl], grid.qmin, grid.qmax,
                                    dx[:, sl], gs64[sl], go64[sl])

        _run_jobs(_channel_jobs(call, x3.shape[1], parts if run is not None else 1), run)
    else:
        dx, gs64, go64 = _np_train_backward_sums(x3, g3, s, o, grid.qmin, grid.qmax)
    gs_sum = gs64.astype(F32).reshape(enc.scale.shape)
    go_sum = go64.astype(F32).reshape(enc.scale.shape)
    dmin, dmax = range_gradients(gs_sum, go_sum, theta_min, enc, grid)
    return dx.reshape(x.shape), dmin, dmax
