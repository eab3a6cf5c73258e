"""Export a model to ONNX or a torch.export program, checked against PyTorch on sample input.

ONNX goes through torch.onnx's TorchScript-based exporter, which needs nothing beyond torch and
onnx (the torch.export-based one also needs onnxscript). The file is verified with onnxruntime
when it is installed (`pip install resnetlab[onnx]`). Both formats take any batch size unless
asked for a static batch of 1 (a batch-1 graph that refuses batch 4 surprises). An ONNX export is a
first-class file: it carries the weights' metadata (classes, mean, std, input size, model name and
options) as the int8 file from `quantize` does, under the same key, so predict, eval and bench
take it in place of the weights, checked by the one checker (infer.onnxfile.read_onnx).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ResnetlabError
from ..files import atomic_write, utf8_path
from ..models.metadata import check_metadata
from ..models.registry import get_entry
from ..models.weights import META_KEY, model_metadata

FORMATS = ("onnx", "exported-program")
SUFFIXES = {"onnx": ".onnx", "exported-program": ".pt2"}
ONNX_OPSET = 17


@dataclass
class ExportReport:
    """What was written and how closely the exported model matches PyTorch on sample input."""

    path: str
    format: str
    input_shape: tuple[int, ...]
    max_abs_diff: float | None  # None when the runtime to check it is not installed
    top1_agree: bool | None
    checked_with: str | None  # "onnxruntime", "torch.export.load", or None
    dynamic_batch: bool


def input_size_of(model: nn.Module, meta: dict[str, Any]) -> tuple[int, int, int]:
    """(C, H, W) from the metadata, else the model's native size with its own channel count."""
    size = meta.get("input_size")
    if isinstance(size, (list, tuple)) and len(size) == 3:
        return tuple(int(s) for s in size)  # type: ignore[return-value]
    cfg = getattr(model, "resnetlab_config", {}) or {}
    entry = get_entry(cfg.get("name", meta.get("name", "")))
    if entry.is_mlp:
        raise ResnetlabError(
            "an MLP's weights need input_size [C, H, W] in their metadata to be exported"
        )
    c = int(cfg.get("in_chans", entry.input_size[0]))
    return (c, entry.input_size[1], entry.input_size[2])


def require_onnxruntime():
    """Import onnxruntime, or None if it is not installed."""
    try:
        return importlib.import_module("onnxruntime")
    except ImportError:
        return None


def sample_input(input_size: tuple[int, ...], batch: int, seed: int = 0) -> torch.Tensor:
    """A fixed random normalised batch to compare runtimes on."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn((batch, *input_size), generator=g)


def export_onnx(
    model: nn.Module, path: str | os.PathLike, input_size: tuple[int, ...], *,
    dynamic_batch: bool = False, opset: int = ONNX_OPSET, metadata: dict[str, Any] | None = None,
) -> ExportReport:  # fmt: skip
    """Write `model` as ONNX (input 'input' NCHW, output 'logits') atomically, and check it;
    `metadata` (JSON-able) is stored under the resnetlab key, as the weights keep theirs."""
    try:
        importlib.import_module("onnx")
    except ImportError:
        raise ResnetlabError(
            "ONNX export needs the onnx package: pip install 'resnetlab[onnx]'"
        ) from None
    model = model.eval()
    text = ""
    if metadata is not None:
        check_metadata(metadata, "metadata")
        try:
            text = json.dumps(metadata)
        except TypeError as e:
            raise ResnetlabError(f"metadata is not JSON-serialisable: {e}") from None
    x = sample_input(input_size, 2 if dynamic_batch else 1)
    outputs = output_names(model)
    axes = {name: {0: "batch"} for name in ("input", *outputs)} if dynamic_batch else None

    def write(tmp: str) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                model, (x,), tmp, input_names=["input"], output_names=outputs,
                dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False,
            )  # fmt: skip
        import onnx

        if metadata is not None:
            proto = onnx.load(tmp)
            del proto.metadata_props[:]
            entry = proto.metadata_props.add()
            entry.key, entry.value = META_KEY, text
            onnx.save(proto, tmp)
        onnx.checker.check_model(tmp)

        ort = require_onnxruntime()
        if ort is not None:
            # check on a batch size other than the traced one when the batch is dynamic
            xc = sample_input(input_size, 3 if dynamic_batch else 1, seed=1)
            checks.update(_compare(model, xc, run_onnx(tmp, xc), "onnxruntime"))

    checks: dict[str, Any] = {}
    atomic_write(path, write)
    return ExportReport(
        str(path), "onnx", tuple(x.shape[1:]), checks.get("diff"), checks.get("agree"),
        checks.get("checked_with"), dynamic_batch,
    )  # fmt: skip


def output_names(model: nn.Module) -> list[str]:
    """The exported graph's outputs: 'logits' for a classifier, 'features.0' ... for a backbone
    (`features_only`), one per feature map it returns."""
    if (getattr(model, "resnetlab_config", None) or {}).get("features_only"):
        return [f"features.{i}" for i in range(len(model.feature_info.channels()))]
    return ["logits"]


def _compare(model: nn.Module, x: torch.Tensor, got, runtime: str) -> dict[str, Any]:
    """Max abs difference (and top-1 agreement, for logits) of `got` with PyTorch's output; fails
    if they disagree. A backbone's outputs are compared map by map."""
    with torch.no_grad():
        ref = model(x)
    refs = list(ref) if isinstance(ref, (list, tuple)) else [ref]
    gots = list(got) if isinstance(got, (list, tuple)) else [got]
    if [tuple(g.shape) for g in gots] != [tuple(r.shape) for r in refs]:
        raise ResnetlabError(
            f"{runtime} gives shapes {[tuple(g.shape) for g in gots]}, PyTorch "
            f"{[tuple(r.shape) for r in refs]}"
        )
    diff = max(float((r - g).abs().max()) for r, g in zip(refs, gots))
    tol = 1e-3 * max(1.0, *(float(r.abs().max()) for r in refs))
    if not diff <= tol:  # also catches NaN
        raise ResnetlabError(
            f"exported model differs from PyTorch under {runtime}: "
            f"max abs diff {diff:.3g} > {tol:.3g}"
        )
    agree = bool((refs[0].argmax(1) == gots[0].argmax(1)).all()) if ref is refs[0] else None
    return {"diff": diff, "agree": agree, "checked_with": runtime}


