"""QuantizationSimModel: insert quantizers as an AIMET config says, calibrate, simulate.

The pipeline (placement.md §0 and numerics.md §6)::

    graph ──place_quantizers──▶ Placement (fused graph + one QuantizerSpec per quantizer object)
          ──_insert_qdq──────▶ sim graph: a ``QuantizeDequantize`` node (domain ``qsim``) after
                               every quantized tensor; consumers read ``<tensor>_updated``
                               (activations) or ``<param>_qdq`` (parameters)
    compute_encodings: 1. parameter encodings from the weights themselves;
                       2. per batch one forward with quantized weights while activation
                          quantizers only observe (tie groups observe in ONNX Runtime's order);
                       3. activation encodings, fixed ranges, then the weight-scale adjustment.
    run(feeds): the simulated model, a drop-in replacement for the FP32 one.

Only enabled quantizers get a node in the graph that runs; the full sim graph (every
quantizer, enabled or not) is available as :attr:`QuantizationSimModel.sim_graph`.
"""
from __future__ import annotations

import copy
import enum
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .config import load_config
from .errors import ConfigError, EncodingError, FeedError, NotCalibratedError, QsimError
from .interpreter import check_feeds, run as run_graph
from .kernels.family import DESCRIPTION as _FAMILY_TEXT, resolve as resolve_family
from .ir import Graph, Node
from .placement import Placement, QuantizerSpec, place_quantizers
from .placement.norm_fusion import fold_reciprocal_mul
from .quant import Encoding, TensorQuantizer

QDQ_OP = "QuantizeDequantize"
QDQ_DOMAIN = "qsim"


class QuantScheme(enum.Enum):
    """Calibration schemes; values are AIMET's enum names (written into exported files)."""

    min_max = "min_max"                                   # "tf": running min/max (numerics §2)
    post_training_tf_enhanced = "post_training_tf_enhanced"  # SQNR search (numerics §4)
    post_training_percentile = "post_training_percentile"    # percentile (numerics §5)

    @property
    def analyzer(self) -> str:
        """The scheme name understood by :class:`qsim.quant.TensorQuantizer`."""
        return {"min_max": "tf", "post_training_tf_enhanced": "tf_enhanced",
                "post_training_percentile": "percentile"}[self.value]


_SCHEME_NAMES = {
    "tf": QuantScheme.min_max, "min_max": QuantScheme.min_max,
    "post_training_tf": QuantScheme.min_max,
    "tf_enhanced": QuantScheme.post_training_tf_enhanced,
    "post_training_tf_enhanced": QuantScheme.post_training_tf_enhanced,
    "percentile": QuantScheme.post_training_percentile,
    "post_training_percentile": QuantScheme.post_training_percentile,
    # QAT with range learning: calibrated like their post-training twins (qat.md §1)
    "training_range_learning_with_tf_init": QuantScheme.min_max,
    "training_range_learning_with_tf_enhanced_init": QuantScheme.post_training_tf_enhanced,
}


def parse_scheme(scheme: "str | QuantScheme") -> QuantScheme:
    """``"tf"``/``"min_max"``, ``"tf_enhanced"``, ``"percentile"`` or a :class:`QuantScheme`."""
    if isinstance(scheme, QuantScheme):
        return scheme
    if isinstance(scheme, enum.Enum):  # another library's enum with the same member names
        scheme = scheme.name
    if isinstance(scheme, str) and scheme in _SCHEME_NAMES:
        return _SCHEME_NAMES[scheme]
    raise QsimError(f"quant_scheme {scheme!r} is not known; use one of "
                    f"{sorted(_SCHEME_NAMES)} or a qsim.QuantScheme")


def _learns_ranges(scheme: "str | QuantScheme") -> bool:
    """True for AIMET's ``training_range_learning_*`` schemes (QAT learns the ranges)."""
    return str(getattr(scheme, "name", scheme)).startswith("training_range_learning")


