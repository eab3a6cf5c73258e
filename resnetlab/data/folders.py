"""Image folders: one sub-folder per class, decoded into one uint8 tensor.

Layout: ROOT/<class>/<image> (images may sit deeper inside a class folder). Files with the suffixes
of resnetlab.data.images.IMAGE_SUFFIXES (.jpg .jpeg .png .webp .bmp .gif .tif .tiff, any case) are
images; other files and hidden entries are ignored.
Class names are the sub-folder names, sorted.

Splits: when ROOT holds train/ and test/ (or val/) class trees, those splits are kept (train/,
val/ and test/ together give a validation split as well). Otherwise a seeded, class-stratified
fraction (`test_fraction`) is held out as the test split.

Mode: "RGB" or "L"; by default "L" when every image is grey (grey, 1-bit or 16-bit grey, with or
without alpha), else "RGB". Conversions follow resnetlab.data.images.

Size: images in a tree may differ in size, but a batch needs one. With `size` given, every image
becomes size x size; otherwise every image takes the most common height and width in the tree (the
size of all of them when they agree), or, with mixed="refuse" (training does), a tree of mixed
sizes is refused with the most common sizes named. An image of another size is scaled, keeping
its aspect, until it covers the target, then centre-cropped to it (resnetlab.data.transform).

Bad files: a file that is not a readable image fails the load, naming the first bad paths; with
skip_bad=True such files are skipped and their paths returned, so the caller can report the count.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image

from ..errors import ResnetlabError
from .dataset import DataSplits, ImageDataset
from .images import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    check_image_file,
    convert_mode,
    image_to_tensor,
    open_image,
)
from .memory import check_fits, memory_budget
from .split import holdout_count, split_dataset, stratified_holdout
from .transform import resize_and_crop

GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
SPLIT_DIRS = ("train", "val", "test")
SHOWN_BAD = 3
SHOWN_SIZES = 3  # the most common sizes a refusal of mixed sizes names
SIZE_HINT = "give a smaller size (--size), or decode once with `resnetlab data prepare --size`"
DECODE_BYTES_PER_WORKER = MAX_PIXELS * 12  # one image of the largest size, three 4-byte forms


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def scan_class_tree(
    root: str | os.PathLike, *, strict: bool = True
) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted sub-folder names) and (path, label) for every image file below them.

    strict (for a whole dataset or its train split): at least two classes, none of them empty.
    """
    root = Path(root)
    if not root.is_dir():
        raise ResnetlabError(f"{root}: no such directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    items: list[tuple[Path, int]] = []
    empty = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and _is_image(p))
        if not files:
            empty.append(name)
        items.extend((p, label) for p in files)
    suffixes = "|".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
    if not items:
        raise ResnetlabError(
            f"{root}: no images found (expected {root}/<class>/<image>.{{{suffixes}}})"
        )
    if not strict:
        return classes, items
    if len(classes) < 2:
        raise ResnetlabError(
            f"{root}: only one class folder ({classes[0]!r}); a classifier needs at least two"
        )
    if empty:
        shown = ", ".join(repr(e) for e in empty[:SHOWN_BAD])
        raise ResnetlabError(f"{root}: class folder(s) with no images: {shown}")
    return classes, items


def is_class_tree(root: str | os.PathLike) -> bool:
    """Whether a directory looks like ROOT/<class>/<image> (or its train/test split form)."""
    root = Path(root)
    if not root.is_dir():
        return False
    if (root / "train").is_dir() and any((root / s).is_dir() for s in ("test", "val")):
        return True
    for d in root.iterdir():
        if d.is_dir() and not d.name.startswith("."):
            for p in d.rglob("*"):
                if p.is_file() and _is_image(p):
                    return True
    return False


def _header(path: Path) -> tuple[str, tuple[int, int]] | str:
    try:
        check_image_file(path)
        with warnings.catch_warnings():  # the size is judged when the image is decoded
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            return img.mode, (img.size[1], img.size[0])
    except ResnetlabError as e:
        return str(e)
    except Exception as e:  # unidentifiable, unreadable: reported as a bad file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "cannot identify image file" in reason:
            reason = "unknown or corrupt format"
        return f"{path}: not a readable image ({reason})"


def _bad_error(bad: list[str], root: Path) -> ResnetlabError:
    shown = "; ".join(bad[:SHOWN_BAD])
    more = f" (and {len(bad) - SHOWN_BAD} more)" if len(bad) > SHOWN_BAD else ""
    return ResnetlabError(
        f"{len(bad)} unreadable image file(s) under {root}: {shown}{more}; "
        "pass --skip-bad (skip_bad=True) to skip them"
    )


