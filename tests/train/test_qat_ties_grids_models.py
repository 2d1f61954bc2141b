"""QAT parameters beyond the golden CNN: tied quantizers share one range whose gradient is the sum
of its members' (checked by untying them), unsigned-symmetric configs train on qat.md §2's grids
(and keep their symmetric offsets while learning), and every golden model gives a gradient for
every trainable parameter."""
import json
from pathlib import Path

import numpy as np
import pytest

from qsim.quant import training as tr
from qsim.sim import QuantizationSimModel
from qsim.train import SGD, mse
from qsim.train import sim_api
from qsim.train.graph import Slot, range_names, training_graph, value_and_grad

MODELS = Path(__file__).resolve().parents[1] / "data" / "golden" / "models"
CASES = sorted(p.name for p in MODELS.iterdir() if (p / "model.onnx").is_file())


def _calibrated(case, scheme="training_range_learning_with_tf_init", config=None):
    d = MODELS / case
    sim = QuantizationSimModel(str(d / "model.onnx"), quant_scheme=scheme,
                               config_file=str(config or d / "config.json"))
    x = np.load(d / "calib.npz")["input"]
    sim.compute_encodings([{"input": x[i:i + 8]} for i in range(0, len(x), 8)])
    return sim, {"input": x[:8]}


def _target(sim, feeds):
    out = sim.run(feeds)
    name = next(iter(out))
    return np.random.default_rng(1).standard_normal(out[name].shape).astype(np.float32)


def _tie_groups(sim):
    handles = {id(h): h for h in sim.quantizers.values()}.values()
    return [h.spec.tensors for h in handles if h.enabled and len(h.spec.tensors) > 1]


# ---------------------------------------------------------------- tied quantizers

def test_tied_quantizers_share_one_range_and_sum_their_gradients():
    """misc model: Concat ties its inputs to its output, AveragePool ties its output to its
    input. ``sim.parameters()`` has one min/max pair per tie group (the first tensor's), and its
    gradient equals the sum of the members' gradients when every member gets its own copy of
    the same range (untied: the forward is the same, each copy collects its own tensor's part)."""
    sim, feeds = _calibrated("misc_s32_default_tf_w8a8")
    groups = _tie_groups(sim)
    assert any(len(g) == 3 for g in groups)      # branch_a_out, branch_b_out, concat_out
    params = sim.parameters()
    for group in groups:
        assert set(range_names(group[0])) <= set(params)
        for other in group[1:]:
            assert not set(range_names(other)) & set(params), other

    loss_fn = mse(_target(sim, feeds))
    loss, grads = sim.value_and_grad(feeds, loss_fn)

    # untied: one slot (and one θ pair, a copy of the group's) per tensor
    slots, ranges = [], dict(params)
    for h, s in sim_api._slots(sim):
        slots.append(Slot(s.tensor, s.grid))
        for mine, shared in zip(range_names(s.tensor), range_names(s.range_base)):
            ranges[mine] = params[shared]
    tgraph = training_graph(sim.graph, tuple(slots), ranges, frozen=False)
    untied_loss, _, untied = value_and_grad(tgraph, ranges, feeds, loss_fn, trainable=list(ranges))
    assert untied_loss == loss
    for name in params:
        if name not in {n for g in groups for n in range_names(g[0])}:
            np.testing.assert_array_equal(grads[name], untied[name], err_msg=name)
    for group in groups:
        for end in (0, 1):
            parts = [untied[range_names(t)[end]] for t in group]
            assert sum(np.count_nonzero(p) for p in parts) >= 2   # more than one member counts
            total = np.sum(np.asarray(parts, np.float64), axis=0)
            mag = np.sum(np.abs(np.asarray(parts, np.float64)), axis=0)
            shared = grads[range_names(group[0])[end]]
            assert np.all(np.abs(shared - total) <= 1e-6 * mag + 1e-30), (group, end, shared, total)


# ---------------------------------------------------------------- unsigned symmetric

def _unsigned_config(tmp_path, strict):
    doc = json.loads((MODELS / "cnn_bn_s34_unsigned_sym_tfe_w8a8" / "config.json").read_text())
    doc["defaults"]["strict_symmetric"] = "True" if strict else "False"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("strict", [False, True], ids=["unsigned", "unsigned_strict"])
