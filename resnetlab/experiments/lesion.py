"""The lesion study of Veit, Wilber and Belongie (2016): delete blocks from a trained net at test
time and measure the error.

Deleting a residual block removes its residual branch and keeps its shortcut: the block's
`residual` (F) gives 0 and is not computed, and the block's own forward does the rest, so it
computes relu(shortcut(x)) (post-activation) or shortcut(x) (pre-activation) without this module
knowing which. With the CIFAR nets' option-A shortcut that works for every block, downsampling
ones included (the shortcut subsamples and zero-pads). A plain block has no shortcut (its
`shortcut` is None): deleting it means skipping it, which only blocks whose input and output shapes
agree allow; its downsampling blocks stay. The random k-block deletions draw from the blocks that
keep their shape in both kinds of net, so plain and ResNet curves compare like with like. The
nets compute as a policy.Plan says (gradients.probe_plan unless given one).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import load_source
from ..data.classmap import data_for_weights
from ..data.dataset import check_input_size
from ..data.loader import BatchLoader
from ..data.sources import input_paths
from ..errors import ResnetlabError
from ..files import atomic_write, check_output_dir
from ..models import load_model
from ..policy import Plan, apply
from .figures import pyplot, save_png
from .gradients import on_plan, probe_plan, residual_blocks
from .probe_report import band, lesion_markdown, lesion_nets, median

JSON_FILE = "lesion.json"
TABLE_FILE = "lesion.md"
FIGURE_FILE = "lesion.png"


def keeps_shape(block: nn.Module) -> bool:
    """Input and output of the block have the same shape (stride 1, as many channels)."""
    return block.stride == 1 and block.in_channels == block.out_channels


def deletable(block: nn.Module) -> bool:
    """A residual block always (its shortcut remains); a plain block only if it keeps its shape."""
    return block.shortcut is not None or keeps_shape(block)


def shortcut_only(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the block computes with its residual branch deleted."""
    with deleted([block]):
        return block(x)


def _no_residual(*_args: torch.Tensor) -> float:
    return 0.0  # F(x) = 0: nothing computed; 0.0 + shortcut(x) is shortcut(x) exactly


def _skip(x: torch.Tensor) -> torch.Tensor:
    return x


@contextlib.contextmanager
def deleted(blocks: list[nn.Module]):
    """Within the context, the given blocks (in eval mode) lose their residual branch, which is
    not computed at all: a residual block passes on its shortcut, a plain block its input;
    afterwards they are whole again."""
    for b in blocks:  # an instance attribute shadows the method
        if b.shortcut is None:
            b.forward = _skip
        else:
            b.residual = _no_residual
    try:
        yield
    finally:
        for b in blocks:
            b.__dict__.pop("forward", None)
            b.__dict__.pop("residual", None)


