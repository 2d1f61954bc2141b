"""One VJP per ONNX op (see :mod:`qsim.grad.registry` for the calling convention), float32.

Each docstring gives the derivative; ``gy`` is ∂L/∂Y.
"""
from __future__ import annotations

import numpy as np

from ..errors import OpError
from .blas import halves, run_all
from .registry import register_vjp, unbroadcast

F32 = np.float32


def _f32(a):
    return np.array(a, dtype=F32)


# ---------------------------------------------------------------- elementwise, one input

@register_vjp("Relu", saves=("outputs",))
def relu(gy, *, inputs, outputs):
    """dx = gy · [y > 0]."""
    return (np.where(outputs[0] > 0, gy, F32(0)).astype(F32, copy=False),)


@register_vjp("LeakyRelu", saves=("inputs",))
def leaky_relu(gy, *, inputs, outputs, alpha=0.01):
    """dx = gy · (x > 0 ? 1 : alpha)."""
    return (_f32(np.where(inputs[0] > 0, gy, gy * F32(alpha))),)


@register_vjp("Clip", saves=("inputs",))
def clip(gy, *, inputs, outputs, min=None, max=None):  # noqa: A002 - ONNX names
    """dx = gy · [lo <= x <= hi] (bounds from inputs 1, 2 or the attributes); bounds get none."""
    x = inputs[0]
    lo = inputs[1] if len(inputs) > 1 and inputs[1] is not None else min
    hi = inputs[2] if len(inputs) > 2 and inputs[2] is not None else max
    inside = np.ones(x.shape, bool)
    if lo is not None:
        inside &= x >= lo
    if hi is not None:
        inside &= x <= hi
    return (_f32(np.where(inside, gy, F32(0))),) + (None,) * (len(inputs) - 1)


@register_vjp("Sigmoid", saves=("outputs",))
def sigmoid(gy, *, inputs, outputs):
    """dx = gy · y · (1 - y)."""
    y = outputs[0]
    return (_f32(gy * y * (F32(1) - y)),)


@register_vjp("Tanh", saves=("outputs",))
def tanh(gy, *, inputs, outputs):
    """dx = gy · (1 - y²)."""
    y = outputs[0]
    return (_f32(gy * (F32(1) - y * y)),)


@register_vjp("HardSigmoid", saves=("inputs",))
def hard_sigmoid(gy, *, inputs, outputs, alpha=0.2, beta=0.5):
    """dx = gy · alpha where 0 < alpha·x + beta < 1, else 0."""
    t = F32(alpha) * inputs[0] + F32(beta)
    return (_f32(np.where((t > 0) & (t < 1), gy * F32(alpha), F32(0))),)


@register_vjp("HardSwish", saves=("inputs",))
def hard_swish(gy, *, inputs, outputs):
    """y = x·clamp(x/6 + 1/2, 0, 1): dx = gy · (x < -3 ? 0 : x > 3 ? 1 : x/3 + 1/2)."""
    x = inputs[0]
    d = np.where(x < -3, F32(0), np.where(x > 3, F32(1), x / F32(3) + F32(0.5)))
    return (_f32(gy * d),)


@register_vjp("Erf", saves=("inputs",))
def erf(gy, *, inputs, outputs):
    """dx = gy · 2/√π · exp(-x²)."""
    x = inputs[0]
    return (_f32(gy * F32(2 / np.sqrt(np.pi)) * np.exp(-x * x)),)


@register_vjp("Sqrt", saves=("outputs",))
def sqrt(gy, *, inputs, outputs):
    """dx = gy / (2·y)."""
    return (_f32(gy / (F32(2) * outputs[0])),)


# ---------------------------------------------------------------- elementwise, broadcasting

@register_vjp("Add", saves=("inputs",))
def add(gy, *, inputs, outputs):
    """da = gy, db = gy, each summed back to its input's shape."""
    return unbroadcast(gy, inputs[0].shape), unbroadcast(gy, inputs[1].shape)


