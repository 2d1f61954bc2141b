"""Bad encodings files are rejected with every problem named at once; writes are atomic."""
from __future__ import annotations

import copy
import json
import os

import numpy as np
import pytest

import qsim.export as export_mod
from qsim.encodings_io import load_encodings_into, parse_encodings, read_encodings
from qsim.errors import EncodingError, ExportError, NotCalibratedError
from qsim.export import encodings_document, write_atomic, write_encodings
from qsim.qdq import export_qdq, qdq_model

from .golden import eval_feeds, folder, golden_doc, new_sim, shared_calibrated_sim

CASE = "misc_s32_default_tf_w8a8"             # per-tensor, ties, default config
PC_CASE = "mbv2_s30_per_channel_tfe_w8a8"     # per-channel weights


def _write(tmp_path, doc, name="bad.encodings"):
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return path


def _entry(doc, name):
    return next(e for k in ("activation_encodings", "param_encodings") for e in doc[k]
                if e["name"] == name)


# ---- reading -----------------------------------------------------------------------------------

def test_malformed_json_names_file_line_and_column(tmp_path):
    path = _write(tmp_path, '{"version": "1.0.0", "activation_encodings": [}')
    with pytest.raises(ExportError, match=r"bad.encodings.*not valid JSON.*line 1 column"):
        read_encodings(path)


def test_missing_file_is_an_export_error(tmp_path):
    with pytest.raises(ExportError, match="cannot read encodings file"):
        read_encodings(tmp_path / "nope.encodings")


@pytest.mark.parametrize("doc, match", [
    ([1, 2], r"\$: must be a JSON object"),
    ({"activation_encodings": []},
     r"version: must be one of \['1.0.0', '0.6.1', '2.0.0'\], got None"),
    ({"version": "3.0"}, r"version: .* got '3.0'"),
])
def test_top_level_problems(doc, match):
    with pytest.raises(ExportError, match=match):
        parse_encodings(doc)


def test_every_bad_1_0_0_entry_is_reported_at_once():
    doc = golden_doc(CASE, "1.0.0")
    acts, params = doc["activation_encodings"], doc["param_encodings"]
    acts[0]["bw"] = 40
    acts[1]["enc_type"] = "PER_BLOCK"
    acts[2]["scale"] = [0.1, 0.2]
    del acts[3]["offset"]
    acts[4]["offset"] = [-1.5]
    acts[5]["is_sym"] = "False"
    params[0]["dtype"] = "FLOAT"
    params[1]["scale"] = [0.0]
    params.append(copy.deepcopy(params[2]))
    with pytest.raises(ExportError) as info:
        parse_encodings(doc, source="doc")
    msg = str(info.value)
    assert "9 problem(s)" in msg
    for needle in ["activation_encodings[0] ('input').bw: bitwidth must be an integer in 2..32, "
                   "got 40",
                   "activation_encodings[1] ('stem_relu_out').enc_type: must be 'PER_TENSOR' or "
                   "'PER_CHANNEL'",
                   "activation_encodings[2] ('branch_a_out'): scale has 2 values but offset has 1",
                   "activation_encodings[3] ('branch_b.pool_out'): missing field(s) ['offset']",
                   "activation_encodings[4] ('branch_b_out').offset: must hold integral numbers, "
                   "got -1.5",
                   "activation_encodings[5] ('concat_out').is_sym: must be true or false, "
                   "got 'False'",
                   "param_encodings[0] ('stem.weight').dtype: only integer encodings ('INT') are "
                   "supported, got 'FLOAT'",
                   "param_encodings[1] ('branch_a.conv.weight').scale: scale must be > 0 (the grid step), got 0.0",
                   "param_encodings[6] ('branch_b.conv.weight'): tensor 'branch_b.conv.weight' "
                   "already has an encoding at param_encodings[2]"]:
        assert needle in msg


def test_bad_0_6_1_and_2_0_0_entries_are_reported():
    v0 = golden_doc(CASE, "0.6.1")
    v0["activation_encodings"]["input"][0]["is_symmetric"] = True
    v0["param_encodings"]["stem.weight"].append(dict(v0["param_encodings"]["stem.weight"][0],
                                                     bitwidth=4))
    with pytest.raises(ExportError) as info:
        parse_encodings(v0)
    assert "activation_encodings['input'][0].is_symmetric: must be the string 'True' or " \
           "'False', got True" in str(info.value)
    assert "param_encodings['stem.weight']: channels disagree on bitwidth [4, 8]" in str(info.value)

    v2 = golden_doc(CASE, "2.0.0")
    v2["encodings"][0]["output_dtype"] = "int12"
    v2["encodings"][12]["y_zero_point"] = 300
    v2["encodings"][13]["y_scale"] = [0.1, 0.2]
    with pytest.raises(ExportError) as info:
        parse_encodings(v2)
    msg = str(info.value)
    assert "encodings[0] ('stem.weight').output_dtype: must be one of" in msg and "'int12'" in msg
    assert "encodings[12] ('input').y_zero_point: 300 is outside uint8's range [0, 255]" in msg
    assert "encodings[13] ('stem_relu_out'): a list y_scale needs 'axis'" in msg


