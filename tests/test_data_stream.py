"""Decode-on-the-fly path: ImageNet-style transforms, seeded samples, DataLoader workers."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.data import make_tree
from PIL import Image

from resnetlab.data.augment import random_resized_crop
from resnetlab.data.folders import tree_items
from resnetlab.data.images import image_to_tensor
from resnetlab.data.normalise import normalise
from resnetlab.data.stream import FolderDataset, StreamLoader, eval_transform
from resnetlab.data.transform import center_crop, resize_to_cover
from resnetlab.errors import ResnetlabError


def gradient(w: int, h: int) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    a[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
    return Image.fromarray(a)


def test_eval_transform_resizes_shorter_side_then_centre_crops():
    img = gradient(400, 300)
    assert resize_to_cover(img, (256, 256)).size == (341, 256)
    out = eval_transform(img, 224, 256)
    assert out.size == (224, 224)
    # the centre of the crop is the centre of the image
    x = np.asarray(out, dtype=np.int64)
    full = np.asarray(resize_to_cover(img, (256, 256)), dtype=np.int64)
    assert abs(x[112, 112, 0] - full[128, 170, 0]) <= 1


def test_centre_crop_pads_small_images():
    out = center_crop(Image.new("RGB", (10, 10), (255, 255, 255)), 20)
    a = np.asarray(out)
    assert a.shape == (20, 20, 3) and a[0, 0].tolist() == [0, 0, 0] and a[10, 10, 0] == 255


def test_random_resized_crop_is_seeded_and_sized():
    img = gradient(64, 48)
    a = random_resized_crop(img, 32, torch.Generator().manual_seed(5))
    b = random_resized_crop(img, 32, torch.Generator().manual_seed(5))
    c = random_resized_crop(img, 32, torch.Generator().manual_seed(6))
    assert a.size == (32, 32)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_normalised_tensor_values():
    img = Image.new("RGB", (2, 2), (255, 0, 51))
    x = normalise(image_to_tensor(img), (0.5, 0.0, 0.2), (0.5, 1.0, 0.1))
    assert x.shape == (3, 2, 2)
    assert torch.allclose(x[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)


class Traced(FolderDataset):
    """A FolderDataset that notes, in the file `trace`, the process that decodes each sample."""

    trace: Path

    def __getitem__(self, i):
        with open(self.trace, "a") as f:
            f.write(f"{os.getpid()}\n")
        return super().__getitem__(i)


def decoded_by(trace: Path) -> set[int]:
    """The processes that decoded samples since the last call (the trace emptied)."""
    pids = {int(line) for line in trace.read_text().split()}
    trace.write_text("")
    return pids


def _dataset(root, train, **kw):
    items, classes = tree_items(root, test_fraction=0.25, seed=0)
    return FolderDataset(items["train"], classes, train=train, size=8, resize=10, **kw)


def test_samples_are_seeded_by_epoch_and_index(tmp_path):
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(4):
            gradient(40 + i, 30).save(tmp_path / c / f"{i}.png")
    ds = _dataset(tmp_path, train=True, seed=3)
    x0, y0 = ds[1]
    assert x0.shape == (3, 8, 8) and x0.dtype == torch.float32 and isinstance(y0, int)
    assert torch.equal(ds[1][0], x0)
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], x0)
    ds.set_epoch(0)
    assert torch.equal(ds[1][0], x0)


def test_loader_batches_are_the_same_with_and_without_workers(tmp_path):
    make_tree(tmp_path / "tree", per_class=6, size=(16, 12))
    items, classes = tree_items(tmp_path / "tree", test_fraction=0.25, seed=0)
    ds = Traced(items["train"], classes, train=True, size=8, resize=10, seed=1)
    ds.trace = tmp_path / "pids"
    ds.trace.write_text("")
    serial = list(StreamLoader(ds, 4, shuffle=True, workers=0, seed=9))
    assert decoded_by(ds.trace) == {os.getpid()}  # no worker: this process decodes
    parallel = list(StreamLoader(ds, 4, shuffle=True, workers=2, seed=9))
    workers = decoded_by(ds.trace)
    assert len(workers) == 2 and os.getpid() not in workers  # a batch on each of 2 workers
    assert len(serial) == len(parallel) == 2  # 9 train images, drop_last for training
    for (xa, ya), (xb, yb) in zip(serial, parallel):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert xa.is_contiguous(memory_format=torch.channels_last)


def test_eval_loader_keeps_every_sample_in_order(tmp_path):
    make_tree(tmp_path, per_class=3, size=(16, 12))
    ds = _dataset(tmp_path, train=False)
    loader = StreamLoader(ds, 4, shuffle=False, workers=0)
    ys = torch.cat([y for _, y in loader])
    assert ys.tolist() == [y for _, y in ds.items]
    assert len(loader) == -(-len(ds) // 4) == len(list(loader))


def test_bad_file_in_a_worker_is_one_clear_line(tmp_path):
    make_tree(tmp_path, per_class=3)
    (tmp_path / "cat" / "fake.png").write_text("hello")
    items, classes = tree_items(tmp_path, test_fraction=0.25)
    everything = items["train"] + items["test"]
    ds = Traced(everything, classes, train=False, size=4, resize=4)
    ds.trace = tmp_path / "pids"  # the items are listed already: not one of them
    ds.trace.write_text("")
    with pytest.raises(ResnetlabError) as e:
        list(StreamLoader(ds, 2, shuffle=False, workers=1))
    (worker,) = decoded_by(ds.trace)
    assert worker != os.getpid()  # the bad file was met in the worker
    msg = str(e.value)
    assert "fake.png: not a readable image" in msg and "\n" not in msg and "Traceback" not in msg
    ds.skip_bad = True
    ys = torch.cat([y for _, y in StreamLoader(ds, 2, shuffle=False, workers=0)])
    assert len(ys) == len(everything) - 1


def test_mean_std_must_match_channels(tmp_path):
    make_tree(tmp_path)
    with pytest.raises(ResnetlabError, match="mean and std need 1 values"):
        _dataset(tmp_path, train=False, mode="L")
