"""Residual MLPs for vector data: residual learning is not only for convolutions."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ResnetlabError
from .head import ClassifierHead
from .layers import maybe_drop_path, maybe_dropout


class MLPBlock(nn.Module):
    """Linear-BN-ReLU-Linear-BN, plus the identity, then ReLU: the basic block with 1x1 'convs'."""

    def __init__(self, width: int, *, plain: bool = False, drop_path: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width, bias=False)
        self.bn1 = nn.BatchNorm1d(width)
        self.fc2 = nn.Linear(width, width, bias=False)
        self.bn2 = nn.BatchNorm1d(width)
        self.relu = nn.ReLU(inplace=True)
        self.plain = plain
        self.drop_path = maybe_drop_path(drop_path)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.fc2(self.relu(self.bn1(self.fc1(x)))))
        if not self.plain:
            out = self.drop_path(out) + x
        return self.relu(out)


class ResidualMLP(ClassifierHead):
    """Flatten, Linear stem, `depth` blocks of two layers, Linear head: 2 * depth + 2 layers."""

    def __init__(
        self,
        *,
        in_features: int = 784,
        num_classes: int = 10,
        depth: int = 8,
        width: int = 256,
        plain: bool = False,
        zero_init_residual: bool = False,
        drop_path_rate: float = 0.0,
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        for key, v in (("in_features", in_features), ("depth", depth), ("width", width)):
            if not isinstance(v, int) or v < 1:
                raise ResnetlabError(f"{key} must be a positive integer, got {v!r}")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ResnetlabError(f"num_classes must be a non-negative integer, got {num_classes!r}")
        if plain and drop_path_rate > 0:
            raise ResnetlabError("drop_path_rate needs shortcuts; a plain net has none")
        self.in_features = in_features
        self.num_classes = num_classes
        self.num_features = width
        self.flatten = nn.Flatten()
        self.stem = nn.Sequential(
            nn.Linear(in_features, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)
        )
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.Sequential(*(MLPBlock(width, plain=plain, drop_path=r) for r in rates))
        self.head_drop = maybe_dropout(drop_rate)
        self.fc = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Linear) and m is not self.fc:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if zero_init_residual and not plain:
            for b in self.blocks:
                b.zero_init_last()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        if x.shape[1] != self.in_features:
            raise ResnetlabError(
                f"input has {x.shape[1]} features per sample; this MLP expects {self.in_features}"
            )
        return self.blocks(self.stem(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head_drop(x))
