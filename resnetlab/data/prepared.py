"""The prepared cache: a class-folder tree decoded once into a memory-mapped uint8 array.

`resnetlab data prepare FOLDER OUT --size S` writes OUT/ holding
- images.npy: uint8 (N, C, S, S), the splits stored one after another (train, val, test);
- resnetlab-data.json: {"format", "version", "name", "classes", "mode", "shape", "splits":
  {split: [start, stop]}, "labels": [N ints], "skipped": count}.
The directory is built under a temporary name beside OUT and renamed into place when complete,
so an interrupted run leaves no OUT behind; the disk space it needs is checked (and reserved)
before decoding, and it decodes in chunks of at most CHUNK_BYTES.

load_prepared checks the metadata, then opens images.npy with npyfile.py: read into memory when it
takes at most half the memory budget of resnetlab.data.memory (nothing done to the file later can
reach the run), else mapped copy-on-write under a read lease (see npyfile.py).
"""

from __future__ import annotations

import errno
import fcntl
import glob
import json
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..errors import ResnetlabError
from ..files import (
    check_output_dir,
    cleanup_on_sigterm,
    current_umask,
    finish_file,
    name_limit,
    temp_prefix,
)
from .dataset import DataSplits, ImageDataset
from .folders import GREY_MODES, _bad_error, _header, decode_files, tree_items
from .memory import gigabytes, memory_budget
from .npyfile import open_npy

META_NAME = "resnetlab-data.json"
IMAGES_NAME = "images.npy"
FORMAT = "resnetlab-prepared"
VERSION = 1
CHUNK = 512
CHUNK_BYTES = 256 << 20  # decoded images held at once while preparing


def is_prepared(path: str | os.PathLike) -> bool:
    """Whether a directory is a prepared cache."""
    return (Path(path) / META_NAME).is_file()


def _shrink_npy(path: Path, offset: int, shape: tuple[int, ...]) -> None:
    """Rewrite an .npy v1.0 header in place for fewer rows and cut the file to its new length."""
    body = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple(shape)}, }}"
    hlen = offset - 10
    if len(body) + 1 > hlen:
        raise ResnetlabError(f"{path}: cannot rewrite the array header")
    header = b"\x93NUMPY\x01\x00" + struct.pack("<H", hlen) + body.ljust(hlen - 1).encode() + b"\n"
    with open(path, "r+b") as f:
        f.write(header)
        f.truncate(offset + int(np.prod(shape)))


LOCK_NAME = ".lock"
FRESH_SECONDS = 60  # a build directory without a lock this young may be starting, not dead


