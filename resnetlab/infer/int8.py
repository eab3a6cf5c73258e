"""Int8 building blocks: the int8 ONNX file made, in the form this machine runs fastest, and read.

`quantize_model(model, meta, calib, out)` exports the fp32 model to ONNX, calibrates activation
ranges on the normalised batch `calib` and writes an int8 QDQ ONNX file: int8 weights with one scale
per output channel, 8-bit activations with per-tensor scales. Which 8 bits is measured, not
assumed: both forms are made from the one calibration, U8S8 (uint8 activations, ONNX Runtime's VNNI
kernels on x86) and S8S8 (int8 activations, ONNX Runtime's recommended default), each is timed on
every runtime installed (ONNX Runtime, OpenVINO) and checked against the fp32 model's top-1 on
held-out images, and the fastest at equal accuracy (agreement within AGREEMENT_TOLERANCE of the best
form's) is kept; on a CPU without VNNI the weights use 7 bits (reduce_range), as ONNX Runtime
advises there. The file's metadata (`resnetlab`: the fp32 weights' own, plus a `quantization`
entry) records the form, the figures it was chosen from and the machine they were measured on.
`load_int8` reads such a file back, checked, as a runnable model.

Every Q/DQ node gets its own scale and zero-point constants (separate_qdq_constants): OpenVINO's
int8 transformations rewrite a constant in place when they move a dequantization through the
channel padding of an option-A shortcut, which broke every other node sharing it ("Argument shapes
are inconsistent"); with its own constants each node is rewritten alone, and the file loads and
agrees in both runtimes (tests/test_infer_openvino.py, over the model families).

This module sits below the workflows that make int8 files: `quantize` (calibration on a data set,
the comparison with fp32, infer/quantize.py) and `bench` (the int8 paths, infer/bench_paths.py); it
imports neither. The file is a protobuf: loading it runs no code. Why ONNX Runtime and not
PyTorch's PT2E flow: docs/inference.md, "Int8".
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ResnetlabError
from ..files import atomic_write
from ..hardware import cpu_features
from ..models.weights import META_KEY
from .backends import INT8_PATHS, available_runtimes, machine_key, record, time_images_per_s
from .export import export_onnx, onnx_session, require_onnxruntime
from .onnxfile import read_onnx
from .onnxmodel import OnnxModel, is_int8, load_onnx

FORMS = ("U8S8", "S8S8")  # activations, weights
# forms whose top-1 agreement with fp32 is within this of the best form's count as equally accurate
AGREEMENT_TOLERANCE = 0.005
# forms within this fraction of the fastest count as equally fast; ONNX Runtime's speed decides
SPEED_TIE = 0.05
CHECK_IMAGES = 256  # held-out images the forms are compared on, at most
FORM_REP_S = 0.1  # seconds per timed repetition of a form (three each, after a warm-up)
Int8Model = OnnxModel  # the int8 file's model: an ONNX model (older code imports this name)


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The resnetlab metadata of an ONNX file ({} when it has none), the metadata and the graph
    checked (infer.onnxfile); reads no code."""
    return read_onnx(path)[1]


def load_int8(
    path: str | os.PathLike, *, runtime: str = "auto", batch_size: int | None = None
) -> tuple[OnnxModel, dict[str, Any]]:
    """An int8 file written by `resnetlab quantize` -> (runnable model, metadata), checked; run by
    `runtime` (auto: the faster measured here, else ONNX Runtime)."""
    if not available_runtimes():
        raise ResnetlabError(
            f"{path}: int8 models run with onnxruntime: pip install 'resnetlab[onnx]'"
        )
    meta = read_onnx_metadata(path)
    if not is_int8(meta) or "name" not in meta:
        raise ResnetlabError(
            f"{path}: an ONNX file without resnetlab int8 metadata; give .safetensors weights or "
            "a file written by `resnetlab quantize`"
        )
    return load_onnx(path, runtime=runtime, batch_size=batch_size)


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


