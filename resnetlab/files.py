"""Files written whole or not at all, outputs that cannot destroy inputs, and file digests.

atomic_write writes into a temporary beside the target, `.NAME.XXXXXXXX.resnetlab.tmp` (NAME
shortened with a hash when the whole would pass the file-name limit), created exclusively (never
through a planted link), held under a lock while it is written, fsynced, then renamed over the
target. A temporary is removed on any exception, on Ctrl-C, and on SIGTERM (when no other handler
owns SIGTERM, the write cleans up and the process then ends by the signal as it would have);
what a SIGKILL or a power loss leaves is swept at the next write into the same folder: an
unlocked temporary of this pattern, older than STALE_SECONDS.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import ResnetlabError

TEMP_SUFFIX = ".resnetlab.tmp"
STALE_SECONDS = 60  # an unlocked temporary this young may belong to a write that is starting
_RANDOM = "[a-z0-9_]{8}"  # what tempfile puts between prefix and suffix
_OURS = re.compile(r"\..+\." + _RANDOM + re.escape(TEMP_SUFFIX))


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Call write(tmp_path) and rename onto `path`, so a crash never leaves a half-written file.

    An existing `path` that is not a regular file (a directory, a device, a FIFO) is refused."""
    path = Path(path)
    check_output(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(folder, path.name)
    prefix = temp_prefix(path.name, 8 + len(TEMP_SUFFIX), name_limit(folder))
    with cleanup_on_sigterm():
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=TEMP_SUFFIX, dir=folder)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # tells a sweep in another process that it is alive
            write(tmp)
            finish_file(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)


def finish_file(path: str | os.PathLike, mode: int = 0o666) -> None:
    """Give a file written under a temporary name the user's usual permissions (`mode` less the
    umask) and flush it to disk, so that a power loss after its rename cannot leave it empty."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, mode & ~current_umask())
        os.fsync(fd)
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's umask, read without changing it (other threads may be creating files)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def name_limit(folder: str | os.PathLike) -> int:
    """The longest file name, in bytes, that `folder`'s file system accepts (255 when unknown)."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return 255


def temp_prefix(name: str, room: int, limit: int = 255) -> str:
    """`.NAME.`, the prefix of a temporary beside NAME that leaves `room` bytes for what follows
    within a file-name `limit`: a long NAME is cut and a hash of the whole added, so a legal
    name of 250 characters still has a legal temporary. A NAME that is not UTF-8 is given a
    temporary that is, since the writers (ONNX, safetensors) take UTF-8 paths only."""
    budget = limit - room - 2
    raw = os.fsencode(name)
    if len(raw) <= budget and raw.decode("utf-8", "replace") == name:
        return f".{name}."
    digest = hashlib.sha256(raw).hexdigest()[:8]
    cut = raw[: max(budget - 9, 1)].decode("utf-8", "ignore")  # never half a character
    return f".{cut}~{digest}."


def sweep_temporaries(folder: str | os.PathLike, name: str | None = None) -> list[str]:
    """Delete what killed atomic writes left in `folder`: files named `.*.XXXXXXXX.resnetlab.tmp`
    (and, for `name`, the older `.NAME.XXXXXXXX.tmp`) that are regular, the user's own, unlocked
    (no live write holds them) and older than STALE_SECONDS. Returns the names removed."""
    folder = Path(folder)
    older = re.compile(re.escape(f".{name}.") + _RANDOM + r"\.tmp") if name else None
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not (_OURS.fullmatch(entry.name) or (older and older.fullmatch(entry.name))):
            continue
        if _remove_if_stale(folder / entry.name):
            removed.append(entry.name)
    return sorted(removed)


