"""The overfitting study's results: overfitting.json, the table (overfitting.md) and the figure
(overfitting.png), from the per-net records that overfitting.py reads back from each run.

Errors are fractions in the JSON and percentages (the gap in points) in the table and figure; a
cell of several seeds shows the mean ± the sample std over them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..files import atomic_write
from .degradation import DIVERGED_NOTE, mean_std, pm, seeds_cell, summarise
from .figures import pyplot, save_png

JSON_FILE = "overfitting.json"
TABLE_FILE = "overfitting.md"
FIGURE_FILE = "overfitting.png"
METRICS = ("final_train_err", "final_test_err", "gap")
GRID = ("depth", "train_size", "regularisation")  # a cell of the table: one net over seeds


def table_markdown(records: list[dict[str, Any]], title: str, order: Sequence[str]) -> str:
    """The grid's table: errors in percent, the gap in points, mean ± std over seeds."""
    rows = summarise(records, GRID, METRICS)
    lines = [
        f"# {title}",
        "",
        "| depth | training images | regularisation | parameters | seeds | train err % | "
        "test err % | gap (points) |",
        "|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in _order(rows, order):
        lines.append(
            f"| {r['depth']} | {r['train_size']:,} | {r['regularisation']} | {r['params']:,} | "
            f"{seeds_cell(r)} | " + " | ".join(pm(r, m) for m in METRICS) + " |"
        )
    lines += [
        "",
        "Train error: the trained net (evaluation mode, no augmentation) on its own training "
        "images; test error: the whole test split; gap: test minus train. Mean ± sample std "
        "over seeds.",
        *(["", DIVERGED_NOTE] if any(r.get("diverged") for r in records) else []),
        "",
    ]
    return "\n".join(lines)


def _order(rows: list[dict[str, Any]], order: Sequence[str]) -> list[dict[str, Any]]:
    rank = {r: i for i, r in enumerate(order)}
    return sorted(rows, key=lambda r: (r["train_size"], r["depth"], rank[r["regularisation"]]))


def write_results(records: list[dict[str, Any]], out: Path, study: dict[str, Any], title: str,
                  order: Sequence[str]) -> None:  # fmt: skip
    """overfitting.json (the grid as `study`, every net, the mean and std over seeds), .md and .png;
    `order`: the regularisations in the order the table and the legend show them."""
    summary = _order(summarise(records, GRID, METRICS), order)
    text = json.dumps({"study": study, "nets": records, "summary": summary}, indent=1) + "\n"
    atomic_write(out / JSON_FILE, lambda tmp: Path(tmp).write_text(text))
    md = table_markdown(records, title, order)
    atomic_write(out / TABLE_FILE, lambda tmp: Path(tmp).write_text(md))
    plot_overfitting(records, out / FIGURE_FILE, title, order)


def plot_overfitting(
    records: list[dict[str, Any]], path: Path, title: str, order: Sequence[str]
) -> None:
    """Top: train (dashed) and test (solid) error against depth, one panel per training-set size,
    one colour per regularisation; bottom: the gap. Bars: ± one std over seeds."""
    plt = pyplot()

    sizes = sorted({r["train_size"] for r in records})
    regs = [r for r in order if any(x["regularisation"] == r for x in records)]
    fig, axes = plt.subplots(2, len(sizes), figsize=(5.5 * len(sizes), 7.5), dpi=120,
                             sharex=True, sharey="row", squeeze=False)  # fmt: skip
    for col, size in enumerate(sizes):
        top, bottom = axes[0][col], axes[1][col]
        for k, reg in enumerate(regs):
            every = [r for r in records if r["train_size"] == size and r["regularisation"] == reg]
            group = [r for r in every if not r.get("diverged")]
            depths = sorted({r["depth"] for r in group})
            c = f"C{k}"
            for d in sorted({r["depth"] for r in every} - set(depths)):  # every seed diverged
                n = sum(r["depth"] == d for r in every)
                top.plot([], [], "x", color=c, label=f"{reg}: depth {d} diverged ({n} of {n})")
            if not depths:
                continue
            stats = {
                m: [mean_std([100 * r[m] for r in group if r["depth"] == d]) for d in depths]
                for m in METRICS
            }
            for metric, style, ax, label in (
                ("final_test_err", "o-", top, f"{reg}: test"),
                ("final_train_err", "s--", top, f"{reg}: train"),
                ("gap", "o-", bottom, reg),
            ):
                means = [m for m, _ in stats[metric]]
                stds = [s for _, s in stats[metric]]
                ax.errorbar(depths, means, yerr=stds if any(stds) else None, fmt=style, color=c,
                            markersize=4, capsize=3, label=label)  # fmt: skip
        top.set_title(f"{size:,} training images")
        bottom.set_xlabel("depth (layers)")
        for ax in (top, bottom):
            ax.set_xticks(sorted({r["depth"] for r in records}))
            ax.grid(alpha=0.3)
        top.legend(fontsize=8)
        bottom.axhline(0, color="grey", linewidth=0.8)
    axes[0][0].set_ylabel("error (%)")
    axes[1][0].set_ylabel("gap: test - train error (points)")
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path)
