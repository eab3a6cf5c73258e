"""The evidence studies against their time targets, with the checks the docs quote.

    python benchmarks/bench_experiments.py                   # gradients at init, depths 20,56,110
    python benchmarks/bench_experiments.py --degradation     # also the default degradation study
    python benchmarks/bench_experiments.py --overfitting     # also the default overfitting grid

Targets (2-core machine): `experiment gradients` on depths 20, 56, 110 at initialisation in under a
minute; the default degradation study (depths 20 and 56, plain and ResNet, full Fashion-MNIST) in
at most 45 minutes, with plain-56 ending above plain-20 in training error and ResNet-56 below
plain-56; the default overfitting grid (depths 20 and 56 x 1,000 and 10,000 images x none,
standard, strong; one seed, two workers) in at most 45 minutes, with the checks the literature
expects: without regularisation the 1,000-image nets fit their images (under 1% training error)
with a large gap, and regularisation narrows it. A study reuses finished nets in --out: pass a
fresh --out to time it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch

from resnetlab.errors import ResnetlabError
from resnetlab.experiments import (
    DegradationConfig,
    OverfittingConfig,
    run_gradients,
    run_overfitting,
    run_study,
)
from resnetlab.experiments.gradients import probe_plan
from resnetlab.infer.bench_report import machine_line


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--degradation", action="store_true", help="also run the degradation study")
    ap.add_argument("--overfitting", action="store_true", help="also run the overfitting grid")
    ap.add_argument("--out", help="study directory (default: a temporary one)")
    args = ap.parse_args()
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    try:
        return studies(args)
    except ResnetlabError as e:
        print(f"bench_experiments: {e}", file=sys.stderr)
        return 2


def studies(args: argparse.Namespace) -> int:
    """Time the gradients at initialisation, then the studies asked for; print the figures."""
    torch.set_num_threads(args.threads)
    print(machine_line())

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        # the plan applies --threads as given (without one the probes take the free cores)
        res = run_gradients(args.data, tmp, depths=(20, 56, 110), say=lambda s: None,
                            plan=probe_plan(args.threads))  # fmt: skip
        dt = time.perf_counter() - t0
    for r in res:
        d = r.record()
        print(f"  {r.family}-{r.depth}: first/last conv weight gradient "
              f"{d['first_to_last_conv_grad']:.3g}x")  # fmt: skip
    print(f"gradients at init, depths 20,56,110: {dt:.1f} s (target < 60 s)")

    if args.degradation:
        out = args.out or tempfile.mkdtemp(prefix="degradation-")
        t0 = time.perf_counter()
        runs = run_study(DegradationConfig(data=args.data, out=out, compile="off",
                                           threads=args.threads))  # fmt: skip
        dt = time.perf_counter() - t0
        err = {(r.family, r.depth): r.record()["final_train_err"] for r in runs}
        print(f"degradation study: {dt / 60:.1f} min (target <= 45 min) -> {out}")
        print(f"  final training error: plain-20 {100 * err['plain', 20]:.2f}%, plain-56 "
              f"{100 * err['plain', 56]:.2f}%, ResNet-20 {100 * err['resnet', 20]:.2f}%, "
              f"ResNet-56 {100 * err['resnet', 56]:.2f}%")  # fmt: skip
        print(f"  plain-56 above plain-20: {err['plain', 56] > err['plain', 20]}; "
              f"ResNet-56 below plain-56: {err['resnet', 56] < err['plain', 56]}")  # fmt: skip
    if args.overfitting:
        overfitting(args)
    print(machine_line())
    flags = f" --data {args.data} --threads {args.threads}"
    flags += " --degradation" * args.degradation + " --overfitting" * args.overfitting
    flags += f" --out {args.out}" if args.out else ""
    print("rerun: python benchmarks/bench_experiments.py" + flags)
    return 0


def overfitting(args: argparse.Namespace) -> None:
    """The default grid on two workers of one thread: its time and the expected outcomes."""
    out = args.out or tempfile.mkdtemp(prefix="overfitting-")
    t0 = time.perf_counter()
    nets = run_overfitting(OverfittingConfig(data=args.data, out=out, workers=2, threads=1))
    dt = time.perf_counter() - t0
    cell = {(r["depth"], r["train_size"], r["regularisation"]): r for r in nets}
    print(
        f"overfitting grid (2 workers of 1 thread): {dt / 60:.1f} min (target <= 45 min) -> {out}"
    )
    for (depth, size, reg), r in sorted(cell.items()):
        if r["diverged"]:
            print(f"  resnet{depth}, {size:,} images, {reg}: diverged at step {r['diverged_step']}")
            continue
        print(f"  resnet{depth}, {size:,} images, {reg}: train err "
              f"{100 * r['final_train_err']:.2f}%, test err {100 * r['final_test_err']:.2f}%, "
              f"gap {100 * r['gap']:.2f} points")  # fmt: skip
    for depth in (20, 56):
        none, strong = cell[depth, 1000, "none"], cell[depth, 1000, "strong"]
        if none["diverged"] or strong["diverged"]:
            continue
        print(f"  resnet{depth} on 1,000 images: fits them without regularisation (train err "
              f"< 1%): {none['final_train_err'] < 0.01}; strong regularisation narrows the gap: "
              f"{strong['gap'] < none['gap']}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
