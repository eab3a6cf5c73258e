"""Building pieces: convolutions, shortcuts (the paper's options A, B, C), stochastic depth."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ResnetlabError


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    """3x3 convolution with 'same' padding and no bias (a BN follows)."""
    return nn.Conv2d(
        cin, cout, 3, stride, padding=dilation, dilation=dilation, groups=groups, bias=False
    )


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias."""
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class PadShortcut(nn.Module):
    """Option A: a parameter-free shortcut, strided identity with zero-padded extra channels."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        if cout < cin:
            raise ResnetlabError(f"option A cannot reduce channels ({cin} -> {cout})")
        self.stride = stride
        self.pad = cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            # zeros on the channel dimension, after the existing channels
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad))
        return x

    def extra_repr(self) -> str:
        return f"stride={self.stride}, pad_channels={self.pad}"


def make_shortcut(
    option: str, cin: int, cout: int, stride: int, *, norm: bool = True
) -> nn.Module | None:
    """The shortcut of one block; None means the identity.

    A: identity, or PadShortcut where the shape changes (no parameters).
    B: identity, or a 1x1 projection (+BN) where the shape changes.
    C: a 1x1 projection (+BN) on every block.
    `norm=False` drops the BN, as pre-activation nets do (their input is already normalised).
    """
    changes = stride != 1 or cin != cout
    if option == "A":
        return PadShortcut(cin, cout, stride) if changes else None
    if option == "B" and not changes:
        return None
    if option in ("B", "C"):
        if norm:
            return nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
        return nn.Sequential(conv1x1(cin, cout, stride))
    raise ResnetlabError(f"unknown shortcut option {option!r}; expected 'A', 'B' or 'C'")


def maybe_dropout(p: float) -> nn.Module:
    """Dropout with probability p, or the identity for p = 0."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def maybe_drop_path(p: float) -> nn.Module:
    """Stochastic depth with probability p, or the identity for p = 0."""
    return DropPath(p) if p > 0 else nn.Identity()


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability p."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"
