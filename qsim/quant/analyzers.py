"""Encoding analyzers: pure functions ``statistics -> Encoding`` (numerics.md §2, §4, §5).

* :func:`tf`           min-max (§2) from :class:`MinMaxStats`.
* :func:`tf_enhanced`  AIMET's SQNR search over candidate grids (§4) from :class:`HistogramStats`.
* :func:`percentile`   §5: a percentile range of the histogram, then §2.
* :func:`mse`          the §4 search with plain squared error (saturation weight 1 instead of 3).
* :func:`entropy`      KL-divergence calibration (TensorRT / ONNX Runtime style), then §2.

Per-channel statistics give per-channel encodings, one channel at a time.
"""
from __future__ import annotations

import numpy as np

from ..errors import EncodingError
from .encoding import Encoding, check_bitwidth, from_min_max
from ..jit import USE_NUMBA, kernel
from .stats import NUM_BINS, HistogramStats, MinMaxStats

#: AIMET's tf-enhanced weight of the saturation (clipping) error
SATURATION_GAMMA = 3.0


# ============================================================================ tf (min-max)

def tf(stats: MinMaxStats, *, bitwidth, symmetric=False, strict_symmetric=False,
       unsigned_symmetric=False) -> Encoding:
    """Min-max encoding: :func:`~qsim.quant.encoding.from_min_max` on the running min/max.

    No data (or only NaN) seen: min = +inf, max = -inf are clamped to ±L and then include zero,
    giving the all-zero encoding of §2 (delta = eps).
    """
    return from_min_max(stats.min, stats.max, bitwidth=bitwidth, symmetric=symmetric,
                        strict_symmetric=strict_symmetric, unsigned_symmetric=unsigned_symmetric,
                        axis=stats.axis)


# ============================================================================ helpers on one histogram

@kernel
def _round32(t):
    """float32 round half away from zero (NaN stays NaN)."""
    a = np.abs(t)
    r = np.floor(a)
    if a - r >= np.float32(0.5):
        r = r + np.float32(1.0)
    if t < np.float32(0.0):
        r = -r
    return r


@kernel
def _observed_range(pdf, k0, w):
    """(lo, hi) float32 of §4: left edges of the first non-empty bin (none: 0) and the last
    non-empty bin among 1..1535 (none: 1535); ``lo = min(lo, 0)``, ``hi = max(hi, 0)``,
    ``hi = max(hi, f32(lo + 0.01))``."""
    first = 0
    for i in range(NUM_BINS):
        if pdf[i] > 0.0:
            first = i
            break
    last = NUM_BINS - 1
    for i in range(NUM_BINS - 1, 0, -1):
        if pdf[i] > 0.0:
            last = i
            break
    lo = np.float32((k0 + np.float64(first)) * w)
    hi = np.float32((k0 + np.float64(last)) * w)
    if lo > np.float32(0.0):
        lo = np.float32(0.0)
    if hi < np.float32(0.0):
        hi = np.float32(0.0)
    hi2 = np.float32(np.float64(lo) + 0.01)
    if hi2 > hi:
        hi = hi2
    return lo, hi


def observed_range(pdf, k0, w):
    """:func:`_observed_range` as numpy float32 scalars (Numba returns Python floats, and
    float32 arithmetic on them must stay float32)."""
    lo, hi = _observed_range(pdf, k0, w)
    return np.float32(lo), np.float32(hi)


@kernel
def _asymmetric_candidates(lo, hi, bitwidth):
    """Asymmetric candidates (d, o) of §4, float32 arrays, in AIMET's order.

    ``d0 = f32((hi - lo)/N)``, ``o0 = round(lo/d0)``; for f = 1/16..17/16 and i = 0..20:
    ``d = f32(f·d0)``, ``o = trunc(-N + N/20·i)``; skip grids that contain ``[omin, omax]``,
    clamp to it, skip empty ones, add ``(f32((tmax - tmin)/N), round(tmin/d'))``; last ``(d0, o0)``.
    """
    n = np.float32(2.0 ** bitwidth - 1.0)
    n64 = 2.0 ** bitwidth - 1.0
    d0 = np.float32((np.float64(hi) - np.float64(lo)) / n64)
    o0 = _round32(lo / d0)
    omin = d0 * o0
    omax = d0 * (o0 + n)
    ds = np.empty(17 * 21 + 1, np.float32)
    os = np.empty(17 * 21 + 1, np.float32)
    count = 0
    for j in range(1, 18):
        d = np.float32(np.float32(j / 16.0) * d0)
        for i in range(21):
            o = np.float32(np.trunc(-n64 + n64 / 20.0 * i))
            tmin = d * o
            tmax = d * (o + n)
            if tmin < omin and tmax > omax:
                continue
            if tmin < omin:
                tmin = omin
            if tmax > omax:
                tmax = omax
            if tmin == tmax:
                continue
            dc = np.float32((np.float64(tmax) - np.float64(tmin)) / n64)
            ds[count] = dc
            os[count] = _round32(tmin / dc)
            count += 1
    ds[count] = d0
    os[count] = o0
    count += 1
    return ds[:count], os[:count]


