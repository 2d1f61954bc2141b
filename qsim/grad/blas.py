"""How many threads NumPy's BLAS uses during a training step.

The backward's products are NumPy ``matmul`` calls (OpenBLAS in NumPy's wheels). OpenBLAS's
worker threads busy-wait for each other between the blocks of one product, so on a machine whose
cores are shared with other processes a multi-threaded product can take ten times longer than a
single-threaded one (a descheduled worker stalls the others; measured in
``benchmarks/bench_qat.py``). :func:`blas_threads` sets OpenBLAS's *thread-local* thread count
(``openblas_set_num_threads_local``, OpenBLAS >= 0.3.27) for the calling thread only and restores
it on exit, so no other thread and no later NumPy code sees a change. With another BLAS, or an
older OpenBLAS, it does nothing. OpenBLAS's blocking depends on its thread count, so the count
can change the last bits of a product; one thread also makes a training step's float32 results
independent of the machine's number of cores.
"""
from __future__ import annotations

import ctypes
import functools
import glob
import os
from contextlib import contextmanager

import numpy as np


@functools.lru_cache(maxsize=1)
def _thread_local_setter():
    """``openblas_set_num_threads_local`` of the OpenBLAS that NumPy loaded, or None."""
    base = os.path.dirname(np.__file__)
    pattern = "lib*openblas*.so*"
    for folder in (os.path.join(base, "..", "numpy.libs"), os.path.join(base, ".libs")):
        for path in sorted(glob.glob(os.path.join(folder, pattern))):
            try:
                fn = ctypes.CDLL(path).openblas_set_num_threads_local
            except (OSError, AttributeError):
                continue
            fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int]
            return fn
    return None


@contextmanager
def blas_threads(count: int):
    """Within the block, NumPy's OpenBLAS uses ``count`` threads for products issued by this
    thread (a no-op where the thread-local setting is unavailable)."""
    setter = _thread_local_setter()
    if setter is None:
        yield
        return
    previous = setter(int(count))
    try:
        yield
    finally:
        setter(previous)
