"""timm's data config and transform, on resnetlab's own image pipeline.

`resolve_data_config(model)` reads what a model expects of its input from its `pretrained_cfg`
(input_size, interpolation, mean, std, crop_pct, crop_mode), with keyword overrides on top, as
timm's does (`resolve_data_config({}, model=model)` works too). `create_transform(cfg)` turns that
into a callable from a Pillow image, an image file or a uint8 (C, H, W) tensor to the normalised
float32 (C, H, W) tensor the model takes: the evaluation view is resnetlab.data.transform's resize
(shorter side to H / crop_pct, bilinear, antialiased) and centre crop, then data/normalise.py's
normalisation, the steps `resnetlab predict` takes; `is_training=True` gives the streaming
loader's augmentation (random-resized crop and flip, data/augment.py) before the same
normalisation.

Images are decoded to grey for a 1-channel input and to RGB for 3; other channel counts have no
image transform. One resize is implemented (Pillow's bilinear): other interpolations are refused.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image

from ..errors import ResnetlabError
from .augment import train_transform
from .images import convert_mode, decode_image, image_to_tensor
from .normalise import IMAGENET_MEAN, IMAGENET_STD, normalise
from .transform import resize_and_crop, resize_box, tensor_to_image

KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def resolve_data_config(
    model_or_cfg: Any = None,
    *,
    model: Any = None,
    pretrained_cfg: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """What a model expects of its input (its pretrained_cfg, or a cfg dict), with `overrides`
    (input_size or img_size, mean, std, crop_pct, interpolation, crop_mode) on top."""
    if model is not None or pretrained_cfg is not None:
        if isinstance(model_or_cfg, Mapping):  # timm's resolve_data_config(args, model=model)
            overrides = {**{k: v for k, v in model_or_cfg.items() if v is not None}, **overrides}
        elif model_or_cfg is not None:
            raise ResnetlabError("give the model (or cfg) once: positionally or as model=")
        model_or_cfg = model if model is not None else pretrained_cfg
    if model_or_cfg is None:
        raise ResnetlabError(
            "resolve_data_config needs a model built by resnetlab.create_model or a cfg dict"
        )
    base = _cfg_of(model_or_cfg)
    if "img_size" in overrides:
        overrides.setdefault("input_size", overrides.pop("img_size"))
    unknown = sorted(set(overrides) - set(KEYS))
    if unknown:
        raise ResnetlabError(f"unknown data config key(s) {unknown}; known: {', '.join(KEYS)}")
    cfg = {k: base.get(k) for k in KEYS}
    cfg.update(overrides)
    return _checked(cfg, base.get("input_size"))


def resolve_model_data_config(model: Any, **overrides: Any) -> dict[str, Any]:
    """timm's name for resolve_data_config(model, **overrides)."""
    return resolve_data_config(model, **overrides)


def _cfg_of(source: Any) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    cfg = getattr(source, "pretrained_cfg", None)
    if not isinstance(cfg, Mapping):
        raise ResnetlabError(
            f"a {type(source).__name__} without pretrained_cfg: build the model with "
            "resnetlab.create_model / load_model, or pass a cfg dict (input_size, mean, std)"
        )
    return cfg


def _checked(cfg: dict[str, Any], own_size: Any) -> dict[str, Any]:
    """The config with input_size (C, H, W), per-channel mean and std, crop_pct, each checked."""
    size = cfg["input_size"]
    if isinstance(size, int) and not isinstance(size, bool):  # H for square images
        c = own_size[0] if isinstance(own_size, Sequence) and len(own_size) == 3 else 3
        size = (c, size, size)
    if (
        not isinstance(size, Sequence)
        or len(size) not in (1, 3)
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    ):
        raise ResnetlabError(
            f"input_size {size!r}: expected (C, H, W) of positive whole numbers, or H",
            argument="input_size",
        )
    size = tuple(size)
    c = size[0] if len(size) == 3 else 1
    if cfg["mean"] is None and cfg["std"] is None and c == 3 and len(size) == 3:
        cfg["mean"], cfg["std"] = IMAGENET_MEAN, IMAGENET_STD  # timm's default
    for key in ("mean", "std"):
        if cfg[key] is not None:
            cfg[key] = _per_channel(cfg[key], c, key)
    if cfg["std"] is not None and min(cfg["std"]) <= 0:
        raise ResnetlabError(f"std {list(cfg['std'])} must be positive", argument="std")
    crop = cfg["crop_pct"]
    if crop is None:
        crop = 0.875 if len(size) == 3 and min(size[1:]) >= 128 else 1.0  # small images: whole
    if isinstance(crop, bool) or not isinstance(crop, (int, float)) or not 0 < crop <= 1:
        raise ResnetlabError(f"crop_pct {crop!r} must lie in (0, 1]", argument="crop_pct")
    interpolation = cfg["interpolation"] or "bilinear"
    if interpolation != "bilinear":
        raise ResnetlabError(
            f"interpolation {interpolation!r}: resnetlab resizes with Pillow's antialiased "
            "bilinear filter only; use 'bilinear'",
            argument="interpolation",
        )
    crop_mode = cfg["crop_mode"] or "center"
    if crop_mode != "center":
        raise ResnetlabError(
            f"crop_mode {crop_mode!r}: resnetlab crops at the centre; use 'center'",
            argument="crop_mode",
        )
    return dict(
        cfg, input_size=size, crop_pct=float(crop), interpolation=interpolation, crop_mode=crop_mode
    )


