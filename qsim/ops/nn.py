"""Neural-network ops: convolution, matrix products, pooling, normalization, softmax, resize.

ONNX semantics at opsets 13-21, float32. One function per op, registered with ``@register``; the
formula is in each docstring. Shared helpers (attribute checks, padding geometry, the strided
window view) come first.

Float32 Conv, ConvTranspose, Gemm and MatMul use :mod:`qsim.kernels.gemm`, which sums the
products in ONNX Runtime's (MLAS's) order, bit for bit; the notes below describe the float64 path.

Performance notes. Conv, ConvTranspose, Gemm and MatMul reduce to one BLAS matrix product
(``np.matmul``): Conv builds its "im2col" matrix from a read-only strided window view (one copy),
ConvTranspose multiplies first and scatters the columns back ("col2im", a loop over kernel
offsets only). The product is one large GEMM over the whole batch, ``(M, C·K) @ (C·K, N·O)``
(per-image products are ~2x slower on ResNet-18), so the result is channel-major and is
transposed back to a C-contiguous NCHW array (about 1-2% of the Conv time).
"""
from __future__ import annotations

import functools
import itertools
import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import OpError
from ..jit import USE_NUMBA, kernel
from ..kernels import avx512
from ..kernels import gemm as gemm_exact
from ..kernels import mlas_math as math_exact
from ..kernels.family import resolve as resolve_family
from . import epilogue
from .registry import register

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


# ---------------------------------------------------------------------------------------------
# attribute checks and geometry
# ---------------------------------------------------------------------------------------------
def _ints(name: str, value, default: int, n: int, *, minimum: int) -> tuple[int, ...]:
    """A per-spatial-axis integer attribute (strides, dilations): ``n`` values >= ``minimum``."""
    if value is None:
        return (default,) * n
    values = tuple(int(v) for v in np.atleast_1d(value))
    if len(values) != n:
        raise OpError(f"attribute {name}={list(values)} has {len(values)} value(s), expected {n} "
                      f"(one per spatial axis)")
    if any(v < minimum for v in values):
        raise OpError(f"attribute {name}={list(values)} must be >= {minimum} on every axis")
    return values


def _check_auto_pad(auto_pad) -> str:
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if auto_pad not in AUTO_PADS:
        raise OpError(f"attribute auto_pad='{auto_pad}' is not one of {list(AUTO_PADS)}")
    return auto_pad


def _explicit_pads(pads, n: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """ONNX ``pads = [x1_begin, x2_begin, ..., x1_end, x2_end, ...]`` → (begins, ends)."""
    if pads is None:
        return (0,) * n, (0,) * n
    values = tuple(int(p) for p in np.atleast_1d(pads))
    if len(values) != 2 * n:
        raise OpError(f"attribute pads={list(values)} has {len(values)} value(s), expected {2 * n} "
                      f"(begin and end for each of the {n} spatial axes)")
    if any(p < 0 for p in values):
        raise OpError(f"attribute pads={list(values)} must be >= 0")
    return values[:n], values[n:]


def _same_pads(size: int, stride: int, extent: int, auto_pad: str) -> tuple[int, int]:
    """SAME_* padding: output ``ceil(size / stride)``, total pad split with the odd pixel at the
    end (SAME_UPPER) or at the beginning (SAME_LOWER). ``extent`` is the (dilated) window size."""
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + extent - size)
    small, large = total // 2, total - total // 2
    return (small, large) if auto_pad == "SAME_UPPER" else (large, small)


def _window_pads(spatial, kernel, strides, dilations, auto_pad, pads, *, dilate_same=True):
    """Begin/end padding per spatial axis for a sliding-window op (Conv, pools).

    ``dilate_same=False`` reproduces ONNX Runtime's pools, whose SAME padding uses the undilated
    kernel size."""
    n = len(spatial)
    if auto_pad == "VALID":
        return (0,) * n, (0,) * n
    if auto_pad == "NOTSET":
        return _explicit_pads(pads, n)
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        extent = (k - 1) * d + 1 if dilate_same else k
        b, e = _same_pads(size, s, extent, auto_pad)
        begins.append(b)
        ends.append(e)
    return tuple(begins), tuple(ends)


