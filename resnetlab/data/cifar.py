"""CIFAR-10 and CIFAR-100 in the official "python version" layout, read without general unpickling.

Layouts: CIFAR-10 is data_batch_1..5, test_batch and batches.meta (label_names); CIFAR-100 is
train, test and meta (fine_label_names). Each batch is a pickled dict whose b"data" is a uint8
array (N, 3072) in channel-major order (1024 red, 1024 green, 1024 blue, rows top to bottom) and
whose b"labels" (CIFAR-10) or b"fine_labels" (CIFAR-100) is a list of ints.

The files are pickles, and a pickle can name any callable. RestrictedUnpickler admits only the
three globals that a NumPy array needs (its reconstructor, ndarray and dtype), and gives it
stand-ins rather than NumPy's own: an array is made from the bytes the file holds for it (a plain
numeric dtype, its byte count checked against the shape), so a header that declares 500,000
images in a 1 MB file allocates nothing. Anything else, such as os.system, is refused before it
is looked up, so a tampered file cannot run code.

Named look-up (cifar10, cifar100): an explicit directory; $RESNETLAB_DATA/<name>; then
~/.cache/resnetlab/<name> when the variable is unset; then a download of the official archive from
www.cs.toronto.edu, verified by its SHA-256, whose batch files alone are extracted (atomically).
"""

from __future__ import annotations

import io
import math
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ResnetlabError
from ..files import atomic_write
from .dataset import DataSplits, ImageDataset
from .download import ENV_VAR, download, locate_dataset

# The dtypes a CIFAR file may hold (its images are uint8; the rest is plain numbers), by code.
_DTYPES = ("b1", "u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f4", "f8")


class _DtypeSpec:
    """What a pickle's numpy.dtype(...) call and state ask for: only a plain numeric code with a
    byte order is ever turned into a dtype (no objects, fields or sub-arrays)."""

    def __init__(self, code=None, *_):
        self.code, self.order = code, "="

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "="):
            self.order = state[1]

    def resolve(self) -> np.dtype:
        code = self.code.decode("latin1") if isinstance(self.code, bytes) else self.code
        if code not in _DTYPES:
            raise pickle.UnpicklingError(f"array of dtype {code!r}; a CIFAR batch holds numbers")
        return np.dtype(("|" if self.order == "=" else self.order) + code)


class _PendingArray:
    """An array a pickle is building (numpy's _reconstruct, then its state): made from the bytes
    the file holds, so a header that claims more images than the file carries allocates
    nothing."""

    array: np.ndarray | None = None

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("array state of an unknown form")
        shape, spec, fortran, raw = state[-4:]
        if not isinstance(spec, _DtypeSpec):
            raise pickle.UnpicklingError("array state without a dtype")
        if not isinstance(shape, tuple) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
        ):
            raise pickle.UnpicklingError(f"array shape {shape!r}; expected whole numbers")
        dtype = spec.resolve()
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError("array data that is not bytes")
        need = math.prod(shape) * dtype.itemsize
        if need != len(raw):
            raise pickle.UnpicklingError(
                f"array of shape {shape} needs {need} bytes but the file holds {len(raw)} for it"
            )
        a = np.frombuffer(raw, dtype=dtype)
        self.array = (a.reshape(shape[::-1]).T if fortran else a.reshape(shape)).copy()


def _reconstruct(subtype, shape, dtype) -> _PendingArray:  # noqa: ARG001
    if subtype is not _NdarrayToken:
        raise pickle.UnpicklingError("_reconstruct of something other than numpy.ndarray")
    return _PendingArray()