def parse_int_type(value: "str | int", what: str) -> int:
    """``"int8"`` (or ``8``) → 8; int2 … int16 are accepted."""
    text = str(value)
    bits = text[3:] if text.startswith("int") else text
    if bits.isdigit() and 2 <= int(bits) <= 16:
        return int(bits)
    raise QsimError(f"{what} {value!r} is not supported; use 'int2' … 'int16' (e.g. 'int8')")


# ---- the sim graph ---------------------------------------------------------------------------

def updated_name(spec: QuantizerSpec, tensor: str) -> str:
    """Name of the quantize-dequantized tensor: ``W_qdq`` for params, ``T_updated`` otherwise."""
    return f"{tensor}_qdq" if spec.is_param else f"{tensor}_updated"


def insert_qdq(graph: Graph, quantizers: Iterable[QuantizerSpec],
               include: Callable[[QuantizerSpec], bool] = lambda s: True) -> Graph:
    """The sim graph: a ``QuantizeDequantize(qid=…)`` node after every quantized tensor.

    Quantizers of graph inputs and parameters/constants come first, then each activation
    quantizer right after its tensor's producer (the node order ONNX Runtime's execution order
    is modelled on). Consumers (and graph outputs) are rewired to the quantized tensor; graph
    outputs keep their names in :meth:`QuantizationSimModel.run`.
    """
    chosen = [(t, s) for s in quantizers if include(s) for t in s.tensors]
    renamed = {t: updated_name(s, t) for t, s in chosen}
    producer = {o: n.name for n in graph.nodes for o in n.outputs if o}

    def qdq_node(tensor: str, spec: QuantizerSpec) -> Node:
        return Node(name=f"{tensor}_qdq_node" if not spec.is_param else f"{tensor}_quantizer",
                    op_type=QDQ_OP, inputs=(tensor,), outputs=(renamed[tensor],),
                    attrs={"qid": spec.qid, "tensor": tensor}, domain=QDQ_DOMAIN)

    head = [qdq_node(t, s) for t, s in chosen if t not in producer]
    after: dict[str, list[Node]] = {}
    for t, s in chosen:
        if t in producer:
            after.setdefault(producer[t], []).append(qdq_node(t, s))
    nodes = list(head)
    for n in graph.nodes:
        nodes.append(replace(n, inputs=tuple(renamed.get(i, i) for i in n.inputs)))
        nodes.extend(after.get(n.name, ()))
    outputs = tuple(replace(v, name=renamed.get(v.name, v.name)) for v in graph.outputs)
    return graph.with_nodes(nodes, outputs=outputs)


# ---- the facade --------------------------------------------------------------------------------

@dataclass
class QuantizerHandle:
    """A quantizer as users see it: its spec, whether it is enabled, its encoding.

    Tie members share one handle. ``enabled`` and ``encoding`` can be set."""

    spec: QuantizerSpec
    quantizer: TensorQuantizer
    enabled: bool

    @property
    def encoding(self) -> Encoding | None:
        return self.quantizer.encoding

    @encoding.setter
    def encoding(self, value: Encoding) -> None:
        self.quantizer.encoding = value


class _Session:
    """What a legacy ``forward_pass_callback(session, args)`` receives: ORT's ``run`` signature."""

    def __init__(self, forward: Callable[[Mapping[str, np.ndarray]], dict]):
        self._forward = forward

    def run(self, output_names, feeds):
        outputs = self._forward(feeds)
        names = list(outputs) if output_names is None else list(output_names)
        return [outputs[n] for n in names]


def _used_params_only(graph: Graph) -> Graph:
    """The graph without the parameters no node reads (the FP32 weights that only fed a
    parameter quantizer, now folded into ``<param>_qdq``): half the bytes sent to workers."""
    used = {i for n in graph.nodes for i in n.inputs} | set(graph.output_names)
    return replace(graph, params={k: v for k, v in graph.params.items() if k in used})


