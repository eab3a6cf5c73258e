"""create_model: a registered architecture, optionally with weights (a file or a shipped tag)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ..errors import ResnetlabError
from .registry import build_model, get_entry
from .weights import check_compatible, load_state, read_weights, resolve_pretrained


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
    state, meta = read_weights(path)
    return _model_from_file(name, path, state, meta, num_classes, in_chans, options)


def load_model(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a resnetlab weights file alone: (model in eval mode, metadata)."""
    state, meta = read_weights(path)
    if "name" not in meta:
        raise ResnetlabError(
            f"{path} carries no resnetlab metadata: not a weights file written by "
            "`resnetlab train` or save_weights (those record the model they belong to)"
        )
    model = _model_from_file(meta["name"], path, state, meta, None, None, {})
    return model.eval(), meta


def model_for_data(
    name: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    options: dict[str, Any] | None = None,
) -> nn.Module:
    """Model `name` (fresh weights, build `options`) sized for images of `image_shape` (C, H, W):
    in_chans for a conv net, in_features = C x H x W for an MLP; `num_classes` outputs."""
    options = options or {}
    if get_entry(name).is_mlp:
        c, h, w = image_shape
        return create_model(name, num_classes=num_classes, in_features=c * h * w, **options)
    return create_model(name, num_classes=num_classes, in_chans=image_shape[0], **options)


def _model_from_file(
    name: str,
    path: str | os.PathLike,
    state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    num_classes: int | None,
    in_chans: int | None,
    options: dict[str, Any],
) -> nn.Module:
    """Build `name` as the file's metadata (or tensor shapes) says and load its tensors."""
    if meta.get("name") not in (None, name):
        raise ResnetlabError(f"{path} holds weights of {meta['name']!r}, not {name!r}")
    if meta:
        num_classes = meta.get("num_classes") if num_classes is None else num_classes
        in_chans = meta.get("in_chans") if in_chans is None else in_chans
        options = {**meta.get("options", {}), **options}
        if meta.get("features_only") and "features_only" not in options:
            # a backbone's file: rebuild the backbone, with the feature maps it returned
            options["features_only"] = True
            if meta.get("out_indices") is not None:
                options.setdefault("out_indices", tuple(meta["out_indices"]))
        _check_file_fits(name, path, state, num_classes, in_chans, options)
    else:
        if num_classes is None and "fc.weight" in state:
            num_classes = int(state["fc.weight"].shape[0])
        if in_chans is None and "conv1.weight" in state and state["conv1.weight"].ndim == 4:
            in_chans = int(state["conv1.weight"].shape[1])
    model = build_model(name, num_classes=num_classes, in_chans=in_chans, **options)
    load_state(model, state, str(path))
    model.resnetlab_metadata = meta
    return model


def _blocks_asked(name: str, options: dict[str, Any]) -> tuple[int, str]:
    """How many blocks the options ask for, and which option says so (0 when unknown)."""
    entry = get_entry(name)
    if entry.is_mlp:
        depth = options.get("depth")
        return (depth, f"depth={depth}") if isinstance(depth, int) else (0, "")
    layers = options.get("layers", entry.spec.layers)
    if isinstance(layers, (list, tuple)) and all(isinstance(n, int) for n in layers):
        return sum(max(n, 0) for n in layers), f"layers={list(layers)}"
    return 0, ""


def _check_file_fits(name, path, state, num_classes, in_chans, options: dict[str, Any]) -> None:
    """Compare the file's tensor names and shapes with the architecture its metadata describes,
    before anything is allocated: crafted options cannot make a huge or endless build."""
    blocks, said = _blocks_asked(name, options)
    if blocks > len(state):  # every block holds at least one tensor
        raise ResnetlabError(
            f"{path}: metadata options {said} ask for {blocks} blocks, but the file holds only "
            f"{len(state)} tensors; expected options that match the file's tensors"
        )
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        skeleton = build_model(name, num_classes=num_classes, in_chans=in_chans, **options)
    check_compatible(skeleton, state, str(path))
