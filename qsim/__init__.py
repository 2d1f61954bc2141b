"""qsim: a pure NumPy/Numba reference simulator of quantized neural-network inference.

    import qsim
    model = qsim.load_onnx("model.onnx")
    sim = qsim.QuantizationSimModel(model, quant_scheme="tf_enhanced", config_file="default")
    sim.compute_encodings(batches)          # iterable of {input name: array}
    outputs = sim.run(feeds)                # the simulated model
    sim.export("out", "model")              # model.onnx (FP32) + model.encodings (AIMET 1.0.0)
"""
from .errors import (ClusterError, ConfigError, EncodingError, ExportError, FeedError, GraphError,
                     NonFiniteWarning, NotCalibratedError, OpError, QsimError, UnknownOpError)
from .interpreter import run
from .ir import Graph, Node, ValueInfo
from .onnx_io import load_onnx, to_onnx


def _version() -> str:
    """The installed distribution's version (pyproject.toml), also from a plain checkout."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("qsim-ref")
    except PackageNotFoundError:
        return "0.1.0+unknown"


__version__ = _version()

# Imported on first use: they pull in Numba kernels and the config schema.
_LAZY = {
    "QuantizationSimModel": "sim", "QuantScheme": "sim",
    "load_config": "config", "validate_config": "config",
    "fold_batch_norms": "transforms",
    "export": "export",
    "read_encodings": "encodings_io", "load_encodings": "encodings_io",
    "export_qdq": "qdq",
}

__all__ = [
    "Graph", "Node", "ValueInfo", "run", "load_onnx", "to_onnx", *_LAZY,
    "QsimError", "GraphError", "UnknownOpError", "OpError", "FeedError", "ConfigError",
    "EncodingError", "NotCalibratedError", "ExportError", "ClusterError", "NonFiniteWarning",
    "__version__",
]


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return module if name == _LAZY[name] else getattr(module, name)
    raise AttributeError(f"module 'qsim' has no attribute {name!r}")
