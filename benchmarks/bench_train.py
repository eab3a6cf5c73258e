"""Training throughput: the project's training against a plain or a best-practice reference.

--device cpu (the default): the project's training step against a plain eager fp32 NCHW loop.
Both loops train the same model (resnet20 at 32x32 by default, batch 128, SGD with momentum) on
the same random batches in the same process, timed in alternating rounds after a warm-up each (for
the compiled step the warm-up includes compiling; its time is reported separately). The project's
step is the one resnetlab.train uses: channels_last, bf16 autocast where the CPU has native bf16
(or when --precision bf16), torch.compile when --compile (default: on).

--device cuda: the project's whole trainer (resnetlab.train.loop.fit, 1 + --epochs epochs) against
a hand-written best-practice loop (`reference_fit` below: data resident on the GPU, augmentation
batched on the GPU, bf16 autocast, channels_last, torch.compile mode="reduce-overhead", fused SGD,
no host synchronisation inside an epoch), same model, data, batch size and epoch count, in one
process: the trainer first, then the reference. Throughput is the median images/s of the epochs
after the first (the first includes compiling); the ratio is trainer / reference.
Data: Fashion-MNIST (found via $RESNETLAB_DATA/fashion-mnist or /usr/share/datasets/fashion-mnist)
or --synthetic (random uint8 images of the same shape, with a learnable class pattern).

    python benchmarks/bench_train.py                       # resnet20, 32x32, batch 128
    python benchmarks/bench_train.py --size 28 --in-chans 1 --compile off
    python benchmarks/bench_train.py --device cuda         # resnet20, Fashion-MNIST, batch 512
    python benchmarks/bench_train.py --device cpu --reference-only --synthetic --epochs 1 \\
        --batch-size 32 --subset 256                       # the reference loop, tiny, on a CPU
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from torch import nn

from resnetlab import create_model

CUDA_BATCH = 512
CPU_BATCH = 128


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


# --------------------------------------------------------------------------------------------
# the hand-written best-practice reference (no project training code; the model comes from
# create_model). Hyper-parameters are those of the project's "fast" recipe.

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


# --------------------------------------------------------------------------------------------
# data and the project's trainer


def synthetic_splits(n_train: int = 60000, n_test: int = 10000, seed: int = 0):
    """Random uint8 images (N, 1, 28, 28), labels 0..9; a net can learn them despite the crops
    (up to 2 pixels) and mirroring: a bright band at one of 5 heights 5 rows apart, and for
    classes 5..9 a bright stripe down the middle columns."""
    from resnetlab.data import DataSplits, ImageDataset

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


def load_splits(a: argparse.Namespace):
    if a.synthetic:
        return synthetic_splits()
    from resnetlab.data import load_source

    return load_source(a.data)


def median_after_first(rows: list[dict]) -> float:
    later = rows[1:] or rows
    return statistics.median(r["images_per_s"] for r in later)


def run_trainer(a: argparse.Namespace, splits, epochs: int) -> dict:
    """resnetlab.train.loop.fit on CUDA; per-epoch rows from its metrics.jsonl."""
    from resnetlab.train.loop import TrainConfig, fit

    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        cfg = TrainConfig(
            model=a.model,
            data=splits.name if a.synthetic else a.data,
            out=str(Path(tmp) / "run"),
            recipe="fast",
            epochs=epochs,
            batch_size=a.batch_size,
            lr=a.lr,
            seed=0,
            subset=a.subset,
            precision="bf16",
            compile="off" if a.compile == "off" else "auto",
            device=a.device,
            quiet=True,
        )
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # its epoch lines; stdout keeps the result
            summary = fit(cfg, splits)
        wall = time.perf_counter() - t0
        metrics = Path(cfg.out) / "metrics.jsonl"
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return {
        "epochs": [
            {k: r[k] for k in ("epoch", "seconds", "images_per_s", "train_loss")} for r in rows
        ],
        "test_accuracy": summary.get("final_test_accuracy"),
        "compiled": summary.get("compiled"),
        "precision": summary.get("precision"),
        "wall_seconds": wall,
    }


def cudagraph_skips() -> int | None:
    """How often inductor declined CUDA graphs in this process (None: unknown)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["inductor"]["cudagraph_skips"])
    except Exception:
        return None