def test_unsigned_symmetric_trains_on_qat_grids(tmp_path, strict):
    """A config with unsigned_symmetric: the calibrated encodings (aimet-onnx, numerics.md §2.6)
    are signed symmetric where the data has negative values (AIMET offset -128, strict -127) and
    unsigned with offset 0 where it has none (the Relu outputs). In training, qat.md §2:

    * signed ones run on the unsigned-symmetric grid ``[0, 255]`` (strict ``[0, 254]``) whose
      offset is the constant ``-rne(qmax/2)``: -128 (127.5 rounds to even 128), strict -127;
      ``dθmin = -dθmax`` exactly (§4); the offset stays through training;
    * the unsigned ones start at ``o = 0`` with the calibrated scale and keep ``o = 0``;
    * at the start every scale is the calibrated delta and ``o + qmin`` the calibrated offset."""
    sim, feeds = _calibrated("cnn_bn_s34_unsigned_sym_tfe_w8a8",
                             config=_unsigned_config(tmp_path, strict))
    signed = -127 if strict else -128
    top = 254 if strict else 255
    params = sim.parameters()
    kinds = {}
    for h, s in sim_api._slots(sim):
        enc = h.encoding
        assert h.spec.unsigned_symmetric and h.spec.symmetric
        assert (s.grid.qmin, s.grid.qmax) == (0, top), s.tensor
        kinds[s.tensor] = "signed" if np.all(enc.offset == signed) else "unsigned"
        if kinds[s.tensor] == "unsigned":
            assert np.all(enc.offset == 0) and np.all(enc.min == 0), s.tensor
        assert s.grid.symmetric == (kinds[s.tensor] == "signed"), s.tensor
        mn, mx = range_names(s.range_base)
        e = tr.training_encoding(params[mn], params[mx], s.grid)
        np.testing.assert_allclose(e.scale.ravel(), np.ravel(enc.delta), rtol=2e-7, err_msg=s.tensor)
        np.testing.assert_array_equal(e.offset.ravel() + s.grid.qmin, np.ravel(enc.offset))
    assert set(kinds.values()) == {"signed", "unsigned"}
    assert kinds["relu1_out"] == "unsigned" and kinds["conv1.weight"] == "signed"

    loss_fn = mse(_target(sim, feeds))
    for _ in range(5):
        loss, grads = sim.value_and_grad(feeds, loss_fn)
        for t, kind in kinds.items():
            if kind == "signed":
                mn, mx = range_names(t)
                np.testing.assert_array_equal(grads[mn], -grads[mx], err_msg=t)
        SGD(lr=0.5).step(sim, grads)      # large steps: the ranges move a lot
    moved = sim.parameters()
    for t, kind in kinds.items():
        enc = sim.quantizers[t].encoding
        assert np.all(enc.offset == (signed if kind == "signed" else 0)), (t, enc.offset)
    assert any(not np.array_equal(moved[f"{t}.max"], params[f"{t}.max"]) for t in kinds
               if kinds[t] == "signed")


# ---------------------------------------------------------------- every golden model

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("learn", [True, False], ids=["ranges_learned", "ranges_frozen"])
def test_every_trainable_parameter_gets_a_gradient(case, learn):
    """Every golden model: ``value_and_grad`` returns a finite float32 gradient of the right shape
    for exactly the trainable names (all of ``sim.parameters()`` when ranges learn; the weights
    and biases when they are frozen), and not all of them are zero."""
    sim, feeds = _calibrated(case)
    sim.unfreeze_ranges() if learn else sim.freeze_ranges()
    params = sim.parameters()
    ranges = {n for _, s in sim_api._slots(sim) for n in range_names(s.range_base)}
    assert ranges and ranges <= set(params)
    _, grads = sim.value_and_grad(feeds, mse(_target(sim, feeds)))
    assert set(grads) == (set(params) if learn else set(params) - ranges)
    for name, g in grads.items():
        assert g.dtype == np.float32 and g.shape == params[name].shape, name
        assert np.all(np.isfinite(g)), name
    weights = [n for n in grads if n not in ranges]
    assert any(np.any(grads[n] != 0) for n in weights)
    if learn:
        assert any(np.any(grads[n] != 0) for n in ranges)
