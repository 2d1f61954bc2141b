"""§2 stages B-K and §4 per-channel: how the configuration sets each quantizer's flags.

One function per stage, applied in AIMET's order by ``place_quantizers``. Each flag change
records the rule that made it (shown by ``Placement.explain``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..config import OpTypeSettings, QuantsimConfig
from ..errors import ConfigError
from ..ir import Node
from .fusion import static_value
from .state import Context, StageLog, WorkQuantizer
from .tables import GRID_PRESERVING, NORM_FOLLOW_OUTPUT, NORM_LN_BN, OLD_HTP, WEIGHT_OPS


def stage_b_defaults(ctx: Context, cfg: QuantsimConfig) -> None:
    """B: defaults.ops on every op, inputs/constants off again, defaults.params, strict/unsigned."""
    log = StageLog("B (defaults.ops)")
    for op in ctx.ops:
        if cfg.defaults.ops.is_output_quantized is not None:
            for q in ctx.outs(op):
                log.apply(q, "enabled", cfg.defaults.ops.is_output_quantized, op,
                          f"defaults.ops.is_output_quantized={cfg.defaults.ops.is_output_quantized}")
        if cfg.defaults.ops.is_symmetric is not None:
            for q in ctx.ins(op) + ctx.outs(op):
                log.apply(q, "symmetric", cfg.defaults.ops.is_symmetric, op,
                          f"defaults.ops.is_symmetric={cfg.defaults.ops.is_symmetric}")
    for q in ctx.created:
        if q.role in ("graph_input", "constant"):
            q.set("enabled", False, "stage B (graph and constant inputs off until model_input)")
    for q in ctx.created:
        if q.role != "param":
            continue
        if cfg.defaults.params.is_quantized is not None:
            q.set("enabled", cfg.defaults.params.is_quantized,
                  f"defaults.params.is_quantized={cfg.defaults.params.is_quantized}")
        if cfg.defaults.params.is_symmetric is not None:
            q.set("symmetric", cfg.defaults.params.is_symmetric,
                  f"defaults.params.is_symmetric={cfg.defaults.params.is_symmetric}")
    for q in ctx.created:
        q.strict = cfg.defaults.strict_symmetric is True
        q.unsigned = cfg.defaults.unsigned_symmetric is True
        if q.strict:
            q.why["strict"] = "strict=True by defaults.strict_symmetric"
        if q.unsigned:
            q.why["unsigned"] = "unsigned=True by defaults.unsigned_symmetric"


def stage_c_params(ctx: Context, cfg: QuantsimConfig) -> None:
    """C: params.<kind> on every parameter of that kind."""
    for q in ctx.created:
        rule = cfg.params.get(q.kind) if q.role == "param" else None
        if rule is None:
            continue
        if rule.is_quantized is not None:
            q.set("enabled", rule.is_quantized, f"params.{q.kind}.is_quantized={rule.is_quantized}")
        if rule.is_symmetric is not None:
            q.set("symmetric", rule.is_symmetric, f"params.{q.kind}.is_symmetric={rule.is_symmetric}")


def _op_rule(cfg: QuantsimConfig, op: Node) -> tuple:
    """(OpTypeSettings or None, text naming it) for stage D, incl. the implicit grid-preserving rule."""
    rule = cfg.op_type.get(op.op_type)
    if rule is not None:
        return rule, f"op_type.{op.op_type}"
    if op.op_type in GRID_PRESERVING:
        return OpTypeSettings(is_output_quantized=False), f"grid-preserving {op.op_type} not in op_type"
    return None, ""


def stage_d_op_types(ctx: Context, cfg: QuantsimConfig) -> None:
    """D: op_type.<T> on every op of type T (inputs, outputs, symmetry, constraints, params)."""
    log = StageLog("D (op_type)")
    for op in ctx.ops:
        rule, name = _op_rule(cfg, op)
        if rule is None:
            continue
        where = f"{name} on {op.name}"
        if rule.is_input_quantized is not None:
            for q in ctx.ins(op):
                log.apply(q, "enabled", rule.is_input_quantized, op,
                          f"{where}: is_input_quantized={rule.is_input_quantized}")
        if rule.is_output_quantized is not None:
            for q in ctx.outs(op):
                log.apply(q, "enabled", rule.is_output_quantized, op,
                          f"{where}: is_output_quantized={rule.is_output_quantized}")
        if rule.is_symmetric is not None:
            for q in ctx.ins(op) + ctx.outs(op):
                log.apply(q, "symmetric", rule.is_symmetric, op,
                          f"{where}: is_symmetric={rule.is_symmetric}")
        if rule.encoding_constraints is not None:
            lo, hi = rule.encoding_constraints.min, rule.encoding_constraints.max
            for q in ctx.outs(op):
                q.set("fixed", (lo, hi), f"{where}: encoding_constraints")
                if hi is not None and lo is not None and np.isclose(lo, -hi):
                    log.apply(q, "symmetric", True, op, f"{where}: encoding_constraints min = -max")
        for kind, q in ctx.params_of(op):
            prule = rule.params.get(kind)
            if prule is None:
                continue
            if prule.is_quantized is not None:
                q.set("enabled", prule.is_quantized,
                      f"{name}.params.{kind}.is_quantized={prule.is_quantized}")
            if prule.is_symmetric is not None:
                q.set("symmetric", prule.is_symmetric,
                      f"{name}.params.{kind}.is_symmetric={prule.is_symmetric}")


def _may_start_chain(ctx: Context, op: Node, excluded: set) -> bool:
    """Depthwise convs, 3-D convs and unfused-pass ops never start a supergroup."""
    if op.name in excluded:
        return False
    if op.op_type not in ("Conv", "ConvTranspose"):
        return True
    w = ctx.weight(op)
    if w is None:
        return True
    group = int(op.attrs.get("group", 1))
    if w.ndim == 5:
        return False
    if group != 1 and op.op_type == "Conv" and w.ndim > 1 and w.shape[1] == 1:
        return False
    if group != 1 and op.op_type == "ConvTranspose" and w.shape[0] == group:
        return False
    return True


def stage_e_supergroups(ctx: Context, cfg: QuantsimConfig, excluded: set) -> None:
    """E: longest patterns first; a match disables the outputs of all its ops but the last."""
    patterns = sorted(cfg.supergroups, key=len, reverse=True)  # stable: config order kept
    used: set = set()
    for pattern in patterns:
        for start in ctx.ops:
            if start.op_type != pattern[0] or not _may_start_chain(ctx, start, excluded):
                continue
            chain = [start]
            for want in pattern[1:]:
                nxt = ctx.consuming_ops(chain[-1])
                if len(nxt) != 1 or nxt[0].op_type != want:
                    chain = None
                    break
                chain.append(nxt[0])
            if chain is None or any(n.name in used for n in chain):
                continue
            used.update(n.name for n in chain)
            text = f"supergroup {','.join(pattern)} ({' -> '.join(n.name for n in chain)})"
            for n in chain[:-1]:
                for q in ctx.outs(n):
                    q.set("enabled", False, text)


def stage_f_model_input(ctx: Context, cfg: QuantsimConfig) -> None:
    """F: model_input True enables graph inputs read by an op and every constant input."""
    constants = [q for q in ctx.created if q.role == "constant"]
    if cfg.model_input is None:
        if constants:
            names = ", ".join(f"'{q.tensor}'" for q in constants)
            raise ConfigError(
                f"model_input is {{}} but the model has float constant inputs ({names}); "
                f"aimet-onnx 2.42 crashes on this combination (KeyError). Set model_input to "
                f"{{\"is_input_quantized\": \"True\"}} (or make these constants parameters).",
                [("model_input", f"{{}} with float constant inputs {names}")])
        return
    if cfg.model_input is False:
        raise ConfigError('model_input.is_input_quantized: only "True" (or an empty {}) is '
                          'accepted by aimet-onnx 2.42, got "False"',
                          [("model_input.is_input_quantized", "False is not accepted")])
    for q in ctx.created:
        if q.role == "graph_input" and ctx.readers(q.tensor) > 0:
            q.set("enabled", True, "model_input.is_input_quantized=True")
        elif q.role == "constant":
            q.set("enabled", True, "model_input.is_input_quantized=True (constant input)")


def stage_g_model_output(ctx: Context, cfg: QuantsimConfig) -> None:
    """G: model_output True enables all outputs of ops that no op reads."""
    if cfg.model_output is False:
        raise ConfigError('model_output.is_output_quantized: only "True" (or an empty {}) is '
                          'accepted by aimet-onnx 2.42, got "False"',
                          [("model_output.is_output_quantized", "False is not accepted")])
    if not cfg.model_output:
        return
    for op in ctx.ops:
        if not ctx.consuming_ops(op):
            for q in ctx.outs(op):
                q.set("enabled", True, f"model_output.is_output_quantized=True ({op.name} "
                                       f"has no consuming op)")


# ---- §4: per-channel ---------------------------------------------------------------------------

def _weight_axis(ctx: Context, op: Node, q: WorkQuantizer, ndim: int) -> Optional[int]:
    """§4 axis of a ≥2-D parameter of ``op``; None when AIMET has no axis for it."""
    if q.kind != "weight":
        return None
    if op.op_type == "Conv":
        return 0
    if op.op_type == "ConvTranspose":
        return 1
    if op.op_type == "Gemm":
        return 0 if int(op.attrs.get("transB", 0)) == 1 else 1
    if op.op_type == "MatMul":
        return ndim - 2 if q.tensor in ctx.transposed else ndim - 1
    return None


def stage_per_channel(ctx: Context, cfg: QuantsimConfig) -> None:
    """§4: every param of a per-channel op becomes per-channel (1-D vectors on axis 0)."""
    for op in ctx.ops:
        rule = cfg.op_type.get(op.op_type)
        if rule is not None and rule.per_channel_quantization is not None:
            on, source = rule.per_channel_quantization, f"op_type.{op.op_type}.per_channel_quantization"
        else:
            on, source = cfg.defaults.per_channel_quantization is True, "defaults.per_channel_quantization"
        if not on:
            continue
        for kind, q in ctx.params_of(op):
            ndim = np.ndim(static_value(ctx.graph, q.tensor, ctx.producers))
            axis = 0 if ndim <= 1 else _weight_axis(ctx, op, q, ndim)
            if axis is None:
                raise ConfigError(
                    f"per-channel quantization is on for {op.describe()} ({source}=True) but its "
                    f"{ndim}-D parameter '{q.tensor}' ({kind}) has no channel axis in aimet-onnx "
                    f"2.42 (AIMET raises). Set op_type.{op.op_type}.per_channel_quantization to "
                    f"\"False\".", [(source, f"no channel axis for '{q.tensor}'")])
            q.set("axis", axis, f"{source}=True on {op.name}")


# ---- §2.I-K ------------------------------------------------------------------------------------

def stage_i_unfused(ctx: Context, unfused: list, param_bitwidth: int) -> None:
    """I: unfused MatMul+Add: MatMul output off; the Add vector becomes a disabled symmetric bias."""
    for mm, add, bias in unfused:
        text = f"supergroup_pass_list MatmulAdd (unfused {mm.name} + {add.name})"
        for q in ctx.outs(mm):
            q.set("enabled", False, text)
        weight = next(q for kind, q in ctx.params_of(mm) if kind == "weight")
        q = ctx.qmap[bias]
        q.role, q.kind, q.bitwidth = "param", "bias", param_bitwidth
        ctx.origin[bias] = "param"
        q.set("enabled", False, text)
        q.set("symmetric", True, text)
        q.set("axis", weight.axis, f"{text}: granularity of {weight.tensor}")
        q.strict, q.unsigned = weight.strict, weight.unsigned
        ctx.op_params.setdefault(mm.name, []).append(("bias", bias))


def _has_param_weight(ctx: Context, op: Node) -> bool:
    return any(kind == "weight" for kind, _ in ctx.op_params.get(op.name, []))


def stage_j_dynamic_weights(ctx: Context, cfg: QuantsimConfig) -> None:
    """J: the effective quantizer of a non-parameter input 1 of Conv/ConvTranspose/Gemm/MatMul
    takes the weight symmetry (op_type.<T>.params.weight.is_symmetric, else defaults.params)."""
    for op in ctx.ops:
        if op.op_type not in WEIGHT_OPS or len(op.inputs) < 2 or not op.inputs[1] \
                or _has_param_weight(ctx, op):
            continue
        rule = cfg.op_type.get(op.op_type)
        prule = rule.params.get("weight") if rule is not None else None
        if prule is not None and prule.is_symmetric is not None:
            value, source = prule.is_symmetric, f"op_type.{op.op_type}.params.weight.is_symmetric"
        elif cfg.defaults.params.is_symmetric is not None:
            value, source = cfg.defaults.params.is_symmetric, "defaults.params.is_symmetric"
        else:
            continue
        q = ctx.effective(op.inputs[1])
        if q is not None:
            q.set("symmetric", value, f"{source}={value} (dynamic weight of {op.name})")


def stage_k_exceptions(ctx: Context, cfg: QuantsimConfig) -> None:
    """K: norm params, dynamic MatMul under hw_version, grouped ConvTranspose per-tensor."""
    hw = cfg.defaults.hw_version
    for op in ctx.ops:
        if op.op_type in NORM_LN_BN or op.op_type in NORM_FOLLOW_OUTPUT:
            _norm_params(ctx, op, hw)
        elif op.op_type == "MatMul" and hw is not None and not _has_param_weight(ctx, op) \
                and len(op.inputs) >= 2:
            _dynamic_matmul(ctx, op, hw)
        elif op.op_type == "ConvTranspose" and int(op.attrs.get("group", 1)) != 1:
            for kind, q in ctx.params_of(op):
                if kind == "weight" and q.axis is not None:
                    q.set("axis", None, f"grouped ConvTranspose {op.name} stays per-tensor")


def _norm_params(ctx: Context, op: Node, hw: Optional[str]) -> None:
    outs = [q for q in ctx.acts(op.outputs[:1])]
    first_out = outs[0] if outs else None
    for kind, q in ctx.params_of(op):
        if not q.enabled:
            continue
        text = f"norm-op exception rule ({op.op_type} {op.name})"
        bitwidth = max(q.bitwidth, 8)
        if op.op_type in NORM_LN_BN:
            if hw in OLD_HTP:
                bitwidth = 8
            q.set("bitwidth", bitwidth, text)
            q.set("symmetric", bitwidth >= 16, text)
        elif first_out is not None and first_out.enabled:
            q.set("bitwidth", first_out.bitwidth, f"{text}: follows {first_out.tensor}")
            q.set("symmetric", first_out.symmetric, f"{text}: follows {first_out.tensor}")
        else:
            q.set("bitwidth", bitwidth, text)
            q.set("symmetric", False, f"{text}: output not quantized")


def _dynamic_matmul(ctx: Context, op: Node, hw: str) -> None:
    q0, q1 = ctx.effective(op.inputs[0]), ctx.effective(op.inputs[1])
    if q0 is None or q1 is None:
        return
    text = f"dynamic MatMul exception rule (hw_version {hw}, {op.name})"
    if hw in OLD_HTP:
        q1.set("symmetric", True, text)
        q1.set("bitwidth", 8, text)
    elif q1.bitwidth == 16:
        q1.set("symmetric", True, text)
        q0.set("bitwidth", 16, text)
