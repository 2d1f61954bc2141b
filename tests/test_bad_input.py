"""Issue 10, probe by probe: non-finite calibration data, exports that would overwrite an input,
static batch dimensions, and the smaller bad inputs. Every probe ends in a one-line error with
exit status 2 (naming the wrong thing and the right one) or in a correct success; nothing is
overwritten or half-written, and no export holds a NaN, infinite or non-positive scale.

Expected values come from the data itself (NumPy's nanmin/nanmax, the file bytes, the folder
listing), from ONNX's own operator list, or from AIMET's rules as numerics.md states them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings, strategies as st
from onnx import TensorProto, helper, numpy_helper

import qsim
from qsim.cli import main
from qsim.errors import EncodingError, ExportError, FeedError, NonFiniteWarning

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- small models and data

def gemm_model(path: Path, batch, *, opset: int = 17, classes: int = 5) -> Path:
    """``y = Relu(Gemm(x[batch, 3], W[3, classes]) + B)``; ``batch`` an int (static) or a name."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, classes)).astype(np.float32)
    b = rng.standard_normal(classes).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, classes])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def data(n: int = 26) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((n, 3)).astype(np.float32)


@pytest.fixture
def work(tmp_path):
    """A folder with a dynamic-batch model, clean / Inf / NaN calibration files."""
    gemm_model(tmp_path / "m.onnx", "N")
    x = data()
    np.savez(tmp_path / "calib.npz", x=x)
    xi = x.copy()
    xi[3, 1], xi[7, 0] = np.inf, -np.inf
    np.savez(tmp_path / "inf.npz", x=xi)
    np.savez(tmp_path / "nan.npz", x=np.full_like(x, np.nan))
    return tmp_path