def _out_size(size: int, k: int, s: int, d: int, begin: int, end: int, ceil_mode: bool) -> int:
    """``floor_or_ceil((size + begin + end - d·(k-1) - 1) / s) + 1``; with ceil_mode the last
    window must start inside the input or the begin padding."""
    span = size + begin + end - d * (k - 1) - 1
    if span < 0:
        return 0
    if not ceil_mode:
        return span // s + 1
    out = -(-span // s) + 1
    if (out - 1) * s >= size + begin:
        out -= 1
    return out


def _pad(x: np.ndarray, begins, ends, value=0.0) -> np.ndarray:
    """Pad the spatial axes (2...) of ``x``; no copy when nothing is padded."""
    if not any(begins) and not any(ends):
        return x
    shape = x.shape[:2] + tuple(d + int(b) + int(e) for d, b, e in zip(x.shape[2:], begins, ends))
    out = np.full(shape, value, dtype=x.dtype)      # (np.pad: the same array, 2-3x slower)
    out[(slice(None), slice(None)) + tuple(slice(int(b), int(b) + d)
                                           for b, d in zip(begins, x.shape[2:]))] = x
    return out


def _windows(xp: np.ndarray, kernel, strides, dilations, out) -> np.ndarray:
    """Read-only view ``v[n, c, *k, *o] = xp[n, c, *(o·stride + k·dilation)]`` (no copy)."""
    sp = xp.strides[2:]
    shape = xp.shape[:2] + tuple(kernel) + tuple(out)
    step = xp.strides[:2] + tuple(s * d for s, d in zip(sp, dilations)) \
        + tuple(s * t for s, t in zip(sp, strides))
    return as_strided(xp, shape=shape, strides=step, writeable=False)


def _float_result(*arrays) -> np.dtype:
    return np.result_type(*[a for a in arrays if a is not None])


# ---------------------------------------------------------------------------------------------
# convolution
# ---------------------------------------------------------------------------------------------
def _check_conv_operands(x, w, b, group, kernel_shape, *, transposed: bool):
    """Validate ranks, group and channels of Conv / ConvTranspose; return the spatial rank."""
    if x.ndim < 3:
        raise OpError(f"input X has shape {list(x.shape)}; expected rank >= 3 (N, C, spatial...)")
    if w.ndim != x.ndim:
        raise OpError(f"weight W has shape {list(w.shape)} (rank {w.ndim}); expected rank "
                      f"{x.ndim} like X {list(x.shape)}")
    group = int(group)
    if group < 1:
        raise OpError(f"attribute group={group} must be >= 1")
    channels = x.shape[1]
    if channels % group:
        raise OpError(f"attribute group={group} does not divide the {channels} input channels "
                      f"of X {list(x.shape)}")
    if transposed:
        if w.shape[0] != channels:
            raise OpError(f"weight W {list(w.shape)} has {w.shape[0]} input channels on axis 0, "
                          f"expected {channels} (channels of X {list(x.shape)})")
        out_channels = w.shape[1] * group
    else:
        if w.shape[1] * group != channels:
            raise OpError(f"weight W {list(w.shape)} has {w.shape[1]} channels per group, so "
                          f"with group={group} X needs {w.shape[1] * group} channels, but "
                          f"X {list(x.shape)} has {channels}")
        out_channels = w.shape[0]
        if out_channels % group:
            raise OpError(f"attribute group={group} does not divide the {out_channels} output "
                          f"channels of W {list(w.shape)}")
    if kernel_shape is not None and tuple(int(k) for k in kernel_shape) != tuple(w.shape[2:]):
        raise OpError(f"attribute kernel_shape={list(kernel_shape)} does not match the spatial "
                      f"shape {list(w.shape[2:])} of W {list(w.shape)}")
    if b is not None and (b.ndim != 1 or b.shape[0] != out_channels):
        raise OpError(f"bias B has shape {list(b.shape)}; expected [{out_channels}] (one value "
                      f"per output channel)")
    return x.ndim - 2, group


def _batch_major(y: np.ndarray) -> np.ndarray:
    """``(M, N, *s)`` product → the C-contiguous ``(N, M, *s)`` array that ONNX expects."""
    return np.ascontiguousarray(y.transpose(1, 0, *range(2, y.ndim)))


@register("Conv")
def conv(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
         pads=None, strides=None, fp32_kernels="auto", then_relu=False, then_steps=()):
    """N-D convolution (cross-correlation), grouped.

    ``Y[n, m, o] = B[m] + Σ_{c ∈ group(m), k} X_pad[n, c, o·stride + k·dilation] · W[m, c', k]``
    with ``X`` zero-padded by ``pads`` (or ``auto_pad``), ``o`` over
    ``floor((size + pads - dilation·(kernel-1) - 1) / stride) + 1`` positions per axis.
    Computed as one batched matrix product per group: ``W_g (M/g, C/g·K) @ cols_g (C/g·K, N·O)``
    (float32: in ONNX Runtime's order for the kernel family, :func:`qsim.kernels.gemm.conv`).
    ``then_relu`` (from the executor): return ``Relu(Y)`` (float32: in the bias pass);
    ``then_steps``: then the per-channel ops of :mod:`qsim.ops.epilogue` (float32: in the bias
    pass too).
    """
    nsp, group = _check_conv_operands(x, w, b, group, kernel_shape, transposed=False)
    auto_pad = _check_auto_pad(auto_pad)
    kernel = tuple(w.shape[2:])
    strides = _ints("strides", strides, 1, nsp, minimum=1)
    dilations = _ints("dilations", dilations, 1, nsp, minimum=1)
    spatial = x.shape[2:]
    begins, ends = _window_pads(spatial, kernel, strides, dilations, auto_pad, pads)
    out = tuple(_out_size(*a, False) for a in zip(spatial, kernel, strides, dilations, begins, ends))
    if min(out) < 1:
        raise OpError(f"output spatial shape {list(out)} is empty: input {list(spatial)} with "
                      f"kernel_shape={list(kernel)}, pads={list(begins + ends)}, "
                      f"dilations={list(dilations)}")
    dtype = _float_result(x, w, b)
    if dtype == np.float32:     # ONNX Runtime's (MLAS's) summation order, bit for bit
        return gemm_exact.conv(x, w, b, group=group, strides=strides, dilations=dilations,
                               begins=begins, ends=ends, family=resolve_family(fp32_kernels),
                               relu=then_relu,
                               steps=epilogue.packed(tuple(then_steps), w.shape[0])
                               if then_steps else None)
    n, channels, m = x.shape[0], x.shape[1], w.shape[0]
    xp = _pad(x.astype(dtype, copy=False), begins, ends)
    cols = _windows(xp, kernel, strides, dilations, out)            # (N, C, *k, *o)
    cols = np.moveaxis(cols, 0, 1 + nsp)                            # (C, *k, N, *o)
    cols = cols.reshape(group, channels // group * math.prod(kernel), n * math.prod(out))
    wg = w.astype(dtype, copy=False).reshape(group, m // group, -1)
    y = np.matmul(wg, cols).reshape((m, n) + out)                   # (M, N, *o)
    if b is not None:
        y += b.astype(dtype, copy=False).reshape((m,) + (1,) * (nsp + 1))
    y = _batch_major(y)
    y = np.where(y < 0, dtype.type(0), y).astype(dtype) if then_relu else y
    if then_steps:
        epilogue.apply_steps(y.reshape(n, m, -1), tuple(then_steps))
    return y


def _conv_transpose_pads(spatial, kernel, strides, dilations, output_padding, auto_pad, pads,
                         output_shape):
    """Begin padding and output size per axis of ConvTranspose.

    ``full = stride·(in-1) + output_padding + dilation·(kernel-1) + 1``. Explicit ``pads``:
    ``out = full - begin - end``. ``output_shape`` (or SAME_*: ``out = min(in·stride, full)``,
    ONNX Runtime never pads negatively there): total padding ``full - out``, split with the odd
    pixel at the end for SAME_UPPER, at the beginning otherwise.
    """
    n = len(spatial)
    full = [s * (i - 1) + p + d * (k - 1) + 1
            for i, k, s, d, p in zip(spatial, kernel, strides, dilations, output_padding)]
    if output_shape is not None:
        target = tuple(int(v) for v in output_shape)[-n:]
        if len(target) != n:
            raise OpError(f"attribute output_shape={list(output_shape)} must give {n} spatial "
                          f"sizes")
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = tuple(min(i * s, f) for i, s, f in zip(spatial, strides, full))
    elif auto_pad == "VALID":
        return (0,) * n, tuple(full)
    else:
        begins, ends = _explicit_pads(pads, n)
        return begins, tuple(f - b - e for f, b, e in zip(full, begins, ends))
    begins = []
    for f, t in zip(full, target):
        total = f - t
        begins.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
    return tuple(begins), target


def _scatter_slices(offset, spatial, strides, dilations, begins, out):
    """For kernel offset ``k``: input ``i`` lands on output ``i·stride + k·dilation - begin``.
    The (input, output) slices of the inputs that land inside the output, or None if none do."""
    src, dst = [], []
    for i, k, s, d, pb, o in zip(spatial, offset, strides, dilations, begins, out):
        shift = k * d - pb                      # output position of input 0
        lo = max(0, -(shift // s))              # first i with i·s + shift >= 0
        hi = min(i - 1, (o - 1 - shift) // s)   # last i with i·s + shift <= out - 1
        if hi < lo:
            return None
        src.append(slice(lo, hi + 1))
        dst.append(slice(lo * s + shift, hi * s + shift + 1, s))
    return tuple(src), tuple(dst)


@register("ConvTranspose")
def conv_transpose(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1,
                   kernel_shape=None, output_padding=None, output_shape=None, pads=None,
                   strides=None):
    """N-D transposed convolution (the gradient of Conv), grouped. ``W`` is ``(C, M/group, *k)``.

    ``Y[n, m, i·stride + k·dilation - pad_begin] += X[n, c, i] · W[c, m', k]`` summed over
    ``c ∈ group(m)``, plus ``B[m]``; output size per axis
    ``stride·(in-1) + output_padding + dilation·(kernel-1) + 1 - pad_begin - pad_end``.
    Computed as ``cols = W_gᵀ @ X_g`` (one matrix product per group) scattered back with one
    strided add per kernel offset.
    """
    nsp, group = _check_conv_operands(x, w, b, group, kernel_shape, transposed=True)
    auto_pad = _check_auto_pad(auto_pad)
    kernel = tuple(w.shape[2:])
    strides = _ints("strides", strides, 1, nsp, minimum=1)
    dilations = _ints("dilations", dilations, 1, nsp, minimum=1)
    output_padding = _ints("output_padding", output_padding, 0, nsp, minimum=0)
    for op_, s, d in zip(output_padding, strides, dilations):
        if op_ >= max(s, d):
            raise OpError(f"attribute output_padding={list(output_padding)} must be smaller than "
                          f"the stride or the dilation on each axis (strides={list(strides)}, "
                          f"dilations={list(dilations)})")
    spatial = x.shape[2:]
    begins, out = _conv_transpose_pads(spatial, kernel, strides, dilations, output_padding,
                                       auto_pad, pads, output_shape)
    if min(out) < 1:
        raise OpError(f"output spatial shape {list(out)} is empty: input {list(spatial)}, "
                      f"kernel_shape={list(kernel)}, pads/output_shape too large")
    dtype = _float_result(x, w, b)
    n, channels = x.shape[:2]
    mg = w.shape[1]
    m = mg * group
    xg = np.moveaxis(x.astype(dtype, copy=False), 0, 1).reshape(group, channels // group, -1)
    wg = w.astype(dtype, copy=False).reshape(group, channels // group, -1).transpose(0, 2, 1)
    if dtype == np.float32:     # ONNX Runtime's (MLAS's) summation order, bit for bit
        cols = gemm_exact.conv_transpose_columns(x, w, group=group)     # (M, *k, N, *in)
    else:
        cols = np.matmul(wg, xg).reshape((m,) + kernel + (n,) + spatial)
    y = np.zeros((m, n) + tuple(out), dtype=dtype)
    everything = (slice(None),)
    for offset in np.ndindex(*kernel):
        slices = _scatter_slices(offset, spatial, strides, dilations, begins, out)
        if slices is not None:
            src, dst = slices
            y[everything * 2 + dst] += cols[everything + offset + everything + src]
    if b is not None:
        y += b.astype(dtype, copy=False).reshape((m,) + (1,) * (nsp + 1))
    return _batch_major(y)


# ---------------------------------------------------------------------------------------------
# matrix products
# ---------------------------------------------------------------------------------------------
@register("MatMul")
def matmul(a, b, *, constant_b=False):
    """``Y = A @ B`` with NumPy ``matmul`` semantics: batched, broadcasting leading axes, a 1-D
    operand is promoted to a matrix and its added axis removed from the result.
    ``constant_b`` (from the executor): B is an initializer, which ONNX Runtime pre-packs."""
    if a.ndim == 0 or b.ndim == 0:
        raise OpError(f"MatMul operands must have rank >= 1, got A {list(a.shape)} and "
                      f"B {list(b.shape)}")
    inner_a = a.shape[-1]
    inner_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if inner_a != inner_b:
        raise OpError(f"inner dimensions differ: A {list(a.shape)} has {inner_a} columns, "
                      f"B {list(b.shape)} has {inner_b} rows")
    batch_a, batch_b = a.shape[:-2], b.shape[:-2]
    try:
        np.broadcast_shapes(batch_a, batch_b)
    except ValueError:
        raise OpError(f"batch dimensions {list(batch_a)} of A {list(a.shape)} and {list(batch_b)} "
                      f"of B {list(b.shape)} do not broadcast") from None
    if _float_result(a, b) == np.float32:   # ONNX Runtime's (MLAS's) summation order
        return gemm_exact.matmul(a, b, packed_b=constant_b)
    return np.matmul(a, b)


@register("Gemm")
def gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=None,
         constant_b=False):
    """``Y = alpha · A' @ B' + beta · C`` with ``A' = Aᵀ if transA``, ``B' = Bᵀ if transB``;
    ``C`` (optional) broadcasts unidirectionally to ``(M, N)``.

    Beyond ONNX: with ``transA = 0`` A may have more than 2 dimensions, ``Y = A @ B' + C`` over
    the last axis — the node AIMET's ``MatmulAdd`` pass fuses from ``MatMul(x, W)`` + ``Add(b)``
    (placement.md §1.1), computed exactly like the MatMul and Add it replaces.
    ``constant_b`` (from the executor): B is an initializer, which ONNX Runtime pre-packs.
    ``broadcast`` (opsets 1-6) is accepted: C broadcasts whenever its shape allows."""
    if a.ndim > 2 and not transA and b.ndim == 2:
        b2 = b.T if transB else b
        if a.shape[-1] != b2.shape[0]:
            raise OpError(f"inner dimensions differ: A {list(a.shape)} and B' {list(b2.shape)} "
                          f"(B {list(b.shape)}, transB={transB})")
        dtype = _float_result(a, b, c)
        if dtype == np.float32:
            y = gemm_exact.matmul(a, b2, packed_b=constant_b)
        else:
            y = np.matmul(a, b2).astype(dtype, copy=False)
        if alpha != 1.0:
            y = y * dtype.type(alpha)
        if c is not None and beta != 0.0:
            y = y + (c.astype(dtype, copy=False) if beta == 1.0 else dtype.type(beta) * c.astype(dtype))
        return y
    if a.ndim != 2 or b.ndim != 2:
        raise OpError(f"Gemm needs 2-D A and B, got A {list(a.shape)} and B {list(b.shape)}")
    a2 = a.T if transA else a
    b2 = b.T if transB else b
    if a2.shape[1] != b2.shape[0]:
        raise OpError(f"inner dimensions differ: A' {list(a2.shape)} (A {list(a.shape)}, "
                      f"transA={transA}) and B' {list(b2.shape)} (B {list(b.shape)}, "
                      f"transB={transB})")
    shape = (a2.shape[0], b2.shape[1])
    if c is not None and not _broadcasts_to(c.shape, shape):
        raise OpError(f"C has shape {list(c.shape)}, which does not broadcast to the output "
                      f"shape {list(shape)} (M from A', N from B')")
    dtype = _float_result(a, b, c)
    if dtype == np.float32:     # ONNX Runtime's (MLAS's) summation order, bit for bit
        return gemm_exact.gemm(a2, b2, c, alpha=alpha, beta=beta, trans_a=bool(transA),
                               trans_b=bool(transB), packed_b=constant_b)
    y = np.matmul(a2, b2).astype(dtype, copy=False)
    if alpha != 1.0:
        y *= dtype.type(alpha)
    if c is not None and beta != 0.0:
        y += c.astype(dtype, copy=False) if beta == 1.0 else dtype.type(beta) * c.astype(dtype)
    return y


def _broadcasts_to(shape, target) -> bool:
    """True if ``shape`` broadcasts unidirectionally to ``target``."""
    try:
        return np.broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------------------------
def _pool_geometry(x, kernel_shape, strides, dilations, auto_pad, pads, ceil_mode):
    """Validated kernel, strides, dilations, begin/end pads and output size of a pool, and the
    ``extra`` end padding that ceil_mode needs for the last window to fit."""
    if x.ndim < 3:
        raise OpError(f"input X has shape {list(x.shape)}; expected rank >= 3 (N, C, spatial...)")
    nsp = x.ndim - 2
    if kernel_shape is None:
        raise OpError("attribute kernel_shape is required")
    kernel = _ints("kernel_shape", kernel_shape, 1, nsp, minimum=1)
    strides = _ints("strides", strides, 1, nsp, minimum=1)
    dilations = _ints("dilations", dilations, 1, nsp, minimum=1)
    auto_pad = _check_auto_pad(auto_pad)
    spatial = x.shape[2:]
    begins, ends = _window_pads(spatial, kernel, strides, dilations, auto_pad, pads,
                                dilate_same=False)
    out = tuple(_out_size(*a, bool(ceil_mode))
                for a in zip(spatial, kernel, strides, dilations, begins, ends))
    if min(out) < 1:
        raise OpError(f"output spatial shape {list(out)} is empty: input {list(spatial)}, "
                      f"kernel_shape={list(kernel)}, pads={list(begins + ends)}, "
                      f"dilations={list(dilations)}")
    extra = tuple(max(0, (o - 1) * s + d * (k - 1) + 1 - size - b - e)
                  for size, k, s, d, b, e, o in zip(spatial, kernel, strides, dilations,
                                                    begins, ends, out))
    return kernel, strides, dilations, begins, ends, extra, out


def _window_slices(kernel, strides, dilations, out):
    """For each kernel offset ``k``: the slices of the padded input read by all windows there,
    ``o·stride + k·dilation`` for every output position ``o``."""
    for offset in np.ndindex(*kernel):
        yield offset, (slice(None), slice(None)) + tuple(
            slice(k * d, k * d + (o - 1) * s + 1, s)
            for k, s, d, o in zip(offset, strides, dilations, out))


def _separable_pool(xp: np.ndarray, kernel, strides, dilations, out, combine) -> np.ndarray:
    """Reduce every window of the padded input with ``combine`` (np.maximum or np.add), one
    spatial axis at a time: a box max/sum is the max/sum along each axis in turn (k₁+k₂+…
    strided passes instead of k₁·k₂·…, and the later passes read shrunken arrays)."""
    y = xp
    for axis, (k, s, d, o) in enumerate(zip(kernel, strides, dilations, out), start=2):
        reduced = None
        for j in range(k):
            where = [slice(None)] * y.ndim
            where[axis] = slice(j * d, j * d + (o - 1) * s + 1, s)
            part = y[tuple(where)]
            reduced = part.copy() if reduced is None else combine(reduced, part, out=reduced)
        y = reduced
    return y


_LOWEST = np.float32(-3.4028234663852886e38)     # std::numeric_limits<float>::lowest()


def _vmax(a, b):
    """SSE ``maxps(a, b)``: ``a if a > b else b`` (a NaN on either side, or a tie of ±0,
    gives ``b``)."""
    return np.where(a > b, a, b)


def _smax(a, b):
    """C++ ``std::max(a, b)``: ``b if a < b else a`` (keeps ``a`` on a NaN ``b`` and on ties)."""
    return np.where(a < b, b, a)


def _mlas_global_max(x: np.ndarray) -> np.ndarray:
    """MLAS's global max pool of each (n, c) plane ``v`` of length S: four lanes ``L_l`` start
    at lowest() and take ``maxps(L_l, v[4i + l])`` over the first ``4·floor(S/4)`` values; then
    ``r = maxps(maxps(L0, L2), maxps(L1, L3))``; then ``r = std::max(r, v[j])`` over the rest."""
    n, c = x.shape[:2]
    v = x.reshape(n, c, -1)
    s4 = (v.shape[2] // 4) * 4
    lanes = np.full((n, c, 4), _LOWEST, dtype=np.float32)
    for i in range(0, s4, 4):
        lanes = _vmax(lanes, v[:, :, i:i + 4])
    r = _vmax(_vmax(lanes[:, :, 0], lanes[:, :, 2]), _vmax(lanes[:, :, 1], lanes[:, :, 3]))
    for j in range(s4, v.shape[2]):
        r = _smax(r, v[:, :, j])
    return r.reshape((n, c) + (1,) * (x.ndim - 2)).astype(np.float32, copy=False)


def _valid_range(o: int, k: int, s: int, begin: int, size: int) -> tuple[int, int]:
    start = o * s - begin
    return max(start, 0), min(start + k, size)


def _mlas_generic_max(x, kernel, strides, begins, out) -> np.ndarray:
    """MLAS's generic kernels (and ONNX Runtime's own loop): per output, ``m = lowest()``, then
    ``m = std::max(m, X[i])`` over the window's in-bounds positions, row-major."""
    y = np.empty(x.shape[:2] + tuple(out), dtype=x.dtype)
    for pos in np.ndindex(*out):
        ranges = [_valid_range(o, k, s, b, size) for o, k, s, b, size in
                  zip(pos, kernel, strides, begins, x.shape[2:])]
        m = np.full(x.shape[:2], _LOWEST, dtype=x.dtype)
        for idx in np.ndindex(*[max(hi - lo, 0) for lo, hi in ranges]):
            m = _smax(m, x[(slice(None), slice(None)) + tuple(lo + i for (lo, _), i
                                                               in zip(ranges, idx))])
        y[(slice(None), slice(None)) + pos] = m
    return y


def _mlas_vector_max(x, kernel, strides, begins, ends, out) -> np.ndarray:
    """MLAS's vector kernel (2-D and 3-D, last stride <= 2, kernels <= 32). Per output row
    (plane): over the window's in-bounds rows, each input column is reduced in row order —
    columns ``< 4·floor(W/4)`` with ``maxps`` (3-D: from lowest(); 2-D: from the first row),
    the rest with ``std::max`` — into a buffer with ``pad_begin`` lowest() values before and
    ``pad_end + 3`` after; output ``ox`` is ``maxps`` over buffer ``[ox·s, ox·s + k)`` in order,
    starting from its first value. Rows wholly outside the input start at row 0, as MLAS's
    unsigned arithmetic does."""
    nsp = x.ndim - 2
    w = x.shape[-1]
    w4 = (w // 4) * 4
    kw, sw, pw_begin, pw_end = kernel[-1], strides[-1], begins[-1], ends[-1]
    need = (out[-1] - 1) * sw + kw
    tail = max(pw_end + 3, need - pw_begin - w)
    y = np.empty(x.shape[:2] + tuple(out), dtype=np.float32)
    for pos in np.ndindex(*out[:-1]):
        rows = []
        for o, k, s, b, size in zip(pos, kernel[:-1], strides[:-1], begins[:-1], x.shape[2:-1]):
            start = o * s - b
            lo = start if 0 <= start < size else 0
            rows.append(range(lo, min(start + k, size)))
        red = None if nsp == 2 else np.full(x.shape[:2] + (w,), _LOWEST, dtype=np.float32)
        for idx in itertools.product(*rows):
            v = x[(slice(None), slice(None)) + idx]
            if red is None:
                red = v.copy()
                continue
            red[..., :w4] = _vmax(red[..., :w4], v[..., :w4])
            red[..., w4:] = _smax(red[..., w4:], v[..., w4:])
        n, c = x.shape[:2]
        buf = np.concatenate([np.full((n, c, pw_begin), _LOWEST, np.float32), red,
                              np.full((n, c, tail), _LOWEST, np.float32)], axis=-1)
        starts = np.arange(out[-1]) * sw
        acc = buf[..., starts]
        for j in range(1, kw):
            acc = _vmax(acc, buf[..., starts + j])
        y[(slice(None), slice(None)) + pos] = acc
    return y


def _mlas_max_pool(x, kernel, strides, begins, ends, out) -> np.ndarray:
    """Float32 MaxPool as MLAS computes it (ONNX Runtime for one output, no dilation, row-major
    indices): the global kernel when the kernel covers the input with stride 1 and no padding,
    the vector kernel for 2-D/3-D with the last stride <= 2, kernels <= 32 and the padded width
    within MLAS's 2048-value buffer, else the generic kernel. They differ only on NaN and on
    ties of ±0 (which of -0/+0 comes out)."""
    nsp = x.ndim - 2
    if tuple(kernel) == tuple(x.shape[2:]) and all(s == 1 for s in strides) \
            and not any(begins) and not any(ends):
        return _mlas_global_max(x)
    room = 2048 - 3 - begins[-1] - ends[-1]
    if nsp >= 2 and strides[-1] <= 2 and all(k <= 32 for k in kernel) and room >= x.shape[-1]:
        if USE_NUMBA and nsp == 2:
            y = np.empty(x.shape[:2] + tuple(out), dtype=np.float32)
            need = (out[-1] - 1) * strides[-1] + kernel[-1]
            tail = max(ends[-1] + 3, need - begins[-1] - x.shape[-1])
            math_exact.max_pool_2d(np.ascontiguousarray(x), kernel[0], kernel[1], strides[0],
                                   strides[1], begins[0], begins[1], tail, y)
            return y
        return _mlas_vector_max(x, kernel, strides, begins, ends, out)
    return _mlas_generic_max(x, kernel, strides, begins, out)


@register("MaxPool")
def max_pool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None,
             storage_order=0, strides=None, noutputs=1):
    """``Y[n, c, o] = max_k X_pad[n, c, o·stride + k·dilation]``, padding never wins (-inf).

    Output size per axis ``floor((size + pads - dilation·(kernel-1) - 1) / stride) + 1`` (ceil
    with ceil_mode, dropping a last window that would start in the end padding). The optional
    ``Indices`` output is the flat index of the maximum in ``X``: row-major, or with
    storage_order=1 column-major over the spatial axes (``n·C·S + c·S + Σ pos_i·stride_i`` with
    the spatial strides reversed); ties keep the first kernel offset.
    """
    kernel, strides, dilations, begins, ends, extra, out = _pool_geometry(
        x, kernel_shape, strides, dilations, auto_pad, pads, ceil_mode)
    if storage_order not in (0, 1):
        raise OpError(f"attribute storage_order={storage_order} must be 0 (row major) or 1 "
                      f"(column major)")
    if noutputs < 2 and x.dtype == np.float32 and storage_order == 0 \
            and all(d == 1 for d in dilations) and x.ndim <= 5:
        return _mlas_max_pool(x, kernel, strides, begins, [e + m for e, m in zip(ends, extra)],
                              out)
    lowest = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    xp = _pad(x, begins, [e + m for e, m in zip(ends, extra)], lowest)
    if noutputs < 2:
        return _separable_pool(xp, kernel, strides, dilations, out, np.maximum)
    y = index = None
    for offset, where in _window_slices(kernel, strides, dilations, out):
        window = xp[where]
        if y is None:
            y, index = window.copy(), np.zeros(window.shape, dtype=np.int64)
            continue
        index[window > y] = np.ravel_multi_index(offset, kernel)
        np.maximum(y, window, out=y)
    return y, _max_pool_indices(x.shape, index, kernel, strides, dilations, begins, out,
                                storage_order)


def _max_pool_indices(shape, best, kernel, strides, dilations, begins, out, storage_order):
    """Flat ``X`` index of each window's maximum, from the winning kernel offset ``best``."""
    n, c = shape[:2]
    spatial = shape[2:]
    offsets = np.unravel_index(best, kernel)
    grids = np.meshgrid(*[np.arange(o) for o in out], indexing="ij")
    pos = [g * s + k * d - b for g, k, s, d, b in zip(grids, offsets, strides, dilations, begins)]
    pos = [np.clip(p, 0, size - 1) for p, size in zip(pos, spatial)]
    size = math.prod(spatial)
    if storage_order == 0:
        inner = np.ravel_multi_index(pos, spatial)
    else:
        inner = np.ravel_multi_index(pos[::-1], spatial[::-1])
    base = (np.arange(n)[:, None] * c + np.arange(c)[None, :]) * size
    return base.reshape((n, c) + (1,) * len(spatial)) + inner


def _average_pool_v19(x, kernel, strides, dilations, begins, ends, extra, out) -> np.ndarray:
    """AveragePool as ONNX Runtime computes it from opset 19 (its own loop, not MLAS): for each
    window a float32 sum from 0 over the positions inside X in row-major order, then divided by
    the number of those positions (count_include_pad=0) or by
    ``Π_i (1 + (end_i - start_i - 1) // d_i)`` with ``start_i = o·s - pad_begin_i`` and
    ``end_i = min(start_i + k_i·d_i, size_i + pad_end_i)`` (count_include_pad=1; C's truncating
    division); an empty window gives 0. Returns ``(sums, inside_counts, include_pad_counts)``."""
    xp = _pad(x, begins, [e + m for e, m in zip(ends, extra)], 0.0)
    total = np.zeros(x.shape[:2] + tuple(out), dtype=np.float32)
    for _, where in _window_slices(kernel, strides, dilations, out):
        np.add(total, xp[where], out=total)
    inside, include = [], []
    for i, (size, k, s, d, o) in enumerate(zip(x.shape[2:], kernel, strides, dilations, out)):
        start = np.arange(o) * s - begins[i]
        end = np.minimum(start + k * d, size + ends[i])
        taps = start[:, None] + d * np.arange(k)[None, :]
        inside.append((((taps >= 0) & (taps < size) & (taps < end[:, None])).sum(axis=1)))
        include.append(1 + np.trunc((end - start - 1) / d).astype(np.int64))
    grid = lambda counts: functools.reduce(np.multiply.outer, counts)  # noqa: E731
    return total, grid(inside), grid(include)


@register("AveragePool")
def average_pool(x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None,
                 kernel_shape=None, pads=None, strides=None, opset=17):
    """``Y[n, c, o] = Σ_k X_pad[n, c, o·stride + k·dilation] / count[o]``.

    ``count[o]`` is the number of window positions inside ``X`` (count_include_pad=0) or inside
    ``X`` plus its explicit/auto padding (count_include_pad=1); positions that only ceil_mode
    adds never count. Output size as for MaxPool. From opset 19 float32 follows ONNX Runtime's
    opset-19 kernel (:func:`_average_pool_v19`).
    """
    kernel, strides, dilations, begins, ends, extra, out = _pool_geometry(
        x, kernel_shape, strides, dilations, auto_pad, pads, ceil_mode)
    if opset >= 19 and x.dtype == np.float32 and x.ndim <= 5:
        total, inside, include = _average_pool_v19(x, kernel, strides, dilations, begins, ends,
                                                   extra, out)
        count = include if count_include_pad else inside
        with np.errstate(invalid="ignore", divide="ignore"):
            y = total / count.astype(np.float32)
        return np.where(inside > 0, y, np.float32(0)).astype(np.float32)
    count = _pool_counts(x.shape[2:], kernel, strides, dilations, begins, ends, extra, out,
                         bool(count_include_pad)).astype(x.dtype, copy=False)
    if x.dtype == np.float32 and all(d == 1 for d in dilations):
        # ONNX Runtime's summation order (MlasPool; ceil_mode with count_include_pad runs ORT's
        # own loop), bit for bit; the division by count is the same
        spatial = x.shape[2:]
        ort_loop = bool(ceil_mode and count_include_pad)   # ORT runs its own loop then
        if (not ort_loop and tuple(kernel) == spatial and not any(begins + ends)
                and all(s == 1 for s in strides)):
            return global_average_pool(x)
        vector = (not ort_loop
                  and math_exact.mlas_pool_is_vector(kernel, strides, spatial[-1],
                                                     begins[-1] + ends[-1]))
        # MLAS's 2-D column sums skip the padding rows: -0.0 there, the exact additive identity
        total = math_exact.pool_window_sums(
            x, kernel, strides, out, vector=vector, begins=begins,
            ends=[e + m for e, m in zip(ends, extra)],
            rows_value=-0.0 if vector and len(kernel) == 2 else 0.0)
    else:
        xp = _pad(x, begins, [e + m for e, m in zip(ends, extra)], 0.0)
        total = _separable_pool(xp, kernel, strides, dilations, out, np.add)
    total /= count
    return total


@functools.lru_cache(maxsize=256)
def _pool_counts(spatial, kernel, strides, dilations, begins, ends, extra, out,
                 include_pad: bool) -> np.ndarray:
    """AveragePool's divisor per output position ``(1, 1, *out)`` (float64, read-only; made
    once per geometry): the window positions inside ``X`` (and inside its explicit/auto padding
    with ``include_pad``; never the positions only ceil_mode adds)."""
    inside = np.ones((1, 1) + tuple(spatial))
    if include_pad:
        inside = _pad(_pad(inside, begins, ends, 1.0), [0] * len(extra), extra, 0.0)
    else:
        inside = _pad(inside, begins, [e + m for e, m in zip(ends, extra)], 0.0)
    count = _separable_pool(inside, kernel, strides, dilations, out, np.add)
    count.flags.writeable = False
    return count


@register("GlobalAveragePool")
def global_average_pool(x):
    """``Y[n, c, 1, ...] = mean over the spatial axes of X[n, c, ...]``."""
    if x.ndim < 3:
        raise OpError(f"input X has shape {list(x.shape)}; expected rank >= 3 (N, C, spatial...)")
    if x.dtype == np.float32 and x.size:  # ORT's MlasPoolGlobalKernel, bit for bit
        planes = x.reshape(x.shape[0] * x.shape[1], -1)
        return math_exact.global_average(planes).reshape(x.shape[:2] + (1,) * (x.ndim - 2))
    return np.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True, dtype=x.dtype)


@register("GlobalMaxPool")
def global_max_pool(x):
    """``Y[n, c, 1, ...] = max over the spatial axes of X[n, c, ...]``."""
    if x.ndim < 3:
        raise OpError(f"input X has shape {list(x.shape)}; expected rank >= 3 (N, C, spatial...)")
    if x.dtype == np.float32:
        return _mlas_global_max(x)          # ONNX Runtime's GlobalMaxPool is MLAS's global kernel
    return np.max(x, axis=tuple(range(2, x.ndim)), keepdims=True)


# ---------------------------------------------------------------------------------------------
# normalization
# ---------------------------------------------------------------------------------------------
def _per_channel(v: np.ndarray, name: str, channels: int, ndim: int, dtype) -> np.ndarray:
    """A length-C parameter reshaped to broadcast along axis 1 of a rank-``ndim`` tensor."""
    if v.ndim != 1 or v.shape[0] != channels:
        raise OpError(f"input {name} has shape {list(v.shape)}; expected [{channels}] (one value "
                      f"per channel of X)")
    return v.astype(dtype, copy=False).reshape((channels,) + (1,) * (ndim - 2))


@kernel
def _nb_scale_shift(x, s, shift, y, relu):
    """``y[n, c, i] = x[n, c, i] · s[c] + shift[c]`` for float32 ``(N, C, L)`` arrays, the
    product rounded before the sum (two float32 operations, never fused: Numba compiles
    without contraction), in one pass; ``relu``: then ``0 if y < 0 else y`` (the Relu op)."""
    zero = np.float32(0.0)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            sc, bc = s[c], shift[c]
            if relu:
                for i in range(x.shape[2]):
                    v = x[n, c, i] * sc + bc
                    y[n, c, i] = zero if v < zero else v
            else:
                for i in range(x.shape[2]):
                    y[n, c, i] = x[n, c, i] * sc + bc


def _scale_shift(x: np.ndarray, s: np.ndarray, shift: np.ndarray,
                 relu: bool = False) -> np.ndarray:
    """``x · s + shift`` per channel (axis 1), each step rounded in x's dtype, then Relu if
    ``relu``; float32 in one Numba pass (:func:`_nb_scale_shift`), else (and as its NumPy
    twin) NumPy passes."""
    if USE_NUMBA and x.dtype == np.float32 and x.ndim >= 2 and x.size:
        x3 = np.ascontiguousarray(x).reshape(x.shape[0], x.shape[1], -1)
        y = np.empty(x3.shape, dtype=np.float32)
        _nb_scale_shift(x3, np.ascontiguousarray(s.reshape(-1)),
                        np.ascontiguousarray(shift.reshape(-1)), y, bool(relu))
        return y.reshape(x.shape)
    y = x * s
    y += shift
    if relu:
        np.copyto(y, y.dtype.type(0), where=y < 0)
    return y


@register("BatchNormalization")
def batch_normalization(x, scale, b, input_mean, input_var, *, epsilon=1e-5, momentum=0.9,
                        training_mode=0, spatial=1, is_test=None, consumed_inputs=None,
                        noutputs=1, then_relu=False):
    """Batch norm along axis 1:
    ``Y = X · s + (B - mean · s)`` with ``s = (1 / sqrt(var + epsilon)) · scale``, each step
    rounded in X's dtype as ONNX Runtime does.

    Inference uses ``input_mean``/``input_var``. As in ONNX Runtime, the node trains exactly when
    it declares more than one output (``training_mode=1`` must come with the 3 outputs), see
    :func:`_batch_statistics`. Opsets 7-8: ``spatial=0`` gives every element of a sample its own
    statistics (the parameters have the shape ``X.shape[1:]``; inference only). Opsets 1-6:
    ``is_test`` must be 1 and ``consumed_inputs`` is ignored. ``then_relu`` (from the executor,
    single-output nodes only): return ``Relu(Y)``, in the same pass."""
    if is_test is not None and not is_test:
        raise OpError("attribute is_test=0 (training, opsets 1-6) is not supported, expected 1")
    if training_mode and noutputs != 3:
        raise OpError(f"attribute training_mode=1 with {noutputs} output(s): training needs the "
                      f"3 outputs Y, running_mean, running_var (ONNX and ONNX Runtime refuse it "
                      f"too)")
    if x.ndim < 2:
        raise OpError(f"input X has shape {list(x.shape)}; expected rank >= 2 (N, C, ...)")
    if spatial not in (0, 1):
        raise OpError(f"attribute spatial={spatial}, expected 0 or 1")
    if not spatial:
        if noutputs > 1:
            raise OpError("training (several outputs) with spatial=0 is not supported, as in "
                          "ONNX Runtime")
        params = [np.asarray(v) for v in (scale, b, input_mean, input_var)]
        for name, v in zip(("scale", "B", "input_mean", "input_var"), params):
            if v.shape != x.shape[1:]:
                raise OpError(f"input {name} has shape {list(v.shape)}; with spatial=0 expected "
                              f"{list(x.shape[1:])} (the shape of one sample of X)")
        flat = [v.reshape(-1) for v in params]
        y = batch_normalization(x.reshape(x.shape[0], -1, 1), *flat, epsilon=epsilon,
                                then_relu=then_relu)
        return y.reshape(x.shape)
    c, dtype = x.shape[1], x.dtype
    mean_in = _per_channel(input_mean, "input_mean", c, x.ndim, dtype)
    var = _per_channel(input_var, "input_var", c, x.ndim, dtype)
    if noutputs > 1:
        if dtype != np.float32:
            raise OpError(f"training batch normalization needs float32 X, got {dtype}")
        batch_mean, batch_var = _batch_statistics(x)
        m = dtype.type(momentum)
        keep = dtype.type(1.0 - float(m))
        running_mean = input_mean.astype(dtype) * m + batch_mean * keep
        running_var = input_var.astype(dtype) * m + batch_var * keep
        # as ORT: s = sqrt(1 / (var + epsilon)) * scale
        inv_std = np.sqrt(dtype.type(1) / (batch_var + dtype.type(epsilon)))
        s = (inv_std * scale.astype(dtype)).reshape((c,) + (1,) * (x.ndim - 2))
        shift = _per_channel(b, "B", c, x.ndim, dtype) - batch_mean.reshape(s.shape) * s
        y = x * s
        y += shift
        return (y, running_mean, running_var, batch_mean, inv_std)[:noutputs]
    s, shift = epilogue.batch_norm_affine(_per_channel(scale, "scale", c, x.ndim, dtype),
                                           _per_channel(b, "B", c, x.ndim, dtype), mean_in,
                                           var, epsilon=epsilon)
    return _scale_shift(x, s, shift, then_relu)


def _batch_statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and biased variance of float32 X (N, C, ...) as ONNX Runtime's training
    BatchNormalization: every (n, c) plane summed by Eigen's vectorised redux
    (:func:`qsim.kernels.mlas_math.eigen_row_sums`, planes at offsets ``(n·C + c)·S``), the plane
    sums added over n in order from 0, divided by ``float(N·S)``; the variance the same over
    ``(x - mean)²`` with the packets starting at each plane's first element."""
    n, c = x.shape[:2]
    planes = np.ascontiguousarray(x, dtype=np.float32).reshape(n * c, -1)
    count = np.float32(planes.shape[1] * n)

    def per_channel(sums):
        total = np.zeros(c, np.float32)
        for i in range(n):
            total = total + sums[i * c:(i + 1) * c]
        return total / count

    mean = per_channel(math_exact.eigen_row_sums(planes))
    d = planes - np.tile(mean, n)[:, None]
    # (x - mean).squaredNorm() is an expression without a data pointer: Eigen starts its
    # packets at its first element (offset 0), not at the plane's first aligned one
    return mean, per_channel(math_exact.eigen_row_sums(d * d, np.zeros(n * c, np.int64)))


@register("InstanceNormalization")
def instance_normalization(x, scale, b, *, epsilon=1e-5):
    """``Y[n, c] = scale[c] · (X[n, c] - μ[n, c]) / sqrt(σ²[n, c] + epsilon) + B[c]`` with mean
    and (biased) variance over the spatial axes. float32: as ONNX Runtime computes it
    (:func:`qsim.kernels.mlas_math.instance_norm_planes`); otherwise statistics in float64."""
    if x.ndim < 3:
        raise OpError(f"input X has shape {list(x.shape)}; expected rank >= 3 (N, C, spatial...)")
    c = x.shape[1]
    if x.dtype == np.float32 and x.size:  # ONNX Runtime's Eigen kernel, bit for bit
        planes = math_exact.instance_norm_planes(
            x.reshape(x.shape[0] * c, -1), _per_channel(scale, "scale", c, 2, x.dtype),
            _per_channel(b, "B", c, 2, x.dtype), epsilon)
        return planes.reshape(x.shape)
    axes = tuple(range(2, x.ndim))
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    var = np.square(x64 - mean).mean(axis=axes, keepdims=True)
    normalized = (x64 - mean) / np.sqrt(var + epsilon)
    y = normalized * _per_channel(scale, "scale", c, x.ndim, np.float64) \
        + _per_channel(b, "B", c, x.ndim, np.float64)
    return y.astype(x.dtype)


def _welford64(x2d, scale, bias, epsilon):
    """LayerNormalization rows in double as ONNX Runtime's double kernel: for k = 1..n
    ``d = x - m; m += d / k; m2 += (x - m) · d``; ``r = sqrt(m2 / n + double(eps))``;
    ``y = (x - m) / r · scale [+ bias]``. Returns ``(y, float32(m), float32(1 / r))``."""
    rows, n = x2d.shape
    mean = np.zeros(rows)
    m2 = np.zeros(rows)
    for k in range(n):
        d = x2d[:, k] - mean
        mean = mean + d / (k + 1)
        m2 = m2 + (x2d[:, k] - mean) * d
    std = np.sqrt(m2 / n + float(np.float32(epsilon)))
    y = (x2d - mean[:, None]) / std[:, None] * np.asarray(scale, np.float64).ravel()
    if bias is not None:
        y = y + np.asarray(bias, np.float64).ravel()
    return y, mean.astype(np.float32), (1.0 / std).astype(np.float32)


@register("LayerNormalization")
def layer_normalization(x, scale, b=None, *, axis=-1, epsilon=1e-5, stash_type=1, noutputs=1):
    """Normalize over the axes ``axis..rank-1``:
    ``Y = (X - μ) · r · Scale + B`` with ``μ = mean``, ``r = 1 / sqrt(mean((X - μ)²) + epsilon)``.

    ``Scale`` and ``B`` broadcast to the normalized shape. Optional outputs ``Mean`` (μ) and
    ``InvStdDev`` (r), shaped like X with the normalized axes kept as size 1. float32 with
    Scale and B of the normalized size: computed as ONNX Runtime does
    (:func:`qsim.kernels.mlas_math.layer_norm_rows`); a Scale or B that only broadcasts:
    ONNX Runtime's generic double path (:func:`qsim.ops.ort_fused.generic_norm`); float64: its
    double kernel (:func:`_welford64`); otherwise
    statistics in float64, results in X's dtype (stash_type=1: float32 statistics outputs)."""
    rank = x.ndim
    if not -rank <= axis < rank:
        raise OpError(f"attribute axis={axis} is out of range for X of rank {rank} "
                      f"(expected {-rank}..{rank - 1})")
    if stash_type != 1:
        raise OpError(f"attribute stash_type={stash_type} is not supported (expected 1: float32)")
    axis %= rank
    normalized_shape = x.shape[axis:]
    for name, v in (("Scale", scale), ("B", b)):
        if v is not None and not _broadcasts_to(v.shape, normalized_shape):
            raise OpError(f"input {name} has shape {list(v.shape)}, which does not broadcast "
                          f"to the normalized shape {list(normalized_shape)}")
    axes = tuple(range(axis, rank))
    n = math.prod(normalized_shape)
    full = np.size(scale) == n and (b is None or np.size(b) == n)
    if x.dtype in (np.float32, np.float64) and not full:
        # ONNX Runtime's generic path (a Scale or B that only broadcasts)
        from .ort_fused import generic_norm
        stats_shape = x.shape[:axis] + (1,) * (rank - axis)
        y, mean, inv_std = generic_norm(x, scale, b, axis, epsilon, simplified=False)
        outputs = (y, mean.reshape(stats_shape), inv_std.reshape(stats_shape))
        return outputs[0] if noutputs == 1 else outputs[:noutputs]
    if x.dtype == np.float64 and x.size:   # ONNX Runtime's double kernel: Welford in double
        stats_shape = x.shape[:axis] + (1,) * (rank - axis)
        y, mean, inv_std = _welford64(x.reshape(-1, n), np.broadcast_to(scale, normalized_shape),
                                      None if b is None else np.broadcast_to(b, normalized_shape),
                                      epsilon)
        outputs = (y.reshape(x.shape), mean.reshape(stats_shape), inv_std.reshape(stats_shape))
        return outputs[0] if noutputs == 1 else outputs[:noutputs]
    if x.dtype == np.float32 and x.size:  # ONNX Runtime's kernel (MLAS AVX2 / Welford), bit for bit
        stats_shape = x.shape[:axis] + (1,) * (rank - axis)
        y, mean, inv_std = math_exact.layer_norm_rows(
            x.reshape(-1, n), np.broadcast_to(scale, normalized_shape),
            None if b is None else np.broadcast_to(b, normalized_shape), np.float32(epsilon))
        outputs = (y.reshape(x.shape), mean.reshape(stats_shape), inv_std.reshape(stats_shape))
        return outputs[0] if noutputs == 1 else outputs[:noutputs]
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(np.square(x64 - mean).mean(axis=axes, keepdims=True) + epsilon)
    y = (x64 - mean) * inv_std * scale.astype(np.float64)
    if b is not None:
        y += b.astype(np.float64)
    y = y.astype(x.dtype)
    if noutputs == 1:
        return y
    return (y, mean.astype(np.float32), inv_std.astype(np.float32))[:noutputs]


# ---------------------------------------------------------------------------------------------
# softmax
# ---------------------------------------------------------------------------------------------
def _softmax_axis(x, axis) -> int:
    if not -x.ndim <= axis < max(x.ndim, 1):
        raise OpError(f"attribute axis={axis} is out of range for input of rank {x.ndim} "
                      f"(expected {-x.ndim}..{x.ndim - 1})")
    return axis % x.ndim


def _exact_softmax(x, axis: int, *, log: bool, family: str) -> np.ndarray:
    """float32 (Log)Softmax along ``axis`` as ONNX Runtime: the axis moved last, one row at a time
    (:func:`qsim.kernels.mlas_math.softmax_rows`, or :func:`qsim.kernels.avx512.softmax_rows`
    for the ``"avx512"`` family), moved back."""
    if x.size == 0:
        return x.copy()
    moved = np.moveaxis(x, axis, -1)
    rows_fn = avx512.softmax_rows if family == "avx512" else math_exact.softmax_rows
    rows = rows_fn(moved.reshape(-1, moved.shape[-1]), log=log)
    return np.ascontiguousarray(np.moveaxis(rows.reshape(moved.shape), -1, axis))


def _flatten_2d(x: np.ndarray, axis: int) -> np.ndarray:
    """Opsets 1-12 of Softmax/LogSoftmax/Hardmax: X as the matrix
    ``(prod(shape[:axis]), prod(shape[axis:]))``, the op applied to each row."""
    axis = _softmax_axis(x, axis)
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@register("Softmax")
def softmax(x, *, axis=None, fp32_kernels="auto", opset=17):
    """``Y = exp(X - max) / Σ exp(X - max)`` along ``axis`` (opset >= 13: one axis, default -1;
    opsets 1-12: over all axes from ``axis`` on, default 1, see :func:`_flatten_2d`)."""
    if opset <= 12:
        return softmax(_flatten_2d(x, 1 if axis is None else axis), axis=1,
                       fp32_kernels=fp32_kernels).reshape(x.shape)
    axis = _softmax_axis(x, -1 if axis is None else axis)
    if x.dtype == np.float32:  # ORT's MlasComputeSoftmax, bit for bit
        return _exact_softmax(x, axis, log=False, family=resolve_family(fp32_kernels))
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    e /= np.sum(e, axis=axis, keepdims=True)
    return e


@register("LogSoftmax")
def log_softmax(x, *, axis=None, fp32_kernels="auto", opset=17):
    """``Y = (X - max) - log Σ exp(X - max)`` along ``axis`` (opset >= 13: one axis, default -1;
    opsets 1-12: over all axes from ``axis`` on, default 1, see :func:`_flatten_2d`)."""
    if opset <= 12:
        return log_softmax(_flatten_2d(x, 1 if axis is None else axis), axis=1,
                           fp32_kernels=fp32_kernels).reshape(x.shape)
    axis = _softmax_axis(x, -1 if axis is None else axis)
    if x.dtype == np.float32:  # ORT's MlasComputeSoftmax, bit for bit
        return _exact_softmax(x, axis, log=True, family=resolve_family(fp32_kernels))
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


@register("Hardmax")
def hardmax(x, *, axis=None, opset=17):
    """``Y = 1`` at the first maximum along ``axis``, 0 elsewhere (opset >= 13: one axis,
    default -1; opsets 1-12: over all axes from ``axis`` on, default 1).

    >>> hardmax(np.array([[1.0, 3.0, 3.0]], np.float32)).tolist()
    [[0.0, 1.0, 0.0]]
    """
    if opset <= 12:
        return hardmax(_flatten_2d(x, 1 if axis is None else axis), axis=1).reshape(x.shape)
    axis = _softmax_axis(x, -1 if axis is None else axis)
    y = np.zeros_like(x)
    if x.size:
        first = np.expand_dims(np.argmax(x, axis=axis), axis)
        np.put_along_axis(y, first, 1, axis=axis)
    return y


# ---------------------------------------------------------------------------------------------
# resize
# ---------------------------------------------------------------------------------------------
RESIZE_MODES = ("nearest", "linear", "cubic")
COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                    "asymmetric", "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
ASPECT_POLICIES = ("stretch", "not_larger", "not_smaller")


def _resize_targets(shape, scales, sizes, axes, policy):
    """Per-axis float32 scale and output size.

    ``scales`` given: ``out = trunc(float32(scale · in))``. ``sizes`` given:
    ``scale = float32(out) / float32(in)``; with keep_aspect_ratio_policy not_larger /
    not_smaller one common scale (min / max over ``axes``) and ``out = round(scale · in)``."""
    rank = len(shape)
    axes = list(range(rank)) if axes is None else [int(a) for a in axes]
    if any(not -rank <= a < rank for a in axes) or len(set(a % rank for a in axes)) != len(axes):
        raise OpError(f"attribute axes={axes} must be distinct axes of the rank-{rank} input")
    axes = [a % rank for a in axes]
    has_scales = scales is not None and scales.size > 0
    has_sizes = sizes is not None and sizes.size > 0
    if has_scales == has_sizes:
        raise OpError("exactly one of the inputs 'scales' and 'sizes' must be given (non-empty)")
    given = (scales if has_scales else sizes).reshape(-1)
    if given.size != len(axes):
        raise OpError(f"input {'scales' if has_scales else 'sizes'} has {given.size} values, "
                      f"expected {len(axes)} (one per resized axis)")
    scale = [np.float32(1.0)] * rank
    out = list(shape)
    if has_scales:
        if np.any(given <= 0):
            raise OpError(f"input scales={given.tolist()} must be > 0")
        for a, s in zip(axes, given.astype(np.float32)):
            scale[a] = s
            out[a] = int(np.float32(s * np.float32(shape[a])))
        return scale, out
    if np.any(given < 0):
        raise OpError(f"input sizes={given.tolist()} must be >= 0")
    for a, o in zip(axes, given.astype(np.int64)):
        out[a] = int(o)
        scale[a] = np.float32(o) / np.float32(shape[a]) if shape[a] else np.float32(1.0)
    if policy != "stretch":
        pick = min if policy == "not_larger" else max
        common = pick(scale[a] for a in axes)
        for a in axes:
            scale[a] = common
            out[a] = int(np.round(np.float32(common * np.float32(shape[a]))))
    return scale, out


def _source_coordinates(n_out: int, n_in: int, scale, mode: str) -> np.ndarray:
    """Source coordinate (float32) of every output index along one axis.

    half_pixel: ``(x + 0.5) / scale - 0.5``; pytorch_half_pixel: the same, or 0 if ``n_out == 1``;
    align_corners: ``x · (n_in - 1) / (n_out - 1)`` (0 if ``n_out == 1``); asymmetric:
    ``x / scale``; tf_half_pixel_for_nn: ``(x + 0.5) / scale``; half_pixel_symmetric:
    ``offset + (x + 0.5) / scale - 0.5`` with ``offset = n_in/2 · (1 - n_out / (scale · n_in))``.
    Float32 arithmetic in ONNX Runtime's order, so nearest rounding matches at ties.
    """
    f = np.float32
    x = np.arange(n_out, dtype=np.float32)
    half = f(0.5)
    if mode == "asymmetric":
        return x / scale
    if mode == "tf_half_pixel_for_nn":
        return (x + half) / scale
    if mode == "align_corners":
        if n_out == 1:
            return np.zeros(1, dtype=np.float32)
        return x * f(n_in - 1) / f(n_out - 1)
    if mode == "pytorch_half_pixel" and n_out <= 1:
        return np.zeros(n_out, dtype=np.float32)
    if mode == "half_pixel_symmetric":
        adjustment = f(f(n_out) / f(scale * f(n_in)))
        offset = f(f(f(n_in) / f(2)) * (f(1) - adjustment))
        return (float(offset) + (x.astype(np.float64) + 0.5) / float(scale) - 0.5).astype(f)
    return (x + half) / scale - half


def _nearest_indices(coords: np.ndarray, n_in: int, nearest_mode: str) -> np.ndarray:
    """Source index per output index, clamped to ``[0, n_in - 1]``.

    floor / ceil of ``c``; round_prefer_floor / round_prefer_ceil round half away from zero,
    except that a tie (``|frac(c) - 0.5| <= 1e-6``, as ONNX Runtime tests it so that float32
    coordinates like 3.4999998 for 7/4·2 count as halves) goes to ``floor(c)`` / ``floor(c) + 1``.
    """
    c = coords.astype(np.float32)
    base = np.floor(c)
    if nearest_mode == "floor":
        index = base
    elif nearest_mode == "ceil":
        index = np.ceil(c)
    else:
        tie = np.abs((c - base) - np.float32(0.5)) <= np.float32(1e-6)
        half_away = np.where(c >= 0, np.floor(c.astype(np.float64) + 0.5),
                             np.ceil(c.astype(np.float64) - 0.5))
        index = np.where(tie, base + (nearest_mode == "round_prefer_ceil"), half_away)
    return np.clip(index, 0, n_in - 1).astype(np.intp)


def _linear_along(x: np.ndarray, axis: int, coords: np.ndarray) -> np.ndarray:
    """``y = x[i0] · (1 - w) + x[i1] · w`` along ``axis`` with ``c`` clamped to ``[0, n-1]``,
    ``i0 = floor(c)``, ``i1 = min(i0 + 1, n - 1)``, ``w = c - i0``."""
    n = x.shape[axis]
    c = np.clip(coords, np.float32(0), np.float32(n - 1))
    i0 = np.floor(c).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (c - i0.astype(np.float32)).astype(x.dtype)
    shape = [1] * x.ndim
    shape[axis] = w.size
    w = w.reshape(shape)
    return np.take(x, i0, axis=axis) * (1 - w) + np.take(x, i1, axis=axis) * w


def _cubic_weights(t: np.ndarray, a: np.float32) -> np.ndarray:
    """Keys cubic convolution weights (float32) of the samples at offsets -1, 0, 1, 2 from
    ``floor(c)``, for fractional parts ``t``: with ``u`` the distance to the sample,
    ``w(u) = ((a+2)u - (a+3))u² + 1`` for ``u <= 1`` and ``((u - 5)u + 8)u·a - 4a`` for
    ``1 < u < 2``."""
    one, two = np.float32(1), np.float32(2)
    near = lambda u: ((a + two) * u - (a + np.float32(3))) * u * u + one  # noqa: E731
    far = lambda u: ((a * u - np.float32(5) * a) * u + np.float32(8) * a) * u \
        - np.float32(4) * a  # noqa: E731
    return np.stack([far(t + one), near(t), near(one - t), far(two - t)]).astype(np.float32)


def _cubic_along(x: np.ndarray, axis: int, coords: np.ndarray, a: float,
                 exclude_outside: bool) -> np.ndarray:
    """``y = Σ_j w_j · x[clamp(floor(c) - 1 + j)]`` for ``j = 0..3`` along ``axis``; with
    exclude_outside the weights of samples outside ``[0, n-1]`` are 0 and the rest renormalized."""
    n = x.shape[axis]
    base = np.floor(coords).astype(np.intp)
    weights = _cubic_weights((coords - base.astype(np.float32)).astype(np.float32),
                             np.float32(a))
    index = base[None, :] + np.arange(-1, 3)[:, None]
    if exclude_outside:
        weights = np.where((index >= 0) & (index < n), weights, np.float32(0))
        weights = weights / weights.sum(axis=0, keepdims=True)
    index = np.clip(index, 0, n - 1)
    shape = [1] * x.ndim
    shape[axis] = coords.size
    y = None
    for j in range(4):
        term = np.take(x, index[j], axis=axis) * weights[j].astype(x.dtype).reshape(shape)
        y = term if y is None else y + term
    return y


def _antialias_filter(t, mode: str, a):
    """ORT's (Pillow's) antialias filter of float32 ``t``: linear ``1 - |t|`` for ``|t| < 1``;
    cubic ``((a+2)·t - (a+3))·t·t + 1`` for ``|t| < 1``, ``(((t - 5)·t + 8)·t - 4)·a`` for
    ``|t| < 2``; else 0 (float32, left to right)."""
    f = np.float32
    t = np.abs(np.float32(t))
    if mode == "linear":
        return f(1) - t if t < 1 else f(0)
    a = f(a)
    if t < 1:
        return f(f(f(f(f(a + f(2)) * t) - f(a + f(3))) * t) * t) + f(1)
    if t < 2:
        return f(f(f(f(f(t - f(5)) * t) + f(8)) * t) - f(4)) * a
    return f(0)


def _antialias_weights(n_in: int, n_out: int, rscale, coords, mode: str, a, exclude_outside):
    """Per output index: ``(lo, hi, w)``, the input range ``[lo, hi)`` and its float32 weights,
    as ONNX Runtime's SetupUpsampleFilterAntiAlias computes them (float32 throughout).

    ``s = 1/rscale``; ``support = (size/2)·s`` if ``s >= 1`` else ``size/2`` (size 2 linear,
    4 cubic); ``center = 0.5 + c`` (``c`` the source coordinate, or the index when ``s == 1``);
    the window ``[floor(center - support + 0.5), floor(center + support + 0.5))`` (at most
    ``2·ceil(support) + 1`` wide) cut to ``[0, n_in)``; raw weights
    ``filter((k - center + 0.5) · min(1/s, 1))`` summed left to right. Without exclude_outside
    the weights of positions before 0 (after n_in - 1) are added to the first (last) kept one.
    Then each weight times ``1/total`` (1 if the total is 0)."""
    f = np.float32
    scale = f(f(1) / f(rscale))
    half = f(2 if mode == "linear" else 4) * f(0.5)
    support = f(half * scale) if scale >= 1 else half
    window = int(math.ceil(support)) * 2 + 1
    inv_scale = f(f(1) / scale) if scale >= 1 else f(1)
    result = []
    for i in range(n_out):
        center = f(f(0.5) + (f(i) if scale == 1 else f(coords[i])))
        lo_real = int(math.floor(f(f(center - support) + f(0.5))))
        hi_real = int(math.floor(f(f(center + support) + f(0.5))))
        hi_real = lo_real + min(max(hi_real - lo_real, 0), window)
        lo_cut, hi_cut = min(max(lo_real, 0), n_in), min(max(hi_real, 0), n_in)
        lo, hi = (lo_cut, hi_cut) if exclude_outside else (lo_real, hi_real)
        count = hi - lo
        buf = [f(0)] * max(window, count)
        total = f(0)
        for k in range(count):
            w = _antialias_filter(f(f(f(k + lo) - center) + f(0.5)) * inv_scale, mode, a)
            buf[k] = w
            total = f(total + w)
        if not exclude_outside and lo_cut < hi_cut:
            before = min(max(-lo, 0), count - 1)
            for k in range(before):
                buf[before] = f(buf[before] + buf[k])
            after = min(max(count + lo - n_in, 0), count - 1)
            for k in range(count - after, count):
                buf[count - after - 1] = f(buf[count - after - 1] + buf[k])
            if before or after:
                for k in range(hi_cut - lo_cut):
                    buf[k] = buf[k + before]
        inv_total = f(1) if total == 0 else f(f(1) / total)
        result.append((lo_cut, hi_cut, np.array([f(buf[k] * inv_total)
                                                 for k in range(hi_cut - lo_cut)], f)))
    return result


def _antialias_along(y, axis: int, weights):
    """``Y[..., o, ...] = Σ_{k=lo..hi-1} X[..., k, ...] · w_k``, accumulated from 0 left to right
    in float32 (ORT's ComputeInterpolationAtLevel1/2)."""
    out = []
    for lo, hi, w in weights:
        acc = np.zeros_like(np.take(y, 0, axis=axis))
        for j, k in enumerate(range(lo, hi)):
            acc = acc + np.take(y, k, axis=axis) * w[j]
        out.append(acc)
    return np.stack(out, axis=axis)


def _resize_antialias(x, scale, out, *, mode, coordinate_mode, a, exclude_outside):
    """Resize with antialias=1 (opset 18) as ONNX Runtime: NCHW (or 2-D) float32 with the two
    leading scales 1, linear or cubic, the width filtered first into a float32 buffer, then the
    height (:func:`_antialias_weights`, :func:`_antialias_along`); an axis whose size does not
    change is copied."""
    if mode not in ("linear", "cubic"):
        raise OpError(f"antialias=1 with mode='{mode}' is not supported (expected 'linear' or "
                      f"'cubic'; nearest ignores antialias in ONNX)")
    if x.dtype != np.float32 or x.ndim not in (2, 4) or any(
            scale[i] != 1 or x.shape[i] != out[i] for i in range(x.ndim - 2)):
        raise OpError(f"antialias=1 is supported for float32 2-D or NCHW inputs resized on the "
                      f"last two axes; got {x.dtype} X {list(x.shape)} to {list(out)}")
    if 0 in out:
        return np.zeros(tuple(out), x.dtype)
    y = x
    for axis in (x.ndim - 1, x.ndim - 2):
        n_in, n_out = x.shape[axis], out[axis]
        if n_in == n_out:
            continue
        coords = _source_coordinates(n_out, n_in, scale[axis], coordinate_mode)
        y = _antialias_along(y, axis, _antialias_weights(n_in, n_out, scale[axis], coords,
                                                         mode, a, exclude_outside))
    return y


@register("Resize")
def resize(x, roi=None, scales=None, sizes=None, *, antialias=0, axes=None,
           coordinate_transformation_mode="half_pixel", cubic_coeff_a=-0.75, exclude_outside=0,
           extrapolation_value=0.0, keep_aspect_ratio_policy="stretch", mode="nearest",
           nearest_mode="round_prefer_floor", opset=17):
    """Resize each axis independently (separable): for output index ``x`` along an axis, the
    source coordinate ``c`` comes from ``coordinate_transformation_mode`` (see
    :func:`_source_coordinates`); ``nearest`` takes ``X[round(c)]`` (``nearest_mode``),
    ``linear`` interpolates between ``X[floor(c)]`` and the next sample (N-D multilinear),
    ``cubic`` weighs the 4 samples around ``c`` with Keys' kernel (``cubic_coeff_a``,
    ``exclude_outside``), samples past the border repeating the edge.

    As in ONNX Runtime, ``Y = X`` when the output shape equals the input shape (even if a
    scale ≠ 1 rounds back to the same size), and an axis with scale 1 is copied unchanged;
    cubic interpolates along the last axis first (ORT's order: bit for bit without
    exclude_outside).

    tf_crop_and_resize (the only mode using ``roi``): see :func:`_tf_crop_and_resize`; ``roi``
    is otherwise ignored, as ONNX specifies. antialias=1 (linear, cubic): see
    :func:`_resize_antialias`.

    Opset 10 (inputs X, scales; only ``mode``) is computed as ONNX Runtime does: asymmetric
    coordinates, nearest index ``trunc(c)`` when an axis grows and ``ceil(c)`` when it shrinks.
    """
    if opset < 11:
        return _resize_v10(x, roi, mode=mode)
    if mode not in RESIZE_MODES:
        raise OpError(f"attribute mode='{mode}' is not supported (expected one of "
                      f"{list(RESIZE_MODES)})")
    if coordinate_transformation_mode == "tf_crop_and_resize":
        return _tf_crop_and_resize(x, roi, scales, sizes, axes=axes, mode=mode,
                                   extrapolation_value=extrapolation_value,
                                   nearest_mode=nearest_mode, policy=keep_aspect_ratio_policy)
    if coordinate_transformation_mode not in COORDINATE_MODES:
        raise OpError(f"attribute coordinate_transformation_mode="
                      f"'{coordinate_transformation_mode}' is not supported (expected one of "
                      f"{list(COORDINATE_MODES)})")
    if nearest_mode is not _SIMPLE_NEAREST and nearest_mode not in NEAREST_MODES:
        raise OpError(f"attribute nearest_mode='{nearest_mode}' is not one of "
                      f"{list(NEAREST_MODES)}")
    if keep_aspect_ratio_policy not in ASPECT_POLICIES:
        raise OpError(f"attribute keep_aspect_ratio_policy='{keep_aspect_ratio_policy}' is not "
                      f"one of {list(ASPECT_POLICIES)}")
    if exclude_outside and mode != "cubic" and not antialias:
        raise OpError(f"attribute exclude_outside={exclude_outside} only applies to mode 'cubic' "
                      f"(mode is '{mode}')")
    if mode != "nearest" and x.dtype.kind != "f":
        raise OpError(f"mode='{mode}' needs a floating-point X, got {x.dtype} (cast it first)")
    scale, out = _resize_targets(x.shape, scales, sizes, axes, keep_aspect_ratio_policy)
    if tuple(out) == x.shape:
        return x.copy()
    if antialias and mode != "nearest":
        return _resize_antialias(x, scale, out, mode=mode, a=cubic_coeff_a,
                                 coordinate_mode=coordinate_transformation_mode,
                                 exclude_outside=bool(exclude_outside))
    if (mode == "linear" and x.dtype == np.float32 and x.ndim in (2, 4) and 0 not in out
            and all(x.shape[i] == out[i] and scale[i] == 1 for i in range(x.ndim - 2))):
        # ONNX Runtime's 2-D bilinear kernel, bit for bit (math_exact.bilinear)
        coords = [np.arange(n_in, dtype=np.float32) if (n_in == n_out and s == 1) else
                  _source_coordinates(n_out, n_in, s, coordinate_transformation_mode)
                  for n_in, n_out, s in zip(x.shape[-2:], out[-2:], scale[-2:])]
        return math_exact.bilinear(x, *coords)
    y = x
    order = list(enumerate(zip(x.shape, out, scale)))
    if mode == "cubic":   # ORT's bicubic interpolates along the last axis first
        order.reverse()
    for axis, (n_in, n_out, s) in order:
        if n_in == n_out and s == 1:
            continue
        if n_in == 0 or n_out == 0:
            raise OpError(f"cannot resize axis {axis} from {n_in} to {n_out} elements")
        coords = _source_coordinates(n_out, n_in, s, coordinate_transformation_mode)
        if mode == "nearest":
            if nearest_mode is _SIMPLE_NEAREST:   # opsets 7-10 (Upsample, Resize-10)
                axis_mode = "ceil" if s < 1 else "floor"
            else:
                axis_mode = nearest_mode
            y = np.take(y, _nearest_indices(coords, n_in, axis_mode), axis=axis)
        elif mode == "linear":
            y = _linear_along(y, axis, coords)
        else:
            y = _cubic_along(y, axis, coords, cubic_coeff_a, bool(exclude_outside))
    return y


#: ONNX Runtime's nearest rounding before opset 11 (not an attribute value a model can give)
_SIMPLE_NEAREST = object()


def _resize_v10(x, scales, *, mode):
    """Resize-10 / Upsample-7..9: ``out = floor(in · scale)`` per axis, asymmetric coordinates
    ``c = o / scale``; nearest takes ``X[trunc(c)]`` (``X[ceil(c)]`` on a shrinking axis),
    linear interpolates (ONNX Runtime's "simple" nearest mode and its bilinear kernel)."""
    if mode not in ("nearest", "linear"):
        raise OpError(f"attribute mode='{mode}' is not supported before opset 11 (expected "
                      f"'nearest' or 'linear')")
    if scales is None:
        raise OpError("input 'scales' is required")
    scales = np.asarray(scales, dtype=np.float32).reshape(-1)
    if scales.size != x.ndim:
        raise OpError(f"scales={scales.tolist()} has {scales.size} values, expected {x.ndim} "
                      f"(one per axis of X {list(x.shape)})")
    return resize(x, None, scales, coordinate_transformation_mode="asymmetric", mode=mode,
                  nearest_mode=_SIMPLE_NEAREST)


@register("Upsample")
def upsample(x, scales_input=None, *, mode="nearest", scales=None, opset=9):
    """Upsample (opsets 7-9; deprecated in 10): Resize with ``out = floor(in · scale)`` and
    asymmetric coordinates, see :func:`_resize_v10`. ``scales`` is an attribute at opsets 7-8
    and an input from opset 9."""
    if (scales_input is None) == (scales is None):
        raise OpError("'scales' must be given once: as an input (opset 9) or an attribute "
                      "(opsets 7-8)")
    given = np.asarray(scales if scales_input is None else scales_input, dtype=np.float32)
    if np.any(given < 1):
        raise OpError(f"scales={given.tolist()} must be >= 1 (Upsample only enlarges)")
    return _resize_v10(x, given, mode=mode)


def _tf_crop_and_resize(x, roi, scales, sizes, *, axes, mode, extrapolation_value, nearest_mode,
                        policy):
    """Resize with coordinate_transformation_mode='tf_crop_and_resize' (nearest or linear), as
    ONNX Runtime computes it: on an axis with ``roi = (start, end)`` the source coordinate of
    output ``o`` is ``start·(n_in - 1) + (o·(end - start))·(n_in - 1) / (n_out - 1)`` in float32
    (``0.5·float32(start + end)·(n_in - 1)`` in float64 when ``n_out == 1``); outputs whose coordinate falls outside
    ``[0, n_in - 1]`` on any resized axis take ``extrapolation_value``. An axis whose scale is 1
    is copied unchanged (its roi unused), as in ORT. Linear 2-D/4-D uses ORT's bilinear kernel
    on the clamped coordinates."""
    if mode not in ("nearest", "linear"):
        raise OpError(f"coordinate_transformation_mode='tf_crop_and_resize' with mode='{mode}' "
                      f"is not supported (expected 'nearest' or 'linear')")
    if x.dtype.kind != "f":
        raise OpError(f"tf_crop_and_resize needs a floating-point X, got {x.dtype}")
    scale, out = _resize_targets(x.shape, scales, sizes, axes, policy)
    rank = x.ndim
    axes_list = list(range(rank)) if axes is None else [int(a) % rank for a in axes]
    bounds = np.asarray(roi, dtype=np.float32).reshape(-1) if roi is not None else None
    if bounds is None or bounds.size != 2 * len(axes_list):
        raise OpError(f"tf_crop_and_resize needs input roi with {2 * len(axes_list)} values "
                      f"(starts then ends of the axes {axes_list}), got "
                      f"{None if bounds is None else bounds.tolist()}")
    f = np.float32
    starts = {a: bounds[i] for i, a in enumerate(axes_list)}
    ends = {a: bounds[i + len(axes_list)] for i, a in enumerate(axes_list)}
    coords, outside = [], np.zeros(tuple(out), dtype=bool)
    for a, (n_in, n_out) in enumerate(zip(x.shape, out)):
        if a not in starts or scale[a] == 1:   # ORT copies an axis of scale 1 (roi unused)
            coords.append(np.arange(n_out, dtype=np.float32))
            continue
        lo, hi = starts[a], ends[a]
        o = np.arange(n_out, dtype=np.float32)
        if n_out > 1:
            c = lo * f(n_in - 1) + (o * (hi - lo) * f(n_in - 1)) / f(n_out - 1)
        else:
            c = np.full(n_out, 0.5 * float(f(lo + hi)) * (n_in - 1), dtype=np.float32)
        c = c.astype(np.float32)
        bad = (c < 0) | (c > f(n_in - 1))
        shape = [1] * rank
        shape[a] = n_out
        outside |= bad.reshape(shape)
        coords.append(c)
    if mode == "linear" and rank in (2, 4) and all(
            x.shape[i] == out[i] and np.array_equal(coords[i], np.arange(out[i]))
            for i in range(rank - 2)):
        clamped = [np.clip(c, f(0), f(n - 1)) for c, n in zip(coords[-2:], x.shape[-2:])]
        y = math_exact.bilinear(x, *clamped)
    else:
        y = x
        for a, (c, n_in) in enumerate(zip(coords, x.shape)):
            if a not in starts or scale[a] == 1:
                continue
            if mode == "nearest":
                y = np.take(y, _nearest_indices(c, n_in, nearest_mode), axis=a)
            else:
                y = _linear_along(y, a, c)
    return np.where(outside, x.dtype.type(extrapolation_value), y).astype(x.dtype)
