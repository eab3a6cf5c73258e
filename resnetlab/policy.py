"""How to run on this machine: one resolved `Plan` for training and inference alike.

hardware.py says what the machine has; the caller says what it asks for and what work lies ahead
(`Settings`); `resolve(settings, machine)` decides every choice once and returns a frozen `Plan`
(device, autocast dtype, channels_last, compile mode, CUDA graphs, threads, data on the device)
that the trainer, evaluation, predict, bench and the experiments take as it is. The rules:

- device: `auto` is CUDA when there is one, else the CPU.
- precision: `auto` is bf16 on CUDA (fp16 where the GPU lacks bf16) and on CPUs that compute
  bf16 in hardware; fp32 elsewhere, where bf16 would be emulated and slower.
- channels_last: for nets with convolutions (oneDNN's and cuDNN's fast layout); never for MLPs.
- compile: `auto` compiles a training run on CUDA, and on a CPU only when it is long enough to
  repay the compile time (COMPILE_MIN_STEPS); inference when a C++ compiler is present and the
  work ahead repays it (COMPILE_MIN_MACS). On one CUDA process the compiled model runs as CUDA
  graphs.
- threads: on a CPU, the cores that other processes do not keep busy.
- data on the device: training images live where the model computes when they take at most
  RESIDENT_FRACTION of a GPU's memory (always on a CPU).

Settings are checked once, where they enter: a run's by train/config.py's check_config, anyone
else's by `check_settings` (the same rules: the tuples below are the command line's choices too).
The deciders trust them and fail only where the machine cannot do what was asked: CUDA that is
not there, fp16 without CUDA. `pick_device` and `cpu_threads` also take raw values, for callers
that need one choice alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ResnetlabError
from .hardware import compiler_available, native_bf16, usable_cores

DEVICES = ("auto", "cpu", "cuda")  # and cuda:N
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_OPTIONS = ("auto", "on", "off")
COMPILE_MIN_STEPS = 1500  # on a CPU, compiling (~1.5 min) pays after about this many steps
# A cold compile of ResNet-50 took 35-55 s on the 2-core development machine and saved 23-103 ms
# per image against the folded eager model: it paid back after 500-1,500 images of 4.1 GMACs
# (docs/inference.md). Automatic compilation wants about 1,200 such images of work ahead.
COMPILE_MIN_MACS = 5e12
THREADS_PER_CPU = 4  # the most threads asked for per CPU; more only wait on each other
RESIDENT_FRACTION = 0.25  # at most this share of a GPU's memory holds the training images


@dataclass(frozen=True)
class Machine:
    """What the decisions need to know of this machine (see `this_machine`)."""

    cuda: bool  # a CUDA device is present
    cuda_bf16: bool  # it computes bf16 (else fp16 is its half precision)
    cpu_bf16: bool  # the CPU computes bf16 in hardware (AVX512-BF16 or AMX)


def this_machine() -> Machine:
    """The machine this process runs on."""
    cuda = torch.cuda.is_available()
    return Machine(cuda=cuda, cuda_bf16=cuda and torch.cuda.is_bf16_supported(),
                   cpu_bf16=native_bf16())  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """What a caller asks for (checked where it entered) and the work the decisions weigh."""

    device: str = "auto"  # auto, cpu, cuda, cuda:N
    precision: str = "auto"  # PRECISIONS
    compile: str | bool = "auto"  # COMPILE_OPTIONS, or True/False
    threads: int | None = None  # CPU threads; None: the cores not already busy
    conv: bool = True  # the model has convolutions (channels_last)
    world_size: int = 1  # processes of a torchrun job
    steps: int = 0  # training: optimiser steps ahead (the compile rule)
    macs: float | None = None  # inference: multiply-adds ahead (the compile rule)
    data_bytes: int = 0  # training images to place (0: none)


@dataclass(frozen=True)
class Plan:
    """How this run computes: every choice made once, by `resolve`."""

    device: str  # cpu, cuda or cuda:N
    dtype: torch.dtype | None  # the autocast dtype; None: fp32
    channels_last: bool
    compile_mode: str | None  # torch.compile's mode ("default", "reduce-overhead"); None: eager
    cuda_graphs: bool  # compiled as CUDA graphs ("reduce-overhead")
    threads: int | None  # CPU threads to use; None: on CUDA, torch's own
    data_on_device: bool  # the training images live on `device`

    @property
    def compiled(self) -> bool:
        """Whether the model runs compiled."""
        return self.compile_mode is not None

    @property
    def precision(self) -> str:
        """fp32, bf16 or fp16."""
        return precision_name(self.dtype)

    @property
    def cuda(self) -> bool:
        """Whether the device is a GPU."""
        return is_cuda(self.device)

    def autocast(self):
        """A context that computes in the plan's precision (nothing for fp32)."""
        return autocast(self.device, self.dtype)

    def describe(self) -> str:
        """'cpu, bf16, channels_last, compiled, 2 threads': the choices in one phrase."""
        parts = [self.device, self.precision]
        parts += ["channels_last"] * self.channels_last + ["compiled"] * self.compiled
        parts += ["CUDA graphs"] * self.cuda_graphs
        parts += ["data on the device"] * (self.data_on_device and self.cuda)
        if self.threads is not None:
            parts.append(f"{self.threads} thread{'s' if self.threads != 1 else ''}")
        return ", ".join(parts)


