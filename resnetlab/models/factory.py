"""create_model: a registered architecture, optionally with weights (a file or a shipped tag)."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ..errors import ResnetlabError
from .registry import build_model, get_entry
from .weights import load_weights, read_metadata, read_state_dict, resolve_pretrained


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    pretrained: str | os.PathLike | None = None,
    **options: Any,
) -> nn.Module:
    """Build model `name`; with `pretrained` (a path or a shipped tag), load those weights strictly.

    Without explicit num_classes/in_chans, a weights file decides them (its metadata, or for a
    torchvision-style state dict the shapes of fc and conv1).
    """
    if pretrained is None:
        return build_model(name, num_classes=num_classes, in_chans=in_chans, **options)
    get_entry(name)  # unknown names fail before any file is read
    path = resolve_pretrained(name, pretrained)
    meta = read_metadata(path)
    if meta.get("name") not in (None, name):
        raise ResnetlabError(f"{path} holds weights of {meta['name']!r}, not {name!r}")
    if meta:
        num_classes = meta.get("num_classes") if num_classes is None else num_classes
        in_chans = meta.get("in_chans") if in_chans is None else in_chans
        options = {**meta.get("options", {}), **options}
    else:
        state = read_state_dict(path)
        if num_classes is None and "fc.weight" in state:
            num_classes = int(state["fc.weight"].shape[0])
        if in_chans is None and "conv1.weight" in state and state["conv1.weight"].ndim == 4:
            in_chans = int(state["conv1.weight"].shape[1])
    model = build_model(name, num_classes=num_classes, in_chans=in_chans, **options)
    load_weights(model, path)
    model.resnetlab_metadata = meta
    return model


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a resnetlab weights file alone: (model in eval mode, metadata)."""
    meta = read_metadata(path)
    if "name" not in meta:
        raise ResnetlabError(
            f"{path} carries no resnetlab metadata: not a weights file written by "
            "`resnetlab train` or save_weights (those record the model they belong to)"
        )
    model = create_model(meta["name"], pretrained=path)
    return model.eval(), meta
