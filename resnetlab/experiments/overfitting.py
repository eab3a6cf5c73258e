"""The overfitting study: ResNets of growing depth trained on small and larger class-balanced
subsets of the real training set, without and with regularisation, each for the same number of
optimiser steps, then tested on the whole test split.

The ResNet paper's own case is ResNet-1202 on CIFAR-10: training error like ResNet-110's, test
error 7.93% against 6.43%, "without strong regularization". This study puts the claim on a grid
anyone can run on a laptop: depth (any 6n+2) x training-set size x regularisation, where

- `none`: no weight decay and no augmentation;
- `standard`: the paper's weight decay (1e-4) and its 4-pixel translation and flips;
- `strong`: standard plus stochastic depth (drop-path rate growing linearly to 0.5 over the
  blocks, as Huang et al. trained ResNet-1202) and dropout (0.3) before the classifier.

Each subset is drawn per seed from a seeded permutation of every class, the first size/classes
images of each, so the small set lies inside the larger one. Steps, not epochs, are equal: the
study refuses a step count that is not a whole number of epochs of every size (the batch size
divides 1,000 and 10,000 for that reason), so a 1,000-image net sees its images ten times as
often as a 10,000-image one. The training error reported is measured after training, in
evaluation mode, on the net's own training images without augmentation (so dropout and
stochastic depth do not inflate it); the gap is test error minus that. Each net is an ordinary
run in `OUT/resnet<depth>-n<size>-<regularisation>-s<seed>/`, run by runner.py in sequence, on
local workers or on Ray, and a killed study resumes every unfinished net. This file is the grid,
its checks and the nets; overfitting_report.py writes the JSON, the table and the figure.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import BatchLoader, DataSplits, ImageDataset
from ..data.sources import input_paths
from ..errors import ResnetlabError
from ..files import atomic_write, check_output_dir
from ..models import load_model
from ..train.config import TrainConfig, check_config
from ..train.recipes import get_recipe
from .finished import is_fraction, read_finished
from .nets import cifar_net, parse_depths
from .overfitting_report import write_results
from .runner import check_workers, run_tasks
from .tasks import (
    NetTask,
    check_done_data,
    diverged_fields,
    is_diverged,
    plan_tasks,
    read_diverged,
    read_json,
    source_data,
    study_lock,
)

TRAIN_EVAL_FILE = "train_eval.json"  # in each run's folder: the error on its training images
MAX_SEEDS = 100
EVALS = 4  # test evaluations per net during training (on EVAL_IMAGES); the last is on all
EVAL_IMAGES = 2000
EVAL_BATCH = 500
STRONG = {"drop_path_rate": 0.5, "drop_rate": 0.3}
# per regularisation: weight decay (None: the recipe's), augmentation, model options
REGULARISATION: dict[str, tuple[float | None, bool, dict[str, float]]] = {
    "none": (0.0, False, {}),
    "standard": (None, True, {}),
    "strong": (None, True, STRONG),
}


@dataclass
class OverfittingConfig:
    """One grid: every (depth, size, regularisation, seed) for the same number of steps."""

    data: str
    out: str
    depths: tuple[int, ...] = (20, 56)
    sizes: tuple[int, ...] = (1000, 10000)
    regularisation: tuple[str, ...] = ("none", "standard", "strong")
    steps: int = 1000
    seeds: int = 1
    batch_size: int = 100
    lr: float | None = None  # None: the paper recipe's 0.1
    precision: str = "auto"
    compile: str = "off"
    device: str = "auto"
    threads: int | None = None
    workers: int = 1
    ray: str | None = None


def parse_sizes(text: str) -> tuple[int, ...]:
    """'1000,10000' -> (1000, 10000); each a whole number of images, at least 1."""
    sizes = []
    for item in str(text).split(","):
        try:
            n = int(item.strip())
        except ValueError:
            raise ResnetlabError(
                f"sizes {text!r}: {item.strip()!r} is not a whole number of images; e.g. "
                "1000,10000",
                argument="sizes",
            ) from None
        if n < 1:
            raise ResnetlabError(f"sizes {text!r}: {n} images is no training set", argument="sizes")
        sizes.append(n)
    return tuple(sorted(dict.fromkeys(sizes)))


def parse_regularisation(text: str) -> tuple[str, ...]:
    """'none,strong' -> ('none', 'strong'); an unknown name fails in one line."""
    names = tuple(dict.fromkeys(r.strip() for r in str(text).split(",") if r.strip()))
    if not names:
        raise ResnetlabError(
            f"regularisation {text!r}: none given; use {', '.join(REGULARISATION)}",
            argument="regularisation",
        )
    for r in names:
        if r not in REGULARISATION:
            raise ResnetlabError(
                f"unknown regularisation {r!r}; choose from {', '.join(REGULARISATION)}"
            )
    return names


def check_study(oc: OverfittingConfig) -> OverfittingConfig:
    """Validate the grid before any data is read (one line each): its own settings here (the
    steps and batch its arithmetic needs first), the training settings its nets share by
    train/config.py's check_config, on the first net's TrainConfig."""
    parse_depths(",".join(str(d) for d in oc.depths))
    if not oc.sizes:
        raise ResnetlabError("sizes is empty; e.g. 1000,10000", argument="sizes")
    parse_sizes(",".join(str(n) for n in oc.sizes))
    parse_regularisation(",".join(oc.regularisation))
    for key in ("steps", "seeds", "batch_size"):
        v = getattr(oc, key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ResnetlabError(f"{key} must be at least 1, got {v!r}", argument=key)
    if oc.seeds > MAX_SEEDS:
        raise ResnetlabError(f"seeds {oc.seeds}: at most {MAX_SEEDS}", argument="seeds")
    check_workers(oc.workers, oc.ray)
    # the nets' shared training settings, on a probe of one batch an epoch (sizes: check_sizes)
    check_config(net_config(oc, oc.depths[0], oc.batch_size, oc.regularisation[0], 0))
    return oc


def check_sizes(oc: OverfittingConfig, data: DataSplits) -> None:
    """Each size a class-balanced set the training split can give, of one batch or more, and the
    steps a whole number of epochs of every size; else one line saying what would do."""
    train = data.train
    classes = len(train.classes)
    counts = torch.bincount(train.labels, minlength=classes)
    smallest = int(counts.min())
    for n in oc.sizes:
        if n % classes:
            lo, hi = n - n % classes, n - n % classes + classes
            raise ResnetlabError(
                f"sizes: {n} images cannot be class-balanced over {classes} classes; use a "
                f"multiple of {classes}, e.g. {lo or hi} or {hi}",
                argument="sizes",
            )
        if n // classes > smallest:
            raise ResnetlabError(
                f"sizes: {n} images is more than the training split of {data.name} gives "
                f"class-balanced ({len(train):,} images, {smallest:,} in its smallest class: at "
                f"most {smallest * classes})",
                argument="sizes",
            )
        if n < oc.batch_size:
            raise ResnetlabError(
                f"sizes: {n} images make no batch of {oc.batch_size}; use --batch-size "
                f"{n} or less, or larger sizes",
                argument="sizes",
            )
    per_epoch = [n // oc.batch_size for n in oc.sizes]
    unit = math.lcm(*per_epoch)
    if oc.steps % unit:
        lo = oc.steps - oc.steps % unit
        hint = f"{lo} or {lo + unit}" if lo else f"{unit}"
        raise ResnetlabError(
            f"steps {oc.steps} is not a whole number of epochs of every size (at batch "
            f"{oc.batch_size}: {', '.join(map(str, per_epoch))} steps an epoch); use {hint}",
            argument="steps",
        )


def balanced_subset(train: ImageDataset, size: int, seed: int) -> ImageDataset:
    """`size` images, size/classes of each class: the first of each class's seeded permutation
    (so a smaller set of the same seed lies inside a larger one), in the split's order."""
    g = torch.Generator().manual_seed(seed)
    per = size // len(train.classes)
    picked = []
    for c in range(len(train.classes)):
        idx = torch.nonzero(train.labels == c).flatten()
        picked.append(idx[torch.randperm(len(idx), generator=g)[:per]])
    keep = torch.cat(picked).sort().values
    return ImageDataset(train.images[keep], train.labels[keep], list(train.classes))


