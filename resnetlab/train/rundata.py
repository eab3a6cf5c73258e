"""A run's data: the source read with the folder options and the size rule, subset, validation;
and fit's data arguments (tensors, datasets, names, paths) as splits.

`train` takes the folder options of `data prepare` (size, mode, skip_bad). A class folder of mixed
image sizes is never trained silently at the size that happens to be most common: with `size`
given every image is resized to it; when fine-tuning (`init_from` weights whose metadata names an
input size) the folder is read at the weights' size; otherwise a folder of mixed sizes is refused
in one line naming the sizes found (resnetlab.data.folders, mixed="refuse"). A folder of one size
is read at that size. Unreadable files fail the run unless skip_bad, which skips them and says how
many on stderr.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..data import DataSplits, ImageDataset
from ..data.classmap import is_unnamed
from ..data.split import split_dataset
from ..errors import ResnetlabError
from .config import TrainConfig
from .logs import plural, warn

IN_MEMORY = "in-memory"  # the dataset's name in logs and metadata when fit is given tensors


def is_folder_source(source: str) -> bool:
    """Whether a data source is a class-folder tree (not a dataset name or another format)."""
    from ..data.sources import canonical_name, detect_format

    if canonical_name(source) is not None:
        return False
    p = Path(source).expanduser()
    return p.is_dir() and detect_format(p) == "folder"


def weights_side(path: str) -> int | None:
    """The square side of the input size a weights file names (None: it names none)."""
    from ..models.weights import read_metadata

    size = read_metadata(path).get("input_size")
    if not size:
        return None
    h, w = size[-2:]
    if h != w:
        raise ResnetlabError(
            f"init_from {path} expects {h}x{w} images; a folder is read at one square side: "
            "give size (--size on the command line)",
            argument="init_from",
        )
    return int(h)


def folder_size(cfg: TrainConfig) -> tuple[int | None, str]:
    """The side a folder source is read at (None: its one size, mixed sizes refused) and a note
    saying where it came from ('' when from `size` or the images themselves)."""
    if cfg.size is not None or not cfg.init_from:
        return cfg.size, ""
    side = weights_side(cfg.init_from)
    if side is None:
        return None, ""
    note = f"{cfg.data}: images read at {side}x{side}, the input size of {cfg.init_from}"
    return side, note


def load_data(cfg: TrainConfig, say=print) -> DataSplits:
    """Read the run's source (folder options, the size rule above), then the subset; `say`
    prints the note of a size taken from the weights (not called when quiet)."""
    from ..data.sources import read_source

    val = cfg.val_split
    val = int(val) if val >= 1 else val  # a count of images, or a fraction of train
    options = dict(val_split=val, seed=cfg.seed, skip_bad=cfg.skip_bad, mode=cfg.mode)
    if is_folder_source(os.fspath(cfg.data)):
        size, note = folder_size(cfg)
        splits, skipped = read_source(cfg.data, size=size, mixed="refuse", **options)
        if note and not cfg.quiet:
            say(note)
    else:
        splits, skipped = read_source(cfg.data, size=cfg.size, **options)
    if skipped:
        warn(f"skipped {plural(len(skipped), 'unreadable image file')}; first: {skipped[0]}")
    if cfg.subset is not None:
        splits.train = splits.train.subset(cfg.subset)
    return splits


def run_splits(cfg: TrainConfig, splits: DataSplits | None) -> DataSplits:
    """The run's splits: `splits` as given (with the subset), else read from cfg.data."""
    if splits is None:
        splits = load_data(cfg)
    elif cfg.subset is not None:
        splits = DataSplits(splits.name, splits.train.subset(cfg.subset), splits.test, splits.val)
    if splits.test is None and splits.val is None and cfg.eval_images is not None:
        raise ResnetlabError(
            f"eval_images {cfg.eval_images}: the run has no test or validation data to evaluate",
            argument="eval_images",
        )
    return splits


# --------------------------------------------------------------------------------------------
# fit's data arguments


def as_splits(train_data: Any, val_data: Any, cfg: TrainConfig) -> tuple[DataSplits | None, str]:
    """fit's data arguments as (splits, dataset name): train_data an ImageDataset, a DataSplits,
    an (images, labels) pair or a dataset name or path (then splits is None, for the trainer to
    read as cfg.data, unless val_data is given); val_data one of the same (of a DataSplits, a name
    or a path, the test split). cfg.val_split holds out a validation split of in-memory data."""
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
