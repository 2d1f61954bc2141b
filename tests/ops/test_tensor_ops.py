"""Shape, data-movement, constant and reduction ops against ONNX Runtime on random inputs."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsim.errors import OpError
from qsim.ops import OPS
from tests.ort_util import assert_op_matches_ort

SETTINGS = settings(max_examples=25, deadline=None)

shapes = st.lists(st.integers(1, 5), min_size=0, max_size=4).map(tuple)
nonscalar = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)
seeds = st.integers(0, 2**32 - 1)
INT64_MAX = 2**63 - 1


def rand(seed, shape, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.uniform(-3, 3, size=shape).astype(dtype)


def i64(values):
    return np.array(values, dtype=np.int64)


# ------------------------------------------------------------------------------ shape ops

@SETTINGS
@given(shape=shapes, seed=seeds, data=st.data())
def test_flatten_matches_ort(shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape)))
    assert_op_matches_ort("Flatten", [rand(seed, shape)], {"axis": axis})


@st.composite
def reshape_case(draw):
    """An input shape and a target with the same element count, some dims as 0 or -1."""
    shape = draw(shapes)
    n = math.prod(shape)
    target = []
    rest = n
    for _ in range(draw(st.integers(0, 3))):
        d = draw(st.sampled_from([k for k in range(1, rest + 1) if rest % k == 0]))
        target.append(d)
        rest //= d
    target.append(rest)
    target = draw(st.permutations(target))
    target = [int(d) for d in target]
    # copy dimensions with 0 where the input has the same dimension at that index
    target = [0 if i < len(shape) and shape[i] == d and draw(st.booleans()) else d
              for i, d in enumerate(target)]
    if draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
        if target.count(-1) > 1 or math.prod(d for d in target if d > 0) == 0:
            target = [d if d != -1 else 1 for d in target]
    return shape, target


@SETTINGS
@given(case=reshape_case(), seed=seeds)
def test_reshape_matches_ort(case, seed):
    shape, target = case
    try:
        OPS["Reshape"](rand(seed, shape), i64(target))
    except OpError:
        # our generator may build an impossible target (a -1 next to a 0 copy): ORT must agree
        with pytest.raises(Exception):
            assert_op_matches_ort("Reshape", [rand(seed, shape), i64(target)], initializers=(1,))
        return
    assert_op_matches_ort("Reshape", [rand(seed, shape), i64(target)], initializers=(1,))


def test_reshape_allowzero():
    x = np.zeros((0, 3), np.float32)
    assert_op_matches_ort("Reshape", [x, i64([3, 0])], {"allowzero": 1}, opset=14,
                          initializers=(1,))
    assert_op_matches_ort("Reshape", [x, i64([-1, 3])], {"allowzero": 0}, opset=14,
                          initializers=(1,))


@SETTINGS
@given(shape=shapes, seed=seeds, data=st.data())
def test_transpose_matches_ort(shape, seed, data):
    perm = data.draw(st.none() | st.permutations(range(len(shape)))) if shape else None
    attrs = {} if perm is None else {"perm": list(perm)}
    assert_op_matches_ort("Transpose", [rand(seed, shape)], attrs)


@st.composite
def with_ones(draw):
    """A shape with some size-1 axes, and a subset of those axes (possibly negative)."""
    shape = list(draw(nonscalar))
    for i in draw(st.lists(st.integers(0, len(shape) - 1), max_size=2)):
        shape[i] = 1
    ones = [i for i, d in enumerate(shape) if d == 1]
    axes = draw(st.lists(st.sampled_from(ones), unique=True)) if ones else []
    axes = [a - len(shape) if draw(st.booleans()) else a for a in axes]
    return tuple(shape), axes


@SETTINGS
@given(case=with_ones(), seed=seeds)
def test_squeeze_matches_ort(case, seed):
    shape, axes = case
    x = rand(seed, shape)
    if axes:
        assert_op_matches_ort("Squeeze", [x, i64(axes)], opset=13, initializers=(1,))
        assert_op_matches_ort("Squeeze", [x], {"axes": axes}, opset=11)
    else:
        assert_op_matches_ort("Squeeze", [x], opset=13)


def test_squeeze_empty_axes_input_squeezes_all_ones():
    x = rand(0, (1, 3, 1, 2))
    assert_op_matches_ort("Squeeze", [x, i64([])], opset=13, initializers=(1,))


@SETTINGS
@given(shape=shapes, seed=seeds, data=st.data())
def test_unsqueeze_matches_ort(shape, seed, data):
    out_rank = len(shape) + data.draw(st.integers(1, 3))
    axes = data.draw(st.lists(st.integers(0, out_rank - 1), min_size=out_rank - len(shape),
                              max_size=out_rank - len(shape), unique=True))
    axes = [a - out_rank if data.draw(st.booleans()) else a for a in axes]
    x = rand(seed, shape)
    assert_op_matches_ort("Unsqueeze", [x, i64(axes)], opset=13, initializers=(1,))
    assert_op_matches_ort("Unsqueeze", [x], {"axes": axes}, opset=11)


@SETTINGS
@given(shape=nonscalar, seed=seeds, data=st.data())
def test_concat_matches_ort(shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    n = data.draw(st.integers(1, 4))
    inputs = []
    for i in range(n):
        s = list(shape)
        s[axis] = data.draw(st.integers(0 if i else 1, 4))
        inputs.append(rand(seed + i, tuple(s)))
    assert_op_matches_ort("Concat", inputs, {"axis": axis})


@SETTINGS
@given(shape=nonscalar, seed=seeds, data=st.data())
def test_split_with_sizes_matches_ort(shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    dim = shape[axis]
    cuts = sorted(data.draw(st.lists(st.integers(0, dim), max_size=3)))
    sizes = np.diff([0, *cuts, dim]).tolist()
    x = rand(seed, shape)
    assert_op_matches_ort("Split", [x, i64(sizes)], {"axis": axis}, noutputs=len(sizes),
                          opset=13, initializers=(1,))
    assert_op_matches_ort("Split", [x], {"axis": axis, "split": sizes}, noutputs=len(sizes),
                          opset=11)


@SETTINGS
@given(shape=nonscalar, seed=seeds, data=st.data())
def test_split_equal_matches_ort(shape, seed, data):
    axis = data.draw(st.integers(0, len(shape) - 1))
    dim = shape[axis]
    x = rand(seed, shape)
    n = data.draw(st.sampled_from([k for k in range(1, dim + 1) if dim % k == 0]))
    assert_op_matches_ort("Split", [x], {"axis": axis}, noutputs=n, opset=13)
    # opset 18 num_outputs: ceil(dim / n) per piece, the last one smaller
    n = data.draw(st.integers(1, dim))
    size = -(-dim // n)
    if size * (n - 1) < dim:
        assert_op_matches_ort("Split", [x], {"axis": axis, "num_outputs": n}, noutputs=n, opset=18)


@st.composite
def slice_case(draw):
    shape = draw(nonscalar)
    k = draw(st.integers(1, len(shape)))
    axes = draw(st.permutations(range(len(shape))))[:k]
    bound = st.integers(-7, 7) | st.sampled_from([INT64_MAX, -INT64_MAX - 1])
    starts = [draw(bound) for _ in axes]
    ends = [draw(bound) for _ in axes]
    steps = [draw(st.sampled_from([1, 2, 3, -1, -2])) for _ in axes]
    axes = [a - len(shape) if draw(st.booleans()) else a for a in axes]
    return shape, starts, ends, axes, steps


@SETTINGS
@given(case=slice_case(), seed=seeds)
def test_slice_matches_ort(case, seed):
    shape, starts, ends, axes, steps = case
    x = rand(seed, shape)
    assert_op_matches_ort("Slice", [x, i64(starts), i64(ends), i64(axes), i64(steps)],
                          initializers=(1, 2, 3, 4))


def test_slice_default_axes_and_steps_and_int32_indices():
    x = rand(0, (4, 5, 6))
    assert_op_matches_ort("Slice", [x, i64([1, -3]), i64([INT64_MAX, -1])], initializers=(1, 2))
    s = np.array([0, 1], np.int32)
    assert_op_matches_ort("Slice", [x, s, np.array([3, 4], np.int32)], initializers=(1, 2))


@SETTINGS
@given(shape=nonscalar, ishape=shapes, seed=seeds, data=st.data())
def test_gather_matches_ort(shape, ishape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    dim = shape[axis]
    rng = np.random.default_rng(seed)
    idx = rng.integers(-dim, dim, size=ishape)
    dtype = data.draw(st.sampled_from([np.int64, np.int32]))
    assert_op_matches_ort("Gather", [rand(seed, shape), idx.astype(dtype)], {"axis": axis})


@SETTINGS
@given(shape=shapes, start=st.none() | st.integers(-6, 6), end=st.none() | st.integers(-6, 6))
def test_shape_matches_ort(shape, start, end):
    attrs = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    assert_op_matches_ort("Shape", [rand(0, shape)], attrs, opset=15)


def test_size_matches_ort():
    assert_op_matches_ort("Size", [rand(0, (2, 3, 4))])


@SETTINGS
@given(seed=seeds, data=st.data())
def test_expand_matches_ort(seed, data):
    out = data.draw(shapes)
    k = data.draw(st.integers(0, len(out)))
    in_shape = tuple(1 if data.draw(st.booleans()) else d for d in out[len(out) - k:])
    # the target may itself use 1 where the input is larger (two-way broadcast)
    target = [1 if (i >= len(out) - k and data.draw(st.booleans())) else d
              for i, d in enumerate(out)]
    assert_op_matches_ort("Expand", [rand(seed, in_shape), i64(target)], initializers=(1,))


@SETTINGS
@given(shape=shapes, seed=seeds, data=st.data())
def test_tile_matches_ort(shape, seed, data):
    reps = [data.draw(st.integers(0, 3)) for _ in shape]
    assert_op_matches_ort("Tile", [rand(seed, shape), i64(reps)], initializers=(1,))


@st.composite
def pad_case(draw):
    """Pads that may crop (-1) on either side; reflect pads at most n - 1 of the cropped size
    n (ORT's limit), edge and wrap pads up to 4 (more than the axis for wrap)."""
    shape = draw(st.lists(st.integers(2, 5), min_size=1, max_size=4).map(tuple))
    mode = draw(st.sampled_from(["constant", "reflect", "edge", "wrap"]))
    use_axes = draw(st.booleans())
    axes = (draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True))
            if use_axes else list(range(len(shape))))
    begins, ends = [], []
    for a in axes:
        b, e = draw(st.integers(-1, 4)), draw(st.integers(-1, 4))
        n = shape[a] - (b < 0) - (e < 0)
        if mode != "constant" and n < 2:
            b, e, n = max(b, 0), max(e, 0), shape[a]
        if mode == "reflect":
            b, e = min(b, n - 1), min(e, n - 1)
        begins.append(b)
        ends.append(e)
    return shape, mode, (axes if use_axes else None), begins + ends


