"""Reading AIMET's golden quantizer dumps and turning a Placement into the same facts."""
from __future__ import annotations

import json
from pathlib import Path

from qsim.onnx_io import load_onnx
from qsim.placement import place_quantizers

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"
MODEL_CASES = sorted(p.name for p in (GOLDEN / "models").iterdir() if (p / "case.json").is_file())
CNN_RUNS = {"default_tf": "default_config.json", "per_channel_tf": "default_config_per_channel.json",
            "default_tf_enhanced": "default_config.json",
            "per_channel_tf_enhanced": "default_config_per_channel.json"}


def load_case(case: str):
    """(graph, config dict, param bw, activation bw, aimet quantizer dump, exported 2.0.0?)."""
    if case.startswith("cnn-seed0/"):
        run = case.split("/", 1)[1]
        root = GOLDEN / "cnn-seed0"
        config = json.loads((root / "configs" / CNN_RUNS[run]).read_text())
        dump = json.loads((root / run / "quantizers.json").read_text())
        return load_onnx(root / "model.onnx", check=False), config, 8, 8, dump, False
    root = GOLDEN / "models" / case
    meta = json.loads((root / "case.json").read_text())
    config = json.loads((root / "config.json").read_text())
    dump = json.loads((root / "aimet_quantizers.json").read_text())
    return (load_onnx(root / "model.onnx", check=False), config, meta["param_bitwidth"],
            meta["activation_bitwidth"], dump, meta.get("export_2.0.0") == "ok")


def int32_biases(placement) -> set:
    """Biases AIMET's 2.0.0 export writes as int32 (placement.md §6 (a)): a disabled bias whose
    op has an enabled weight and an enabled effective quantizer on input 0."""
    found = set()
    for node in placement.graph.nodes:
        specs = [placement.spec(t) for t in node.inputs if t and placement.spec(t) is not None]
        weights = [q for q in specs if q.is_param and q.kind == "weight"]
        biases = [q for q in specs if q.is_param and q.kind == "bias"]
        if not weights or not biases or not weights[0].enabled:
            continue
        if placement.effective_quantizer(node.inputs[0]) is None:
            continue
        found |= {q.tensors[0] for q in biases if not q.enabled}
    return found


def predicted_facts(placement, exported_v2: bool) -> dict:
    """tensor → the flags AIMET's dump reports, with the documented 2.0.0 bias side effect."""
    side_effect = int32_biases(placement) if exported_v2 else set()
    facts = {}
    for tensor, qid in placement.quantizer_of.items():
        q = placement.quantizers[qid]
        weight_axis = q.axis
        facts[tensor] = {
            "enabled": q.enabled, "is_param": q.is_param,
            "bitwidth": 32 if tensor in side_effect else q.bitwidth,
            "use_symmetric_encodings": q.symmetric, "use_strict_symmetric": q.strict_symmetric,
            "use_unsigned_symmetric": q.unsigned_symmetric,
            "per_channel": weight_axis is not None,
            "channel_axis": 0 if weight_axis is None else weight_axis}
    return facts


def golden_facts(dump: dict) -> dict:
    keys = ("enabled", "is_param", "bitwidth", "use_symmetric_encodings", "use_strict_symmetric",
            "use_unsigned_symmetric", "per_channel", "channel_axis")
    return {name: {k: q[k] for k in keys} for name, q in dump.items()}


def golden_tie_groups(dump: dict) -> set:
    """Groups (frozensets, ≥ 2 members) of enabled activation tensors with identical encodings."""
    by_encoding = {}
    for name, q in dump.items():
        if q["enabled"] and not q["is_param"]:
            by_encoding.setdefault(json.dumps(q["encodings"], sort_keys=True), set()).add(name)
    return {frozenset(g) for g in by_encoding.values() if len(g) > 1}


def predicted_tie_groups(placement) -> set:
    return {frozenset(q.tensors) for q in placement.quantizers
            if q.enabled and not q.is_param and len(q.tensors) > 1}


def place_case(case: str):
    graph, config, pbw, abw, dump, v2 = load_case(case)
    return place_quantizers(graph, config, param_bitwidth=pbw, activation_bitwidth=abw), dump, v2
