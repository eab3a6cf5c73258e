"""How a `bench` run is shown: the machine it ran on, a table, JSON rows, the fast path's picks."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import torch

from .. import policy
from ..hardware import features_line

if TYPE_CHECKING:
    from .bench import BenchRow


def machine_line(device: str = "cpu") -> str:
    """Torch version, threads, the CPU and its vector units (AVX2, AVX-512, VNNI, AMX, native
    bf16): the context of a run. On CUDA: torch, CUDA and cuDNN versions and the GPU."""
    if policy.is_cuda(device):
        props = torch.cuda.get_device_properties(device)
        return (
            f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN "
            f"{torch.backends.cudnn.version()}, {torch.cuda.get_device_name(device)} "
            f"({props.total_memory / 2**30:.0f} GiB, compute capability {props.major}."
            f"{props.minor}), fast path precision: {_auto_precision(device)}"
        )
    cap = torch.backends.cpu.get_cpu_capability()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"torch {torch.__version__}{_runtime_versions()}, {torch.get_num_threads()} threads on "
        f"{os.cpu_count()} cores, {features_line()} (torch kernels {cap}), "
        f"fast path precision: {_auto_precision('cpu')}, load average {load:.1f}"
    )


def _auto_precision(device: str) -> str:
    return policy.precision_name(policy.resolve_precision("auto", device))


def _runtime_versions() -> str:
    from .export import require_onnxruntime
    from .openvino import openvino_version

    ort = require_onnxruntime()
    out = f", onnxruntime {ort.__version__}" if ort is not None else ""
    ov = openvino_version()
    return out + (f", openvino {ov}" if ov else "")


def format_table(rows: list[BenchRow]) -> str:
    """A plain-text table of the rows: images/s, latency and the ratio to eager-fp32."""
    lines = [f"{'batch':>5}  {'path':<15} {'prec':<9} {'images/s':>9} {'latency ms':>11} "
             f"{'vs eager-fp32':>13} {'setup s':>8} {'compile s':>9}"]  # fmt: skip
    for r in rows:
        ratio = f"{r.ratio_vs_eager_fp32:.2f}x" if r.ratio_vs_eager_fp32 else "-"
        compiled = f"{r.compile_s:.1f}" if r.compile_s is not None else "-"
        prec = f"{r.precision} {r.form}" if getattr(r, "form", None) else r.precision
        lines.append(
            f"{r.batch_size:>5}  {r.path:<15} {prec:<9} {r.images_per_s:>9.1f} "
            f"{r.latency_ms:>11.2f} {ratio:>13} {r.setup_s:>8.1f} {compiled:>9}"
        )
    return "\n".join(lines)


def rows_as_json(rows: list[BenchRow]) -> list[dict[str, Any]]:
    """Rows as plain dicts (rounded) for --json."""
    out = []
    for r in rows:
        d = asdict(r)
        d["images_per_s"] = round(r.images_per_s, 3)
        d["latency_ms"] = round(r.latency_ms, 6)  # fast paths take well under 0.1 ms
        if r.ratio_vs_eager_fp32 is not None:
            d["ratio_vs_eager_fp32"] = round(r.ratio_vs_eager_fp32, 3)
        out.append(d)
    return out


def fast_path_choices(rows: list[BenchRow]) -> list[str]:
    """What `prepare_for_inference(backend="auto")` now takes at each batch size, from the rows,
    with the figures it was chosen from, and which runtime runs the int8 file fastest (CPU rows
    only: on CUDA the fast path is torch)."""
    lines = []
    for b in sorted({r.batch_size for r in rows}):
        at_b = [r for r in rows if r.batch_size == b and r.device == "cpu"]
        cands = sorted((r for r in at_b if r.path in CANDIDATES), key=lambda r: -r.images_per_s)
        if cands:
            best = cands[0]
            ratio = (
                f", {best.ratio_vs_eager_fp32:.2f}x eager-fp32" if best.ratio_vs_eager_fp32 else ""
            )
            beside = ", ".join(
                f"{CANDIDATES[r.path]} {r.precision} {r.images_per_s:.1f}" for r in cands[1:]
            )
            lines.append(
                f"fast path at batch {b}: {CANDIDATES[best.path]} {best.precision} "
                f"({best.images_per_s:.1f} images/s{ratio}"
                + (f"; beside {beside}" if beside else "")
                + "); int8 when asked for (resnetlab quantize)"
            )
        int8 = sorted((r for r in at_b if r.path in INT8_RUNTIMES), key=lambda r: -r.images_per_s)
        if len(int8) > 1:
            best = int8[0]
            beside = ", ".join(f"{INT8_RUNTIMES[r.path]} {r.images_per_s:.1f}" for r in int8[1:])
            lines.append(
                f"int8 file at batch {b}: runs on {INT8_RUNTIMES[best.path]} "
                f"({best.images_per_s:.1f} images/s; beside {beside})"
            )
    return lines


CANDIDATES = {
    "fast": "torch, compiled",
    "fast-nocompile": "torch",
    "onnxruntime": "ONNX Runtime",
    "openvino": "OpenVINO",
    "openvino-fp32": "OpenVINO",
}
INT8_RUNTIMES = {"int8": "ONNX Runtime", "int8-openvino": "OpenVINO"}