def onnx_session(path: str | os.PathLike | bytes, threads: int | None = None):
    """An onnxruntime CPU session for an ONNX file or its bytes (ResnetlabError if onnxruntime is
    missing)."""
    ort = require_onnxruntime()
    if ort is None:
        raise ResnetlabError("onnxruntime is not installed: pip install 'resnetlab[onnx]'")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    try:  # onnxruntime takes UTF-8 paths only: a name of other bytes through utf8_path
        with contextlib.nullcontext(path) if isinstance(path, bytes) else utf8_path(path) as src:
            return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        label = "the exported model" if isinstance(path, bytes) else path
        raise ResnetlabError(f"{label}: onnxruntime cannot load it ({first[:200]})") from None


def run_onnx(path: str | os.PathLike, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
    """Run an exported ONNX file on a batch with onnxruntime; returns the logits (a backbone's
    file: the list of feature maps)."""
    sess = onnx_session(path)
    name = sess.get_inputs()[0].name
    outs = [torch.from_numpy(o) for o in sess.run(None, {name: x.numpy()})]
    return outs[0] if len(outs) == 1 else outs


def export_program(
    model: nn.Module, path: str | os.PathLike, input_size: tuple[int, ...], *,
    dynamic_batch: bool = False,
) -> ExportReport:  # fmt: skip
    """Write `model` as a torch.export ExportedProgram (.pt2), atomically, and check it reloads."""
    model = model.eval()
    x = sample_input(input_size, 2 if dynamic_batch else 1)
    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=65536)}} if dynamic_batch else None
    with torch.no_grad():
        try:
            ep = torch.export.export(model, (x,), dynamic_shapes=dynamic)
        except Exception as e:  # torch.export raises many internal types for untraceable code
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ResnetlabError(f"torch.export failed: {first[:300]}") from None
    checks: dict[str, Any] = {}

    def write(tmp: str) -> None:
        # torch.export wants a .pt2 name or a buffer; the temporary name is not .pt2
        buf = io.BytesIO()
        torch.export.save(ep, buf)
        Path(tmp).write_bytes(buf.getvalue())
        loaded = torch.export.load(io.BytesIO(Path(tmp).read_bytes())).module()
        xc = sample_input(input_size, 3 if dynamic_batch else 1, seed=1)
        with torch.no_grad():
            got = loaded(xc)
        checks.update(_compare(model, xc, got, "torch.export.load"))

    atomic_write(path, write)
    return ExportReport(
        str(path), "exported-program", tuple(x.shape[1:]), checks["diff"], checks["agree"],
        checks["checked_with"], dynamic_batch,
    )  # fmt: skip


def export(
    model: nn.Module, meta: dict[str, Any], fmt: str, out: str | os.PathLike, *,
    dynamic_batch: bool = True, source: str | os.PathLike | None = None,
) -> ExportReport:  # fmt: skip
    """Export in format `fmt` ('onnx' or 'exported-program') to `out` (named .onnx or .pt2 to
    match: check_suffix), any batch size unless
    `dynamic_batch` is False; an ONNX file carries `meta` (the weights' metadata, from the file
    `source`) with its input size and how it was exported."""
    if fmt not in FORMATS:
        raise ResnetlabError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    size = input_size_of(model, meta)
    if Path(out).is_dir():
        raise ResnetlabError(f"output {out} is a directory; give a file name")
    check_suffix(fmt, out)
    if fmt == "onnx":
        full = export_metadata(model, meta, size, dynamic_batch=dynamic_batch, source=source)
        return export_onnx(model, out, size, dynamic_batch=dynamic_batch, metadata=full)
    return export_program(model, out, size, dynamic_batch=dynamic_batch)


def check_suffix(fmt: str, out: str | os.PathLike) -> None:
    """Fail in one line unless `out` is named with the suffix of format `fmt` (.onnx, .pt2):
    predict, eval and bench tell an ONNX file by its name, so a name that lies misleads them."""
    want, got = SUFFIXES[fmt], Path(out).suffix.lower()
    if got != want:
        other = [f for f, suffix in SUFFIXES.items() if suffix == got]
        hint = f", or format {other[0]} for a {got} file" if other else ""
        raise ResnetlabError(
            f"out {out}: the {fmt} format is written to a {want} file; use a {want} name{hint}",
            argument="out",
        )


def export_metadata(
    model: nn.Module, meta: dict[str, Any], input_size: tuple[int, ...], *,
    dynamic_batch: bool, source: str | os.PathLike | None = None,
) -> dict[str, Any]:  # fmt: skip
    """What an ONNX export carries: the weights' metadata (what the model says of itself where
    they have none), its input size, and an `export` entry (format, opset, batch, source)."""
    full = {**model_metadata(model), **meta, "input_size": list(input_size)}
    full["export"] = {
        "format": "onnx", "opset": ONNX_OPSET, "dynamic_batch": dynamic_batch,
        **({"from_weights": Path(source).name} if source is not None else {}),
    }  # fmt: skip
    return full
