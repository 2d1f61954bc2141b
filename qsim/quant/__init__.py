"""Quantization numerics bit-exact with aimet-onnx 2.42 (see numerics.md §1–5).

Public API: :class:`TensorQuantizer` (the stateful quantizer the simulation uses), the frozen
:class:`Encoding` and its builders, the kernels and the analyzers as pure functions.
"""
from .analyzers import entropy, mse, percentile, tf, tf_enhanced
from .encoding import (Encoding, from_fixed_range, from_min_max, offset_from_onnx_zero_point,
                       onnx_zero_point)
from .kernels import dequantize, quantize, quantize_dequantize
from .quantizer import SCHEMES, TensorQuantizer
from .stats import HistogramStats, MinMaxStats

__all__ = [
    "TensorQuantizer", "SCHEMES", "Encoding", "from_min_max", "from_fixed_range",
    "onnx_zero_point", "offset_from_onnx_zero_point", "quantize_dequantize", "quantize",
    "dequantize", "MinMaxStats", "HistogramStats", "tf", "tf_enhanced", "percentile", "mse",
    "entropy",
]
