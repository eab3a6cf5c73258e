"""Setting a run up: data, model, precision, loaders, optimiser, schedule, step and state.

`set_up` turns a TrainConfig (and, when resuming, a checkpoint) into the parts the loop runs;
each decision of device, precision and compilation comes from resnetlab.policy.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from ..data import DataSplits, ImageDataset
from ..data.classmap import is_unnamed, match_head
from ..data.loader import BatchLoader, fits_on_device
from ..data.normalise import compute_mean_std
from ..data.split import split_dataset, stratified_holdout
from ..errors import ResnetlabError
from ..models import get_entry, read_metadata
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
from .logs import plural
from .recipes import Schedule, auto_recipe, get_recipe, lr_note
from .resume import (
    change_text,
    check_data,
    check_position,
    check_same_folder,
    data_fingerprint,
    run_folder,
    setting_changes,
)
from .rundata import load_run_data
from .state import RunState
from .step import TrainStep, fused_sgd

EVAL_BATCH = 500
READ_EVERY = {"cpu": 1, "cuda": 50}  # steps between reads of the device's tallies


class Run(SimpleNamespace):
    """What set_up builds: cfg (completed), recipe, splits, classes, num_classes, model, net
    (DDP-wrapped), user_model (the model given, or the one built), frozen parts, dtype,
    channels_last, train/test/val loaders, eval_loaders and epoch_loaders (split name -> loader:
    every image, and the per-epoch subset), steps_per_epoch, state (RunState), step_fn
    (TrainStep), compiled, resident, read_every, meta, note_init."""


def load_data(cfg: TrainConfig) -> DataSplits:
    """Read the source through resnetlab.data (folder options and size rule, validation split,
    subset): train/rundata.py."""
    return load_run_data(cfg)


IN_MEMORY = "in-memory"  # the dataset's name in logs and metadata when fit is given tensors


def as_splits(train_data: Any, val_data: Any, cfg: TrainConfig) -> tuple[DataSplits | None, str]:
    """fit's data arguments as (splits, dataset name): train_data an ImageDataset, a DataSplits,
    an (images, labels) pair or a dataset name or path (then splits is None, for set_up to read
    as cfg.data, unless val_data is given); val_data one of the same (of a DataSplits, a name or
    a path, the test split). cfg.val_split holds out a validation split of in-memory data."""
    if isinstance(train_data, (str, os.PathLike)):
        name = os.fspath(train_data)
        if val_data is None:
            return None, name
        splits = load_data(replace(cfg, data=name))
    elif isinstance(train_data, DataSplits):
        splits, name = train_data, train_data.name
    else:
        splits = DataSplits(IN_MEMORY, as_dataset(train_data, "train_data"), None)
        name = IN_MEMORY
    if cfg.val_split and splits.val is None and not isinstance(train_data, (str, os.PathLike)):
        if val_data is not None:
            raise ResnetlabError(
                f"val_split {cfg.val_split} and val_data: give one of them", argument="val_split"
            )
        val = int(cfg.val_split) if cfg.val_split >= 1 else cfg.val_split
        train, held = split_dataset(splits.train, val, cfg.seed, what="val_split")
        splits = DataSplits(splits.name, train, splits.test, held)
    if val_data is not None:
        if splits.val is not None:
            raise ResnetlabError(
                "val_data given, but train_data already has a validation split; give one of them",
                argument="val_data",
            )
        if isinstance(val_data, (str, os.PathLike)):
            val_data = load_data(replace(cfg, data=os.fspath(val_data), val_split=0.0, subset=None))
        if isinstance(val_data, DataSplits):
            val_data = val_data.test
        val = with_classes_of(as_dataset(val_data, "val_data"), splits.train.classes)
        splits = DataSplits(splits.name, splits.train, splits.test, val)
    return splits, name


def as_dataset(data: Any, what: str) -> ImageDataset:
    """An ImageDataset, or one made of an (images uint8 (N, C, H, W), labels) pair whose classes
    are "0", "1", ... ; else one line saying what `what` should be."""
    if isinstance(data, ImageDataset):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        images, labels = (torch.as_tensor(v) for v in data)
        if labels.is_floating_point() or labels.dtype == torch.bool or labels.ndim != 1:
            raise ResnetlabError(
                f"{what} labels of {labels.dtype} {tuple(labels.shape)}: expected whole numbers, "
                "one per image",
                argument=what,
            )
        if len(labels) and int(labels.min()) < 0:
            raise ResnetlabError(
                f"{what} label {int(labels.min())}: expected class indices >= 0", argument=what
            )
        top = int(labels.max()) + 1 if len(labels) else 0
        return ImageDataset(images, labels, [str(i) for i in range(top)])
    raise ResnetlabError(
        f"{what} {type(data).__name__}: expected an ImageDataset, a DataSplits, an "
        "(images, labels) pair, or a dataset name or path",
        argument=what,
    )


def with_classes_of(ds: ImageDataset, classes: list[str]) -> ImageDataset:
    """`ds` with its labels as indices of `classes` (matched by name; by index where `ds` has no
    names); one line naming the classes `classes` lacks."""
    if list(ds.classes) == list(classes):
        return ds
    if is_unnamed(ds.classes):
        top = len(ds.classes)
        if top > len(classes):
            raise ResnetlabError(
                f"val_data has label {top - 1} but train_data has {len(classes)} classes",
                argument="val_data",
            )
        return ImageDataset(ds.images, ds.labels, list(classes))
    unknown = [c for c in ds.classes if c not in classes]
    if unknown:
        raise ResnetlabError(
            f"val_data has classes train_data lacks: {', '.join(unknown[:5])}; expected classes "
            f"among {', '.join(classes[:10])}",
            argument="val_data",
        )
    table = torch.tensor([classes.index(c) for c in ds.classes], dtype=torch.int64)
    return ImageDataset(ds.images, table[ds.labels], list(classes))


def set_up(
    cfg: TrainConfig,
    splits: DataSplits | None,
    resume: str | None,
    info: distributed.DistInfo,
    model: nn.Module | None = None,
) -> Run:
    """Everything a run needs, restored from the checkpoint at `resume` when given; `model`: a
    ready model to train (its weights change in place) instead of a fresh one of `cfg.model`."""
    r = Run()
    r.info, r.out = info, Path(cfg.out)
    r.device = device = info.device
    weights_ck, state_ck = None, None
    if resume is not None:  # the run's own folder (resume.py), never a checkpoint elsewhere
        weights_ck, state_ck = ckpt.load_checkpoint(ckpt.checkpoint_path(run_folder(resume)))
    if state_ck is not None and state_ck["config"].get("model") != cfg.model:
        was = state_ck["config"].get("model")
        raise ResnetlabError(f"checkpoint in {resume} is of model {was!r}, not {cfg.model!r}")
    if state_ck is not None:
        check_same_folder(resume, cfg.out)
    cfg = replace(cfg, recipe=auto_recipe(cfg.recipe, device, cfg.batch_size))
    recipe = get_recipe(cfg.recipe, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                        weight_decay=cfg.weight_decay)  # fmt: skip
    if not cfg.augment:
        recipe = replace(recipe, pad=0, flip=False, erase=0.0)
    # settings given again: applied from the next step and recorded, or refused in one line
    r.changes = setting_changes(state_ck, cfg, recipe, resume) if state_ck is not None else []
    entry = get_entry(cfg.model)  # an unknown name fails before the data is read
    r.recipe = recipe

    # data
    if splits is None:
        splits = load_data(cfg)
    elif cfg.subset is not None:
        splits = DataSplits(splits.name, splits.train.subset(cfg.subset), splits.test, splits.val)
    if splits.test is None and splits.val is None and cfg.eval_images is not None:
        raise ResnetlabError(
            f"eval_images {cfg.eval_images}: the run has no test or validation data to evaluate",
            argument="eval_images",
        )
    r.splits = splits
    r.fingerprint = data_fingerprint(splits)
    if state_ck is not None:
        check_data(state_ck, r.fingerprint, resume, say=info.is_main)
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

    # model, normalisation, precision, threads
    torch.manual_seed(cfg.seed)
    ready = model is not None
    if not ready:
        model = model_for_data(cfg.model, image_shape, r.num_classes, cfg.model_options)
        weights_meta = read_metadata(cfg.init_from) if cfg.init_from else {}
    else:
        check_model_fits(model, entry, image_shape, r.num_classes)
        weights_meta = getattr(model, "resnetlab_metadata", None) or {}
    # fine-tuning normalises as the weights were trained; else with the training images' stats
    mean, std = weights_norm(weights_meta, image_shape[0])
    if mean is None:
        mean, std = compute_mean_std(train_set.images)
    r.user_model = model
    model = distributed.convert_sync_bn(model, info, cfg.sync_bn)
    fresh = state_ck is None
    r.note_init = init_from(model, cfg.init_from, r.classes) if cfg.init_from and fresh else None
    if ready and fresh and r.note_init is None:
        r.note_init = head_follows_classes(model, r.classes)
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
    r.resident = fits_on_device(train_set.images.nbytes, device)  # else batches cross from the host
    on = device if r.resident else None
    r.train_loader = BatchLoader(
        train_set, local_batch, train=True, mean=mean, std=std, device=on, **aug, **shard
    )
    if len(r.train_loader) == 0:
        raise ResnetlabError(
            f"{len(train_set)} training images make no batch of {recipe.batch_size}; "
            "lower the batch size or raise the subset"
        )
    # evaluation: the final one on every image; per-epoch ones on `eval_images` of each split
    eval_kw = dict(train=False, mean=mean, std=std, channels_last=r.channels_last)
    r.eval_loaders, r.epoch_loaders = {}, {}  # split name -> loader
    for name, ds in (("test", splits.test), ("val", splits.val)):
        if ds is None or not len(ds):
            continue
        r.eval_loaders[name] = BatchLoader(ds, EVAL_BATCH, **eval_kw)
        part = eval_subset(ds, cfg.eval_images, cfg.seed)
        r.epoch_loaders[name] = (
            r.eval_loaders[name] if part is ds else BatchLoader(part, EVAL_BATCH, **eval_kw)
        )
    r.test_loader, r.val_loader = r.eval_loaders.get("test"), r.eval_loaders.get("val")
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
    r.state.data_fingerprint = r.fingerprint
    if state_ck is not None:
        check_position((state_ck.get("loader") or {}).get("batch", 0), r.steps_per_epoch, resume)
        r.state.restore(weights_ck, state_ck, resume)
        r.state.changes.extend(r.changes)
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


def check_model_fits(model: nn.Module, entry, image_shape: tuple, num_classes: int) -> None:
    """Fail in one line unless a ready model takes images of `image_shape` (C, H, W) and has one
    output per class of the data."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    outputs = getattr(head, "out_features", 0)
    if not outputs:
        raise ResnetlabError(
            "model has no classifier head (num_classes=0 or features_only); build it with "
            f"num_classes={num_classes} to train it on this data",
            argument="model",
        )
    if outputs != num_classes:
        raise ResnetlabError(
            f"model has {outputs} outputs but the data has {num_classes} classes; build it with "
            f"num_classes={num_classes} (or call model.reset_classifier({num_classes}))",
            argument="model",
        )
    c, h, w = image_shape
    if entry.is_mlp:
        have, want, what = getattr(model, "in_features", None), c * h * w, "in_features"
    else:
        conv1 = getattr(model, "conv1", None)
        have, want, what = getattr(conv1, "in_channels", None), c, "in_chans"
    if have is not None and have != want:
        raise ResnetlabError(
            f"model takes {what}={have} but the data's images are {c}x{h}x{w}; build it with "
            f"{what}={want}",
            argument="model",
        )


