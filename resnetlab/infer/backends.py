"""Which backend runs a model fastest on this machine: measured by `bench`, remembered, chosen.

`resnetlab bench` records the images/s of the fast path's candidates (torch, compiled or not, ONNX
Runtime fp32, and OpenVINO in fp32 and, where the CPU has it natively, bf16) and of the int8 file
on each runtime, for each model, input size, batch size and thread count, keyed by this machine's
CPU, vector units and library versions. `prepare_for_inference(backend="auto")` then takes the
fastest one measured for the same model and batch here, and says why (the figures); with no
measurement it keeps the torch path. An ONNX file given to predict, eval or bench runs on the
faster of ONNX Runtime and OpenVINO measured for its model and kind (fp32, or int8 of its form),
else on ONNX Runtime. `quantize` records what it measured of the int8 file too. The record is a
small JSON file (RESNETLAB_CACHE, else ~/.cache/resnetlab), written atomically; a damaged one is
ignored, and one that cannot be written is said in one line (the measurement still served). The same
file keeps other decisions measured here under a section of their own (`remembered`/`remember`:
whether compiling pays, infer/compiling.py).
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ResnetlabError, one_line
from ..files import atomic_write
from ..hardware import cpu_features, cpu_model
from .export import require_onnxruntime
from .openvino import require_openvino

log = logging.getLogger("resnetlab.infer")

BACKENDS = ("torch", "onnxruntime", "openvino")
RUNTIMES = ("onnxruntime", "openvino")  # the ONNX runtimes, ONNX Runtime first
# bench path -> (backend, compiled) of the fast path it measures
BENCH_PATHS = {
    "fast": ("torch", True),
    "fast-nocompile": ("torch", False),
    "onnxruntime": ("onnxruntime", False),
    "openvino": ("openvino", False),  # bf16 where the CPU has it natively, else fp32
    "openvino-fp32": ("openvino", False),
}
# bench path -> runtime of an int8 file
INT8_PATHS = {"int8": "onnxruntime", "int8-openvino": "openvino"}
SECTION_PREFIX = "section: "  # top-level keys of other decisions, beside the machines' own
NAMES = {
    ("torch", True): "torch, compiled",
    ("torch", False): "torch",
    ("onnxruntime", False): "ONNX Runtime",
    ("openvino", False): "OpenVINO",
}


def available_runtimes() -> list[str]:
    """The ONNX runtimes installed here, ONNX Runtime first."""
    have = {"onnxruntime": require_onnxruntime(), "openvino": require_openvino()}
    return [r for r in RUNTIMES if have[r] is not None]


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
    from .openvino import openvino_version

    feats = ",".join(k for k, v in cpu_features().items() if v)
    threads = threads or torch.get_num_threads()
    ov = openvino_version() or "none"
    return (
        f"{cpu_model()}|{feats}|{threads} threads|torch {torch.__version__}|ort {ort}|openvino {ov}"
    )


def model_key(model: nn.Module, input_size: tuple[int, ...], batch: int) -> str | None:
    """Architecture (name, classes, channels, options), input size, batch; None if unknown."""
    return arch_key(getattr(model, "resnetlab_config", None), input_size, batch)


def arch_key(meta: dict[str, Any] | None, input_size: tuple[int, ...], batch: int) -> str | None:
    """model_key from a model's config or a file's metadata; None without a model name."""
    cfg = meta
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
    model: nn.Module | dict[str, Any],
    input_size: tuple[int, ...],
    batch: int,
    results: dict[str, dict[str, Any]],
) -> None:
    """Remember {bench path: {"images_per_s", "precision"}} for this model (or the metadata of a
    file) and batch here."""
    cfg = model if isinstance(model, dict) else getattr(model, "resnetlab_config", None)
    mk = arch_key(cfg, input_size, batch)
    if mk is None or not results:
        return
    data = _read()
    entry = data.setdefault(machine_key(), {}).setdefault(mk, {})
    entry.update({p: {**r, "when": time.strftime("%Y-%m-%d %H:%M")} for p, r in results.items()})
    _write(data)


def remembered(section: str, key: str) -> dict[str, Any] | None:
    """What `remember` kept under `section` and `key` here, or None."""
    got = _read().get(SECTION_PREFIX + section, {}).get(key)
    return got if isinstance(got, dict) else None


def remember(section: str, key: str, value: dict[str, Any]) -> None:
    """Keep `value` under `section` and `key` (the key says what it depends on), atomically."""
    data = _read()
    table = data.get(SECTION_PREFIX + section)
    table = table if isinstance(table, dict) else {}
    table[key] = {**value, "when": time.strftime("%Y-%m-%d %H:%M")}
    data[SECTION_PREFIX + section] = table
    _write(data)


def _write(data: dict[str, Any]) -> None:
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


def measured(
    model: nn.Module | dict[str, Any], input_size: tuple[int, ...], batch: int
) -> dict[str, Any]:
    """The bench paths measured here for this model (or a file's metadata) and batch:
    {path: {"images_per_s", "precision", ...}}."""
    cfg = model if isinstance(model, dict) else getattr(model, "resnetlab_config", None)
    mk = arch_key(cfg, input_size, batch)
    if mk is None:
        return {}
    return dict(_read().get(machine_key(), {}).get(mk, {}))


@dataclass
class Choice:
    """What the fast path runs on, and the measured figures it was chosen from."""

    backend: str
    compiled: bool
    precision: str
    images_per_s: float
    why: str


def _figure(path: str, r: dict[str, Any]) -> str:
    backend, compiled = BENCH_PATHS.get(path, (path, False))
    return f"{NAMES.get((backend, compiled), path)} {r.get('precision')} " \
        f"{float(r.get('images_per_s') or 0):.1f}"  # fmt: skip


def choose(
    model: nn.Module, input_size: tuple[int, ...], batch: int, precision: str, asked: str = "auto"
) -> Choice | None:
    """The fastest fast-path candidate measured here for this model and batch, or None if none
    was, with the figures it beat.

    precision: the torch path's resolved precision ('fp32' or 'bf16'): torch rows of another
    precision do not compete. ONNX Runtime (fp32) and OpenVINO in fp32 compete unless bf16 was
    asked for explicitly; OpenVINO in bf16 only where the torch path is bf16 too. A runtime that
    is no longer installed does not compete.
    """
    installed = {"torch", *available_runtimes()}
    rows = []
    for path, r in measured(model, input_size, batch).items():
        if path not in BENCH_PATHS:
            continue
        backend, compiled = BENCH_PATHS[path]
        prec = r.get("precision")
        if backend not in installed:
            continue
        if backend == "torch" and prec != precision:
            continue
        if backend != "torch" and prec == "fp32" and asked == "bf16":
            continue
        if backend != "torch" and prec == "bf16" and precision != "bf16":
            continue
        rows.append((float(r.get("images_per_s") or 0), path, backend, compiled, prec, r))
    if not rows:
        return None
    rows.sort(key=lambda t: -t[0])
    speed, path, backend, compiled, prec, r = rows[0]
    others = "; ".join(_figure(p, rr) for _, p, *_, rr in rows[1:]) or "no other measured"
    why = (
        f"{_figure(path, r)} images/s at batch {batch}, measured here by resnetlab bench "
        f"(beside: {others})"
    )
    return Choice(backend, compiled, prec, speed, why)


def fastest(
    model: nn.Module, input_size: tuple[int, ...], batch: int, precision: str
) -> tuple[str, bool] | None:
    """(backend, compiled) of the fastest fast-path candidate measured, or None if none was."""
    best = choose(model, input_size, batch, precision)
    return None if best is None else (best.backend, best.compiled)


def choose_runtime(
    meta: dict[str, Any], batch: int | None, precision: str, installed: list[str]
) -> tuple[str, str]:
    """(runtime, why) for an ONNX file: the faster of ONNX Runtime and OpenVINO measured here for
    its model, kind (fp32, or int8 of its form) and batch size (the nearest batch measured when
    this one was not), else ONNX Runtime; only runtimes `installed` compete."""
    default = "onnxruntime" if "onnxruntime" in installed else installed[0]
    size = tuple(meta.get("input_size") or ())
    if len(installed) < 2 or not size:
        return default, f"{default}: the only ONNX runtime installed"
    q = meta.get("quantization") if isinstance(meta.get("quantization"), dict) else None
    batches = _measured_batches(meta, size)
    if batch in batches:
        batches.remove(batch)
        batches.insert(0, batch)
    elif batch is not None:
        batches.sort(key=lambda b: abs(b - batch))
    for b in batches:
        speeds = {}
        for path, r in measured(meta, size, b).items():
            if q is not None and path in INT8_PATHS:
                if r.get("form") == q.get("form"):
                    speeds[INT8_PATHS[path]] = float(r.get("images_per_s") or 0)
            elif q is None and path in ("onnxruntime", "openvino", "openvino-fp32"):
                if r.get("precision") == "bf16" and precision != "bf16":
                    continue  # an fp32 file asked to run as fp32, or auto
                rt = BENCH_PATHS[path][0]
                speeds[rt] = max(speeds.get(rt, 0.0), float(r.get("images_per_s") or 0))
        speeds = {rt: v for rt, v in speeds.items() if rt in installed}
        if len(speeds) == len(installed):
            best = max(speeds, key=speeds.get)
            shown = ", ".join(f"{rt} {v:.1f}" for rt, v in sorted(speeds.items()))
            return best, f"{best}: the faster measured here at batch {b} ({shown} images/s)"
    return default, f"{default}: no measurement of both runtimes for this model here"


def _measured_batches(meta: dict[str, Any], size: tuple[int, ...]) -> list[int]:
    mk = arch_key(meta, size, 0)
    if mk is None:
        return []
    prefix = mk[: -len("batch 0")]
    out = []
    for key in _read().get(machine_key(), {}):
        if key.startswith(prefix):
            try:
                out.append(int(key[len(prefix) + len("batch ") :]))
            except ValueError:
                continue
    return sorted(out)


def time_images_per_s(
    fn: Callable[[torch.Tensor], Any], x: torch.Tensor, *, repeats: int = 3, min_rep_s: float = 0.2
) -> float:
    """Images/s of fn(x): the median of `repeats` timed repetitions of at least `min_rep_s`
    seconds each, after one warm-up call."""
    fn(x)
    t0 = time.perf_counter()
    fn(x)
    k = max(1, int(min_rep_s / max(time.perf_counter() - t0, 1e-6)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(k):
            fn(x)
        times.append((time.perf_counter() - t0) / k)
    return x.shape[0] / statistics.median(times)
