"""TensorQuantizer: the contract the simulation layer uses, bad and odd input."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qsim.errors import EncodingError, NotCalibratedError
from qsim.quant import Encoding, TensorQuantizer, from_min_max

SCHEMES = ["tf", "min_max", "tf_enhanced", "percentile", "mse", "entropy"]


def calibrated(x, **kw) -> TensorQuantizer:
    q = TensorQuantizer(**kw)
    q.update_stats(x)
    q.compute_encodings()
    return q


def test_contract_round_trip():
    rng = np.random.default_rng(0)
    q = TensorQuantizer(scheme="tf_enhanced", bitwidth=8, symmetric=False, strict_symmetric=False,
                        unsigned_symmetric=False, percentile=None, axis=None, rounding="nearest")
    for _ in range(3):
        q.update_stats(rng.normal(size=(4, 8)).astype(np.float32))
    enc = q.compute_encodings()
    assert q.encoding is enc
    assert enc.delta.shape == enc.offset.shape == enc.min.shape == enc.max.shape == ()
    x = rng.normal(size=(2, 8)).astype(np.float32)
    y = q.quantize_dequantize(x)
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_array_equal(q.dequantize(q.quantize(x)), y)


def test_constructor_is_keyword_only_and_validates():
    with pytest.raises(TypeError):
        TensorQuantizer("tf")  # noqa
    with pytest.raises(EncodingError, match="unknown scheme 'sqnr'"):
        TensorQuantizer(scheme="sqnr")
    with pytest.raises(EncodingError, match="bitwidth.*got 1"):
        TensorQuantizer(bitwidth=1)
    with pytest.raises(EncodingError, match="rounding"):
        TensorQuantizer(rounding="up")
    with pytest.raises(EncodingError, match="percentile.*got 20"):
        TensorQuantizer(scheme="percentile", percentile=20)


def test_min_max_is_an_alias_of_tf():
    x = np.linspace(-1, 3, 50, dtype=np.float32)
    assert calibrated(x, scheme="min_max").encoding.same_as(calibrated(x, scheme="tf").encoding)


def test_not_calibrated_errors_name_the_quantizer():
    q = TensorQuantizer(scheme="tf", name="conv1.weight")
    with pytest.raises(NotCalibratedError, match="conv1.weight"):
        q.compute_encodings()
    with pytest.raises(NotCalibratedError, match="conv1.weight"):
        q.quantize_dequantize(np.zeros(3, np.float32))


def test_encoding_can_be_set_by_hand_and_stats_reset():
    q = TensorQuantizer(scheme="tf")
    q.encoding = from_min_max(-1.0, 1.0, bitwidth=8, symmetric=True)
    np.testing.assert_array_equal(q.quantize_dequantize(np.array([2.0], np.float32)),
                                  [np.float32(1 / 127) * np.float32(127)])
    with pytest.raises(EncodingError, match="Encoding"):
        q.encoding = (0.1, -3)
    q.update_stats(np.array([5.0], np.float32))
    q.reset_stats()
    assert q.stats is None
    q.update_stats(np.array([-2.0, 2.0], np.float32))
    assert float(q.compute_encodings().max) < 2.1


def test_per_channel_axis_checks():
    q = TensorQuantizer(scheme="tf", axis=-1, name="fc.weight")
    q.update_stats(np.ones((5, 3), np.float32))
    enc = q.compute_encodings()
    assert enc.axis == 1 and enc.delta.shape == (3,)
    with pytest.raises(EncodingError, match="fc.weight.*3 channels along axis 1"):
        q.update_stats(np.ones((5, 4), np.float32))
    with pytest.raises(EncodingError, match="axis 2 is out of range.*\\(5, 3\\)"):
        TensorQuantizer(scheme="tf", axis=2).update_stats(np.ones((5, 3), np.float32))
    with pytest.raises(EncodingError, match="channels"):
        q.quantize_dequantize(np.ones((5, 4), np.float32))


def test_nan_in_calibration_is_ignored_with_one_warning():
    q = TensorQuantizer(scheme="tf", name="act7")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q.update_stats(np.array([1.0, np.nan, -2.0], np.float32))
        q.update_stats(np.array([np.nan], np.float32))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enc = q.compute_encodings()                           # one warning per quantizer
    assert [type(w.message) for w in caught] == [RuntimeWarning]
    assert "act7" in str(caught[0].message) and "NaN" in str(caught[0].message)
    assert q.nonfinite is None                                # mixed data: AIMET's numerics
    assert enc.same_as(from_min_max(-2.0, 1.0, bitwidth=8))


ODD_INPUTS = {
    "all_zero": np.zeros(16, np.float32),
    "constant": np.full(16, 0.75, np.float32),
    "constant_negative": np.full(16, -3.0, np.float32),
    "single": np.array([2.5], np.float32),
    "huge": np.array([1e30, -2e30, 3e29], np.float32),
    "denormal": np.array([1e-45, -3e-42, 2e-40], np.float32),
    "tiny_range": np.array([1.0, np.nextafter(np.float32(1), np.float32(2))], np.float32),
}


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("name", ODD_INPUTS)
@pytest.mark.parametrize("symmetric", [False, True])
def test_odd_inputs_give_valid_encodings(scheme, name, symmetric):
    x = ODD_INPUTS[name]
    q = calibrated(x, scheme=scheme, symmetric=symmetric, percentile=99.0)
    enc = q.encoding
    for v in (enc.min, enc.max, enc.delta, enc.offset):
        assert np.isfinite(v)
    assert float(enc.delta) > 0
    y = q.quantize_dequantize(x)
    assert np.all(np.isfinite(y))


def test_empty_batch_is_ignored():
    for scheme in SCHEMES:
        q = TensorQuantizer(scheme=scheme)
        q.update_stats(np.zeros(0, np.float32))
        q.update_stats(np.array([-1.0, 1.0], np.float32))
        q.update_stats(np.zeros((0, 4), np.float32))
        ref = calibrated(np.array([-1.0, 1.0], np.float32), scheme=scheme)
        assert q.compute_encodings().same_as(ref.encoding)


@settings(max_examples=30, deadline=None)
@given(x=hnp.arrays(np.float32, st.integers(1, 100),
                    elements=st.floats(width=32, allow_nan=False, allow_infinity=False)),
       bw=st.sampled_from([4, 8, 16]), symmetric=st.booleans())
def test_min_max_encoding_of_any_finite_input_is_finite(x, bw, symmetric):
    enc = calibrated(x, scheme="tf", bitwidth=bw, symmetric=symmetric).encoding
    assert np.isfinite(enc.delta) and float(enc.delta) > 0
    assert np.isfinite(enc.min) and np.isfinite(enc.max)


@settings(max_examples=25, deadline=None)
@given(x=hnp.arrays(np.float32, st.integers(2, 100), elements=st.floats(-2.0 ** 99, 2.0 ** 99, width=32)),
       scheme=st.sampled_from(["tf_enhanced", "percentile", "mse", "entropy"]),
       symmetric=st.booleans())
def test_histogram_encodings_of_non_constant_input_are_finite(x, scheme, symmetric):
    """Outside AIMET's documented degenerate cases (a constant first batch with |v| ≥ 2^18)."""
    if np.ptp(x) == 0 and abs(float(x[0])) >= 2 ** 18:
        return
    enc = calibrated(x, scheme=scheme, symmetric=symmetric, percentile=99.0).encoding
    assert np.isfinite(enc.delta) and float(enc.delta) > 0
    assert np.isfinite(enc.min) and np.isfinite(enc.max)


def test_quantize_dequantize_reuses_out():
    q = calibrated(np.linspace(-1, 1, 100, dtype=np.float32), scheme="tf")
    x = np.linspace(-2, 2, 100, dtype=np.float32)
    out = np.empty_like(x)
    assert q.quantize_dequantize(x, out=out) is out


def test_encoding_type_is_frozen_value():
    enc = calibrated(np.linspace(-1, 1, 10, dtype=np.float32), scheme="tf").encoding
    assert isinstance(enc, Encoding)
    assert not enc.delta.flags.writeable
