"""Residual blocks: basic and bottleneck, post-activation (2015) and pre-activation (2016).

Every block takes `plain=True` for its no-shortcut twin: the same layers, no addition.
Module names follow torchvision (conv1, bn1, ..., downsample), so weight files interchange.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import DropPath, conv1x1, conv3x3, make_shortcut


class BasicBlock(nn.Module):
    """Two 3x3 convs; y = relu(F(x) + shortcut(x))."""

    expansion = 1

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        plain: bool = False,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        first_dilation: int | None = None,
        drop_path: float = 0.0,
        block_drop_rate: float = 0.0,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("the basic block supports only groups=1 and base_width=64")
        cout = planes * self.expansion
        self.conv1 = conv3x3(cin, planes, stride, dilation=first_dilation or dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(block_drop_rate) if block_drop_rate > 0 else nn.Identity()
        self.conv2 = conv3x3(planes, cout, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(cout)
        self.plain = plain
        self.downsample = None if plain else make_shortcut(shortcut, cin, cout, stride)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(self.drop(out)))
        if not self.plain:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.drop_path(out) + identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4); stride on on the 3x3 ("v1.5") unless stride_in_1x1."""

    expansion = 4

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        plain: bool = False,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        first_dilation: int | None = None,
        drop_path: float = 0.0,
        block_drop_rate: float = 0.0,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        cout = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(cin, width, s1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3, groups, first_dilation or dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.drop = nn.Dropout(block_drop_rate) if block_drop_rate > 0 else nn.Identity()
        self.conv3 = conv1x1(width, cout)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.plain = plain
        self.downsample = None if plain else make_shortcut(shortcut, cin, cout, stride)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.drop(out)))
        if not self.plain:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.drop_path(out) + identity
        return self.relu(out)


class PreActBasicBlock(nn.Module):
    """BN -> ReLU -> 3x3 -> BN -> ReLU -> 3x3, plus the shortcut; nothing after the addition."""

    expansion = 1

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        plain: bool = False,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        first_dilation: int | None = None,
        drop_path: float = 0.0,
        block_drop_rate: float = 0.0,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("the basic block supports only groups=1 and base_width=64")
        cout = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = conv3x3(cin, planes, stride, dilation=first_dilation or dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.drop = nn.Dropout(block_drop_rate) if block_drop_rate > 0 else nn.Identity()
        self.conv2 = conv3x3(planes, cout, dilation=dilation)
        self.relu = nn.ReLU(inplace=True)
        self.plain = plain
        # the input is already normalised by bn1, so projections carry no BN of their own
        self.downsample = None if plain else make_shortcut(shortcut, cin, cout, stride, norm=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.drop(self.relu(self.bn2(out))))
        if self.plain:
            return out
        return self.drop_path(out) + _preact_identity(self.downsample, x, pre)


class PreActBottleneck(nn.Module):
    """BN -> ReLU -> 1x1, BN -> ReLU -> 3x3, BN -> ReLU -> 1x1 (x4), plus the shortcut."""

    expansion = 4

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        plain: bool = False,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        first_dilation: int | None = None,
        drop_path: float = 0.0,
        block_drop_rate: float = 0.0,
        stride_in_1x1: bool = False,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        cout = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = conv1x1(cin, width, s1)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3, groups, first_dilation or dilation)
        self.bn3 = nn.BatchNorm2d(width)
        self.drop = nn.Dropout(block_drop_rate) if block_drop_rate > 0 else nn.Identity()
        self.conv3 = conv1x1(width, cout)
        self.relu = nn.ReLU(inplace=True)
        self.plain = plain
        self.downsample = None if plain else make_shortcut(shortcut, cin, cout, stride, norm=False)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.drop(self.relu(self.bn3(out))))
        if self.plain:
            return out
        return self.drop_path(out) + _preact_identity(self.downsample, x, pre)


def _preact_identity(downsample: nn.Module | None, x: torch.Tensor, pre: torch.Tensor):
    # A projection reads the pre-activated input (as in the 2016 paper's code); the identity and
    # the parameter-free option A carry the raw input, keeping the path from block to block clean.
    if downsample is None:
        return x
    if isinstance(downsample, nn.Sequential):
        return downsample(pre)
    return downsample(x)


BLOCKS: dict[tuple[str, bool], type[nn.Module]] = {
    ("basic", False): BasicBlock,
    ("bottleneck", False): Bottleneck,
    ("basic", True): PreActBasicBlock,
    ("bottleneck", True): PreActBottleneck,
}
