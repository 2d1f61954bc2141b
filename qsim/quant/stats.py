"""Streaming calibration statistics: running min/max and the tf-enhanced histogram (numerics.md §2, §4).

Both are frozen values: ``update`` returns a new object and never keeps the batch. Each has a
Numba one-pass kernel (no sort, no copy of the batch, memory O(bins)) and a NumPy twin that
gives the same bits (tested). Per-channel statistics (``axis=k``) keep one min/max or one
histogram per slice along axis ``k``; the batch is seen as ``(outer, C, inner)`` without copying.

NaN policy (as AIMET): NaN elements are ignored by min/max and dropped by the histogram (they
still count in the histogram's batch size). ``nan_count`` records how many were seen so that the
quantizer can warn; ``inf_seen`` / ``finite_seen`` record whether a batch held ±Inf (clamped to
±0.99·FLT_MAX, which makes the range useless) and whether any finite value was seen (README
"Non-finite data"; :func:`finiteness`).
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

import numba
import numpy as np

from ..errors import ConfigError, EncodingError
from ..jit import USE_NUMBA, kernel
from .kernels import channel_view
from ..kernels import threads as threads_
from .workers import (ACK, AWAKE, JOB, SEQ, Worker, atomic_load, atomic_store, fetch_add,
                      address_of, float32_at, int64_at, spin_rounds, wait_for_job)

#: number of histogram bins of the tf-enhanced / percentile histogram
NUM_BINS = 1536
#: L32 = f32(0.99 · FLT_MAX): the histogram range is clamped into [-L32, L32]
L32 = np.float32(0.99 * float(np.finfo(np.float32).max))
_INT32_RANGE = 2.0 ** 31


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _check_channels(mine: int, theirs: int) -> None:
    if mine != theirs:
        raise EncodingError(f"statistics of {theirs} channels cannot be folded into statistics "
                            f"of {mine} channels")


def _as_batch(x, axis):
    """The batch as a C-contiguous float32 array seen as (outer, C, inner)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return channel_view(x, axis)


def finiteness(x: np.ndarray) -> tuple[bool, bool]:
    """``(any element is ±Inf, any element is finite)`` of a float32 batch.

    Fast path: a finite min and max (NaN propagates through both) mean every element is finite
    (two vectorised reductions, no boolean copy of the batch)."""
    if x.size == 0:
        return False, False
    if np.isfinite(x.min()) and np.isfinite(x.max()):
        return False, True
    return bool(np.isinf(x).any()), bool(np.isfinite(x).any())


# ======================================================================== min / max

# Min/max are taken on integer keys: the float32 bits ``u`` (as int32) map to
# ``k = u ^ ((u >> 31) & 0x7fffffff)``, which orders like the floats (-0.0 just below +0.0) and
# puts NaN outside [-inf, +inf] (positive NaN above key(+inf), negative NaN below key(-inf)).
# Integer min/max reductions vectorise without fast-math (8 int32 lanes with AVX2), float ones
# do not; the result is the same NaN-ignoring min/max. The map is its own inverse.
_KEY_MASK = 0x7fffffff
_INF_BITS = 0x7f800000
_KEY_POS_INF = 0x7f800000                 # key of +inf
_KEY_NEG_INF = -0x7f800000 - 1            # key of -inf (bits 0xff800000 -> 0x807fffff)


@kernel
def _nb_min_max(bits3, mn_bits, mx_bits):
    """NaN-ignoring running min/max of ``bits3`` (int32 view of float32, (outer, C, inner)).

    ``mn_bits, mx_bits`` (int32 views of the float32 min/max, (C,)) hold the previous statistics
    (+inf / -inf when there are none) and are updated in place, so an empty or all-NaN slice
    leaves them unchanged. Returns #NaN. Per row, two passes at most:

    1. ``(min k, max k)`` over all keys, NaN included: an all-int32 loop that vectorises 8 lanes
       wide. NaN keys lie outside ``[key(-inf), key(+inf)]``, so a result inside proves the row
       holds no NaN, and it is the row's min/max.
    2. Only otherwise: the row again, dropping and counting the NaN.
    """
    nans = 0
    n_outer, n_ch, n_inner = bits3.shape
    for c in range(n_ch):
        u = mn_bits[c]
        lo = np.int32(u ^ ((u >> 31) & _KEY_MASK))
        u = mx_bits[c]
        hi = np.int32(u ^ ((u >> 31) & _KEY_MASK))
        for o in range(n_outer):
            row = bits3[o, c, :]
            row_lo = np.int32(_KEY_MASK)
            row_hi = np.int32(-_KEY_MASK - 1)
            for i in range(n_inner):
                u = row[i]
                k = np.int32(u ^ ((u >> 31) & _KEY_MASK))
                row_lo = min(row_lo, k)
                row_hi = max(row_hi, k)
            if row_lo < _KEY_NEG_INF or row_hi > _KEY_POS_INF:
                row_lo = np.int32(_KEY_MASK)
                row_hi = np.int32(-_KEY_MASK - 1)
                for i in range(n_inner):
                    u = row[i]
                    if (u & _KEY_MASK) > _INF_BITS:
                        nans += 1
                    else:
                        k = np.int32(u ^ ((u >> 31) & _KEY_MASK))
                        row_lo = min(row_lo, k)
                        row_hi = max(row_hi, k)
            lo = min(lo, row_lo)
            hi = max(hi, row_hi)
        mn_bits[c] = np.int32(lo ^ ((lo >> 31) & _KEY_MASK))
        mx_bits[c] = np.int32(hi ^ ((hi >> 31) & _KEY_MASK))
    return nans


def _np_keys(a: np.ndarray) -> np.ndarray:
    """The integer keys of float32 ``a`` (int32 ``u ^ ((u >> 31) & 0x7fffffff)``, an involution)."""
    u = np.ascontiguousarray(a, np.float32).view(np.int32)
    return u ^ ((u >> 31) & np.int32(_KEY_MASK))


