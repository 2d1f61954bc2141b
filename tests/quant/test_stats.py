"""Streaming statistics: merge property, Numba == NumPy twin, histogram rules of numerics.md §4."""
from __future__ import annotations

import ctypes
import math
import os
import threading
import time

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qsim.errors import ConfigError
from qsim.quant import HistogramStats, MinMaxStats
from qsim.quant import stats as S
from qsim.quant import workers as W
from qsim.quant.kernels import channel_view

from .conftest import JIT_DISABLED

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
    n1 = S._nb_min_max(x3.view(np.int32), mn1.view(np.int32), mx1.view(np.int32))
    n2 = S._np_min_max(x3, mn2, mx2)
    np.testing.assert_array_equal(mn1, mn2)
    np.testing.assert_array_equal(mx1, mx2)
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
        nans, inf_seen, finite_seen = 0, False, False
        for b in batches:
            n, i, f = fn(channel_view(np.ascontiguousarray(b, np.float32), axis), fixed, width,
                         k0, batches_seen, pdf)
            nans, inf_seen, finite_seen = nans + n, inf_seen or i, finite_seen or f
        states.append((fixed, width, k0, batches_seen, pdf, nans, inf_seen, finite_seen))
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
# ptp > 1e-30: below about 1e-36 the bin width w is so small that f32(1/w) overflows to inf and
# every element is dropped (as in AIMET), e.g. x = [1.1754944e-38, 0]
@given(x=arrays(moderate32, 300).filter(lambda a: a.size > 0 and np.ptp(a) > 1e-30))
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


# ------------------------------------------------------------------ fast paths (same bits)

def _signed_zero_min_max(x):
    """Independent NaN-ignoring min/max with -0.0 < +0.0 (the order of the float bits)."""
    v = x[~np.isnan(x)]
    if not v.size:
        return np.float32(np.inf), np.float32(-np.inf)
    lo, hi = v.min(), v.max()
    zeros = v[v == 0]
    if lo == 0:
        lo = np.float32(-0.0) if np.signbit(zeros).any() else np.float32(0.0)
    if hi == 0:
        hi = np.float32(0.0) if (~np.signbit(zeros)).any() else np.float32(-0.0)
    return np.float32(lo), np.float32(hi)


@st.composite
def long_rows(draw, max_size=3000):
    """float32 rows long enough for the vectorised loops: random bits (every NaN payload and
    sign), or normal data with a few or many NaN, infinities and signed zeros."""
    n = draw(st.integers(0, max_size))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.booleans()):
        return rng.integers(-2**31, 2**31, n, dtype=np.int64).astype(np.int32).view(np.float32)
    x = rng.normal(size=n).astype(np.float32)
    special = rng.random(n) < draw(st.sampled_from([0.0, 0.001, 0.3, 1.0]))
    pool = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
    x[special] = rng.choice(pool, int(special.sum()))
    return x


@SETTINGS
@given(x=long_rows(), channels=st.sampled_from([1, 2, 3]))
def test_min_max_kernel_bits_on_long_rows(x, channels):
    """The vectorised key min/max plus the NaN re-scan give the exact bits (signed zeros too)
    and the exact NaN count, per tensor and per channel."""
    x = x[: x.size - x.size % channels].reshape(-1, channels)
    x3 = channel_view(np.ascontiguousarray(x), 1)
    mn, mx = np.full(channels, np.inf, np.float32), np.full(channels, -np.inf, np.float32)
    nans = S._nb_min_max(x3.view(np.int32), mn.view(np.int32), mx.view(np.int32))
    assert nans == int(np.isnan(x).sum())
    for c in range(channels):
        lo, hi = _signed_zero_min_max(x[:, c])
        assert mn[c].tobytes() == lo.tobytes() and mx[c].tobytes() == hi.tobytes()


def test_min_max_keeps_previous_statistics_bits():
    """Folding into existing min/max: -0.0 beats +0.0 for the min, +0.0 beats -0.0 for the max."""
    mn, mx = np.array([0.0], np.float32), np.array([-0.0], np.float32)
    x3 = channel_view(np.array([-0.0, 0.0, np.nan], np.float32), None)
    assert S._nb_min_max(x3.view(np.int32), mn.view(np.int32), mx.view(np.int32)) == 1
    assert np.signbit(mn[0]) and not np.signbit(mx[0])


