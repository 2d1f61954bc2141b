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
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..jit import USE_NUMBA

#: spins of :func:`wait_done` (about 50 us) before the caller blocks instead
_SPINS = 20000


def _item_ptr(context, builder, aty, ary, i):
    arr = context.make_array(aty)(context, builder, ary)
    return cgutils.get_item_pointer(context, builder, aty, arr, [i], wraparound=False,
                                    boundscheck=False)


@intrinsic
def atomic_load(typingctx, a, i):
    """``a[i]`` (1-D int64) as a sequentially consistent atomic load (a loop re-reads it)."""
    def codegen(context, builder, sig, args):
        return builder.load_atomic(_item_ptr(context, builder, sig.args[0], args[0], args[1]),
                                   "seq_cst", 8)
    return types.int64(a, i), codegen


@intrinsic
def atomic_store(typingctx, a, i, v):
    """``a[i] = v`` (1-D int64) as a sequentially consistent atomic store (every store before
    it is visible to a thread that sees this one)."""
    def codegen(context, builder, sig, args):
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        builder.store_atomic(val, _item_ptr(context, builder, sig.args[0], args[0], args[1]),
                             "seq_cst", 8)
        return context.get_dummy_value()
    return types.void(a, i, v), codegen


@intrinsic
def fetch_add(typingctx, a, i, v):
    """``old = a[i]; a[i] += v; return old`` (1-D int64) as one atomic operation."""
    def codegen(context, builder, sig, args):
        val = context.cast(builder, args[2], sig.args[2], types.int64)
        return builder.atomic_rmw("add", _item_ptr(context, builder, sig.args[0], args[0],
                                                   args[1]), val, "seq_cst")
    return types.int64(a, i, v), codegen


@intrinsic
def compare_exchange(typingctx, a, i, expected, new):
    """``a[i] = new`` if it holds ``expected`` (1-D int64, atomically); True if it did."""
    def codegen(context, builder, sig, args):
        ptr = _item_ptr(context, builder, sig.args[0], args[0], args[1])
        pair = builder.cmpxchg(ptr, context.cast(builder, args[2], sig.args[2], types.int64),
                               context.cast(builder, args[3], sig.args[3], types.int64),
                               "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)
    return types.boolean(a, i, expected, new), codegen


@intrinsic
def address_of(typingctx, a):
    """The address of the data of array ``a`` as an int64 (for a job word)."""
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        return builder.ptrtoint(data, context.get_value_type(types.int64))
    return types.int64(a), codegen


@intrinsic
def float32_at(typingctx, addr):
    """The address ``addr`` (int64) as a float32 pointer, for ``numba.carray``."""
    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))
    return types.CPointer(types.float32)(types.int64), codegen


@intrinsic
def int64_at(typingctx, addr):
    """The address ``addr`` (int64) as an int64 pointer, for ``numba.carray``."""
    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))
    return types.CPointer(types.int64)(types.int64), codegen


@intrinsic
def bits_of(typingctx, value):
    """The IEEE bits of a float64 as an int64 (to pass a scalar through a mailbox)."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@intrinsic
def float_of(typingctx, bits):
    """The float64 whose IEEE bits are ``bits`` (inverse of :func:`bits_of`)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

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


#: ``sched_yield()`` of the C library (``SwitchToThread()`` on Windows): a spinning worker
#: that shares its core with another runnable thread gives it the core every microsecond
#: instead of after a time slice of milliseconds
sched_yield = types.ExternalFunction("SwitchToThread" if sys.platform == "win32"
                                     else "sched_yield", types.int32())

# the short names used by the kernels of this package
_fetch_add, _load, _store, _cas = fetch_add, atomic_load, atomic_store, compare_exchange
address, f32_at, i64_at = address_of, float32_at, int64_at


@numba.njit(nogil=True, cache=True)
def _claim_nb(state):
    return _fetch_add(state, 0, np.int64(1))


@numba.njit(nogil=True, cache=True)
def _finish_nb(state):
    _fetch_add(state, 1, np.int64(1))


def _claim_py(state):
    part = int(state[0])
    state[0] = part + 1
    return part


def _finish_py(state):
    state[1] += 1


#: ``claim(state)``: the index of the next unclaimed part (``>= count`` when none is left);
#: ``finish(state)``: count one part done. Without Numba (the NumPy-twin runs) plain Python,
#: and :func:`run` keeps every part on the calling thread.
claim, finish = (_claim_nb, _finish_nb) if USE_NUMBA else (_claim_py, _finish_py)


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
    helpers = min(threads, count) - 1 if USE_NUMBA else 0
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


# ---------------------------------------------------------------------------------------------
# a spinning worker: jobs handed over in compiled code, without waking a sleeping thread
# ---------------------------------------------------------------------------------------------
#: the mailbox of a :class:`SpinWorker` (int64): the last job posted, the last one taken (by
#: the worker) or taken back (by the poster), the last one the worker finished, its kind, and
#: from ``ARGS`` on its operands (addresses, sizes, scalars) as the kind defines them
SEQ, TAKEN, ACK, KIND, ARGS, BOX_SIZE = 0, 1, 2, 3, 8, 64

#: polls (about 1 ms) a worker spins without a job before it sleeps until the next post
IDLE_POLLS = 40000


