"""Normalisation, in one place: the statistics, the arithmetic and its inverse.

A model sees (x / 255 - mean) / std per channel, with mean and std on the 0..1 scale. The
statistics are the training images' (`compute_mean_std`, exact integer sums over bounded chunks),
or those the weights' metadata records (`weights_mean_std`), or ImageNet's for a 3-channel model
without either (timm's default). The arithmetic is one fused multiply-add on a (scale, shift) pair
(`normaliser`), shaped (C, 1, 1) so that it applies to one image (C, H, W) and to a batch
(B, C, H, W) alike: the training loader, the evaluation batches, the image folders' and streaming
transforms, `predict` and the int8 calibration all call it, so a model is fed the same floats
whichever path the image took. `denormalise` undoes it, for showing an image (Grad-CAM).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..errors import ResnetlabError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # timm's default for a 3-channel model without its own
IMAGENET_STD = (0.229, 0.224, 0.225)
MEAN_STD_CHUNK_BYTES = 64 << 20  # working memory of the mean/std pass, whatever the image size


def compute_mean_std(
    images: torch.Tensor, chunk_bytes: int = MEAN_STD_CHUNK_BYTES
) -> tuple[tuple, tuple]:
    """Per-channel mean and std of uint8 images (N, C, H, W), on the 0..1 scale.

    Sums are exact integers (value and square per channel), taken over chunks of at most
    `chunk_bytes` of working memory, so the result does not depend on the chunking and a folder
    of 224x224 colour images costs 64 MB here, not 8 bytes a pixel."""
    if images.dtype != torch.uint8 or images.ndim != 4 or len(images) == 0:
        raise ResnetlabError(
            f"expected non-empty uint8 (N, C, H, W), got {images.dtype} {images.shape}"
        )
    c = images.shape[1]
    per_image = images[0].numel() * 12  # an int32 copy, and the int64 its sum may make
    chunk = max(1, chunk_bytes // per_image)
    s = torch.zeros(c, dtype=torch.int64)
    ss = torch.zeros(c, dtype=torch.int64)
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].to(torch.int32)
        s += x.sum(dim=(0, 2, 3), dtype=torch.int64)
        ss += x.square_().sum(dim=(0, 2, 3), dtype=torch.int64)  # 255^2 fits an int32
    n = images.numel() // c
    mean, std = [], []
    for total, squares in zip(s.tolist(), ss.tolist()):
        mean.append(total / (255 * n))
        var = (n * squares - total * total) / (255 * n) ** 2  # exact up to the one division
        std.append(math.sqrt(max(var, 1e-12)))
    return tuple(round(v, 6) for v in mean), tuple(round(v, 6) for v in std)


def weights_mean_std(
    meta: dict, images: torch.Tensor, source: str = "weights"
) -> tuple[list[float], list[float]]:
    """The mean and std the weights' metadata gives (a single number stands for every channel of
    `images`), or else, when it gives neither, those of `images` (their training images): what a
    model's input is normalised with. One without the other is refused, as predict refuses it:
    pairing it with the data's own statistics would normalise silently wrong."""
    mean, std = meta.get("mean"), meta.get("std")
    if mean is None and std is None:
        mean, std = compute_mean_std(images)
        return list(mean), list(std)
    if mean is None or std is None:
        given, missing = ("mean", "std") if std is None else ("std", "mean")
        raise ResnetlabError(
            f"{source}: metadata has a {given} but no {missing}; expected both (or neither)"
        )
    channels = images.shape[1] if images.ndim == 4 else 1
    return (
        per_channel(mean, channels, "mean", source),
        per_channel(std, channels, "std", source),
    )


def per_channel(value, channels: int, key: str, source: str = "weights") -> list[float]:
    """A metadata mean or std as one float per channel: a number, or a list of one value, is
    repeated over the channels; a list of another length than 1 or `channels` is refused."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ResnetlabError(
            f"{source}: metadata {key} has {len(values)} values for {channels} channels; "
            f"expected 1 or {channels}"
        )
    return [float(v) for v in values]


def normaliser(
    mean: Sequence[float], std: Sequence[float], device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift), each (C, 1, 1) float32, with x * scale + shift = (x / 255 - mean) / std."""
    c = len(mean)
    m = torch.tensor(mean, dtype=torch.float32)
    s = torch.tensor(std, dtype=torch.float32)
    return (1.0 / (255.0 * s)).view(c, 1, 1).to(device), (-m / s).view(c, 1, 1).to(device)


def apply_normaliser(images: torch.Tensor, norm: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """uint8 (..., C, H, W) -> float32 normalised with `norm` (normaliser's pair), keeping the
    memory format: one multiply-add in place on the float copy."""
    scale, shift = norm
    return images.float().mul_(scale).add_(shift)


def normalise(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (..., C, H, W) -> float32 (x / 255 - mean) / std, per channel."""
    return apply_normaliser(image, normaliser(mean, std, image.device))


def denormalise(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised float (..., C, H, W) -> the image on the 0..1 scale: x * std + mean."""
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return x.float() * s + m