@SETTINGS
@given(case=pad_case(), seed=seeds, value=st.floats(-2, 2, width=32))
def test_pad_matches_ort(case, seed, value):
    shape, mode, axes, pads = case
    x = rand(seed, shape)
    cval = np.array(value, np.float32) if mode == "constant" else None
    inputs = [x, i64(pads), cval] + ([] if axes is None else [i64(axes)])
    assert_op_matches_ort("Pad", inputs, {"mode": mode}, opset=19,
                          initializers=tuple(range(1, len(inputs))))


def test_pad_opset13_constant_default_and_integer_data():
    x = np.arange(12, dtype=np.int64).reshape(3, 4)
    assert_op_matches_ort("Pad", [x, i64([1, 0, 2, 3])], opset=13, initializers=(1,))
    assert_op_matches_ort("Pad", [x, i64([1, 0, 2, 3]), np.array(-5, np.int64)], opset=13,
                          initializers=(1, 2))
    assert_op_matches_ort("Pad", [rand(0, (1, 2, 4, 4)), i64([0, 0, 1, 2, 0, 0, 2, 1])],
                          {"mode": "reflect"}, opset=13, initializers=(1,))


# ------------------------------------------------------------------------------ constants

@pytest.mark.parametrize("value", [None, np.array([2.5], np.float32), np.array([7], np.int64),
                                   np.array([1], np.int32), np.array([True])])
