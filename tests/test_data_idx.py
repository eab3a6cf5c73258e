"""IDX reader: exact round trips, every broken header, the look-up order and verified downloads."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.data import idx_bytes, make_idx_dir, write_idx

from resnetlab.data import idx
from resnetlab.data.idx import (
    FASHION_MNIST_CLASSES,
    IDX_SOURCES,
    load_idx_dataset,
    load_idx_dir,
    locate_idx_dataset,
    read_idx,
)
from resnetlab.errors import ResnetlabError

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dir_round_trips_exactly(tmp_path, gz):
    arrays, _ = make_idx_dir(tmp_path / "d", gz=gz)
    s = load_idx_dir(tmp_path / "d")
    assert s.train.images.dtype == torch.uint8 and s.train.images.shape == (12, 1, 4, 3)
    assert torch.equal(s.train.images[:, 0], torch.from_numpy(arrays["train_images"]))
    assert torch.equal(s.test.labels, torch.from_numpy(arrays["test_labels"]).long())
    assert s.train.labels.dtype == torch.int64
    assert s.train.classes == [str(i) for i in range(10)]


def test_wrong_magic_number(tmp_path):
    _, paths = make_idx_dir(tmp_path)
    paths["train_labels"].write_bytes(idx_bytes(np.zeros((2, 2, 2), np.uint8)))
    with pytest.raises(ResnetlabError, match="wrong magic number 0x00000803.*0x00000801"):
        load_idx_dir(tmp_path)


def test_truncated_images_file(tmp_path):
    _, paths = make_idx_dir(tmp_path)
    data = paths["train_images"].read_bytes()
    paths["train_images"].write_bytes(data[:-7])
    with pytest.raises(ResnetlabError, match=r"truncated IDX file: header says \(12, 4, 3\)"):
        load_idx_dir(tmp_path)


def test_truncated_header_and_gzip(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(ResnetlabError, match="truncated IDX header"):
        read_idx(p, idx.IMAGES_MAGIC)
    g = tmp_path / "x.gz"
    g.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 4, 4), np.uint8)))[:-20])
    with pytest.raises(ResnetlabError, match="not a readable gzip file"):
        read_idx(g, idx.IMAGES_MAGIC)


def test_trailing_bytes_and_empty_file_rejected(tmp_path):
    p = tmp_path / "y"
    p.write_bytes(idx_bytes(np.zeros(3, np.uint8)) + b"\x00")
    with pytest.raises(ResnetlabError, match="data continues after the 3 bytes"):
        read_idx(p, idx.LABELS_MAGIC)
    g = tmp_path / "y.gz"  # a small .gz that would inflate to 64 MB: refused after one byte
    g.write_bytes(gzip.compress(idx_bytes(np.zeros(3, np.uint8)) + bytes(64 << 20)))
    with pytest.raises(ResnetlabError, match="data continues after"):
        read_idx(g, idx.LABELS_MAGIC)
    p.write_bytes(idx_bytes(np.zeros(0, np.uint8)))
    with pytest.raises(ResnetlabError, match="holds no samples"):
        read_idx(p, idx.LABELS_MAGIC)


def test_image_and_label_counts_differ(tmp_path):
    _, paths = make_idx_dir(tmp_path)
    write_idx(paths["train_labels"], np.zeros(11, np.uint8))
    with pytest.raises(ResnetlabError, match="holds 12 images but .* holds 11 labels"):
        load_idx_dir(tmp_path)


def test_label_out_of_range_for_named_classes(tmp_path):
    _, paths = make_idx_dir(tmp_path)
    write_idx(paths["test_labels"], np.array([0, 1, 2, 3, 10], np.uint8))
    with pytest.raises(ResnetlabError, match="label 10 out of range for 10 classes"):
        load_idx_dir(tmp_path, classes=FASHION_MNIST_CLASSES)


def test_missing_file_names_what_is_needed(tmp_path):
    _, paths = make_idx_dir(tmp_path)
    paths["test_labels"].unlink()
    with pytest.raises(ResnetlabError, match="not a directory of IDX files"):
        load_idx_dir(tmp_path)


def test_env_directory_wins_over_debian(tmp_path, monkeypatch):
    make_idx_dir(tmp_path / "fashion-mnist")
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path))
    assert locate_idx_dataset("fashion-mnist") == tmp_path / "fashion-mnist"
    s = load_idx_dataset("fashion-mnist")
    assert len(s.train) == 12 and s.train.classes == FASHION_MNIST_CLASSES


def test_explicit_path_wins_and_must_hold_files(tmp_path, monkeypatch):
    make_idx_dir(tmp_path / "mine")
    assert locate_idx_dataset("mnist", tmp_path / "mine") == tmp_path / "mine"
    with pytest.raises(ResnetlabError, match="no mnist IDX files there"):
        locate_idx_dataset("mnist", tmp_path)


def _serve_from(monkeypatch, tmp_path, name, sha=None):
    """Point the dataset's mirrors at file:// URLs of files written here."""
    arrays, paths = make_idx_dir(tmp_path / "server", gz=True)
    digests = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in paths.items()}
    source = dataclasses.replace(
        IDX_SOURCES[name],
        mirrors=("file:///nonexistent/mirror/", (tmp_path / "server").as_uri() + "/"),
        sha256=sha or digests,
        debian_dir=None,
    )
    monkeypatch.setitem(IDX_SOURCES, name, source)
    return arrays