def resolve(settings: Settings, machine: Machine | None = None) -> Plan:
    """Every choice of `settings` made for `machine` (this one by default), once."""
    machine = machine or this_machine()
    device = _device(settings.device, machine)
    compiled = resolve_compile(settings.compile, device, settings.steps, macs=settings.macs)
    mode = (compile_mode(device, settings.world_size) or "default") if compiled else None
    cuda = is_cuda(device)
    return Plan(
        device=device,
        dtype=resolve_precision(settings.precision, device, machine),
        channels_last=settings.conv,
        compile_mode=mode,
        cuda_graphs=mode == "reduce-overhead",
        threads=None if cuda else _threads(settings.threads, settings.world_size),
        data_on_device=settings.data_bytes > 0 and fits_on_device(settings.data_bytes, device),
    )


def apply(plan: Plan) -> None:
    """Set this process up as the plan says: its CPU threads, and the compile cache."""
    if plan.threads is not None:
        torch.set_num_threads(plan.threads)
    if plan.compiled:
        use_compile_cache()


# --------------------------------------------------------------------------------------------
# the one check of the choices


def check_settings(
    *,
    device: str | None = "auto",
    precision: str = "auto",
    compile: str | bool | None = "auto",
    threads: int | None = None,
) -> None:
    """Fail in one line naming the setting, its value and the choices, unless each is one of
    them (None: the default)."""
    _check_device(device)
    if precision not in PRECISIONS:
        raise ResnetlabError(
            f"precision {precision!r}: use {', '.join(PRECISIONS)}", argument="precision"
        )
    if compile not in (None, True, False, *COMPILE_OPTIONS):
        raise ResnetlabError(
            f"compile {compile!r}: use {', '.join(COMPILE_OPTIONS)}", argument="compile"
        )
    _check_threads(threads)


def _check_device(requested) -> None:
    ok = requested is None or requested in DEVICES
    ok = ok or (isinstance(requested, str) and re.fullmatch(r"cuda:\d+", requested) is not None)
    if not ok:
        raise ResnetlabError(
            f"unknown device {requested!r}; use auto, cpu or cuda", argument="device"
        )


