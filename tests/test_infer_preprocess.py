"""Preprocessing from weights metadata, and every kind of awkward or broken image."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab.errors import ResnetlabError
from resnetlab.infer.preprocess import Preprocess, default_crop_pct, load_image, resize_and_crop

GREY = Preprocess((1, 28, 28), (0.5,), (0.25,), 1.0)
RGB = Preprocess((3, 64, 64), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 0.875)


def expected(value: float, prep: Preprocess, c: int = 0) -> float:
    return (value / 255.0 - prep.mean[c]) / prep.std[c]


def test_metadata_gives_size_mean_std_and_default_crop():
    meta = {"input_size": [3, 224, 224], "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}
    prep = Preprocess.from_metadata(meta)
    assert prep.input_size == (3, 224, 224) and prep.mode == "RGB"
    assert prep.crop_pct == 0.875 and prep.resize_size == (256, 256)
    small = Preprocess.from_metadata({"input_size": [1, 28, 28], "mean": [0.3], "std": [0.3]})
    assert small.crop_pct == 1.0 and small.resize_size == (28, 28) and small.mode == "L"
    given = Preprocess.from_metadata({**meta, "crop_pct": 0.95})
    assert given.resize_size == (235, 235)
    assert default_crop_pct(32, 32) == 1.0 and default_crop_pct(128, 128) == 0.875


@pytest.mark.parametrize(
    "meta, message",
    [
        ({}, "no 'input_size'"),
        ({"input_size": [3, 224], "mean": [0.5], "std": [0.5]}, "expected \\[C, H, W\\]"),
        ({"input_size": [2, 8, 8], "mean": [0.5], "std": [0.5]}, "2 channels"),
        ({"input_size": [3, 8, 8], "std": [0.5]}, "no 'mean'"),
        ({"input_size": [3, 8, 8], "mean": [0.5, 0.5], "std": [0.5]}, "2 values for 3 channels"),
        ({"input_size": [1, 8, 8], "mean": [0.5], "std": [0.0]}, "must be positive"),
        ({"input_size": [1, 8, 8], "mean": [0.5], "std": [0.5], "crop_pct": 1.5}, "crop_pct"),
    ],
)
def test_bad_metadata_is_named(meta, message):
    with pytest.raises(ResnetlabError, match=message):
        Preprocess.from_metadata(meta, "w.safetensors")


def test_shorter_side_resize_then_centre_crop():
    # 40 wide, 20 high: black left quarter, grey middle half, white right quarter
    a = np.full((20, 40), 128, np.uint8)
    a[:, :10], a[:, 30:] = 0, 255
    out = resize_and_crop(torch.from_numpy(a)[None], (10, 10), (10, 10))
    assert out.shape == (1, 10, 10)
    # shorter side 20 -> 10, so the width becomes 20 and the centre 10 columns are the grey half
    assert (out[:, :, 1:-1] == 128).all()


def test_one_pixel_image_is_upscaled(tmp_path):
    Image.new("L", (1, 1), 200).save(tmp_path / "one.png")
    x = GREY.load(tmp_path / "one.png")
    assert x.shape == (1, 28, 28)
    assert torch.allclose(x, torch.full_like(x, expected(200, GREY)), atol=1e-6)


def test_rgb_file_for_a_grey_model_and_grey_file_for_an_rgb_model(tmp_path):
    Image.new("RGB", (30, 30), (255, 255, 255)).save(tmp_path / "white.png")
    Image.new("L", (80, 80), 0).save(tmp_path / "black.png")
    assert torch.allclose(GREY.load(tmp_path / "white.png"), torch.tensor(expected(255, GREY)))
    x = RGB.load(tmp_path / "black.png")
    assert x.shape == (3, 64, 64)
    for c in range(3):
        assert torch.allclose(x[c], torch.tensor(expected(0, RGB, c)), atol=1e-6)


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (50, 40), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")  # no ink: white
    x = RGB.load(tmp_path / "cmyk.jpg")
    assert x.shape == (3, 64, 64)
    for c in range(3):
        assert abs(float(x[c].mean()) - expected(255, RGB, c)) < 0.05


def test_sixteen_bit_png(tmp_path):
    a = np.full((30, 30), 65535, np.uint16)
    a[:, :15] = 0
    Image.fromarray(a).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    x = GREY.load(tmp_path / "deep.png")
    assert x.shape == (1, 28, 28)
    assert float(x[0, :, 0].max()) == pytest.approx(expected(0, GREY), abs=1e-6)
    assert float(x[0, :, -1].min()) == pytest.approx(expected(255, GREY), abs=1e-6)


def test_truncated_jpeg_is_named(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buf, "JPEG"
    )
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ResnetlabError, match="cut.jpg"):
        RGB.load(tmp_path / "cut.jpg")


def test_text_file_named_png(tmp_path):
    (tmp_path / "notes.png").write_text("not an image\n")
    with pytest.raises(ResnetlabError, match="notes.png: not a readable image"):
        GREY.load(tmp_path / "notes.png")


def test_missing_file(tmp_path):
    with pytest.raises(ResnetlabError, match="gone.png"):
        GREY.load(tmp_path / "gone.png")


def test_very_large_jpeg_is_decoded_reduced_and_matches_full_decode(tmp_path):
    # 4800 x 3200: dark left half, bright right half, with a gradient to make the crop visible
    w, h = 4800, 3200
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :].repeat(h, 0)
    Image.fromarray(ramp.astype(np.uint8)).convert("RGB").save(tmp_path / "big.jpg", quality=90)
    prep = Preprocess((3, 224, 224), (0.5,) * 3, (0.25,) * 3, 0.875)
    reduced = load_image(tmp_path / "big.jpg", "RGB", prep.resize_size)
    assert max(reduced.shape[1:]) <= w // 4  # the decoder did the shrinking (draft mode)
    assert min(reduced.shape[1:]) >= 256
    fast = prep(reduced)
    full = prep(load_image(tmp_path / "big.jpg", "RGB", None))
    assert fast.shape == full.shape == (3, 224, 224)
    assert float((fast - full).abs().mean()) < 0.02


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [12_000, 40_000])  # past the limit, and past twice the limit
def test_image_beyond_the_decompression_bomb_limit_is_refused(tmp_path, side):
    (tmp_path / "bomb.png").write_bytes(_png_header_only(side, side))
    with pytest.raises(ResnetlabError, match="bomb.png.*(limit|decompression bomb)"):
        GREY.load(tmp_path / "bomb.png")
