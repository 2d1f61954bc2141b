"""Reverse mode over the IR: one VJP per op (:mod:`qsim.grad.ops`), a registry, and
:func:`qsim.grad.backward.backward` which runs a graph forward keeping only what the VJPs need
and propagates gradients back."""
from . import ops  # noqa: F401  (fills the registry)
from .registry import VJPS, register_vjp
from .backward import backward, check_backward_supported

__all__ = ["VJPS", "register_vjp", "backward", "check_backward_supported"]
