"""The paths `bench` times, and how each is made ready: what runs the model along one path.

Paths: eager-fp32 (the model as built, NCHW), eager-bf16 (the same under bf16 autocast), fast
(`prepare_for_inference`: folded BN, channels_last, bf16 where native, compiled where compiling
pays for this model and batch here: infer/compiling.py), fast-nocompile (the same, never
compiled), fast-fp32 (the fast path forced to fp32), onnxruntime (the model exported to ONNX,
fp32), openvino (the same export run by OpenVINO, in bf16 where the CPU has it natively, else fp32)
and openvino-fp32, and int8 on every runtime: int8 (ONNX Runtime) and int8-openvino run the given
int8 file, or the model quantized here on random input in the form `quantize` would choose (which
gives the same speed as real calibration data; infer/int8.py); int8-u8s8 and int8-s8s8 run the
model quantized here in that form, on ONNX Runtime. A path whose runtime is not installed is
skipped with one line; the OpenVINO paths are in the default set only where OpenVINO is installed.

On CUDA the paths are eager-fp32, eager-bf16 (bf16 autocast and channels_last there),
fast-nocompile and fast (compiled as CUDA graphs); the CPU-only paths (fast-fp32, the ONNX
runtimes, int8) are skipped there. Every choice of device, precision and compiling comes from the
run's policy.Plan.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import policy
from ..errors import ResnetlabError
from ..hardware import compiler_available
from .compiling import CompileDecision, decide
from .export import require_onnxruntime
from .fastpath import prepare_for_inference
from .int8 import FORMS, quantize_model
from .onnxfile import read_onnx
from .onnxmodel import OnnxModel, is_int8, runtime_model
from .openvino import require_openvino

PATHS = (
    "eager-fp32", "eager-bf16", "fast", "fast-nocompile", "fast-fp32", "onnxruntime", "openvino",
    "openvino-fp32", "int8", "int8-openvino", "int8-u8s8", "int8-s8s8",
)  # fmt: skip
# on request: fast-fp32 (one more compile), openvino-fp32 and the int8 forms one by one
DEFAULT_PATHS = (
    "eager-fp32", "eager-bf16", "fast", "fast-nocompile", "onnxruntime", "openvino", "int8",
    "int8-openvino",
)  # fmt: skip
OPENVINO_PATHS = ("openvino", "openvino-fp32", "int8-openvino")
INT8_FORM_PATHS = {"int8-u8s8": "U8S8", "int8-s8s8": "S8S8"}
# the CPU's fast fp32 path, the ONNX runtimes, int8
CPU_ONLY_PATHS = tuple(p for p in PATHS if p not in ("eager-fp32", "eager-bf16", "fast",
                                                     "fast-nocompile"))  # fmt: skip
TORCH_PATHS = ("eager-fp32", "eager-bf16", "fast", "fast-nocompile", "fast-fp32")
CUDA_DEFAULT_PATHS = ("eager-fp32", "eager-bf16", "fast-nocompile", "fast")


def default_paths(device: str = "cpu") -> tuple[str, ...]:
    """The paths `resnetlab bench` runs unless told: on a CPU eager fp32 and bf16, the fast path
    compiled or not, ONNX Runtime, int8, and OpenVINO (fp32 or bf16, and int8) where it is
    installed; on CUDA eager fp32, eager bf16 (channels_last) and the fast path with and without
    compiling."""
    if policy.is_cuda(device):
        return CUDA_DEFAULT_PATHS
    if require_openvino() is None:
        return tuple(p for p in DEFAULT_PATHS if p not in OPENVINO_PATHS)
    return DEFAULT_PATHS


def missing(path: str) -> str | None:
    """Why `path` cannot run here (its runtime is not installed), or None."""
    if path in OPENVINO_PATHS and require_openvino() is None:
        return f"{path}: skipped (openvino is not installed: pip install 'resnetlab[openvino]')"
    if path not in TORCH_PATHS and path not in OPENVINO_PATHS and require_onnxruntime() is None:
        return f"{path}: skipped (onnxruntime is not installed: pip install 'resnetlab[onnx]')"
    return None


def check_known(paths: tuple[str, ...] | list[str]) -> None:
    """Fail in one line naming the paths that are not bench paths."""
    bad = [p for p in paths if p not in PATHS]
    if bad:
        raise ResnetlabError(f"unknown bench path(s) {bad}; choose from {', '.join(PATHS)}")


def split_cpu_only(paths: tuple[str, ...], device: str) -> tuple[tuple[str, ...], str | None]:
    """(the paths that run on `device`, one line naming those skipped there, or None)."""
    if not policy.is_cuda(device):
        return tuple(paths), None
    skipped = [p for p in paths if p in CPU_ONLY_PATHS]
    kept = tuple(p for p in paths if p not in CPU_ONLY_PATHS)
    if not skipped:
        return kept, None
    return kept, f"skipped on {device}: {', '.join(skipped)} (CPU paths)"


def no_sync() -> None:
    """Nothing to wait for: CPU calls return when done."""


def sync_for(device: str) -> Callable[[], None]:
    """What waits for `device` to finish its queued work before the clock is read."""
    return (lambda: torch.cuda.synchronize(device)) if policy.is_cuda(device) else no_sync


class OnnxFiles:
    """The ONNX files of one bench run: their metadata read once, the int8 files made here once
    per form (auto: the form quantize would choose) and kept for every batch size."""

    def __init__(self, tmpdir: str, log: Callable[[str], None] | None) -> None:
        self.tmpdir = tmpdir
        self.log = log
        self._meta: dict[str, dict[str, Any]] = {}

    def meta(self, path: str) -> dict[str, Any]:
        if path not in self._meta:
            self._meta[path] = read_onnx(path)[1]
        return self._meta[path]

    def int8(self, model: nn.Module, x: torch.Tensor, form: str | None) -> str:
        path = os.path.join(self.tmpdir, f"model.{form or 'auto'}.int8.onnx")
        if not os.path.exists(path):
            if self.log:
                shown = form or " and ".join(FORMS) + " (the faster kept)"
                self.log(f"int8: quantizing the model here as {shown}: export, calibrate, time")
            g = torch.Generator().manual_seed(1)
            calib = torch.randn((32, *x.shape[1:]), generator=g)
            check = torch.randn((32, *x.shape[1:]), generator=g)
            meta = dict(getattr(model, "resnetlab_config", {}) or {})
            quantize_model(model, meta, calib, path, forms=(form,) if form else FORMS,
                           check=check, time_batch=x.shape[0], log=self.log)  # fmt: skip
        return path


def path_plan(plan: policy.Plan, precision: str, compiled: bool) -> policy.Plan:
    """The run's plan for one path: `precision` and compiled or not, the rest as it is."""
    return policy.resolve(policy.Settings(device=plan.device, precision=precision,
                                          compile=compiled, threads=plan.threads,
                                          conv=plan.channels_last))  # fmt: skip


