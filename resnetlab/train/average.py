"""The weight average: an exponential moving average of the model's weights and buffers."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Exponential moving average of the floating-point weights and buffers."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One averaging step (the decay ramps up over the first updates)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            e = self.state[k]
            if v.dtype.is_floating_point:
                e.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                e.copy_(v)