@torch.inference_mode()
def error_on(weights: Path, images: ImageDataset) -> float:
    """Top-1 error of the weights (evaluation mode, fp32, no augmentation) on `images`."""
    model, meta = load_model(weights)
    model.eval()
    loader = BatchLoader(images, EVAL_BATCH, train=False, mean=meta["mean"], std=meta["std"],
                         channels_last=False)  # fmt: skip
    wrong = 0
    for x, y in loader:
        wrong += int((model(x).argmax(1) != y).sum())
    return wrong / len(images)


def _weights_stamp(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


@dataclass
class OverfitTask(NetTask):
    """A net of the grid: trains on its class-balanced subset, then measures its error there."""

    depth: int = 20
    size: int = 1000
    regularisation: str = "none"
    seed: int = 0

    def splits(self) -> DataSplits:
        """The seeded class-balanced subset of the training split; the whole test split."""
        data = source_data(self.cfg.data)
        return DataSplits(data.name, balanced_subset(data.train, self.size, self.seed), data.test)

    def after(self, splits: DataSplits) -> None:
        """Measure and keep the error on the training subset (stamped with the weights file)."""
        self.train_error(splits.train)

    def train_error(self, train: ImageDataset) -> float:
        """The error on the training subset: kept in the run folder, measured when missing (or
        when what is kept is not a fraction for these weights and this many images)."""
        out = Path(self.cfg.out)
        weights = out / "last.safetensors"
        kept = out / TRAIN_EVAL_FILE
        if kept.is_file():
            value = read_json(kept)
            err = value.get("train_err")
            if (
                value.get("weights") == _weights_stamp(weights)
                and value.get("images") == len(train)
                and is_fraction(err)
            ):
                return float(err)
        err = error_on(weights, train)
        text = json.dumps({"train_err": err, "images": len(train),
                           "weights": _weights_stamp(weights)}) + "\n"  # fmt: skip
        atomic_write(kept, lambda tmp: Path(tmp).write_text(text))
        return err


def net_config(oc: OverfittingConfig, depth: int, size: int, reg: str, seed: int) -> TrainConfig:
    """The TrainConfig of one net of the grid (steps made epochs of its size)."""
    model, options = cifar_net("resnet", depth)
    weight_decay, augment, extra = REGULARISATION[reg]
    epochs = oc.steps // (size // oc.batch_size)
    return TrainConfig(
        model=model,
        data=oc.data,
        out=str(Path(oc.out) / f"{model}-n{size}-{reg}-s{seed}"),
        recipe="paper",
        epochs=epochs,
        batch_size=oc.batch_size,
        lr=oc.lr,
        weight_decay=weight_decay,
        augment=augment,
        seed=seed,
        precision=oc.precision,
        compile=oc.compile,
        model_options={**options, **extra},
        log_every=max(1, oc.steps // 50),
        eval_every=max(1, epochs // EVALS),
        eval_images=EVAL_IMAGES,
        device=oc.device,
        threads=oc.threads,
        quiet=True,
    )


def run_overfitting(oc: OverfittingConfig, say=print) -> list[dict[str, Any]]:
    """Train every net of the grid not trained yet; write overfitting.json, .md and .png; return
    the per-net records."""
    oc = check_study(oc)
    check_output_dir(oc.out, input_paths(oc.data))
    data = source_data(oc.data)
    if data.test is None:
        raise ResnetlabError(f"{oc.data} has no test split; the study tests every net on one")
    check_sizes(oc, data)
    with study_lock(Path(oc.out)):
        return _run_locked(oc, data, say)


def _run_locked(oc: OverfittingConfig, data: DataSplits, say) -> list[dict[str, Any]]:
    """run_overfitting, its folder held."""
    grid = [(d, n, r, s) for s in range(oc.seeds) for n in oc.sizes for d in oc.depths
            for r in oc.regularisation]  # fmt: skip
    tasks = []
    for i, (d, n, r, s) in enumerate(grid):
        cfg = net_config(oc, d, n, r, s)
        label = f"[{i + 1}/{len(grid)}] resnet-{d} on {n:,} images, {r}, seed {s}"
        evals = (cfg.epochs // cfg.eval_every) * min(EVAL_IMAGES, len(data.test))
        tasks.append(OverfitTask(label, cfg, oc.steps, evals + len(data.test) + n, depth=d,
                                 size=n, regularisation=r, seed=s))  # fmt: skip
    plan_tasks(tasks)
    check_done_data(tasks, data)
    say(f"grid: depths {', '.join(map(str, oc.depths))} x sizes "
        f"{', '.join(f'{n:,}' for n in oc.sizes)} x {', '.join(oc.regularisation)} x "
        f"{oc.seeds} seed(s); {oc.steps:,} steps of {oc.batch_size} images per net")  # fmt: skip

    def done(task: OverfitTask) -> None:
        r = read_net(task, data)
        say(
            f"{task.label}: train err {100 * r['final_train_err']:.2f}% (its own images), test "
            f"err {100 * r['final_test_err']:.2f}%, gap {100 * r['gap']:.2f} points"
        )

    run_tasks(tasks, data, oc.out, workers=oc.workers, ray=oc.ray, threads=oc.threads, say=say,
              on_done=done)  # fmt: skip
    records = [read_net(t, data) for t in tasks]
    study = {k: v for k, v in asdict(oc).items() if k not in ("out", "workers", "ray", "threads")}
    seeds = f", mean ± std of {oc.seeds} seeds" if oc.seeds > 1 else ""
    title = (
        f"Overfitting on {data.name}: {oc.steps:,} steps of {oc.batch_size} images per net{seeds}"
    )
    write_results(
        records, Path(oc.out), {**study, "dataset": data.name}, title, tuple(REGULARISATION)
    )
    return records


def read_net(task: OverfitTask, data: DataSplits) -> dict[str, Any]:
    """The net's entry in overfitting.json (errors as fractions; None for a net that diverged,
    with the step it diverged at)."""
    out = Path(task.cfg.out)
    weight_decay, augment, extra = REGULARISATION[task.regularisation]
    grid = {"depth": task.depth, "family": "resnet", "model": task.cfg.model,
            "train_size": task.size, "regularisation": task.regularisation,
            "seed": task.seed}  # fmt: skip
    if is_diverged(out):
        d = read_diverged(out)
        decay = get_recipe(task.cfg.recipe).weight_decay if weight_decay is None else weight_decay
        return {**grid, **diverged_fields(d, ("final_train_err", "final_test_err", "gap",
                "train_batch_err")), "weight_decay": decay, "augment": augment,
                "options": extra, "run_dir": str(out)}  # fmt: skip
    run = read_finished(task.cfg, "resnet", task.depth)
    summary, rows = run.summary, run.epochs
    tested = [r for r in rows if "test_top1_err" in r]
    train_err = task.train_error(balanced_subset(data.train, task.size, task.seed))
    test_err = tested[-1]["test_top1_err"]
    return {
        **grid,
        "model": summary["model"],
        "params": run.params,
        "diverged": False,
        "final_train_err": train_err,
        "final_test_err": test_err,
        "gap": test_err - train_err,
        "train_batch_err": rows[-1]["train_top1_err"],
        "steps": summary["steps"],
        "epochs": len(rows),
        "weight_decay": summary.get("recipe", {}).get("weight_decay", weight_decay),
        "augment": augment,
        "options": extra,
        "precision": summary.get("precision"),  # what it trained in (auto resolved)
        "train_seconds": summary["train_seconds"],
        "run_dir": str(out),
    }
