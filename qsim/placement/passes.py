"""Create quantizers and configure them, stage by stage (placement.md §0-§4).

``place_quantizers`` is the only public function. Internally a small mutable working record per
quantizer (:class:`_Q`) is filled in by one function per stage, in AIMET's order; the result is
frozen into :class:`~qsim.placement.result.Placement` at the end. Nothing outside the call is
mutated.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Optional

import numpy as np

from ..errors import ConfigError, EncodingError
from ..ir import Graph, Node
from .fusion import fuse_matmul_add, static_value
from .order import activation_update_order
from .result import Placement, QuantizerSpec, is_float_cast
from ..config import OpTypeSettings, QuantsimConfig, load_config
from .tables import (BACKWARD_TIE_OPS, FLOAT_DTYPES, FORWARD_TIE_OPS, GRID_PRESERVING,
                     NO_QUANTIZER_PRODUCERS, NORM_FOLLOW_OUTPUT, NORM_LN_BN, OLD_HTP,
                     PARAM_SLOTS, WEIGHT_OPS)


# ---- working state -------------------------------------------------------------------------

@dataclass
class _Q:
    """A quantizer while placement runs (mutable, local to one ``place_quantizers`` call)."""

    uid: int                       # creation order
    tensor: str                    # the tensor it was created for
    role: str                      # "param", "graph_input", "constant", "activation"
    kind: Optional[str]            # parameter kind or None
    bitwidth: int
    enabled: bool = False
    symmetric: bool = False
    strict: bool = False
    unsigned: bool = False
    axis: Optional[int] = None
    fixed: Optional[tuple] = None
    why: dict = field(default_factory=dict)    # flag → the rule that last set it
    notes: list = field(default_factory=list)  # tie notes

    def set(self, flag: str, value, rule: str) -> None:
        setattr(self, flag, value)
        self.why[flag] = f"{flag}={value} by {rule}"


@dataclass
class _Ctx:
    """Graph facts and the quantizers created on it."""

    graph: Graph
    ops: list                                    # every node except Constant, graph order
    producers: dict
    consumers: dict                              # tensor → consuming nodes
    qmap: dict = field(default_factory=dict)     # tensor → _Q (ties make entries share one)
    created: list = field(default_factory=list)  # every _Q, creation order
    op_params: dict = field(default_factory=dict)  # op name → [(kind, tensor)]
    transposed: set = field(default_factory=set)   # MatMul weights read through a Transpose
    origin: dict = field(default_factory=dict)     # tensor → role it was created with (ties
                                                   # share objects, never change this)

    def new(self, tensor: str, role: str, kind: Optional[str], bitwidth: int) -> _Q:
        q = _Q(uid=len(self.created), tensor=tensor, role=role, kind=kind, bitwidth=bitwidth)
        self.created.append(q)
        self.qmap[tensor] = q
        self.origin[tensor] = role
        return q

    def acts(self, tensors) -> list:
        """Activation quantizers (not params) of ``tensors``, each once."""
        return [self.qmap[t] for t in dict.fromkeys(tensors)
                if t and t in self.qmap and self.qmap[t].role != "param"]

    def ins(self, op: Node) -> list:
        return self.acts(op.inputs)

    def outs(self, op: Node) -> list:
        return self.acts(op.outputs)

    def params_of(self, op: Node) -> list:
        return [(kind, self.qmap[t]) for kind, t in self.op_params.get(op.name, [])]

    def consuming_ops(self, op: Node) -> list:
        """Distinct ops reading any output of ``op`` (a graph output is not a consumer)."""
        found = {}
        for out in op.outputs:
            for n in self.consumers.get(out, []):
                found[n.name] = n
        return list(found.values())

    def readers(self, tensor: str) -> int:
        return len(self.consumers.get(tensor, []))

    def weight(self, op: Node) -> Optional[np.ndarray]:
        if len(op.inputs) < 2 or not op.inputs[1]:
            return None
        return static_value(self.graph, op.inputs[1], self.producers)

    def effective_path(self, tensor: str) -> tuple:
        """(source tensor with an enabled quantizer or None, tensors walked from ``tensor``)."""
        path = []
        while tensor not in path:
            path.append(tensor)
            q = self.qmap.get(tensor)
            if q is not None and q.enabled:
                return tensor, path
            node = self.producers.get(tensor)
            if node is None or not (node.op_type in GRID_PRESERVING
                                    or is_float_cast(self.graph, node)):
                return None, path
            tensor = node.inputs[0]
        return None, path

    def effective(self, tensor: str) -> Optional[_Q]:
        source, _ = self.effective_path(tensor)
        return None if source is None else self.qmap[source]


class _StageLog:
    """Remembers who set which activation flag in one stage, to reject conflicting settings."""

    def __init__(self, stage: str):
        self.stage = stage
        self.seen: dict = {}

    def apply(self, q: _Q, flag: str, value, op: Node, rule: str) -> None:
        key = (q.uid, flag)
        if key in self.seen and self.seen[key][0] != value:
            old_value, old_op, old_rule = self.seen[key]
            raise ConfigError(
                f"stage {self.stage}: the activation quantizer on '{q.tensor}' gets "
                f"{flag}={old_value} from {old_op.describe()} ({old_rule}) and {flag}={value} "
                f"from {op.describe()} ({rule}); AIMET 2.42 rejects such a configuration "
                f"(AssertionError). Make the two op_type entries agree on this tensor.",
                [(rule, f"conflicts with {old_rule} on '{q.tensor}'")])
        self.seen[key] = (value, op, rule)
        q.set(flag, value, rule)


# ---- §1: create quantizers ---------------------------------------------------------------------

def _is_float(graph: Graph, tensor: str) -> bool:
    dtype = graph.dtype_of(tensor)
    return dtype is None or np.dtype(dtype).name in FLOAT_DTYPES


def _through_identity(ctx: _Ctx, tensor: str) -> str:
    seen = set()
    while tensor not in seen:
        seen.add(tensor)
        node = ctx.producers.get(tensor)
        if node is None or node.op_type != "Identity":
            return tensor
        tensor = node.inputs[0]
    return tensor


def _param_tensor(ctx: _Ctx, op: Node, index: int) -> tuple:
    """(parameter tensor or None, read through a Transpose?) for one slot of ``op``."""
    if index >= len(op.inputs) or not op.inputs[index]:
        return None, False
    tensor = _through_identity(ctx, op.inputs[index])
    if static_value(ctx.graph, tensor, ctx.producers) is not None:
        return tensor, False
    node = ctx.producers.get(tensor)
    if op.op_type == "MatMul" and node is not None and node.op_type == "Transpose":
        inner = _through_identity(ctx, node.inputs[0])
        if static_value(ctx.graph, inner, ctx.producers) is not None:
            return inner, True
    return None, False


def create_params(ctx: _Ctx, bitwidth: int) -> None:
    """§1.2: one quantizer per parameter tensor, in the order ops first use them."""
    for op in ctx.ops:
        for index, kind in PARAM_SLOTS.get(op.op_type, {}).items():
            tensor, transposed = _param_tensor(ctx, op, index)
            if tensor is None or not _is_float(ctx.graph, tensor):
                continue
            if tensor not in ctx.qmap:
                ctx.new(tensor, "param", kind, bitwidth)
            ctx.op_params.setdefault(op.name, []).append((kind, tensor))
            if transposed:
                ctx.transposed.add(tensor)


def _gets_activation_quantizer(ctx: _Ctx, tensor: str) -> bool:
    """§1.3 filters: float, not a parameter, no Resize roi/scales/sizes use, a real producer."""
    if not tensor or tensor in ctx.qmap or not _is_float(ctx.graph, tensor):
        return False
    for n in ctx.consumers.get(tensor, []):
        if n.op_type == "Resize" and tensor in n.inputs[1:]:
            return False
    node = ctx.producers.get(tensor)
    return node is None or node.op_type not in NO_QUANTIZER_PRODUCERS


def create_activations(ctx: _Ctx, bitwidth: int) -> None:
    """§1.3: graph inputs, then per node (graph order) unseen inputs, then outputs."""
    seen = set()
    for name in ctx.graph.input_names:
        seen.add(name)
        if _gets_activation_quantizer(ctx, name):
            ctx.new(name, "graph_input", None, bitwidth)
    for node in ctx.graph.nodes:
        for name in node.inputs:
            if name and name not in seen:
                seen.add(name)
                if _gets_activation_quantizer(ctx, name):
                    ctx.new(name, "constant", None, bitwidth)
        constant_like = node.op_type in ("Constant", "ConstantOfShape")
        for name in node.outputs:
            if name and name not in seen:
                seen.add(name)
                if _gets_activation_quantizer(ctx, name):
                    ctx.new(name, "constant" if constant_like else "activation", None, bitwidth)


def find_unfused_matmul_add(ctx: _Ctx) -> list:
    """§2.I: (MatMul, Add, bias tensor) for MatMul+Add pairs that fusion did not take."""
    found = []
    for op in ctx.ops:
        if op.op_type != "MatMul" or not any(k == "weight" for k, _ in ctx.op_params.get(op.name, [])):
            continue
        readers = ctx.consumers.get(op.outputs[0], [])
        if len(readers) != 1 or readers[0].op_type != "Add":
            continue
        add = readers[0]
        others = [t for t in add.inputs if t != op.outputs[0]]
        if len(others) != 1 or others[0] not in ctx.graph.params:
            continue
        if ctx.graph.params[others[0]].ndim != 1 or others[0] not in ctx.qmap:
            continue
        found.append((op, add, others[0]))
    return found


# ---- §2: stages --------------------------------------------------------------------------------

def stage_b_defaults(ctx: _Ctx, cfg: QuantsimConfig) -> None:
    """B: defaults.ops on every op, inputs/constants off again, defaults.params, strict/unsigned."""
    log = _StageLog("B (defaults.ops)")
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


def stage_c_params(ctx: _Ctx, cfg: QuantsimConfig) -> None:
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


def stage_d_op_types(ctx: _Ctx, cfg: QuantsimConfig) -> None:
    """D: op_type.<T> on every op of type T (inputs, outputs, symmetry, constraints, params)."""
    log = _StageLog("D (op_type)")
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


def _may_start_chain(ctx: _Ctx, op: Node, excluded: set) -> bool:
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


def stage_e_supergroups(ctx: _Ctx, cfg: QuantsimConfig, excluded: set) -> None:
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


def stage_f_model_input(ctx: _Ctx, cfg: QuantsimConfig) -> None:
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


def stage_g_model_output(ctx: _Ctx, cfg: QuantsimConfig) -> None:
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

def _weight_axis(ctx: _Ctx, op: Node, q: _Q, ndim: int) -> Optional[int]:
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


def stage_per_channel(ctx: _Ctx, cfg: QuantsimConfig) -> None:
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

def stage_i_unfused(ctx: _Ctx, unfused: list, param_bitwidth: int) -> None:
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


def _has_param_weight(ctx: _Ctx, op: Node) -> bool:
    return any(kind == "weight" for kind, _ in ctx.op_params.get(op.name, []))


def stage_j_dynamic_weights(ctx: _Ctx, cfg: QuantsimConfig) -> None:
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


def stage_k_exceptions(ctx: _Ctx, cfg: QuantsimConfig) -> None:
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


def _norm_params(ctx: _Ctx, op: Node, hw: Optional[str]) -> None:
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


def _dynamic_matmul(ctx: _Ctx, op: Node, hw: str) -> None:
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


# ---- §3: ties ----------------------------------------------------------------------------------

def _tie_sources(ctx: _Ctx, op: Node, visited: set) -> list:
    """Source tensors of a backward tie at ``op``, recursing into tie / grid-preserving producers."""
    visited.add(op.name)
    inputs = op.inputs[:1] if op.op_type in GRID_PRESERVING else op.inputs
    sources = []
    for tensor in dict.fromkeys(t for t in inputs if t):
        if not _is_float(ctx.graph, tensor):
            continue
        source, path = ctx.effective_path(tensor)
        if source is None:
            source, path = tensor, [tensor]
        if any(ctx.readers(t) > 1 for t in path) or source not in ctx.qmap \
                or ctx.qmap[source].role == "param":
            continue
        sources.append(source)
        producer = ctx.producers.get(source)
        if producer is not None and producer.name not in visited and (
                producer.op_type in BACKWARD_TIE_OPS or producer.op_type in GRID_PRESERVING):
            sources += _tie_sources(ctx, producer, visited)
    return sources


def tie_backward(ctx: _Ctx) -> None:
    """§3: Concat/Scatter*: each source quantizer is replaced by the op's output quantizer."""
    for op in reversed(ctx.ops):
        if op.op_type not in BACKWARD_TIE_OPS or op.outputs[0] not in ctx.qmap:
            continue
        group = ctx.qmap[op.outputs[0]]
        sources = [s for s in dict.fromkeys(_tie_sources(ctx, op, set()))
                   if ctx.qmap[s] is not group]
        ranges = {ctx.qmap[s].fixed for s in sources}
        if len(ranges) == 1:
            common = next(iter(ranges))
            if common is not None:
                group.set("fixed", common, f"backward tie at {op.name}: all sources fixed")
        else:
            sources = [s for s in sources if ctx.qmap[s].fixed is None]
        for s in sources:
            ctx.qmap[s] = group
            group.notes.append(f"{s} tied to {op.outputs[0]} by {op.op_type} {op.name}")