def _hist_state(x, threads, axis=None):
    x3 = channel_view(np.ascontiguousarray(x, np.float32), axis)
    c = x3.shape[1]
    fixed, width, k0 = np.zeros(c, bool), np.zeros(c), np.zeros(c)
    batches, pdf = np.zeros(c, np.int64), np.zeros((c, S.NUM_BINS))
    flags = []
    for b in (np.zeros_like(x3), x3, x3 * np.float32(1.5)):
        flags.append(S._histogram_update(b, fixed, width, k0, batches, pdf, threads))
    assert batches.tolist() == [2] * c         # the all-zero batch came before any data
    return fixed, width, k0, batches, pdf, flags


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NUMBA_DISABLE_JIT=1: scalar NumPy warns on inf/NaN
@SETTINGS
@given(x=long_rows(1500), cuts=st.lists(st.integers(0, 1500), max_size=6))
def test_chunk_counts_add_up_to_the_row_counts(x, cuts):
    """Counting a row in chunks cut anywhere (one histogram per chunk, added at the end) gives
    the counts of one pass, the NaN count and the ±Inf / finite flags of the whole row."""
    r, k0f = np.float32(40.0), np.float32(-100.0)
    x3 = channel_view(x, None)
    whole = np.zeros(S.NUM_BINS + 1, np.int64)
    one = S._nb_count_channel(x3, 0, 0, x.size, r, k0f, whole)
    bounds = sorted({0, x.size, *(min(c, x.size) for c in cuts)})
    chunked = np.zeros(S.NUM_BINS + 1, np.int64)
    nans, inf_seen, finite_seen = 0, False, False
    for a, b in zip(bounds, bounds[1:]):
        n, i, f = S._nb_count_channel(x3, 0, a, b, r, k0f, chunked)
        nans, inf_seen, finite_seen = nans + n, inf_seen or i, finite_seen or f
    np.testing.assert_array_equal(chunked, whole)
    assert whole.sum() == x.size
    assert (nans, inf_seen, finite_seen) == one
    assert one == (int(np.isnan(x).sum()), bool(np.isinf(x).any()), bool(np.isfinite(x).any()))