def _np_min_max(x3, mn, mx):
    """NumPy twin of :func:`_nb_min_max`, on the float32 batch (updates ``mn, mx`` in place).

    Min/max of the integer keys as the kernel takes them, so -0.0 sorts below +0.0 here too."""
    nan = np.isnan(x3)
    if x3.size:
        k = _np_keys(x3)
        lo = np.where(nan, np.int32(_KEY_MASK), k).min(axis=(0, 2))
        hi = np.where(nan, np.int32(-_KEY_MASK - 1), k).max(axis=(0, 2))
        lo = np.minimum(lo, _np_keys(mn)).astype(np.int32)
        hi = np.maximum(hi, _np_keys(mx)).astype(np.int32)
        mn[...] = _np_keys(lo.view(np.float32)).view(np.float32)
        mx[...] = _np_keys(hi.view(np.float32)).view(np.float32)
    return int(nan.sum())


def _min_max_update(x3, mn, mx):
    """Fold the batch ``x3`` into float32 ``mn, mx`` (shape (C,), in place); returns #NaN."""
    if not USE_NUMBA:
        return _np_min_max(x3, mn, mx)
    return _nb_min_max(x3.view(np.int32), mn.view(np.int32), mx.view(np.int32))


def _finiteness_from_range(x3, mn, mx) -> tuple[bool, bool]:
    """:func:`finiteness` of the batch from its NaN-ignoring per-channel ``mn, mx`` (+inf/-inf
    where a channel has no number): without a -inf min or +inf max no element is infinite, and
    a finite element exists iff some channel has ``mn <= mx``. Otherwise the batch is read
    again (:func:`finiteness`)."""
    if (mn == -np.inf).any() or (mx == np.inf).any():
        return finiteness(x3)
    return False, bool((mn <= mx).any())


@dataclass(frozen=True, eq=False)
class MinMaxStats:
    """Running min/max (float32, NaN ignored), shape () per tensor or (C,) per channel.

    ``min = +inf, max = -inf`` until a non-NaN element has been seen.
    """

    min: np.ndarray
    max: np.ndarray
    axis: int | None = None
    nan_count: int = 0
    inf_seen: bool = False      # a batch held +Inf or -Inf
    finite_seen: bool = False   # a batch held a finite value

    @staticmethod
    def empty(*, axis: int | None = None, channels: int | None = None) -> "MinMaxStats":
        shape = () if axis is None else (channels,)
        return MinMaxStats(min=_readonly(np.full(shape, np.inf, np.float32)),
                           max=_readonly(np.full(shape, -np.inf, np.float32)), axis=axis)

    def observe(self, x) -> "MinMaxStats":
        """The statistics of the batch ``x`` alone (a piece for :meth:`fold`): its NaN-ignoring
        min/max per tensor or per channel, and its NaN count."""
        x3 = _as_batch(x, self.axis)
        mn = np.full(x3.shape[1], np.inf, np.float32)
        mx = np.full(x3.shape[1], -np.inf, np.float32)
        nans = _min_max_update(x3, mn, mx)
        shape = self.min.shape
        inf, finite = _finiteness_from_range(x3, mn, mx)
        return MinMaxStats(min=_readonly(mn.reshape(shape)), max=_readonly(mx.reshape(shape)),
                           axis=self.axis, nan_count=int(nans), inf_seen=inf, finite_seen=finite)

    def fold(self, piece: "MinMaxStats") -> "MinMaxStats":
        """``min = min(min, piece.min)``, ``max = max(max, piece.max)``: a new value.

        The piece's min and max go through the same kernel as a batch (a two-element batch per
        channel), so ``fold(observe(x)) == update(x)`` bit for bit, -0.0 against +0.0 included:
        min and max over a union are the min and max of the parts. A channel the piece saw no
        number in (min = +inf > max = -inf) goes in as NaN, which the kernel ignores."""
        _check_channels(np.atleast_1d(self.min).shape[0], np.atleast_1d(piece.min).shape[0])
        pair = np.stack([np.atleast_1d(piece.min), np.atleast_1d(piece.max)], axis=1)
        pair[~(pair[:, 0] <= pair[:, 1])] = np.nan
        mn = np.atleast_1d(self.min).copy()
        mx = np.atleast_1d(self.max).copy()
        _min_max_update(np.ascontiguousarray(pair, np.float32)[None], mn, mx)
        shape = self.min.shape
        return MinMaxStats(min=_readonly(mn.reshape(shape)), max=_readonly(mx.reshape(shape)),
                           axis=self.axis, nan_count=self.nan_count + piece.nan_count,
                           inf_seen=self.inf_seen or piece.inf_seen,
                           finite_seen=self.finite_seen or piece.finite_seen)

    def update(self, x) -> "MinMaxStats":
        """``min = min(min, min(x))``, ``max = max(max, max(x))`` (NaN ignored): a new value,
        ``fold(observe(x))`` (the path a cluster takes too, see :mod:`qsim.distributed`)."""
        return self.fold(self.observe(x))

    def merge(self, other: "MinMaxStats") -> "MinMaxStats":
        """Statistics of both streams: ``merge(stats(a), stats(b)) == stats(a ++ b)``."""
        return MinMaxStats(min=_readonly(np.fmin(self.min, other.min)),
                           max=_readonly(np.fmax(self.max, other.max)), axis=self.axis,
                           nan_count=self.nan_count + other.nan_count,
                           inf_seen=self.inf_seen or other.inf_seen,
                           finite_seen=self.finite_seen or other.finite_seen)

    @property
    def seen_data(self) -> bool:
        """True once any non-NaN element has been seen (per channel: in every channel)."""
        return bool(np.all(self.min <= self.max))


# ======================================================================== histogram

@kernel
def _nb_fix_bins(mn, mx):
    """Bin layout from the first non-zero batch's float32 ``mn, mx`` (§4 step 1–2).

    ``if mn == mx: mx = f32(mn + 0.01)``; ``c = f32(f32(mn + mx)/2)``;
    ``lo = f32(c - f32(3·f32(c - mn)))``, ``hi = f32(c + f32(3·f32(mx - c)))`` clamped into
    ``[-L32, L32]`` (NaN also becomes the bound unless the batch was all NaN);
    ``w = (hi - lo)/1536``, ``k0 = floor(lo/w)`` in float64. Returns ``(w, k0)``.
    """
    all_nan = mn != mn
    if mn == mx:
        mx = np.float32(np.float64(mn) + 0.01)
    three = np.float32(3.0)
    c = np.float32(np.float32(mn + mx) / np.float32(2.0))
    lo = np.float32(c - np.float32(three * np.float32(c - mn)))
    hi = np.float32(c + np.float32(three * np.float32(mx - c)))
    if not all_nan:
        lo = -L32 if (lo != lo or lo < -L32) else (L32 if lo > L32 else lo)
        hi = L32 if (hi != hi or hi > L32) else (-L32 if hi < -L32 else hi)
    w = (np.float64(hi) - np.float64(lo)) / np.float64(NUM_BINS)
    k0 = np.floor(np.float64(lo) / w)
    return w, k0