@kernel
def _symmetric_candidates(lo, hi, bitwidth, strict, unsigned):
    """Symmetric candidates (d, o) of §4: ``d = f32(f·dmax)`` for 101 factors f.

    ``N' = N - 1`` if strict else N; unsigned and ``lo == 0``: ``dmax = hi/N'``, ``o = 0``;
    else ``dmax = f32(max(|lo|, |hi|)/(N'/2))`` (f64), ``o = floor(-N'/2)``.
    ``f = f32(0.01)``, then ``f = f32(f + 0.01)`` (addition in float64) while ``f ≤ 1.01``.
    """
    n64 = 2.0 ** bitwidth - 1.0
    if strict:
        n64 = n64 - 1.0
    if unsigned and lo == np.float32(0.0):
        dmax = hi / np.float32(n64)
        o = np.float32(0.0)
    else:
        dmax = np.float32(max(abs(np.float64(lo)), abs(np.float64(hi))) / (n64 / 2.0))
        o = np.float32(np.floor(-n64 / 2.0))
    ds = np.empty(128, np.float32)
    os = np.empty(128, np.float32)
    count = 0
    f = np.float32(0.01)
    while f <= 1.01:
        ds[count] = np.float32(f * dmax)
        os[count] = o
        count += 1
        f = np.float32(np.float64(f) + 0.01)
    return ds[:count], os[:count]


@kernel
def _bin_centres(k0, w):
    """float32 bin centres ``m_i = f32(f32(e_i) + f32(w/2))``."""
    m = np.empty(NUM_BINS, np.float32)
    half = np.float32(w / 2.0)
    for i in range(NUM_BINS):
        m[i] = np.float32((k0 + np.float64(i)) * w) + half
    return m


@kernel
def _range_index(v, e0, w):
    """``floor(f32(v - e0)/w)`` (f32 difference, f64 division), NaN -> 0, clamped to [0, 1535]."""
    t = np.floor(np.float64(np.float32(v - e0)) / w)
    if t != t:
        return 0
    if t < 0.0:
        return 0
    if t > NUM_BINS - 1.0:
        return NUM_BINS - 1
    return np.int64(t)


@kernel
def _nb_candidate_costs(pdf, k0, w, ds, os, bitwidth, gamma):
    """Cost of every candidate grid (d, o) on one histogram (§4 cost, gamma = 3 for tf-enhanced).

    ``sat = Σ_{i<minInd} pdf_i (m_i - m_minInd)² + Σ_{i≥maxInd} pdf_i (m_i - m_maxInd)²``,
    ``quant = Σ_{minInd≤i<maxInd} pdf_i err_i²``, ``cost = gamma·sat + quant`` (f64, i ascending).
    Empty bins add exactly 0 to each sum, so only non-empty bins are visited.
    """
    m = _bin_centres(k0, w)
    e0 = np.float32(k0 * w)
    n2 = np.float32(2.0 ** bitwidth - 1.0)
    nz = np.empty(NUM_BINS, np.int64)
    n_nz = 0
    for i in range(NUM_BINS):
        if pdf[i] != 0.0:
            nz[n_nz] = i
            n_nz += 1
    costs = np.empty(ds.shape[0], np.float64)
    for c in range(ds.shape[0]):
        d = ds[c]
        o = os[c]
        min_ind = _range_index(d * o, e0, w)
        max_ind = _range_index(d * (o + n2), e0, w)
        m_lo = m[min_ind]
        m_hi = m[max_ind]
        sat_bottom = 0.0
        sat_top = 0.0
        quant = 0.0
        for j in range(n_nz):
            i = nz[j]
            p = pdf[i]
            if i < min_ind:
                diff = np.float64(m[i] - m_lo)
                sat_bottom += p * (diff * diff)
            if i >= max_ind:
                diff = np.float64(m[i] - m_hi)
                sat_top += p * (diff * diff)
            if i >= min_ind and i < max_ind:
                q = _round32(np.float32(m[i] / d) - o)
                err = np.float64(m[i] - d * (q + o))
                quant += p * (err * err)
        costs[c] = gamma * (sat_bottom + sat_top) + quant
    return costs


