"""Normalizations beyond Batch/Instance/Layer (in :mod:`qsim.ops.nn`): LRN, GroupNormalization,
LpNormalization, MeanVarianceNormalization.

GroupNormalization is ONNX's function body made of qsim's exact ops (as ONNX Runtime runs it:
bit for bit); LpNormalization and MeanVarianceNormalization follow ORT's kernels bit for bit.
LRN follows ORT's running channel sums and its power (Eigen's packet pow, C powf outside the
packets) bit for bit (see :func:`lrn`)."""
from __future__ import annotations

import functools
import math

import numpy as np

from ..errors import OpError
from ..jit import USE_NUMBA, kernel
from .registry import register
from ..kernels import eigen_math
from ..kernels import libm
from ..kernels import mlas_math as math_exact
from .elementwise import add, div, mul, sqrt, sub
from .tensor import _axes, _axis, reduce_mean

@register("LRN")
def lrn(x, *, alpha=1e-4, beta=0.75, bias=1.0, size=None):
    """Local response normalization across channels:
    ``Y[n, c] = X[n, c] · (bias + alpha / size · Σ_{c'} X[n, c']²) ** -beta`` with ``c'`` from
    ``c - floor((size - 1) / 2)`` to ``c + ceil((size - 1) / 2)`` (clipped to the channels).

    float32: the window sums as ONNX Runtime runs them — ``s_0 = bias + Σ_{k<size} a·sq[k]``
    added one plane at a time, then ``s_c = (s_{c-1} + a·sq[c + size - 1]) + (-a)·sq[c - 1]``
    over the zero-padded squares (``a = float32(alpha / size)``). ORT then computes
    ``X · scale.pow(-beta)`` as an Eigen array expression cut into ORT's parallel blocks
    (cost 320 per element, the session's threads): elements outside the aligned packets of 4
    of a block (:func:`qsim.kernels.mlas_math.eigen_scalar_positions`) take C ``powf``, those in
    packets Eigen's packet pow (:func:`qsim.kernels.eigen_math.ppow`: repeated multiplication
    for an integer exponent in [-3, 7], else its double-word log2/exp2), both bit for bit.
    Where two NaNs meet, ORT's: a NaN product wins in a window sum (:func:`_add_product`), X's
    NaN in the packets of ``X · power``, powf's outside them (:func:`_times_power`).

    float32 runs compiled (window sums :func:`_nb_window_sums`, pow
    :func:`qsim.kernels.eigen_math._nb_ppow`, both vectorised); with ``NUMBA_DISABLE_JIT=1``
    the NumPy twins, which give the same bits (tests/ops/test_lrn_kernels.py); other dtypes
    always the twins."""
    if x.ndim < 3:
        raise OpError(f"input X has shape {list(x.shape)}; expected rank >= 3 (N, C, ...)")
    if size is None or int(size) < 1:
        raise OpError(f"attribute size={size!r}, expected an integer >= 1")
    size = int(size)
    t = x.dtype.type
    a = t(t(alpha) / t(size))
    if USE_NUMBA and x.dtype == np.float32:
        scale = np.empty_like(x)
        x3 = np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)
        _nb_window_sums(x3, size, a, t(bias), scale.reshape(x3.shape))
    else:
        scale = _np_window_sums(x, size, a, t(bias))
    b = float(np.float32(beta))
    if x.dtype != np.float32:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            power = np.power(scale.astype(np.float64), -b).astype(x.dtype)
        return _times_power(x, power, np.zeros(0, np.int64))
    power = eigen_math.ppow(scale, -b).reshape(-1)
    scalar = _scalar_indices(power.size, math_exact.DEFAULT_THREADS)
    if scalar.size:
        power[scalar] = libm.c_pow(scale.reshape(-1)[scalar], np.full(scalar.size, t(-b)))
    return _times_power(x, power.reshape(x.shape), scalar)


@functools.lru_cache(maxsize=64)
def _scalar_indices(n: int, threads: int) -> np.ndarray:
    """Flat indices (sorted, read-only) of the elements of an LRN of ``n`` values that ORT
    computes one at a time (:func:`qsim.kernels.mlas_math.eigen_scalar_positions`)."""
    out = np.flatnonzero(math_exact.eigen_scalar_positions(n, _LRN_COST, threads))
    out.flags.writeable = False
    return out


def _times_power(x: np.ndarray, power: np.ndarray, scalar: np.ndarray) -> np.ndarray:
    """``x · power`` with ORT's NaNs: where both are NaN, x's (quiet) NaN in Eigen's packets,
    power's at the flat indices ``scalar`` of the elements ORT computes one at a time."""
    with np.errstate(invalid="ignore", over="ignore"):
        y = x * power
    flat, xf, pf = y.reshape(-1), x.reshape(-1), power.reshape(-1)
    nan = np.flatnonzero(np.isnan(xf))
    if nan.size:
        one_at_a_time = np.isin(nan, scalar)
        packet = nan[~one_at_a_time]
        flat[packet] = _quiet(xf[packet])
        both = nan[one_at_a_time & np.isnan(pf[nan])]
        flat[both] = pf[both]
    return y


