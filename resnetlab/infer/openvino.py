"""OpenVINO as a runtime for ONNX files: optional (`pip install 'resnetlab[openvino]'`).

OpenVINO reads the same ONNX files as ONNX Runtime, fp32 exports and int8 QDQ files alike, and
compiles them for the CPU it runs on. On the development machine (AVX-512 with VNNI, AVX512-BF16
and AMX) it ran ResNet-50's int8 file at about the speed of ONNX Runtime's U8S8 kernels whatever the
file's form (ONNX Runtime is slow on S8S8 there), and in bf16 (INFERENCE_PRECISION_HINT) at about
twice its own fp32: docs/inference.md has the table. The compiled model is asked for one stream and
the thread count torch has at that moment, so `--threads` applies to it as to the torch paths.

Precision: "fp32" (the hint f32: the same arithmetic as ONNX Runtime, to rounding), "bf16" (only
where the CPU computes bf16 natively; elsewhere OpenVINO would emulate it), or "int8" for a QDQ
file: its convolutions run in int8 and the rest in f32, as ONNX Runtime computes it. OpenVINO's own
default on a CPU with bf16 units is bf16 everywhere; resnetlab always says which it asks for.

One fault of OpenVINO 2026.4 is refused before it happens: compiling a residual MLP (fully
connected layers with shortcut additions) in f32 on one thread ends the process with a segmentation
fault; with two threads or in bf16 it compiles, and an int8 MLP file is not affected.

A compiled model is specialised to one batch size (static shapes are faster than dynamic ones in
OpenVINO's CPU plugin): a model keeps the last few batch sizes it has seen compiled.
"""

from __future__ import annotations

import importlib
import os
from collections import OrderedDict
from typing import Any

import numpy as np

from ..errors import ResnetlabError

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
KEEP_COMPILED = 4  # batch sizes kept compiled per model
INSTALL = "pip install 'resnetlab[openvino]'"


def require_openvino():
    """Import openvino, or None if it is not installed (or not usable here)."""
    try:
        return importlib.import_module("openvino")
    except ImportError:
        return None


def openvino_version() -> str | None:
    """The installed OpenVINO's version ('2026.4.1'), or None."""
    ov = require_openvino()
    if ov is None:
        return None
    return str(getattr(ov, "__version__", "unknown")).split("-")[0]


_CORE = None


def _core():
    global _CORE
    ov = require_openvino()
    if ov is None:
        raise ResnetlabError(f"the openvino runtime is not installed: {INSTALL}")
    if _CORE is None:
        _CORE = ov.Core()
    return _CORE


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    # OpenVINO's messages open with 'Exception from src/...' lines; the cause comes after
    useful = [ln for ln in lines if not ln.startswith("Exception from") and "Check '" not in ln]
    text = (useful or lines or [type(e).__name__])[0]
    return text[:200]


class OpenVinoRunner:
    """An ONNX model (a path or its bytes) compiled by OpenVINO for the CPU: NumPy in, out.

    Compiled on first use for each batch size, with `threads` threads and one stream.
    """

    def __init__(self, source: str | os.PathLike | bytes, *, precision: str, threads: int) -> None:
        if precision not in PRECISION_HINTS:
            raise ResnetlabError(
                f"precision {precision!r}: use one of {', '.join(PRECISION_HINTS)}"
            )
        self.source = source if isinstance(source, bytes) else str(source)
        self.precision = precision
        self.threads = max(1, int(threads))
        self.label = "the model" if isinstance(source, bytes) else str(source)
        try:
            self.model = _core().read_model(self.source)
        except ResnetlabError:
            raise
        except Exception as e:  # OpenVINO raises its own types for a graph it cannot read
            raise ResnetlabError(
                f"{self.label}: openvino cannot read it ({_first_line(e)})"
            ) from None
        if len(self.model.inputs) != 1:
            raise ResnetlabError(f"{self.label}: {len(self.model.inputs)} inputs; expected one")
        ops = {op.get_type_name() for op in self.model.get_ops()}
        if precision == "fp32" and self.threads == 1 and "Convolution" not in ops and "Add" in ops:
            # measured: OpenVINO 2026.4's CPU plugin ends the process (a segmentation fault)
            # compiling a residual MLP in f32 on one thread; with 2 threads, or bf16, it does not
            raise ResnetlabError(
                f"{self.label}: openvino {openvino_version()} crashes compiling a residual MLP in "
                "fp32 on one thread; use onnxruntime, 2 or more threads, or bf16"
            )
        self.input_name = self.model.inputs[0].get_any_name()
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()

    def config(self) -> dict[str, str]:
        """The properties the model is compiled with."""
        return {
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[self.precision],
            "INFERENCE_NUM_THREADS": str(self.threads),
            "NUM_STREAMS": "1",
            "PERFORMANCE_HINT": "LATENCY",
        }

    def request(self, shape: tuple[int, ...]):
        """An infer request of the model compiled for input `shape` (compiled once per shape)."""
        if shape in self._compiled:
            self._compiled.move_to_end(shape)
            return self._compiled[shape]
        ov = require_openvino()
        model = self.model.clone()
        try:
            model.reshape({self.input_name: ov.PartialShape(list(shape))})
            compiled = _core().compile_model(model, "CPU", self.config())
        except Exception as e:  # a shape the graph rejects, or a graph the plugin cannot compile
            raise ResnetlabError(
                f"{self.label}: openvino cannot compile it for input {list(shape)} "
                f"({_first_line(e)})"
            ) from None
        req = compiled.create_infer_request()
        self._compiled[shape] = req
        while len(self._compiled) > KEEP_COMPILED:
            self._compiled.popitem(last=False)
        return req

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        req = self.request(tuple(x.shape))
        req.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return [np.array(req.get_output_tensor(i).data) for i in range(len(req.model_outputs))]