def _np_candidate_costs(pdf, k0, w, ds, os, bitwidth, gamma):
    """NumPy twin of :func:`_nb_candidate_costs` (sequential sums through ``np.cumsum``)."""
    f32 = np.float32
    idx = np.arange(NUM_BINS, dtype=np.float64)
    m = ((k0 + idx) * w).astype(f32) + f32(w / 2.0)
    e0 = f32(k0 * w)
    n2 = f32(2.0 ** bitwidth - 1.0)

    def index(v):
        with np.errstate(invalid="ignore", over="ignore"):
            t = np.floor(np.float64(f32(v - e0)) / w)
        return 0 if np.isnan(t) else int(min(max(t, 0.0), NUM_BINS - 1.0))

    def seq_sum(terms):
        return float(np.cumsum(terms)[-1]) if terms.size else 0.0

    costs = np.empty(len(ds), np.float64)
    all_i = np.arange(NUM_BINS)
    nonzero = pdf != 0.0
    for c, (d, o) in enumerate(zip(ds, os)):
        lo_i, hi_i = index(d * o), index(d * (o + n2))
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            below = nonzero & (all_i < lo_i)
            above = nonzero & (all_i >= hi_i)
            inside = nonzero & (all_i >= lo_i) & (all_i < hi_i)
            sb = (m[below] - m[lo_i]).astype(np.float64)
            st = (m[above] - m[hi_i]).astype(np.float64)
            mi = m[inside]
            t = (mi / d).astype(f32) - o
            a = np.abs(t)
            r = np.floor(a)
            r = np.copysign(r + (a - r >= f32(0.5)).astype(f32), t)
            err = (mi - d * (r + o)).astype(np.float64)
            costs[c] = gamma * (seq_sum(pdf[below] * (sb * sb)) + seq_sum(pdf[above] * (st * st))) \
                + seq_sum(pdf[inside] * (err * err))
    return costs


def _first_minimum(costs) -> int:
    """Index of the first cost strictly below all earlier ones (start DBL_MAX); -1 if none."""
    best, best_i = np.finfo(np.float64).max, -1
    for i, c in enumerate(costs):
        if c < best:
            best, best_i = c, i
    return best_i


# ============================================================================ tf-enhanced / mse

def _check_hist(stats) -> None:
    if not isinstance(stats, HistogramStats):
        raise EncodingError(f"this scheme needs HistogramStats, got {type(stats).__name__}")


def _nothing_binned(stats: HistogramStats, c: int) -> bool:
    """A constant first batch with |v| ≥ 2^18 (w = 0) or an all-NaN first batch (w NaN)."""
    w = stats.width[c]
    return bool(stats.fixed[c]) and not (np.isfinite(w) and w > 0.0)


def _zeros_only(bitwidth: int, steps: int):
    """§4 step 4, only zeros seen: ``delta = 2/N'``, ``offset = floor(-1/delta)``,
    ``min = offset·delta``, ``max = min + N'·delta`` (float64)."""
    delta = 2.0 / steps
    offset = float(np.floor(-1.0 / delta))
    new_min = offset * delta
    return new_min, new_min + steps * delta, delta, offset


def _encoding_of_rows(rows, axis, *, bitwidth, symmetric, strict_symmetric, unsigned_symmetric):
    """One :class:`Encoding` from per-channel ``(min, max, delta, offset)`` rows (one row when
    ``axis`` is None)."""
    cols = np.array(rows, dtype=np.float64).T
    if axis is None:
        cols = cols[:, 0]
    return Encoding(min=cols[0], max=cols[1], delta=cols[2], offset=cols[3], bitwidth=bitwidth,
                    symmetric=symmetric, strict_symmetric=strict_symmetric,
                    unsigned_symmetric=unsigned_symmetric, axis=axis)


