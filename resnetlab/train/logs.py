"""What a run leaves and says: metrics.jsonl and its CSV twin, error curves (paper style), a
summary, TensorBoard events on request, a progress display and the lines a run prints.

Logs are for tools as much as for people: every JSON-lines log has a CSV beside it (a header, one
row per line, the same numbers), which a spreadsheet or pandas reads as is; `--log tensorboard`
adds the epoch rows as TensorBoard scalars (torch.utils.tensorboard, the optional `tensorboard`
extra).
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ResnetlabError
from ..files import atomic_write

METRICS_FILE = "metrics.jsonl"
STEPS_FILE = "steps.jsonl"
CURVES_FILE = "curves.png"
SUMMARY_FILE = "summary.json"
TENSORBOARD_DIR = "tensorboard"
LOG_CHOICES = ("tensorboard",)
TOP5_MIN_CLASSES = 6  # with 5 classes or fewer the true class is always among the top 5


def write_metrics(
    run_dir: str | os.PathLike, rows: list[dict[str, Any]], name: str = METRICS_FILE
) -> Path:
    """Write every row as one JSON line, and the same rows as CSV beside it (NAME.csv); each
    file whole and atomically (resume-safe)."""
    path = Path(run_dir) / name
    text = "".join(json.dumps(r) + "\n" for r in rows)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    write_csv(path.with_suffix(".csv"), rows)
    return path


def write_csv(path: str | os.PathLike, rows: list[dict[str, Any]]) -> Path:
    """Rows as CSV with a header: every key of any row, in order of first appearance; a row
    without a key leaves its cell empty; numbers are written as JSON writes them."""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow([_cell(r.get(k)) for k in columns])
    text = buf.getvalue()
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return Path(path)


def _cell(v: Any) -> str:
    if v is None:
        return ""
    return v if isinstance(v, str) else json.dumps(v)


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


def epoch_line(row: dict[str, Any], epochs: int, num_classes: int | None = None) -> str:
    """The line printed at an epoch's end (top-5 error only with 6 classes or more)."""
    line = (
        f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} "
        f"err {100 * row['train_top1_err']:.2f}%"
    )
    if "test_top1_err" in row:  # epochs without an evaluation (eval_every) have no test error
        line += f"  test err {100 * row['test_top1_err']:.2f}%"
        if shows_top5(num_classes):
            line += f" (top-5 err {100 * row['test_top5_err']:.2f}%)"
    if "val_top1_err" in row:
        line += f"  val err {100 * row['val_top1_err']:.2f}%"
    return line + (f"  lr {row['lr']:.4g}  {row['images_per_s']:.0f} img/s  {row['seconds']:.1f}s")


def shows_top5(num_classes: int | None) -> bool:
    """Whether top-5 figures say anything: with 5 classes or fewer they are always perfect."""
    return num_classes is None or num_classes >= TOP5_MIN_CLASSES


def final_line(
    split: str,
    top1_acc: float,
    top5_acc: float,
    num_classes: int | None,
    tta: bool,
    weights: str | os.PathLike,
) -> str:
    """The run's last line: 'test accuracy 91.22% (top-5 acc 99.84%, flip TTA) -> WEIGHTS'
    (`split` names the data; top-5 only with 6 classes or more)."""
    notes = [f"top-5 acc {100 * top5_acc:.2f}%"] if shows_top5(num_classes) else []
    notes += ["flip TTA"] if tta else []
    said = f" ({', '.join(notes)})" if notes else ""
    return f"{split} accuracy {100 * top1_acc:.2f}%{said} -> {weights}"


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 epoch', '2 epochs' (`many` for irregular plurals: plural(n, 'class', 'classes'))."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def say(text: str) -> None:
    """Print a line of the run's log (callers print on rank 0 only)."""
    print(text, flush=True)


def warn(text: str) -> None:
    """One warning line on stderr (printed even with quiet: it says the run may not do what the
    user expects)."""
    print(f"warning: {text}", file=sys.stderr, flush=True)


def package_installed(name: str) -> bool:
    """Whether a package can be imported (without importing it)."""
    return importlib.util.find_spec(name) is not None


def check_logs(names: list[str]) -> None:
    """Refuse, in one line, a log that is unknown or whose package is not installed."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ResnetlabError(f"log {names!r}: expected a list of log names", argument="log")
    for name in names:
        if name not in LOG_CHOICES:
            raise ResnetlabError(
                f"log {name!r}: use {', '.join(LOG_CHOICES)} (metrics.jsonl and metrics.csv are "
                "always written)",
                argument="log",
            )
        if name == "tensorboard" and not package_installed("tensorboard"):
            raise ResnetlabError(
                "log tensorboard needs the tensorboard package: pip install "
                "'resnetlab[tensorboard]'",
                argument="log",
            )


def log_callbacks(names: list[str], run_dir: str | os.PathLike) -> list[Any]:
    """The callbacks that write the logs `names` asks for (the trainer calls them on rank 0)."""
    return [TensorBoardLog(run_dir)] if "tensorboard" in names else []


class TensorBoardLog:
    """Epoch rows as TensorBoard scalars in RUN/tensorboard/ (train/loss, test/top1_err, lr, ...),
    at the epoch as the step; flushed after every row, so a killed run keeps what it logged.
    A callback (train/callbacks.py): the trainer calls on_epoch_end and on_train_end."""

    SKIP = ("epoch", "step", "elapsed", "wall_time")

    def __init__(self, run_dir: str | os.PathLike) -> None:
        check_logs(["tensorboard"])
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(run_dir) / TENSORBOARD_DIR
        self.writer = SummaryWriter(log_dir=str(self.dir))

    def write(self, row: dict[str, Any]) -> None:
        """Add one epoch's numbers."""
        for key, v in row.items():
            if key in self.SKIP or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            self.writer.add_scalar(scalar_name(key), v, row["epoch"], walltime=row.get("wall_time"))
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the events file."""
        self.writer.close()

    def on_epoch_end(self, state: Any) -> None:
        """Write the epoch's row (the callbacks' EpochState.metrics)."""
        self.write(state.metrics)

    def on_train_end(self, state: Any) -> None:
        """Close the events file."""
        self.close()


def scalar_name(key: str) -> str:
    """A row key as a TensorBoard tag: train_loss -> train/loss, val_top1_err -> val/top1_err."""
    split, sep, rest = key.partition("_")
    return f"{split}/{rest}" if sep and split in ("train", "test", "val") else key
