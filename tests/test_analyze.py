"""qsim.analyze on the bundled digits CNN at 4 bits: the numbers against independent
computations (ONNX Runtime accuracy, the raw data's range, element counts, the exported encodings,
a hand-written SQNR), the sweeps' definition, and the report's files."""
from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import qsim
from qsim.analyze import analyze, sqnr_db, tensor_sqnr_db, write_report
from qsim.cli import BUNDLED_DATA, BUNDLED_MODEL
from qsim.transforms import fold_batch_norms


@pytest.fixture(scope="module")
def data():
    with np.load(BUNDLED_DATA) as d:
        return {"calib": {"input": d["calib_x"][:64]}, "eval": {"input": d["test_x"][:150]},
                "labels": d["test_y"][:150]}


def make_sim(data, bits=4):
    graph, _ = fold_batch_norms(qsim.load_onnx(BUNDLED_MODEL))
    sim = qsim.QuantizationSimModel(graph, quant_scheme="tf_enhanced", param_type=bits,
                                    activation_type=bits, config_file="default")
    x = data["calib"]["input"]
    sim.compute_encodings([{"input": x[i:i + 16]} for i in range(0, len(x), 16)])
    return sim


@pytest.fixture(scope="module")
def sim(data):
    return make_sim(data)


@pytest.fixture(scope="module")
def result(sim, data):
    return analyze(sim, data["calib"], eval_data=data["eval"], labels=data["labels"],
                   batch_size=50, model_name="digits_cnn.onnx")