def _search_one(stats: HistogramStats, c: int, bw: int, symmetric, strict, unsigned, gamma):
    """(min, max, delta, offset) of channel ``c`` by the §4 candidate search."""
    n = 2 ** bw - 1
    if not stats.fixed[c]:
        return _zeros_only(bw, n)
    d, o = np.float32(-1.0), np.float32(-1.0)       # AIMET's sentinel
    if not _nothing_binned(stats, c):
        pdf, k0, w = stats.pdf[c], float(stats.k0[c]), float(stats.width[c])
        lo, hi = observed_range(pdf, k0, w)
        if symmetric:
            ds, os = _symmetric_candidates(lo, hi, bw, strict, unsigned)
        else:
            ds, os = _asymmetric_candidates(lo, hi, bw)
        costs = (_nb_candidate_costs if USE_NUMBA else _np_candidate_costs)(
            pdf, k0, w, ds, os, bw, gamma)
        best = _first_minimum(costs)
        if best >= 0:
            d, o = ds[best], os[best]
    steps = np.float32(n - 1 if (symmetric and strict) else n)
    return float(d * o), float(d * (o + steps)), float(d), float(o)


def _search(stats, *, bitwidth, symmetric, strict_symmetric, unsigned_symmetric, gamma):
    _check_hist(stats)
    bw = check_bitwidth(bitwidth)
    rows = [_search_one(stats, c, bw, symmetric, strict_symmetric, unsigned_symmetric, gamma)
            for c in range(stats.num_channels)]
    return _encoding_of_rows(rows, stats.axis, bitwidth=bw, symmetric=symmetric,
                             strict_symmetric=strict_symmetric, unsigned_symmetric=unsigned_symmetric)


def tf_enhanced(stats: HistogramStats, *, bitwidth, symmetric=False, strict_symmetric=False,
                unsigned_symmetric=False) -> Encoding:
    """AIMET's tf-enhanced (SQNR) encoding, numerics.md §4.

    Candidates (asymmetric: 17×21 clipped grids plus the observed-range grid; symmetric: 101
    scaled grids) are scored by ``cost = 3·saturation + quantization`` noise on the histogram;
    the first strict minimum wins: ``delta = d``, ``offset = o``, ``min = f32(d·o)``,
    ``max = f32(d·(o + N'))``. Degenerate cases (as AIMET): only zeros seen → ``delta = 2/N``,
    ``offset = floor(-1/delta)``; nothing binnable (constant first batch with |v| ≥ 2^18, or an
    all-NaN first batch), or no finite cost → AIMET's sentinel ``delta = offset = -1``.
    """
    return _search(stats, bitwidth=bitwidth, symmetric=symmetric,
                   strict_symmetric=strict_symmetric, unsigned_symmetric=unsigned_symmetric,
                   gamma=SATURATION_GAMMA)


def mse(stats: HistogramStats, *, bitwidth, symmetric=False, strict_symmetric=False,
        unsigned_symmetric=False) -> Encoding:
    """Mean-squared-error encoding: the candidates and degenerate cases of :func:`tf_enhanced`,
    scored by plain squared error ``cost = saturation + quantization`` (gamma = 1, not 3)."""
    return _search(stats, bitwidth=bitwidth, symmetric=symmetric,
                   strict_symmetric=strict_symmetric, unsigned_symmetric=unsigned_symmetric,
                   gamma=1.0)


# ============================================================================ percentile