def _per_channel(value: Any, c: int, key: str) -> tuple[float, ...]:
    values = [value] if isinstance(value, (int, float)) else value
    if (
        not isinstance(values, Sequence)
        or isinstance(values, str)
        or not values
        or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
    ):
        raise ResnetlabError(f"{key} {value!r}: expected a number or one per channel", argument=key)
    if len(values) == 1:
        values = list(values) * c
    if len(values) != c:
        raise ResnetlabError(
            f"{key} has {len(values)} values for {c} channels; expected 1 or {c}", argument=key
        )
    return tuple(float(v) for v in values)


class ImageTransform:
    """A Pillow image, an image file or a uint8 (C, H, W) tensor -> normalised float32 (C, H, W)
    of input_size: resize and centre crop (evaluation), or random-resized crop and flip
    (training, a seeded generator drawing anew at every call), then (x / 255 - mean) / std."""

    def __init__(
        self,
        input_size: tuple[int, int, int],
        mean: Sequence[float],
        std: Sequence[float],
        crop_pct: float,
        *,
        is_training: bool = False,
        seed: int = 0,
    ) -> None:
        self.input_size, self.mean, self.std = tuple(input_size), tuple(mean), tuple(std)
        self.crop_pct, self.is_training = crop_pct, is_training
        self.mode = "L" if self.input_size[0] == 1 else "RGB"
        _, h, w = self.input_size
        # the box the shorter side is resized to cover before the centre crop (predict's rule)
        self.resize_size = resize_box((h, w), crop_pct)
        self.generator = torch.Generator().manual_seed(seed) if is_training else None

    def __call__(self, image: Image.Image | str | os.PathLike | torch.Tensor) -> torch.Tensor:
        label = "image"
        if isinstance(image, (str, os.PathLike)):
            label = str(image)
            image = decode_image(image, self.mode)
        elif isinstance(image, Image.Image):
            image = image_to_tensor(convert_mode(image, self.mode))
        elif not (isinstance(image, torch.Tensor) and image.dtype == torch.uint8):
            raise ResnetlabError(
                f"expected a Pillow image, an image path or a uint8 (C, H, W) tensor, got "
                f"{type(image).__name__}"
            )
        if image.ndim != 3 or image.shape[0] != self.input_size[0]:
            raise ResnetlabError(
                f"{label} has shape {tuple(image.shape)}; this transform takes "
                f"{self.input_size[0]}-channel (C, H, W) images"
            )
        if 0 in image.shape[1:]:
            raise ResnetlabError(f"{label} of {image.shape[2]}x{image.shape[1]} has no pixels")
        if self.is_training:
            img = train_transform(tensor_to_image(image), self.generator, self.input_size[1])
            image = image_to_tensor(img)
        else:
            image = resize_and_crop(image, self.resize_size, self.input_size[1:], label)
        return normalise(image, self.mean, self.std)

    def __repr__(self) -> str:
        view = "random-resized crop + flip" if self.is_training else f"resize {self.resize_size}"
        return (
            f"ImageTransform(input_size={self.input_size}, {view}, crop_pct={self.crop_pct}, "
            f"mean={self.mean}, std={self.std})"
        )


def create_transform(
    cfg: Any = None, is_training: bool = False, *, seed: int = 0, **cfg_keys: Any
) -> ImageTransform:
    """The image transform of a data config (resolve_data_config's; a model; or input_size and
    the other keys as keywords, as timm's create_transform(**config)): evaluation view by
    default, the training augmentation with is_training=True."""
    if isinstance(cfg, (int, Sequence)) and not isinstance(cfg, (str, Mapping)):
        cfg_keys = {"input_size": cfg, **cfg_keys}  # timm's create_transform(input_size, ...)
        cfg = None
    cfg_keys.pop("is_training", None)
    base = {k: None for k in KEYS} if cfg is None else _cfg_of(cfg)
    if cfg is None and cfg_keys.get("input_size", cfg_keys.get("img_size")) is None:
        raise ResnetlabError("create_transform needs a data config, a model, or input_size")
    data = resolve_data_config(dict(base), **cfg_keys)
    size = data["input_size"]
    if len(size) != 3 or size[0] not in (1, 3):
        raise ResnetlabError(
            f"input_size {size}: images give 1 (grey) or 3 (RGB) channels of (C, H, W); "
            "this model takes no image transform",
            argument="input_size",
        )
    if data["mean"] is None or data["std"] is None:
        raise ResnetlabError(
            "the config has no mean and std (weights trained elsewhere, or an MLP without "
            "weights); pass mean= and std=",
            argument="mean",
        )
    if is_training and size[1] != size[2]:
        raise ResnetlabError(
            f"input_size {size}: the training augmentation crops squares; use H = W",
            argument="input_size",
        )
    return ImageTransform(
        size, data["mean"], data["std"], data["crop_pct"], is_training=is_training, seed=seed
    )
