"""The qsim command as a new user meets it: every user error is one line on stderr with exit
status 2 (no traceback unless --debug); successful runs write what they say, checked against
ONNX Runtime and the files themselves."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from qsim.cli import BUNDLED_DATA, BUNDLED_MODEL, main, progress

MODEL = str(BUNDLED_MODEL)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small calibration/evaluation files for the bundled digits CNN, and some broken files."""
    d = tmp_path_factory.mktemp("cli_data")
    with np.load(BUNDLED_DATA) as data:
        calib, test_x, test_y = data["calib_x"][:32], data["test_x"][:100], data["test_y"][:100]
    np.savez(d / "calib.npz", input=calib)
    np.savez(d / "eval.npz", input=test_x)
    np.save(d / "labels.npy", test_y)
    np.save(d / "short_labels.npy", test_y[:7])
    np.savez(d / "wrong_name.npz", image=calib)
    np.savez(d / "wrong_shape.npz", input=calib.reshape(len(calib), 64))
    (d / "not_npz.npz").write_text("these are not arrays")
    (d / "not_onnx.onnx").write_text("this is not a model")
    (d / "bad_config.json").write_text(json.dumps({"defaults": {"ops": 3}}))
    (d / "broken.json").write_text("{oops")
    (d / "a_file").write_text("")
    return d