def head_follows_classes(model: nn.Module, classes: list[str]) -> str | None:
    """A ready model whose head names its classes (pretrained_cfg) meets data that names them in
    another order or names others: its rows follow the names (a known class keeps its row, a new
    one gets a fresh row); one line saying so, or None when nothing moves."""
    names = (getattr(model, "pretrained_cfg", None) or {}).get("classes")
    head = model.get_classifier()
    n = head.out_features
    if not names or len(names) != n or list(names) == list(classes):
        return None
    match = match_head(names, n, classes, weights="the model")
    if match.rows == tuple(range(n)):
        return None
    fresh = nn.Linear(head.in_features, n, bias=head.bias is not None)  # seeded by set_up
    with torch.no_grad():
        for param, new in ((head.weight, fresh.weight), (head.bias, fresh.bias)):
            if param is None:
                continue
            old = param.detach().clone()
            for j, r in enumerate(match.rows):
                param[j] = old[r] if r is not None else new[j].to(param.dtype)
    return match.note


def weights_norm(meta: dict, channels: int) -> tuple[list | None, list | None]:
    """The mean and std that weights were trained with (their metadata's), for `channels` input
    channels: one value repeated for a stem adapted to more channels, averaged for a grey one;
    (None, None) when the metadata has none or they do not fit."""
    mean, std = meta.get("mean"), meta.get("std")
    if mean is None or std is None:
        return None, None
    mean = [float(v) for v in (mean if isinstance(mean, list) else [mean])]
    std = [float(v) for v in (std if isinstance(std, list) else [std])]
    if len(mean) != len(std) or not mean:
        return None, None
    if len(mean) == channels:
        return mean, std
    if len(mean) == 1:  # grey weights in a stem repeated over colour channels
        return mean * channels, std * channels
    if channels == 1:  # colour weights summed into a grey stem
        return [sum(mean) / len(mean)], [sum(std) / len(std)]
    return None, None


