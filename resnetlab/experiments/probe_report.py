"""Seeds of the probes (gradients and lesions) taken together: the nets grouped over seeds, curves
with a band, and the markdown tables gradients.md and lesion.md.

A group is every result of one net (family and depth, or the weights' model name) over seeds, in
the order first met. Gradient norms and their ratios span orders of magnitude, so their centre is
the geometric mean and their band the range (min to max) over seeds; response stds and error
rates are averaged arithmetically, with the range (figures) or the sample std (tables).
"""

from __future__ import annotations

import json
import math
from collections import Counter
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
    """Three significant figures, large values written out up to a billion: 0.0317, 11.4, 1,480,
    3,330,000."""
    text = f"{value:.3g}"
    if not math.isfinite(value) or not 1000 <= abs(float(text)) < 1e9:
        return text  # a ratio past a billion (a gradient of 0 at the far end) stays 1.11e+23
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


def lesion_nets(
    items: Sequence[T], as_dict: Callable[[T], dict[str, Any]]
) -> list[tuple[str, list[T]]]:
    """A lesion's weights files grouped into nets, each with its label: a net is one model (name,
    family, blocks and build options) and its files are its seeds. The label is the model's name;
    where two nets share it (residual MLPs of other depths or widths), their build options and
    number of blocks follow."""

    def key(item: T) -> Hashable:
        r = as_dict(item)
        options = json.dumps(r.get("options") or {}, sort_keys=True)
        return r["name"], r["family"], tuple(r["blocks"]), options

    groups = grouped(items, key)
    names = Counter(as_dict(g[0])["name"] for g in groups)
    nets = []
    for g in groups:
        r = as_dict(g[0])
        label = r["name"]
        if names[label] > 1:
            options = ", ".join(f"{k}={v}" for k, v in sorted((r.get("options") or {}).items()))
            label += f" ({options + '; ' if options else ''}{len(r['blocks'])} blocks)"
        nets.append((label, g))
    return nets


def lesion_markdown(records: list[dict[str, Any]], dataset: str, n_images: int) -> str:
    """lesion.md: per net over its seeds (weights files of the same model), the error with nothing
    deleted, the median, best and worst single deletion, and k = 2, 5, 10 random deletions
    (mean over draws); mean ± sample std over seeds."""
    nets = lesion_nets(records, lambda r: r)
    ks = [k for k in LESION_KS if all(k in r["ks"] for r in records)]
    head = "| net | seeds | nothing deleted | one block deleted: median | best | worst |"
    head += "".join(f" {k} random |" for k in ks)
    lines = [f"# Lesions on {dataset} ({n_images} test images)", "", head,
             "|---|---:|" + "---:|" * (4 + len(ks))]  # fmt: skip
    for label, g in nets:
        single = [[e for e in r["single"] if e is not None] for r in g]
        cells = [
            _pct([r["baseline_err"] for r in g]),
            _pct([median(s) for s in single]),
            _pct([min(s) for s in single]),
            _pct([max(s) for s in single]),
        ]
        cells += [_pct([r["k_mean"][r["ks"].index(k)] for r in g]) for k in ks]
        lines.append(f"| {label} | {len(g)} | " + " | ".join(cells) + " |")
    lines += ["", "Errors on the test sample; mean ± sample standard deviation over seeds "
              "(weights files of the same model); k random: the mean over the draws of each "
              "seed."]  # fmt: skip
    return "\n".join(lines) + "\n"
