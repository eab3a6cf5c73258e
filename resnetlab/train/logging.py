"""What a run leaves: metrics.jsonl, error curves (paper style), a summary, a progress display."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..files import atomic_write

METRICS_FILE = "metrics.jsonl"
STEPS_FILE = "steps.jsonl"
CURVES_FILE = "curves.png"
SUMMARY_FILE = "summary.json"


def write_metrics(
    run_dir: str | os.PathLike, rows: list[dict[str, Any]], name: str = METRICS_FILE
) -> Path:
    """Write every epoch's row as one JSON line (the whole file, atomically: resume-safe)."""
    path = Path(run_dir) / name
    text = "".join(json.dumps(r) + "\n" for r in rows)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


def write_steps(run_dir: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """steps.jsonl: the training error of the batches as trained, every `log_every` steps."""
    return write_metrics(run_dir, rows, STEPS_FILE)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl file."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def write_summary(run_dir: str | os.PathLike, summary: dict[str, Any]) -> Path:
    """Write summary.json atomically."""
    path = Path(run_dir) / SUMMARY_FILE
    text = json.dumps(summary, indent=1) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


def plot_curves(run_dir: str | os.PathLike, rows: list[dict[str, Any]], title: str) -> Path | None:
    """Train error dashed, test error solid, in percent against epochs (as in the ResNet paper)."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    marker = "o" if len(rows) <= 30 else None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    ax.plot(
        epochs,
        [100 * r["train_top1_err"] for r in rows],
        "--",
        color="C0",
        marker=marker,
        label="train error",
    )
    tested = [r for r in rows if "test_top1_err" in r]  # epochs without an evaluation have none
    if tested:
        ax.plot(
            [r["epoch"] for r in tested],
            [100 * r["test_top1_err"] for r in tested],
            "-",
            color="C0",
            marker=marker,
            label="test error",
        )
    if any("val_top1_err" in r for r in rows):
        ax.plot(
            [r["epoch"] for r in rows if "val_top1_err" in r],
            [100 * r["val_top1_err"] for r in rows if "val_top1_err" in r],
            ":",
            color="C1",
            label="validation error",
        )
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    path = Path(run_dir) / CURVES_FILE
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path


class Progress:
    """Loss, accuracy, images/s, ETA: a tqdm bar on a terminal, else a plain line now and then."""

    def __init__(self, total: int, desc: str, *, enabled: bool = True, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.total = total
        self.desc = desc
        self.count = 0
        self.start = time.perf_counter()
        self.bar = None
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every = max(1, -(-total // 5))  # plain mode: about five lines per epoch
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, desc=desc, file=self.stream, leave=False, dynamic_ncols=True
            )

    def update(
        self, n: int, loss: float | None = None, acc: float | None = None, images: int = 0
    ) -> None:
        """Record n more steps (or batches); show loss and accuracy when given, and speed."""
        self.count += n
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        speed = images / max(elapsed, 1e-9)
        if self.bar is not None:
            shown = {} if loss is None else {"loss": f"{loss:.3f}"}
            shown.update({} if acc is None else {"acc": f"{100 * acc:.1f}%"})
            self.bar.set_postfix(**shown, img_s=f"{speed:.0f}")
            self.bar.update(n)
        elif self.count // self.every > (self.count - n) // self.every or self.count == self.total:
            eta = elapsed / max(self.count, 1) * (self.total - self.count)
            shown = "" if loss is None else f"loss {loss:.4f} "
            shown += "" if acc is None else f"acc {100 * acc:.2f}% "
            print(
                f"{self.desc} {self.count}/{self.total} {shown}{speed:.0f} img/s eta {eta:.0f}s",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        """Remove the bar."""
        if self.bar is not None:
            self.bar.close()


def window_row(window, step: int, steps_per_epoch: int, lr: float) -> dict[str, Any]:
    """A steps.jsonl row from the sums of a window of steps (a step.Tally)."""
    n = max(window.count, 1)
    return {
        "step": step,
        "epoch": step / steps_per_epoch,
        "train_top1_err": 1 - window.correct / n,
        "train_loss": window.loss / n,
        "images": window.count,
        "lr": lr,
    }


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """The line printed at an epoch's end."""
    line = (
        f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} "
        f"err {100 * row['train_top1_err']:.2f}%"
    )
    if "test_top1_err" in row:  # epochs without an evaluation (eval_every) have no test error
        top5 = f"(top-5 {100 * row['test_top5_err']:.2f}%)"
        line += f"  test err {100 * row['test_top1_err']:.2f}% {top5}"
    if "val_top1_err" in row:
        line += f"  val err {100 * row['val_top1_err']:.2f}%"
    return line + (f"  lr {row['lr']:.4g}  {row['images_per_s']:.0f} img/s  {row['seconds']:.1f}s")