def _np_window_sums(x: np.ndarray, size: int, a, bias) -> np.ndarray:
    """ORT's LRN window sums (NumPy twin of :func:`_nb_window_sums`): over the squares of ``x``
    zero-padded with ``floor((size - 1) / 2)`` channels before and the rest after,
    ``s_0 = (bias + a·sq[0]) + ... + a·sq[size - 1]`` and
    ``s_c = (s_{c-1} + a·sq[c + size - 1]) + (-a)·sq[c - 1]``, each step rounded in x's dtype
    (the zero planes added too: ``a·0`` is NaN for an infinite ``a``). NaN signs as in ORT's
    ``y += x·alpha``: a NaN product is the sum (:func:`_add_product`), a NaN ``a`` the product."""
    n, c = x.shape[:2]
    squares = np.zeros((n, c + size - 1) + x.shape[2:], x.dtype)
    scale = np.empty_like(x)
    running = np.full((n,) + x.shape[2:], bias, x.dtype)
    with np.errstate(over="ignore", invalid="ignore"):      # inf/NaN inputs: IEEE results
        squares[:, (size - 1) // 2:(size - 1) // 2 + c] = x * x
        for k in range(size):
            running = _add_product(running, a, squares[:, k])
        scale[:, 0] = running
        for ch in range(1, c):
            running = _add_product(running, a, squares[:, ch + size - 1])
            running = _add_product(running, -a, squares[:, ch - 1])
            scale[:, ch] = running
    return scale


def _add_product(running: np.ndarray, a, sq: np.ndarray) -> np.ndarray:
    """``running + a·sq`` with ORT's NaNs: ``p = a`` if ``a`` is NaN else ``a·sq``; the sum is
    ``p`` where ``p`` is NaN, also when ``running`` is NaN too (what ORT's compiled Axpy gives,
    tests/ops/test_lrn_kernels.py; a plain NumPy add keeps either NaN, depending on the
    element's position in NumPy's SIMD loop)."""
    p = np.full_like(sq, a) if np.isnan(a) else a * sq
    return np.where(np.isnan(p), p, running + p)


@kernel
def _nb_window_sums(x, size, a, bias, scale):
    """:func:`_np_window_sums` of a float32 ``x`` of shape (N, C, S) into ``scale`` (same
    shape): the same operations in the same order, NaNs chosen by selects (LLVM may swap the
    operands of an add), vectorised along S."""
    n, c, s = x.shape
    before = (size - 1) // 2
    zero = np.float32(0.0)
    neg = -a
    for b in range(n):
        for j in range(s):
            scale[b, 0, j] = bias
        for k in range(size):
            ch = k - before
            inside = 0 <= ch < c
            src = min(max(ch, 0), c - 1)
            for j in range(s):
                v = x[b, src, j]
                scale[b, 0, j] = _add_product_nb(scale[b, 0, j], a, v * v if inside else zero)
        for ch in range(1, c):
            add, sub = ch + size - 1 - before, ch - 1 - before
            add_inside, sub_inside = add < c, sub >= 0
            add, sub = min(add, c - 1), max(sub, 0)
            for j in range(s):
                va, vs = x[b, add, j], x[b, sub, j]
                run = _add_product_nb(scale[b, ch - 1, j], a, va * va if add_inside else zero)
                scale[b, ch, j] = _add_product_nb(run, neg, vs * vs if sub_inside else zero)


@kernel
def _add_product_nb(running, a, sq):
    """:func:`_add_product` of float32 scalars."""
    p = a if a != a else a * sq
    return p if p != p else running + p


def _quiet(nan: np.ndarray) -> np.ndarray:
    """The quiet form of NaNs (the top mantissa bit set, as x86 arithmetic returns them)."""
    bits = nan.view(np.dtype(f"u{nan.itemsize}"))
    top = bits.dtype.type(1) << bits.dtype.type(np.finfo(nan.dtype).nmant - 1)
    return (bits | top).view(nan.dtype)


#: Eigen TensorOpCost of ORT's LRN power per element (4 bytes in, 4 out, 320 cycles; the
#: bytes at 11/64 cycles each, as for Log)
_LRN_COST = 4 * 11 / 64 + 4 * 11 / 64 + 320.0


@register("GroupNormalization")
def group_normalization(x, scale, b, *, epsilon=1e-5, num_groups=None, stash_type=1, opset=21):
    """``Y = (X - μ_g) / sqrt(σ²_g + epsilon) · scale + bias`` over each group of
    ``C / num_groups`` channels (with the spatial axes) of a sample, computed as ONNX's function
    body, which ONNX Runtime runs: with ``X3 = X`` reshaped to ``(N, G, -1)``,
    ``μ = ReduceMean(X3)``, ``σ² = ReduceMean(X3·X3) - μ·μ``, ``Y = (X3 - μ) / sqrt(σ² + eps)``,
    then ``scale · Y + bias`` with ``scale``/``bias`` per channel (opset 21, Y reshaped to
    ``(N, C, -1)``) or per group (opset 18)."""
    if x.ndim < 3:
        raise OpError(f"input X has shape {list(x.shape)}; expected rank >= 3 (N, C, ...)")
    n, c = x.shape[:2]
    g = int(num_groups) if num_groups is not None else 0
    if g < 1 or c % g:
        raise OpError(f"attribute num_groups={num_groups!r} must divide the {c} channels")
    per = c if opset >= 21 else g
    for name, v in (("scale", scale), ("bias", b)):
        if np.shape(v) != (per,):
            raise OpError(f"input {name} has shape {list(np.shape(v))}, expected [{per}] at "
                          f"opset {opset}")
    x3 = x.reshape(n, g, -1)
    axes = np.array([2], np.int64)
    mean = reduce_mean(x3, axes)
    var = sub(reduce_mean(mul(x3, x3), axes), mul(mean, mean))
    eps = np.asarray(np.float32(epsilon)).astype(x.dtype).reshape(1)
    normalized = div(sub(x3, mean), sqrt(add(var, eps)))
    normalized = normalized.reshape(n, per, -1)
    y = add(mul(scale.reshape(1, -1, 1), normalized), b.reshape(1, -1, 1))
    return y.reshape(x.shape)


@register("LpNormalization")
def lp_normalization(x, *, axis=-1, p=2):
    """``Y = X / ||X||_p`` along ``axis`` (p = 1: sum of |X|, p = 2: Euclidean norm). float32 as
    ONNX Runtime: the norm's sum runs left to right in float32 (``sqrt`` of the sum of ``x·x``
    for p = 2) and a zero vector stays zero; other dtypes in float64."""
    if p not in (1, 2):
        raise OpError(f"attribute p={p!r}, expected 1 or 2")
    axis = _axis("LpNormalization", "axis", axis, x.ndim)
    if x.dtype == np.float32 and x.size:
        rows = np.moveaxis(x, axis, -1)
        flat = rows.reshape(-1, rows.shape[-1])
        terms = np.abs(flat) if p == 1 else flat * flat
        norm = math_exact.sequential_sums(terms)
        if p == 2:
            norm = np.sqrt(norm)
        with np.errstate(invalid="ignore", divide="ignore"):
            y = np.where(norm[:, None] == 0, np.float32(0), flat / norm[:, None])
        return np.ascontiguousarray(np.moveaxis(y.reshape(rows.shape), -1, axis))
    x64 = x.astype(np.float64)
    norm = (np.abs(x64).sum(axis=axis, keepdims=True) if p == 1
            else np.sqrt(np.square(x64).sum(axis=axis, keepdims=True)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm == 0, 0.0, x64 / norm).astype(x.dtype)


@register("MeanVarianceNormalization")
def mean_variance_normalization(x, *, axes=(0, 2, 3)):
    """``Y = (X - E[X]) / sqrt(E[(X - E[X])²])`` with the means over ``axes``.

    float32 as ONNX Runtime's kernel: the ``axes`` moved last, each group's sum by Eigen's
    vectorised redux (:func:`qsim.kernels.mlas_math.eigen_row_sums`) divided by ``float(n)``,
    ``D = X - mean``, then ``D / sqrt(sum(D·D) / n)`` (that sum's packets starting at the group's
    first element). Other dtypes follow ONNX's function body in float64:
    ``(X - E[X]) / (sqrt(E[X²] - E[X]²) + 1e-9)``."""
    axes = sorted(_axes("MeanVarianceNormalization", "axes", axes, x.ndim))
    if x.dtype == np.float32 and x.size:
        perm = [a for a in range(x.ndim) if a not in axes] + axes
        moved = np.ascontiguousarray(np.transpose(x, perm))
        groups = moved.reshape(-1, math.prod(moved.shape[x.ndim - len(axes):]))
        n = np.float32(groups.shape[1])
        mean = math_exact.eigen_row_sums(groups) / n
        d = groups - mean[:, None]
        spread = math_exact.eigen_row_sums(d * d, np.zeros(groups.shape[0], np.int64)) / n
        with np.errstate(invalid="ignore", divide="ignore"):
            y = d / np.sqrt(spread)[:, None]
        return np.ascontiguousarray(np.transpose(y.reshape(moved.shape), np.argsort(perm)))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=tuple(axes), keepdims=True)
    var = np.square(x64).mean(axis=tuple(axes), keepdims=True) - np.square(mean)
    return ((x64 - mean) / (np.sqrt(np.maximum(var, 0)) + 1e-9)).astype(x.dtype)