@SETTINGS
@given(shape=shapes)
def test_constant_of_shape_matches_ort(value, shape):
    from onnx import numpy_helper
    attrs = {} if value is None else {"value": numpy_helper.from_array(value)}
    expected_attrs = {} if value is None else {"value": value}
    from tests.ort_util import ort_run_op, qsim_run_op
    expected = ort_run_op("ConstantOfShape", [i64(shape)], attrs, initializers=(0,))[0]
    got = qsim_run_op("ConstantOfShape", [i64(shape)], expected_attrs)[0]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


CONSTANTS = [
    ("value", np.arange(6, dtype=np.float32).reshape(2, 3)),
    ("value", np.array([3, -1], np.int64)),
    ("value_float", 1.25), ("value_floats", [1.5, -2.0, 0.1]),
    ("value_int", -4), ("value_ints", [1, 2, 3]),
]


@pytest.mark.parametrize("name,value", CONSTANTS)
def test_constant_matches_ort(name, value):
    from onnx import numpy_helper
    from tests.ort_util import ort_run_op, qsim_run_op
    onnx_value = numpy_helper.from_array(value) if isinstance(value, np.ndarray) else value
    expected = ort_run_op("Constant", [], {name: onnx_value})[0]
    got = qsim_run_op("Constant", [], {name: value})[0]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------------------ reductions