class _NdarrayToken:
    """numpy.ndarray as a pickle names it: a marker for _reconstruct; calling it (an array of
    any declared shape, without data) is refused."""

    def __new__(cls, *args, **kwargs):
        raise pickle.UnpicklingError(
            "numpy.ndarray called directly (an array without its data); not a CIFAR batch"
        )


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _NdarrayToken,
    ("numpy", "dtype"): _DtypeSpec,
}


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global that a CIFAR batch never holds."""


class RestrictedUnpickler(pickle._Unpickler):  # noqa: SLF001 - the pure-Python one, on purpose
    """An Unpickler that resolves only stand-ins for the globals a NumPy array needs; all others
    are refused. Arrays are built from the file's own bytes, never from a declared shape. It is
    the pure-Python unpickler, whose memo is a dict: the C one sizes its memo table by the index
    a PUT opcode names, so a 12-byte file could make it allocate gigabytes."""

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise RefusedGlobal(
                f"refused global {module}.{name} (only NumPy arrays, dicts, lists, strings and "
                "numbers may appear in a CIFAR batch)"
            )
        return found


def _resolve(value: Any) -> Any:
    if isinstance(value, _PendingArray):
        if value.array is None:
            raise pickle.UnpicklingError("an array without its state")
        return value.array
    if isinstance(value, (_DtypeSpec, type)):
        raise pickle.UnpicklingError("a bare numpy type where data was expected")
    return value


def safe_unpickle(path: str | os.PathLike) -> Any:
    """Unpickle a CIFAR file with RestrictedUnpickler (Python 2 strings come back as bytes)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ResnetlabError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
        if isinstance(obj, dict):
            return {k: _resolve(v) for k, v in obj.items()}
        return _resolve(obj)
    except RefusedGlobal as e:
        raise ResnetlabError(f"{path}: not a CIFAR batch, nothing was run: {e}") from None
    except Exception as e:  # EOFError on truncation, ValueError/TypeError on garbage
        raise ResnetlabError(
            f"{path}: not a readable CIFAR batch ({type(e).__name__}: {e})"
        ) from None


def _get(d: dict, key: str, path: Path) -> Any:
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    keys = ", ".join(sorted(k.decode() if isinstance(k, bytes) else str(k) for k in d))
    raise ResnetlabError(f"{path}: CIFAR batch has no {key!r} entry (it has: {keys})")


def _names(values: Any, path: Path) -> list[str]:
    if not isinstance(values, (list, tuple)) or not values:
        raise ResnetlabError(f"{path}: class names must be a non-empty list")
    if not all(isinstance(v, (bytes, str)) for v in values):
        raise ResnetlabError(f"{path}: class names must be strings")
    try:
        names = [v.decode("utf-8") if isinstance(v, bytes) else v for v in values]
    except UnicodeDecodeError:
        raise ResnetlabError(f"{path}: a class name is not UTF-8 text") from None
    if not all(n.strip() for n in names) or len(set(names)) != len(names):
        raise ResnetlabError(f"{path}: class names must be non-empty and distinct")
    return names


MAX_LABEL = 2**31 - 1


def _labels(values: Any, n: int, key: str, path: Path) -> np.ndarray:
    """The labels as int64 (n,): a flat list of n Python ints, or a 1-D integer array of n; each
    checked before any conversion (a list may share one sublist many times over: no nesting)."""
    if isinstance(values, np.ndarray):
        ok = values.ndim == 1 and values.dtype.kind in "iu"
        ok = ok and (not len(values) or int(values.min()) >= 0 and int(values.max()) <= MAX_LABEL)
    elif isinstance(values, (list, tuple)):
        ok = all(type(v) is int and 0 <= v <= MAX_LABEL for v in values)
    else:
        ok = False
    if not ok:
        raise ResnetlabError(f"{path}: {key!r} must be a flat list of whole numbers from 0")
    if len(values) != n:
        raise ResnetlabError(f"{path}: {n} images but {len(values)} labels")
    return np.asarray(values, dtype=np.int64)


