"""Inference throughput and latency of one model along every path, measured in one run.

The paths and how each is made ready: infer/bench_paths.py; how a run is shown (table, JSON, the
fast path's picks): infer/bench_report.py. Given an ONNX file (an export or an int8 file), the
runtime paths run that file and the torch paths its architecture with random weights (a file
without resnetlab metadata has none: they are skipped).

Each figure is the median of several timed repetitions after warm-up; the repetitions of the paths
are interleaved, so that load from elsewhere falls on all of them alike. On CUDA the batch already
sits on the GPU, so the times leave out the copy from the host; the clock is read after
torch.cuda.synchronize(), and cuDNN may pick its fastest algorithms (cudnn.benchmark) while it
runs.
"""

from __future__ import annotations

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
from .backends import available_runtimes, record
from .bench_paths import (
    DEFAULT_PATHS,
    INT8_FORM_PATHS,
    TORCH_PATHS,
    OnnxFiles,
    check_known,
    fast_compiles,
    missing,
    no_sync,
    prepare_path,
    split_cpu_only,
    sync_for,
)
from .compiling import describe, learn
from .onnxfile import graph_input_size, read_onnx
from .onnxmodel import is_int8, is_onnx_file


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
    form: str | None = None  # int8 paths: U8S8 or S8S8


def load_bench_model(
    model_or_weights: str, image_size: int | None
) -> tuple[nn.Module, str, tuple[int, int, int]]:
    """A model name (random weights) or a weights file -> (model in eval mode, name, input size)."""
    model, name, size, _ = load_bench_target(model_or_weights, image_size)
    if model is None:
        raise ResnetlabError(f"{model_or_weights}: an ONNX file without resnetlab metadata")
    return model, name, size


def load_bench_target(
    model_or_weights: str, image_size: int | None
) -> tuple[nn.Module | None, str, tuple[int, int, int], str | None]:
    """As load_bench_model, plus the ONNX file when one is given (an export or an int8 file;
    else None).

    For an ONNX file the torch paths run its architecture with random weights (their speed does
    not depend on the values); a file without resnetlab metadata gives no model (None).
    """
    p = Path(model_or_weights)
    if is_onnx_file(p):
        if not available_runtimes():
            raise ResnetlabError(f"{p}: ONNX files run with onnxruntime or openvino: pip install "
                                 "'resnetlab[onnx]'")  # fmt: skip
        proto, meta = read_onnx(p)
        size = meta.get("input_size") or graph_input_size(proto)
        if not size or len(size) != 3:
            raise ResnetlabError(f"{p}: bench times conv models on images; its input is {size}")
        c, h, w = (int(s) for s in size)
        if image_size is not None and image_size != h:
            raise ResnetlabError(
                f"image_size {image_size}: the ONNX file {p} was made for {h}x{w} inputs",
                argument="image_size",
            )
        if meta.get("features_only") or meta.get("num_classes") == 0:
            raise ResnetlabError(f"{p}: a backbone (features_only) returns feature maps, and "
                                 "bench times classifiers")  # fmt: skip
        if "name" not in meta:
            return None, p.stem, (c, h, w), str(p)
        name = str(meta["name"])
        model = create_model(
            name, num_classes=meta.get("num_classes"), in_chans=meta.get("in_chans"),
            **(meta.get("options") or {}),
        ).eval()  # fmt: skip
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


def _calls_per_rep(
    fn: Callable[[], Any], min_rep_s: float, sync: Callable[[], None] = no_sync
) -> int:
    """How many calls make one repetition of at least `min_rep_s` seconds (from one timed call)."""
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return max(1, int(min_rep_s / max(time.perf_counter() - t0, 1e-6)))


def _time_rep(fn: Callable[[], Any], k: int, sync: Callable[[], None] = no_sync) -> float:
    # on CUDA calls only queue kernels: wait for the queue before starting and before stopping
    sync()
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    sync()
    return (time.perf_counter() - t0) / k


