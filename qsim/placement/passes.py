"""``place_quantizers``: the pipeline of placement.md §0, in AIMET's order.

Fusion (fusion.py) → quantizer creation (create.py) → stages B-K and per-channel (stages.py) →
ties (ties.py) → frozen :class:`~qsim.placement.result.Placement` (with the ORT order of
order.py). The working records (state.py) are local to one call; nothing else is mutated.
"""
from __future__ import annotations

from types import MappingProxyType

import numpy as np

from ..config import QuantsimConfig, load_config
from ..errors import EncodingError
from ..ir import Graph
from .create import create_activations, create_params, find_unfused_matmul_add
from .fusion import fuse_matmul_add
from .norm_fusion import FUSED_PASSES, fuse_norms
from .norm_passes import norm_pass_matches, stage_i_norm_passes
from .order import activation_update_order
from .result import Placement, QuantizerSpec
from .stages import (stage_b_defaults, stage_c_params, stage_d_op_types, stage_e_supergroups,
                     stage_f_model_input, stage_g_model_output, stage_i_unfused,
                     stage_j_dynamic_weights, stage_k_exceptions, stage_per_channel)
from .state import Context
from .ties import tie_backward, tie_forward


def _freeze(ctx: Context, graph: Graph, bodies: tuple) -> Placement:
    order = {q.tensor: q.uid for q in ctx.created}
    members: dict = {}
    for tensor, q in ctx.qmap.items():
        members.setdefault(q.uid, []).append(tensor)
    alive = sorted({q.uid: q for q in ctx.qmap.values()}.values(), key=lambda q: q.uid)
    qid_of = {q.uid: i for i, q in enumerate(alive)}
    param_ops: dict = {}
    for op_name, slots in ctx.op_params.items():
        for _, tensor in slots:
            param_ops.setdefault(tensor, []).append(op_name)
    specs = []
    for q in alive:
        tensors = tuple(sorted(members[q.uid], key=order.__getitem__))
        if q.role == "param":
            ops = tuple(dict.fromkeys(param_ops.get(q.tensor, [])))
        else:
            ops = tuple(dict.fromkeys(n.name for t in tensors for n in ctx.consumers.get(t, [])))
        reasons = tuple(q.why[k] for k in ("enabled", "symmetric", "bitwidth", "axis", "fixed",
                                           "strict", "unsigned") if k in q.why) + tuple(q.notes)
        specs.append(QuantizerSpec(
            qid=qid_of[q.uid], tensors=tensors, enabled=q.enabled, is_param=q.role == "param",
            kind=q.kind, role=q.role, bitwidth=q.bitwidth, symmetric=q.symmetric,
            strict_symmetric=q.strict, unsigned_symmetric=q.unsigned, axis=q.axis,
            fixed_range=q.fixed, ops=ops, reasons=reasons))
    quantizer_of = {t: qid_of[q.uid] for t, q in sorted(ctx.qmap.items(), key=lambda kv: order[kv[0]])}
    roles = {t: ctx.origin[t] for t in sorted(ctx.qmap, key=order.__getitem__)}
    return Placement(graph=ctx.graph, executed_graph=graph, bodies=bodies,
                     quantizers=tuple(specs),
                     quantizer_of=MappingProxyType(quantizer_of),
                     activation_order=activation_update_order(ctx.graph, roles))


# ---- entry point --------------------------------------------------------------------------------

def _check_bitwidth(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 2 <= value <= 32:
        raise EncodingError(f"{name} must be an integer bitwidth between 2 and 32, got {value!r}")
    return int(value)


def place_quantizers(graph: Graph, config, *, param_bitwidth: int,
                     activation_bitwidth: int) -> Placement:
    """Every quantizer aimet-onnx 2.42 creates for ``graph`` under ``config``, and its flags.

    ``config``: a ``QuantsimConfig``, or anything ``qsim.config.load_config`` accepts (file
    path, dict, built-in name, None for the built-in default), which is then loaded and validated.
    Steps (placement.md §0): MatmulAdd and norm fusion (the placement reasons on fused norms,
    the returned graph keeps their nodes: see norm_fusion.py); parameter then activation quantizers (all
    asymmetric per-tensor at ``param_bitwidth`` / ``activation_bitwidth``); stages A–G; per-channel;
    unfused passes (I); dynamic weight symmetry (J); exception rules (K); backward then forward
    ties. Raises :class:`ConfigError` for the model-dependent configuration errors of §7.
    """
    param_bitwidth = _check_bitwidth("param_bitwidth", param_bitwidth)
    activation_bitwidth = _check_bitwidth("activation_bitwidth", activation_bitwidth)
    cfg = config if isinstance(config, QuantsimConfig) else load_config(config)
    if "MatmulAdd" in cfg.supergroup_pass_list:
        graph = fuse_matmul_add(graph)
    executed = graph
    graph, bodies = fuse_norms(graph, [p for p in cfg.supergroup_pass_list if p in FUSED_PASSES])
    norms = [p for p in cfg.supergroup_pass_list if p in ("LayerNormalization", "RMSNormalization")]
    ctx = Context(graph=graph, ops=[n for n in graph.nodes if n.op_type != "Constant"],
               producers=graph.producers(), consumers=graph.consumers())
    create_params(ctx, param_bitwidth)
    create_activations(ctx, activation_bitwidth)
    unfused = find_unfused_matmul_add(ctx) if "MatmulAdd" in cfg.supergroup_pass_list else []
    # Stage A (reset) is the creation state: every quantizer starts disabled.
    stage_b_defaults(ctx, cfg)
    stage_c_params(ctx, cfg)
    stage_d_op_types(ctx, cfg)
    norm_matches = norm_pass_matches(ctx, norms)
    stage_e_supergroups(ctx, cfg, {n.name for mm, add, _ in unfused for n in (mm, add)}
                        | {n.name for _, m in norm_matches for n in m.ops})
    stage_f_model_input(ctx, cfg)
    stage_g_model_output(ctx, cfg)
    # Stage H: bitwidths are already param/activation bitwidths (supported_kernels changes none).
    stage_per_channel(ctx, cfg)
    stage_i_norm_passes(ctx, norm_matches)
    stage_i_unfused(ctx, unfused, param_bitwidth)
    stage_j_dynamic_weights(ctx, cfg)
    stage_k_exceptions(ctx, cfg)
    tie_backward(ctx)
    tie_forward(ctx)
    return _freeze(ctx, executed, bodies)
