"""`resnetlab quantize`: a weights file to int8, calibrated on its data set, compared with fp32.

`quantize(weights, calib=SOURCE, images=N, out=FILE)` draws N training images of SOURCE
(preprocessed as the weights say: their mean and std), hands them to the int8 building blocks
(infer/int8.py: the form this machine runs fastest at equal accuracy, written with the weights'
metadata), then compares the int8 file with the fp32 model on the test split (top-1 of both, their
agreement, flip TTA where the weights were trained with it) and times both (infer/bench.py).
Refused in one line, with nothing written: too few calibration images, more than the source has,
weights that name no data set and no `--calib`, an MLP, a model without a head, an `--out` that is
not `.onnx`.
"""

from __future__ import annotations

import os
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
from ..data.sources import input_paths
from ..errors import ResnetlabError
from ..files import check_output
from ..models.weights import weights_file
from .backends import available_runtimes
from .int8 import CHECK_IMAGES, FORMS, load_int8, quantize_model
from .onnxmodel import is_onnx_file

MIN_CALIB_IMAGES = 32
DEFAULT_CALIB_IMAGES = 512
INT8_SUFFIX = ".int8.onnx"
__all__ = ["QuantizeReport", "calibration_images", "compare_on_test", "quantize"]


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
    form: str = ""
    form_chosen: str = ""  # why: the figures it was chosen from

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


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
    form: str = "auto",
    log: Callable[[str], None] | None = None,
) -> QuantizeReport:
    """Quantize a weights file to int8, calibrated on `images` training images of `calib`.

    form: "auto" (U8S8 and S8S8 made, measured here, the fastest at equal accuracy kept), "U8S8"
    or "S8S8". Then compare with the fp32 model on the test split of `calib` (all of it, or the
    first `test_images`; 0 skips), and time both at batch 1 and `bench_batch` (0 skips).
    """
    from ..data import load_source
    from ..models.factory import load_model
    from ..models.registry import get_entry

    t0 = time.perf_counter()
    if form != "auto" and form not in FORMS:
        raise ResnetlabError(f"form {form!r}: use auto, {', '.join(FORMS)}", argument="form")
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
    # a FIFO, a path under a file, the calibration data's folder: refused before calibrating
    check_output(out, (weights, *input_paths(source)))
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
            "calib_source": str(source),
            "calib_images": len(x_cal),
            "from_weights": Path(weights).name,
        },
    }
    forms = FORMS if form == "auto" else (form,)
    # held-out images to compare the forms on: test images, else the calibration images
    check = normalise(test.images[:CHECK_IMAGES], mean, std) if len(test) else x_cal
    q = quantize_model(model, meta, x_cal, out, extra_meta=extra, forms=forms, check=check,
                       time_batch=bench_batch or 16, log=log)  # fmt: skip
    seconds = time.perf_counter() - t0
    int8, _ = load_int8(out, runtime="onnxruntime")  # the comparison: as ONNX Runtime computes
    report = QuantizeReport(
        out=str(out), model=name, calib_source=str(source), calib_images=len(x_cal),
        seconds=round(seconds, 1), fp32_bytes=os.path.getsize(weights_file(weights)),
        int8_bytes=os.path.getsize(out), form=q["form"], form_chosen=q["chosen"],
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
            paths=("eager-fp32", "fast-nocompile", "onnxruntime", "int8")
            + (("int8-openvino",) if "openvino" in available_runtimes() else ()),
            int8_file=str(out),
            repeats=3, min_rep_s=0.2, log=log,
        )  # fmt: skip
        report.speed = rows_as_json(rows)
    return report
