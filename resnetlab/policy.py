"""How to run on this machine: device, precision, compilation and CPU threads.

One module decides these for training and inference alike (hardware.py says what the machine
has; this module says what to do with it):

- device: `auto` is CUDA when there is one, else the CPU.
- precision: `auto` is bf16 on CUDA (fp16 where the GPU lacks bf16) and on CPUs that compute
  bf16 in hardware; fp32 elsewhere, where bf16 would be emulated and slower.
- compile: `auto` compiles on CUDA, and on a CPU only for runs long enough to repay the compile
  time; on one CUDA device the compiled model runs as CUDA graphs.
- threads: on a CPU, the cores that other processes do not keep busy.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import torch

from .errors import ResnetlabError
from .hardware import native_bf16, usable_cores

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_OPTIONS = ("auto", "on", "off")
COMPILE_MIN_STEPS = 1500  # on a CPU, compiling (~1.5 min) pays after about this many steps


def pick_device(requested: str | None = None) -> str:
    """'cuda' when available (or asked), else 'cpu'."""
    if requested in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(requested, str) or (requested != "cpu" and not requested.startswith("cuda")):
        raise ResnetlabError(
            f"unknown device {requested!r}; use auto, cpu or cuda", argument="device"
        )
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ResnetlabError(
            f"device {requested!r} asked but CUDA is not available; use cpu", argument="device"
        )
    return requested


def is_cuda(device: str | torch.device) -> bool:
    """True for 'cuda' and 'cuda:N'."""
    return torch.device(device).type == "cuda"


def resolve_precision(precision: str, device: str = "cpu") -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` (None: fp32)."""
    if precision not in PRECISIONS:
        raise ResnetlabError(
            f"precision {precision!r}: use {', '.join(PRECISIONS)}", argument="precision"
        )
    cuda = is_cuda(device)
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if not cuda:
            raise ResnetlabError(
                "precision fp16 needs CUDA; on a CPU use bf16 or fp32", argument="precision"
            )
        return torch.float16
    if cuda:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if native_bf16() else None


def precision_name(dtype: torch.dtype | None) -> str:
    """fp32, bf16 or fp16."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast(device: str, dtype: torch.dtype | None):
    """A context that runs under autocast to `dtype` on `device` (nothing for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def resolve_compile(option: str | bool, device: str, total_steps: int) -> bool:
    """on/off as asked; auto: on CUDA, and on a CPU for runs long enough to repay the compile
    time (measured on the 2-core machine: 1.4x faster steps after 95 s; docs/training.md)."""
    if option in ("on", True):
        return True
    if option in ("off", False):
        return False
    if option != "auto":
        raise ResnetlabError(f"compile {option!r}: use auto, on or off", argument="compile")
    return is_cuda(device) or total_steps >= COMPILE_MIN_STEPS


def compile_mode(device: str, world_size: int = 1) -> str | None:
    """torch.compile's mode: CUDA graphs ("reduce-overhead") for one CUDA process, where the
    launch overhead of small kernels dominates; the default elsewhere (DDP hooks and CUDA graphs
    do not mix)."""
    return "reduce-overhead" if is_cuda(device) and world_size == 1 else None


def use_compile_cache() -> Path:
    """Keep torch.compile's artefacts (Inductor and Triton caches) in a lasting folder, so that a
    second run of the same model starts fast: $TORCHINDUCTOR_CACHE_DIR if set, else
    $XDG_CACHE_HOME/resnetlab/compile (~/.cache/resnetlab/compile)."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    path = base / "resnetlab" / "compile"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return Path(torch._inductor.config.cache_dir or "/tmp")  # torch's own default
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    return path


def busy_cores(window: float = 0.3) -> float:
    """Cores other processes keep busy now: /proc/stat sampled over `window` seconds (this
    process sleeps meanwhile). Falls back to the 1-minute load average, which lags by a minute."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    cores = usable_cores()
    try:
        total0, idle0 = sample()
        time.sleep(window)
        total1, idle1 = sample()
        if total1 > total0:
            return cores * (1.0 - (idle1 - idle0) / (total1 - total0))
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def cpu_threads(requested: int | None, world_size: int = 1) -> int:
    """Threads for a CPU run: as asked; else OMP_NUM_THREADS if set; else this process's share of
    the cores that other processes do not keep busy. On a shared machine, more threads than free
    cores make every OpenMP barrier wait for a descheduled thread: measured 2.5x slower
    (docs/training.md)."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ResnetlabError(f"threads must be at least 1, got {requested}", argument="threads")
        return requested
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cores = usable_cores()
    share = max(1, cores // max(world_size, 1))
    free = max(1, int(cores - busy_cores() + 0.5))
    return max(1, min(share, free, torch.get_num_threads()))
