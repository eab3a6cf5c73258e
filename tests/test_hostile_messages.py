"""Every error is one line, whatever the input: a newline inside a file name is written escaped."""

from __future__ import annotations

from PIL import Image

from resnetlab.cli import main
from resnetlab.errors import ResnetlabError, one_line
from resnetlab.models.weights import PRETRAINED_DIR

SHIPPED = PRETRAINED_DIR / "resnet20.fashion-mnist.safetensors"


def test_one_line_escapes_control_characters_only():
    assert one_line("a\nb\tc é") == "a\\nb\\tc é"
    assert ResnetlabError("x is\nbad", argument="x").for_command_line() == "--x is\\nbad"


def test_a_missing_weights_file_with_a_newline_in_its_name_is_one_line(tmp_path, capsys):
    code = main(["eval", str(tmp_path / "two\nlines.safetensors"), "--data", "x.npz"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "two\\nlines" in err


def test_predict_names_a_bad_image_with_a_newline_on_one_line(tmp_path, capsys):
    bad = tmp_path / "bad\nname.png"
    bad.write_bytes(b"not a png")
    good = tmp_path / "good.png"
    Image.new("L", (28, 28)).save(good)
    code = main(["predict", str(SHIPPED), str(bad), str(good), "--device", "cpu"])
    cap = capsys.readouterr()
    lines = cap.err.splitlines()
    assert code == 1 and len(lines) == 2  # the bad file, then the count
    assert "bad\\nname.png: not a readable image" in lines[0]
    assert "good.png" in cap.out


import math  # noqa: E402

import pytest  # noqa: E402

from resnetlab import create_model  # noqa: E402


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [("resnet20", {"stem_width": 0}, "stem_width must be a whole number >= 1, got 0"),
     ("resnet50", {"base_width": 0}, "base_width must be a whole number >= 1, got 0"),
     ("resnet50", {"widths": [1, 2, 4, 8], "base_width": 32}, "bottleneck of width 1"),
     ("resnet20", {"layers": [1.5, 1, 1]}, "must be whole numbers >= 1"),
     ("wide_resnet16_8", {"block_drop_rate": math.nan}, "block_drop_rate must lie in"),
     ("residual_mlp", {"drop_rate": math.nan}, "drop_rate must lie in \\[0, 1\\), got nan"),
     ("residual_mlp", {"drop_path_rate": 2.0}, "drop_path_rate must lie in")],
)  # fmt: skip
def test_options_that_build_no_working_net_are_refused(name, options, expected):
    with pytest.raises(ResnetlabError, match=expected):
        create_model(name, **options)


def test_a_degenerate_option_on_the_command_line_is_one_line_without_warnings(
    tmp_path, capsys, recwarn
):
    import numpy as np

    x = np.zeros((8, 8, 8), np.uint8)
    y = np.arange(8) % 2
    np.savez(tmp_path / "x.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    code = main(["train", "--model", "resnet20", "--data", str(tmp_path / "x.npz"), "--option",
                 "stem_width=0", "--out", str(tmp_path / "run"), "--device", "cpu"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "stem_width must be" in err
    assert not [w for w in recwarn if "zero-element" in str(w.message)]


def test_a_fifo_given_as_the_weights_file_is_refused_not_waited_on(tmp_path, capsys):
    import os

    fifo = tmp_path / "w.safetensors"
    os.mkfifo(fifo)
    image = tmp_path / "x.png"
    Image.new("L", (28, 28)).save(image)
    code = main(["predict", str(fifo), str(image), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "is not a regular file" in err and len(err.splitlines()) == 1
