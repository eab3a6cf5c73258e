"""Time to accuracy: wall time from the command's start until the test accuracy first reaches a
threshold (94.0% by default) on Fashion-MNIST, and the best accuracy of the run.

It starts `resnetlab train` as a child process (so the time includes start-up, data loading and
every evaluation), follows metrics.jsonl (test error after every epoch, with a wall-clock stamp)
and prints the figures at the end, beside the machine (the CPU's features, the run's threads, the
GPU on CUDA: read once the run has ended, so as not to weigh on it) and the command to rerun it.
Everything after `--` goes to `resnetlab train` unchanged.

    python benchmarks/time_to_accuracy.py                           # the make-run default
    python benchmarks/time_to_accuracy.py --epochs 30 --out runs/tta-long -- --model resnet20
    python benchmarks/time_to_accuracy.py -- --device cuda                 # on a GPU

train_images_per_s is the median over the epochs after the first (the first includes compiling).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

THRESHOLDS = (0.90, 0.92, 0.93, 0.94, 0.95, 0.955)


def machine(out: str) -> dict:
    """Where the run computed: its device (the GPU's name on CUDA), the CPU's model and features,
    and the threads it used (from its summary.json)."""
    import torch

    from resnetlab.hardware import features_line

    try:
        cfg = json.loads((Path(out) / "summary.json").read_text()).get("config", {})
    except (OSError, ValueError):
        cfg = {}
    device = str(cfg.get("device") or "auto")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else None
    threads = cfg.get("threads") or torch.get_num_threads()  # on CUDA: torch's own count
    return {"device": device, "gpu": gpu, "cpu": features_line(), "threads": threads}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--epochs", type=int, default=None, help="passed to train (default: its own)")
    p.add_argument("--threshold", type=float, default=0.94, help="test accuracy to reach")
    p.add_argument("--out", default="runs/time-to-accuracy")
    p.add_argument("--json", action="store_true")
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    a = p.parse_args(argv)
    if not 0 < a.threshold <= 1:
        p.error("--threshold is a test accuracy, above 0 and at most 1 (e.g. 0.94)")
    if a.epochs is not None and a.epochs < 1:
        p.error("--epochs must be at least 1")

    cmd = [sys.executable, "-m", "resnetlab", "train", "--data", a.data, "--out", a.out]
    if a.epochs is not None:
        cmd += ["--epochs", str(a.epochs)]
    cmd += ["--quiet", "--overwrite", *extra]
    metrics = Path(a.out) / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    start = time.time()
    # with --json stdout holds the JSON alone: train's own lines go to stderr
    proc = subprocess.run(cmd, stdout=sys.stderr if a.json else None)
    end = time.time()
    if proc.returncode != 0 or not metrics.exists():
        print(f"time_to_accuracy: train failed with exit code {proc.returncode}", file=sys.stderr)
        return proc.returncode or 1
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    reached = {}
    for t in sorted(set(THRESHOLDS) | {a.threshold}):
        hit = next((r for r in rows if 1 - r["test_top1_err"] >= t), None)
        reached[f"{100 * t:g}"] = (
            None if hit is None else {"seconds": round(hit["wall_time"] - start, 1),
                                      "epoch": hit["epoch"]}
        )  # fmt: skip
    best = min(rows, key=lambda r: r["test_top1_err"])
    steady = rows[1:] or rows  # the first epoch includes compiling
    result = {
        "command": " ".join(cmd),
        "rerun": " ".join(["python", "benchmarks/time_to_accuracy.py", *sys.argv[1:]]),
        **machine(a.out),
        "threshold": a.threshold,
        "seconds_to_threshold": (reached[f"{100 * a.threshold:g}"] or {}).get("seconds"),
        "best_test_accuracy": 1 - best["test_top1_err"],
        "best_epoch": best["epoch"],
        "final_test_accuracy": 1 - rows[-1]["test_top1_err"],
        "epochs": len(rows),
        "total_seconds": round(end - start, 1),
        "train_images_per_s": round(statistics.median(r["images_per_s"] for r in steady), 1),
        "reached": reached,
    }
    if a.json:
        print(json.dumps(result, indent=1))
        return 0
    t = result["seconds_to_threshold"]
    on = f"{result['gpu']} ({result['device']}); CPU " if result["gpu"] else "CPU "
    print(f"machine: {on}{result['cpu']}, {result['threads']} threads")
    print(f"command: {result['command']}")
    for name, hit in reached.items():
        when = f"{hit['seconds']:.0f} s (epoch {hit['epoch']})" if hit else "not reached"
        print(f"  test accuracy >= {name}%: {when}")
    print(
        f"time to {100 * a.threshold:g}%: {'not reached' if t is None else f'{t:.0f} s'}; best "
        f"{100 * result['best_test_accuracy']:.2f}% (epoch {result['best_epoch']}), final "
        f"{100 * result['final_test_accuracy']:.2f}% after {result['epochs']} epochs, "
        f"{result['total_seconds']:.0f} s in all, {result['train_images_per_s']:.0f} train img/s"
    )
    print(f"rerun: {result['rerun']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
