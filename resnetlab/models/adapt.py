"""How weights are adapted to the model asked for, as timm's load_pretrained adapts them.

Another num_classes than the weights' gives a fresh head (0: none) and loads the rest strictly;
another in_chans adapts the stem's first conv with `adapt_input_conv` (summed over the channels for
1, repeated and rescaled for more), so that the 1-channel Fashion-MNIST weights start an RGB model
that answers a grey RGB image exactly as the original answers the grey image. The metadata and
pretrained_cfg then describe the adapted model. Which weights are meant: models/pretrained.py.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..errors import ResnetlabError
from .cfg import per_channel

HEAD = "fc."
STEM = "conv1.weight"
# what adapted weights keep of their file's metadata: what still describes the model (results
# such as test_top1_err described the model before adaptation, and are dropped)
KEPT = (
    "format_version", "name", "options", "input_size", "mean", "std", "crop_pct",
    "interpolation", "tta", "classes", "features_only", "out_indices",
)  # fmt: skip


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