def check_percentile(p) -> float:
    """Return ``p`` as float or raise EncodingError if it is not a number in [50, 100]."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) \
            or not 50.0 <= float(p) <= 100.0:
        raise EncodingError(f"percentile must be a number in [50, 100], got {p!r}")
    return float(p)


def percentile_range(stats: HistogramStats, c: int, p: float):
    """(pmin, pmax) float32 of channel ``c`` by numerics.md §5.

    ``pf = f32(p)``; 100 → the observed range of §4; else ``left = f32(1 - pf/100)``,
    ``right = f32(pf/100)``, cdf = running f64 sum of the pdf (not normalised);
    ``pmin = f32(e_i)`` for the first i with ``cdf_i ≥ left`` (none: ``e_0``);
    ``pmax = f32(e_i + f32(w))`` for the largest i with ``cdf_i < right`` and ``e_i < hi``
    (none: ``e_1536``); ``pmin == pmax`` → ``pmax = f32(pmax + f32(w))``.
    """
    pdf, k0, w = stats.pdf[c], float(stats.k0[c]), float(stats.width[c])
    lo, hi = observed_range(pdf, k0, w)
    pf = np.float32(p)
    if pf == np.float32(100.0):
        return lo, hi
    right = np.float32(pf / np.float32(100.0))
    left = np.float32(np.float32(1.0) - right)
    edges = (k0 + np.arange(NUM_BINS + 1, dtype=np.float64)) * w
    cdf = np.cumsum(pdf)
    reach = np.nonzero(cdf >= np.float64(left))[0]
    pmin = np.float32(edges[reach[0]] if reach.size else edges[0])
    below = np.nonzero((cdf < np.float64(right)) & (edges[:NUM_BINS] < np.float64(hi)))[0]
    if below.size:
        pmax = np.float32(edges[below[-1]] + np.float64(np.float32(w)))
    else:
        pmax = np.float32(edges[NUM_BINS])
    if pmin == pmax:
        pmax = np.float32(np.float64(pmax) + np.float64(np.float32(w)))
    return pmin, pmax


def _percentile_degenerate(bw, symmetric, strict):
    """Nothing binnable: NaN delta/min/max; offset NaN (asymmetric), -(P+1), or -P if strict."""
    p = 2.0 ** (bw - 1) - 1.0
    offset = np.nan if not symmetric else (-p if strict else -(p + 1.0))
    return np.nan, np.nan, np.nan, offset


def percentile(stats: HistogramStats, *, bitwidth, percentile: float, symmetric=False,
               strict_symmetric=False, unsigned_symmetric=False) -> Encoding:
    """Percentile encoding (numerics.md §5): :func:`percentile_range`, then §2 (from_min_max).

    Only zeros seen: ``delta = 2/N'``, ``offset = floor(-1/delta)`` with ``N' = N - 1`` when
    symmetric and strict. Nothing binnable: NaN encoding (as AIMET, see
    :func:`_percentile_degenerate`).
    """
    _check_hist(stats)
    bw = check_bitwidth(bitwidth)
    p = check_percentile(percentile)
    n = 2 ** bw - 1
    steps = n - 1 if (symmetric and strict_symmetric) else n
    rows = []
    for c in range(stats.num_channels):
        if not stats.fixed[c]:
            rows.append(_zeros_only(bw, steps))
        elif _nothing_binned(stats, c):
            rows.append(_percentile_degenerate(bw, symmetric, strict_symmetric))
        else:
            pmin, pmax = percentile_range(stats, c, p)
            e = from_min_max(pmin, pmax, bitwidth=bw, symmetric=symmetric,
                             strict_symmetric=strict_symmetric,
                             unsigned_symmetric=unsigned_symmetric)
            rows.append((float(e.min), float(e.max), float(e.delta), float(e.offset)))
    return _encoding_of_rows(rows, stats.axis, bitwidth=bw, symmetric=symmetric,
                             strict_symmetric=strict_symmetric, unsigned_symmetric=unsigned_symmetric)


# ============================================================================ entropy

#: at most this many clipping windows are scored by :func:`entropy` (evenly spaced)
ENTROPY_MAX_WINDOWS = 128
#: smoothing of zero probabilities before the KL divergence (as ONNX Runtime)
ENTROPY_SMOOTHING = 1e-4


def _smooth(p: np.ndarray, eps: float = ENTROPY_SMOOTHING):
    """Give zero entries ``eps`` and take it from the non-zero ones in proportion to their
    number (ONNX Runtime's ``smooth_distribution``); None if everything is zero."""
    zero = p == 0
    n_zero, n_nonzero = int(zero.sum()), int(p.size - zero.sum())
    if n_nonzero == 0:
        return None
    eps1 = eps * n_zero / n_nonzero
    return p + eps * zero - eps1 * ~zero


def _kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """``KL(p‖q) = Σ p_i log(p_i / q_i)`` of the normalised distributions (inf if undefined)."""
    p = p / p.sum()
    q = q / q.sum()
    if np.any(q <= 0) or np.any(p < 0):
        return np.inf
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def _window_kl(pdf: np.ndarray, start: int, stop: int, levels: int) -> float:
    """KL divergence between the histogram clipped to bins ``[start, stop)`` and its
    quantization into ``levels`` groups (TensorRT's entropy calibration).

    ``p`` = the window with the mass outside it added to its first and last bins; the window's
    own bins are merged into ``levels`` groups of ``len // levels`` bins (the last one takes the
    rest), and each group's mass is spread evenly over its bins where ``p != 0`` to give ``q``.
    Both are smoothed (:func:`_smooth`) in units of the smallest non-empty bin of the window,
    since ONNX Runtime smooths raw counts.
    """
    window = pdf[start:stop]
    p = window.copy()
    p[0] += pdf[:start].sum()
    p[-1] += pdf[stop:].sum()
    nonzero = p != 0
    group = np.minimum(np.arange(window.size) // (window.size // levels), levels - 1)
    mass = np.bincount(group, weights=window, minlength=levels)
    used = np.bincount(group, weights=nonzero, minlength=levels)
    q = np.where(nonzero, mass[group] / np.maximum(used[group], 1.0), 0.0)
    # ONNX Runtime smooths raw counts: express both in units of the smallest non-empty bin
    unit = window[window > 0].min() if np.any(window > 0) else 1.0
    p, q = _smooth(p / unit), _smooth(q / unit)
    if p is None or q is None:
        return np.inf
    return _kl_divergence(p, q)


def entropy_range(stats: HistogramStats, c: int, bitwidth: int):
    """(lo, hi) float64 of channel ``c`` minimising the KL divergence (TensorRT / ORT style).

    Windows are symmetric around the bin ``z`` that holds 0 (as ONNX Runtime's entropy
    calibrator): bins ``[z - i, z + i + 1)`` clipped to the histogram, for i from the smallest
    window holding ``levels = 2^bw - 1`` bins up to the whole histogram, at most
    :data:`ENTROPY_MAX_WINDOWS` evenly spaced values of i. Each is scored by
    :func:`_window_kl`; the first minimum wins. If no window can hold ``levels`` bins (bw ≥ 11),
    the observed range of §4 is returned.
    """
    pdf, k0, w = stats.pdf[c], float(stats.k0[c]), float(stats.width[c])
    edges = (k0 + np.arange(NUM_BINS + 1, dtype=np.float64)) * w
    levels = 2 ** bitwidth - 1
    if levels > NUM_BINS:
        lo, hi = observed_range(pdf, k0, w)
        return float(lo), float(hi)
    z = int(min(max(np.floor(-edges[0] / w), 0), NUM_BINS - 1))
    i_min, i_max = (levels - 1) // 2, max(z, NUM_BINS - 1 - z)
    candidates = np.unique(np.linspace(i_min, i_max, ENTROPY_MAX_WINDOWS).astype(np.int64))
    best, best_range = np.inf, (edges[0], edges[NUM_BINS])
    for i in candidates:
        start, stop = max(z - int(i), 0), min(z + int(i) + 1, NUM_BINS)
        if stop - start < levels:
            continue
        kl = _window_kl(pdf, start, stop, levels)
        if kl < best:
            best, best_range = kl, (edges[start], edges[stop])
    return best_range


def entropy(stats: HistogramStats, *, bitwidth, symmetric=False, strict_symmetric=False,
            unsigned_symmetric=False) -> Encoding:
    """KL-divergence ("entropy") calibration: :func:`entropy_range`, then §2 (from_min_max).

    Not an AIMET scheme (no golden data): TensorRT's algorithm on the §4 histogram. Degenerate
    histograms as :func:`tf_enhanced`: only zeros seen → §2's all-zero encoding; nothing
    binnable → AIMET's sentinel delta = offset = -1.
    """
    _check_hist(stats)
    bw = check_bitwidth(bitwidth)
    rows = []
    for c in range(stats.num_channels):
        if not stats.fixed[c]:
            lo, hi = 0.0, 0.0
        elif _nothing_binned(stats, c):
            n = 2 ** bw - 1 - (1 if symmetric and strict_symmetric else 0)
            rows.append((1.0, 1.0 - n, -1.0, -1.0))
            continue
        else:
            lo, hi = entropy_range(stats, c, bw)
        e = from_min_max(lo, hi, bitwidth=bw, symmetric=symmetric,
                         strict_symmetric=strict_symmetric, unsigned_symmetric=unsigned_symmetric)
        rows.append((float(e.min), float(e.max), float(e.delta), float(e.offset)))
    return _encoding_of_rows(rows, stats.axis, bitwidth=bw, symmetric=symmetric,
                             strict_symmetric=strict_symmetric, unsigned_symmetric=unsigned_symmetric)
