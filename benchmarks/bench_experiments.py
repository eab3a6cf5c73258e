"""The evidence studies against their time targets, with the checks the docs quote.

    python benchmarks/bench_experiments.py                   # gradients at init, depths 20,56,110
    python benchmarks/bench_experiments.py --degradation     # also the default degradation study

Targets (2-core machine): `experiment gradients` on depths 20, 56, 110 at initialisation in under a
minute; the default degradation study (depths 20 and 56, plain and ResNet, full Fashion-MNIST) in
at most 45 minutes, with plain-56 ending above plain-20 in training error and ResNet-56 below
plain-56. The degradation study reuses finished nets in --out: pass a fresh --out to time it.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from resnetlab.experiments import DegradationConfig, run_gradients, run_study
from resnetlab.infer.bench_report import machine_line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--degradation", action="store_true", help="also run the degradation study")
    ap.add_argument("--out", help="study directory (default: a temporary one)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_line())

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = run_gradients(args.data, tmp, depths=(20, 56, 110), say=lambda s: None)
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
    print(machine_line())
    print("rerun: python benchmarks/bench_experiments.py" + (" --degradation" * args.degradation))


if __name__ == "__main__":
    main()
