"""Elementwise ONNX ops (opsets 13-21): arithmetic, activations, comparisons, Cast, Identity.

Every function follows the calling convention of :mod:`qsim.ops.registry`: inputs positional,
attributes keyword-only with ONNX's defaults. Outputs keep the input dtype as ONNX does
(float32 stays float32; comparisons return bool). Binary ops use NumPy (= ONNX multidirectional)
broadcasting; inputs that do not broadcast or whose dtypes differ raise :class:`OpError`.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import OpError
from ..jit import USE_NUMBA, kernel
from ..kernels import eigen_math
from ..kernels import eigen_minmax
from ..kernels import libm
from ..kernels import mlas_math as math_exact
from .registry import register

# --------------------------------------------------------------------------------------------
# helpers


def _broadcast(op: str, *arrays: np.ndarray) -> tuple[int, ...]:
    """The broadcast shape of ``arrays``, or :class:`OpError` naming the shapes."""
    try:
        return np.broadcast_shapes(*(np.shape(a) for a in arrays))
    except ValueError:
        shapes = ", ".join(str(tuple(np.shape(a))) for a in arrays)
        raise OpError(f"{op}: input shapes {shapes} do not broadcast "
                      f"(each dimension must be equal or 1)") from None


def _same_dtype(op: str, *arrays: np.ndarray) -> np.dtype:
    """The common dtype of ``arrays``; ONNX requires them all to be equal."""
    dtypes = [np.asarray(a).dtype for a in arrays]
    if any(d != dtypes[0] for d in dtypes):
        raise OpError(f"{op}: inputs have dtypes {[d.name for d in dtypes]}, "
                      f"expected one dtype for all inputs")
    return dtypes[0]


def _binary(op: str, a: np.ndarray, b: np.ndarray) -> np.dtype:
    """Check the two inputs of a broadcasting binary op; return their dtype."""
    dtype = _same_dtype(op, a, b)
    _broadcast(op, a, b)
    return dtype


def _float_input(op: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise OpError(f"{op}: input has dtype {x.dtype}, expected a floating-point tensor")
    return x


def _out(value, dtype) -> np.ndarray:
    """``value`` as an ndarray of ``dtype`` (NumPy returns scalars for 0-d results)."""
    return np.asarray(value, dtype=dtype)


def _legacy_broadcast(op: str, a, b, broadcast, axis):
    """Opsets 1-6: B broadcasts to A only with ``broadcast=1``, its axes matched from ``axis``
    of A (default: the trailing axes); returns B reshaped for NumPy broadcasting."""
    b = np.asarray(b)
    if not broadcast:
        if np.shape(a) != b.shape:
            raise OpError(f"{op}: input shapes {np.shape(a)} and {b.shape} differ and attribute "
                          f"broadcast=0 (opsets 1-6), expected equal shapes")
        return b
    rank = np.ndim(a)
    start = rank - b.ndim if axis is None else (axis + rank if axis < 0 else axis)
    if not 0 <= start <= rank - b.ndim:
        raise OpError(f"{op}: attribute axis={axis} does not place B {b.shape} inside A "
                      f"{np.shape(a)}")
    return b.reshape(b.shape + (1,) * (rank - start - b.ndim))


def _old_form(op, a, b, broadcast, axis):
    """B as opsets 1-6 broadcast it when their attributes are present, else unchanged."""
    if broadcast is None and axis is None:
        return b
    return _legacy_broadcast(op, a, b, broadcast or 0, axis)


# --------------------------------------------------------------------------------------------
# arithmetic


def _one_axis(big: np.ndarray, small: np.ndarray):
    """``(outer, count, inner)`` when ``small`` broadcasts to ``big``'s shape along one axis
    only (``count`` values, one per index of that axis; a scalar is one value along no axis):
    ``big`` viewed as ``(outer, count, inner)``. ``None`` for any other broadcast."""
    shape = big.shape
    if small.ndim > len(shape) or big.size == 0:
        return None
    lead = len(shape) - small.ndim
    axis = -1
    for i, d in enumerate(small.shape):
        if d != 1:
            if axis >= 0 or d != shape[lead + i]:
                return None
            axis = lead + i
    if axis < 0:
        return 1, 1, big.size
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


@kernel
def _nb_one_axis(x, v, y, outer, count, inner, op, v_first):
    """``y = x ∘ v`` with ``x``, ``y`` flat ``(outer, count, inner)`` and ``v`` one value per
    middle index; ``∘`` is ``+ - · /`` (``op`` 0-3), ``v ∘ x`` when ``v_first``: one float32
    operation per element, as NumPy's broadcasting loop (whose short inner loops are slow)."""
    for o in range(outer):
        for c in range(count):
            w = v[c]
            base = np.uint64((o * count + c) * inner)
            if op == 0:
                if v_first:
                    for i in range(inner):
                        y[base + np.uint64(i)] = w + x[base + np.uint64(i)]
                else:
                    for i in range(inner):
                        y[base + np.uint64(i)] = x[base + np.uint64(i)] + w
            elif op == 1:
                if v_first:
                    for i in range(inner):
                        y[base + np.uint64(i)] = w - x[base + np.uint64(i)]
                else:
                    for i in range(inner):
                        y[base + np.uint64(i)] = x[base + np.uint64(i)] - w
            elif op == 2:
                if v_first:
                    for i in range(inner):
                        y[base + np.uint64(i)] = w * x[base + np.uint64(i)]
                else:
                    for i in range(inner):
                        y[base + np.uint64(i)] = x[base + np.uint64(i)] * w
            else:
                if v_first:
                    for i in range(inner):
                        y[base + np.uint64(i)] = w / x[base + np.uint64(i)]
                else:
                    for i in range(inner):
                        y[base + np.uint64(i)] = x[base + np.uint64(i)] / w


