"""The integer model of a simulation: what a deployment runtime computes for its QDQ export.

``to_integer(sim, target="onnxruntime")`` writes nothing to disk: it builds the QDQ model
``sim.export_qdq`` would write (:func:`qsim.qdq.qdq_model`), applies ONNX Runtime's default
graph rewrites to it (:func:`qsim.integer.ort_fusion.ort_graph`: QDQ groups become QLinearConv,
QLinearMatMul, QGemm, QLinearAdd, ... ) and runs the result with qsim's op library. Its outputs are
those of an ONNX Runtime CPU ``InferenceSession`` with default ``SessionOptions`` on the exported
file: same names, dtypes and bits.

``IntegerModel.run(feeds, outputs=None, integers=False)``:

* ``outputs`` names any tensor of the rewritten graph (``model.graph``), or any tensor of the
  simulation whose value survives only as integers (``T`` when the graph holds ``T_q``: the
  dequantized ``float32(q - zp) ⊗ s``);
* ``integers=True`` returns, for every requested tensor that is quantized, a
  :class:`QuantizedTensor` (the integers, their scale and zero point) instead of an array.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from ..errors import ConfigError, GraphError, NotCalibratedError
from ..interpreter import run as run_graph
from ..ir import Graph
from ..ops import OPS

#: the targets :func:`to_integer` knows
TARGETS = ("onnxruntime", "fixed_point")
_INTEGER_KINDS = "iu"


@dataclass(frozen=True)
class QuantizedTensor:
    """An integer tensor with its grid: ``real = float32(int32(values) - zero_point) ⊗ scale``
    (scale and zero point per tensor, or per channel along ``axis``)."""

    values: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int | None = None

    def dequantize(self) -> np.ndarray:
        """``float32(int32(q) - zp) ⊗ s`` (DequantizeLinear's arithmetic)."""
        s, z = np.asarray(self.scale, np.float32), np.asarray(self.zero_point).astype(np.int64)
        if self.axis is not None and s.ndim == 1 and s.size > 1:
            shape = [1] * self.values.ndim
            shape[self.axis] = -1
            s, z = s.reshape(shape), z.reshape(shape)
        q = self.values.astype(np.int64) - z
        return q.astype(np.int32).astype(np.float32) * s


def _fused_conv(x, w, b=None, *, activation="", activation_params=None, auto_pad="NOTSET",
                dilations=None, group=1, kernel_shape=None, pads=None, strides=None,
                fp32_kernels="auto"):
    """com.microsoft ``FusedConv``: ``act(Conv(x, w, b))`` — MLAS applies the activation to each
    finished output value, so the bits are those of Conv followed by the activation op."""
    y = OPS["Conv"](x, w, b, auto_pad=auto_pad, dilations=dilations, group=group,
                    kernel_shape=kernel_shape, pads=pads, strides=strides,
                    fp32_kernels=fp32_kernels)
    p = [] if activation_params is None else [float(v) for v in activation_params]
    if activation == "Relu":
        return OPS["Relu"](y)
    if activation == "Clip":
        return OPS["Clip"](y, np.float32(p[0]), np.float32(p[1]))
    if activation == "LeakyRelu":
        return OPS["LeakyRelu"](y, alpha=p[0])
    if activation == "HardSigmoid":
        return OPS["HardSigmoid"](y, alpha=p[0], beta=p[1])
    if activation in ("Sigmoid", "Tanh"):
        return OPS[activation](y)
    raise GraphError(f"FusedConv activation '{activation}' is not supported")


def _extra_ops() -> dict:
    """Op implementations the rewritten graphs need beyond the op library."""
    from .fixed_target import FIXED_POINT_OPS
    return {"FusedConv": _fused_conv, **FIXED_POINT_OPS}


@dataclass(frozen=True)
class IntegerModel:
    """The rewritten graph a target runs, and the grid of each of its integer tensors."""

    graph: Graph
    target: str
    grids: Mapping[str, tuple]          # integer tensor → (scale name, zero point name, axis)
    fp32_kernels: str = "auto"

    def _names(self, outputs) -> dict[str, str]:
        """Requested name → the tensor that holds it (``T`` → ``T_q`` when only that exists)."""
        known = {o for n in self.graph.nodes for o in n.outputs} | set(self.graph.params) \
            | set(self.graph.input_names)
        wanted = list(self.graph.output_names if outputs is None else outputs)
        found = {}
        for name in wanted:
            if name in known:
                found[name] = name
            elif f"{name}_q" in known:
                found[name] = f"{name}_q"
            else:
                raise GraphError(f"tensor '{name}' is neither in the integer model nor "
                                 f"quantized as '{name}_q'; graph outputs: "
                                 f"{list(self.graph.output_names)}")
        return found

    def _quantized(self, tensor: str, value: np.ndarray) -> QuantizedTensor:
        scale, zero_point, axis = self.grids[tensor]
        return QuantizedTensor(values=value, scale=self.graph.params[scale],
                               zero_point=self.graph.params[zero_point], axis=axis)

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Iterable[str] | None = None,
            integers: bool = False) -> dict:
        """``{name: array}`` for ``outputs`` (default: the graph outputs); with ``integers``,
        each quantized tensor as a :class:`QuantizedTensor`."""
        names = self._names(outputs)
        raw = run_graph(self.graph, feeds, outputs=list(dict.fromkeys(names.values())),
                        ops=_extra_ops(), fp32_kernels=self.fp32_kernels)
        result = {}
        for name, tensor in names.items():
            value = raw[tensor]
            quantized = tensor in self.grids and value.dtype.kind in _INTEGER_KINDS
            if quantized and integers:
                result[name] = self._quantized(tensor, value)
            elif quantized and tensor != name:
                result[name] = self._quantized(tensor, value).dequantize()
            else:
                result[name] = value
        return result


