"""From an image file to the normalised tensor a model was trained on, as its weights describe.

The weights' metadata gives input_size [C, H, W], mean and std (0..1 scale) and optionally
crop_pct. An image is decoded to grey (C = 1) or RGB (C = 3), its shorter side resized to
H / crop_pct (keeping the aspect ratio), centre-cropped to H x W, scaled to 0..1 and normalised.
crop_pct defaults to 0.875 for inputs of 128 px and more (the usual ImageNet evaluation), and 1.0
for small inputs (28x28, 32x32), which are used whole. The resize and crop are
resnetlab.data.transform's and the normalisation resnetlab.data.normalise's, as for image folders
and the streaming loader.

Large JPEGs are decoded at a reduced scale (Pillow's draft mode: 1/2, 1/4 or 1/8 in the decoder),
which is both faster and lighter; images beyond Pillow's decompression-bomb limit are refused.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

from ..data.images import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    check_image_file,
    convert_mode,
    decode_image,
    image_to_tensor,
)
from ..data.normalise import normalise
from ..data.transform import resize_and_crop, resize_box
from ..errors import ResnetlabError


@dataclass(frozen=True)
class Preprocess:
    """How one model wants its input: size, channels, normalisation, crop fraction."""

    input_size: tuple[int, int, int]  # C, H, W
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float

    @property
    def mode(self) -> str:
        return "L" if self.input_size[0] == 1 else "RGB"

    @property
    def resize_size(self) -> tuple[int, int]:
        """The box (H, W) the image is resized to cover before the centre crop."""
        _, h, w = self.input_size
        return resize_box((h, w), self.crop_pct)

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], source: str = "weights") -> Preprocess:
        """Read input_size, mean, std and crop_pct from weights metadata, checking each."""
        size = meta.get("input_size")
        if size is None:
            raise ResnetlabError(
                f"{source}: metadata has no 'input_size'; weights for prediction need "
                "input_size, mean, std (training writes them)"
            )
        if (
            not isinstance(size, (list, tuple))
            or len(size) != 3
            or not all(isinstance(s, int) and s > 0 for s in size)
        ):
            raise ResnetlabError(
                f"{source}: metadata input_size is {size!r}; expected [C, H, W] of positive ints"
            )
        c, h, w = size
        if c not in (1, 3):
            raise ResnetlabError(f"{source}: input_size has {c} channels; images give 1 or 3")
        mean = _per_channel(meta.get("mean"), c, "mean", source)
        std = _per_channel(meta.get("std"), c, "std", source)
        if min(std) <= 0:
            raise ResnetlabError(f"{source}: metadata std {list(std)} must be positive")
        crop_pct = meta.get("crop_pct")
        if crop_pct is None:
            crop_pct = default_crop_pct(h, w)
        if not isinstance(crop_pct, (int, float)) or not 0.0 < crop_pct <= 1.0:
            raise ResnetlabError(f"{source}: metadata crop_pct {crop_pct!r} must lie in (0, 1]")
        bh, bw = resize_box((h, w), crop_pct)
        if bh * bw > MAX_PIXELS:  # every image would be refused, each blamed in turn
            raise ResnetlabError(
                f"{source}: metadata input_size {list(size)} and crop_pct {crop_pct:g} resize "
                f"every image to {bw}x{bh} = {bw * bh} pixels, beyond the limit of {MAX_PIXELS}; "
                "expected the size the model was trained at"
            )
        return cls((c, h, w), mean, std, float(crop_pct))

    def __call__(self, image: torch.Tensor, label: str = "image") -> torch.Tensor:
        """uint8 (C, H, W) of any size -> normalised float32 (C, H, W) of input_size."""
        image = resize_and_crop(image, self.resize_size, self.input_size[1:], label)
        return normalise(image, self.mean, self.std)

    def load(self, path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS) -> torch.Tensor:
        """Decode and preprocess one image file; ResnetlabError (naming the file) if unreadable."""
        return self(load_image(path, self.mode, self.resize_size, max_pixels=max_pixels), str(path))


def default_crop_pct(h: int, w: int) -> float:
    """0.875 for inputs of 128 px and more (resize 256, crop 224); 1.0 (use whole) below."""
    return 0.875 if min(h, w) >= 128 else 1.0


def _per_channel(value, c: int, key: str, source: str) -> tuple[float, ...]:
    if value is None:
        raise ResnetlabError(
            f"{source}: metadata has no {key!r}; weights for prediction need input_size, mean, std"
        )
    if isinstance(value, (int, float)):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, (int, float)) for v in value):
        raise ResnetlabError(f"{source}: metadata {key} {value!r} is not a list of numbers")
    if len(value) == 1:
        value = list(value) * c
    if len(value) != c:
        raise ResnetlabError(f"{source}: metadata {key} has {len(value)} values for {c} channels")
    return tuple(float(v) for v in value)


def load_image(
    path: str | os.PathLike,
    mode: str,
    min_size: tuple[int, int] | None = None,
    *,
    max_pixels: int = MAX_PIXELS,
) -> torch.Tensor:
    """Decode an image file to uint8 (C, H, W); a JPEG much larger than `min_size` (H, W) is
    decoded at a reduced scale that still covers it."""
    path = Path(path)
    check_image_file(path)  # before any open: a FIFO would block, /dev/zero never end
    if min_size is not None and path.suffix.lower() in (".jpg", ".jpeg"):
        reduced = _load_jpeg_draft(path, mode, min_size, max_pixels)
        if reduced is not None:
            return reduced
    return decode_image(path, mode, max_pixels=max_pixels)


def _load_jpeg_draft(
    path: Path, mode: str, min_size: tuple[int, int], max_pixels: int
) -> torch.Tensor | None:
    """Decode a large JPEG at 1/2, 1/4 or 1/8 scale; None when the file needs the ordinary path."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Exception:  # not a JPEG after all, or unreadable: decode_image reports it by its rules
        return None
    with img:
        if img.format != "JPEG" or img.size[0] * img.size[1] > max_pixels:
            return None
        # EXIF rotation may swap the sides; ask for a box that covers both orientations
        need = max(min_size)
        w, h = img.size
        if min(w, h) < 2 * need:
            return None
        try:
            img.draft(mode, (need, need))
            img.load()
            img = ImageOps.exif_transpose(img) or img
            return image_to_tensor(convert_mode(img, mode))
        except Exception:
            return None  # let decode_image give its own message for a corrupt file


def find_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Files as given, and the image files (by suffix, sorted) of each directory, recursively."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            )
            out.extend(found)
        else:
            out.append(p)  # a missing or non-image file is reported when it is read
    return out