_ARITH_CODES = {"Add": 0, "Sub": 1, "Mul": 2, "Div": 3}

#: elements below which NumPy's own broadcasting is as fast as the kernel's call
_ONE_AXIS_MIN = 4096


def _arith(op: str, a, b, numpy_fn) -> np.ndarray:
    """``numpy_fn(a, b)`` (float: one IEEE operation per element) in ``a``'s dtype; float32
    operands of which one is a C-contiguous tensor and the other varies along at most one of
    its axes (a per-channel scale or bias) go through :func:`_nb_one_axis`, same bits (the
    result has the tensor's shape: the other operand's sizes are 1 or equal to its own)."""
    dtype = _binary(op, a, b)
    if USE_NUMBA and dtype == np.float32 and isinstance(a, np.ndarray) \
            and isinstance(b, np.ndarray):
        for big, small, small_first in ((a, b, False), (b, a, True)):
            if big.flags.c_contiguous and big.size >= _ONE_AXIS_MIN and small.size <= big.size:
                split = _one_axis(big, small)
                # (a last-axis operand, runs shorter than 16: NumPy's own loop is fast there)
                if split is not None and split[2] >= 16 and (small.size > 1 or not small_first):
                    y = np.empty(big.shape, dtype=np.float32)
                    _nb_one_axis(big.reshape(-1), np.ascontiguousarray(small).reshape(-1),
                                 y.reshape(-1), *split, _ARITH_CODES[op], small_first)
                    return y
    return _out(numpy_fn(a, b), dtype)


@register("Add")
def add(a, b, *, broadcast=None, axis=None, then_relu=False):
    """C = A + B (broadcasting; opsets 1-6: ``broadcast``/``axis``, see _legacy_broadcast).
    ``then_relu`` (from the executor): return ``Relu(C)``, in place on the new array."""
    b = _old_form("Add", a, b, broadcast, axis)
    y = _arith("Add", a, b, np.add)
    return _relu_in_place(y) if then_relu else y


@register("Sub")
def sub(a, b, *, broadcast=None, axis=None):
    """C = A - B (broadcasting; opsets 1-6: ``broadcast``/``axis``, see _legacy_broadcast)."""
    b = _old_form("Sub", a, b, broadcast, axis)
    return _arith("Sub", a, b, np.subtract)


@register("Mul")
def mul(a, b, *, broadcast=None, axis=None):
    """C = A * B (broadcasting; opsets 1-6: ``broadcast``/``axis``, see _legacy_broadcast)."""
    b = _old_form("Mul", a, b, broadcast, axis)
    return _arith("Mul", a, b, np.multiply)


@register("Div")
def div(a, b, *, broadcast=None, axis=None):
    """C = A / B (broadcasting; opsets 1-6 see _legacy_broadcast). Integer types truncate toward zero like C (ONNX Runtime):
    Div(-7, 2) = -3, not NumPy's floor -4. Integer division by zero is an error.

    >>> div(np.array([-7, 7], np.int64), np.array([2, 2], np.int64)).tolist()
    [-3, 3]
    """
    b = _old_form("Div", a, b, broadcast, axis)
    dtype = _binary("Div", a, b)
    if dtype.kind == "f":
        return _out(np.divide(a, b), dtype)
    if dtype.kind not in "iu":
        raise OpError(f"Div: dtype {dtype} not supported, expected a float or integer tensor")
    if np.any(np.asarray(b) == 0):
        raise OpError("Div: integer division by zero (input B contains 0)")
    q = np.floor_divide(a, b)
    # floor and truncation differ when the remainder is non-zero and the signs differ
    fix = (np.remainder(a, b) != 0) & ((np.asarray(a) < 0) != (np.asarray(b) < 0))
    return _out(q + fix.astype(dtype), dtype)


def _ort_long_spans(x: np.ndarray, y: np.ndarray) -> bool:
    """For a size-1 exponent: True if ONNX Runtime walks X in spans of more than one element:
    X has more than one element, and either its last axis is not 1 or the exponent's rank
    exceeds the number of trailing size-1 axes of X. Then an exponent of 2 is X·X and of 3 is
    (X·X)·X; one-element spans call C pow() on every element. (Found by experiment against
    ONNX Runtime 1.32.)"""
    trailing_ones = len(x.shape) - len(np.trim_zeros(np.array(x.shape) != 1, "b"))
    return x.size > 1 and (trailing_ones == 0 or y.ndim > trailing_ones)


