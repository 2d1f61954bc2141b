"""Elementwise ops against ONNX Runtime on random inputs (Hypothesis picks shapes/attributes)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsim.errors import OpError
from qsim.ops import OPS
from qsim.ops.elementwise import erf_float64
from tests.ort_util import assert_op_matches_ort

SETTINGS = settings(max_examples=25, deadline=None)

shapes = st.lists(st.integers(1, 5), min_size=0, max_size=4).map(tuple)
seeds = st.integers(0, 2**32 - 1)


@st.composite
def broadcast_pair(draw):
    """Two shapes that broadcast: B is a suffix of A with some dimensions set to 1 (or reversed)."""
    a = draw(shapes)
    k = draw(st.integers(0, len(a)))
    b = tuple(1 if draw(st.booleans()) else d for d in a[len(a) - k:])
    return (b, a) if draw(st.booleans()) else (a, b)


def rand(seed, shape, lo=-3.0, hi=3.0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind in "iu":
        return rng.integers(int(lo), int(hi) + 1, size=shape).astype(dtype)
    return rng.uniform(lo, hi, size=shape).astype(dtype)


def away_from_zero(seed, shape):
    """floats with |x| in [0.5, 2] (safe denominators)."""
    rng = np.random.default_rng(seed)
    return (rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape)).astype(np.float32)


# ------------------------------------------------------------------------------ arithmetic

@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@SETTINGS
@given(shapes=broadcast_pair(), seed=seeds)
def test_float_binary_matches_ort(op, shapes, seed):
    a = rand(seed, shapes[0])
    b = away_from_zero(seed + 1, shapes[1])
    assert_op_matches_ort(op, [a, b])


@st.composite
def one_axis_pair(draw):
    """A tensor of at least 4096 elements (the one-axis kernel's size) and an operand that
    varies along one of its axes only (or a scalar), in either order."""
    big = (draw(st.integers(1, 2)), draw(st.integers(16, 40)), draw(st.integers(16, 30)),
           draw(st.integers(16, 30)))
    axis = draw(st.integers(-1, 3))
    small = tuple(d if i == axis else 1 for i, d in enumerate(big))
    small = small[draw(st.integers(0, max(0, axis))):]       # leading 1s may be dropped
    return (small, big) if draw(st.booleans()) else (big, small)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@SETTINGS
@given(shapes=one_axis_pair(), seed=seeds)
def test_float_one_axis_broadcast_matches_ort_and_numpy(op, shapes, seed):
    """Per-channel scales and biases (the Numba one-axis kernel under JIT) give ORT's bits and
    NumPy's broadcasting bits."""
    a = rand(seed, shapes[0])
    b = away_from_zero(seed + 1, shapes[1])
    assert_op_matches_ort(op, [a, b])
    numpy_fn = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op]
    np.testing.assert_array_equal(OPS[op](a, b).view(np.uint32), numpy_fn(a, b).view(np.uint32))


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@SETTINGS
@given(shapes=broadcast_pair(), seed=seeds)
def test_integer_binary_matches_ort(op, dtype, shapes, seed):
    a = rand(seed, shapes[0], -50, 50, dtype)
    sign = np.where(rand(seed + 2, shapes[1], 0, 1, dtype), 1, -1).astype(dtype)
    b = rand(seed + 1, shapes[1], 1, 9, dtype) * sign
    assert_op_matches_ort(op, [a, b])


def test_integer_div_truncates_toward_zero():
    a = np.array([-7, 7, -7, 7, -6, 0], np.int64)
    b = np.array([2, -2, -2, 2, 3, -5], np.int64)
    got = OPS["Div"](a, b)
    np.testing.assert_array_equal(got, [math.trunc(x / y) for x, y in zip(a, b)])
    assert_op_matches_ort("Div", [a, b])


@SETTINGS
@given(shapes=broadcast_pair(), seed=seeds)
def test_pow_float_matches_ort(shapes, seed):
    x = rand(seed, shapes[0], 0.1, 3.0)
    y = rand(seed + 1, shapes[1], -2.0, 2.0)
    assert_op_matches_ort("Pow", [x, y])


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_pow_float_base_integer_exponent_keeps_float32(dtype):
    x = rand(0, (3, 4), -2.0, 2.0)
    y = np.array([0, 1, 2, 3], dtype)
    assert_op_matches_ort("Pow", [x, y])


