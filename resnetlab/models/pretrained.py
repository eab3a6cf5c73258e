"""Which weights `create_model` loads, and how they are adapted to the model asked for (timm's way).

`pretrained` is False/None (no weights), True (the net's default shipped tag: the first of its
tags in sorted order), a shipped tag ('fashion-mnist'), 'name.tag', or a file path. A name may
carry the tag itself (`resnet20.fashion-mnist`): as in timm, the tag then decides the net's
configuration (classes, channels, input size, statistics) and `pretrained=True` loads its weights.

Adaptation at load time, as timm's load_pretrained: another num_classes than the weights' gives a
fresh head (0: none) and loads the rest strictly; another in_chans adapts the stem's first conv
with `adapt_input_conv` (summed over the channels for 1, repeated and rescaled for more), so that
the 1-channel Fashion-MNIST weights start an RGB model that answers a grey RGB image exactly as the
original answers the grey image. The metadata and pretrained_cfg then describe the adapted model.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ResnetlabError
from .cfg import per_channel
from .registry import get_entry
from .weights import WEIGHT_SUFFIXES, shipped_path, shipped_tag, shipped_weights, weights_file

HEAD = "fc."
STEM = "conv1.weight"
# what adapted weights keep of their file's metadata: what still describes the model (results
# such as test_top1_err described the model before adaptation, and are dropped)
KEPT = (
    "format_version", "name", "options", "input_size", "mean", "std", "crop_pct",
    "interpolation", "tta", "classes", "features_only", "out_indices",
)  # fmt: skip


@dataclass(frozen=True)
class Source:
    """A weights file to load: where it is, its shipped tag if any, and how messages name it."""

    path: Path
    tag: str | None
    label: str


def split_name(name: str) -> tuple[str, str | None]:
    """'resnet20.fashion-mnist' -> ('resnet20', 'fashion-mnist'); 'resnet20' -> ('resnet20', None).
    An unknown model name fails here, before any file is read."""
    if not isinstance(name, str):
        raise ResnetlabError(f"model name {name!r} is not a string; e.g. 'resnet20'")
    arch, dot, tag = name.partition(".")
    get_entry(arch)
    if dot and not tag:
        raise ResnetlabError(f"model name {name!r} ends in '.'; expected NAME or NAME.TAG")
    return arch, tag or None


def find_pretrained(arch: str, name_tag: str | None, pretrained: Any) -> Source | None:
    """The weights that create_model(arch[.name_tag], pretrained=...) names; None for none."""
    if pretrained is None or pretrained is False or pretrained is True:
        if not name_tag:
            return _shipped(arch, default_tag(arch), "") if pretrained is True else None
        return _shipped(arch, name_tag, f"model name '{arch}.{name_tag}' names no shipped weights")
    if not isinstance(pretrained, (str, os.PathLike)):
        raise ResnetlabError(
            f"pretrained {pretrained!r}: expected True/False, a shipped tag such as "
            "'fashion-mnist', 'name.tag', or a weights file path",
            argument="pretrained",
        )
    text = os.fspath(pretrained)
    path = Path(text)
    if path.suffix in WEIGHT_SUFFIXES or path.is_file() or "/" in text or os.sep in text:
        if name_tag:
            raise ResnetlabError(
                f"model name '{arch}.{name_tag}' names shipped weights and pretrained names the "
                f"file {text}; give one of them",
                argument="pretrained",
            )
        path = weights_file(path)
        return Source(path, shipped_tag(path), text)
    owner, dot, tag = text.partition(".")
    if not dot or not _is_model(owner):
        tag, owner = text, arch
    if owner != arch:
        raise ResnetlabError(
            f"pretrained {text!r} holds weights of {owner}, not {arch}; expected a tag of {arch} "
            f"({_tags_line(arch)})",
            argument="pretrained",
        )
    if name_tag and tag != name_tag:
        raise ResnetlabError(
            f"model name '{arch}.{name_tag}' and pretrained {text!r} name different weights; "
            "give one of them",
            argument="pretrained",
        )
    return _shipped(arch, tag, f"pretrained {text!r} is neither a file nor a tag")


def default_tag(arch: str) -> str:
    """The tag pretrained=True loads: the first of the net's shipped tags, in sorted order."""
    tags = shipped_weights().get(arch)
    if not tags:
        raise ResnetlabError(
            f"pretrained=True: {_tags_line(arch)}; pass a weights file, or pretrained=False",
            argument="pretrained",
        )
    return tags[0]


