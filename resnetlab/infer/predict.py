"""Predict classes for image files with a weights file: preprocessing from its metadata, batches."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import policy
from ..data.classmap import class_names
from ..errors import ResnetlabError
from ..models.factory import load_model
from .fastpath import check_backend_compile, inference_plan, prepare_for_inference
from .preprocess import Preprocess, find_images


@dataclass
class Prediction:
    """Top-k classes of one image, best first."""

    path: str
    classes: list[str]
    indices: list[int]
    probs: list[float]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form: path and a list of {class, index, prob}."""
        return {
            "path": self.path,
            "top": [
                {"class": c, "index": i, "prob": round(p, 6)}
                for c, i, p in zip(self.classes, self.indices, self.probs)
            ],
        }


@dataclass
class PredictResult:
    """Predictions of the readable images and (path, reason) of the unreadable ones, in order."""

    predictions: list[Prediction] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


def load_for_inference(
    weights: str | os.PathLike,
    *,
    runtime: str = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any], Preprocess]:
    """Model (eval), metadata and preprocessing of a resnetlab weights file or an ONNX file (an
    export or an int8 file; `runtime`, `precision`, `batch_size` and `overrides` apply to it:
    infer.onnxmodel.load_onnx), checked for predict."""
    from .onnxmodel import is_onnx_file, load_onnx

    if is_onnx_file(weights):
        model, meta = load_onnx(weights, runtime=runtime, precision=precision,
                                batch_size=batch_size, overrides=overrides)  # fmt: skip
    else:
        if overrides:
            raise ResnetlabError(
                f"--{next(iter(overrides))} applies to ONNX files without resnetlab metadata; "
                f"{weights} carries its own"
            )
        model, meta = load_model(weights)
    if int(meta.get("num_classes") or 0) <= 0:
        raise ResnetlabError(f"{weights}: a model without a classifier head cannot predict classes")
    if getattr(model, "resnetlab_config", {}).get("features_only"):
        raise ResnetlabError(f"{weights}: a feature extractor cannot predict classes")
    return model, meta, Preprocess.from_metadata(meta, str(weights))


DEFAULT_TOPK = 5  # classes shown per image when not asked: all of them where the model has fewer


def resolve_topk(topk: int | None, num_classes: int) -> int:
    """The classes to show per image: `topk` as asked (None: DEFAULT_TOPK, or all the classes
    where the model has fewer). Fails in one line unless 1 <= topk <= num_classes: a larger k
    cannot be shown, and showing fewer classes than asked would pass in silence."""
    if topk is None:
        return min(DEFAULT_TOPK, num_classes)
    if topk < 1:
        raise ResnetlabError(f"topk {topk} must be at least 1", argument="topk")
    if topk > num_classes:
        raise ResnetlabError(
            f"topk {topk} is more than the {num_classes} classes of the model; use 1 to "
            f"{num_classes}",
            argument="topk",
        )
    return topk


def check_finite_outputs(logits: torch.Tensor, weights: str, inputs: list[str]) -> None:
    """Fail in one line naming the weights and the first input whose outputs are NaN or inf:
    broken weights or normalisation must not print numbers (nor NaN into JSON) and exit 0.
    `inputs` names the rows of `logits` (one name for all of them is enough)."""
    bad = ~torch.isfinite(logits.detach()).reshape(len(logits), -1).all(dim=1)
    if bool(bad.any()):
        on = inputs[min(int(bad.nonzero()[0, 0]), len(inputs) - 1)]
        raise ResnetlabError(
            f"{weights}: the model's outputs are not finite (NaN or inf) on {on}; the weights or "
            "their normalisation are broken (or, in half precision, the outputs overflowed: run "
            "in fp32)"
        )


def _batches(paths: list[Path], size: int) -> Iterator[list[Path]]:
    for i in range(0, len(paths), size):
        yield paths[i : i + size]