UNARY = {
    "Sqrt": (0.0, 9.0), "Neg": (-3, 3), "Abs": (-3, 3), "Exp": (-10, 10), "Log": (1e-3, 100.0),
    "Relu": (-3, 3), "Sigmoid": (-30, 30), "Tanh": (-5, 5), "HardSwish": (-6, 6),
    "Floor": (-5, 5), "Ceil": (-5, 5), "Reciprocal": (0.5, 4.0), "Identity": (-3, 3),
    "Sign": (-3, 3), "Softplus": (-30, 30), "Softsign": (-5, 5), "Elu": (-5, 5), "Selu": (-5, 5),
}


@pytest.mark.parametrize("op", sorted(UNARY))
@SETTINGS
@given(shape=shapes, seed=seeds)
def test_unary_matches_ort(op, shape, seed):
    lo, hi = UNARY[op]
    assert_op_matches_ort(op, [rand(seed, shape, lo, hi)])


@pytest.mark.parametrize("op", ["Neg", "Abs", "Identity"])
def test_integer_unary_keeps_dtype(op):
    assert_op_matches_ort(op, [np.arange(-5, 5, dtype=np.int32).reshape(2, 5)])
    assert_op_matches_ort(op, [np.arange(-5, 5, dtype=np.int64)])


def test_round_half_to_even_matches_ort():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49, -3.51], np.float32)
    assert_op_matches_ort("Round", [x])
    assert_op_matches_ort("Round", [rand(5, (4, 6), -9, 9)])


@SETTINGS
@given(shape=shapes, seed=seeds, alpha=st.floats(0.125, 2, width=32),
       gamma=st.floats(0.5, 2, width=32))
def test_elu_selu_attributes_match_ort(shape, seed, alpha, gamma):
    x = rand(seed, shape)
    assert_op_matches_ort("Elu", [x], {"alpha": alpha})
    assert_op_matches_ort("Selu", [x], {"alpha": alpha, "gamma": gamma})


@pytest.mark.parametrize("fmod", [0, 1])
@SETTINGS
@given(shapes=broadcast_pair(), seed=seeds)
def test_integer_mod_matches_ort(fmod, shapes, seed):
    a = rand(seed, shapes[0], -20, 20, np.int64)
    sign = np.where(rand(seed + 2, shapes[1], 0, 1, np.int64), 1, -1)
    b = rand(seed + 1, shapes[1], 1, 6, np.int64) * sign
    assert_op_matches_ort("Mod", [a, b], {"fmod": fmod})


@SETTINGS
@given(shapes=broadcast_pair(), seed=seeds)
def test_float_fmod_matches_ort(shapes, seed):
    a, b = rand(seed, shapes[0], -9, 9), away_from_zero(seed + 1, shapes[1])
    assert_op_matches_ort("Mod", [a, b], {"fmod": 1})


# ------------------------------------------------------------------------------ erf / gelu

def test_erf_float64_matches_math_erf():
    x = np.concatenate([np.linspace(-7, 7, 20001), [0.0, 1e-30, -1e-8, 2.0, -2.0, np.inf, -np.inf]])
    expected = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(erf_float64(x), expected, rtol=1e-14, atol=1e-15)


@SETTINGS
@given(shape=shapes, seed=seeds, scale=st.sampled_from([0.01, 1.0, 3.0, 10.0]))
def test_erf_matches_ort(shape, seed, scale):
    assert_op_matches_ort("Erf", [rand(seed, shape, -scale, scale)], rtol=1e-6, atol=1e-6)


def test_erf_float64_op_is_math_erf():
    # float32 Erf follows ONNX Runtime's MLAS approximation bit for bit (tests/ops/test_exact_math.py);
    # float64 Erf stays the accurate series / continued fraction
    x = np.linspace(-5, 5, 100001, dtype=np.float64)
    expected = np.array([math.erf(float(v)) for v in x])
    np.testing.assert_allclose(OPS["Erf"](x), expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@SETTINGS
@given(shape=shapes, seed=seeds)
def test_gelu_matches_ort(approximate, shape, seed):
    assert_op_matches_ort("Gelu", [rand(seed, shape, -6, 6)], {"approximate": approximate},
                          opset=20)


# ------------------------------------------------------------------------------ activations

@SETTINGS
@given(shape=shapes, seed=seeds, alpha=st.floats(-2, 2, width=32))
def test_leaky_relu_matches_ort(shape, seed, alpha):
    assert_op_matches_ort("LeakyRelu", [rand(seed, shape)], {"alpha": alpha})


@SETTINGS
@given(shape=shapes, seed=seeds, alpha=st.floats(-1, 1, width=32),
       beta=st.floats(-1, 1, width=32))
def test_hard_sigmoid_matches_ort(shape, seed, alpha, beta):
    assert_op_matches_ort("HardSigmoid", [rand(seed, shape, -6, 6)], {"alpha": alpha, "beta": beta})


@st.composite
def prelu_shapes(draw):
    """X of rank 1-4 and a slope that broadcasts to it: (C,1,1)-style, a suffix, or a scalar."""
    x = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple))
    kind = draw(st.sampled_from(["channel", "suffix", "scalar"]))
    if kind == "channel" and len(x) >= 2:
        return x, (x[1],) + (1,) * (len(x) - 2)
    if kind == "scalar":
        return x, (1,)
    k = draw(st.integers(1, len(x)))
    return x, tuple(1 if draw(st.booleans()) else d for d in x[len(x) - k:])


