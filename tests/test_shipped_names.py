"""Shipped weights are named anywhere a weights file is accepted: `resnet20.fashion-mnist`."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from resnetlab.cli import main

NAME = "resnet20.fashion-mnist"


@pytest.fixture
def boot(tmp_path):
    path = tmp_path / "boot.png"
    Image.new("L", (28, 28), 200).save(path)
    return path


def test_predict_explain_and_export_take_the_shipped_name(tmp_path, boot, capsys):
    assert main(["predict", NAME, str(boot), "--device", "cpu", "--topk", "1"]) == 0
    assert capsys.readouterr().out.startswith(str(boot))
    assert main(["explain", NAME, str(boot), "--out", str(tmp_path / "cam.png")]) == 0
    assert (tmp_path / "cam.png").read_bytes()[:4] == b"\x89PNG"
    pytest.importorskip("onnx")
    assert main(["export", NAME, "--format", "onnx", "--out", str(tmp_path / "r.onnx")]) == 0
    assert (tmp_path / "r.onnx").stat().st_size > 100_000


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_quantize_takes_the_shipped_name(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "r.int8.onnx"
    argv = ["quantize", NAME, "--images", "32", "--test-images", "0", "--bench-batch", "0",
            "--form", "U8S8", "--out", str(out), "--calib", "fashion-mnist"]  # fmt: skip
    code = main(argv)
    assert code == 0, capsys.readouterr().err
    assert out.is_file()
