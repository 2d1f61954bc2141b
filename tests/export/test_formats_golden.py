"""Format conversion against AIMET's own files alone (no sim): every golden case has the same
encodings written by AIMET 2.42 as 1.0.0, 0.6.1 and 2.0.0, so each format can be rebuilt from
another one and compared entry by entry."""
from __future__ import annotations

import json

import numpy as np
import pytest

import qsim
from qsim.encodings_io import read_encodings
from qsim.export import Exported, document

from .golden import CASES, FILES, differences, folder, golden_doc


def _exported(case_id: str, version: str, axes: dict | None = None) -> tuple:
    f = read_encodings(folder(case_id) / FILES[version])
    axes = axes or {}
    ex = [Exported(name=e.name, is_param=e.is_param, encoding=e.to_encoding(axis=axes.get(e.name)))
          for e in f.entries]
    return f, ex


def _roundtrip_json(doc: dict) -> dict:
    return json.loads(json.dumps(doc))


@pytest.mark.parametrize("case_id", CASES)
def test_1_0_0_to_0_6_1_equals_aimet(case_id):
    f, ex = _exported(case_id, "1.0.0")
    mine = _roundtrip_json(document(ex, "0.6.1", quantizer_args=f.quantizer_args,
                                    producer=f.producer))
    gold = golden_doc(case_id, "0.6.1")
    assert differences(mine, gold) == []
    # same order too (0.6.1 is written with sorted keys)
    for key in ("activation_encodings", "param_encodings"):
        assert sorted(mine[key]) == list(gold[key])


@pytest.mark.parametrize("case_id", CASES)
def test_0_6_1_to_1_0_0_equals_aimet(case_id):
    f, ex = _exported(case_id, "0.6.1")
    mine = _roundtrip_json(document(ex, "1.0.0", quantizer_args=f.quantizer_args,
                                    producer=f.producer))
    gold = golden_doc(case_id, "1.0.0")
    # 0.6.1 keys are sorted: compare the 1.0.0 lists as name → entry
    for key in ("activation_encodings", "param_encodings"):
        assert sorted(e["name"] for e in mine[key]) == sorted(e["name"] for e in gold[key])
        by_name = {e["name"]: e for e in mine[key]}
        for e in gold[key]:
            assert differences(by_name[e["name"]], e, f"{key}['{e['name']}']") == []
    for key in ("producer", "quantizer_args", "version"):
        assert mine[key] == gold[key]


def _param_axes(graph) -> dict:
    """Per-channel axis of every weight (placement.md §4's table), read off the graph."""
    axes = {}
    producers = graph.producers()
    for n in graph.nodes:
        if len(n.inputs) < 2:
            continue
        w = n.inputs[1]
        if n.op_type == "Conv":
            axes[w] = 0
        elif n.op_type == "ConvTranspose":
            axes[w] = 1
        elif n.op_type == "Gemm":
            axes[w] = 0 if n.attrs.get("transB", 0) else 1
        elif n.op_type == "MatMul":
            p = producers.get(w)
            if w in graph.params:
                axes[w] = np.ndim(graph.params[w]) - 1
            elif p is not None and p.op_type == "Transpose" and p.inputs[0] in graph.params:
                axes[p.inputs[0]] = np.ndim(graph.params[p.inputs[0]]) - 2
    return axes


@pytest.mark.parametrize("case_id", CASES)
def test_1_0_0_plus_model_to_2_0_0_equals_aimet(case_id):
    """2.0.0 from AIMET's 1.0.0 file and the FP32 model: params (each int32 bias after its
    weight), activations, derived encodings — every field, bit for bit."""
    graph = qsim.load_onnx(folder(case_id) / "model.onnx")
    f, ex = _exported(case_id, "1.0.0", _param_axes(graph))
    ex = [e for e in ex if e.is_param] + [e for e in ex if not e.is_param]
    mine = _roundtrip_json(document(ex, "2.0.0", graph=graph, producer=f.producer))
    assert differences(mine, golden_doc(case_id, "2.0.0")) == []


@pytest.mark.parametrize("case_id", CASES)
def test_reading_each_format_gives_one_set_of_encodings(case_id):
    """1.0.0, 0.6.1 and 2.0.0 files of a case describe the same grids (2.0.0 also has the int32
    biases and derived entries)."""
    files = {v: read_encodings(folder(case_id) / name) for v, name in FILES.items()}
    ref = files["1.0.0"]
    for version in ("0.6.1", "2.0.0"):
        other = files[version].by_name
        for e in ref.entries:
            o = other[e.name]
            assert o.bitwidth == e.bitwidth, (version, e.name)
            np.testing.assert_array_equal(o.scale, e.scale, err_msg=f"{version} {e.name}")
            np.testing.assert_array_equal(o.offset, e.offset, err_msg=f"{version} {e.name}")
    extra = set(files["2.0.0"].by_name) - set(ref.by_name)
    assert all(files["2.0.0"].by_name[n].dtype in ("int32", "uint8", "uint16") for n in extra)
