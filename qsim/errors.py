"""Typed errors. Every qsim error names what was wrong and what would be right.

Hierarchy::

    QsimError
    ├── GraphError          malformed graph (dangling input, duplicate name, cycle, bad ONNX file)
    │   └── UnknownOpError  ops/attributes the executor does not support (all listed at once)
    ├── OpError             an op rejected its inputs or attributes while running (names the node)
    ├── FeedError           missing/extra feed names, wrong dtype or shape of a feed
    ├── ConfigError         an invalid quantsim configuration (lists every problem with its JSON path)
    ├── EncodingError       invalid bitwidth / axis / encoding values
    ├── NotCalibratedError  run/export before compute_encodings
    ├── ExportError         encodings files that cannot be written or read
    └── ClusterError        a Dask scheduler that cannot be reached (qsim.distributed)

    NonFiniteWarning        (a RuntimeWarning) a quantizer's calibration data held ±Inf or only NaN
"""
from __future__ import annotations


class QsimError(Exception):
    """Base class of every error qsim raises on purpose."""


class GraphError(QsimError):
    """The graph is malformed; the message names the node or tensor."""


class UnknownOpError(GraphError):
    """The graph uses ops or attributes that qsim cannot execute; the message lists all of them."""


class OpError(QsimError):
    """An op could not run on its inputs or attributes; the message names the node."""


class FeedError(QsimError):
    """Feeds do not match the graph inputs (names, dtypes or shapes)."""


class ConfigError(QsimError):
    """A quantsim configuration is invalid.

    ``problems`` holds one ``(json_path, message)`` pair per problem found.
    """

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.problems = list(problems or [])


class EncodingError(QsimError):
    """An encoding or quantizer setting is invalid (bitwidth, axis, shapes)."""


class NotCalibratedError(QsimError):
    """The simulation was used before ``compute_encodings``."""


class ExportError(QsimError):
    """An encodings file or model could not be written or read."""


class ClusterError(QsimError):
    """A Dask cluster could not be reached or used (qsim.distributed); names the address."""


class NonFiniteWarning(RuntimeWarning):
    """A quantizer's calibration data held ±Inf, or only NaN: its encoding is not meaningful
    (the message names the quantizer's tensor); such an encoding is never exported."""
