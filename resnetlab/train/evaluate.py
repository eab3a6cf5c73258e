"""Evaluation: top-1 / top-5 error, per-class accuracy, the confusion matrix; optional flip TTA."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class EvalResult:
    """Counts over one split; errors are fractions."""

    n: int
    top1_err: float
    top5_err: float
    loss: float
    confusion: torch.Tensor  # (classes, classes) int64, rows = true class, columns = predicted

    @property
    def top1_acc(self) -> float:
        """1 - top-1 error."""
        return 1.0 - self.top1_err

    def per_class_acc(self) -> list[float]:
        """Accuracy of each true class (NaN where a class has no samples)."""
        totals = self.confusion.sum(1).double()
        hits = self.confusion.diagonal().double()
        return (hits / totals).tolist()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    *,
    num_classes: int,
    device: str = "cpu",
    tta_flip: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> EvalResult:
    """Run `model` in eval mode over `loader`; flip TTA averages both views' logits."""
    was_training = model.training
    model.eval()
    k = min(5, num_classes)
    n = 0
    wrong1 = 0
    wrong5 = 0
    loss_sum = 0.0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    dev_type = torch.device(device).type
    ctx = (
        torch.autocast(dev_type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    try:
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            with ctx:
                logits = model(x)
                if tta_flip:
                    logits = logits + model(x.flip(3))
            logits = logits.float().cpu()
            if tta_flip:
                logits = logits / 2
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            topk = logits.topk(k, dim=1).indices
            pred = topk[:, 0]
            wrong1 += int((pred != y).sum())
            wrong5 += int((~(topk == y[:, None]).any(1)).sum())
            confusion += torch.bincount(
                y * num_classes + pred, minlength=num_classes * num_classes
            ).view(num_classes, num_classes)
            n += len(y)
    finally:
        model.train(was_training)
    n_safe = max(n, 1)
    return EvalResult(n, wrong1 / n_safe, wrong5 / n_safe, loss_sum / n_safe, confusion)


def plot_confusion(confusion: torch.Tensor, classes: list[str], path, title: str = "") -> None:
    """Confusion matrix as a PNG: rows true class, columns predicted, cells row-normalised."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import atomic_write

    c = confusion.double()
    frac = (c / c.sum(1, keepdim=True).clamp_min(1)).numpy()
    n = len(classes)
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=120)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                if confusion[i, j]:
                    colour = "white" if frac[i, j] > 0.5 else "black"
                    ax.text(
                        j,
                        i,
                        str(int(confusion[i, j])),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color=colour,
                    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
