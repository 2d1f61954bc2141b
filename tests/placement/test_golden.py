"""Placement predicts every quantizer AIMET 2.42 created in the golden cases, flag for flag."""
from __future__ import annotations

import numpy as np
import pytest

from qsim.interpreter import run
from tests.placement.golden_util import (CNN_RUNS, GOLDEN, MODEL_CASES, load_case, golden_facts, golden_tie_groups,
                                         place_case, predicted_facts, predicted_tie_groups)

CASES = MODEL_CASES + [f"cnn-seed0/{run}" for run in CNN_RUNS]


def test_all_golden_cases_are_covered():
    assert len(MODEL_CASES) == 9  # tests/data/golden/models holds 9 case folders
    assert {"misc_s32_default_tf_w8a8", "misc_s32_htp_v75_tf_w8a16",
            "transformer_s31_default_tf_w8a8"} <= set(MODEL_CASES)


@pytest.mark.parametrize("case", CASES)
def test_quantizer_names_and_flags_match_aimet(case):
    placement, dump, exported_v2 = place_case(case)
    predicted, golden = predicted_facts(placement, exported_v2), golden_facts(dump)
    assert set(predicted) == set(golden)
    wrong = {name: (predicted[name], golden[name]) for name in golden
             if predicted[name] != golden[name]}
    assert wrong == {}


def _saturated_clip_group(placement, group) -> bool:
    """True if every member is a Clip output or a Clip bound: equal encodings by saturation
    (mbv2's Relu6 outputs and relu6.max all span exactly [0, 6]), not a shared quantizer."""
    for tensor in group:
        producer = placement.graph.producers().get(tensor)
        is_clip_out = producer is not None and producer.op_type == "Clip"
        is_clip_bound = any(n.op_type == "Clip" and tensor in n.inputs[1:]
                            for n in placement.graph.consumers().get(tensor, []))
        if not (is_clip_out or is_clip_bound):
            return False
    return True


@pytest.mark.parametrize("case", CASES)
def test_tie_groups_match_aimet(case):
    placement, dump, _ = place_case(case)
    predicted = predicted_tie_groups(placement)
    golden = golden_tie_groups(dump)
    # every predicted tie group has one encoding in AIMET's dump
    for group in predicted:
        assert any(group <= g for g in golden), sorted(group)
    # every set of identical encodings is a tie group, unless it is Clip saturation
    for group in golden:
        ties = [p for p in predicted if p <= group]
        covered = set().union(*ties) if ties else set()
        if covered != group:
            assert not ties and _saturated_clip_group(placement, group), sorted(group)


@pytest.mark.parametrize("case", CASES)
def test_fixed_ranges_are_honoured_by_aimet_encodings(case):
    placement, dump, _ = place_case(case)
    for q in placement.quantizers:
        if q.fixed_range is None or not q.enabled:
            continue
        lo, hi = q.fixed_range
        for tensor in q.tensors:
            (enc,) = dump[tensor]["encodings"]
            if lo is not None:
                assert enc["min"] == pytest.approx(lo, abs=1e-12)
            if hi is not None:
                assert enc["max"] == pytest.approx(hi, rel=1e-9)


def test_htp_fixed_ranges_sigmoid_and_relu():
    placement, dump, _ = place_case("misc_s32_htp_v75_tf_w8a16")
    gate = placement.spec("se.gate")
    assert gate.fixed_range == (0.0, 1.0) and gate.bitwidth == 16
    (enc,) = dump["se.gate"]["encodings"]
    assert enc["delta"] == pytest.approx(1 / 65535, rel=1e-6) and enc["offset"] == 0.0
    for relu_out in ("stem_relu_out", "se.relu_out"):
        assert placement.spec(relu_out).fixed_range == (0.0, None)
        assert dump[relu_out]["encodings"][0]["offset"] == 0.0
    # AveragePool's forward tie carries the Relu's min 0 along
    assert placement.quantizer_of["branch_b.pool_out"] == placement.quantizer_of["stem_relu_out"]
    # the default config has no fixed ranges at all
    default, _, _ = place_case("misc_s32_default_tf_w8a8")
    assert all(q.fixed_range is None for q in default.quantizers)


def test_fused_matmul_add_in_transformer():
    placement, dump, _ = place_case("transformer_s31_default_tf_w8a8")
    assert "attn.q.matmul_out" not in placement.quantizer_of and "attn.q.matmul_out" not in dump
    gemm = placement.graph.node("attn.q.matmul")
    assert gemm.op_type == "Gemm" and gemm.inputs == ("input", "attn.q.weight", "attn.q.bias")
    assert gemm.outputs == ("attn.q_out",) and gemm.domain.startswith("aimet.supergroup")
    assert placement.spec("attn.q.weight").kind == "weight"
    assert placement.spec("attn.q.bias").kind == "bias"
    assert not placement.spec("ffn.fc1_out").enabled  # Gemm,Relu supergroup after fusion
    assert dump["ffn.fc1_out"]["enabled"] is False


@pytest.mark.parametrize("case", ["transformer_s31_default_tf_w8a8",
                                  "transformer_gelu_s31_per_channel_tfe_w8a8"])
def test_fused_graph_computes_the_same_fp32_result(case):
    graph = load_case(case)[0]
    placement, _, _ = place_case(case)
    assert sum(n.op_type == "Gemm" for n in placement.graph.nodes) == 6
    data = np.load(GOLDEN / "models" / case / "eval.npz")
    feeds = {k: data[k][:4] for k in data.files}
    np.testing.assert_array_equal(run(placement.graph, feeds)["output"], run(graph, feeds)["output"])