REDUCE_OPS = ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceSumSquare"]


@st.composite
def reduce_case(draw):
    shape = draw(shapes)
    axes = draw(st.lists(st.integers(0, max(len(shape) - 1, 0)), unique=True, max_size=len(shape)))
    axes = [a - len(shape) if draw(st.booleans()) else a for a in axes]
    return shape, axes, draw(st.sampled_from([0, 1])), draw(st.sampled_from([0, 1]))


@pytest.mark.parametrize("op", REDUCE_OPS)
@SETTINGS
@given(case=reduce_case(), seed=seeds)
def test_reduce_axes_input_matches_ort(op, case, seed):
    shape, axes, keepdims, noop = case
    x = rand(seed, shape)
    attrs = {"keepdims": keepdims, "noop_with_empty_axes": noop}
    inputs = [x, i64(axes)] if axes else [x]
    assert_op_matches_ort(op, inputs, attrs, opset=18, initializers=(1,) if axes else ())


@pytest.mark.parametrize("op", REDUCE_OPS)
@SETTINGS
@given(case=reduce_case(), seed=seeds)
def test_reduce_axes_attribute_matches_ort(op, case, seed):
    shape, axes, keepdims, _ = case
    x = rand(seed, shape)
    attrs = {"keepdims": keepdims} | ({"axes": axes} if axes else {})
    if op == "ReduceSum":  # ReduceSum took axes as an input already in opset 13
        assert_op_matches_ort(op, [x], attrs, opset=11)
    else:
        assert_op_matches_ort(op, [x], attrs, opset=13)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@SETTINGS
@given(shape=nonscalar, seed=seeds, keepdims=st.sampled_from([0, 1]),
       last=st.sampled_from([0, 1]), data=st.data())
