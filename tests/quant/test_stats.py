"""Streaming statistics: merge property, Numba == NumPy twin, histogram rules of numerics.md §4."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qsim.quant import HistogramStats, MinMaxStats
from qsim.quant import stats as S
from qsim.quant.kernels import channel_view

SETTINGS = settings(max_examples=40, deadline=None)
any32 = st.floats(width=32)
moderate32 = st.floats(-1e6, 1e6, width=32)


def arrays(elements=any32, max_size=300):
    return hnp.arrays(np.float32, st.integers(0, max_size), elements=elements)


# ------------------------------------------------------------------ min / max

@SETTINGS
@given(a=arrays(), b=arrays())
def test_merge_equals_stats_of_concatenation(a, b):
    empty = MinMaxStats.empty()
    merged = empty.update(a).merge(empty.update(b))
    whole = empty.update(np.concatenate([a, b]))
    np.testing.assert_array_equal(merged.min, whole.min)
    np.testing.assert_array_equal(merged.max, whole.max)
    assert merged.nan_count == whole.nan_count == int(np.isnan(a).sum() + np.isnan(b).sum())


@SETTINGS
@given(x=arrays())
def test_min_max_ignores_nan_like_numpy(x):
    s = MinMaxStats.empty().update(x)
    finite = x[~np.isnan(x)]
    if finite.size:
        assert s.min == np.min(finite) and s.max == np.max(finite)
    else:
        assert s.min == np.inf and s.max == -np.inf


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NUMBA_DISABLE_JIT=1: scalar NumPy warns on inf/NaN
@SETTINGS
@given(x=hnp.arrays(np.float32, (4, 3, 5), elements=any32), axis=st.integers(0, 2))
def test_min_max_numba_equals_twin_per_channel(x, axis):
    x3 = channel_view(np.ascontiguousarray(x), axis)
    c = x3.shape[1]
    mn1, mx1 = np.full(c, np.inf, np.float32), np.full(c, -np.inf, np.float32)
    mn2, mx2 = mn1.copy(), mx1.copy()
    k_lo, k_hi = S._float_keys(mn1), S._float_keys(mx1)
    n1 = S._nb_min_max(x3.view(np.int32), k_lo, k_hi)
    n2 = S._np_min_max(x3, mn2, mx2)
    np.testing.assert_array_equal(S._keys_to_float(k_lo), mn2)
    np.testing.assert_array_equal(S._keys_to_float(k_hi), mx2)
    assert n1 == n2
    s = MinMaxStats.empty(axis=axis, channels=x.shape[axis]).update(x)
    for i in range(x.shape[axis]):
        one = MinMaxStats.empty().update(np.take(x, i, axis=axis))
        assert s.min[i] == one.min and s.max[i] == one.max


# ------------------------------------------------------------------ histogram

def _both_histograms(batches, axis=None):
    """Run the Numba kernel and the NumPy twin over the same batches; return both states."""
    first = np.asarray(batches[0])
    c = 1 if axis is None else first.shape[axis]
    states = []
    for fn in (S._nb_histogram_update, S._np_histogram_update):
        fixed, width, k0 = np.zeros(c, bool), np.zeros(c), np.zeros(c)
        batches_seen, pdf = np.zeros(c, np.int64), np.zeros((c, S.NUM_BINS))
        nans = 0
        for b in batches:
            nans += fn(channel_view(np.ascontiguousarray(b, np.float32), axis), fixed, width, k0,
                       batches_seen, pdf)
        states.append((fixed, width, k0, batches_seen, pdf, nans))
    return states


def _assert_same_state(a, b):
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NUMBA_DISABLE_JIT=1: scalar NumPy warns on inf/NaN
@SETTINGS
@given(batches=st.lists(arrays(any32, 200), min_size=1, max_size=3))
def test_histogram_numba_equals_twin(batches):
    nb, np_ = _both_histograms(batches)
    _assert_same_state(nb, np_)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NUMBA_DISABLE_JIT=1: scalar NumPy warns on inf/NaN
@SETTINGS
@given(x=hnp.arrays(np.float32, (3, 4, 6), elements=moderate32), axis=st.integers(0, 2))
def test_histogram_per_channel_numba_equals_twin_and_slices(x, axis):
    nb, np_ = _both_histograms([x, x * np.float32(2)], axis=axis)
    _assert_same_state(nb, np_)
    s = HistogramStats.empty(axis=axis, channels=x.shape[axis]).update(x)
    for i in range(x.shape[axis]):
        one = HistogramStats.empty().update(np.take(x, i, axis=axis))
        np.testing.assert_array_equal(s.pdf[i], one.pdf[0])
        assert s.width[i] == one.width[0] and s.k0[i] == one.k0[0]


@SETTINGS
@given(x=arrays(moderate32, 300).filter(lambda a: a.size > 0 and np.ptp(a) > 0))
def test_first_batch_lands_in_the_bins_and_sums_to_one(x):
    s = HistogramStats.empty().update(x)
    # the bins span 3x the data range around its centre: nothing of the first batch is dropped
    counts = np.rint(s.pdf[0] * x.size)
    assert counts.sum() == x.size
    np.testing.assert_allclose(s.pdf[0].sum(), 1.0, rtol=1e-12)
    e = s.edges(0)
    assert e[0] <= x.min() and x.max() <= e[-1]


def test_bin_rule_is_float32_multiplication_not_division():
    """numerics.md §4.3: s = f32(x·f32(1/w)); idx = floor(s) - f32(k0), checked per element."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=5000).astype(np.float32)
    s = HistogramStats.empty().update(x)
    w, k0 = s.width[0], s.k0[0]
    r = np.float32(1.0 / w)
    idx = (np.floor(x * r) - np.float32(k0)).astype(np.int64)
    want = np.bincount(idx, minlength=S.NUM_BINS) / x.size
    np.testing.assert_array_equal(s.pdf[0], want)


