"""A run's data: the source read with the folder options and the size rule, subset, validation.

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
from pathlib import Path

from ..data import DataSplits
from ..errors import ResnetlabError
from .config import TrainConfig
from .logs import plural, warn


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


def load_run_data(cfg: TrainConfig, say=print) -> DataSplits:
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