def test_arg_reduce_matches_ort(op, shape, seed, keepdims, last, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = np.round(rand(seed, shape))  # few distinct values: ties decide first vs last index
    assert_op_matches_ort(op, [x], {"axis": axis, "keepdims": keepdims,
                                    "select_last_index": last})


@SETTINGS
@given(shape=nonscalar, seed=seeds, exclusive=st.sampled_from([0, 1]),
       reverse=st.sampled_from([0, 1]), data=st.data())
def test_cumsum_matches_ort(shape, seed, exclusive, reverse, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    assert_op_matches_ort("CumSum", [rand(seed, shape), np.array(axis, np.int64)],
                          {"exclusive": exclusive, "reverse": reverse}, initializers=(1,))


@SETTINGS
@given(shape=nonscalar, seed=seeds, data=st.data())
def test_gather_elements_matches_ort(shape, seed, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    ishape = tuple(data.draw(st.integers(1, 4)) if k == axis % len(shape)
                   else data.draw(st.integers(1, d)) for k, d in enumerate(shape))
    dim = shape[axis]
    idx = np.random.default_rng(seed).integers(-dim, dim, size=ishape)
    assert_op_matches_ort("GatherElements", [rand(seed, shape), idx], {"axis": axis})


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_integer_input(op):
    x = np.arange(-12, 12, dtype=np.int64).reshape(2, 3, 4)
    assert_op_matches_ort(op, [x, i64([1])], {"keepdims": 0}, opset=18, initializers=(1,))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float32])
@SETTINGS
@given(start=st.integers(-10, 10), limit=st.integers(-10, 10),
       delta=st.integers(-4, 4).filter(lambda d: d != 0), scale=st.sampled_from([1.0, 0.1, 0.37]))
def test_range_matches_ort(dtype, start, limit, delta, scale):
    if np.dtype(dtype).kind == "f":
        values = [np.array(v * scale, dtype) for v in (start, limit, delta)]
    else:
        values = [np.array(v, dtype) for v in (start, limit, delta)]
    assert_op_matches_ort("Range", values, initializers=(0, 1, 2))


def test_range_float_accumulates_like_ort_bit_exactly():
    # Y[i] = Y[i-1] + delta in float32 drifts from start + i * delta; ORT accumulates
    values = [np.array(v, np.float32) for v in (0.1, 1000.0, 0.37)]
    assert_op_matches_ort("Range", values, rtol=0, atol=0, initializers=(0, 1, 2))


# ------------------------------------------------------------------------------ errors

X = rand(0, (2, 3, 4))
Z8 = np.zeros((2, 3, 4), np.int64)

#: (op, inputs, attributes, pattern the OpError message must match)
ERROR_CASES = [
    ("Reshape", [X, i64([5, -1])], {}, r"Reshape: cannot reshape input \(2, 3, 4\)"),
    ("Reshape", [X, i64([7, 4])], {}, r"'shape'=\[7, 4\] \(28 elements\)"),
    ("Reshape", [X, i64([-1, -1])], {}, "more than one -1"),
    ("Reshape", [X, i64([0, -1])], {"allowzero": 1}, "has both 0 and -1 with allowzero=1"),
    ("Reshape", [X, np.array([24.0])], {}, "input 'shape' has dtype float64, expected int64"),
    ("Concat", [X, rand(1, (2, 4, 4))], {"axis": 0}, r"input shapes .* differ outside axis=0"),
    ("Concat", [X, X], {"axis": 3}, "Concat: axis=3 out of range for a rank-3 input"),
    ("Concat", [X, X], {}, "Concat: attribute 'axis' is required"),
    ("Flatten", [X], {"axis": 4}, "Flatten: axis=4 out of range"),
    ("Gather", [X, i64([0, 3])], {"axis": 1}, "index 3 out of range for axis 1 of size 3"),
    ("Gather", [X, i64([-3])], {"axis": 0}, "Gather: index -3 out of range"),
    ("Pad", [X, i64([1] * 6)], {"mode": "symmetric"}, "Pad: attribute mode='symmetric'"),
    ("Pad", [X, i64([1, 1])], {}, "Pad: input 'pads' has 2 values, expected 6"),
    ("Pad", [X, i64([0, 3, 0, 0, 0, 0])], {"mode": "reflect"},
     r"mode='reflect' pads 3, 0 on axis 1 of size 3 \(after cropping\), expected pads <= 2"),
    ("Transpose", [X], {"perm": (0, 0, 1)}, r"perm=\[0, 0, 1\] is not a permutation"),
    ("Squeeze", [X, i64([1])], {}, r"Squeeze: axes=\[1\] includes axis 1 of size 3"),
    ("Squeeze", [X, i64([0])], {"axes": (0,)}, "both as an input and as an attribute"),
    ("Unsqueeze", [X, i64([0, 0])], {}, "repeats an axis"),
    ("Unsqueeze", [X], {}, "Unsqueeze: 'axes' is required"),
    ("Split", [X, i64([1, 1])], {"axis": 1, "noutputs": 2},
     r"Split: split=\[1, 1\] does not cut dimension 3"),
    ("Split", [X], {"axis": 2, "noutputs": 3}, r"dimension 4 \(axis 2\) does not split evenly"),
    ("Slice", [X, i64([0]), i64([1]), i64([0]), i64([0])], {}, r"Slice: steps=\[0\] contains 0"),
    ("Slice", [X, i64([0]), i64([1]), i64([5])], {}, "Slice: axes=5 out of range"),
    ("Expand", [X, i64([5, 4])], {}, r"input shape \(2, 3, 4\) does not broadcast"),
    ("Tile", [X, i64([1, 2])], {}, r"Tile: input 'repeats'=\[1, 2\], expected 3 values"),
    ("ReduceSum", [X, i64([3])], {}, "ReduceSum: axes=3 out of range"),
    ("Constant", [], {}, "Constant: attributes none given, expected exactly one"),
    ("Constant", [], {"value_int": 1, "value_float": 2.0},
     r"Constant: attributes \['value_float', 'value_int'\]"),
    ("ConstantOfShape", [i64([2, -1])], {}, "negative dimension"),
    ("Range", [np.array(0), np.array(5), np.array(0)], {}, "Range: input 'delta' is 0"),
    ("ArgMax", [X], {"axis": -4}, "ArgMax: axis=-4 out of range for a rank-3 input"),
    ("GatherElements", [X, Z8 + 9], {"axis": 2}, "index 9 out of range for axis 2 of size 4"),
    ("GatherElements", [X, Z8[0]], {}, "expected int32/int64 of rank 3"),
    ("CumSum", [X, i64([0, 1])], {}, "CumSum: input 'axis' has 2 values, expected a scalar"),
]


@pytest.mark.parametrize("op,inputs,attrs,pattern", ERROR_CASES,
                         ids=[f"{c[0]}-{k}" for k, c in enumerate(ERROR_CASES)])
def test_errors_name_the_problem(op, inputs, attrs, pattern):
    with pytest.raises(OpError, match=pattern):
        OPS[op](*inputs, **attrs)


# ------------------------------------------------------------------------------ through the executor

def test_pytorch_style_shape_subgraph_runs_in_the_executor_like_ort():
    """x.view(x.size(0), -1) as PyTorch exports it (Shape → Gather → Unsqueeze → Concat →
    Reshape), plus Constant and a two-output Split, run by qsim's executor and by ORT."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from qsim.interpreter import run
    from qsim.ir import Graph, Node, ValueInfo

    nodes = [  # (op, inputs, outputs, attrs)
        ("Shape", ["x"], ["s"], {}),
        ("Constant", [], ["zero"], {"value_int": 0}),
        ("Gather", ["s", "zero"], ["n"], {"axis": 0}),
        ("Constant", [], ["axes0"], {"value_ints": [0]}),
        ("Unsqueeze", ["n", "axes0"], ["n1"], {}),
        ("Constant", [], ["minus1"], {"value_ints": [-1]}),
        ("Concat", ["n1", "minus1"], ["target"], {"axis": 0}),
        ("Reshape", ["x", "target"], ["flat"], {}),
        ("Split", ["flat"], ["left", "right"], {"axis": 1, "num_outputs": 2}),
        ("Sub", ["left", "right"], ["y"], {}),
    ]
    x = rand(7, (3, 2, 4, 5))
    model = helper.make_model(
        helper.make_graph([helper.make_node(op, i, o, **a) for op, i, o, a in nodes], "g",
                          [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)]),
        opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    expected = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    graph = Graph(nodes=[Node(name=f"n{k}", op_type=op, inputs=i, outputs=o,
                              attrs={k2: tuple(v) if isinstance(v, list) else v
                                     for k2, v in a.items()})
                         for k, (op, i, o, a) in enumerate(nodes)],
                  inputs=[ValueInfo("x", np.dtype(np.float32), x.shape)],
                  outputs=[ValueInfo("y", np.dtype(np.float32), None)], opset=18)
    got = run(graph, {"x": x})["y"]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_executor_error_names_the_node_and_the_problem():
    from qsim.interpreter import run
    from qsim.ir import Graph, Node, ValueInfo

    graph = Graph(nodes=[Node(name="bad_reshape", op_type="Reshape", inputs=("x", "shape"),
                              outputs=("y",))],
                  inputs=[ValueInfo("x", np.dtype(np.float32), (2, 3))],
                  outputs=[ValueInfo("y", np.dtype(np.float32), None)],
                  params={"shape": i64([4, 2])})
    with pytest.raises(OpError, match=r"node 'bad_reshape' \(Reshape\): Reshape: cannot reshape "
                                      r"input \(2, 3\) \(6 elements\) to 'shape'=\[4, 2\]"):
        run(graph, {"x": rand(0, (2, 3))})
