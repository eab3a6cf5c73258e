"""decode_image: every mode and format converts to exact 8-bit values; bad files fail clearly."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab.data.images import decode_image
from resnetlab.errors import ResnetlabError


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


RGB = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "WEBP"])
def test_lossless_rgb_round_trips_exactly(fmt):
    kw = {"lossless": True} if fmt == "WEBP" else {}
    x = decode_image(encode(Image.fromarray(RGB), fmt, **kw), "RGB")
    assert x.dtype == torch.uint8 and x.shape == (3, 2, 2)
    assert torch.equal(x, torch.from_numpy(RGB).permute(2, 0, 1))


def test_jpeg_decodes_close_to_source():
    flat = np.full((16, 16, 3), (200, 100, 50), dtype=np.uint8)
    x = decode_image(encode(Image.fromarray(flat), "JPEG", quality=95), "RGB")
    assert x.shape == (3, 16, 16)
    assert (x.int() - torch.tensor([200, 100, 50]).view(3, 1, 1)).abs().max() <= 3


def test_grey_to_rgb_repeats_channel_and_rgb_to_grey_uses_luma():
    g = np.array([[0, 128], [255, 7]], dtype=np.uint8)
    x = decode_image(encode(Image.fromarray(g), "PNG"), "RGB")
    assert torch.equal(x, torch.from_numpy(g).expand(3, 2, 2))
    y = decode_image(encode(Image.fromarray(RGB), "PNG"), "L")
    r, gg, b = (RGB[..., i].astype(np.int64) for i in range(3))
    luma = (r * 299 + gg * 587 + b * 114 + 500) // 1000
    assert y.shape == (1, 2, 2)
    assert (y[0].long() - torch.from_numpy(luma)).abs().max() <= 1


def test_rgba_composites_on_white():
    a = np.zeros((1, 3, 4), dtype=np.uint8)
    a[0, 0] = (255, 0, 0, 0)  # fully transparent red -> white
    a[0, 1] = (255, 0, 0, 255)  # opaque red stays red
    a[0, 2] = (0, 0, 0, 128)  # half-transparent black -> mid grey
    x = decode_image(encode(Image.fromarray(a, "RGBA"), "PNG"), "RGB")
    assert x[:, 0, 0].tolist() == [255, 255, 255]
    assert x[:, 0, 1].tolist() == [255, 0, 0]
    assert all(abs(v - 127) <= 1 for v in x[:, 0, 2].tolist())


def test_palette_image_expands_through_palette():
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * (256 * 3 - 6))
    p.putpixel((0, 0), 1)
    p.putpixel((1, 0), 0)
    x = decode_image(encode(p, "PNG"), "RGB")
    assert x[:, 0, 0].tolist() == [10, 20, 30] and x[:, 0, 1].tolist() == [0, 0, 0]


def test_palette_with_transparent_index_goes_white():
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 0, 10, 20, 30] + [0] * (256 * 3 - 6))
    p.putpixel((0, 0), 1)
    x = decode_image(encode(p, "PNG", transparency=0), "RGB")
    assert x[:, 0, 0].tolist() == [10, 20, 30] and x[:, 0, 1].tolist() == [255, 255, 255]


def test_sixteen_bit_grey_scales_to_eight_bit():
    a = np.array([[0, 65535], [2570, 32768]], dtype=np.uint16)
    x = decode_image(encode(Image.fromarray(a), "PNG"), "L")
    assert x[0].tolist() == [[0, 255], [10, 128]]


def test_cmyk_jpeg_converts_to_rgb():
    x = decode_image(encode(Image.new("CMYK", (8, 8), (0, 255, 0, 0)), "JPEG", quality=100))
    assert x.shape == (3, 8, 8)
    assert (x[:, 4, 4].int() - torch.tensor([255, 0, 255])).abs().max() <= 3


def test_reads_from_path(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(RGB).save(path)
    assert torch.equal(decode_image(path), torch.from_numpy(RGB).permute(2, 0, 1))


def test_text_file_named_png_fails_naming_path(tmp_path):
    path = tmp_path / "cat.png"
    path.write_text("this is not an image\n")
    with pytest.raises(ResnetlabError, match=r"cat\.png: not a readable image"):
        decode_image(path)


def test_truncated_jpeg_fails(tmp_path):
    data = encode(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "JPEG"
    )
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ResnetlabError, match=r"cut\.jpg: not a readable image"):
        decode_image(path)


def test_missing_file_and_bad_mode_fail(tmp_path):
    with pytest.raises(ResnetlabError, match="no such image file"):
        decode_image(tmp_path / "none.png")
    with pytest.raises(ResnetlabError, match="unknown image mode 'CMYK'"):
        decode_image(encode(Image.fromarray(RGB), "PNG"), "CMYK")


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_decompression_bomb_refused_before_decoding():
    with pytest.raises(ResnetlabError, match="decompression bomb"):
        decode_image(_png_header_only(100_000, 100_000), name="bomb.png")
    with pytest.raises(ResnetlabError, match="exceeds the limit of 100"):
        decode_image(encode(Image.new("L", (20, 20)), "PNG"), max_pixels=100)


def test_a_resize_past_the_pixel_limit_names_what_is_at_fault():
    from resnetlab.data.images import check_resize

    with pytest.raises(ResnetlabError, match="aspect ratio is too extreme, crop it first"):
        check_resize((1, 100_000), (20_000, 2_000_000_000), "thin.png")
    with pytest.raises(ResnetlabError, match="the size to resize to is too large"):
        check_resize((28, 28), (20_000, 20_000), "a.png")  # a square image: the size's fault
    check_resize((28, 28), (224, 224), "a.png")