@st.composite
def edge_batches(draw):
    """(first batch, later batch, channels): the later batch holds the float32 bin edges
    ``f32((k0 + i)·w)`` of the bins the first batch fixes, their float32 neighbours (ties at the
    edges, where ``f32(x·r)`` may round across), values beyond both ends, NaN and ±Inf."""
    channels = draw(st.sampled_from([1, 2, 3]))
    lo = draw(st.floats(-1e4, 1e4, width=32))
    span = draw(st.floats(0.0009765625, 1e4, width=32))
    first = np.array([lo, np.float32(lo + span)] * channels, np.float32).reshape(2, channels)
    s = HistogramStats.empty(axis=1, channels=channels).update(first)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 700))
    cols = []
    for c in range(channels):
        e = s.edges(c).astype(np.float32)[rng.integers(0, S.NUM_BINS + 1, n)]
        v = np.concatenate([e, np.nextafter(e, np.float32(np.inf)),
                            np.nextafter(e, np.float32(-np.inf)),
                            rng.choice(np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0],
                                                np.float32), n // 7 + 1)])
        cols.append(rng.permutation(v))
    return first, np.stack(cols, axis=1), channels


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NUMBA_DISABLE_JIT=1: scalar NumPy warns on inf/NaN
@SETTINGS
@given(case=edge_batches(), threads=st.integers(1, 4))
def test_fast_histogram_equals_twin_at_bin_edges(case, threads):
    """The serial and threaded kernels give the NumPy twin's bins, pdf bits, NaN count and
    flags on values at, just above and just below every bin edge, NaN and ±Inf."""
    first, later, channels = case
    states = []
    for fn in (S._np_histogram_update, S._nb_histogram_update,
               lambda *a: S._threaded_histogram_update(*a, threads)):
        fixed, width, k0 = np.zeros(channels, bool), np.zeros(channels), np.zeros(channels)
        batches, pdf = np.zeros(channels, np.int64), np.zeros((channels, S.NUM_BINS))
        flags = [fn(channel_view(b, 1), fixed, width, k0, batches, pdf) for b in (first, later)]
        states.append((fixed, width, k0, batches, pdf.tobytes(), flags))
    _assert_same_state(states[0], states[1])
    _assert_same_state(states[0], states[2])
    assert states[0][5][1] == (int(np.isnan(later).sum()), bool(np.isinf(later).any()), True)


@pytest.mark.slow
@pytest.mark.parametrize("threads", [2, 3])
def test_parallel_histogram_update_equals_serial_bits(threads):
    """Channels above PARALLEL_MIN_ELEMENTS take the threaded path: same state, bit for bit."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=2 * (S.PARALLEL_MIN_ELEMENTS + 1001)).astype(np.float32)
    x[rng.integers(0, x.size, 50)] = np.nan
    per_channel = x.reshape(2, -1)
    for arr, axis in ((x, None), (per_channel, 0)):
        serial, threaded = _hist_state(arr, 1, axis), _hist_state(arr, threads, axis)
        for a, b in zip(serial, threaded):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    public = HistogramStats.empty().update(x, threads=threads)
    assert public.pdf.tobytes() == HistogramStats.empty().update(x, threads=1).pdf.tobytes()
    assert public.pdf.tobytes() == HistogramStats.empty().update(x).pdf.tobytes()   # default
    assert public.nan_count == int(np.isnan(x).sum())


@pytest.mark.parametrize("runnable", [None, 1, 2, 3, 50])
def test_default_threads_only_for_large_channels_and_free_cores(monkeypatch, runnable):
    """Large channels get the machine's cores no other task is running on (this thread counts
    itself), within this process's cores and at least one; all of those when the machine's
    runnable count is unknown."""
    big = channel_view(np.zeros(S.PARALLEL_MIN_ELEMENTS, np.float32), None)
    small = channel_view(np.zeros((S.PARALLEL_MIN_ELEMENTS, 2), np.float32)[:-1], 1)
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(S, "_runnable_tasks", lambda: runnable)
    monkeypatch.setattr(S, "_team", lambda pid: [])
    free = None if runnable is None else os.cpu_count() - (runnable - 1)
    expected = cores if runnable is None else max(1, min(cores, free))
    assert S.default_threads(big) == expected
    assert S.default_threads(small) == 1


def test_default_threads_does_not_count_our_spinning_workers_as_other_tasks(monkeypatch):
    """A histogram worker of this process spinning for its next job is a runnable task in
    /proc/loadavg, but its core is free for the update."""
    big = channel_view(np.zeros(S.PARALLEL_MIN_ELEMENTS, np.float32), None)

    class Spinning:
        def awake(self):
            return True

    monkeypatch.setattr(S, "_runnable_tasks", lambda: 2)     # this thread and the worker
    monkeypatch.setattr(S, "_team", lambda pid: [Spinning()])
    assert S.default_threads(big) == min(len(os.sched_getaffinity(0)), os.cpu_count())
    assert S.default_threads(big) > 1 or os.cpu_count() == 1


def test_runnable_tasks_counts_this_thread():
    n = S._runnable_tasks()
    if os.path.exists("/proc/loadavg"):
        assert isinstance(n, int) and n >= 1
    else:
        assert n is None


@pytest.mark.parametrize("threads", [0, -2, 1.5, "2"])
def test_histogram_threads_must_be_a_positive_integer(threads):
    with pytest.raises(ConfigError, match="threads must be None or an integer >= 1"):
        HistogramStats.empty().update(np.ones(4, np.float32), threads=threads)


def test_tiny_first_range_drops_everything():
    """Bins [-2^-126, 2^-125): w = 3·2^-126/1536 ≈ 2.3e-41, f32(1/w) = inf, so s is inf or NaN
    and nothing is binned (numerics.md §4.3 rule: r = f32(1/w))."""
    s = HistogramStats.empty().update(np.array([1.1754944e-38, 0.0], np.float32))
    assert s.fixed[0] and 1.0 / s.width[0] > np.finfo(np.float32).max     # f32(1/w) = inf
    assert not s.pdf.any()


@pytest.mark.parametrize("shape, axis", [((64, 32), None), ((64, 32), 1), ((4, 8, 16), 0)])
def test_batch_view_does_not_copy_float32(shape, axis):
    x = np.zeros(shape, np.float32)
    assert np.shares_memory(S._as_batch(x, axis), x)


@pytest.mark.skipif(JIT_DISABLED, reason="the NumPy twins (used without Numba) allocate O(n) temporaries")
@pytest.mark.parametrize("make", [MinMaxStats.empty, HistogramStats.empty])
def test_update_does_not_copy_a_float32_batch(make):
    """A C-contiguous float32 batch is read in place: the update allocates O(bins), not O(n)."""
    import tracemalloc
    x = np.random.default_rng(3).normal(size=1 << 20).astype(np.float32)     # 4 MiB
    s = make().update(x)
    tracemalloc.start()
    try:
        s.update(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024


@SETTINGS
@given(x=long_rows(400), channels=st.sampled_from([1, 2, 3]))
def test_min_max_flags_equal_finiteness_of_the_batch(x, channels):
    """The ±Inf / finite flags taken from the min/max equal a direct look at the batch."""
    x = x[: x.size - x.size % channels].reshape(-1, channels)
    s = MinMaxStats.empty(axis=1, channels=channels).observe(x)
    assert (s.inf_seen, s.finite_seen) == (bool(np.isinf(x).any()), bool(np.isfinite(x).any()))


@pytest.mark.skipif(JIT_DISABLED or not hasattr(os, "fork"),
                    reason="the thread pool is used by the compiled path; needs fork")
def test_threaded_histogram_works_in_a_forked_child():
    """A forked process (a cluster worker) gets its own pool: the parent's threads are gone."""
    import multiprocessing
    x = np.random.default_rng(5).normal(size=S.PARALLEL_MIN_ELEMENTS).astype(np.float32)
    parent = HistogramStats.empty().update(x, threads=2)        # creates the parent's pool
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.apply_async(_threaded_pdf, (x,)).get(timeout=60)
    assert child == parent.pdf.tobytes()