def bench(
    model: nn.Module | None,
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
    onnx_file: str | None = None,
    remember: bool = True,
    device: str = "cpu",
    plan: policy.Plan | None = None,
) -> list[BenchRow]:
    """Measure every path at every batch size; ratios are against eager-fp32 of the same run.

    onnx_file: an ONNX file (an export or an int8 file) the runtime paths run in place of an
    export of `model` (int8_file: the same, its older name). model: None for a file without
    resnetlab metadata (the paths that need the PyTorch model are then skipped). remember: record
    the candidates (infer/backends.py), so that `prepare_for_inference(backend="auto")` and the
    runtime choice for ONNX files pick the fastest for this model and batch (CPU only).
    device: "cpu", "cuda[:N]" or "auto"; on CUDA the CPU-only paths are skipped, with one line.
    plan: the run's policy.Plan (`bench_plan`: device, precision of the fast path, threads);
    without one it is resolved from `device` with torch's current thread count. The fast path
    compiles on a CPU only where a call gains from it (infer/compiling.py); where it does not and
    fast-nocompile is timed too, the two are one path, timed once. Each phase is one line on `log`.
    """
    check_known(paths)
    if any(b < 1 for b in batch_sizes):
        raise ResnetlabError(f"batch sizes {batch_sizes} must all be at least 1")
    plan = plan or bench_plan(device, threads=torch.get_num_threads())
    device, cuda = plan.device, plan.cuda
    paths, skipped = split_cpu_only(tuple(paths), device)
    if skipped and log:
        log(skipped)
    onnx_file = onnx_file or int8_file
    kept = []
    for path in paths:
        reason = missing(path)
        if reason is None and model is None and (path in TORCH_PATHS or path in INT8_FORM_PATHS
                                                 or onnx_file is None):  # fmt: skip
            reason = f"{path}: skipped (the ONNX file names no resnetlab model to build)"
        if reason is None and model is None and path.startswith("int8") and onnx_file:
            reason = None if is_int8(read_onnx(onnx_file)[1]) else (
                f"{path}: skipped (an fp32 file without resnetlab metadata: nothing to quantize)"
            )  # fmt: skip
        if reason is not None:
            if log:
                log(reason)
            continue
        kept.append(path)
    if not kept:
        raise ResnetlabError(f"none of the paths {', '.join(paths)} can run here")
    if model is not None:
        model = model.eval()
    rows: list[BenchRow] = []
    threads = plan.threads or torch.get_num_threads()
    sync = sync_for(device)
    gpu = torch.cuda.get_device_name(device) if cuda else None
    cudnn_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = cuda or cudnn_benchmark
    try:
        with tempfile.TemporaryDirectory(prefix="resnetlab-bench-") as tmpdir:
            files = OnnxFiles(tmpdir, log)
            for b in batch_sizes:
                x = torch.randn((b, *input_size), generator=torch.Generator().manual_seed(0))
                rows += _bench_batch(
                    model, name, input_size, x.to(device), tuple(kept), files,
                    repeats=repeats, warmup=warmup, min_rep_s=min_rep_s, log=log,
                    onnx_file=onnx_file, remember=remember and not cuda, plan=plan,
                    sync=sync, gpu=gpu, threads=threads,
                )  # fmt: skip
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
    return rows


# bench path -> what the rows record for the backend choice (infer/backends.py)
RECORDED = ("fast", "fast-nocompile", "onnxruntime", "openvino", "openvino-fp32", "int8",
            "int8-openvino")  # fmt: skip


