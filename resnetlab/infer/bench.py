"""Inference throughput and latency of one model along every path, measured in one run.

Paths: eager-fp32 (the model as built, NCHW), eager-bf16 (the same under bf16 autocast), fast
(`prepare_for_inference`: folded BN, channels_last, bf16 where native, compiled), fast-nocompile
(the same without torch.compile), onnxruntime (the model exported to ONNX, when onnxruntime is
installed) and int8 (static int8 quantization run by ONNX Runtime: the given int8 file, or the
model quantized here on random input, which gives the same speed as real calibration data).
Each figure is the median of several timed repetitions after warm-up; the
repetitions of the paths are interleaved, so that load from elsewhere falls on all of them alike.

On CUDA (`device="cuda"`) the paths are eager-fp32, eager-bf16 (bf16 autocast and channels_last
there), fast-nocompile and fast (folded, channels_last, bf16, compiled as CUDA graphs); the batch
already sits on the GPU, so the times leave out the copy from the host. The clock is read after
torch.cuda.synchronize(), and cuDNN may pick its fastest algorithms (cudnn.benchmark) while it
runs. The CPU-only paths (fast-fp32, onnxruntime, int8) are skipped there.
"""

from __future__ import annotations

import copy
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import policy
from ..errors import ResnetlabError
from ..models.factory import create_model, load_model
from ..models.registry import get_entry

# the table, JSON and machine line of a run: there; the names stay importable from here
from .bench_report import CANDIDATES as CANDIDATES
from .bench_report import fast_path_choices as fast_path_choices
from .bench_report import format_table as format_table
from .bench_report import machine_line as machine_line
from .bench_report import rows_as_json as rows_as_json
from .export import export_onnx, onnx_session, require_onnxruntime
from .fastpath import compiler_available, prepare_for_inference

PATHS = ("eager-fp32", "eager-bf16", "fast", "fast-nocompile", "fast-fp32", "onnxruntime", "int8")
DEFAULT_PATHS = tuple(
    p for p in PATHS if p != "fast-fp32"
)  # fast-fp32 on request: one more compile
CPU_ONLY_PATHS = ("fast-fp32", "onnxruntime", "int8")  # the CPU's fast fp32 path, ONNX Runtime
CUDA_DEFAULT_PATHS = ("eager-fp32", "eager-bf16", "fast-nocompile", "fast")


@dataclass
class BenchRow:
    """One path at one batch size."""

    model: str
    path: str
    batch_size: int
    input_size: list[int]
    images_per_s: float
    latency_ms: float
    latency_ms_all: list[float]
    ratio_vs_eager_fp32: float | None
    precision: str
    setup_s: float  # preparation: folding, compiling or exporting, including the first call
    threads: int
    device: str = "cpu"
    gpu: str | None = None  # torch.cuda.get_device_name on CUDA
    torch_version: str = torch.__version__
    compile_s: float | None = None  # compiled paths: the first calls (compile, graph capture)


def default_paths(device: str = "cpu") -> tuple[str, ...]:
    """The paths `resnetlab bench` runs unless told: all but fast-fp32 on a CPU; on CUDA eager
    fp32, eager bf16 (channels_last) and the fast path with and without compiling."""
    return CUDA_DEFAULT_PATHS if policy.is_cuda(device) else DEFAULT_PATHS


def split_cpu_only(paths: tuple[str, ...], device: str) -> tuple[tuple[str, ...], str | None]:
    """(the paths that run on `device`, one line naming those skipped there, or None)."""
    if not policy.is_cuda(device):
        return tuple(paths), None
    skipped = [p for p in paths if p in CPU_ONLY_PATHS]
    kept = tuple(p for p in paths if p not in CPU_ONLY_PATHS)
    if not skipped:
        return kept, None
    return kept, f"skipped on {device}: {', '.join(skipped)} (CPU paths)"


def load_bench_model(
    model_or_weights: str, image_size: int | None
) -> tuple[nn.Module, str, tuple[int, int, int]]:
    """A model name (random weights) or a weights file -> (model in eval mode, name, input size)."""
    model, name, size, _ = load_bench_target(model_or_weights, image_size)
    return model, name, size


def load_bench_target(
    model_or_weights: str, image_size: int | None
) -> tuple[nn.Module, str, tuple[int, int, int], str | None]:
    """As load_bench_model, plus the int8 file when one is given (else None).

    For an int8 file the fp32 paths run its architecture with random weights: their speed does
    not depend on the values.
    """
    from .quantize import is_onnx_file, load_int8

    p = Path(model_or_weights)
    if is_onnx_file(p):
        _, meta = load_int8(p)
        name = str(meta["name"])
        model = create_model(
            name, num_classes=meta.get("num_classes"), in_chans=meta.get("in_chans"),
            **(meta.get("options") or {}),
        ).eval()  # fmt: skip
        c, h, w = (int(s) for s in meta["input_size"])
        if image_size is not None and image_size != h:
            raise ResnetlabError(
                f"image_size {image_size}: the int8 file {p} was made for {h}x{w} inputs",
                argument="image_size",
            )
        return model, name, (c, h, w), str(p)
    model, name, size = _load_fp32_target(model_or_weights, image_size)
    if (getattr(model, "resnetlab_config", None) or {}).get("features_only"):
        raise ResnetlabError(
            f"{model_or_weights}: a backbone (features_only) returns feature maps, and bench "
            "times classifiers; bench the full model's name or weights"
        )
    return model, name, size, None


