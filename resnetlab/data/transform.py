"""The one image transform: resize to cover a box (keeping the aspect), then centre-crop.

Image folders bring every image to the tree's size (box = crop), the streaming loader's evaluation
view resizes the shorter side to 256 and takes the centre 224, and inference resizes the shorter
side to H / crop_pct and takes the centre H x W: the same two steps with other sizes. Resizing is
bilinear and antialiased (Pillow's); sizes are (H, W). What follows, normalising, is
data/normalise.py's.
"""

from __future__ import annotations

import math

import torch
from PIL import Image

from ..errors import ResnetlabError
from .images import check_resize, image_to_tensor


def resize_box(size: tuple[int, int], crop_pct: float) -> tuple[int, int]:
    """The (H, W) box an image is resized to cover before its centre crop of `size` (H, W):
    size / crop_pct, as prediction and create_transform resize."""
    h, w = size
    return math.floor(h / crop_pct + 1e-6), math.floor(w / crop_pct + 1e-6)


def cover_size(
    size: tuple[int, int], box: tuple[int, int], crop: tuple[int, int] = (1, 1)
) -> tuple[int, int]:
    """The (H, W) that an image of (H, W) `size`, resized keeping its aspect, takes to cover
    `box` (and at least `crop`)."""
    (h, w), (bh, bw) = size, box
    scale = max(bh / h, bw / w)
    return max(crop[0], round(h * scale)), max(crop[1], round(w * scale))


def resize_to_cover(
    img: Image.Image, box: tuple[int, int], label: str = "image", crop: tuple[int, int] = (1, 1)
) -> Image.Image:
    """Resize, keeping the aspect, until the image covers `box` (H, W) and at least `crop`."""
    w, h = img.size
    nh, nw = cover_size((h, w), box, crop)
    if (nh, nw) == (h, w):
        return img
    check_resize((h, w), (nh, nw), label)
    return img.resize((nw, nh), Image.Resampling.BILINEAR)


def center_crop(img: Image.Image, crop: int | tuple[int, int]) -> Image.Image:
    """The central crop (H, W) (an image smaller than that is padded with black first)."""
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    w, h = img.size
    if w < cw or h < ch:
        canvas = Image.new(img.mode, (max(w, cw), max(h, ch)))
        canvas.paste(img, ((max(w, cw) - w) // 2, (max(h, ch) - h) // 2))
        img, (w, h) = canvas, canvas.size
    if (h, w) == (ch, cw):
        return img
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch))


def resize_and_crop(
    image: Image.Image | torch.Tensor,
    box: tuple[int, int],
    crop: tuple[int, int],
    label: str = "image",
) -> Image.Image | torch.Tensor:
    """Resize (keeping the aspect) to cover `box` and at least `crop`, then centre-crop to `crop`.

    Takes a Pillow image, or a uint8 (C, H, W) tensor and gives one back."""
    if isinstance(image, torch.Tensor):
        return image_to_tensor(resize_and_crop(tensor_to_image(image), box, crop, label))
    return center_crop(resize_to_cover(image, box, label, crop), crop)


def tensor_to_image(image: torch.Tensor) -> Image.Image:
    """uint8 (1 or 3, H, W) as a Pillow "L" or "RGB" image."""
    if image.ndim != 3 or image.dtype != torch.uint8 or image.shape[0] not in (1, 3):
        raise ResnetlabError(
            f"expected a uint8 (C, H, W) image of 1 or 3 channels, got {image.dtype} "
            f"{tuple(image.shape)}"
        )
    a = image.permute(1, 2, 0).contiguous().numpy()
    return Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)  # uint8: "L" or "RGB"