def run_cli(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def user_error(capsys, *argv, match: str) -> str:
    """The one stderr line of a command that must fail with exit status 2."""
    code, out, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert match in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes (to prove nothing changed); symlinked folders
    inside are not followed."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            p = Path(root) / name
            out[p.relative_to(folder).as_posix()] = p.read_bytes()
    return out


def sim_of(model: Path, scheme: str = "tf_enhanced", **kw):
    return qsim.QuantizationSimModel(model, quant_scheme=scheme, config_file="per_tensor", **kw)


def calibrate(sim, x, batch=8):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sim.compute_encodings([{"x": x[i:i + batch]} for i in range(0, len(x), batch)])
    return [w for w in caught if issubclass(w.category, RuntimeWarning)]


def all_scales(doc: dict) -> list:
    """Every scale of a 1.0.0 / 0.6.1 / 2.0.0 document, read straight from the JSON."""
    out = []
    for key in ("param_encodings", "activation_encodings"):
        entries = doc.get(key, [])
        for e in (entries.values() if isinstance(entries, dict) else entries):
            out += [c["scale"] for c in e] if isinstance(e, list) else list(e["scale"])
    for e in doc.get("encodings", []):
        out += e["y_scale"] if isinstance(e["y_scale"], list) else [e["y_scale"]]
    return out


# ---------------------------------------------------------------- 1. non-finite data (API)

def test_inf_data_is_named_in_one_warning_per_quantizer(work):
    sim = sim_of(work / "m.onnx", "tf")
    x = np.load(work / "inf.npz")["x"]
    caught = calibrate(sim, x)
    nonfinite = [str(w.message) for w in caught if w.category is NonFiniteWarning]
    # x saw the Inf directly, y through the Gemm; the weight W is finite
    assert sorted(nonfinite) == sorted(f"quantizer of '{t}': calibration data held ±Inf; this "
                                       f"quantizer's encoding is not meaningful" for t in "xy")
    assert len(caught) == 2
    assert sim.nonfinite_quantizers() == {"x": "±Inf", "y": "±Inf"}
    # AIMET's numerics are kept (numerics.md §2): ±inf clamp to ±L = 0.99·FLT_MAX, so
    # delta = 2L/255, offset = -round(127.5) = -128, and min = -128·delta < -L shrinks delta
    # to L/128 (the overflow guard)
    L = 0.99 * float(np.finfo(np.float32).max)
    enc = sim.quantizers["x"].encoding
    assert (float(enc.delta), float(enc.offset)) == (L / 128, -128.0)


def test_nan_mixed_with_finite_data_is_ignored_as_aimet_does(work):
    x = data()
    xn = x.copy()
    xn[::5, 1] = np.nan
    sim = sim_of(work / "m.onnx", "tf")
    caught = calibrate(sim, xn)
    # "NaN ignored", once for x and once for y (the Gemm carries the NaN rows through)
    assert [w.category for w in caught] == [RuntimeWarning] * 2
    assert sorted(str(w.message).split(":")[0] for w in caught) == ["quantizer of 'x'",
                                                                   "quantizer of 'y'"]
    assert sim.nonfinite_quantizers() == {}
    enc = sim.quantizers["x"].encoding
    lo, hi = float(np.nanmin(xn)), float(np.nanmax(xn))           # NaN ignored: numerics.md §2
    assert float(enc.delta) == (hi - lo) / 255
    assert float(enc.offset) == -np.floor(-lo / float(enc.delta) + 0.5)


@pytest.mark.parametrize("scheme, bad", [("tf_enhanced", -1.0), ("percentile", "nan")])
@pytest.mark.parametrize("version", ["1.0.0", "0.6.1", "2.0.0"])
def test_only_nan_data_is_never_exported(work, scheme, bad, version):
    sim = sim_of(work / "m.onnx", scheme)
    caught = calibrate(sim, np.full((8, 3), np.nan, np.float32))
    assert {str(w.message).split(":")[0] for w in caught if w.category is NonFiniteWarning} \
        == {"quantizer of 'x'", "quantizer of 'y'"}
    out = work / "out"
    with pytest.raises(ExportError, match=f"'x' \\(scale {bad}\\).*'y' \\(scale {bad}\\)"):
        sim.export(out, "m", encoding_version=version)
    with pytest.raises(ExportError, match="non-positive scale"):
        sim.export_qdq(work / "m_qdq.onnx")
    assert not out.exists() and not (work / "m_qdq.onnx").exists()


def test_strict_json_never_holds_a_nan_token():
    from qsim.export import dumps_encodings
    with pytest.raises(ExportError, match="'t' \\(scale nan\\)"):
        dumps_encodings({"encodings": [{"name": "t", "y_scale": float("nan")}], "version": "2.0.0"})
    with pytest.raises(ExportError, match="JSON"):
        dumps_encodings({"version": "1.0.0", "producer": {"x": float("inf")}})


@given(st.lists(st.lists(st.sampled_from([0.5, -3.0, 0.0, np.inf, -np.inf, np.nan]),
                         min_size=0, max_size=6), min_size=1, max_size=4),
       st.sampled_from(["tf", "tf_enhanced", "percentile"]))
@settings(deadline=None, max_examples=60)      # the first call compiles kernels
def test_nonfinite_flag_against_numpy(batches, scheme):
    """``nonfinite`` over several batches: "±Inf" iff some element is infinite, "only NaN" iff
    NaN was seen and nothing finite, else None (NumPy decides on the concatenated data)."""
    from qsim.quant import TensorQuantizer
    q = TensorQuantizer(scheme=scheme, name="t")
    for b in batches:
        q.update_stats(np.array(b, np.float32))
    every = np.array([v for b in batches for v in b], np.float32)
    if np.isinf(every).any():
        want = "±Inf"
    elif np.isnan(every).any() and not np.isfinite(every).any():
        want = "only NaN"
    else:
        want = None
    assert q.nonfinite == want
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        q.compute_encodings()
    flagged = [w for w in caught if w.category is NonFiniteWarning]
    assert len(flagged) == (want is not None)
    assert all(str(w.message).startswith("t: ") for w in flagged)


# ---------------------------------------------------------------- 1. non-finite data (CLI)

def test_cli_notes_nan_mixed_with_finite_data_and_goes_on(capsys, work):
    x = data()
    x[::5, 1] = np.nan
    np.savez(work / "somenan.npz", x=x)
    code, out, err = run_cli(capsys, "quantize", work / "m.onnx", "--calib", work / "somenan.npz",
                             "--out", work / "out", "--quiet")
    assert code == 0, err
    assert err.strip().splitlines() == ["qsim quantize: note: the calibration data of 2 "
                                        "quantizer(s) held NaN, ignored as AIMET does: 'x', 'y'"]
    scales = all_scales(json.loads((work / "out" / "m.encodings").read_text()))
    assert all(np.isfinite(s) and s > 0 for s in scales)


def test_cli_refuses_inf_data_naming_the_quantizers(capsys, work):
    line = user_error(capsys, "quantize", work / "m.onnx", "--calib", work / "inf.npz", "--out",
                      work / "out", "--quiet", match="non-finite calibration data")
    assert "'x' (±Inf), 'y' (±Inf)" in line and "--allow-nonfinite" in line
    assert not (work / "out").exists()


def test_allow_nonfinite_goes_on_and_writes_only_finite_positive_scales(capsys, work):
    code, out, err = run_cli(capsys, "quantize", work / "m.onnx", "--calib", work / "inf.npz",
                             "--scheme", "tf", "--out", work / "out", "--quiet",
                             "--allow-nonfinite", "--encoding-version", "2.0.0")
    assert code == 0, err
    assert "note:" in err and "'x' (±Inf)" in err
    scales = all_scales(json.loads((work / "out" / "m.encodings").read_text()))
    assert scales and all(np.isfinite(s) and s > 0 for s in scales)


def test_allow_nonfinite_with_only_nan_still_refuses_the_export(capsys, work):
    code, out, err = run_cli(capsys, "quantize", work / "m.onnx", "--calib", work / "nan.npz",
                             "--scheme", "percentile", "--out", work / "out", "--quiet",
                             "--allow-nonfinite")
    assert code == 2
    assert "cannot export" in err.strip().splitlines()[-1] and "'x' (scale nan)" in err
    assert not (work / "out").exists()


# ---------------------------------------------------------------- 2. never overwrite an input

def test_out_in_the_models_folder_does_not_overwrite_the_model(capsys, work, monkeypatch):
    before = snapshot(work)
    monkeypatch.chdir(work)
    user_error(capsys, "quantize", "m.onnx", "--calib", "calib.npz", "--out", ".",
               match="the export 'm.onnx' would overwrite the model 'm.onnx'; choose another --out")
    assert snapshot(work) == before


def test_out_through_a_symlink_and_other_inputs_are_protected(capsys, work):
    (work / "link").symlink_to(work, target_is_directory=True)
    os.replace(work / "calib.npz", work / "m_qdq.onnx")    # np.load reads any name
    before = snapshot(work)
    user_error(capsys, "quantize", work / "m.onnx", "--calib", work / "m_qdq.onnx", "--out",
               work / "link", "--qdq", match="would overwrite the model")
    sub = work / "sub"
    sub.mkdir()
    gemm_model(sub / "m.onnx", "N")
    user_error(capsys, "quantize", sub / "m.onnx", "--calib", work / "m_qdq.onnx", "--out",
               work / "link", "--qdq", match="would overwrite the calibration file")
    assert snapshot(work / "link") == {**before, "sub/m.onnx": (sub / "m.onnx").read_bytes()}


def test_analyze_never_replaces_a_folder_holding_inputs_or_other_files(capsys, work):
    before = snapshot(work)
    user_error(capsys, "analyze", work / "m.onnx", "--calib", work / "calib.npz", "--out", work,
               match="is inside the output folder")
    other = work / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    user_error(capsys, "analyze", work / "m.onnx", "--calib", work / "calib.npz", "--out", other,
               match="holds files that are not a qsim report ('notes.txt')")
    assert snapshot(work) == {**before, "mine/notes.txt": b"keep me"}


# ---------------------------------------------------------------- 3. static batch dimensions

def test_static_batch_model_is_calibrated_in_batches_of_its_size(capsys, tmp_path):
    gemm_model(tmp_path / "s.onnx", 4)
    x = data(26)
    np.savez(tmp_path / "calib.npz", x=x)
    code, out, err = run_cli(capsys, "quantize", tmp_path / "s.onnx", "--calib",
                             tmp_path / "calib.npz", "--batch-size", "16", "--out",
                             tmp_path / "out", "--quiet")
    assert code == 0, err
    assert "batch dimension is fixed at 4: calibrating in batches of 4, not --batch-size 16" in err
    assert "26 samples is not a multiple of the model's fixed batch size 4; the last 2 are not " \
           "used" in err
    assert "6 batches of 4" in out
    # the same as calibrating the first 24 samples in six batches of four through the API
    sim = qsim.QuantizationSimModel(tmp_path / "s.onnx")
    sim.compute_encodings([{"x": x[i:i + 4]} for i in range(0, 24, 4)])
    from qsim.export import encodings_document
    written = json.loads((tmp_path / "out" / "s.encodings").read_text())
    assert written["activation_encodings"] == encodings_document(sim)["activation_encodings"]


def test_static_batch_model_in_analyze_with_labels(capsys, tmp_path):
    gemm_model(tmp_path / "s.onnx", 4)
    x = data(26)
    labels = np.arange(26) % 5
    np.savez(tmp_path / "calib.npz", x=x)
    np.save(tmp_path / "labels.npy", labels)
    code, out, err = run_cli(capsys, "analyze", tmp_path / "s.onnx", "--calib",
                             tmp_path / "calib.npz", "--labels", tmp_path / "labels.npy",
                             "--out", tmp_path / "rep", "--quiet")
    assert code == 0, err
    doc = json.loads((tmp_path / "rep" / "analysis.json").read_text())
    # FP32 accuracy on the 24 samples that fit, from ONNX Runtime
    import onnxruntime as ort
    sess = ort.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(None, {"x": x[i:i + 4]})[0] for i in range(0, 24, 4)])
    assert doc["fp32"] == pytest.approx(100 * np.mean(logits.argmax(1) == labels[:24]))


