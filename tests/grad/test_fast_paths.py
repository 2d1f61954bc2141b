"""The training step's fast paths: the BLAS Conv forward against an independent float64
convolution, the reverse sweep that frees memory against the one that keeps everything, and
the thread-local BLAS setting."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qsim.errors import OpError
from qsim.grad.backward import backward, forward
from qsim.grad.blas import _thread_local_setter, blas_threads
from qsim.grad.ops import conv_forward
from qsim.onnx_io import load_onnx
from tests.grad.test_backward_graph import _loss_and_seed
from tests.grad.test_vjp_fd import _conv64

DATA = Path(__file__).resolve().parents[1] / "data" / "qat" / "cnn"


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       pads=st.sampled_from([(0, 0, 0, 0), (1, 1, 1, 1), (1, 0, 2, 1)]),
       strides=st.sampled_from([(1, 1), (2, 1), (2, 2)]), dil=st.sampled_from([(1, 1), (2, 1)]),
       group=st.sampled_from([1, 2, 4]), bias=st.booleans())
def test_conv_forward_matches_float64(seed, pads, strides, dil, group, bias):
    """Y = W·im2col(X) + B by BLAS within float32 rounding of a direct float64 sum."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    w = rng.standard_normal((8, 4 // group, 3, 2)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32) if bias else None
    got = conv_forward(x, w, b, pads=pads, strides=strides, dilations=dil, group=group)
    want = _conv64(x.astype(np.float64), w.astype(np.float64),
                   np.zeros(8) if b is None else b.astype(np.float64), pads, strides, dil, group)
    assert got.dtype == np.float32 and got.shape == want.shape and got.flags.c_contiguous
    assert np.max(np.abs(got - want)) <= 1e-5 * (1 + np.max(np.abs(want)))


def test_conv_forward_same_padding_and_bad_operands():
    """SAME_UPPER (not on the fast path) still convolves; mismatched channels: the op's error."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    got = conv_forward(x, w, auto_pad="SAME_UPPER", strides=(2, 2))
    want = _conv64(x.astype(np.float64), w.astype(np.float64), np.zeros(3), (1, 1, 1, 1),
                   (2, 2), (1, 1), 1)
    assert np.max(np.abs(got - want)) <= 1e-5 * (1 + np.max(np.abs(want)))
    with pytest.raises(OpError, match="channels"):
        conv_forward(x, rng.standard_normal((3, 4, 3, 3)).astype(np.float32))


def test_freeing_sweep_gives_the_same_gradients():
    """backward(wrt=..., consume=True) returns exactly the full sweep's gradients for those
    names, and leaves nothing on the tape."""
    graph = load_onnx(str(DATA / "model.onnx"))
    data = np.load(DATA / "data.npz")
    x, y = data["train_x"][0], data["train_y"][0]
    out = graph.output_names[0]
    full_tape = forward(graph, {"input": x})
    _, seed = _loss_and_seed(full_tape.outputs[out], y)
    full = backward(graph, full_tape, {out: seed})
    tape = forward(graph, {"input": x})
    names = sorted(graph.params) + ["input"]
    lean = backward(graph, tape, {out: seed}, wrt=names, consume=True)
    assert sorted(lean) == sorted(n for n in names if n in full)
    for n in lean:
        assert np.array_equal(lean[n], full[n]), n
    assert len(tape.saved) == 0
    assert len(full) > len(lean)          # the full sweep also kept the intermediate gradients


def test_blas_threads_is_scoped():
    """Inside: a product within float32 rounding of float64's; after: the previous setting."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 700)).astype(np.float32)
    b = rng.standard_normal((700, 200)).astype(np.float32)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    with blas_threads(1):
        inside = a @ b
    assert np.max(np.abs(inside - ref)) <= 1e-5 * np.max(np.abs(ref))
    setter = _thread_local_setter()
    if setter is not None:                  # OpenBLAS >= 0.3.27 (NumPy's wheels): restored on exit
        before = setter(7)
        setter(before)
        with blas_threads(1):
            assert setter(1) == 1
        assert setter(before) == before


def test_run_all_after_fork():
    """A forked child (which has none of its parent's worker threads) still runs its jobs."""
    import multiprocessing

    from qsim.grad.blas import run_all
    assert run_all([lambda: 1, lambda: 2]) == [1, 2]      # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply_async(_jobs_in_child).get(timeout=60) == [3, 4]


def _jobs_in_child():
    from qsim.grad.blas import run_all
    return run_all([lambda: 3, lambda: 4])


def test_run_all_nested_in_a_job():
    """A job that itself calls run_all (on the worker thread) finishes instead of waiting for
    its own pool."""
    from qsim.grad.blas import run_all
    inner = lambda: run_all([lambda: 1, lambda: 2])          # noqa: E731
    assert run_all([inner, inner]) == [[1, 2], [1, 2]]