def _mixed_error(root: Path, sizes: Counter) -> ResnetlabError:
    ranked = sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{n} of {h}x{w}" for (h, w), n in ranked[:SHOWN_SIZES])
    more = f" and {len(ranked) - SHOWN_SIZES} more" if len(ranked) > SHOWN_SIZES else ""
    side = max(ranked[0][0])
    return ResnetlabError(
        f"size is needed: {root} holds images of {len(ranked)} sizes (height x width: {shown}"
        f"{more}); give the side every image is resized to, e.g. {side}",
        argument="size",
    )


def _decode_workers() -> int:
    """Threads decoding at once: each may hold a full-size image in several forms (decoded,
    converted, composited) while it is resized, so their number follows the memory budget."""
    return max(1, min(8, os.cpu_count() or 1, memory_budget() // DECODE_BYTES_PER_WORKER))


def decode_files(
    paths: list[Path],
    mode: str,
    size: tuple[int, int],
    *,
    box: tuple[int, int] | None = None,
    workers: int | None = None,
) -> tuple[torch.Tensor, list[int], list[str]]:
    """Decode files into uint8 (N_ok, C, H, W) of `size`, each resized to cover `box` (default:
    `size`) and centre-cropped; returns (images, indices decoded, bad messages)."""
    c = 3 if mode == "RGB" else 1
    h, w = size
    box = box or (h, w)
    check_fits(len(paths) * c * h * w, f"decoding {len(paths)} images of {c}x{h}x{w}", SIZE_HINT)
    out = torch.empty((len(paths), c, h, w), dtype=torch.uint8)

    def work(i: int) -> str | None:
        try:
            img = convert_mode(open_image(paths[i]), mode)
            img = resize_and_crop(img, box, (h, w), str(paths[i]))
        except ResnetlabError as e:
            return str(e)
        out[i] = image_to_tensor(img)
        return None

    workers = workers or _decode_workers()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(work, range(len(paths))))
    ok = [i for i, r in enumerate(results) if r is None]
    bad = [r for r in results if r is not None]
    if len(ok) != len(paths):
        out = out[torch.tensor(ok, dtype=torch.int64)]
    return out, ok, bad


def _tree_splits(root: Path) -> dict[str, Path] | None:
    if not (root / "train").is_dir():
        return None
    present = {s: root / s for s in SPLIT_DIRS if (root / s).is_dir()}
    return present if len(present) >= 2 else None


def _scan_splits(
    root: Path,
) -> tuple[dict[str, Path], dict[str, list[tuple[Path, int]]], list[str]]:
    """(split directories, (path, label) per split, classes); split "all" when there is none."""
    trees = _tree_splits(root) or {"all": root}
    scans = {
        name: scan_class_tree(path, strict=name in ("all", "train")) for name, path in trees.items()
    }
    classes = scans.get("train", scans.get("all"))[0]
    items: dict[str, list[tuple[Path, int]]] = {}
    for name, (cls, its) in scans.items():
        unknown = sorted(set(cls) - set(classes))
        if unknown:
            raise ResnetlabError(
                f"{trees[name]}: class folder(s) {', '.join(map(repr, unknown))} not in "
                f"{trees['train']}"
            )
        remap = [classes.index(c) for c in cls]
        items[name] = [(p, remap[y]) for p, y in its]
    return trees, items, classes


def read_image_folder(
    root: str | os.PathLike,
    *,
    mode: str | None = None,
    size: int | None = None,
    skip_bad: bool = False,
    test_fraction: float = 0.2,
    seed: int = 0,
    mixed: str = "common",
) -> tuple[DataSplits, list[str]]:
    """Read a class-folder tree into splits; returns (splits, messages for skipped bad files).
    Without `size`, images of mixed sizes take the most common one (mixed="common") or are
    refused in one line naming the sizes found (mixed="refuse")."""
    root = Path(root)
    if mode is not None and mode not in ("RGB", "L"):
        raise ResnetlabError(f"unknown image mode {mode!r}; use RGB or L")
    if size is not None and size < 1:
        raise ResnetlabError(f"size must be a positive number of pixels, got {size}")
    if mixed not in ("common", "refuse"):
        raise ResnetlabError(f"mixed {mixed!r}: use common or refuse", argument="mixed")
    trees, items, classes = _scan_splits(root)

    paths = [p for its in items.values() for p, _ in its]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        headers = dict(zip(paths, pool.map(_header, paths)))
    bad = [h for h in headers.values() if isinstance(h, str)]
    if bad and not skip_bad:
        raise _bad_error(bad, root)
    good = [h for h in headers.values() if not isinstance(h, str)]
    if mode is None:
        mode = "L" if good and all(m in GREY_MODES for m, _ in good) else "RGB"
    if size is not None:
        target = (size, size)
    else:
        sizes = Counter(s for _, s in good)
        target = max(sizes.items(), key=lambda kv: (kv[1], kv[0]))[0] if sizes else (1, 1)
        if len(sizes) > 1 and mixed == "refuse":
            raise _mixed_error(root, sizes)

    c = 3 if mode == "RGB" else 1
    n = sum(1 for its in items.values() for p, _ in its if not isinstance(headers[p], str))
    what = f"{root}: {n} images of {c}x{target[0]}x{target[1]}"
    check_fits(n * c * target[0] * target[1], what, SIZE_HINT)  # all splits, before any decoding
    skipped = list(bad)
    datasets = {}
    for name, its in items.items():
        keep = [(p, y) for p, y in its if not isinstance(headers[p], str)]
        images, ok, more_bad = decode_files([p for p, _ in keep], mode, target)
        if more_bad and not skip_bad:
            raise _bad_error(more_bad, root)
        skipped.extend(more_bad)
        labels = torch.tensor([keep[i][1] for i in ok], dtype=torch.int64)
        if len(labels) == 0:
            raise ResnetlabError(f"{trees[name]}: no readable images left after skipping bad files")
        datasets[name] = ImageDataset(images, labels, list(classes))

    if "all" in datasets:
        train, test = split_dataset(datasets["all"], test_fraction, seed, what="test split")
        if test is None:
            raise ResnetlabError(f"{root}: test fraction {test_fraction} leaves no test images")
        splits = DataSplits(root.name, train, test)
    else:
        test = datasets.get("test", datasets.get("val"))
        val = datasets["val"] if "test" in datasets and "val" in datasets else None
        splits = DataSplits(root.name, datasets["train"], test, val)
    return splits, skipped


def tree_items(
    root: str | os.PathLike, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[dict[str, list[tuple[Path, int]]], list[str]]:
    """The (path, label) lists of a class-folder tree's splits (train, val, test), and its classes.

    train/ and test/ (or val/) sub-trees are kept; otherwise a seeded, stratified fraction of the
    files is held out as test. Nothing is decoded here.
    """
    root = Path(root)
    _, out, classes = _scan_splits(root)
    if "all" in out:
        items = out.pop("all")
        k = holdout_count(len(items), test_fraction, "test split")
        if k == 0:
            raise ResnetlabError(f"{root}: test fraction {test_fraction} leaves no test images")
        held = set(stratified_holdout(torch.tensor([y for _, y in items]), k, seed).tolist())
        out["train"] = [it for i, it in enumerate(items) if i not in held]
        out["test"] = [it for i, it in enumerate(items) if i in held]
    elif "test" not in out:
        out["test"] = out.pop("val")
    return out, classes


def read_eval_folder(
    root: str | os.PathLike,
    *,
    split: str,
    mode: str,
    size: tuple[int, int],
    box: tuple[int, int] | None = None,
    skip_bad: bool = False,
    limit: int | None = None,
    seed: int = 0,
) -> tuple[ImageDataset, list[str]]:
    """The images of a class-folder tree to evaluate a model on, decoded as the model's inputs
    (`mode`, resized to cover `box`, centre crop `size`): all of a plain tree, or the named split
    (`test` falls back to `val`) of a train/test tree; `limit` draws a seeded, class-stratified
    sample first. Returns (images, messages for skipped bad files)."""
    root = Path(root)
    trees, items, classes = _scan_splits(root)
    if "all" in items:
        chosen = items["all"]
    elif split == "test":
        chosen = items.get("test", items.get("val"))
    else:
        chosen = items.get(split)
    if chosen is None:
        raise ResnetlabError(f"{root}: no {split}/ class tree to evaluate on", argument="split")
    if limit is not None and limit < len(chosen):
        labels = torch.tensor([y for _, y in chosen], dtype=torch.int64)
        keep = stratified_holdout(labels, limit, seed).tolist()
        chosen = [chosen[i] for i in keep]
    images, ok, bad = decode_files([p for p, _ in chosen], mode, size, box=box)
    if bad and not skip_bad:
        raise _bad_error(bad, root)
    if not ok:
        raise ResnetlabError(f"{root}: no readable images left after skipping bad files")
    labels = torch.tensor([chosen[i][1] for i in ok], dtype=torch.int64)
    return ImageDataset(images, labels, list(classes)), bad