def predict_files(
    model: Callable[[torch.Tensor], torch.Tensor],
    prep: Preprocess,
    classes: list[str],
    paths: list[str | os.PathLike],
    *,
    topk: int | None = None,
    batch_size: int = 32,
    on_failure: Callable[[str, str], None] | None = None,
    weights: str = "weights",
) -> PredictResult:
    """Top-k predictions (topk: resolve_topk) for every readable file; unreadable ones are
    collected, not fatal. NaN or inf outputs are refused in one line naming `weights` and the
    image."""
    if batch_size < 1:
        raise ResnetlabError(f"batch size {batch_size} must be at least 1")
    k = resolve_topk(topk, len(classes))
    result = PredictResult()
    for chunk in _batches([Path(p) for p in paths], batch_size):
        tensors, names = [], []
        for p in chunk:
            try:
                tensors.append(prep.load(p))
                names.append(str(p))
            except (ResnetlabError, OSError, ValueError, MemoryError) as e:
                reason = (
                    str(e) if isinstance(e, ResnetlabError) else f"{p}: {type(e).__name__}: {e}"
                )
                result.failures.append((str(p), reason))
                if on_failure is not None:
                    on_failure(str(p), reason)
        if not tensors:
            continue
        with torch.no_grad():
            logits = model(torch.stack(tensors))
        check_finite_outputs(logits, weights, names)
        probs = torch.softmax(logits.float(), dim=1)
        top_p, top_i = probs.topk(k, dim=1)
        for name, ps, idx in zip(names, top_p.tolist(), top_i.tolist()):
            result.predictions.append(Prediction(name, [classes[i] for i in idx], idx, ps))
    return result


def predict(
    weights: str | os.PathLike,
    inputs: list[str | os.PathLike],
    *,
    topk: int | None = None,
    batch_size: int = 32,
    precision: str = "auto",
    compile: bool | None = None,
    on_failure: Callable[[str, str], None] | None = None,
    device: str = "auto",
    backend: str = "auto",
    overrides: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> PredictResult:
    """Predict every image file (and every image in each directory) of `inputs` with `weights`:
    the `topk` best classes of each (None: 5, or all where the model has fewer; more than the
    model has is refused).

    device: "auto" (CUDA when there is one; an ONNX file always runs on the CPU), "cpu" or "cuda".
    backend: "auto" (the fastest measured here: infer/backends.py), "torch", "onnxruntime" or
    "openvino"; for an ONNX file the runtime ("torch" does not apply). overrides: classes, mean
    and std for an ONNX file without resnetlab metadata. log: told which backend runs and why.
    device, precision, compile and threads (None: the cores other processes leave free) are
    resolved once into a policy.Plan (infer.fastpath.inference_plan) and applied.
    """
    from .onnxmodel import OnnxModel, is_onnx_file

    policy.check_settings(device=device, precision=precision, compile=compile, threads=threads)
    if is_onnx_file(weights) and backend == "torch":
        raise ResnetlabError(
            f"backend torch: {weights} is an ONNX file; use auto, onnxruntime or openvino",
            argument="backend",
        )
    if is_onnx_file(weights) and compile:
        raise ResnetlabError(
            f"compile does not apply: {weights} is an ONNX file, run by its runtime, not by "
            "torch.compile",
            argument="compile",
        )
    check_backend_compile(backend, compile)
    model, meta, prep = load_for_inference(
        weights, runtime=backend, precision=precision, batch_size=batch_size, overrides=overrides
    )
    classes = class_names(meta, int(meta["num_classes"]))
    resolve_topk(topk, len(classes))  # refused before the images are found and the model prepared
    onnx = isinstance(model, OnnxModel)
    device = "cpu" if device == "auto" and onnx else device
    paths = find_images(inputs)
    if not paths:
        raise ResnetlabError(f"no image files in {', '.join(str(i) for i in inputs)}")
    batch = min(batch_size, len(paths))
    if onnx:  # its runtime computes in the precision it was loaded with, on the CPU
        plan = policy.resolve(policy.Settings(device=device, precision="fp32", compile=False,
                                              threads=threads, conv=False))  # fmt: skip
    else:
        plan = inference_plan(model, device=device, precision=precision, compile=compile,
                              threads=threads, expected_images=len(paths),
                              input_size=prep.input_size, batch_size=batch)  # fmt: skip
    policy.apply(plan)
    # backend auto: the fastest measured here decides torch or a runtime (and compiled or not)
    fast = prepare_for_inference(
        model,
        precision=precision,
        compile=compile,
        expected_images=len(paths),
        input_size=prep.input_size,
        batch_size=batch,
        device=plan.device,
        backend="auto" if onnx else backend,
        plan=plan if backend == "torch" and not onnx else None,
    )
    if log is not None and "measured here" in str(getattr(fast, "why", "")):
        log(f"backend {fast.backend} ({fast.precision}): {fast.why}")
    return predict_files(fast, prep, classes, paths, topk=topk, batch_size=batch_size,
                         on_failure=on_failure, weights=str(weights))  # fmt: skip
