"""The ResNet body: stem, stages of blocks, pooling, head. One class for every conv ResNet here.

An architecture is a small frozen `ResNetSpec`; `ResNet(spec, ...)` builds it. Module names are
torchvision's (conv1, bn1, relu, maxpool, layer1..layerN, avgpool, fc), so its weight files load.
The spec picks the block class once (`BLOCKS`: basic or bottleneck, post- or pre-activation,
residual or plain); the body never asks a block its family. Like its blocks, the net declares its
own (conv, BN) pairs and Figure 7 responses: the stem's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ResnetlabError
from .anatomy import Pairs
from .blocks import BasicBlock, Bottleneck, PlainBasicBlock, PlainBottleneck
from .features import FeatureInfo, Indices, take_indices
from .head import ClassifierHead, GlobalPool, check_pool
from .layers import maybe_dropout
from .preact import PlainPreActBasicBlock, PlainPreActBottleneck, PreActBasicBlock, PreActBottleneck

# (block, preact, plain) -> the class of every block of such a net
BLOCKS: dict[tuple[str, bool, bool], type[nn.Module]] = {
    ("basic", False, False): BasicBlock,
    ("basic", False, True): PlainBasicBlock,
    ("bottleneck", False, False): Bottleneck,
    ("bottleneck", False, True): PlainBottleneck,
    ("basic", True, False): PreActBasicBlock,
    ("basic", True, True): PlainPreActBasicBlock,
    ("bottleneck", True, False): PreActBottleneck,
    ("bottleneck", True, True): PlainPreActBottleneck,
}


@dataclass(frozen=True)
class ResNetSpec:
    """What makes one ResNet architecture."""

    block: str = "basic"  # "basic" or "bottleneck"
    layers: tuple[int, ...] = (2, 2, 2, 2)  # blocks per stage
    widths: tuple[int, ...] = (64, 128, 256, 512)  # planes per stage (bottleneck outputs are x4)
    stem: str = "imagenet"  # "imagenet": 7x7/2 + 3x3/2 max pool; "small": 3x3/1, no pool
    stem_width: int = 64
    preact: bool = False
    plain: bool = False
    shortcut: str = "B"  # the paper's options "A", "B", "C"
    groups: int = 1
    base_width: int = 64
    stride_in_1x1: bool = False  # bottleneck stride on the first 1x1 (the paper) or the 3x3 (v1.5)
    block_drop_rate: float = 0.0  # dropout between a block's convs (wide ResNets)

    @property
    def stem_stride(self) -> int:
        return 4 if self.stem == "imagenet" else 1

    @property
    def native_stride(self) -> int:
        return self.stem_stride * 2 ** (len(self.layers) - 1)


def stage_geometry(spec: ResNetSpec, output_stride: int) -> list[tuple[int, int]]:
    """(stride, dilation) of each stage.

    Every stage after the first halves the resolution until the net's stride reaches
    `output_stride`; later stages keep the resolution and dilate instead (DeepLab's atrous nets).
    """
    geometry, reduction, dilation = [], spec.stem_stride, 1
    for i in range(len(spec.layers)):
        stride = 1 if i == 0 else 2
        if stride > 1 and reduction >= output_stride:
            dilation *= stride
            stride = 1
        reduction *= stride
        geometry.append((stride, dilation))
    return geometry


def make_stage(
    spec: ResNetSpec,
    cin: int,
    planes: int,
    stride: int,
    dilation: int,
    first_dilation: int,
    drop_path_rates: list[float],
) -> nn.Sequential:
    """One stage: a block per drop-path rate; the first changes stride, dilation and width."""
    block = BLOCKS[(spec.block, spec.preact, spec.plain)]
    kw: dict = dict(drop_rate=spec.block_drop_rate)
    if spec.block == "bottleneck":
        kw.update(groups=spec.groups, base_width=spec.base_width, stride_in_1x1=spec.stride_in_1x1)
    blocks = []
    for j, rate in enumerate(drop_path_rates):
        first = j == 0
        if not spec.plain:  # a plain twin has no shortcut, so no shortcut to drop or choose
            kw.update(shortcut=spec.shortcut, drop_path=rate)
        blocks.append(
            block(
                cin,
                planes,
                stride if first else 1,
                dilation=dilation,
                first_dilation=first_dilation if first else dilation,
                **kw,
            )
        )
        cin = planes * block.expansion
    return nn.Sequential(*blocks)


class ResNet(ClassifierHead):
    """A residual (or plain) convolutional network built from a ResNetSpec."""

    def __init__(
        self,
        spec: ResNetSpec,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        zero_init_residual: bool = False,
        drop_path_rate: float = 0.0,
        drop_rate: float = 0.0,
        output_stride: int | None = None,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        _check_spec(spec, in_chans, num_classes, drop_path_rate, drop_rate)
        check_pool(global_pool, num_classes)
        self.spec = spec
        self.num_classes = num_classes
        self.in_chans = in_chans
        output_stride = output_stride or spec.native_stride
        _check_output_stride(output_stride, spec)

        # stem: pre-activation nets on small images start with a bare conv (their blocks normalise)
        w = spec.stem_width
        if spec.stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, w, 7, 2, 3, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_chans, w, 3, 1, 1, bias=False)
        bare_stem = spec.preact and spec.stem == "small"
        self.bn1 = nn.Identity() if bare_stem else nn.BatchNorm2d(w)
        self.relu = nn.Identity() if bare_stem else nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if spec.stem == "imagenet" else nn.Identity()

        stem_name = "conv1" if bare_stem else "relu"
        stem_reduction = 2 if spec.stem == "imagenet" else 1  # the stem map before the max pool
        info = [dict(module=stem_name, num_chs=w, reduction=stem_reduction)]

        # stages; stochastic depth grows linearly with the block index, from 0 to drop_path_rate
        total = sum(spec.layers)
        rates = [drop_path_rate * k / max(total - 1, 1) for k in range(total)]
        self.stage_names: list[str] = []
        geometry = stage_geometry(spec, output_stride)
        cin, reduction, prev_dilation = w, spec.stem_stride, 1
        for i, (n, planes) in enumerate(zip(spec.layers, spec.widths)):
            stride, dilation = geometry[i]
            stage = make_stage(spec, cin, planes, stride, dilation, prev_dilation, rates[:n])
            rates = rates[n:]
            name = f"layer{i + 1}"
            self.add_module(name, stage)
            self.stage_names.append(name)
            cin = planes * stage[0].expansion
            reduction *= stride
            prev_dilation = dilation
            info.append(dict(module=name, num_chs=cin, reduction=reduction))
        self.feature_info = FeatureInfo(info)

        # pre-activation nets end with the BN and ReLU that their last block left out
        self.norm = nn.BatchNorm2d(cin) if spec.preact else nn.Identity()
        self.act = nn.ReLU(inplace=True) if spec.preact else nn.Identity()
        self.global_pool = GlobalPool(global_pool)
        self.num_features = cin
        self.head_drop = maybe_dropout(drop_rate)
        self.fc = nn.Linear(cin, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        # Kaiming normal (fan_out) for convs, BN as identity; the paper's and torchvision's choice.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual and not self.spec.plain:
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem: first conv, BN, ReLU and max pool."""
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)
        return x

    def conv_bn_pairs(self) -> Pairs:
        """The stem's (conv, BN) pair (none for a bare pre-activation stem); blocks give theirs."""
        return [(self.conv1, self.bn1)] if isinstance(self.bn1, nn.BatchNorm2d) else []

    def response_pairs(self) -> Pairs:
        """The stem's Figure 7 response: a 3x3 stem conv and its BN (a 7x7 stem has none)."""
        return [p for p in self.conv_bn_pairs() if p[0].kernel_size == (3, 3)]

    @property
    def avgpool(self) -> GlobalPool:
        """torchvision's name for the global pooling."""
        return self.global_pool

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Indices = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's: (final features, [maps `indices` of feature_info]), or the maps alone.

        `indices`: None for every map, n for the last n, or a sequence (negatives from the end);
        `norm` applies the final norm (pre-activation nets) to the last stage's map; `stop_early`
        runs no stage after the last map asked for."""
        if output_fmt != "NCHW":
            raise ResnetlabError(f"output_fmt {output_fmt!r}: a ResNet's maps are 'NCHW'")
        take = take_indices(len(self.feature_info), indices, "indices")
        last = len(self.stage_names)
        stages = self.stage_names[: max(take)] if stop_early else self.stage_names
        maps = []
        x = self.relu(self.bn1(self.conv1(x)))
        if 0 in take:
            maps.append(x)
        x = self.maxpool(x)
        for i, name in enumerate(stages, start=1):
            x = getattr(self, name)(x)
            if i in take:
                maps.append(self.act(self.norm(x)) if norm and i == last else x)
        if intermediates_only:
            return maps
        if len(stages) == last:
            x = self.act(self.norm(x))
        return x, maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, before pooling."""
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        x = self.norm(x)  # pre-activation nets: the BN and ReLU their last block left out
        x = self.act(x)
        return x

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_pool(x)

    def set_global_pool(self, global_pool: str | None, num_classes: int) -> None:
        check_pool(self.global_pool.pool_type if global_pool is None else global_pool, num_classes)
        if global_pool is not None:
            self.global_pool = GlobalPool(global_pool)


