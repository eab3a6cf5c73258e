"""load_source: names, detection of every path format, validation splits, and clear failures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.data import make_idx_dir, make_tree, write_cifar10

from resnetlab.data import load_source
from resnetlab.data.prepared import prepare_folder
from resnetlab.data.sources import canonical_name, detect_format, read_source
from resnetlab.errors import ResnetlabError


def test_detects_every_format(tmp_path):
    make_idx_dir(tmp_path / "idx")
    write_cifar10(tmp_path / "cifar")
    make_tree(tmp_path / "tree")
    np.savez(tmp_path / "a.npz", x=np.zeros((10, 4, 4), np.uint8), y=np.arange(10) % 2)
    prepare_folder(tmp_path / "tree", tmp_path / "prep", 4)
    found = {n: detect_format(tmp_path / n) for n in ("idx", "cifar", "tree", "a.npz", "prep")}
    assert found == {
        "idx": "idx",
        "cifar": "cifar10",
        "tree": "folder",
        "a.npz": "npz",
        "prep": "prepared",
    }
    for n in found:
        s = load_source(str(tmp_path / n))
        assert len(s.train) > 0 and len(s.test) > 0
        assert s.train.images.dtype == torch.uint8 and s.train.labels.dtype == torch.int64


def test_names_and_spellings():
    assert canonical_name("Fashion_MNIST") == "fashion-mnist"
    assert canonical_name("CIFAR-10") == "cifar10" and canonical_name("cifar-100") == "cifar100"
    assert canonical_name("imagenet") is None


def test_unknown_name_suggests_close_ones():
    with pytest.raises(ResnetlabError, match="did you mean cifar10, cifar100"):
        load_source("cifar")
    with pytest.raises(ResnetlabError, match="did you mean fashion-mnist"):
        load_source("fashon-mnist")


def test_missing_path_says_so(tmp_path):
    with pytest.raises(ResnetlabError, match="no such file or directory"):
        load_source(str(tmp_path / "gone"))


def test_unrecognised_directory_and_plain_file(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ResnetlabError, match="format not recognised"):
        load_source(str(tmp_path))
    with pytest.raises(ResnetlabError, match="not an .npz"):
        load_source(str(tmp_path / "notes.txt"))


def test_val_split_is_stratified_seeded_and_disjoint(tmp_path):
    make_idx_dir(tmp_path, n_train=40, n_test=10)
    s = load_source(str(tmp_path), val_split=10, seed=1)
    assert (len(s.train), len(s.val), len(s.test)) == (30, 10, 10)
    assert s.val.labels.bincount(minlength=10).tolist() == [1] * 10
    again = load_source(str(tmp_path), val_split=0.25, seed=1)
    assert torch.equal(s.val.images, again.val.images)
    rows = {bytes(r) for r in s.train.images.reshape(30, -1).numpy()}
    assert not rows & {bytes(r) for r in s.val.images.reshape(10, -1).numpy()}


def test_val_split_errors(tmp_path):
    make_idx_dir(tmp_path / "idx")
    with pytest.raises(ResnetlabError, match="val_split of 12 samples must be"):
        load_source(str(tmp_path / "idx"), val_split=12)
    make_tree(tmp_path / "t" / "train")
    make_tree(tmp_path / "t" / "val")
    make_tree(tmp_path / "t" / "test")
    with pytest.raises(ResnetlabError, match="already has a validation split"):
        load_source(str(tmp_path / "t"), val_split=2)


def test_size_applies_to_folders_only(tmp_path):
    make_tree(tmp_path / "tree")
    assert load_source(str(tmp_path / "tree"), size=5).train.image_shape == (3, 5, 5)
    make_idx_dir(tmp_path / "idx")
    with pytest.raises(ResnetlabError, match="size applies to image folders only"):
        load_source(str(tmp_path / "idx"), size=5)
    with pytest.raises(ResnetlabError, match="skip_bad applies to image folders only"):
        load_source(str(tmp_path / "idx"), skip_bad=True)  # nothing to skip: not honoured


def test_skip_bad_reports_through_read_source(tmp_path, caplog):
    make_tree(tmp_path)
    (tmp_path / "cat" / "fake.jpg").write_text("text")
    s, skipped = read_source(str(tmp_path), skip_bad=True)
    assert len(skipped) == 1 and len(s.train) + len(s.test) == 10
    with caplog.at_level("WARNING", logger="resnetlab.data"):
        load_source(str(tmp_path), skip_bad=True)
    assert "skipped 1 unreadable image file" in caplog.text


def test_env_directory_used_for_names(tmp_path, monkeypatch):
    make_idx_dir(tmp_path / "mnist", n_train=20)
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path))
    s = load_source("mnist")
    assert s.name == "mnist" and len(s.train) == 20 and s.train.classes[3] == "3"