@SETTINGS
@given(shapes=prelu_shapes(), seed=seeds)
def test_prelu_matches_ort(shapes, seed):
    assert_op_matches_ort("PRelu", [rand(seed, shapes[0]), rand(seed + 1, shapes[1], -1, 1)])


def test_prelu_per_channel_slope():
    x = rand(3, (2, 3, 4, 5))
    slope = np.array([0.1, -0.5, 2.0], np.float32).reshape(3, 1, 1)
    assert_op_matches_ort("PRelu", [x, slope])


@SETTINGS
@given(shape=shapes, seed=seeds, lo=st.none() | st.floats(-2, 1, width=32),
       hi=st.none() | st.floats(-1, 2, width=32))
def test_clip_matches_ort(shape, seed, lo, hi):
    lo_t = None if lo is None else np.array(lo, np.float32)
    hi_t = None if hi is None else np.array(hi, np.float32)
    assert_op_matches_ort("Clip", [rand(seed, shape), lo_t, hi_t])


def test_clip_integer_input():
    x = np.arange(-10, 10, dtype=np.int64)
    assert_op_matches_ort("Clip", [x, np.array(-3, np.int64), np.array(4, np.int64)])


# ------------------------------------------------------------------------------ comparisons etc.

@SETTINGS
@given(shapes=broadcast_pair(), seed=seeds)
def test_where_matches_ort(shapes, seed):
    cond = rand(seed, shapes[1], 0, 1, np.int32).astype(bool)
    assert_op_matches_ort("Where", [cond, rand(seed + 1, shapes[0]), rand(seed + 2, shapes[1])])


@pytest.mark.parametrize("dtype", [np.float32, np.int64])
@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
@SETTINGS
@given(shapes=broadcast_pair(), seed=seeds)
def test_comparison_matches_ort(op, dtype, shapes, seed):
    # small integer values so that ties (the interesting case) happen often
    a = rand(seed, shapes[0], -2, 2, np.int64).astype(dtype)
    b = rand(seed + 1, shapes[1], -2, 2, np.int64).astype(dtype)
    assert_op_matches_ort(op, [a, b])


def test_not_matches_ort():
    assert_op_matches_ort("Not", [np.array([[True, False], [False, False]])])


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
@SETTINGS
@given(shapes=broadcast_pair(), seed=seeds)
def test_logical_matches_ort(op, shapes, seed):
    a = rand(seed, shapes[0], 0, 1, np.int32).astype(bool)
    b = rand(seed + 1, shapes[1], 0, 1, np.int32).astype(bool)
    assert_op_matches_ort(op, [a, b])


@pytest.mark.parametrize("op", ["Max", "Min", "Sum", "Mean"])
@SETTINGS
@given(shape=shapes, n=st.integers(1, 4), seed=seeds, data=st.data())
def test_variadic_matches_ort(op, shape, n, seed, data):
    inputs = []
    for i in range(n):
        k = data.draw(st.integers(0, len(shape)))
        s = tuple(1 if data.draw(st.booleans()) else d for d in shape[len(shape) - k:])
        inputs.append(rand(seed + i, s))
    inputs[0] = rand(seed, shape)  # at least one input has the full shape
    assert_op_matches_ort(op, inputs)


CAST_TYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 9: np.bool_,
              10: np.float16, 11: np.float64}