def test_static_batch_larger_than_the_data(capsys, tmp_path):
    gemm_model(tmp_path / "s.onnx", 40)
    np.savez(tmp_path / "calib.npz", x=data(26))
    user_error(capsys, "quantize", tmp_path / "s.onnx", "--calib", tmp_path / "calib.npz",
               "--out", tmp_path / "out",
               match="has 26 samples but the model's batch dimension is fixed at 40; give at "
                     "least 40 samples")
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- 4. version

def test_version_everywhere(capsys):
    from importlib.metadata import version
    assert qsim.__version__ == version("qsim-ref")
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"qsim {version('qsim-ref')} (qsim-ref)"


# ---------------------------------------------------------------- 5. --calib x.npy

def test_calib_npy_is_a_one_line_error(capsys, work):
    np.save(work / "x.npy", data())
    user_error(capsys, "quantize", work / "m.onnx", "--calib", work / "x.npy",
               match="calibration file '" + str(work / "x.npy") + "' holds a single array (.npy); "
                     "give an .npz archive")


# ---------------------------------------------------------------- 6. analyze

def test_analyze_with_inf_data_refuses_then_reports_with_allow_nonfinite(capsys, work):
    user_error(capsys, "analyze", work / "m.onnx", "--calib", work / "inf.npz", "--out",
               work / "rep", "--quiet", match="'x' (±Inf)")
    assert not (work / "rep").exists()
    code, out, err = run_cli(capsys, "analyze", work / "m.onnx", "--calib", work / "inf.npz",
                             "--out", work / "rep", "--quiet", "--allow-nonfinite")
    assert code == 0, err
    doc = json.loads((work / "rep" / "analysis.json").read_text())     # strict JSON
    assert {q["tensors"][0] for q in doc["quantizers"]} >= {"x", "y"}
    assert (work / "rep" / "analysis.html").is_file()


