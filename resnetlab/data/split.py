"""Seeded, class-stratified hold-out splits: a validation split, or a test split if none."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ResnetlabError
from .dataset import ImageDataset


def holdout_count(n: int, amount: int | float, what: str = "split") -> int:
    """How many of n samples `amount` asks for: an int is a count, a float in (0, 1) a fraction."""
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise ResnetlabError(f"{what} must be a count or a fraction, got {amount!r}")
    if isinstance(amount, float) and not amount.is_integer():
        if not 0.0 < amount < 1.0:
            raise ResnetlabError(f"{what} fraction must lie in (0, 1), got {amount}")
        k = int(round(amount * n))
    else:
        k = int(amount)
    if k < 0 or k >= n:
        raise ResnetlabError(
            f"{what} of {k} samples must be at least 0 and below the {n} available"
        )
    return k


def stratified_holdout(labels: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """Indices (sorted) of `count` samples drawn per class in proportion to its size, seeded."""
    y = labels.cpu().numpy()
    n = len(y)
    if count == 0:
        return torch.zeros(0, dtype=torch.int64)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    classes, sizes = np.unique(y, return_counts=True)
    quota = sizes * count / n
    take = np.floor(quota).astype(np.int64)
    # Largest remainders get the leftover samples; ties go to the lower class index.
    order = sorted(range(len(classes)), key=lambda i: (-(quota[i] - take[i]), i))
    for i in order[: count - int(take.sum())]:
        take[i] += 1
    chosen = []
    shuffled = y[perm]
    for c, k in zip(classes, take):
        if k:
            chosen.append(perm[shuffled == c][:k])
    idx = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    return torch.from_numpy(idx.astype(np.int64))


def split_dataset(
    ds: ImageDataset, amount: int | float, seed: int = 0, what: str = "split"
) -> tuple[ImageDataset, ImageDataset | None]:
    """(rest, held out): `amount` samples held out, stratified by class and seeded."""
    k = holdout_count(len(ds), amount, what)
    if k == 0:
        return ds, None
    held = stratified_holdout(ds.labels, k, seed)
    mask = torch.ones(len(ds), dtype=torch.bool)
    mask[held] = False
    rest = ImageDataset(ds.images[mask], ds.labels[mask], ds.classes)
    return rest, ImageDataset(ds.images[held], ds.labels[held], ds.classes)
