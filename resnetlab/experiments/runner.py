"""Running a study's nets: one after another, on N worker processes of this machine, or as Ray
tasks on a cluster.

A study is a list of independent `NetTask`s, each an ordinary training run in its own folder
(`resnetlab.fit(TrainConfig)`), so whatever runs them, a killed study resumes the same way: a
folder with `summary.json` is done and read back, one with a checkpoint resumes from it, the
others start. `run_tasks` first prints the plan (what is done, what resumes, what starts) with
an estimated time that is measured, not guessed (estimate.py). Then it trains what is left:

- in sequence (`workers=1`), in this process;
- on `workers=N` spawned processes of this machine, each training nets one after another: the
  CPU cores are split between them (`threads` each unless given), and on CUDA net k goes to GPU
  k mod the GPU count, so several nets share each GPU. A worker dies with the study (Linux
  PR_SET_PDEATHSIG), so a killed study leaves no net training behind and its rerun resumes
  every unfinished net;
- as Ray tasks (on_ray.py, imported only then): each asks for its threads as CPUs and, on CUDA,
  a share of a GPU; the study folder must be storage every node sees, checked first.

A net computes the same thing wherever it runs (same seed, data order and settings); only the
thread count may differ, which changes float sums in their last bits. A test checks a Ray study
against a sequential one.
"""

from __future__ import annotations

import contextlib
import json
import operator
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from .. import TrainConfig
from ..data import DataSplits, load_source
from ..errors import ResnetlabError
from ..hardware import usable_cores
from ..train import checkpoint as ckpt
from ..train.logs import SUMMARY_FILE
from ..train.resume import same_source
from .estimate import estimate, fmt_time

RAY_HINT = "pip install 'resnetlab[ray]'"
NETS_PER_GPU = 4  # default share of a GPU per net on CUDA (a CIFAR net leaves most of one idle)


@dataclass
class NetTask:
    """One net of a study: its run's settings and how it is shown; subclasses may train on a part
    of the data (`splits`) and add work after training (`after`), in the process that trains."""

    label: str  # as messages show it: "resnet-20 seed 0"
    cfg: TrainConfig
    total_steps: int  # optimiser steps of the whole run (for the estimate)
    eval_images: int = 0  # images evaluated over the run (for the estimate)
    state: str = "new"  # "done", "partial" or "new" (plan_tasks fills it in)
    step: int = 0  # steps a partial run has done

    def splits(self) -> DataSplits | None:
        """The data this net trains on; None: the trainer reads cfg.data (with cfg.subset)."""
        return None

    def after(self, splits: DataSplits | None) -> None:
        """Work after training, in the same process: none."""


# --------------------------------------------------------------------------------------------
# what is left


def run_state(cfg: TrainConfig, match_keys: tuple[str, ...]) -> tuple[str, int]:
    """('done'|'partial'|'new', steps done) of the run in cfg.out; a run there of other settings
    (one of `match_keys` differs) fails in one line."""
    out = Path(cfg.out)
    summary = out / SUMMARY_FILE
    if summary.is_file():
        saved = read_json(summary).get("config", {})
        state, step = "done", 0
    else:
        try:
            _, st = ckpt.load_checkpoint(out)
        except ResnetlabError:
            return "new", 0
        saved, state, step = st["config"], "partial", int(st.get("step", 0))
    if not isinstance(saved, dict):
        raise ResnetlabError(f"{out}: its run configuration is not a mapping; remove the folder")
    want = cfg.to_dict()
    for key in match_keys:
        same = same_source if key == "data" else operator.eq  # a checkpoint keeps paths absolute
        old = saved.get(key, TrainConfig.__dataclass_fields__[key].default)
        if not same(old, want[key]):
            raise ResnetlabError(
                f"{out} holds a run of other settings ({key} {old!r}, not {want[key]!r}); remove "
                "it or choose another study directory"
            )
    return state, step


