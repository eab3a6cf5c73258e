"""Residual MLPs for vector data: residual learning is not only for convolutions."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ResnetlabError
from .features import FeatureInfo, Indices, take_indices
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
        for key, rate in (("drop_path_rate", drop_path_rate), ("drop_rate", drop_rate)):
            if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate < 1:
                raise ResnetlabError(f"{key} must lie in [0, 1), got {rate!r}")
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
        # the stem's output and each block's: vectors of `width`, nothing to reduce
        self.feature_info = FeatureInfo(
            [dict(module="stem", num_chs=width, reduction=1)]
            + [dict(module=f"blocks.{i}", num_chs=width, reduction=1) for i in range(depth)]
        )
        self.head_drop = maybe_dropout(drop_rate)
        self.fc = nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Linear) and m is not self.fc:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        if zero_init_residual and not plain:
            for b in self.blocks:
                b.zero_init_last()

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        if x.shape[1] != self.in_features:
            raise ResnetlabError(
                f"input has {x.shape[1]} features per sample; this MLP expects {self.in_features}"
            )
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's output (N, width), before the head."""
        return self.blocks(self.stem(self._flat(x)))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Indices = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NC",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's: (final features, [outputs of the stem and blocks `indices`]), or those alone.

        `norm` changes nothing (an MLP ends with no norm of its own); `stop_early` runs no block
        after the last output asked for."""
        if output_fmt != "NC":
            raise ResnetlabError(f"output_fmt {output_fmt!r}: an MLP's features are 'NC'")
        take = take_indices(len(self.feature_info), indices, "indices")
        blocks = list(self.blocks)[: max(take)] if stop_early else list(self.blocks)
        x = self.stem(self._flat(x))
        outs = [x] if 0 in take else []
        for i, block in enumerate(blocks, start=1):
            x = block(x)
            if i in take:
                outs.append(x)
        return outs if intermediates_only else (x, outs)
