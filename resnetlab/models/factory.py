"""create_model: a registered architecture, optionally with weights (a file or a shipped tag)."""

from __future__ import annotations

import os
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ..errors import ResnetlabError
from .registry import build_model, get_entry
from .weights import (
    check_compatible,
    load_weights,
    read_metadata,
    read_state_dict,
    resolve_pretrained,
)


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
        _check_file_fits(name, path, num_classes, in_chans, options)
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


def _tensor_shapes(path) -> dict[str, tuple[int, ...]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise ResnetlabError(f"{path}: not a readable safetensors file ({e})") from None


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


def _check_file_fits(name, path, num_classes, in_chans, options: dict[str, Any]) -> None:
    """Compare the file's tensor names and shapes with the architecture its metadata describes,
    before anything is allocated: crafted options cannot make a huge or endless build."""
    shapes = _tensor_shapes(path)
    blocks, said = _blocks_asked(name, options)
    if blocks > len(shapes):  # every block holds at least one tensor
        raise ResnetlabError(
            f"{path}: metadata options {said} ask for {blocks} blocks, but the file holds only "
            f"{len(shapes)} tensors; expected options that match the file's tensors"
        )
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        skeleton = build_model(name, num_classes=num_classes, in_chans=in_chans, **options)
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    check_compatible(skeleton, state, str(path))


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
