"""Every VJP of qsim.grad against central finite differences of an independent float64 forward.

For random inputs and a random upstream gradient gy, ∂<gy, f(x)>/∂x_k is estimated by
(F(x + h e_k) - F(x - h e_k)) / 2h on float64 copies (h = 1e-6, error ~1e-9); the float32 VJP
must agree within 2e-4·(1 + max|fd|) — float32 rounding of short sums, far above FD noise, far
below any wrong formula. Non-smooth ops draw inputs away from their kinks.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qsim.grad import VJPS
from qsim.ops.registry import OPS

H = 1e-6
ERF = np.vectorize(math.erf)


def _fd(f64, args64, k):
    """Central differences of F = <gy, f(args)> w.r.t. argument k (float64)."""
    base = [a.copy() for a in args64]
    g = np.zeros_like(base[k])
    flat = base[k].reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + H
        up = f64(*base)
        flat[i] = old - H
        down = f64(*base)
        flat[i] = old
        g.reshape(-1)[i] = (up - down) / (2 * H)
    return g


def check(op, f64, args, diff, attrs=None, rng=None):
    """VJP of ``op`` on float32 ``args`` vs FD of ``f64`` for the argument indices ``diff``."""
    attrs = attrs or {}
    args32 = [np.asarray(a, np.float32) if np.asarray(a).dtype.kind == "f" else np.asarray(a)
              for a in args]
    y = OPS[op](*args32, **attrs)
    y = y[0] if isinstance(y, tuple) else y
    gy = rng.standard_normal(y.shape).astype(np.float32)
    args64 = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in args32]
    vjp = VJPS[op]
    res = vjp.fn(gy, inputs=tuple(args32), outputs=(y,), **attrs)
    for k in diff:
        fd = _fd(lambda *a: float(np.sum(gy.astype(np.float64) * f64(*a))), args64, k)
        got = res[k]
        assert got.dtype == np.float32 and got.shape == args32[k].shape, (op, k)
        tol = 2e-4 * (1 + np.max(np.abs(fd)))
        assert np.max(np.abs(got - fd)) <= tol, (op, k, np.max(np.abs(got - fd)), tol)


seeds = st.integers(0, 2**32 - 1)
FAST = settings(max_examples=15, deadline=None)


def _away(rng, shape, kinks, gap=1e-2):
    """Standard-normal values at least ``gap`` from every kink."""
    x = rng.standard_normal(shape) * 2
    for k in kinks:
        near = np.abs(x - k) < gap
        x[near] = k + np.where(x[near] >= k, gap, -gap) * 2
    return x


UNARY = {
    "Relu": (lambda x: np.maximum(x, 0), [0.0], {}),
    "LeakyRelu": (lambda x: np.where(x > 0, x, 0.1 * x), [0.0], {"alpha": 0.1}),
    "Sigmoid": (lambda x: 1 / (1 + np.exp(-x)), [], {}),
    "Tanh": (np.tanh, [], {}),
    "HardSigmoid": (lambda x: np.clip(0.2 * x + 0.5, 0, 1), [-2.5, 2.5], {}),
    "HardSwish": (lambda x: x * np.clip(x / 6 + 0.5, 0, 1), [-3.0, 3.0], {}),
    "Erf": (ERF, [], {}),
}


@pytest.mark.parametrize("op", sorted(UNARY))
@FAST
@given(seed=seeds)
def test_unary(op, seed):
    rng = np.random.default_rng(seed)
    f, kinks, attrs = UNARY[op]
    check(op, f, [_away(rng, (3, 4), kinks)], [0], attrs, rng)


@FAST
@given(seed=seeds)
def test_sqrt(seed):
    rng = np.random.default_rng(seed)
    check("Sqrt", np.sqrt, [rng.uniform(0.2, 3, (2, 5))], [0], rng=rng)


@FAST
@given(seed=seeds)
def test_clip(seed):
    rng = np.random.default_rng(seed)
    x = _away(rng, (3, 4), [-1.0, 1.5])
    check("Clip", lambda x, lo, hi: np.clip(x, lo, hi),
          [x, np.float32(-1.0), np.float32(1.5)], [0], rng=rng)


BINARY = {
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Div": lambda a, b: a / b,
    "Pow": lambda a, b: a ** b,
}


@pytest.mark.parametrize("op", sorted(BINARY))
@FAST
@given(seed=seeds, bshape=st.sampled_from([(2, 3, 4), (3, 1), (4,), (1, 1, 1), ()]))
def test_binary_broadcasting(op, seed, bshape):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((2, 3, 4))
    b = rng.standard_normal(bshape)
    if op in ("Div", "Pow"):
        b = rng.uniform(0.5, 2.0, bshape)
    if op == "Pow":
        a = rng.uniform(0.5, 2.0, (2, 3, 4))
    check(op, BINARY[op], [a, np.asarray(b)], [0, 1], rng=rng)


@FAST
@given(seed=seeds)
def test_where(seed):
    rng = np.random.default_rng(seed)
    c = rng.random((3, 4)) > 0.5
    check("Where", lambda c, x, y: np.where(c, x, y),
          [c, rng.standard_normal((3, 4)), rng.standard_normal((4,))], [1, 2], rng=rng)


@FAST
@given(seed=seeds, shapes=st.sampled_from([((3, 4), (4, 5)), ((2, 3, 4), (4, 2)),
                                           ((4,), (4, 3)), ((2, 3, 4), (2, 4, 2))]))
def test_matmul(seed, shapes):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    check("MatMul", np.matmul, [a, b], [0, 1], rng=rng)


@FAST
@given(seed=seeds, ta=st.integers(0, 1), tb=st.integers(0, 1), cshape=st.sampled_from([(5,), (3, 5), (1, 5)]))
def test_gemm(seed, ta, tb, cshape):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((4, 3) if ta else (3, 4))
    b = rng.standard_normal((5, 4) if tb else (4, 5))
    c = rng.standard_normal(cshape)
    attrs = {"alpha": 0.7, "beta": 1.3, "transA": ta, "transB": tb}
    f = lambda a, b, c: 0.7 * ((a.T if ta else a) @ (b.T if tb else b)) + 1.3 * c
    check("Gemm", f, [a, b, c], [0, 1, 2], attrs, rng)


def _conv64(x, w, b, pads, strides, dil, group):
    """Direct float64 2-D convolution (independent of qsim.grad's im2col view)."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    oh = (xp.shape[2] - (kh - 1) * dil[0] - 1) // strides[0] + 1
    ow = (xp.shape[3] - (kw - 1) * dil[1] - 1) // strides[1] + 1
    y = np.zeros((n, m, oh, ow))
    mg = m // group
    for o in range(m):
        g = o // mg
        for i in range(oh):
            for j in range(ow):
                patch = xp[:, g * cg:(g + 1) * cg,
                           i * strides[0]:i * strides[0] + (kh - 1) * dil[0] + 1:dil[0],
                           j * strides[1]:j * strides[1] + (kw - 1) * dil[1] + 1:dil[1]]
                y[:, o, i, j] = np.sum(patch * w[o], axis=(1, 2, 3)) + b[o]
    return y


@settings(max_examples=10, deadline=None)
@given(seed=seeds, pads=st.sampled_from([(0, 0, 0, 0), (1, 1, 1, 1), (1, 0, 2, 1)]),
       strides=st.sampled_from([(1, 1), (2, 1), (2, 2)]), dil=st.sampled_from([(1, 1), (2, 1)]),
       group=st.sampled_from([1, 2]))
def test_conv(seed, pads, strides, dil, group):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 4, 6, 5))
    w = rng.standard_normal((4, 4 // group, 3, 2))
    b = rng.standard_normal(4)
    attrs = {"pads": pads, "strides": strides, "dilations": dil, "group": group,
             "kernel_shape": (3, 2)}
    check("Conv", lambda x, w, b: _conv64(x, w, b, pads, strides, dil, group), [x, w, b],
          [0, 1, 2], attrs, rng)


@FAST
@given(seed=seeds)
def test_global_average_pool(seed):
    rng = np.random.default_rng(seed)
    check("GlobalAveragePool", lambda x: x.mean(axis=(2, 3), keepdims=True),
          [rng.standard_normal((2, 3, 4, 5))], [0], rng=rng)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean"])
@FAST
@given(seed=seeds, axes=st.sampled_from([(1,), (0, 2), (-1,)]), keep=st.integers(0, 1))
def test_reductions(op, seed, axes, keep):
    rng = np.random.default_rng(seed)
    red = np.sum if op == "ReduceSum" else np.mean
    check(op, lambda x: red(x, axis=axes, keepdims=bool(keep)),
          [rng.standard_normal((2, 3, 4))], [0], {"axes": axes, "keepdims": keep}, rng)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@FAST
@given(seed=seeds, axis=st.sampled_from([-1, 1]))
def test_softmax(op, seed, axis):
    rng = np.random.default_rng(seed)

    def f(x):
        z = x - x.max(axis=axis, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=axis, keepdims=True))
        return np.exp(z - lse) if op == "Softmax" else z - lse

    check(op, f, [rng.standard_normal((2, 3, 4))], [0], {"axis": axis}, rng)


@FAST
@given(seed=seeds)
def test_shape_ops(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 4))
    check("Flatten", lambda x: x.reshape(2, 12), [x], [0], {"axis": 1}, rng)
    check("Reshape", lambda x, s: x.reshape(4, 6), [x, np.array([4, 6])], [0], {}, rng)
    check("Transpose", lambda x: x.transpose(1, 2, 0), [x], [0], {"perm": (1, 2, 0)}, rng)
    check("Unsqueeze", lambda x, a: x[:, None], [x, np.array([1])], [0], {}, rng)
    check("Squeeze", lambda x, a: x[:, 0], [x[:, :1], np.array([1])], [0], {}, rng)
    check("Concat", lambda a, b: np.concatenate([a, b], axis=1),
          [x, rng.standard_normal((2, 2, 4))], [0, 1], {"axis": 1}, rng)


