"""Analyzers: candidate grids and degenerate cases of numerics.md §4–5, twins, mse / entropy sanity."""
from __future__ import annotations


import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qsim.errors import EncodingError
from qsim.quant import HistogramStats, MinMaxStats, entropy, mse, percentile, tf, tf_enhanced
from qsim.quant import analyzers as A

SETTINGS = settings(max_examples=25, deadline=None)


def hist(*batches, axis=None):
    s = HistogramStats.empty(axis=axis, channels=None if axis is None else batches[0].shape[axis])
    for b in batches:
        s = s.update(np.asarray(b, np.float32))
    return s


def test_asymmetric_offsets_are_the_documented_trunc_sequence():
    # numerics.md §4, 8 bit: −255, −242, −229, ..., −12, 0
    doc = [-255, -242, -229, -216, -204, -191, -178, -165, -153, -140, -127, -114, -102, -89,
           -76, -63, -51, -38, -25, -12, 0]
    assert [int(np.trunc(-255 + 255 / 20 * i)) for i in range(21)] == doc
    # with a range wide enough that no candidate is skipped, f = 1 reproduces them
    lo, hi = np.float32(-1.0), np.float32(1.0)
    ds, os = A._asymmetric_candidates(lo, hi, 8)
    assert len(ds) <= 17 * 21 + 1
    assert ds[-1] == np.float32(2.0 / 255) and os[-1] == np.float32(np.round(-1.0 / ds[-1]))


def test_symmetric_factors_are_101_float64_steps():
    ds, os = A._symmetric_candidates(np.float32(-1.0), np.float32(1.0), 8, False, False)
    assert len(ds) == 101
    assert np.all(os == -128)
    f, factors = np.float32(0.01), []
    while f <= 1.01:
        factors.append(f)
        f = np.float32(float(f) + 0.01)
    dmax = np.float32(1.0 / 127.5)
    np.testing.assert_array_equal(ds, [np.float32(f * dmax) for f in factors])
    ds, os = A._symmetric_candidates(np.float32(0.0), np.float32(2.0), 8, True, True)
    assert np.all(os == 0) and ds[-1] == np.float32(factors[-1] * np.float32(2.0 / np.float32(254)))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NUMBA_DISABLE_JIT=1: scalar NumPy warns on inf/NaN
@SETTINGS
@given(batches=st.lists(hnp.arrays(np.float32, st.integers(1, 200),
                                   elements=st.floats(-1e3, 1e3, width=32)), min_size=1, max_size=3),
       bw=st.sampled_from([4, 8, 16]), symmetric=st.booleans(), gamma=st.sampled_from([1.0, 3.0]))
def test_candidate_costs_numba_equals_twin(batches, bw, symmetric, gamma):
    s = hist(*batches)
    if not s.fixed[0] or A._nothing_binned(s, 0):
        return
    pdf, k0, w = s.pdf[0], float(s.k0[0]), float(s.width[0])
    lo, hi = A.observed_range(pdf, k0, w)
    ds, os = (A._symmetric_candidates(lo, hi, bw, False, False) if symmetric
              else A._asymmetric_candidates(lo, hi, bw))
    a = A._nb_candidate_costs(pdf, k0, w, ds, os, bw, gamma)
    b = A._np_candidate_costs(pdf, k0, w, ds, os, bw, gamma)
    np.testing.assert_array_equal(a, b)


def test_only_zeros_seen():
    s = hist(np.zeros(10), np.zeros(3))
    e = tf_enhanced(s, bitwidth=8)
    assert (float(e.delta), float(e.offset)) == (2 / 255, -128.0)
    assert float(e.min) == -128 * (2 / 255) and float(e.max) == float(e.min) + 255 * (2 / 255)
    e = percentile(s, bitwidth=8, percentile=99.0, symmetric=True, strict_symmetric=True)
    assert (float(e.delta), float(e.offset)) == (2 / 254, -127.0)


