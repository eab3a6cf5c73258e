"""Backbones for detection and segmentation heads: a model's feature maps, under its own names.

A net describes its feature maps in `feature_info`, a `FeatureInfo` (timm's): one dict per map
(`module`, `num_chs`, `reduction`), with `.channels()`, `.reduction()` and `.module_name()` for
the maps chosen by `out_indices` (or for the index asked). It is also the list of those dicts:
`feature_info[i]`, `len(...)` and iteration run over every map, as in timm.

A `FeatureExtractor` takes over the model's modules up to the last feature map it returns and
registers them under the names they have in the model, so its state-dict keys are the full model's
(`conv1.weight`, `layer1.0.conv1.weight`, ...). Every weights file of the full model therefore loads
into it; the keys of what it leaves out (the head, a final norm, stages after the last one it
returns) are ignored.

Indices follow timm: a whole number n means the last n maps, a sequence picks maps by index, and a
negative index counts from the end (-1 is the last map); they are stored non-negative.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ResnetlabError

Indices = int | Sequence[int] | None


def take_indices(count: int, indices: Indices, argument: str = "out_indices") -> tuple[int, ...]:
    """`indices` (None: all; n: the last n; a sequence, negatives from the end) of `count` maps,
    sorted and non-negative; anything out of range fails in one line."""
    have = f"this model has features 0..{count - 1} (or -{count}..-1)"
    if indices is None:
        return tuple(range(count))
    if (
        isinstance(indices, bool)
        or not isinstance(indices, (int, Sequence))
        or isinstance(indices, str)
    ):
        raise ResnetlabError(
            f"{argument} {indices!r}: expected a whole number (the last n maps) or a sequence of "
            f"indices; {have}",
            argument=argument,
        )
    if isinstance(indices, int):
        if not 1 <= indices <= count:
            raise ResnetlabError(
                f"{argument} {indices} asks for the last {indices} maps; {have}",
                argument=argument,
            )
        return tuple(range(count - indices, count))
    items = list(indices)
    if not items:
        raise ResnetlabError(f"{argument} is empty; {have}", argument=argument)
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        raise ResnetlabError(
            f"{argument} {items!r}: expected whole numbers; {have}", argument=argument
        )
    bad = [i for i in items if not -count <= i < count]
    if bad:
        raise ResnetlabError(f"{argument} {bad} out of range; {have}", argument=argument)
    return tuple(sorted({i % count for i in items}))


class FeatureInfo(Sequence):
    """What each feature map of a net is: its module, channels and reduction (input / map size).

    `channels()`, `reduction()` and `module_name()` give the values of the maps in `out_indices`
    (every map by default), or of the index or indices asked for; indexing, `len` and iteration
    run over every map's dict."""

    def __init__(self, info: Sequence[dict[str, Any]], out_indices: Indices = None) -> None:
        self.info = [dict(f, index=i) for i, f in enumerate(info)]
        self.out_indices = take_indices(len(self.info), out_indices)

    def from_other(self, out_indices: Indices) -> FeatureInfo:
        """The same maps with other `out_indices`."""
        return FeatureInfo(self.info, out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        """Value of `key` for each map in out_indices, for one index, or for each of a sequence."""
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, Sequence):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(
        self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None
    ) -> list[dict[str, Any]] | dict[str, Any]:
        """The dicts (or only `keys` of them) of the maps in out_indices, or of `idx`."""

        def pick(i: int) -> dict[str, Any]:
            return self.info[i] if keys is None else {k: self.info[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        if isinstance(idx, Sequence):
            return [pick(i) for i in idx]
        return pick(idx)

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        """Channels of the feature maps."""
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        """Reduction (stride: input size / map size) of the feature maps."""
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        """Name of the module whose output each feature map is."""
        return self.get("module", idx)

    def __getitem__(self, item):
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.info)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FeatureInfo):
            return self.info == other.info and self.out_indices == other.out_indices
        return isinstance(other, list) and self.info == other

    def __repr__(self) -> str:
        return f"FeatureInfo({self.info!r}, out_indices={self.out_indices})"


class FeatureExtractor(nn.Module):
    """The feature maps `out_indices` of a model (0 = stem, 1..N = stages), with channels, strides.

    The model's forward up to those maps must be its child modules applied in order, as in
    `ResNet` (conv1, bn1, relu, maxpool, layer1..layerN).
    """

    def __init__(self, model: nn.Module, out_indices: Indices = None) -> None:
        super().__init__()
        info = model.feature_info
        if not isinstance(info, FeatureInfo):
            info = FeatureInfo(info)
        if out_indices is None:  # every stage: the stem map is asked for by index 0
            out_indices = tuple(range(1, len(info)))
        self.feature_info = info.from_other(out_indices)
        self.out_indices = self.feature_info.out_indices
        children = list(model.named_children())
        names = [name for name, _ in children]
        last = max(names.index(m) for m in self.feature_info.module_name())
        for name, module in children[: last + 1]:
            self.add_module(name, module)
        self.left_out = tuple(names[last + 1 :])
        # torch's own load_state_dict takes the full model's state dict too
        self.register_load_state_dict_pre_hook(_drop_left_out_keys)

    @property
    def channels(self) -> list[int]:
        """Channels of each returned feature map (feature_info.channels())."""
        return self.feature_info.channels()

    @property
    def strides(self) -> list[int]:
        """Stride (input size / map size) of each returned feature map (feature_info.reduction)."""
        return self.feature_info.reduction()

    def filter_state_dict(
        self, state: dict[str, torch.Tensor], prefix: str = ""
    ) -> dict[str, torch.Tensor]:
        """`state` less the keys of the modules this backbone leaves out (such as the fc head)."""
        left_out = tuple(f"{prefix}{name}." for name in self.left_out)
        return {k: v for k, v in state.items() if not k.startswith(left_out)}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps, in the order of `out_indices`."""
        wanted = self.feature_info.module_name()
        maps = {}
        for name, module in self.named_children():
            x = module(x)
            if name in wanted:
                maps[name] = x
        return [maps[m] for m in wanted]


def _drop_left_out_keys(module: FeatureExtractor, state_dict, prefix, *_args) -> None:
    kept = module.filter_state_dict(state_dict, prefix)
    for key in [k for k in state_dict if k not in kept]:
        del state_dict[key]
