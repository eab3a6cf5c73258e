"""Builders of data files for the tests: IDX files, class-folder trees, CIFAR batches (as
Python 2 wrote them) and pickles that would run code if anything unpickled them unchecked."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from resnetlab.data import idx

# IDX files


def idx_bytes(a: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return header + a.astype(np.uint8).tobytes()


def write_idx(path: Path, a: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(a)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def make_idx_dir(root: Path, n_train=12, n_test=5, hw=(4, 3), gz=False, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, *hw), dtype=np.uint8),
        "train_labels": np.arange(n_train, dtype=np.uint8) % 10,
        "test_images": rng.integers(0, 256, (n_test, *hw), dtype=np.uint8),
        "test_labels": np.arange(n_test, dtype=np.uint8) % 10,
    }
    paths = {k: write_idx(root / idx.PARTS[k], a, gz) for k, a in arrays.items()}
    return arrays, paths


# class-folder trees


def save(path: Path, img: Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def solid(value: int, size=(6, 4), mode="RGB") -> Image.Image:
    fill = (value, value // 2, 255 - value) if mode == "RGB" else value
    return Image.new(mode, size, fill)


def make_tree(root: Path, classes=("cat", "dog"), per_class=5, mode="RGB", size=(6, 4)):
    fmts = [("png", {}), ("bmp", {}), ("webp", {"lossless": True}), ("png", {})]
    if mode == "L":  # WebP has no grey mode: it would come back as RGB
        fmts = [("png", {}), ("bmp", {})]
    for ci, name in enumerate(classes):
        for i in range(per_class):
            ext, kw = fmts[i % len(fmts)]
            save(root / name / f"{i}.{ext}", solid(40 * ci + i, size, mode), **kw)
    return root


# CIFAR batches

# The official batches were written by Python 2's cPickle (protocol 2): byte strings are STRING
# opcodes and arrays reduce through numpy.core.multiarray._reconstruct. Python 3's pickle cannot
# write that form, so this small encoder writes exactly those opcodes.


def _s(b: bytes | str) -> bytes:
    b = b.encode("latin1") if isinstance(b, str) else b
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def _int(i: int) -> bytes:
    if 0 <= i < 256:
        return b"K" + bytes([i])
    return b"M" + struct.pack("<H", i) if 0 <= i < 65536 else b"J" + struct.pack("<i", i)


def _obj(v) -> bytes:
    if isinstance(v, (bytes, str)):
        return _s(v)
    if isinstance(v, int):
        return _int(v)
    if isinstance(v, list):
        return b"](" + b"".join(_obj(x) for x in v) + b"e"
    if isinstance(v, dict):
        return b"}(" + b"".join(_obj(k) + _obj(x) for k, x in v.items()) + b"u"
    assert isinstance(v, np.ndarray) and v.dtype == np.uint8
    shape = b"(" + b"".join(_int(d) for d in v.shape) + b"t"
    dtype = b"cnumpy\ndtype\n" + _s("u1") + _int(0) + _int(1) + b"\x87R"
    dtype += b"(" + _int(3) + _s("|") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + _int(0) + b"tb"
    head = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _int(0) + b"\x85"
    return head + _s("b") + b"\x87R(" + _int(1) + shape + dtype + b"\x89" + _s(v.tobytes()) + b"tb"


def py2_pickle(v) -> bytes:
    return b"\x80\x02" + _obj(v) + b"."


def write_cifar10(root: Path, per_batch: int = 4, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        batch = {
            b"batch_label": name.encode(),
            b"labels": y,
            b"data": x,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
        }
        (root / name).write_bytes(py2_pickle(batch))
        out[name] = (x, y)
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    meta = {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}
    (root / "batches.meta").write_bytes(py2_pickle(meta))
    return out


def write_cifar100(root: Path, n: int = 6) -> dict:
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in ("train", "test"):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        batch = {
            b"filenames": [b"f"] * n,
            b"batch_label": name.encode(),
            b"fine_labels": fine,
            b"coarse_labels": [v // 5 for v in fine],
            b"data": x,
        }
        (root / name).write_bytes(py2_pickle(batch))
        out[name] = (x, fine)
    meta = {
        b"fine_label_names": [f"class{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"super{i}".encode() for i in range(20)],
    }
    (root / "meta").write_bytes(py2_pickle(meta))
    return out


# pickles that run code when unpickled


class RunsShell:
    """Unpickling this runs a shell command that touches `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class RunsPython:
    """Unpickling this runs Python code that writes `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))
