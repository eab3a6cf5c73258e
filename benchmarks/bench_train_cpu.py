"""Training throughput on a CPU: resnetlab's training step against a plain eager fp32 NCHW loop.

Both loops train the same model (resnet20 at 32x32 by default, batch 128, SGD with momentum) on the
same random batches in the same process, timed in alternating rounds after a warm-up each, so that
a machine whose load changes during the run weighs on both alike (for the compiled step the
warm-up includes compiling; its time is reported separately). The project's step is the one
resnetlab.train uses (TrainStep with its fused SGD): channels_last, bf16 autocast where the CPU has
native bf16 (or when --precision bf16), torch.compile when --compile (default: on). The figures are
printed beside the CPU's model, its vector units, the thread count and the load average, which
decide them. The GPU's counterpart, the whole trainer against a hand-written loop, is
bench_train_cuda.py.

    python benchmarks/bench_train_cpu.py                   # resnet20, 3x32x32, batch 128
    python benchmarks/bench_train_cpu.py --size 28 --in-chans 1 --compile off
    python benchmarks/bench_train_cpu.py --compile off --rounds 2 --steps-per-round 3  # short
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time

import torch
from torch import nn

from resnetlab import create_model
from resnetlab.errors import ResnetlabError
from resnetlab.hardware import features_line
from resnetlab.policy import precision_name, resolve_precision

BATCH = 128


def make_step(model: nn.Module, forward, dtype: torch.dtype | None):
    """One SGD step of forward, cross-entropy, backward and update."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    crit = nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        ctx = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
        with ctx:
            loss = crit(forward(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def project_step(model: nn.Module, dtype: torch.dtype | None, compiled: bool):
    """The trainer's own step (resnetlab.train.step.TrainStep with its fused SGD): forward,
    loss, backward, the on-device non-finite check, the update and the tallies."""
    from resnetlab.train.step import TrainStep, fused_sgd

    opt = fused_sgd([{"params": list(model.parameters())}], lr=0.01, momentum=0.9, nesterov=True)
    step = TrainStep(model, opt, nn.CrossEntropyLoss(), device="cpu", dtype=dtype,
                     compiled=compiled)  # fmt: skip

    def run(x: torch.Tensor, y: torch.Tensor) -> None:
        step(x, y)

    return run


def interleaved(steps: dict, batches: dict, warmup: int, rounds: int, per_round: int) -> dict:
    """Warm each step up (timing it), then time them in alternating rounds, so that a machine
    whose load changes during the run weighs on every loop alike. Returns per-loop figures."""
    out = {}
    for name, step in steps.items():
        t0 = time.perf_counter()
        for i in range(warmup):
            step(*batches[name][i % len(batches[name])])
        out[name] = {"warmup_s": time.perf_counter() - t0, "seconds": 0.0, "images": 0}
    for _ in range(rounds):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for i in range(per_round):
                x, y = batches[name][i % len(batches[name])]
                step(x, y)
                out[name]["images"] += len(y)
            out[name]["seconds"] += time.perf_counter() - t0
    for v in out.values():
        v["images_per_s"] = v["images"] / v["seconds"]
    return out


def cpu_steps(a: argparse.Namespace) -> int:
    """The project's training step against an eager fp32 NCHW step; print the figures."""
    threads = torch.get_num_threads()  # before the sweep changes it
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.randn(a.batch_size, a.in_chans, a.size, a.size, generator=g),
            torch.randint(0, 10, (a.batch_size,), generator=g),
        )
        for _ in range(4)
    ]

    # the reference: eager, fp32, NCHW, the way a first training loop is written
    ref_model = create_model(a.model, num_classes=10, in_chans=a.in_chans).train()

    # the project's step
    dtype = resolve_precision(a.precision, "cpu")
    model = create_model(a.model, num_classes=10, in_chans=a.in_chans)
    model.train().to(memory_format=torch.channels_last)
    cl_batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in batches]

    res = interleaved(
        {
            "reference": make_step(ref_model, ref_model, None),
            "resnetlab": project_step(model, dtype, a.compile == "on"),
        },
        {"reference": batches, "resnetlab": cl_batches},
        a.warmup,
        a.rounds,
        a.steps_per_round,
    )
    ref_ips, ips, warm = (
        res["reference"]["images_per_s"],
        res["resnetlab"]["images_per_s"],
        res["resnetlab"]["warmup_s"],
    )
    sweep = {}
    if a.threads_sweep:
        project = project_step(model, dtype, a.compile == "on")

        def at(n: int):
            def step(x, y):
                torch.set_num_threads(n)
                return project(x, y)

            return step

        counts = a.sweep_counts
        runs = interleaved(
            {n: at(n) for n in counts},
            {n: cl_batches for n in counts},
            a.warmup,
            a.rounds,
            a.steps_per_round,
        )
        sweep = {str(n): round(r["images_per_s"], 1) for n, r in runs.items()}
        torch.set_num_threads(threads)

    command = (
        "python benchmarks/bench_train_cpu.py "
        f"--model {a.model} --size {a.size} --in-chans {a.in_chans} "
        f"--batch-size {a.batch_size} --compile {a.compile} --precision {a.precision} "
        f"--rounds {a.rounds} --steps-per-round {a.steps_per_round} --warmup {a.warmup}"
        + (f" --threads-sweep {a.threads_sweep}" if a.threads_sweep else "")
    )
    result = {
        "command": command,
        "machine": features_line(),
        "torch": torch.__version__,
        "model": a.model,
        "input": [a.in_chans, a.size, a.size],
        "batch_size": a.batch_size,
        "threads": threads,
        "reference_images_per_s": round(ref_ips, 1),
        "images_per_s": round(ips, 1),
        "ratio": round(ips / ref_ips, 2),
        "precision": precision_name(dtype),
        "channels_last": True,
        "compiled": a.compile == "on",
        "warmup_seconds": round(warm, 1),
        "load_average": os.getloadavg()[0],
        "threads_sweep_images_per_s": sweep,
    }
    if a.json:
        print(json.dumps(result))
    else:
        print(f"{result['machine']}; torch {result['torch']}")
        print(
            f"{a.model} {a.in_chans}x{a.size}x{a.size} batch {a.batch_size}, "
            f"{result['threads']} threads (load average {result['load_average']:.1f})"
        )
        print(f"  eager fp32 NCHW reference : {ref_ips:8.1f} images/s")
        print(
            f"  resnetlab training step   : {ips:8.1f} images/s  ({result['precision']}, "
            f"channels_last{', compiled' if result['compiled'] else ''}; warm-up "
            f"{warm:.1f}s incl. compile)"
        )
        print(f"  ratio                     : {result['ratio']:.2f}x")
        for n, v in sweep.items():
            print(f"  resnetlab step, {n} thread(s) : {v:8.1f} images/s")
        print(f"rerun: {command}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch-size", type=int, default=BATCH)
    p.add_argument("--compile", choices=("on", "off"), default="on")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--in-chans", type=int, default=3)
    p.add_argument("--rounds", type=int, default=4, help="alternating timed rounds per loop")
    p.add_argument("--steps-per-round", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    p.add_argument(
        "--threads-sweep",
        metavar="N,M",
        help="also time the project's step at these thread counts, in alternating rounds",
    )
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    for flag in ("batch_size", "size", "in_chans", "rounds", "steps_per_round"):
        if getattr(a, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if a.warmup < 0:
        p.error("--warmup must be at least 0")
    try:
        a.sweep_counts = [int(t) for t in a.threads_sweep.split(",")] if a.threads_sweep else []
    except ValueError:
        p.error(f"--threads-sweep {a.threads_sweep!r}: expected thread counts such as 1,2")
    if any(n < 1 for n in a.sweep_counts):
        p.error("--threads-sweep: thread counts must be at least 1")
    try:
        return cpu_steps(a)
    except ResnetlabError as e:
        print(f"bench_train_cpu: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