def eval_subset(ds: ImageDataset, n: int | None, seed: int) -> ImageDataset:
    """A fixed subset of `n` images of `ds` (seeded, stratified by class), or `ds` itself when
    `n` is None or covers it."""
    if n is None or n >= len(ds):
        return ds
    idx = stratified_holdout(ds.labels, n, seed)
    return ImageDataset(ds.images[idx], ds.labels[idx], list(ds.classes))


def describe(run, resume: str | None = None) -> list[str]:
    """The run's one-line description (and where it resumed, and what it was initialised from)."""
    cfg, recipe, info, s = run.cfg, run.recipe, run.info, run.state
    shape = "x".join(map(str, run.meta["input_size"]))
    sp = run.splits
    sizes = " / ".join(
        f"{len(ds)} {name}"
        for name, ds in (("train", sp.train), ("test", sp.test), ("validation", sp.val))
        if ds is not None
    )
    threads = f", {plural(cfg.threads, 'thread')}" if cfg.threads else ""
    lines = [
        f"train {cfg.model} on {sp.name}: {sizes} images {shape}, {run.num_classes} classes; "
        f"recipe {recipe.name}, {plural(recipe.epochs, 'epoch')} of "
        f"{plural(run.steps_per_epoch, 'step')}, batch {recipe.batch_size}, lr {recipe.lr:g}"
        f"{lr_note(recipe)}; {run.device}, {precision_name(run.dtype)}"
        f"{', channels_last' if run.channels_last else ''}"
        f"{', compiled' if run.compiled else ''}"
        f"{', CUDA graphs' if run.step_fn.graphs else ''}"
        f"{', data on the device' if run.resident and is_cuda(run.device) else ''}"
        f"{f', {info.world_size} processes' if info.enabled else ''}"
        f"{threads}"
    ]
    if run.note_init:
        lines.append(run.note_init)
    if cfg.eval_every > 1 or cfg.eval_images is not None:
        every = f"every {cfg.eval_every} epochs" if cfg.eval_every > 1 else "every epoch"
        part = f" on {cfg.eval_images} images of each split" if cfg.eval_images else ""
        lines.append(f"evaluated {every}{part}; the last epoch on every image")
    if resume is not None:
        lines.append(
            f"resumed from {resume} at epoch {s.epoch + 1}, batch {s.batch}, step {s.step}"
        )
        if getattr(run, "changes", None):
            lines.append(f"changed on resume: {change_text(run.changes)}")
    return lines
