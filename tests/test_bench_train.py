"""benchmarks/reference_train.py, the hand-written loop bench_train_cuda.py measures the trainer
against: its batched crop-and-flip gather is exact, and the loop trains (tiny sizes, CPU, no
compile)."""

import importlib.util
from pathlib import Path

import torch

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_train.py"


def _bench():
    spec = importlib.util.spec_from_file_location("reference_train", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_crop_flip_gather_matches_per_image_slicing():
    bt = _bench()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 7, 9), dtype=torch.uint8, generator=g)
    p = bt.PAD
    padded = torch.nn.functional.pad(images, (p, p, p, p))
    idx = torch.randint(0, 20, (16,), generator=g)
    dy = torch.randint(0, 2 * p + 1, (16,), generator=g)
    dx = torch.randint(0, 2 * p + 1, (16,), generator=g)
    mirror = torch.arange(16) % 2 == 0
    got = bt.crop_flip_gather(padded, idx, dy, dx, mirror)
    for i in range(16):
        want = padded[idx[i], :, dy[i] : dy[i] + 7, dx[i] : dx[i] + 9]
        assert torch.equal(got[i], want.flip(-1) if mirror[i] else want)


def test_reference_loop_trains_on_cpu():
    bt = _bench()
    splits = bt.synthetic_splits(256, 64)
    out = bt.reference_fit(
        splits.train.images,
        splits.train.labels,
        model="resnet20",
        num_classes=10,
        batch_size=32,
        epochs=3,
        lr=0.05,
        device="cpu",
        compile=None,
        test=(splits.test.images, splits.test.labels),
    )
    rows = out["epochs"]
    assert len(rows) == 3 and all(r["images_per_s"] > 0 for r in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert 0.0 <= out["test_accuracy"] <= 1.0