def read_batch(path: str | os.PathLike, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: images uint8 (N, 3, 32, 32) and labels int64 (N,)."""
    path = Path(path)
    d = safe_unpickle(path)
    if not isinstance(d, dict):
        raise ResnetlabError(f"{path}: CIFAR batch must hold a dict, found {type(d).__name__}")
    data = _get(d, "data", path)
    labels = _get(d, label_key, path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise ResnetlabError(f"{path}: 'data' must be a uint8 array (N, 3072)")
    if data.shape[1] != 3 * 32 * 32:
        raise ResnetlabError(f"{path}: 'data' rows hold {data.shape[1]} values, expected 3072")
    y = _labels(labels, len(data), label_key, path)
    return data.reshape(-1, 3, 32, 32), y


@dataclass(frozen=True)
class CifarLayout:
    """The files and keys of one CIFAR variant."""

    name: str
    train: tuple[str, ...]
    test: str
    meta: str
    names_key: str
    label_key: str
    folder: str  # the directory inside the official archive
    url: str
    sha256: str


CIFAR_LAYOUTS = {
    "cifar10": CifarLayout(
        name="cifar10",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test="test_batch",
        meta="batches.meta",
        names_key="label_names",
        label_key="labels",
        folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
    ),
    "cifar100": CifarLayout(
        name="cifar100",
        train=("train",),
        test="test",
        meta="meta",
        names_key="fine_label_names",
        label_key="fine_labels",
        folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        sha256="85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
    ),
}


def _files(layout: CifarLayout) -> tuple[str, ...]:
    return (*layout.train, layout.test, layout.meta)


def detect_cifar(directory: str | os.PathLike) -> tuple[CifarLayout, Path] | None:
    """The CIFAR variant of a directory (or of its official sub-folder), or None."""
    directory = Path(directory)
    for layout in CIFAR_LAYOUTS.values():
        for d in (directory, directory / layout.folder):
            if d.is_dir() and all((d / f).is_file() for f in _files(layout)):
                return layout, d
    return None


def load_cifar_dir(directory: str | os.PathLike) -> DataSplits:
    """Read a CIFAR-10 or CIFAR-100 directory (the variant is told by its file names)."""
    found = detect_cifar(directory)
    if found is None:
        names = " or ".join(", ".join(_files(lay)) for lay in CIFAR_LAYOUTS.values())
        raise ResnetlabError(f"{directory}: not a CIFAR directory (needs {names})")
    layout, d = found
    meta = safe_unpickle(d / layout.meta)
    if not isinstance(meta, dict):
        raise ResnetlabError(f"{d / layout.meta}: CIFAR meta must hold a dict")
    classes = _names(_get(meta, layout.names_key, d / layout.meta), d / layout.meta)

    def split(files: tuple[str, ...]) -> ImageDataset:
        parts = [read_batch(d / f, layout.label_key) for f in files]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            raise ResnetlabError(
                f"{d}: labels span {y.min()}..{y.max()} but there are {len(classes)} class names"
            )
        return ImageDataset(torch.from_numpy(x), torch.from_numpy(y), classes)

    return DataSplits(layout.name, split(layout.train), split((layout.test,)))


def _fetch(layout: CifarLayout, target: Path) -> None:
    archive = target / Path(layout.url).name
    download([layout.url], archive, layout.sha256)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for f in _files(layout):
                member = tar.getmember(f"{layout.folder}/{f}")
                if not member.isfile():
                    raise ResnetlabError(f"{archive}: {member.name} is not a regular file")
                src = tar.extractfile(member)

                def write(tmp: str, src=src) -> None:
                    with open(tmp, "wb") as out:
                        while block := src.read(1 << 20):
                            out.write(block)

                atomic_write(target / f, write)
    except (tarfile.TarError, KeyError, OSError) as e:
        raise ResnetlabError(f"{archive}: cannot extract the CIFAR batches ({e})") from None
    archive.unlink()


def load_cifar(
    name: str, path: str | os.PathLike | None = None, *, allow_download: bool = True
) -> DataSplits:
    """Load CIFAR-10 or CIFAR-100 by name: explicit path, $RESNETLAB_DATA/<name>, cache, fetch."""
    if name not in CIFAR_LAYOUTS:
        raise ResnetlabError(f"unknown CIFAR dataset {name!r}; known: {', '.join(CIFAR_LAYOUTS)}")
    layout = CIFAR_LAYOUTS[name]

    def holds_it(directory: Path) -> bool:
        found = detect_cifar(directory)
        return found is not None and found[0].name == name

    directory = locate_dataset(
        name,
        holds_it,
        lambda target: _fetch(layout, target),
        path=path,
        what=f"batches ({', '.join(_files(layout))})",
        hint=f"put the {layout.folder} batches in ${ENV_VAR}/{name}",
        allow_download=allow_download,
    )
    return load_cifar_dir(directory)