@FAST
@given(seed=seeds, axis=st.sampled_from([0, 1, -1]))
def test_gather(seed, axis):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, 4, 2))
    idx = rng.integers(-2, 2, (2, 3))
    check("Gather", lambda x, i: np.take(x, i, axis=axis), [x, idx], [0], {"axis": axis}, rng)


@FAST
@given(seed=seeds, approx=st.sampled_from(["none", "tanh"]))
def test_gelu(seed, approx):
    rng = np.random.default_rng(seed)
    if approx == "tanh":
        f = lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    else:
        f = lambda x: 0.5 * x * (1 + ERF(x / np.sqrt(2)))
    check("Gelu", f, [rng.standard_normal((3, 4)) * 2], [0], {"approximate": approx}, rng)


@FAST
@given(seed=seeds)
def test_batch_normalization(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 4, 2))
    gam, beta, mean = rng.standard_normal(3), rng.standard_normal(3), rng.standard_normal(3)
    var = rng.uniform(0.5, 2, 3)
    sh = (1, 3, 1, 1)
    f = lambda x, g, b, m, v: (x - m.reshape(sh)) / np.sqrt(v.reshape(sh) + 1e-5) * g.reshape(sh) \
        + b.reshape(sh)
    check("BatchNormalization", f, [x, gam, beta, mean, var], [0, 1, 2], {"epsilon": 1e-5}, rng)


