"""Fashion-MNIST and MNIST in IDX format (.gz or raw), with their look-up order and download.

IDX layout (big-endian): two zero bytes, an element-type byte (0x08 = unsigned byte), a rank byte,
one uint32 per dimension, then the elements. Images are rank 3 (N, rows, cols), labels rank 1 (N).

Where a named dataset is looked for, in order:
1. an explicit directory (the `path` argument);
2. $RESNETLAB_DATA/<name> (e.g. $RESNETLAB_DATA/fashion-mnist), when the variable is set;
3. Debian's /usr/share/datasets/fashion-mnist (package dataset-fashion-mnist; Fashion-MNIST only);
4. ~/.cache/resnetlab/<name>, when $RESNETLAB_DATA is unset;
5. a download of the official .gz files, each verified by its published SHA-256, written atomically
   into $RESNETLAB_DATA/<name> (default ~/.cache/resnetlab/<name>).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ResnetlabError
from .dataset import DataSplits, ImageDataset
from .download import ENV_VAR, download, locate_dataset
from .memory import check_fits

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
PARTS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MNIST_CLASSES = [str(i) for i in range(10)]


@dataclass(frozen=True)
class IdxSource:
    """Where a named IDX dataset lives and how its official files are verified."""

    name: str
    classes: list[str]
    mirrors: tuple[str, ...]  # base URLs, the official one first
    sha256: dict[str, str]  # SHA-256 of each official .gz file, by PARTS key
    debian_dir: Path | None = None
    debian_package: str | None = None
    train_labels_sha256: str | None = None  # of the decompressed train labels: recognises a copy


IDX_SOURCES: dict[str, IdxSource] = {
    "fashion-mnist": IdxSource(
        name="fashion-mnist",
        classes=FASHION_MNIST_CLASSES,
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        sha256={
            "train_images": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
            "train_labels": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
            "test_images": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
            "test_labels": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
        },
        debian_dir=Path("/usr/share/datasets/fashion-mnist"),
        debian_package="dataset-fashion-mnist",
        train_labels_sha256="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    "mnist": IdxSource(
        name="mnist",
        classes=MNIST_CLASSES,
        mirrors=(
            "http://yann.lecun.com/exdb/mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        sha256={
            "train_images": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "train_labels": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "test_images": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "test_labels": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        },
    ),
}


def _open(path: Path):
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as e:
        raise ResnetlabError(f"{path}: cannot read ({e.strerror or e})") from None


def _read_exactly(f, n: int, path: Path) -> bytes | bytearray:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    try:
        while got < n:
            k = f.readinto(view[got:])
            if not k:
                break
            got += k
    except (OSError, EOFError, zlib.error) as e:
        raise ResnetlabError(f"{path}: not a readable gzip file ({e})") from None
    return buf[:got] if got < n else buf


GZIP_MAX_RATIO = 1032  # deflate expands at most ~1032:1; a header claiming more is false


def _check_size(path: Path, header: int, dims: tuple[int, ...], need: int) -> None:
    """Compare what the header announces with the file's size before anything is allocated."""
    size = path.stat().st_size
    if path.suffix == ".gz":
        most = GZIP_MAX_RATIO * size
        if need > most:
            raise ResnetlabError(
                f"{path}: IDX header claims {dims} = {need} bytes of data, but a gzip file of "
                f"{size} bytes holds at most {most}; corrupt or crafted header"
            )
    elif header + need > size:
        raise ResnetlabError(
            f"{path}: truncated IDX file: header says {dims} = {need} bytes of data, "
            f"found {size - header}"
        )
    check_fits(need, f"{path}: IDX data of {dims}")  # a small gzip file can still hold 1000x


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes (.gz or raw) whose magic number must be `magic`.

    The file is streamed: no more than the header announces is ever read into memory.
    """
    path = Path(path)
    rank = magic & 0xFF
    kind = "images" if magic == IMAGES_MAGIC else "labels"
    with _open(path) as f:
        head = _read_exactly(f, 4, path)
        if len(head) < 4:
            raise ResnetlabError(f"{path}: truncated IDX file ({len(head)} bytes, no header)")
        found = int.from_bytes(head, "big")
        if found != magic:
            raise ResnetlabError(
                f"{path}: wrong magic number 0x{found:08x}; IDX {kind} start with 0x{magic:08x}"
            )
        raw_dims = _read_exactly(f, 4 * rank, path)
        if len(raw_dims) < 4 * rank:
            raise ResnetlabError(
                f"{path}: truncated IDX header ({4 + len(raw_dims)} of {4 + 4 * rank} bytes)"
            )
        dims = tuple(int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(rank))
        if dims[0] == 0:
            raise ResnetlabError(f"{path}: IDX file holds no samples")
        if any(d == 0 for d in dims[1:]):
            raise ResnetlabError(f"{path}: IDX dimensions {dims} contain a zero")
        need = 1
        for d in dims:
            need *= d  # Python ints: 65535**3 must not wrap around
        _check_size(path, 4 + 4 * rank, dims, need)
        data = _read_exactly(f, need, path)
        if len(data) < need:
            raise ResnetlabError(
                f"{path}: truncated IDX file: header says {dims} = {need} bytes of data, "
                f"found {len(data)}"
            )
        if _read_exactly(f, 1, path):
            raise ResnetlabError(
                f"{path}: data continues after the {need} bytes of {dims} the header announces; "
                "corrupt file?"
            )
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def find_idx_files(directory: str | os.PathLike) -> dict[str, Path] | None:
    """The four IDX files of a directory (raw preferred over .gz), or None if any is missing."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    found = {}
    for key, stem in PARTS.items():
        alt = stem.replace("-idx", ".idx")  # some copies name them train-images.idx3-ubyte
        for candidate in (stem, alt, stem + ".gz", alt + ".gz"):
            if (directory / candidate).is_file():
                found[key] = directory / candidate
                break
        else:
            return None
    return found


