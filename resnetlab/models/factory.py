"""create_model: a registered architecture, optionally with weights (a shipped tag or a file).

One entry point, as timm's create_model: the name (`resnet20`, or `resnet20.fashion-mnist` with a
tag) and `pretrained` say which weights (models/pretrained.py); the weights' metadata fills in what
the call leaves open (classes, channels, build options); the weights are then adapted to what the
call asks for (a new head, an adapted stem) and loaded strictly. Every model returned carries
`pretrained_cfg` (models/cfg.py), and a model with weights its file's metadata as
`resnetlab_metadata`, both describing the model as built.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

from ..errors import ResnetlabError
from .cfg import cfg_from_metadata
from .pretrained import (
    HEAD,
    Source,
    adapt_state,
    adapted_metadata,
    file_shapes,
    find_pretrained,
    split_name,
)
from .registry import build_model, get_entry
from .weights import (
    check_compatible,
    model_metadata,
    read_metadata,
    read_weights,
    shipped_tag,
    weights_file,
)

log = logging.getLogger("resnetlab.models")


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
    arch, name_tag = split_name(name)
    source = find_pretrained(arch, name_tag, pretrained)
    if source is None:
        return build_model(
            arch, num_classes=num_classes, in_chans=in_chans, global_pool=global_pool, **options
        )
    if pretrained is None or pretrained is False:
        # a tag in the name with pretrained=False: the tag's architecture and cfg, fresh weights
        meta = read_metadata(source.path)
        model = build_model(arch, **_asked(meta, num_classes, in_chans, global_pool, options))
        _describe(model, meta, source)
        return model
    state, meta = read_weights(source.path)
    return _model_from_file(arch, source, state, meta, num_classes, in_chans, global_pool, options)


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
    source = Source(where, shipped_tag(where), str(path))
    model = _model_from_file(meta["name"], source, state, meta, None, None, None, {})
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


def _asked(
    meta: dict[str, Any],
    num_classes: int | None,
    in_chans: int | None,
    global_pool: str | None,
    options: dict[str, Any],
    file_classes: int | None = None,
    file_chans: int | None = None,
) -> dict[str, Any]:
    """The build arguments: what the call asks for, else what the weights say."""
    if file_classes is None:
        file_classes, file_chans = meta.get("num_classes"), meta.get("in_chans")
    options = {**meta.get("options", {}), **options}
    if meta.get("features_only") and "features_only" not in options:
        # a backbone's file: rebuild the backbone, with the feature maps it returned
        options["features_only"] = True
        if meta.get("out_indices") is not None:
            options.setdefault("out_indices", tuple(meta["out_indices"]))
    num_classes = file_classes if num_classes is None else num_classes
    if global_pool is None:
        global_pool = meta.get("global_pool")
        if global_pool == "" and num_classes:  # the file had no head; the model asks for one
            global_pool = None
    return dict(
        num_classes=num_classes,
        in_chans=file_chans if in_chans is None else in_chans,
        global_pool=global_pool,
        **options,
    )


def _model_from_file(
    name: str,
    source: Source,
    state: dict[str, torch.Tensor],
    meta: dict[str, Any],
    num_classes: int | None,
    in_chans: int | None,
    global_pool: str | None,
    options: dict[str, Any],
) -> nn.Module:
    """Build `name` as the call and the file say, adapt the file's tensors to it, load them."""
    path = source.path
    if meta.get("name") not in (None, name):
        raise ResnetlabError(f"{path} holds weights of {meta['name']!r}, not {name!r}")
    file_classes, file_chans = file_shapes(state, meta)
    kwargs = _asked(meta, num_classes, in_chans, global_pool, options, file_classes, file_chans)
    if meta:
        # the file's own architecture, before anything is allocated: crafted options cannot
        # make a huge or endless build, and a file that does not fit fails naming the tensors
        file_kwargs = dict(kwargs, num_classes=file_classes, in_chans=file_chans, global_pool=None)
        _check_file_fits(name, path, state, file_kwargs)
    model = build_model(name, **kwargs)
    head = getattr(model, "num_classes", None) if hasattr(model, "fc") else None
    state, notes = adapt_state(state, file_classes, file_chans, head, kwargs["in_chans"])
    own = model.state_dict()
    fresh = [k for k in own if k.startswith(HEAD) and k not in state]  # a new head keeps its init
    check_compatible(model, {**state, **{k: own[k] for k in fresh}}, str(path))
    model.load_state_dict(state, strict=not fresh)
    if notes:
        log.info("%s: %s; the rest loaded strictly", source.label, "; ".join(notes))
        meta = adapted_metadata(meta, model_metadata(model), source.label, kwargs["in_chans"])
    _describe(model, meta, source)
    model.resnetlab_metadata = meta
    return model


def _describe(model: nn.Module, meta: dict[str, Any], source: Source) -> None:
    """Set the model's pretrained_cfg from the weights' metadata over its default cfg."""
    model.pretrained_cfg = cfg_from_metadata(
        model.pretrained_cfg, meta, tag=source.tag, file=str(source.path)
    )


def _check_file_fits(name, path, state, kwargs: dict[str, Any]) -> None:
    """Compare the file's tensor names and shapes with the architecture its metadata describes,
    before anything is allocated."""
    blocks, said = _blocks_asked(name, kwargs)
    if blocks > len(state):  # every block holds at least one tensor
        raise ResnetlabError(
            f"{path}: metadata options {said} ask for {blocks} blocks, but the file holds only "
            f"{len(state)} tensors; expected options that match the file's tensors"
        )
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        skeleton = build_model(name, **kwargs)
    check_compatible(skeleton, state, str(path))


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
