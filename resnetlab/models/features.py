"""Backbones for detection and segmentation heads: a model's feature maps, under its own names.

A `FeatureExtractor` takes over the model's modules up to the last feature map it returns and
registers them under the names they have in the model, so its state-dict keys are the full model's
(`conv1.weight`, `layer1.0.conv1.weight`, ...). Every weights file of the full model therefore loads
into it; the keys of what it leaves out (the head, a final norm, stages after the last one it
returns) are ignored. `feature_info` names, for each map, the module whose output it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ResnetlabError


class FeatureExtractor(nn.Module):
    """The feature maps `out_indices` of a model (0 = stem, 1..N = stages), with channels, strides.

    The model's forward up to those maps must be its child modules applied in order, as in
    `ResNet` (conv1, bn1, relu, maxpool, layer1..layerN).
    """

    def __init__(self, model: nn.Module, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        info: list[dict[str, Any]] = model.feature_info
        n = len(info)
        out_indices = tuple(out_indices) if out_indices is not None else tuple(range(1, n))
        bad = [i for i in out_indices if not 0 <= i < n]
        if bad:
            raise ResnetlabError(
                f"out_indices {bad} out of range; this model has features 0..{n - 1}"
            )
        if not out_indices:
            raise ResnetlabError(f"out_indices is empty; this model has features 0..{n - 1}")
        self.out_indices = out_indices
        self.feature_info = [info[i] for i in out_indices]
        children = list(model.named_children())
        names = [name for name, _ in children]
        last = max(names.index(f["module"]) for f in self.feature_info)
        for name, module in children[: last + 1]:
            self.add_module(name, module)
        self.left_out = tuple(names[last + 1 :])
        # torch's own load_state_dict takes the full model's state dict too
        self.register_load_state_dict_pre_hook(_drop_left_out_keys)

    @property
    def channels(self) -> list[int]:
        """Channels of each returned feature map."""
        return [f["num_chs"] for f in self.feature_info]

    @property
    def strides(self) -> list[int]:
        """Stride (input size / map size) of each returned feature map."""
        return [f["reduction"] for f in self.feature_info]

    def filter_state_dict(
        self, state: dict[str, torch.Tensor], prefix: str = ""
    ) -> dict[str, torch.Tensor]:
        """`state` less the keys of the modules this backbone leaves out (such as the fc head)."""
        left_out = tuple(f"{prefix}{name}." for name in self.left_out)
        return {k: v for k, v in state.items() if not k.startswith(left_out)}

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps, in the order of `out_indices`."""
        wanted = {f["module"] for f in self.feature_info}
        maps = {}
        for name, module in self.named_children():
            x = module(x)
            if name in wanted:
                maps[name] = x
        return [maps[f["module"]] for f in self.feature_info]


def _drop_left_out_keys(module: FeatureExtractor, state_dict, prefix, *_args) -> None:
    kept = module.filter_state_dict(state_dict, prefix)
    for key in [k for k in state_dict if k not in kept]:
        del state_dict[key]