def quantize_onnx(
    fp32_onnx: str,
    out_path: str,
    calib: torch.Tensor,
    *,
    form: str = "S8S8",
    reduce_range: bool = False,
    cache: str | None = None,
) -> None:
    """Static QDQ int8 quantization of an ONNX file with ONNX Runtime, calibrated (min-max) on
    `calib`: weights int8 per output channel, activations uint8 (form U8S8) or int8 (S8S8), per
    tensor. `cache`: a JSON file of the calibrated ranges, written by the first call and read by
    later ones (one calibration for every form)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if form not in FORMS:
        raise ResnetlabError(f"unknown int8 form {form!r}; use one of {', '.join(FORMS)}")

    class Reader(_CalibrationReader, CalibrationDataReader):
        pass

    activations = QuantType.QUInt8 if form == "U8S8" else QuantType.QInt8
    with tempfile.TemporaryDirectory(prefix="resnetlab-quant-") as tmp:
        pre = os.path.join(tmp, "pre.onnx")
        try:  # shape inference and graph optimisation first, as ONNX Runtime recommends
            quant_pre_process(fp32_onnx, pre, skip_symbolic_shape=True)
        except Exception:  # an optimisation it cannot do: quantize the export as it is
            pre = fp32_onnx
        reader = None if cache and os.path.isfile(cache) else Reader(calib, "input")
        root = logging.getLogger()
        level = root.level  # its per-channel notes on the BNs of pre-activation nets: not errors
        root.setLevel(max(level, logging.ERROR))
        try:
            quantize_static(
            pre, out_path, reader, quant_format=QuantFormat.QDQ, per_channel=True,
            reduce_range=reduce_range, activation_type=activations, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=cache,
            )  # fmt: skip
        finally:
            root.setLevel(level)


def separate_qdq_constants(proto: Any) -> int:
    """Give every QuantizeLinear/DequantizeLinear node its own scale and zero-point constants
    (in place); returns how many were copied.

    ONNX Runtime shares one scale/zero-point pair between the nodes of a tensor and of the
    tensors that keep its scale (slices, the channel padding of option-A shortcuts). OpenVINO's
    int8 transformations broadcast such a constant in place when they move a dequantization
    through a Pad, which gave every other node that shared it the padded shape: the file did not
    load ("Argument shapes are inconsistent" at a Subtract). Copies cost a few bytes each.
    """
    import onnx

    graph = proto.graph
    init = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    copies = []
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for k in (1, 2):
            if k < len(node.input) and node.input[k] in init and uses[node.input[k]] > 1:
                t = onnx.TensorProto()
                t.CopyFrom(init[node.input[k]])
                t.name = f"{node.input[k]}/{node.name or len(copies)}"
                uses[node.input[k]] -= 1
                node.input[k] = t.name
                copies.append(t)
    graph.initializer.extend(copies)
    used = {name for node in graph.node for name in node.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return len(copies)


@dataclass
class FormTrial:
    """One int8 form made and measured here: top-1 agreement with fp32, images/s per runtime."""

    form: str
    path: str
    top1_agreement: float | None = None
    images_per_s: dict[str, float] = field(default_factory=dict)


def choose_form(trials: list[FormTrial]) -> tuple[FormTrial, str]:
    """The fastest form at equal accuracy, and why in one line.

    Equal accuracy: top-1 agreement with fp32 within AGREEMENT_TOLERANCE of the best form's.
    Fastest: the highest images/s on any runtime; forms within SPEED_TIE of it are as fast, and
    of those the one ONNX Runtime runs faster is kept (the runtime every machine with the onnx
    extra has), so a file is not fast only where OpenVINO is installed.
    """
    agree = [t.top1_agreement for t in trials if t.top1_agreement is not None]
    best_agree = max(agree) if agree else None
    ok = [
        t for t in trials
        if best_agree is None or t.top1_agreement is None
        or t.top1_agreement >= best_agree - AGREEMENT_TOLERANCE
    ]  # fmt: skip
    top = {t.form: max(t.images_per_s.values(), default=0.0) for t in ok}
    fastest = max(top.values(), default=0.0)
    near = [t for t in ok if top[t.form] >= (1 - SPEED_TIE) * fastest]
    pick = max(near, key=lambda t: (t.images_per_s.get("onnxruntime", 0.0), top[t.form]))
    shown = "; ".join(
        f"{t.form}: " + ", ".join(f"{rt} {v:.1f}" for rt, v in t.images_per_s.items())
        + ("" if t.top1_agreement is None else f", agreement {100 * t.top1_agreement:.2f}%")
        for t in trials
    )  # fmt: skip
    return pick, f"{pick.form}, the fastest at equal accuracy here (images/s: {shown})"


def quantize_model(
    model: nn.Module,
    meta: dict[str, Any],
    calib: torch.Tensor,
    out: str | os.PathLike,
    *,
    extra_meta: dict[str, Any] | None = None,
    forms: tuple[str, ...] = FORMS,
    check: torch.Tensor | None = None,
    time_batch: int = 16,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write `model` as an int8 ONNX file calibrated on the normalised batch `calib`, atomically,
    in the fastest of `forms` at equal accuracy; returns the file's `quantization` entry.

    Each form is checked against the fp32 model on `check` (held-out normalised images; default:
    the calibration batch) and timed at batch `time_batch` on every runtime installed. A single
    form is written without measuring.
    """
    import onnx

    if require_onnxruntime() is None:
        raise ResnetlabError("quantize needs onnxruntime: pip install 'resnetlab[onnx]'")
    bad = [f for f in forms if f not in FORMS]
    if bad or not forms:
        raise ResnetlabError(f"int8 forms {list(forms)}: use some of {', '.join(FORMS)}")
    input_size = tuple(int(s) for s in calib.shape[1:])
    reduce_range = not cpu_features().get("VNNI", False)
    q = {
        "dtype": "int8", "format": "onnx-qdq",
        "weights": "int8, symmetric, per output channel" + (", 7-bit range" * reduce_range),
        "reduce_range": reduce_range,
        "calibration": "min-max", **((extra_meta or {}).get("quantization") or {}),
    }  # fmt: skip
    full_meta = {**meta, "input_size": list(input_size), **(extra_meta or {}), "quantization": q}
    try:
        json.dumps(full_meta)
    except TypeError as e:
        raise ResnetlabError(f"metadata is not JSON-serialisable: {e}") from None

    def write(tmp: str) -> None:
        with tempfile.TemporaryDirectory(prefix="resnetlab-quant-") as d:
            fp32 = os.path.join(d, "fp32.onnx")
            export_onnx(model, fp32, input_size, dynamic_batch=True)
            cache = os.path.join(d, "ranges.json")
            trials = []
            for form in forms:
                path = os.path.join(d, f"{form}.onnx")
                quantize_onnx(fp32, path, calib, form=form, reduce_range=reduce_range, cache=cache)
                proto = onnx.load(path)
                separate_qdq_constants(proto)
                onnx.save(proto, path)
                trials.append(FormTrial(form, path))
            pick, why = trials[0], f"{trials[0].form}, as asked"
            if len(trials) > 1:
                _measure_forms(model, trials, check if check is not None else calib, time_batch,
                               input_size, log)  # fmt: skip
                pick, why = choose_form(trials)
                q["measured"] = {
                    "batch": time_batch, "threads": torch.get_num_threads(),
                    "machine": machine_key(),
                    "forms": {t.form: {"top1_agreement": t.top1_agreement,
                                       "images_per_s": t.images_per_s} for t in trials},
                }  # fmt: skip
            q.update(_form_entry(pick.form), chosen=why)
            proto = onnx.load(pick.path)
            del proto.metadata_props[:]
            entry = proto.metadata_props.add()
            entry.key, entry.value = META_KEY, json.dumps(full_meta)
            onnx.save(proto, tmp)
            if len(trials) > 1:
                _remember(full_meta, input_size, time_batch, pick)
        onnx_session(tmp)  # it must load before it takes the name

    atomic_write(out, write)
    if log:
        log(f"int8 form: {q['chosen']}")
    return q