def _check_threads(requested) -> None:
    if requested is None:
        return
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise ResnetlabError(f"threads must be at least 1, got {requested}", argument="threads")
    cpus = os.cpu_count() or 1
    if requested > THREADS_PER_CPU * cpus:  # 10,000 threads on 2 cores: every step 1000x slower
        raise ResnetlabError(
            f"threads {requested}: at most {THREADS_PER_CPU * cpus} ({THREADS_PER_CPU} per CPU; "
            f"this machine has {cpus})",
            argument="threads",
        )


# --------------------------------------------------------------------------------------------
# the deciders


def pick_device(requested: str | None = None) -> str:
    """'cuda' when available (or asked), else 'cpu'; an unknown name fails in one line."""
    _check_device(requested)
    return _device(requested, this_machine())


def _device(requested: str | None, machine: Machine) -> str:
    if requested in (None, "auto"):
        return "cuda" if machine.cuda else "cpu"
    if is_cuda(requested) and not machine.cuda:
        raise ResnetlabError(
            f"device {requested!r} asked but CUDA is not available; use cpu", argument="device"
        )
    return requested


def is_cuda(device: str | torch.device) -> bool:
    """True for 'cuda' and 'cuda:N'."""
    return torch.device(device).type == "cuda"


def resolve_precision(
    precision: str, device: str = "cpu", machine: Machine | None = None
) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` (None: fp32)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    cuda = is_cuda(device)
    if precision == "fp16":
        if not cuda:
            raise ResnetlabError(
                "precision fp16 needs CUDA; on a CPU use bf16 or fp32", argument="precision"
            )
        return torch.float16
    machine = machine or this_machine()
    if cuda:
        return torch.bfloat16 if machine.cuda_bf16 else torch.float16
    return torch.bfloat16 if machine.cpu_bf16 else None


def precision_name(dtype: torch.dtype | None) -> str:
    """fp32, bf16 or fp16."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def autocast(device: str, dtype: torch.dtype | None):
    """A context that runs under autocast to `dtype` on `device` (nothing for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def resolve_compile(
    option: str | bool | None,
    device: str,
    total_steps: int = 0,
    *,
    macs: float | None = None,
    compiler: bool | Callable[[], bool] | None = None,
) -> bool:
    """Whether to compile: on/off (True/False) as asked; auto (or None) for inference, given the
    `macs` of the work ahead, when a C++ compiler is present (`compiler`, or the function that
    says so; probed when None, only once the work is large enough) and
    the work repays compiling (COMPILE_MIN_MACS); for a training run of `total_steps`, on CUDA,
    and on a CPU when it is long enough to repay the compile time (measured on the 2-core
    machine: 1.4x faster steps after 95 s; docs/training.md)."""
    if option in ("on", True):
        return True
    if option in ("off", False):
        return False
    if macs is not None:
        if macs < COMPILE_MIN_MACS:
            return False
        if compiler is None:
            compiler = compiler_available
        return compiler() if callable(compiler) else compiler
    return is_cuda(device) or total_steps >= COMPILE_MIN_STEPS


def compile_mode(device: str, world_size: int = 1) -> str | None:
    """torch.compile's mode: CUDA graphs ("reduce-overhead") for one CUDA process, where the
    launch overhead of small kernels dominates; the default elsewhere (DDP hooks and CUDA graphs
    do not mix)."""
    return "reduce-overhead" if is_cuda(device) and world_size == 1 else None


def fits_on_device(nbytes: int, device: str | torch.device) -> bool:
    """True when `nbytes` of images may live on `device`: always on a CPU, and on a GPU when they
    take at most RESIDENT_FRACTION of its memory (the rest is the model's)."""
    device = torch.device(device)
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return nbytes <= RESIDENT_FRACTION * total
    return False


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
    _check_threads(requested)
    return _threads(requested, world_size)


def _threads(requested: int | None, world_size: int) -> int:
    if requested is not None:
        return requested
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cores = usable_cores()
    share = max(1, cores // max(world_size, 1))
    free = max(1, int(cores - busy_cores() + 0.5))
    return max(1, min(share, free, torch.get_num_threads()))
