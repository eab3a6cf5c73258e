"""NumPy .npz files: arrays `x` (images) and `y` (labels), read with allow_pickle=False.

Accepted keys: x and y (one pool; a seeded, class-stratified `test_fraction` becomes the test
split), or x_train, y_train, x_test, y_test (the layout of Keras' mnist.npz). An optional
`classes` array of strings names the classes; otherwise they are "0", "1", ...

x must be uint8, shaped (N, H, W) (one channel), (N, H, W, C) or (N, C, H, W) with C of 1 or 3.
A 4-D array is read as channels-last when its last axis is 1 or 3, else as channels-first when
its second axis is 1 or 3. y holds N non-negative integers.
"""

from __future__ import annotations

import lzma
import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import ResnetlabError
from .dataset import DataSplits, ImageDataset
from .memory import check_fits
from .split import split_dataset

MAX_UNNAMED_CLASSES = 100_000  # ImageNet-21k has 21,841: a larger label is a corrupt file
MAX_LABEL = 2**63 - 1  # as int64; past it a uint64 label would wrap to a negative one
KEYS = ("x", "y", "x_train", "y_train", "x_test", "y_test", "classes")  # the arrays read


def _images(x: np.ndarray, path: Path, key: str) -> torch.Tensor:
    if x.dtype != np.uint8:
        hint = " (scale to 0..255 and cast: (x * 255).round().astype(np.uint8))"
        raise ResnetlabError(
            f"{path}: {key} must be uint8, got {x.dtype}{hint if x.dtype.kind == 'f' else ''}"
        )
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[3] in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        elif x.shape[1] not in (1, 3):
            raise ResnetlabError(
                f"{path}: {key} of shape {x.shape} has neither 1 nor 3 channels on axis 1 or 3"
            )
    else:
        raise ResnetlabError(
            f"{path}: {key} must be (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {x.shape}"
        )
    if x.shape[0] == 0:
        raise ResnetlabError(f"{path}: {key} holds no images")
    if 0 in x.shape[2:]:
        raise ResnetlabError(f"{path}: {key} holds images of {x.shape[2]}x{x.shape[3]}: no pixels")
    return torch.from_numpy(np.ascontiguousarray(x))


def _labels(y: np.ndarray, n: int, path: Path, key: str) -> torch.Tensor:
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ResnetlabError(f"{path}: {key} must be 1-D integers, got {y.dtype} {y.shape}")
    if len(y) != n:
        raise ResnetlabError(f"{path}: {n} images but {len(y)} labels in {key}")
    if len(y) and y.min() < 0:
        raise ResnetlabError(f"{path}: {key} holds a negative label ({y.min()})")
    if len(y) and int(y.max()) > MAX_LABEL:
        raise ResnetlabError(f"{path}: {key} holds a label of {int(y.max())}; corrupt file")
    return torch.from_numpy(y.astype(np.int64))


def _check_members(f: np.lib.npyio.NpzFile, path: Path) -> None:
    """Before any array is read: every member must be an array (.npy); each one that is read
    (KEYS) must ask in its header for no more bytes than the member holds (NumPy allocates what
    the header says first), and together they must fit the memory budget (a compressed member of
    1 MB can hold 1 GB of zeros). Other arrays are never read."""
    total = 0
    for info in f.zip.infolist():
        if not info.filename.endswith(".npy"):
            raise ResnetlabError(f"{path}: holds {info.filename!r}, which is not an array (.npy)")
        if info.filename[:-4] not in KEYS:
            continue
        with f.zip.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            else:  # 2.0 (a header over 64 kB), and 3.0 read as 2.0 is (its names only differ)
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            need = math.prod(shape) * dtype.itemsize
            if need > info.file_size:
                raise ResnetlabError(
                    f"{path}: {info.filename[:-4]} claims {shape} {dtype} = {need} bytes, "
                    f"but holds {info.file_size}; corrupt or crafted file"
                )
        total += info.file_size
    check_fits(total, f"{path}: arrays of {total} bytes")


def load_npz(path: str | os.PathLike, *, test_fraction: float = 0.2, seed: int = 0) -> DataSplits:
    """Read an .npz with x and y (or x_train, y_train, x_test, y_test) into splits."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if isinstance(f, np.lib.npyio.NpzFile):
                _check_members(f, path)
            members = list(f.files)
            arrays = {k: f[k] for k in members if k in KEYS}
    except ResnetlabError:
        raise
    except FileNotFoundError:
        raise ResnetlabError(f"{path}: no such file") from None
    except (
        OSError,
        ValueError,
        zipfile.BadZipFile,
        EOFError,
        zlib.error,
        lzma.LZMAError,
        NotImplementedError,
        RuntimeError,
    ) as e:  # fmt: skip - corrupt, other or encrypted
        raise ResnetlabError(
            f"{path}: not a readable .npz file ({type(e).__name__}: {e})"
        ) from None
    pairs = [("x_train", "y_train"), ("x_test", "y_test")]
    if all(k in arrays for pair in pairs for k in pair):
        parts = {}
        for xk, yk in pairs:
            x = _images(arrays[xk], path, xk)
            parts[xk] = (x, _labels(arrays[yk], len(x), path, yk))
        (xtr, ytr), (xte, yte) = parts["x_train"], parts["x_test"]
        if xtr.shape[1:] != xte.shape[1:]:
            raise ResnetlabError(
                f"{path}: x_train images are {tuple(xtr.shape[1:])}, x_test {tuple(xte.shape[1:])}"
            )
    elif "x" in arrays and "y" in arrays:
        xtr = _images(arrays["x"], path, "x")
        ytr = _labels(arrays["y"], len(xtr), path, "y")
        xte = yte = None
    else:
        have = ", ".join(sorted(members)) or "nothing"
        raise ResnetlabError(
            f"{path}: needs arrays x and y (or x_train, y_train, x_test, y_test); it has {have}"
        )
    top = int(max(ytr.max(), yte.max() if yte is not None else 0))
    if "classes" in arrays:
        c = arrays["classes"]
        if c.ndim != 1 or c.dtype.kind not in "US":
            raise ResnetlabError(f"{path}: classes must be a 1-D array of strings")
        try:
            classes = [v.decode() if isinstance(v, bytes) else str(v) for v in c.tolist()]
        except UnicodeDecodeError:
            raise ResnetlabError(f"{path}: classes holds a name that is not UTF-8") from None
        if "" in classes or len(set(classes)) != len(classes):
            raise ResnetlabError(
                f"{path}: classes {classes[:10]!r} has an empty or repeated name; expected one "
                "distinct name per class"
            )
        if top >= len(classes):
            raise ResnetlabError(f"{path}: label {top} but only {len(classes)} class names")
    else:
        if top >= MAX_UNNAMED_CLASSES:
            raise ResnetlabError(
                f"{path}: label {top} would make {top + 1} classes; without a `classes` array "
                f"labels must lie in 0..{MAX_UNNAMED_CLASSES - 1} (add class names for more)"
            )
        classes = [str(i) for i in range(top + 1)]
    train = ImageDataset(xtr, ytr, classes)
    if xte is not None:
        return DataSplits(path.stem, train, ImageDataset(xte, yte, classes))
    train, test = split_dataset(train, test_fraction, seed, what="test split")
    if test is None:
        raise ResnetlabError(f"{path}: test fraction {test_fraction} leaves no test images")
    return DataSplits(path.stem, train, test)
