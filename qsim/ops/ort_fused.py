"""Ops that ONNX Runtime's graph optimizer creates, bit-exact with its CPU kernels (1.32, x86).

A default ONNX Runtime session rewrites a model before running it (qsim.integer.ort_fusion); these
are the nodes of the rewritten graph that are not QDQ integer kernels:

* **SimplifiedLayerNormalization** (ONNX Runtime registers it in the default domain; created by
  ``SimplifiedLayerNormFusion`` from ``Pow → ReduceMean → Add → Sqrt → Div → Mul``): RMS
  normalisation over the axes ``axis..rank-1``, ``y = x ⊘ sqrt(mean(x²) ⊕ eps) ⊗ scale`` with
  ONNX Runtime's summation order (:func:`qsim.kernels.mlas_math.rms_norm_rows`), or, for a
  Scale that only broadcasts, its generic path in double. ONNX's opset-23 **RMSNormalization**
  runs on the same kernel.
* **FusedGemm** (com.microsoft; ``GemmActivationFusion``: Gemm → activation): ONNX Runtime's Gemm
  kernel with the activation's element-wise functor applied to the finished output, i.e. the
  bits of Gemm followed by the activation op.
* **QLinearWhere** (com.microsoft; the QDQ group ``DQ x, DQ y → Where → Q``): two 256-entry
  lookup tables ``t_x[q] = QuantizeLinear(s_x ⊗ float(q - z_x), s_z, z_z)`` (and ``t_y``), then
  ``z = condition ? t_x[x] : t_y[y]`` with Where's broadcasting.
* **RotaryEmbedding** (ONNX opset 23), which ONNX Runtime runs natively (MLAS) rather than as
  its function body: ``fma(x1, c, -(x2 ⊗ s))``, ``fma(x1, s, x2 ⊗ c)`` per pair.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import OpError
from ..kernels import mlas_math
from .contrib_quantized import _check_8bit_params, _quantized_table, _scale, _table_lookup
from .registry import OPS, internal_keywords, register

F32 = np.float32


# ---------------------------------------------------------------------------------------------
# SimplifiedLayerNormalization / RMSNormalization
# ---------------------------------------------------------------------------------------------
def _broadcasts(shape, to) -> bool:
    """``shape`` broadcasts (unidirectionally) to ``to``."""
    if len(shape) > len(to):
        return False
    return all(a in (1, b) for a, b in zip(reversed(shape), reversed(to)))


def generic_norm(x, scale, bias, axis: int, epsilon: float, *, simplified: bool):
    """ONNX Runtime's generic (broadcasting) normalization path, ``ComputeJobGenericShared``
    of layer_norm_impl.cc, all in double; per row of the n values from ``axis`` on::

        m = (0 + x0 + x1 + …) / n      q = 0 + x0·x0 + x1·x1 + …      (in order)
        r = sqrt(q / n + double(eps))              (simplified: RMSNorm)
        r = sqrt(q / n - m·m + double(eps))        (LayerNorm)
        Y = T((x / r) · scale)   or   T(((x - m) / r) · scale + bias)

    Scale and bias broadcast to X. Returns ``(Y, mean, inv)`` with ``mean = float(m)`` and
    ``inv = float(1 / r)``, one per row."""
    rows = math.prod(x.shape[:axis])
    n = math.prod(x.shape[axis:])
    x64 = x.astype(np.float64).reshape(rows, n)
    total = np.zeros(rows)
    q = np.zeros(rows)
    for i in range(n):
        total = total + x64[:, i]
        q = q + x64[:, i] * x64[:, i]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / n
        eps = float(np.float32(epsilon))
        root = np.sqrt(q / n + eps) if simplified else np.sqrt(q / n - mean * mean + eps)
        s64 = np.broadcast_to(np.asarray(scale, np.float64), x.shape).reshape(rows, n)
        if simplified:
            y = (x64 / root[:, None]) * s64
        else:
            y = ((x64 - mean[:, None]) / root[:, None]) * s64
            if bias is not None:
                y = y + np.broadcast_to(np.asarray(bias, np.float64), x.shape).reshape(rows, n)
        return y.astype(x.dtype).reshape(x.shape), mean.astype(F32), (1.0 / root).astype(F32)


def _rms_normalize(op: str, x, scale, axis: int, epsilon: float, noutputs: int):
    """``(Y, InvStdDev)[:noutputs]`` of RMS normalisation over ``axis..rank-1`` (see the module
    docstring). float32 with a Scale of exactly the normalized size: ONNX Runtime's fast path;
    any other Scale that broadcasts to X, or float64: the double path (:func:`generic_norm`;
    float16 is computed the same way, ONNX Runtime's float path is not reproduced)."""
    x = np.asarray(x)
    rank = x.ndim
    if not -rank <= axis < rank:
        raise OpError(f"{op}: attribute axis={axis} is out of range for X of rank {rank} "
                      f"(expected {-rank}..{rank - 1})")
    axis %= rank
    n = math.prod(x.shape[axis:])
    scale = np.asarray(scale)
    stats_shape = x.shape[:axis] + (1,) * (rank - axis)
    if not _broadcasts(scale.shape, x.shape):
        raise OpError(f"{op}: Scale has shape {list(scale.shape)}, which does not broadcast "
                      f"to X {list(x.shape)}")
    full = scale.size == n and _broadcasts(scale.shape, x.shape[axis:])
    if x.dtype == np.float32 and x.size and full:
        y, inv = mlas_math.rms_norm_rows(x.reshape(-1, n), scale.astype(F32).ravel(),
                                         F32(epsilon))
        y = y.reshape(x.shape)
    else:       # the generic path; ComputeJob<double> computes the same
        y, _, inv = generic_norm(x, scale, None, axis, epsilon, simplified=True)
    return y if noutputs == 1 else (y, inv.reshape(stats_shape))[:noutputs]


@register("SimplifiedLayerNormalization")
def simplified_layer_normalization(x, scale, *, axis=-1, epsilon=1e-5, stash_type=1,
                                   noutputs=1):
    """ONNX Runtime's ``SimplifiedLayerNormalization`` (RMSNorm; outputs ``Y`` and optional
    ``inv_std_var``)::

        r = sqrt(sum(x²) / n + epsilon)   over the axes axis..rank-1 (n values per row)
        Y = x / r * Scale,   inv_std_var = 1 / r

    float32 with ONNX Runtime's operation order (:func:`qsim.kernels.mlas_math.rms_norm_rows`:
    MLAS's AVX2 kernel from 16 values per row, a scalar loop below). ``Scale`` has exactly n
    values. ``stash_type`` is accepted (the CPU kernel keeps float32 statistics).

    >>> simplified_layer_normalization(np.array([[2.0, -2.0]], np.float32),
    ...                                np.array([1.0, 0.5], np.float32), epsilon=0.0).tolist()
    [[1.0, -0.5]]
    """
    return _rms_normalize("SimplifiedLayerNormalization", x, scale, int(axis), epsilon,
                          noutputs)


@register("RMSNormalization")
def rms_normalization(x, scale, *, axis=-1, epsilon=1e-5, stash_type=1):
    """ONNX ``RMSNormalization`` (opset 23), which ONNX Runtime runs on the kernel of
    :func:`simplified_layer_normalization`::

        Y = X / sqrt(mean(X², axes axis..rank-1) + epsilon) * Scale

    A Scale with exactly the normalized shape's values takes the float32 fast path (MLAS from
    16 values per row); a Scale that only broadcasts to X, ONNX Runtime's generic path in
    double (:func:`generic_norm`). ``stash_type`` must be 1 (float32)."""
    if stash_type != 1:
        raise OpError(f"RMSNormalization: attribute stash_type={stash_type} is not supported "
                      f"(expected 1: float32)")
    return _rms_normalize("RMSNormalization", x, scale, int(axis), epsilon, 1)


# ---------------------------------------------------------------------------------------------
# RotaryEmbedding (opset 23)
# ---------------------------------------------------------------------------------------------
#: pairs MLAS's interleaved RoPE kernel rotates per vector step (16 floats)
_ROPE_PAIRS = 8


def _rotate(x1, x2, c, s, fused):
    """``(real, imag)`` of one rotation: with ``fused`` as MLAS computes it,
    ``real = fma(x1, c, -(x2 ⊗ s))``, ``imag = fma(x1, s, x2 ⊗ c)``; otherwise
    ``real = x1 ⊗ c ⊖ x2 ⊗ s``, ``imag = x1 ⊗ s ⊕ x2 ⊗ c``."""
    if fused:
        return (mlas_math._fma_np(x1, c, -(x2 * s).astype(F32)),
                mlas_math._fma_np(x1, s, (x2 * c).astype(F32)))
    return (((x1 * c).astype(F32) - (x2 * s).astype(F32)).astype(F32),
            ((x1 * s).astype(F32) + (x2 * c).astype(F32)).astype(F32))


@register("RotaryEmbedding")
def rotary_embedding(x, cos_cache, sin_cache, position_ids=None, *, interleaved=0,
                     num_heads=0, rotary_embedding_dim=0):
    """ONNX ``RotaryEmbedding`` (opset 23) as ONNX Runtime's kernel (MLAS) computes it.

    X is ``(B, H, S, D)`` or ``(B, S, H·D)`` (then ``num_heads`` is required); the first
    ``d = rotary_embedding_dim or D`` values of every head are rotated, the rest copied. Pairs
    ``(x1, x2)``: the two halves of those d values, or (``interleaved``) even and odd ones;
    ``c, s``: ``cos_cache``, ``sin_cache`` at ``[b, s]`` (or at ``position_ids[b, s]``)::

        real = fma(x1, c, -(x2 ⊗ s))      imag = fma(x1, s, x2 ⊗ c)

    with one exception measured on ONNX Runtime 1.32: interleaved, the pairs after the whole
    steps of 8 pairs and the first one of the rest are computed without FMA,
    ``real = x1 ⊗ c ⊖ x2 ⊗ s``, ``imag = x1 ⊗ s ⊕ x2 ⊗ c``."""
    x = np.asarray(x)
    op = "RotaryEmbedding"
    if x.ndim == 4:
        xt = x.transpose(0, 2, 1, 3)
    elif x.ndim == 3:
        if not num_heads or x.shape[2] % int(num_heads):
            raise OpError(f"{op}: a 3-D input {list(x.shape)} needs attribute num_heads "
                          f"dividing its last dimension (got num_heads={num_heads})")
        xt = x.reshape(x.shape[0], x.shape[1], int(num_heads), x.shape[2] // int(num_heads))
    else:
        raise OpError(f"{op}: input X has rank {x.ndim}, expected 3 or 4")
    d = int(rotary_embedding_dim) or xt.shape[3]
    if d % 2 or d > xt.shape[3]:
        raise OpError(f"{op}: rotary_embedding_dim={d} must be even and at most the head size "
                      f"{xt.shape[3]}")
    cos, sin = np.asarray(cos_cache), np.asarray(sin_cache)
    if position_ids is not None:
        cos, sin = cos[np.asarray(position_ids)], sin[np.asarray(position_ids)]
    if cos.shape != (xt.shape[0], xt.shape[1], d // 2) or sin.shape != cos.shape:
        raise OpError(f"{op}: cos/sin caches give {list(cos.shape)} and {list(sin.shape)} per "
                      f"(batch, position), expected {[xt.shape[0], xt.shape[1], d // 2]}")
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    rot = xt[..., :d]
    x1, x2 = (rot[..., 0::2], rot[..., 1::2]) if interleaved else (rot[..., :d // 2],
                                                                   rot[..., d // 2:])
    exact = x.dtype == np.float32
    real, imag = _rotate(x1, x2, c, s, exact)
    if exact and interleaved:
        start = (d // 2) // _ROPE_PAIRS * _ROPE_PAIRS + 1
        if start < d // 2:
            real[..., start:], imag[..., start:] = _rotate(
                x1[..., start:], x2[..., start:], c[..., start:], s[..., start:], False)
    out = xt.copy()
    if interleaved:
        out[..., 0:d:2], out[..., 1:d:2] = real, imag
    else:
        out[..., :d // 2], out[..., d // 2:d] = real, imag
    return out.transpose(0, 2, 1, 3) if x.ndim == 4 else out.reshape(x.shape)


# ---------------------------------------------------------------------------------------------
# FusedGemm
# ---------------------------------------------------------------------------------------------
#: FusedGemm activations (GemmActivationFusion's list) → their attribute names
_GEMM_ACTIVATIONS = {"Relu": (), "Tanh": (), "Sigmoid": (), "Softsign": (), "Softplus": (),
                     "LeakyRelu": ("alpha",), "Elu": ("alpha",), "HardSigmoid": ("alpha", "beta"),
                     "Selu": ("alpha", "gamma"), "ThresholdedRelu": ("alpha",)}


def _call(op: str, args: list, attrs: dict, *, constant_b=False, fp32_kernels="avx2"):
    """Call the library op ``op`` with the internal keywords it takes."""
    fn = OPS[op]
    kwargs = dict(attrs)
    wanted = internal_keywords(fn)
    if "constant_b" in wanted:
        kwargs["constant_b"] = constant_b
    if "fp32_kernels" in wanted:
        kwargs["fp32_kernels"] = fp32_kernels
    if "noutputs" in wanted:
        kwargs["noutputs"] = 1
    return fn(*args, **kwargs)


@register("FusedGemm")
def fused_gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, activation="",
               activation_alpha=None, activation_beta=None, activation_gamma=None,
               constant_b=False, fp32_kernels="avx2"):
    """com.microsoft ``FusedGemm``: ``Y = act(alpha · A' @ B' + beta · C)``.

    ONNX Runtime's FusedGemm is its Gemm kernel whose finished output goes through the
    activation's element-wise functor, the one the standalone activation op runs: the bits
    are those of :func:`qsim.ops.nn.gemm` followed by the activation op (``activation_<attr>``
    attributes are the activation's own, e.g. ``activation_alpha`` of LeakyRelu)."""
    if isinstance(activation, bytes):
        activation = activation.decode()
    if activation not in _GEMM_ACTIVATIONS:
        raise OpError(f"FusedGemm: activation '{activation}' is not supported (expected one of "
                      f"{sorted(_GEMM_ACTIVATIONS)})")
    y = _call("Gemm", [a, b, c], dict(alpha=alpha, beta=beta, transA=transA, transB=transB),
              constant_b=constant_b, fp32_kernels=fp32_kernels)
    given = {"alpha": activation_alpha, "beta": activation_beta, "gamma": activation_gamma}
    attrs = {k: float(given[k]) for k in _GEMM_ACTIVATIONS[activation] if given[k] is not None}
    result = _call(activation, [y], attrs, fp32_kernels=fp32_kernels)
    return result[0] if isinstance(result, tuple) else result


# ---------------------------------------------------------------------------------------------
# QLinearWhere
# ---------------------------------------------------------------------------------------------
@register("QLinearWhere")
def qlinear_where(condition, x, x_scale, x_zero_point, y, y_scale, y_zero_point, z_scale,
                  z_zero_point):
    """com.microsoft ``QLinearWhere`` (int8/uint8, per-tensor parameters)::

        t_x[q] = QuantizeLinear(s_x ⊗ float(q - z_x), s_z, z_z)     (and t_y likewise)
        Z = condition ? t_x[X] : t_y[Y]                               (broadcast as Where)

    ONNX Runtime selects ``t_x[X]`` where the condition holds and 0 elsewhere, ``t_y[Y]``
    where it does not and 0 elsewhere, and merges with ``a != 0 ? a : b``: the same values.

    >>> qlinear_where(np.array([True, False]), np.array([10, 10], np.uint8), np.float32(1.0),
    ...               np.uint8(0), np.array([4, 4], np.uint8), np.float32(1.0), np.uint8(0),
    ...               np.float32(2.0), np.uint8(0)).tolist()
    [5, 2]
    """
    op = "QLinearWhere"
    condition = np.asarray(condition)
    if condition.dtype != np.bool_:
        raise OpError(f"{op}: condition has dtype {condition.dtype}, expected bool")
    if np.asarray(y).dtype != np.asarray(x).dtype:
        raise OpError(f"{op}: X is {np.asarray(x).dtype} but Y is {np.asarray(y).dtype} "
                      f"(they must have one type)")
    x, z_x, z_z = _check_8bit_params(op, x, x_zero_point, z_zero_point)
    y, z_y, _ = _check_8bit_params(op, y, y_zero_point, z_zero_point)
    s_z = _scale(op, "z_scale", z_scale)
    tx = _quantized_table(x.dtype, _scale(op, "x_scale", x_scale), z_x, s_z, z_z,
                          lambda v: v)
    ty = _quantized_table(y.dtype, _scale(op, "y_scale", y_scale), z_y, s_z, z_z,
                          lambda v: v)
    return np.where(condition, _table_lookup(x, tx), _table_lookup(y, ty)).astype(x.dtype)
