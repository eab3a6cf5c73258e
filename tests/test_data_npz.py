"""NumPy .npz reader and the seeded stratified hold-out split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resnetlab.data.dataset import ImageDataset
from resnetlab.data.npz import load_npz
from resnetlab.data.split import holdout_count, split_dataset, stratified_holdout
from resnetlab.errors import ResnetlabError


def rng_images(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize(
    "shape, expect",
    [
        ((10, 5, 7), (1, 5, 7)),
        ((10, 5, 7, 3), (3, 5, 7)),
        ((10, 3, 5, 7), (3, 5, 7)),
        ((10, 5, 7, 1), (1, 5, 7)),
    ],
)
def test_layouts_become_nchw_exactly(tmp_path, shape, expect):
    x = rng_images(shape)
    y = np.arange(10) % 2
    np.savez(tmp_path / "d.npz", x=x, y=y)
    s = load_npz(tmp_path / "d.npz", test_fraction=0.2)
    assert s.train.image_shape == expect and len(s.train) == 8 and len(s.test) == 2
    every = torch.cat([s.train.images, s.test.images])
    ref = torch.from_numpy(x)
    ref = ref[:, None] if x.ndim == 3 else (ref.permute(0, 3, 1, 2) if shape[3] in (1, 3) else ref)
    # every source image appears once (the split reorders them)
    assert sorted(map(bytes, every.reshape(10, -1).numpy())) == sorted(
        map(bytes, ref.reshape(10, -1).numpy())
    )


def test_keras_layout_and_class_names(tmp_path):
    np.savez(
        tmp_path / "m.npz",
        x_train=rng_images((6, 4, 4)),
        y_train=np.array([0, 1, 2] * 2),
        x_test=rng_images((3, 4, 4), 1),
        y_test=np.array([2, 1, 0]),
        classes=np.array(["ant", "bee", "cow"]),
    )
    s = load_npz(tmp_path / "m.npz")
    assert (len(s.train), len(s.test)) == (6, 3) and s.name == "m"
    assert s.test.labels.tolist() == [2, 1, 0] and s.train.classes == ["ant", "bee", "cow"]


@pytest.mark.parametrize(
    "arrays, message",
    [
        (
            {"x": np.zeros((4, 3, 3), np.float32), "y": np.zeros(4, int)},
            "must be uint8, got float32",
        ),
        ({"x": np.zeros((4, 3), np.uint8), "y": np.zeros(4, int)}, "must be .N, H, W."),
        (
            {"x": np.zeros((4, 5, 5, 5), np.uint8), "y": np.zeros(4, int)},
            "neither 1 nor 3 channels",
        ),
        ({"x": np.zeros((4, 3, 3), np.uint8), "y": np.zeros(3, int)}, "4 images but 3 labels"),
        ({"x": np.zeros((4, 3, 3), np.uint8), "y": np.zeros(4)}, "must be 1-D integers"),
        ({"x": np.zeros((4, 3, 3), np.uint8), "y": -np.ones(4, int)}, "negative label"),
        ({"images": np.zeros((4, 3, 3), np.uint8)}, "needs arrays x and y.*it has images"),
        (
            {"x": np.zeros((2, 3, 3), np.uint8), "y": np.array([0, 2**64 - 1], np.uint64)},
            "holds a label of 18446744073709551615; corrupt file",
        ),
        (
            {"x": np.zeros((2, 3, 3), np.uint8), "y": np.array([0, 5]), "classes": np.array(["a"])},
            "label 5 but only 1 class names",
        ),
    ],
)
def test_bad_arrays_fail_clearly(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ResnetlabError, match=message):
        load_npz(tmp_path / "bad.npz")


def test_pickled_object_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.array([object()], dtype=object), y=np.zeros(1, int))
    with pytest.raises(ResnetlabError, match="not a readable .npz file"):
        load_npz(tmp_path / "o.npz")


def test_corrupt_and_missing_files(tmp_path):
    (tmp_path / "c.npz").write_text("not a zip")
    with pytest.raises(ResnetlabError, match="not a readable .npz file"):
        load_npz(tmp_path / "c.npz")
    with pytest.raises(ResnetlabError, match="no such file"):
        load_npz(tmp_path / "none.npz")


def _zip(path, members: dict, compression=None) -> None:
    import io
    import zipfile

    with zipfile.ZipFile(path, "w", compression or zipfile.ZIP_STORED) as z:
        for name, value in members.items():
            if isinstance(value, np.ndarray):
                buf = io.BytesIO()
                np.save(buf, value)
                value = buf.getvalue()
            z.writestr(name, value)


def test_members_that_are_not_arrays_are_refused_and_others_never_read(tmp_path):
    good = {"x.npy": np.zeros((2, 3, 3), np.uint8), "y.npy": np.array([0, 1])}
    _zip(tmp_path / "txt.npz", {**good, "notes.txt": b"\0" * 1000})
    with pytest.raises(ResnetlabError, match="holds 'notes.txt', which is not an array"):
        load_npz(tmp_path / "txt.npz")
    # an array the reader does not use is not read: a header claiming 1 TiB costs nothing
    header = io_header({"descr": "|u1", "fortran_order": False, "shape": (2**40,)})
    _zip(tmp_path / "extra.npz", {**good, "z.npy": header})
    assert load_npz(tmp_path / "extra.npz", test_fraction=0.5).train.images.shape[1:] == (1, 3, 3)


def io_header(d: dict) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, d)
    return buf.getvalue()


def test_a_corrupt_compressed_member_fails_in_one_line(tmp_path):
    import zipfile

    np.savez_compressed(tmp_path / "ok.npz", x=rng_images((50, 8, 8)), y=np.arange(50) % 2)
    data = bytearray((tmp_path / "ok.npz").read_bytes())
    with zipfile.ZipFile(tmp_path / "ok.npz") as z:
        info = z.getinfo("x.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 20, start + 60):  # inside the deflate stream of x
        data[i] ^= 0x5A
    (tmp_path / "bad.npz").write_bytes(bytes(data))
    with pytest.raises(ResnetlabError, match="not a readable .npz file"):
        load_npz(tmp_path / "bad.npz")


def test_stratified_holdout_is_proportional_seeded_and_disjoint():
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    idx = stratified_holdout(labels, 10, seed=0)
    assert labels[idx].bincount().tolist() == [6, 3, 1]
    assert torch.equal(idx, stratified_holdout(labels, 10, seed=0))
    assert not torch.equal(idx, stratified_holdout(labels, 10, seed=1))
    ds = ImageDataset(
        torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1), labels, ["a", "b", "c"]
    )
    rest, held = split_dataset(ds, 0.1, seed=0)
    assert len(rest) == 90 and len(held) == 10
    seen = set(rest.images.flatten().tolist()) | set(held.images.flatten().tolist())
    assert seen == set(range(100))


def test_holdout_count_rules():
    assert holdout_count(50000, 5000) == 5000 and holdout_count(100, 0.25) == 25
    assert holdout_count(10, 0) == 0
    for bad in (10, -1, 1.5, "3"):
        with pytest.raises(ResnetlabError):
            holdout_count(10, bad)
