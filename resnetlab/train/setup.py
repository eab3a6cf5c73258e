"""The set-up's steps, in the order `Trainer.set_up` (trainer.py) takes them.

Each step is one decision of the run, given what the steps before it made: the checkpoint to
resume, whether the data can be trained on, the model and its normalisation, the loaders, and the
fresh state (optimiser, schedule, grad scaler, weight average). Device, precision, channels_last,
compilation, threads and where the training images live are not decided here: the run's Plan
(policy.resolve) says, and the loaders and the state follow it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data import DataSplits, ImageDataset
from ..data.loader import BatchLoader
from ..data.normalise import compute_mean_std
from ..data.split import stratified_holdout
from ..errors import ResnetlabError
from ..models import read_metadata
from ..models.factory import model_for_data
from ..policy import Plan, Settings, apply, resolve
from . import checkpoint as ckpt
from .config import TrainConfig
from .distributed import DistInfo
from .finetune import check_model_fits, head_follows_classes, param_groups, weights_norm
from .recipes import Recipe
from .resume import check_same_folder, run_folder
from .state import RunState
from .step import EMA, Schedule, fused_sgd

EVAL_BATCH = 500


def checkpoint_to_resume(cfg: TrainConfig, resume: str | None) -> tuple[Any, Any]:
    """(weights, state) of the run's own checkpoint when resuming (resume.py), else Nones."""
    if resume is None:
        return None, None
    weights, state = ckpt.load_checkpoint(ckpt.checkpoint_path(run_folder(resume)))
    if state["config"].get("model") != cfg.model:
        was = state["config"].get("model")
        raise ResnetlabError(f"checkpoint in {resume} is of model {was!r}, not {cfg.model!r}")
    check_same_folder(resume, cfg.out)
    return weights, state


def check_trainable(cfg: TrainConfig, splits: DataSplits, recipe: Recipe, info: DistInfo) -> None:
    """Fail in one line unless the data has two classes or more and the processes share the
    batch evenly."""
    n = len(splits.train.classes)
    if n < 2:
        raise ResnetlabError(f"{cfg.data}: {n} class(es); training needs 2+")
    if recipe.batch_size % info.world_size:
        raise ResnetlabError(
            f"batch size {recipe.batch_size} is not divisible by {info.world_size} processes",
            argument="batch_size",
        )


def build_model(
    cfg: TrainConfig, entry, splits: DataSplits, model: nn.Module | None, *, fresh: bool
) -> tuple[nn.Module, list[float], list[float], str | None]:
    """(model, mean, std, note): a new model of cfg.model for the data, or the ready one checked
    against it (on a fresh run its head follows the data's class names, which `note` says);
    normalised as its weights were trained, else with the training images' statistics."""
    shape, classes = tuple(splits.train.image_shape), list(splits.train.classes)
    note = None
    if model is None:
        model = model_for_data(cfg.model, shape, len(classes), cfg.model_options)
        weights_meta = read_metadata(cfg.init_from) if cfg.init_from else {}
    else:
        check_model_fits(model, entry, shape, len(classes))
        weights_meta = getattr(model, "resnetlab_metadata", None) or {}
        if fresh and not cfg.init_from:  # (init_from matches the head itself)
            note = head_follows_classes(model, classes)
    mean, std = weights_norm(weights_meta, shape[0])
    if mean is None:
        mean, std = compute_mean_std(splits.train.images)
    return model, mean, std, note


def plan_run(cfg: TrainConfig, recipe: Recipe, entry, splits: DataSplits, info: DistInfo) -> Plan:
    """The run's Plan (policy.resolve), applied to this process: what it asked for, for a model
    of `entry`'s kind and the recipe's steps over the training images (as many as the train
    loader makes)."""
    steps = len(splits.train) // info.world_size // (recipe.batch_size // info.world_size)
    plan = resolve(Settings(
        device=info.device, precision=cfg.precision, compile=cfg.compile, threads=cfg.threads,
        conv=not entry.is_mlp, world_size=info.world_size, steps=recipe.epochs * steps,
        data_bytes=splits.train.images.nbytes,
    ))  # fmt: skip
    apply(plan)
    return plan


def make_loaders(
    cfg: TrainConfig, recipe: Recipe, splits: DataSplits, plan: Plan, info: DistInfo, mean, std
) -> tuple[BatchLoader, dict[str, BatchLoader], dict[str, BatchLoader]]:
    """(train loader, split -> every image, split -> the epoch's subset): the training images
    on the device when the plan says so (else batches cross from the host), in the plan's
    memory format; each process its share."""
    train = BatchLoader(
        splits.train, recipe.batch_size // info.world_size, train=True, mean=mean, std=std,
        pad=recipe.pad, flip=recipe.flip, erase=recipe.erase, seed=cfg.seed,
        channels_last=plan.channels_last, rank=info.rank, world_size=info.world_size,
        device=plan.device if plan.data_on_device else None,
    )  # fmt: skip
    if len(train) == 0:
        raise ResnetlabError(
            f"{len(splits.train)} training images make no batch of {recipe.batch_size}; "
            "lower the batch size or raise the subset"
        )
    kw: dict[str, Any] = dict(train=False, mean=mean, std=std, channels_last=plan.channels_last)
    every, part = {}, {}
    for name, ds in (("test", splits.test), ("val", splits.val)):
        if ds is None or not len(ds):
            continue
        every[name] = BatchLoader(ds, EVAL_BATCH, **kw)
        some = eval_subset(ds, cfg.eval_images, cfg.seed)
        part[name] = every[name] if some is ds else BatchLoader(some, EVAL_BATCH, **kw)
    return train, every, part


def eval_subset(ds: ImageDataset, n: int | None, seed: int) -> ImageDataset:
    """A fixed subset of `n` images of `ds` (seeded, stratified by class), or `ds` itself when
    `n` is None or covers it."""
    if n is None or n >= len(ds):
        return ds
    idx = stratified_holdout(ds.labels, n, seed)
    return ImageDataset(ds.images[idx], ds.labels[idx], list(ds.classes))


def new_state(
    cfg: TrainConfig, recipe: Recipe, model: nn.Module, depth: int, plan: Plan, total_steps: int
) -> RunState:
    """A fresh RunState: the fused SGD over the body's and the head's groups, the schedule, the
    grad scaler (fp16 on CUDA only) and the weight average when the recipe keeps one."""
    body_scale = cfg.body_lr_scale
    if body_scale is None:
        body_scale = 0.1 if cfg.init_from else 1.0
    optimizer = fused_sgd(param_groups(model, recipe, recipe.lr, body_scale), lr=recipe.lr,
                          momentum=recipe.momentum, nesterov=recipe.nesterov)  # fmt: skip
    fp16 = plan.dtype == torch.float16 and plan.cuda
    return RunState(
        model=model,
        optimizer=optimizer,
        schedule=Schedule(optimizer, recipe, total_steps, depth),
        scaler=torch.amp.GradScaler("cuda", enabled=fp16),
        ema=EMA(model, recipe.ema_decay) if recipe.ema_decay > 0 else None,
    )