def _remove_if_stale(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False  # a link, vanished, not ours to read
    try:
        st = os.fstat(fd)
        if (
            not stat.S_ISREG(st.st_mode)
            or st.st_nlink != 1
            or st.st_uid != os.geteuid()
            or time.time() - st.st_mtime < STALE_SECONDS
        ):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live write holds it
        now = os.lstat(path)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            return False  # replaced meanwhile
        os.unlink(path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class _Terminated(BaseException):
    """SIGTERM arrived during an atomic write: unwind (removing the temporary), then end."""


@contextlib.contextmanager
def utf8_path(path: str | os.PathLike) -> Iterator[str]:
    """`path` as a string that readers taking UTF-8 paths only (safetensors) can open: itself, or
    for a name of other bytes, the file opened here and named by /proc/self/fd (Linux)."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        fd = os.open(text, os.O_RDONLY | os.O_CLOEXEC)
        try:
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    yield text


@contextlib.contextmanager
def cleanup_on_sigterm() -> Iterator[None]:
    """While inside, SIGTERM unwinds (an exception the `except`/`finally` blocks of a write see,
    so its temporaries are removed) and then ends the process by SIGTERM, as it would have.
    Only when SIGTERM has its default action: a handler of the program's own (the trainer's,
    which stops at the next step with a checkpoint) is left in charge."""
    import signal
    import threading

    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def on_term(signum, frame):  # noqa: ARG001
        raise _Terminated

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        raise SystemExit(128 + signal.SIGTERM) from None  # only if the signal is blocked
    finally:
        if signal.getsignal(signal.SIGTERM) is on_term:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def check_output(
    out: str | os.PathLike, inputs: tuple[str | os.PathLike, ...] = (), what: str = "output"
) -> None:
    """Refuse an output that is one of `inputs`, or that exists and is not a regular file.

    `what` names the output in messages (the command line passes its flag, e.g. "--out")."""
    out = Path(out)
    # a file written into an input folder becomes part of the input (an image among the data)
    check_apart(out, tuple(i for i in inputs if i is not None and os.path.isdir(i)), what)
    try:
        st = os.stat(out)
    except FileNotFoundError:
        return
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise ResnetlabError(f"{what} {out}: file name too long") from None
        raise ResnetlabError(f"{what} {out}: cannot check it ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ResnetlabError(f"{what} {out} is a directory; give a file name")
    if not stat.S_ISREG(st.st_mode):
        raise ResnetlabError(
            f"{what} {out} exists and is not a regular file (a device, FIFO or socket); "
            "give the name of a new or regular file"
        )
    for item in inputs:
        try:
            same = os.path.samefile(out, item)
        except OSError:
            continue
        if same:
            raise ResnetlabError(
                f"{what} {out} is the input {item}; writing it would destroy the input; "
                "choose another name"
            )


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_output_dir(
    path: str | os.PathLike, inputs: tuple[str | os.PathLike | None, ...] = ()
) -> Path:
    """An output directory that exists as a directory or can be made, apart from every input
    (check_apart): checked before any work."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ResnetlabError(f"output {p} exists and is not a directory", argument="out")
    above = next((a for a in p.parents if a.exists()), None)  # the folder it would be made in
    if not p.exists() and above is not None and not above.is_dir():
        raise ResnetlabError(f"output {p} cannot be made: {above} is not a directory")
    check_apart(p, inputs)
    return p


def _real(path: str | os.PathLike) -> Path:
    """The path with links and `..` resolved, also for a path that does not exist yet."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def check_apart(
    out: str | os.PathLike, inputs: tuple[str | os.PathLike | None, ...], what: str = "out"
) -> None:
    """Refuse an output (a folder, or a file) that is an input, lies inside an input folder, or
    contains an input folder: a run's files would become training images, or its clean-up would
    reach into its own input. Inputs that are not paths on disk (a dataset name) are skipped."""
    target = _real(out)
    for item in inputs:
        if item is None or not os.path.exists(os.fspath(item)):
            continue
        source = _real(item)
        if target == source:
            problem = "is the input"
        elif target.is_relative_to(source):
            problem = "lies inside the input"
        elif source.is_relative_to(target) and source.is_dir():
            problem = "contains the input"
        else:
            continue
        raise ResnetlabError(
            f"{what} {out} {problem} {item}; its files would mix with the input's: choose a "
            "folder apart from the inputs",
            argument="out" if what == "out" else None,
        )