def _without_stats(q: TensorQuantizer) -> TensorQuantizer:
    """A copy of the quantizer's settings and encoding, without statistics."""
    q = copy.copy(q)
    q.reset_stats()
    return q


@dataclass(frozen=True, eq=False)
class CalibrationPass:
    """One calibration forward pass, apart from the sim's state (picklable: a cluster's
    workers receive it once and run it on their batches).

    Weights are already quantize-dequantized in ``calib_graph``; each activation quantizer only
    observes: ``observe(qid, x)`` is called with the tensor, in the order the single-process
    calibration updates its statistics: untied quantizers while the graph runs, tie groups
    after the forward in ONNX Runtime's order (``order``: tensor → rank, placement.md §3).
    """

    graph: Graph                               # the model's inputs and outputs (to check feeds)
    calib_graph: Graph                         # enabled quantizers only, parameters QDQ'd
    quantizers: Mapping[int, TensorQuantizer]  # qid → quantizer (settings; read only here)
    ties: frozenset                            # qids of quantizers shared by several tensors
    order: Mapping[str, int]
    outputs: tuple
    fp32_kernels: str

    def forward(self, feeds: Mapping[str, np.ndarray],
                observe: Callable[[int, np.ndarray], None]) -> dict:
        """Run one batch (feeds already checked); returns the sim graph's outputs."""
        stash: list = []

        def op(x, *, qid, tensor):
            if qid in self.ties:
                stash.append((tensor, qid, x))
            else:
                observe(qid, x)
            return x

        outs = run_graph(self.calib_graph, feeds, ops={QDQ_OP: op}, outputs=list(self.outputs),
                         dynamic_params=self.calib_graph.params, fp32_kernels=self.fp32_kernels)
        for tensor, qid, x in sorted(stash, key=lambda e: self.order[e[0]]):
            observe(qid, x)
        return outs

    def observe_batch(self, feeds: Mapping[str, np.ndarray], stats: Mapping[int, Any]) -> list:
        """The statistics pieces of one batch: ``[(qid, piece), …]`` in update order.

        ``stats`` (qid → statistics or None) are what the observer knows before this batch
        (only histogram bins matter); pieces of the same quantizer within the batch (tie groups)
        are observed after the earlier ones, as the streaming update does. Folding the pieces
        in order into the statistics (``TensorQuantizer.fold_stats``) equals ``update_stats``
        on each tensor, unless a piece is stale (``HistogramStats.stale``)."""
        from .quant.stats import fold
        local = dict(stats)
        pieces: list = []

        def observe(qid: int, x: np.ndarray) -> None:
            piece = self.quantizers[qid].observe(x, local.get(qid))
            local[qid] = fold(local.get(qid), piece)
            pieces.append((qid, piece))

        self.forward(check_feeds(self.graph, feeds), observe)
        return pieces


