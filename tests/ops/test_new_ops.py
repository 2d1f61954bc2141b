"""The ops added for real models, against ONNX Runtime on Hypothesis-drawn inputs.

``exact`` cases are bit-identical (selection and data movement, and the function-body
compositions of exact ops); ``close`` cases compare to a stated tolerance because qsim does not
reproduce ORT's arithmetic there (Einsum)."""
from __future__ import annotations


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsim.errors import OpError
from qsim.kernels import mlas_math as me
from qsim.ops import OPS
from tests.ort_util import ort_and_qsim, ort_run_op, qsim_run_op

SETTINGS = settings(max_examples=20, deadline=None)
seeds = st.integers(0, 2**32 - 1)
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple)


def rand(seed, shape, lo=-4.0, hi=4.0):
    return np.random.default_rng(seed).uniform(lo, hi, size=shape).astype(np.float32)


def both(op, inputs, attrs=None, *, opset, noutputs=1, initializers=()):
    return ort_and_qsim(op, inputs, attrs, opset=opset, noutputs=noutputs,
                        initializers=initializers)


def exact(op, inputs, attrs=None, **kw):
    for e, g in zip(*both(op, inputs, attrs, **kw)):
        np.testing.assert_array_equal(g, e, err_msg=op)


def close(op, inputs, attrs=None, *, rtol, atol, **kw):
    for e, g in zip(*both(op, inputs, attrs, **kw)):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=op)


# ------------------------------------------------------------------ data movement (exact)

@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@SETTINGS
@given(seed=seeds, b=st.integers(1, 3), c=st.integers(1, 3), hw=st.tuples(st.integers(1, 3),
                                                                        st.integers(1, 3)))
def test_depth_to_space_and_back(mode, seed, b, c, hw):
    x = rand(seed, (2, c * b * b, *hw))
    exact("DepthToSpace", [x], {"blocksize": b, "mode": mode}, opset=13)
    y = rand(seed, (2, c, hw[0] * b, hw[1] * b))
    exact("SpaceToDepth", [y], {"blocksize": b}, opset=13)


@SETTINGS
@given(seed=seeds, shape=shapes, data=st.data())
def test_topk(seed, shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    k = data.draw(st.integers(0, shape[axis]))
    x = np.round(rand(seed, shape))   # many ties: the lower index comes first
    attrs = {"axis": axis, "largest": data.draw(st.integers(0, 1))}
    exact("TopK", [x, np.array([k], np.int64)], attrs, opset=11, noutputs=2)
    exact("TopK", [x.astype(np.int64), np.array([k], np.int64)], attrs, opset=11, noutputs=2)


@SETTINGS
@given(seed=seeds, shape=st.lists(st.integers(1, 5), min_size=2, max_size=4).map(tuple),
       k=st.integers(-6, 6) | st.none(), upper=st.integers(0, 1))
def test_trilu(seed, shape, k, upper):
    x = rand(seed, shape)
    inputs = [x] if k is None else [x, np.array(k, np.int64)]
    exact("Trilu", inputs, {"upper": upper}, opset=14)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@SETTINGS
@given(seed=seeds, shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
       data=st.data())
def test_scatter_nd(reduction, seed, shape, data):
    q = data.draw(st.integers(1, len(shape)))
    rng = np.random.default_rng(seed)
    n = data.draw(st.integers(1, 3))
    # distinct index tuples (ORT's order for duplicates is unspecified without reduction)
    space = np.stack(np.unravel_index(np.arange(int(np.prod(shape[:q]))), shape[:q]), axis=-1)
    pick = rng.permutation(len(space))[:n]
    indices = space[pick].astype(np.int64)
    updates = rand(seed + 1, (len(pick),) + shape[q:])
    exact("ScatterND", [rand(seed, shape), indices, updates], {"reduction": reduction}, opset=18)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@SETTINGS
@given(seed=seeds, shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
       data=st.data())
def test_scatter_elements(reduction, seed, shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(seed)
    dim = shape[axis]
    ishape = tuple(data.draw(st.integers(1, d)) for d in shape)
    if reduction == "none":  # distinct targets along the axis
        ishape = ishape[:axis % len(shape)] + (min(ishape[axis], dim),) + ishape[axis % len(shape) + 1:]
        perm = np.argsort(rng.random(ishape[:axis % len(shape)] + (dim,) + ishape[axis % len(shape) + 1:]), axis=axis)
        indices = np.take(perm, np.arange(ishape[axis]), axis=axis)
    else:
        indices = rng.integers(-dim, dim, size=ishape)
    exact("ScatterElements", [rand(seed, shape), indices.astype(np.int64),
                              rand(seed + 1, indices.shape)],
          {"axis": axis, "reduction": reduction}, opset=18)


@SETTINGS
@given(seed=seeds, shape=st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple),
       data=st.data())
def test_gather_nd(seed, shape, data):
    b = data.draw(st.integers(0, len(shape) - 1))
    q = data.draw(st.integers(1, len(shape) - b))
    rng = np.random.default_rng(seed)
    extra = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    dims = np.array(shape[b:b + q])
    indices = rng.integers(-dims, dims, size=shape[:b] + extra + (q,)).astype(np.int64)
    exact("GatherND", [rand(seed, shape), indices], {"batch_dims": b}, opset=13)


@SETTINGS
@given(seed=seeds, shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
       depth=st.integers(1, 5),
       data=st.data())
def test_one_hot(seed, shape, depth, data):
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    idx = np.random.default_rng(seed).integers(-depth - 1, depth + 1, size=shape).astype(np.int64)
    values = np.array([-1.5, 2.0], np.float32)
    exact("OneHot", [idx, np.array(depth, np.int64), values], {"axis": axis}, opset=11)


@SETTINGS
@given(seed=seeds, shape=st.lists(st.integers(0, 4), max_size=4).map(tuple))
def test_non_zero(seed, shape):
    x = np.round(rand(seed, shape, -1, 1))
    exact("NonZero", [x], opset=13)


@SETTINGS
@given(seed=seeds, shape=shapes, data=st.data())
def test_cum_prod(seed, shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    attrs = {"exclusive": data.draw(st.integers(0, 1)), "reverse": data.draw(st.integers(0, 1))}
    x = rand(seed, shape, -2, 2)
    exact("CumProd", [x, np.array(axis, np.int64)], attrs, opset=26)


# ------------------------------------------------------------------ elementwise

SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -2.5, 1e30], np.float32)