def fast_compiles(
    path: str,
    model: nn.Module,
    x: torch.Tensor,
    plan: policy.Plan,
    log: Callable[[str], None] | None = None,
) -> tuple[bool, CompileDecision | None]:
    """Whether the fast path `path` compiles for this batch, and the CPU's decision (None on
    CUDA, where it compiles wherever a compiler is: CUDA graphs pay at every size). On a CPU
    compiling happens only where a call gains from it (infer/compiling.py: measured here, or
    from its size; remembered)."""
    if path not in ("fast", "fast-fp32") or not compiler_available():
        return False, None
    if plan.cuda:
        return True, None
    precision = "fp32" if path == "fast-fp32" else plan.precision
    size, batch = tuple(x.shape[1:]), int(x.shape[0])
    decision = decide(model, size, batch, precision, threads=plan.threads, log=log)
    return decision.compile, decision


def prepare_path(
    path: str,
    model: nn.Module | None,
    x: torch.Tensor,
    files: OnnxFiles,
    onnx_file: str | None,
    plan: policy.Plan,
    compiled: bool = False,
):
    """(callable on x, precision label, setup seconds, compile seconds or None, int8 form or
    None) for one path, on the run's `plan` (its device, precision, channels_last, threads);
    `compiled`: whether the fast and fast-fp32 paths compile (`fast_compiles`). On CUDA `x` is
    already on the GPU."""
    device = plan.device
    cuda = plan.cuda
    sync = sync_for(device)
    t0 = time.perf_counter()
    if path == "eager-fp32":
        m = copy.deepcopy(model).to(device) if cuda else model

        def run():
            with torch.no_grad():
                return m(x)

        return run, "fp32", 0.0, None, None
    if path == "eager-bf16":
        if cuda:  # tensor cores want channels_last; bf16, or fp16 on GPUs without bf16
            dtype = plan.dtype
            m = copy.deepcopy(model).to(device, memory_format=torch.channels_last)
            xc = x.contiguous(memory_format=torch.channels_last)

            def run():
                with torch.no_grad(), torch.autocast("cuda", dtype=dtype):
                    return m(xc)

            return run, policy.precision_name(dtype), time.perf_counter() - t0, None, None

        def run():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x)

        return run, "bf16", 0.0, None, None
    if path in ("fast", "fast-nocompile", "fast-fp32"):
        # fast-fp32 is the fast path as a CPU without native bf16 runs it
        precision = "fp32" if path == "fast-fp32" else plan.precision
        fast_plan = path_plan(plan, precision, compiled and path != "fast-nocompile")
        fast = prepare_for_inference(model, backend="torch", plan=fast_plan)
        sync()
        t1 = time.perf_counter()
        # compiles on the first call; CUDA graphs are recorded on the second and replayed after
        for _ in range(3 if fast.cuda_graphs else 1):
            fast(x)
        sync()
        t2 = time.perf_counter()
        compile_s = round(t2 - t1, 2) if fast.compiled else None
        return (lambda: fast(x)), fast.precision, t2 - t0, compile_s, None
    if path in ("onnxruntime", "openvino", "openvino-fp32"):
        runtime = "onnxruntime" if path == "onnxruntime" else "openvino"
        precision = plan.precision if path == "openvino" else "fp32"
        if onnx_file is not None and not is_int8(files.meta(onnx_file)):
            m = OnnxModel(onnx_file, files.meta(onnx_file), runtime=runtime, precision=precision)
        else:
            m = runtime_model(runtime, model, tuple(x.shape[1:]), precision)
        m(x)
        return (lambda: m(x)), precision, time.perf_counter() - t0, None, None
    if path in ("int8", "int8-openvino", *INT8_FORM_PATHS):
        runtime = "openvino" if path == "int8-openvino" else "onnxruntime"
        form = INT8_FORM_PATHS.get(path)
        given = onnx_file if onnx_file is not None and is_int8(files.meta(onnx_file)) else None
        file = given if form is None and given is not None else files.int8(model, x, form)
        meta = files.meta(file)
        m = OnnxModel(file, meta, runtime=runtime)
        m(x)
        form = str(meta["quantization"].get("form") or "S8S8")  # files before forms were S8S8
        return (lambda: m(x)), "int8", time.perf_counter() - t0, None, form
    raise ResnetlabError(f"unknown bench path {path!r}; use some of {', '.join(PATHS)}")
