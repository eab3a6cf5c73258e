"""Which weights `create_model` loads (timm's way); models/adapt.py adapts them to the model.

`pretrained` is False/None (no weights), True (the net's default shipped tag: the first of its
tags in sorted order), a shipped tag ('fashion-mnist'), 'name.tag', or a file path. A name may
carry the tag itself (`resnet20.fashion-mnist`): as in timm, the tag then decides the net's
configuration (classes, channels, input size, statistics) and `pretrained=True` loads its weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ResnetlabError
from .builder import ModelEntry, Source
from .registry import get_entry
from .weights import WEIGHT_SUFFIXES, shipped_path, shipped_tag, shipped_weights, weights_file


def split_name(name: str) -> tuple[ModelEntry, str | None]:
    """'resnet20.fashion-mnist' -> (resnet20's entry, 'fashion-mnist'); 'resnet20' -> (its entry,
    None). The build's one registry look-up: an unknown model name fails here, before any file
    is read."""
    if not isinstance(name, str):
        raise ResnetlabError(f"model name {name!r} is not a string; e.g. 'resnet20'")
    arch, dot, tag = name.partition(".")
    entry = get_entry(arch)
    if dot and not tag:
        raise ResnetlabError(f"model name {name!r} ends in '.'; expected NAME or NAME.TAG")
    return entry, tag or None


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
    if not dot or (owner != arch and not _is_model(owner)):  # 'fashion-mnist.v2': a tag
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