def test_download_verifies_sha256_and_writes_cache(tmp_path, monkeypatch):
    arrays = _serve_from(monkeypatch, tmp_path, "mnist")
    cache = tmp_path / "cache"
    monkeypatch.setenv("RESNETLAB_DATA", str(cache))
    s = load_idx_dataset("mnist")
    assert torch.equal(s.train.images[:, 0], torch.from_numpy(arrays["train_images"]))
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(
        stem + ".gz" for stem in idx.PARTS.values()
    )


def test_download_checksum_mismatch_keeps_nothing(tmp_path, monkeypatch):
    bad = dict.fromkeys(idx.PARTS, "0" * 64)
    _serve_from(monkeypatch, tmp_path, "mnist", sha=bad)
    cache = tmp_path / "cache"
    monkeypatch.setenv("RESNETLAB_DATA", str(cache))
    with pytest.raises(ResnetlabError, match="SHA-256 mismatch") as e:
        load_idx_dataset("mnist")
    assert "\n" not in str(e.value)
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_offline_and_not_found_names_package_and_variable(tmp_path, monkeypatch):
    source = dataclasses.replace(
        IDX_SOURCES["fashion-mnist"], mirrors=("file:///nonexistent/",), debian_dir=tmp_path / "no"
    )
    monkeypatch.setitem(IDX_SOURCES, "fashion-mnist", source)
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path / "empty"))
    with pytest.raises(ResnetlabError) as e:
        load_idx_dataset("fashion-mnist")
    msg = str(e.value)
    assert "dataset-fashion-mnist" in msg and "RESNETLAB_DATA" in msg and "\n" not in msg


def test_official_checksums_are_well_formed():
    for source in IDX_SOURCES.values():
        assert set(source.sha256) == set(idx.PARTS)
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in source.sha256.values())


@pytest.mark.skipif(
    not DEBIAN.is_dir(), reason="Debian package dataset-fashion-mnist not installed"
)
def test_real_fashion_mnist_from_debian(monkeypatch):
    monkeypatch.delenv("RESNETLAB_DATA", raising=False)
    s = load_idx_dataset("fashion-mnist", DEBIAN)
    assert s.train.images.shape == (60000, 1, 28, 28) and s.test.images.shape == (10000, 1, 28, 28)
    assert s.train.labels.bincount().tolist() == [6000] * 10
    assert s.test.labels.bincount().tolist() == [1000] * 10
    assert s.train.classes == FASHION_MNIST_CLASSES and s.train.classes[9] == "Ankle boot"
    # Recognised by content when read as a plain directory.
    assert load_idx_dir(DEBIAN).name == "fashion-mnist"
