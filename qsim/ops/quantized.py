"""Quantized ONNX ops, bit-exact with ONNX Runtime's CPU kernels (MLAS).

QuantizeLinear / DequantizeLinear (opsets 10-25: per tensor, per axis, blocked),
DynamicQuantizeLinear, MatMulInteger, ConvInteger, QLinearMatMul and QLinearConv. Every function
follows the calling convention of :mod:`qsim.ops.registry`. Integer types: int8, uint8, int16,
uint16, int32 (NumPy dtypes) and int4 / uint4 (``ml_dtypes`` dtypes, what ``onnx.numpy_helper``
returns).

The arithmetic, as ONNX Runtime 1.32 computes it on x86 (checked against it in
``tests/ops/test_quantized_ops.py``):

* **quantize** ``q = clamp(rne(x ⊘ s), qmin - zp, qmax - zp) + zp`` where ``⊘`` is a float32
  *division* (MLAS divides, it does not multiply by ``1/s``), ``rne`` rounds half to even
  (``cvtps2dq``), and the clamp is taken in float32 before rounding with SSE ``maxps``/``minps``
  semantics, so NaN becomes ``qmin``.
* **dequantize** ``y = float32(int32(q) - zp) ⊗ s``: one exact integer subtraction, one
  conversion, one float32 product.
* **integer products** (MatMulInteger, ConvInteger and the core of QLinear*) are exact:
  ``acc = Σ (a - a_zp)(b - b_zp)`` in int32 (wrapping). On x86 CPUs without VNNI, ONNX
  Runtime's uint8 × int8 kernels (``vpmaddubsw``) saturate pairs of products at ±32767; qsim
  computes the exact sum, which is what VNNI CPUs return (int8 weights in [-64, 63], ONNX
  Runtime's ``reduce_range``, never saturate). qsim evaluates it with float32 BLAS products over
  K-slices short enough that no partial sum exceeds 2^24 (:func:`_terms_per_sgemm`; for
  convolutions the slices are cut by the weights' absolute row sums, :func:`_k_slices`), so every
  float32 operation is exact, and adds the slices exactly (int32 or float64).
* **requantize** (QLinearMatMul, QLinearConv; MLAS ``MlasRequantizeOutput``)
  ``M = float32(float32(s_a · s_b) / s_y)`` per output column/channel, then
  ``y = clamp(rne(float32(acc + bias) ⊗ M), qmin - zp_y, qmax - zp_y) + zp_y`` (bias added in
  int32, the sum converted to float32 with round-to-nearest-even).
"""
from __future__ import annotations

import math
import os

import numpy as np

from ..errors import OpError
from ..jit import USE_NUMBA, kernel
from ..kernels import gemm as gemm_kernels
from .nn import _check_auto_pad, _check_conv_operands, _ints, _out_size, _pad, _window_pads, \
    _windows
from .registry import register

#: integer type name → (qmin, qmax)
_RANGES = {"int4": (-8, 7), "uint4": (0, 15), "int8": (-128, 127), "uint8": (0, 255),
           "int16": (-32768, 32767), "uint16": (0, 65535), "int32": (-2**31, 2**31 - 1)}
#: ONNX TensorProto data type code → integer type name (QuantizeLinear's output_dtype)
_ONNX_INT_CODES = {2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 21: "uint4", 22: "int4"}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _int_dtype(name: str) -> np.dtype:
    """The NumPy dtype of an integer type name; int4/uint4 come from ``ml_dtypes`` (installed
    with ``onnx``, which is how such tensors reach qsim)."""
    if name in ("int4", "uint4"):
        try:
            import ml_dtypes
        except ImportError:  # pragma: no cover - onnx installs ml_dtypes
            raise OpError(f"{name} tensors need the ml_dtypes package (pip install ml_dtypes)") \
                from None
        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


def _int_range(op: str, what: str, dtype: np.dtype, allowed=tuple(_RANGES)) -> tuple[int, int]:
    """``(qmin, qmax)`` of ``dtype``, or :class:`OpError` if it is not an allowed integer type."""
    name = np.dtype(dtype).name
    if name not in allowed:
        raise OpError(f"{op}: {what} has type {name}, expected one of {list(allowed)}")
    return _RANGES[name]


def _float32(op: str, what: str, v) -> np.ndarray:
    v = np.asarray(v)
    if v.dtype not in (np.float32, np.float16):
        raise OpError(f"{op}: {what} has dtype {v.dtype}, expected float32 or float16")
    return v.astype(np.float32)


def _scalar(op: str, what: str, v) -> np.ndarray:
    """A per-tensor parameter: a scalar or a 1-element 1-D tensor (as a 0-d array)."""
    v = np.asarray(v)
    if v.size != 1 or v.ndim > 1:
        raise OpError(f"{op}: {what} has shape {list(v.shape)}; ONNX Runtime supports only a "
                      f"scalar or a 1-element 1-D tensor here (per-tensor)")
    return v.reshape(())


def _mlas_clamp(v: np.ndarray, lo, hi) -> np.ndarray:
    """``minps(maxps(v, lo), hi)``: ``maxps(a, b) = a > b ? a : b``, so NaN becomes ``lo``."""
    v = np.where(v > lo, v, np.float32(lo))
    return np.where(v < hi, v, np.float32(hi)).astype(np.float32)


def _rne(v: np.ndarray) -> np.ndarray:
    """Round half to even (``cvtps2dq``) of finite float32 values, as int64."""
    return np.rint(v).astype(np.int64)