def _load_fp32_target(
    model_or_weights: str, image_size: int | None
) -> tuple[nn.Module, str, tuple[int, int, int]]:
    p = Path(model_or_weights)
    if p.suffix in (".safetensors", ".pth", ".pt") or p.is_file():
        model, meta = load_model(p)
        name = str(meta.get("name"))
        size = meta.get("input_size")
    else:
        name = model_or_weights
        model = create_model(name).eval()
        size = None
    entry = get_entry(name)
    if entry.is_mlp:
        raise ResnetlabError(f"{name} is an MLP on vectors; bench measures conv models on images")
    if not size:
        c = int(model.resnetlab_config.get("in_chans", 3))
        size = (c, entry.input_size[1], entry.input_size[2])
    c, h, w = (int(s) for s in size)
    if image_size is not None:
        if image_size < 1:
            raise ResnetlabError(f"image_size {image_size} must be positive", argument="image_size")
        h = w = image_size
    return model, name, (c, h, w)


def _no_sync() -> None:
    pass


def _calls_per_rep(
    fn: Callable[[], Any], min_rep_s: float, sync: Callable[[], None] = _no_sync
) -> int:
    """How many calls make one repetition of at least `min_rep_s` seconds (from one timed call)."""
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return max(1, int(min_rep_s / max(time.perf_counter() - t0, 1e-6)))


def _time_rep(fn: Callable[[], Any], k: int, sync: Callable[[], None] = _no_sync) -> float:
    # on CUDA calls only queue kernels: wait for the queue before starting and before stopping
    sync()
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    sync()
    return (time.perf_counter() - t0) / k


def _sync_for(device: str) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if policy.is_cuda(device) else _no_sync


def _runner(
    path: str,
    model: nn.Module,
    x: torch.Tensor,
    tmpdir: str,
    int8_file: str | None,
    device: str = "cpu",
):
    """(callable on x, precision label, setup seconds, compile seconds or None) for one path;
    None if it cannot run here. On CUDA `x` is already on the GPU."""
    cuda = policy.is_cuda(device)
    sync = _sync_for(device)
    t0 = time.perf_counter()
    if path == "eager-fp32":
        m = copy.deepcopy(model).to(device) if cuda else model

        def run():
            with torch.no_grad():
                return m(x)

        return run, "fp32", 0.0, None
    if path == "eager-bf16":
        if cuda:  # tensor cores want channels_last; bf16, or fp16 on GPUs without bf16
            dtype = policy.resolve_precision("auto", device)
            m = copy.deepcopy(model).to(device, memory_format=torch.channels_last)
            xc = x.contiguous(memory_format=torch.channels_last)

            def run():
                with torch.no_grad(), torch.autocast("cuda", dtype=dtype):
                    return m(xc)

            return run, policy.precision_name(dtype), time.perf_counter() - t0, None

        def run():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x)

        return run, "bf16", 0.0, None
    if path in ("fast", "fast-nocompile", "fast-fp32"):
        # the fast path compiles wherever it can: a benchmark is the large workload that pays;
        # fast-fp32 is the fast path as a CPU without native bf16 runs it
        compile_ = compiler_available() if path != "fast-nocompile" else False
        precision = "fp32" if path == "fast-fp32" else "auto"
        fast = prepare_for_inference(model, precision=precision, compile=compile_, device=device)
        sync()
        t1 = time.perf_counter()
        # compiles on the first call; CUDA graphs are recorded on the second and replayed after
        for _ in range(3 if fast.cuda_graphs else 1):
            fast(x)
        sync()
        t2 = time.perf_counter()
        compile_s = round(t2 - t1, 2) if fast.compiled else None
        return (lambda: fast(x)), fast.precision, t2 - t0, compile_s
    if path == "onnxruntime":
        if require_onnxruntime() is None:
            return None
        onnx_path = os.path.join(tmpdir, "model.onnx")
        export_onnx(model, onnx_path, tuple(x.shape[1:]), dynamic_batch=True)
        sess = onnx_session(onnx_path, threads=torch.get_num_threads())
        feed = {sess.get_inputs()[0].name: x.numpy()}
        sess.run(None, feed)
        return (lambda: sess.run(None, feed)), "fp32", time.perf_counter() - t0, None
    if path == "int8":
        if require_onnxruntime() is None:
            return None
        from .quantize import load_int8, quantize_model

        if int8_file is None:
            int8_file = os.path.join(tmpdir, "model.int8.onnx")
            if not os.path.exists(int8_file):
                calib = torch.randn((32, *x.shape[1:]), generator=torch.Generator().manual_seed(1))
                meta = dict(getattr(model, "resnetlab_config", {}) or {})
                quantize_model(model, meta, calib, int8_file)
        int8, _ = load_int8(int8_file)
        int8(x)
        return (lambda: int8(x)), "int8", time.perf_counter() - t0, None
    raise ResnetlabError(f"unknown bench path {path!r}; use some of {', '.join(PATHS)}")


