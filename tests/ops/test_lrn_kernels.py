"""LRN's compiled kernels against their NumPy twins, bit for bit (NaN payloads and signs too), and
LRN against ONNX Runtime where NaNs of both signs meet.

* :func:`qsim.kernels.eigen_math.ppow` (Eigen's packet pow, compiled: one vectorised loop of
  float32 selects) vs :func:`qsim.kernels.eigen_math._np_ppow`, over arbitrary float32 bit
  patterns, the special values and exponents of every kind the compiled path takes (non-integer,
  integer outside [-3, 7], odd and even, tiny and up to 2^16), on 1 and 2 threads;
* :func:`qsim.ops.normalization._nb_window_sums` vs ``_np_window_sums`` (infinite and NaN
  squares, zero padding, infinite ``alpha``, signed-zero ``bias``);
* LRN vs ONNX Runtime on tensors full of ±NaN, ±inf, ±0 and subnormals: which NaN wins where two
  meet (a NaN product in the window sums; X's NaN in Eigen's packets, powf's outside them).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsim.jit import USE_NUMBA
from qsim.kernels import eigen_math as em
from qsim.kernels import mlas_math as me
from qsim.ops import OPS
from qsim.ops import normalization as nm
from tests.ort_util import ort_run_op

# The intrinsics of the compiled kernels (bitcasts) have no pure-Python form: under
# NUMBA_DISABLE_JIT=1 qsim runs the twins, which the ORT tests below check.
needs_jit = pytest.mark.skipif(not USE_NUMBA, reason="compares compiled Numba kernels with "
                               "their NumPy twins; NUMBA_DISABLE_JIT=1 runs the twins only")

NAN = np.float32(np.nan)
SPECIALS = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, NAN, -NAN, 1e-45, -1e-45, 1e-40,
                     1.1754942e-38, 1.17549435e-38, 3.4028235e38, -3.4028235e38, 1e30, 1e-30,
                     0.5, 2.0, 0.70710677, 0.70710683, 1.4142135, 1.0000001, 0.99999994, -0.75,
                     7.0, 65504.0], np.float32)
#: exponents the compiled pow takes: non-integer, and integer outside int_pow's [-3, 7]
EXPONENTS = [-0.75, 0.75, -0.5, 0.5, -1.5, 2.5, -0.1, 1e-3, -1e-7, 1e-30, -4.0, 8.0, 9.0, -9.0,
             -7.0, 100.25, -12345.5, 65536.0, -65536.0, 65535.5]
bits32 = st.integers(-2**31, 2**31 - 1).map(lambda b: np.int32(b).view(np.float32))
exponents = st.one_of(
    st.sampled_from(EXPONENTS),
    st.floats(-65536.0, 65536.0, width=32).filter(lambda y: not (y == round(y) and -3 <= y <= 7)))


def same_bits(got: np.ndarray, expected: np.ndarray, what) -> None:
    assert got.dtype == expected.dtype and got.shape == expected.shape, what
    differ = got.view(np.uint32) != expected.view(np.uint32)
    assert not differ.any(), f"{what}: {int(differ.sum())} differ, e.g. at " \
        f"{np.flatnonzero(differ)[:3]}: {got[differ][:3]} vs {expected[differ][:3]}"


@needs_jit
@settings(max_examples=60, deadline=None)
@given(values=st.lists(bits32, min_size=1, max_size=70), y=exponents,
       lo=st.floats(1e-3, 1e3), seed=st.integers(0, 2**32 - 1))
def test_compiled_pow_is_its_twin(values, y, lo, seed):
    """Arbitrary bit patterns (NaN payloads, subnormals, negatives), the special values, and a
    run of LRN-like positive values: compiled pow == NumPy twin, bit for bit."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.array(values, np.float32), SPECIALS,
                        (rng.random(67) * lo + lo / 10).astype(np.float32)])
    rng.shuffle(x)
    same_bits(em.ppow(x, y), em._np_ppow(x, y), f"exponent {y}")


@needs_jit
@pytest.mark.parametrize("y", EXPONENTS)
def test_compiled_pow_special_values(y):
    same_bits(em.ppow(SPECIALS, y), em._np_ppow(SPECIALS, y), f"exponent {y}")


