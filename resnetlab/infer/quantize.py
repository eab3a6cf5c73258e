"""Post-training static int8 quantization with ONNX Runtime, and running the int8 model.

`quantize(weights, calib=SOURCE, images=N, out=FILE)` exports the fp32 model to ONNX, calibrates
activation ranges on N training images of SOURCE (preprocessed as the weights say: their mean and
std), and writes an int8 QDQ ONNX file: int8 weights with one scale per output channel, int8
activations with per-tensor scales. ONNX Runtime runs it with its int8 kernels (VNNI where the CPU
has it). The file is a protobuf: loading it runs no code, and its metadata (`resnetlab`, the same
JSON as the fp32 weights', plus a `quantization` entry) lets predict, eval and bench rebuild the
preprocessing and class names from the file alone.

Why ONNX Runtime and not PyTorch's PT2E flow: docs/inference.md, "Int8".
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.classmap import data_for_weights
from ..data.dataset import check_input_size
from ..data.normalise import normalise, weights_mean_std
from ..errors import ResnetlabError
from ..files import atomic_write
from ..models.weights import META_KEY
from .export import export_onnx, onnx_session, require_onnxruntime
from .onnxfile import read_onnx

MIN_CALIB_IMAGES = 32
DEFAULT_CALIB_IMAGES = 512
INT8_SUFFIX = ".int8.onnx"


def is_onnx_file(path: str | os.PathLike) -> bool:
    """True for a path named .onnx (an int8 file from `resnetlab quantize`, or a plain export)."""
    return Path(path).suffix.lower() == ".onnx"


class Int8Model(nn.Module):
    """An int8 ONNX file run by ONNX Runtime: float32 NCHW in, float32 logits out.

    It has no parameters and no gradients; the session is made on the first call, with torch's
    thread count at that moment, so `--threads` applies to it as to the torch paths.
    """

    def __init__(self, path: str | os.PathLike, meta: dict[str, Any], session=None) -> None:
        super().__init__()
        self.path = str(path)
        self.meta = meta
        self.precision = "int8"
        self.backend = "onnxruntime-int8"
        self.compiled = False
        self.folded_bn = 0
        self._session = session
        self._threads = torch.get_num_threads() if session is not None else None

    def session(self):
        """The ONNX Runtime session, (re)made when torch's thread count changed."""
        threads = torch.get_num_threads()
        if self._session is None or threads != self._threads:
            self._session = onnx_session(self.path, threads=threads)
            self._threads = threads
        return self._session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sess = self.session()
        feed = {sess.get_inputs()[0].name: x.detach().float().cpu().contiguous().numpy()}
        (out,) = sess.run(None, feed)
        return torch.from_numpy(out)

    def __deepcopy__(self, memo):  # a session cannot be copied; a new one is made on demand
        return Int8Model(self.path, dict(self.meta))


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The resnetlab metadata of an ONNX file ({} when it has none), the metadata and the graph
    checked (infer.onnxfile); reads no code."""
    return read_onnx(path)[1]


def load_int8(path: str | os.PathLike) -> tuple[Int8Model, dict[str, Any]]:
    """An int8 file written by `resnetlab quantize` -> (runnable model, metadata), checked."""
    if require_onnxruntime() is None:
        raise ResnetlabError(
            f"{path}: int8 models run with onnxruntime: pip install 'resnetlab[onnx]'"
        )
    meta = read_onnx_metadata(path)
    if "quantization" not in meta or "name" not in meta:
        raise ResnetlabError(
            f"{path}: an ONNX file without resnetlab int8 metadata; give .safetensors weights or "
            "a file written by `resnetlab quantize`"
        )
    sess = onnx_session(path, threads=torch.get_num_threads())
    return Int8Model(path, meta, session=sess).eval(), meta


@dataclass
class QuantizeReport:
    """What was written and how the int8 model compares with the fp32 one, measured here."""

    out: str
    model: str
    calib_source: str
    calib_images: int
    seconds: float
    fp32_bytes: int
    int8_bytes: int
    test_images: int = 0
    tta_flip: bool = False
    fp32_top1: float | None = None
    int8_top1: float | None = None
    top1_agreement: float | None = None
    speed: list[dict[str, Any]] = field(default_factory=list)
    machine: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class _CalibrationReader:
    """ONNX Runtime's calibration data reader over a float tensor, in batches."""

    def __init__(self, x: torch.Tensor, input_name: str, batch: int = 64) -> None:
        self.batches = iter(x.split(batch))
        self.input_name = input_name

    def get_next(self):
        b = next(self.batches, None)
        return None if b is None else {self.input_name: b.contiguous().numpy()}

    def __iter__(self):
        return self

    def __next__(self):
        item = self.get_next()
        if item is None:
            raise StopIteration
        return item


