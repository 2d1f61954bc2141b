"""Replay aimet-torch 2.42's five QAT steps of the golden CNN from its stored initial ranges and
weights and meet qat.md §9's tolerances at every step: loss rtol 1e-5; logits within
1e-5·max|logits| plus at most one output step in isolated elements; weights per tensor within
1e-4·max|w|; θmin/θmax within 1e-3·s; s rtol 1e-5; o equal."""
import json
from pathlib import Path

import numpy as np
import pytest

from qsim.onnx_io import load_onnx
from qsim.quant import training as tr
from qsim.train import SGD, Slot, cross_entropy, range_names, training_graph, value_and_grad

DATA = Path(__file__).resolve().parents[1] / "data" / "qat" / "cnn"
QUANTIZERS = json.loads((DATA / "quantizers.json").read_text())
RUNS = ["post_training_tf", "training_range_learning_with_tf_init", "post_training_tf_frozen_ranges"]
WEIGHTS = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc.weight", "fc.bias"]


def _golden_names(q):
    """(ours, aimet's) parameter names of a quantizer's θmin, θmax."""
    mn, mx = range_names(q["tensor"])
    return [(mn, f"{q['name']}.min"), (mx, f"{q['name']}.max")]


@pytest.mark.parametrize("run", RUNS)
def test_replay(run):
    traj = np.load(DATA / run / "trajectory.npz")
    data = np.load(DATA / "data.npz")
    frozen = run.endswith("frozen_ranges")
    graph = load_onnx(str(DATA / "model.onnx"))
    slots = tuple(Slot(q["tensor"], tr.Grid(q["qmin"], q["qmax"], q["symmetric"]))
                  for q in QUANTIZERS)
    params = {w: traj[f"state/{w}"][0] for w in WEIGHTS}
    for q in QUANTIZERS:
        for ours, theirs in _golden_names(q):
            params[ours] = traj[f"state/{theirs}"][0]
    tgraph = training_graph(graph, slots, params, frozen=frozen)
    trainable = list(WEIGHTS) if frozen else list(params)
    opt = SGD(lr=0.01)
    for k in range(1, 6):
        loss, outs, grads = value_and_grad(tgraph, params, {"input": data["train_x"][k - 1]},
                                           cross_entropy(data["train_y"][k - 1]),
                                           trainable=trainable)
        assert loss == pytest.approx(float(traj["loss"][k - 1]), rel=1e-5), k
        ref = traj["logits"][k - 1]
        out_s = float(traj["state/fc.output_quantizers.0.scale"][k - 1])
        dev = np.abs(outs["output"] - ref)
        assert np.count_nonzero(dev > 1e-5 * np.abs(ref).max()) <= 1, k
        assert dev.max() <= 1e-5 * np.abs(ref).max() + out_s * 1.0001, k
        params = {**params, **opt.update(params, grads)}
        for w in WEIGHTS:
            want = traj[f"state/{w}"][k]
            assert np.max(np.abs(params[w] - want)) <= 1e-4 * np.abs(want).max(), (k, w)
        for q in QUANTIZERS:
            grid = tr.Grid(q["qmin"], q["qmax"], q["symmetric"])
            (mn, gmn), (mx, gmx) = _golden_names(q)
            s_ref = traj[f"state/{q['name']}.scale"][k]
            for ours, theirs in ((mn, gmn), (mx, gmx)):
                assert np.all(np.abs(params[ours] - traj[f"state/{theirs}"][k]) <= 1e-3 * s_ref), \
                    (k, theirs)
            enc = tr.training_encoding(params[mn], params[mx], grid)
            np.testing.assert_allclose(enc.scale, s_ref, rtol=1e-5, err_msg=f"{k} {q['name']}")
            assert np.array_equal(enc.offset, traj[f"state/{q['name']}.offset"][k]), (k, q["name"])
