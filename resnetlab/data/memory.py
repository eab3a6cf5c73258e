"""How many bytes of decoded images this process may hold: the stated limit every reader checks
before it allocates.

The budget is MEMORY_FRACTION of the memory available now (MemAvailable, or the cgroup's limit
when that is lower), shared by the processes of one torchrun node (LOCAL_WORLD_SIZE), since each
holds its own copy of the data. A dataset beyond it is refused in one line before anything is
allocated: decoding 20 images of 9000 x 9000 pixels needs 4.9 GB whatever their files weigh, and
a folder that large goes through `resnetlab data prepare --size` (a memory-mapped cache) instead.
"""

from __future__ import annotations

import os

from ..errors import ResnetlabError

MEMORY_FRACTION = 0.5
FALLBACK_BYTES = 4 << 30  # when the machine does not say (not Linux, no /proc)


def available_memory() -> int:
    """Bytes of memory this process can take now without swapping (Linux: MemAvailable, capped
    by the cgroup's limit); FALLBACK_BYTES when the machine does not say."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            avail = FALLBACK_BYTES
    return min(avail, _cgroup_room())


def _cgroup_room() -> int:
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
    except (OSError, ValueError):
        return 1 << 62
    return 1 << 62 if limit == "max" else max(int(limit) - used, 0)


def memory_budget() -> int:
    """The bytes of decoded data this process may hold (see the module doc)."""
    try:
        ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        ranks = 1
    return int(available_memory() * MEMORY_FRACTION) // ranks


def gigabytes(n: int) -> str:
    """Bytes as a short reading: 4.9 GB, 120 MB, 0.5 MB."""
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e7 else f"{n / 1e6:.1f} MB"


def check_fits(nbytes: int, what: str, hint: str = "") -> None:
    """Refuse, before allocating, `what` of `nbytes` bytes beyond memory_budget()."""
    budget = memory_budget()
    if nbytes > budget:
        raise ResnetlabError(
            f"{what} needs {gigabytes(nbytes)}, beyond the limit of {gigabytes(budget)} "
            f"({MEMORY_FRACTION:.0%} of the memory available now){'; ' + hint if hint else ''}"
        )