def test_bins_fixed_by_first_batch_min_max():
    s = HistogramStats.empty().update(np.array([-1.0, 3.0], np.float32))
    c = np.float32(1.0)                       # f32(f32(-1 + 3)/2)
    lo = np.float32(c - np.float32(3) * np.float32(c - np.float32(-1)))
    hi = np.float32(c + np.float32(3) * np.float32(np.float32(3) - c))
    assert (lo, hi) == (-5.0, 7.0)
    assert s.width[0] == (7.0 + 5.0) / 1536
    assert s.k0[0] == np.floor(-5.0 / s.width[0])


def test_all_zero_batches_before_data_are_skipped():
    rng = np.random.default_rng(1)
    a = rng.normal(size=100).astype(np.float32)
    zeros = np.zeros(50, np.float32)
    with_zeros = HistogramStats.empty().update(zeros).update(zeros).update(a)
    without = HistogramStats.empty().update(a)
    np.testing.assert_array_equal(with_zeros.pdf, without.pdf)
    assert with_zeros.batches[0] == 1
    # after the bins are fixed an all-zero batch counts with equal weight
    later = without.update(zeros)
    assert later.batches[0] == 2
    np.testing.assert_allclose(later.pdf[0].sum(), 1.0, rtol=1e-12)


def test_batches_have_equal_weight():
    rng = np.random.default_rng(2)
    a = rng.normal(size=100).astype(np.float32)
    b = rng.normal(size=1000).astype(np.float32) * np.float32(0.5)
    s = HistogramStats.empty().update(a).update(b)
    only_a = HistogramStats.empty().update(a)
    r = np.float32(1.0 / s.width[0])
    pb = np.bincount((np.floor(b * r) - np.float32(s.k0[0])).astype(np.int64),
                     minlength=S.NUM_BINS) / b.size
    np.testing.assert_array_equal(s.pdf[0], (only_a.pdf[0] * 1.0 + pb) / 2.0)


def test_nan_dropped_but_counted_in_batch_size():
    x = np.array([1.0, 2.0, np.nan, np.nan], np.float32)
    s = HistogramStats.empty().update(x)
    assert s.nan_count == 2
    np.testing.assert_allclose(s.pdf[0].sum(), 0.5, rtol=1e-12)


def test_update_does_not_keep_or_modify_the_batch():
    x = np.linspace(-1, 1, 100, dtype=np.float32)
    before = x.copy()
    s = HistogramStats.empty().update(x)
    m = MinMaxStats.empty().update(x)
    np.testing.assert_array_equal(x, before)
    for a in (s.pdf, s.width, m.min):
        assert not a.flags.writeable
        assert not np.shares_memory(a, x)


@pytest.mark.parametrize("value", [1e6, -3e5])
def test_constant_large_first_batch_gives_zero_width(value):
    """|v| ≥ 2^18: v + 0.01 rounds back to v, the bins have width 0 and nothing is binned."""
    s = HistogramStats.empty().update(np.full(10, value, np.float32))
    assert s.fixed[0] and s.width[0] == 0.0
    assert not s.pdf.any()
