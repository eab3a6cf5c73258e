"""What every block shares, written once: how it joins its branch F(x) and its shortcut.

A block class is its layers (the `_...Layers` classes of blocks.py, preact.py and mlp.py: the
constructor, the branch `residual(x)`, `conv_bn_pairs()`, `response_pairs()`, `zero_init_last()`)
and one of the ends below, which say what forward does with F(x):

- `PostActivation`: y = relu(F(x) + shortcut(x)), the 2015 paper's block;
- `PreActivation`: y = F(x) + shortcut(x), the 2016 paper's, whose branch and projection read the
  input normalised once, `preactivate(x)` = relu(bn1(x));
- `PlainPostActivation`, `PlainPreActivation`: the plain twins, y = relu(F(x)) and y = F(x); their
  `shortcut` is None (not a method) and forward has no addition.

`Residual` builds a residual block's shortcut (the paper's option A, B or C; a projection of a
pre-activation block carries no BN, its input being normalised) before the layers, so the shortcut
is registered first, as it always was here: that keeps the order of every state dict and of the
seeded initialisation. Then it adds the stochastic depth on F(x). A plain twin takes the layers'
arguments alone: no shortcut to choose, none to drop.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import PadShortcut, make_shortcut, maybe_drop_path

Pairs = list[tuple[nn.Module, nn.Module]]


def projection_pairs(downsample: nn.Module | None) -> Pairs:
    """The (conv, BN) pair of a projection shortcut (options B and C, post-activation); else []."""
    if isinstance(downsample, nn.Sequential) and len(downsample) == 2:
        return [(downsample[0], downsample[1])]
    return []


def bottleneck_geometry(
    planes: int, stride: int, groups: int, base_width: int, stride_in_1x1: bool
) -> tuple[int, int, int]:
    """A bottleneck's inner width (wide ResNets and ResNeXt widen it) and the strides of its
    first 1x1 and its 3x3: on the 3x3 ("v1.5", torchvision's) unless stride_in_1x1 (the paper)."""
    width = int(planes * (base_width / 64.0)) * groups
    s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
    return width, s1, s3


class Residual(nn.Module):
    """A block with a shortcut: `shortcut` is the paper's option, `drop_path` the stochastic depth
    on F(x); the other arguments are the layers' (dilation, drop_rate, groups, ...)."""

    def __init__(
        self,
        cin: int,
        planes: int,
        stride: int = 1,
        *,
        shortcut: str = "B",
        drop_path: float = 0.0,
        **layers,
    ) -> None:
        cout = planes * self.expansion
        downsample = make_shortcut(shortcut, cin, cout, stride, norm=not self.preact)
        super().__init__(cin, planes, stride, downsample=downsample, **layers)
        self.drop_path = maybe_drop_path(drop_path)


class Plain(nn.Module):
    """A plain twin: the same layers, names and initialisation, and no shortcut."""

    plain = True
    shortcut = None


class PostActivation(nn.Module):
    """y = relu(F(x) + shortcut(x)) (He et al. 2015)."""

    preact = False
    plain = False

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """x, or its projection where the shape changes."""
        return x if self.downsample is None else self.downsample(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual(x)
        out = self.drop_path(out)
        out = out + self.shortcut(x)
        out = self.relu(out)
        return out


class PlainPostActivation(Plain):
    """y = relu(F(x))."""

    preact = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual(x)
        out = self.relu(out)
        return out


class PreActivation(nn.Module):
    """y = F(x) + shortcut(x), nothing after the addition (He et al. 2016)."""

    preact = True
    plain = False

    def shortcut(self, x: torch.Tensor, pre: torch.Tensor | None = None) -> torch.Tensor:
        """x; option A's pad of x; or the projection of relu(bn1(x)) (`pre` if computed)."""
        if self.downsample is None:
            return x
        if isinstance(self.downsample, PadShortcut):  # option A: the raw input, subsampled, padded
            return self.downsample(x)
        return self.downsample(self.preactivate(x) if pre is None else pre)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.preactivate(x)
        out = self.residual(x, pre)
        out = self.drop_path(out)
        out = out + self.shortcut(x, pre)
        return out


class PlainPreActivation(Plain):
    """y = F(x)."""

    preact = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.residual(x)
        return out
