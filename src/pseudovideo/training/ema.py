"""The exponential moving average of a model's weights and buffers (the weights evaluation uses by default)."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA:
    """Exponential moving average of a module's parameters AND floating buffers (VQ codebooks).

    ``module`` is a frozen copy in eval mode. Update ``n`` (1-based) uses the decay
    ``min(decay, (1 + n) / (10 + n))``, so that early in training (and in short runs) the average is
    not dominated by the random initialisation. Integer buffers (counters) are copied.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.num_updates = 0

    def current_decay(self) -> float:
        """Decay used by the next update."""
        n = self.num_updates + 1
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Moves the average towards ``model`` (same architecture as the copy)."""
        decay = self.current_decay()
        self.num_updates += 1
        ema_float, new_float = [], []
        pairs = list(zip(self.module.parameters(), model.parameters()))
        pairs += list(zip(self.module.buffers(), model.buffers()))
        for ema_t, new_t in pairs:
            if ema_t.dtype.is_floating_point:
                ema_float.append(ema_t)
                new_float.append(new_t.detach().to(ema_t.dtype))
            else:
                ema_t.copy_(new_t)
        if ema_float:
            torch._foreach_lerp_(ema_float, new_float, 1.0 - decay)
