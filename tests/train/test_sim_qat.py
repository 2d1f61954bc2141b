"""QAT through QuantizationSimModel's API: the golden CNN's three aimet-torch runs replayed from
their stored state 0 (qat.md §9 tolerances at every step) and the exported encodings after step 5
vs AIMET's file; the parameter API's errors."""
import json
from pathlib import Path

import numpy as np
import pytest

from qsim.errors import QsimError
from qsim.sim import QuantizationSimModel
from qsim.train import SGD, cross_entropy

DATA = Path(__file__).resolve().parents[1] / "data" / "qat" / "cnn"
QUANTIZERS = json.loads((DATA / "quantizers.json").read_text())
WEIGHTS = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc.weight", "fc.bias"]
RUNS = {"post_training_tf": ("post_training_tf", False),
        "training_range_learning_with_tf_init": ("training_range_learning_with_tf_init", False),
        "post_training_tf_frozen_ranges": ("post_training_tf", True)}


def _names(q):
    return [(f"{q['tensor']}.min", f"{q['name']}.min"), (f"{q['tensor']}.max", f"{q['name']}.max")]


def _sim(scheme):
    sim = QuantizationSimModel(str(DATA / "model.onnx"), quant_scheme=scheme,
                               config_file=str(DATA / "config.json"))
    data = np.load(DATA / "data.npz")
    sim.compute_encodings([{"input": b} for b in data["calib"]])
    return sim, data


@pytest.mark.parametrize("run", sorted(RUNS))
def test_replay_through_the_sim_and_export(run, tmp_path):
    scheme, frozen = RUNS[run]
    traj = np.load(DATA / run / "trajectory.npz")
    sim, data = _sim(scheme)
    sim.freeze_ranges() if frozen else sim.unfreeze_ranges()   # aimet: all ranges learned
    start = {w: traj[f"state/{w}"][0] for w in WEIGHTS}
    for q in QUANTIZERS:
        start.update({ours: traj[f"state/{theirs}"][0] for ours, theirs in _names(q)})
    sim.set_parameters(start)
    opt = SGD(lr=0.01)
    for k in range(1, 6):
        loss, grads = sim.value_and_grad({"input": data["train_x"][k - 1]},
                                         cross_entropy(data["train_y"][k - 1]))
        assert set(grads) == (set(WEIGHTS) if frozen else set(sim.parameters()))
        assert loss == pytest.approx(float(traj["loss"][k - 1]), rel=1e-5)
        opt.step(sim, grads)
        p = sim.parameters()
        for w in WEIGHTS:
            want = traj[f"state/{w}"][k]
            assert np.max(np.abs(p[w] - want)) <= 1e-4 * np.abs(want).max(), (k, w)
        for q in QUANTIZERS:
            s_ref = traj[f"state/{q['name']}.scale"][k]
            for ours, theirs in _names(q):
                assert np.all(np.abs(p[ours] - traj[f"state/{theirs}"][k]) <= 1e-3 * s_ref)
    # evaluation after step 5 uses the learned encodings (sim.run: qsim's inference kernel)
    ev = sim.run({"input": data["eval_x"]})["output"]
    ref = traj["eval_logits"][5]
    s_out = float(traj["state/fc.output_quantizers.0.scale"][5])
    assert np.max(np.abs(ev - ref)) <= 1e-5 * np.abs(ref).max() + 1.0001 * s_out
    assert np.count_nonzero(np.abs(ev - ref) > 1e-5 * np.abs(ref).max()) <= 2
    _, enc_path = sim.export(tmp_path, "sim")
    ours = json.loads(Path(enc_path).read_text())
    theirs = json.loads((DATA / run / "sim.encodings").read_text())
    for kind in ("activation_encodings", "param_encodings"):
        mine = {e["name"]: e for e in ours[kind]}
        assert set(mine) == {e["name"] for e in theirs[kind]}, kind
        for e in theirs[kind]:
            m = mine[e["name"]]
            np.testing.assert_allclose(m["scale"], e["scale"], rtol=1e-5, err_msg=e["name"])
            assert m["offset"] == e["offset"], e["name"]
            assert m["bw"] == e["bw"] and m["is_sym"] == e["is_sym"], e["name"]


def test_set_parameters_rejects_bad_input_and_changes_nothing():
    sim, _ = _sim("training_range_learning_with_tf_init")
    before = sim.parameters()
    with pytest.raises(QsimError, match="unknown parameter.*nope"):
        sim.set_parameters({"fc.bias": before["fc.bias"] + 1, "nope": np.zeros(1)})
    with pytest.raises(QsimError, match=r"wrong shape.*fc.bias.*\(3,\).*\(10,\)"):
        sim.set_parameters({"fc.bias": np.zeros(3, np.float32)})
    after = sim.parameters()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_post_training_scheme_keeps_activation_ranges_and_follows_weights():
    sim, data = _sim("post_training_tf")
    before = sim.parameters()
    loss, grads = sim.value_and_grad({"input": data["train_x"][0]}, cross_entropy(data["train_y"][0]))
    assert set(grads) == {k for k in before if not k.endswith((".min", ".max"))}
    SGD(lr=0.5).step(sim, grads)
    loss2, _ = sim.value_and_grad({"input": data["train_x"][0]}, cross_entropy(data["train_y"][0]))
    after = sim.parameters()
    assert after["input.min"] == before["input.min"] and after["output.max"] == before["output.max"]
    w = after["fc.weight"]
    assert np.allclose(after["fc.weight.max"].reshape(-1),
                       127 * np.maximum(np.abs(w.max(1)) / 127, np.abs(w.min(1)) / 128), rtol=1e-6)
    assert loss2 < loss


def test_adam_first_step_moves_every_parameter_by_lr_against_its_gradient():
    """Adam's bias-corrected first step is lr·g/(|g| + eps) ≈ lr·sign(g) (torch.optim.Adam)."""
    from qsim.train import Adam
    p = {"w": np.array([1.0, -2.0, 3.0], np.float32)}
    g = {"w": np.array([0.5, -3.0, 1e-3], np.float32)}
    new = Adam(lr=0.01).update(p, g)["w"]
    np.testing.assert_allclose(new, p["w"] - 0.01 * np.sign(g["w"]), rtol=0, atol=1e-6)


def test_fit_lowers_the_loss_and_run_uses_the_learned_encodings(capsys):
    from qsim.train import Adam
    sim, data = _sim("training_range_learning_with_tf_init")
    before_out = sim.run({"input": data["eval_x"]})["output"]
    enc_before = sim.quantizers["output"].encoding
    batches = [({"input": x}, y) for x, y in zip(data["train_x"], data["train_y"])]
    losses = sim.fit(batches, cross_entropy, Adam(lr=3e-3), epochs=4, progress=True)
    assert len(losses) == 20
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert "20/20" in capsys.readouterr().err            # the progress bar (tqdm)
    enc_after = sim.quantizers["output"].encoding
    assert enc_after is not enc_before and float(enc_after.delta) != float(enc_before.delta)
    p = sim.parameters()
    from qsim.quant import training as tr
    s = tr.training_encoding(p["output.min"], p["output.max"], tr.Grid(0, 255, False)).scale
    assert float(enc_after.delta) == float(s)
    assert not np.array_equal(sim.run({"input": data["eval_x"]})["output"], before_out)
