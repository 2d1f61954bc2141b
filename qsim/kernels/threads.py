"""Work shared by threads inside compiled code: parts claimed with an atomic counter.

A kernel split into parts runs on the calling thread and on workers of one shared pool. Each
thread calls a compiled ``*_parts`` kernel once; inside it, without the GIL, the thread claims
the next part with :func:`claim` (an atomic fetch-and-add on ``state[0]``), computes it, counts
it done with :func:`finish` (``state[1]``), and returns when no part is left. The caller then
waits for the parts other threads still hold (:func:`wait_done`). No thread needs the GIL
between parts, so a worker that wakes late only takes fewer parts; it never makes the others
wait on the GIL (each handover of the GIL to a sleeping thread costs tens of microseconds on a
VM). Which thread computes a part never changes its bits.

``state`` is an int64 array of 2: ``[next part to claim, parts done]``.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

#: spins of :func:`wait_done` (about 50 us) before the caller blocks instead
_SPINS = 20000


@intrinsic
def _fetch_add(typingctx, array, index, value):
    """``old = array[index]; array[index] += value`` atomically (sequentially consistent)."""
    sig = types.int64(array, index, value)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        ptr = builder.gep(data, [args[1]])
        return builder.atomic_rmw("add", ptr, args[2], "seq_cst")

    return sig, codegen


@intrinsic
def _load(typingctx, array, index):
    """``array[index]`` read atomically (acquire): a loop re-reads it every time."""
    sig = types.int64(array, index)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        ptr = builder.gep(data, [args[1]])
        return builder.load_atomic(ptr, "acquire", 8)

    return sig, codegen


@intrinsic
def _pause(typingctx):
    """The x86 ``pause`` hint of a spin loop."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(
            ir.VoidType(), []))
        builder.call(fn, [])
        return context.get_dummy_value()

    return sig, codegen


@numba.njit(nogil=True, cache=True)
def claim(state):
    """The index of the next unclaimed part (``>= count`` when none is left)."""
    return _fetch_add(state, 0, np.int64(1))


@numba.njit(nogil=True, cache=True)
def finish(state):
    """Count one part done."""
    _fetch_add(state, 1, np.int64(1))


@numba.njit(nogil=True, cache=True)
def wait_done(state, count, spins):
    """Spin until ``count`` parts are done or ``spins`` polls have passed; True if done."""
    for _ in range(spins):
        if _load(state, 1) >= count:
            return True
        _pause()
    return _load(state, 1) >= count


def spans(total: int, threads: int, per_thread: int = 4) -> np.ndarray:
    """``(start, stop)`` rows of the contiguous parts ``total`` items are cut into for
    ``threads`` threads: ``per_thread`` parts per thread (a thread that starts late finds most
    of them taken), near-equal sizes, the first ``total % parts`` one larger; one part for one
    thread."""
    parts = max(1, min(total, threads * per_thread if threads > 1 else 1))
    sizes = np.full(parts, total // parts, dtype=np.int64)
    sizes[:total % parts] += 1
    stops = np.cumsum(sizes)
    return np.stack([stops - sizes, stops], axis=1)


@lru_cache(maxsize=None)
def _pool(workers: int, pid: int) -> ThreadPoolExecutor:
    """The worker threads, made on first use per process (threads do not survive a fork)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qsim-parts")


def run(parts_kernel, args: tuple, count: int, threads: int) -> None:
    """``parts_kernel(*args, state)`` on the calling thread and on ``threads - 1`` workers,
    sharing ``count`` parts through ``state``; returns when every part is done (re-raising a
    worker's error). With one thread or one part, the caller computes them all. A worker that
    has not started when the parts run out finds none left and returns at once."""
    state = np.zeros(2, dtype=np.int64)
    helpers = min(threads, count) - 1
    if helpers <= 0:
        parts_kernel(*args, state)
        return
    woken = threading.Event()
    errors: list[BaseException] = []

    def helper():
        try:
            parts_kernel(*args, state)
        except BaseException as exc:        # re-raised by the caller
            errors.append(exc)
        finally:
            woken.set()

    pool = _pool(helpers, os.getpid())
    for _ in range(helpers):
        pool.submit(helper)
    parts_kernel(*args, state)
    if wait_done(state, count, _SPINS):
        return
    while int(state[1]) < count and not errors:   # a worker holds a part and may have lost
        woken.wait(0.001)                          # its core: wait without spinning
        woken.clear()
    if errors:
        raise errors[0]
