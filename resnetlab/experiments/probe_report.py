"""Seeds of the probes (gradients and lesions) taken together: the nets grouped over seeds, curves
with a band, and the markdown tables gradients.md and lesion.md.

A group is every result of one net (family and depth, or the weights' model name) over seeds, in
the order first met. Gradient norms and their ratios span orders of magnitude, so their centre is
the geometric mean and their band the range (min to max) over seeds; response stds and error
rates are averaged arithmetically, with the range (figures) or the sample std (tables).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

from .degradation import mean_std

T = TypeVar("T")


def grouped(items: Iterable[T], key: Callable[[T], Hashable]) -> list[list[T]]:
    """The items in groups of equal key, groups in the order their first item comes."""
    groups: dict[Hashable, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.values())


def geo_mean(values: Sequence[float]) -> float:
    """Geometric mean of positive values (a zero or negative value makes it 0)."""
    if any(v <= 0 for v in values):
        return 0.0
    return math.exp(sum(math.log(v) for v in values) / len(values))


def band(curves: Sequence[Sequence[float]], geometric: bool = False):
    """(centre, low, high) per position of equally long curves: the (geometric) mean over the
    curves and their range."""
    columns = list(zip(*curves))
    centre = [geo_mean(c) if geometric else sum(c) / len(c) for c in columns]
    return centre, [min(c) for c in columns], [max(c) for c in columns]


def sig3(value: float) -> str:
    """Three significant figures, large values written out: 0.0317, 11.4, 1,480, 3,330,000."""
    text = f"{value:.3g}"
    if not math.isfinite(value) or abs(float(text)) < 1000:
        return text
    return f"{float(text):,.0f}"


def _ratio(values: Sequence[float | None]) -> str:
    """'11.4x (10.2x to 12.9x)' over seeds: geometric mean and range; '-' for none."""
    got = [v for v in values if v is not None]
    if not got:
        return "-"
    text = f"{sig3(geo_mean(got))}x"
    return text + (f" ({sig3(min(got))}x to {sig3(max(got))}x)" if len(got) > 1 else "")


def _mean_range(values: Sequence[float]) -> str:
    if not values:
        return "none"
    text = f"{sum(values) / len(values):.3g}"
    return text + (f" ({min(values):.3g} to {max(values):.3g})" if len(values) > 1 else "")


def gradients_markdown(records: list[dict[str, Any]], dataset: str) -> str:
    """gradients.md: per state and net, over seeds, the first/last gradient ratios (geometric
    mean and range) and the mean 3x3 response std (mean and range of the seeds' means)."""
    lines = [
        f"# Gradient flow and layer responses on {dataset}",
        "",
        "| state | net | seeds | first/last conv weight gradient | first/last block output "
        "gradient | mean 3x3 response std |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for state in ("init", "trained"):
        rows = [r for r in records if r["state"] == state]
        for g in grouped(rows, lambda r: (r["family"], r["depth"])):
            stds = [sum(s) / len(s) for r in g if (s := r["response_stds"])]
            lines.append(
                f"| {'initialisation' if state == 'init' else 'trained'} "
                f"| {g[0]['family']}-{g[0]['depth']} | {len(g)} "
                f"| {_ratio([r['first_to_last_conv_grad'] for r in g])} "
                f"| {_ratio([r['first_to_last_block_grad'] for r in g])} | {_mean_range(stds)} |"
            )
    lines += [
        "",
        "Ratios: gradient norm of the first layer (block) over the last; geometric mean over "
        "seeds, their range in brackets. Response std: the mean over a net's 3x3 layers, averaged "
        "over seeds.",
    ]
    return "\n".join(lines) + "\n"


def median(v: list[float]) -> float:
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _pct(values: Sequence[float]) -> str:
    """'10.60%' or '10.60 ± 0.31%' (sample std over seeds)."""
    mean, std = mean_std([100 * v for v in values])
    return f"{mean:.2f}" + (f" ± {std:.2f}%" if len(values) > 1 else "%")


LESION_KS = (2, 5, 10)


def lesion_markdown(records: list[dict[str, Any]], dataset: str, n_images: int) -> str:
    """lesion.md: per net over its seeds (weights files of the same model), the error with nothing
    deleted, the median, best and worst single deletion, and k = 2, 5, 10 random deletions
    (mean over draws); mean ± sample std over seeds."""
    # one net: the same model with the same blocks (an MLP's depth is an option, not its name)
    groups = grouped(records, lambda r: (r["name"], r["family"], tuple(r["blocks"])))
    ks = [k for k in LESION_KS if all(k in r["ks"] for g in groups for r in g)]
    head = "| net | seeds | nothing deleted | one block deleted: median | best | worst |"
    head += "".join(f" {k} random |" for k in ks)
    lines = [f"# Lesions on {dataset} ({n_images} test images)", "", head,
             "|---|---:|" + "---:|" * (4 + len(ks))]  # fmt: skip
    for g in groups:
        single = [[e for e in r["single"] if e is not None] for r in g]
        cells = [
            _pct([r["baseline_err"] for r in g]),
            _pct([median(s) for s in single]),
            _pct([min(s) for s in single]),
            _pct([max(s) for s in single]),
        ]
        cells += [_pct([r["k_mean"][r["ks"].index(k)] for r in g]) for k in ks]
        lines.append(f"| {g[0]['name']} | {len(g)} | " + " | ".join(cells) + " |")
    lines += ["", "Errors on the test sample; mean ± sample standard deviation over seeds "
              "(weights files of the same model); k random: the mean over the draws of each "
              "seed."]  # fmt: skip
    return "\n".join(lines) + "\n"