@register_vjp("Sub", saves=("inputs",))
def sub(gy, *, inputs, outputs):
    """da = gy, db = -gy (summed back to each input's shape)."""
    return unbroadcast(gy, inputs[0].shape), unbroadcast(-gy, inputs[1].shape)


@register_vjp("Mul", saves=("inputs",))
def mul(gy, *, inputs, outputs):
    """da = gy·b, db = gy·a."""
    a, b = inputs
    return unbroadcast(gy * b, a.shape), unbroadcast(gy * a, b.shape)


@register_vjp("Div", saves=("inputs",))
def div(gy, *, inputs, outputs):
    """da = gy/b, db = -gy·a/b²."""
    a, b = inputs
    return unbroadcast(gy / b, a.shape), unbroadcast(-gy * a / (b * b), b.shape)


@register_vjp("Pow", saves=("inputs", "outputs"))
def pow_(gy, *, inputs, outputs):
    """y = a^b: da = gy·b·a^(b-1), db = gy·y·ln a (0 where a <= 0)."""
    a, b = inputs
    y = outputs[0]
    with np.errstate(all="ignore"):
        da = gy * b * np.power(a, b - F32(1))
        db = np.where(a > 0, gy * y * np.log(np.where(a > 0, a, F32(1))), F32(0))
    return unbroadcast(_f32(da), a.shape), unbroadcast(_f32(db), b.shape)


@register_vjp("Where", saves=("inputs",))
def where(gy, *, inputs, outputs):
    """dx = gy·[cond], dy = gy·[not cond]; the condition gets none."""
    c, x, y = inputs
    return (None, unbroadcast(np.where(c, gy, F32(0)), x.shape),
            unbroadcast(np.where(c, F32(0), gy), y.shape))


# ---------------------------------------------------------------- linear algebra

@register_vjp("MatMul", saves=("inputs",))
def matmul(gy, *, inputs, outputs):
    """Y = A @ B (numpy.matmul semantics): dA = gy @ Bᵀ, dB = Aᵀ @ gy (batch axes summed back)."""
    a, b = inputs
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = gy
    if a.ndim == 1:
        g2 = np.expand_dims(g2, -2)
    if b.ndim == 1:
        g2 = np.expand_dims(g2, -1)
    da = np.matmul(g2, np.swapaxes(b2, -1, -2))
    db = np.matmul(np.swapaxes(a2, -1, -2), g2)
    da = da[..., 0, :] if a.ndim == 1 else da
    db = db[..., 0] if b.ndim == 1 else db
    return unbroadcast(_f32(da), a.shape), unbroadcast(_f32(db), b.shape)


@register_vjp("Gemm", saves=("inputs",))
def gemm(gy, *, inputs, outputs, alpha=1.0, beta=1.0, transA=0, transB=0, broadcast=None):
    """Y = alpha·A'B' + beta·C (A' = Aᵀ if transA ...): dA' = alpha·gy B'ᵀ, dB' = alpha·A'ᵀ gy,
    dC = beta·gy summed back to C's shape."""
    a, b = inputs[0], inputs[1]
    # qsim's Gemm also runs with an N-D A (transA = 0, the MatMul-then-Add form the sim builds):
    # its leading axes are rows, so flatten them for the products and restore A's shape after.
    g2 = gy
    if a.ndim > 2 and not transA:
        a, g2 = a.reshape(-1, a.shape[-1]), gy.reshape(-1, gy.shape[-1])
    a2 = a.T if transA else a
    b2 = b.T if transB else b
    da2 = F32(alpha) * (g2 @ b2.T)
    db2 = F32(alpha) * (a2.T @ g2)
    out = [_f32(np.reshape(da2.T if transA else da2, inputs[0].shape)),
           _f32(db2.T if transB else db2)]
    if len(inputs) > 2 and inputs[2] is not None:
        out.append(unbroadcast(_f32(F32(beta) * gy), inputs[2].shape))
    return tuple(out)


