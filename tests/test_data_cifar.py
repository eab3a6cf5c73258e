"""CIFAR reader: official python-version layout, Python 2 pickles, and refusal of tampered files."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from helpers.data import RunsPython, RunsShell, py2_pickle, write_cifar10, write_cifar100

from resnetlab.data.cifar import detect_cifar, load_cifar, load_cifar_dir, safe_unpickle
from resnetlab.errors import ResnetlabError


def test_cifar10_reads_official_layout_exactly(tmp_path):
    written = write_cifar10(tmp_path / "cifar-10-batches-py")
    s = load_cifar_dir(tmp_path)  # finds the official sub-folder
    assert s.name == "cifar10"
    assert s.train.images.shape == (20, 3, 32, 32) and s.test.images.shape == (4, 3, 32, 32)
    x1, y1 = written["data_batch_1"]
    # channel-major rows: the first 1024 values are the red plane, row by row
    assert torch.equal(s.train.images[0, 0], torch.from_numpy(x1[0, :1024].reshape(32, 32)))
    assert torch.equal(s.train.images[0, 2, 31], torch.from_numpy(x1[0, 2048 + 992 :]))
    x5, y5 = written["data_batch_5"]
    assert torch.equal(s.train.images[16:], torch.from_numpy(x5.reshape(4, 3, 32, 32)))
    assert s.train.labels[:4].tolist() == y1 and s.test.labels.tolist() == written["test_batch"][1]
    assert s.train.classes[1] == "automobile" and len(s.train.classes) == 10


def test_cifar100_uses_fine_labels_and_names(tmp_path):
    written = write_cifar100(tmp_path)
    s = load_cifar_dir(tmp_path)
    assert s.name == "cifar100" and len(s.train.classes) == 100 and s.train.classes[7] == "class7"
    assert s.train.labels.tolist() == written["train"][1]
    assert s.test.images.dtype == torch.uint8


def test_python3_pickles_with_str_keys_also_read(tmp_path):
    write_cifar10(tmp_path)
    x = np.full((2, 3072), 9, np.uint8)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({"data": x, "labels": [1, 2]}, f, protocol=4)
    s = load_cifar_dir(tmp_path)
    assert s.test.labels.tolist() == [1, 2] and int(s.test.images.float().mean()) == 9


@pytest.mark.parametrize("payload", [RunsShell, RunsPython])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, payload):
    write_cifar10(tmp_path)
    marker = tmp_path / "marker"
    evil = {"data": payload(marker), "labels": [0]}
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(evil, protocol=4))
    with pytest.raises(
        ResnetlabError,
        match=r"data_batch_3: not a CIFAR batch, nothing was run: refused global (posix|builtins)",
    ):
        load_cifar_dir(tmp_path)
    assert not marker.exists()
    # The same bytes do run code under an unrestricted pickle.load: the refusal is what stopped it.
    pickle.loads((tmp_path / "data_batch_3").read_bytes())
    assert marker.exists()


def test_refuses_other_numpy_globals(tmp_path):
    p = tmp_path / "b"
    p.write_bytes(b"\x80\x02cnumpy\nload\n.")
    with pytest.raises(ResnetlabError, match=r"refused global numpy\.load"):
        safe_unpickle(p)


def test_truncated_and_garbage_batches_fail_clearly(tmp_path):
    write_cifar10(tmp_path)
    data = (tmp_path / "data_batch_2").read_bytes()
    (tmp_path / "data_batch_2").write_bytes(data[: len(data) // 2])
    with pytest.raises(ResnetlabError, match="data_batch_2: not a readable CIFAR batch"):
        load_cifar_dir(tmp_path)
    (tmp_path / "data_batch_2").write_text("hello")
    with pytest.raises(ResnetlabError, match="data_batch_2"):
        load_cifar_dir(tmp_path)


def test_wrong_shapes_and_counts_fail(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "test_batch").write_bytes(
        py2_pickle({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    )
    with pytest.raises(ResnetlabError, match="hold 100 values, expected 3072"):
        load_cifar_dir(tmp_path)
    (tmp_path / "test_batch").write_bytes(
        py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]})
    )
    with pytest.raises(ResnetlabError, match="2 images but 1 labels"):
        load_cifar_dir(tmp_path)
    (tmp_path / "test_batch").write_bytes(
        py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]})
    )
    with pytest.raises(ResnetlabError, match="labels span 10..10 but there are 10 class names"):
        load_cifar_dir(tmp_path)


def test_a_put_of_a_huge_memo_index_allocates_nothing(tmp_path):
    # PROTO 2, NONE, LONG_BINPUT 2**25, STOP: 12 bytes that made the C unpickler size its memo
    # table to 2**25 entries (512 MB); 2**30 would have been 16 GB
    import struct
    import tracemalloc

    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x02Nr" + struct.pack("<I", 2**25) + b".")
    tracemalloc.start()
    try:
        assert safe_unpickle(path) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20, peak


@pytest.mark.parametrize(
    "labels, message",
    [
        ([[[0] * 50] * 50] * 4, "'labels' must be a flat list of whole numbers from 0"),  # shared
        ([0, 2**70], "'labels' must be a flat list of whole numbers from 0"),
        ([0.0, 1.5], "'labels' must be a flat list of whole numbers from 0"),
        ([0, -1], "'labels' must be a flat list of whole numbers from 0"),
        (np.array([0.0, 1.0]), "'labels' must be a flat list of whole numbers from 0"),
        ("01", "'labels' must be a flat list of whole numbers from 0"),
        (np.array([0, 1], np.uint8), None),  # an integer array is fine
    ],
)
def test_labels_are_checked_before_any_conversion(tmp_path, labels, message):
    write_cifar10(tmp_path)
    batch = {"data": np.zeros((2, 3072), np.uint8), "labels": labels}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(batch, protocol=4))
    if message is None:
        assert load_cifar_dir(tmp_path).test.labels.tolist() == [0, 1]
        return
    with pytest.raises(ResnetlabError, match=message):
        load_cifar_dir(tmp_path)


@pytest.mark.parametrize(
    "names, message",
    [
        ([b"\xff\xfe"] + [b"c%d" % i for i in range(9)], "a class name is not UTF-8 text"),
        ([b"same"] * 2 + [b"c%d" % i for i in range(8)], "must be non-empty and distinct"),
        ([b" "] + [b"c%d" % i for i in range(9)], "must be non-empty and distinct"),
        ([None] + [b"c%d" % i for i in range(9)], "class names must be strings"),
    ],
)
def test_bad_class_names_are_refused_in_one_line(tmp_path, names, message):
    write_cifar10(tmp_path)
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({"label_names": names}, protocol=4))
    with pytest.raises(ResnetlabError, match=message):
        load_cifar_dir(tmp_path)


def test_missing_file_is_not_cifar(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_4").unlink()
    assert detect_cifar(tmp_path) is None
    with pytest.raises(ResnetlabError, match="not a CIFAR directory"):
        load_cifar_dir(tmp_path)


def test_named_lookup_reads_env_dir_and_offline_fails_one_line(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "data" / "cifar10" / "cifar-10-batches-py")
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path / "data"))
    assert len(load_cifar("cifar10").train) == 20
    with pytest.raises(ResnetlabError) as e:
        load_cifar("cifar100", allow_download=False)
    assert "RESNETLAB_DATA" in str(e.value) and "\n" not in str(e.value)


def _serve_archive(tmp_path, monkeypatch, sha=None):
    import dataclasses
    import hashlib
    import tarfile

    from resnetlab.data import cifar

    written = write_cifar10(tmp_path / "src" / "cifar-10-batches-py")
    archive = tmp_path / "src" / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    layout = dataclasses.replace(
        cifar.CIFAR_LAYOUTS["cifar10"], url=archive.as_uri(), sha256=sha or digest
    )
    monkeypatch.setitem(cifar.CIFAR_LAYOUTS, "cifar10", layout)
    monkeypatch.setenv("RESNETLAB_DATA", str(tmp_path / "cache"))
    return written


def test_download_extracts_only_the_batches_and_drops_the_archive(tmp_path, monkeypatch):
    written = _serve_archive(tmp_path, monkeypatch)
    monkeypatch.delenv("RESNETLAB_DATA")
    monkeypatch.setattr("resnetlab.data.download.DEFAULT_CACHE", tmp_path / "cache")
    s = load_cifar("cifar10")
    assert torch.equal(
        s.test.images, torch.from_numpy(written["test_batch"][0]).view(-1, 3, 32, 32)
    )
    files = sorted(p.name for p in (tmp_path / "cache" / "cifar10").iterdir())
    assert files == sorted(
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    )


def test_download_checksum_mismatch_keeps_nothing(tmp_path, monkeypatch):
    _serve_archive(tmp_path, monkeypatch, sha="f" * 64)
    with pytest.raises(ResnetlabError, match="SHA-256 mismatch") as e:
        load_cifar("cifar10")
    assert "\n" not in str(e.value)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))
