"""ONNX Runtime's com.microsoft quantized contrib ops, bit-exact with its CPU kernels (1.32, x86).

These are the ops ONNX Runtime's QDQ fusion puts in an optimized graph: QLinearAdd, QLinearMul,
QLinearGlobalAveragePool, QLinearConcat, QLinearSigmoid, QLinearLeakyRelu, QLinearSoftmax,
QGemm, QLinearAveragePool, MatMulIntegerToFloat, DynamicQuantizeMatMul and MatMulNBits. Every
function follows the calling convention of :mod:`qsim.ops.registry`; the registry keys ops by
type only, and no default-domain op has these names. docs/integer_kernels.md §9 has the same
formulas for readers who implement them.

Notation: ``s_*`` float32 scales, ``z_*`` zero points, ``⊗ ⊘ ⊕`` float32 operations (one
rounding each), ``fma(a, b, c)`` one rounding of ``a·b + c``, ``rne`` round half to even,
``sat`` saturation to the output type. ``float(·)`` converts an int32 to float32 (round to
nearest even).

* **QLinearAdd** (int8/uint8: MLAS's AVX2 kernel, which AVX-512 CPUs run too)
  ``r_a = s_a ⊘ s_y``, ``r_b = s_b ⊘ s_y``, ``f = float(z_y) - fma(r_a, z_a, r_b ⊗ z_b)``;
  per element ``y = sat(rne(fma(a, r_a, fma(b, r_b, f))))`` where ``a, b`` are the raw integers.
  Which operand is inner depends on ONNX Runtime's broadcasting (:func:`_add_roles`). (MLAS
  also has a 16-bit QLinearAdd, but ONNX Runtime 1.32's schema admits only int8/uint8.)
* **QLinearMul** ``M = (s_a ⊗ s_b) ⊘ s_y``, ``y = sat(rne(float((a - z_a)(b - z_b)) ⊗ M ⊕ z_y))``.
* **Lookup-table ops** (QLinearSigmoid, QLinearLeakyRelu, QLinearConcat): a 256-entry table over
  every input byte ``q``: ``x = s_x ⊗ float(q - z_x)``, ``t = f(x)`` in float32 (MLAS's logistic;
  ``x >= 0 ? x : alpha ⊗ x``; the identity), then ``QuantizeLinear(t, s_y, z_y)``.
* **QLinearGlobalAveragePool** ``M = s_x ⊘ (s_y ⊗ float(n))``,
  ``y = sat(rne(clamp(float(Σ x - z_x·n) ⊗ M)) + z_y)`` (n = pixels per channel).
* **QLinearSoftmax** float lookup table of ``exp``, float32 row sums, then
  ``rne(t · ⌊1 ⊘ s_y⌋ / Σ) + z_y`` in double (:func:`qlinear_softmax`).
* **QGemm** ``acc = C + (A - z_a)(B - z_b)`` exactly in int32,
  ``M = ((alpha ⊗ s_a) ⊗ s_b) [⊘ s_y]``;
  quantized output as MLAS's requantization (``sat(rne(clamp(float(acc) ⊗ M)) + z_y)``), float
  output ``float(acc) ⊗ M``.
* **QLinearAveragePool** dequantize, float32 window sums in row-major order, ``⊘ count``, then
  ``sat(rne(y ⊘ s_y ⊕ z_y))``; a window covering the whole image without padding runs
  QLinearGlobalAveragePool.
* **MatMulIntegerToFloat / DynamicQuantizeMatMul** ``y = float(acc) ⊗ (s_a ⊗ s_b) [⊕ bias]``.
* **MatMulNBits** (float compute, accuracy_level 0-3) dequantized weights
  ``w = s ⊗ float(q - z)`` through MLAS's float kernels (:func:`matmul_nbits`); int8 compute
  (accuracy_level 4, 8-bit weights): A quantized per block of 32, ``q_a = rne(a ⊗ (127 ⊘
  amax))``, exact int32 group dot products chained as ``fma(float(d), s_a ⊗ s_b, acc)`` in
  MLAS's lanes, ``⊕ bias``, then ``⊕`` the zero-point term ``Σ (s_a ⊗ Σq_a)·(-(s_b ⊗ z_b))``
  (:mod:`qsim.kernels.nbits_int8`).

Integer products are exact here; ONNX Runtime's uint8 × int8 kernel on AVX2 CPUs without VNNI
saturates pairs of products (see :mod:`qsim.ops.quantized`).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import OpError
from ..kernels import gemm as gemm_exact
from ..kernels import mlas_math, nbits_int8
from ..kernels.family import nbits_int8 as nbits_int8_family
from ..kernels.gemm import fma_np
from .nn import _pool_geometry
from .quantized import _EIGHT_BIT, _RANGES, _exact_matmul, _float32, _int_range, _requantize, \
    _scalar, dynamic_quantize_linear, quantize_linear
from .registry import register

F32 = np.float32
_TWO31 = F32(2.0 ** 31)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _scale(op: str, what: str, v) -> np.float32:
    """A per-tensor float32 scale as a NumPy float32 scalar."""
    return F32(_scalar(op, what, _float32(op, what, v)))


def _zero_point(op: str, what: str, zp, dtype: np.dtype, *, required: bool = False) -> int:
    """A per-tensor zero point of type ``dtype`` (absent: 0) as a Python int."""
    if zp is None:
        if required:
            raise OpError(f"{op}: input {what} is required")
        return 0
    zp = np.asarray(zp)
    if zp.dtype != dtype:
        raise OpError(f"{op}: {what} has dtype {zp.dtype}, expected {np.dtype(dtype).name} "
                      f"(the type of the quantized tensor)")
    return int(_scalar(op, what, zp))


def _cvtps(v: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``cvtps2dq`` then saturating packs to ``[lo, hi]``: round half to even; NaN and values
    outside int32 become INT32_MIN (so ``lo``)."""
    v = np.asarray(v, F32)
    bad = ~((v >= -_TWO31) & (v < _TWO31))
    r = np.where(bad, np.float64(-2.0 ** 31), np.rint(v.astype(np.float64)))
    return np.clip(r, lo, hi).astype(np.int64)


