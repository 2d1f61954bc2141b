"""Integer arithmetic of quantized targets.

* :mod:`qsim.integer.fixed_point` — the int32 multiplier-and-shift requantization of gemmlowp /
  TensorFlow Lite, as DSPs and NPUs run it.
* :mod:`qsim.integer.ort_fusion` — the graph rewrites ONNX Runtime's default CPU session applies
  to a QDQ model (QDQ groups → QLinearConv, QLinearMatMul, QGemm, ...).
* :mod:`qsim.integer.model` — :func:`to_integer`: the integer model of a sim, whose ``run``
  returns what ONNX Runtime returns for the sim's QDQ export, bit for bit.
"""
from .gap import GapReport, TensorGap, gap, gap_over, merge_gaps
from .model import IntegerModel, QuantizedTensor, integer_model, to_integer

__all__ = ["GapReport", "IntegerModel", "QuantizedTensor", "TensorGap", "gap", "gap_over",
           "integer_model", "merge_gaps", "to_integer"]