#: elements per block of the two-phase binning loop (indices first, then counts)
_BLOCK = 1024
#: sub-histograms: consecutive elements are counted in different copies, so a run of equal
#: bins (the zeros after a Relu) does not make every increment wait for the previous one's
#: store to the same counter (Relu-shaped data at 1M elements: 1.0 ms -> 0.43 ms)
_COPIES = 4
#: the uint32 sub-histograms are added into the int64 counts once this many elements were
#: counted since the last time (fewer than 2^31 elements between two additions: no overflow)
_FLUSH = 1 << 30
#: with ``threads`` unset, a batch of at least this many elements per channel is binned on the
#: cores no other task is running on (:func:`default_threads`). Measured on the 2-core VM
#: (benchmarks/README.md): with the second core idle, two threads lost at 2^18 elements, tied
#: at 2^19 and saved a quarter at 2^20; when other jobs keep the cores busy they lose at every
#: size
PARALLEL_MIN_ELEMENTS = 1 << 20
#: a worker that sleeps (no update in the last ``SPIN_SECONDS``) is given a share of a batch
#: only from this many elements; a smaller batch is counted by the calling thread alone and
#: the worker only woken, to spin for the next update. On the 2-core VM a woken worker started
#: about 0.2 ms late and then counted at half speed for milliseconds (an idle core's slow
#: start): 1M-8M-element updates with a sleeping worker took 1.05-1.35x the time of one thread,
#: 16M ones 0.6x (benchmarks/README.md)
WAKE_MIN_ELEMENTS = 1 << 24
#: a sleeping worker is woken for nothing (to spin for the next update) only when the previous
#: threaded update came less than this long ago (a burst of updates): waking an idle core cost
#: the calling thread about 50 µs on the 2-core VM
BURST_SECONDS = 2e-3
#: the threaded histogram's pieces have at least this many elements
_PIECE = 1 << 16


@kernel
def _nb_bin_row(row, r, k0f, sub, buf):
    """Count the contiguous float32 ``row`` into the sub-histograms ``sub`` (uint32,
    (_COPIES, NUM_BINS + 1)); the counts of the row are ``sub.sum(axis=0)``.

    ``s = f32(v·r)``, ``idx = f32(floor(s) - f32(k0))``; elements with ``|s| ≥ 2^31``, NaN, or
    ``idx`` outside ``[0, 1536)`` go to the extra slot ``1536`` (dropped). Per block of
    ``_BLOCK`` elements the int32 indices are computed first into ``buf`` (a loop the compiler
    vectorises: the row is read with unsigned indices, so no negative-index wrap-around turns
    the loads into gathers) and counted afterwards, elements ``4i .. 4i+3`` of a block into
    copies ``0 .. 3`` (the last ``m mod 4`` into copy 0; the loop is written out for
    ``_COPIES = 4``): one increment per element, unsigned index.

    Returns ``(#NaN, any ±Inf, any finite)``. A kept element is finite (``s`` finite and
    ``r > 0``), so only a block that dropped something is read again to classify its drops.
    """
    limit = np.float32(_INT32_RANGE)
    top = np.float32(NUM_BINS)
    n = row.shape[0]
    nans = 0
    inf_seen = False
    finite_seen = False
    for start in range(0, n, _BLOCK):
        m = min(_BLOCK, n - start)
        for j in range(m):
            s = row[np.uintp(start + j)] * r
            idx = np.floor(s) - k0f
            ok = (np.abs(s) < limit) & (idx >= np.float32(0.0)) & (idx < top)
            buf[j] = np.int32(idx if ok else top)
        dropped_before = sub[0, NUM_BINS] + sub[1, NUM_BINS] + sub[2, NUM_BINS] + sub[3, NUM_BINS]
        m4 = m - m % 4
        for j in range(0, m4, 4):
            sub[0, np.uintp(buf[j])] += 1
            sub[1, np.uintp(buf[j + 1])] += 1
            sub[2, np.uintp(buf[j + 2])] += 1
            sub[3, np.uintp(buf[j + 3])] += 1
        for j in range(m4, m):
            sub[0, np.uintp(buf[j])] += 1
        dropped = sub[0, NUM_BINS] + sub[1, NUM_BINS] + sub[2, NUM_BINS] + sub[3, NUM_BINS]
        if dropped == dropped_before:
            finite_seen = True
            continue
        for j in range(m):
            v = row[np.uintp(start + j)]
            if v != v:
                nans += 1
            elif np.isinf(v):
                inf_seen = True
            else:
                finite_seen = True
    return nans, inf_seen, finite_seen


@kernel
def _nb_add_sub(sub, counts):
    """``counts += sub.sum(axis=0)`` (int64), then ``sub = 0``."""
    for b in range(NUM_BINS + 1):
        total = np.int64(0)
        for q in range(_COPIES):
            total += np.int64(sub[q, b])
            sub[q, b] = 0
        counts[b] += total


@kernel
def _nb_count_channel(x3, c, start, stop, r, k0f, counts):
    """:func:`_nb_bin_row` over the elements ``start..stop`` of channel ``c`` of ``x3``, numbered
    ``p = o·inner + i`` (a chunk for one thread may begin and end inside a row), added into the
    int64 ``counts`` (NUM_BINS + 1 slots)."""
    return _nb_count_with(x3, c, start, stop, r, k0f, counts,
                          np.zeros((_COPIES, NUM_BINS + 1), np.uint32), np.empty(_BLOCK, np.int32))


@kernel
def _nb_count_with(x3, c, start, stop, r, k0f, counts, sub, buf):
    """:func:`_nb_count_channel` with the caller's sub-histograms ``sub`` (all zero on entry,
    left all zero) and block buffer ``buf``."""
    nans, inf_seen, finite_seen, _ = _nb_count_run(x3, c, start, stop, r, k0f, counts, sub,
                                                   buf, 0)
    _nb_add_sub(sub, counts)
    return nans, inf_seen, finite_seen


