"""Reverse sweep over a whole graph: the golden QAT CNN's FP32 gradients vs finite differences,
and the error for ops without a backward."""
from pathlib import Path

import numpy as np
import pytest

from qsim.errors import GraphError
from qsim.grad.backward import backward, check_backward_supported, forward
from qsim.ir import Graph, Node, ValueInfo
from qsim.onnx_io import load_onnx

DATA = Path(__file__).resolve().parents[1] / "data" / "qat" / "cnn"


def _loss_and_seed(logits, labels):
    """Mean cross-entropy and its gradient w.r.t. the logits (float64)."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = len(labels)
    loss = -np.mean(np.log(p[np.arange(n), labels]))
    g = p.copy()
    g[np.arange(n), labels] -= 1
    return loss, (g / n).astype(np.float32)


def _conv3x3_64(x, w, b):
    """float64 3x3 convolution, pad 1, stride 1 (direct sum over the 9 taps)."""
    n, _, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, w.shape[0], h, wd))
    for i in range(3):
        for j in range(3):
            out += np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], w[:, :, i, j])
    return out + b[None, :, None, None]


def _cnn64(x, p):
    """The golden CNN (Conv-Relu-Conv-Relu-GlobalAvgPool-Flatten-Gemm) in float64."""
    a = np.maximum(_conv3x3_64(x, p["conv1.weight"], p["conv1.bias"]), 0)
    a = np.maximum(_conv3x3_64(a, p["conv2.weight"], p["conv2.bias"]), 0).mean(axis=(2, 3))
    return a @ p["fc.weight"].T + p["fc.bias"]


def test_cnn_parameter_gradients_match_finite_differences():
    """Every parameter's gradient at 5 random elements vs float64 central differences (h=1e-5,
    small enough not to cross a ReLU kink) of an independent float64 forward."""
    graph = load_onnx(str(DATA / "model.onnx"))
    data = np.load(DATA / "data.npz")
    x, y = data["train_x"][0], data["train_y"][0]
    tape = forward(graph, {"input": x})
    out = graph.output_names[0]
    p64 = {k: np.asarray(v, np.float64) for k, v in graph.params.items()}
    assert np.max(np.abs(_cnn64(x.astype(np.float64), p64) - tape.outputs[out])) < 1e-5
    _, seed = _loss_and_seed(tape.outputs[out], y)
    grads = backward(graph, tape, {out: seed})
    rng = np.random.default_rng(0)
    h = 1e-5
    for name, w in p64.items():
        assert grads[name].shape == w.shape and grads[name].dtype == np.float32
        for flat in rng.choice(w.size, min(5, w.size), replace=False):
            vals = []
            for sgn in (1, -1):
                q = dict(p64)
                q[name] = w.copy()
                q[name].reshape(-1)[flat] += sgn * h
                vals.append(_loss_and_seed(_cnn64(x.astype(np.float64), q), y)[0])
            fd = (vals[0] - vals[1]) / (2 * h)
            got = float(grads[name].reshape(-1)[flat])
            # float32 vs float64 forward: a ReLU input within rounding of 0 may flip its mask
            # and move a few per-element terms; bound by the tensor's largest gradient
            tol = 1e-4 * abs(fd) + 3e-3 * float(np.max(np.abs(grads[name])))
            assert abs(got - fd) <= tol, (name, flat, got, fd)


def test_missing_backward_names_every_node():
    nodes = (Node("n_top", "TopK", ("x", "k"), ("v", "i")),
             Node("n_relu", "Relu", ("v",), ("r",)),
             Node("n_mod", "Mod", ("r", "r"), ("y",)))
    g = Graph(name="g", nodes=nodes, inputs=(ValueInfo("x", np.float32, (4,)),),
              outputs=(ValueInfo("y", np.float32, None),),
              params={"k": np.array([2], np.int64)})
    with pytest.raises(GraphError, match="2 node.*n_top.*n_mod"):
        check_backward_supported(g)