def _absorbed_range(q: _Q, out: _Q) -> Optional[tuple]:
    """Q's fixed range, else the output's (made ±absmax if Q is symmetric)."""
    if q.fixed is not None or out.fixed is None:
        return q.fixed
    if not q.symmetric:
        return out.fixed
    m = max(abs(v) for v in out.fixed if v is not None)
    return (-m, m)


def tie_forward(ctx: _Ctx) -> None:
    """§3: AveragePool/Relu/Resize/Upsample output shares input 0's effective quantizer."""
    for op in ctx.ops:
        if op.op_type not in FORWARD_TIE_OPS or not op.outputs or op.outputs[0] not in ctx.qmap:
            continue
        out = ctx.qmap[op.outputs[0]]
        if not out.enabled:
            continue
        source, path = ctx.effective_path(op.inputs[0])
        if source is None:
            continue
        q = ctx.qmap[source]
        if q is out:
            continue
        if out.fixed is not None and out.fixed != q.fixed and any(ctx.readers(t) > 1 for t in path):
            continue
        text = f"forward tie {op.op_type} {op.name}"
        if out.bitwidth < q.bitwidth:
            q.set("bitwidth", out.bitwidth, text)
        if out.symmetric and not q.symmetric:
            q.set("symmetric", True, text)
        if out.unsigned and not q.unsigned:
            q.unsigned = True
            q.why["unsigned"] = f"unsigned=True by {text}"
        fixed = _absorbed_range(q, out)
        if fixed != q.fixed:
            q.set("fixed", fixed, text)
        ctx.qmap[op.outputs[0]] = q
        q.notes.append(f"{op.outputs[0]} tied to {source} by {op.op_type} {op.name}")


