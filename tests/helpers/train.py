"""Shared pieces of the training tests: a tiny learnable dataset, a tiny model, a CLI runner."""

from __future__ import annotations

import sys

import torch

from resnetlab.data import DataSplits, ImageDataset

TINY_OPTIONS = {"layers": [1, 1, 1], "widths": [8, 16, 16], "stem_width": 8}


def squares(n: int, seed: int, size: int = 8, classes: int = 4) -> ImageDataset:
    """Noisy images with a bright square whose brightness is the class (flip and shift proof)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    y = y[torch.randperm(n, generator=g)]
    x = torch.rand(n, 1, size, size, generator=g) * 60
    lo, hi = size // 4, size - size // 4
    x[:, :, lo:hi, lo:hi] += (60 * y + 40).view(n, 1, 1, 1).float()
    return ImageDataset(x.clamp(0, 255).to(torch.uint8), y, [f"class{i}" for i in range(classes)])


def tiny_splits(n_train: int = 192, n_test: int = 64) -> DataSplits:
    """Train and test splits of `squares`."""
    return DataSplits("squares", squares(n_train, 1), squares(n_test, 2))


def tiny_config(out, **kw):
    """A TrainConfig for a two-block resnet20 variant on `tiny_splits`."""
    from resnetlab.train.loop import TrainConfig

    base = dict(
        model="resnet20",
        data="squares",
        out=str(out),
        epochs=2,
        batch_size=32,
        lr=0.2,  # the fast recipe's peak as given: at batch 32 the linear rule would make it 0.05
        model_options=dict(TINY_OPTIONS),
        quiet=True,
        compile="off",
        precision="fp32",
        threads=1,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


def write_npz(path, n_train: int = 192, n_test: int = 64):
    """Save `tiny_splits` as an .npz source (x_train, y_train, x_test, y_test, classes)."""
    import numpy as np

    sp = tiny_splits(n_train, n_test)
    np.savez(
        path,
        x_train=sp.train.images[:, 0].numpy(),
        y_train=sp.train.labels.numpy(),
        x_test=sp.test.images[:, 0].numpy(),
        y_test=sp.test.labels.numpy(),
        classes=np.array(sp.train.classes),
    )
    return path


TINY_CLI = [
    "--model", "resnet20", "--option", "layers=[1,1,1]", "--option", "widths=[8,16,16]",
    "--option", "stem_width=8", "--batch-size", "32", "--no-compile", "--precision", "fp32",
    "--threads", "1", "--device", "cpu",
]  # fmt: skip


def run_cli(args: list[str], env_extra: dict | None = None, signal_at: str | None = None, **kw):
    """Run `python -m resnetlab ARGS` in a fresh single-threaded process; returns the Popen.

    signal_at: "KILL:N" or "INT:N" sends the process that signal right after training step N
    (see signal_at.py). The process takes Ctrl-C as a terminal's would, even where the suite
    itself was started in the background (`make test &`), which leaves SIGINT ignored."""
    import os
    import subprocess
    from pathlib import Path

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **(env_extra or {}))
    env.pop("RESNETLAB_DEBUG", None)
    command = ["-m", "resnetlab"]
    if signal_at is not None:
        command = [str(Path(__file__).with_name("signal_at.py")), signal_at]
    return subprocess.Popen(
        [sys.executable, *command, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **{"preexec_fn": _sigint_as_default, **kw},
    )


def _sigint_as_default() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