def quantize_onnx(fp32_onnx: str, out_path: str, calib: torch.Tensor) -> None:
    """Static QDQ int8 quantization of an ONNX file with ONNX Runtime, calibrated on `calib`."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_CalibrationReader, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(prefix="resnetlab-quant-") as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        try:  # shape inference and graph optimisation first, as ONNX Runtime recommends
            quant_pre_process(fp32_onnx, pre, skip_symbolic_shape=True)
        except Exception:  # an optimisation it cannot do: quantize the export as it is
            pre = fp32_onnx
        # S8S8 in QDQ form: ONNX Runtime's recommended first choice; both run on VNNI here
        quantize_static(
            pre, out_path, Reader(calib, "input"), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )  # fmt: skip


def quantize_model(
    model: nn.Module,
    meta: dict[str, Any],
    calib: torch.Tensor,
    out: str | os.PathLike,
    *,
    extra_meta: dict[str, Any] | None = None,
) -> None:
    """Write `model` as an int8 ONNX file calibrated on the normalised batch `calib`, atomically."""
    import onnx

    if require_onnxruntime() is None:
        raise ResnetlabError("quantize needs onnxruntime: pip install 'resnetlab[onnx]'")
    input_size = tuple(int(s) for s in calib.shape[1:])
    full_meta = {**meta, "input_size": list(input_size), **(extra_meta or {})}
    full_meta.setdefault("quantization", {"dtype": "int8"})
    try:
        text = json.dumps(full_meta)
    except TypeError as e:
        raise ResnetlabError(f"metadata is not JSON-serialisable: {e}") from None

    def write(tmp: str) -> None:
        with tempfile.TemporaryDirectory(prefix="resnetlab-quant-") as d:
            fp32 = os.path.join(d, "fp32.onnx")
            int8 = os.path.join(d, "int8.onnx")
            export_onnx(model, fp32, input_size, dynamic_batch=True)
            quantize_onnx(fp32, int8, calib)
            proto = onnx.load(int8)
            del proto.metadata_props[:]
            entry = proto.metadata_props.add()
            entry.key, entry.value = META_KEY, text
            onnx.save(proto, tmp)
        onnx_session(tmp)  # it must load before it takes the name

    atomic_write(out, write)


def _check_calib_count(images: int) -> None:
    if images < MIN_CALIB_IMAGES:
        raise ResnetlabError(
            f"images {images}: too few to calibrate activation ranges; use at least "
            f"{MIN_CALIB_IMAGES} (default {DEFAULT_CALIB_IMAGES})",
            argument="images",
        )


def calibration_images(
    splits, n: int, meta: dict[str, Any], source: str, seed: int = 0, weights: str = "the model"
) -> tuple[torch.Tensor, list[float], list[float]]:
    """N training images of `splits`, drawn at random (seeded), normalised as the weights say
    (`weights` names them in messages)."""
    train = splits.train
    _check_calib_count(n)
    if len(train) == 0:
        raise ResnetlabError(f"{source} has no training images to calibrate on")
    if len(train) < n:
        raise ResnetlabError(
            f"images {n}: {source} has only {len(train)} training images; "
            f"use {len(train)} or fewer",
            argument="images",
        )
    check_input_size(meta, train, weights, source)
    mean, std = weights_mean_std(meta, train.images)
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    return normalise(train.images[idx], mean, std), mean, std


def _logits(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tta: bool, batch=500):
    outs = []
    with torch.no_grad():
        for b in x.split(batch):
            out = model(b)
            if tta:
                out = (out + model(b.flip(3))) / 2
            outs.append(out.float())
    return torch.cat(outs)


def compare_on_test(
    fp32: nn.Module, int8: nn.Module, x: torch.Tensor, y: torch.Tensor, tta: bool
) -> tuple[float, float, float]:
    """(fp32 top-1, int8 top-1, top-1 agreement) on a labelled normalised batch."""
    a = _logits(fp32, x, tta).argmax(1)
    b = _logits(int8, x, tta).argmax(1)
    return (
        float((a == y).float().mean()),
        float((b == y).float().mean()),
        float((a == b).float().mean()),
    )


def quantize(
    weights: str | os.PathLike,
    *,
    calib: str | None = None,
    images: int = DEFAULT_CALIB_IMAGES,
    out: str | os.PathLike | None = None,
    test_images: int | None = None,
    bench_batch: int = 16,
    log: Callable[[str], None] | None = None,
) -> QuantizeReport:
    """Quantize a weights file to int8, calibrated on `images` training images of `calib`.

    Then compare with the fp32 model on the test split of `calib` (all of it, or the first
    `test_images`; 0 skips), and time both at batch 1 and `bench_batch` (0 skips).
    """
    from ..data import load_source
    from ..models.factory import load_model
    from ..models.registry import get_entry

    t0 = time.perf_counter()
    if is_onnx_file(weights):
        raise ResnetlabError(
            f"{weights} is already an ONNX file; quantize fp32 .safetensors weights"
        )
    model, meta = load_model(weights)
    name = str(meta["name"])
    if get_entry(name).is_mlp:
        raise ResnetlabError(f"{name} is an MLP on vectors; quantize handles conv models on images")
    if meta.get("features_only") or int(meta.get("num_classes") or 0) <= 0:
        raise ResnetlabError(f"{weights}: quantize needs a classifier (this model has no head)")
    source = calib or meta.get("dataset")
    if not source:
        raise ResnetlabError(
            f"calib not given: {weights} names no dataset to calibrate on; give a source of "
            "its training images (e.g. fashion-mnist)",
            argument="calib",
        )
    out = Path(out) if out else Path(Path(weights).stem + INT8_SUFFIX)  # the current directory
    if out.is_dir():
        raise ResnetlabError(f"out {out} is a directory; give a file name", argument="out")
    if out.suffix != ".onnx":
        raise ResnetlabError(
            f"out {out}: the int8 model is an ONNX file; use a .onnx name", argument="out"
        )
    _check_calib_count(images)  # before the data is read: bad input fails at once
    splits = load_source(source)
    x_cal, mean, std = calibration_images(splits, images, meta, str(source), weights=str(weights))
    # the calibration data must be the weights' classes: matched by name before any work
    test, match = data_for_weights(meta, splits.test, weights=str(weights), source=str(source))
    if log:
        if match.note:
            log(match.note)
        log(f"calibrating on {len(x_cal)} training images of {source}")
    extra = {
        "mean": mean,
        "std": std,
        "quantization": {
            "dtype": "int8",
            "format": "onnx-qdq",
            "weights": "int8, symmetric, per output channel",
            "activations": "int8, per tensor, min-max calibrated",
            "runtime": "onnxruntime",
            "calib_source": str(source),
            "calib_images": len(x_cal),
            "from_weights": Path(weights).name,
        },
    }
    quantize_model(model, meta, x_cal, out, extra_meta=extra)
    seconds = time.perf_counter() - t0
    int8, _ = load_int8(out)
    report = QuantizeReport(
        out=str(out), model=name, calib_source=str(source), calib_images=len(x_cal),
        seconds=round(seconds, 1), fp32_bytes=os.path.getsize(weights),
        int8_bytes=os.path.getsize(out),
    )  # fmt: skip
    if test_images != 0 and len(test):
        n = len(test) if test_images is None else min(test_images, len(test))
        x = normalise(test.images[:n], mean, std)
        tta = bool(meta.get("tta", False))
        if log:
            log(f"comparing fp32 and int8 on {n} test images{' (flip TTA)' if tta else ''}")
        f, q, agree = compare_on_test(model, int8, x, test.labels[:n], tta)
        report.test_images, report.tta_flip = n, tta
        report.fp32_top1, report.int8_top1, report.top1_agreement = f, q, agree
    if bench_batch:
        from .bench import bench
        from .bench_report import machine_line, rows_as_json

        report.machine = machine_line()
        rows = bench(
            model, name, tuple(x_cal.shape[1:]), sorted({1, bench_batch}),
            paths=("eager-fp32", "fast-nocompile", "onnxruntime", "int8"), int8_file=str(out),
            repeats=3, min_rep_s=0.2, log=log,
        )  # fmt: skip
        report.speed = rows_as_json(rows)
    return report
