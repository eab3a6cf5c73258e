"""One entry point for every data source: a dataset name, or a path whose format is detected.

Names: fashion-mnist, mnist, cifar10, cifar100 (spellings such as fashion_mnist or cifar-10 are
accepted). A name wins over a same-named directory in the working directory; write ./mnist for
the directory. Paths, tried in this order:
- a .npz file (arrays x and y, or x_train, y_train, x_test, y_test);
- a prepared cache (resnetlab-data.json beside images.npy, from `resnetlab data prepare`);
- a directory of the four IDX files (Fashion-MNIST or MNIST layout, .gz or raw);
- a directory of CIFAR-10 or CIFAR-100 python-version batches (or its official sub-folder);
- a class-folder tree (ROOT/<class>/<image>, optionally split into train/ and test/ or val/).
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Any

from ..errors import ResnetlabError
from .cifar import CIFAR_LAYOUTS, detect_cifar, load_cifar, load_cifar_dir
from .dataset import DataSplits
from .download import dataset_dirs
from .folders import is_class_tree, read_image_folder
from .idx import IDX_SOURCES, find_idx_files, load_idx_dataset, load_idx_dir
from .npz import load_npz
from .prepared import is_prepared, load_prepared
from .split import split_dataset

log = logging.getLogger("resnetlab.data")

DATASET_NAMES = (*IDX_SOURCES, *CIFAR_LAYOUTS)
_ALIASES = {"".join(ch for ch in n if ch.isalnum()): n for n in DATASET_NAMES}


def canonical_name(source: str) -> str | None:
    """The dataset name a spelling stands for (fashion_mnist -> fashion-mnist), or None."""
    return _ALIASES.get("".join(ch for ch in source.lower() if ch.isalnum()))


def input_paths(source: str | os.PathLike) -> tuple[str, ...]:
    """Where a data source lives on disk, for keeping outputs apart from it: a path as given; for
    a data set's name, every folder it may be read from or downloaded into."""
    text = os.fspath(source)
    name = canonical_name(text) if isinstance(source, str) else None  # as read_source reads it
    if name in IDX_SOURCES:
        debian = IDX_SOURCES[name].debian_dir
        return tuple(map(str, dataset_dirs(name, [debian] if debian is not None else [])))
    if name in CIFAR_LAYOUTS:
        return tuple(map(str, dataset_dirs(name)))
    return (text,)


def detect_format(path: str | os.PathLike) -> str:
    """The format of a path: npz, prepared, idx, cifar10, cifar100 or folder."""
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() == ".npz":
            return "npz"
        raise ResnetlabError(
            f"{p}: a file, but not an .npz; give a directory (IDX, CIFAR batches, class folders)"
        )
    if not p.is_dir():
        what = "not a regular file or a directory" if p.exists() else "no such file or directory"
        raise ResnetlabError(f"{p}: {what}")
    if is_prepared(p):
        return "prepared"
    if find_idx_files(p) is not None:
        return "idx"
    cifar = detect_cifar(p)
    if cifar is not None:
        return cifar[0].name
    if is_class_tree(p):
        return "folder"
    raise ResnetlabError(
        f"{p}: format not recognised (expected IDX files, CIFAR batches, class sub-folders of "
        "images, or a prepared cache)"
    )


def _unknown(source: str) -> ResnetlabError:
    if os.sep in source or source.startswith((".", "~")) or source.lower().endswith(".npz"):
        return ResnetlabError(f"{source}: no such file or directory")
    close = difflib.get_close_matches(source.lower(), DATASET_NAMES, n=3, cutoff=0.5)
    hint = (
        f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(DATASET_NAMES)}"
    )
    return ResnetlabError(f"unknown data source {source!r}: not a dataset name or a path{hint}")


def read_source(
    source: str | os.PathLike,
    *,
    val_split: int | float = 0,
    seed: int = 0,
    skip_bad: bool = False,
    size: int | None = None,
    mode: str | None = None,
    test_fraction: float = 0.2,
    mixed: str = "common",
) -> tuple[DataSplits, list[str]]:
    """Load a dataset by name or path (format detected): (splits, messages of bad files skipped).

    val_split: samples held out of train as `val` (a count, or a fraction in (0, 1)), seeded and
    stratified by class. skip_bad, size, mode, mixed (images of mixed sizes without `size`: the
    most common size, or refused) and test_fraction apply to image folders (and test_fraction to
    an .npz with only x and y).
    """
    skipped: list[str] = []
    text = os.fspath(source)
    name = canonical_name(text) if isinstance(source, str) else None
    folder = False  # an image folder: the one kind with image files to skip
    if name in IDX_SOURCES:
        splits = load_idx_dataset(name)
    elif name in CIFAR_LAYOUTS:
        splits = load_cifar(name)
    else:
        p = Path(text).expanduser()
        if not p.exists():
            raise _unknown(text)
        kind = detect_format(p)
        if kind == "npz":
            splits = load_npz(p, test_fraction=test_fraction, seed=seed)
        elif kind == "prepared":
            splits = load_prepared(p)
        elif kind == "idx":
            splits = load_idx_dir(p)
        elif kind in CIFAR_LAYOUTS:
            splits = load_cifar_dir(p)
        else:
            folder = True
            splits, skipped = read_image_folder(
                p, mode=mode, size=size, skip_bad=skip_bad, test_fraction=test_fraction,
                seed=seed, mixed=mixed,
            )  # fmt: skip
    if size is not None and splits.train.image_shape[1:] != (size, size):
        raise ResnetlabError(
            f"{text}: images are {splits.train.image_shape[1]}x{splits.train.image_shape[2]}; "
            "size applies to image folders only"
        )
    if mode is not None and splits.train.image_shape[0] != (3 if mode == "RGB" else 1):
        raise ResnetlabError(
            f"{text}: images have {splits.train.image_shape[0]} channel(s); mode {mode} applies "
            "to image folders only"
        )
    if skip_bad and not folder:
        raise ResnetlabError(
            f"{text}: skip_bad applies to image folders only (this source has no image files "
            "to skip)",
            argument="skip_bad",
        )
    if val_split:
        if splits.val is not None:
            raise ResnetlabError(f"{text}: already has a validation split; leave val_split at 0")
        train, val = split_dataset(splits.train, val_split, seed, what="val_split")
        splits = DataSplits(splits.name, train, splits.test, val)
    return splits, skipped


def load_source(source: str | os.PathLike, **options: Any) -> DataSplits:
    """read_source's splits (same options); bad files skipped are reported as one warning."""
    splits, skipped = read_source(source, **options)
    if skipped:
        log.warning("skipped %d unreadable image file(s); first: %s", len(skipped), skipped[0])
    return splits