def plan_tasks(tasks: list[NetTask], match_keys: tuple[str, ...]) -> list[NetTask]:
    """Each task with its state and steps done filled in."""
    for t in tasks:
        t.state, t.step = run_state(t.cfg, match_keys)
    return tasks


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; one line if it is unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ResnetlabError(f"{path}: unreadable ({e})") from None
    if not isinstance(value, dict):
        raise ResnetlabError(f"{path}: expected a JSON object")
    return value


# --------------------------------------------------------------------------------------------
# the data, once per process


_SOURCES: dict[str, DataSplits] = {}


def source_data(data: str) -> DataSplits:
    """The splits of a data source (resnetlab.data.load_source), read once per process."""
    if data not in _SOURCES:
        _SOURCES[data] = load_source(data)
    return _SOURCES[data]


# --------------------------------------------------------------------------------------------
# one net, wherever it runs


def fit(*args: Any, **kwargs: Any) -> Any:
    """resnetlab.fit, looked up when called (so a fault a test plants there reaches the study)."""
    from ..train import loop

    return loop.fit(*args, **kwargs)


def train_task(task: NetTask) -> float:
    """Train (or resume) the task's net and do its after-work here; returns the seconds taken."""
    t0 = time.time()
    splits = task.splits()
    fit(task.cfg, splits, resume=task.cfg.out if task.state == "partial" else None)
    task.after(splits)
    return time.time() - t0


def train_remote(task: NetTask) -> tuple[float, str | None]:
    """train_task in a worker: (seconds, None), or (0, the error's line) for bad input."""
    print(_start_line(task) + f" (process {os.getpid()})", flush=True)
    try:
        return train_task(task), None
    except ResnetlabError as e:
        return 0.0, f"{task.label}: {e.for_command_line()}"


def _die_with_parent() -> None:
    """Worker start-up: lines out as they are printed, be killed when the study's process dies
    (Linux), and take no signal meant for the study's process group: Ctrl-C, or the SIGTERM of
    `timeout`, reach the study alone, which passes one Ctrl-C to each worker (`_stop_workers`).
    A worker that is training takes it through the trainer's own handler (checkpoint, then
    stop); an idle one ignores it, and the study shuts the pool down."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the trainer installs its own while it runs
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(line_buffering=True)
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the study died before the line above ran
            os._exit(1)


# --------------------------------------------------------------------------------------------
# running them


def check_workers(workers: int, ray: str | None) -> None:
    """Refuse a worker count below 1, --workers with --ray (Ray places the nets itself), or
    --ray without Ray installed."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ResnetlabError(f"workers must be at least 1, got {workers!r}", argument="workers")
    if ray is not None and workers != 1:
        raise ResnetlabError(
            f"workers {workers} with ray {ray!r}: Ray places the nets itself; give one of them",
            argument="workers",
        )
    if ray is not None and (not isinstance(ray, str) or not ray.strip()):
        raise ResnetlabError(f"ray {ray!r}: use auto or a cluster's address", argument="ray")
    if ray is not None:
        import_ray()  # missing: refused before any data is read