@register("Pow")
def pow_(x, y):
    """Z = X ** Y (broadcasting); Z has the dtype of X (Y may have another numeric dtype).

    float32/float64 X as ONNX Runtime: ``X·X`` / ``(X·X)·X`` for a size-1 exponent 2 / 3 walked
    in long spans (:func:`_ort_long_spans`), else the C library's pow element by element
    (:func:`qsim.kernels.libm.c_pow`: powf for a float32 exponent, pow of doubles otherwise)."""
    x, y = np.asarray(x), np.asarray(y)
    _broadcast("Pow", x, y)
    if x.dtype in (np.float32, np.float64):
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if y.size == 1 and y.ndim <= x.ndim:  # ONNX Runtime's scalar-exponent paths
                value = x.dtype.type(y.reshape(()))
                if _ort_long_spans(x, y) and value in (2.0, 3.0):
                    return _out(x * x if value == 2.0 else (x * x) * x, x.dtype)
            return _out(libm.c_pow(x, y), x.dtype)
    if x.dtype.kind == "f":
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            return _out(np.power(x, y.astype(x.dtype)), x.dtype)
    if x.dtype.kind in "iu" and y.dtype.kind in "iu":
        if np.any(y < 0):
            raise OpError("Pow: integer base with a negative integer exponent is not supported")
        return _out(np.power(x, y.astype(x.dtype)), x.dtype)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        return _out(np.power(x.astype(np.float64), y.astype(np.float64)), x.dtype)


@register("Sqrt")
def sqrt(x):
    """Y = sqrt(X) (NaN for X < 0)."""
    x = _float_input("Sqrt", x)
    with np.errstate(invalid="ignore"):
        return _out(np.sqrt(x), x.dtype)


@register("Reciprocal")
def reciprocal(x):
    """Y = 1 / X."""
    x = _float_input("Reciprocal", x)
    with np.errstate(divide="ignore"):
        return _out(np.reciprocal(x), x.dtype)


@register("Neg")
def neg(x):
    """Y = -X."""
    x = np.asarray(x)
    return _out(np.negative(x), x.dtype)


@register("Abs")
def abs_(x):
    """Y = |X|."""
    x = np.asarray(x)
    return _out(np.abs(x), x.dtype)


@register("Exp")
def exp(x):
    """Y = e ** X (float32: ONNX Runtime's MLAS approximation, :func:`qsim.kernels.mlas_math.exp`)."""
    x = _float_input("Exp", x)
    if x.dtype == np.float32:
        return math_exact.exp(x)  # ORT's MLAS exp, bit for bit
    with np.errstate(over="ignore"):
        return _out(np.exp(x), x.dtype)


@register("Log")
def log(x):
    """Y = ln(X) (-inf at 0, NaN below; float32: ONNX Runtime's Eigen log,
    :func:`qsim.kernels.mlas_math.log`)."""
    x = _float_input("Log", x)
    if x.dtype == np.float32:
        return math_exact.log(x)  # ORT's Eigen log, bit for bit
    with np.errstate(divide="ignore", invalid="ignore"):
        return _out(np.log(x), x.dtype)


@register("Floor")
def floor(x):
    """Y = floor(X)."""
    x = _float_input("Floor", x)
    return _out(np.floor(x), x.dtype)


@register("Ceil")
def ceil(x):
    """Y = ceil(X)."""
    x = _float_input("Ceil", x)
    return _out(np.ceil(x), x.dtype)


@register("Round")
def round_(x):
    """Y = X rounded to the nearest integer, halves to even (round(2.5) = 2, round(-1.5) = -2)."""
    x = _float_input("Round", x)
    return _out(np.rint(x), x.dtype)


@register("Sign")
def sign(x):
    """Y = -1, 0 or 1 by the sign of X."""
    x = np.asarray(x)
    return _out(np.sign(x), x.dtype)


@register("Mod")
def mod(a, b, *, fmod=0, opset=17):
    """C = A mod B (broadcasting). fmod=0: the remainder takes the sign of B (Python's %:
    ``r = fmod(A, B)``, plus B where r != 0 and r, B differ in sign); fmod=1: the remainder
    takes the sign of A (C's fmod). Floats with fmod=0 only from opset 28 (ONNX Runtime refuses
    them before, as the older ONNX Mod forbids them).

    >>> mod(np.array([-3.5], np.float32), np.array([2.0], np.float32), opset=28).tolist()
    [0.5]
    """
    dtype = _binary("Mod", a, b)
    if fmod not in (0, 1):
        raise OpError(f"Mod: attribute fmod={fmod!r}, expected 0 or 1")
    if dtype.kind == "f":
        if fmod != 1 and opset < 28:
            raise OpError(f"Mod: attribute fmod=0 with float inputs needs opset >= 28 (the "
                          f"model has opset {opset}), expected fmod=1")
        with np.errstate(invalid="ignore"):
            r = np.fmod(a, b)
            if not fmod:
                r = np.where((r != 0) & ((r < 0) != (np.asarray(b) < 0)), r + b, r)
        return _out(r, dtype)
    if np.any(np.asarray(b) == 0):
        raise OpError("Mod: integer modulo by zero (input B contains 0)")
    return _out(np.fmod(a, b) if fmod else np.remainder(a, b), dtype)


