"""Decode one image file (JPEG, PNG, WebP, BMP, ...) into a uint8 (C, H, W) tensor with Pillow.

Conversions to the requested mode ("RGB" or "L"):
- grey ("L", "1") and RGB are taken as they are; "L" from colour uses Pillow's ITU-R 601-2 luma;
  "RGB" from grey repeats the grey channel;
- transparency ("RGBA", "LA", "PA", and palette or grey images with a transparent colour) is
  composited onto a white background, so transparent pixels read as white rather than as whatever
  colour the encoder left under them;
- palette ("P") images are expanded through their palette; CMYK and YCbCr go through Pillow's RGB
  conversion;
- 16-bit images ("I;16", "I;16B", "I;16L", and "I", which Pillow uses for 16-bit PNG) are
  scaled from 0..65535 to 0..255 (rounded; values outside that range are clipped); float images
  ("F") are clipped to 0..255, and refused if a pixel is NaN;
- the EXIF orientation tag, when present, is applied, so camera JPEGs come out upright;
- animated files give their first frame.

The whole file is decoded (Image.load), so a truncated file fails here, not later. Images larger
than `max_pixels` (Pillow's own decompression-bomb limit by default) are refused before decoding.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import ResnetlabError

MODES = ("RGB", "L")
MAX_FILE_BYTES = 1 << 30  # 1 GiB: more than a file of MAX_PIXELS 16-bit RGBA pixels, uncompressed
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")  # by name
MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _to_8bit(img: Image.Image) -> Image.Image:
    if img.mode in _SIXTEEN_BIT:
        a = np.asarray(img, dtype=np.float64)
        a = np.clip(np.rint(a * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return Image.fromarray(a, mode="L")
    if img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if np.isnan(a).any():  # no grey level: cast, NaN would read as black (and warn)
            raise ResnetlabError("a float image whose pixels hold NaN; expected finite values")
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
        return Image.fromarray(a, mode="L")
    return img


def _flatten_alpha(img: Image.Image) -> Image.Image:
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode in ("P", "L", "RGB") and "transparency" in img.info
    )
    if not has_alpha:
        return img
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def convert_mode(img: Image.Image, mode: str = "RGB") -> Image.Image:
    """Convert a decoded Pillow image to 8-bit `mode` ("RGB" or "L") by the rules of this module."""
    if mode not in MODES:
        raise ResnetlabError(f"unknown image mode {mode!r}; use one of {', '.join(MODES)}")
    img = _to_8bit(img)
    img = _flatten_alpha(img)
    if img.mode == "1":
        img = img.convert("L")
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")  # P without transparency, CMYK, YCbCr, ...
    if img.mode != mode:
        img = img.convert(mode)
    return img


def check_image_file(path: str | os.PathLike, label: str | None = None) -> None:
    """Refuse, before opening it, a path that is missing, not a regular file (a FIFO would block
    forever, /dev/zero never ends) or larger than MAX_FILE_BYTES."""
    label = label or str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ResnetlabError(f"{label}: no such image file") from None
    except OSError as e:
        raise ResnetlabError(f"{label}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a device, FIFO or socket"
        raise ResnetlabError(f"{label}: not a regular file ({kind}); expected an image file")
    if st.st_size > MAX_FILE_BYTES:
        raise ResnetlabError(
            f"{label}: file of {st.st_size} bytes exceeds the limit of {MAX_FILE_BYTES} bytes "
            "for one image"
        )


EXTREME_ASPECT = 64  # sides further apart than this: the image, not the size, is the fault


def check_resize(
    size: tuple[int, int], new: tuple[int, int], label: str, max_pixels: int = MAX_PIXELS
) -> None:
    """Refuse a resize of (H, W) `size` to (H, W) `new` that would exceed `max_pixels`: an image
    of extreme aspect (1 x 40,000,000) would otherwise grow into gigabytes to cover a small box."""
    (h, w), (nh, nw) = size, new
    if nh * nw > max_pixels:
        why = (  # the image's shape is to blame, or the size asked for (a model's input_size)
            "its aspect ratio is too extreme, crop it first"
            if max(h, w) > EXTREME_ASPECT * min(h, w)
            else "the size to resize to is too large"
        )
        raise ResnetlabError(
            f"{label}: image of {w}x{h} would be resized to {nw}x{nh} = {nw * nh} pixels, beyond "
            f"the limit of {max_pixels}; {why}"
        )


def open_image(
    source: str | os.PathLike | bytes, *, name: str | None = None, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Open and fully decode an image (first frame, EXIF-upright); ResnetlabError if unreadable."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        opener = io.BytesIO(bytes(source))
    else:
        label = name or str(source)
        check_image_file(source, label)
        try:  # read whole: no file handle outlives the call, even for multi-frame images
            opener = io.BytesIO(Path(source).read_bytes())
        except FileNotFoundError:
            raise ResnetlabError(f"{label}: no such image file") from None
        except OSError as e:
            raise ResnetlabError(f"{label}: cannot read ({e.strerror or e})") from None
    try:
        with warnings.catch_warnings():
            # Pillow warns between its limit and twice its limit; the check below decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(opener)
        w, h = img.size
        if w * h > max_pixels:
            img.close()
            raise ResnetlabError(
                f"{label}: image of {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} "
                "(a possible decompression bomb); resize it or raise max_pixels"
            )
        img.load()
        if img.mode == "F" and np.isnan(np.asarray(img)).any():
            raise ResnetlabError(f"{label}: not a readable image (its float pixels hold NaN)")
        upright = ImageOps.exif_transpose(img)
        if upright is not None and upright is not img:
            img = upright
        return img
    except ResnetlabError:
        raise
    except Image.DecompressionBombError as e:
        raise ResnetlabError(
            f"{label}: image too large, refused as a possible decompression bomb ({e})"
        ) from None
    except Image.UnidentifiedImageError:
        raise ResnetlabError(f"{label}: not a readable image (unknown or corrupt format)") from None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ResnetlabError(f"{label}: not a readable image ({reason})") from None


def decode_image(
    source: str | os.PathLike | bytes,
    mode: str = "RGB",
    *,
    name: str | None = None,
    max_pixels: int = MAX_PIXELS,
) -> torch.Tensor:
    """Decode an image file or bytes into uint8 (C, H, W): C = 3 for "RGB", 1 for "L"."""
    if mode not in MODES:
        raise ResnetlabError(f"unknown image mode {mode!r}; use one of {', '.join(MODES)}")
    img = open_image(source, name=name, max_pixels=max_pixels)
    try:
        img = convert_mode(img, mode)
    except ResnetlabError:
        raise
    except Exception as e:
        label = name or ("<bytes>" if isinstance(source, (bytes, bytearray)) else str(source))
        raise ResnetlabError(
            f"{label}: not a readable image (cannot convert mode {img.mode} to {mode}: {e})"
        ) from None
    return image_to_tensor(img)


def image_to_tensor(img: Image.Image) -> torch.Tensor:
    """An 8-bit "L" or "RGB" Pillow image as uint8 (C, H, W)."""
    a = np.asarray(img, dtype=np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(a.transpose(2, 0, 1).copy())
