"""The hand-written best-practice training loop that the project's trainer is measured against.

`reference_fit` is one function read top to bottom, with no project training code (the model comes
from create_model): the uint8 data resident on the device and padded once, each epoch's order,
crop offsets and mirror flags drawn on the device, one gather a batch for crop and flip
(`crop_flip_gather`), normalisation as one multiply-add, bf16 autocast, channels_last,
torch.compile (mode "reduce-overhead" on CUDA: CUDA graphs), fused SGD, and no host
synchronisation inside an epoch (loss and accuracy summed on the device, read at the epoch's end).
Its hyper-parameters are those of the project's "fast" recipe. `synthetic_splits` gives learnable
random data of Fashion-MNIST's shape where the real data is absent.

benchmarks/bench_train_cuda.py runs it beside resnetlab's trainer; tests/test_bench_train.py
checks the gather and trains it for a few steps on a CPU.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from resnetlab import create_model
from resnetlab.data import DataSplits, ImageDataset

PAD = 2  # random translation by up to 2 pixels (zero padding), as the fast recipe
WARMUP_FRAC, WARMUP_START = 0.05, 0.1  # linear warm-up from 0.1 x lr over 5% of the steps
MOMENTUM, WEIGHT_DECAY, LABEL_SMOOTHING = 0.9, 5e-4, 0.1


def crop_flip_gather(
    padded: torch.Tensor,
    idx: torch.Tensor,
    dy: torch.Tensor,
    dx: torch.Tensor,
    mirror: torch.Tensor,
) -> torch.Tensor:
    """Images idx of `padded` (N, C, H+2P, W+2P), each cropped to (H, W) at offset (dy, dx) and
    mirrored where `mirror`: one gather over the flattened tensor, on its device."""
    _, c, hp, wp = padded.shape
    h, w = hp - 2 * PAD, wp - 2 * PAD
    dev = padded.device
    cols = torch.arange(w, device=dev)
    cols = torch.where(mirror[:, None], cols.flip(0), cols) + dx[:, None]  # (B, W)
    rows = (dy[:, None] + torch.arange(h, device=dev)) * wp  # (B, H)
    chan = torch.arange(c, device=dev) * (hp * wp)  # (C,)
    at = (
        idx.view(-1, 1, 1, 1) * (c * hp * wp)
        + chan.view(1, c, 1, 1)
        + rows.view(-1, 1, h, 1)
        + cols.view(-1, 1, 1, w)
    )
    return padded.view(-1)[at]  # (B, C, H, W) uint8


def reference_fit(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    model: str,
    num_classes: int,
    batch_size: int,
    epochs: int,
    lr: float,
    device: str,
    compile: str | None,
    dtype: torch.dtype | None = torch.bfloat16,
    seed: int = 0,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict:
    """Train `model` on uint8 images (N, C, H, W) for `epochs`; per-epoch rows of seconds,
    images/s, train loss and accuracy (+ the test accuracy after the last epoch, if `test`).
    `compile`: None (eager), "default" or "reduce-overhead" (torch.compile's mode)."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # one input shape: pick the fastest convolutions
    torch.manual_seed(seed)
    x_all, y_all = images.to(dev), labels.to(dev)
    n, c, _, _ = x_all.shape
    xf = x_all.float().div_(255.0)
    mean, std = xf.mean((0, 2, 3)), xf.std((0, 2, 3))
    del xf
    scale, shift = (1.0 / (255.0 * std)).view(1, c, 1, 1), (-mean / std).view(1, c, 1, 1)
    padded = nn.functional.pad(x_all, (PAD, PAD, PAD, PAD))  # once, resident on the device

    net = create_model(model, num_classes=num_classes, in_chans=c)
    net = net.to(dev).to(memory_format=torch.channels_last).train()
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]  # norms and biases: no decay
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0}],
        lr=lr,
        momentum=MOMENTUM,
        nesterov=True,
        fused=True,
    )
    crit = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    graphs = cuda and compile == "reduce-overhead"  # CUDA graphs: mark each step's start
    if compile is None:
        forward = net
    else:
        forward = torch.compile(net, mode=None if compile == "default" else compile)
    steps = n // batch_size  # the last partial batch is dropped: one shape, one CUDA graph
    total = epochs * steps

    def lr_at(step: int) -> float:  # a Python float: the optimiser is not compiled
        t = step / total
        if t < WARMUP_FRAC:
            return lr * (WARMUP_START + (1 - WARMUP_START) * t / WARMUP_FRAC)
        return lr * max(0.0, 1.0 - (t - WARMUP_FRAC) / (1 - WARMUP_FRAC))

    def autocast():
        return torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None)

    rows, step = [], 0
    for epoch in range(epochs):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        perm = torch.randperm(n, device=dev)
        dy = torch.randint(0, 2 * PAD + 1, (n,), device=dev)
        dx = torch.randint(0, 2 * PAD + 1, (n,), device=dev)
        mirror = torch.rand(n, device=dev) < 0.5
        loss_sum = torch.zeros((), device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        for b in range(steps):
            s = slice(b * batch_size, (b + 1) * batch_size)
            idx = perm[s]
            x = crop_flip_gather(padded, idx, dy[s], dx[s], mirror[s]).float()
            x = (x * scale + shift).contiguous(memory_format=torch.channels_last)
            y = y_all[idx]
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with autocast():
                logits = forward(x)
            loss = crit(logits.float(), y)
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(1) == y).sum()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        images_seen = steps * batch_size
        rows.append(
            {
                "epoch": epoch + 1,
                "seconds": seconds,
                "images_per_s": images_seen / seconds,
                "train_loss": float(loss_sum) / steps,  # read once, at the epoch's end
                "train_acc": int(correct) / images_seen,
            }
        )
    out = {"epochs": rows}
    if test is not None:  # eager, outside the timing
        net.eval()
        hits = torch.zeros((), dtype=torch.int64, device=dev)
        with torch.no_grad(), autocast():
            for i in range(0, len(test[0]), 1000):
                xt = test[0][i : i + 1000].to(dev).float() * scale + shift
                yt = test[1][i : i + 1000].to(dev)
                logits = net(xt.contiguous(memory_format=torch.channels_last))
                hits += (logits.argmax(1) == yt).sum()
        out["test_accuracy"] = int(hits) / len(test[0])
    return out


def synthetic_splits(n_train: int = 60000, n_test: int = 10000, seed: int = 0) -> DataSplits:
    """Random uint8 images (N, 1, 28, 28), labels 0..9; a net can learn them despite the crops
    (up to 2 pixels) and mirroring: a bright band at one of 5 heights 5 rows apart, and for
    classes 5..9 a bright stripe down the middle columns."""
    g = torch.Generator().manual_seed(seed)
    pos = torch.arange(28)

    def make(n: int) -> ImageDataset:
        y = torch.randint(0, 10, (n,), generator=g)
        x = torch.randint(0, 100, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
        band = ((pos[None, :] - 3 - 5 * (y[:, None] % 5)) // 2 == 0)[:, None, :, None]
        stripe = ((y >= 5)[:, None] & ((pos == 13) | (pos == 14))[None, :])[:, None, None, :]
        x = torch.where(band | stripe, torch.tensor(220, dtype=torch.uint8), x)
        return ImageDataset(x, y, [str(i) for i in range(10)])

    return DataSplits("synthetic", make(n_train), make(n_test))
