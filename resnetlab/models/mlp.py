"""Residual MLPs for vector data: residual learning is not only for convolutions.

The blocks have the anatomy of the conv blocks (models/blocks.py): `residual(x)`, `shortcut(x)`
(the identity; None on the plain twin, a class of its own), `conv_bn_pairs()` with Linear layers
in place of convs, and no Figure 7 responses. Their ends are the post-activation blocks' (models/
anatomy.py): y = relu(F(x) + x), and y = relu(F(x)) for the plain twin.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ResnetlabError
from .anatomy import Pairs, PlainPostActivation, PostActivation
from .features import FeatureInfo, Indices, take_indices
from .head import ClassifierHead
from .layers import maybe_drop_path, maybe_dropout


class _MLPLayers(nn.Module):
    """An MLP block's layers and its branch F(x) = bn2(fc2(relu(bn1(fc1(x)))))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.downsample = None  # every block keeps the width: the shortcut is the identity
        self.fc1 = nn.Linear(width, width, bias=False)
        self.bn1 = nn.BatchNorm1d(width)
        self.fc2 = nn.Linear(width, width, bias=False)
        self.bn2 = nn.BatchNorm1d(width)
        self.relu = nn.ReLU(inplace=True)
        self.stride, self.in_channels, self.out_channels = 1, width, width

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """F(x) = bn2(fc2(relu(bn1(fc1(x))))), up to the addition."""
        out = self.fc1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.fc2(out)
        out = self.bn2(out)
        return out

    def conv_bn_pairs(self) -> Pairs:
        """(layer, BN) pairs in forward order: fc1 and bn1, fc2 and bn2."""
        return [(self.fc1, self.bn1), (self.fc2, self.bn2)]

    def response_pairs(self) -> Pairs:
        """None: Figure 7 measures 3x3 convs."""
        return []

    def zero_init_last(self) -> None:
        """Zero the last BN's gamma: the branch starts as 0."""
        nn.init.zeros_(self.bn2.weight)


class MLPBlock(PostActivation, _MLPLayers):
    """Linear-BN-ReLU-Linear-BN plus the identity, then ReLU: the basic block with 1x1 'convs'."""

    def __init__(self, width: int, *, drop_path: float = 0.0) -> None:
        super().__init__(width)
        self.drop_path = maybe_drop_path(drop_path)


class PlainMLPBlock(PlainPostActivation, _MLPLayers):
    """MLPBlock's twin without the shortcut: y = relu(F(x))."""


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
        if plain:
            blocks = [PlainMLPBlock(width) for _ in rates]
        else:
            blocks = [MLPBlock(width, drop_path=r) for r in rates]
        self.blocks = nn.Sequential(*blocks)
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

    def conv_bn_pairs(self) -> Pairs:
        """The stem's (Linear, BN) pair; blocks give theirs."""
        return [(self.stem[0], self.stem[1])]

    def response_pairs(self) -> Pairs:
        """None: Figure 7 measures 3x3 convs."""
        return []

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)
        if x.shape[1] != self.in_features:
            raise ResnetlabError(
                f"input has {x.shape[1]} features per sample; this MLP expects {self.in_features}"
            )
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's output (N, width), before the head."""
        x = self._flat(x)
        x = self.stem(x)
        x = self.blocks(x)
        return x

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