def _check_spec(spec: ResNetSpec, in_chans, num_classes, drop_path_rate, drop_rate) -> None:
    if (spec.block, spec.preact, spec.plain) not in BLOCKS:
        raise ResnetlabError(f"unknown block {spec.block!r}; expected 'basic' or 'bottleneck'")
    if spec.block == "basic" and (spec.groups != 1 or spec.base_width != 64):
        raise ResnetlabError("the basic block supports only groups=1 and base_width=64")
    if spec.stem not in ("imagenet", "small"):
        raise ResnetlabError(f"unknown stem {spec.stem!r}; expected 'imagenet' or 'small'")
    if spec.shortcut not in ("A", "B", "C"):
        raise ResnetlabError(f"unknown shortcut option {spec.shortcut!r}; expected 'A', 'B' or 'C'")
    if len(spec.layers) != len(spec.widths) or not spec.layers or min(spec.layers) < 1:
        raise ResnetlabError(
            f"layers {spec.layers} and widths {spec.widths} must pair up, each >= 1"
        )
    for key in ("stem_width", "groups", "base_width"):
        v = getattr(spec, key)
        if not _whole(v) or v < 1:
            raise ResnetlabError(f"{key} must be a whole number >= 1, got {v!r}")
    if not all(_whole(v) and v >= 1 for v in (*spec.layers, *spec.widths)):
        raise ResnetlabError(
            f"layers {spec.layers} and widths {spec.widths} must be whole numbers >= 1"
        )
    if spec.block == "bottleneck" and min(spec.widths) * spec.base_width < 64:
        raise ResnetlabError(
            f"base_width {spec.base_width} leaves a bottleneck of width {min(spec.widths)} "
            f"with no channels (width x base_width / 64 < 1)"
        )
    rate = spec.block_drop_rate
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0.0 <= rate < 1.0:
        raise ResnetlabError(f"block_drop_rate must lie in [0, 1), got {rate!r}")
    if not isinstance(in_chans, int) or in_chans < 1:
        raise ResnetlabError(f"in_chans must be a positive integer, got {in_chans!r}")
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ResnetlabError(f"num_classes must be a non-negative integer, got {num_classes!r}")
    if not 0.0 <= drop_path_rate < 1.0 or not 0.0 <= drop_rate < 1.0:
        raise ResnetlabError("drop_path_rate and drop_rate must lie in [0, 1)")
    if spec.plain and drop_path_rate > 0:
        raise ResnetlabError("drop_path_rate needs shortcuts; a plain net has none")


def _whole(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_output_stride(output_stride: int, spec: ResNetSpec) -> None:
    allowed = []
    s = spec.native_stride
    while s >= max(spec.stem_stride, 1):
        allowed.append(s)
        s //= 2
    if output_stride not in allowed:
        raise ResnetlabError(
            f"output_stride {output_stride} not possible here; choose one of {allowed}"
        )
