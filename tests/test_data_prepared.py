"""`data prepare`: decode once into a memory-mapped cache that reads back exactly, atomically."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.data import make_tree

from resnetlab.data.folders import read_image_folder
from resnetlab.data.prepared import IMAGES_NAME, META_NAME, load_prepared, prepare_folder
from resnetlab.errors import ResnetlabError


def test_prepared_cache_matches_in_memory_read(tmp_path):
    make_tree(tmp_path / "tree", per_class=6)
    meta = prepare_folder(tmp_path / "tree", tmp_path / "out", 5, seed=2)
    assert meta["shape"] == [12, 3, 5, 5] and meta["classes"] == ["cat", "dog"]
    p = load_prepared(tmp_path / "out")
    ref, _ = read_image_folder(tmp_path / "tree", size=5, seed=2)
    assert torch.equal(p.train.images, ref.train.images)
    assert torch.equal(p.test.labels, ref.test.labels)
    on_disk = json.loads((tmp_path / "out" / META_NAME).read_text())
    assert on_disk["splits"] == {"train": [0, 10], "test": [10, 12]}
    assert len(on_disk["labels"]) == 12
    arr = np.load(tmp_path / "out" / IMAGES_NAME, mmap_mode="r")
    assert arr.dtype == np.uint8 and arr.shape == (12, 3, 5, 5)


def _mapped(path) -> bool:
    """Whether this process maps `path` into its memory (Linux: /proc/self/maps)."""
    with open("/proc/self/maps") as f:
        return any(line.rstrip("\n").endswith(str(path)) for line in f)


def test_prepared_images_are_memory_mapped_and_cache_is_never_written(tmp_path, monkeypatch):
    import resnetlab.data.prepared as prepared

    make_tree(tmp_path / "tree")
    prepare_folder(tmp_path / "tree", tmp_path / "out", 4)
    images = (tmp_path / "out" / IMAGES_NAME).resolve()
    before = images.read_bytes()
    whole = load_prepared(tmp_path / "out", in_memory=True)
    assert not _mapped(images)  # read into memory: no mapping left behind
    # a cache past half the memory budget is mapped rather than read (a tiny one is read)
    monkeypatch.setattr(prepared, "memory_budget", lambda: 0)
    p = load_prepared(tmp_path / "out")
    assert _mapped(images)
    assert torch.equal(p.train.images, whole.train.images)  # the same pixels either way
    p.train.images[0].fill_(7)  # copy-on-write: the run sees its change, the file keeps its bytes
    assert bool((p.train.images[0] == 7).all())
    assert images.read_bytes() == before
    assert torch.equal(load_prepared(tmp_path / "out").train.images, whole.train.images)


def test_train_val_test_tree_and_grey_mode(tmp_path):
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        make_tree(tmp_path / "tree" / split, per_class=n, mode="L")
    meta = prepare_folder(tmp_path / "tree", tmp_path / "out", 6)
    assert meta["mode"] == "L" and meta["splits"] == {
        "train": [0, 6],
        "val": [6, 8],
        "test": [8, 12],
    }
    p = load_prepared(tmp_path / "out")
    assert (len(p.train), len(p.val), len(p.test)) == (6, 2, 4)
    assert p.train.image_shape == (1, 6, 6)


def test_skip_bad_shrinks_the_array_exactly(tmp_path):
    make_tree(tmp_path / "tree", per_class=5)
    (tmp_path / "tree" / "cat" / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    with pytest.raises(ResnetlabError, match="zz.png"):
        prepare_folder(tmp_path / "tree", tmp_path / "out", 4, mode="RGB")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tree"]  # no temporary left behind
    meta = prepare_folder(tmp_path / "tree", tmp_path / "out", 4, mode="RGB", skip_bad=True)
    assert meta["skipped"] == 1 and meta["shape"][0] == 10
    p = load_prepared(tmp_path / "out")
    assert len(p.train) + len(p.test) == 10
    assert (tmp_path / "out" / IMAGES_NAME).stat().st_size < 11 * 3 * 4 * 4 + 128


def test_refuses_existing_output_and_bad_size(tmp_path):
    make_tree(tmp_path / "tree")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ResnetlabError, match="already exists"):
        prepare_folder(tmp_path / "tree", tmp_path / "out", 4)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    with pytest.raises(ResnetlabError, match="positive"):
        prepare_folder(tmp_path / "tree", tmp_path / "new", 0)


def test_tampered_metadata_fails_clearly(tmp_path):
    make_tree(tmp_path / "tree")
    prepare_folder(tmp_path / "tree", tmp_path / "out", 4)
    meta_path = tmp_path / "out" / META_NAME
    meta = json.loads(meta_path.read_text())
    meta["shape"][0] += 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ResnetlabError, match="prepare it again"):
        load_prepared(tmp_path / "out")
    meta_path.write_text("{not json")
    with pytest.raises(ResnetlabError, match="not readable"):
        load_prepared(tmp_path / "out")
