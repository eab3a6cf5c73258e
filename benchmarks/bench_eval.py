"""What an epoch's evaluation costs during training, by the trainer's own evaluate().

On Fashion-MNIST's 10,000 test images with resnet20 (in_chans=1, channels_last, fp32, as the
trainer evaluates), in alternating rounds in one process so that a machine's changing load weighs
on every case alike:
1. every image with flip TTA: what each epoch cost before per-epoch evaluation went plain, and
   what the final evaluation still costs (the figure the run prints);
2. every image, plain: an epoch's evaluation now;
3. a fixed `--eval-images` subset, plain (seeded and stratified, as the trainer draws it).
One untimed pass over the subset, with and without flips, warms the kernels up first. Prints the
median seconds of each, the ratios, the machine (CPU features, threads, load) and the command to
rerun it.

Run: .venv/bin/python benchmarks/bench_eval.py [--threads 1] [--rounds 3] [--eval-images 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from resnetlab.data import load_source
from resnetlab.data.loader import BatchLoader
from resnetlab.data.normalise import compute_mean_std
from resnetlab.errors import ResnetlabError
from resnetlab.hardware import features_line
from resnetlab.models import create_model
from resnetlab.train.evaluate import evaluate
from resnetlab.train.setup import EVAL_BATCH, eval_subset


def main() -> int:
    """Time the three cases in alternating rounds and print the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--eval-images", type=int, default=1000)
    args = ap.parse_args()
    for flag in ("threads", "rounds", "eval_images"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be at least 1")
    torch.set_num_threads(args.threads)
    try:
        splits = load_source("fashion-mnist")
    except ResnetlabError as e:
        print(f"bench_eval: {e}", file=sys.stderr)
        return 2
    mean, std = compute_mean_std(splits.train.images)
    model = create_model("resnet20", num_classes=10, in_chans=1)
    model.to(memory_format=torch.channels_last)
    kw = dict(train=False, mean=mean, std=std)
    full = BatchLoader(splits.test, EVAL_BATCH, **kw)
    part = BatchLoader(eval_subset(splits.test, args.eval_images, 0), EVAL_BATCH, **kw)
    cases = {
        f"{len(splits.test)} images, flip TTA": (full, True),
        f"{len(splits.test)} images, plain": (full, False),
        f"{args.eval_images} images, plain": (part, False),
    }
    for tta in (False, True):  # warm-up, not timed: the first calls set the kernels up
        evaluate(model, part, num_classes=10, tta_flip=tta)
    times: dict[str, list[float]] = {name: [] for name in cases}
    load0 = os.getloadavg()[0]
    for r in range(args.rounds):
        for name, (loader, tta) in cases.items():
            t = time.perf_counter()
            evaluate(model, loader, num_classes=10, tta_flip=tta)
            times[name].append(time.perf_counter() - t)
            print(f"round {r + 1}: {name}: {times[name][-1]:.2f} s", flush=True)
    print(
        f"machine: {features_line()}; {os.cpu_count()} CPUs, {args.threads} thread(s), torch "
        f"{torch.__version__}; load average {load0:.2f} -> {os.getloadavg()[0]:.2f}"
    )
    medians = {name: statistics.median(ts) for name, ts in times.items()}
    first = next(iter(medians.values()))
    for name, m in medians.items():
        print(f"{name}: median {m:.2f} s ({first / m:.1f}x less than flip TTA on every image)")
    print(
        f"rerun: .venv/bin/python benchmarks/bench_eval.py --threads {args.threads} "
        f"--rounds {args.rounds} --eval-images {args.eval_images}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
