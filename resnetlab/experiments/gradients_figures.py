"""The figures of the gradient study: gradient norms per layer (gradients.png) and the 3x3 layer
responses (responses.png, the paper's Figure 7), one curve per net; over several seeds, the mean
and a band from the lowest seed to the highest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .figures import pyplot, save_png
from .probe_report import band, grouped

NetProbe = Any  # gradients.NetProbe (not imported: gradients.py imports this module)


def _style(results: list[NetProbe]):
    depths = sorted({r.depth for r in results})
    colours = {d: f"C{i}" for i, d in enumerate(depths)}
    return lambda r: dict(color=colours[r.depth], linestyle="--" if "plain" in r.family else "-")


def _nets(results: list[NetProbe], state: str) -> list[list[NetProbe]]:
    """The results of one state, grouped by net over seeds."""
    return grouped((r for r in results if r.state == state), lambda r: (r.family, r.depth))


def _draw(ax, group: list[NetProbe], values, style, geometric: bool) -> None:
    """One net's curve: its one seed, or the (geometric) mean over seeds with a range band."""
    r = group[0]
    centre, low, high = band([values(g) for g in group], geometric)
    xs = range(1, len(centre) + 1)
    seeds = f" ({len(group)} seeds)" if len(group) > 1 else ""
    ax.plot(xs, centre, label=f"{r.family}-{r.depth}{seeds}", **style(r))
    if len(group) > 1:
        ax.fill_between(xs, low, high, color=style(r)["color"], alpha=0.15, linewidth=0)


def _seeds_note(results: list[NetProbe]) -> str:
    seeds = sorted({r.seed for r in results})
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    return f"{len(seeds)} seeds: mean, band from min to max"


def plot_gradients(results: list[NetProbe], path: Path, dataset: str) -> None:
    """Log-scale gradient norms against layer index: conv weights (left), block outputs (right);
    one row per state (initialisation, trained); over seeds, the geometric mean and a band."""
    plt = pyplot()

    states = [s for s in ("init", "trained") if any(r.state == s for r in results)]
    style = _style(results)
    fig, axes = plt.subplots(len(states), 2, figsize=(12, 4.2 * len(states)), dpi=120,
                             squeeze=False)  # fmt: skip
    for row, state in zip(axes, states):
        when = "at initialisation" if state == "init" else "trained"
        for group in _nets(results, state):
            _draw(row[0], group, lambda r: r.probe.conv_grad_norms, style, geometric=True)
            _draw(row[1], group, lambda r: r.probe.block_grad_norms, style, geometric=True)
        row[0].set_title(f"conv weight gradient norm ||dL/dW||, {when}")
        row[0].set_xlabel("conv layer (1 = stem, input side)")
        for ax in row:
            ax.xaxis.get_major_locator().set_params(integer=True)
        row[1].set_title(f"block output gradient norm ||dL/dx|| per image, {when}")
        row[1].set_xlabel("block (1 = first, input side)")
        for ax in row:
            ax.set_yscale("log")
            ax.set_ylabel("gradient norm (log scale)")
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8, title="dashed: plain, solid: ResNet", title_fontsize=8)
    fig.suptitle(f"Gradient flow on {dataset} (real training batches; {_seeds_note(results)})")
    fig.tight_layout()
    save_png(fig, path)


def plot_responses(results: list[NetProbe], path: Path, dataset: str) -> None:
    """Figure 7 of the paper: std of each 3x3 layer's response, in layer order (top) and sorted
    by magnitude (bottom); the trained nets when there are any, else at initialisation; over
    seeds, the mean and a band."""
    plt = pyplot()

    state = "trained" if any(r.state == "trained" for r in results) else "init"
    chosen = [r for r in results if r.state == state]
    style = _style(chosen)
    fig, axes = plt.subplots(2, 1, figsize=(8, 7), dpi=120)
    for group in _nets(chosen, state):
        _draw(axes[0], group, lambda r: r.probe.response_stds, style, geometric=False)
        _draw(axes[1], group, lambda r: sorted(r.probe.response_stds, reverse=True), style,
              geometric=False)  # fmt: skip
    when = (
        "trained nets, BN running statistics"
        if state == "trained"
        else "at initialisation, BN batch statistics (std is about 1 by construction)"
    )
    axes[0].set_title(f"Std of 3x3 layer responses (after BN, before ReLU/addition): {when}",
                      fontsize=9)  # fmt: skip
    axes[0].set_xlabel("3x3 layer index (original order)")
    axes[1].set_xlabel("3x3 layer index (sorted by magnitude)")
    values = [v for r in chosen for v in r.probe.response_stds if v > 0]
    wide = bool(values) and max(values) > 20 * min(values)  # e.g. an untrained plain-110
    for ax in axes:
        if wide:
            ax.set_yscale("log")
        ax.set_ylabel("std (log scale)" if wide else "std")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="dashed: plain, solid: ResNet", title_fontsize=8)
    fig.suptitle(f"Layer responses on {dataset} ({_seeds_note(chosen)})")
    fig.tight_layout()
    save_png(fig, path)
