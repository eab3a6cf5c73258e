"""Fine-tuning: start from other weights or a ready model (its head following the data's class
names, its normalisation the weights'), freeze parts, give body and head their own rates; and
what a trained model says of its training, which a later fine-tune reads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.classmap import match_head
from ..errors import ResnetlabError
from ..models.weights import model_metadata, read_weights
from .recipes import Recipe


def init_from(model: nn.Module, path: str, classes: Sequence[str] | None = None) -> str:
    """Load a project weights file or a torchvision-style state dict into `model`; a 3-channel stem
    is summed over channels for 1-channel data. The head's rows follow the class names: a class of
    `classes` (the data's) that the weights know keeps its row, a new class gets a fresh one
    (resnetlab.data.classmap.match_head); returns one line saying what was loaded and kept."""
    state, meta = read_weights(path)
    own = model.state_dict()
    head = _head_prefix(model)
    loaded, head_state, bad = {}, {}, []
    unused = []
    for k, v in state.items():
        if k.startswith(head):
            head_state[k] = v
            continue
        if k not in own:
            if not k.endswith("num_batches_tracked"):
                unused.append(k)
            continue
        target = own[k]
        if v.shape == target.shape:
            loaded[k] = v
        elif (
            v.ndim == 4
            and target.ndim == 4
            and v.shape[0] == target.shape[0]
            and (target.shape[1] == 1 and v.shape[2:] == target.shape[2:])
        ):
            loaded[k] = v.sum(1, keepdim=True)  # RGB stem -> grey stem, same response to grey
        else:
            bad.append(f"{k} {tuple(v.shape)} vs model {tuple(target.shape)}")
    if bad:
        raise ResnetlabError(
            f"init_from {path} does not fit this model: " + "; ".join(bad[:3]),
            argument="init_from",
        )
    if unused:
        raise ResnetlabError(
            f"init_from {path} holds {len(unused)} tensor(s) this model has no place for, "
            f"e.g. {', '.join(unused[:3])} (weights of {meta.get('name', 'another model')}?); "
            "expected weights of the same architecture (only the head may differ)",
            argument="init_from",
        )
    body_missing = [k for k in own if k not in loaded and not k.startswith(head)]
    body_missing = [k for k in body_missing if not k.endswith("num_batches_tracked")]
    if body_missing:
        raise ResnetlabError(
            f"init_from {path} lacks {len(body_missing)} tensor(s) of this model, "
            f"e.g. {', '.join(body_missing[:3])} (weights of {meta.get('name', 'another model')}?)",
            argument="init_from",
        )
    head_note = _head_rows(model, head, head_state, own, meta, classes, path, loaded)
    model.load_state_dict(loaded, strict=False)
    return f"loaded {len(loaded)} tensors from {path}" + (f"; {head_note}" if head_note else "")


def _head_rows(model, head, head_state, own, meta, classes, path, loaded) -> str:
    """Put into `loaded` the head rows of the classes the weights know; say which are new."""
    n_new = model.get_classifier().out_features
    weight, bias = head_state.get(f"{head}weight"), head_state.get(f"{head}bias")
    fits = (
        weight is not None
        and weight.ndim == 2
        and weight.shape[1] == own[f"{head}weight"].shape[1]
        and (bias is None or bias.shape == (weight.shape[0],))
    )
    if not fits:
        return f"new head ({head.rstrip('.')}) for {n_new} classes"
    new_classes = list(classes) if classes is not None else [str(i) for i in range(n_new)]
    match = match_head(meta.get("classes"), weight.shape[0], new_classes, weights=str(path))
    if match.kept == 0:
        return f"new head ({head.rstrip('.')}) for {n_new} classes"
    for key, old in ((f"{head}weight", weight), (f"{head}bias", bias)):
        if old is None or key not in own:
            continue
        rows = own[key].clone()
        for j, r in enumerate(match.rows):
            if r is not None:
                rows[j] = old[r]
        loaded[key] = rows
    return match.note


def _head_prefix(model: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is model.get_classifier():
            return name + "."
    return "fc."


def freeze(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """Stop gradients of the named top-level parts ("stem" = conv1+bn1); returns them."""
    children = dict(model.named_children())
    modules = []
    for name in names:
        if name == "stem" and "conv1" in children:
            parts = [children["conv1"], children["bn1"]]
        elif name in children and any(True for _ in children[name].parameters()):
            parts = [children[name]]
        else:
            have = ["stem"] + [n for n, m in children.items() if any(True for _ in m.parameters())]
            have = list(dict.fromkeys(h for h in have if h not in ("conv1", "bn1") or h == "stem"))
            raise ResnetlabError(
                f"freeze {name!r}: no such part; choose from {', '.join(have)}", argument="freeze"
            )
        for m in parts:
            m.requires_grad_(False)
            modules.append(m)
    return modules


def param_groups(
    model: nn.Module, recipe: Recipe, lr: float, body_lr_scale: float
) -> list[dict[str, Any]]:
    """Body and head, each split into decayed weights and undecayed norms/biases (when asked)."""
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        is_head = id(p) in head_ids
        decay = recipe.decay_norm_and_bias or p.ndim > 1
        groups.setdefault((is_head, decay), []).append(p)
    out = []
    for (is_head, decay), params in sorted(groups.items()):
        scale = 1.0 if is_head else body_lr_scale
        out.append(
            {
                "params": params,
                "lr": lr * scale,
                "base_lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": recipe.weight_decay if decay else 0.0,
            }
        )
    if not out:
        raise ResnetlabError("every parameter is frozen; nothing to train")
    return out


def check_model_fits(model: nn.Module, entry, image_shape: tuple, num_classes: int) -> None:
    """Fail in one line unless a ready model takes images of `image_shape` (C, H, W) and has one
    output per class of the data."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    outputs = getattr(head, "out_features", 0)
    if not outputs:
        raise ResnetlabError(
            "model has no classifier head (num_classes=0 or features_only); build it with "
            f"num_classes={num_classes} to train it on this data",
            argument="model",
        )
    if outputs != num_classes:
        raise ResnetlabError(
            f"model has {outputs} outputs but the data has {num_classes} classes; build it with "
            f"num_classes={num_classes} (or call model.reset_classifier({num_classes}))",
            argument="model",
        )
    c, h, w = image_shape
    if entry.is_mlp:
        have, want, what = getattr(model, "in_features", None), c * h * w, "in_features"
    else:
        conv1 = getattr(model, "conv1", None)
        have, want, what = getattr(conv1, "in_channels", None), c, "in_chans"
    if have is not None and have != want:
        raise ResnetlabError(
            f"model takes {what}={have} but the data's images are {c}x{h}x{w}; build it with "
            f"{what}={want}",
            argument="model",
        )


def head_follows_classes(model: nn.Module, classes: list[str]) -> str | None:
    """A ready model whose head names its classes (pretrained_cfg) meets data that names them in
    another order or names others: its rows follow the names (a known class keeps its row, a new
    one gets a fresh row); one line saying so, or None when nothing moves."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classes")
    head = model.get_classifier()
    n = head.out_features
    if not names or len(names) != n or list(names) == list(classes):
        return None
    match = match_head(names, n, classes, weights="the model")
    if match.rows == tuple(range(n)):
        return None
    fresh = nn.Linear(head.in_features, n, bias=head.bias is not None)  # seeded by set_up
    with torch.no_grad():
        for param, new in ((head.weight, fresh.weight), (head.bias, fresh.bias)):
            if param is None:
                continue
            old = param.detach().clone()
            for j, r in enumerate(match.rows):
                param[j] = old[r] if r is not None else new[j].to(param.dtype)
    return match.note


def weights_norm(meta: dict, channels: int) -> tuple[list | None, list | None]:
    """The mean and std that weights were trained with (their metadata's), for `channels` input
    channels: one value repeated for a stem adapted to more channels, averaged for a grey one;
    (None, None) when the metadata has none or they do not fit."""
    mean, std = meta.get("mean"), meta.get("std")
    if mean is None or std is None:
        return None, None
    mean = [float(v) for v in (mean if isinstance(mean, list) else [mean])]
    std = [float(v) for v in (std if isinstance(std, list) else [std])]
    if len(mean) != len(std) or not mean:
        return None, None
    if len(mean) == channels:
        return mean, std
    if len(mean) == 1:  # grey weights in a stem repeated over colour channels
        return mean * channels, std * channels
    if channels == 1:  # colour weights summed into a grey stem
        return [sum(mean) / len(mean)], [sum(std) / len(std)]
    return None, None


def describe_trained(model: nn.Module, meta: dict[str, Any], weights: Path) -> None:
    """Make the model describe what it was trained for (its pretrained_cfg and
    resnetlab_metadata: the data's classes, input size, mean and std), so that save_weights
    and a later fit read them from the model."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict):
        model.pretrained_cfg = dict(
            cfg,
            tag=None,
            file=str(weights),
            input_size=tuple(meta["input_size"]),
            mean=tuple(meta["mean"]),
            std=tuple(meta["std"]),
            num_classes=len(meta["classes"]),
            classes=list(meta["classes"]),
        )
    model.resnetlab_metadata = {**model_metadata(model), **meta}
