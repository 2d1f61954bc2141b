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
        self.model = model if isinstance(model, Graph) else load_onnx(model)
        self.quant_scheme = parse_scheme(quant_scheme)
        self.param_bitwidth = parse_int_type(param_type, "param_type")
        self.activation_bitwidth = parse_int_type(activation_type, "activation_type")
        if rounding_mode not in ("nearest", "half_even"):
            raise QsimError(f"rounding_mode {rounding_mode!r} is not supported; use 'nearest' "
                            f"(AIMET's) or 'half_even' (ONNX QuantizeLinear's)")
        self.rounding_mode = rounding_mode
        try:
            #: the float32 kernel family whose bits the ops reproduce (never "auto" here)
            self.fp32_kernels = resolve_family(fp32_kernels)
        except ValueError as exc:
            raise QsimError(str(exc)) from None
        self.config = load_config(config_file)
        self.placement: Placement = place_quantizers(
            self.model, self.config, param_bitwidth=self.param_bitwidth,
            activation_bitwidth=self.activation_bitwidth)
        self.graph = self.placement.graph  # after graph passes (MatmulAdd fusion)
        self._handles: dict[int, QuantizerHandle] = {
            s.qid: QuantizerHandle(spec=s, quantizer=self._make_quantizer(s), enabled=s.enabled)
            for s in self.placement.quantizers}
        self.sim_graph = insert_qdq(self.graph, self.placement.quantizers)
        self._calibrated = False
        self._run_graph: Graph | None = None
        self._run_key: tuple = ()
        self._ties: set[int] = set()
        self._stash: list = []

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
        before = {qid: h.quantizer.encoding for qid, h in self._handles.items()}
        was_calibrated = self._calibrated
        try:
            self._calibrate(batches, forward_pass_callback_args)
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

    def _calibrate(self, batches: Any, callback_args: Any) -> None:
        for h in self._handles.values():
            h.quantizer.reset_stats()
        self._compute_param_encodings()
        calib_graph = self._executable_graph()
        self._ties = {h.spec.qid for h in self._handles.values() if len(h.spec.tensors) > 1}
        order = {t: i for i, t in enumerate(self.placement.update_order())}
        count = 0

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
            self._stash = []
            outs = run_graph(calib_graph, feeds, ops={QDQ_OP: self._observe_op},
                             outputs=list(self._output_names().values()),
                             dynamic_params=calib_graph.params,
                             fp32_kernels=self.fp32_kernels)
            for tensor, qid, x in sorted(self._stash, key=lambda e: order[e[0]]):
                self._handles[qid].quantizer.update_stats(x)
            self._stash = []
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
        self._compute_activation_encodings()
        self._adjust_weight_scales()

    def _observe_op(self, x, *, qid, tensor):
        """Calibration's QDQ op: collect statistics, pass the tensor through unchanged.

        Tied quantizers are updated after the forward, in ONNX Runtime's order."""
        if qid in self._ties:
            self._stash.append((tensor, qid, x))
        else:
            self._handles[qid].quantizer.update_stats(x)
        return x

    def _qdq_op(self, x, *, qid, tensor):
        """Simulation's QDQ op: quantize-dequantize with the quantizer's encoding."""
        return self._handles[qid].quantizer.quantize_dequantize(x)

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
        graph = insert_qdq(self.graph, enabled)
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

    def run(self, feeds: Mapping[str, np.ndarray], *, outputs: Iterable[str] | None = None
            ) -> dict[str, np.ndarray]:
        """Run the simulated model: ``{output name: array}`` (names as in the FP32 model)."""
        if not self._calibrated:
            raise NotCalibratedError("run() needs encodings: call sim.compute_encodings(batches) "
                                     "first (or load_encodings)")
        key = tuple((h.enabled, id(h.quantizer.encoding)) for h in self._handles.values())
        if self._run_graph is None or self._run_key != key:  # enabled flags or encodings changed
            self._run_graph, self._run_key = self._executable_graph(), key

        names = self._output_names()
        wanted = list(names.values()) if outputs is None else [names.get(o, o) for o in outputs]
        # In AIMET's session every parameter reaches its op through a quantize node (enabled or
        # not), so no MatMul/Gemm operand is a pre-packed initializer there.
        return self._rename_outputs(run_graph(self._run_graph, feeds, ops={QDQ_OP: self._qdq_op},
                                              outputs=wanted,
                                              dynamic_params=self._run_graph.params,
                                              fp32_kernels=self.fp32_kernels))

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

    def load_encodings(self, path: "str | os.PathLike", strict: bool = True):
        """Load an encodings file (1.0.0, 0.6.1 or 2.0.0; AIMET's or qsim's) into this sim.

        ``strict`` reports every missing, extra or mistyped entry at once and changes nothing;
        ``strict=False`` applies what matches."""
        from .encodings_io import load_encodings_into
        return load_encodings_into(self, path, strict=strict)