@torch.inference_mode()
def error_rate(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 error of the model (eval mode) on the batches."""
    wrong = total = 0
    for x, y in batches:
        wrong += int((model(x).argmax(1) != y).sum())
        total += len(y)
    return wrong / max(total, 1)


@dataclass
class Lesion:
    """One net's lesion results (errors as fractions)."""

    name: str
    weights: str
    family: str
    baseline_err: float
    blocks: list[str]
    single: list[float | None]  # error with block i deleted; None where it cannot be deleted
    ks: list[int]
    k_mean: list[float]
    k_std: list[float]
    draws: int
    options: dict[str, Any] = field(default_factory=dict)  # the model's build options

    def record(self) -> dict[str, Any]:
        """The object of lesion.json."""
        return dict(self.__dict__)


def lesion_model(
    model: nn.Module,
    batches,
    *,
    pool: list[int],
    draws: int = 5,
    seed: int = 0,
    max_k: int | None = None,
) -> tuple[float, list[float | None], list[int], list[float], list[float]]:
    """Baseline error, each single deletion, and mean/std error of k random deletions from pool."""
    model.eval()
    blocks = [b for _, b in residual_blocks(model)]
    base = error_rate(model, batches)
    single: list[float | None] = []
    for b in blocks:
        if deletable(b):
            with deleted([b]):
                single.append(error_rate(model, batches))
        else:
            single.append(None)
    rng = random.Random(seed)
    top = len(pool) if max_k is None else min(max_k, len(pool))
    ks, means, stds = [], [], []
    for k in range(1, top + 1):
        errs = []
        for _ in range(1 if k == len(pool) else draws):
            chosen = rng.sample(pool, k)
            with deleted([blocks[i] for i in chosen]):
                errs.append(error_rate(model, batches))
        m = sum(errs) / len(errs)
        ks.append(k)
        means.append(m)
        stds.append((sum((e - m) ** 2 for e in errs) / len(errs)) ** 0.5)
    return base, single, ks, means, stds


def check_distinct(weights: list[str]) -> None:
    """Refuse one weights file given twice (under any spelling): it would count as two seeds."""
    seen: dict[tuple[int, int], str] = {}
    for w in weights:
        try:
            st = os.stat(w)
        except OSError:
            continue  # missing: load_model says so in its own line
        key = (st.st_dev, st.st_ino)
        if key in seen:
            raise ResnetlabError(
                f"{w} and {seen[key]} are the same file; give each net's weights once (several "
                "files of one model are taken as its seeds)"
            )
        seen[key] = w


def run_lesion(
    weights: list[str],
    data: str,
    out: str,
    *,
    images: int | None = 2000,
    draws: int = 5,
    max_k: int | None = None,
    seed: int = 0,
    say=print,
    plan: Plan | None = None,
) -> list[Lesion]:
    """Lesion every given weights file on the test split of `data`; write lesion.json, .md and
    .png, where files of the same model (seeds of one net) are taken together; computing as
    `plan` says (None: gradients.probe_plan())."""
    if draws < 1:
        raise ResnetlabError(f"draws must be at least 1, got {draws}", argument="draws")
    if max_k is not None and max_k < 1:
        raise ResnetlabError(f"max_k must be at least 1, got {max_k}", argument="max_k")
    if images is not None and images < 1:
        raise ResnetlabError(f"images must be at least 1, got {images}", argument="images")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ResnetlabError(f"seed {seed}: expected a whole number in [0, 2**32)", argument="seed")
    check_distinct(weights)
    check_output_dir(out, (*input_paths(data), *weights))
    plan = plan or probe_plan()
    apply(plan)
    models = []
    for w in weights:
        model, meta = load_model(w)
        blocks = residual_blocks(model)
        if not blocks:
            raise ResnetlabError(
                f"{w}: {meta.get('name')} has no residual blocks (or plain twins of them) to delete"
            )
        if not any(deletable(b) for _, b in blocks):
            raise ResnetlabError(
                f"{w}: no block of {meta.get('name')} can be deleted (a plain block can only be "
                "skipped where it keeps its input's shape)"
            )
        models.append((w, model, meta, blocks))
    splits = load_source(data)
    test = splits.test
    if images is not None and images < len(test):
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(test), generator=g)[:images].sort().values
        test = type(test)(test.images[idx], test.labels[idx], test.classes)
    matched = []  # every net's classes are checked before any is lesioned
    for w, _, meta, _ in models:
        check_input_size(meta, test, str(w), data)
        matched.append(data_for_weights(meta, test, weights=str(w), source=str(data)))
    results = []
    for (w, model, meta, blocks), (net_test, match) in zip(models, matched):
        if match.note:
            say(f"{meta['name']}: {match.note}")
        on_plan(model, plan)
        loader = BatchLoader(net_test, 500, train=False, mean=meta["mean"], std=meta["std"],
                             channels_last=plan.channels_last, device=plan.device)  # fmt: skip
        batches = list(loader)
        pool = [i for i, (_, b) in enumerate(blocks) if keeps_shape(b)]
        with plan.autocast():
            base, single, ks, means, stds = lesion_model(
                model, batches, pool=pool, draws=draws, seed=seed, max_k=max_k
            )
        family = "plain" if all(b.shortcut is None for _, b in blocks) else "resnet"
        res = Lesion(meta["name"], str(w), family, base, [n for n, _ in blocks], single, ks,
                     means, stds, draws, dict(meta.get("options") or {}))  # fmt: skip
        results.append(res)
        worst = max(e for e in single if e is not None)
        n_del = sum(e is not None for e in single)
        say(
            f"{res.name}: baseline err {100 * base:.2f}% on {len(test)} test images; one block "
            f"deleted ({n_del} of {len(blocks)} deletable): median "
            f"{100 * median([e for e in single if e is not None]):.2f}%, worst {100 * worst:.2f}%"
            + (
                f"; {ks[-1]} blocks deleted: {100 * means[-1]:.2f}%"
                if ks
                else "; no block keeps its shape, so none is deleted at random"
            )  # fmt: skip
        )
    records = [r.record() for r in results]
    text = json.dumps(records, indent=1) + "\n"
    table = lesion_markdown(records, splits.name, len(test))
    outp = Path(out)
    atomic_write(outp / JSON_FILE, lambda tmp: Path(tmp).write_text(text))
    atomic_write(outp / TABLE_FILE, lambda tmp: Path(tmp).write_text(table))
    plot_lesion(results, outp / FIGURE_FILE, splits.name, len(test))
    return results


