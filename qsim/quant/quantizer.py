"""TensorQuantizer: the thin stateful shell around statistics, analyzers and kernels.

::

    q = TensorQuantizer(scheme="tf_enhanced", bitwidth=8)
    for batch in batches:
        q.update_stats(batch)          # statistics only; the batch is not kept
    enc = q.compute_encodings()        # a frozen Encoding (AIMET sign convention)
    y = q.quantize_dequantize(x)       # numerics.md §3

Schemes: ``tf`` (alias ``min_max``), ``tf_enhanced``, ``percentile``, ``mse``, ``entropy``.
Non-finite calibration data (the policy of README "Non-finite data"): NaN is ignored in the
statistics as AIMET does; ±Inf is clamped to ±0.99·FLT_MAX as AIMET does, which makes the range
useless. :attr:`TensorQuantizer.nonfinite` says whether the statistics saw ±Inf or only NaN, and
:meth:`TensorQuantizer.compute_encodings` issues at most one warning per quantizer, naming it: a
:class:`~qsim.errors.NonFiniteWarning` for ±Inf or only-NaN data, else a ``RuntimeWarning`` when
some NaN were ignored.
"""
from __future__ import annotations

import warnings

import numpy as np

from ..errors import EncodingError, NonFiniteWarning, NotCalibratedError
from . import analyzers
from .encoding import Encoding, check_bitwidth
from .kernels import ROUNDING_MODES, dequantize, params32, quantize, quantize_dequantize
from .stats import HistogramStats, MinMaxStats, fold

SCHEMES = ("tf", "tf_enhanced", "percentile", "mse", "entropy")
SCHEME_ALIASES = {"min_max": "tf"}