@pytest.fixture(scope="module")
def report(result, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return out, write_report(result, out)


def by_name(result, name):
    return next(q for q in result.quantizers if name in q.tensors)


# ---------------------------------------------------------------- the numbers

def test_fp32_accuracy_is_what_onnx_runtime_measures(result, data):
    sess = ort.InferenceSession(str(BUNDLED_MODEL), providers=["CPUExecutionProvider"])
    logits = sess.run(None, data["eval"])[0]
    assert result.fp32 == pytest.approx(np.mean(np.argmax(logits, 1) == data["labels"]) * 100)
    assert result.metric == "accuracy" and result.unit == "%"


def test_quantized_accuracy_is_the_simulations(result, sim, data):
    logits = sim.run(data["eval"])["logits"]
    assert result.quantized == pytest.approx(np.mean(np.argmax(logits, 1) == data["labels"]) * 100)


def test_one_entry_per_enabled_quantizer_object(result, sim):
    enabled = {h.spec.qid for h in sim.quantizers.values() if h.enabled}
    assert [q.qid for q in result.quantizers] == sorted(enabled)


def test_sweeps_restore_the_enabled_flags(sim, data, result):
    before = sim.run(data["eval"])["logits"]
    analyze(sim, data["calib"], batch_size=64)
    np.testing.assert_array_equal(sim.run(data["eval"])["logits"], before)


def test_sweep_definitions_by_toggling_by_hand(result, sim, data):
    # "only disabled" for the worst quantizer, recomputed here by toggling its flag directly
    worst = result.ranked()[0]
    handle = sim.quantizers[worst.name]
    handle.enabled = False
    try:
        logits = sim.run(data["eval"])["logits"]
    finally:
        handle.enabled = True
    assert worst.only_disabled == pytest.approx(np.mean(np.argmax(logits, 1) == data["labels"]) * 100)
    assert worst.only_disabled >= result.quantized


def test_observed_range_of_the_input_is_the_datas(result, data):
    q = by_name(result, "input")
    x = data["calib"]["input"]
    assert float(q.data_min) == float(x.min()) and float(q.data_max) == float(x.max())


def test_weight_ranges_are_per_channel_and_match_the_weights(result, sim):
    q = by_name(result, "features.3.weight")
    w = np.asarray(sim.graph.params["features.3.weight"], np.float64)
    assert q.axis == 0 and q.enc_min.shape == (w.shape[0],)
    np.testing.assert_array_equal(q.data_max, w.reshape(w.shape[0], -1).max(axis=1))


def test_histograms_count_every_value(result, sim, data):
    for q in result.quantizers:
        if q.role == "param":
            expected = sum(sim.graph.params[t].size for t in q.tensors)
        else:
            fp32 = qsim.run(sim.graph, data["calib"], outputs=list(q.tensors))
            expected = sum(v.size for v in fp32.values())
        assert int(q.histogram.counts.sum()) == expected, q.name


def test_encodings_in_the_analysis_are_the_exported_ones(result, sim, tmp_path):
    sim.export(tmp_path, "m")
    doc = json.loads((tmp_path / "m.encodings").read_text())
    exported = {e["name"]: e for e in doc["param_encodings"] + doc["activation_encodings"]}
    for q in result.quantizers:
        for t in q.tensors:
            if t in exported:
                assert exported[t]["scale"] == pytest.approx(np.atleast_1d(q.delta).tolist(), rel=1e-6)
                assert exported[t]["offset"] == np.atleast_1d(q.offset).tolist()


def test_sqnr_alone_of_a_weight_by_hand(result, sim):
    name = "classifier.weight"
    q = by_name(result, name)
    w = np.asarray(sim.graph.params[name], np.float64)
    enc = sim.quantizers[name].encoding
    # x̂ = clamp(round(w/delta - offset), 0, N) + offset, times delta (per output channel, axis 0)
    delta, offset = enc.delta[:, None], enc.offset[:, None]
    t = np.clip(w, enc.min[:, None], enc.max[:, None]) / delta - offset
    w_hat = delta * (np.floor(t + 0.5) + offset)   # fine here: no value sits within 1e-7 of a tie
    expected = 10 * np.log10(np.sum(w ** 2) / np.sum((w - w_hat) ** 2))
    assert q.sqnr_alone_db == pytest.approx(expected, abs=1e-3)
    assert q.sqnr_sim_db == q.sqnr_alone_db          # nothing upstream of a weight


def test_noise_accumulates_downstream(result):
    q = by_name(result, "logits")
    assert q.sqnr_sim_db < q.sqnr_alone_db


def test_without_labels_the_metric_is_output_sqnr(sim, data):
    r = analyze(sim, data["calib"], batch_size=64)
    assert r.metric == "output SQNR" and r.unit == "dB" and r.fp32 == float("inf")
    fp32 = qsim.run(sim.graph, data["calib"])["logits"]
    assert r.quantized == pytest.approx(tensor_sqnr_db(fp32, sim.run(data["calib"])["logits"]))


def test_sqnr_formula_edge_cases():
    assert sqnr_db(1.0, 0.0) == float("inf") and sqnr_db(0.0, 1.0) == float("-inf")
    assert sqnr_db(100.0, 1.0) == pytest.approx(20.0)


def test_input_errors(sim, data):
    with pytest.raises(qsim.FeedError, match="3 labels for 150 evaluation samples"):
        analyze(sim, data["calib"], eval_data=data["eval"], labels=[1, 2, 3])
    with pytest.raises(qsim.FeedError, match="the model's inputs are"):
        analyze(sim, {"x": data["calib"]["input"]})
    fresh = qsim.QuantizationSimModel(sim.model, config_file="default")
    with pytest.raises(qsim.NotCalibratedError):
        analyze(fresh, data["calib"])


# ---------------------------------------------------------------- the report files

class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.anchors = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs["src"])
        if "id" in attrs:
            self.anchors.append(attrs["id"])


def test_html_references_existing_png_files_that_decode(report, result):
    from matplotlib.image import imread
    out, files = report
    page = _Images()
    page.feed(files.html.read_text(encoding="utf-8"))
    assert len(page.sources) >= 2 + len(result.quantizers)     # sweeps, sqnr, one histogram each
    for src in page.sources:
        path = out / src
        assert path.is_file(), src
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src
        image = imread(path)
        assert image.shape[0] > 100 and image.shape[1] > 100
        assert image[..., :3].std() > 0.01, f"{src} is blank"
    assert {f"q{q.qid}" for q in result.quantizers} <= set(page.anchors)
    assert not any(src.startswith(("http:", "https:", "/")) for src in page.sources)