def _split(images_path: Path, labels_path: Path, classes: list[str] | None) -> ImageDataset:
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(images) != len(labels):
        raise ResnetlabError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    top = int(labels.max())
    if classes is not None and top >= len(classes):
        raise ResnetlabError(
            f"{labels_path}: label {top} out of range for {len(classes)} classes "
            f"(0..{len(classes) - 1})"
        )
    names = classes if classes is not None else [str(i) for i in range(top + 1)]
    x = torch.from_numpy(images).unsqueeze(1)
    return ImageDataset(x, torch.from_numpy(labels.astype(np.int64)), list(names))


def _recognise(files: dict[str, Path]) -> IdxSource | None:
    labels = read_idx(files["train_labels"], LABELS_MAGIC)
    header = LABELS_MAGIC.to_bytes(4, "big") + len(labels).to_bytes(4, "big")
    digest = hashlib.sha256(header + labels.tobytes()).hexdigest()
    for source in IDX_SOURCES.values():
        if source.train_labels_sha256 == digest:
            return source
    return None


def load_idx_dir(
    directory: str | os.PathLike, *, classes: list[str] | None = None, name: str | None = None
) -> DataSplits:
    """Read train and test splits from a directory of the four IDX files.

    Class names: `classes` if given; Fashion-MNIST's names when the train labels are
    Fashion-MNIST's; otherwise "0", "1", ... (MNIST's own names).
    """
    directory = Path(directory)
    files = find_idx_files(directory)
    if files is None:
        wanted = ", ".join(f"{stem}[.gz]" for stem in PARTS.values())
        raise ResnetlabError(f"{directory}: not a directory of IDX files (needs {wanted})")
    if classes is None:
        known = _recognise(files)
        if known is not None:
            classes, name = known.classes, name or known.name
    train = _split(files["train_images"], files["train_labels"], classes)
    test = _split(files["test_images"], files["test_labels"], classes)
    if train.image_shape != test.image_shape:
        raise ResnetlabError(
            f"{directory}: train images are {train.image_shape} but test images {test.image_shape}"
        )
    n = max(len(train.classes), len(test.classes))
    if classes is None and len(train.classes) != n:
        train.classes = test.classes = [str(i) for i in range(n)]
    return DataSplits(name or directory.name, train, test)


def _fetch(source: IdxSource, target: Path) -> None:
    for key, stem in PARTS.items():
        urls = [base + stem + ".gz" for base in source.mirrors]
        download(urls, target / (stem + ".gz"), source.sha256[key])


def locate_idx_dataset(
    name: str, path: str | os.PathLike | None = None, *, allow_download: bool = True
) -> Path:
    """The directory holding a named IDX dataset, by the look-up order of this module."""
    if name not in IDX_SOURCES:
        raise ResnetlabError(f"unknown IDX dataset {name!r}; known: {', '.join(IDX_SOURCES)}")
    source = IDX_SOURCES[name]
    hint = f"set {ENV_VAR} to a directory holding {name}/ with the four IDX files"
    if source.debian_package:
        hint = f"install the Debian package {source.debian_package} or {hint}"
    return locate_dataset(
        name,
        lambda d: find_idx_files(d) is not None,
        lambda target: _fetch(source, target),
        path=path,
        system_dirs=[source.debian_dir] if source.debian_dir is not None else [],
        what="IDX files",
        hint=hint,
        allow_download=allow_download,
    )


def load_idx_dataset(
    name: str, path: str | os.PathLike | None = None, *, allow_download: bool = True
) -> DataSplits:
    """Load Fashion-MNIST or MNIST (train and test) by the look-up order of this module."""
    directory = locate_idx_dataset(name, path, allow_download=allow_download)
    return load_idx_dir(directory, classes=IDX_SOURCES[name].classes, name=name)
