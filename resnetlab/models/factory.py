"""create_model: a registered architecture, optionally with weights (a shipped tag or a file).

One entry point, as timm's create_model: the name (`resnet20`, or `resnet20.fashion-mnist` with a
tag) and `pretrained` say which weights (models/pretrained.py); the registry is looked up once per
build, and `build_model_with_cfg` (models/builder.py) does the rest: the weights' metadata fills
in what the call leaves open (classes, channels, build options), the weights are adapted to what
the call asks for (a new head, an adapted stem: models/adapt.py) and loaded strictly. Every model
returned carries `pretrained_cfg` (models/cfg.py), and a model with weights its file's metadata as
`resnetlab_metadata`, both describing the model as built. `load_model` (a weights file alone) and
`model_for_data` (sized for a data set) are the same build from other starting points.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ..errors import ResnetlabError
from .builder import ModelEntry, Source, Weights, build_model_with_cfg
from .pretrained import find_pretrained, split_name
from .registry import get_entry
from .weights import read_metadata, read_weights, shipped_tag, weights_file


def create_model(
    name: str,
    pretrained: bool | str | os.PathLike | None = False,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    global_pool: str | None = None,
    **options: Any,
) -> nn.Module:
    """Build model `name` ('resnet20', or 'resnet20.TAG'), with the weights `pretrained` names:
    True (the default tag), a tag, 'name.tag' or a file; False/None for fresh weights.

    Left open, num_classes, in_chans and the build options come from the weights' metadata (or
    a state dict's fc and conv1 shapes); asked for, they adapt the weights as timm does: another
    num_classes gets a fresh head (0: none), another in_chans an adapted stem. `global_pool` is
    'avg' (default), 'max', 'avgmax' or '' (none: num_classes=0 only). Options: features_only,
    out_indices, output_stride and the architecture's (see docs/models.md).
    """
    entry, name_tag = split_name(name)
    return _create(entry, name_tag, pretrained, num_classes=num_classes, in_chans=in_chans,
                   global_pool=global_pool, **options)  # fmt: skip


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a resnetlab weights file alone (or shipped weights named
    'model.tag'): (model in eval mode, metadata)."""
    state, meta = read_weights(path)
    if "name" not in meta:
        raise ResnetlabError(
            f"{path} carries no resnetlab metadata: not a weights file written by "
            "`resnetlab train` or save_weights (those record the model they belong to)"
        )
    where = weights_file(path)
    weights = Weights(Source(where, shipped_tag(where), str(path)), meta, state)
    model = build_model_with_cfg(get_entry(meta["name"]), weights)
    return model.eval(), meta


def model_for_data(
    name: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    options: dict[str, Any] | None = None,
) -> nn.Module:
    """Model `name` (fresh weights, build `options`) sized for images of `image_shape` (C, H, W):
    in_chans for a conv net, in_features = C x H x W for an MLP; `num_classes` outputs."""
    entry = get_entry(name)
    c, h, w = image_shape
    size = {"in_features": c * h * w} if entry.is_mlp else {"in_chans": c}
    return _create(entry, None, num_classes=num_classes, **size, **(options or {}))


def _create(
    entry: ModelEntry,
    name_tag: str | None,
    pretrained: bool | str | os.PathLike | None = False,
    **kwargs: Any,
) -> nn.Module:
    """create_model once the entry is known: find and read the weights, then build."""
    source = find_pretrained(entry.name, name_tag, pretrained)
    if source is None:
        return build_model_with_cfg(entry, **kwargs)
    if pretrained is None or pretrained is False:
        # a tag in the name with pretrained=False: the tag's architecture and cfg, fresh weights
        return build_model_with_cfg(entry, Weights(source, read_metadata(source.path)), **kwargs)
    state, meta = read_weights(source.path)
    return build_model_with_cfg(entry, Weights(source, meta, state), **kwargs)
