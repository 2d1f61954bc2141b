"""``qsim finetune`` as a user meets it: bad input is one line on stderr with exit status 2 and
nothing written; a run calibrates, trains, reports accuracy and exports files that another sim
(and ONNX Runtime) load back."""
from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest

import qsim
from qsim.cli import BUNDLED_DATA, BUNDLED_MODEL

from .test_cli import assert_user_error, run_cli

MODEL = str(BUNDLED_MODEL)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The bundled digits: calibration images, the first 64 labelled test images to train on,
    the next 100 to evaluate on; and broken label files."""
    d = tmp_path_factory.mktemp("finetune_data")
    with np.load(BUNDLED_DATA) as data:
        calib, x, y = data["calib_x"][:32], data["test_x"], data["test_y"]
    np.savez(d / "calib.npz", input=calib)
    np.savez(d / "train.npz", input=x[:64])
    np.save(d / "labels.npy", y[:64])
    np.savez(d / "eval.npz", input=x[64:164])
    np.save(d / "eval_labels.npy", y[64:164])
    np.save(d / "short_labels.npy", y[:63])
    np.save(d / "big_labels.npy", np.where(np.arange(64) == 5, 10, y[:64]))
    np.save(d / "negative_labels.npy", np.where(np.arange(64) == 5, -1, y[:64]))
    np.save(d / "float_labels.npy", y[:64].astype(np.float32))
    (d / "a_file").write_text("x")
    return d


def args(files, out, *extra):
    return ["finetune", MODEL, "--calib", files / "calib.npz", "--train", files / "train.npz",
            "--labels", files / "labels.npy", "--out", out, *extra]


# ---------------------------------------------------------------- user errors: one line, exit 2

@pytest.mark.parametrize("flag, name, match", [
    ("--train", "nope.npz", "training file"),
    ("--labels", "nope.npy", "labels file"),
    ("--calib", "nope.npz", "calibration file")])
def test_missing_file(capsys, files, tmp_path, flag, name, match):
    argv = args(files, tmp_path / "out")
    argv[argv.index(flag) + 1] = files / name
    line = assert_user_error(capsys, *argv, match="does not exist")
    assert match in line and line.startswith("qsim finetune: error:")
    assert not (tmp_path / "out").exists()


def test_missing_model(capsys, files, tmp_path):
    argv = args(files, tmp_path / "out")
    argv[1] = files / "nope.onnx"
    assert_user_error(capsys, *argv, match="model file")


@pytest.mark.parametrize("labels, match", [
    ("short_labels.npy", "has 63 labels but the training file"),
    ("big_labels.npy", "holds label 10, but the model's output 'logits' has classes 0..9"),
    ("negative_labels.npy", "holds label -1"),
    ("float_labels.npy", "1-D integer array")])
def test_bad_training_labels(capsys, files, tmp_path, labels, match):
    argv = args(files, tmp_path / "out")
    argv[argv.index("--labels") + 1] = files / labels
    assert_user_error(capsys, *argv, match=match)
    assert not (tmp_path / "out").exists()


def test_bad_evaluation_labels(capsys, files, tmp_path):
    assert_user_error(capsys, *args(files, tmp_path / "out", "--eval", files / "eval.npz",
                                    "--eval-labels", files / "labels.npy"),
                      match="has 64 labels but the evaluation file")


@pytest.mark.parametrize("extra, match", [
    (["--eval", "EVAL"], "--eval needs --eval-labels"),
    (["--eval-labels", "LABELS"], "--eval-labels needs --eval")])
def test_eval_and_its_labels_come_together(capsys, files, tmp_path, extra, match):
    extra = [{"EVAL": files / "eval.npz", "LABELS": files / "eval_labels.npy"}.get(e, e)
             for e in extra]
    assert_user_error(capsys, *args(files, tmp_path / "out", *extra), match=match)


@pytest.mark.parametrize("extra, match", [
    (["--scheme", "percentile"], "--scheme: invalid choice: 'percentile'"),
    (["--scheme", "tf_enhancd"], "invalid choice"),
    (["--optimizer", "rmsprop"], "--optimizer: invalid choice: 'rmsprop'"),
    (["--lr", "0"], "--lr: must be a finite number > 0, got 0"),
    (["--lr", "-0.1"], "--lr: must be a finite number > 0"),
    (["--lr", "nan"], "--lr: must be a finite number > 0"),
    (["--lr", "fast"], "--lr: expected a number > 0"),
    (["--epochs", "0"], "--epochs: must be ≥ 1, got 0"),
    (["--epochs", "-2"], "--epochs"),
    (["--batch-size", "0"], "--batch-size")])
def test_bad_option(capsys, files, tmp_path, extra, match):
    assert_user_error(capsys, *args(files, tmp_path / "out", *extra), match=match)
    assert not (tmp_path / "out").exists()


def test_required_options(capsys, files, tmp_path):
    for flag in ("--train", "--labels", "--out", "--calib"):
        argv = args(files, tmp_path / "out")
        i = argv.index(flag)
        del argv[i:i + 2]
        assert_user_error(capsys, *argv, match=flag)


@pytest.mark.parametrize("out", ["a_file", "a_file/sub"])
def test_unwritable_out_folder(capsys, files, out):
    assert_user_error(capsys, *args(files, files / out), match="output folder")


def test_export_over_the_model_is_refused(capsys, tmp_path, files):
    model = tmp_path / "digits_cnn.onnx"
    model.write_bytes(BUNDLED_MODEL.read_bytes())
    argv = args(files, tmp_path)
    argv[1] = model
    assert_user_error(capsys, *argv, match="would overwrite the model")
    assert model.read_bytes() == BUNDLED_MODEL.read_bytes()


def test_a_failed_export_writes_nothing(capsys, files, tmp_path, monkeypatch):
    """The second file of the export fails: the folder keeps what it held, and no temporary
    folder is left behind."""
    import qsim.export as export
    out = tmp_path / "out"
    out.mkdir()
    (out / "digits_cnn.encodings").write_text("old")
    real = export.write_atomic
    calls = []

    def failing(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise export.ExportError(f"cannot write '{path}': disk full")
        return real(path, data)

    monkeypatch.setattr(export, "write_atomic", failing)
    assert_user_error(capsys, *args(files, out, "--quiet"), match="disk full")
    assert len(calls) == 2
    assert sorted(p.name for p in out.iterdir()) == ["digits_cnn.encodings"]
    assert (out / "digits_cnn.encodings").read_text() == "old"


# ---------------------------------------------------------------- a run

def _accuracy(logits, labels) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels) * 100)


@pytest.fixture(scope="module")
def run(files, tmp_path_factory):
    """One W4A4 run (3 epochs of 64 samples, batches of 32, Adam) into a folder that already
    holds another file."""
    out = tmp_path_factory.mktemp("finetune_out")
    (out / "notes.txt").write_text("mine")
    (out / "digits_cnn.encodings").write_text("an older export")
    import contextlib
    import io
    err = io.StringIO()
    stdout = io.StringIO()
    from qsim.cli import main
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args(
            files, out, "--param-bw", "4", "--act-bw", "4", "--epochs", "3", "--batch-size", "32",
            "--lr", "1e-3", "--eval", files / "eval.npz", "--eval-labels",
            files / "eval_labels.npy")])
    return code, stdout.getvalue(), err.getvalue(), out


def test_run_succeeds_and_reports(run):
    code, out, err, _ = run
    assert code == 0, err
    assert err == ""                       # no progress bar when stderr is not a terminal
    assert "fine-tuning:          3 epoch(s) of 64 samples, batch 32, adam lr 0.001, ranges learned" in out
    assert re.search(r"training: +6 steps in", out)
    for what in ("FP32", "calibrated", "fine-tuned"):
        assert re.search(rf"accuracy {what}: +\d+\.\d\d %", out), out


def test_reported_fp32_accuracy_is_onnx_runtimes(run, files):
    _, out, _, _ = run
    x, y = np.load(files / "eval.npz")["input"], np.load(files / "eval_labels.npy")
    sess = ort.InferenceSession(MODEL, providers=["CPUExecutionProvider"])
    expected = _accuracy(sess.run(None, {"input": x})[0], y)
    assert f"accuracy FP32:        {expected:.2f} % on 100 evaluation samples" in out


def test_export_holds_the_fine_tuned_model(run, files):
    """The exported model differs from the input in its weights (it was trained), runs in ONNX
    Runtime, and with the exported encodings loaded into a fresh sim gives the accuracy the run
    printed; files already in the folder are kept, the older export is replaced."""
    _, out, _, folder = run
    assert sorted(p.name for p in folder.iterdir()) == ["digits_cnn.encodings", "digits_cnn.onnx",
                                                         "notes.txt"]
    assert (folder / "notes.txt").read_text() == "mine"
    original = qsim.fold_batch_norms(qsim.load_onnx(MODEL))[0]
    trained = qsim.load_onnx(str(folder / "digits_cnn.onnx"))
    moved = [k for k, v in trained.params.items() if k in original.params
             and np.asarray(v).dtype == np.float32 and not np.array_equal(v, original.params[k])]
    assert moved, "no weight changed during fine-tuning"
    x, y = np.load(files / "eval.npz")["input"], np.load(files / "eval_labels.npy")
    ort.InferenceSession(str(folder / "digits_cnn.onnx"),
                         providers=["CPUExecutionProvider"]).run(None, {"input": x})
    sim = qsim.QuantizationSimModel(trained, quant_scheme="tf", param_type="int4",
                                    activation_type="int4", config_file="default")
    sim.load_encodings(folder / "digits_cnn.encodings")
    acc = _accuracy(sim.run({"input": x})["logits"], y)
    assert f"accuracy fine-tuned:  {acc:.2f} %" in out


def test_quiet_run_without_eval_sgd(capsys, files, tmp_path):
    code, out, err = run_cli(capsys, *args(files, tmp_path / "o", "--optimizer", "sgd", "--lr",
                                           "0.01", "--scheme", "post_training_tf", "--quiet",
                                           "--batch-size", "64"))
    assert code == 0, err
    assert "sgd lr 0.01, ranges fixed" in out and "accuracy" not in out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["digits_cnn.encodings",
                                                                  "digits_cnn.onnx"]


# ---------------------------------------------------------------- other shapes of model

def gemm_model(path, batch, classes):
    """``y = Gemm(x[batch, 3], W[3, 5]) + B`` whose output is declared ``[batch, classes]``
    (``batch``, ``classes``: an int, static, or a name, dynamic)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, classes])],
        [numpy_helper.from_array(rng.standard_normal((3, 5)).astype(np.float32), "W"),
         numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def gemm_files(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((26, 3)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    np.save(tmp_path / "y.npy", rng.integers(0, 5, 26))
    np.save(tmp_path / "y5.npy", np.where(np.arange(26) == 3, 5, rng.integers(0, 5, 26)))
    return tmp_path


def test_label_beyond_a_dynamic_class_dimension(capsys, gemm_files):
    """The output's class dimension is a name in the file: the model's real output (5 classes)
    decides, after calibration, before training."""
    m = gemm_model(gemm_files / "m.onnx", "N", "C")
    assert_user_error(capsys, "finetune", m, "--calib", gemm_files / "x.npz", "--train",
                      gemm_files / "x.npz", "--labels", gemm_files / "y5.npy", "--out",
                      gemm_files / "out", match="--labels holds label 5, but the model's output "
                                                "'y' has classes 0..4")
    assert not (gemm_files / "out").exists()


def test_fixed_batch_model_trains_in_batches_of_its_size(capsys, gemm_files):
    m = gemm_model(gemm_files / "s.onnx", 4, 5)
    code, out, err = run_cli(capsys, "finetune", m, "--calib", gemm_files / "x.npz", "--train",
                             gemm_files / "x.npz", "--labels", gemm_files / "y.npy", "--epochs",
                             "2", "--out", gemm_files / "out")
    assert code == 0, err
    assert "training file" in err and "the last 2 are not used" in err
    assert "fine-tuning:          2 epoch(s) of 24 samples, batch 4" in out
    assert re.search(r"training: +12 steps in", out)


def test_a_failed_export_into_a_new_folder_leaves_no_folder(capsys, files, tmp_path, monkeypatch):
    import qsim.export as export

    def failing(path, data):
        raise export.ExportError(f"cannot write '{path}': disk full")

    monkeypatch.setattr(export, "write_atomic", failing)
    assert_user_error(capsys, *args(files, tmp_path / "new" / "out", "--quiet"), match="disk full")
    assert not (tmp_path / "new" / "out").exists()


def test_diverging_training_is_an_error_and_writes_nothing(capsys, files, tmp_path):
    line = assert_user_error(capsys, *args(files, tmp_path / "out", "--optimizer", "sgd", "--lr",
                                           "3e38", "--quiet"), match="training diverged")
    assert "try a smaller --lr (now 3e+38)" in line
    assert not (tmp_path / "out").exists()