def run_cli(capsys, *argv):
    """(exit status, stdout, stderr) of ``qsim argv`` run in this process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:             # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(capsys, *argv, match: str):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert "Traceback" not in err
    assert match in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- user errors: one line, exit 2

@pytest.mark.parametrize("command", ["quantize", "analyze"])
def test_missing_model_file(capsys, files, command):
    line = assert_user_error(capsys, command, files / "nope.onnx", "--calib", files / "calib.npz",
                             match="does not exist")
    assert line.startswith(f"qsim {command}: error: model file")


def test_missing_calibration_file(capsys, files):
    assert_user_error(capsys, "quantize", MODEL, "--calib", files / "nope.npz",
                      match="calibration file")


def test_model_without_calib(capsys):
    assert_user_error(capsys, "quantize", MODEL, match="--calib calib.npz is required")


def test_wrong_input_name_in_npz_names_both_sides(capsys, files):
    line = assert_user_error(capsys, "quantize", MODEL, "--calib", files / "wrong_name.npz",
                             match="missing ['input']")
    assert "['image']" in line


def test_wrong_shape_in_npz_is_caught_before_calibrating(capsys, files):
    assert_user_error(capsys, "quantize", MODEL, "--calib", files / "wrong_shape.npz",
                      match="does not fit the model")


def test_file_that_is_not_an_npz(capsys, files):
    assert_user_error(capsys, "quantize", MODEL, "--calib", files / "not_npz.npz",
                      match="not a readable .npz archive")


def test_file_that_is_not_an_onnx_model(capsys, files):
    assert_user_error(capsys, "quantize", files / "not_onnx.onnx", "--calib", files / "calib.npz",
                      match="not_onnx.onnx")


@pytest.mark.parametrize("config, match", [("bad_config.json", "$.defaults.ops"),
                                           ("broken.json", "invalid JSON"),
                                           ("no_such_config", "not a built-in config name")])
def test_bad_config(capsys, files, config, match):
    path = files / config if config.endswith(".json") else config
    assert_user_error(capsys, "quantize", MODEL, "--calib", files / "calib.npz", "--config", path,
                      match=match)


@pytest.mark.parametrize("out", ["a_file", "a_file/sub"])
def test_unwritable_out_folder(capsys, files, out):
    assert_user_error(capsys, "quantize", MODEL, "--calib", files / "calib.npz", "--out",
                      files / out, match="output folder")


@pytest.mark.parametrize("value, match", [("0", "must be ≥ 1, got 0"), ("-3", "must be ≥ 1"),
                                          ("x", "whole number")])
def test_bad_batch_size(capsys, files, value, match):
    line = assert_user_error(capsys, "quantize", MODEL, "--calib", files / "calib.npz",
                             "--batch-size", value, match=match)
    assert "--batch-size" in line


@pytest.mark.parametrize("argv, match", [
    (["quantize", "--scheme", "minmax"], "invalid choice: 'minmax'"),
    (["quantize", "--param-bw", "40"], "--param-bw: must be 2..16 bits, got 40"),
    (["quantize", "--scheme", "percentile", "--percentile", "20"], "percentile"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_bad_options(capsys, argv, match):
    assert_user_error(capsys, *argv, match=match)


def test_labels_that_do_not_fit(capsys, files):
    assert_user_error(capsys, "analyze", MODEL, "--calib", files / "calib.npz", "--eval",
                      files / "eval.npz", "--labels", files / "short_labels.npy",
                      match="has 7 labels but --eval has 100 samples")


def test_debug_shows_the_traceback(capsys, files):
    with pytest.raises(Exception, match="does not exist"):
        main(["quantize", str(files / "nope.onnx"), "--calib", str(files / "calib.npz"), "--debug"])


def test_python_dash_m_qsim_exit_status_and_one_line(files):
    proc = subprocess.run([sys.executable, "-m", "qsim", "quantize", str(files / "nope.onnx"),
                           "--calib", str(files / "calib.npz")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"qsim quantize: error: model file '{files / 'nope.onnx'}' does not exist"
    assert proc.stdout == ""


# ---------------------------------------------------------------- validate-config and inspect

def test_validate_config_lists_every_problem_with_json_paths(capsys, files):
    code, out, err = run_cli(capsys, "validate-config", files / "bad_config.json")
    assert code == 2
    paths = [line.split(":")[0] for line in out.strip().splitlines()]
    assert "$.defaults.ops" in paths and "$.op_type" in paths and len(paths) >= 3
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("config", ["default", "per_tensor", "htp_v75"])
def test_validate_config_accepts_the_built_in_configs(capsys, config):
    code, out, _ = run_cli(capsys, "validate-config", config)
    assert code == 0 and out.strip() == f"{config}: valid"


def test_inspect_shows_graph_and_the_rule_behind_each_quantizer(capsys):
    code, out, _ = run_cli(capsys, "inspect", MODEL)
    assert code == 0
    assert "2 batch norms folded" in out
    assert "/classifier/Gemm" in out and "Gemm" in out
    # the per-channel weight rule of the default config and the Conv+Relu supergroup rule
    assert "op_type.Conv.per_channel_quantization=True" in out
    assert "supergroup Conv,Relu" in out


# ---------------------------------------------------------------- successful runs

def test_quantize_writes_the_export_and_prints_the_summary(capsys, files, tmp_path):
    out_dir = tmp_path / "export"
    code, out, err = run_cli(capsys, "quantize", MODEL, "--calib", files / "calib.npz",
                             "--out", out_dir, "--qdq", "--batch-size", "8")
    assert code == 0, err
    assert err == ""                                  # not a terminal: no progress bar
    assert "quantizers enabled:" in out and "post_training_tf_enhanced" in out
    assert "SQNR logits vs FP32:" in out and str(out_dir.resolve()) in out
    for name in ("digits_cnn.onnx", "digits_cnn.encodings", "digits_cnn_qdq.onnx"):
        assert (out_dir / name).is_file(), name
    doc = json.loads((out_dir / "digits_cnn.encodings").read_text())
    assert doc["version"] == "1.0.0" and len(doc["param_encodings"]) == 4
    # the exported FP32 model still computes what the original does (ONNX Runtime, both)
    x = np.load(files / "eval.npz")["input"]
    ref = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    exp = ort.InferenceSession(str(out_dir / "digits_cnn.onnx"),
                               providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(exp, ref, rtol=1e-4, atol=1e-4)
    qdq = ort.InferenceSession(str(out_dir / "digits_cnn_qdq.onnx"),
                               providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    labels = np.load(files / "labels.npy")
    assert np.mean(np.argmax(qdq, 1) == labels) >= np.mean(np.argmax(ref, 1) == labels) - 0.03
    # the summary's sim-vs-target figure is what ONNX Runtime's default session gives on the
    # export, counted here against the simulation over the calibration data
    import qsim
    from qsim.transforms import fold_batch_norms
    sim = qsim.QuantizationSimModel(fold_batch_norms(qsim.load_onnx(MODEL))[0],
                                    quant_scheme="tf_enhanced", config_file="default")
    calib = np.load(files / "calib.npz")["input"]
    sim.compute_encodings([{"input": calib[i:i + 8]} for i in range(0, len(calib), 8)])
    sess = ort.InferenceSession(str(out_dir / "digits_cnn_qdq.onnx"),
                                providers=["CPUExecutionProvider"])
    same = total = 0
    for i in range(0, len(calib), 8):
        got = sess.run(None, {"input": calib[i:i + 8]})[0]
        same += int(np.sum(got == sim.run({"input": calib[i:i + 8]})["logits"]))
        total += got.size
    assert f"outputs {same} of {total} values identical" in out


@pytest.mark.parametrize("version", ["0.6.1", "2.0.0"])
def test_quantize_other_encoding_versions(capsys, files, tmp_path, version):
    code, _, err = run_cli(capsys, "quantize", MODEL, "--calib", files / "calib.npz", "--out",
                           tmp_path, "--encoding-version", version, "--scheme", "tf")
    assert code == 0, err
    assert json.loads((tmp_path / "digits_cnn.encodings").read_text())["version"] == version


def test_the_bundled_example_reports_accuracy_that_onnx_runtime_confirms(capsys, tmp_path,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "quantize")
    assert code == 0, err
    with np.load(BUNDLED_DATA) as d:
        x, y = d["test_x"], d["test_y"]
    logits = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    fp32 = np.mean(np.argmax(logits, 1) == y) * 100
    assert f"accuracy FP32:        {fp32:.2f} % on {len(y)} held-out digits" in out
    quantized = float(out.split("accuracy quantized:")[1].split("%")[0])
    assert fp32 - 2.0 <= quantized <= 100.0
    assert (tmp_path / "qsim_out" / "digits_cnn.encodings").is_file()
    assert str((tmp_path / "qsim_out").resolve()) in out
    n = len(y) * 10   # the executor reproduces ONNX Runtime's FP32 logits bit for bit
    assert f"executor vs ONNX Runtime (FP32): {n} of {n} logits bit-identical" in out


def test_analyze_command_writes_report_and_numbers(capsys, files, tmp_path):
    code, out, err = run_cli(capsys, "analyze", MODEL, "--calib", files / "calib.npz", "--eval",
                             files / "eval.npz", "--labels", files / "labels.npy", "--out",
                             tmp_path, "--param-bw", "4", "--act-bw", "4")
    assert code == 0, err
    assert "costliest quantizers" in out
    doc = json.loads((tmp_path / "analysis.json").read_text())
    assert doc["metric"] == "accuracy" and doc["evaluation_samples"] == 100
    assert (tmp_path / "analysis.html").is_file()
    assert str((tmp_path / "analysis.html").resolve()) in out


def test_analyze_target_prints_the_integer_models_accuracy_and_the_gap(capsys, files, tmp_path):
    code, out, err = run_cli(capsys, "analyze", MODEL, "--calib", files / "calib.npz", "--eval",
                             files / "eval.npz", "--labels", files / "labels.npy", "--out",
                             tmp_path, "--target", "onnxruntime")
    assert code == 0, err
    doc = json.loads((tmp_path / "analysis.json").read_text())["target"]
    x, y = np.load(files / "eval.npz")["input"], np.load(files / "labels.npy")
    assert "accuracy onnxruntime:" in out and "sim vs onnxruntime:" in out
    assert doc["name"] == "onnxruntime" and doc["metric"] is not None
    # the integer model's accuracy is checked against ONNX Runtime in tests/test_analyze.py;
    # here: the report holds a row per enabled quantized tensor, the logits included
    assert "logits" in {t["tensor"] for t in doc["tensors"]} and len(x) == len(y)


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_works_before_and_after_the_command(files, where):
    argv = ["quantize", str(files / "nope.onnx"), "--calib", str(files / "calib.npz")]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    with pytest.raises(Exception, match="does not exist"):
        main(argv)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("quiet, terminal, shown", [(False, True, True), (True, True, False),
                                                    (False, False, False)])
def test_progress_bar_only_on_a_terminal_and_not_with_quiet(monkeypatch, quiet, terminal, shown):
    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    items = [np.zeros(4), np.zeros(4)]
    seen = list(progress(items, quiet=quiet, desc="calibrating", unit_of=len))
    assert len(seen) == 2
    text = stream.getvalue()
    assert ("calibrating" in text and "/8 [" in text and "sample/s" in text) == shown, text
