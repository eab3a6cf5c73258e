"""Residual blocks and their plain twins, post-activation (He et al. 2015): basic and bottleneck.

Each block owns its anatomy, so nothing outside it needs to know its layer names:
- `residual(x)` is the branch F(x), up to the addition;
- `shortcut(x)` is what the addition adds: x itself, or its projection where the shape changes
  (`downsample`: None for the identity, `PadShortcut` for option A, a 1x1 conv (+BN) for B and C);
- `conv_bn_pairs()` lists every (conv, BN) pair whose BN normalises that conv's output, in forward
  order, the projection's last (what BN folding folds);
- `response_pairs()` lists each 3x3 conv with the BN whose output is its response in Figure 7 of
  the 2015 paper (after BN, before the ReLU or the addition; pre-activation blocks have none).

A class here is its layers (`_BasicLayers`, `_BottleneckLayers`: constructor, branch, pairs) and
its end from models/anatomy.py, written once for every block: `Residual` + `PostActivation`, y =
relu(F(x) + shortcut(x)), or `PlainPostActivation`, the plain twin, y = relu(F(x)) with `shortcut`
None. So forward reads top to bottom and carries no family branch. Module names follow
torchvision (conv1, bn1, ..., downsample), so weight files interchange.
"""

from __future__ import annotations

import torch
from torch import nn

from .anatomy import (
    Pairs,
    PlainPostActivation,
    PostActivation,
    Residual,
    bottleneck_geometry,
    projection_pairs,
)
from .layers import conv1x1, conv3x3, maybe_dropout


class _BasicLayers(nn.Module):
    """A post-activation basic block's layers and its branch F(x): two 3x3 convs."""

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
        self.conv1 = conv3x3(cin, planes, stride, dilation=first_dilation or dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride, self.in_channels, self.out_channels = stride, cin, planes

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """F(x) = bn2(conv2(relu(bn1(conv1(x))))), up to the addition."""
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.drop(out)
        out = self.conv2(out)
        out = self.bn2(out)
        return out

    def conv_bn_pairs(self) -> Pairs:
        """(conv, BN) pairs in forward order, the projection shortcut's last."""
        return [(self.conv1, self.bn1), (self.conv2, self.bn2), *projection_pairs(self.downsample)]

    def response_pairs(self) -> Pairs:
        """Each 3x3 conv and the BN whose output is its response (Figure 7)."""
        return [(self.conv1, self.bn1), (self.conv2, self.bn2)]

    def zero_init_last(self) -> None:
        """Zero the last BN's gamma: the branch starts as 0 (Goyal et al. 2017)."""
        nn.init.zeros_(self.bn2.weight)


class _BottleneckLayers(nn.Module):
    """A post-activation bottleneck's layers: 1x1 reduce, 3x3, 1x1 expand (x4), and F(x)."""

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
        self.conv1 = conv1x1(cin, width, s1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3, groups, first_dilation or dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, cout)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.stride, self.in_channels, self.out_channels = stride, cin, cout

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """F(x) = bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))), up to the addition."""
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.drop(out)
        out = self.conv3(out)
        out = self.bn3(out)
        return out

    def conv_bn_pairs(self) -> Pairs:
        """(conv, BN) pairs in forward order, the projection shortcut's last."""
        return [
            (self.conv1, self.bn1),
            (self.conv2, self.bn2),
            (self.conv3, self.bn3),
            *projection_pairs(self.downsample),
        ]

    def response_pairs(self) -> Pairs:
        """The 3x3 conv and the BN whose output is its response (Figure 7)."""
        return [(self.conv2, self.bn2)]

    def zero_init_last(self) -> None:
        """Zero the last BN's gamma: the branch starts as 0."""
        nn.init.zeros_(self.bn3.weight)


class BasicBlock(Residual, PostActivation, _BasicLayers):
    """Two 3x3 convs plus the shortcut: y = relu(F(x) + shortcut(x))."""


class PlainBasicBlock(PlainPostActivation, _BasicLayers):
    """BasicBlock's twin without the shortcut: y = relu(F(x))."""


class Bottleneck(Residual, PostActivation, _BottleneckLayers):
    """1x1 reduce, 3x3, 1x1 expand (x4), plus the shortcut: y = relu(F(x) + shortcut(x))."""


class PlainBottleneck(PlainPostActivation, _BottleneckLayers):
    """Bottleneck's twin without the shortcut: y = relu(F(x))."""