def _form_entry(form: str) -> dict[str, Any]:
    act = "uint8, asymmetric" if form == "U8S8" else "int8, asymmetric"
    return {"form": form, "activations": f"{act}, per tensor, min-max calibrated"}


def _measure_forms(
    model: nn.Module,
    trials: list[FormTrial],
    check: torch.Tensor,
    batch: int,
    input_size: tuple[int, ...],
    log: Callable[[str], None] | None,
) -> None:
    """Top-1 agreement with fp32 on `check` and images/s at `batch` on every runtime, per form."""
    x = check[:CHECK_IMAGES]
    with torch.no_grad():
        ref = torch.cat([model(b) for b in x.split(64)]).argmax(1)
    g = torch.Generator().manual_seed(2)
    xb = torch.randn((max(1, batch), *input_size), generator=g)
    for t in trials:
        for runtime in available_runtimes():
            m = OnnxModel(t.path, {"quantization": {}}, runtime=runtime)
            if runtime == "onnxruntime":
                got = torch.cat([m(b) for b in x.split(64)]).argmax(1)
                t.top1_agreement = float((got == ref).float().mean())
            t.images_per_s[runtime] = round(time_images_per_s(m, xb, min_rep_s=FORM_REP_S), 2)
        if log:
            speeds = ", ".join(f"{rt} {v:.1f}" for rt, v in t.images_per_s.items())
            log(f"int8 {t.form}: {speeds} images/s at batch {batch}, top-1 agreement with fp32 "
                f"{100 * (t.top1_agreement or 0):.2f}% on {len(x)} images")  # fmt: skip


def _remember(meta: dict[str, Any], input_size: tuple[int, ...], batch: int, t: FormTrial) -> None:
    """Record the kept form's speed per runtime, for the runtime choice of predict, eval, bench."""
    by_runtime = {rt: p for p, rt in INT8_PATHS.items()}
    rows = {
        by_runtime[rt]: {"images_per_s": v, "precision": "int8", "form": t.form}
        for rt, v in t.images_per_s.items()
    }
    record(meta, input_size, batch, rows)