def check_target(target: str) -> str:
    """``target`` if it is one of :data:`TARGETS`, else a :class:`ConfigError` naming them."""
    if target not in TARGETS:
        raise ConfigError(f"unknown integer target {target!r}; expected one of {list(TARGETS)}")
    return target


def integer_model(graph: Graph, target: str = "onnxruntime", *,
                  fp32_kernels: str = "auto") -> IntegerModel:
    """The :class:`IntegerModel` of a QDQ graph (read with ``qsim.load_onnx(path, check=False)``)."""
    from ..interpreter import unsupported
    from ..errors import UnknownOpError
    from .ort_fusion import ort_graph
    check_target(target)
    rewritten, grids = ort_graph(graph, with_grids=True, fixed_point=target == "fixed_point")
    extra = _extra_ops()
    problems = [p for p in unsupported(rewritten) if not any(f"'{op}'" in p for op in extra)]
    if problems:
        raise UnknownOpError(f"the {target} integer model needs kernels qsim does not have "
                             f"({len(problems)} node(s)):\n  " + "\n  ".join(problems))
    return IntegerModel(graph=rewritten, target=target, grids=grids, fp32_kernels=fp32_kernels)


def to_integer(sim, target: str = "onnxruntime", *, fp32_kernels: str = "auto") -> IntegerModel:
    """The integer model of a calibrated sim's QDQ export (``sim.export_qdq`` defaults:
    int32 biases). Its float32 parts (and int8-compute MatMulNBits) use the ONNX Runtime kernel
    family ``fp32_kernels``: ``"auto"`` (default) is this machine's, whatever the sim's, so it
    predicts ONNX Runtime here; ``"avx2"``/``"avx512"`` predict a CPU of that family."""
    from ..kernels.family import resolve
    from ..onnx_io import load_onnx
    from ..qdq import qdq_model
    check_target(target)
    try:
        resolve(fp32_kernels)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not sim.is_calibrated:
        raise NotCalibratedError("to_integer() needs encodings: call sim.compute_encodings(...) "
                                 "or sim.load_encodings(...) first")
    graph = load_onnx(qdq_model(sim), check=False)
    return integer_model(graph, target, fp32_kernels=fp32_kernels)
