"""qsim.distributed on a LocalCluster of 2 worker processes: the same bits as one process.

One cluster serves the whole module (starting one takes seconds). The reference is always the
single-process path (``sim.compute_encodings`` / ``sim.run`` on the same batches in order), which
tests/test_sim_golden.py checks against AIMET.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")

import qsim  # noqa: E402
import qsim.distributed as qd  # noqa: E402
from qsim.errors import ClusterError, FeedError  # noqa: E402

from .test_sim_golden import CASES  # noqa: E402

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as c:
        yield c


def _bits(enc) -> tuple:
    return tuple(np.asarray(getattr(enc, n), np.float64).tobytes()
                 for n in ("min", "max", "delta", "offset")) + (enc.bitwidth, enc.axis)


def _encodings(sim) -> dict:
    return {t: _bits(h.encoding) for t, h in sim.quantizers.items() if h.encoding is not None}


def _write_shards(folder: Path, batches: list[dict], extra: dict | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, b in enumerate(batches):
        p = folder / f"shard_{i:03d}.npz"
        np.savez(p, **b, **({k: v[i] for k, v in extra.items()} if extra else {}))
        paths.append(p)
    return paths


# ---- golden cases: every scheme and config -----------------------------------------------------

def _sim(case):
    sim = qsim.QuantizationSimModel(qsim.load_onnx(case["model"]), quant_scheme=case["scheme"],
                                    param_type=case["param_type"],
                                    activation_type=case["activation_type"],
                                    config_file=str(case["config"]))
    if case["percentile"] is not None:
        sim.set_percentile_value(case["percentile"])
    return sim


@pytest.mark.parametrize("golden_case", CASES)
def test_golden_encodings_identical_to_one_process(golden_case, client, tmp_path):
    make, name = golden_case
    case = make(name)
    one = _sim(case)
    one.compute_encodings(case["batches"])
    # one shard per golden batch (sizes differ in some cases): batch_size = the largest
    paths = _write_shards(tmp_path, case["batches"])
    size = max(len(next(iter(b.values()))) for b in case["batches"])
    cluster_sim = _sim(case)
    qd.compute_encodings(cluster_sim, paths, client, batch_size=size)
    assert _encodings(cluster_sim) == _encodings(one)
    # and the simulated outputs of the eval batch
    out = qd.evaluate(cluster_sim, {k: da.from_array(v, chunks=(3,) + v.shape[1:])
                                    for k, v in case["eval"].items()}, client, batch_size=2)
    ref = {k: [] for k in out}
    n = len(next(iter(case["eval"].values())))
    for a in range(0, n, 3):           # chunks of 3, each cut into batches of 2
        for s in range(a, min(n, a + 3), 2):
            got = one.run({k: v[s:min(s + 2, a + 3, n)] for k, v in case["eval"].items()})
            for k in ref:
                ref[k].append(got[k])
    for k in out:
        np.testing.assert_array_equal(out[k], np.concatenate(ref[k]))


# ---- data forms and batch cutting --------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    d = np.load(EXAMPLES / "digits.npz")
    return dict(model=qsim.load_onnx(EXAMPLES / "digits_cnn.onnx"), calib=d["calib_x"],
                test_x=d["test_x"], test_y=d["test_y"])


def _digits_sim(digits, scheme="tf_enhanced", config=None):
    return qsim.QuantizationSimModel(digits["model"], quant_scheme=scheme, config_file=config)


@pytest.mark.parametrize("scheme", ["tf", "tf_enhanced", "percentile"])
def test_shards_folder_list_and_dask_give_one_process_bits(scheme, digits, client, tmp_path):
    x = digits["calib"][:90]
    cuts = [0, 37, 40, 90]                   # shards of 37, 3 and 50 samples, batch size 16
    shards = [x[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
    expected_batches = [{"input": s[i:i + 16]} for s in shards for i in range(0, len(s), 16)]
    assert [len(b["input"]) for b in expected_batches] == [16, 16, 5, 3, 16, 16, 16, 2]
    one = _digits_sim(digits, scheme)
    if scheme == "percentile":
        one.set_percentile_value(99.5)
    one.compute_encodings(expected_batches)
    expected = _encodings(one)

    # folder: name order, not creation order
    folder = tmp_path / "shards"
    folder.mkdir()
    for name, s in zip(["c.npz", "a.npz", "b.npz"], [shards[2], shards[0], shards[1]]):
        np.savez(folder / name, input=s)
    sources = [folder, [folder / "a.npz", folder / "b.npz", folder / "c.npz"],
               {"input": da.from_array(x, chunks=((37, 3, 50), 1, 8, 8))}]
    for data in sources:
        sim = _digits_sim(digits, scheme)
        if scheme == "percentile":
            sim.set_percentile_value(99.5)
        qd.compute_encodings(sim, data, client, batch_size=16)
        assert _encodings(sim) == expected, type(data).__name__


def test_evaluate_outputs_accuracy_and_sqnr(digits, client, tmp_path):
    sim = _digits_sim(digits)
    sim.compute_encodings([{"input": digits["calib"][i:i + 32]} for i in range(0, 256, 32)])
    x, y = digits["test_x"][:200], digits["test_y"][:200]
    paths = _write_shards(tmp_path, [{"input": x[:120]}, {"input": x[120:]}],
                          extra={"labels": [y[:120], y[120:]]})
    batches = [x[a:b] for a, b in [(0, 50), (50, 100), (100, 120), (120, 170), (170, 200)]]
    local = [sim.run({"input": b})["logits"] for b in batches]

    out = qd.evaluate(sim, paths, client, batch_size=50)
    np.testing.assert_array_equal(out["logits"], np.concatenate(local))

    acc = qd.evaluate(sim, paths, client, batch_size=50, metric="accuracy")
    assert acc == float(np.mean(np.argmax(np.concatenate(local), axis=1) == y) * 100.0)

    signal_ = noise = 0.0
    for b, got in zip(batches, local):
        ref = np.asarray(qsim.run(sim.graph, {"input": b}, fp32_kernels=sim.fp32_kernels)["logits"],
                         np.float64)
        signal_ += float(np.sum(ref ** 2))
        noise += float(np.sum((ref - got.astype(np.float64)) ** 2))
    sqnr = qd.evaluate(sim, paths, client, batch_size=50, metric="sqnr")
    assert sqnr == float(10.0 * np.log10(signal_ / noise))

    seen = []
    top = qd.evaluate(sim, paths, client, batch_size=50,
                      metric=lambda outs: seen.append(outs["logits"].shape) or 7)
    assert top == 7 and seen == [(200, 10)]


# ---- corner cases: all-zero first batches, NaN, stale bins -------------------------------------

def _relu_model(tmp_path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    w = np.linspace(-1.0, 1.0, 4 * 3, dtype=np.float32).reshape(4, 3)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("MatMul", ["r", "w"], ["y"], name="mm")],
        "relu_mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.ravel())])
    path = tmp_path / "relu_mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


@pytest.mark.parametrize("scheme", ["tf", "tf_enhanced", "percentile"])
@pytest.mark.parametrize("config", ["default", "per_tensor"])
def test_corner_cases_zero_first_batches_and_nan(scheme, config, client, tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    neg = -np.abs(rng.normal(size=(6, 4))).astype(np.float32)     # Relu gives all zeros
    zeros = np.zeros((6, 4), np.float32)
    normal = rng.normal(size=(6, 4)).astype(np.float32)
    with_nan = rng.normal(size=(6, 4)).astype(np.float32) * 3
    with_nan[2, 1] = np.nan
    wide = rng.normal(size=(6, 4)).astype(np.float32) * 50
    batches = [zeros, zeros, neg, normal, with_nan, wide, normal * 0.1, neg]
    model = _relu_model(tmp_path)

    def make():
        sim = qsim.QuantizationSimModel(qsim.load_onnx(model), quant_scheme=scheme,
                                        config_file=config)
        if scheme == "percentile":
            sim.set_percentile_value(99.0)
        return sim

    one = make()
    with pytest.warns(RuntimeWarning, match="NaN"):
        one.compute_encodings([{"x": b} for b in batches])
    sim = make()
    submitted = []
    submit = qd._submit
    monkeypatch.setattr(qd, "_submit", lambda *a, **k: submitted.append(k["batch"].index)
                        or submit(*a, **k))
    with pytest.warns(RuntimeWarning, match="NaN"):   # warned on the client, as in one process
        qd.compute_encodings(sim, {"x": da.from_array(np.concatenate(batches), chunks=(6, 4))},
                             client, batch_size=6)
    assert _encodings(sim) == _encodings(one)
    # the input quantizer really skipped the all-zero first batches (bins fixed by batch 2), and
    # the batches observed before batch 2's bins were known ran again under them
    handle = one.quantizers["x"]
    if scheme != "tf":
        assert int(handle.quantizer.stats.batches[0]) < len(handle.spec.tensors) * len(batches)
        assert sorted(set(submitted)) == list(range(len(batches)))
        assert len(submitted) > len(batches)
    else:
        assert sorted(submitted) == list(range(len(batches)))


def test_nonfinite_data_is_named_as_in_one_process(client, tmp_path):
    """README "Non-finite data": the ±Inf / only-NaN flags ride on the statistics pieces, so the
    cluster names the same quantizers, with the same one warning each, as one process."""
    from qsim.errors import NonFiniteWarning
    x = np.random.default_rng(6).normal(size=(24, 4)).astype(np.float32)
    x[13, 2] = np.inf
    model = _relu_model(tmp_path)
    caught = []
    for where in ("one", "cluster"):
        sim = qsim.QuantizationSimModel(qsim.load_onnx(model), quant_scheme="tf_enhanced")
        with pytest.warns(NonFiniteWarning) as record:
            if where == "one":
                sim.compute_encodings([{"x": x[i:i + 6]} for i in range(0, 24, 6)])
            else:
                qd.compute_encodings(sim, {"x": da.from_array(x, chunks=(6, 4))}, client,
                                     batch_size=6)
        caught.append((sorted(str(w.message) for w in record
                              if w.category is NonFiniteWarning), sim.nonfinite_quantizers()))
    assert caught[0] == caught[1]
    assert caught[0][1] == {"x": "±Inf", "r": "±Inf", "y": "±Inf"}


# ---- faults ------------------------------------------------------------------------------------

def test_worker_killed_mid_calibration_gives_identical_encodings(digits, client, tmp_path):
    x = digits["calib"]
    batches = [{"input": x[i:i + 8]} for i in range(0, 256, 8)]
    one = _digits_sim(digits, "tf_enhanced")
    one.compute_encodings(batches)
    paths = _write_shards(tmp_path, [{"input": x[:128]}, {"input": x[128:]}])
    pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    before = set(pids)
    killed = []

    def progress(done, total):
        if done == 3 and not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(done)

    sim = _digits_sim(digits, "tf_enhanced")
    qd.compute_encodings(sim, paths, client, batch_size=8, progress=progress)
    assert killed == [3]
    assert _encodings(sim) == _encodings(one)
    client.wait_for_workers(2, timeout=60)
    after = client.run(os.getpid)
    assert victim not in after.values() and set(after) != before   # it really died


def test_corrupt_shard_is_named_and_nothing_changes(digits, client, tmp_path):
    sim = _digits_sim(digits, "tf")
    sim.compute_encodings([{"input": digits["calib"][:32]}])
    before = _encodings(sim)
    good = _write_shards(tmp_path, [{"input": digits["calib"][:40]}])[0]
    bad = tmp_path / "broken.npz"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(FeedError, match="broken.npz"):
        qd.compute_encodings(sim, [good, bad], client, batch_size=16)
    assert _encodings(sim) == before
    missing = tmp_path / "other.npz"
    np.savez(missing, image=digits["calib"][:4])
    with pytest.raises(FeedError, match=r"other.npz.*no array \['input'\]"):
        qd.compute_encodings(sim, [missing], client, batch_size=16)


def test_unreadable_rows_on_a_worker_name_the_shard(digits, client, tmp_path):
    sim = _digits_sim(digits, "tf")
    path = tmp_path / "s.npz"
    np.savez(path, input=digits["calib"][:8].astype(np.float64))   # wrong dtype: the model says f32
    with pytest.raises(FeedError, match=r"batch 0 \(.*s.npz, rows 0:8\)"):
        qd.compute_encodings(sim, [path], client, batch_size=8)


def test_unreachable_scheduler_is_a_clear_error(digits, tmp_path):
    sim = _digits_sim(digits, "tf")
    paths = _write_shards(tmp_path, [{"input": digits["calib"][:8]}])
    with pytest.raises(ClusterError, match=r"tcp://127.0.0.1:9.*within 1 s"):
        qd.compute_encodings(sim, paths, "tcp://127.0.0.1:9", batch_size=8, timeout=1)


def test_bad_arguments(digits, tmp_path):
    sim = _digits_sim(digits, "tf")
    with pytest.raises(qsim.QsimError, match="batch_size"):
        qd.compute_encodings(sim, [], None, batch_size=0)
    with pytest.raises(FeedError, match="holds no .npz"):
        qd.compute_encodings(sim, tmp_path, None, batch_size=4)
    with pytest.raises(qsim.NotCalibratedError):
        qd.evaluate(sim, tmp_path, None, batch_size=4)


# ---- CLI ---------------------------------------------------------------------------------------

def test_cli_quantize_on_the_cluster_writes_the_same_encodings(client, tmp_path, capsys):
    from qsim.cli import build_parser, main
    assert main(["quantize", "--quiet", "--out", str(tmp_path / "one")]) == 0
    assert main(["quantize", "--quiet", "--scheduler", client.scheduler.address,
                 "--out", str(tmp_path / "dask")]) == 0
    one = (tmp_path / "one" / "digits_cnn.encodings").read_bytes()
    assert (tmp_path / "dask" / "digits_cnn.encodings").read_bytes() == one
    args = build_parser().parse_args(["analyze", "--workers", "2"])
    assert args.workers == 2 and args.scheduler is None
    assert main(["quantize", "--quiet", "--scheduler", "tcp://127.0.0.1:9", "--out",
                 str(tmp_path / "x")]) == 2
    assert "cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'" in capsys.readouterr().err


def test_a_worker_with_another_core_count_is_refused():
    # ONNX Runtime's (and qsim's) float32 bits depend on the intra-op thread count for some
    # GEMM shapes: a worker that would compute other bits says so instead
    mine = qd._intra_op_threads()
    qd._check_threads(mine)
    with pytest.raises(ClusterError, match=f"has {mine} cores but the client has {mine + 1}"):
        qd._check_threads(mine + 1)


def test_client_none_runs_on_a_local_cluster_for_the_call(digits, tmp_path):
    sim = _digits_sim(digits, "tf")
    batches = [{"input": digits["calib"][i:i + 16]} for i in range(0, 48, 16)]
    sim.compute_encodings(batches)
    paths = _write_shards(tmp_path, batches)
    out = qd.evaluate(sim, paths, None, batch_size=16)
    np.testing.assert_array_equal(out["logits"],
                                  np.concatenate([sim.run(b)["logits"] for b in batches]))
