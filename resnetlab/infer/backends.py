"""Which backend runs a model fastest on this machine: measured by `bench`, remembered, chosen.

`resnetlab bench` records the images/s of the fast path's candidates (torch, compiled or not, and
ONNX Runtime fp32) for each model, input size, batch size and thread count, keyed by this
machine's CPU, vector units and library versions. `prepare_for_inference(backend="auto")` then
takes the fastest one measured for the same model and batch here; with no measurement it keeps
the torch path. The record is a small JSON file (RESNETLAB_CACHE, else ~/.cache/resnetlab),
written atomically; a damaged one is ignored.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ResnetlabError, one_line
from ..files import atomic_write
from ..hardware import cpu_features, cpu_model

log = logging.getLogger("resnetlab.infer")

BACKENDS = ("torch", "onnxruntime")
# bench path -> (backend, compiled) of the fast path it measures
BENCH_PATHS = {
    "fast": ("torch", True),
    "fast-nocompile": ("torch", False),
    "onnxruntime": ("onnxruntime", False),
}


def store_path() -> Path:
    """Where measurements are kept: $RESNETLAB_CACHE/backends.json or ~/.cache/resnetlab/."""
    root = os.environ.get("RESNETLAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "resnetlab"
    )
    return Path(root) / "backends.json"


def machine_key(threads: int | None = None) -> str:
    """CPU model, vector units, thread count and library versions: what a timing depends on."""
    try:
        import onnxruntime

        ort = onnxruntime.__version__
    except ImportError:
        ort = "none"
    feats = ",".join(k for k, v in cpu_features().items() if v)
    threads = threads or torch.get_num_threads()
    return f"{cpu_model()}|{feats}|{threads} threads|torch {torch.__version__}|ort {ort}"


def model_key(model: nn.Module, input_size: tuple[int, ...], batch: int) -> str | None:
    """Architecture (name, classes, channels, options), input size, batch; None if unknown."""
    cfg = getattr(model, "resnetlab_config", None)
    if not cfg or "name" not in cfg:
        return None
    arch = {k: cfg.get(k) for k in ("name", "num_classes", "in_chans", "options")}
    size = "x".join(str(int(s)) for s in input_size)
    return f"{json.dumps(arch, sort_keys=True)}|{size}|batch {batch}"


def _read() -> dict[str, Any]:
    try:
        data = json.loads(store_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def record(
    model: nn.Module, input_size: tuple[int, ...], batch: int, results: dict[str, dict[str, Any]]
) -> None:
    """Remember {bench path: {"images_per_s", "precision"}} for this model and batch here."""
    mk = model_key(model, input_size, batch)
    if mk is None or not results:
        return
    data = _read()
    entry = data.setdefault(machine_key(), {}).setdefault(mk, {})
    entry.update({p: {**r, "when": time.strftime("%Y-%m-%d %H:%M")} for p, r in results.items()})

    def write(tmp: str) -> None:
        Path(tmp).write_text(json.dumps(data, indent=1, sort_keys=True))

    # a cache that cannot be written (a read-only home, RESNETLAB_CACHE=/dev/null): measuring
    # still worked, it is just not remembered
    try:
        atomic_write(store_path(), write)
    except (OSError, ResnetlabError) as e:
        log.warning("measurements not kept: cannot write %s (%s)", store_path(), _reason(e))


def _reason(e: Exception) -> str:
    return one_line(e.strerror if isinstance(e, OSError) and e.strerror else str(e))


def measured(model: nn.Module, input_size: tuple[int, ...], batch: int) -> dict[str, Any]:
    """The bench paths measured here for this model and batch: {path: {"images_per_s", ...}}."""
    mk = model_key(model, input_size, batch)
    if mk is None:
        return {}
    return dict(_read().get(machine_key(), {}).get(mk, {}))


def fastest(
    model: nn.Module, input_size: tuple[int, ...], batch: int, precision: str
) -> tuple[str, bool] | None:
    """(backend, compiled) of the fastest fast-path candidate measured, or None if none was.

    precision: the torch path's resolved precision ('fp32' or 'bf16'); ONNX Runtime is fp32, and
    only competes when fp32 is acceptable (precision 'auto' resolved, or 'fp32').
    """
    best, best_speed = None, 0.0
    for path, r in measured(model, input_size, batch).items():
        if path not in BENCH_PATHS:
            continue
        backend, compiled = BENCH_PATHS[path]
        if backend == "torch" and r.get("precision") != precision:
            continue
        if backend == "onnxruntime" and precision == "bf16-only":
            continue
        speed = float(r.get("images_per_s") or 0)
        if speed > best_speed:
            best, best_speed = (backend, compiled), speed
    return best


class OrtModel(nn.Module):
    """A model run by ONNX Runtime in fp32: float32 NCHW in, float32 logits out."""

    def __init__(self, session) -> None:
        super().__init__()
        self._session = session
        self.precision = "fp32"
        self.backend = "onnxruntime"
        self.compiled = False
        self.folded_bn = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feed = {self._session.get_inputs()[0].name: x.detach().float().contiguous().numpy()}
        (out,) = self._session.run(None, feed)
        return torch.from_numpy(out)


def onnxruntime_model(model: nn.Module, input_size: tuple[int, ...]) -> OrtModel:
    """`model` exported to ONNX (any batch size) and loaded in an ONNX Runtime session."""
    import tempfile

    from ..errors import ResnetlabError
    from .export import export_onnx, onnx_session, require_onnxruntime

    if require_onnxruntime() is None:
        raise ResnetlabError(
            "the onnxruntime backend needs onnxruntime: pip install 'resnetlab[onnx]'"
        )
    with tempfile.TemporaryDirectory(prefix="resnetlab-ort-") as d:
        path = os.path.join(d, "model.onnx")
        export_onnx(model.eval(), path, input_size, dynamic_batch=True)
        session = onnx_session(path, threads=torch.get_num_threads())
    return OrtModel(session).eval()
