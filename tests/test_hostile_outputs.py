"""An output never lands in, on, or around an input: a run's files must not become training images,
and a clean-up must not delete what it read."""

from __future__ import annotations

import pytest
from helpers.data import make_tree

from resnetlab import ResnetlabError
from resnetlab.cli import main
from resnetlab.files import check_apart
from resnetlab.models.weights import PRETRAINED_DIR

SHIPPED = PRETRAINED_DIR / "resnet20.fashion-mnist.safetensors"


def test_check_apart_refuses_equal_inside_and_containing(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    for out, problem in ((photos, "is the input"), (photos / "shirt", "lies inside the input"),
                         (tmp_path, "contains the input")):  # fmt: skip
        with pytest.raises(ResnetlabError, match=problem):
            check_apart(out, (photos,))
    check_apart(tmp_path, (weights,))  # a folder holding an input file: its files are apart
    check_apart(tmp_path / "runs", (photos, weights, "fashion-mnist", None))  # apart: fine


def test_a_link_to_the_input_is_the_input(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (tmp_path / "alias").symlink_to(photos)
    with pytest.raises(ResnetlabError, match="lies inside the input"):
        check_apart(tmp_path / "alias" / "run", (photos,))


@pytest.mark.parametrize(
    "argv",
    [["data", "prepare", "{tree}", "{tree}/cache", "--size", "4"],
     ["eval", str(SHIPPED), "--data", "{tree}", "--confusion", "{tree}/cat/cm.png"],
     ["quantize", str(SHIPPED), "--calib", "{tree}", "--out", "{tree}/cat/q.onnx"],
     ["experiment", "degradation", "--data", "{tree}", "--out", "{tree}/study", "--depths", "8"],
     ["experiment", "lesion", str(SHIPPED), "--data", "{tree}", "--out", "{tree}"],
     ["train", "--model", "resnet20", "--data", "{tree}", "--out", "{tree}", "--device", "cpu"],
     ["train", "--model", "resnet20", "--data", "{tree}", "--out", "{tree}/cat",
      "--device", "cpu"]],
)  # fmt: skip
def test_commands_refuse_an_output_inside_their_data(tmp_path, capsys, argv):
    tree = make_tree(tmp_path / "photos", per_class=4, size=(8, 8))
    before = sorted(p.relative_to(tree) for p in tree.rglob("*"))
    code = main([a.replace("{tree}", str(tree)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "the input" in err and "apart from the inputs" in err
    assert sorted(p.relative_to(tree) for p in tree.rglob("*")) == before  # nothing written


@pytest.mark.parametrize(
    "argv",
    [["train", "--model", "resnet8", "--data", "fashion-mnist", "--out", "{root}/fashion-mnist",
      "--device", "cpu", "--threads", "1"],
     ["train", "--model", "resnet8", "--data", "Fashion_MNIST", "--out", "{root}/fashion-mnist/r",
      "--device", "cpu", "--threads", "1"],
     ["eval", str(SHIPPED), "--data", "fashion-mnist", "--confusion",
      "{root}/fashion-mnist/cm.png"],
     ["experiment", "degradation", "--data", "fashion-mnist", "--out", "{root}/fashion-mnist/s",
      "--depths", "8"],
     ["experiment", "gradients", "--data", "cifar10", "--out", "{root}/cifar10/g", "--depths",
      "8"]],
)  # fmt: skip
def test_a_data_set_given_by_name_is_an_input_where_it_lives(tmp_path, capsys, monkeypatch, argv):
    root = tmp_path / "root"
    for name in ("fashion-mnist", "cifar10"):
        (root / name).mkdir(parents=True)
        (root / name / "keep").write_text("mine")
    monkeypatch.setenv("RESNETLAB_DATA", str(root))
    code = main([a.replace("{root}", str(root)) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "the input" in err and "apart from the inputs" in err, err
    assert sorted(p.name for p in root.rglob("*")) == ["cifar10", "fashion-mnist", "keep", "keep"]