def _bench_batch(
    model: nn.Module | None,
    name: str,
    input_size: tuple[int, int, int],
    x: torch.Tensor,
    paths: tuple[str, ...],
    files: OnnxFiles,
    *,
    repeats: int,
    warmup: int,
    min_rep_s: float,
    log: Callable[[str], None] | None,
    onnx_file: str | None,
    remember: bool,
    plan: policy.Plan,
    sync: Callable[[], None],
    gpu: str | None,
    threads: int,
) -> list[BenchRow]:
    b, device = x.shape[0], plan.device
    rows: list[BenchRow] = []
    ready = []
    for path in paths:
        compiled, decision = (False, None) if model is None else fast_compiles(
            path, model, x, plan, log
        )  # fmt: skip
        if decision is not None and log:
            log(f"batch {b} {path}: {describe(decision)}")
        if path == "fast" and not compiled and "fast-nocompile" in paths:
            if log:
                log(f"batch {b} fast: not compiled, so the same path as fast-nocompile: timed once")
            continue
        if log:
            log(f"batch {b} {path}: making it ready")
        ready_path = prepare_path(path, model, x, files, onnx_file, plan, compiled)
        run, precision, setup_s, compile_s, form = ready_path
        for _ in range(warmup):
            run()
        k = _calls_per_rep(run, min_rep_s, sync)
        ready.append((path, run, precision, setup_s, compile_s, form, k))
        if log:
            compiled = f", compile {compile_s:.1f} s" if compile_s is not None else ""
            log(f"batch {b} {path}: ready (setup {setup_s:.1f} s{compiled})")
    # repetitions take turns across the paths, so a burst of load elsewhere on the
    # machine hits every path alike instead of one path's whole measurement
    times: dict[str, list[float]] = {p: [] for p, *_ in ready}
    if log:
        log(f"batch {b}: timing {len(ready)} paths, {repeats} rounds")
    for _ in range(repeats):
        for path, run, *_, k in ready:
            times[path].append(_time_rep(run, k, sync))
    base = statistics.median(times["eager-fp32"]) if "eager-fp32" in times else None
    candidates = {}
    for path, _, precision, setup_s, compile_s, form, _ in ready:
        lat = statistics.median(times[path])
        row = BenchRow(
            model=name, path=path, batch_size=b, input_size=list(input_size),
            images_per_s=b / lat, latency_ms=lat * 1e3,
            latency_ms_all=[round(t * 1e3, 3) for t in times[path]],
            ratio_vs_eager_fp32=(base / lat) if base else None,
            precision=precision, setup_s=round(setup_s, 2), threads=threads,
            device=device, gpu=gpu, compile_s=compile_s, form=form,
        )  # fmt: skip
        rows.append(row)
        if path in RECORDED:
            # a fast path that did not compile is recorded as what it is
            as_ = "fast-nocompile" if path == "fast" and compile_s is None else path
            candidates[as_] = {"images_per_s": round(b / lat, 3), "precision": precision}
            if form:
                candidates[as_]["form"] = form
        if log:
            log(f"batch {b} {path}: {row.images_per_s:.1f} images/s, {row.latency_ms:.1f} ms")
    if remember and model is not None:
        record(model, input_size, b, candidates)
        _learn_compile(model, input_size, rows, threads)
    return rows


def _learn_compile(
    model: nn.Module, input_size: tuple[int, ...], rows: list[BenchRow], threads: int
) -> None:
    """Where the compiled fast path and the uncompiled one were both timed, the measurement
    decides whether compiling pays for this model and batch here from now on."""
    by_path = {r.path: r for r in rows}
    fast, plain = by_path.get("fast"), by_path.get("fast-nocompile")
    if fast is None or plain is None or fast.compile_s is None or fast.precision != plain.precision:
        return
    learn(model, tuple(input_size), fast.batch_size, fast.precision,
          compiled=fast.images_per_s, uncompiled=plain.images_per_s, threads=threads)  # fmt: skip


def bench_plan(device: str = "cpu", threads: int | None = None) -> policy.Plan:
    """The Plan of a bench run (policy.resolve): its device, the fast path's precision, threads
    (None: the cores other processes leave free), channels_last; compiling is per path."""
    policy.check_settings(device=device, threads=threads)
    return policy.resolve(policy.Settings(device=device, precision="auto", compile=False,
                                          threads=threads, conv=True))  # fmt: skip
