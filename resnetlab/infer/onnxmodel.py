"""An ONNX file as a model: run by ONNX Runtime or OpenVINO, described by its metadata.

predict, eval and bench take an ONNX file in place of weights: an fp32 export (`resnetlab export`)
or an int8 file (`resnetlab quantize`). Both carry the weights' metadata (classes, mean, std, input
size, model name and options), read and checked by the one checker, infer.onnxfile.read_onnx. A file
made elsewhere, without that metadata, is taken with the class names, mean and std given beside it
(`--classes/--mean/--std`), its input size and class count read from the graph; without them it
is refused in one line naming what is missing.

The runtime: "onnxruntime", "openvino" (an optional extra), or "auto": the one measured faster on
this machine for this model, kind of file and batch size (by `resnetlab bench`, or by `quantize`
for an int8 file: infer/backends.py), else ONNX Runtime, as before OpenVINO was a choice.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import policy
from ..errors import ResnetlabError
from ..models.metadata import check_metadata
from .backends import RUNTIMES, available_runtimes, choose_runtime
from .export import onnx_session
from .onnxfile import check_graph_fits, graph_input_size, graph_outputs, read_onnx
from .openvino import INSTALL as OPENVINO_INSTALL
from .openvino import OpenVinoRunner

NEEDED_WITHOUT_METADATA = ("classes", "mean", "std")


def is_onnx_file(path: str | os.PathLike) -> bool:
    """True for a path named .onnx (an int8 file from `resnetlab quantize`, or an export)."""
    return Path(path).suffix.lower() == ".onnx"


def is_int8(meta: dict[str, Any]) -> bool:
    """True for the metadata of an int8 file written by `resnetlab quantize`."""
    return isinstance(meta.get("quantization"), dict)


def check_runtime(runtime: str) -> None:
    """Fail in one line unless `runtime` is a known ONNX runtime that is installed here."""
    if runtime not in RUNTIMES:
        raise ResnetlabError(
            f"unknown runtime {runtime!r}; use one of auto, {', '.join(RUNTIMES)}",
            argument="runtime",
        )
    if runtime not in available_runtimes():
        extra = "onnx" if runtime == "onnxruntime" else "openvino"
        raise ResnetlabError(f"the {runtime} runtime is not installed: pip install "
                             f"'resnetlab[{extra}]'")  # fmt: skip


class OnnxModel(nn.Module):
    """An ONNX model (a file, or its bytes) run by ONNX Runtime or OpenVINO on the CPU: float32
    NCHW in, float32 logits out.

    It has no parameters and no gradients. The runtime's session is made on first use with
    torch's thread count at that moment, and again when that count changes, so `--threads`
    applies to it as to the torch paths.
    """

    def __init__(
        self,
        source: str | os.PathLike | bytes,
        meta: dict[str, Any],
        *,
        runtime: str = "onnxruntime",
        precision: str = "fp32",
    ) -> None:
        super().__init__()
        if runtime not in RUNTIMES:
            raise ResnetlabError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")
        self.source = source if isinstance(source, bytes) else str(source)
        self.path = "" if isinstance(source, bytes) else str(source)
        self.meta = meta
        self.runtime = runtime
        self.precision = "int8" if is_int8(meta) else precision
        if runtime == "onnxruntime" and self.precision == "bf16":
            raise ResnetlabError("onnxruntime runs fp32 (or int8 files); use precision fp32")
        self.backend = runtime + ("-int8" if self.precision == "int8" else "")
        self.compiled = False
        self.folded_bn = 0
        self.why = f"{runtime}, as asked"
        self._runner = None
        self._threads: int | None = None

    def runner(self):
        """The runtime's session (ONNX Runtime) or compiled model (OpenVINO), made on demand."""
        threads = torch.get_num_threads()
        if self._runner is None or threads != self._threads:
            if self.runtime == "onnxruntime":
                sess = onnx_session(self.source, threads=threads)
                name = sess.get_inputs()[0].name
                self._runner = lambda x: sess.run(None, {name: x})
            else:
                self._runner = OpenVinoRunner(self.source, precision=self.precision,
                                              threads=threads)  # fmt: skip
            self._threads = threads
        return self._runner

    def session(self):
        """The runtime's session (kept under its old name for the int8 model)."""
        return self.runner()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.runner()(arr)[0])

    def __deepcopy__(self, memo):  # a session cannot be copied; a new one is made on demand
        return OnnxModel(self.source, dict(self.meta), runtime=self.runtime,
                         precision=self.precision)  # fmt: skip

    def extra_repr(self) -> str:
        return f"runtime={self.runtime}, precision={self.precision}"


