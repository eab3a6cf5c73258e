"""Residual blocks: basic and bottleneck, post-activation (2015) and pre-activation (2016).

Each block reads as its paper draws it: `__init__` builds the shortcut (`downsample`: None for the
identity, `PadShortcut` for option A, a 1x1 projection for options B and C) and the residual branch;
`forward` computes the branch top to bottom and adds the shortcut. `shortcut=None` builds the plain
twin: the same layers, no shortcut, no addition. Module names follow torchvision (conv1, bn1, ...,
downsample), so weight files interchange.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import PadShortcut, conv1x1, conv3x3, make_shortcut, maybe_drop_path, maybe_dropout


class BasicBlock(nn.Module):
    """Two 3x3 convs: y = relu(F(x) + shortcut(x)), F = bn2(conv2(relu(bn1(conv1(x)))))."""

    expansion = 1
    preact = False

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: str | None = "B",
        dilation: int = 1,
        first_dilation: int | None = None,
        drop_rate: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.plain = shortcut is None
        self.downsample = None if self.plain else make_shortcut(shortcut, cin, planes, stride)
        self.drop_path = maybe_drop_path(drop_path)
        self.drop = maybe_dropout(drop_rate)
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
        if not self.plain:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.drop_path(out) + identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4); stride on the 3x3 ("v1.5") unless stride_in_1x1."""

    expansion = 4
    preact = False

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: str | None = "B",
        groups: int = 1,
        base_width: int = 64,
        stride_in_1x1: bool = False,
        dilation: int = 1,
        first_dilation: int | None = None,
        drop_rate: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        cout = planes * self.expansion
        width = int(planes * (base_width / 64.0)) * groups  # wide ResNets and ResNeXt widen this
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.plain = shortcut is None
        self.downsample = None if self.plain else make_shortcut(shortcut, cin, cout, stride)
        self.drop_path = maybe_drop_path(drop_path)
        self.drop = maybe_dropout(drop_rate)
        self.conv1 = conv1x1(cin, width, s1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3, groups, first_dilation or dilation)
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
        if not self.plain:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.drop_path(out) + identity
        return self.relu(out)


def preact_shortcut(
    downsample: nn.Module | None, x: torch.Tensor, pre: torch.Tensor
) -> torch.Tensor:
    """What a pre-activation block's shortcut carries, given its input x and pre = relu(bn1(x)).

    A projection reads the normalised input, as the 2016 paper's code does; the identity and
    option A carry the raw input, which keeps the path from block to block free of any operation.
    """
    if downsample is None:
        return x
    return downsample(x if isinstance(downsample, PadShortcut) else pre)


class PreActBasicBlock(nn.Module):
    """BN -> ReLU -> 3x3 -> BN -> ReLU -> 3x3, plus the shortcut; nothing after the addition."""

    expansion = 1
    preact = True

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: str | None = "B",
        dilation: int = 1,
        first_dilation: int | None = None,
        drop_rate: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.plain = shortcut is None
        # a projection reads the normalised input (see preact_shortcut), so it carries no BN
        self.downsample = (
            None if self.plain else make_shortcut(shortcut, cin, planes, stride, norm=False)
        )
        self.drop_path = maybe_drop_path(drop_path)
        self.drop = maybe_dropout(drop_rate)
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
        if self.plain:
            return out
        return self.drop_path(out) + preact_shortcut(self.downsample, x, pre)


class PreActBottleneck(nn.Module):
    """BN -> ReLU -> 1x1, BN -> ReLU -> 3x3, BN -> ReLU -> 1x1 (x4), plus the shortcut."""

    expansion = 4
    preact = True

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: str | None = "B",
        groups: int = 1,
        base_width: int = 64,
        stride_in_1x1: bool = False,
        dilation: int = 1,
        first_dilation: int | None = None,
        drop_rate: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        cout = planes * self.expansion
        width = int(planes * (base_width / 64.0)) * groups
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.plain = shortcut is None
        self.downsample = (
            None if self.plain else make_shortcut(shortcut, cin, cout, stride, norm=False)
        )
        self.drop_path = maybe_drop_path(drop_path)
        self.drop = maybe_dropout(drop_rate)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = conv1x1(cin, width, s1)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3, groups, first_dilation or dilation)
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
        if self.plain:
            return out
        return self.drop_path(out) + preact_shortcut(self.downsample, x, pre)


BLOCKS: dict[tuple[str, bool], type[nn.Module]] = {
    ("basic", False): BasicBlock,
    ("bottleneck", False): Bottleneck,
    ("basic", True): PreActBasicBlock,
    ("bottleneck", True): PreActBottleneck,
}
