"""NumPy implementations of ONNX ops, one small function per op (see :mod:`qsim.ops.registry`)."""
from .registry import OPS, register, internal_keywords, supported_attributes

# Importing the modules registers their ops.
from . import nn, elementwise, tensor, indexing, normalization  # noqa: E402,F401
from . import bitwise, detection, lp_pool  # noqa: E402,F401

__all__ = ["OPS", "register", "supported_attributes", "internal_keywords"]

from . import quantized  # noqa: E402,F401  (Q/DQ, QLinear*, *Integer: registers on import)
from . import contrib_quantized  # noqa: E402,F401  (com.microsoft QLinear*, QGemm, ...)
from . import ort_fused  # noqa: E402,F401  (SimplifiedLayerNormalization, FusedGemm, QLinearWhere)