def bench(
    model: nn.Module,
    name: str,
    input_size: tuple[int, int, int],
    batch_sizes: list[int],
    *,
    paths: tuple[str, ...] = DEFAULT_PATHS,
    repeats: int = 5,
    warmup: int = 2,
    min_rep_s: float = 0.5,
    log: Callable[[str], None] | None = None,
    int8_file: str | None = None,
    remember: bool = True,
    device: str = "cpu",
) -> list[BenchRow]:
    """Measure every path at every batch size; ratios are against eager-fp32 of the same run.

    int8_file: an int8 model of the same architecture for the int8 path (default: quantize
    `model` here). remember: record the fast path's candidates (infer/backends.py), so that
    `prepare_for_inference(backend="auto")` picks the fastest for this model and batch (CPU only).
    device: "cpu", "cuda[:N]" or "auto"; on CUDA the CPU-only paths are skipped, with one line.
    """
    bad = [p for p in paths if p not in PATHS]
    if bad:
        raise ResnetlabError(f"unknown bench path(s) {bad}; choose from {', '.join(PATHS)}")
    if any(b < 1 for b in batch_sizes):
        raise ResnetlabError(f"batch sizes {batch_sizes} must all be at least 1")
    device = policy.pick_device(device)
    cuda = policy.is_cuda(device)
    paths, skipped = split_cpu_only(tuple(paths), device)
    if skipped and log:
        log(skipped)
    model = model.eval()
    rows: list[BenchRow] = []
    threads = torch.get_num_threads()
    sync = _sync_for(device)
    gpu = torch.cuda.get_device_name(device) if cuda else None
    cudnn_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cuda or cudnn_benchmark
    try:
        with tempfile.TemporaryDirectory(prefix="resnetlab-bench-") as tmpdir:
            for b in batch_sizes:
                x = torch.randn((b, *input_size), generator=torch.Generator().manual_seed(0))
                rows += _bench_batch(
                    model, name, input_size, x.to(device), paths, tmpdir,
                    repeats=repeats, warmup=warmup, min_rep_s=min_rep_s, log=log,
                    int8_file=int8_file, remember=remember and not cuda, device=device,
                    sync=sync, gpu=gpu, threads=threads,
                )  # fmt: skip
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
    return rows


def _bench_batch(
    model: nn.Module,
    name: str,
    input_size: tuple[int, int, int],
    x: torch.Tensor,
    paths: tuple[str, ...],
    tmpdir: str,
    *,
    repeats: int,
    warmup: int,
    min_rep_s: float,
    log: Callable[[str], None] | None,
    int8_file: str | None,
    remember: bool,
    device: str,
    sync: Callable[[], None],
    gpu: str | None,
    threads: int,
) -> list[BenchRow]:
    b = x.shape[0]
    rows: list[BenchRow] = []
    ready = []
    for path in paths:
        made = _runner(path, model, x, tmpdir, int8_file, device)
        if made is None:
            if log:
                log(f"{path}: skipped (onnxruntime is not installed)")
            continue
        run, precision, setup_s, compile_s = made
        for _ in range(warmup):
            run()
        k = _calls_per_rep(run, min_rep_s, sync)
        ready.append((path, run, precision, setup_s, compile_s, k))
        if log:
            compiled = f", compile {compile_s:.1f} s" if compile_s is not None else ""
            log(f"batch {b} {path}: ready (setup {setup_s:.1f} s{compiled})")
    # repetitions take turns across the paths, so a burst of load elsewhere on the
    # machine hits every path alike instead of one path's whole measurement
    times: dict[str, list[float]] = {p: [] for p, *_ in ready}
    for _ in range(repeats):
        for path, run, *_, k in ready:
            times[path].append(_time_rep(run, k, sync))
    base = statistics.median(times["eager-fp32"]) if "eager-fp32" in times else None
    candidates = {}
    for path, _, precision, setup_s, compile_s, _ in ready:
        lat = statistics.median(times[path])
        row = BenchRow(
            model=name, path=path, batch_size=b, input_size=list(input_size),
            images_per_s=b / lat, latency_ms=lat * 1e3,
            latency_ms_all=[round(t * 1e3, 3) for t in times[path]],
            ratio_vs_eager_fp32=(base / lat) if base else None,
            precision=precision, setup_s=round(setup_s, 2), threads=threads,
            device=device, gpu=gpu, compile_s=compile_s,
        )  # fmt: skip
        rows.append(row)
        if path in ("fast", "fast-nocompile", "onnxruntime"):
            candidates[path] = {"images_per_s": round(b / lat, 3), "precision": precision}
        if log:
            log(f"batch {b} {path}: {row.images_per_s:.1f} images/s, {row.latency_ms:.1f} ms")
    if remember:
        from .backends import record

        record(model, input_size, b, candidates)
    return rows
