"""Augmentation, in one place: the random draws and the maths that applies them.

Batch augmentations (airbench's, on uint8 or normalised tensors): a random translation (zero-pad
by `pad`, crop the original size back) with a horizontal mirror, and random erasing (Zhong et al.:
one box zeroed in a normalised image). Each comes in two halves: `draw_*` takes the random numbers
on the host from a torch generator, and `apply_*` is pure tensor maths on whatever device the images
live on. The training loader draws a whole epoch's numbers at once from (seed, epoch) and applies
them batch by batch where the images are, so the CPU and a GPU train on the same augmented images
and a run resumed mid-epoch sees the same batches. `crop_flip` and `random_erase` draw and apply
in one call, for a batch of your own.

Per-image augmentation of the decode-on-the-fly path (ImageNet's, on Pillow images): a
random-resized crop (area 8%..100%, aspect 3/4..4/3, Szegedy et al. and the torchvision recipe) and
a flip, drawn from a generator seeded per sample.

Every generator comes from `seeded_generator(seed, epoch, ...)`: the draws depend on each integer of
the key and on nothing else (not the number of workers, threads or ranks).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

ERASE_AREA = (0.02, 0.33)  # random erasing's box: this fraction of the image...
ERASE_RATIO = (0.3, 3.3)  # ...with an aspect (height / width) in this range, log-uniform


def seeded_generator(*key: int) -> torch.Generator:
    """A torch generator whose draws depend on every integer of `key` (seed, epoch, batch, ...)."""
    seed = int(np.random.SeedSequence([k & 0xFFFFFFFF for k in key]).generate_state(1)[0])
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# batch augmentations: translate and mirror, erase


def draw_crop_flip(
    b: int, pad: int, flip: bool, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The random part of crop_flip for `b` images: row and column offsets, and the mirror flags."""
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    mirror = torch.rand(b, generator=gen) < 0.5 if flip else None
    return dy, dx, mirror


def apply_crop_flip(
    x: torch.Tensor, pad: int, dy: torch.Tensor, dx: torch.Tensor, mirror: torch.Tensor | None
) -> torch.Tensor:
    """Pad by `pad` zeros, crop the original size at offsets (dy, dx), mirror where `mirror`.

    One gather over the flattened padded batch does both, so the cost is one pass over the pixels;
    every tensor lives on x's device, so a batch on the GPU never visits the host."""
    b, c, h, w = x.shape
    hp, wp = h + 2 * pad, w + 2 * pad
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad)) if pad else x
    cols = torch.arange(w, device=x.device).expand(b, w)
    if mirror is not None:
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :]) * wp  # (B, H)
    cols = dx[:, None] + cols  # (B, W)
    flat = (rows[:, :, None] + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, hp * wp).gather(2, flat).view(b, c, h, w)


def crop_flip(x: torch.Tensor, pad: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Per sample: pad by `pad` zeros, crop the original size at random, mirror with p=1/2."""
    return apply_crop_flip(x, pad, *draw_crop_flip(len(x), pad, flip, gen))


def draw_erase(
    b: int,
    size: tuple[int, int],
    p: float,
    gen: torch.Generator,
    area: tuple[float, float] = ERASE_AREA,
    ratio: tuple[float, float] = ERASE_RATIO,
) -> torch.Tensor:
    """The random part of random_erase for `b` images of `size` (H, W): one box per image as
    rows (y0, x0, height, width), height 0 where the image is left alone."""
    h, w = size
    apply = torch.rand(b, generator=gen) < p
    a = torch.empty(b).uniform_(*area, generator=gen) * h * w
    log_r = torch.empty(b).uniform_(float(np.log(ratio[0])), float(np.log(ratio[1])), generator=gen)
    r = log_r.exp()
    eh = (a * r).sqrt().round().clamp(1, h).long()
    ew = (a / r).sqrt().round().clamp(1, w).long()
    y0 = (torch.rand(b, generator=gen) * (h - eh + 1)).long()
    x0 = (torch.rand(b, generator=gen) * (w - ew + 1)).long()
    return torch.stack([y0, x0, eh * apply, ew], 1)


def apply_erase(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Zero one box (y0, x0, height, width) per image; boxes live on x's device."""
    _, _, h, w = x.shape
    y0, x0, eh, ew = boxes.unbind(1)
    ys = torch.arange(h, device=x.device)[None, :]
    xs = torch.arange(w, device=x.device)[None, :]
    in_y = (ys >= y0[:, None]) & (ys < (y0 + eh)[:, None])
    in_x = (xs >= x0[:, None]) & (xs < (x0 + ew)[:, None])
    mask = in_y[:, :, None] & in_x[:, None, :]
    return x.masked_fill(mask[:, None], 0.0)


def random_erase(
    x: torch.Tensor,
    p: float,
    gen: torch.Generator,
    area: tuple[float, float] = ERASE_AREA,
    ratio: tuple[float, float] = ERASE_RATIO,
) -> torch.Tensor:
    """Random erasing (Zhong et al.): with probability p, zero one box of a normalised image."""
    return apply_erase(x, draw_erase(len(x), x.shape[2:], p, gen, area, ratio))


# --------------------------------------------------------------------------------------------
# per-image augmentation of the decode-on-the-fly path (Pillow)


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def random_resized_crop(
    img: Image.Image,
    size: int,
    gen: torch.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Image.Image:
    """A random crop of random area and aspect, resized to size x size (bilinear)."""
    width, height = img.size
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(gen, *scale)
        aspect = math.exp(_uniform(gen, *log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=gen))
            left = int(torch.randint(0, width - w + 1, (), generator=gen))
            break
    else:  # fall back to a centre crop of the whole image, aspect clamped to `ratio`
        in_ratio = width / height
        if in_ratio < ratio[0]:
            w, h = width, round(width / ratio[0])
        elif in_ratio > ratio[1]:
            w, h = round(height * ratio[1]), height
        else:
            w, h = width, height
        top, left = (height - h) // 2, (width - w) // 2
    return img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))


def train_transform(
    img: Image.Image, gen: torch.Generator, size: int = 224, flip: bool = True
) -> Image.Image:
    """Random-resized crop to size x size, then a random horizontal flip."""
    img = random_resized_crop(img, size, gen)
    if flip and float(torch.rand((), generator=gen)) < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img
