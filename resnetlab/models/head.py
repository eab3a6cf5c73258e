"""What the classifiers here share: forward_head(forward_features(x)) and a swappable fc."""

from __future__ import annotations

import torch
from torch import nn


class ClassifierHead(nn.Module):
    """Base of nets with `forward_features`, `forward_head` and an `fc` on `num_features` inputs."""

    num_features: int
    fc: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final Linear layer (nn.Identity when the net has no head)."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one (fine-tuning to a new label set)."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
