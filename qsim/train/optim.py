"""Optimizers: ``opt.step(params, grads) -> new params`` (pure: nothing is modified in place)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SGD:
    """torch.optim.SGD: ``b ← μ·b + g'`` (``g' = g + wd·p``), ``p ← f32(p - f32(lr)·b)`` with one
    rounding (qat.md §6: torch uses a fused multiply-add; float64 then one rounding reproduces it)."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    state_: dict = field(default_factory=dict)

    def step(self, sim, grads: dict) -> None:
        """Update ``sim``'s parameters in place of the sim: ``sim.set_parameters(update(...))``."""
        sim.set_parameters(self.update(sim.parameters(), grads))

    def update(self, params: dict, grads: dict) -> dict:
        lr = np.float64(np.float32(self.lr))
        new = {}
        for name, g in grads.items():
            p = np.asarray(params[name], np.float32)
            g = np.asarray(g, np.float32)
            if self.weight_decay:
                g = (g + np.float32(self.weight_decay) * p).astype(np.float32)
            if self.momentum:
                buf = self.state_.get(name)
                buf = g if buf is None else (np.float32(self.momentum) * buf + g).astype(np.float32)
                self.state_[name] = buf
                g = buf
            new[name] = (p.astype(np.float64) - lr * g.astype(np.float64)).astype(np.float32)
        return new


@dataclass
class Adam:
    """torch.optim.Adam: ``m ← β1·m + (1-β1)g``, ``v ← β2·v + (1-β2)g²``,
    ``p ← p - lr·(m/(1-β1^t)) / (√(v/(1-β2^t)) + eps)``."""

    lr: float = 1e-3
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    state_: dict = field(default_factory=dict)

    def step(self, sim, grads: dict) -> None:
        """Update ``sim``'s parameters in place of the sim: ``sim.set_parameters(update(...))``."""
        sim.set_parameters(self.update(sim.parameters(), grads))

    def update(self, params: dict, grads: dict) -> dict:
        b1, b2 = self.betas
        new = {}
        for name, g in grads.items():
            p = np.asarray(params[name], np.float32)
            g = np.asarray(g, np.float32)
            if self.weight_decay:
                g = (g + np.float32(self.weight_decay) * p).astype(np.float32)
            m, v, t = self.state_.get(name, (np.zeros_like(p), np.zeros_like(p), 0))
            t += 1
            m = (np.float32(b1) * m + np.float32(1 - b1) * g).astype(np.float32)
            v = (np.float32(b2) * v + np.float32(1 - b2) * g * g).astype(np.float32)
            self.state_[name] = (m, v, t)
            mh = m / np.float32(1 - b1 ** t)
            vh = v / np.float32(1 - b2 ** t)
            new[name] = (p - np.float32(self.lr) * mh / (np.sqrt(vh) + np.float32(self.eps))).astype(np.float32)
        return new
