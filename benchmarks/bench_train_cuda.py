"""Training throughput on a GPU: resnetlab's whole trainer against a hand-written reference loop.

The trainer (resnetlab.train.loop.fit, 1 + --epochs epochs) and `reference_fit` (reference_train.py
beside this script: data resident on the GPU, augmentation batched on the GPU, bf16 autocast,
channels_last, torch.compile mode="reduce-overhead", fused SGD, no host synchronisation inside an
epoch) train the same model on the same data with the same batch size and epoch count, in one
process, in --rounds alternating rounds (trainer then reference, then reference then trainer, ...;
each loop compiles anew in each round; if the reference fails with CUDA graphs it is run again with
compile mode "default", which the later rounds keep). A round's throughput is the median images/s
of its epochs after the first (the first includes compiling); a loop's figure is the median of
its rounds; the ratio is trainer / reference. --device cpu runs the same script on a CPU (fp32, to
check it where there is no GPU; its figures say nothing about a GPU). Data: Fashion-MNIST (found
via $RESNETLAB_DATA/fashion-mnist or /usr/share/datasets/fashion-mnist) or --synthetic (random
uint8 images of the same shape, with a learnable class pattern). The CPU's counterpart, the
training step against an eager loop, is bench_train_cpu.py.

    python benchmarks/bench_train_cuda.py                  # resnet20, Fashion-MNIST, batch 512
    python benchmarks/bench_train_cuda.py --synthetic --epochs 1 --rounds 3 --json
    python benchmarks/bench_train_cuda.py --reference-only # the hand-written loop alone
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
from reference_train import reference_fit, synthetic_splits

from resnetlab.data import DataSplits
from resnetlab.hardware import features_line
from resnetlab.infer.bench_report import machine_line

BATCH = 512


def load_splits(a: argparse.Namespace) -> DataSplits:
    """The synthetic data, or the dataset --data names."""
    if a.synthetic:
        return synthetic_splits()
    from resnetlab.data import load_source

    return load_source(a.data)


def median_after_first(rows: list[dict]) -> float:
    """The median images/s of the epochs after the first (which includes compiling)."""
    later = rows[1:] or rows
    return statistics.median(r["images_per_s"] for r in later)


def run_trainer(a: argparse.Namespace, splits: DataSplits, epochs: int) -> dict:
    """resnetlab.train.loop.fit on the GPU; per-epoch rows from its metrics.jsonl."""
    from resnetlab.train.config import TrainConfig
    from resnetlab.train.loop import fit

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
            precision="bf16" if a.device == "cuda" else "fp32",
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
    """Drop compiled graphs and CUDA graph pools, so that the next loop compiles anew."""
    torch._dynamo.reset()
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float | None:
    """The GPU memory the last loop held at its peak (None on a CPU)."""
    if device != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def compare(a: argparse.Namespace) -> int:
    """Run the trainer (unless --reference-only) and the reference in --rounds alternating rounds
    (trainer first in odd rounds, reference first in even ones); print or return the figures.
    Exit status 1 if a loop failed (its traceback is printed, it is not run again, and the other
    still runs), 2 on bad data."""
    from resnetlab.errors import ResnetlabError

    try:
        splits = load_splits(a)
        train = splits.train if a.subset is None else splits.train.subset(a.subset)
    except ResnetlabError as e:
        print(f"bench_train_cuda: data {a.data!r}: {e}", file=sys.stderr)
        return 2
    if len(train) < a.batch_size:
        print(
            f"bench_train_cuda: {len(train)} images make no batch of {a.batch_size}",
            file=sys.stderr,
        )
        return 2
    epochs = 1 + a.epochs
    modes = [None] if a.compile == "off" else ["reduce-overhead", "default"]  # 2nd: fallback
    cuda = a.device == "cuda"
    result: dict = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "machine": machine_line(a.device),  # on CUDA: torch, CUDA, cuDNN, the GPU, its memory
        "cpu": features_line(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "model": a.model,
        "data": "synthetic" if a.synthetic else a.data,
        "train_images": len(train),
        "batch_size": a.batch_size,
        "epochs": epochs,
        "timed_epochs": "all but the first",
        "rounds": a.rounds,
        "errors": [],
    }
    runs: dict[str, list[dict]] = {"trainer": [], "reference": []}
    loops = ["reference"] if a.reference_only else ["trainer", "reference"]

    def failed(what: str) -> None:
        traceback.print_exc()
        last = traceback.format_exc().strip().splitlines()[-1]
        result["errors"].append(f"{what}: {last}")
        free_device(a.device)

    for r in range(a.rounds):
        for name in loops[:] if r % 2 == 0 else loops[::-1]:
            if name == "trainer":
                try:
                    run = run_trainer(a, splits, epochs)
                except Exception:
                    failed(f"trainer (round {r + 1})")
                    loops.remove("trainer")
                    continue
            else:
                run = run_reference(a, splits, train, epochs, modes, failed)
                if run is None:
                    loops.remove("reference")
                    continue
            run["round"] = r + 1
            run["peak_memory_gib"] = peak_memory_gib(a.device)
            run["images_per_s"] = median_after_first(run["epochs"])
            runs[name].append(run)
            free_device(a.device)
    for name, rows in runs.items():
        if rows:  # the median round's figure; each round's figures beside it
            result[name] = {
                "images_per_s": statistics.median(x["images_per_s"] for x in rows),
                "rounds": rows,
            }
    if runs["trainer"] and runs["reference"]:
        pairs = zip(runs["trainer"], runs["reference"], strict=False)
        result["round_ratios"] = [
            round(t["images_per_s"] / ref["images_per_s"], 3) for t, ref in pairs
        ]
        result["ratio"] = round(
            result["trainer"]["images_per_s"] / result["reference"]["images_per_s"], 3
        )
    result["command"] = (
        f"python benchmarks/bench_train_cuda.py --model {a.model} "
        f"--batch-size {a.batch_size} --epochs {a.epochs} --rounds {a.rounds} --lr {a.lr:g}"
        + (" --synthetic" if a.synthetic else f" --data {a.data}")
        + (f" --subset {a.subset}" if a.subset else "")
        + (f" --compile {a.compile}" if a.compile else "")
        + (" --reference-only" if a.reference_only else "")
        + (f" --device {a.device}" if not cuda else "")
    )
    complete = all(len(runs[name]) == a.rounds for name in loops) and "reference" in loops
    status = 0 if complete and ("trainer" in loops or a.reference_only) else 1
    if a.json:
        print(json.dumps(result))
    else:
        report(result, a, len(train))
    return status


def run_reference(a, splits, train, epochs: int, modes: list, failed) -> dict | None:
    """One run of the hand-written loop; if compile mode reduce-overhead fails, the next mode
    (default) is tried, and `modes` keeps only the one that ran, for the later rounds."""
    while modes:
        mode = modes[0]
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
                dtype=torch.bfloat16 if a.device == "cuda" else None,
                test=(splits.test.images, splits.test.labels),
            )
        except Exception:
            failed(f"reference (compile {mode or 'off'})")
            modes.pop(0)
            continue
        del modes[1:]
        ref["compile"] = mode or "off"
        after = cudagraph_skips()
        graphs = a.device == "cuda" and mode == "reduce-overhead" and None not in (skips, after)
        ref["cudagraph_skips"] = after - skips if graphs else None
        return ref
    return None


def report(result: dict, a: argparse.Namespace, train_images: int) -> None:
    """The figures as lines for a person."""

    def percent(v) -> str:
        return "?" if v is None else f"{100 * v:.2f}%"

    def epochs_line(rows: list[dict]) -> str:
        return ", ".join(f"{r['images_per_s']:.0f} img/s loss {r['train_loss']:.3f}" for r in rows)

    print(f"machine: {result['machine']}; CPU {result['cpu']}, {result['threads']} threads")
    print(
        f"{result['device']}, torch {result['torch']}: {a.model} on {result['data']} "
        f"({train_images} train images), batch {a.batch_size}, {result['epochs']} epochs "
        f"(the first, with compiling, not timed)"
    )
    if "trainer" in result:
        print(f"  resnetlab trainer (fit)  : {result['trainer']['images_per_s']:9.0f} images/s")
        for t in result["trainer"]["rounds"]:
            print(
                f"    round {t['round']}: {t['images_per_s']:.0f} images/s ({t['precision']}"
                f"{', compiled' if t['compiled'] else ''}; test acc {percent(t['test_accuracy'])}"
                f" with flip TTA; fit took {t['wall_seconds']:.0f} s with evaluation); epochs: "
                f"{epochs_line(t['epochs'])}"
            )
    if "reference" in result:
        print(f"  hand-written reference   : {result['reference']['images_per_s']:9.0f} images/s")
        for ref in result["reference"]["rounds"]:
            skips = ref["cudagraph_skips"]
            print(
                f"    round {ref['round']}: {ref['images_per_s']:.0f} images/s (compile "
                f"{ref['compile']}; test acc {percent(ref['test_accuracy'])}"
                + (f"; cudagraph skips {skips}" if skips is not None else "")
                + f"); epochs: {epochs_line(ref['epochs'])}"
            )
    if "ratio" in result:
        rounds = ", ".join(f"{x:.2f}x" for x in result["round_ratios"])
        print(f"  ratio trainer/reference  : {result['ratio']:.2f}x (rounds: {rounds})")
    for e in result["errors"]:
        print(f"  FAILED {e}")
    print(f"rerun: {result['command']}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch-size", type=int, default=BATCH)
    p.add_argument(
        "--compile",
        choices=("on", "off"),
        default=None,
        help="on by default (the reference: mode reduce-overhead, then default if that fails)",
    )
    p.add_argument("--data", default="fashion-mnist", help="a dataset name or path")
    p.add_argument("--synthetic", action="store_true", help="random uint8 1x28x28 images")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs, after one warm-up epoch")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of the two loops")
    p.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cpu: the script's own check where there is no GPU (fp32; not a GPU figure)",
    )
    p.add_argument("--subset", type=int, default=None, help="train on the first N images")
    p.add_argument("--lr", type=float, default=0.2, help="peak learning rate (fast recipe's)")
    p.add_argument("--reference-only", action="store_true", help="run the hand-written loop alone")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    for flag in ("batch_size", "epochs", "subset", "rounds"):
        if getattr(a, flag) is not None and getattr(a, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if not a.lr > 0:
        p.error("--lr must be positive")
    if a.device == "cuda" and not torch.cuda.is_available():
        print(
            f"bench_train_cuda: CUDA is not available to torch {torch.__version__} here; run on "
            "a machine with a GPU (on a CPU: benchmarks/bench_train_cpu.py)",
            file=sys.stderr,
        )
        return 2
    return compare(a)


if __name__ == "__main__":
    raise SystemExit(main())