class TensorQuantizer:
    """One quantizer: settings, streaming statistics, and (after calibration) an encoding.

    Parameters (keyword-only)
    -------------------------
    scheme:             "tf" | "min_max" | "tf_enhanced" | "percentile" | "mse" | "entropy"
    bitwidth:           2..32
    symmetric:          signed symmetric grid (offset -2^(bw-1)), see numerics.md §2
    strict_symmetric:   symmetric with offset -(2^(bw-1) - 1) (one level fewer)
    unsigned_symmetric: symmetric data that is never negative gets offset 0
    percentile:         50..100 for scheme "percentile" (None: 100, the observed range)
    axis:               None per tensor, else the channel axis (negative counts from the end)
    rounding:           "nearest" (AIMET, half away from zero) | "half_even" (ONNX QDQ)
    name:               used in warnings and error messages
    """

    def __init__(self, *, scheme: str = "tf_enhanced", bitwidth: int = 8, symmetric: bool = False,
                 strict_symmetric: bool = False, unsigned_symmetric: bool = False,
                 percentile: float | None = None, axis: int | None = None,
                 rounding: str = "nearest", name: str = "quantizer"):
        self.name = name
        scheme = SCHEME_ALIASES.get(scheme, scheme)
        if scheme not in SCHEMES:
            raise EncodingError(f"{name}: unknown scheme {scheme!r}; valid: "
                                f"{', '.join(SCHEMES + tuple(SCHEME_ALIASES))}")
        if rounding not in ROUNDING_MODES:
            raise EncodingError(f"{name}: rounding must be one of {ROUNDING_MODES}, got {rounding!r}")
        if axis is not None and (isinstance(axis, bool) or not isinstance(axis, (int, np.integer))):
            raise EncodingError(f"{name}: axis must be None or an int, got {axis!r}")
        self.scheme = scheme
        self.bitwidth = check_bitwidth(bitwidth)
        self.symmetric = bool(symmetric)
        self.strict_symmetric = bool(strict_symmetric)
        self.unsigned_symmetric = bool(unsigned_symmetric)
        self.percentile = 100.0 if percentile is None else percentile
        self.axis = None if axis is None else int(axis)
        self.rounding = rounding
        self._stats = None
        self._encoding: Encoding | None = None
        self._params = None

    @property
    def percentile(self) -> float:
        """The percentile (50..100) used by scheme "percentile"; settable (validated)."""
        return self._percentile

    @percentile.setter
    def percentile(self, p: float) -> None:
        try:
            self._percentile = analyzers.check_percentile(p)
        except EncodingError as err:
            raise EncodingError(f"{self.name}: {err}") from None

    # ------------------------------------------------------------------ statistics
    def _flags(self) -> dict:
        return dict(bitwidth=self.bitwidth, symmetric=self.symmetric,
                    strict_symmetric=self.strict_symmetric,
                    unsigned_symmetric=self.unsigned_symmetric)

    def _resolve_axis(self, shape: tuple) -> int | None:
        if self.axis is None:
            return None
        if not -len(shape) <= self.axis < len(shape):
            raise EncodingError(f"{self.name}: axis {self.axis} is out of range for a tensor of "
                                f"shape {shape}")
        return self.axis % len(shape)

    def _new_stats(self, shape: tuple):
        axis = self._resolve_axis(shape)
        channels = None if axis is None else shape[axis]
        kind = MinMaxStats if self.scheme == "tf" else HistogramStats
        return kind.empty(axis=axis, channels=channels)

    def update_stats(self, x) -> None:
        """Fold one float32 batch into the statistics (the batch itself is not kept):
        ``fold_stats(observe(x, stats))``, the path a cluster takes too (qsim.distributed)."""
        self.fold_stats(self.observe(x, self._stats))

    def observe(self, x, stats):
        """The statistics piece of the float32 batch ``x`` alone, observed after ``stats``
        (this quantizer's kind of statistics or None); nothing changes. Only the histogram bins
        of ``stats`` matter (numerics.md §4: the first non-zero batch fixes them)."""
        x = np.asarray(x, dtype=np.float32)
        if stats is None:
            return self._new_stats(x.shape).observe(x)
        if stats.axis is not None:
            axis = self._resolve_axis(x.shape)
            expected = np.atleast_1d(stats.min if isinstance(stats, MinMaxStats)
                                     else stats.fixed).shape[0]
            if axis != stats.axis or x.shape[axis] != expected:
                raise EncodingError(f"{self.name}: batch of shape {x.shape} does not match the "
                                    f"{expected} channels along axis {stats.axis} seen before")
        return stats.observe(x)

    def fold_stats(self, piece) -> None:
        """Fold one batch's statistics piece (:meth:`observe`) into the statistics (its NaN
        count and ±Inf / finite flags too: :attr:`nonfinite`)."""
        self._stats = fold(self._stats, piece)

    @property
    def stats(self):
        """The current statistics value (MinMaxStats or HistogramStats), None before any batch."""
        return self._stats

    def reset_stats(self) -> None:
        """Forget the statistics (the encoding, if any, is kept)."""
        self._stats = None

    @property
    def nonfinite(self) -> str | None:
        """Why the statistics cannot give a meaningful range, or None.

        ``"±Inf"``: a batch held +Inf or -Inf (clamped to ±0.99·FLT_MAX, numerics.md §2, so the
        range is astronomically wide or, under tf-enhanced, collapses); ``"only NaN"``: NaN was
        seen and no finite value (NaN is ignored, so the range rests on nothing). Mixed finite
        and NaN data is not flagged: AIMET ignores NaN and so does qsim.
        """
        st = self._stats
        if st is None:
            return None
        if st.inf_seen:
            return "±Inf"
        if st.nan_count > 0 and not st.finite_seen:
            return "only NaN"
        return None

    def _warn_nonfinite(self) -> None:
        """The one warning of a calibration (see the module docstring)."""
        why = self.nonfinite
        if why is not None:
            warnings.warn(f"{self.name}: calibration data held {why}; this quantizer's encoding "
                          f"is not meaningful", NonFiniteWarning, stacklevel=3)
        elif self._stats is not None and self._stats.nan_count > 0:
            warnings.warn(f"{self.name}: calibration data contains NaN; NaN values are ignored "
                          f"(as AIMET does)", RuntimeWarning, stacklevel=3)

    def compute_encodings(self) -> Encoding:
        """Compute, store and return the encoding from the statistics collected so far."""
        if self._stats is None:
            raise NotCalibratedError(f"{self.name}: compute_encodings() needs at least one "
                                     f"update_stats(batch) first")
        flags = self._flags()
        if self.scheme == "tf":
            enc = analyzers.tf(self._stats, **flags)
        elif self.scheme == "tf_enhanced":
            enc = analyzers.tf_enhanced(self._stats, **flags)
        elif self.scheme == "mse":
            enc = analyzers.mse(self._stats, **flags)
        elif self.scheme == "percentile":
            enc = analyzers.percentile(self._stats, percentile=self.percentile, **flags)
        else:
            enc = analyzers.entropy(self._stats, **flags)
        self.encoding = enc
        self._warn_nonfinite()
        return enc

    # ------------------------------------------------------------------ encoding
    @property
    def encoding(self) -> Encoding | None:
        """The current encoding (None before calibration); settable with an Encoding."""
        return self._encoding

    @encoding.setter
    def encoding(self, enc: Encoding | None) -> None:
        if enc is not None and not isinstance(enc, Encoding):
            raise EncodingError(f"{self.name}: encoding must be an Encoding, got {type(enc).__name__}")
        self._encoding = enc
        self._params = None if enc is None else params32(enc)

    def _require_encoding(self) -> Encoding:
        if self._encoding is None:
            raise NotCalibratedError(f"{self.name}: no encoding yet; call compute_encodings() "
                                     f"or set .encoding")
        return self._encoding

    # ------------------------------------------------------------------ kernels
    def quantize_dequantize(self, x, *, out=None) -> np.ndarray:
        """Quantize-dequantize float32 ``x`` with the current encoding (numerics.md §3)."""
        enc = self._require_encoding()
        return quantize_dequantize(x, enc, rounding=self.rounding, out=out, params=self._params)

    def quantize(self, x) -> np.ndarray:
        """Integer grid indices ``q ∈ [0, 2^bw - 1]`` (int64, AIMET convention: x̂ = delta·(q + offset))."""
        return quantize(x, self._require_encoding(), rounding=self.rounding)

    def dequantize(self, q) -> np.ndarray:
        """``delta·(q + offset)`` in float32 for grid indices ``q``."""
        return dequantize(q, self._require_encoding())

    def __repr__(self) -> str:
        state = "calibrated" if self._encoding is not None else "not calibrated"
        return (f"TensorQuantizer(name={self.name!r}, scheme={self.scheme!r}, "
                f"bitwidth={self.bitwidth}, symmetric={self.symmetric}, axis={self.axis}, {state})")