def test_analyze_interrupted_keeps_the_previous_report_whole(capsys, work, monkeypatch):
    import qsim.analyze as analyze_module
    out = work / "rep"
    code, _, err = run_cli(capsys, "analyze", work / "m.onnx", "--calib", work / "calib.npz",
                           "--out", out, "--quiet")
    assert code == 0, err
    before = snapshot(out)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(analyze_module, "plot_sqnr", interrupted)   # after analysis.json
    code, _, err = run_cli(capsys, "analyze", work / "m.onnx", "--calib", work / "inf.npz",
                           "--out", out, "--quiet", "--allow-nonfinite")
    assert code == 130
    assert snapshot(out) == before
    assert sorted(p.name for p in work.iterdir() if p.name.startswith(".")) == []


# ---------------------------------------------------------------- 7. API

def test_load_encodings_strict_refuses_a_negative_scale(work):
    sim = sim_of(work / "m.onnx", "tf")
    calibrate(sim, data())
    sim.export(work / "out", "m")
    path = work / "out" / "m.encodings"
    doc = json.loads(path.read_text())
    doc["activation_encodings"][0]["scale"] = [-0.5]
    path.write_text(json.dumps(doc))
    fresh = sim_of(work / "m.onnx", "tf")
    with pytest.raises(ExportError, match=r"activation_encodings\[0\].*scale must be > 0 \(the "
                                          r"grid step\), got -0.5"):
        fresh.load_encodings(path, strict=True)
    assert not fresh.is_calibrated


