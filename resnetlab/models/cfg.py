"""`model.pretrained_cfg`: what a model expects of its input and gives out, as timm describes it.

Every model that create_model or load_model returns carries one dict: input_size (C, H, W), or
(features,) for an MLP without weights, mean and std (0..1 scale, one per channel),
interpolation, crop_pct, num_classes, classes, tag, and timm's architecture, first_conv and
classifier. With weights it comes from their metadata; without, from the layout's defaults: the
CIFAR layout (3x3 stem) takes 3x32x32 images normalised with CIFAR-10's statistics and uses them
whole (crop_pct 1.0), the ImageNet layout 3x224x224 with ImageNet's, centre-cropped from 256
(crop_pct 0.875). Another in_chans adapts the statistics (a grey net's single value repeated for
RGB; RGB averaged for grey).
`resnetlab.data.resolve_data_config` and `create_transform` read it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10 training set
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATION = "bilinear"  # Pillow's antialiased bilinear resize: resnetlab.data.transform


def default_crop_pct(h: int, w: int) -> float:
    """0.875 for inputs of 128 px and more (resize 256, crop 224); 1.0 (use whole) below."""
    return 0.875 if min(h, w) >= 128 else 1.0


def per_channel(values: float | Sequence[float], c: int) -> tuple[float, ...]:
    """Per-channel statistics for `c` channels: as given, one value repeated, several averaged
    into one, or cycled (the channel order adapt_input_conv repeats the stem's weights in)."""
    v = (float(values),) if isinstance(values, (int, float)) else tuple(float(x) for x in values)
    if len(v) == c:
        return v
    if len(v) == 1:
        return v * c
    if c == 1:
        return (sum(v) / len(v),)
    return tuple(v[i % len(v)] for i in range(c))


def default_cfg(
    name: str, layout: str, *, in_chans: int | None, num_classes: int, in_features: int = 0
) -> dict[str, Any]:
    """The cfg of a model without weights: `layout` 'cifar' (small stem), 'imagenet' or 'mlp'."""
    if layout == "mlp":
        size, mean, std, crop = (in_features,), None, None, 1.0
    elif layout == "cifar":
        size, mean, std, crop = (in_chans, 32, 32), CIFAR_MEAN, CIFAR_STD, 1.0
    else:
        size, mean, std, crop = (in_chans, 224, 224), IMAGENET_MEAN, IMAGENET_STD, 0.875
    if mean is not None:
        mean, std = per_channel(mean, in_chans), per_channel(std, in_chans)
    return _cfg(name, layout, size, mean, std, crop, num_classes, None, None, None)


def cfg_from_metadata(
    base: dict[str, Any], meta: dict[str, Any], *, tag: str | None = None, file: str | None = None
) -> dict[str, Any]:
    """The cfg of a model whose weights carry `meta`, over `base` (the model's own default cfg):
    the metadata's input size, statistics, crop and class names, for the model's channels and
    head; what the metadata lacks stays the default."""
    own = base["input_size"]
    size = tuple(meta.get("input_size") or own)
    if len(own) == 3:  # a conv net: its channels are its own, whatever the file said
        size = (own[0], *size[1:]) if len(size) == 3 else own
    c = size[0] if len(size) == 3 else 1
    mean, std = meta.get("mean"), meta.get("std")
    if mean is None or std is None:
        mean, std = base["mean"], base["std"]  # None for an MLP: no statistics to guess
    crop = meta.get("crop_pct")
    if crop is None:
        crop = default_crop_pct(*size[1:]) if len(size) == 3 else base["crop_pct"]
    classes = meta.get("classes")
    if classes is not None and len(classes) != base["num_classes"]:
        classes = None
    return dict(
        base,
        tag=tag,
        file=file,
        input_size=size,
        interpolation=meta.get("interpolation") or base["interpolation"],
        crop_pct=float(crop),
        mean=None if mean is None else per_channel(mean, c),
        std=None if std is None else per_channel(std, c),
        classes=None if classes is None else list(classes),
    )


def _cfg(name, layout, size, mean, std, crop, num_classes, classes, tag, file) -> dict[str, Any]:
    return {
        "architecture": name,
        "tag": tag,
        "file": file,
        "input_size": tuple(size),
        "interpolation": INTERPOLATION,
        "crop_pct": float(crop),
        "crop_mode": "center",
        "mean": None if mean is None else tuple(mean),
        "std": None if std is None else tuple(std),
        "num_classes": num_classes,
        "classes": None if classes is None else list(classes),
        "first_conv": "stem.0" if layout == "mlp" else "conv1",
        "classifier": "fc",
    }
