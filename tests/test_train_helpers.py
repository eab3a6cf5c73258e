"""Shared pieces of the training tests: a tiny learnable dataset and a tiny model configuration.

Run as a script, it trains in a fresh process (for the kill/resume and Ctrl-C tests):
`python tests/test_train_helpers.py OUT_DIR [--resume] [--epochs N] [--every N] [--lr X]`.
"""

from __future__ import annotations

import argparse
import sys

import torch

from resnetlab.data import DataSplits, ImageDataset

TINY_OPTIONS = {"layers": [1, 1, 1], "widths": [8, 16, 16], "stem_width": 8}


def stripes(n: int, seed: int, size: int = 8, classes: int = 4) -> ImageDataset:
    """Noise images with a bright row whose position is the class: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    y = y[torch.randperm(n, generator=g)]
    x = (torch.rand(n, 1, size, size, generator=g) * 80).to(torch.uint8)
    x[torch.arange(n), 0, 1 + 2 * y, :] = 240
    return ImageDataset(x, y, [f"class{i}" for i in range(classes)])


def tiny_splits(n_train: int = 192, n_test: int = 64) -> DataSplits:
    """Train and test splits of `stripes`."""
    return DataSplits("stripes", stripes(n_train, 1), stripes(n_test, 2))


def tiny_config(out, **kw):
    """A TrainConfig for a two-block resnet20 variant on `tiny_splits`."""
    from resnetlab.train.loop import TrainConfig

    base = dict(
        model="resnet20",
        data="stripes",
        out=str(out),
        epochs=2,
        batch_size=32,
        model_options=dict(TINY_OPTIONS),
        quiet=True,
        compile="off",
        precision="fp32",
    )
    base.update(kw)
    return TrainConfig(**base)


def main(argv: list[str]) -> int:
    """Train `tiny_config` in this process (what the subprocess tests run)."""
    from resnetlab.errors import ResnetlabError
    from resnetlab.train.loop import fit

    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--every", type=int, default=0)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--recipe", default="fast")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = tiny_config(a.out, epochs=a.epochs, checkpoint_every=a.every, lr=a.lr, recipe=a.recipe)
    try:
        fit(cfg, tiny_splits(), resume=a.out if a.resume else None)
    except ResnetlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