# ---- loading into a sim ------------------------------------------------------------------------

def _load_error(tmp_path, doc, case=CASE):
    sim = new_sim(case)
    with pytest.raises(EncodingError) as info:
        load_encodings_into(sim, _write(tmp_path, doc))
    with pytest.raises(NotCalibratedError):      # nothing was applied
        sim.run(eval_feeds(case))
    return str(info.value)


def test_missing_and_extra_entries_are_listed_together(tmp_path):
    doc = golden_doc(CASE, "1.0.0")
    doc["activation_encodings"] = [e for e in doc["activation_encodings"] if e["name"] != "se.gate"]
    doc["param_encodings"] = [e for e in doc["param_encodings"] if e["name"] != "up.weight"]
    doc["activation_encodings"].append(dict(_entry(doc, "output"), name="not_a_tensor"))
    doc["activation_encodings"].append(dict(_entry(doc, "output"), name="se.fc1_out"))
    msg = _load_error(tmp_path, doc)
    assert "4 problem(s)" in msg
    assert "se.gate: missing entry: tensor 'se.gate' has an enabled activation quantizer" in msg
    assert "up.weight: missing entry: tensor 'up.weight' has an enabled parameter quantizer" in msg
    assert "tensor 'not_a_tensor' has no quantizer in this sim" in msg
    assert "tensor 'se.fc1_out' has a disabled quantizer in this sim" in msg


def test_wrong_bitwidth_symmetry_and_kind_are_named(tmp_path):
    doc = golden_doc(CASE, "1.0.0")
    _entry(doc, "se_out")["bw"] = 16
    _entry(doc, "stem.weight")["is_sym"] = False
    moved = _entry(doc, "up.weight")
    doc["param_encodings"].remove(moved)
    doc["activation_encodings"].append(moved)
    msg = _load_error(tmp_path, doc)
    assert "se_out: activation_encodings[10] ('se_out'): bitwidth 16 (int16); the quantizer " \
           "is 8-bit" in msg
    assert "stem.weight: param_encodings[0] ('stem.weight'): is_sym = False; the quantizer is " \
           "symmetric" in msg
    assert "up.weight" in msg and "its quantizer is a parameter quantizer" in msg


def test_wrong_channel_count_and_granularity(tmp_path):
    doc = golden_doc(PC_CASE, "1.0.0")
    w = _entry(doc, "block1.expand.weight")
    w["scale"], w["offset"] = w["scale"][:-1], w["offset"][:-1]
    d = _entry(doc, "block1.dw.weight")
    d["enc_type"], d["scale"], d["offset"] = "PER_TENSOR", d["scale"][:1], d["offset"][:1]
    msg = _load_error(tmp_path, doc, PC_CASE)
    n = len(w["scale"])
    assert f"block1.expand.weight: param_encodings[0] ('block1.expand.weight'): has {n} " \
           f"channels; the tensor (shape [{n + 1}," in msg and "along axis 0" in msg
    assert "block1.dw.weight" in msg and "is per-tensor (1 values); the quantizer is " \
           "per-channel along axis 0" in msg


def test_2_0_0_wrong_type_and_axis(tmp_path):
    doc = golden_doc(PC_CASE, "2.0.0")
    e = next(x for x in doc["encodings"] if x["name"] == "block1.dw_out")
    e["output_dtype"] = "int8"
    e["y_zero_point"] = e["y_zero_point"] - 128
    w = next(x for x in doc["encodings"] if x["name"] == "block1.project.weight")
    w["axis"] = 1
    msg = _load_error(tmp_path, doc, PC_CASE)
    assert "block1.dw_out" in msg and "output_dtype 'int8' is a signed type; the quantizer is " \
           "asymmetric (use 'uint8')" in msg
    assert "block1.project.weight" in msg and "axis 1; the quantizer's channel axis is 0" in msg


