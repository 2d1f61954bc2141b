"""Worker threads that wait for work by spinning in compiled code, for the threaded histogram.

Why: a Python thread pool hands a job over through a condition variable and the GIL; on the
2-core VM of benchmarks/README.md the worker started 20–30 µs after the job was posted, a tenth
of a 1M-element histogram update. A :class:`Worker` here serves a job inside a compiled nogil
loop (``serve(ctl, spin)``, written by the user of the worker) and, after each job, keeps
watching the job number ``ctl[SEQ]`` with atomic loads for ``spin`` rounds of
:func:`wait_for_job` (about :data:`SPIN_SECONDS`, a ``sched_yield`` per round so a thread
sharing the core is not starved): a job posted meanwhile starts within a microsecond, without
the GIL. After that it sleeps on a condition variable (then waking it costs what a pool costs).

The protocol on the int64 control array ``ctl`` (one per worker):

* ``ctl[SEQ]``  number of the last job posted (the poster's atomic store);
* ``ctl[ACK]``  number of the last job the worker finished (the worker's atomic store);
* ``ctl[AWAKE]`` 1 while the worker spins or works, 0 once it decided to sleep;
* ``ctl[JOB:]`` the job: integers (sizes, addresses of arrays) written before ``SEQ``
  (by the poster's ``publish`` kernel, see :meth:`Worker.post`).

A job is posted only to a worker with ``ACK == SEQ`` (idle), and the poster keeps the job's
arrays alive (:meth:`Worker.post`'s ``keep``) until the worker acknowledged it, so a worker that
lost its core and finishes late writes into live memory that nobody reads any more. Sleeping
is race-free: the worker stores ``AWAKE = 0`` then loads ``SEQ``; the poster stores ``SEQ`` then
loads ``AWAKE`` (all sequentially consistent), so at least one of them sees the other and the
poster notifies the condition variable the worker waits on (its predicate checked under the
lock).

The atomics are LLVM instructions emitted through Numba intrinsics (:mod:`qsim.kernels.threads`,
shared with the float kernels' spinning worker); callable only from compiled code (with ``NUMBA_DISABLE_JIT=1`` nothing here is used: the histogram runs its NumPy twin).
"""
from __future__ import annotations

import threading
import time

import numpy as np

from ..jit import kernel
from ..kernels.threads import (address_of, atomic_load, atomic_store, fetch_add,  # noqa: F401
                               float32_at, int64_at, sched_yield)

SEQ, ACK, AWAKE, JOB = 0, 1, 2, 3
#: words of a control array: the three counters and up to 13 job words
CTL_WORDS = 16
#: how long a worker keeps spinning for the next job after one (a bound on the CPU time it
#: spends waiting: on this VM one 1M-element histogram update takes 0.2–0.4 ms, so updates of
#: a burst with up to ~2 updates' time between them find it awake)
SPIN_SECONDS = 1e-3


@kernel
def _nb_publish(ctl, seq):
    """``ctl[SEQ] = seq`` (atomic), then the worker's ``ctl[AWAKE]`` (atomic load)."""
    atomic_store(ctl, SEQ, seq)
    return atomic_load(ctl, AWAKE)


@kernel
def _nb_set(ctl, i, v):
    """``ctl[i] = v`` as an atomic store (from Python)."""
    atomic_store(ctl, i, v)


@kernel
def _nb_get(ctl, i):
    """``ctl[i]`` as an atomic load (from Python)."""
    return atomic_load(ctl, i)


#: atomic loads of ``SEQ`` per ``sched_yield`` in the wait loop (about 0.3 µs of loads, then
#: the 0.5 µs system call on the 2-core VM)
_LOADS_PER_YIELD = 1024


@kernel
def wait_for_job(ctl, ack, rounds):
    """Wait until ``ctl[SEQ] != ack`` (atomic loads, a ``sched_yield`` every
    ``_LOADS_PER_YIELD``), at most ``rounds`` rounds; returns ``ctl[SEQ]`` (``ack`` if no job
    came)."""
    for _ in range(rounds):
        for _ in range(_LOADS_PER_YIELD):
            seq = atomic_load(ctl, SEQ)
            if seq != ack:
                return seq
        sched_yield()
    return ack


def spin_rounds(seconds: float = SPIN_SECONDS) -> int:
    """Rounds of :func:`wait_for_job` that take about ``seconds`` on this machine (timed over
    64 rounds, best of 3)."""
    ctl = np.zeros(CTL_WORDS, np.int64)
    wait_for_job(ctl, 0, 1)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        wait_for_job(ctl, 0, 64)
        best = min(best, time.perf_counter() - t)
    return max(1, int(seconds / max(best, 1e-9) * 64))


class Worker:
    """A daemon thread running ``serve(ctl, spin)`` (a nogil kernel that serves jobs until it
    waited ``spin`` rounds of :func:`wait_for_job` without one, then stores ``AWAKE = 0``, checks ``SEQ`` once more
    and returns), sleeping between calls until a job is posted."""

    def __init__(self, serve, spin: int, *, name: str = "qsim-worker", start: bool = True):
        self.ctl = np.zeros(CTL_WORDS, np.int64)
        self.seq = 0            # the last job posted; only posters read and write it
        self.keep = None        # the arrays of the last job posted, alive until acknowledged
        self.last_call = float("-inf")  # perf_counter() of the poster's last use (its policy)
        self._post_lock = threading.Lock()
        self._wake = threading.Condition()
        self._serve, self._spin = serve, spin
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        if start:
            self.thread.start()

    def _run(self) -> None:
        ctl = self.ctl
        while True:
            _nb_set(ctl, AWAKE, 1)
            self._serve(ctl, self._spin)
            with self._wake:
                while _nb_get(ctl, SEQ) == _nb_get(ctl, ACK):
                    self._wake.wait()

    def awake(self) -> bool:
        """The worker is spinning or working (it occupies a core)."""
        return bool(self.thread.is_alive() and _nb_get(self.ctl, AWAKE))

    def done(self) -> bool:
        """The worker acknowledged the last job posted to it."""
        return _nb_get(self.ctl, ACK) == self.seq

    def release(self) -> None:
        """Drop the last job's arrays if the worker acknowledged it (else the next post does)."""
        if self._post_lock.acquire(blocking=False):
            try:
                if self.done():
                    self.keep = None
            finally:
                self._post_lock.release()

    def post(self, publish, args: tuple, *, keep) -> bool:
        """Give the worker a job if it is idle: ``publish(ctl, seq, *args)`` (compiled) writes
        the job words after ``ctl[JOB]`` and stores ``SEQ = seq + 1`` if ``ACK == seq``, and
        returns 0 (the worker is still busy with an earlier job: not posted), 1 (posted, the
        worker spins) or 2 (posted, the worker sleeps: it is notified here). ``keep``: the
        objects the job's addresses point into, kept alive until the worker acknowledged the job
        (:meth:`release`, or the next post). False if not
        posted (or another thread is posting to this worker)."""
        if not self._post_lock.acquire(blocking=False):
            return False
        try:
            state = publish(self.ctl, self.seq, *args)
            if state == 0:
                return False
            self.keep = keep
            self.seq += 1
            if state == 2:
                with self._wake:
                    self._wake.notify()
            return True
        finally:
            self._post_lock.release()
