"""The one Numba decorator of qsim.

Every compiled kernel uses :func:`kernel`, which fixes the options once:

* ``cache=True``   compiled code is cached on disk next to the module (fast second start);
* ``nogil=True``   kernels release the GIL, so callers may run them from threads;
* ``fastmath=False`` IEEE semantics: no reassociation, NaN and signed zeros respected. The
  kernels are bit-exact with AIMET only because of this.
* ``error_model="numpy"`` division by zero gives inf/NaN as in C and NumPy (Numba's default
  raises ZeroDivisionError and checks every division).

No kernel uses Numba's ``parallel=True``: its OpenMP-style workers wait for each other at the end
of every region, which stalls on shared cores, and Numba aborts a forked child that uses GNU
OpenMP after its parent did (a cluster worker); kernels that split work claim their parts from
compiled code on plain threads (:mod:`qsim.kernels.threads`: a late worker only takes fewer
parts, and the poster takes back a job no worker has started). The threaded histogram has its
own spinning worker (qsim/quant/workers.py: 1 ms after a job, yielding the core every
microsecond, used only when /proc/loadavg shows a free core).

``USE_NUMBA`` is False when ``NUMBA_DISABLE_JIT=1`` is set; the public wrappers then call the
vectorised NumPy twin of each kernel instead of the (slow) pure-Python loop. Both give the same
bits, which the tests check, so the switch never changes a result.

Numba would route ``math.exp``/``math.pow``/... in vectorised loops to Intel's SVML when the
``icc_rt`` package is installed; SVML's results are within 1-4 ulp of libm's, not equal, and ONNX
Runtime calls libm. This module therefore sets ``NUMBA_DISABLE_INTEL_SVML=1`` before Numba is
imported (unless the user set it), and warns if Numba was imported earlier with SVML active.
"""
from __future__ import annotations

import os
import warnings

os.environ.setdefault("NUMBA_DISABLE_INTEL_SVML", "1")

import numba  # noqa: E402  (after the SVML switch above)

USE_NUMBA: bool = not numba.config.DISABLE_JIT

if numba.config.USING_SVML:
    warnings.warn("Numba uses Intel SVML for math functions (numba was imported before qsim, or "
                  "NUMBA_DISABLE_INTEL_SVML=0): qsim's kernels may then differ from ONNX Runtime "
                  "by an ulp; set NUMBA_DISABLE_INTEL_SVML=1 before importing numba",
                  RuntimeWarning, stacklevel=2)


def kernel(fn):
    """Compile ``fn`` with Numba (``cache=True, nogil=True, fastmath=False``, NumPy errors)."""
    return numba.njit(cache=True, nogil=True, fastmath=False, error_model="numpy")(fn)