def test_tied_tensors_with_different_entries(tmp_path):
    doc = golden_doc(CASE, "1.0.0")
    _entry(doc, "branch_b_out")["scale"] = [0.5]
    msg = _load_error(tmp_path, doc)
    assert "tied tensors" in msg and "branch_b_out" in msg and "concat_out" in msg


def test_non_strict_applies_what_matches(tmp_path):
    doc = golden_doc(CASE, "1.0.0")
    doc["activation_encodings"] = [e for e in doc["activation_encodings"] if e["name"] != "se.gate"]
    _entry(doc, "output")["bw"] = 16
    doc["activation_encodings"].append(dict(_entry(doc, "se_out"), name="ghost"))
    sim = new_sim(CASE)
    report = load_encodings_into(sim, _write(tmp_path, doc), strict=False)
    assert {t for t, _ in report.problems} == {"se.gate", "output", "ghost"}
    assert set(report.disabled) == {"se.gate", "output"}
    assert not sim.quantizers["se.gate"].enabled and not sim.quantizers["output"].enabled
    ref = shared_calibrated_sim(CASE)
    weight = "stem.weight"
    assert sim.quantizers[weight].encoding.delta == ref.quantizers[weight].encoding.delta
    out = sim.run(eval_feeds(CASE))["output"]
    assert out.shape == ref.run(eval_feeds(CASE))["output"].shape and np.isfinite(out).all()


# ---- writing -----------------------------------------------------------------------------------

def _only(folder_path):
    return sorted(p.name for p in folder_path.iterdir())


@pytest.mark.parametrize("target", ["replace", "fsync"])
def test_interrupted_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch, target):
    path = tmp_path / "model.encodings"
    path.write_bytes(b"old contents")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_mod.os, target, interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_encodings(encodings_document(shared_calibrated_sim(CASE), "2.0.0"), path)
    assert path.read_bytes() == b"old contents"
    assert _only(tmp_path) == ["model.encodings"]


def test_failed_os_write_is_an_export_error_and_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_mod.os, "replace", full)
    with pytest.raises(ExportError, match=r"cannot write '.*m.onnx': No space left on device"):
        export_qdq(shared_calibrated_sim(CASE), path)
    assert path.read_bytes() == b"old" and _only(tmp_path) == ["m.onnx"]


def test_unwritable_folder_is_named(tmp_path):
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    with pytest.raises(ExportError, match=f"cannot write into folder '{not_a_folder}'"):
        write_atomic(not_a_folder / "a.encodings", b"{}")
    with pytest.raises(ExportError, match=f"export folder '{tmp_path / 'missing'}' does not exist"):
        export_qdq(shared_calibrated_sim(CASE), tmp_path / "missing" / "m.onnx")


def test_unknown_version_and_uncalibrated_sim():
    with pytest.raises(ExportError, match=r"encoding_version '3.0.0' is not supported; use one "
                                          r"of \['1.0.0', '0.6.1', '2.0.0'\]"):
        encodings_document(shared_calibrated_sim(CASE), "3.0.0")
    with pytest.raises(NotCalibratedError):
        export_qdq(new_sim(CASE), "x.onnx")


def test_qdq_needs_an_onnx_integer_type():
    sim = new_sim("mlp_s33_default_pct_w8a8")
    sim2 = __import__("qsim").QuantizationSimModel(
        sim.model, quant_scheme="tf", param_type="int6", activation_type="int8",
        config_file=str(folder("mlp_s33_default_pct_w8a8") / "config.json"))
    from .golden import batches
    sim2.compute_encodings(batches("mlp_s33_default_pct_w8a8"))
    with pytest.raises(ExportError, match=r"tensor 'fc1.weight': a 6-bit encoding has no ONNX "
                                          r"QuantizeLinear type"):
        qdq_model(sim2)


def test_2_0_0_bias_and_derived_entries_must_follow_from_the_others(tmp_path):
    doc = golden_doc(CASE, "2.0.0")
    by_name = {e["name"]: e for e in doc["encodings"]}
    by_name["stem.bias"]["y_scale"] *= 1.01
    by_name["branch_a.pool_out"]["y_zero_point"] = 3
    doc["encodings"].append(dict(by_name["output"], name="se.fc1_out"))
    msg = _load_error(tmp_path, doc)
    assert "3 problem(s)" in msg
    assert "stem.bias: encodings[1] ('stem.bias'): output_dtype 'int32', y_scale" in msg
    assert "the file's other encodings imply 'int32'" in msg
    assert "branch_a.pool_out" in msg and "offset [-3.0]" in msg
    assert "tensor 'se.fc1_out' has no enabled quantizer and is neither an int32 bias nor an " \
           "encoding derived" in msg
