"""Pre-activation blocks (He et al. 2016) and their plain twins: BN and ReLU before each conv,
nothing after the addition, so the path from block to block is free of any operation.

The anatomy is the post-activation blocks' (models/blocks.py): `residual(x)`, `shortcut(x)`
(None on a plain twin), `conv_bn_pairs()`, `response_pairs()`. Both paths read the block's input
normalised once, `preactivate(x)` = relu(bn1(x)): the branch always, a projection shortcut too (as
the 2016 paper's code does; so a projection here carries no BN of its own). The identity and option
A carry the raw input. `residual` and `shortcut` take that normalised input as `pre` when the
caller has it, so forward computes it once. bn1 normalises the block's input and follows no conv
inside the block: it is in no (conv, BN) pair. The 3x3 outputs reach the addition (or the next
block) un-normalised, so these blocks have no Figure 7 responses. A class here is its layers and
its end from models/anatomy.py: `Residual` + `PreActivation` (y = F(x) + shortcut(x)) or
`PlainPreActivation` (y = F(x)).
"""

from __future__ import annotations

import torch
from torch import nn

from .anatomy import Pairs, PlainPreActivation, PreActivation, Residual, bottleneck_geometry
from .layers import conv1x1, conv3x3, maybe_dropout


class _PreActLayers(nn.Module):
    """What both pre-activation layouts share: the normalised input and no Figure 7 responses."""

    def preactivate(self, x: torch.Tensor) -> torch.Tensor:
        """relu(bn1(x)): the normalised input that the branch and a projection read."""
        out = self.bn1(x)
        out = self.relu(out)
        return out

    def response_pairs(self) -> Pairs:
        """None: the 3x3 outputs reach the addition (or the next 1x1) un-normalised."""
        return []


class _PreActBasicLayers(_PreActLayers):
    """A pre-activation basic block's layers and its branch F(x)."""

    expansion = 1

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        *,
        dilation: int = 1,
        first_dilation: int | None = None,
        drop_rate: float = 0.0,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.downsample = downsample
        self.drop = maybe_dropout(drop_rate)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = conv3x3(cin, planes, stride, dilation=first_dilation or dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.relu = nn.ReLU(inplace=True)
        self.stride, self.in_channels, self.out_channels = stride, cin, planes

    def residual(self, x: torch.Tensor, pre: torch.Tensor | None = None) -> torch.Tensor:
        """F(x) = conv2(relu(bn2(conv1(relu(bn1(x)))))); `pre`: relu(bn1(x)) if computed."""
        out = self.preactivate(x) if pre is None else pre
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.drop(out)
        out = self.conv2(out)
        return out

    def conv_bn_pairs(self) -> Pairs:
        """The (conv, BN) pair inside the block: conv1 and bn2."""
        return [(self.conv1, self.bn2)]

    def zero_init_last(self) -> None:
        """Zero the last conv: the branch starts as 0."""
        nn.init.zeros_(self.conv2.weight)


class _PreActBottleneckLayers(_PreActLayers):
    """A pre-activation bottleneck's layers and its branch F(x)."""

    expansion = 4

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        *,
        groups: int = 1,
        base_width: int = 64,
        stride_in_1x1: bool = False,
        dilation: int = 1,
        first_dilation: int | None = None,
        drop_rate: float = 0.0,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        cout = planes * self.expansion
        width, s1, s3 = bottleneck_geometry(planes, stride, groups, base_width, stride_in_1x1)
        self.downsample = downsample
        self.drop = maybe_dropout(drop_rate)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = conv1x1(cin, width, s1)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3, groups, first_dilation or dilation)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, cout)
        self.relu = nn.ReLU(inplace=True)
        self.stride, self.in_channels, self.out_channels = stride, cin, cout

    def residual(self, x: torch.Tensor, pre: torch.Tensor | None = None) -> torch.Tensor:
        """F(x): BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1; `pre`: relu(bn1(x)) if computed."""
        out = self.preactivate(x) if pre is None else pre
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn3(out)
        out = self.relu(out)
        out = self.drop(out)
        out = self.conv3(out)
        return out

    def conv_bn_pairs(self) -> Pairs:
        """The (conv, BN) pairs inside the block: conv1 and bn2, conv2 and bn3."""
        return [(self.conv1, self.bn2), (self.conv2, self.bn3)]

    def zero_init_last(self) -> None:
        """Zero the last conv: the branch starts as 0."""
        nn.init.zeros_(self.conv3.weight)


class PreActBasicBlock(Residual, PreActivation, _PreActBasicLayers):
    """BN -> ReLU -> 3x3 -> BN -> ReLU -> 3x3, plus the shortcut: y = F(x) + shortcut(x)."""


class PlainPreActBasicBlock(PlainPreActivation, _PreActBasicLayers):
    """PreActBasicBlock's twin without the shortcut: y = F(x)."""


class PreActBottleneck(Residual, PreActivation, _PreActBottleneckLayers):
    """BN -> ReLU -> 1x1, BN -> ReLU -> 3x3, BN -> ReLU -> 1x1 (x4), plus the shortcut."""


class PlainPreActBottleneck(PlainPreActivation, _PreActBottleneckLayers):
    """PreActBottleneck's twin without the shortcut: y = F(x)."""
