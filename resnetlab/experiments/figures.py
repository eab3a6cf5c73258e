"""What every study's figure shares: pyplot on the Agg backend, and an atomic PNG write."""

from __future__ import annotations

from pathlib import Path

from ..files import atomic_write


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> None:
    """Write the figure to `path` (temporary name, then rename) and free it."""
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    pyplot().close(fig)