def free_device(device: str) -> None:
    torch._dynamo.reset()  # compiled graphs and CUDA graph pools; the next loop compiles anew
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def compare(a: argparse.Namespace) -> int:
    """--device cuda (or --reference-only on either device). Exit status 1 if a loop failed
    (its traceback is printed and the other still runs)."""
    from resnetlab.errors import ResnetlabError

    try:
        splits = load_splits(a)
    except ResnetlabError as e:
        print(f"bench_train: data {a.data!r}: {e}", file=sys.stderr)
        return 2
    train = splits.train if a.subset is None else splits.train.subset(a.subset)
    if len(train) < a.batch_size:
        print(f"bench_train: {len(train)} images make no batch of {a.batch_size}", file=sys.stderr)
        return 2
    cuda = a.device == "cuda"
    epochs = 1 + a.epochs
    if cuda:
        modes = [None] if a.compile == "off" else ["reduce-overhead", "default"]  # 2nd: fallback
    else:
        modes = ["default"] if a.compile == "on" else [None]
    result: dict = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "torch": torch.__version__,
        "model": a.model,
        "data": "synthetic" if a.synthetic else a.data,
        "train_images": len(train),
        "batch_size": a.batch_size,
        "epochs": epochs,
        "timed_epochs": "all but the first",
        "errors": [],
    }

    def failed(what: str) -> None:
        traceback.print_exc()
        last = traceback.format_exc().strip().splitlines()[-1]
        result["errors"].append(f"{what}: {last}")
        free_device(a.device)

    if not a.reference_only:
        try:
            trainer = run_trainer(a, splits, epochs)
            if cuda:
                trainer["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            trainer["images_per_s"] = median_after_first(trainer["epochs"])
            result["trainer"] = trainer
            free_device(a.device)
        except Exception:
            failed("trainer")
    for mode in modes:
        skips = cudagraph_skips()
        try:
            ref = reference_fit(
                train.images,
                train.labels,
                model=a.model,
                num_classes=len(train.classes),
                batch_size=a.batch_size,
                epochs=epochs,
                lr=a.lr,
                device=a.device,
                compile=mode,
                test=(splits.test.images, splits.test.labels),
            )
        except Exception:
            failed(f"reference (compile {mode or 'off'})")
            continue
        if cuda:
            ref["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        ref["images_per_s"] = median_after_first(ref["epochs"])
        timed = ref["epochs"][1:] or ref["epochs"]
        ref["timed_images_per_s"] = sum(r["images_per_s"] * r["seconds"] for r in timed) / sum(
            r["seconds"] for r in timed
        )
        ref["compile"] = mode or "off"
        after = cudagraph_skips()
        graphs = cuda and mode == "reduce-overhead" and None not in (skips, after)
        ref["cudagraph_skips"] = after - skips if graphs else None
        result["reference"] = ref
        break
    if "trainer" in result and "reference" in result:
        result["ratio"] = round(
            result["trainer"]["images_per_s"] / result["reference"]["images_per_s"], 3
        )
    result["command"] = (
        f"python benchmarks/bench_train.py --device {a.device} --model {a.model} "
        f"--batch-size {a.batch_size} --epochs {a.epochs} --lr {a.lr:g}"
        + (" --synthetic" if a.synthetic else f" --data {a.data}")
        + (f" --subset {a.subset}" if a.subset else "")
        + (f" --compile {a.compile}" if a.compile else "")
        + (" --reference-only" if a.reference_only else "")
    )
    status = 0 if "reference" in result and ("trainer" in result or a.reference_only) else 1
    if a.json:
        print(json.dumps(result))
        return status

    def percent(v) -> str:
        return "?" if v is None else f"{100 * v:.2f}%"

    def epochs_line(rows: list[dict]) -> str:
        return ", ".join(f"{r['images_per_s']:.0f} img/s loss {r['train_loss']:.3f}" for r in rows)

    print(
        f"{result['device']}, torch {result['torch']}: {a.model} on {result['data']} "
        f"({len(train)} train images), batch {a.batch_size}, {epochs} epochs "
        f"(the first, with compiling, not timed)"
    )
    if "trainer" in result:
        t = result["trainer"]
        print(
            f"  resnetlab trainer (fit)  : {t['images_per_s']:9.0f} images/s  ({t['precision']}"
            f"{', compiled' if t['compiled'] else ''}; test acc {percent(t['test_accuracy'])} "
            f"with flip TTA; fit took {t['wall_seconds']:.0f} s with evaluation)"
        )
        print(f"    epochs: {epochs_line(t['epochs'])}")
    if "reference" in result:
        ref = result["reference"]
        skips = ref["cudagraph_skips"]
        print(
            f"  hand-written reference   : {ref['images_per_s']:9.0f} images/s  (bf16, compile "
            f"{ref['compile']}; test acc {percent(ref['test_accuracy'])}"
            + (f"; cudagraph skips {skips}" if skips is not None else "")
            + ")"
        )
        print(f"    epochs: {epochs_line(ref['epochs'])}")
    if "ratio" in result:
        print(f"  ratio trainer/reference  : {result['ratio']:.2f}x")
    for e in result["errors"]:
        print(f"  FAILED {e}")
    print(f"rerun: {result['command']}")
    return status


def cpu_steps(a: argparse.Namespace) -> int:
    """--device cpu: the project's training step against an eager fp32 NCHW step."""
    from resnetlab.train.loop import precision_name, resolve_precision

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

        counts = [int(t) for t in a.threads_sweep.split(",")]
        runs = interleaved(
            {n: at(n) for n in counts},
            {n: cl_batches for n in counts},
            1,
            a.rounds,
            a.steps_per_round,
        )
        sweep = {str(n): round(r["images_per_s"], 1) for n, r in runs.items()}

    result = {
        "model": a.model,
        "input": [a.in_chans, a.size, a.size],
        "batch_size": a.batch_size,
        "threads": torch.get_num_threads(),
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
        print(
            "rerun: python benchmarks/bench_train.py "
            f"--model {a.model} --size {a.size} --in-chans {a.in_chans} "
            f"--batch-size {a.batch_size} --compile {a.compile} --precision {a.precision} "
            f"--rounds {a.rounds} --steps-per-round {a.steps_per_round}"
            + (f" --threads-sweep {a.threads_sweep}" if a.threads_sweep else "")
        )
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--model", default="resnet20")
    p.add_argument(
        "--batch-size", type=int, default=None, help=f"{CPU_BATCH} on cpu, {CUDA_BATCH} on cuda"
    )
    p.add_argument(
        "--compile",
        choices=("on", "off"),
        default=None,
        help="cpu steps: on by default; cuda: on by default (reference: reduce-overhead); "
        "--reference-only on cpu: off by default",
    )
    g = p.add_argument_group("cpu step comparison")
    g.add_argument("--size", type=int, default=32)
    g.add_argument("--in-chans", type=int, default=3)
    g.add_argument("--rounds", type=int, default=4, help="alternating timed rounds per loop")
    g.add_argument("--steps-per-round", type=int, default=5)
    g.add_argument("--warmup", type=int, default=3)
    g.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    g.add_argument(
        "--threads-sweep",
        metavar="N,M",
        help="also time the project's step at these thread counts, in alternating rounds",
    )
    g = p.add_argument_group("trainer against the hand-written reference (--device cuda)")
    g.add_argument("--data", default="fashion-mnist", help="a dataset name or path")
    g.add_argument("--synthetic", action="store_true", help="random uint8 1x28x28 images")
    g.add_argument("--epochs", type=int, default=3, help="timed epochs, after one warm-up epoch")
    g.add_argument("--subset", type=int, default=None, help="train on the first N images")
    g.add_argument("--lr", type=float, default=0.2, help="peak learning rate (fast recipe's)")
    g.add_argument("--reference-only", action="store_true", help="run the hand-written loop alone")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if a.batch_size is None:
        a.batch_size = CUDA_BATCH if a.device == "cuda" else CPU_BATCH
    if a.device == "cuda" and not torch.cuda.is_available():
        print(
            f"bench_train: --device cuda: CUDA is not available to torch {torch.__version__} "
            "here; run on a machine with a GPU, or use --device cpu",
            file=sys.stderr,
        )
        return 2
    if a.device == "cuda" or a.reference_only:
        return compare(a)
    a.compile = a.compile or "on"
    return cpu_steps(a)


if __name__ == "__main__":
    raise SystemExit(main())