def _threaded_pdf(x):
    return HistogramStats.empty().update(x, threads=2).pdf.tobytes()


# ------------------------------------------------------------------ kernel == twin == reference

def _f32(v: float) -> float:
    """``v`` rounded to float32 (round to nearest even; beyond the range: ±inf)."""
    with np.errstate(over="ignore"):
        return float(np.float32(v))


def _div(a: float, b: float) -> float:
    """IEEE float64 ``a / b`` (inf/NaN on division by zero, where Python raises)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


def _reference_histogram(batches):
    """numerics.md §4 element by element in plain Python floats, for one channel.

    A float64 sum, difference or product of two float32 values rounded to float32 is the
    float32 operation (53 ≥ 2·24 + 2 bits), so ``_f32(a op b)`` is AIMET's float32 arithmetic.
    Returns ``(fixed, w, k0, batches counted, pdf, #NaN, any ±Inf, any finite)``."""
    limit, top = float(S.L32), S.NUM_BINS
    fixed, w, k0, k, pdf = False, 0.0, 0.0, 0, [0.0] * top
    nans, inf_seen, finite_seen = 0, False, False
    for batch in batches:
        values = [float(v) for v in np.asarray(batch, np.float32).ravel()]
        inf_seen |= any(math.isinf(v) for v in values)
        finite_seen |= any(math.isfinite(v) for v in values)
        if not values:
            continue
        if not fixed:
            numbers = [v for v in values if v == v]
            mn, mx = (min(numbers), max(numbers)) if numbers else (math.nan, math.nan)
            if mn == 0.0 and mx == 0.0:
                continue                                    # all zero: bins stay open
            if mn == mx:
                mx = _f32(mn + 0.01)
            c = _f32(_f32(mn + mx) / 2.0)
            lo = _f32(c - _f32(3.0 * _f32(c - mn)))
            hi = _f32(c + _f32(3.0 * _f32(mx - c)))
            if numbers:
                lo = -limit if (lo != lo or lo < -limit) else min(lo, limit)
                hi = limit if (hi != hi or hi > limit) else max(hi, -limit)
            w = _div(hi - lo, top)
            k0 = float(np.floor(_div(lo, w)))
            fixed = True
        r, k0f = _f32(_div(1.0, w)), _f32(k0)
        counts = [0] * top
        for v in values:
            if v != v:
                nans += 1
                continue
            s = _f32(v * r) if math.isfinite(v) and math.isfinite(r) else v * r
            if s != s or abs(s) >= 2.0 ** 31:
                continue                                    # dropped
            idx = _f32(math.floor(s) - k0f)
            if 0 <= idx < top:
                counts[int(idx)] += 1
        pdf = [(p * k + n / len(values)) / (k + 1.0) for p, n in zip(pdf, counts)]
        k += 1
    return fixed, w, k0, k, np.array(pdf), nans, inf_seen, finite_seen


def _kernel_states(batches, threads, piece):
    """The state of one channel after ``batches`` by the serial kernel, the threaded one (cut
    into pieces of at least ``piece`` elements) and the NumPy twin."""
    runs = {"serial": S._nb_histogram_update, "twin": S._np_histogram_update,
            "threaded": lambda *a: S._threaded_histogram_update(*a, threads, piece)}
    states = {}
    for name, fn in runs.items():
        fixed, width, k0 = np.zeros(1, bool), np.zeros(1), np.zeros(1)
        seen, pdf = np.zeros(1, np.int64), np.zeros((1, S.NUM_BINS))
        nans, inf_seen, finite_seen = 0, False, False
        for b in batches:
            n, i, f = fn(channel_view(np.ascontiguousarray(b, np.float32), None), fixed, width,
                         k0, seen, pdf)
            nans, inf_seen, finite_seen = nans + n, inf_seen or i, finite_seen or f
        states[name] = (bool(fixed[0]), width[0], k0[0], int(seen[0]), pdf[0], nans,
                        bool(inf_seen), bool(finite_seen))
    return states


def _same_bits(a, b):
    for u, v in zip(a, b):
        assert np.asarray(u).tobytes() == np.asarray(v).tobytes(), (u, v)


@st.composite
def reference_batches(draw):
    """1-3 batches: random float32 bits, normal data with specials (long_rows), or a first
    batch followed by the float32 edges of the bins it fixes and their neighbours."""
    kind = draw(st.sampled_from(["any", "rows", "edges"]))
    if kind == "any":
        return draw(st.lists(arrays(any32, 300), min_size=1, max_size=3))
    if kind == "rows":
        return draw(st.lists(long_rows(700), min_size=1, max_size=3))
    first, later, _ = draw(edge_batches())
    return [first[:, 0], later[:, 0]]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NUMBA_DISABLE_JIT=1: scalar NumPy warns on inf/NaN
@SETTINGS
@given(batches=reference_batches(), threads=st.integers(1, 3), piece=st.integers(1, 64))
def test_histogram_kernels_equal_twin_and_plain_python_reference(batches, threads, piece):
    """Serial kernel (4 sub-histograms), threaded kernel (pieces taken in turn), NumPy twin and
    a plain-Python reading of §4 give the same bins, pdf bits, NaN count and flags."""
    ref = _reference_histogram(batches)
    for name, state in _kernel_states(batches, threads, piece).items():
        if not ref[0]:                                   # nothing but zeros (or nothing) seen
            assert not state[0] and state[3] == 0 and not state[4].any(), name
            assert state[5:] == ref[5:], name
            continue
        _same_bits(state, ref)


def test_relu_shaped_runs_of_one_bin_count_exactly():
    """Long runs of one value (the zeros after a Relu) spread over the sub-histograms: each
    bin's count is the number of its elements (pdf·numel is exact below 2^53)."""
    rng = np.random.default_rng(8)
    x = np.maximum(rng.normal(size=10_007).astype(np.float32), np.float32(0))
    s = HistogramStats.empty().update(x, threads=1)
    counts = np.rint(s.pdf[0] * x.size).astype(np.int64)
    edges = s.edges(0)
    zero_bin = int(np.searchsorted(edges, 0.0, side="right")) - 1
    assert counts[zero_bin] == int((x == 0).sum()) + int(((x > 0) & (x < edges[zero_bin + 1])).sum())
    assert counts.sum() == x.size


def _two_batches(x, update):
    """State and flags after ``x`` then ``2·x`` through ``update(x3, fixed, width, k0, batches, pdf)``."""
    fixed, width, k0 = np.zeros(1, bool), np.zeros(1), np.zeros(1)
    seen, pdf = np.zeros(1, np.int64), np.zeros((1, S.NUM_BINS))
    flags = [update(channel_view(b, None), fixed, width, k0, seen, pdf) for b in (x, x * 2)]
    return fixed, width, k0, seen, pdf, flags


@pytest.mark.skipif(JIT_DISABLED, reason="threads only matter for the compiled kernels")
def test_threaded_update_does_not_wait_for_a_worker_without_a_core(monkeypatch):
    """A worker that never runs (its thread never gets a core: here never started) takes no
    piece, so the calling thread counts every piece without waiting; a worker that has not
    acknowledged its last job is given no new one. The serial state."""
    x = np.random.default_rng(9).normal(size=50_000).astype(np.float32)
    serial = _two_batches(x, S._nb_histogram_update)
    idle = W.Worker(S._nb_serve_histogram, 1, start=False)
    monkeypatch.setattr(S, "_workers", lambda n: [idle])
    t = time.perf_counter()
    threaded = _two_batches(x, lambda *a: S._threaded_histogram_update(*a, 2, 1000))
    assert time.perf_counter() - t < 10
    assert idle.seq == 1                # the first batch was posted to it, the second was not
    _same_bits(threaded[:5], serial[:5])
    assert threaded[5] == serial[5]


@numba.njit
def _claim_piece(arena):
    return W.fetch_add(arena, S._A_NEXT, 1)


@pytest.mark.skipif(JIT_DISABLED, reason="threads only matter for the compiled kernels")
def test_a_piece_held_by_a_stalled_worker_is_counted_again(monkeypatch):
    """A worker that took a piece and then got no core: the calling thread counts that piece
    itself; the worker's late counts (here garbage) are ignored. Same state and flags as one
    thread, and the calling thread did not wait for the worker."""
    x = np.random.default_rng(10).normal(size=40_000).astype(np.float32)
    x[::97] = np.nan
    x[5] = np.inf
    serial = _two_batches(x, S._nb_histogram_update)
    release, worker_took = threading.Event(), threading.Event()

    def stalled(ctl, spin):             # takes the first piece of a job, then stalls
        while W._nb_get(ctl, W.SEQ) == W._nb_get(ctl, W.ACK):
            time.sleep(1e-4)
        words = int(ctl[S._J_WORDS])
        arena = np.ctypeslib.as_array((ctypes.c_int64 * words).from_address(int(ctl[S._J_ARENA])))
        t = int(ctl[S._J_THREAD])
        _, owner, _, finished, rows = S._nb_arena_parts(arena, int(ctl[S._J_CH]))
        k = _claim_piece(arena)
        owner[k] = t
        worker_took.set()
        release.wait(30)
        rows[t] = 10**9
        finished[t] = 1
        W._nb_set(ctl, W.ACK, ctl[W.SEQ])

    worker = W.Worker(stalled, 1)
    monkeypatch.setattr(S, "_workers", lambda n: [worker])
    deadline = time.monotonic() + 30
    while not worker.awake() and time.monotonic() < deadline:   # a sleeping one gets no job
        time.sleep(1e-3)
    real_take = S._nb_take_pieces

    def take(*args):                    # the calling thread starts once the worker took one
        worker_took.wait(30)
        return real_take(*args)

    monkeypatch.setattr(S, "_nb_take_pieces", take)
    try:
        t = time.perf_counter()
        threaded = _two_batches(x, lambda *a: S._threaded_histogram_update(*a, 2, 1000))
        assert time.perf_counter() - t < 10
    finally:
        release.set()
    assert worker_took.is_set() and worker.seq == 1
    _same_bits(threaded[:5], serial[:5])
    assert threaded[5] == serial[5] and serial[5][0] == (x.size // 97 + 1, True, True)


@pytest.mark.skipif(JIT_DISABLED, reason="threads only matter for the compiled kernels")
def test_a_sleeping_worker_is_woken_but_given_no_share_of_a_small_batch(monkeypatch):
    """Below WAKE_MIN_ELEMENTS a sleeping worker gets no share: the calling thread counts
    every piece; the second update, within BURST_SECONDS of the first, wakes the worker with a
    job without work (to spin for the next update). The serial state."""
    x = np.random.default_rng(13).normal(size=100_000).astype(np.float32)
    serial = _two_batches(x, S._nb_histogram_update)
    worker = W.Worker(S._nb_serve_histogram, 1)             # spins one round, then sleeps
    monkeypatch.setattr(S, "_workers", lambda n: [worker])
    taken = []
    real_take = S._nb_take_pieces

    def take(x3, arena, t):
        taken.append((real_take(x3, arena, t), int(arena[S._A_PIECES])))
        return taken[-1][0]

    monkeypatch.setattr(S, "_nb_take_pieces", take)

    def wait_until_asleep():
        deadline = time.monotonic() + 30
        while (worker.awake() or not worker.done()) and time.monotonic() < deadline:
            time.sleep(1e-3)

    wait_until_asleep()
    threaded = _two_batches(x, lambda *a: S._threaded_histogram_update(*a, 2, 1000))
    _same_bits(threaded[:5], serial[:5])
    assert threaded[5] == serial[5]
    assert taken[0][0] == taken[0][1] > 1     # the first batch: all pieces on this thread
    wait_until_asleep()
    monkeypatch.setattr(S, "BURST_SECONDS", 3600.0)
    before = worker.seq
    S._threaded_histogram_update(channel_view(x, None), *threaded[:5], 2, 1000)
    assert worker.seq == before + 1           # woken (its thread may not have run yet)
    assert taken[-1][0] == taken[-1][1]       # all pieces on this thread


@pytest.mark.skipif(JIT_DISABLED, reason="threads only matter for the compiled kernels")
def test_a_spinning_worker_takes_back_to_back_jobs():
    """Updates in quick succession reach the worker while it spins (no wake-up needed): every
    job is acknowledged and each state equals the serial one."""
    x = np.random.default_rng(12).normal(size=200_000).astype(np.float32)
    serial = _two_batches(x, S._nb_histogram_update)
    for _ in range(20):
        threaded = _two_batches(x, lambda *a: S._threaded_histogram_update(*a, 2, 1000))
        _same_bits(threaded[:5], serial[:5])
        assert threaded[5] == serial[5]
    worker = S._workers(1)[0]
    deadline = time.monotonic() + 30
    while W._nb_get(worker.ctl, W.ACK) != worker.seq and time.monotonic() < deadline:
        time.sleep(1e-3)
    assert W._nb_get(worker.ctl, W.ACK) == worker.seq >= 1


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_sub_histograms_add_into_the_counts_and_restart_at_zero(seed):
    """The flush of the uint32 sub-histograms: ``counts += sub.sum(axis=0)`` exactly (values
    near 2^32 - 1 included), then every copy is zero."""
    rng = np.random.default_rng(seed)
    sub = rng.integers(0, 2**32, (S._COPIES, S.NUM_BINS + 1), dtype=np.uint64).astype(np.uint32)
    counts = rng.integers(0, 2**40, S.NUM_BINS + 1, dtype=np.int64)
    expected = counts + sub.astype(np.int64).sum(axis=0)
    S._nb_add_sub(sub, counts)
    np.testing.assert_array_equal(counts, expected)
    assert not sub.any()
