"""Threads during a training step: NumPy's BLAS single-threaded, and independent pieces of work
(two products of one Conv, halves of one product, channel ranges of a quantizer) on qsim's own
worker threads instead.

The backward's products are NumPy ``matmul`` calls (OpenBLAS in NumPy's wheels). OpenBLAS's
worker threads busy-wait for each other between the blocks of one product, so on a machine whose
cores are shared with other processes a multi-threaded product can take ten times longer than a
single-threaded one (a descheduled worker stalls the others; measured in
``benchmarks/bench_qat.py``). :func:`blas_threads` sets OpenBLAS's *thread-local* thread count
(``openblas_set_num_threads_local``, OpenBLAS >= 0.3.27) for the calling thread only and restores
it on exit, so no other thread and no later NumPy code sees a change. With another BLAS, or an
older OpenBLAS, it does nothing. OpenBLAS's blocking depends on its thread count, so the count
can change the last bits of a product; one thread also makes a training step's float32 results
independent of the machine's number of cores (not of its CPU type: OpenBLAS picks its kernels by
CPU; the golden QAT replay's tolerances, qat.md §9, cover either).

:func:`run_all` runs a few independent jobs at once, all but the first on a small pool of worker
threads (BLAS single-threaded there too) that simply block when done; NumPy's products and qsim's
Numba kernels release the GIL, so the jobs really run in parallel. Jobs must write disjoint
outputs; their results never depend on how they were scheduled.
"""
from __future__ import annotations

import ctypes
import functools
import glob
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Sequence

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


#: worker threads besides the caller's (one per further core)
WORKERS: int = max(0, (os.cpu_count() or 1) - 1)
_PREFIX = "qsim-grad-worker"


@functools.lru_cache(maxsize=None)
def _pool(pid: int) -> ThreadPoolExecutor:
    """The worker threads of process ``pid`` (a forked child has none of its parent's threads,
    so it must not reuse its parent's pool)."""
    return ThreadPoolExecutor(max_workers=max(1, WORKERS), thread_name_prefix=_PREFIX)


def _single_threaded(job):
    with blas_threads(1):
        return job()


def run_all(jobs: Sequence[Callable]) -> list:
    """``[job() for job in jobs]``, the first on the calling thread and the others at the same
    time on worker threads (sequentially when the machine has one core, and when called from a
    worker thread itself, which would otherwise wait for its own pool)."""
    if len(jobs) < 2 or WORKERS == 0 or threading.current_thread().name.startswith(_PREFIX):
        return [job() for job in jobs]
    futures = [_pool(os.getpid()).submit(_single_threaded, job) for job in jobs[1:]]
    try:
        first = jobs[0]()
    finally:
        rest = [f.result() for f in futures]
    return [first, *rest]


def halves(n: int, work: float, minimum: float = 2e6) -> list[slice]:
    """``range(n)`` cut into two nearly equal slices when ``work`` (e.g. multiply-adds) is at
    least ``minimum``, else one slice (threads would cost more than they save). Always two, on
    any number of cores: where a product is split can change its last bits, so the split must
    not depend on the machine."""
    parts = 2 if work >= minimum and n >= 2 else 1
    edges = [n * k // parts for k in range(parts + 1)]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]