def test_json_holds_every_number_as_strict_json(report, result):
    out, files = report

    def reject(token):
        raise ValueError(f"non-standard JSON constant {token}")

    doc = json.loads(files.json.read_text(), parse_constant=reject)
    assert doc["fp32"] == pytest.approx(result.fp32) and doc["quantized"] == pytest.approx(result.quantized)
    assert len(doc["quantizers"]) == len(result.quantizers)
    for entry, q in zip(doc["quantizers"], result.quantizers):
        assert entry["tensors"] == list(q.tensors)
        assert entry["sqnr_alone_db"] == pytest.approx(q.sqnr_alone_db)
        assert entry["only_disabled"] == pytest.approx(q.only_disabled)
        assert len(entry["histogram"]["counts"]) + 1 == len(entry["histogram"]["edges"])
        assert len(entry["encoding"]["scale"]) == np.size(q.delta)
    assert doc["worst"][0] == result.ranked()[0].name


def test_a_transformer_with_per_channel_matmul_weights():
    """A golden AIMET case (post-LN transformer block, per-channel config): weights per channel on
    axis 1 (MatMul), tie groups, no labels; every value is counted once in its histogram."""
    case = Path(__file__).parent / "data" / "golden" / "models" / \
        "transformer_gelu_s31_per_channel_tfe_w8a8"
    sim = qsim.QuantizationSimModel(case / "model.onnx", quant_scheme="tf_enhanced",
                                    config_file=case / "config.json")
    with np.load(case / "calib.npz") as d:
        calib = {"input": d["input"]}
    sim.compute_encodings([{"input": calib["input"][i:i + 4]} for i in range(0, 32, 4)])
    result = analyze(sim, calib)
    axes = {q.axis for q in result.quantizers}
    assert 1 in axes and result.metric == "output SQNR"
    fp32 = qsim.run(sim.graph, calib, outputs=[t for q in result.quantizers if q.role != "param"
                                                for t in q.tensors])
    for q in result.quantizers:
        values = [sim.graph.params[t] if q.role == "param" else fp32[t] for t in q.tensors]
        assert int(q.histogram.counts.sum()) == sum(v.size for v in values), q.name
        if q.axis is not None:
            assert q.histogram.unit == "steps" and np.shape(q.enc_min) == (values[0].shape[q.axis],)


# ---------------------------------------------------------------- sim vs the integer target

@pytest.fixture(scope="module")
def target_result(data):
    sim8 = make_sim(data, bits=8)
    return sim8, analyze(sim8, data["calib"], eval_data=data["eval"], labels=data["labels"],
                         batch_size=50, model_name="digits_cnn.onnx", target="onnxruntime")


def test_target_metric_and_gap_are_what_onnx_runtime_computes(target_result, data, tmp_path):
    """The integer model's accuracy is ONNX Runtime's (default session) on the QDQ export, and
    the output row of the gap counts the elements where ORT and the simulation differ."""
    sim8, r = target_result
    path = sim8.export_qdq(tmp_path / "qdq.onnx")
    ort_out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, data["eval"])[0]
    assert r.target_metric == pytest.approx(100 * np.mean(np.argmax(ort_out, 1) == data["labels"]))
    sim_out = sim8.run(data["eval"])["logits"]
    delta = float(sim8.quantizers["logits"].encoding.delta)
    lsb = np.rint(np.abs(sim_out.astype(np.float64) - ort_out) / delta).astype(int)
    row = next(t for t in r.gap.tensors if t.tensor == "logits")
    assert row.counts == (int(np.sum(lsb == 0)), int(np.sum(lsb == 1)), int(np.sum(lsb == 2)),
                          int(np.sum(lsb > 2)))
    assert row.max_lsb == lsb.max()
    doc = r.to_json()["target"]
    assert doc["name"] == "onnxruntime" and any(t["tensor"] == "logits" for t in doc["tensors"])


def test_report_shows_the_target_section_and_plot(target_result, tmp_path):
    _, r = target_result
    files = write_report(r, tmp_path, per_quantizer_plots=False)
    page = files.html.read_text()
    assert "Simulation vs integer target (onnxruntime)" in page and "target_gap.png" in page
    assert (tmp_path / "plots" / "target_gap.png").stat().st_size > 1000


def test_unknown_target_is_refused_before_any_work(sim, data):
    with pytest.raises(qsim.errors.ConfigError, match="unknown integer target 'tflite'"):
        analyze(sim, data["calib"], target="tflite")
