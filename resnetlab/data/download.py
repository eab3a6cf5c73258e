"""Where a named dataset is found ($RESNETLAB_DATA, a system copy, the cache) and checksum-verified
downloads into the cache."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import ResnetlabError
from ..files import atomic_write, file_digest

ENV_VAR = "RESNETLAB_DATA"
DEFAULT_CACHE = Path("~/.cache/resnetlab")
TIMEOUT_S = 60.0


def data_root() -> Path:
    """The directory named by $RESNETLAB_DATA, else ~/.cache/resnetlab (not created here)."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else DEFAULT_CACHE.expanduser()


def data_root_from_env() -> Path | None:
    """The directory named by $RESNETLAB_DATA, or None when the variable is unset or empty."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser() if env else None


class ChecksumError(ResnetlabError):
    """A downloaded file does not match its published checksum."""


def _download_one(url: str, dest: Path, sha256: str) -> None:
    def write(tmp: str) -> None:
        h = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r, open(tmp, "wb") as f:
            while True:
                block = r.read(1 << 20)
                if not block:
                    break
                h.update(block)
                f.write(block)
        got = h.hexdigest()
        if got != sha256:
            raise ChecksumError(
                f"{url}: SHA-256 mismatch (got {got}, expected {sha256}); the file was not kept"
            )

    atomic_write(dest, write)


def download(urls: list[str] | tuple[str, ...], dest: str | os.PathLike, sha256: str) -> Path:
    """Fetch the first URL that works into `dest` (atomically), verified against `sha256`.

    Mirrors are tried in order; a checksum mismatch is never accepted from any of them. Raises
    ResnetlabError naming the last failure when none works.
    """
    dest = Path(dest)
    if dest.is_file() and file_digest(dest) == sha256:
        return dest
    failures = []
    for url in urls:
        try:
            _download_one(url, dest, sha256)
            return dest
        except ChecksumError as e:
            failures.append(str(e))
        except (OSError, ValueError, http.client.HTTPException) as e:  # URLError, HTTPError,
            # timeouts, bad URLs; a malformed response (BadStatusLine, IncompleteRead)
            reason = getattr(e, "reason", None) or e
            failures.append(f"{url}: {reason}")
    raise ResnetlabError(f"download of {dest.name} failed: {failures[-1]}")


def dataset_dirs(name: str, system_dirs: Sequence[Path] = ()) -> list[Path]:
    """Every folder dataset `name` may be read from, in locate_dataset's order; the folder a
    download would fill (data_root()/<name>) is among them, last unless $RESNETLAB_DATA is set
    (then it is that variable's folder, looked in first)."""
    env = data_root_from_env()
    dirs = [env / name] if env is not None else []
    return list(dict.fromkeys([*dirs, *system_dirs, data_root() / name]))


def locate_dataset(
    name: str,
    holds_it: Callable[[Path], bool],
    fetch: Callable[[Path], None],
    *,
    path: str | os.PathLike | None = None,
    system_dirs: Sequence[Path] = (),
    what: str = "files",
    hint: str = "",
    allow_download: bool = True,
) -> Path:
    """The directory of dataset `name`, looked for in order: `path` when given (and then only
    there); $RESNETLAB_DATA/<name> when the variable is set; `system_dirs`; the cache
    ~/.cache/resnetlab/<name> when the variable is unset; else `fetch` into
    data_root()/<name>. `holds_it(directory)` says whether a directory has the dataset."""
    if path is not None:
        if not holds_it(Path(path)):
            raise ResnetlabError(f"{path}: no {name} {what} there")
        return Path(path)
    target = data_root() / name
    candidates = dataset_dirs(name, system_dirs)
    for directory in candidates:
        if holds_it(directory):
            return directory
    looked = ", ".join(str(c) for c in candidates)
    if not allow_download:
        raise ResnetlabError(f"{name}: not found in {looked}; {hint}")
    try:
        fetch(target)
    except ResnetlabError as e:
        raise ResnetlabError(f"{name}: not found in {looked}, and {e}; {hint}") from None
    return target