# ---- freeze -------------------------------------------------------------------------------------

def _freeze(ctx: _Ctx) -> Placement:
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
    return Placement(graph=ctx.graph, quantizers=tuple(specs),
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
    Steps (placement.md §0): MatmulAdd fusion; parameter then activation quantizers (all
    asymmetric per-tensor at ``param_bitwidth`` / ``activation_bitwidth``); stages A–G; per-channel;
    unfused passes (I); dynamic weight symmetry (J); exception rules (K); backward then forward
    ties. Raises :class:`ConfigError` for the model-dependent configuration errors of §7.
    """
    param_bitwidth = _check_bitwidth("param_bitwidth", param_bitwidth)
    activation_bitwidth = _check_bitwidth("activation_bitwidth", activation_bitwidth)
    cfg = config if isinstance(config, QuantsimConfig) else load_config(config)
    if "MatmulAdd" in cfg.supergroup_pass_list:
        graph = fuse_matmul_add(graph)
    ctx = _Ctx(graph=graph, ops=[n for n in graph.nodes if n.op_type != "Constant"],
               producers=graph.producers(), consumers=graph.consumers())
    create_params(ctx, param_bitwidth)
    create_activations(ctx, activation_bitwidth)
    unfused = find_unfused_matmul_add(ctx) if "MatmulAdd" in cfg.supergroup_pass_list else []
    # Stage A (reset) is the creation state: every quantizer starts disabled.
    stage_b_defaults(ctx, cfg)
    stage_c_params(ctx, cfg)
    stage_d_op_types(ctx, cfg)
    stage_e_supergroups(ctx, cfg, {n.name for mm, add, _ in unfused for n in (mm, add)})
    stage_f_model_input(ctx, cfg)
    stage_g_model_output(ctx, cfg)
    # Stage H: bitwidths are already param/activation bitwidths (supported_kernels changes none).
    stage_per_channel(ctx, cfg)
    stage_i_unfused(ctx, unfused, param_bitwidth)
    stage_j_dynamic_weights(ctx, cfg)
    stage_k_exceptions(ctx, cfg)
    tie_backward(ctx)
    tie_forward(ctx)
    return _freeze(ctx)
