"""Normalizations beyond Batch/Instance/Layer (in :mod:`qsim.ops.nn`): LRN, GroupNormalization,
LpNormalization, MeanVarianceNormalization.

GroupNormalization is ONNX's function body made of qsim's exact ops (as ONNX Runtime runs it:
bit for bit); LpNormalization and MeanVarianceNormalization follow ORT's kernels bit for bit.
LRN follows ORT's running channel sums and its power (Eigen's packet pow, C powf outside the
packets) bit for bit (see :func:`lrn`)."""
from __future__ import annotations

import math

import numpy as np

from ..errors import OpError
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
    for an integer exponent in [-3, 7], else its double-word log2/exp2), both bit for bit."""
    if x.ndim < 3:
        raise OpError(f"input X has shape {list(x.shape)}; expected rank >= 3 (N, C, ...)")
    if size is None or int(size) < 1:
        raise OpError(f"attribute size={size!r}, expected an integer >= 1")
    size = int(size)
    t = x.dtype.type
    n, c = x.shape[:2]
    a = t(t(alpha) / t(size))
    squares = np.zeros((n, c + size - 1) + x.shape[2:], x.dtype)
    scale = np.empty_like(x)
    running = np.full((n,) + x.shape[2:], t(bias), x.dtype)
    with np.errstate(over="ignore", invalid="ignore"):      # inf/NaN inputs: IEEE results
        squares[:, (size - 1) // 2:(size - 1) // 2 + c] = x * x
        for k in range(size):
            running = running + a * squares[:, k]
        scale[:, 0] = running
        for ch in range(1, c):
            running = running + a * squares[:, ch + size - 1]
            running = running + (-a) * squares[:, ch - 1]
            scale[:, ch] = running
    b = float(np.float32(beta))
    if x.dtype == np.float32:
        power = eigen_math.ppow(scale, -b)
    else:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            power = np.power(scale.astype(np.float64), -b).astype(x.dtype)
    if x.dtype == np.float32:
        flat = power.reshape(-1)
        scalar = math_exact.eigen_scalar_positions(flat.size, _LRN_COST, math_exact.DEFAULT_THREADS)
        flat[scalar] = libm.c_pow(scale.reshape(-1)[scalar], np.full(int(scalar.sum()), t(-b)))
    with np.errstate(invalid="ignore", over="ignore"):
        return x * power


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
