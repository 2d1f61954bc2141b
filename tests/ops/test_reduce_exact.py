"""ReduceLogSumExp, ReduceMax/Min and ReduceProd give ONNX Runtime's bits (Hypothesis, live ORT).

Shapes with size-1 axes and every axes family (ORT merges neighbouring axes of one kind, size-1
ones included, into R / KR / RK / KRK / RKR / generic loops), special values (±Inf, NaN, ±0,
values whose exp overflows), keepdims 0/1; ReduceLogSumExp in float32 and float64. Expected
values come from ORT (graph optimizations off); elements are compared bit for bit.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsim.kernels import libm
from qsim.ops import OPS

from ..ort_util import ort_and_qsim

SETTINGS = settings(max_examples=60, deadline=None)
SPECIAL = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 80.0, -80.0, 100.0, 1e30], np.float32)


@st.composite
def reduce_cases(draw):
    """(shape with size-1 axes likely, sorted axes, data)."""
    shape = tuple(draw(st.lists(st.sampled_from([1, 1, 2, 3, 4, 5, 7, 9]), min_size=1,
                                max_size=4)))
    axes = sorted(draw(st.lists(st.integers(0, len(shape) - 1), min_size=1,
                                max_size=len(shape), unique=True)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.standard_normal(shape) * draw(st.sampled_from([0.1, 1.0, 3.0, 30.0]))).astype(
        np.float32)
    share = draw(st.sampled_from([0.0, 0.0, 0.1, 0.4]))
    mask = rng.random(shape) < share
    x[mask] = rng.choice(SPECIAL, int(mask.sum()))
    return shape, axes, x


def assert_bits(got, expected, what):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.dtype == expected.dtype and got.shape == expected.shape, what
    same = (got == expected) | (np.isnan(got) & np.isnan(expected))
    same &= (np.signbit(got) == np.signbit(expected)) | np.isnan(got)
    assert same.all(), f"{what}: qsim {got[~same][:4]} != ORT {expected[~same][:4]}"


def run_both(op, x, axes, keepdims):
    (e,), (g,) = ort_and_qsim(op, [x, np.array(axes, np.int64)], {"keepdims": keepdims},
                              opset=18, initializers=(1,))
    return e, g


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("op", ["ReduceLogSumExp", "ReduceMax", "ReduceMin", "ReduceProd",
                                "ReduceL1", "ReduceL2", "ReduceSumSquare"])
@SETTINGS
@given(case=reduce_cases(), keepdims=st.sampled_from([0, 1]))
def test_reduce_matches_ort_bit_for_bit(op, case, keepdims):
    shape, axes, x = case
    if op in ("ReduceL1", "ReduceL2", "ReduceSumSquare"):
        x = np.where(np.isfinite(x), x, np.float32(1.5))  # (their special values: other tests)
    e, g = run_both(op, x, axes, keepdims)
    assert_bits(g, e, f"{op} {shape} axes={axes}")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("op", ["ReduceLogSumExp", "ReduceMax", "ReduceMin"])
@SETTINGS
@given(case=reduce_cases(), keepdims=st.sampled_from([0, 1]))
def test_reduce_float64_matches_ort(op, case, keepdims):
    """float64: libm exp/log in double, Eigen packets of 2 doubles."""
    shape, axes, x = case
    e, g = run_both(op, x.astype(np.float64) * 1.000001, axes, keepdims)
    assert_bits(g, e, f"float64 {op} {shape} axes={axes}")


def test_reduce_log_sum_exp_pinned_example():
    """Found by Hypothesis: (2, 4, 2, 2) over axis 1 was 1 ulp above ORT (1.7240679). ORT takes
    glibc's logf of the float32 sum; a float64 log rounded to float32 gives the next float."""
    x = np.zeros((2, 4, 2, 2), np.float32)
    x[0, :, 0, 0] = [-1.3031572103500366, 0.581118106842041, 0.5467129945755005,
                     0.5988461971282959]
    e, g = run_both("ReduceLogSumExp", x, [1], 1)
    assert e[0, 0, 0, 0] == np.float32(1.7240678)     # ORT's value, as found
    assert_bits(g, e, "pinned (2,4,2,2) axes=[1]")


@pytest.mark.parametrize("row, want", [([1.0, np.inf, 2.0], np.inf), ([-np.inf, -np.inf], -np.inf),
                                       ([np.inf, np.nan], np.inf), ([np.nan, np.inf], np.nan),
                                       ([-np.inf, 1.0], 1.0)])
def test_reduce_log_sum_exp_infinite_max_is_the_result(row, want):
    """Every axis reduced: an infinite max is returned as is (ORT 1.32's aggall); -inf
    elements are skipped in the sum. Expected values as ORT 1.32 gives them."""
    x = np.array(row, np.float32)
    e, g = run_both("ReduceLogSumExp", x, [0], 1)
    assert_bits(g, e, f"{row}")
    assert_bits(g, np.array([want], np.float32), f"{row} (ORT 1.32's value)")


@pytest.mark.skipif(not libm.USE_NUMBA, reason="compares the Numba kernel with its NumPy twin")
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@SETTINGS
@given(case=reduce_cases(), whole=st.booleans(), double=st.booleans())
def test_log_sum_exp_kernel_equals_twin(case, whole, double):
    _, _, x = case
    rows = x.reshape(x.shape[0], -1).astype(np.float64 if double else np.float32)
    maxes = rows.max(axis=1)
    out = np.empty(rows.shape[0], rows.dtype)
    libm._nb_log_sum_exp_rows(rows, whole, maxes, rows.dtype.type(0.0), out)
    assert_bits(out, libm._np_log_sum_exp_rows(rows, whole, maxes), "kernel vs twin")


def test_reduce_max_nan_first_stays_later_nan_passed_over():
    """ORT's running max: a NaN first is the result, a later NaN is ignored (not np.max)."""
    x = np.array([[np.nan, 1.0], [1.0, np.nan]], np.float32)
    np.testing.assert_array_equal(OPS["ReduceMax"](x, np.array([1]), keepdims=0),
                                  np.array([np.nan, 1.0], np.float32))
