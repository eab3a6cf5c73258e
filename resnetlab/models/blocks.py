"""Residual blocks: basic and bottleneck, post-activation (2015) and pre-activation (2016).

Every block takes `BlockOptions(plain=True)` for its no-shortcut twin: the same layers, no addition.
Module names follow torchvision (conv1, bn1, ..., downsample), so weight files interchange.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .layers import DropPath, conv1x1, conv3x3, make_shortcut


@dataclass(frozen=True)
class BlockOptions:
    """What every block of one network shares."""

    shortcut: str = "B"  # the paper's options "A", "B", "C"
    plain: bool = False  # no shortcut at all
    groups: int = 1  # grouped 3x3 (ResNeXt); bottleneck only
    base_width: int = 64  # planes scale of the bottleneck (wide ResNet, ResNeXt)
    stride_in_1x1: bool = False  # bottleneck stride on the first 1x1 (the paper) or the 3x3
    drop_rate: float = 0.0  # dropout between the convs (wide ResNets)


class ResidualBlock(nn.Module):
    """What the four block types share: the shortcut, stochastic depth and the plain switch."""

    expansion = 1
    preact = False

    def __init__(self, cin: int, cout: int, stride: int, opts: BlockOptions, drop_path: float):
        super().__init__()
        self.plain = opts.plain
        # pre-activation inputs are already normalised, so their projections carry no BN
        self.downsample = (
            None
            if opts.plain
            else make_shortcut(opts.shortcut, cin, cout, stride, norm=not self.preact)
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.drop = nn.Dropout(opts.drop_rate) if opts.drop_rate > 0 else nn.Identity()

    def _add_shortcut(self, out: torch.Tensor, x: torch.Tensor, pre: torch.Tensor | None = None):
        if self.plain:
            return out
        if self.downsample is None:
            identity = x
        elif pre is not None and isinstance(self.downsample, nn.Sequential):
            # a pre-activation projection reads the normalised input (as the 2016 paper's code);
            # identity and option A carry the raw input, keeping the path between blocks clean
            identity = self.downsample(pre)
        else:
            identity = self.downsample(x)
        return self.drop_path(out) + identity


def _bottleneck_width(planes: int, opts: BlockOptions) -> int:
    return int(planes * (opts.base_width / 64.0)) * opts.groups


def _check_basic(opts: BlockOptions) -> None:
    if opts.groups != 1 or opts.base_width != 64:
        raise ValueError("the basic block supports only groups=1 and base_width=64")


class BasicBlock(ResidualBlock):
    """Two 3x3 convs; y = relu(F(x) + shortcut(x))."""

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        opts: BlockOptions = BlockOptions(),
        *,
        dilation: int = 1,
        first_dilation: int | None = None,
        drop_path: float = 0.0,
    ) -> None:
        _check_basic(opts)
        super().__init__(cin, planes, stride, opts, drop_path)
        self.conv1 = conv3x3(cin, planes, stride, dilation=first_dilation or dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(self.drop(out)))
        return self.relu(self._add_shortcut(out, x))


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3, 1x1 expand (x4); stride on the 3x3 ("v1.5") unless stride_in_1x1."""

    expansion = 4

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        opts: BlockOptions = BlockOptions(),
        *,
        dilation: int = 1,
        first_dilation: int | None = None,
        drop_path: float = 0.0,
    ) -> None:
        cout = planes * self.expansion
        super().__init__(cin, cout, stride, opts, drop_path)
        width = _bottleneck_width(planes, opts)
        s1, s3 = (stride, 1) if opts.stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(cin, width, s1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3, opts.groups, first_dilation or dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, cout)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.drop(out)))
        return self.relu(self._add_shortcut(out, x))


class PreActBasicBlock(ResidualBlock):
    """BN -> ReLU -> 3x3 -> BN -> ReLU -> 3x3, plus the shortcut; nothing after the addition."""

    preact = True

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        opts: BlockOptions = BlockOptions(),
        *,
        dilation: int = 1,
        first_dilation: int | None = None,
        drop_path: float = 0.0,
    ) -> None:
        _check_basic(opts)
        super().__init__(cin, planes, stride, opts, drop_path)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = conv3x3(cin, planes, stride, dilation=first_dilation or dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, dilation=dilation)
        self.relu = nn.ReLU(inplace=True)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.drop(self.relu(self.bn2(out))))
        return self._add_shortcut(out, x, pre)


class PreActBottleneck(ResidualBlock):
    """BN -> ReLU -> 1x1, BN -> ReLU -> 3x3, BN -> ReLU -> 1x1 (x4), plus the shortcut."""

    expansion = 4
    preact = True

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        opts: BlockOptions = BlockOptions(),
        *,
        dilation: int = 1,
        first_dilation: int | None = None,
        drop_path: float = 0.0,
    ) -> None:
        cout = planes * self.expansion
        super().__init__(cin, cout, stride, opts, drop_path)
        width = _bottleneck_width(planes, opts)
        s1, s3 = (stride, 1) if opts.stride_in_1x1 else (1, stride)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = conv1x1(cin, width, s1)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3, opts.groups, first_dilation or dilation)
        self.bn3 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, cout)
        self.relu = nn.ReLU(inplace=True)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.drop(self.relu(self.bn3(out))))
        return self._add_shortcut(out, x, pre)


BLOCKS: dict[tuple[str, bool], type[ResidualBlock]] = {
    ("basic", False): BasicBlock,
    ("bottleneck", False): Bottleneck,
    ("basic", True): PreActBasicBlock,
    ("bottleneck", True): PreActBottleneck,
}