def _shipped(arch: str, tag: str, problem: str) -> Source:
    path = shipped_path(arch, tag)
    if path is None:
        raise ResnetlabError(f"{problem} ({_tags_line(arch)})", argument="pretrained")
    return Source(path, tag, f"{arch}.{tag}")


def _tags_line(arch: str) -> str:
    shipped = shipped_weights()
    if shipped.get(arch):
        return f"shipped tags for {arch}: {', '.join(shipped[arch])}"
    every = [f"{n}.{t}" for n, tags in sorted(shipped.items()) for t in tags]
    return f"no weights ship for {arch}; shipped: {', '.join(every) or 'none'}"


def _is_model(name: str) -> bool:
    try:
        get_entry(name)
    except ResnetlabError:
        return False
    return True


def adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """A first conv's weight (O, I, kh, kw) adapted to `in_chans` inputs, as timm's
    adapt_input_conv: summed over the I channels for 1; for more, the I channels repeated up to
    in_chans and scaled by I / in_chans (an image of identical channels gives the same response)."""
    if weight.ndim != 4:
        raise ResnetlabError(f"the first conv's weight has shape {tuple(weight.shape)}; not a conv")
    dtype, w = weight.dtype, weight.float()
    orig = w.shape[1]
    if in_chans == orig:
        return weight
    if in_chans == 1:
        w = w.sum(dim=1, keepdim=True)
    else:
        w = w.repeat(1, math.ceil(in_chans / orig), 1, 1)[:, :in_chans] * (orig / in_chans)
    return w.to(dtype)


def file_shapes(
    state: dict[str, torch.Tensor], meta: dict[str, Any]
) -> tuple[int | None, int | None]:
    """(num_classes, in_chans) of a weights file: its metadata's, else its fc and conv1 shapes
    (num_classes 0 without an fc; in_chans None without a conv stem)."""
    fc = state.get(f"{HEAD}weight")
    num_classes = 0 if fc is None else meta.get("num_classes", int(fc.shape[0]))
    in_chans = meta.get("in_chans")
    if in_chans is None and STEM in state and state[STEM].ndim == 4:
        in_chans = int(state[STEM].shape[1])
    return num_classes, in_chans


def adapt_state(
    state: dict[str, torch.Tensor],
    file_classes: int | None,
    file_chans: int | None,
    num_classes: int | None,
    in_chans: int | None,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The file's tensors for a model of `num_classes` (None: a backbone, no head) and `in_chans`:
    the head dropped where the class count differs, the stem adapted where the channels do; and
    one phrase per change."""
    notes = []
    if num_classes is not None and num_classes != file_classes:
        state = {k: v for k, v in state.items() if not k.startswith(HEAD)}
        had = f"the weights have {file_classes}" if file_classes else "the weights have none"
        notes.append(
            f"new head for {num_classes} classes ({had})"
            if num_classes
            else f"no head (num_classes=0; {had}): the model returns pooled features"
        )
    if in_chans is not None and file_chans is not None and in_chans != file_chans and STEM in state:
        state = dict(state)
        state[STEM] = adapt_input_conv(in_chans, state[STEM])
        notes.append(f"{STEM.split('.')[0]} adapted from {file_chans} to {in_chans} input channels")
    return state, notes


def adapted_metadata(
    meta: dict[str, Any], own: dict[str, Any], label: str, in_chans: int | None
) -> dict[str, Any]:
    """The metadata of adapted weights: what still describes the model, the model's own facts
    (num_classes, in_chans, ...), the input size and statistics for its channels, and where the
    weights came from."""
    out = {k: meta[k] for k in KEPT if k in meta}
    out.update(own)
    if out.get("classes") is not None and len(out["classes"]) != own.get("num_classes"):
        out.pop("classes")
    size = out.get("input_size")
    if in_chans is not None and isinstance(size, list) and len(size) == 3:
        out["input_size"] = [in_chans, *size[1:]]
        for key in ("mean", "std"):
            if out.get(key) is not None:
                out[key] = list(per_channel(out[key], in_chans))
    out["pretrained_from"] = label
    return out