@pytest.mark.parametrize("src", [np.float32, np.int64, np.int32, np.bool_, np.float64])
@pytest.mark.parametrize("to", sorted(CAST_TYPES))
def test_cast_matches_ort(src, to):
    rng = np.random.default_rng(to)
    if src is np.bool_:
        x = rng.integers(0, 2, (3, 5)).astype(bool)
    else:
        # values inside every target range (0..100), with fractions for the float sources
        x = rng.uniform(0, 100, (3, 5)).astype(src)
        x.flat[:3] = [0, 1, 0]
    assert_op_matches_ort("Cast", [x], {"to": to})


@pytest.mark.parametrize("target", [np.float32, np.int64, np.bool_, np.float16, np.int8])
def test_cast_like_matches_ort(target):
    x = np.array([[-2.7, 0.0, 1.5], [3.2, -0.4, 100.0]], np.float32)
    assert_op_matches_ort("CastLike", [x, np.zeros(2, target)], opset=15)


def test_cast_negative_float_to_int_truncates():
    x = np.array([-2.7, -0.5, 0.5, 2.7], np.float32)
    assert_op_matches_ort("Cast", [x], {"to": 7})


def test_dropout_inference_returns_input_and_true_mask():
    x = rand(0, (2, 3, 4))
    assert_op_matches_ort("Dropout", [x], noutputs=2)
    assert_op_matches_ort("Dropout", [x, np.array(0.3, np.float32), np.array(False)], noutputs=2)
    assert_op_matches_ort("Dropout", [x])


# ------------------------------------------------------------------------------ errors

F = np.ones((2, 3), np.float32)

#: (op, inputs, attributes, pattern the OpError message must match)
ERROR_CASES = [
    ("Add", [F, np.ones(4, np.float32)], {},
     r"Add: input shapes \(2, 3\), \(4,\) do not broadcast"),
    ("Mul", [F, np.ones(3)], {}, r"Mul: inputs have dtypes \['float32', 'float64'\]"),
    ("Div", [np.ones(3, np.int32), np.array([1, 0, 2], np.int32)], {},
     "Div: integer division by zero"),
    ("PRelu", [F, np.ones((2, 3, 1), np.float32)], {},
     r"PRelu: slope shape \(2, 3, 1\) does not broadcast to input shape \(2, 3\)"),
    ("Clip", [F, None, np.ones(2, np.float32)], {},
     r"Clip: input 'max' has shape \(2,\), expected a scalar"),
    ("Gelu", [F], {"approximate": "fast"}, "Gelu: attribute approximate='fast'"),
    ("Cast", [F], {"to": 16}, "Cast: attribute to=16 is not a supported type code"),
    ("Dropout", [F, None, np.array(True)], {}, "Dropout: input training_mode is true"),
    ("Where", [F, F, F], {}, "Where: condition has dtype float32, expected bool"),
    ("Sqrt", [np.arange(3)], {}, "Sqrt: input has dtype int64"),
    ("Max", [], {}, "Max: no inputs"),
    ("Mod", [F, F], {}, r"Mod: attribute fmod=0 with float inputs needs opset >= 28 \(the model has opset 17\), expected fmod=1"),
    ("Mod", [np.ones(2, np.int64), np.zeros(2, np.int64)], {}, "Mod: integer modulo by zero"),
    ("And", [np.ones(2, bool), np.ones(2, np.float32)], {},
     "And: input B has dtype float32, expected bool"),
]


@pytest.mark.parametrize("op,inputs,attrs,pattern", ERROR_CASES,
                         ids=[f"{c[0]}-{k}" for k, c in enumerate(ERROR_CASES)])
def test_errors_name_the_problem(op, inputs, attrs, pattern):
    with pytest.raises(OpError, match=pattern):
        OPS[op](*inputs, **attrs)


def test_outputs_are_arrays_for_scalars():
    a = np.array(2.0, np.float32)
    for op in ("Add", "Mul", "Sub", "Div"):
        out = OPS[op](a, a)
        assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == ()


def test_docstring_examples():
    import doctest

    import qsim.ops.elementwise
    import qsim.ops.tensor
    for module in (qsim.ops.elementwise, qsim.ops.tensor):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_erf_nan_propagates():
    assert np.isnan(OPS["Erf"](np.array([np.nan], np.float32))[0])


def test_ops_do_not_mutate_inputs():
    x = rand(1, (3, 4))
    before = x.copy()
    for op in ("Relu", "Sigmoid", "Erf", "Identity", "HardSwish", "Abs", "Neg"):
        OPS[op](x)
    OPS["Clip"](x, np.array(0, np.float32), np.array(1, np.float32))
    np.testing.assert_array_equal(x, before)