def _quantize(v: np.ndarray, zp: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``clamp(rne(v), lo - zp, hi - zp) + zp`` as int64, with ``v`` float32 and MLAS's float
    clamp (NaN → ``lo``)."""
    zp = zp.astype(np.int64)
    low = (lo - zp).astype(np.float32)
    high = (hi - zp).astype(np.float32)
    return _rne(_mlas_clamp(v, low, high)) + zp


def _broadcast_param(op: str, what: str, p: np.ndarray, shape: tuple, axis,
                     block_size) -> np.ndarray:
    """Broadcast a scale / zero point to ``shape``: per tensor (scalar or 1 element), per axis
    (1-D of length ``shape[axis]``) or blocked (same rank; ``ceil(D_axis / block_size)`` along
    ``axis``, every other dimension equal)."""
    p = np.asarray(p)
    block_size = int(block_size)
    if block_size < 0:
        raise OpError(f"{op}: attribute block_size={block_size} must be >= 0")
    if p.size == 1 and p.ndim <= 1:
        if block_size:
            raise OpError(f"{op}: block_size={block_size} needs a blocked {what}, got one value "
                          f"(block_size must be 0 for per-tensor quantization)")
        return p.reshape(())
    rank = len(shape)
    if not -rank <= int(axis) < rank:
        raise OpError(f"{op}: attribute axis={axis} is out of range for an input of rank {rank}")
    ax = int(axis) % rank
    if not block_size:
        if p.shape != (shape[ax],):
            raise OpError(f"{op}: per-axis {what} has shape {list(p.shape)}, expected "
                          f"[{shape[ax]}] (input dimension {ax} of {list(shape)})")
        return p.reshape((shape[ax],) + (1,) * (rank - ax - 1))
    blocks = -(-shape[ax] // block_size)
    expected = shape[:ax] + (blocks,) + shape[ax + 1:]
    if p.shape != expected:
        raise OpError(f"{op}: blocked {what} has shape {list(p.shape)}, expected "
                      f"{list(expected)} (block_size={block_size} along axis {ax} of "
                      f"{list(shape)})")
    return np.repeat(p, block_size, axis=ax).take(np.arange(shape[ax]), axis=ax)


#: every integer of magnitude <= 2^24 is a float32
_F32_EXACT = 2 ** 24
#: float32 elements of one im2col block (32 MB): bounds the memory of a big convolution; big
#: blocks mean few BLAS calls, which matters on a busy machine (each call wakes BLAS's threads)
_COLS_BLOCK = 2 ** 23


def _terms_per_sgemm(bound_a: int, bound_b: int) -> int:
    """``T = floor(2^24 / (bound_a · bound_b))``: how many products ``a·b`` of integers with
    ``|a| <= bound_a``, ``|b| <= bound_b`` a float32 product can sum exactly.

    Every partial sum of at most T such products, in any order and with or without FMA, is an
    integer of magnitude <= 2^24, so every float32 operation on them is exact: a float32 BLAS
    product over a K-slice of at most T terms returns the exact integer. 0 when one product alone
    may exceed 2^24 (16-bit operands).

    >>> _terms_per_sgemm(255, 128), _terms_per_sgemm(255, 255), _terms_per_sgemm(65535, 65535)
    (514, 258, 0)
    """
    return _F32_EXACT // max(1, int(bound_a) * int(bound_b))


def _bound(v: np.ndarray) -> int:
    """``max |v|`` of an integer-valued array (0 when empty)."""
    return int(max(v.max(), -v.min())) if v.size else 0


def _sum_products(a: np.ndarray, b: np.ndarray, terms: int, acc):
    """``acc + a @ b`` (NumPy matmul semantics) for float32 ``a``, ``b`` holding integers,
    exactly: one float32 matmul per K-slice of at most ``terms`` (:func:`_terms_per_sgemm`), the
    slices added in float64 (exact below 2^53). ``acc`` is None (nothing yet), a float32 or a
    float64 array; the result is float32 only while a single slice was summed."""
    k = a.shape[-1]
    for k0 in range(0, k, terms):
        part = np.matmul(a[..., k0:k0 + terms], b[..., k0:k0 + terms, :])
        if acc is None:
            acc = part
        else:
            if acc.dtype != np.float64:
                acc = acc.astype(np.float64)
            acc += part
    return acc


def _to_int32(acc: np.ndarray) -> np.ndarray:
    """An exact integer-valued float array as int32, wrapping like int32 accumulation."""
    if acc.dtype == np.float32:                       # one slice: |acc| <= 2^24
        return acc.astype(np.int32)
    return acc.astype(np.int64).astype(np.int32)


def _exact_matmul(a: np.ndarray, b: np.ndarray, bound_a=None, bound_b=None) -> np.ndarray:
    """Exact integer ``a @ b`` (NumPy matmul semantics) wrapped to int32.

    ``a``, ``b`` hold integers (any integer dtype, or float32 from :func:`_centered`), bounded by
    ``bound_a``, ``bound_b`` (computed when not given). With ``T = _terms_per_sgemm(bound_a,
    bound_b) > 0``, float32 products over K-slices of T terms, added in float64; otherwise (16-bit
    operands: each product below 2^32, float64 exact up to 2^21 terms) one float64 product, or
    int64 arithmetic past that."""
    bound_a = _bound(a) if bound_a is None else bound_a
    bound_b = _bound(b) if bound_b is None else bound_b
    k = a.shape[-1]
    terms = _terms_per_sgemm(bound_a, bound_b)
    if k == 0:
        return np.matmul(a.astype(np.int64), b.astype(np.int64)).astype(np.int32)
    if terms > 0:
        acc = _sum_products(a.astype(np.float32, copy=False), b.astype(np.float32, copy=False),
                            terms, None)
        return _to_int32(acc)
    if bound_a * bound_b * k < 2 ** 53:
        y = np.matmul(a.astype(np.float64), b.astype(np.float64))
        return y.astype(np.int64).astype(np.int32)
    return np.matmul(a.astype(np.int64), b.astype(np.int64)).astype(np.int32)


def _np_slice_ends(w: np.ndarray, limit: float) -> np.ndarray:
    """NumPy twin of :func:`_nb_slice_ends`: the same greedy cut from per-row prefix sums
    ``P[i, e] = Σ_{k<e} |w[i, k]|`` (the end after ``s`` is ``min_i max{e : P[i, e] - P[i, s]
    <= limit}``, at least ``s + 1``)."""
    m, k = w.shape
    prefix = np.zeros((m, k + 1), np.float64)
    np.cumsum(np.abs(w, dtype=np.float64), axis=1, out=prefix[:, 1:])
    ends, s = [], 0
    while s < k:
        fits = (prefix <= (prefix[:, s] + limit)[:, None]).sum(axis=1) - 1
        e = max(s + 1, int(fits.min()) if m else k)
        ends.append(e)
        s = e
    return np.array(ends, np.int64)


#: columns per partial row sum in :func:`_nb_slice_ends`
_CHUNK = 64


@kernel
def _nb_slice_ends(w, limit):
    """Greedy K-slices of ``w`` (M × K, integer-valued float32) whose absolute row sums stay
    within ``limit``: from ``s``, the slice ends at the largest ``e`` with
    ``Σ_{s<=k<e} |w[i, k]| <= limit`` for every row ``i`` (at least one term). Returns the
    slice ends (the last is K). The sums of whole ``_CHUNK``-column chunks are taken once (a
    vectorized pass); each row then steps over whole chunks and adds single terms only at the
    ends of its run, so the cut is the same as adding term by term."""
    m, k = w.shape
    chunks = (k + _CHUNK - 1) // _CHUNK
    sums = np.zeros((m, chunks), np.float64)
    for i in range(m):
        row = w[i]
        for c in range(chunks):
            base = c * _CHUNK
            total = np.int32(0)                 # integers: the loop vectorizes
            for j in range(min(_CHUNK, k - base)):
                total += np.int32(abs(np.int32(row[base + j])))
            sums[i, c] = total
    ends = np.empty(max(k, 1), np.int64)
    count, s = 0, 0
    while s < k:
        e = k
        for i in range(m):
            total = 0.0
            j = s
            while j < e:
                if j % _CHUNK == 0 and j + _CHUNK <= e and total + sums[i, j // _CHUNK] <= limit:
                    total += sums[i, j // _CHUNK]
                    j += _CHUNK
                    continue
                total += abs(np.float64(w[i, j]))
                if total > limit:
                    e = j
                    break
                j += 1
        e = max(e, s + 1)
        ends[count] = e
        count += 1
        s = e
    return ends[:count]


def _k_slices(w: np.ndarray, bound_x: int) -> list[tuple[int, int]]:
    """K-slices ``[(k0, k1), ...]`` of the weights ``w`` (M × K, integer-valued float32) for
    exact float32 products against operands with ``|x| <= bound_x``: in each slice
    ``bound_x · Σ_k |w[i, k]| <= 2^24`` for every row ``i``, so every partial sum of
    ``x[k] · w[i, k]`` over the slice, in any order, is an integer of magnitude <= 2^24 and every
    float32 operation on it is exact. Weights are constants of the model and typically small
    against their maximum, so this needs far fewer slices than the uniform
    ``K · max|x| · max|w|`` bound (:func:`_terms_per_sgemm`).

    >>> _k_slices(np.full((2, 600), 128, np.float32), 255)   # 2^24 / 255 / 128 = 514 terms
    [(0, 514), (514, 600)]
    """
    k = w.shape[1]
    if bound_x == 0 or k == 0:
        return [(0, k)]
    limit = float(_F32_EXACT // bound_x)
    ends = (_nb_slice_ends if USE_NUMBA else _np_slice_ends)(np.ascontiguousarray(w), limit)
    return list(zip([0] + ends[:-1].tolist(), ends.tolist()))


def _busy(load: float, cores: int) -> bool:
    """Whether other work holds the cores: the 1-minute load average exceeds the core count by
    more than one (this process alone, busy on every core, brings it to about the core count).

    >>> _busy(2.4, 2), _busy(3.5, 2)
    (False, True)
    """
    return load > cores + 1


def _sgemm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for float32 matrices whose products and partial sums are integers of magnitude
    <= 2^24, so that every summation order gives the same, exact result: which GEMM computes it
    changes the speed only.

    NumPy's BLAS (OpenBLAS, two threads here), fastest on idle cores; with Numba, on a machine
    busy with other work (:func:`_busy`), qsim's own float32 GEMM on the calling thread
    (:func:`qsim.kernels.gemm.matmul`): OpenBLAS's thread pool then slows down 3-4x more, and
    a second thread of qsim's own helps less than it waits (benchmarks/README.md)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0     # not on Windows
    if USE_NUMBA and _busy(load, os.cpu_count() or 1):
        return gemm_kernels.matmul(a, b, threads=1)
    return np.matmul(a, b)


def _np_im2col(x, zx: int, n0: int, n1: int, c0: int, cg: int, kernel, strides, dilations,
               begins, ends, out) -> np.ndarray:
    """The im2col matrix of images ``n0:n1`` and channels ``c0:c0+cg`` of the integer tensor
    ``x``, centered: ``cols[(c, *k), (n, *o)] = float32(x[n, c0 + c, o·stride + k·dilation -
    begin] - zx)``, 0 in the padding (exact: 8-bit operands). NumPy twin of :func:`_nb_im2col`
    (any number of spatial axes)."""
    nsp = x.ndim - 2
    xc = np.subtract(x[n0:n1, c0:c0 + cg], np.float32(zx), dtype=np.float32)
    windows = _windows(_pad(xc, begins, ends), kernel, strides, dilations, out)
    cols = np.moveaxis(windows, 0, 1 + nsp)                               # (c, *k, n, *o)
    return cols.reshape(cg * math.prod(kernel), (n1 - n0) * math.prod(out))


@kernel
def _nb_im2col_rows(x1, c1, d, plane, row_shift, shift, lo, hi, h, oh, ow, z):
    """One image's part of an im2col row when stride 1 keeps the output width ``ow`` equal to
    the input width: output ``t = oy·ow + ox`` then reads input ``(plane + oy + row_shift)·ow +
    ox + shift``, so all rows are one contiguous copy (long, vectorized), after which the
    columns outside ``[lo, hi)`` and the rows outside the image are zeroed."""
    zero = np.float32(0.0)
    oy_lo = min(oh, max(0, -row_shift))
    oy_hi = max(oy_lo, min(oh, h - row_shift))
    for t in range(np.uint64(oy_lo * ow)):
        c1[d + t] = zero
    for t in range(np.uint64(oy_hi * ow), np.uint64(oh * ow)):
        c1[d + t] = zero
    if oy_hi == oy_lo:
        return
    t0, t1 = oy_lo * ow + lo, (oy_hi - 1) * ow + hi
    src = np.uint64((plane + row_shift) * ow + shift + t0)
    dst = d + np.uint64(t0)
    for u in range(np.uint64(t1 - t0)):
        c1[dst + u] = np.float32(np.int32(x1[src + u]) - z)
    for oy in range(oy_lo, oy_hi):
        row = d + np.uint64(oy * ow)
        for ox in range(lo):
            c1[row + np.uint64(ox)] = zero
        for ox in range(hi, ow):
            c1[row + np.uint64(ox)] = zero


@kernel
def _nb_im2col(x, zx, n0, n1, c0, cg, kh, kw, sh, sw, dh, dw, bh, bw, oh, ow, cols):
    """:func:`_np_im2col` for 2-D convolutions of a C-contiguous ``x``, into the C-contiguous
    ``cols``: each row is written in one pass from the integer image (the centering and the
    padding fused in). Flat unsigned indices (no wraparound checks), so the copies vectorize."""
    channels, h, w = x.shape[1], x.shape[2], x.shape[3]
    p = oh * ow
    zero = np.float32(0.0)
    z = np.int32(zx)
    x1, c1 = x.reshape(-1), cols.reshape(-1)
    width = np.uint64(cols.shape[1])
    step = np.uint64(sw)
    for c in range(cg):
        for ky in range(kh):
            for kx in range(kw):
                r = np.uint64((c * kh + ky) * kw + kx) * width
                shift = kx * dw - bw                              # ix = ox·sw + shift
                lo = min(ow, max(0, (sw - 1 - shift) // sw))      # first ox with ix >= 0
                hi = max(lo, min(ow, (w - 1 - shift) // sw + 1))  # first ox with ix >= w
                for i in range(n1 - n0):
                    plane = ((n0 + i) * channels + c0 + c) * h
                    if sh == 1 and sw == 1 and ow == w and lo < hi:
                        _nb_im2col_rows(x1, c1, r + np.uint64(i * p), plane, ky * dh - bh, shift,
                                     lo, hi, h, oh, ow, z)
                        continue
                    for oy in range(oh):
                        iy = oy * sh + ky * dh - bh
                        d = r + np.uint64(i * p + oy * ow)
                        if iy < 0 or iy >= h:
                            for ox in range(ow):
                                c1[d + np.uint64(ox)] = zero
                            continue
                        for ox in range(lo):
                            c1[d + np.uint64(ox)] = zero
                        src = np.uint64((plane + iy) * w + lo * sw + shift)
                        d0 = d + np.uint64(lo)
                        if sw == 1:
                            for u in range(np.uint64(hi - lo)):
                                c1[d0 + u] = np.float32(np.int32(x1[src + u]) - z)
                        else:
                            for u in range(np.uint64(hi - lo)):
                                c1[d0 + u] = np.float32(np.int32(x1[src + u * step]) - z)
                        for ox in range(hi, ow):
                            c1[d + np.uint64(ox)] = zero


def _exact_conv(x: np.ndarray, zx: int, w: np.ndarray, *, bound_x: int, bound_w: int, group,
                strides, dilations, begins, ends, out, store=None, dtype=np.int32):
    """Exact integer N-D convolution ``conv(x - zx, w)`` (padding: ``zx``, a real zero), int32.

    ``x`` is the 8-bit input, ``|x - zx| <= bound_x``; ``w`` float32 holding the zero-point-free
    weights, ``|w| <= bound_w``. im2col per block of images (about ``_COLS_BLOCK`` elements,
    :func:`_nb_im2col`), one float32 BLAS product per K-slice of the weights (:func:`_k_slices`:
    each exact), the slices added in int32 (exact: ``bound_x · bound_w · K < 2^31``) or else in
    float64 and wrapped to int32.

    ``store(acc, m0, target)``, when given, writes each finished block instead of the plain int32
    copy: ``acc`` (mg, images, P) holds the exact sums (float32 or int32) of output channels
    ``m0 ...`` and ``target`` is the (images, mg, P) view of the ``dtype`` result to fill."""
    nsp = x.ndim - 2
    kernel = tuple(w.shape[2:])
    kk = math.prod(kernel)
    n, channels, m = x.shape[0], x.shape[1], w.shape[0]
    cg, mg, p = channels // group, m // group, math.prod(out)
    w2 = w.reshape(m, cg * kk)
    slices = _k_slices(w2, bound_x)
    wide = len(slices) > 1 and bound_x * bound_w * cg * kk >= 2 ** 31
    images = max(1, _COLS_BLOCK // max(1, cg * kk * p))
    compiled = USE_NUMBA and nsp == 2
    if compiled:
        x = np.ascontiguousarray(x)
        scratch = np.empty(cg * kk * min(n, images) * p, np.float32)
        geometry = tuple(int(v) for v in (*kernel, *strides, *dilations, *begins, *out))
    y = np.empty((n, m, p), dtype)
    for g in range(group):                  # one 2-D product per group, image block and slice
        weights = w2[g * mg:(g + 1) * mg]
        for n0 in range(0, n, images):
            n1 = min(n, n0 + images)
            if compiled:
                cols = scratch[:cg * kk * (n1 - n0) * p].reshape(cg * kk, (n1 - n0) * p)
                _nb_im2col(x, zx, n0, n1, g * cg, cg, *geometry, cols)
            else:
                cols = _np_im2col(x, zx, n0, n1, g * cg, cg, kernel, strides, dilations, begins,
                                  ends, out)
            acc = None
            for k0, k1 in slices:               # a column range of the weights is a BLAS view
                part = _sgemm(weights[:, k0:k1], cols[k0:k1])
                if acc is None:
                    acc = part
                elif wide:
                    acc = acc.astype(np.float64) if acc.dtype != np.float64 else acc
                    acc += part
                else:
                    acc = acc.astype(np.int32) if acc.dtype != np.int32 else acc
                    np.add(acc, part, out=acc, casting="unsafe")     # exact, |sum| < 2^31
            if acc.dtype == np.float64:
                acc = acc.astype(np.int64).astype(np.int32)
            block = acc.reshape(mg, n1 - n0, p)
            target = y[n0:n1, g * mg:(g + 1) * mg]
            if store is None:
                target[...] = block.transpose(1, 0, 2)
            else:
                store(block, g * mg, target)
    return y.reshape((n, m) + tuple(out))


def _conv_geometry(x, w, auto_pad, dilations, strides, pads):
    nsp = x.ndim - 2
    kernel = tuple(w.shape[2:])
    strides = _ints("strides", strides, 1, nsp, minimum=1)
    dilations = _ints("dilations", dilations, 1, nsp, minimum=1)
    begins, ends = _window_pads(x.shape[2:], kernel, strides, dilations,
                                _check_auto_pad(auto_pad), pads)
    out = tuple(_out_size(*a, False) for a in zip(x.shape[2:], kernel, strides, dilations,
                                                   begins, ends))
    if min(out) < 1:
        raise OpError(f"output spatial shape {list(out)} is empty: input {list(x.shape[2:])} "
                      f"with kernel_shape={list(kernel)}, pads={list(begins + ends)}")
    return dict(strides=strides, dilations=dilations, begins=begins, ends=ends, out=out)


def _offset_bound(op: str, what: str, v: np.ndarray, zp, allowed) -> int:
    """``max |v - zp|`` bounded from ``v``'s extremes and the zero points (``zp`` None or
    already shaped to broadcast against ``v``), after checking both dtypes."""
    _int_range(op, what, v.dtype, allowed)
    lo, hi = (int(v.min()), int(v.max())) if v.size else (0, 0)
    if zp is None:
        return max(hi, -lo)
    zp = np.asarray(zp)
    if zp.dtype != v.dtype:
        raise OpError(f"{op}: zero point of {what} has dtype {zp.dtype}, expected {v.dtype} "
                      f"(the dtype of {what})")
    return max(hi - int(zp.min()), int(zp.max()) - lo)


def _centered(op: str, what: str, v: np.ndarray, zp, allowed) -> tuple[np.ndarray, int]:
    """``(v - zp, max |v - zp|)``: the difference as float32 (exact: 8-bit operands) and the
    bound of :func:`_offset_bound`."""
    bound = _offset_bound(op, what, v, zp, allowed)
    if zp is None:
        return v.astype(np.float32), bound
    return np.subtract(v, np.asarray(zp).astype(np.float32), dtype=np.float32), bound


def _requantize(acc: np.ndarray, multiplier: np.ndarray, y_zero_point: np.ndarray) -> np.ndarray:
    """MLAS ``MlasRequantizeOutput``: ``clamp(rne(float32(acc) ⊗ M), qmin - zp, qmax - zp) + zp``
    in the zero point's type.

    For 8- and 16-bit outputs in place on one float32 array: ``fmax`` is ``maxps`` with the
    clamp's bound second (NaN → ``qmin - zp``), then ``minimum`` (no NaN left); the sign of a
    zero, the only other difference, is lost in the rounding; adding ``zp`` in float32 is exact
    (every value is an integer in ``[qmin, qmax]``)."""
    lo, hi = _RANGES[y_zero_point.dtype.name]
    if y_zero_point.dtype.itemsize > 2:
        v = acc.astype(np.float32) * multiplier
        return _quantize(v, y_zero_point, lo, hi).astype(y_zero_point.dtype)
    zp = y_zero_point.astype(np.float32)
    v = np.multiply(acc, multiplier, dtype=np.float32)
    np.fmax(v, np.float32(lo) - zp, out=v)
    np.minimum(v, np.float32(hi) - zp, out=v)
    np.rint(v, out=v)
    v += zp
    return v.astype(y_zero_point.dtype)


def _np_requantize_block(acc, bias, multiplier, zp, lo, hi, y):
    """NumPy twin of :func:`_nb_requantize_block` (the steps of :func:`_requantize`)."""
    v = acc.astype(np.int32) + bias[:, None, None]                  # int32, wrapping
    v = np.multiply(v, multiplier[:, None, None], dtype=np.float32)
    np.fmax(v, lo, out=v)
    np.minimum(v, hi, out=v)
    np.rint(v, out=v)
    y[...] = (v.astype(np.int32) + zp).transpose(1, 0, 2)


@kernel
def _nb_requantize_block(acc, bias, multiplier, zp, lo, hi, y):
    """:func:`_requantize` of a convolution block with its bias, fused with the transpose:
    ``y[j, i, q] = clamp(rne(float32(int32(acc[i, j, q] + bias[i])) ⊗ M[i]), lo, hi) + zp``
    with ``lo = qmin - zp``, ``hi = qmax - zp`` (float32; ``maxps`` first, so NaN → lo).
    ``acc`` (M, N, P) holds exact integers (float32 or int32), ``y`` is (N, M, P)."""
    m, n, p = acc.shape
    for j in range(n):
        for i in range(m):
            b = np.int64(bias[i])
            s = multiplier[i]
            for q in range(p):
                v = np.float32(np.int32(np.int64(acc[i, j, q]) + b)) * s
                v = v if v > lo else lo
                v = v if v < hi else hi
                y[j, i, q] = np.int64(np.rint(v)) + zp


def _requantize_store(bias, multiplier, y_zero_point):
    """A ``store`` for :func:`_exact_conv` that requantizes each block (:func:`_requantize`,
    with the int32 ``bias`` per output channel added first) straight into the 8-bit output."""
    qmin, qmax = _RANGES[y_zero_point.dtype.name]
    zp = int(y_zero_point)
    lo, hi = np.float32(qmin - zp), np.float32(qmax - zp)
    fn = _nb_requantize_block if USE_NUMBA else _np_requantize_block

    def store(acc, m0, target):
        rows = slice(m0, m0 + acc.shape[0])
        fn(acc, bias[rows], multiplier[rows], zp, lo, hi, target)
    return store


def _multiplier(op: str, s_in, s_w, s_y) -> np.ndarray:
    """``float32(float32(s_in · s_w) / s_y)``, the order ONNX Runtime evaluates it in."""
    return (s_in * s_w) / s_y


_EIGHT_BIT = ("int8", "uint8")


# ---------------------------------------------------------------------------------------------
# QuantizeLinear / DequantizeLinear / DynamicQuantizeLinear
# ---------------------------------------------------------------------------------------------
@register("QuantizeLinear")
def quantize_linear(x, y_scale, y_zero_point=None, *, axis=1, block_size=0, output_dtype=0,
                    precision=0, saturate=1):
    """``y = clamp(rne(x ⊘ s), qmin - zp, qmax - zp) + zp`` (float32 division, half to even,
    float clamp with NaN → qmin), per tensor, per axis or blocked.

    The output type is the zero point's type, else ``output_dtype``, else uint8. ``saturate``
    only concerns float8 outputs, which qsim does not support.

    >>> quantize_linear(np.array([0.5, 1.5, -7.0, 300.0], np.float32), np.float32(1.0)).tolist()
    [0, 2, 0, 255]
    """
    op = "QuantizeLinear"
    if int(precision) != 0:
        raise OpError(f"{op}: attribute precision={precision} is not supported (only 0, the "
                      f"default precision of y_scale)")
    xf = _float32(op, "input x", x)
    scale = _float32(op, "y_scale", y_scale)
    if y_zero_point is not None:
        out = np.asarray(y_zero_point).dtype
        if int(output_dtype) and _ONNX_INT_CODES.get(int(output_dtype)) != out.name:
            raise OpError(f"{op}: attribute output_dtype={output_dtype} disagrees with "
                          f"y_zero_point of type {out.name}")
    elif int(output_dtype):
        if int(output_dtype) not in _ONNX_INT_CODES:
            raise OpError(f"{op}: attribute output_dtype={output_dtype} is not an integer type "
                          f"qsim supports; expected one of {sorted(_ONNX_INT_CODES)} "
                          f"({', '.join(_ONNX_INT_CODES.values())})")
        out = _int_dtype(_ONNX_INT_CODES[int(output_dtype)])
    else:
        out = np.dtype(np.uint8)
    lo, hi = _int_range(op, "y_zero_point", out, tuple(_ONNX_INT_CODES.values()))
    s = _broadcast_param(op, "y_scale", scale, xf.shape, axis, block_size)
    zp = np.zeros((), np.int64) if y_zero_point is None else \
        _broadcast_param(op, "y_zero_point", np.asarray(y_zero_point), xf.shape, axis,
                         block_size).astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        v = np.array(xf / s, np.float32)            # an array (also for 0-d), written in place
    if out.name in _SHORT:
        return _quantize_short(v, zp, lo, hi, out).reshape(xf.shape)
    return _quantize(v, zp, lo, hi).astype(out).reshape(xf.shape)


#: the 8- and 16-bit integer types: every difference of two of their values is a float32
_SHORT = ("int8", "uint8", "int16", "uint16")


def _quantize_short(v: np.ndarray, zp: np.ndarray, lo: int, hi: int, out: np.dtype) -> np.ndarray:
    """:func:`_quantize` for 8- and 16-bit outputs in place on the float32 ``v`` (fewer passes):
    ``fmax`` with the bound second is ``maxps`` (NaN → ``lo - zp``; the sign of a zero, the only
    other difference, is lost in the rounding), then ``minimum``, ``rint``, and ``+ zp`` in
    float32, exact for integers of these ranges."""
    zpf = zp.astype(np.float32)
    np.fmax(v, np.float32(lo) - zpf, out=v)
    np.minimum(v, np.float32(hi) - zpf, out=v)
    np.rint(v, out=v)
    v += zpf
    return v.astype(out)


@register("DequantizeLinear")
def dequantize_linear(x, x_scale, x_zero_point=None, *, axis=1, block_size=0, output_dtype=0):
    """``y = float32(int32(x) - zp) ⊗ s`` per tensor, per axis or blocked; the output has the
    scale's type (float32, or float16 rounded from the float32 product).

    int32 inputs must have no (or an all-zero) zero point, as ONNX Runtime enforces.

    >>> dequantize_linear(np.array([0, 3, 255], np.uint8), np.float32(0.5), np.uint8(1)).tolist()
    [-0.5, 1.0, 127.0]
    """
    op = "DequantizeLinear"
    x = np.asarray(x)
    _int_range(op, "input x", x.dtype)
    scale = np.asarray(x_scale)
    out = scale.dtype
    if out not in (np.float32, np.float16):
        raise OpError(f"{op}: x_scale has dtype {out}, expected float32 or float16")
    if int(output_dtype) not in (0, {np.dtype(np.float32): 1, np.dtype(np.float16): 10}[out]):
        raise OpError(f"{op}: attribute output_dtype={output_dtype} differs from x_scale's type "
                      f"{out.name}; ONNX requires them equal")
    s = _broadcast_param(op, "x_scale", scale.astype(np.float32), x.shape, axis, block_size)
    zp = None
    if x_zero_point is not None:
        zp = np.asarray(x_zero_point)
        if zp.dtype != x.dtype:
            raise OpError(f"{op}: x_zero_point has dtype {zp.dtype}, expected {x.dtype} "
                          f"(the dtype of x)")
        if x.dtype == np.int32 and np.any(zp != 0):
            raise OpError(f"{op}: int32 input with a nonzero x_zero_point; ONNX Runtime "
                          f"requires no zero point or all zeros for int32")
        zp = _broadcast_param(op, "x_zero_point", zp, x.shape, axis, block_size)
    if x.dtype.name in _SHORT:              # x - zp is a float32 (|x - zp| < 2^17): exact
        d = x.astype(np.float32) if zp is None else \
            np.subtract(x, zp.astype(np.float32), dtype=np.float32)
    else:
        q = x.astype(np.int64) if zp is None else x.astype(np.int64) - zp.astype(np.int64)
        d = q.astype(np.int32).astype(np.float32)
    d = np.asarray(d)                                    # 0-d: a NumPy scalar before
    y = np.multiply(d, s, out=d) if np.broadcast_shapes(d.shape, s.shape) == d.shape else d * s
    with np.errstate(over="ignore"):          # float16 overflows to ±inf, as in ONNX Runtime
        return y.astype(out).reshape(x.shape)


@register("DynamicQuantizeLinear")
def dynamic_quantize_linear(x):
    """uint8 quantization with a range computed from ``x`` (ONNX Runtime's formulas, float32):

    ``lo = min(min(x), 0)``, ``hi = max(max(x), 0)``;
    ``s = 1 if hi == lo else (hi - lo) / 255``;
    ``zp = rne(clamp(0 - lo / s, 0, 255))``;
    ``y = QuantizeLinear(x, s, zp)``. Returns ``(y, s, zp)`` with ``s``, ``zp`` scalars.

    NaN inputs are left out of the range. ONNX Runtime's min/max (``minps``/``maxps`` over SIMD
    lanes and thread blocks, then a scalar tail) lets a NaN through or not depending on its
    position, so with NaN in ``x`` the two can differ (finite inputs agree bit for bit).

    >>> y, s, zp = dynamic_quantize_linear(np.array([-1.0, 0.0, 2.0], np.float32))
    >>> y.tolist(), float(s), int(zp)
    ([0, 85, 255], 0.0117647061124444, 85)
    """
    op = "DynamicQuantizeLinear"
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise OpError(f"{op}: input x has dtype {x.dtype}, expected float32")
    values = x[~np.isnan(x)]            # MLAS's min/max (minps/maxps) skip NaN
    lo = np.float32(min(float(values.min()), 0.0)) if values.size else np.float32(0.0)
    hi = np.float32(max(float(values.max()), 0.0)) if values.size else np.float32(0.0)
    scale = np.float32(1.0) if hi == lo else np.float32((hi - lo) / np.float32(255.0))
    initial = np.float32(np.float32(0.0) - np.float32(lo / scale))
    zp = np.uint8(np.rint(min(max(initial, np.float32(0.0)), np.float32(255.0))))
    y = quantize_linear(x, scale, zp)
    return y, np.array(scale, np.float32), np.array(zp, np.uint8)


# ---------------------------------------------------------------------------------------------
# integer products
# ---------------------------------------------------------------------------------------------
def _check_matmul_shapes(op: str, a: np.ndarray, b: np.ndarray) -> None:
    if a.ndim < 1 or b.ndim < 1:
        raise OpError(f"{op}: operands must have rank >= 1, got A {list(a.shape)} and "
                      f"B {list(b.shape)}")
    inner_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if a.shape[-1] != inner_b:
        raise OpError(f"{op}: inner dimensions differ: A {list(a.shape)} has {a.shape[-1]} "
                      f"columns, B {list(b.shape)} has {inner_b} rows")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise OpError(f"{op}: batch dimensions of A {list(a.shape)} and B {list(b.shape)} do "
                      f"not broadcast") from None


def _b_column_param(op: str, what: str, p, b: np.ndarray) -> np.ndarray:
    """A per-tensor or per-column (last axis of B) parameter, as ONNX Runtime accepts it: shape
    ``[]`` or ``[1]``; ``[N]`` for a 2-D B; ``B.shape[:-2] + [1, N]`` for a batched B."""
    p = np.asarray(p)
    if p.size == 1 and p.ndim <= 1:
        return p.reshape(())
    n = b.shape[-1]
    expected = (n,) if b.ndim <= 2 else b.shape[:-2] + (1, n)
    if p.shape != expected:
        raise OpError(f"{op}: {what} has shape {list(p.shape)}; expected a scalar or "
                      f"{list(expected)} (per column of B {list(b.shape)})")
    return p


@register("MatMulInteger")
def matmul_integer(a, b, a_zero_point=None, b_zero_point=None):
    """``Y = (A - a_zp) @ (B - b_zp)`` exactly, int32 (NumPy matmul semantics). ``a_zp`` is
    per tensor; ``b_zp`` per tensor or per column of B.

    >>> matmul_integer(np.array([[3, 4]], np.uint8), np.array([[1], [2]], np.uint8),
    ...                np.uint8(1)).tolist()
    [[8]]
    """
    op = "MatMulInteger"
    a, b = np.asarray(a), np.asarray(b)
    _check_matmul_shapes(op, a, b)
    a_zp = None if a_zero_point is None else _scalar(op, "a_zero_point", a_zero_point)
    b_zp = None if b_zero_point is None else _b_column_param(op, "b_zero_point", b_zero_point, b)
    (a_c, bound_a), (b_c, bound_b) = (_centered(op, "A", a, a_zp, _EIGHT_BIT),
                                      _centered(op, "B", b, b_zp, _EIGHT_BIT))
    return _exact_matmul(a_c, b_c, bound_a, bound_b)


@register("ConvInteger")
def conv_integer(x, w, x_zero_point=None, w_zero_point=None, *, auto_pad="NOTSET",
                 dilations=None, group=1, kernel_shape=None, pads=None, strides=None):
    """``Y = conv(X - x_zp, W - w_zp[m])`` exactly, int32; padding adds ``x_zp`` (a real zero).
    ``x_zp`` is per tensor; ``w_zp`` per tensor or per output channel ``m`` (ONNX allows it;
    ONNX Runtime 1.32 rejects a per-channel ``w_zp`` here, though its QLinearConv accepts one).

    >>> conv_integer(np.full((1, 1, 2, 2), 3, np.uint8), np.ones((1, 1, 2, 2), np.uint8),
    ...              np.uint8(1)).tolist()
    [[[[8]]]]
    """
    op = "ConvInteger"
    x, w = np.asarray(x), np.asarray(w)
    _check_conv_operands(x, w, None, group, kernel_shape, transposed=False)
    x_zp = None if x_zero_point is None else _scalar(op, "x_zero_point", x_zero_point)
    if w_zero_point is not None:
        w_zp = _per_channel(op, "w_zero_point", np.asarray(w_zero_point), w.shape[0])
        w_zp = w_zp.reshape(w_zp.shape + (1,) * (w.ndim - 1))
    else:
        w_zp = None
    geometry = _conv_geometry(x, w, auto_pad, dilations, strides, pads)
    bound_x = _offset_bound(op, "X", x, x_zp, _EIGHT_BIT)
    w_c, bound_w = _centered(op, "W", w, w_zp, _EIGHT_BIT)
    return _exact_conv(x, 0 if x_zp is None else int(x_zp), w_c, bound_x=bound_x,
                       bound_w=bound_w, group=int(group), **geometry)


def _check_pairing(op: str, x: np.ndarray, w: np.ndarray) -> None:
    """ONNX Runtime has uint8 × {uint8, int8} and int8 × int8 kernels, nothing else."""
    _int_range(op, "input", x.dtype, _EIGHT_BIT)
    _int_range(op, "weight", w.dtype, _EIGHT_BIT)
    if x.dtype == np.int8 and w.dtype != np.int8:
        raise OpError(f"{op}: int8 input with {w.dtype} weight; ONNX Runtime implements "
                      f"uint8 x uint8, uint8 x int8 and int8 x int8 only")


def _output_zero_point(op: str, y_zero_point, x: np.ndarray) -> np.ndarray:
    zp = _scalar(op, "y_zero_point", y_zero_point)
    if zp.dtype != x.dtype:
        raise OpError(f"{op}: y_zero_point has dtype {zp.dtype}, expected {x.dtype} (ONNX "
                      f"Runtime's kernels output the input's type)")
    return zp


@register("QLinearMatMul")
def qlinear_matmul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point):
    """``acc = (A - a_zp) @ (B - b_zp)`` (exact, int32), ``M = float32(s_a · s_b) / s_y``
    (per column of B when ``s_b`` is), ``Y = clamp(rne(float32(acc) ⊗ M), qmin - y_zp,
    qmax - y_zp) + y_zp``.

    >>> qlinear_matmul(np.array([[10, 20]], np.uint8), np.float32(0.1), np.uint8(0),
    ...                np.array([[1], [1]], np.uint8), np.float32(1.0), np.uint8(0),
    ...                np.float32(0.5), np.uint8(0)).tolist()
    [[6]]
    """
    op = "QLinearMatMul"
    a, b = np.asarray(a), np.asarray(b)
    _check_matmul_shapes(op, a, b)
    _check_pairing(op, a, b)
    s_a = _scalar(op, "a_scale", _float32(op, "a_scale", a_scale))
    s_y = _scalar(op, "y_scale", _float32(op, "y_scale", y_scale))
    s_b = _b_column_param(op, "b_scale", _float32(op, "b_scale", b_scale), b)
    a_c, bound_a = _centered(op, "a", a, _scalar(op, "a_zero_point", a_zero_point), _EIGHT_BIT)
    b_c, bound_b = _centered(op, "b", b, _b_column_param(op, "b_zero_point", b_zero_point, b),
                             _EIGHT_BIT)
    acc = _exact_matmul(a_c, b_c, bound_a, bound_b)
    return _requantize(acc, _multiplier(op, s_a, s_b, s_y),
                       _output_zero_point(op, y_zero_point, a))


@register("QLinearConv")
def qlinear_conv(x, x_scale, x_zero_point, w, w_scale, w_zero_point, y_scale, y_zero_point,
                 B=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                 pads=None, strides=None):
    """``acc = conv(X - x_zp, W - w_zp) + B`` (exact, int32, padding = ``x_zp``),
    ``M[m] = float32(s_x · s_w[m]) / s_y`` per output channel,
    ``Y = clamp(rne(float32(acc) ⊗ M), qmin - y_zp, qmax - y_zp) + y_zp``.

    >>> qlinear_conv(np.full((1, 1, 2, 2), 12, np.uint8), np.float32(0.5), np.uint8(2),
    ...              np.ones((1, 1, 2, 2), np.int8), np.float32(1.0), np.int8(0),
    ...              np.float32(2.0), np.uint8(0)).tolist()
    [[[[10]]]]
    """
    op = "QLinearConv"
    x, w = np.asarray(x), np.asarray(w)
    b = None if B is None else np.asarray(B)
    if b is not None and b.dtype != np.int32:
        raise OpError(f"{op}: bias B has dtype {b.dtype}, expected int32")
    _check_conv_operands(x, w, b, group, kernel_shape, transposed=False)
    _check_pairing(op, x, w)
    m = w.shape[0]
    s_x = _scalar(op, "x_scale", _float32(op, "x_scale", x_scale))
    s_y = _scalar(op, "y_scale", _float32(op, "y_scale", y_scale))
    s_w = _per_channel(op, "w_scale", _float32(op, "w_scale", w_scale), m)
    w_zp = _per_channel(op, "w_zero_point", np.asarray(w_zero_point), m)
    geometry = _conv_geometry(x, w, auto_pad, dilations, strides, pads)
    nsp = x.ndim - 2
    x_zp = _scalar(op, "x_zero_point", x_zero_point)
    bound_x = _offset_bound(op, "x", x, x_zp, _EIGHT_BIT)
    w_c, bound_w = _centered(op, "w", w, w_zp.reshape(w_zp.shape + (1,) * (nsp + 1)), _EIGHT_BIT)
    bias = np.zeros(m, np.int32) if b is None else b.reshape(m)
    multiplier = np.ascontiguousarray(np.broadcast_to(_multiplier(op, s_x, s_w, s_y), (m,)))
    zp = _output_zero_point(op, y_zero_point, x)
    return _exact_conv(x, int(x_zp), w_c, bound_x=bound_x, bound_w=bound_w, group=int(group),
                       store=_requantize_store(bias, multiplier, zp), dtype=zp.dtype, **geometry)


def _per_channel(op: str, what: str, p: np.ndarray, m: int) -> np.ndarray:
    """A per-tensor or per-output-channel parameter: shape ``[]``, ``[1]`` or ``[M]``."""
    if p.size == 1 and p.ndim <= 1:
        return p.reshape(())
    if p.shape != (m,):
        raise OpError(f"{op}: {what} has shape {list(p.shape)}; expected a scalar or [{m}] "
                      f"(one per output channel)")
    return p
