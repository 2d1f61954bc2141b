"""The op registry: a plain ``dict`` from ONNX op type to one NumPy function.

Calling convention (every op follows it)::

    @register("Conv")
    def conv(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1,
             kernel_shape=None, pads=None, strides=None):
        ...
        return y            # one array, or a tuple of arrays for multi-output ops

* Node inputs are passed positionally, in ONNX order; an absent optional input (``""``) is
  ``None`` (trailing absent inputs are dropped).
* ONNX attributes are keyword-only parameters with ONNX's default values; the set of keyword
  names IS the set of supported attributes (anything else is reported at load time).
* A keyword-only parameter named ``noutputs`` (not an ONNX attribute) receives the number of
  outputs the node declares (Split needs it).
* A keyword-only parameter named ``constant_b`` (not an ONNX attribute) receives True when the
  node's input 1 is a graph parameter (an initializer): ONNX Runtime pre-packs such a MatMul/Gemm
  operand, which changes its summation blocks.
* A keyword-only parameter named ``fp32_kernels`` (not an ONNX attribute) receives the kernel
  family that runs (``"avx2"`` or ``"avx512"``, see :mod:`qsim.kernels.family`): ops whose float32
  bits differ between ONNX Runtime's kernel families take it.
* A keyword-only parameter named ``opset`` (not an ONNX attribute) receives the opset version of
  the default ONNX domain the graph imports: ops whose meaning changed between opsets (Softmax
  before 13, AveragePool from 19, ...) take it.
* A keyword-only parameter named ``then_relu`` (not an ONNX attribute) receives True when the
  node's only output is read by one Relu node and by nothing else: the op then returns
  ``Relu(Y)`` (``0 if Y < 0 else Y``, exactly :func:`qsim.ops.elementwise.relu`) and the executor
  skips that Relu (Conv does it in its bias pass, BatchNormalization in its scale-shift pass:
  one pass over the output less; Add and Sum in place on their new result: one array and
  one node less). Never when the executor observes tensors.
* A keyword-only parameter named ``then_steps`` (not an ONNX attribute, Conv only) receives the
  :class:`qsim.ops.epilogue.Step` tuple of the per-channel chain (BatchNormalization, Mul/Add
  by a constant per-channel vector, Relu) that alone reads the node's output: the op returns
  the chain's result, computed with the same float32 operations (see
  :mod:`qsim.ops.epilogue`), and the executor skips those nodes. Never when the executor
  observes tensors.
* An ONNX attribute whose name is also an internal keyword (com.microsoft QLinearSoftmax has an
  ``opset`` attribute) is declared with ``@register(op, attributes=("opset",))``: for that op the
  name is an attribute, which the executor passes from the node and never fills itself.
* An op rejects a bad attribute value or input with :class:`qsim.errors.OpError` (without the node
  name: the executor adds it). Ops never mutate their inputs.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable

OpFn = Callable[..., object]

#: op type → NumPy function. Filled by the ``@register`` decorators of the op modules.
OPS: dict[str, OpFn] = {}

#: keyword parameters that are not ONNX attributes
_INTERNAL_KEYWORDS = frozenset({"noutputs", "constant_b", "fp32_kernels", "opset",
                                "then_relu", "then_steps"})


def register(op_type: str, *, attributes: tuple[str, ...] = ()) -> Callable[[OpFn], OpFn]:
    """Register ``fn`` as the implementation of ONNX op ``op_type`` (one function per op).

    ``attributes`` names keyword parameters that are ONNX attributes although an internal
    keyword has the same name (see the module docstring)."""

    def deco(fn: OpFn) -> OpFn:
        if op_type in OPS:
            raise RuntimeError(f"op {op_type} registered twice ({OPS[op_type].__name__}, {fn.__name__})")
        fn.__onnx_attributes__ = frozenset(attributes)
        OPS[op_type] = fn
        return fn

    return deco


def supported_attributes(op_type: str) -> frozenset[str]:
    """The ONNX attribute names the implementation of ``op_type`` accepts."""
    fn = OPS[op_type]
    sig = inspect.signature(fn)
    return frozenset(name for name, p in sig.parameters.items()
                     if p.kind is inspect.Parameter.KEYWORD_ONLY
                     and (name not in _INTERNAL_KEYWORDS or name in _declared_attributes(fn)))


def _declared_attributes(fn: OpFn) -> frozenset[str]:
    return getattr(fn, "__onnx_attributes__", frozenset())


@functools.lru_cache(maxsize=None)
def internal_keywords(fn: OpFn) -> frozenset[str]:
    """The registry's internal keywords (``noutputs``, ``constant_b``, ``fp32_kernels``,
    ``opset``, ``then_relu``, ``then_steps``) that ``fn`` takes."""
    return (frozenset(inspect.signature(fn).parameters) & _INTERNAL_KEYWORDS) \
        - _declared_attributes(fn)