@kernel
def _nb_count_run(x3, c, start, stop, r, k0f, counts, sub, buf, since_flush):
    """Count elements ``start..stop`` of channel ``c`` into the sub-histograms ``sub``, which
    already hold ``since_flush`` elements not yet added into ``counts``; they are added (and
    ``sub`` cleared) whenever that reaches ``_FLUSH``. Returns ``(#NaN, any ±Inf, any finite,
    since_flush)``: a thread counting several pieces of one channel adds ``sub`` into the
    counts once, at the end (:func:`_nb_add_sub`)."""
    n_inner = x3.shape[2]
    nans = 0
    inf_seen = False
    finite_seen = False
    p = start
    while p < stop:
        o = p // n_inner
        i0 = p - o * n_inner
        i1 = min(n_inner, i0 + (stop - p), i0 + _FLUSH - since_flush)
        a, b, f = _nb_bin_row(x3[o, c, i0:i1], r, k0f, sub, buf)
        nans += a
        inf_seen |= b
        finite_seen |= f
        p += i1 - i0
        since_flush += i1 - i0
        if since_flush >= _FLUSH:
            _nb_add_sub(sub, counts)
            since_flush = 0
    return nans, inf_seen, finite_seen, since_flush


@kernel
def _nb_fix_channels(x3, fixed, width, k0, skip):
    """Fix the bins of every channel that has none from this batch (§4 steps 1–2).

    The slice's NaN-ignoring min/max (:func:`_nb_min_max`, one vectorised pass over the batch,
    only if some channel has no bins) give ``(width[c], k0[c])`` via :func:`_nb_fix_bins`; when
    both are 0 the bins stay open and ``skip[c]`` is set (the slice is not counted). Signed
    zeros: the keys order -0.0 below +0.0 where a float comparison keeps the first seen, which
    changes no bin (a zero min or max only enters ``mn + mx``, ``c - mn``, ``mx - c`` next to a
    non-zero value, or both are zero and the slice is skipped).
    """
    n_ch = x3.shape[1]
    skip[:] = False
    if fixed.all():
        return
    mn = np.full(n_ch, np.inf, np.float32)
    mx = np.full(n_ch, -np.inf, np.float32)
    _nb_min_max(x3.view(np.int32), mn.view(np.int32), mx.view(np.int32))
    for c in range(n_ch):
        if fixed[c]:
            continue
        lo = mn[c]
        hi = mx[c]
        if lo > hi:            # no non-NaN element: min and max are NaN
            lo = np.float32(np.nan)
            hi = np.float32(np.nan)
        if lo == 0.0 and hi == 0.0:
            skip[c] = True
            continue
        width[c], k0[c] = _nb_fix_bins(lo, hi)
        fixed[c] = True


@kernel
def _nb_fold_counts(counts, numel, c, batches, pdf):
    """``pdf[c] = (pdf[c]·k + count_i/numel)/(k + 1)`` with ``k = batches[c]``; then ``k += 1``."""
    k = np.float64(batches[c])
    for b in range(NUM_BINS):
        p = np.float64(counts[b]) / np.float64(numel)
        pdf[c, b] = (pdf[c, b] * k + p) / (k + 1.0)
    batches[c] += 1


@kernel
def _nb_histogram_update(x3, fixed, width, k0, batches, pdf):
    """One batch into the per-channel histograms (in place, §4 steps 1–3).

    A channel whose bins are not fixed yet fixes them from this slice's NaN-ignoring min/max,
    unless both are 0 (then the slice is skipped and not counted; it held a zero, so a finite
    value). Each counted slice adds ``p_i = count_i/numel`` with equal weight:
    ``pdf = (pdf·k + p)/(k + 1)``. Returns ``(#NaN of counted slices, any ±Inf, any finite)``.
    """
    n_outer, n_ch, n_inner = x3.shape
    numel = n_outer * n_inner
    counts = np.zeros(NUM_BINS + 1, np.int64)
    nans = 0
    inf_seen = False
    finite_seen = False
    if numel == 0:
        return nans, inf_seen, finite_seen
    skip = np.zeros(n_ch, np.bool_)
    _nb_fix_channels(x3, fixed, width, k0, skip)
    for c in range(n_ch):
        if skip[c]:
            finite_seen = True
            continue
        counts[:] = 0
        a, b, f = _nb_count_channel(x3, c, 0, numel, np.float32(1.0 / width[c]),
                                    np.float32(k0[c]), counts)
        nans += a
        inf_seen |= b
        finite_seen |= f
        _nb_fold_counts(counts, numel, c, batches, pdf)
    return nans, inf_seen, finite_seen


# The threaded update: the calling thread (thread 0) and ``threads - 1`` spinning workers
# (workers.py; threads 1, 2, ...) take pieces of the channels in turn. Everything they share
# lives in one int64 "arena": a header (number of pieces, the next piece to take, channels
# skipped as all zero, threads), per channel ``(r, k0f)`` as two float32 in one word, per piece
# the thread that took it (-1 before) and its ``(c, start, stop)``, per thread a "finished" flag
# and per thread and channel a row: NUM_BINS + 1 counts (the last one the dropped elements),
# then #NaN, any ±Inf, any finite.
_A_PIECES, _A_NEXT, _A_SKIPPED, _A_THREADS, _A_HEAD = 0, 1, 2, 3, 4
_ROW = NUM_BINS + 4
#: a worker's job: these words after ctl[JOB]
_J_X, _J_OUTER, _J_CH, _J_INNER, _J_ARENA, _J_WORDS, _J_THREAD = range(JOB, JOB + 7)
#: the threaded update cuts the elements into about this many pieces per thread: two balance the
#: threads' shares (a thread counts its pieces into one histogram per channel), and a worker
#: that stalls holding one leaves the calling thread half its share to count again
_PIECES_PER_THREAD = 2


