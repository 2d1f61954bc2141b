"""Ready-made loss functions: ``loss_fn(outputs) -> (loss, {output: ∂loss/∂output})``."""
from __future__ import annotations

import numpy as np


def _only_output(outputs, name):
    if name is None:
        if len(outputs) != 1:
            raise ValueError(f"the model has outputs {sorted(outputs)}; pass output=<name>")
        name = next(iter(outputs))
    return name, np.asarray(outputs[name], np.float32)


def cross_entropy(labels, *, output: str | None = None):
    """Mean over the batch of ``-log softmax(z)[label]`` (torch's ``F.cross_entropy``) on logits
    ``z`` (N, C); gradient ``(softmax(z) - onehot)/N`` (float32)."""
    labels = np.asarray(labels).astype(np.int64).reshape(-1)

    def loss_fn(outputs):
        name, z = _only_output(outputs, output)
        zs = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(zs, dtype=np.float32).sum(axis=1, keepdims=True, dtype=np.float32))
        logp = zs - lse
        n = len(labels)
        loss = float(-np.mean(logp[np.arange(n), labels], dtype=np.float64))
        g = np.exp(logp)
        g[np.arange(n), labels] -= np.float32(1)
        return loss, {name: (g / np.float32(n)).astype(np.float32)}

    return loss_fn


def mse(targets, *, output: str | None = None):
    """Mean over all elements of ``(y - t)²`` (torch's ``F.mse_loss``); gradient ``2(y - t)/n``."""
    targets = np.asarray(targets, np.float32)

    def loss_fn(outputs):
        name, y = _only_output(outputs, output)
        d = y - targets
        return float(np.mean(d.astype(np.float64) ** 2)), {
            name: (np.float32(2) * d / np.float32(d.size)).astype(np.float32)}

    return loss_fn
