"""Statistics as pieces (what qsim.distributed's workers return): observe a batch under the bins
known from an earlier prefix, detect stale pieces, fold in order -- the streaming result."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qsim.errors import EncodingError
from qsim.quant import HistogramStats, MinMaxStats

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def channel_batches(draw):
    """3-8 batches of shape (n, C) with channels that stay all zero for a while, NaN, scale."""
    c = draw(st.integers(1, 4))
    count = draw(st.integers(3, 8))
    zero_until = [draw(st.integers(0, count)) for _ in range(c)]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    batches = []
    for i in range(count):
        x = (rng.standard_normal((draw(st.integers(1, 6)), c)) * 10 ** rng.uniform(-3, 3, c))
        x = x.astype(np.float32)
        for ch in range(c):
            if i < zero_until[ch]:
                x[:, ch] = 0.0
        if draw(st.booleans()) and x.size:
            x.flat[draw(st.integers(0, x.size - 1))] = np.nan
        batches.append(x)
    return batches


def _same(a: HistogramStats, b: HistogramStats) -> None:
    for name in ("fixed", "width", "k0", "batches", "pdf"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)).view(np.uint8),
                                      np.asarray(getattr(b, name)).view(np.uint8), err_msg=name)
    assert a.nan_count == b.nan_count


def _bins_only(s: HistogramStats) -> HistogramStats:
    empty = HistogramStats.empty(axis=s.axis, channels=s.num_channels)
    return HistogramStats(fixed=s.fixed, width=s.width, k0=s.k0, batches=empty.batches,
                          pdf=empty.pdf, axis=s.axis)


@SETTINGS
@given(batches=channel_batches(), data=st.data())
def test_pieces_under_a_known_prefix_fold_to_the_streaming_statistics(batches, data):
    streaming = HistogramStats.empty(axis=1, channels=batches[0].shape[1])
    states = [streaming]
    for x in batches:
        streaming = streaming.update(x)
        states.append(streaming)

    folded = states[0]
    reruns = 0
    for i, x in enumerate(batches):
        known = data.draw(st.integers(0, i), label=f"prefix known to the worker of batch {i}")
        piece = _bins_only(states[known]).observe(x)     # a worker knowing batches < known
        if folded.stale(piece).any():
            reruns += 1
            piece = _bins_only(folded).observe(x)        # again, under the bins now known
        assert not folded.stale(piece).any()
        folded = folded.fold(piece)
    _same(folded, streaming)
    # a piece observed under the whole prefix is never stale
    for i, x in enumerate(batches):
        assert not states[i].stale(_bins_only(states[i]).observe(x)).any()


def test_a_stale_piece_is_refused():
    first = np.array([[1.0, 0.0]], np.float32)
    second = np.array([[2.0, 5.0]], np.float32)
    state = HistogramStats.empty(axis=1, channels=2).update(first).update(second)
    stale = HistogramStats.empty(axis=1, channels=2).observe(second)   # self-fixed channel 0
    assert state.stale(stale).tolist() == [True, False]
    with pytest.raises(EncodingError, match=r"channels \[0\]"):
        state.fold(stale)
    # all zero where the state has bins: the observer without bins skipped it, the stream counts it
    zeros = np.zeros((1, 2), np.float32)
    skipped = HistogramStats.empty(axis=1, channels=2).observe(zeros)
    assert skipped.batches.tolist() == [0, 0]
    assert state.stale(skipped).tolist() == [True, True]


@SETTINGS
@given(batches=channel_batches())
def test_min_max_pieces_fold_to_the_exact_range(batches):
    s = MinMaxStats.empty(axis=1, channels=batches[0].shape[1])
    for x in batches:
        s = s.fold(s.observe(x))
    whole = np.concatenate(batches).astype(np.float64)
    nan = np.isnan(whole)
    lo = np.where(nan, np.inf, whole).min(axis=0)      # a channel of only NaN: no range
    hi = np.where(nan, -np.inf, whole).max(axis=0)
    np.testing.assert_array_equal(s.min.astype(np.float64), lo)
    np.testing.assert_array_equal(s.max.astype(np.float64), hi)
    assert s.nan_count == int(np.isnan(whole).sum())


def test_min_max_fold_orders_signed_zeros_like_the_stream():
    s = MinMaxStats.empty()
    for x in ([0.0], [-0.0], [np.nan]):
        s = s.fold(s.observe(np.array(x, np.float32)))
    assert np.signbit(s.min) and not np.signbit(s.max)



@SETTINGS
@given(batches=channel_batches(), threads=st.sampled_from([None, 1, 2]))
def test_update_equals_fold_of_observe_bit_for_bit(batches, threads):
    """``update`` folds the counts inside the kernel once every channel has bins; that is the
    arithmetic of ``fold(observe(x))``: same bins, pdf bits, batch counts, NaN count and flags."""
    direct = folded = HistogramStats.empty(axis=1, channels=batches[0].shape[1])
    for x in batches:
        direct = direct.update(x, threads=threads)
        folded = folded.fold(folded.observe(x, threads=threads))
        _same(direct, folded)
        assert (direct.inf_seen, direct.finite_seen) == (folded.inf_seen, folded.finite_seen)