def plot_lesion(results: list[Lesion], path: Path, dataset: str, n_images: int) -> None:
    """Left: test error with one block deleted, per block; right: mean error against the number
    of blocks deleted at random. A net given as several weights files of one model (its seeds):
    the mean over them, band from min to max; a net given once: band ± one std over draws (right
    panel only)."""
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), dpi=120)
    nets = lesion_nets(results, vars)
    for i, (label, g) in enumerate(nets):
        r, c = g[0], f"C{i}"
        ls = "--" if r.family == "plain" else "-"
        label += f" ({len(g)} seeds)" if len(g) > 1 else ""
        where = [j for j, e in enumerate(r.single) if e is not None]
        single, s_lo, s_hi = band([[100 * x.single[j] for j in where] for x in g])
        xs = [j + 1 for j in where]
        axes[0].plot(xs, single, ls, color=c, marker="o", markersize=3, label=label)
        base = sum(x.baseline_err for x in g) / len(g)
        m, lo, hi = band([[100 * v for v in x.k_mean] for x in g])
        if len(g) > 1:
            axes[0].fill_between(xs, s_lo, s_hi, color=c, alpha=0.15, linewidth=0)
        else:
            lo = [a - 100 * b for a, b in zip(m, r.k_std)]
            hi = [a + 100 * b for a, b in zip(m, r.k_std)]
        axes[1].plot(r.ks, m, ls, color=c, marker="o", markersize=3, label=label)
        axes[1].fill_between(r.ks, lo, hi, color=c, alpha=0.15, linewidth=0)
        for ax in axes:
            ax.axhline(100 * base, color=c, linestyle=":", linewidth=1)
    axes[0].set_title("one block deleted")
    axes[0].set_xlabel("deleted block (1 = input side)")
    axes[1].set_title("k random blocks deleted (mean over draws)")
    axes[1].set_xlabel("number of blocks deleted")
    for ax in axes:
        ax.set_ylabel("test error (%)")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="dashed: plain, solid: ResNet", title_fontsize=8)
    several = any(len(g) > 1 for _, g in nets)
    bands = ["min to max over seeds"] if several else []
    if any(len(g) == 1 for _, g in nets):
        bands.append(("one file: " if several else "") + "± std over draws (right)")
    fig.suptitle(f"Lesion study on {dataset} ({n_images} test images); dotted: nothing deleted; "
                 f"band: {'; '.join(bands)}")  # fmt: skip
    fig.tight_layout()
    save_png(fig, path)