def _conv_geometry(x, w, pads, strides, dilations, auto_pad):
    if w.ndim != 4:
        raise OpError(f"the backward of Conv supports 2-D convolutions only, got a weight of "
                      f"shape {w.shape}")
    if auto_pad not in ("NOTSET", "VALID"):
        raise OpError(f"the backward of Conv supports auto_pad NOTSET or VALID, got {auto_pad!r}")
    pads = (0, 0, 0, 0) if pads is None or auto_pad == "VALID" else tuple(pads)
    strides = (1, 1) if strides is None else tuple(strides)
    dilations = (1, 1) if dilations is None else tuple(dilations)
    return pads, strides, dilations


def _windows(xp, kh, kw, strides, dilations, oh, ow):
    """View (N, C, oh, ow, kh, kw) of the padded input's receptive fields."""
    sh, sw = strides
    dh, dw = dilations
    v = np.lib.stride_tricks.sliding_window_view(xp, ((kh - 1) * dh + 1, (kw - 1) * dw + 1),
                                                 axis=(2, 3))
    return v[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :oh, :ow]


def _im2col(x, kshape, pads, strides, dilations, oh, ow, group):
    """``x`` (N, C, H, W) → cols (group, C/group·kh·kw, N·oh·ow), float32 C-contiguous:
    ``cols[g, (c, u, v), (n, i, j)] = X̃[n, g·cg + c, i·sh + u·dh, j·sw + v·dw]``
    (X̃ zero-padded)."""
    n, c = x.shape[:2]
    kh, kw = kshape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    win = _windows(xp, kh, kw, strides, dilations, oh, ow)           # (N, C, oh, ow, kh, kw)
    cols = np.empty((c, kh, kw, n, oh, ow), F32)
    cols[...] = win.transpose(1, 4, 5, 0, 2, 3)
    return cols.reshape(group, c // group * kh * kw, n * oh * ow)


def _col2im(dcols, xshape, kshape, pads, strides, dilations, oh, ow):
    """The adjoint of :func:`_im2col`: ``dX̃[n, c, i·sh + u·dh, j·sw + v·dw] += dcols[(c, u, v),
    (n, i, j)]`` summed over the taps, cropped to the unpadded input (N, C, H, W)."""
    n, c, h, wd = xshape
    kh, kw = kshape
    sh, sw = strides
    dh, dw = dilations
    d6 = dcols.reshape(c, kh, kw, n, oh, ow)
    dxp = np.zeros((c, n, h + pads[0] + pads[2], wd + pads[1] + pads[3]), F32)
    for u in range(kh):
        for v in range(kw):
            dxp[:, :, u * dh:u * dh + sh * (oh - 1) + 1:sh,
                v * dw:v * dw + sw * (ow - 1) + 1:sw] += d6[:, u, v]
    return np.ascontiguousarray(
        dxp[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + wd].transpose(1, 0, 2, 3))


def _gy_groups(gy, group):
    """``gy`` (N, M, oh, ow) → (group, M/group, N·oh·ow), float32 C-contiguous."""
    n, m = gy.shape[:2]
    g = np.ascontiguousarray(np.asarray(gy, F32).transpose(1, 0, 2, 3))
    return g.reshape(group, m // group, -1)


def _split_matmul(a, b):
    """``a @ b`` for stacks (G, M, K) @ (G, K, P), float32, its rows M shared among the worker
    threads of :func:`qsim.grad.blas.run_all` when the product is large."""
    g, m, k = a.shape
    out = np.empty((g, m, b.shape[2]), F32)

    def rows(sl):
        return lambda: np.matmul(a[:, sl], b, out=out[:, sl])

    run_all([rows(sl) for sl in halves(m, g * m * k * b.shape[2])])
    return out


def _conv_dw(g3, x, wshape, pads, strides, dilations, oh, ow):
    """Conv's weight gradient ``dW_g = gy_g · cols_gᵀ`` (``g3`` from :func:`_gy_groups`,
    cols = :func:`_im2col` of ``x``), float32, shape ``wshape``."""
    cols = _im2col(np.asarray(x, F32), wshape[2:], pads, strides, dilations, oh, ow, g3.shape[0])
    return np.matmul(g3, cols.transpose(0, 2, 1)).reshape(wshape)     # fresh float32: no copy


@register_vjp("Conv", saves=("inputs",))
def conv(gy, *, inputs, outputs, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
         pads=None, strides=None):
    """Y[n,o,i,j] = Σ_{c,u,v} X̃[n,c,i·sh+u·dh, j·sw+v·dw]·W[o,c,u,v] + B[o] (X̃ zero-padded),
    i.e. per group ``Y_g = W_g · cols_g`` with cols = im2col(X̃). Hence, one float32 GEMM each:
    dW_g = gy_g · cols_gᵀ, dX = col2im(W_gᵀ · gy_g), dB = Σ_{n,i,j} gy. The two products are
    independent and run at once (:func:`qsim.grad.blas.run_all`)."""
    x, w = inputs[0], inputs[1]
    pads, strides, dilations = _conv_geometry(x, w, pads, strides, dilations, auto_pad)
    m, kshape = w.shape[0], w.shape[2:]
    oh, ow = gy.shape[2:]
    g3 = _gy_groups(gy, group)
    w3 = np.asarray(w, F32).reshape(group, m // group, -1)

    def input_grad():
        dcols = np.matmul(w3.transpose(0, 2, 1), g3)
        return _col2im(dcols, x.shape, kshape, pads, strides, dilations, oh, ow)

    dx, dw_ = run_all([input_grad,
                       lambda: _conv_dw(g3, x, w.shape, pads, strides, dilations, oh, ow)])
    out = [dx, dw_]
    if len(inputs) > 2 and inputs[2] is not None:
        out.append(_f32(gy.sum(axis=(0, 2, 3), dtype=F32)))
    return tuple(out)


def conv_forward(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                 pads=None, strides=None, fp32_kernels="auto"):
    """The training forward of a 2-D Conv: per group ``Y_g = W_g · cols_g (+ B)``, one float32
    BLAS product over :func:`_im2col`, in BLAS's summation order. aimet-torch trains with
    torch's own kernels, not ONNX Runtime's, so the exact MLAS order of ``qsim.ops`` Conv buys
    nothing here (qat.md §9 replays its golden CNN with im2col + BLAS); it is several times
    slower. Anything but a float32 2-D Conv with explicit pads (or VALID), consistent shapes and
    a non-empty output goes to the exact op, which also reports bad operands."""
    from ..ops.registry import OPS
    attrs = {"auto_pad": auto_pad, "dilations": dilations, "group": group,
             "kernel_shape": kernel_shape, "pads": pads, "strides": strides}
    fast = (isinstance(x, np.ndarray) and isinstance(w, np.ndarray) and x.dtype == F32
            and w.dtype == F32 and x.ndim == 4 and w.ndim == 4 and auto_pad in ("NOTSET", "VALID")
            and group >= 1 and w.shape[1] * group == x.shape[1] and w.shape[0] % group == 0
            and (kernel_shape is None or tuple(kernel_shape) == w.shape[2:])
            and (b is None or (b.dtype == F32 and b.shape == (w.shape[0],))))
    if fast:
        pd, st, dl = _conv_geometry(x, w, pads, strides, dilations, auto_pad)
        kh, kw = w.shape[2:]
        oh = (x.shape[2] + pd[0] + pd[2] - (kh - 1) * dl[0] - 1) // st[0] + 1
        ow = (x.shape[3] + pd[1] + pd[3] - (kw - 1) * dl[1] - 1) // st[1] + 1
        fast = oh >= 1 and ow >= 1
    if not fast:
        return OPS["Conv"](x, w, b, fp32_kernels=fp32_kernels, **attrs)
    n, m = x.shape[0], w.shape[0]
    cols = _im2col(x, (kh, kw), pd, st, dl, oh, ow, group)
    y = _split_matmul(w.reshape(group, m // group, -1), cols).reshape(m, n, oh, ow)
    if b is not None:
        y += b.reshape(m, 1, 1, 1)
    return np.ascontiguousarray(y.transpose(1, 0, 2, 3))


#: forward ops that training may run instead of :mod:`qsim.ops`' (same semantics, BLAS order)
TRAINING_FORWARD = {"Conv": conv_forward}


@register_vjp("ConvTranspose", saves=("inputs",))
def conv_transpose(gy, *, inputs, outputs, auto_pad="NOTSET", dilations=None, group=1,
                   kernel_shape=None, output_padding=None, output_shape=None, pads=None,
                   strides=None):
    """Y = C_Wᵀ X (+ B), where C_W is the Conv with the same W (read as (C_in, C_out/group, k)),
    pads, strides, dilations and group, mapping C_out channels to C_in. Hence
    dX = C_W(gy) (a Conv forward of gy), dW = ∂<X, C_W(G)>/∂W at G = gy (Conv's weight VJP with
    input gy and output gradient X), dB = Σ_{n,i,j} gy. Output padding only adds rows that C_W
    never reads back, so it needs nothing here; an explicit output_shape is not supported."""
    from ..ops.registry import OPS
    x, w = inputs[0], inputs[1]
    if output_shape is not None:
        raise OpError("the backward of ConvTranspose does not support output_shape; give pads "
                      "and output_padding instead")
    geom = {"auto_pad": auto_pad, "dilations": dilations, "group": group, "pads": pads,
            "strides": strides}
    pads_, strides_, dil_ = _conv_geometry(gy, w, pads, strides, dilations, auto_pad)
    geom.update(pads=tuple(pads_), strides=tuple(strides_), dilations=tuple(dil_),
                auto_pad="NOTSET")
    dx = OPS["Conv"](_f32(gy), _f32(w), **geom)
    dx = dx[0] if isinstance(dx, tuple) else dx
    dx = dx[:, :, :x.shape[2], :x.shape[3]]
    dw = _conv_dw(_gy_groups(x, group), gy, w.shape, pads_, strides_, dil_, *x.shape[2:])
    out = [_f32(dx), _f32(dw)]
    if len(inputs) > 2 and inputs[2] is not None:
        out.append(_f32(gy.sum(axis=(0, 2, 3), dtype=F32)))
    return tuple(out)


# ---------------------------------------------------------------- pooling and reductions

@register_vjp("GlobalAveragePool", saves=("inputs",))
def global_average_pool(gy, *, inputs, outputs):
    """Y = mean over the spatial axes: dx = gy / (number of spatial elements), broadcast."""
    x = inputs[0]
    k = int(np.prod(x.shape[2:]))
    return (_f32(np.broadcast_to(gy / F32(k), x.shape)),)


def _reduce_axes(x, axes_input, axes, noop):
    ax = axes_input if axes_input is not None else axes
    if ax is None or len(ax) == 0:
        return () if noop else tuple(range(x.ndim))
    return tuple(int(a) % x.ndim for a in np.asarray(ax).reshape(-1))


@register_vjp("ReduceSum", saves=("inputs",))
def reduce_sum(gy, *, inputs, outputs, axes=None, keepdims=1, noop_with_empty_axes=0):
    """dx = gy broadcast back over the reduced axes."""
    x = inputs[0]
    ax = _reduce_axes(x, inputs[1] if len(inputs) > 1 else None, axes, noop_with_empty_axes)
    g = gy if keepdims else np.expand_dims(gy, ax)
    return (_f32(np.broadcast_to(g, x.shape)),) + (None,) * (len(inputs) - 1)


@register_vjp("ReduceMean", saves=("inputs",))
def reduce_mean(gy, *, inputs, outputs, axes=None, keepdims=1, noop_with_empty_axes=0):
    """dx = gy / (number of reduced elements), broadcast back."""
    x = inputs[0]
    ax = _reduce_axes(x, inputs[1] if len(inputs) > 1 else None, axes, noop_with_empty_axes)
    k = int(np.prod([x.shape[a] for a in ax])) if ax else 1
    g = gy if keepdims else np.expand_dims(gy, ax)
    return (_f32(np.broadcast_to(g / F32(k), x.shape)),) + (None,) * (len(inputs) - 1)


@register_vjp("Softmax", saves=("outputs",))
def softmax(gy, *, inputs, outputs, axis=-1):
    """dx = y · (gy - Σ_axis gy·y)."""
    y = outputs[0]
    ax = -1 if axis is None else axis
    return (_f32(y * (gy - np.sum(gy * y, axis=ax, keepdims=True))),)


@register_vjp("LogSoftmax", saves=("outputs",))
def log_softmax(gy, *, inputs, outputs, axis=-1):
    """dx = gy - exp(y) · Σ_axis gy."""
    y = outputs[0]
    ax = -1 if axis is None else axis
    return (_f32(gy - np.exp(y) * np.sum(gy, axis=ax, keepdims=True)),)


# ---------------------------------------------------------------- shape ops

def _reshape_back(gy, inputs):
    return (_f32(np.reshape(gy, inputs[0].shape)),) + (None,) * (len(inputs) - 1)


for _op in ("Flatten", "Reshape", "Squeeze", "Unsqueeze"):
    register_vjp(_op, saves=("inputs",))(
        lambda gy, *, inputs, outputs, **_: _reshape_back(gy, inputs))


@register_vjp("Transpose")
def transpose(gy, *, inputs, outputs, perm=None):
    """dx = gyᵀ with the inverse permutation."""
    perm = tuple(range(gy.ndim))[::-1] if perm is None else tuple(perm)
    return (_f32(np.transpose(gy, np.argsort(perm))),)


@register_vjp("Concat", saves=("inputs",))
def concat(gy, *, inputs, outputs, axis=None):
    """dx_k = the slice of gy that input k filled."""
    ends = np.cumsum([a.shape[axis] for a in inputs])[:-1]
    return tuple(_f32(p) for p in np.split(gy, ends, axis=axis))


@register_vjp("Gather", saves=("inputs",))
def gather(gy, *, inputs, outputs, axis=0):
    """dx = zeros with gy added at the gathered positions (repeats accumulate); indices: none."""
    data, idx = inputs
    ax = axis % data.ndim
    idx = np.where(idx < 0, idx + data.shape[ax], idx).astype(np.int64)
    dx = np.zeros(data.shape, F32)
    g = np.moveaxis(gy.reshape(data.shape[:ax] + (idx.size,) + data.shape[ax + 1:]), ax, 0)
    np.add.at(np.moveaxis(dx, ax, 0), idx.reshape(-1), g)
    return dx, None


# ---------------------------------------------------------------- more activations, normalization

@register_vjp("Gelu", saves=("inputs",))
def gelu(gy, *, inputs, outputs, approximate="none"):
    """exact: dx = gy·(Φ(x) + x·φ(x)); tanh: u = √(2/π)(x + 0.044715x³),
    dx = gy·(½(1 + tanh u) + ½x(1 - tanh²u)·√(2/π)(1 + 3·0.044715x²))."""
    from ..ops.registry import OPS
    x = inputs[0]
    if approximate == "tanh":
        c = F32(np.sqrt(2 / np.pi))
        t = np.tanh(c * (x + F32(0.044715) * x ** 3))
        d = F32(0.5) * (F32(1) + t) + F32(0.5) * x * (F32(1) - t * t) * c * (
            F32(1) + F32(3 * 0.044715) * x * x)
    else:
        cdf = F32(0.5) * (F32(1) + OPS["Erf"](_f32(x / F32(np.sqrt(2)))))
        d = cdf + x * np.exp(F32(-0.5) * x * x) / F32(np.sqrt(2 * np.pi))
    return (_f32(gy * d),)


@register_vjp("BatchNormalization", saves=("inputs",))
def batch_normalization(gy, *, inputs, outputs, epsilon=1e-5, momentum=0.9, training_mode=0,
                        spatial=1):
    """Inference form y = (x - μ)/√(σ² + ε)·γ + β (channel axis 1; statistics are constants):
    dx = gy·γ/√(σ² + ε), dγ = Σ gy·(x - μ)/√(σ² + ε), dβ = Σ gy; μ, σ² get none."""
    if training_mode:
        raise OpError("the backward of BatchNormalization needs training_mode=0 (fold or use "
                      "running statistics first)")
    x, gamma, _, mean, var = inputs
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = (F32(1) / np.sqrt(var.astype(F32) + F32(epsilon))).reshape(shape)
    axes = (0,) + tuple(range(2, x.ndim))
    xhat = (x - mean.reshape(shape)) * inv
    return (_f32(gy * gamma.reshape(shape) * inv), _f32(np.sum(gy * xhat, axis=axes)),
            _f32(np.sum(gy, axis=axes)), None, None)


@register_vjp("LayerNormalization", saves=("inputs",))
def layer_normalization(gy, *, inputs, outputs, axis=-1, epsilon=1e-5, stash_type=1):
    """x̂ = (x - mean)/√(var + ε) over axes ≥ axis, y = x̂·γ + β:
    ĝ = gy·γ, dx = (ĝ - mean(ĝ) - x̂·mean(ĝ·x̂))/√(var + ε), dγ = Σ gy·x̂, dβ = Σ gy (leading axes)."""
    x, gamma = inputs[0], inputs[1]
    ax = axis % x.ndim
    red = tuple(range(ax, x.ndim))
    lead = tuple(range(ax))
    mu = x.mean(axis=red, keepdims=True, dtype=F32)
    var = ((x - mu) ** 2).mean(axis=red, keepdims=True, dtype=F32)
    inv = F32(1) / np.sqrt(var + F32(epsilon))
    xhat = (x - mu) * inv
    gh = gy * gamma
    dx = inv * (gh - gh.mean(axis=red, keepdims=True) - xhat * (gh * xhat).mean(axis=red, keepdims=True))
    out = [_f32(dx), unbroadcast(_f32(np.sum(gy * xhat, axis=lead)), gamma.shape)]
    if len(inputs) > 2 and inputs[2] is not None:
        out.append(unbroadcast(_f32(np.sum(gy, axis=lead)), inputs[2].shape))
    return tuple(out)


# ---------------------------------------------------------------- pooling (2-D)

def _pool_geometry(x, kernel_shape, pads, strides, dilations, auto_pad, ceil_mode, op):
    if x.ndim != 4 or auto_pad not in ("NOTSET", "VALID") or ceil_mode:
        raise OpError(f"the backward of {op} supports 2-D pooling with auto_pad NOTSET/VALID and "
                      f"ceil_mode=0, got input rank {x.ndim}, auto_pad={auto_pad!r}, "
                      f"ceil_mode={ceil_mode}")
    pads = (0, 0, 0, 0) if pads is None or auto_pad == "VALID" else tuple(pads)
    return (tuple(kernel_shape), pads, (1, 1) if strides is None else tuple(strides),
            (1, 1) if dilations is None else tuple(dilations))


def _scatter_taps(gy_taps, xshape, k, pads, strides, dilations, oh, ow):
    """Σ over kernel taps (u, v) of ``gy_taps(u, v)`` placed where tap (u, v) read the padded
    input; cropped to the unpadded input."""
    n, c, h, w = xshape
    dxp = np.zeros((n, c, h + pads[0] + pads[2], w + pads[1] + pads[3]), F32)
    for u in range(k[0]):
        for v in range(k[1]):
            dxp[:, :, u * dilations[0]:u * dilations[0] + strides[0] * (oh - 1) + 1:strides[0],
                v * dilations[1]:v * dilations[1] + strides[1] * (ow - 1) + 1:strides[1]] += gy_taps(u, v)
    return dxp[:, :, pads[0]:pads[0] + h, pads[1]:pads[1] + w]


@register_vjp("MaxPool", saves=("inputs", "outputs"))
def max_pool(gy, *, inputs, outputs, auto_pad="NOTSET", ceil_mode=0, dilations=None,
             kernel_shape=None, pads=None, storage_order=0, strides=None):
    """dx[argmax of each window] += gy (the first maximal tap in row-major order)."""
    x, y = inputs[0], outputs[0]
    k, pads, strides, dilations = _pool_geometry(x, kernel_shape, pads, strides, dilations,
                                                 auto_pad, ceil_mode, "MaxPool")
    oh, ow = y.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])),
                constant_values=-np.inf)
    win = _windows(xp, k[0], k[1], strides, dilations, oh, ow)
    taken = np.zeros(y.shape, bool)
    masks = {}
    for u in range(k[0]):
        for v in range(k[1]):
            m = (win[..., u, v] == y) & ~taken
            taken |= m
            masks[u, v] = m
    return (_f32(_scatter_taps(lambda u, v: np.where(masks[u, v], gy, F32(0)), x.shape, k, pads,
                               strides, dilations, oh, ow)),)


@register_vjp("AveragePool", saves=("inputs",))
def average_pool(gy, *, inputs, outputs, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0,
                 dilations=None, kernel_shape=None, pads=None, strides=None):
    """dx[every tap of a window] += gy / (window size, padding counted if count_include_pad)."""
    x = inputs[0]
    k, pads, strides, dilations = _pool_geometry(x, kernel_shape, pads, strides, dilations,
                                                 auto_pad, ceil_mode, "AveragePool")
    oh, ow = gy.shape[2:]
    if count_include_pad:
        div = np.full((1, 1, oh, ow), F32(k[0] * k[1]))
    else:
        ones = np.pad(np.ones((1, 1) + x.shape[2:], F32), ((0, 0), (0, 0), (pads[0], pads[2]),
                                                         (pads[1], pads[3])))
        div = _windows(ones, k[0], k[1], strides, dilations, oh, ow).sum(axis=(-2, -1))
    g = gy / div
    return (_f32(_scatter_taps(lambda u, v: g, x.shape, k, pads, strides, dilations, oh, ow)),)


# ---------------------------------------------------------------- data movement

@register_vjp("Split", saves=("outputs",), multi=True)
def split(gys, *, inputs, outputs, axis=0, split=None, num_outputs=None):
    """dx = the output gradients concatenated along ``axis`` (zeros for outputs without one)."""
    parts = [g if g is not None else np.zeros(y.shape, F32) for g, y in zip(gys, outputs)]
    return (_f32(np.concatenate(parts, axis=axis)), None)


@register_vjp("Slice", saves=("inputs",))
def slice_(gy, *, inputs, outputs, **attrs):
    """dx = zeros with gy added at the selected positions, found by running the forward Slice
    on the element indices of x; starts/ends/axes/steps get none."""
    from ..ops.registry import OPS
    x = inputs[0]
    where_ = OPS["Slice"](np.arange(x.size, dtype=np.int64).reshape(x.shape), *inputs[1:], **attrs)
    dx = np.zeros(x.size, F32)
    np.add.at(dx, np.asarray(where_).reshape(-1), gy.reshape(-1))
    return (dx.reshape(x.shape),) + (None,) * (len(inputs) - 1)