# --------------------------------------------------------------------------------------------
# erf

#: Maclaurin coefficients of erf(x) * sqrt(pi) / (2x) = sum_n (-1)^n x^(2n) / (n! (2n+1));
#: 40 terms reach 1e-17 for |x| < 2
_ERF_SERIES = tuple((-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(40))
#: below this |x| the series is used, above it the continued fraction of erfc
_ERF_SPLIT = 2.0
#: levels of the erfc continued fraction (error < 3e-16 for x >= 2)
_ERFC_DEPTH = 40


def erf_float64(x: np.ndarray) -> np.ndarray:
    """erf(x) in float64, accurate to ~1e-15 absolute (vectorised; NumPy has no erf).

    * |x| < 2:  erf(x) = 2/sqrt(pi) * sum_{n>=0} (-1)^n x^(2n+1) / (n! (2n+1))   (40 terms, Horner)
    * |x| >= 2: erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
      (Laplace's continued fraction, 40 levels), erf = sign(x) * (1 - erfc(|x|)); |x| is capped
      at 6, where erf is 1 to double precision.

    >>> float(erf_float64(np.array(0.5)))  # math.erf(0.5) = 0.5204998778130465
    0.5204998778130465
    """
    x = np.asarray(x, dtype=np.float64)
    ax = np.abs(x)
    result = np.empty_like(ax)
    small = ax < _ERF_SPLIT
    xs = ax[small]
    z = xs * xs
    acc = np.zeros_like(xs)
    for c in reversed(_ERF_SERIES):
        acc = acc * z + c
    result[small] = 2.0 / math.sqrt(math.pi) * xs * acc
    large = ~small & ~np.isnan(ax)
    xl = np.minimum(ax[large], 6.0)
    t = xl.copy()
    for k in range(_ERFC_DEPTH, 0, -1):
        t = xl + (k / 2.0) / t
    result[large] = 1.0 - np.exp(-xl * xl) / (math.sqrt(math.pi) * t)
    result[np.isnan(ax)] = np.nan
    return np.sign(x) * result


@register("Erf")
def erf(x):
    """Y = erf(X) = 2/sqrt(pi) * integral_0^X exp(-t^2) dt. float32: ONNX Runtime's MLAS
    approximation (:func:`qsim.kernels.mlas_math.erf`); float64: :func:`erf_float64`."""
    x = _float_input("Erf", x)
    if x.dtype == np.float32:
        return math_exact.erf(x)  # ORT's MLAS erf, bit for bit
    return _out(erf_float64(x), x.dtype)


# --------------------------------------------------------------------------------------------
# activations


@kernel
def _nb_relu(x, y):
    """Numba twin of :func:`relu` on flat float32 arrays: ``y = 0 if x < 0 else x``."""
    zero = np.float32(0.0)
    for i in range(x.size):
        v = x[i]
        y[i] = zero if v < zero else v


def _relu_in_place(y: np.ndarray) -> np.ndarray:
    """:func:`relu` of an array the caller owns, written into it (no second array)."""
    if USE_NUMBA and y.dtype == np.float32 and y.flags.c_contiguous and y.ndim:
        flat = y.reshape(-1)
        _nb_relu(flat, flat)
        return y
    zero = np.zeros((), y.dtype)
    np.copyto(y, zero, where=y < zero)
    return y


@register("Relu")
def relu(x):
    """``Y = 0 if X < 0 else X`` (ONNX Runtime's ``cwiseMax(0)``: ``-0`` and NaN pass through
    unchanged, where ``np.maximum(X, 0)`` would turn ``-0`` into ``+0``)."""
    x = np.asarray(x)
    if USE_NUMBA and x.dtype == np.float32 and x.flags.c_contiguous and x.ndim:
        y = np.empty_like(x)
        _nb_relu(x.reshape(-1), y.reshape(-1))
        return y
    zero = np.zeros((), x.dtype)
    return _out(np.where(x < zero, zero, x), x.dtype)


@register("LeakyRelu")
def leaky_relu(x, *, alpha=0.01):
    """Y = X if X >= 0 else alpha * X."""
    x = _float_input("LeakyRelu", x)
    return _out(np.where(x >= 0, x, x * x.dtype.type(alpha)), x.dtype)


@register("PRelu")
def prelu(x, slope, *, opset=17):
    """Y = X if X >= 0 else slope * X; slope broadcasts to X (e.g. (C,1,1) per channel). Before
    opset 7 a 1-D slope of C values is per channel (axis 1)."""
    x, slope = np.asarray(x), np.asarray(slope)
    if opset < 7 and slope.ndim == 1 and x.ndim >= 2 and slope.size == x.shape[1] > 1:
        slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))
    _same_dtype("PRelu", x, slope)
    try:
        fits = np.broadcast_shapes(x.shape, slope.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise OpError(f"PRelu: slope shape {slope.shape} does not broadcast to input shape "
                      f"{x.shape} (expected e.g. (C, 1, 1) or a suffix of the input shape)")
    return _out(np.where(x >= 0, x, x * slope), x.dtype)


#: Clip's bounds before opset 11, when they were attributes with these defaults
_CLIP6_LIMIT = float(np.finfo(np.float32).max)


@register("Clip")
def clip(x, min_input=None, max_input=None, *, min=None, max=None,  # noqa: A002 - ONNX names
         opset=17):
    """Y = min(max(X, min), max); an absent bound is the type's lowest / largest finite value
    (±inf become ±FLT_MAX, as in ONNX Runtime). When min > max, every value becomes max (ONNX). As ONNX Runtime's Eigen ``cwiseMax(min).cwiseMin(max)``: a bound
    replaces X only when it compares beyond it, so -0 stays -0 against a bound of +0, a NaN X
    stays NaN and a NaN bound clips nothing. min and max are scalar inputs from opset 11; before, float attributes
    whose defaults are -FLT_MAX and FLT_MAX (so +-inf become +-FLT_MAX, as in ONNX Runtime).

    >>> clip(np.array([-2.0, 0.5, 9.0], np.float32), np.float32(0), np.float32(6)).tolist()
    [0.0, 0.5, 6.0]
    """
    x = np.asarray(x)
    if opset < 11 or min is not None or max is not None:  # opsets 6-10: attributes
        if min_input is not None or max_input is not None:
            raise OpError("Clip: bounds given both as inputs and as attributes, expected one")
        min_input = np.asarray(-_CLIP6_LIMIT if min is None else min, x.dtype)
        max_input = np.asarray(_CLIP6_LIMIT if max is None else max, x.dtype)
    limits = np.finfo(x.dtype) if x.dtype.kind == "f" else np.iinfo(x.dtype)
    y = x
    for name, bound, beyond in (("min", min_input, np.greater), ("max", max_input, np.less)):
        if bound is None:      # ORT clips to the type's lowest / largest finite value
            bound = limits.min if name == "min" else limits.max
        bound = np.asarray(bound)
        if bound.size != 1:
            raise OpError(f"Clip: input '{name}' has shape {bound.shape}, expected a scalar")
        bound = bound.reshape(()).astype(x.dtype)
        y = np.where(beyond(bound, y), bound, y)
    return _out(y, x.dtype)


@register("Sigmoid")
def sigmoid(x):
    """Y = 1 / (1 + exp(-X)). float32: ONNX Runtime's MLAS rational approximation
    (:func:`qsim.kernels.mlas_math.logistic`); float64: exp(X) / (1 + exp(X)) for X < 0."""
    x = _float_input("Sigmoid", x)
    if x.dtype == np.float32:
        return math_exact.logistic(x)  # ORT's MLAS logistic, bit for bit
    e = np.exp(-np.abs(x))
    return _out(np.where(x >= 0, 1 / (1 + e), e / (1 + e)), x.dtype)


@register("HardSigmoid")
def hard_sigmoid(x, *, alpha=0.2, beta=0.5):
    """Y = max(0, min(1, alpha * X + beta))."""
    x = _float_input("HardSigmoid", x)
    t = x.dtype.type
    return _out(np.clip(t(alpha) * x + t(beta), t(0), t(1)), x.dtype)


@register("HardSwish")
def hard_swish(x):
    """Y = X * max(0, min(1, X / 6 + 1/2))  (HardSigmoid with alpha = 1/6, beta = 0.5)."""
    x = _float_input("HardSwish", x)
    return _out(x * hard_sigmoid(x, alpha=1 / 6, beta=0.5), x.dtype)


@register("Tanh")
def tanh(x):
    """Y = tanh(X) (float32: ONNX Runtime's MLAS approximation, :func:`math_exact.tanh`)."""
    x = _float_input("Tanh", x)
    if x.dtype == np.float32:
        return math_exact.tanh(x)  # ORT's MLAS tanh, bit for bit
    return _out(np.tanh(x), x.dtype)


@register("Softplus")
def softplus(x):
    """Y = ln(1 + exp(X)), computed as max(X, 0) + ln(1 + exp(-|X|)) (no overflow); float32
    as ONNX Runtime's Eigen expression (:func:`qsim.kernels.eigen_math.softplus`)."""
    x = _float_input("Softplus", x)
    if x.dtype == np.float32:
        return eigen_math.softplus(x)  # ORT's Eigen expression, bit for bit
    return _out(np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))), x.dtype)


