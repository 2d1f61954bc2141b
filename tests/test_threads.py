"""Parts shared between threads (qsim.kernels.threads): every part runs exactly once, whichever
thread takes it, and the results are the single-thread bits: with the spinning worker awake or
asleep, and with several Python threads posting at once (only one of them may use the worker;
the others fall back to the pool)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from qsim.jit import USE_NUMBA
from qsim.kernels import gemm, mlas_math, threads
from qsim.ops import nn

pytestmark = pytest.mark.skipif(not USE_NUMBA, reason="compiled code only (the twins are "
                                "single-threaded; test_exact_gemm checks their bits)")


def _conv_case(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 48, 23, 29)).astype(np.float32)
    w = rng.standard_normal((40, 48, 3, 3)).astype(np.float32)
    dw = rng.standard_normal((48, 1, 3, 3)).astype(np.float32)
    return x, w, dw


def _convs(x, w, dw, threads_count):
    kw = dict(strides=(1, 1), dilations=(1, 1), begins=(1, 1), ends=(1, 1))
    return (gemm.conv(x, w, threads=threads_count, **kw),
            gemm.conv(x, dw, group=48, threads=threads_count, **kw))


@pytest.fixture
def parallel_always(monkeypatch):
    for name in ("_MIN_PARALLEL_WORK", "_MIN_PARALLEL_BATCH_WORK", "_MIN_PARALLEL_TAPS"):
        monkeypatch.setattr(gemm, name, 1)
    monkeypatch.setattr(mlas_math, "_MIN_PARALLEL_WINDOW_VALUES", 1)


def _pools(x):
    return (nn.max_pool(x, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
            nn.max_pool(x, kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
            nn.average_pool(x, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1]),
            nn.average_pool(x, kernel_shape=[2, 3], strides=[1, 2], ceil_mode=1))


def test_shared_pools_give_single_thread_bits(parallel_always, monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 37, 19, 23)).astype(np.float32)
    x.reshape(-1)[rng.integers(0, x.size, 40)] = np.nan
    x.reshape(-1)[rng.integers(0, x.size, 40)] = -0.0
    monkeypatch.setattr(mlas_math, "DEFAULT_THREADS", 1)
    want = _pools(x)
    monkeypatch.setattr(mlas_math, "DEFAULT_THREADS", 2)
    for _ in range(10):
        for g, e in zip(_pools(x), want):
            np.testing.assert_array_equal(g.view(np.uint32), e.view(np.uint32))


def test_spinning_worker_gives_single_thread_bits(parallel_always):
    x, w, dw = _conv_case(1)
    want = _convs(x, w, dw, 1)
    for pause in (0.0, 0.01):            # worker spinning, then asleep (past its idle polls)
        for _ in range(20):
            got = _convs(x, w, dw, 2)
            for g, e in zip(got, want):
                np.testing.assert_array_equal(g.view(np.uint32), e.view(np.uint32))
            time.sleep(pause)


def test_several_python_threads_share_one_worker(parallel_always):
    cases = [_conv_case(seed) for seed in range(4)]
    wants = [_convs(*case, 1) for case in cases]
    errors = []

    def run(k):
        try:
            for _ in range(15):
                for g, e in zip(_convs(*cases[k], 2), wants[k]):
                    np.testing.assert_array_equal(g.view(np.uint32), e.view(np.uint32))
        except AssertionError as exc:      # reported by the main thread
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors, errors[0]


def test_claims_hand_out_each_part_once():
    state = np.zeros(2, np.int64)
    claimed = []

    def take_all():
        while True:
            p = threads.claim(state)
            if p >= 1000:
                return
            claimed.append(p)
            threads.finish(state)

    pool = [threading.Thread(target=take_all) for _ in range(3)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert sorted(claimed) == list(range(1000))
    assert threads.wait_done(state, 1000, 0)


def test_a_job_taken_back_is_never_read_by_the_worker():
    """The poster's settle takes an untaken job back: the worker then finds nothing."""
    box = np.zeros(threads.BOX_SIZE, np.int64)
    seq = threads.publish(box, 99)
    assert threads.settle(box, seq, 0)            # taken back
    assert threads.take(box) == 0                 # the worker finds no job
    seq = threads.publish(box, 99)
    assert threads.take(box) == seq               # the worker takes this one
    assert not threads.settle(box, seq, 10)       # not done yet: the poster waits
    threads.done(box, seq)
    assert threads.settle(box, seq, 0)


def test_epilogue_in_the_parts_equals_the_separate_pass(parallel_always):
    """A grouped 1x1 Conv's bias, Relu and per-channel steps, applied by the thread that
    computed each product, give the NumPy route's bits (product, then one pass per step)."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 24, 9, 11)).astype(np.float32)
    w = rng.standard_normal((32, 6, 1, 1)).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    codes = np.array([gemm.STEP_MUL, gemm.STEP_ADD, gemm.STEP_RELU], np.int64)
    values = rng.standard_normal((3, 32)).astype(np.float32)
    kw = dict(group=4, strides=(1, 1), dilations=(1, 1), begins=(0, 0), ends=(0, 0))
    for bias, relu, steps in ((b, False, None), (None, True, None), (b, True, (codes, values))):
        want = gemm.conv(x, w, bias, relu=relu, steps=steps, use_numba=False, **kw)
        got = gemm.conv(x, w, bias, relu=relu, steps=steps, **kw)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
        assert (got == 0).any() or not (relu or steps)
