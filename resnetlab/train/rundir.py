"""A run's directory: the files a run writes, its lock, and what a killed save leaves behind."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path

from ..errors import ResnetlabError
from . import checkpoint as ckpt
from .logs import CURVES_FILE, METRICS_FILE, STEPS_FILE, SUMMARY_FILE, TENSORBOARD_DIR

LAST_WEIGHTS = "last.safetensors"
BEST_WEIGHTS = "best.safetensors"
# every name a run writes in its folder, in this one place: a fresh run (--overwrite) clears
# these and nothing else; a killed save's temporaries are recognised by them
NAMES_WRITTEN = (
    ckpt.CHECKPOINT_DIR, ckpt.CHECKPOINT_DIR + ".old", LAST_WEIGHTS, BEST_WEIGHTS,
    METRICS_FILE, Path(METRICS_FILE).stem + ".csv", STEPS_FILE, Path(STEPS_FILE).stem + ".csv",
    CURVES_FILE, SUMMARY_FILE, TENSORBOARD_DIR,
)  # fmt: skip
LOCK_NAME = ".lock"


def clear_run(out: Path) -> list[str]:
    """Remove from `out` every file and folder a run writes (NAMES_WRITTEN; a link in their place
    goes, not its target), so that a fresh run leaves nothing of an earlier one; anything else
    in the folder stays. Call only while holding the run lock. Returns the names removed."""
    removed = []
    for name in NAMES_WRITTEN:
        p = out / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.is_symlink() or p.exists():
            p.unlink()
        else:
            continue
        removed.append(name)
    return removed


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold `out/.lock` for the run: a second run into the same directory fails at once, in one
    line; the kernel frees the lock when the process ends, however it ends (kill -9 too)."""
    import fcntl

    made = [p for p in (*reversed(out.parents), out) if not p.exists()]  # outermost first
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file where a folder must be, a read-only place
        raise ResnetlabError(f"{out}: cannot create the run folder ({e.strerror or e})") from None
    fd = open_lock(out / LOCK_NAME)
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
        held = os.pread(fd, 64, 0).strip()
        if held and not held.isdigit():  # a file of the user's, not a lock of a run
            shown = held.decode(errors="replace")[:20]
            raise ResnetlabError(
                f"{out / LOCK_NAME} is not a run's lock (it holds {shown!r}); move it away or "
                "choose another output directory"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        if locked and made and [p.name for p in out.iterdir()] == [LOCK_NAME]:
            shutil.rmtree(out, ignore_errors=True)  # a run that failed before writing anything
            for folder in reversed(made[:-1]):  # and the folders made to hold it, if still empty
                with contextlib.suppress(OSError):
                    folder.rmdir()
        os.close(fd)  # releases the lock


def open_lock(path: Path) -> int:
    """Open (or create) a lock file without following a link planted in its place, refusing
    anything but a regular file of the user's own with no other name (a hard link to another
    file would be overwritten with a process number)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)  # the umask applies, as for every file of the run
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ResnetlabError(
                f"{path} is a symbolic link; a run's lock must be a file of its own: remove it"
            ) from None
        raise ResnetlabError(f"{path}: cannot open the run's lock ({e.strerror or e})") from None
    st = os.fstat(fd)
    why = None
    if not stat.S_ISREG(st.st_mode):
        why = "is not a regular file"
    elif st.st_nlink != 1:
        why = f"has {st.st_nlink} names (a hard link to another file)"
    elif st.st_uid != os.geteuid():
        why = "belongs to another user"
    if why:
        os.close(fd)
        raise ResnetlabError(f"{path} {why}; a run's lock must be a file of its own: remove it")
    return fd


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


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) arrived; a checkpoint has been saved."""


STOP_ASKED: list[int] = []  # signals a process noted before its run could take them


def note_stop(signum, frame) -> None:  # noqa: ARG001
    """A signal handler for a process that will run a net (a study's worker): note the Ctrl-C so
    that a run starting later stops at once (stop_on_signals)."""
    STOP_ASKED.append(signum)


@contextlib.contextmanager
def stop_on_signals(ask_to_stop):
    """While inside: the first Ctrl-C or SIGTERM calls `ask_to_stop()` (the run stops at its next
    read, with a checkpoint); a second one raises KeyboardInterrupt at once (the last checkpoint
    stays intact). A stop noted before (note_stop) is asked at once. Only the main thread can
    take signals; elsewhere this does nothing."""
    import signal
    import threading

    asked = list(STOP_ASKED[:1])
    if asked:
        ask_to_stop()

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