@dataclass(frozen=True, eq=False)
class SimulationPass:
    """The simulated model, apart from the sim (picklable: a cluster's workers receive it once).

    ``run_graph`` holds only enabled quantizers, parameters quantize-dequantized ahead of time;
    ``output_names`` maps each FP32 graph output to the sim tensor holding it."""

    graph: Graph
    run_graph: Graph
    quantizers: Mapping[int, TensorQuantizer]
    output_names: Mapping[str, str]
    fp32_kernels: str

    def _qdq_op(self, x, *, qid, tensor):
        return self.quantizers[qid].quantize_dequantize(x)

    def run(self, feeds: Mapping[str, np.ndarray], *, outputs: Iterable[str] | None = None
            ) -> dict[str, np.ndarray]:
        """``{output name: array}`` of the simulated model (names as in the FP32 model)."""
        names = self.output_names
        wanted = list(names.values()) if outputs is None else [names.get(o, o) for o in outputs]
        # In AIMET's session every parameter reaches its op through a quantize node (enabled or
        # not), so no MatMul/Gemm operand is a pre-packed initializer there.
        outs = run_graph(self.run_graph, feeds, ops={QDQ_OP: self._qdq_op}, outputs=wanted,
                         dynamic_params=self.run_graph.params, fp32_kernels=self.fp32_kernels)
        back = {sim_name: name for name, sim_name in names.items()}
        return {back.get(k, k): v for k, v in outs.items()}

    def run_fp32(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The FP32 model's outputs (no quantizer), for SQNR against the simulation."""
        return run_graph(self.graph, feeds, outputs=list(self.graph.output_names),
                         fp32_kernels=self.fp32_kernels)


def _check_options(rounding_mode: str, fp32_kernels: str) -> str:
    """The resolved float32 kernel family, or QsimError naming a bad rounding mode / family."""
    if rounding_mode not in ("nearest", "half_even"):
        raise QsimError(f"rounding_mode {rounding_mode!r} is not supported; use 'nearest' "
                        f"(AIMET's) or 'half_even' (ONNX QuantizeLinear's)")
    try:
        return resolve_family(fp32_kernels)
    except ValueError as exc:
        raise QsimError(str(exc)) from None


class QuantizationSimModel:
    """A quantization-simulation of an FP32 model, configured by an AIMET config file.

    >>> sim = QuantizationSimModel(model, quant_scheme="tf_enhanced",     # doctest: +SKIP
    ...                            param_type="int8", activation_type="int8", config_file=None)
    >>> sim.compute_encodings(batches)                                    # doctest: +SKIP
    >>> outputs = sim.run(feeds)                                          # doctest: +SKIP
    """

    def __init__(self, model: Any, quant_scheme: "str | QuantScheme" = "tf_enhanced",
                 param_type: "str | int" = "int8", activation_type: "str | int" = "int8",
                 config_file: Any = None, *, rounding_mode: str = "nearest",
                 fp32_kernels: str = "auto"):
        from .onnx_io import load_onnx
        graph = model if isinstance(model, Graph) else load_onnx(model)
        scheme = parse_scheme(quant_scheme)
        param_bitwidth = parse_int_type(param_type, "param_type")
        activation_bitwidth = parse_int_type(activation_type, "activation_type")
        family = _check_options(rounding_mode, fp32_kernels)
        config = load_config(config_file)
        placement = place_quantizers(graph, config, param_bitwidth=param_bitwidth,
                                     activation_bitwidth=activation_bitwidth)
        self._setup(graph, placement, config, scheme, _learns_ranges(quant_scheme),
                    param_bitwidth, activation_bitwidth, rounding_mode, family)

    def _setup(self, graph: Graph, placement: Placement, config, scheme: QuantScheme,
               range_learning: bool, param_bitwidth: int, activation_bitwidth: int,
               rounding_mode: str, family: str) -> None:
        """The state every sim has, from its FP32 graph and the quantizers placed on it."""
        self.model = graph
        self.quant_scheme = scheme
        #: QAT learns ranges by default (qsim.train); post-training schemes do not
        self.range_learning_scheme = range_learning
        self.param_bitwidth = param_bitwidth
        self.activation_bitwidth = activation_bitwidth
        self.rounding_mode = rounding_mode
        #: the float32 kernel family whose bits the ops reproduce (never "auto" here)
        self.fp32_kernels = family
        self.config = config
        self.placement: Placement = placement
        self.graph = self.placement.executed_graph  # after MatmulAdd fusion (norms as they are)
        self._handles: dict[int, QuantizerHandle] = {
            s.qid: QuantizerHandle(spec=s, quantizer=self._make_quantizer(s), enabled=s.enabled)
            for s in self.placement.quantizers}
        self.sim_graph = insert_qdq(self._quantized_base, self.placement.quantizers)
        self._calibrated = False
        self._run_graph: SimulationPass | None = None
        self._run_key: tuple = ()

    @classmethod
    def from_qdq(cls, model: Any, *, quant_scheme: "str | QuantScheme" = "tf_enhanced",
                 rounding_mode: str = "half_even",
                 fp32_kernels: str = "auto") -> "QuantizationSimModel":
        """A calibrated sim of a QDQ model (``sim.export_qdq``'s, ONNX Runtime's
        ``quantize_static``'s, ...): the FP32 model is the QDQ model without its
        QuantizeLinear/DequantizeLinear nodes, with one quantizer per Q→DQ pair (and per
        DequantizeLinear of an integer initializer) whose encoding is the pair's scale and zero
        point (:mod:`qsim.qdq_import`).

        With the default ``rounding_mode="half_even"``, ``run`` equals ONNX Runtime running
        ``model`` with graph optimizations off, bit for bit; ``quant_scheme`` only matters if
        the sim is calibrated again.
        """
        from .encodings_io import load_encodings_into
        from .qdq_import import read_qdq
        family = _check_options(rounding_mode, fp32_kernels)
        found = read_qdq(model)
        sim = cls.__new__(cls)
        sim._setup(found.graph, found.placement, load_config(None), parse_scheme(quant_scheme),
                   _learns_ranges(quant_scheme), found.param_bitwidth, found.activation_bitwidth,
                   rounding_mode, family)
        load_encodings_into(sim, found.encodings)
        return sim

    # ---- quantizers -------------------------------------------------------------------------
    def _make_quantizer(self, spec: QuantizerSpec, percentile: float | None = None) -> TensorQuantizer:
        return TensorQuantizer(scheme=self.quant_scheme.analyzer, bitwidth=spec.bitwidth,
                               symmetric=spec.symmetric, strict_symmetric=spec.strict_symmetric,
                               unsigned_symmetric=spec.unsigned_symmetric,
                               percentile=percentile, axis=spec.axis, rounding=self.rounding_mode,
                               name="quantizer of " + ", ".join(f"'{t}'" for t in spec.tensors))

    @property
    def quantizers(self) -> dict[str, QuantizerHandle]:
        """Tensor name → its quantizer (tie members map to the same handle)."""
        return {t: h for h in self._handles.values() for t in h.spec.tensors}

    @property
    def _quantized_base(self) -> Graph:
        """The graph quantizers are inserted into: ``self.graph`` (the FP32 model, whose weights
        training updates) with what aimet's session does inside its norm function bodies
        (norm_fusion.fold_reciprocal_mul)."""
        return fold_reciprocal_mul(self.graph, self.placement.bodies)

    def enabled_quantizers(self) -> list[str]:
        """Names of the tensors whose quantizer is enabled, in placement order."""
        return [t for h in self._handles.values() if h.enabled for t in h.spec.tensors]

    def set_percentile_value(self, percentile: float) -> None:
        """Set the percentile (50–100) of every quantizer, weights included (AIMET's golden use)."""
        if self.quant_scheme is not QuantScheme.post_training_percentile:
            raise QsimError(f"set_percentile_value needs quant_scheme='percentile', this sim "
                            f"uses {self.quant_scheme.value}")
        p = float(percentile)
        if not 50.0 <= p <= 100.0:
            raise QsimError(f"percentile {percentile!r} is out of range; use a value in [50, 100]")
        for h in self._handles.values():
            h.quantizer = self._make_quantizer(h.spec, percentile=p)
        self._calibrated = False

    @property
    def is_calibrated(self) -> bool:
        """True once encodings exist (``compute_encodings`` or ``load_encodings`` succeeded)."""
        return self._calibrated

    def explain(self) -> str:
        """One line per quantizer: tensor, enabled, flags, axis, tie group and deciding rules;
        the first line names the float32 kernel family."""
        return (f"fp32 kernels: {self.fp32_kernels} (ONNX Runtime's {_FAMILY_TEXT[self.fp32_kernels]})\n"
                + self.placement.explain())

    # ---- calibration ------------------------------------------------------------------------
    def compute_encodings(self, batches: Any, forward_pass_callback_args: Any = None) -> None:
        """Calibrate: parameters first, then activation statistics batch by batch, then encodings.

        ``batches`` is an iterable of ``{input name: array}`` dicts (fed in order, one forward
        each), or a callback ``fn(session, args)`` that calls ``session.run(None, feeds)``.
        Memory does not grow with the number of batches.
        """
        self._transaction(lambda: self._calibrate(batches, forward_pass_callback_args))

    def _transaction(self, calibrate: Callable[[], None]) -> None:
        """Run ``calibrate()``; if it fails, the encodings are left as they were."""
        before = {qid: h.quantizer.encoding for qid, h in self._handles.items()}
        was_calibrated = self._calibrated
        try:
            calibrate()
        except BaseException:
            # Nothing half-done: a failed calibration leaves the encodings as they were.
            for qid, h in self._handles.items():
                h.quantizer.reset_stats()
                h.quantizer.encoding = before[qid]
            self._calibrated = was_calibrated
            raise
        self._calibrated = True
        self._run_graph = None

    def nonfinite_quantizers(self) -> dict[str, str]:
        """Enabled quantizers whose last calibration saw ±Inf or only NaN: ``{tensor: "±Inf" |
        "only NaN"}`` (tie members each listed). Each also gave one
        :class:`~qsim.errors.NonFiniteWarning` naming it; see README "Non-finite data"."""
        return {t: h.quantizer.nonfinite for h in self._handles.values()
                if h.enabled and h.quantizer.nonfinite is not None for t in h.spec.tensors}

    def _begin_calibration(self) -> "CalibrationPass":
        """Forget the statistics, compute the parameter encodings, and return the forward pass
        that observes the activations (the same object runs on cluster workers)."""
        for h in self._handles.values():
            h.quantizer.reset_stats()
        self._compute_param_encodings()
        return self.calibration_pass()

    def calibration_pass(self) -> "CalibrationPass":
        """The calibration forward with the current parameter encodings (see CalibrationPass)."""
        calib_graph = _used_params_only(self._executable_graph())
        observed = {n.attrs["qid"] for n in calib_graph.nodes if n.op_type == QDQ_OP}
        return CalibrationPass(
            graph=replace(self.graph, nodes=(), params={}), calib_graph=calib_graph,
            quantizers={qid: _without_stats(self._handles[qid].quantizer) for qid in observed},
            ties=frozenset(h.spec.qid for h in self._handles.values() if len(h.spec.tensors) > 1),
            order={t: i for i, t in enumerate(self.placement.update_order())},
            outputs=tuple(self._output_names().values()), fp32_kernels=self.fp32_kernels)

    def _finish_calibration(self) -> None:
        """Activation encodings from the statistics, fixed ranges, weight-scale adjustment."""
        self._compute_activation_encodings()
        self._adjust_weight_scales()

    def _calibrate(self, batches: Any, callback_args: Any) -> None:
        cpass = self._begin_calibration()
        count = 0

        def observe(qid: int, x: np.ndarray) -> None:
            self._handles[qid].quantizer.update_stats(x)

        def forward(feeds: Mapping[str, np.ndarray]) -> dict:
            nonlocal count
            try:
                feeds = check_feeds(self.graph, feeds)
            except FeedError as exc:
                raise FeedError(f"calibration batch {count}: {exc}") from None
            empty = [n for n, a in feeds.items() if a.size == 0]
            if empty:
                raise FeedError(f"calibration batch {count}: input '{empty[0]}' has no elements "
                                f"(shape {feeds[empty[0]].shape}); every batch needs at least "
                                f"one sample")
            outs = cpass.forward(feeds, observe)
            count += 1
            return self._rename_outputs(outs)

        if callable(batches):
            batches(_Session(forward), callback_args)
        else:
            if isinstance(batches, Mapping):
                raise FeedError("compute_encodings takes an iterable of feed dicts (one per batch), "
                                "got a single dict; wrap it in a list: [feeds]")
            for feeds in batches:
                forward(feeds)
        if count == 0:
            raise FeedError("compute_encodings got no calibration batch: the iterable (or the "
                            "callback) ran no forward pass; give at least one {input: array} dict")
        self._finish_calibration()

    def _compute_param_encodings(self) -> None:
        for h in self._handles.values():
            if h.spec.is_param and h.enabled:
                weight = self.graph.params[h.spec.tensors[0]]
                h.quantizer.update_stats(np.asarray(weight, dtype=np.float32))
                h.quantizer.compute_encodings()

    def _compute_activation_encodings(self) -> None:
        from .quant.encoding import from_fixed_range
        for h in self._handles.values():
            if h.spec.is_param or not h.enabled:
                continue
            enc = h.quantizer.compute_encodings()
            if h.spec.fixed_range is not None:
                lo, hi = h.spec.fixed_range
                h.quantizer.encoding = from_fixed_range(
                    float(enc.min) if lo is None else lo, float(enc.max) if hi is None else hi,
                    bitwidth=h.spec.bitwidth, symmetric=h.spec.symmetric,
                    strict_symmetric=h.spec.strict_symmetric,
                    unsigned_symmetric=h.spec.unsigned_symmetric)

    def _adjust_weight_scales(self) -> None:
        from .weight_scale import adjust_weight_scales
        adjust_weight_scales(self)

    # ---- simulation -------------------------------------------------------------------------
    def _output_names(self) -> dict[str, str]:
        """Graph output name → the sim graph tensor holding it (``<name>_updated`` if quantized)."""
        mapping = {}
        for v in self.graph.outputs:
            qid = self.placement.quantizer_of.get(v.name)
            handle = self._handles.get(qid) if qid is not None else None
            mapping[v.name] = (updated_name(handle.spec, v.name)
                               if handle is not None and handle.enabled else v.name)
        return mapping

    def _executable_graph(self) -> Graph:
        """The sim graph with only enabled quantizers; parameter QDQ done once, ahead of time."""
        enabled = [h.spec for h in self._handles.values() if h.enabled]
        graph = insert_qdq(self._quantized_base, enabled)
        params = dict(graph.params)
        keep = []
        for node in graph.nodes:
            if node.op_type == QDQ_OP and node.inputs[0] in graph.params \
                    and self._handles[node.attrs["qid"]].spec.is_param:
                q = self._handles[node.attrs["qid"]].quantizer
                params[node.outputs[0]] = q.quantize_dequantize(
                    np.asarray(graph.params[node.inputs[0]], dtype=np.float32))
            else:
                keep.append(node)
        return graph.with_nodes(keep, params=params)

    def _rename_outputs(self, outs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        back = {sim_name: name for name, sim_name in self._output_names().items()}
        return {back.get(k, k): v for k, v in outs.items()}

    def simulation_pass(self) -> "SimulationPass":
        """The simulated model with the current encodings and enabled flags (picklable)."""
        if not self._calibrated:
            raise NotCalibratedError("run() needs encodings: call sim.compute_encodings(batches) "
                                     "first (or load_encodings)")
        key = tuple((h.enabled, id(h.quantizer.encoding)) for h in self._handles.values())
        if self._run_graph is None or self._run_key != key:  # enabled flags or encodings changed
            run_graph_ = _used_params_only(self._executable_graph())
            used = {n.attrs["qid"] for n in run_graph_.nodes if n.op_type == QDQ_OP}
            self._run_graph = SimulationPass(
                graph=self.graph, run_graph=run_graph_,
                quantizers={qid: _without_stats(self._handles[qid].quantizer) for qid in used},
                output_names=dict(self._output_names()), fp32_kernels=self.fp32_kernels)
            self._run_key = key
        return self._run_graph

    def run(self, feeds: Mapping[str, np.ndarray], *, outputs: Iterable[str] | None = None
            ) -> dict[str, np.ndarray]:
        """Run the simulated model: ``{output name: array}`` (names as in the FP32 model)."""
        return self.simulation_pass().run(feeds, outputs=outputs)

    # ---- quantization-aware training (qsim.train.sim_api) ------------------------------------
    def parameters(self) -> dict:
        """``{name: copy}``: FP32 weights/biases and every quantizer's ``"<tensor>.min"/".max"``."""
        from .train import sim_api
        return sim_api.parameters(self)

    def set_parameters(self, values: Mapping[str, np.ndarray]) -> None:
        """Set any of :meth:`parameters` (unknown name or wrong shape: error, nothing changed)."""
        from .train import sim_api
        sim_api.set_parameters(self, values)

    def value_and_grad(self, feeds: Mapping[str, np.ndarray], loss_fn) -> tuple:
        """``(loss, grads)`` of one training forward and backward (qsim.train)."""
        from .train import sim_api
        return sim_api.value_and_grad(self, feeds, loss_fn)

    def freeze_ranges(self) -> None:
        """Keep every quantizer range fixed during training (frozen path, qat.md §3)."""
        from .train import sim_api
        sim_api._state(self).frozen = True

    def unfreeze_ranges(self) -> None:
        """Learn every quantizer range during training (aimet-torch 2.42's behaviour)."""
        from .train import sim_api
        sim_api._state(self).frozen = False

    def fit(self, batches, loss_fn, optimizer, epochs: int = 1, *, progress=None) -> list:
        """Train on ``(feeds, target)`` batches; ``loss_fn(target)`` gives the loss (qsim.train).
        ``progress``: a tqdm progress bar on stderr (True / False; None: when it is a terminal)."""
        from .train import sim_api
        return sim_api.fit(self, batches, loss_fn, optimizer, epochs, progress=progress)

    # ---- export -----------------------------------------------------------------------------
    def export(self, path: "str | os.PathLike", filename_prefix: str, *,
               encoding_version: str = "1.0.0") -> tuple[Path, Path]:
        """Write ``<prefix>.onnx`` (FP32, no quantizers) and ``<prefix>.encodings``."""
        if not self._calibrated:
            raise NotCalibratedError("export() needs encodings: call sim.compute_encodings first")
        from .export import export_sim
        return export_sim(self, path, filename_prefix, encoding_version=encoding_version)

    def export_qdq(self, path: "str | os.PathLike", *, quantize_bias: bool = True,
                   opset: int | None = None) -> Path:
        """Write an ONNX model with QuantizeLinear/DequantizeLinear pairs that ONNX Runtime runs
        (agrees with this sim in ``rounding_mode="half_even"``)."""
        if not self._calibrated:
            raise NotCalibratedError("export_qdq() needs encodings: call sim.compute_encodings first")
        from .qdq import export_qdq
        return export_qdq(self, path, quantize_bias=quantize_bias, opset=opset)

    def to_integer(self, target: str = "onnxruntime", *, fp32_kernels: str = "auto"):
        """The integer model of this sim's QDQ export (``qsim.integer.to_integer``): its ``run``
        returns what ``target`` computes for ``export_qdq``'s model, bit for bit, on a CPU of
        the kernel family ``fp32_kernels`` (default: this machine's)."""
        from .integer import to_integer
        return to_integer(self, target, fp32_kernels=fp32_kernels)

    def load_encodings(self, path: "str | os.PathLike", strict: bool = True):
        """Load an encodings file (1.0.0, 0.6.1 or 2.0.0; AIMET's or qsim's) into this sim.

        ``strict`` reports every missing, extra or mistyped entry at once and changes nothing;
        ``strict=False`` applies what matches."""
        from .encodings_io import load_encodings_into
        return load_encodings_into(self, path, strict=strict)
