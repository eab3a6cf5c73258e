"""A run's directory: the files a run writes, its lock, and what a killed save leaves behind."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from ..errors import ResnetlabError
from . import checkpoint as ckpt

LAST_WEIGHTS = "last.safetensors"
BEST_WEIGHTS = "best.safetensors"
NAMES_WRITTEN = (
    ckpt.CHECKPOINT_DIR, LAST_WEIGHTS, BEST_WEIGHTS, "metrics.jsonl", "steps.jsonl",
    "curves.png", "summary.json",
)  # fmt: skip
LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold `out/.lock` for the run: a second run into the same directory fails at once, in one
    line; the kernel frees the lock when the process ends, however it ends (kill -9 too)."""
    import fcntl

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ResnetlabError(
                f"{out} is in use by another run (process {other}); wait for it to end or "
                "choose another output directory"
            ) from None
        locked = True
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        if locked and created and [p.name for p in out.iterdir()] == [LOCK_NAME]:
            shutil.rmtree(out, ignore_errors=True)  # a run that failed before writing anything
        os.close(fd)  # releases the lock


def remove_stale_temporaries(out: Path) -> list[str]:
    """Delete what a killed save left in `out` (`.checkpoint.*.tmp/`, `.last.safetensors.*.tmp`,
    ...); call only while holding the run lock, so that no live save owns them."""
    removed = []
    for p in out.glob(".*.tmp"):
        if any(p.name.startswith(f".{n}.") for n in NAMES_WRITTEN):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p.name)
    return sorted(removed)


@contextlib.contextmanager
def stop_on_signals(ask_to_stop):
    """While inside: the first Ctrl-C or SIGTERM calls `ask_to_stop()` (the run stops at its next
    read, with a checkpoint); a second one raises KeyboardInterrupt at once (the last checkpoint
    stays intact). Only the main thread can take signals; elsewhere this does nothing."""
    import signal
    import threading

    asked = []

    def on_signal(signum, frame):  # noqa: ARG001
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)
        ask_to_stop()

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)
