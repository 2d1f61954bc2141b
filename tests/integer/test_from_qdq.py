"""``QuantizationSimModel.from_qdq``: a QDQ model read back into a calibrated sim.

Checked against ONNX Runtime running the same QDQ file with graph optimizations off (each Q/DQ
pair then runs as written, so a sim with the pairs' encodings and half-even rounding must give
its bits), on qsim's own exports (float and int32 biases, 8-/16-bit activations, per-channel
and 4-bit weights of the golden AIMET cases) and on models ONNX Runtime's ``quantize_static``
made; the encodings read back equal the exporting sim's."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

import qsim
from qsim import QuantizationSimModel
from qsim.errors import GraphError
from tests.ort_util import CalibrationBatches, converted_model, session_options
from tests.test_cli import run_cli

from .cases import CASES, case

DATA_DIR = Path(qsim.__file__).parent / "data"

#: a spread of the integer-target cases: per-tensor / per-channel, 8- and 16-bit activations,
#: 4-bit weights, the digits CNN, a transformer and real convolutional architectures
SAMPLE = ["digits_a8", "cnn-seed0_a8", "cnn-seed0_a16",
          "models/mlp_s33_strict_sym_tf_w8a8_a8",          # strict symmetric: int8 zero point -1
          "models/mbv2_s30_per_channel_tfe_w8a8_a16",
          "models/misc_s32_htp_v75_tf_w8a16_a8",           # tied quantizers
          "real/shufflenet_v2_x0_5_s40_htp_v75_tf_w8a16_a16",
          "real/regnet_tiny_s46_htp_v81_tf_w4a16_a16",     # 4-bit weights, opset 21 types
          "real/efficientnet_tiny_s45_dsp_tf_w8a8_a8",     # asymmetric (uint32) biases
          "real/unet_tiny_s47_per_channel_tf_w8a16_a16",
          "real/norms_tiny_s54_htp_v75_tf_w8a8_a8",        # fused norm groups
          "real/vit_tiny_s44_per_channel_tfe_w8a16_a16",
          "real/bert_tiny_s48_htp_v73_pcl_tf_w4a8_a8"]


def _ort_plain(path, feeds) -> dict:
    """ONNX Runtime, graph optimizations off: the Q/DQ pairs run as written."""
    session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def _assert_bitwise(got: dict, want: dict) -> None:
    assert set(want) <= set(got)
    for name, w in want.items():
        assert got[name].dtype == w.dtype, name
        np.testing.assert_array_equal(got[name].view(np.uint8), w.view(np.uint8), err_msg=name)


def test_sample_names_integer_cases():
    assert set(SAMPLE) <= set(CASES), sorted(set(SAMPLE) - set(CASES))


@pytest.mark.parametrize("quantize_bias", [False, True], ids=["float_bias", "int32_bias"])
@pytest.mark.parametrize("case_id", SAMPLE)
def test_own_export_reads_back(case_id, quantize_bias, tmp_path):
    sim, feeds = case(case_id)
    path = sim.export_qdq(tmp_path / "model.onnx", quantize_bias=quantize_bias)
    back = QuantizationSimModel.from_qdq(path)
    assert back.is_calibrated and back.rounding_mode == "half_even"
    _assert_bitwise(back.run(feeds), _ort_plain(path, feeds))
    # one quantizer per exported tensor, with the exporting sim's grid
    exported = {t: sim._handles[q].quantizer.encoding for t, q in sim.placement.quantizer_of.items()
                if sim._handles[q].enabled}
    mine = {t: back._handles[q].quantizer.encoding for t, q in back.placement.quantizer_of.items()}
    assert set(mine) == set(exported)
    for t, enc in exported.items():
        np.testing.assert_array_equal(mine[t].delta, np.float32(enc.delta), err_msg=t)
        np.testing.assert_array_equal(mine[t].offset, enc.offset, err_msg=t)
        assert mine[t].bitwidth == enc.bitwidth and mine[t].axis == enc.axis, t


@pytest.mark.parametrize("act, weight, per_channel", [
    (QuantType.QUInt8, QuantType.QInt8, True),
    (QuantType.QInt8, QuantType.QInt8, False),
    (QuantType.QUInt16, QuantType.QInt8, True),
    (QuantType.QUInt8, QuantType.QInt4, True),
])
def test_onnxruntime_quantizer_models_read_back(tmp_path, act, weight, per_channel):
    data = np.load(DATA_DIR / "digits.npz")
    source = converted_model(DATA_DIR / "digits_cnn.onnx", tmp_path / "digits21.onnx", 21)
    path = tmp_path / "q.onnx"
    quantize_static(str(source), str(path), CalibrationBatches(data["calib_x"][:64]),
                    quant_format=QuantFormat.QDQ, activation_type=act, weight_type=weight,
                    per_channel=per_channel)
    back = QuantizationSimModel.from_qdq(path)
    feeds = {"input": data["test_x"][:64]}
    _assert_bitwise(back.run(feeds), _ort_plain(path, feeds))
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in back.graph.nodes)
    assert all(h.spec.is_param for h in back._handles.values()
               if h.spec.tensors[0] in back.graph.params and h.spec.kind == "weight")


def test_read_back_sim_exports_and_reads_again(tmp_path):
    """from_qdq → export_qdq → from_qdq is a fixed point (same outputs as ONNX Runtime)."""
    sim, feeds = case("digits_a8")
    first = QuantizationSimModel.from_qdq(sim.export_qdq(tmp_path / "a.onnx"))
    again = first.export_qdq(tmp_path / "b.onnx", quantize_bias=False)
    second = QuantizationSimModel.from_qdq(again)
    _assert_bitwise(second.run(feeds), _ort_plain(again, feeds))
    _assert_bitwise(second.run(feeds), first.run(feeds))


def test_read_back_sim_predicts_onnxruntime_default_session(tmp_path):
    """The integer model of the read-back sim is ONNX Runtime's default session on the
    original QDQ file; the sim also re-calibrates and trains."""
    sim, feeds = case("digits_a8")
    path = sim.export_qdq(tmp_path / "a.onnx")
    back = QuantizationSimModel.from_qdq(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    _assert_bitwise(back.to_integer("onnxruntime").run(feeds), want)
    from qsim.train.losses import cross_entropy
    labels = np.load(DATA_DIR / "digits.npz")["test_y"][:64]
    loss, grads = back.value_and_grad(feeds, cross_entropy(labels))
    assert np.isfinite(loss) and grads and all(np.all(np.isfinite(g)) for g in grads.values())
    calib = np.load(DATA_DIR / "digits.npz")["calib_x"]
    back.compute_encodings([{"input": calib[i:i + 32]} for i in range(0, 128, 32)])
    assert back.is_calibrated


# ---- what from_qdq refuses ----------------------------------------------------------------------

def _tiny(nodes, inits, out_name="y") -> onnx.ModelProto:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])
    y = onnx.helper.make_tensor_value_info(out_name, onnx.TensorProto.FLOAT, [2, 3])
    graph = onnx.helper.make_graph(nodes, "tiny", [x], [y], initializer=inits)
    return onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 19)])


def _qdq_inits():
    return [onnx.numpy_helper.from_array(np.array(0.1, np.float32), "s"),
            onnx.numpy_helper.from_array(np.array(128, np.uint8), "z")]


def test_refuses_a_model_without_qdq():
    model = _tiny([onnx.helper.make_node("Relu", ["x"], ["y"], name="relu")], [])
    with pytest.raises(GraphError, match="not a QDQ model"):
        QuantizationSimModel.from_qdq(model)


def test_refuses_a_qoperator_model():
    nodes = [onnx.helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             onnx.helper.make_node("Identity", ["xq"], ["xq2"], name="integer_op"),
             onnx.helper.make_node("DequantizeLinear", ["xq2", "s", "z"], ["y"], name="dq")]
    with pytest.raises(GraphError, match="'dq'.*'integer_op'.*run it with qsim.load_onnx"):
        QuantizationSimModel.from_qdq(_tiny(nodes, _qdq_inits()))


def test_refuses_a_tensor_also_read_in_float():
    nodes = [onnx.helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             onnx.helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xdq"], name="dq"),
             onnx.helper.make_node("Add", ["xdq", "x"], ["y"], name="add")]
    with pytest.raises(GraphError, match="tensor 'x' is quantized by 'q' but also read in float "
                                         r"by node\(s\) \['add'\]"):
        QuantizationSimModel.from_qdq(_tiny(nodes, _qdq_inits()))


def test_refuses_mismatched_pairs():
    inits = _qdq_inits() + [onnx.numpy_helper.from_array(np.array(0.2, np.float32), "s2")]
    nodes = [onnx.helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
             onnx.helper.make_node("DequantizeLinear", ["xq", "s2", "z"], ["xdq"], name="dq"),
             onnx.helper.make_node("Relu", ["xdq"], ["y"], name="relu")]
    with pytest.raises(GraphError, match="'q' and 'dq'.*different scales"):
        QuantizationSimModel.from_qdq(_tiny(nodes, inits))


def test_refuses_requantization_chains():
    nodes = [onnx.helper.make_node("QuantizeLinear", ["x", "s", "z"], ["a"], name="q1"),
             onnx.helper.make_node("DequantizeLinear", ["a", "s", "z"], ["b"], name="dq1"),
             onnx.helper.make_node("QuantizeLinear", ["b", "s", "z"], ["c"], name="q2"),
             onnx.helper.make_node("DequantizeLinear", ["c", "s", "z"], ["d"], name="dq2"),
             onnx.helper.make_node("Relu", ["d"], ["y"], name="relu")]
    with pytest.raises(GraphError, match="'q2' quantizes 'b'.*requantization chain"):
        QuantizationSimModel.from_qdq(_tiny(nodes, _qdq_inits()))


def test_graph_output_keeps_its_name():
    nodes = [onnx.helper.make_node("Relu", ["x"], ["r"], name="relu"),
             onnx.helper.make_node("QuantizeLinear", ["r", "s", "z"], ["rq"], name="q"),
             onnx.helper.make_node("DequantizeLinear", ["rq", "s", "z"], ["y"], name="dq")]
    model = _tiny(nodes, _qdq_inits())
    back = QuantizationSimModel.from_qdq(model)
    assert back.graph.output_names == ("y",) and "y" in back.quantizers
    x = np.linspace(-30, 30, 6, dtype=np.float32).reshape(2, 3)
    session = ort.InferenceSession(model.SerializeToString(), session_options(),
                                   providers=["CPUExecutionProvider"])
    _assert_bitwise(back.run({"x": x}), {"y": session.run(None, {"x": x})[0]})


# ---- the command line: qsim quantize / analyze --from-qdq -----------------------------------------

@pytest.fixture(scope="module")
def qdq_file(tmp_path_factory):
    """ONNX Runtime's quantize_static model of the digits CNN (per-channel int8 weights) and
    a calibration file."""
    d = tmp_path_factory.mktemp("cli_qdq")
    data = np.load(DATA_DIR / "digits.npz")
    np.savez(d / "calib.npz", input=data["calib_x"][:64])
    source = converted_model(DATA_DIR / "digits_cnn.onnx", d / "digits21.onnx", 21)
    quantize_static(str(source), str(d / "q.onnx"), CalibrationBatches(data["calib_x"][:64]),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True)
    return d


def test_cli_converts_a_qdq_model_to_aimet_files(capsys, qdq_file, tmp_path):
    """``qsim quantize Q.onnx --from-qdq`` writes the FP32 model and a 2.0.0 encodings file
    whose every entry is the scale and zero point of the model's own Q/DQ nodes."""
    code, out, err = run_cli(capsys, "quantize", qdq_file / "q.onnx", "--from-qdq", "--calib",
                          qdq_file / "calib.npz", "--encoding-version", "2.0.0", "--out", tmp_path,
                          "--quiet")
    assert code == 0, err
    assert "read from the model's Q/DQ nodes" in out and "calibration:" not in out
    doc = json.loads((tmp_path / "q.encodings").read_text())
    model = onnx.load(qdq_file / "q.onnx")
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    dq_of = {n.input[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    q_of = {n.input[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear"}
    checked = 0
    for e in doc["encodings"]:
        if e["output_dtype"] in ("int32", "uint32"):
            continue                              # an int32 bias entry the export derives
        node = q_of.get(e["name"])
        if node is None:                          # a weight: its DQ reads the int8 initializer
            node = next((n for n in dq_of.values() if n.output[0] == e["name"]), None)
        scale = inits[node.input[1]]
        np.testing.assert_array_equal(np.float32(e["y_scale"]), scale, err_msg=e["name"])
        zp = inits[node.input[2]]
        assert e["output_dtype"] == zp.dtype.name, e["name"]
        np.testing.assert_array_equal(np.asarray(e.get("y_zero_point", 0)).astype(np.int64)
                                      * np.ones(zp.shape, np.int64), zp.astype(np.int64))
        checked += 1
    assert checked == sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear") + \
        sum(1 for n in model.graph.node if n.op_type == "DequantizeLinear"
            and n.input[0] in inits and inits[n.input[0]].dtype != np.int32)
    exported = onnx.load(tmp_path / "q.onnx")
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in exported.graph.node)


@pytest.mark.parametrize("extra, message", [
    (["--scheme", "tf"], "--scheme does not apply; drop it"),
    (["--act-bw", "8", "--config", "default"], "--config, --act-bw do not apply; drop them"),
])
def test_cli_from_qdq_refuses_calibration_options(capsys, qdq_file, tmp_path, extra, message):
    code, out, err = run_cli(capsys, "quantize", qdq_file / "q.onnx", "--from-qdq", "--calib",
                          qdq_file / "calib.npz", "--out", tmp_path / "o", *extra)
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_cli_from_qdq_refuses_fp32_models_and_no_model(capsys, qdq_file, tmp_path):
    code, _, err = run_cli(capsys, "quantize", qdq_file / "digits21.onnx", "--from-qdq", "--calib",
                        qdq_file / "calib.npz", "--out", tmp_path / "o")
    assert code == 2 and "it is not a QDQ model" in err and not (tmp_path / "o").exists()
    code, _, err = run_cli(capsys, "analyze", "--from-qdq", "--out", tmp_path / "o")
    assert code == 2 and "--from-qdq needs MODEL.onnx" in err


def test_to_integer_names_a_bad_kernel_family():
    from qsim.errors import ConfigError
    sim, _ = case("digits_a8")
    with pytest.raises(ConfigError, match="fp32_kernels='sse' is not a kernel family"):
        sim.to_integer("onnxruntime", fp32_kernels="sse")
