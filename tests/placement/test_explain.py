"""Placement.explain() on golden misc states the facts of placement.md §8 (AIMET's own dump
decides enabled/disabled; the text must give the rule that decided it)."""
from __future__ import annotations

import re

import pytest

from tests.placement.golden_util import place_case


@pytest.fixture(scope="module")
def misc():
    placement, dump, _ = place_case("misc_s32_default_tf_w8a8")
    return placement, dump, placement.explain().splitlines()


def _line_of(lines, tensor):
    """The one quantizer line whose tensor list contains ``tensor``."""
    found = [ln for ln in lines[1:]
             if tensor in re.split(r" = ", ln.split(" | ")[0].split(None, 2)[2])]
    assert len(found) == 1, (tensor, found)
    return found[0]


def test_one_line_per_quantizer_and_eighteen_enabled(misc):
    placement, dump, lines = misc
    assert len(lines) == 1 + len(placement.quantizers)
    enabled_in_dump = sum(1 for q in dump.values() if q["enabled"])
    assert enabled_in_dump == 18
    assert "18 enabled quantizers" in lines[0]


def test_each_tensor_state_agrees_with_aimet(misc):
    placement, dump, lines = misc
    for tensor, q in dump.items():
        state = _line_of(lines, tensor).split()[1]
        assert state == ("enabled" if q["enabled"] else "disabled"), tensor


def test_params_six_symmetric_weights_six_disabled_biases(misc):
    _, _, lines = misc
    weights = [ln for ln in lines if "param:weight" in ln]
    biases = [ln for ln in lines if "param:bias" in ln]
    assert len(weights) == 6 and all(" enabled " in ln and " sym per-tensor" in ln for ln in weights)
    assert len(biases) == 6 and all("disabled" in ln and "params.bias.is_quantized=False" in ln
                                    for ln in biases)


@pytest.mark.parametrize("tensor, why", [
    ("input", "model_input.is_input_quantized=True"),
    ("stem_out", "supergroup Conv,Relu"),
    ("se.fc1_out", "supergroup Conv,Relu"),
    ("branch_a.pool_out", "grid-preserving MaxPool"),
    ("branch_b.pool_out", "AveragePool"),
    ("branch_a_out", "Concat"),
    ("branch_b_out", "Concat"),
    ("se.gap_out", "defaults.ops.is_output_quantized=True"),
])
def test_the_deciding_rule_is_named(misc, tensor, why):
    _, _, lines = misc
    assert why in _line_of(lines, tensor)


def test_tie_groups_are_one_line(misc):
    _, _, lines = misc
    assert _line_of(lines, "branch_b.pool_out") == _line_of(lines, "stem_relu_out")
    concat = _line_of(lines, "concat_out")
    assert concat == _line_of(lines, "branch_a_out") == _line_of(lines, "branch_b_out")
    assert "tie group of 3" in concat
