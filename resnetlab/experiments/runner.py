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
import os
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import torch

from .. import TrainConfig
from ..data import DataSplits
from ..errors import ResnetlabError
from ..hardware import usable_cores
from ..policy import pick_device
from ..train.rundir import note_stop
from .estimate import estimate, fmt_time
from .tasks import (
    NetTask,
    diverged_line,
    import_ray,
    is_diverged,
    start_line,
    train_remote,
    train_task,
    with_threads,
)


def _die_with_parent() -> None:
    """Worker start-up: lines out as they are printed, be killed when the study's process dies
    (Linux), and take no signal meant for the study's process group: Ctrl-C, or the SIGTERM of
    `timeout`, reach the study alone, which passes one Ctrl-C to each worker (`_stop_workers`).
    A worker that is training takes it through the trainer's own handler (checkpoint, then
    stop); one that is not training yet (loading data, building the net) notes it, and its run
    stops at its first read with a checkpoint; an idle one does nothing with it, and the study
    shuts the pool down."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    signal.signal(signal.SIGINT, note_stop)  # the trainer installs its own while it runs
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


def study_device(device: str, ray: str | None) -> str:
    """The device the study's nets train on, as its plan sees it: here, pick_device's (CUDA asked
    on a machine without it is refused); on Ray, the tasks' device, whatever this driver has:
    cuda as asked (run_on_ray checks the cluster's GPUs), cpu for auto (Ray tasks get no GPU
    unless asked). The name itself was checked with the study's settings (check_config)."""
    if ray is None:
        return pick_device(device)
    return "cpu" if device == "auto" else device


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
    `workers` processes or on Ray. `on_done(task)` is called here as each net ends trained; a
    net that diverged is said so instead."""
    check_workers(workers, ray)
    out = Path(out)
    left = [t for t in tasks if t.state != "done"]
    counts = {s: sum(t.state == s for t in tasks) for s in ("done", "partial", "new")}
    say(f"plan: {len(tasks)} net(s): {counts['done']} done, {counts['partial']} to resume, "
        f"{counts['new']} to start")  # fmt: skip
    for t in tasks:
        if t.state == "done" and is_diverged(t.cfg.out):
            say(diverged_line(t.label, t.cfg.out))
        elif t.state == "done":
            say(f"{t.label}: already trained in {t.cfg.out}")
    if not left:
        return

    def ended(t: NetTask, trained=on_done) -> None:
        if is_diverged(t.cfg.out):
            say(diverged_line(t.label, t.cfg.out))
        elif trained:
            trained(t)

    on_done = ended
    workers = min(workers, len(left))  # fewer nets than workers: each takes a bigger share
    per = worker_threads(workers, threads) if ray is None else None
    if per is not None:
        left = [with_threads(t, per) for t in left]
    try:
        with _sigterm_as_interrupt():
            if ray is not None:  # its tasks are cancelled; each resumes from its last checkpoint
                from .on_ray import run_on_ray

                run_on_ray(left, data, out, ray, threads, say, on_done)
            else:
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
        say(start_line(t) + f" (study elapsed {fmt_time(time.time() - t0)})")
        train_task(t)
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
                except BrokenProcessPool:  # every net in flight sees it, not only the one that died
                    busy = ", ".join([t.label, *(p.label for p in pending.values())])
                    raise ResnetlabError(
                        f"a worker process died (killed, or out of memory) while these nets were "
                        f"training: {busy}; run the same command again to resume every "
                        "unfinished net"
                    ) from None
                if err:
                    errors.append(err)
                    continue
                left_now = len(pending) + len(queue)
                say(f"{t.label}: finished in {fmt_time(secs)} (study elapsed "
                    f"{fmt_time(time.time() - t0)}, {left_now} net(s) left)")  # fmt: skip
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
