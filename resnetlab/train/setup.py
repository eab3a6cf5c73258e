"""Setting a run up: data, model, precision, loaders, optimiser, schedule, step and state.

`set_up` turns a TrainConfig (and, when resuming, a checkpoint) into the parts the loop runs;
each decision of device, precision and compilation comes from resnetlab.policy.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from ..data import DataSplits
from ..data.loader import BatchLoader, compute_mean_std
from ..data.resident import ResidentLoader, fits_on_device
from ..errors import ResnetlabError
from ..models import get_entry
from ..models.factory import model_for_data
from ..policy import (
    cpu_threads,
    is_cuda,
    precision_name,
    resolve_compile,
    resolve_precision,
    use_compile_cache,
)
from . import checkpoint as ckpt
from . import distributed
from .average import EMA
from .config import TrainConfig
from .finetune import freeze, init_from, param_groups
from .recipes import Schedule, auto_recipe, get_recipe
from .state import RunState
from .step import TrainStep, fused_sgd

EVAL_BATCH = 500
READ_EVERY = {"cpu": 1, "cuda": 50}  # steps between reads of the device's tallies


class Run(SimpleNamespace):
    """What set_up builds: cfg (completed), recipe, splits, classes, num_classes, model, net
    (DDP-wrapped), frozen parts, dtype, channels_last, train/test/val loaders, steps_per_epoch,
    state (RunState), step_fn (TrainStep), compiled, resident, read_every, meta, note_init."""


def load_data(cfg: TrainConfig) -> DataSplits:
    """Read the source through resnetlab.data (with the validation split and subset)."""
    from ..data import load_source

    val = cfg.val_split
    val = int(val) if val >= 1 else val  # a count of images, or a fraction of train
    splits = load_source(cfg.data, val_split=val, seed=cfg.seed)
    if cfg.subset is not None:
        splits.train = splits.train.subset(cfg.subset)
    return splits


def set_up(
    cfg: TrainConfig, splits: DataSplits | None, resume: str | None, info: distributed.DistInfo
) -> Run:
    """Everything a run needs, restored from the checkpoint at `resume` when given."""
    r = Run()
    r.info, r.out = info, Path(cfg.out)
    r.device = device = info.device
    weights_ck, state_ck = ckpt.load_checkpoint(resume) if resume is not None else (None, None)
    if state_ck is not None and state_ck["config"].get("model") != cfg.model:
        was = state_ck["config"].get("model")
        raise ResnetlabError(f"checkpoint in {resume} is of model {was!r}, not {cfg.model!r}")
    cfg = replace(cfg, recipe=auto_recipe(cfg.recipe, device, cfg.batch_size))
    recipe = get_recipe(cfg.recipe, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr)
    if not cfg.augment:
        recipe = replace(recipe, pad=0, flip=False, erase=0.0)
    entry = get_entry(cfg.model)  # an unknown name fails before the data is read
    r.recipe = recipe

    # data
    if splits is None:
        splits = load_data(cfg)
    elif cfg.subset is not None:
        splits = DataSplits(splits.name, splits.train.subset(cfg.subset), splits.test, splits.val)
    r.splits = splits
    train_set = splits.train
    r.classes = list(train_set.classes)
    r.num_classes = len(r.classes)
    image_shape = tuple(train_set.image_shape)
    if r.num_classes < 2:
        raise ResnetlabError(f"{cfg.data}: {r.num_classes} class(es); training needs 2+")
    if recipe.batch_size % info.world_size:
        raise ResnetlabError(
            f"batch size {recipe.batch_size} is not divisible by {info.world_size} processes",
            argument="batch_size",
        )
    mean, std = compute_mean_std(train_set.images)

    # model, precision, threads
    torch.manual_seed(cfg.seed)
    model = model_for_data(cfg.model, image_shape, r.num_classes, cfg.model_options)
    model = distributed.convert_sync_bn(model, info, cfg.sync_bn)
    fresh = state_ck is None
    r.note_init = init_from(model, cfg.init_from, r.classes) if cfg.init_from and fresh else None
    r.frozen = freeze(model, cfg.freeze)
    body_scale = cfg.body_lr_scale
    if body_scale is None:
        body_scale = 0.1 if cfg.init_from else 1.0
    if not is_cuda(device):
        cfg = replace(cfg, threads=cpu_threads(cfg.threads, info.world_size))
        torch.set_num_threads(cfg.threads)  # kept in the checkpoint: a resumed run uses as many
    r.dtype = resolve_precision(cfg.precision, device)
    r.channels_last = not entry.is_mlp
    model.to(device)
    if r.channels_last:
        model.to(memory_format=torch.channels_last)
    r.cfg, r.model = cfg, model

    # loaders
    local_batch = recipe.batch_size // info.world_size
    aug = dict(pad=recipe.pad, flip=recipe.flip, erase=recipe.erase, seed=cfg.seed)
    shard = dict(channels_last=r.channels_last, rank=info.rank, world_size=info.world_size)
    r.resident = fits_on_device(train_set.images.nbytes, device)
    if r.resident:
        r.train_loader = ResidentLoader(
            train_set, local_batch, device=device, mean=mean, std=std, **aug, **shard
        )
    else:  # larger than the device's share: batches cross from the host
        r.train_loader = BatchLoader(
            train_set, local_batch, train=True, mean=mean, std=std, **aug, **shard
        )
    if len(r.train_loader) == 0:
        raise ResnetlabError(
            f"{len(train_set)} training images make no batch of {recipe.batch_size}; "
            "lower the batch size or raise the subset"
        )
    eval_kw = dict(train=False, mean=mean, std=std, channels_last=r.channels_last)
    r.test_loader = BatchLoader(splits.test, EVAL_BATCH, **eval_kw)
    r.val_loader = BatchLoader(splits.val, EVAL_BATCH, **eval_kw) if splits.val else None
    r.steps_per_epoch = len(r.train_loader)
    total_steps = recipe.epochs * r.steps_per_epoch

    # optimiser, schedule, step, state
    optimizer = fused_sgd(
        param_groups(model, recipe, recipe.lr, body_scale),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
    )
    scaler = torch.amp.GradScaler("cuda", enabled=r.dtype == torch.float16 and is_cuda(device))
    r.state = RunState(
        model=model,
        optimizer=optimizer,
        schedule=Schedule(optimizer, recipe, total_steps, entry.depth),
        scaler=scaler,
        ema=EMA(model, recipe.ema_decay) if recipe.ema_decay > 0 else None,
    )
    if state_ck is not None:
        r.state.restore(weights_ck, state_ck, resume)
    r.compiled = resolve_compile(cfg.compile, device, total_steps)
    if r.compiled:
        use_compile_cache()
    r.net = distributed.wrap(model, info, sync_bn=cfg.sync_bn)
    r.step_fn = TrainStep(
        r.net,
        optimizer,
        nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing),
        device=device,
        dtype=r.dtype,
        compiled=r.compiled,
        world_size=info.world_size,
        scaler=scaler,
    )
    r.read_every = READ_EVERY.get(torch.device(device).type, 1)
    r.meta = {
        "classes": r.classes,
        "input_size": list(image_shape),
        "mean": list(mean),
        "std": list(std),
        "dataset": splits.name,
        "tta": recipe.tta_flip,
    }
    return r


def describe(run, resume: str | None = None) -> list[str]:
    """The run's one-line description (and where it resumed, and what it was initialised from)."""
    cfg, recipe, info, s = run.cfg, run.recipe, run.info, run.state
    shape = "x".join(map(str, run.meta["input_size"]))
    lines = [
        f"train {cfg.model} on {run.splits.name}: {len(run.splits.train)} train / "
        f"{len(run.splits.test)} test images {shape}, {run.num_classes} classes; recipe "
        f"{recipe.name}, {recipe.epochs} epochs of {run.steps_per_epoch} steps, batch "
        f"{recipe.batch_size}, lr {recipe.lr:g}; {run.device}, {precision_name(run.dtype)}"
        f"{', channels_last' if run.channels_last else ''}"
        f"{', compiled' if run.compiled else ''}"
        f"{', CUDA graphs' if run.step_fn.graphs else ''}"
        f"{', data on the device' if run.resident and is_cuda(run.device) else ''}"
        f"{f', {info.world_size} processes' if info.enabled else ''}"
        f"{f', {cfg.threads} thread(s)' if cfg.threads else ''}"
    ]
    if run.note_init:
        lines.append(run.note_init)
    if resume is not None:
        lines.append(
            f"resumed from {resume} at epoch {s.epoch + 1}, batch {s.batch}, step {s.step}"
        )
    return lines
