"""The set-up: `set_up` makes a checked run's Trainer (trainer.py) in named steps, defined below it.

Each step is one decision of the run, given what the steps before it made: the checkpoint to
resume, whether the data can be trained on, the model and its normalisation, the loaders, and the
fresh state (optimiser, schedule, grad scaler, weight average). Device, precision, channels_last,
compilation, threads and where the training images live are not decided here: the run's Plan
(policy.resolve) says, and the loaders and the state follow it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..data import DataSplits, ImageDataset
from ..data.loader import BatchLoader
from ..data.normalise import compute_mean_std
from ..data.split import stratified_holdout
from ..errors import ResnetlabError
from ..models import get_entry, read_metadata
from ..models.factory import model_for_data
from ..policy import Plan, Settings, apply, resolve
from . import checkpoint as ckpt
from . import distributed, logs
from . import resume as resuming
from .callbacks import EpochState
from .config import TrainConfig
from .distributed import DistInfo
from .finetune import (
    check_model_fits,
    freeze,
    head_follows_classes,
    init_from,
    param_groups,
    weights_norm,
)
from .recipes import Recipe, auto_recipe, get_recipe, too_few_steps
from .report import describe_run
from .resume import check_same_folder, run_folder
from .rundata import run_splits
from .rundir import clear_run
from .state import RunState
from .step import EMA, Schedule, TrainStep, fused_sgd
from .trainer import READ_EVERY, Trainer

EVAL_BATCH = 500


def set_up(
    cfg: TrainConfig,
    splits: Any,
    resume: str | None,
    info: DistInfo,
    model: nn.Module | None = None,
    callbacks: Sequence[Any] = (),
    t_start: float = 0.0,
) -> Trainer:
    """The run's parts, restored from the run's checkpoint when resuming; `model`: a ready
    model to train in place instead of a fresh one of cfg.model."""
    weights_ck, state_ck = checkpoint_to_resume(cfg, resume)
    fresh = state_ck is None
    cfg = replace(cfg, recipe=auto_recipe(cfg.recipe, info.device, cfg.batch_size))
    recipe = get_recipe(cfg.recipe, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                        weight_decay=cfg.weight_decay)  # fmt: skip
    if not cfg.augment:
        recipe = replace(recipe, pad=0, flip=False, erase=0.0)
    # settings given again: applied from the next step and recorded, or refused in one line
    changes = [] if fresh else resuming.setting_changes(state_ck, cfg, recipe, resume)
    entry = get_entry(cfg.model)  # an unknown name fails before the data is read
    splits = run_splits(cfg, splits)
    fingerprint = resuming.data_fingerprint(splits)
    if not fresh:
        resuming.check_data(state_ck, fingerprint, resume, say=info.is_main)
    check_trainable(cfg, splits, recipe, info)

    torch.manual_seed(cfg.seed)
    user_model, mean, std, note = build_model(cfg, entry, splits, model, fresh=fresh)
    model = distributed.convert_sync_bn(user_model, info, cfg.sync_bn)
    if cfg.init_from and fresh:
        note = init_from(model, cfg.init_from, splits.train.classes)
    frozen = freeze(model, cfg.freeze)
    plan = plan_run(cfg, recipe, entry, splits, info)  # resolved once, and applied
    if plan.threads is not None:  # kept in the checkpoint: a resumed run uses as many
        cfg = replace(cfg, threads=plan.threads)
    model.to(plan.device)
    if plan.channels_last:
        model.to(memory_format=torch.channels_last)
    train, every, part = make_loaders(cfg, recipe, splits, plan, info, mean, std)

    state = new_state(cfg, recipe, model, entry.depth, plan, recipe.epochs * len(train))
    state.data_fingerprint = fingerprint
    if not fresh:
        resuming.check_position((state_ck.get("loader") or {}).get("batch", 0), len(train), resume)
        state.restore(weights_ck, state_ck, resume)
        state.changes.extend(changes)
    net = distributed.wrap(model, info, sync_bn=cfg.sync_bn)
    loss = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    step_fn = TrainStep(net, state.optimizer, loss, device=plan.device, dtype=plan.dtype,
                        compiled=plan.compiled, world_size=info.world_size,
                        scaler=state.scaler)  # fmt: skip
    meta = {"classes": list(splits.train.classes), "input_size": list(splits.train.image_shape),
            "mean": list(mean), "std": list(std), "dataset": splits.name,
            "tta": recipe.tta_flip}  # fmt: skip
    events = EpochState(epochs=recipe.epochs, model=model, has_test="test" in every,
                        has_val="val" in every, epoch=state.epoch, step=state.step,
                        history=state.history)  # fmt: skip
    trainer = Trainer(
        cfg=cfg, plan=plan, info=info, recipe=recipe, splits=splits, meta=meta, model=model,
        user_model=user_model, net=net, frozen=frozen, train_loader=train, eval_loaders=every,
        epoch_loaders=part, step_fn=step_fn, state=state,
        events=events, t_start=t_start, note_init=note, changes=changes,
        read_every=READ_EVERY.get(torch.device(plan.device).type, 1),
        last_checkpoint=time.time(),
    )  # fmt: skip
    begin(trainer, resume, list(callbacks))
    return trainer


def begin(t: Trainer, resume: str | None, callbacks: list[Any]) -> None:
    """Clear an earlier run's files from a fresh run's folder, add the logs' callbacks and
    say what the run is (rank 0)."""
    t.callbacks = callbacks
    if not t.info.is_main:
        return
    if resume is None:  # a fresh run leaves nothing of an earlier one
        clear_run(t.out)  # (the command line asks for --overwrite first)
    t.callbacks = [*logs.log_callbacks(t.cfg.log, t.out), *callbacks]
    t.out.mkdir(parents=True, exist_ok=True)
    for line in describe_run(t, resume) if not t.cfg.quiet else []:
        logs.say(line)
    # a fine-tune starts from trained weights: a short schedule is its normal case
    short = too_few_steps(t.recipe, t.steps_per_epoch)
    if short and resume is None and not t.cfg.init_from:
        logs.warn(short)


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
