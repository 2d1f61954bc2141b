"""qsim: a pure NumPy/Numba reference simulator of quantized neural-network inference."""
from .errors import (ConfigError, EncodingError, ExportError, FeedError, GraphError,
                     NotCalibratedError, OpError, QsimError, UnknownOpError)
from .interpreter import run
from .ir import Graph, Node, ValueInfo

__all__ = [
    "Graph", "Node", "ValueInfo", "run",
    "QsimError", "GraphError", "UnknownOpError", "OpError", "FeedError", "ConfigError",
    "EncodingError", "NotCalibratedError", "ExportError",
]
from .onnx_io import load_onnx, to_onnx  # noqa: E402

__all__ += ["load_onnx", "to_onnx"]