@needs_jit
@pytest.mark.parametrize("y", [-125.7, -126.0 - 2**-10, -130.3, -140.5, -148.9, -149.6, -150.2,
                               127.4, 127.9, 128.2, -1000.5, 1000.5])
def test_compiled_pow_subnormal_and_overflowing_results(y):
    """Results 2^f across the subnormal range and the overflow threshold (ldexp's one rounding),
    from x near 1/2, 1 and 2 (every last bit) and below."""
    steps = np.arange(-300, 300, dtype=np.int32)
    x = np.concatenate([(np.float32(v).view(np.int32) + steps).view(np.float32)
                        for v in (0.5, 0.99, 1.0, 1.01, 2.0, 1.9, 0.3)])
    same_bits(em.ppow(x, y), em._np_ppow(x, y), f"exponent {y}")


@needs_jit
@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_pow_on_threads(threads):
    """A tensor large enough for the parts on two threads (and an odd size: a short last part)."""
    rng = np.random.default_rng(threads)
    x = (rng.random((3, 7, 59, 61)) * 50).astype(np.float32)
    every = np.arange(0, x.size, 997)
    x.reshape(-1)[every] = np.resize(SPECIALS, every.size)
    same_bits(em.ppow(x, -0.75, threads), em._np_ppow(x, -0.75), f"{threads} threads")


def test_exponents_outside_the_compiled_range_use_the_twin():
    """int_pow's exponents, non-finite ones and |y| > 2^16 take the NumPy twin (same bits by
    construction, in every mode)."""
    x = SPECIALS
    for y in (-3.0, 0.0, 2.0, 7.0, 70000.5, float("inf"), float("nan")):
        same_bits(em.ppow(x, y), em._np_ppow(x, y), f"exponent {y}")


window_values = st.sampled_from([0.5, -1.5, 3.0, 0.0, -0.0, np.inf, -np.inf, NAN, -NAN, 3e19,
                                 1e-40, -2e-20, 1e4])


@needs_jit
@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(1, 9), s=st.integers(1, 40),
       size=st.integers(1, 8), alpha=st.sampled_from([1e-4, 1e-2, 1.0, 7.0, np.inf]),
       bias=st.sampled_from([1.0, 0.0, -0.0, 2.0, 1e-3, np.inf]),
       specials=st.lists(window_values, min_size=1, max_size=30), seed=st.integers(0, 2**32 - 1))
def test_compiled_window_sums_are_their_twin(n, c, s, size, alpha, bias, specials, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-4, 4, (n, c, s)).astype(np.float32)
    where = rng.integers(0, x.size, len(specials))
    x.reshape(-1)[where] = np.array(specials, np.float32)
    a = np.float32(np.float32(alpha) / np.float32(size))
    got = np.empty_like(x)
    nm._nb_window_sums(x, size, a, np.float32(bias), got)
    same_bits(got, nm._np_window_sums(x, size, a, np.float32(bias)), (size, alpha, bias))


@settings(max_examples=30, deadline=None)
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 7), st.integers(1, 3), st.integers(1, 45)),
       size=st.sampled_from([1, 3, 5, 7]), beta=st.sampled_from([0.75, 1.0, 2.5, 5.0]),
       bias=st.sampled_from([0.0, 1.0]), seed=st.integers(0, 2**32 - 1))
def test_lrn_nan_signs_match_onnxruntime(shape, size, beta, bias, seed):
    """±NaN, ±inf, ±0, subnormal and overflowing inputs (X² = inf) in every position of the
    packets and of the parallel blocks' scalar heads and tails: ORT's bits, NaN signs included
    (both NaN in a window sum: the product's; in X · power: X's in packets, powf's outside)."""
    rng = np.random.default_rng(seed)
    values = np.array([0.5, -1.5, 2.0, 0.0, -0.0, np.inf, -np.inf, NAN, -NAN, 3e19, 1e-40],
                      np.float32)
    weights = rng.random(values.size) + np.eye(values.size)[0] * 3
    x = rng.choice(values, shape, p=weights / weights.sum())
    attrs = {"size": size, "alpha": 1e-2, "beta": beta, "bias": bias}
    expected = ort_run_op("LRN", [x], attrs, opset=13, threads=me.DEFAULT_THREADS)[0]
    same_bits(OPS["LRN"](x, **attrs), expected, attrs)
