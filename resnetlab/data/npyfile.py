"""A uint8 .npy file opened so that nothing done to it later can crash the reader.

`open_npy` checks the header against the shape expected and the file's size against its header,
then reads the array into memory, or maps it copy-on-write (nothing written back). A mapped file
that another process truncates would kill the reader with SIGBUS, so the mapping is guarded by a
read lease (Linux, the user's own file on a local disk): the truncation, or an open for writing,
waits while this process stops with one line naming the file (ResnetlabError, raised by the SIGIO
handler). Where no lease can be taken the mapping is unguarded. The prepared cache (prepared.py)
opens its images.npy this way.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import signal
import stat
import threading
import weakref
from pathlib import Path

import numpy as np

from ..errors import ResnetlabError


def open_npy(file: Path, shape: tuple[int, ...], *, in_memory: bool) -> np.ndarray:
    """A uint8 .npy file as an array of `shape`, its size checked against the bytes present: read
    into memory, or mapped copy-on-write under a read lease where one can be taken."""
    try:  # O_NONBLOCK: a FIFO in its place must not hang the open (no effect on a file)
        fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ResnetlabError(f"{file}: not readable ({e.strerror or e})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ResnetlabError(f"{file}: not a regular file; prepare the cache again")
        f = os.fdopen(fd, "rb", buffering=0, closefd=False)
        try:
            version = np.lib.format.read_magic(f)
            if version != (1, 0):
                raise ValueError(f"npy format version {version}, expected (1, 0)")
            header = np.lib.format.read_array_header_1_0(f)
        except (OSError, ValueError) as e:
            raise ResnetlabError(f"{file}: not readable ({e})") from None
        found, fortran, dtype = header
        if dtype != np.uint8 or fortran or tuple(found) != shape:
            raise ResnetlabError(
                f"{file} is {dtype} {tuple(found)}, but the metadata says uint8 {shape}; "
                "prepare it again"
            )
        offset, nbytes = f.tell(), math.prod(shape)  # np.prod wraps at 2**63
        guarded = False if in_memory else _guard(fd, file)
        size = os.fstat(fd).st_size  # after the lease: from here on it cannot shrink unseen
        if size < offset + nbytes:
            raise ResnetlabError(
                f"{file} holds {size} bytes but its {shape} images need {offset + nbytes} "
                "(truncated); prepare it again"
            )
        if in_memory:
            arr = _read_whole(f, file, offset, shape)
        else:
            arr = np.memmap(f, dtype=np.uint8, mode="c", offset=offset, shape=shape)
    except BaseException:
        _release(fd)
        raise
    if guarded:
        weakref.finalize(arr, _release, fd)  # the lease lasts as long as the mapping is used
    else:
        os.close(fd)  # a mapping keeps its own reference to the file
    return arr


def _read_whole(f, file: Path, offset: int, shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(shape, dtype=np.uint8)
    view = memoryview(out.reshape(-1))
    f.seek(offset)
    pos = 0
    while pos < len(view):
        got = f.readinto(view[pos : pos + (64 << 20)])
        if not got:
            raise ResnetlabError(
                f"{file} ended after {offset + pos} bytes while being read (truncated meanwhile)"
                "; prepare it again"
            )
        pos += got
    return out


# fds holding a read lease on a mapped cache -> the cache's path, for the SIGIO handler
_GUARDED: dict[int, Path] = {}
_BROKEN: list[Path] = []  # caches whose lease another process has broken
_previous_sigio: list = []


def _guard(fd: int, file: Path) -> bool:
    """Take a read lease on `fd` (see module doc); False where none can be taken: another thread
    than the main one (which alone takes signals), a file of another user, a remote disk."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGIO) is not _on_lease_break:
        _previous_sigio[:] = [signal.getsignal(signal.SIGIO)]
        signal.signal(signal.SIGIO, _on_lease_break)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError:
        _restore_sigio()
        return False
    _GUARDED[fd] = file
    return True


def _on_lease_break(signum, frame) -> None:
    for fd, file in list(_GUARDED.items()):
        try:
            broken = fcntl.fcntl(fd, fcntl.F_GETLEASE) != fcntl.F_RDLCK
        except OSError:
            continue
        if broken:  # the other process waits for this one to end (or for lease-break-time)
            _BROKEN.append(file)
            raise_if_changed()
    previous = _previous_sigio[0] if _previous_sigio else None
    if callable(previous):
        previous(signum, frame)


def raise_if_changed() -> None:
    """Stop, in one line, if another process has started to change a mapped cache. The SIGIO
    handler raises this at once, but a signal that lands inside a finaliser or a callback is only
    printed by Python ('Exception ignored'); the batch loader calls this before each batch, so the
    run still stops within one batch, long before the kernel lets the change through."""
    if _BROKEN:
        raise ResnetlabError(
            f"{_BROKEN[0]}: another process is truncating or rewriting the prepared cache while "
            "this one reads it; stopped here, before the change could crash it; leave a "
            "cache alone while it is in use, or prepare a new one"
        )


def _release(fd: int) -> None:
    file = _GUARDED.pop(fd, None)
    if file in _BROKEN:  # its mapping is gone: nothing reads the changed file any more
        _BROKEN.remove(file)
    with contextlib.suppress(OSError):
        os.close(fd)
    _restore_sigio()


def _restore_sigio() -> None:
    if _GUARDED or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGIO) is _on_lease_break:
        previous = _previous_sigio[0] if _previous_sigio else signal.SIG_DFL
        signal.signal(signal.SIGIO, previous if previous is not None else signal.SIG_DFL)