@FAST
@given(seed=seeds, axis=st.sampled_from([-1, 1]))
def test_layer_normalization(seed, axis):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, 4))
    pshape = (4,) if axis == -1 else (3, 4)
    gam, beta = rng.standard_normal(pshape), rng.standard_normal(pshape)
    red = tuple(range(axis % 3, 3))

    def f(x, g, b):
        mu = x.mean(axis=red, keepdims=True)
        var = ((x - mu) ** 2).mean(axis=red, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * g + b

    check("LayerNormalization", f, [x, gam, beta], [0, 1, 2], {"axis": axis, "epsilon": 1e-5}, rng)


def _pool64(x, k, pads, strides, reduce, pad_value, include_pad):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])), constant_values=pad_value)
    ones = np.pad(np.ones((h, w)), ((pads[0], pads[2]), (pads[1], pads[3])))
    oh = (xp.shape[2] - k[0]) // strides[0] + 1
    ow = (xp.shape[3] - k[1]) // strides[1] + 1
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            sl = (slice(i * strides[0], i * strides[0] + k[0]), slice(j * strides[1], j * strides[1] + k[1]))
            win = xp[:, :, sl[0], sl[1]]
            if reduce == "max":
                y[:, :, i, j] = win.max(axis=(2, 3))
            else:
                cnt = k[0] * k[1] if include_pad else ones[sl].sum()
                y[:, :, i, j] = win.sum(axis=(2, 3)) / cnt
    return y


@FAST
@given(seed=seeds, pads=st.sampled_from([(0, 0, 0, 0), (1, 1, 1, 1), (0, 1, 1, 0)]),
       strides=st.sampled_from([(1, 1), (2, 2), (2, 1)]), include=st.integers(0, 1))
def test_pools(seed, pads, strides, include):
    rng = np.random.default_rng(seed)
    x = rng.permutation(np.arange(2 * 2 * 5 * 6)).reshape(2, 2, 5, 6) * 0.05 + rng.uniform(0, 0.01)
    attrs = {"kernel_shape": (2, 3), "pads": pads, "strides": strides}
    check("MaxPool", lambda x: _pool64(x, (2, 3), pads, strides, "max", -np.inf, 0), [x], [0],
          attrs, rng)   # distinct values 0.05 apart: no ties, no argmax change within h
    check("AveragePool", lambda x: _pool64(x, (2, 3), pads, strides, "avg", 0.0, include), [x], [0],
          {**attrs, "count_include_pad": include}, rng)


