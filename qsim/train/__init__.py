"""Quantization-aware training: learnable quantizers in the graph (:mod:`.graph`), losses and
optimizers."""
from .graph import QAT_OPS, QAT_VJPS, Slot, range_names, training_graph, value_and_grad
from .losses import cross_entropy, mse
from .optim import SGD, Adam

__all__ = ["QAT_OPS", "QAT_VJPS", "Slot", "range_names", "training_graph", "value_and_grad",
           "cross_entropy", "mse", "SGD", "Adam"]