def worker_threads(workers: int, threads: int | None) -> int | None:
    """Threads per net: as given; with N workers, this machine's cores split N ways."""
    if threads is not None or workers == 1:
        return threads
    return max(1, usable_cores() // workers)


def run_tasks(
    tasks: list[NetTask],
    data: DataSplits | None,
    out: str | Path,
    *,
    workers: int = 1,
    ray: str | None = None,
    threads: int | None = None,
    say=print,
    on_done=None,
) -> None:
    """Print the plan and its estimate, then train every unfinished task: in this process, on
    `workers` processes or on Ray. `on_done(task)` is called here as each net ends."""
    check_workers(workers, ray)
    out = Path(out)
    left = [t for t in tasks if t.state != "done"]
    counts = {s: sum(t.state == s for t in tasks) for s in ("done", "partial", "new")}
    say(f"plan: {len(tasks)} net(s): {counts['done']} done, {counts['partial']} to resume, "
        f"{counts['new']} to start")  # fmt: skip
    for t in tasks:
        if t.state == "done":
            say(f"{t.label}: already trained in {t.cfg.out}")
    if not left:
        return
    if ray is not None:
        from .on_ray import run_on_ray

        run_on_ray(left, data, out, ray, threads, say, on_done)
        return
    per = worker_threads(workers, threads)
    if per is not None:
        left = [with_threads(t, per) for t in left]
    try:
        with _sigterm_as_interrupt():
            _run_left(left, data, out, workers, per, say, on_done)
    except KeyboardInterrupt:
        print("study interrupted: run the same command again to resume it", file=sys.stderr)
        raise


def _run_left(left, data, out, workers, per, say, on_done) -> None:
    """The estimate, then the unfinished nets: in this process, or on `workers` processes."""
    secs = estimate(left, data, workers, per, out, say)
    how = "in this process" if workers == 1 else f"on {workers} worker processes"
    say(f"estimated time: {fmt_time(secs)} {how}")
    t0 = time.time()
    if workers > 1:
        _run_local(left, workers, t0, say, on_done)
        return
    for t in left:
        say(_start_line(t) + f" (study elapsed {fmt_time(time.time() - t0)})")
        train_task(t)
        if on_done:
            on_done(t)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While inside, SIGTERM stops the study as Ctrl-C does (KeyboardInterrupt here; a trainer
    running in this process takes it through its own handler), so the workers are stopped and
    joined and the study ends with its one line, not killed mid-way with its semaphores leaked."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def with_threads(task: NetTask, threads: int) -> NetTask:
    """The task, set to train with `threads` CPU threads."""
    task.cfg = replace(task.cfg, threads=threads)
    return task


def _start_line(t: NetTask) -> str:
    how = f"resuming at step {t.step}" if t.state == "partial" else "training"
    return f"{t.label}: {how} in {t.cfg.out}"


def _gpu_device(cfg: TrainConfig, k: int) -> str:
    """cuda:<k mod GPUs> for a run on CUDA (asked, or auto on a machine with GPUs) when there
    are several GPUs; else the device as given."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cfg.device not in ("cuda", "auto") or n <= 1:
        return cfg.device
    return f"cuda:{k % n}"


def _run_local(left: list[NetTask], workers: int, t0: float, say, on_done) -> None:
    """At most `workers` nets in flight, the next submitted as one ends (so nothing is queued
    behind a Ctrl-C: the running nets checkpoint and the study stops)."""
    for k, t in enumerate(left):
        t.cfg = replace(t.cfg, device=_gpu_device(t.cfg, k))
    errors: list[str] = []
    queue = list(left)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                               initializer=_die_with_parent)  # fmt: skip
    try:
        pending = {}
        while queue or pending:
            while queue and len(pending) < workers:
                t = queue.pop(0)
                pending[pool.submit(train_remote, t)] = t
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                t = pending.pop(f)
                try:
                    secs, err = f.result()
                except BrokenProcessPool:
                    raise ResnetlabError(
                        f"a worker process died while training {t.label} (killed, or out of "
                        "memory); run the same command again to resume every unfinished net"
                    ) from None
                if err:
                    errors.append(err)
                    continue
                left_now = len(pending) + len(queue)
                say(f"{t.label}: trained in {fmt_time(secs)} (study elapsed "
                    f"{fmt_time(time.time() - t0)}, {left_now} net(s) left)")  # fmt: skip
                if on_done:
                    on_done(t)
    except KeyboardInterrupt:
        _stop_workers(pool)
        raise
    finally:  # on Ctrl-C too: each running trainer saves its checkpoint first
        pool.shutdown(wait=True, cancel_futures=True)
    if errors:
        raise ResnetlabError(errors[0] + (f" (and {len(errors) - 1} more)" if errors[1:] else ""))


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Pass the study's Ctrl-C (or SIGTERM) on to each worker process, once, as a Ctrl-C."""
    for pid in list(getattr(pool, "_processes", None) or {}):  # the pool's own table of workers
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)


def import_ray():
    """The ray module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ResnetlabError(f"--ray needs Ray, which is not installed: {RAY_HINT}") from None
    return ray