def _hold(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _alive(build: Path) -> bool:
    try:
        fd = os.open(build / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return time.time() - build.stat().st_mtime < FRESH_SECONDS
    except OSError:
        return True  # a link or something odd in its place: not ours to judge, left alone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True  # its process still holds the lock
    finally:
        os.close(fd)
    return False


def remove_stale_builds(out: str | os.PathLike) -> list[Path]:
    """Delete the `.OUT.*.tmp/` directories that killed runs of prepare_folder left beside OUT
    (a running build holds a lock in its directory and is left alone)."""
    out = Path(out)
    removed = []
    for build in out.parent.glob(f"{glob.escape(_build_prefix(out))}*.tmp"):
        try:
            if build.is_dir() and not build.is_symlink() and not _alive(build):
                shutil.rmtree(build)
                removed.append(build)
        except OSError:
            continue  # vanished meanwhile, or not ours to remove
    return removed


def _build_prefix(out: Path) -> str:
    return temp_prefix(out.name, 8 + len(".tmp"), name_limit(out.parent))


def _reserve(path: Path, nbytes: int, what: str) -> None:
    """Make sure `nbytes` fit on the disk of `path` before writing them through a mapping (a
    full disk under a mapping is a SIGBUS, not an error)."""
    free = shutil.disk_usage(path.parent).free
    if nbytes > free:
        raise ResnetlabError(
            f"{what} need {gigabytes(nbytes)} on disk, but {path.parent} has {gigabytes(free)} "
            "free; free some space, give a smaller size, or choose another output"
        )
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise ResnetlabError(
                f"{what} need {gigabytes(nbytes)} on disk; {path.parent} has no room for them"
            ) from None  # other errors: the file system cannot reserve; the check above stands
    finally:
        os.close(fd)


def prepare_folder(
    folder: str | os.PathLike,
    out: str | os.PathLike,
    size: int,
    *,
    mode: str | None = None,
    skip_bad: bool = False,
    test_fraction: float = 0.2,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Decode a class-folder tree once into OUT (see module doc); returns the written metadata.

    progress(done, total), when given, is called after each chunk of decoded files.
    """
    folder, out = Path(folder), Path(out)
    if size < 1:
        raise ResnetlabError(f"size must be a positive number of pixels, got {size}")
    if mode is not None and mode not in ("RGB", "L"):
        raise ResnetlabError(f"unknown image mode {mode!r}; use RGB or L")
    limit = name_limit(out.parent if out.parent.is_dir() else ".")
    if len(os.fsencode(out.name)) > limit:
        raise ResnetlabError(
            f"{out}: a name of {len(os.fsencode(out.name))} bytes; this file system allows {limit}"
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ResnetlabError(f"{out}: already exists; remove it or choose another output")
    check_output_dir(out, (folder,))  # apart from the input, and a folder that can be made
    split_items, classes = tree_items(folder, test_fraction=test_fraction, seed=seed)
    order = [s for s in ("train", "val", "test") if s in split_items]

    if mode is None:
        grey = True
        for its in split_items.values():
            for p, _ in its:
                h = _header(p)
                if isinstance(h, str):
                    if not skip_bad:
                        raise _bad_error([h], folder)
                    continue
                if h[0] not in GREY_MODES:
                    grey = False
                    break
            if not grey:
                break
        mode = "L" if grey else "RGB"
    channels = 3 if mode == "RGB" else 1
    total = sum(len(split_items[s]) for s in order)

    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(out)
    with cleanup_on_sigterm():  # errors and Ctrl-C remove the build below; SIGTERM too
        tmp = Path(tempfile.mkdtemp(prefix=_build_prefix(out), suffix=".tmp", dir=out.parent))
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; the cache is the user's
        lock = _hold(tmp / LOCK_NAME)  # tells a later run that this build is alive
        try:
            images_path = tmp / IMAGES_NAME
            arr = np.lib.format.open_memmap(
                images_path, mode="w+", dtype=np.uint8, shape=(total, channels, size, size)
            )
            offset = arr.offset
            _reserve(
                images_path, offset + arr.nbytes, f"{total} images of {channels}x{size}x{size}"
            )
            chunk_len = max(1, min(CHUNK, CHUNK_BYTES // (channels * size * size)))
            labels: list[int] = []
            splits: dict[str, list[int]] = {}
            skipped: list[str] = []
            pos = 0
            for s in order:
                its = split_items[s]
                start = pos
                for c0 in range(0, len(its), chunk_len):
                    chunk = its[c0 : c0 + chunk_len]
                    imgs, ok, bad = decode_files([p for p, _ in chunk], mode, (size, size))
                    if bad and not skip_bad:
                        raise _bad_error(bad, folder)
                    skipped.extend(bad)
                    arr[pos : pos + len(ok)] = imgs.numpy()
                    labels.extend(chunk[i][1] for i in ok)
                    pos += len(ok)
                    if progress is not None:
                        progress(len(chunk), total)
                if pos == start:
                    raise ResnetlabError(f"{folder}: the {s} split has no readable images")
                splits[s] = [start, pos]
            arr.flush()
            del arr
            if pos < total:
                _shrink_npy(images_path, offset, (pos, channels, size, size))
            meta = {
                "format": FORMAT,
                "version": VERSION,
                "name": folder.resolve().name,
                "classes": classes,
                "mode": mode,
                "shape": [pos, channels, size, size],
                "splits": splits,
                "labels": labels,
                "skipped": len(skipped),
            }
            (tmp / META_NAME).write_text(json.dumps(meta))
            for name in (IMAGES_NAME, META_NAME):
                finish_file(tmp / name)  # the umask's permissions, and on disk before the rename
            (tmp / LOCK_NAME).unlink()  # the directory's fresh mtime still marks it as alive
            os.replace(tmp, out)  # onto nothing, or onto an empty directory (checked above)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            os.close(lock)
    meta["skipped_files"] = skipped
    return meta


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# the keys load_prepared reads: (is the value right?, what would be right)
_META_RULES = {
    "shape": (
        lambda v: isinstance(v, list) and len(v) == 4 and all(_is_int(n) and n >= 0 for n in v),
        "[N, C, H, W] of whole numbers",
    ),
    "labels": (
        lambda v: isinstance(v, list) and all(_is_int(n) for n in v),
        "a list of whole numbers, one per image",
    ),
    "classes": (
        lambda v: (
            isinstance(v, list)
            and bool(v)
            and all(isinstance(c, str) and c for c in v)
            and len(set(v)) == len(v)
        ),
        "a non-empty list of distinct class names",
    ),
    "splits": (
        lambda v: (
            isinstance(v, dict)
            and all(
                isinstance(b, list) and len(b) == 2 and all(_is_int(n) for n in b)
                for b in v.values()
            )
        ),
        'an object of {"split": [start, stop]}',
    ),
    "name": (lambda v: isinstance(v, str), "a string"),
}


def _check_prepared_meta(meta: dict, source: Path) -> None:
    for key, (ok, expected) in _META_RULES.items():
        if key not in meta:
            if key == "name":
                continue
            raise ResnetlabError(f"{source}: no {key!r}; expected {expected}; prepare it again")
        if not ok(meta[key]):
            shown = json.dumps(meta[key])
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ResnetlabError(
                f"{source}: {key} is {shown}; expected {expected}; prepare it again"
            )


def _check_apart_splits(splits: dict[str, list[int]], path: Path) -> None:
    """Refuse splits that share images: a test split that holds training images would report
    training accuracy as test accuracy."""
    spans = sorted((a, b, s) for s, (a, b) in splits.items())
    for (_, b1, s1), (a2, _, s2) in zip(spans, spans[1:]):
        if a2 < b1:
            raise ResnetlabError(
                f"{path}: splits {s1} and {s2} share images [{a2}, {b1}); prepare it again"
            )


def load_prepared(path: str | os.PathLike, *, in_memory: bool | None = None) -> DataSplits:
    """Open a prepared cache: splits whose images are views of one array, read into memory or
    mapped under a lease (see module doc); `in_memory` forces one way (None: by size)."""
    path = Path(path)
    try:
        if not (path / META_NAME).is_file():  # a FIFO would block the read below forever
            raise ValueError("not a regular file")
        meta = json.loads((path / META_NAME).read_text())
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: nested past the stack
        raise ResnetlabError(f"{path / META_NAME}: not readable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ResnetlabError(f"{path / META_NAME}: not a resnetlab prepared-data file")
    if meta.get("version") != VERSION:
        raise ResnetlabError(
            f"{path}: prepared-data version {meta.get('version')}, this resnetlab reads {VERSION}"
        )
    _check_prepared_meta(meta, path / META_NAME)
    shape = tuple(meta["shape"])
    if in_memory is None:  # read into memory when it takes at most half the budget, else map
        in_memory = int(np.prod(shape)) <= memory_budget() // 2
    arr = open_npy(path / IMAGES_NAME, shape, in_memory=in_memory)
    labels = meta["labels"]
    if len(labels) != shape[0]:
        raise ResnetlabError(
            f"{path}: {len(labels)} labels for {shape[0]} images; prepare it again"
        )
    classes = list(meta["classes"])
    wrong = next((v for v in labels if not 0 <= v < len(classes)), None)
    if wrong is not None:
        raise ResnetlabError(
            f"{path}: label {wrong} out of range for {len(classes)} classes "
            f"(0..{len(classes) - 1}); prepare it again"
        )
    y = torch.tensor(labels, dtype=torch.int64)
    x = torch.from_numpy(arr)
    parts = {}
    for s, (a, b) in meta["splits"].items():
        if not 0 <= a < b <= shape[0]:
            raise ResnetlabError(f"{path}: split {s} [{a}, {b}) out of range")
        parts[s] = ImageDataset(x[a:b], y[a:b], classes)
    _check_apart_splits(meta["splits"], path)
    if "train" not in parts or "test" not in parts:
        raise ResnetlabError(f"{path}: prepared data lacks a train or test split")
    return DataSplits(meta.get("name", path.name), parts["train"], parts["test"], parts.get("val"))
