"""The classifier head that every network here ends with: optional dropout, then one Linear."""

from __future__ import annotations

import torch
from torch import nn


class ClassifierHead(nn.Module):
    """Base of nets ending in `head_drop` and `fc`: forward, get_classifier, reset_classifier."""

    num_features: int
    head_drop: nn.Module
    fc: nn.Module

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:
            x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.head_drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one (fine-tuning to a new label set)."""
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
