"""Evaluation: top-1 / top-5 error, per-class accuracy, the confusion matrix; optional flip TTA."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..data.classmap import data_for_weights
from ..errors import ResnetlabError


@dataclass
class EvalResult:
    """Counts over one split; errors are fractions."""

    n: int
    top1_err: float
    top5_err: float
    loss: float
    confusion: torch.Tensor  # (classes, classes) int64, rows = true class, columns = predicted

    @property
    def top1_acc(self) -> float:
        """1 - top-1 error."""
        return 1.0 - self.top1_err

    def per_class_acc(self) -> list[float]:
        """Accuracy of each true class (NaN where a class has no samples)."""
        totals = self.confusion.sum(1).double()
        hits = self.confusion.diagonal().double()
        return (hits / totals).tolist()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader,
    *,
    num_classes: int,
    device: str = "cpu",
    tta_flip: bool = False,
    autocast_dtype: torch.dtype | None = None,
    check_logits: Callable[[torch.Tensor], None] | None = None,
) -> EvalResult:
    """Run `model` in eval mode over `loader`; flip TTA averages both views' logits.
    check_logits: called on each batch's logits before they are counted (it raises to refuse
    them: `evaluate_weights` refuses NaN or inf, which would score as wrong answers)."""
    was_training = model.training
    model.eval()
    k = min(5, num_classes)
    n = 0
    wrong1 = 0
    wrong5 = 0
    loss_sum = 0.0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    dev_type = torch.device(device).type
    ctx = (
        torch.autocast(dev_type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    try:
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            with ctx:
                logits = model(x)
                if tta_flip:
                    logits = logits + model(x.flip(3))
            logits = logits.float().cpu()
            if tta_flip:
                logits = logits / 2
            if check_logits is not None:
                check_logits(logits)
            loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
            topk = logits.topk(k, dim=1).indices
            pred = topk[:, 0]
            wrong1 += int((pred != y).sum())
            wrong5 += int((~(topk == y[:, None]).any(1)).sum())
            confusion += torch.bincount(
                y * num_classes + pred, minlength=num_classes * num_classes
            ).view(num_classes, num_classes)
            n += len(y)
    finally:
        model.train(was_training)
    n_safe = max(n, 1)
    return EvalResult(n, wrong1 / n_safe, wrong5 / n_safe, loss_sum / n_safe, confusion)


def evaluate_splits(
    model: nn.Module,
    loaders: dict[str, Any],
    *,
    device: str,
    num_classes: int,
    tta_flip: bool,
    desc: str,
    shown: bool = True,
) -> dict[str, EvalResult]:
    """`evaluate` on each split's loader (split -> result), with progress shown as
    'DESC (N split images[, flip TTA])': the trainer's evaluation of an epoch."""
    from .logs import Progress

    results = {}
    for name, loader in loaders.items():
        what = f"{loader.num_samples} {name} images{', flip TTA' if tta_flip else ''}"
        progress = Progress(len(loader), f"{desc} ({what})", enabled=shown)
        try:
            results[name] = evaluate(model, _counted(loader, progress), device=device,
                                     num_classes=num_classes, tta_flip=tta_flip)  # fmt: skip
        finally:
            progress.close()
    return results


def _counted(loader, progress):
    """The batches of `loader`, counted on `progress` as they are consumed."""
    images = 0
    for x, y in loader:
        yield x, y
        images += len(y)
        progress.update(1, images=images)


