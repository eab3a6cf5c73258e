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