@pytest.mark.parametrize("first", [np.full(8, 1e6, np.float32), np.full(8, np.nan, np.float32)])
def test_nothing_binnable_gives_aimet_sentinel_and_nan(first):
    s = hist(first, np.linspace(-1, 1, 20))
    e = tf_enhanced(s, bitwidth=8)
    assert (float(e.delta), float(e.offset)) == (-1.0, -1.0)
    p = percentile(s, bitwidth=8, percentile=99.0)
    assert np.isnan(p.delta) and np.isnan(p.offset) and np.isnan(p.min)
    p = percentile(s, bitwidth=8, percentile=99.0, symmetric=True)
    assert np.isnan(p.delta) and float(p.offset) == -128


def test_percentile_100_is_observed_range_and_validation():
    x = np.linspace(-2, 6, 1000, dtype=np.float32)
    s = hist(x)
    lo, hi = A.observed_range(s.pdf[0], s.k0[0], s.width[0])
    assert A.percentile_range(s, 0, 100.0) == (lo, hi)
    for bad in (49.9, 100.5, "99", None):
        with pytest.raises(EncodingError, match="percentile"):
            percentile(s, bitwidth=8, percentile=bad)


def test_percentile_clips_an_outlier_and_grows_with_p():
    rng = np.random.default_rng(0)
    x = rng.normal(size=20000).astype(np.float32)
    x[0] = 40.0
    s = hist(x)
    widths = [float(percentile(s, bitwidth=8, percentile=p).delta) for p in (90, 99, 99.9, 100)]
    assert widths == sorted(widths)
    assert float(percentile(s, bitwidth=8, percentile=99.0).max) < 4.0
    assert float(tf_enhanced(s, bitwidth=8).max) < 40.0


def test_mse_beats_min_max_on_heavy_tails():
    """Clipping rare outliers lowers the mean squared error of qdq: mse must do better than tf."""
    from qsim.quant import quantize_dequantize
    rng = np.random.default_rng(5)
    x = rng.standard_t(3, size=50000).astype(np.float32)
    x[:3] = [60.0, -45.0, 80.0]
    err = {}
    for name, enc in (("tf", tf(MinMaxStats.empty().update(x), bitwidth=8)),
                      ("mse", mse(hist(x), bitwidth=8))):
        err[name] = float(np.mean((quantize_dequantize(x, enc).astype(np.float64) - x) ** 2))
    assert err["mse"] < err["tf"]


def test_entropy_clips_a_far_outlier_but_keeps_the_bulk():
    rng = np.random.default_rng(5)
    x = rng.normal(size=50000).astype(np.float32)
    x[0] = 200.0
    enc = entropy(hist(x), bitwidth=8)
    assert float(enc.max) < 100.0
    inside = np.mean((x >= enc.min) & (x <= enc.max))
    assert inside > 0.999


def test_entropy_keeps_the_range_of_uniform_data():
    x = np.random.default_rng(4).uniform(-3, 3, size=50000).astype(np.float32)
    enc = entropy(hist(x), bitwidth=8)
    assert -3.3 < float(enc.min) <= -2.9 and 2.9 <= float(enc.max) < 3.3


def test_mse_weights_saturation_less_than_tf_enhanced():
    rng = np.random.default_rng(6)
    x = rng.standard_t(2, size=50000).astype(np.float32)
    s = hist(x)
    assert float(mse(s, bitwidth=8).delta) <= float(tf_enhanced(s, bitwidth=8).delta)


def test_per_channel_histogram_encodings_equal_per_slice():
    rng = np.random.default_rng(9)
    x = (rng.normal(size=(4, 3, 50)) * np.array([1, 5, 0.1])[None, :, None]).astype(np.float32)
    s = hist(x, axis=1)
    for fn, kw in ((tf_enhanced, {}), (percentile, {"percentile": 99.0}), (mse, {}), (entropy, {})):
        enc = fn(s, bitwidth=8, **kw)
        for c in range(3):
            one = fn(hist(x[:, c, :]), bitwidth=8, **kw)
            assert enc.channel(c).same_as(one)