def parse_overrides(
    classes: str | None = None, mean: str | None = None, std: str | None = None
) -> dict[str, Any]:
    """`--classes a,b,c` (or a text file of one name a line), `--mean 0.5,0.5,0.5`, `--std ...` ->
    metadata keys, for ONNX files made without resnetlab metadata."""
    out: dict[str, Any] = {}
    if classes is not None:
        p = Path(classes)
        if p.is_file():
            try:
                names = [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
            except (OSError, UnicodeDecodeError) as e:
                raise ResnetlabError(f"--classes {classes}: cannot read it ({e})") from None
        else:
            names = [c.strip() for c in classes.split(",")]
        if not names or any(not n for n in names):
            raise ResnetlabError(f"--classes {classes!r}: expected names like cat,dog or a file "
                                 "of one name a line")  # fmt: skip
        out["classes"] = names
    for key, text in (("mean", mean), ("std", std)):
        if text is None:
            continue
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise ResnetlabError(
                f"--{key} {text!r}: expected numbers like 0.485,0.456,0.406"
            ) from None
        out[key] = values
    check_metadata(out, "the command line")
    return out


def complete_metadata(
    proto: Any, meta: dict[str, Any], source: str, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The metadata an ONNX file runs with: its own, with `overrides` (classes, mean, std) for
    what it lacks (a key it has is refused); for a file without metadata, the input size and
    class count from its graph."""
    overrides = dict(overrides or {})
    plain = not meta
    given = [k for k in overrides if meta.get(k) is not None]
    if given:  # as for weights: a file's own names and normalisation are not renamed on the fly
        raise ResnetlabError(
            f"--{given[0]} applies to ONNX files without resnetlab metadata; {source} carries "
            f"its own {given[0]}"
        )
    full = {**meta, **overrides}
    if plain:
        missing = [k for k in NEEDED_WITHOUT_METADATA if k not in overrides]
        if missing:
            flags = ", ".join(f"--{k}" for k in missing)
            raise ResnetlabError(
                f"{source} has no resnetlab metadata: give its {', '.join(missing)} ({flags}); "
                "resnetlab export and quantize write them"
            )
        outputs = graph_outputs(proto)
        n = outputs[0][1] if len(outputs) == 1 and len(outputs[0]) == 2 else None
        if n is None:
            raise ResnetlabError(
                f"{source}: its output is {outputs}; a classifier gives [N, classes]"
            )
        full["num_classes"] = n
        size = graph_input_size(proto)
        if size is None:
            raise ResnetlabError(
                f"{source}: its graph fixes no input size [C, H, W] and it has no resnetlab "
                "metadata to give one"
            )
        full["input_size"] = size
    classes = full.get("classes")
    n = full.get("num_classes")
    if isinstance(classes, list) and n is not None and len(classes) != n:
        raise ResnetlabError(
            f"--classes has {len(classes)} names but {source} has {n} outputs; give one per output"
        )
    c = (full.get("input_size") or [None])[0]
    for key in ("mean", "std"):
        v = overrides.get(key)
        if v is not None and c is not None and len(v) not in (1, c):
            want = "1" if c == 1 else f"1 or {c}"
            raise ResnetlabError(
                f"--{key} has {len(v)} values for {c} input channel(s); give {want}"
            )
    check_metadata(full, source)
    if overrides and not plain:
        check_graph_fits(proto, full, source)
    return full


def load_onnx(
    path: str | os.PathLike,
    *,
    runtime: str = "auto",
    precision: str = "auto",
    batch_size: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[OnnxModel, dict[str, Any]]:
    """An fp32 or int8 ONNX file -> (runnable model, metadata), checked before anything runs.

    runtime: "onnxruntime", "openvino" or "auto" (the faster measured here for this model, file
    kind and `batch_size`, else ONNX Runtime). precision for an fp32 file: "fp32", "bf16"
    (OpenVINO only) or "auto" (bf16 where the CPU has it natively and the runtime is OpenVINO,
    else fp32); an int8 file runs as it is.
    """
    have = available_runtimes()
    if not have:
        raise ResnetlabError(
            f"{path}: ONNX files run with onnxruntime or openvino: pip install 'resnetlab[onnx]' "
            f"(or {OPENVINO_INSTALL})"
        )
    if runtime != "auto":
        check_runtime(runtime)
    if precision not in ("auto", "fp32", "bf16"):
        raise ResnetlabError(
            f"precision {precision!r}: use auto, fp32 or bf16", argument="precision"
        )
    proto, meta = read_onnx(path)
    meta = complete_metadata(proto, meta, str(path), overrides)
    int8 = is_int8(meta)
    if int8 and precision == "bf16":
        raise ResnetlabError(f"precision bf16 does not apply: {path} is an int8 model",
                             argument="precision")  # fmt: skip
    why = f"{runtime}, as asked"
    if runtime == "auto" and precision == "bf16" and not int8:
        if "openvino" not in have:
            raise ResnetlabError(
                f"precision bf16: {path} would run on onnxruntime, which runs "
                f"fp32; use fp32, or {OPENVINO_INSTALL}",
                argument="precision",
            )
        runtime, why = "openvino", "openvino: the runtime here that computes bf16"
    if runtime == "auto":
        runtime, why = choose_runtime(meta, batch_size, precision, have)
    if int8:
        prec = "int8"
    elif runtime == "onnxruntime":
        if precision == "bf16":
            raise ResnetlabError("onnxruntime runs fp32; use precision fp32 or auto, or the "
                                 "openvino runtime", argument="precision")  # fmt: skip
        prec = "fp32"
    else:
        prec = policy.precision_name(policy.resolve_precision(precision, "cpu"))
    model = OnnxModel(path, meta, runtime=runtime, precision=prec)
    model.why = why
    model.runner()  # it must load (a session, a compiled model) before it is handed out
    if runtime == "openvino":
        model.runner().request((1, *meta["input_size"]))
    return model.eval(), meta


def runtime_model(
    runtime: str, model: nn.Module, input_size: tuple[int, ...], precision: str = "fp32"
):
    """`model` exported to ONNX (any batch size) and run by `runtime` ("onnxruntime" or
    "openvino") in `precision` ('fp32', or 'bf16' on OpenVINO)."""
    import tempfile

    from .export import export_onnx

    check_runtime(runtime)
    with tempfile.TemporaryDirectory(prefix="resnetlab-rt-") as d:
        path = os.path.join(d, "model.onnx")
        export_onnx(model.eval(), path, input_size, dynamic_batch=True)
        data = Path(path).read_bytes()
    meta = dict(getattr(model, "resnetlab_config", None) or {})
    meta["input_size"] = list(input_size)
    out = OnnxModel(data, meta, runtime=runtime, precision=precision)
    out.runner()
    return out.eval()


def onnxruntime_model(model: nn.Module, input_size: tuple[int, ...]):
    """`model` exported to ONNX (any batch size) and loaded in an ONNX Runtime session."""
    return runtime_model("onnxruntime", model, input_size)