def test_is_nan_is_inf():
    exact("IsNaN", [SPECIALS], opset=20)
    for neg in (0, 1):
        for pos in (0, 1):
            exact("IsInf", [SPECIALS], {"detect_negative": neg, "detect_positive": pos},
                  opset=20)


@pytest.mark.parametrize("op,attrs,opset", [
    ("ThresholdedRelu", {"alpha": 0.7}, 22),
    ("Shrink", {"bias": 0.25, "lambd": 1.5}, 9),
    ("Swish", {"alpha": 0.8}, 24),
    ("Mish", {}, 22),
    ("Celu", {"alpha": 1.3}, 12),
])
@SETTINGS
@given(seed=seeds, shape=shapes)
def test_exact_activations(op, attrs, opset, seed, shape):
    exact(op, [rand(seed, shape, -8, 8)], attrs, opset=opset)


@SETTINGS
@given(seed=seeds, shape=shapes)
def test_shrink_on_integers(seed, shape):
    x = np.random.default_rng(seed).integers(-10, 10, size=shape).astype(np.int32)
    exact("Shrink", [x], {"bias": 2.0, "lambd": 3.0}, opset=9)


@pytest.mark.parametrize("op", ["Sin", "Cos"])
@settings(max_examples=40, deadline=None)
@given(seed=seeds, shape=shapes, scale=st.sampled_from([1.0, 30.0, 3e4, 3e6, 3e38]))
def test_sin_cos(op, seed, shape, scale):
    # scales past 18838 take Eigen's Payne-Hanek reduction
    exact(op, [rand(seed, shape, -1, 1) * np.float32(scale)], opset=7)
    exact(op, [SPECIALS], opset=7)


# ------------------------------------------------------------------ reductions, einsum

@SETTINGS
@given(seed=seeds, shape=shapes, data=st.data(), keepdims=st.integers(0, 1))
def test_reduce_log_sum_exp(seed, shape, data, keepdims):
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True))
    x = rand(seed, shape, -10, 10)
    exact("ReduceLogSumExp", [x], {"axes": axes, "keepdims": keepdims}, opset=13)


