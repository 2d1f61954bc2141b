"""Max and Min give ONNX Runtime's bits, also for +0 against -0 and for NaN (which operand ORT's
Eigen expression returns depends on the broadcast functor, the element's place in SSE packets and
the left-to-right fold), for float32, float64 and float16, 1 to 4 broadcasting inputs.

Expected values come from ONNX Runtime; elements are compared as raw bits (NaN sign included).
"""
from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsim.kernels import eigen_minmax
from qsim.ops import OPS
from tests.ort_util import ort_run_op

SETTINGS = settings(max_examples=60, deadline=None)

#: values where the operand matters (±0, NaN of both signs) and ordinary ones
VALUES = np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 1.0, -1.0, 2.5], np.float64)
FLOATS = [np.float32, np.float64, np.float16]


@st.composite
def broadcast_inputs(draw, max_inputs=4):
    """1 to ``max_inputs`` shapes that broadcast together: suffixes of one full shape (rank
    0-4, dims 1-9) with some dims set to 1; one input has the full shape."""
    full = tuple(draw(st.lists(st.integers(1, 9), min_size=0, max_size=4)))
    n = draw(st.integers(1, max_inputs))
    shapes = []
    for _ in range(n):
        k = draw(st.integers(0, len(full)))
        shapes.append(tuple(1 if draw(st.booleans()) else d for d in full[len(full) - k:]))
    shapes[draw(st.integers(0, n - 1))] = full
    return shapes


def _bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(f"u{x.itemsize}")


def _assert_same_bits(got, expected, what):
    got = np.asarray(got)
    assert (got.shape, got.dtype) == (expected.shape, expected.dtype), what
    bad = np.flatnonzero(_bits(got) != _bits(expected))
    assert bad.size == 0, (f"{what}: {bad.size} of {got.size} differ, first at flat "
                           f"{bad[:5].tolist()}: qsim {got.ravel()[bad[:5]]} vs ORT "
                           f"{expected.ravel()[bad[:5]]}")


@pytest.mark.parametrize("op", ["Max", "Min"])
@pytest.mark.parametrize("dtype", FLOATS)
@SETTINGS
@given(shapes=broadcast_inputs(), seed=st.integers(0, 2**32 - 1), zeros=st.booleans())
def test_signed_zeros_and_nan_as_onnx_runtime(op, dtype, shapes, seed, zeros):
    rng = np.random.default_rng(seed)
    pool = VALUES[:2] if zeros else VALUES       # only ±0: every element is a tie
    inputs = [rng.choice(pool, s).astype(dtype) for s in shapes]
    expected = ort_run_op(op, inputs, opset=13)[0]
    _assert_same_bits(OPS[op](*inputs), expected, f"{op} {dtype.__name__} {shapes}")


@pytest.mark.parametrize("op", ["Max", "Min"])
@pytest.mark.parametrize("opset", [8, 12])
@given(shapes=broadcast_inputs(max_inputs=3), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_float32_at_older_opsets_as_onnx_runtime(op, opset, shapes, seed):
    rng = np.random.default_rng(seed)
    inputs = [rng.choice(VALUES, s).astype(np.float32) for s in shapes]
    expected = ort_run_op(op, inputs, opset=opset)[0]
    _assert_same_bits(OPS[op](*inputs), expected, f"{op}-{opset} {shapes}")


@pytest.mark.parametrize("op", ["Max", "Min"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32, np.uint64])
@given(shapes=broadcast_inputs(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=10, deadline=None)
def test_integers_as_onnx_runtime(op, dtype, shapes, seed):
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(0, 5, s).astype(dtype) for s in shapes]
    expected = ort_run_op(op, inputs, opset=13)[0]
    _assert_same_bits(OPS[op](*inputs), expected, f"{op} {dtype.__name__} {shapes}")


@pytest.mark.parametrize("n", [1, 3, 4, 5, 15, 17])
def test_ties_inside_packets_return_the_second_operand(n):
    """+0 against -0 in one span of ``n``: SSE packets of 4 return the second operand, the
    elements Eigen computes alone (the tail past the last whole packet) the first; a single
    element (shapes (1,)) is ORT's input-0-is-scalar functor, whose first operand is input 1."""
    a, b = np.zeros(n, np.float32), np.full(n, -0.0, np.float32)
    got = np.signbit(OPS["Max"](a, b))
    packets = n // 4 * 4
    want = [True] * packets + [False] * (n - packets) if n > 1 else [True]
    assert got.tolist() == want
    assert np.signbit(ort_run_op("Max", [a, b])[0]).tolist() == want


def test_span_rules_docstring_examples():
    assert doctest.testmod(eigen_minmax).failed == 0