def test_non_utf8_encodings_file_is_an_export_error(work):
    path = work / "latin1.encodings"
    text = '{"version": "1.0.0", "producer": "caf\xe9"}'
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ExportError, match=f"is not UTF-8 text \\(byte 0xe9 at offset "
                                          f"{text.index(chr(0xe9))}\\)"):
        qsim.read_encodings(path)


def test_a_batch_without_samples_is_refused_and_leaves_the_sim_uncalibrated(work):
    sim = sim_of(work / "m.onnx", "tf")
    with pytest.raises(FeedError, match="calibration batch 1: input 'x' has no elements "
                                        "\\(shape \\(0, 3\\)\\)"):
        sim.compute_encodings([{"x": data(4)}, {"x": np.zeros((0, 3), np.float32)}])
    assert not sim.is_calibrated


# ---------------------------------------------------------------- 8. labels

@pytest.mark.parametrize("bad", [5, -1])
def test_out_of_range_labels(capsys, work, bad):
    labels = np.arange(26) % 5
    labels[3] = bad
    np.save(work / "labels.npy", labels)
    user_error(capsys, "analyze", work / "m.onnx", "--calib", work / "calib.npz", "--labels",
               work / "labels.npy", "--out", work / "rep",
               match=f"holds label {bad}, but the model's output 'y' has classes 0..4")


def test_out_of_range_labels_with_a_dynamic_class_axis(capsys, tmp_path):
    gemm_model(tmp_path / "m.onnx", "N")
    model = onnx.load(str(tmp_path / "m.onnx"))           # output [N, C]: C not fixed
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "C"
    onnx.save(model, str(tmp_path / "m.onnx"))
    np.savez(tmp_path / "calib.npz", x=data())
    np.save(tmp_path / "labels.npy", np.full(26, 7))
    user_error(capsys, "analyze", tmp_path / "m.onnx", "--calib", tmp_path / "calib.npz",
               "--labels", tmp_path / "labels.npy", "--out", tmp_path / "rep", "--quiet",
               match="label 7 is not a class of the model's output (shape [26, 5]: classes 0..4 along axis 1)")
    assert not (tmp_path / "rep").exists()


# ---------------------------------------------------------------- 9. the smaller ones

@pytest.mark.parametrize("option", ["--calib", "--eval", "--labels"])
def test_data_options_without_a_model(capsys, work, option):
    command = "quantize" if option == "--calib" else "analyze"
    user_error(capsys, command, option, work / "calib.npz",
               match=f"{option} needs MODEL.onnx (without a model qsim runs the bundled example")


def test_percentile_without_the_percentile_scheme(capsys, work):
    user_error(capsys, "quantize", work / "m.onnx", "--calib", work / "calib.npz",
               "--percentile", "99", match="--percentile 99 needs --scheme percentile (the "
                                          "scheme is tf_enhanced)")


@pytest.mark.parametrize("command", ["quantize", "inspect"])
def test_empty_model_file(capsys, work, command):
    (work / "empty.onnx").write_bytes(b"")
    extra = ["--calib", work / "calib.npz"] if command == "quantize" else []
    user_error(capsys, command, work / "empty.onnx", *extra,
               match=f"model file '{work / 'empty.onnx'}' is empty (0 bytes)")


def test_a_model_without_a_graph(capsys, work):
    (work / "nograph.onnx").write_bytes(onnx.ModelProto(ir_version=8).SerializeToString())
    user_error(capsys, "inspect", work / "nograph.onnx", match="holds no graph")


def test_inspect_a_folder(capsys, work):
    user_error(capsys, "inspect", work, match=f"model file '{work}' is a folder; give a file")


def test_exported_files_follow_the_umask(capsys, work):
    old = os.umask(0o027)
    try:
        code, _, err = run_cli(capsys, "quantize", work / "m.onnx", "--calib", work / "calib.npz",
                               "--out", work / "out", "--qdq", "--quiet")
    finally:
        os.umask(old)
    assert code == 0, err
    modes = {p.name: p.stat().st_mode & 0o777 for p in (work / "out").iterdir()}
    assert modes == {"m.onnx": 0o640, "m.encodings": 0o640, "m_qdq.onnx": 0o640}


@pytest.mark.parametrize("option", ["--param-bw", "--act-bw"])
@pytest.mark.parametrize("value", ["0", "1", "17", "x"])
def test_bad_bitwidth_names_the_option_and_writes_nothing(capsys, work, option, value):
    line = user_error(capsys, "quantize", work / "m.onnx", "--calib", work / "calib.npz",
                      option, value, "--out", work / "out", match=f"argument {option}: ")
    assert "2..16" in line and "int" + value not in line
    assert not (work / "out").exists()