@register("Softsign")
def softsign(x):
    """Y = X / (1 + |X|), computed as ONNX Runtime does: X · (1 / (1 + |X|)) (two roundings)."""
    x = _float_input("Softsign", x)
    one = x.dtype.type(1)
    with np.errstate(invalid="ignore"):  # inf · 0 is NaN, as in ONNX Runtime
        y = (one / (one + np.abs(x))) * x
    return _out(np.where(np.isnan(x), np.abs(x), y), x.dtype)   # ORT's NaN: the reciprocal's


@register("Elu")
def elu(x, *, alpha=1.0):
    """Y = X if X >= 0 else alpha * (exp(X) - 1); float32 as ONNX Runtime's Eigen expression
    (:func:`qsim.kernels.eigen_math.elu`)."""
    x = _float_input("Elu", x)
    if x.dtype == np.float32:
        return eigen_math.elu(x, alpha)  # ORT's Eigen expression, bit for bit
    return _out(np.where(x > 0, x, x.dtype.type(alpha) * np.expm1(np.minimum(x, 0))), x.dtype)


@register("Selu")
def selu(x, *, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    """Y = gamma * X if X > 0 else (gamma * alpha) * (exp(X) - 1) (defaults: ONNX's float32
    constants); float32 as ONNX Runtime's Eigen expression
    (:func:`qsim.kernels.eigen_math.selu`)."""
    x = _float_input("Selu", x)
    if x.dtype == np.float32:
        return eigen_math.selu(x, alpha, gamma)  # ORT's Eigen expression, bit for bit
    return _out(x.dtype.type(gamma) * elu(x, alpha=alpha), x.dtype)


@register("Gelu")
def gelu(x, *, approximate="none"):
    """Gelu (opset 20).

    * approximate="none": Y = X/2 * (1 + erf(X / sqrt(2)))
    * approximate="tanh": Y = X/2 * (1 + tanh(sqrt(2/pi) * (X + 0.044715 X^3)))

    float32: as ONNX Runtime computes it (:func:`qsim.kernels.mlas_math.gelu`); float64: evaluated
    in float64.
    """
    x = _float_input("Gelu", x)
    if approximate not in ("none", "tanh"):
        raise OpError(f"Gelu: attribute approximate={approximate!r}, expected 'none' or 'tanh'")
    if x.dtype == np.float32:
        return math_exact.gelu(x, approximate)  # ORT's float32 Gelu kernel, bit for bit
    x64 = x.astype(np.float64)
    if approximate == "none":
        inner = erf_float64(x64 / math.sqrt(2.0))
    elif approximate == "tanh":
        inner = np.tanh(math.sqrt(2.0 / math.pi) * (x64 + 0.044715 * x64 ** 3))
    else:
        raise OpError(f"Gelu: attribute approximate={approximate!r}, expected 'none' or 'tanh'")
    return _out(0.5 * x64 * (1.0 + inner), x.dtype)


# --------------------------------------------------------------------------------------------
# selection and comparison


@register("Where")
def where(condition, x, y):
    """Out = X where condition else Y (all three broadcast together).

    Floats as ONNX Runtime computes it: two selections ``Xs = c ? X : +0`` (shape of c and X)
    and ``Ys = c ? +0 : Y`` (shape of c and Y), then merged over their broadcast with
    ``Xs != 0 ? Xs : Ys``, or ``Ys != 0 ? Ys : Xs`` when ORT's broadcaster repeats ``Ys`` along
    its span (:func:`qsim.kernels.eigen_minmax.span_and_functor`): so a selected ±0 may come out
    +0 (NaN counts as non-zero).

    >>> where(np.array([True, False]), np.float32([-0.0, 1]), np.float32([5, -0.0])).tolist()
    [0.0, -0.0]
    """
    condition = np.asarray(condition)
    if condition.dtype != np.bool_:
        raise OpError(f"Where: condition has dtype {condition.dtype}, expected bool")
    dtype = _same_dtype("Where", x, y)
    _broadcast("Where", condition, x, y)
    if dtype.kind != "f":
        return _out(np.where(condition, x, y), dtype)
    zero = dtype.type(0)
    xs = np.where(condition, x, zero)
    ys = np.where(condition, zero, y)
    _, functor = eigen_minmax.span_and_functor(xs.shape, ys.shape)
    if functor == eigen_minmax.INPUT1_SCALAR:
        return _out(np.where(ys != 0, ys, xs), dtype)
    return _out(np.where(xs != 0, xs, ys), dtype)


def _compare(op: str, fn, a, b) -> np.ndarray:
    _binary(op, a, b)
    return _out(fn(a, b), np.bool_)


@register("Equal")
def equal(a, b):
    """C = (A == B), bool."""
    return _compare("Equal", np.equal, a, b)


@register("Less")
def less(a, b):
    """C = (A < B), bool."""
    return _compare("Less", np.less, a, b)


@register("LessOrEqual")
def less_or_equal(a, b):
    """C = (A <= B), bool."""
    return _compare("LessOrEqual", np.less_equal, a, b)


@register("Greater")
def greater(a, b):
    """C = (A > B), bool."""
    return _compare("Greater", np.greater, a, b)


@register("GreaterOrEqual")
def greater_or_equal(a, b):
    """C = (A >= B), bool."""
    return _compare("GreaterOrEqual", np.greater_equal, a, b)


@register("Not")
def not_(x):
    """Y = not X (bool)."""
    x = np.asarray(x)
    if x.dtype != np.bool_:
        raise OpError(f"Not: input has dtype {x.dtype}, expected bool")
    return _out(np.logical_not(x), np.bool_)


def _variadic(op: str, fn, inputs) -> np.ndarray:
    if not inputs:
        raise OpError(f"{op}: no inputs, expected at least one")
    dtype = _same_dtype(op, *inputs)
    shape = _broadcast(op, *inputs)
    if len(inputs) == 1:
        return _out(np.array(inputs[0], copy=True), dtype)
    result = fn(inputs[0], inputs[1])
    for a in inputs[2:]:        # into the new array once it has the final shape (no copies)
        done = isinstance(result, np.ndarray) and result.shape == shape
        result = fn(result, a, out=result) if done else fn(result, a)
    return _out(result, dtype)


def _max_min(op: str, inputs, maximum: bool) -> np.ndarray:
    if len(inputs) < 2 or np.asarray(inputs[0]).dtype.kind != "f":
        return _variadic(op, np.maximum if maximum else np.minimum, inputs)
    dtype = _same_dtype(op, *inputs)
    _broadcast(op, *inputs)
    return _out(eigen_minmax.max_min(inputs, maximum), dtype)


@register("Max")
def max_(*inputs):
    """Elementwise maximum of all inputs (broadcasting), folded left to right as ONNX Runtime
    does; NaN propagates, and a NaN or a tie of +0 and -0 returns the operand ORT's Eigen
    expression returns (:mod:`qsim.kernels.eigen_minmax`)."""
    return _max_min("Max", inputs, True)


@register("Min")
def min_(*inputs):
    """Elementwise minimum of all inputs, as :func:`max_` (NaN and ±0 as ONNX Runtime)."""
    return _max_min("Min", inputs, False)


@register("Sum")
def sum_(*inputs, then_relu=False):
    """Elementwise sum of all inputs (broadcasting), added left to right. ``then_relu`` (from
    the executor): return ``Relu`` of the sum, in place on the new array."""
    y = _variadic("Sum", np.add, inputs)
    return _relu_in_place(y) if then_relu else y


@register("Mean")
def mean(*inputs):
    """Elementwise mean of all inputs (broadcasting): their sum, added left to right, times
    1 / count (ONNX Runtime multiplies by the rounded reciprocal)."""
    total = _variadic("Mean", np.add, inputs)
    t = total.dtype.type
    return _out(total * (t(1) / t(len(inputs))), total.dtype)


def _logical(op: str, fn, a, b) -> np.ndarray:
    for name, v in (("A", a), ("B", b)):
        if np.asarray(v).dtype != np.bool_:
            raise OpError(f"{op}: input {name} has dtype {np.asarray(v).dtype}, expected bool")
    _broadcast(op, a, b)
    return _out(fn(a, b), np.bool_)


@register("And")
def and_(a, b):
    """C = A and B (bool, broadcasting)."""
    return _logical("And", np.logical_and, a, b)


@register("Or")
def or_(a, b):
    """C = A or B (bool, broadcasting)."""
    return _logical("Or", np.logical_or, a, b)


@register("Xor")
def xor(a, b):
    """C = A xor B (bool, broadcasting)."""
    return _logical("Xor", np.logical_xor, a, b)


# --------------------------------------------------------------------------------------------
# type and identity

#: ONNX TensorProto.DataType code → NumPy dtype (the types NumPy can hold)
ONNX_DTYPES = {
    1: np.dtype(np.float32), 2: np.dtype(np.uint8), 3: np.dtype(np.int8),
    4: np.dtype(np.uint16), 5: np.dtype(np.int16), 6: np.dtype(np.int32),
    7: np.dtype(np.int64), 9: np.dtype(np.bool_), 10: np.dtype(np.float16),
    11: np.dtype(np.float64), 12: np.dtype(np.uint32), 13: np.dtype(np.uint64),
}


@register("Cast")
def cast(x, *, to=None, saturate=1):
    """Y = X converted to the ONNX type code ``to`` (1 float32, 7 int64, 9 bool, ...).

    float → int truncates toward zero; → bool is X != 0. ``saturate`` only concerns float8
    types, which are not supported.

    >>> cast(np.array([-2.7, 2.7], np.float32), to=7).tolist()
    [-2, 2]
    """
    if to not in ONNX_DTYPES:
        names = ", ".join(f"{k} ({v.name})" for k, v in ONNX_DTYPES.items())
        raise OpError(f"Cast: attribute to={to!r} is not a supported type code, expected one "
                      f"of {names}")
    x = np.asarray(x)
    with np.errstate(invalid="ignore", over="ignore"):
        return _out(x.astype(ONNX_DTYPES[to]), ONNX_DTYPES[to])


@register("CastLike")
def cast_like(x, target_type, *, saturate=1):
    """Y = X converted to the dtype of ``target_type`` (whose values are ignored), as Cast."""
    target = np.asarray(target_type).dtype
    codes = {v: k for k, v in ONNX_DTYPES.items()}
    if target not in codes:
        raise OpError(f"CastLike: input target_type has dtype {target}, expected one of "
                      f"{sorted(d.name for d in codes)}")
    return cast(x, to=codes[target], saturate=saturate)


@register("Identity")
def identity(x):
    """Y = X (the same values; a new array object)."""
    return np.array(x, copy=True)


@register("Dropout")
def dropout(data, ratio_input=None, training_mode=None, *, ratio=None, seed=None, is_test=None,
            noutputs=1, opset=17):
    """Inference Dropout: output = data; the optional mask output is, as ONNX Runtime gives it,
    all True from opset 12, all False at opsets 10-11 and zeros of data's dtype before 10.

    ``ratio`` is an input from opset 12 and an attribute before; it has no effect at inference.
    ``is_test`` (opset 1-6) must not be 0, and ``training_mode`` = true (random dropping) is
    refused: qsim simulates inference only.
    """
    if training_mode is not None and bool(np.asarray(training_mode).reshape(-1)[0]):
        raise OpError("Dropout: input training_mode is true, expected false "
                      "(qsim simulates inference only)")
    if is_test is not None and not is_test:
        raise OpError("Dropout: attribute is_test=0 (training) is not supported, expected 1 "
                      "(qsim simulates inference only)")
    output = np.array(data, copy=True)
    if noutputs == 1:
        return output
    if opset >= 12:
        return output, np.ones(np.shape(data), dtype=np.bool_)
    return output, np.zeros(np.shape(data), dtype=np.bool_ if opset >= 10 else output.dtype)


# --------------------------------------------------------------------------------------------
# more activations and tests (opsets 9-24)


@register("Sin")
def sin(x):
    """Y = sin(X); float32 as ONNX Runtime's Eigen sine (:func:`qsim.kernels.eigen_math.sin`)."""
    x = _float_input("Sin", x)
    if x.dtype == np.float32:
        return eigen_math.sin(x)  # ORT's Eigen packet sine, bit for bit
    with np.errstate(invalid="ignore"):
        return _out(np.sin(x), x.dtype)


@register("Cos")
def cos(x):
    """Y = cos(X); float32 as ONNX Runtime's Eigen cosine (:func:`qsim.kernels.eigen_math.cos`)."""
    x = _float_input("Cos", x)
    if x.dtype == np.float32:
        return eigen_math.cos(x)  # ORT's Eigen packet cosine, bit for bit
    with np.errstate(invalid="ignore"):
        return _out(np.cos(x), x.dtype)


@register("IsNaN")
def is_nan(x):
    """Y = X is NaN (bool)."""
    x = _float_input("IsNaN", x)
    return _out(np.isnan(x), np.bool_)


@register("IsInf")
def is_inf(x, *, detect_negative=1, detect_positive=1):
    """Y = X is +inf (when detect_positive) or -inf (when detect_negative), bool."""
    x = _float_input("IsInf", x)
    return _out((np.isposinf(x) & bool(detect_positive)) | (np.isneginf(x) & bool(detect_negative)),
                np.bool_)


@register("ThresholdedRelu")
def thresholded_relu(x, *, alpha=1.0):
    """Y = X if X > alpha else 0."""
    x = _float_input("ThresholdedRelu", x)
    return _out(np.where(x > x.dtype.type(alpha), x, x.dtype.type(0)), x.dtype)


@register("Shrink")
def shrink(x, *, bias=0.0, lambd=0.5):
    """Y = X + bias if X < -lambd, X - bias if X > lambd, else 0 (any numeric dtype; bias and
    lambd are taken in X's dtype)."""
    x = np.asarray(x)
    t = x.dtype.type
    with np.errstate(over="ignore"):
        y = np.where(x < -np.float64(lambd), x + t(bias),
                     np.where(x > np.float64(lambd), x - t(bias), t(0)))
    return _out(y, x.dtype)


@register("Celu")
def celu(x, *, alpha=1.0):
    """Y = max(0, X) + min(0, alpha · (exp(X / alpha) - 1)); float32 as ONNX Runtime's Eigen
    expression (:func:`qsim.kernels.eigen_math.celu`)."""
    x = _float_input("Celu", x)
    if x.dtype == np.float32:
        return eigen_math.celu(x, alpha)  # ORT's Eigen expression, bit for bit
    a = x.dtype.type(alpha)
    with np.errstate(over="ignore"):
        neg = a * np.expm1(np.minimum(x, 0) / a)
    return _out(np.maximum(x, 0) + np.minimum(neg, 0), x.dtype)


@register("Mish")
def mish(x):
    """Y = X · tanh(Softplus(X)), computed as ONNX's function body (Softplus, Tanh, Mul)."""
    x = _float_input("Mish", x)
    return _out(x * tanh(softplus(x)), x.dtype)


@register("Swish")
def swish(x, *, alpha=1.0):
    """Y = X · Sigmoid(alpha · X) (opset 24), computed as ONNX's function body."""
    x = _float_input("Swish", x)
    return _out(x * sigmoid(_out(x.dtype.type(alpha) * x, x.dtype)), x.dtype)