@kernel
def _nb_arena_parts(arena, n_ch):
    """Views of the arena: ``rk`` (float32, (C, 2)), ``owner`` (P,), ``pieces`` (P, 3),
    ``finished`` (T,), ``rows`` (T, C, _ROW)."""
    n = arena[_A_PIECES]
    t = arena[_A_THREADS]
    o = _A_HEAD
    rk = arena[o:o + n_ch].view(np.float32).reshape((n_ch, 2))
    o += n_ch
    owner = arena[o:o + n]
    o += n
    pieces = arena[o:o + 3 * n].reshape((n, 3))
    o += 3 * n
    finished = arena[o:o + t]
    o += t
    rows = arena[o:o + t * n_ch * _ROW].reshape((t, n_ch, _ROW))
    return rk, owner, pieces, finished, rows


@kernel
def _nb_plan(x3, fixed, width, k0, threads, piece):
    """Fix the bins of channels that have none (:func:`_nb_fix_channels`) and lay out the
    arena: the counted channels' elements cut into pieces of ``max(piece, ceil(numel·counted /
    (_PIECES_PER_THREAD·threads)))`` elements, ``r = f32(1/w)``, ``k0f = f32(k0)``."""
    n_outer, n_ch, n_inner = x3.shape
    numel = n_outer * n_inner
    skip = np.zeros(n_ch, np.bool_)
    _nb_fix_channels(x3, fixed, width, k0, skip)
    counted = n_ch - skip.sum()
    size = max(piece, -(-numel * counted // (_PIECES_PER_THREAD * threads)))
    per_channel = -(-numel // size)
    n = counted * per_channel
    arena = np.zeros(_A_HEAD + n_ch + 4 * n + threads * (1 + n_ch * _ROW), np.int64)
    arena[_A_PIECES] = n
    arena[_A_SKIPPED] = n_ch - counted
    arena[_A_THREADS] = threads
    rk, owner, pieces, finished, rows = _nb_arena_parts(arena, n_ch)
    owner[:] = -1
    k = 0
    for c in range(n_ch):
        if skip[c]:
            continue
        rk[c, 0] = np.float32(1.0 / width[c])
        rk[c, 1] = np.float32(k0[c])
        for start in range(0, numel, size):
            pieces[k, 0] = c
            pieces[k, 1] = start
            pieces[k, 2] = min(start + size, numel)
            k += 1
    return arena


@kernel
def _nb_take_pieces(x3, arena, t):
    """Thread ``t``: take piece numbers ``k = arena[_A_NEXT]++`` (atomic) until none are left,
    record ``owner[k] = t`` and count piece ``(c, start, stop)`` of ``x3`` with the channel's
    ``r, k0f`` into this thread's row of channel ``c`` (the sub-histograms are added into the
    row when the channel changes and at the end); then ``finished[t] = 1`` (atomic, after
    everything else). Any number of threads may run this on one arena: each piece is counted
    once. Returns the number of pieces this call counted."""
    rk, owner, pieces, finished, rows = _nb_arena_parts(arena, x3.shape[1])
    sub = np.zeros((_COPIES, NUM_BINS + 1), np.uint32)
    buf = np.empty(_BLOCK, np.int32)
    mine = 0
    cur = -1
    since = 0
    while True:
        k = fetch_add(arena, _A_NEXT, 1)
        if k >= pieces.shape[0]:
            break
        owner[k] = t
        c = pieces[k, 0]
        if c != cur:
            if cur >= 0:
                _nb_add_sub(sub, rows[t, cur, :NUM_BINS + 1])
            cur = c
            since = 0
        row = rows[t, c]
        nans, inf_seen, finite_seen, since = _nb_count_run(
            x3, c, pieces[k, 1], pieces[k, 2], rk[c, 0], rk[c, 1], row[:NUM_BINS + 1], sub, buf,
            since)
        row[NUM_BINS + 1] += nans
        row[NUM_BINS + 2] |= inf_seen
        row[NUM_BINS + 3] |= finite_seen
        mine += 1
    if cur >= 0:
        _nb_add_sub(sub, rows[t, cur, :NUM_BINS + 1])
    atomic_store(finished, t, 1)
    return mine


@kernel
def _nb_post_job(ctl, seq, x3, arena, thread):
    """Give the worker with control array ``ctl`` the job ``seq + 1`` (``x3``, ``arena``, as
    thread number ``thread``) if it finished job ``seq`` (workers.py protocol). Returns 0: not posted (busy); 1: posted, the
    worker spins; 2: posted, the worker sleeps (notify it)."""
    if atomic_load(ctl, ACK) != seq:
        return 0
    ctl[_J_X] = address_of(x3)
    ctl[_J_OUTER] = x3.shape[0]
    ctl[_J_CH] = x3.shape[1]
    ctl[_J_INNER] = x3.shape[2]
    ctl[_J_ARENA] = address_of(arena)
    ctl[_J_WORDS] = arena.shape[0]
    ctl[_J_THREAD] = thread
    atomic_store(ctl, SEQ, seq + 1)
    return 1 if atomic_load(ctl, AWAKE) else 2


@kernel
def _nb_post_nudge(ctl, seq):
    """:func:`_nb_post_job` for a job without work (``_J_WORDS = 0``): the worker only wakes up
    and spins for the next one."""
    if atomic_load(ctl, ACK) != seq:
        return 0
    ctl[_J_WORDS] = 0
    atomic_store(ctl, SEQ, seq + 1)
    return 1 if atomic_load(ctl, AWAKE) else 2


@kernel
def _nb_serve_histogram(ctl, spin):
    """A histogram worker's loop (workers.py protocol): whenever ``ctl[SEQ]`` moves past the
    last job done, run :func:`_nb_take_pieces` on the batch and arena whose addresses and
    shapes the job words give, then ``ctl[ACK] = SEQ``; return after ``spin`` idle rounds of
    :func:`wait_for_job` (having stored ``AWAKE = 0`` and seen no new job)."""
    ack = atomic_load(ctl, ACK)
    while True:
        seq = wait_for_job(ctl, ack, spin)
        if seq == ack:
            atomic_store(ctl, AWAKE, 0)
            if atomic_load(ctl, SEQ) == ack:
                return
            atomic_store(ctl, AWAKE, 1)
            continue
        if ctl[_J_WORDS] > 0:
            x3 = numba.carray(float32_at(ctl[_J_X]), (ctl[_J_OUTER], ctl[_J_CH], ctl[_J_INNER]))
            arena = numba.carray(int64_at(ctl[_J_ARENA]), (ctl[_J_WORDS],))
            _nb_take_pieces(x3, arena, ctl[_J_THREAD])
        ack = seq
        atomic_store(ctl, ACK, ack)


@kernel
def _nb_gather_fold(x3, arena, batches, pdf):
    """Add the rows of the calling thread and of every worker marked finished (atomic load,
    then its rows) into per-channel counts, count the pieces of workers not finished (one that
    lost its core) here instead (their rows are never read), and fold every counted channel
    into ``batches, pdf`` (:func:`_nb_fold_counts`). Returns ``(#NaN, any ±Inf, any finite)``
    of the batch."""
    n_outer, n_ch, n_inner = x3.shape
    rk, owner, pieces, finished, rows = _nb_arena_parts(arena, n_ch)
    n_threads = finished.shape[0]
    counts = np.zeros((n_ch, NUM_BINS + 1), np.int64)
    use = np.zeros(n_threads, np.bool_)
    for t in range(n_threads):
        use[t] = t == 0 or atomic_load(finished, t) != 0
    nans = 0
    inf_seen = False
    finite_seen = arena[_A_SKIPPED] > 0        # an all-zero slice: skipped, not counted
    for t in range(n_threads):
        if not use[t]:
            continue
        for c in range(n_ch):
            row = rows[t, c]
            for b in range(NUM_BINS + 1):
                counts[c, b] += row[b]
            nans += row[NUM_BINS + 1]
            inf_seen |= row[NUM_BINS + 2] != 0
            finite_seen |= row[NUM_BINS + 3] != 0
    counted = np.zeros(n_ch, np.bool_)
    for k in range(pieces.shape[0]):
        c = pieces[k, 0]
        counted[c] = True
        t = owner[k]
        if t == 0 or (t > 0 and use[t]):
            continue
        a, i, f = _nb_count_channel(x3, c, pieces[k, 1], pieces[k, 2], rk[c, 0], rk[c, 1],
                                    counts[c])
        nans += a
        inf_seen |= i
        finite_seen |= f
    for c in range(n_ch):
        if counted[c]:
            _nb_fold_counts(counts[c], n_outer * n_inner, c, batches, pdf)
    return nans, inf_seen, finite_seen


@functools.cache
def _team(pid: int) -> list:
    """The histogram workers of this process (``pid``: a forked child, e.g. a cluster worker,
    must not count on its parent's threads, which did not survive the fork); grown on demand."""
    return []


@functools.cache
def _spin(pid: int) -> int:
    """Idle iterations a worker spins before it sleeps (about ``SPIN_SECONDS``)."""
    return spin_rounds()


def _workers(n: int) -> list:
    """``n`` histogram workers of this process, started on first use."""
    pid = os.getpid()
    team = _team(pid)
    while len(team) < n:
        team.append(Worker(_nb_serve_histogram, _spin(pid), name=f"qsim-histogram-{len(team)}"))
    return team[:n]


def _threaded_histogram_update(x3, fixed, width, k0, batches, pdf, threads, piece=_PIECE):
    """:func:`_nb_histogram_update` on ``threads`` threads; the state equals the serial one bit
    for bit, whatever the threads do.

    The channels' elements are cut into pieces (``_PIECES_PER_THREAD`` per thread, at least
    ``piece`` elements) that the calling thread and ``threads - 1`` workers (workers.py: they
    wait for a job by spinning, so one posted within ``SPIN_SECONDS`` of the last starts at
    once) take in turn, each thread into its own integer histograms; the counts are added
    afterwards. A worker still busy with an earlier job is not given this one; a sleeping
    worker only for batches of ``WAKE_MIN_ELEMENTS`` or more (else it is only woken, and only
    within ``BURST_SECONDS`` of the previous threaded update). On a shared machine a worker may
    get no core for a while: once the pieces are all taken the calling thread waits for the
    workers (their acknowledgement of the job) at most its own time per piece, then counts the
    pieces of a worker that has not finished itself (that worker's counts are ignored; the
    job's arrays stay referenced until it acknowledges). Without Numba (the atomics need
    compiled code) this is the serial kernel."""
    if not USE_NUMBA:
        return _nb_histogram_update(x3, fixed, width, k0, batches, pdf)
    if not x3.flags.c_contiguous:
        x3 = np.ascontiguousarray(x3)
    if x3.size == 0:
        return 0, False, False
    arena = _nb_plan(x3, fixed, width, k0, threads, piece)
    helped = []
    if threads > 1 and arena[_A_PIECES] > 1:
        large = x3.size >= WAKE_MIN_ELEMENTS
        now = time.perf_counter()
        for t, w in enumerate(_workers(threads - 1), 1):
            if large or w.awake():
                if w.post(_nb_post_job, (x3, arena, t), keep=(x3, arena)):
                    helped.append(w)
            elif now - w.last_call < BURST_SECONDS:     # spinning for the next update
                w.post(_nb_post_nudge, (), keep=None)
            w.last_call = now
    t0 = time.perf_counter()
    mine = _nb_take_pieces(x3, arena, 0)
    if helped:
        deadline = time.perf_counter() + (time.perf_counter() - t0) / max(mine, 1)
        while not all(w.done() for w in helped) and time.perf_counter() < deadline:
            pass
        for w in helped:
            w.release()
    return _nb_gather_fold(x3, arena, batches, pdf)


@functools.cache
def _loadavg_fd(pid: int) -> int:
    """A descriptor of /proc/loadavg, opened once per process (-1 where there is none)."""
    try:
        return os.open("/proc/loadavg", os.O_RDONLY)
    except OSError:
        return -1


def _runnable_tasks() -> int | None:
    """Tasks running or waiting for a core on the whole machine right now, this thread included
    (the 4th field of /proc/loadavg, ``running/total``); None where it cannot be read."""
    fd = _loadavg_fd(os.getpid())
    if fd < 0:
        return None
    try:
        return int(os.pread(fd, 128, 0).split()[3].split(b"/")[0])
    except (OSError, ValueError, IndexError):
        return None


@functools.cache
def _machine_cores() -> int:
    """``os.cpu_count()`` (at least 1), read once: it reads a sysfs file, 6 µs a call here."""
    return os.cpu_count() or 1


def default_threads(x3) -> int:
    """Threads for a batch seen as ``(outer, C, inner)`` when the caller gives none: 1 unless a
    channel holds at least ``PARALLEL_MIN_ELEMENTS`` elements; then the machine's cores that no
    other task is running on now, ``cpu_count - (runnable - 1 - awake)`` (/proc/loadavg counts
    the tasks of the whole machine, this process's histogram workers spinning for a job
    included: ``awake`` of them), at most the cores this process may use and at least 1 (all
    of those where the runnable count is unknown). A second thread on a core another job keeps
    busy made the update slower, with stalls of milliseconds when a woken pool worker took the
    core (and the GIL) from the calling thread (benchmarks/README.md)."""
    if x3.shape[0] * x3.shape[2] < PARALLEL_MIN_ELEMENTS:
        return 1
    machine = _machine_cores()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else machine
    runnable = _runnable_tasks()
    if runnable is None:
        return cores
    others = runnable - 1
    if others > 0:
        for w in _team(os.getpid()):
            others -= w.awake()         # our worker spinning for a job: its core is ours
        others -= threads_.spinning()   # so is the float kernels' worker's
    return max(1, min(cores, machine - max(others, 0)))


def _histogram_update(x3, fixed, width, k0, batches, pdf, threads):
    """Dispatch: NumPy twin without Numba; threaded for ``threads > 1`` and channels of at least
    ``PARALLEL_MIN_ELEMENTS`` elements. Returns ``(#NaN, any ±Inf, any finite)``."""
    if not USE_NUMBA:
        return _np_histogram_update(x3, fixed, width, k0, batches, pdf)
    if threads > 1 and x3.shape[0] * x3.shape[2] >= PARALLEL_MIN_ELEMENTS:
        return _threaded_histogram_update(x3, fixed, width, k0, batches, pdf, threads)
    return _nb_histogram_update(x3, fixed, width, k0, batches, pdf)

def _np_fix_bins(mn, mx):
    """NumPy twin of :func:`_nb_fix_bins` (float32 scalars in, float64 ``(w, k0)`` out)."""
    f32 = np.float32
    all_nan = np.isnan(mn)
    if mn == mx:
        mx = f32(np.float64(mn) + 0.01)
    with np.errstate(over="ignore", invalid="ignore"):
        c = f32(f32(mn + mx) / f32(2.0))
        lo = f32(c - f32(f32(3.0) * f32(c - mn)))
        hi = f32(c + f32(f32(3.0) * f32(mx - c)))
    if not all_nan:
        lo = -L32 if (np.isnan(lo) or lo < -L32) else min(lo, L32)
        hi = L32 if (np.isnan(hi) or hi > L32) else max(hi, -L32)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = (np.float64(hi) - np.float64(lo)) / np.float64(NUM_BINS)
        k0 = np.floor(np.float64(lo) / w)
    return w, k0


def _np_histogram_update(x3, fixed, width, k0, batches, pdf):
    """NumPy twin of :func:`_nb_histogram_update` (the flags from :func:`finiteness`)."""
    n_outer, n_ch, n_inner = x3.shape
    numel = n_outer * n_inner
    nans = 0
    if numel == 0:
        return nans, False, False
    for c in range(n_ch):
        v = x3[:, c, :].ravel()
        isnan = np.isnan(v)
        if not fixed[c]:
            finite = v[~isnan]
            lo, hi = (finite.min(), finite.max()) if finite.size else (np.float32(np.nan),) * 2
            if lo == 0.0 and hi == 0.0:
                continue
            width[c], k0[c] = _np_fix_bins(lo, hi)
            fixed[c] = True
        nans += int(isnan.sum())
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            r = np.float32(1.0 / width[c])
            s = v * r
            idx = (np.floor(s) - np.float32(k0[c])).astype(np.float32)
        keep = ~np.isnan(s) & (np.abs(s) < np.float32(_INT32_RANGE)) & (idx >= 0) & (idx < NUM_BINS)
        counts = np.bincount(idx[keep].astype(np.int64), minlength=NUM_BINS)
        k = np.float64(batches[c])
        p = counts.astype(np.float64) / np.float64(numel)
        pdf[c] = (pdf[c] * k + p) / (k + 1.0)
        batches[c] += 1
    return (nans, *finiteness(x3))


@dataclass(frozen=True, eq=False)
class HistogramStats:
    """The tf-enhanced histogram of numerics.md §4, one per channel (C = 1 per tensor).

    ``fixed[c]``: bins of channel c are set (False while only all-zero batches were seen);
    ``width[c] = w``, ``k0[c]``: bin i of channel c spans ``[(k0 + i)·w, (k0 + i + 1)·w)``;
    ``batches[c]``: number of batches averaged; ``pdf[c]``: the equal-weight average of each
    batch's ``count_i / numel``.
    """

    fixed: np.ndarray       # (C,) bool
    width: np.ndarray       # (C,) float64
    k0: np.ndarray          # (C,) float64
    batches: np.ndarray     # (C,) int64
    pdf: np.ndarray         # (C, NUM_BINS) float64
    axis: int | None = None
    nan_count: int = 0
    inf_seen: bool = False      # a batch held +Inf or -Inf
    finite_seen: bool = False   # a batch held a finite value

    @staticmethod
    def empty(*, axis: int | None = None, channels: int | None = None) -> "HistogramStats":
        c = 1 if axis is None else channels
        return HistogramStats(fixed=_readonly(np.zeros(c, bool)),
                              width=_readonly(np.zeros(c, np.float64)),
                              k0=_readonly(np.zeros(c, np.float64)),
                              batches=_readonly(np.zeros(c, np.int64)),
                              pdf=_readonly(np.zeros((c, NUM_BINS), np.float64)), axis=axis)

    @property
    def num_channels(self) -> int:
        return int(self.fixed.shape[0])

    def update(self, x, *, threads: int | None = None) -> "HistogramStats":
        """The statistics after one more batch ``x`` (float32): a new value,
        ``fold(observe(x))`` (the path a cluster takes too, see :mod:`qsim.distributed`).

        Once every channel has its bins (every batch after the first, as a rule) the kernel
        folds the counts into a copy of ``pdf`` itself, ``pdf = (pdf·k + p)/(k + 1)``: the
        operations :meth:`fold` does on :meth:`observe`'s ``p``, so the same bits (tested),
        without the piece's arrays and the stale check (nothing can be stale under the bins in
        use). ``threads``: see :meth:`observe`; the result does not depend on it."""
        if not self.fixed.all():
            return self.fold(self.observe(x, threads=threads))
        batches, pdf = self.batches.copy(), self.pdf.copy()
        _, _, _, nans, inf, finite = self._count(x, threads, batches, pdf, "update")
        return HistogramStats(fixed=self.fixed, width=self.width, k0=self.k0,
                              batches=_readonly(batches), pdf=_readonly(pdf), axis=self.axis,
                              nan_count=self.nan_count + int(nans),
                              inf_seen=self.inf_seen or bool(inf),
                              finite_seen=self.finite_seen or bool(finite))

    def observe(self, x, *, threads: int | None = None) -> "HistogramStats":
        """The batch ``x`` alone under this histogram's bins (a piece for :meth:`fold`).

        A channel with bins counts into them; a channel without bins fixes them from this
        batch (§4 steps 1–2) unless the batch is all zero there (then it is not counted).
        ``batches[c]`` is 1 where the batch counted, and there ``pdf[c] = count_i/numel``
        (exactly: ``(0·0 + p)/(0 + 1) = p``). Only ``fixed, width, k0`` of ``self`` are read,
        so a worker that knows the bins needs nothing else.

        ``threads``: channels of at least ``PARALLEL_MIN_ELEMENTS`` elements are counted on that
        many threads (integer counts added afterwards: the same bits). ``None``
        (default): for such channels the cores no other task is running on
        (:func:`default_threads`), else 1."""
        batches = np.zeros(self.batches.shape, np.int64)
        pdf = np.zeros(self.pdf.shape, np.float64)
        fixed, width, k0, nans, inf, finite = self._count(x, threads, batches, pdf, "observe")
        return HistogramStats(fixed=_readonly(fixed), width=_readonly(width), k0=_readonly(k0),
                              batches=_readonly(batches), pdf=_readonly(pdf), axis=self.axis,
                              nan_count=int(nans), inf_seen=bool(inf), finite_seen=bool(finite))

    def _count(self, x, threads, batches, pdf, caller):
        """Count the batch ``x`` under copies of this histogram's bins, folding into ``batches,
        pdf`` in place; returns ``(fixed, width, k0, #NaN, any ±Inf, any finite)``."""
        if threads is not None and (not isinstance(threads, (int, np.integer)) or threads < 1):
            raise ConfigError(f"HistogramStats.{caller}: threads must be None or an integer >= 1, "
                              f"got {threads!r}")
        x3 = _as_batch(x, self.axis)
        if threads is None:
            threads = default_threads(x3)
        fixed, width, k0 = self.fixed.copy(), self.width.copy(), self.k0.copy()
        nans, inf, finite = _histogram_update(x3, fixed, width, k0, batches, pdf, int(threads))
        return fixed, width, k0, nans, inf, finite

    def stale(self, piece: "HistogramStats") -> np.ndarray:
        """Channels (bool, (C,)) where ``piece`` was not observed under this histogram's bins:
        the channel has bins here, but the piece counted into other bins (it fixed its own) or
        did not count at all (its observer had no bins and the batch was all zero there). Such
        a piece was observed before an earlier batch fixed the bins; it cannot be folded, the
        batch has to be observed again under :attr:`fixed`/:attr:`width`/:attr:`k0`.

        ``stale = fixed & ~(piece.fixed & same bits of width and k0)``."""
        same = ((self.width.view(np.int64) == piece.width.view(np.int64))
                & (self.k0.view(np.int64) == piece.k0.view(np.int64)))
        return self.fixed & ~(piece.fixed & same)

    def fold(self, piece: "HistogramStats") -> "HistogramStats":
        """One more batch, given as its piece (:meth:`observe`): a new value.

        Where the piece counted: a channel without bins takes the piece's; then
        ``pdf = (pdf·k + p)/(k + 1)``, ``k += 1`` (float64, as the streaming kernel;
        ``update(x) == fold(observe(x))`` by definition)."""
        _check_channels(self.num_channels, piece.num_channels)
        stale = self.stale(piece)
        if stale.any():
            raise EncodingError(f"histogram channels {np.flatnonzero(stale).tolist()} of the piece "
                                f"were not observed under the statistics' bins; observe the "
                                f"batch again under the current bins")
        counted = piece.batches > 0
        take = counted & ~self.fixed
        if counted.all() and not self.batches.any():
            pdf = piece.pdf     # first batch: (0·0 + p)/(0 + 1) = p exactly; both read-only
        elif counted.all():     # the usual case: whole arrays, no gather/scatter copies
            k = self.batches.astype(np.float64)[:, None]
            pdf = self.pdf * k
            pdf += piece.pdf
            pdf /= k + 1.0
        else:
            k = self.batches.astype(np.float64)[counted][:, None]
            pdf = self.pdf.copy()
            pdf[counted] = (pdf[counted] * k + piece.pdf[counted]) / (k + 1.0)
        return HistogramStats(fixed=_readonly(self.fixed | take),
                              width=_readonly(np.where(take, piece.width, self.width)),
                              k0=_readonly(np.where(take, piece.k0, self.k0)),
                              batches=_readonly(self.batches + counted),
                              pdf=_readonly(pdf), axis=self.axis,
                              nan_count=self.nan_count + piece.nan_count,
                              inf_seen=self.inf_seen or piece.inf_seen,
                              finite_seen=self.finite_seen or piece.finite_seen)

    def edges(self, c: int = 0) -> np.ndarray:
        """Float64 bin edges ``e_i = (k0 + i)·w``, i = 0..1536, of channel ``c``."""
        return (self.k0[c] + np.arange(NUM_BINS + 1, dtype=np.float64)) * self.width[c]


def empty_like(piece: "MinMaxStats | HistogramStats") -> "MinMaxStats | HistogramStats":
    """Statistics of no batch, of the piece's kind, axis and channel count."""
    if isinstance(piece, MinMaxStats):
        return MinMaxStats.empty(axis=piece.axis, channels=np.atleast_1d(piece.min).shape[0])
    return HistogramStats.empty(axis=piece.axis, channels=piece.num_channels)


def fold(stats, piece):
    """``stats`` (None: no batch yet) after one more batch given as its piece."""
    return (empty_like(piece) if stats is None else stats).fold(piece)
