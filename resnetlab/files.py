"""Files written whole or not at all, outputs that cannot destroy inputs, and file digests."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import ResnetlabError


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Call write(tmp_path) and rename onto `path`, so a crash never leaves a half-written file.

    An existing `path` that is not a regular file (a directory, a device, a FIFO) is refused."""
    path = Path(path)
    check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        mask = os.umask(0)  # mkstemp makes 0600 files; give the result the usual permissions
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output(
    out: str | os.PathLike, inputs: tuple[str | os.PathLike, ...] = (), what: str = "output"
) -> None:
    """Refuse an output that is one of `inputs`, or that exists and is not a regular file.

    `what` names the output in messages (the command line passes its flag, e.g. "--out")."""
    out = Path(out)
    try:
        st = os.stat(out)
    except FileNotFoundError:
        return
    except OSError as e:
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


def check_output_dir(path: str | os.PathLike) -> Path:
    """An output directory that exists as a directory or can be made: checked before any work."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ResnetlabError(f"output {p} exists and is not a directory", argument="out")
    return p