@pytest.mark.parametrize("equation,shapes", [
    ("ij,jk->ik", [(3, 4), (4, 5)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 2)]),
    ("ii->i", [(4, 4)]), ("ij->ji", [(2, 3)]), ("i,i->", [(5,), (5,)]),
    ("...ij,...jk", [(2, 3, 4), (2, 4, 3)]), ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
])
def test_einsum(equation, shapes):
    inputs = [rand(i, s) for i, s in enumerate(shapes)]
    # ORT contracts through its own MatMul/ReduceSum: equal within float32 rounding
    close("Einsum", inputs, {"equation": equation}, opset=12, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ normalizations

@SETTINGS
@given(seed=seeds, c=st.integers(1, 6), size=st.sampled_from([1, 3, 5, 7]),
       beta=st.sampled_from([0.75, 0.5, 0.1, 1.5, 4.0, 10.0]),
       alpha=st.sampled_from([1e-4, 1e-2, 1.0, 7.0]), bias=st.sampled_from([1.0, 2.0, 1.5, 1e-3]),
       hw=st.tuples(st.integers(1, 9), st.integers(1, 40)), scale=st.sampled_from([0.1, 4.0, 1e3]))
def test_lrn_is_bit_exact(seed, c, size, beta, alpha, bias, hw, scale):
    """Non-integer beta (and integer exponents outside [-3, 7]): in Eigen's packets its
    double-word pow, outside them C powf, per ORT parallel block: bit for bit."""
    x = rand(seed, (2, c, *hw), -scale, scale)
    attrs = {"size": size, "alpha": alpha, "beta": beta, "bias": bias}
    expected = ort_run_op("LRN", [x], attrs, opset=13, threads=me.DEFAULT_THREADS)[0]
    assert OPS["LRN"](x, **attrs).tobytes() == expected.tobytes()


@pytest.mark.parametrize("beta", [0.75, 1.0, 4.0])
def test_lrn_special_values_are_bit_exact(beta):
    """Zeros with bias 0 (scale 0: inf · 0), infinities and NaN (scale inf or NaN) in every
    position of a packet and of the scalar tail."""
    rng = np.random.default_rng(int(beta * 4))
    x = rng.choice(np.array([0.0, -0.0, 1.0, -2.0, np.inf, -np.inf, np.nan, 3e19], np.float32),
                   (1, 3, 5, 7))
    for bias in (0.0, 1.0):
        attrs = {"size": 3, "alpha": 1e-2, "beta": beta, "bias": bias}
        expected = ort_run_op("LRN", [x], attrs, opset=13, threads=me.DEFAULT_THREADS)[0]
        assert OPS["LRN"](x, **attrs).tobytes() == expected.tobytes(), bias


@SETTINGS
@given(seed=seeds, c=st.integers(1, 6), size=st.sampled_from([1, 3, 5]),
       beta=st.sampled_from([1.0, 2.0, 3.0]), alpha=st.sampled_from([1e-2, 1.0, 7.0]),
       hw=st.tuples(st.integers(1, 9), st.integers(1, 40)))
def test_lrn_integer_beta_is_bit_exact(seed, c, size, beta, alpha, hw):
    """beta 1, 2, 3: in Eigen's packets r = 1/scale multiplied (r, r·r, (r·r)·r), outside
    them C powf, per ORT parallel block (the session's default threads): bit for bit."""
    x = rand(seed, (2, c, *hw))
    attrs = {"size": size, "alpha": alpha, "beta": beta, "bias": 1.5}
    expected = ort_run_op("LRN", [x], attrs, opset=13, threads=me.DEFAULT_THREADS)[0]
    assert OPS["LRN"](x, **attrs).tobytes() == expected.tobytes()


@pytest.mark.parametrize("opset", [18, 21])
@SETTINGS
@given(seed=seeds, groups=st.integers(1, 3), per=st.integers(1, 3))
def test_group_normalization(opset, seed, groups, per):
    c = groups * per
    x = rand(seed, (2, c, 3, 2))
    n = c if opset >= 21 else groups
    inputs = [x, rand(seed + 1, (n,)), rand(seed + 2, (n,))]
    exact("GroupNormalization", inputs, {"num_groups": groups, "epsilon": 1e-3}, opset=opset)


@pytest.mark.parametrize("p", [1, 2])
@SETTINGS
@given(seed=seeds, shape=shapes, data=st.data())
def test_lp_normalization(p, seed, shape, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = rand(seed, shape)
    x[..., :1] *= data.draw(st.sampled_from([1.0, 0.0]))  # zero vectors stay zero, as in ORT
    exact("LpNormalization", [x], {"axis": axis, "p": p}, opset=22)
    exact("LpNormalization", [x], {"axis": axis, "p": p}, opset=1)


@SETTINGS
@given(seed=seeds, shape=st.lists(st.integers(1, 6), min_size=4, max_size=4), data=st.data())
def test_mean_variance_normalization(seed, shape, data):
    x = rand(seed, shape)
    exact("MeanVarianceNormalization", [x], {}, opset=13)
    axes = data.draw(st.lists(st.integers(-4, 3), min_size=1, max_size=4, unique_by=lambda a: a % 4))
    exact("MeanVarianceNormalization", [x], {"axes": axes}, opset=13)


def test_bad_inputs_are_named():
    with pytest.raises(OpError, match="blocksize"):
        qsim_run_op("DepthToSpace", [np.zeros((1, 3, 2, 2), np.float32)], {"blocksize": 2})
    with pytest.raises(OpError, match="K="):
        qsim_run_op("TopK", [np.zeros((3,), np.float32), np.array([4], np.int64)])
    with pytest.raises(OpError, match="num_groups"):
        qsim_run_op("GroupNormalization", [np.zeros((1, 3, 2), np.float32),
                                           np.ones(3, np.float32), np.ones(3, np.float32)],
                    {"num_groups": 2}, opset=21)