@FAST
@given(seed=seeds, sizes=st.sampled_from([(1, 3), (2, 2), (3, 1)]))
def test_split_and_slice(seed, sizes):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 4, 3))
    gys = tuple(rng.standard_normal((2, n, 3)).astype(np.float32) for n in sizes)
    (dx, _) = VJPS["Split"].fn(gys, inputs=None, outputs=OPS["Split"](
        x.astype(np.float32), np.array(sizes), axis=1, noutputs=2), axis=1)
    assert np.array_equal(dx, np.concatenate(gys, axis=1))   # Split is linear: VJP = adjoint
    starts, ends, axes, steps = np.array([1, 0]), np.array([4, 3]), np.array([1, 2]), np.array([2, 2])
    check("Slice", lambda x, *_: x[:, 1:4:2, 0:3:2], [x, starts, ends, axes, steps], [0], {}, rng)


@FAST
@given(seed=seeds, tb=st.integers(0, 1))
def test_gemm_with_nd_a(seed, tb):
    """The sim's Gemm may take an N-D A (rows = every leading axis); its VJP restores A's shape."""
    rng = np.random.default_rng(seed)
    a, c = rng.standard_normal((2, 3, 4)), rng.standard_normal((5,))
    b = rng.standard_normal((5, 4) if tb else (4, 5))
    f = lambda a, b, c: 0.7 * (a @ (b.T if tb else b)) + 1.3 * c
    args32 = [x.astype(np.float32) for x in (a, b, c)]
    gy = rng.standard_normal((2, 3, 5)).astype(np.float32)
    res = VJPS["Gemm"].fn(gy, inputs=tuple(args32), outputs=None, alpha=0.7, beta=1.3, transB=tb)
    for k in range(3):
        fd = _fd(lambda *x: float(np.sum(gy.astype(np.float64) * f(*x))),
                 [x.astype(np.float64) for x in args32], k)
        assert res[k].dtype == np.float32 and res[k].shape == args32[k].shape
        assert np.max(np.abs(res[k] - fd)) <= 2e-4 * (1 + np.max(np.abs(fd))), k


def _conv_transpose64(x, w, b, pads, strides, dil, group, outpad):
    """Direct float64 2-D transposed convolution by scattering (independent of the VJP's
    adjoint-of-Conv reading): Y[n, g·mo+o, i·s+u·d-pb, ...] += X[n, g·cg+c, i, ...]·W[g·cg+c, o, u, ...]."""
    n, c, h, wd = x.shape
    _, mo, kh, kw = w.shape
    cg = c // group
    full_h = strides[0] * (h - 1) + outpad[0] + (kh - 1) * dil[0] + 1
    full_w = strides[1] * (wd - 1) + outpad[1] + (kw - 1) * dil[1] + 1
    y = np.zeros((n, mo * group, full_h, full_w))
    for ci in range(c):
        g = ci // cg
        for i in range(h):
            for j in range(wd):
                for u in range(kh):
                    for v in range(kw):
                        y[:, g * mo:(g + 1) * mo, i * strides[0] + u * dil[0],
                          j * strides[1] + v * dil[1]] += x[:, ci, i, j][:, None] * w[ci, :, u, v]
    y = y[:, :, pads[0]:full_h - pads[2], pads[1]:full_w - pads[3]]
    return y + b[None, :, None, None]


@settings(max_examples=10, deadline=None)
@given(seed=seeds, pads=st.sampled_from([(0, 0, 0, 0), (1, 1, 1, 1), (1, 0, 0, 1)]),
       strides=st.sampled_from([(1, 1), (2, 1), (2, 2)]), dil=st.sampled_from([(1, 1), (2, 1)]),
       group=st.sampled_from([1, 2]), outpad=st.sampled_from([(0, 0), (1, 0)]))
def test_conv_transpose(seed, pads, strides, dil, group, outpad):
    if outpad[0] >= max(strides[0], dil[0]):
        outpad = (0, 0)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 4, 4, 3))
    w = rng.standard_normal((4, 6 // group, 3, 2))
    b = rng.standard_normal(6)
    attrs = {"pads": pads, "strides": strides, "dilations": dil, "group": group,
             "kernel_shape": (3, 2), "output_padding": outpad}
    check("ConvTranspose", lambda x, w, b: _conv_transpose64(x, w, b, pads, strides, dil, group,
                                                             outpad),
          [x, w, b], [0, 1, 2], attrs, rng)