@numba.njit(nogil=True, cache=True)
def put_array(box, o, a):
    """Write array ``a`` (C-contiguous) into a mailbox from word ``o``: its address, then its
    sizes; returns the next free word. The worker reads it back with the reader of its type
    and rank (:func:`f32_3d`, :func:`i64_1d`, ...), in the same order."""
    box[o] = address_of(a)
    for k in range(a.ndim):
        box[o + 1 + k] = a.shape[k]
    return o + 1 + a.ndim


@numba.njit(nogil=True, cache=True)
def put_words(box, o, w0, w1, w2, w3):
    """Write four integers (sizes, flags, float bits) from word ``o``; returns ``o + 4``."""
    box[o], box[o + 1], box[o + 2], box[o + 3] = w0, w1, w2, w3
    return o + 4


# the arrays :func:`put_array` wrote from word ``o``, and the next word (one reader per rank:
# a compiled array's rank is part of its type)
@numba.njit(nogil=True, cache=True)
def f32_1d(box, o):
    return numba.carray(float32_at(box[o]), (box[o + 1],)), o + 2


@numba.njit(nogil=True, cache=True)
def f32_2d(box, o):
    return numba.carray(float32_at(box[o]), (box[o + 1], box[o + 2])), o + 3


@numba.njit(nogil=True, cache=True)
def f32_3d(box, o):
    return numba.carray(float32_at(box[o]), (box[o + 1], box[o + 2], box[o + 3])), o + 4


@numba.njit(nogil=True, cache=True)
def f32_4d(box, o):
    return (numba.carray(float32_at(box[o]), (box[o + 1], box[o + 2], box[o + 3], box[o + 4])),
            o + 5)


@numba.njit(nogil=True, cache=True)
def i64_1d(box, o):
    return numba.carray(int64_at(box[o]), (box[o + 1],)), o + 2


@numba.njit(nogil=True, cache=True)
def i64_2d(box, o):
    return numba.carray(int64_at(box[o]), (box[o + 1], box[o + 2])), o + 3


@numba.njit(nogil=True, cache=True)
def publish(box, kind):
    """Post a job of ``kind`` whose operands the caller has written from ``box[ARGS]``;
    returns its number."""
    box[KIND] = kind
    seq = box[SEQ] + 1
    _store(box, SEQ, seq)
    return seq


@numba.njit(nogil=True, cache=True)
def take(box):
    """The worker's side: the number of a posted job it now owns, or 0 if there is none (or
    the poster took it back first)."""
    seq = _load(box, SEQ)
    if seq > _load(box, TAKEN) and _cas(box, TAKEN, seq - 1, seq):
        return seq
    return 0


@numba.njit(nogil=True, cache=True)
def done(box, seq):
    """The worker's side: job ``seq`` is finished (its operands are no longer read)."""
    _store(box, ACK, seq)


@numba.njit(nogil=True, cache=True)
def idle(polls):
    """One poll of a spinning worker without a job: returns ``polls + 1`` (a ``pause``, and
    every 1024 polls a ``sched_yield``: another thread waiting for this core gets it within
    microseconds, e.g. the histogram's worker, :mod:`qsim.quant.workers`)."""
    _pause()
    if polls & 1023 == 1023:
        sched_yield()
    return polls + 1


@numba.njit(nogil=True, cache=True)
def settle(box, seq, spins):
    """The poster's side, after its own parts: take job ``seq`` back if the worker has not
    taken it (then the worker never reads its operands), else wait until the worker has
    finished it; False if it is still running after ``spins`` polls."""
    if _cas(box, TAKEN, seq - 1, seq):
        return True
    for _ in range(spins):
        if _load(box, ACK) >= seq:
            return True
        _pause()
    return _load(box, ACK) >= seq


class SpinWorker:
    """One helper thread that serves jobs posted in its mailbox (:data:`SEQ` ...) from compiled
    code: ``serve(box, polls)`` (nogil) runs jobs as they come and returns after
    :data:`IDLE_POLLS` polls without one; the thread then sleeps until :meth:`post` wakes it.
    While it spins, a job starts within a microsecond; asleep, as a pool thread would."""

    def __init__(self, serve):
        self.spinning = False           # in compiled code, holding a core (read by others)
        self.pid = os.getpid()          # a forked child inherits the object, not the thread
        _ALL.append(self)
        self.box = np.zeros(BOX_SIZE, dtype=np.int64)
        self.lock = threading.Lock()        # one poster at a time (callers may be threads)
        self._wake = threading.Event()
        threading.Thread(target=self._loop, args=(serve,), daemon=True,
                         name="qsim-spin").start()

    def _loop(self, serve):
        while True:
            self.spinning = True
            serve(self.box, IDLE_POLLS)
            self.spinning = False
            self._wake.wait()
            self._wake.clear()

    def wake(self) -> None:
        """Make sure the worker looks at its mailbox (it may be asleep)."""
        self._wake.set()

    def finish(self, seq: int) -> None:
        """Wait (without spinning) until the worker has finished job ``seq``."""
        while not settle(self.box, seq, 0):
            self._wake.set()
            time.sleep(0.0002)


#: the spinning workers of this process (one per kind of job; made on first use)
_ALL: list = []


def spinning() -> int:
    """How many of this process's :class:`SpinWorker` threads spin right now (each holds a
    core: :func:`qsim.quant.stats.default_threads` does not count them as other tasks)."""
    pid = os.getpid()
    return sum(1 for w in _ALL if w.spinning and w.pid == pid)