@pytest.mark.parametrize("op, hint", [("conv", "did you mean 'Conv'?"),
                                      ("Frobnicate", "not an ONNX operator type")])
def test_validate_config_knows_onnx_op_types(capsys, tmp_path, op, hint):
    from qsim.config.load import _builtin_text
    doc = json.loads(_builtin_text("per_tensor"))
    doc.setdefault("op_type", {})[op] = {"is_output_quantized": "True"}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(doc))
    assert op not in {s.name for s in onnx.defs.get_all_schemas()}
    code, out, err = run_cli(capsys, "validate-config", path)
    assert code == 2
    assert f"op_type.{op}: '{op}': {hint}" in out


def test_readme_lists_every_built_in_config():
    from qsim.config import load_config  # noqa: F401  (the package that defines them)
    from qsim.config.load import available_configs
    readme = (ROOT / "README.md").read_text()
    line = next(l for l in readme.splitlines() if l.startswith("Built-in configurations"))
    text = line + readme.split(line, 1)[1].split("\n\n", 1)[0]
    assert all(f"`{name}`" in text for name in available_configs())


def test_inspect_into_a_closed_pipe_is_quiet():
    model = ROOT / "qsim" / "data" / "digits_cnn.onnx"
    proc = subprocess.Popen([sys.executable, "-m", "qsim", "inspect", str(model)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()             # the reader is gone before the first line (`| head -0`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert err == "", err


def test_an_opset_older_than_onnx_runtime_runs(capsys, work):
    gemm_model(work / "op6.onnx", "N", opset=6)
    user_error(capsys, "inspect", work / "op6.onnx",
               match="declares ONNX opset 6; ONNX Runtime, which AIMET runs, supports opset 7 "
                     "and newer")


def test_an_opset_onnx_does_not_define(capsys, work):
    gemm_model(work / "op99.onnx", "N", opset=99)
    newest = onnx.defs.onnx_opset_version()
    user_error(capsys, "inspect", work / "op99.onnx",
               match=f"declares ONNX opset 99, but the newest opset ONNX defines "
                     f"(onnx {onnx.__version__}) is {newest}")


# ---------------------------------------------------------------- make test and Hypothesis

def _make_test(tmp_path, pytest_cmd: str):
    stamp = tmp_path / "stamp"
    stamp.touch()                           # newer than pyproject.toml: setup does nothing
    return subprocess.run(["make", "-s", "-C", str(ROOT), "test", f"STAMP={stamp}",
                           f"PYTEST={pytest_cmd}"], capture_output=True, text=True, timeout=60)


def test_make_test_runs_and_reports_both_halves_whatever_the_first_gives(tmp_path):
    log = tmp_path / "log"
    failing = _make_test(tmp_path, f"sh -c 'echo half >> {log}; exit 1' --")
    assert failing.returncode != 0
    assert log.read_text() == "half\nhalf\n"
    assert "whole suite (Numba): FAILED (pytest exit 1)" in failing.stdout
    assert "NumPy twins (NUMBA_DISABLE_JIT=1): FAILED (pytest exit 1)" in failing.stdout
    passing = _make_test(tmp_path, "true")
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "whole suite (Numba): passed" in passing.stdout
    assert "NumPy twins (NUMBA_DISABLE_JIT=1): passed" in passing.stdout


def test_a_saved_hypothesis_failure_does_not_grow_the_failure_count(tmp_path):
    """Under the ci profile make test uses, runs are derandomized and the example database is
    not used: the same failures each run, and nothing is saved to be replayed later."""
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "test_prop.py").write_text(
        "from hypothesis import given, settings, strategies as st\n"
        "@given(st.integers())\n"
        "def test_small(n):\n"
        "    assert n < 1000\n"
        "@given(st.integers())\n"
        "def test_fine(n):\n"
        "    assert n == n\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"}

    def run(*profile):
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               *profile, "test_prop.py"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=120, env=env)
        return proc.stdout.strip().splitlines()[-1].split(" failed")[0]

    assert run() == "1"                     # a plain run finds the failure and saves it
    saved = snapshot(tmp_path / ".hypothesis")
    assert saved
    counts = [run("--hypothesis-profile=ci") for _ in range(3)]
    assert counts == ["1"] * 3, counts
    assert snapshot(tmp_path / ".hypothesis") == saved     # nothing read back or added