def _table_lookup(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table[byte(x)]``: an 8-bit tensor indexes a 256-entry table by its bit pattern."""
    return table[x.view(np.uint8)].reshape(x.shape)


def _all_bytes(dtype: np.dtype) -> np.ndarray:
    """The 256 values of an 8-bit type in byte order (int8: 0..127, -128..-1)."""
    return np.arange(256, dtype=np.uint8).view(dtype)


def _quantized_table(dtype, s_x, z_x: int, s_y, z_y: int, fn) -> np.ndarray:
    """ONNX Runtime's ``QlinearBuildLookupTable``: for every byte ``q`` of ``dtype``,
    ``QuantizeLinear(fn(s_x ⊗ float(q - z_x)), s_y, z_y)``."""
    q = _all_bytes(np.dtype(dtype)).astype(np.int64)
    x = (s_x * (q - z_x).astype(F32)).astype(F32)
    y = np.asarray(fn(x), F32)
    return quantize_linear(y, s_y, np.array(z_y, dtype))


def _check_8bit_params(op: str, x, x_zero_point, y_zero_point, allowed=_EIGHT_BIT):
    x = np.asarray(x)
    _int_range(op, "input X", x.dtype, allowed)
    z_x = _zero_point(op, "X_zero_point", x_zero_point, x.dtype)
    z_y = _zero_point(op, "Y_zero_point", y_zero_point, x.dtype)
    return x, z_x, z_y


# ---------------------------------------------------------------------------------------------
# QLinearAdd / QLinearMul
# ---------------------------------------------------------------------------------------------
def _add_roles(a_shape, b_shape) -> str:
    """Which operand ONNX Runtime's broadcast loop treats as a per-span scalar: it merges the
    innermost dimensions of the output that are > 1; if A is broadcast (size 1) along the
    innermost such dimension (or the output has none) A is the scalar (``"a"``), else if B is,
    B (``"b"``), else both are spans (``"none"``)."""
    rank = max(len(a_shape), len(b_shape))
    a = (1,) * (rank - len(a_shape)) + tuple(a_shape)
    b = (1,) * (rank - len(b_shape)) + tuple(b_shape)
    for da, db in zip(reversed(a), reversed(b)):
        if max(da, db) > 1:
            return "a" if da == 1 else ("b" if db == 1 else "none")
    return "a"


def _binary_operands(op, a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale,
                     c_zero_point, allowed):
    a, b = np.asarray(a), np.asarray(b)
    _int_range(op, "input A", a.dtype, allowed)
    if b.dtype != a.dtype:
        raise OpError(f"{op}: input B has dtype {b.dtype}, expected {a.dtype} (the type of A)")
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise OpError(f"{op}: shapes of A {list(a.shape)} and B {list(b.shape)} do not "
                      f"broadcast") from None
    scales = [_scale(op, n, s) for n, s in (("A_scale", a_scale), ("B_scale", b_scale),
                                             ("C_scale", c_scale))]
    zps = [_zero_point(op, n, z, a.dtype) for n, z in (("A_zero_point", a_zero_point),
                                                       ("B_zero_point", b_zero_point),
                                                       ("C_zero_point", c_zero_point))]
    return a, b, shape, scales, zps


@register("QLinearAdd")
def qlinear_add(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale, c_zero_point=None):
    """``C = quantize(dequantize(A) + dequantize(B))`` with numpy broadcasting, as ONNX Runtime's
    MLAS kernels round it (module docstring).

    >>> qlinear_add(np.array([10, 20], np.uint8), np.float32(0.5), np.uint8(0),
    ...             np.array([4], np.uint8), np.float32(0.25), np.uint8(0),
    ...             np.float32(1.0), np.uint8(3)).tolist()
    [9, 14]
    """
    op = "QLinearAdd"
    a, b, shape, (s_a, s_b, s_c), (z_a, z_b, z_c) = _binary_operands(
        op, a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale, c_zero_point,
        _EIGHT_BIT)
    role = _add_roles(a.shape, b.shape)
    if math.prod(shape) <= _ADD_TABLE:
        return _qlinear_add_values(a, b, shape, s_a, s_b, s_c, z_a, z_b, z_c, role)
    values = _all_bytes(a.dtype)
    table = _qlinear_add_values(values[:, None], values[None, :], (256, 256), s_a, s_b, s_c,
                                z_a, z_b, z_c, role).reshape(-1)
    index = np.left_shift(a.view(np.uint8), 8, dtype=np.uint16) + b.view(np.uint8)
    return table[index]


#: QLinearAdd outputs above this many elements read a table of all 256 x 256 operand pairs
_ADD_TABLE = 256 * 256


def _qlinear_add_values(a, b, shape, s_a, s_b, s_c, z_a: int, z_b: int, z_c: int, role: str):
    """QLinearAdd's per-element formula (module docstring), broadcast to ``shape``; ``role``
    from :func:`_add_roles`. Elementwise, so a table of it over every byte pair is exact."""
    lo, hi = _RANGES[a.dtype.name]
    with np.errstate(all="ignore"):
        r_a, r_b = F32(s_a / s_c), F32(s_b / s_c)
        fa, fb = np.broadcast_to(a.astype(F32), shape), np.broadcast_to(b.astype(F32), shape)
        if role == "a":      # the kernel runs with B as its span
            fixed = F32(z_c) - fma_np(r_b, F32(z_b), r_a * F32(z_a))
            v = fma_np(fb, r_b, fma_np(fa, r_a, fixed))
        else:
            fixed = F32(z_c) - fma_np(r_a, F32(z_a), r_b * F32(z_b))
            v = fma_np(fa, r_a, fma_np(fb, r_b, fixed))
    return _cvtps(v, lo, hi).astype(a.dtype)


@register("QLinearMul")
def qlinear_mul(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale, c_zero_point=None):
    """``C = sat(rne(float((A - z_a)(B - z_b)) ⊗ M ⊕ z_c))``, ``M = (s_a ⊗ s_b) ⊘ s_c``, with
    numpy broadcasting (MLAS's SSE2 kernel: multiply, then add the zero point, then round).

    >>> qlinear_mul(np.array([10, 20], np.uint8), np.float32(0.5), np.uint8(0),
    ...             np.array([4], np.uint8), np.float32(0.25), np.uint8(0),
    ...             np.float32(1.0), np.uint8(3)).tolist()
    [8, 13]
    """
    op = "QLinearMul"
    a, b, shape, (s_a, s_b, s_c), (z_a, z_b, z_c) = _binary_operands(
        op, a, a_scale, a_zero_point, b, b_scale, b_zero_point, c_scale, c_zero_point,
        _EIGHT_BIT)
    lo, hi = _RANGES[a.dtype.name]
    product = (a.astype(np.int64) - z_a) * (b.astype(np.int64) - z_b)
    with np.errstate(all="ignore"):
        m = F32(F32(s_a * s_b) / s_c)
        v = (product.astype(F32) * m + F32(z_c)).astype(F32)
    return np.broadcast_to(_cvtps(v, lo, hi), shape).astype(a.dtype)


# ---------------------------------------------------------------------------------------------
# lookup-table ops
# ---------------------------------------------------------------------------------------------
@register("QLinearSigmoid")
def qlinear_sigmoid(x, x_scale, x_zero_point, y_scale, y_zero_point=None):
    """``Y = table[X]``, ``table[q] = QuantizeLinear(logistic(s_x ⊗ float(q - z_x)), s_y, z_y)``
    with MLAS's logistic (the FMA3 kernel, which AVX-512 CPUs run too).

    >>> qlinear_sigmoid(np.array([0, 255], np.uint8), np.float32(0.1), np.uint8(128),
    ...                 np.float32(1 / 256), np.uint8(0)).tolist()
    [0, 255]
    """
    op = "QLinearSigmoid"
    x, z_x, z_y = _check_8bit_params(op, x, x_zero_point, y_zero_point)
    table = _quantized_table(x.dtype, _scale(op, "X_scale", x_scale), z_x,
                             _scale(op, "Y_scale", y_scale), z_y, mlas_math.logistic)
    return _table_lookup(x, table)


@register("QLinearLeakyRelu")
def qlinear_leaky_relu(x, x_scale, x_zero_point, y_scale, y_zero_point=None, *, alpha=0.01):
    """``Y = table[X]``, ``table[q] = QuantizeLinear(v >= 0 ? v : alpha ⊗ v, s_y, z_y)`` with
    ``v = s_x ⊗ float(q - z_x)``.

    >>> qlinear_leaky_relu(np.array([0, 20], np.int8), np.float32(1.0), np.int8(10),
    ...                    np.float32(1.0), np.int8(0), alpha=0.5).tolist()
    [-5, 10]
    """
    op = "QLinearLeakyRelu"
    x, z_x, z_y = _check_8bit_params(op, x, x_zero_point, y_zero_point)
    slope = F32(alpha)

    def leaky(v):
        return np.where(v >= F32(0), v, slope * v).astype(F32)

    table = _quantized_table(x.dtype, _scale(op, "X_scale", x_scale), z_x,
                             _scale(op, "Y_scale", y_scale), z_y, leaky)
    return _table_lookup(x, table)


@register("QLinearConcat")
def qlinear_concat(y_scale, y_zero_point, *tensors, axis=None):
    """Concatenate ``(X_i, s_i, z_i)`` triples along ``axis``, each requantized to ``(s_y, z_y)``
    through a lookup table ``QuantizeLinear(s_i ⊗ float(q - z_i), s_y, z_y)``; an input whose
    scale and zero point equal the output's is copied.

    >>> qlinear_concat(np.float32(1.0), np.uint8(0), np.array([[4]], np.uint8), np.float32(0.5),
    ...                np.uint8(0), np.array([[7]], np.uint8), np.float32(1.0), np.uint8(0),
    ...                axis=1).tolist()
    [[2, 7]]
    """
    op = "QLinearConcat"
    if axis is None:
        raise OpError(f"{op}: attribute axis is required")
    if len(tensors) < 3 or len(tensors) % 3:
        raise OpError(f"{op}: expected Y_scale, Y_zero_point and then (X, X_scale, "
                      f"X_zero_point) triples; got {len(tensors) + 2} inputs")
    z_y_arr = np.asarray(y_zero_point)
    dtype = z_y_arr.dtype
    _int_range(op, "Y_zero_point", dtype, _EIGHT_BIT)
    s_y = _scale(op, "Y_scale", y_scale)
    z_y = int(_scalar(op, "Y_zero_point", z_y_arr))
    parts = []
    for i in range(0, len(tensors), 3):
        x = np.asarray(tensors[i])
        if x.dtype != dtype:
            raise OpError(f"{op}: input {i // 3} has dtype {x.dtype}, expected {dtype.name} "
                          f"(the type of Y_zero_point)")
        s_x = _scale(op, f"X_scale of input {i // 3}", tensors[i + 1])
        z_x = _zero_point(op, f"X_zero_point of input {i // 3}", tensors[i + 2], dtype,
                          required=True)
        if s_x == s_y and z_x == z_y:
            parts.append(x)
        else:
            parts.append(_table_lookup(x, _quantized_table(dtype, s_x, z_x, s_y, z_y,
                                                           lambda v: v)))
    rank = parts[0].ndim
    if not -rank <= int(axis) < rank:
        raise OpError(f"{op}: attribute axis={axis} is out of range for inputs of rank {rank}")
    try:
        return np.concatenate(parts, axis=int(axis))
    except ValueError:
        raise OpError(f"{op}: inputs of shapes {[list(p.shape) for p in parts]} cannot be "
                      f"concatenated along axis {axis}") from None


# ---------------------------------------------------------------------------------------------
# QLinearSoftmax
# ---------------------------------------------------------------------------------------------
def _softmax_exp_table(s_x: np.float32, reduce_len: int, signed: bool) -> np.ndarray:
    """ONNX Runtime's float table: ``shift = max(0, logf(FLT_MAX ⊘ D) - 5) / s_x`` (the
    logarithm in float32, the rest in double), ``t[i] = float32(exp((i - 255 + shift) · s_x))``
    for ``i = 0..255`` (double ``exp``), stored
    at byte ``i`` (uint8) or ``i - 128`` (int8), so ``t[byte(x + 255 - xmax)]`` (uint8) or
    ``t[byte(x + 127 - xmax)]`` (int8) is ``exp((x - xmax + shift) · s_x)``."""
    ratio = F32(np.finfo(np.float32).max / F32(reduce_len))          # float32 / size_t
    shift = max(0.0, float(F32(math.log(float(ratio)))) - 5.0) / float(s_x)   # logf
    table = np.empty(256, F32)
    for i in range(256):
        index = (i - 128) % 256 if signed else i
        table[index] = F32(math.exp((i - 255 + shift) * float(s_x)))
    return table


def _softmax_rows(x2: np.ndarray, table: np.ndarray, y_mult: np.float32, z_y: int) -> np.ndarray:
    """Rows of ``x2`` through ONNX Runtime's QlinearSoftmaxCPU (see :func:`qlinear_softmax`)."""
    signed = x2.dtype == np.int8
    xi = x2.astype(np.int64)
    top = xi.max(axis=1, keepdims=True)
    index = (xi + (127 if signed else 255) - top) % 256
    t = table[index]
    total = np.zeros(t.shape[0], F32)
    for j in range(t.shape[1]):                  # float32 sums, left to right
        total = (total + t[:, j]).astype(F32)
    v = t.astype(np.float64) * float(y_mult) / total[:, None].astype(np.float64)
    q = np.rint(v) + z_y
    lo, hi = _RANGES[x2.dtype.name]
    return np.clip(q, lo, hi).astype(x2.dtype)


@register("QLinearSoftmax", attributes=("opset",))
def qlinear_softmax(x, x_scale, x_zero_point, y_scale, y_zero_point=None, *, axis=None,
                    opset=None):
    """Softmax of quantized ``X`` (uint8/int8), as ONNX Runtime computes it.

    Rows: opset < 13 flattens ``X`` to ``[prod(shape[:axis]), prod(shape[axis:])]``; opset >= 13
    takes rows along ``axis`` alone. Without the attribute ``axis`` is -1 under both (the
    com.microsoft schema's default, which ONNX Runtime reads before its own opset-dependent
    fallback could apply). ``X``'s zero point cancels and is not read.

    Per row (exp table ``t`` from :func:`_softmax_exp_table`, ``D`` the product of the
    dimensions from ``axis`` on): ``e_j = t[x_j - max(x)]``, ``Σ = e_0 ⊕ e_1 ⊕ …`` (float32, left
    to right), ``q_j = clamp(rne(e_j · ⌊1 ⊘ s_y⌋ / Σ) + z_y, qmin, qmax)`` with the product and
    quotient in double (so ``e_j · ⌊1/s_y⌋`` cannot overflow float32).

    >>> qlinear_softmax(np.array([[0, 0]], np.uint8), np.float32(0.1), np.uint8(0),
    ...                 np.float32(1 / 256), np.uint8(0), opset=13).tolist()
    [[128, 128]]
    """
    op = "QLinearSoftmax"
    if opset is None:
        raise OpError(f"{op}: attribute opset (the Softmax opset the node follows) is required")
    x = np.asarray(x)
    _int_range(op, "input X", x.dtype, _EIGHT_BIT)
    if x.ndim == 0:
        raise OpError(f"{op}: input X must have rank >= 1, got a scalar")
    s_x = _scale(op, "X_scale", x_scale)
    s_y = _scale(op, "Y_scale", y_scale)
    z_y = _zero_point(op, "y_zero_point", y_zero_point, x.dtype)
    old = int(opset) < 13
    ax = -1 if axis is None else int(axis)       # the schema's default, for every opset
    if not -x.ndim <= ax < x.ndim:
        raise OpError(f"{op}: attribute axis={ax} is out of range for an input of rank {x.ndim}")
    ax %= x.ndim
    if x.size == 0:
        return x.copy()
    with np.errstate(all="ignore"):
        y_mult = F32(np.floor(F32(F32(1.0) / s_y)))
    if old:
        x2 = x.reshape(math.prod(x.shape[:ax]), -1)
        table = _softmax_exp_table(s_x, x2.shape[1], x.dtype == np.int8)
        return _softmax_rows(x2, table, y_mult, z_y).reshape(x.shape)
    moved = np.moveaxis(x, ax, -1)
    table = _softmax_exp_table(s_x, math.prod(x.shape[ax:]), x.dtype == np.int8)
    y = _softmax_rows(moved.reshape(-1, x.shape[ax]), table, y_mult, z_y)
    return np.moveaxis(y.reshape(moved.shape), -1, ax).copy()


# ---------------------------------------------------------------------------------------------
# pools
# ---------------------------------------------------------------------------------------------
def _global_average(op: str, x: np.ndarray, s_x, z_x: int, s_y, z_y: int, channels_last: bool):
    """MLAS's QLinearGlobalAveragePool over every spatial position (see
    :func:`qlinear_global_average_pool`); returns the pooled values with spatial size 1."""
    spatial = tuple(range(1, x.ndim - 1)) if channels_last else tuple(range(2, x.ndim))
    n = math.prod(x.shape[i] for i in spatial)
    m = F32(s_x / F32(s_y * F32(n)))
    if n >= 1 << 24 or not (F32(2.0 ** -32) <= m < F32(256.0)):
        raise OpError(f"{op}: s_x / (s_y · {n}) = {float(m)!r} with {n} pixels per channel is "
                      f"outside ONNX Runtime's range (multiplier in [2^-32, 256), fewer than "
                      f"2^24 pixels)")
    acc = x.astype(np.int64).sum(axis=spatial, keepdims=True) - z_x * n
    return _requantize(acc.astype(np.int32), m, np.array(z_y, x.dtype))


@register("QLinearGlobalAveragePool")
def qlinear_global_average_pool(x, x_scale, x_zero_point, y_scale, y_zero_point, *,
                                channels_last=0):
    """``Y[n, c] = sat(rne(clamp(float(Σ_p X[n, c, p] - z_x·P) ⊗ M)) + z_y)`` over the ``P``
    spatial positions, ``M = s_x ⊘ (s_y ⊗ float(P))`` (channels at axis 1, or last when
    ``channels_last=1``); the spatial axes keep size 1.

    >>> qlinear_global_average_pool(np.array([[[1, 2, 4]]], np.uint8), np.float32(1.0),
    ...                             np.uint8(0), np.float32(1.0), np.uint8(0)).tolist()
    [[[2]]]
    """
    op = "QLinearGlobalAveragePool"
    x, z_x, z_y = _check_8bit_params(op, x, x_zero_point, y_zero_point)
    if x_zero_point is None or y_zero_point is None:
        raise OpError(f"{op}: x_zero_point and y_zero_point are required by ONNX Runtime")
    if int(channels_last) not in (0, 1):
        raise OpError(f"{op}: attribute channels_last={channels_last} must be 0 or 1")
    if x.ndim < 3:
        raise OpError(f"{op}: input X has shape {list(x.shape)}; expected rank >= 3")
    return _global_average(op, x, _scale(op, "x_scale", x_scale), z_x,
                           _scale(op, "y_scale", y_scale), z_y, bool(channels_last))


def _ort_same_pads(spatial, kernel, strides, auto_pad: str):
    """ONNX Runtime's SAME_* pool padding, not clamped at 0: ``need = (⌈size/s⌉ - 1)·s + k -
    size``, head ``need / 2`` (SAME_UPPER) or ``(need + 1) / 2`` (SAME_LOWER) with C's division
    truncating toward 0; a negative head moves every window forward."""
    begins, ends = [], []
    for size, k, s in zip(spatial, kernel, strides):
        need = (-(-size // s) - 1) * s + k - size
        head = int((need + (auto_pad == "SAME_LOWER")) / 2)
        begins.append(head)
        ends.append(need - head)
    return tuple(begins), tuple(ends)


@register("QLinearAveragePool")
def qlinear_average_pool(x, x_scale, x_zero_point, y_scale, y_zero_point=None, *,
                         auto_pad="NOTSET", ceil_mode=0, channels_last=0, count_include_pad=0,
                         kernel_shape=None, pads=None, strides=None):
    """Average pool of quantized ``X`` (1-3 spatial axes), ONNX Runtime's float loop:
    ``v = s_x ⊗ float(x - z_x)``; per window (clipped to the input: ``[max(o·s - pad, 0),
    min(o·s - pad + k, size))`` per axis) ``Σ`` in float32 from 0 in row-major order,
    ``avg = Σ ⊘ float(count)`` with count the kernel size (count_include_pad=1) or the clipped
    window size; ``Y = sat(rne(avg ⊘ s_y ⊕ z_y))``. A kernel covering the whole image without
    padding runs :func:`qlinear_global_average_pool` instead.

    >>> qlinear_average_pool(np.array([[[1, 2, 4, 9]]], np.uint8), np.float32(1.0), np.uint8(0),
    ...                      np.float32(1.0), np.uint8(0), kernel_shape=[2], strides=[2]).tolist()
    [[[2, 6]]]
    """
    op = "QLinearAveragePool"
    x, z_x, z_y = _check_8bit_params(op, x, x_zero_point, y_zero_point)
    if int(channels_last) not in (0, 1):
        raise OpError(f"{op}: attribute channels_last={channels_last} must be 0 or 1")
    if x.ndim < 3 or x.ndim > 5:
        raise OpError(f"{op}: input X has shape {list(x.shape)}; expected rank 3 to 5")
    s_x, s_y = _scale(op, "x_scale", x_scale), _scale(op, "y_scale", y_scale)
    xc = np.moveaxis(x, -1, 1) if channels_last else x
    try:
        kernel, strides_, _, begins, ends, _, out = _pool_geometry(
            xc, kernel_shape, strides, None, auto_pad, pads, ceil_mode)
    except OpError as exc:
        raise OpError(f"{op}: {exc}") from None
    spatial = xc.shape[2:]
    if str(auto_pad) in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = _ort_same_pads(spatial, kernel, strides_, str(auto_pad))
    if tuple(kernel) == spatial and not any(begins) and not any(ends):
        y = _global_average(op, xc, s_x, z_x, s_y, z_y, False)
        return np.moveaxis(y, 1, -1) if channels_last else y
    v = (s_x * (xc.astype(np.int64) - z_x).astype(F32)).astype(F32)
    starts = [np.arange(o) * s - b for o, s, b in zip(out, strides_, begins)]
    total = np.zeros(xc.shape[:2] + tuple(out), F32)
    for offset in np.ndindex(*kernel):               # window positions in row-major order
        part, inside = v, np.ones(tuple(out), bool)
        for axis, (start, k, size) in enumerate(zip(starts, offset, spatial)):
            where = start + k
            part = np.take(part, np.clip(where, 0, size - 1), axis=2 + axis)
            shape = [1] * len(out)
            shape[axis] = len(where)
            inside = inside & ((where >= 0) & (where < size)).reshape(shape)
        total = np.where(inside, (total + part).astype(F32), total)
    if int(count_include_pad):
        count = np.full(tuple(out), math.prod(kernel), np.int64)
    else:
        count = np.ones((), np.int64)
        for start, k, size in zip(starts, kernel, spatial):
            count = np.multiply.outer(count, np.minimum(start + k, size) - np.maximum(start, 0))
    lo, hi = _RANGES[x.dtype.name]
    with np.errstate(all="ignore"):
        avg = (total / count.astype(F32)).astype(F32)
        q = ((avg / s_y).astype(F32) + F32(z_y)).astype(F32)
    y = np.clip(_cvtps(q, -2 ** 31, 2 ** 31 - 1), lo, hi).astype(x.dtype)
    return np.moveaxis(y, 1, -1) if channels_last else y


# ---------------------------------------------------------------------------------------------
# integer matrix products
# ---------------------------------------------------------------------------------------------
def _gemm_bias(op: str, c, m: int, n: int) -> np.ndarray:
    """QGemm's int32 C, broadcast to ``[M, N]``: shape ``[]``, ``[1]``, ``[N]``, ``[1, N]``,
    ``[M, 1]`` or ``[M, N]``."""
    c = np.asarray(c)
    if c.dtype != np.int32:
        raise OpError(f"{op}: input C has dtype {c.dtype}, expected int32")
    if c.shape not in ((), (1,), (n,), (1, n), (m, 1), (m, n), (1, 1)):
        raise OpError(f"{op}: input C has shape {list(c.shape)}; expected [], [1], [{n}], "
                      f"[1, {n}], [{m}, 1] or [{m}, {n}]")
    return np.broadcast_to(c.reshape(c.shape if c.ndim == 2 else (1, -1)), (m, n))


def _column_param(op: str, what: str, p, n: int, dtype=None) -> np.ndarray:
    """A per-tensor (``[]``/``[1]``) or per-column (``[N]``) parameter, as a 0-d or [N] array."""
    p = np.asarray(p)
    if dtype is not None and p.dtype != dtype:
        raise OpError(f"{op}: {what} has dtype {p.dtype}, expected {np.dtype(dtype).name}")
    if p.size == 1 and p.ndim <= 1:
        return p.reshape(())
    if p.shape != (n,):
        raise OpError(f"{op}: {what} has shape {list(p.shape)}; expected a scalar or [{n}] "
                      f"(one per column of B)")
    return p


@register("QGemm")
def qgemm(a, a_scale, a_zero_point, b, b_scale, b_zero_point, c=None, y_scale=None,
          y_zero_point=None, *, alpha=1.0, transA=0, transB=0):
    """``acc = C + (A' - z_a)(B' - z_b)`` exactly in int32 (``A' = A^T`` if transA, ``B'``
    likewise; ``z_b`` and ``s_b`` per tensor or per column), ``M = (alpha ⊗ s_a) ⊗ s_b``
    (``⊘ s_y`` when ``y_scale`` is given). Output: ``y_zero_point`` given → MLAS's
    requantization ``sat(rne(clamp(float(acc) ⊗ M)) + z_y)`` in its type; else float32
    ``float(acc) ⊗ M``.

    >>> qgemm(np.array([[2, 4]], np.uint8), np.float32(0.5), np.uint8(0),
    ...       np.array([[1], [1]], np.int8), np.float32(1.0), np.int8(0)).tolist()
    [[3.0]]
    """
    op = "QGemm"
    a, b = np.asarray(a), np.asarray(b)
    _int_range(op, "A", a.dtype, _EIGHT_BIT)
    _int_range(op, "B", b.dtype, _EIGHT_BIT)
    if a.dtype == np.int8 and b.dtype != np.int8:
        raise OpError(f"{op}: int8 A with {b.dtype} B; ONNX Runtime implements uint8 x uint8, "
                      f"uint8 x int8 and int8 x int8 only")
    if a.ndim != 2 or b.ndim != 2:
        raise OpError(f"{op}: A {list(a.shape)} and B {list(b.shape)} must be 2-D")
    a2 = a.T if int(transA) else a
    b2 = b.T if int(transB) else b
    if a2.shape[1] != b2.shape[0]:
        raise OpError(f"{op}: inner dimensions differ: A' is {list(a2.shape)}, B' is "
                      f"{list(b2.shape)} (transA={transA}, transB={transB})")
    m, n = a2.shape[0], b2.shape[1]
    if a2.shape[1] == 0:
        raise OpError(f"{op}: K = 0 (A' {list(a2.shape)}, B' {list(b2.shape)}); ONNX Runtime "
                      f"1.32 fills such an output with bytes that are not a defined result")
    z_a = _zero_point(op, "a_zero_point", a_zero_point, a.dtype, required=True)
    z_b = _column_param(op, "b_zero_point", b_zero_point, n, b.dtype)
    s_b = _column_param(op, "b_scale", _float32(op, "b_scale", b_scale), n)
    if s_b.shape != z_b.shape:
        raise OpError(f"{op}: b_scale {list(s_b.shape)} and b_zero_point {list(z_b.shape)} "
                      f"must have the same shape")
    acc = _exact_matmul(a2.astype(np.int64) - z_a, b2.astype(np.int64) - z_b.astype(np.int64))
    if c is not None:
        acc = (acc.astype(np.int64) + _gemm_bias(op, c, m, n)).astype(np.int32)
    scale = (F32(F32(alpha) * _scale(op, "a_scale", a_scale)) * s_b).astype(F32)
    if y_scale is None:
        if y_zero_point is not None:
            raise OpError(f"{op}: y_zero_point without y_scale; give both (quantized output) "
                          f"or neither (float output)")
        return (acc.astype(F32) * scale).astype(F32)
    scale = (scale / _scale(op, "y_scale", y_scale)).astype(F32)
    if y_zero_point is None:
        raise OpError(f"{op}: y_scale without y_zero_point; ONNX Runtime then writes float "
                      f"output with the requantizing scale, give y_zero_point")
    z_y = np.asarray(y_zero_point)
    if z_y.dtype != a.dtype:
        raise OpError(f"{op}: y_zero_point has dtype {z_y.dtype}, expected {a.dtype} (the "
                      f"type of A)")
    return _requantize(acc, scale, _scalar(op, "y_zero_point", z_y))


def _integer_to_float(op, a_q, z_a: int, b, z_b, multiplier, bias) -> np.ndarray:
    """``float(Σ (a - z_a)(b - z_b)) ⊗ multiplier [⊕ bias]`` with NumPy matmul semantics."""
    n = b.shape[-1]
    acc = _exact_matmul(a_q.astype(np.int64) - z_a, b.astype(np.int64) - z_b.astype(np.int64))
    y = (acc.astype(F32) * multiplier).astype(F32)
    if bias is not None:
        bias = np.asarray(bias)
        if bias.dtype != np.float32 or bias.shape != (n,):
            raise OpError(f"{op}: bias has {bias.dtype}{list(bias.shape)}, expected "
                          f"float32[{n}]")
        y = (y + bias).astype(F32)
    return y


def _b_params(op, b, b_scale, b_zero_point):
    b = np.asarray(b)
    _int_range(op, "B", b.dtype, _EIGHT_BIT)
    if b.ndim != 2:
        raise OpError(f"{op}: B has shape {list(b.shape)}; qsim supports a 2-D B")
    n = b.shape[1]
    s_b = _column_param(op, "b_scale", _float32(op, "b_scale", b_scale), n)
    z_b = np.zeros((), np.int64) if b_zero_point is None else \
        _column_param(op, "b_zero_point", b_zero_point, n, b.dtype)
    return b, s_b, z_b


@register("MatMulIntegerToFloat")
def matmul_integer_to_float(a, b, a_scale, b_scale, a_zero_point=None, b_zero_point=None,
                            bias=None):
    """``Y = float((A - z_a) @ (B - z_b)) ⊗ (s_a ⊗ s_b) [⊕ bias]`` (``s_b``, ``z_b`` per tensor
    or per column of a 2-D B; A uint8 or int8, any batch shape).

    >>> matmul_integer_to_float(np.array([[3, 5]], np.uint8), np.array([[1], [2]], np.int8),
    ...                         np.float32(0.5), np.float32(0.25), np.uint8(1)).tolist()
    [[1.25]]
    """
    op = "MatMulIntegerToFloat"
    a = np.asarray(a)
    _int_range(op, "A", a.dtype, _EIGHT_BIT)
    b, s_b, z_b = _b_params(op, b, b_scale, b_zero_point)
    if a.ndim < 1 or a.shape[-1] != b.shape[0]:
        raise OpError(f"{op}: A {list(a.shape)} and B {list(b.shape)} have different inner "
                      f"dimensions")
    z_a = _zero_point(op, "a_zero_point", a_zero_point, a.dtype)
    multiplier = (_scale(op, "a_scale", a_scale) * s_b).astype(F32)
    return _integer_to_float(op, a, z_a, b, z_b, multiplier, bias)


@register("DynamicQuantizeMatMul")
def dynamic_quantize_matmul(a, b, b_scale, b_zero_point=None, bias=None):
    """``(A_q, s_a, z_a) = DynamicQuantizeLinear(A)`` (uint8), then
    ``Y = float((A_q - z_a) @ (B - z_b)) ⊗ (s_a ⊗ s_b) [⊕ bias]``.

    >>> dynamic_quantize_matmul(np.array([[0.0, 2.55]], np.float32),
    ...                         np.array([[1], [1]], np.int8), np.float32(1.0)).tolist()
    [[2.549999952316284]]
    """
    op = "DynamicQuantizeMatMul"
    a = np.asarray(a)
    if a.dtype != np.float32:
        raise OpError(f"{op}: A has dtype {a.dtype}, expected float32")
    b, s_b, z_b = _b_params(op, b, b_scale, b_zero_point)
    if a.ndim < 1 or a.shape[-1] != b.shape[0]:
        raise OpError(f"{op}: A {list(a.shape)} and B {list(b.shape)} have different inner "
                      f"dimensions")
    a_q, s_a, z_a = dynamic_quantize_linear(a)
    multiplier = (F32(s_a) * s_b).astype(F32)
    return _integer_to_float(op, a_q, int(z_a), b, z_b, multiplier, bias)


# ---------------------------------------------------------------------------------------------
# MatMulNBits
# ---------------------------------------------------------------------------------------------
def _unpack_nbits(op: str, b: np.ndarray, bits: int, n: int, k: int, block_size: int):
    """MatMulNBits's B ``uint8[N, ⌈K/block⌉, block·bits/8]`` as integers ``[N, K]`` (4-bit: the
    low nibble is the even element)."""
    blocks = -(-k // block_size)
    expected = (n, blocks, block_size * bits // 8)
    if b.dtype != np.uint8 or b.shape != expected:
        raise OpError(f"{op}: B has {b.dtype}{list(b.shape)}, expected uint8{list(expected)} "
                      f"(N={n}, K={k}, bits={bits}, block_size={block_size})")
    if bits == 4:
        q = np.stack([b & 0x0F, b >> 4], axis=-1).reshape(n, blocks * block_size)
    else:
        q = b.reshape(n, blocks * block_size)
    return q[:, :k].astype(np.int32)


def _nbits_zero_points(op: str, zp, bits: int, n: int, blocks: int) -> np.ndarray:
    """Zero points ``[N, blocks]``: absent → ``2^(bits-1)``; uint8 packed like B (4-bit: two
    per byte, each row padded to whole bytes)."""
    if zp is None:
        return np.full((n, blocks), 1 << (bits - 1), np.int32)
    zp = np.asarray(zp)
    per_row = -(-blocks * bits // 8)
    if zp.dtype != np.uint8 or zp.size != n * per_row:
        raise OpError(f"{op}: zero_points has {zp.dtype}{list(zp.shape)}; qsim supports uint8 "
                      f"zero points packed like B ({n * per_row} bytes)")
    zp = zp.reshape(n, per_row)
    if bits == 4:
        zp = np.stack([zp & 0x0F, zp >> 4], axis=-1).reshape(n, per_row * 2)
    return zp[:, :blocks].astype(np.int32)


@register("MatMulNBits")
def matmul_nbits(a, b, scales, zero_points=None, g_idx=None, bias=None, *, K=None, N=None,
                 accuracy_level=0, bits=4, block_size=None, fp32_kernels="auto"):
    """``Y = A @ W^T [+ bias]`` with blockwise-quantized ``W[n, k] = s[n, k // block] ⊗
    float(q[n, k] - z[n, k // block])`` (float32 A), as ONNX Runtime's CPU kernel computes it
    with ``accuracy_level`` 0-3 (float compute, ``CompFp32``):

    * 8-bit: W is dequantized and multiplied by MLAS's SGEMM (``A @ W^T`` with B transposed,
      the bias preloaded into C: :func:`qsim.kernels.gemm.gemm`);
    * 4-bit, more than one row: MLAS's float kernel over 32-column slices of the dequantized W,
      one fused multiply-add chain over the whole of K per output from 0, then ``⊕ bias``.

    and with ``accuracy_level=4`` (``CompInt8``, the level ONNX Runtime's DQ → MatMulNBits fusion
    asks for), 8-bit weights in blocks of 32: A quantized to int8 per row and block, exact int32
    block dot products, float accumulation in MLAS's lane order, zero points through block sums
    (:mod:`qsim.kernels.nbits_int8`; kernel family from ``fp32_kernels``).

    Not reproduced (OpError): accuracy_level 4 with 4-bit weights, other block sizes or a kernel
    family whose CompInt8 kernels qsim does not know (:func:`qsim.kernels.family.nbits_int8`),
    4-bit with a single row of A (MLAS's GEMV kernel), 2-bit, ``g_idx`` and float zero points.

    >>> matmul_nbits(np.ones((2, 16), np.float32), np.full((1, 1, 8), 0x21, np.uint8),
    ...              np.array([0.5], np.float32), K=16, N=1, bits=4, block_size=16).tolist()
    [[-52.0], [-52.0]]
    """
    op = "MatMulNBits"
    for name, v in (("K", K), ("N", N), ("block_size", block_size)):
        if v is None or int(v) < 1:
            raise OpError(f"{op}: attribute {name}={v} is required and must be >= 1")
    k, n, blk, bits = int(K), int(N), int(block_size), int(bits)
    if bits not in (4, 8):
        raise OpError(f"{op}: attribute bits={bits}; qsim reproduces 4 and 8")
    if blk < 16 or blk & (blk - 1):
        raise OpError(f"{op}: attribute block_size={blk} must be a power of 2 >= 16")
    int8_compute = int(accuracy_level) == 4
    if int8_compute and (bits != 8 or blk != nbits_int8.BLOCK):
        raise OpError(f"{op}: accuracy_level=4 (int8 compute) is reproduced for bits=8 and "
                      f"block_size={nbits_int8.BLOCK}, not bits={bits}, block_size={blk}")
    if not 0 <= int(accuracy_level) <= 4:
        raise OpError(f"{op}: attribute accuracy_level={accuracy_level} must be in 0..4")
    if g_idx is not None:
        raise OpError(f"{op}: input g_idx (act-order) is not supported")
    a = np.asarray(a)
    if a.dtype != np.float32 or a.ndim < 1 or a.shape[-1] != k:
        raise OpError(f"{op}: A has {a.dtype}{list(a.shape)}, expected float32[..., {k}]")
    blocks = -(-k // blk)
    s = np.asarray(scales)
    if s.dtype != np.float32 or s.size != n * blocks:
        raise OpError(f"{op}: scales has {s.dtype}{list(s.shape)}, expected float32 "
                      f"[{n * blocks}] (N × ⌈K/block_size⌉)")
    q = _unpack_nbits(op, np.asarray(b), bits, n, k, blk)
    z = _nbits_zero_points(op, zero_points, bits, n, blocks)
    if bias is not None:
        bias = np.asarray(bias)
        if bias.dtype != np.float32 or bias.shape != (n,):
            raise OpError(f"{op}: bias has {bias.dtype}{list(bias.shape)}, expected "
                          f"float32[{n}]")
    if int8_compute:
        try:
            family = nbits_int8_family(fp32_kernels)
        except ValueError as e:
            raise OpError(f"{op}: accuracy_level=4: {e}") from None
        a2 = np.ascontiguousarray(a.reshape(-1, k))
        y = nbits_int8.matmul(a2, np.asarray(b).reshape(n, blocks, blk), s.reshape(n, blocks),
                              z, bias, family)
        return y.reshape(a.shape[:-1] + (n,))
    w = (np.repeat(s.reshape(n, blocks), blk, axis=1)[:, :k]
         * (q - np.repeat(z, blk, axis=1)[:, :k]).astype(F32)).astype(F32)      # [N, K]
    a2 = np.ascontiguousarray(a.reshape(-1, k))
    m = a2.shape[0]
    if bits == 8:
        y = gemm_exact.gemm(a2, np.ascontiguousarray(w.T), bias, beta=1.0, trans_b=True)
    else:
        if m == 1:
            raise OpError(f"{op}: 4-bit weights with a single row of A run MLAS's GEMV kernel, "
                          f"which qsim does not reproduce")
        tiles = [(0, m, n0, min(n0 + 32, n), gemm_exact.FMA, k) for n0 in range(0, n, 32)]
        y = np.zeros((1, m, n), F32)
        gemm_exact.run_batch(a2[None], np.ascontiguousarray(w.T)[None], y, [0], [0], tiles)
        y = y[0] if bias is None else (y[0] + bias).astype(F32)
    return y.reshape(a.shape[:-1] + (n,))
