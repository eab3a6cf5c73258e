"""Loader throughput against training throughput: data must never limit training.

Measures, on this machine:
1. BatchLoader throughput in images/s on Fashion-MNIST's 60000 training images with the training
   augmentations (pad-4 random crop, horizontal flip, random erasing), batch 128, one epoch;
2. resnet20 training throughput (in_chans=1, 28x28, batch 128, SGD, channels_last) over a few
   steps after warm-up, with bf16 autocast and in fp32 (on CPUs without AMX or AVX512-BF16, bf16
   is emulated and slower than fp32);
in alternating rounds (one loader pass, then the training steps of each precision; the best
round of each is kept), and prints the ratio of the loader to the faster of the two (target: at
least 10x) beside the CPU's features and the thread count.

With --stream it measures instead the decode-on-the-fly path (FolderDataset + StreamLoader) on a
folder of synthetic 500x375 JPEGs written to a temporary directory: images/s of the training
transform (random-resized crop 224 + flip) and of the evaluation one (resize 256, centre 224).

Run: .venv/bin/python benchmarks/bench_loader.py [--batches N] [--steps N] [--json]
     .venv/bin/python benchmarks/bench_loader.py --stream [--images N] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

import torch

from resnetlab.data import BatchLoader, compute_mean_std, load_source
from resnetlab.errors import ResnetlabError
from resnetlab.hardware import features_line
from resnetlab.models import create_model

TARGET_RATIO = 10.0


def loader_pass(
    batch_size: int, batches: int | None, erase: float
) -> Callable[[int], tuple[float, int]]:
    """A function of the epoch that times one pass of the training loader: (images/s, images)."""
    splits = load_source("fashion-mnist")
    mean, std = compute_mean_std(splits.train.images)
    loader = BatchLoader(
        splits.train, batch_size, train=True, mean=mean, std=std, pad=4, flip=True, erase=erase
    )
    total = len(loader) if batches is None else min(batches, len(loader))

    def run(epoch: int) -> tuple[float, int]:
        loader.set_epoch(epoch)
        n = 0
        start = time.perf_counter()
        for i, (x, _) in enumerate(loader):
            n += len(x)
            if i + 1 >= total:
                break
        return n / (time.perf_counter() - start), n

    return run


def train_steps(batch_size: int, steps: int, warmup: int, bf16: bool) -> Callable[[], float]:
    """Warm resnet20 training steps (forward, backward, SGD update) up; returns a function that
    times `steps` more and gives their images/s."""
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_chans=1).to(
        memory_format=torch.channels_last
    )
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch_size, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return steps * batch_size / (time.perf_counter() - start)

    return run


def stream_throughput(images: int, workers: int, batch_size: int) -> dict[str, float]:
    """images/s of the decode-on-the-fly loader on synthetic JPEGs, train and eval transforms."""
    import tempfile
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from resnetlab.data.folders import tree_items
    from resnetlab.data.stream import FolderDataset, StreamLoader

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(images):
            base = np.stack([(xx * (i + 1)) % 256, (yy * 3) % 256, (xx + yy) % 256], axis=-1)
            noisy = base + rng.integers(0, 40, base.shape)
            d = Path(tmp) / f"class{i % 4}"
            d.mkdir(exist_ok=True)
            Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(d / f"{i}.jpg", quality=90)
        items, classes = tree_items(tmp, test_fraction=1)  # one held out; all are read
        every = items["train"] + items["test"]
        for train in (True, False):
            ds = FolderDataset(every, classes, train=train)
            loader = StreamLoader(ds, batch_size, shuffle=train, workers=workers, drop_last=False)
            start = time.perf_counter()
            n = sum(len(x) for x, _ in loader)
            out["train" if train else "eval"] = n / (time.perf_counter() - start)
    return out


def machine() -> dict:
    """The context of the figures: the CPU's model and features, CPUs, torch, threads."""
    return {"machine": features_line(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads()}  # fmt: skip


def main_stream(args: argparse.Namespace) -> int:
    ips = stream_throughput(args.images, args.workers, args.batch_size)
    m = machine()
    print(
        f"machine:  {m['machine']}, {m['cpus']} CPUs, torch {m['torch']}, "
        f"{m['threads']} threads in the main process"
    )
    for k, v in ips.items():
        what = "random-resized crop 224 + flip" if k == "train" else "resize 256 + centre 224"
        print(
            f"stream {k}: {v:,.1f} images/s ({args.images} JPEGs of 500x375, {what}, "
            f"{args.workers} workers, batch {args.batch_size}, start-up included)"
        )
    flags = f"--images {args.images} --workers {args.workers} --batch-size {args.batch_size}"
    flags += " --json" if args.json else ""
    print(f"rerun:    .venv/bin/python benchmarks/bench_loader.py --stream {flags}")
    if args.json:
        row = {f"stream_{k}_images_per_s": round(v, 1) for k, v in ips.items()}
        row.update(images=args.images, workers=args.workers, batch_size=args.batch_size, **m)
        print(json.dumps(row))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=None, help="default 128 (--stream: 32)")
    p.add_argument("--batches", type=int, default=None, help="loader batches (default: 1 epoch)")
    p.add_argument("--repeats", type=int, default=2, help="loader passes; the best is kept")
    p.add_argument("--erase", type=float, default=0.5, help="random-erasing probability")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", choices=("both", "bf16", "fp32"), default="both")
    p.add_argument("--json", action="store_true", help="also print one JSON line")
    p.add_argument("--stream", action="store_true", help="measure the decode-on-the-fly path")
    p.add_argument("--images", type=int, default=256, help="--stream: synthetic JPEGs")
    p.add_argument("--workers", type=int, default=2, help="--stream: DataLoader workers")
    args = p.parse_args(argv)
    for flag in ("batch_size", "batches", "repeats", "steps"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.images < 2:
        p.error("--images must be at least 2")
    if args.warmup < 0 or args.workers < 0:
        p.error("--warmup and --workers must be at least 0")
    if not 0 <= args.erase <= 1:
        p.error("--erase is a probability, from 0 to 1")
    try:
        if args.stream:
            args.batch_size = args.batch_size or 32
            return main_stream(args)
        args.batch_size = args.batch_size or 128
        return main_memory(args, argv)
    except ResnetlabError as e:
        print(f"bench_loader: {e}", file=sys.stderr)
        return 2


def main_memory(args: argparse.Namespace, argv: list[str] | None) -> int:
    """The in-memory loader against training, in alternating rounds; print the figures."""
    load = loader_pass(args.batch_size, args.batches, args.erase)
    precisions = ("bf16", "fp32") if args.precision == "both" else (args.precision,)
    steps = {
        prec: train_steps(args.batch_size, args.steps, args.warmup, prec == "bf16")
        for prec in precisions
    }
    loader_ips, train = 0.0, dict.fromkeys(precisions, 0.0)
    for rep in range(args.repeats):  # rounds alternate, so that load elsewhere hits all alike
        ips, n = load(rep)
        loader_ips = max(loader_ips, ips)
        for prec, run in steps.items():
            train[prec] = max(train[prec], run())
    fastest = max(train, key=train.get)
    ratio = loader_ips / train[fastest]
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    m = machine()
    print(f"machine:  {m['machine']}, {m['cpus']} CPUs, torch {m['torch']}, {m['threads']} threads")
    print(
        f"loader:   {loader_ips:,.0f} images/s (Fashion-MNIST train, batch {args.batch_size}, "
        f"pad-4 crop + flip + erase p={args.erase}, {n} images per pass, best of {args.repeats})"
    )
    for prec, ips in train.items():
        amp = "bf16 autocast" if prec == "bf16" else "fp32"
        print(
            f"training: {ips:,.0f} images/s (resnet20, in_chans=1, 28x28, batch "
            f"{args.batch_size}, {amp}, channels_last, {args.steps} steps, best of {args.repeats})"
        )
    print(
        f"ratio:    {ratio:.1f}x over {fastest} training (target >= {TARGET_RATIO:.0f}x: {verdict})"
    )
    print("rerun:    .venv/bin/python benchmarks/bench_loader.py " + " ".join(argv or sys.argv[1:]))
    if args.json:
        row = {
            "loader_images_per_s": round(loader_ips, 1),
            "train_images_per_s": {k: round(v, 1) for k, v in train.items()},
            "ratio": round(ratio, 2),
            "ratio_over": fastest,
            "batch_size": args.batch_size,
            "erase": args.erase,
            "repeats": args.repeats,
            "steps": args.steps,
            **m,
        }
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