def evaluate_weights(
    weights: str | os.PathLike,
    data: str | os.PathLike,
    *,
    split: str = "test",
    tta: bool | None = None,
    precision: str = "fp32",
    batch_size: int = 500,
    device: str | None = None,
    threads: int | None = None,
    limit: int | None = None,
    ignore_class_names: bool = False,
    skip_bad: bool = False,
    seed: int = 0,
    backend: str = "auto",
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate a weights file (or an ONNX file: an export, or int8 from quantize) on a split of
    `data`: top-1 and top-5 accuracy, loss, accuracy per class and the confusion matrix, as
    `resnetlab eval` shows.

    Classes are matched by name (resnetlab.data.classmap): `class_match` says how, in one line,
    when it is not the identity. An image folder is decoded as predict decodes an image (resized
    to cover, centre-cropped to the weights' input size) and used whole (a train/test tree: the
    split); `limit` evaluates a seeded, class-stratified sample of that many images.

    tta: also the mirrored image (None: as the model was trained). device, precision and threads
    are resolved once into a policy.Plan (precision: fp32, bf16, fp16 on CUDA, or auto: bf16
    where the hardware computes it); channels_last for nets with convolutions.
    backend: for weights "auto" or "torch" (the model as it is), "onnxruntime" or "openvino" (the
    model exported and run there); for an ONNX file its runtime (auto: infer.onnxmodel.load_onnx).
    overrides: classes, mean and std of an ONNX file without resnetlab metadata."""
    from ..data.dataset import check_input_size
    from ..data.loader import BatchLoader
    from ..data.normalise import weights_mean_std
    from ..infer.onnxmodel import is_onnx_file, load_onnx
    from ..infer.predict import check_finite_outputs
    from ..models import get_entry, load_model
    from ..policy import Settings, apply, check_settings, resolve

    if batch_size < 1:
        raise ResnetlabError(
            f"batch_size must be positive, got {batch_size}", argument="batch_size"
        )
    if split not in ("test", "train"):
        raise ResnetlabError(f"split {split!r}: use test or train", argument="split")
    check_settings(device=device, precision=precision, threads=threads)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ResnetlabError(f"limit {limit!r}: expected a whole number >= 1", argument="limit")
    onnx = is_onnx_file(weights)
    if onnx:  # an export or an int8 model from `resnetlab quantize`, run on the CPU
        if device not in (None, "auto", "cpu"):
            raise ResnetlabError(
                f"device {device}: an ONNX model runs on the CPU", argument="device"
            )
        if backend == "torch":
            raise ResnetlabError(f"backend torch: {weights} is an ONNX file; use auto, "
                                 "onnxruntime or openvino", argument="backend")  # fmt: skip
        model, meta = load_onnx(weights, runtime=backend, precision=precision,
                                batch_size=batch_size, overrides=overrides)  # fmt: skip
    else:
        if overrides:
            raise ResnetlabError(f"--{next(iter(overrides))} applies to ONNX files without "
                                 f"resnetlab metadata; {weights} carries its own")  # fmt: skip
        model, meta = load_model(weights)
        if backend in ("onnxruntime", "openvino"):  # the model exported and run there
            from ..infer.export import input_size_of
            from ..infer.onnxmodel import runtime_model

            size = input_size_of(model, meta)
            model, onnx = runtime_model(backend, model, size, precision), True
    num_classes = int(meta.get("num_classes") or 0)
    if num_classes <= 0 or meta.get("features_only"):
        raise ResnetlabError(f"{weights}: a model without a classifier head cannot be evaluated")
    images, name, train_images, skipped = _eval_images(meta, data, split, skip_bad, limit, seed)
    check_input_size(meta, images, str(weights), str(data))
    images, match = data_for_weights(
        meta, images, weights=str(weights), source=str(data), ignore_names=ignore_class_names,
        ignore_hint="ignore_class_names (--ignore-class-names)",
    )  # fmt: skip
    classes = images.classes
    mean, std = weights_mean_std(meta, train_images, str(weights))
    model_name = meta.get("name")
    conv = not get_entry(model_name).is_mlp if model_name else len(meta["input_size"]) == 3
    # an ONNX model runs on the CPU, in the precision its runtime was asked for
    plan = resolve(Settings(device="cpu" if onnx else device or "auto",
                            precision="fp32" if onnx else precision, compile="off",
                            threads=threads, conv=conv))  # fmt: skip
    apply(plan)
    model.to(plan.device)
    if plan.channels_last:
        model.to(memory_format=torch.channels_last)
    loader = BatchLoader(images, batch_size, train=False, mean=mean, std=std,
                         channels_last=plan.channels_last)  # fmt: skip
    tta = bool(meta.get("tta", False)) if tta is None else tta
    on = f"{data} ({split} split)"
    res = evaluate(model, loader, num_classes=num_classes, device=plan.device, tta_flip=tta,
                   autocast_dtype=plan.dtype,
                   check_logits=lambda z: check_finite_outputs(z, str(weights), [on]))  # fmt: skip
    # rows of classes the data has, in the weights' order; a class it lacks has no row
    present = sorted(set(match.index))
    per_class = res.per_class_acc()
    return {
        "weights": str(weights),
        "model": meta.get("name", os.path.splitext(os.path.basename(weights))[0]),
        "dataset": name,
        "split": split,
        "images": res.n,
        "skipped_files": len(skipped),
        "class_match": match.note,
        "classes": classes,
        "top1_acc": res.top1_acc,
        "top5_acc": 1 - res.top5_err,
        "top1_err": res.top1_err,
        "top5_err": res.top5_err,
        "loss": res.loss,
        "tta_flip": tta,
        "per_class_acc": {classes[i]: per_class[i] for i in present},
        "confusion": res.confusion.tolist(),
    }


def _eval_images(meta, data, split, skip_bad, limit, seed):
    """(images of the split, dataset name, training images for mean/std, skipped files)."""
    from ..data import load_source
    from ..data.folders import read_eval_folder
    from ..data.sources import canonical_name, detect_format
    from ..data.split import stratified_holdout
    from ..infer.preprocess import Preprocess

    text = os.fspath(data)
    is_name = isinstance(data, str) and canonical_name(text) is not None
    if not is_name and os.path.isdir(text) and detect_format(text) == "folder":
        size = meta.get("input_size")
        if size is None or len(size) != 3:
            raise ResnetlabError(
                f"an image folder is decoded at the weights' input size, but the metadata "
                f"has none ({size!r})"
            )
        prep = Preprocess.from_metadata(meta, "weights")
        images, bad = read_eval_folder(
            text,
            split=split,
            mode=prep.mode,
            size=tuple(size[1:]),
            box=prep.resize_size,
            skip_bad=skip_bad,
            limit=limit,
            seed=seed,
        )
        return images, os.path.basename(os.path.normpath(text)), images.images, bad
    splits = load_source(data)
    images = splits.test if split == "test" else splits.train
    if limit is not None and limit < len(images):
        keep = stratified_holdout(images.labels, limit, seed)
        images = type(images)(images.images[keep], images.labels[keep], images.classes)
    return images, splits.name, splits.train.images, []


def plot_confusion(
    confusion: torch.Tensor | list[list[int]], classes: list[str], path, title: str = ""
) -> None:
    """Confusion matrix as a PNG: rows true class, columns predicted, cells row-normalised."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import atomic_write

    confusion = torch.as_tensor(confusion)
    c = confusion.double()
    frac = (c / c.sum(1, keepdim=True).clamp_min(1)).numpy()
    n = len(classes)
    size = max(4.0, 0.5 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=120)
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        ax.set_xticks(range(n), classes, rotation=90)
        ax.set_yticks(range(n), classes)
        for i in range(n):
            for j in range(n):
                if confusion[i, j]:
                    colour = "white" if frac[i, j] > 0.5 else "black"
                    ax.text(
                        j,
                        i,
                        str(int(confusion[i, j])),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color=colour,
                    )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
