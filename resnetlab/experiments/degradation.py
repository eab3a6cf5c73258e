"""The degradation study (He et al. 2015, Figure 6): plain nets and ResNets of growing depth, or
the plain and residual MLP twins on flattened images, trained with one recipe, one data order and
one seed each, their training and test error side by side.

Each net is an ordinary training run in `OUT/<family><depth>-s<seed>/`, run by runner.py in
sequence, on local worker processes or on Ray, so a killed study picks up where it stopped
(finished nets are read back, interrupted ones resume from their checkpoints). With several seeds
the JSON, the table and the figure give the mean and a band of one standard deviation. A net whose
loss became non-finite is a result too (tasks.py): the table counts it beside the seeds, and the
means, bands and curves are of the nets that trained.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..data.sources import input_paths
from ..errors import ResnetlabError
from ..files import atomic_write, check_output_dir
from ..train.config import TrainConfig, check_config
from ..train.logs import plural
from ..train.recipes import auto_recipe, get_recipe
from .figures import pyplot, save_png
from .finished import read_finished
from .nets import FAMILIES, check_depth, is_mlp, net_label, study_net
from .runner import check_workers, run_tasks, study_device
from .tasks import (
    NetTask,
    check_done_data,
    diverged_fields,
    is_diverged,
    plan_tasks,
    read_diverged,
    source_data,
    study_lock,
)

JSON_FILE = "degradation.json"
TABLE_FILE = "degradation.md"
FIGURE_FILE = "degradation.png"
MAX_SEEDS = 1000
METRICS = ("final_train_err", "best_train_err", "final_test_err", "best_test_err")
TITLES = {"plain": "plain nets", "resnet": "ResNets", "plain_mlp": "plain MLPs",
          "residual_mlp": "residual MLPs"}  # fmt: skip


@dataclass
class DegradationConfig:
    """One study: every (family, depth, seed) trained with the same recipe and data order."""

    data: str
    out: str
    depths: tuple[int, ...] = (20, 56)
    families: tuple[str, ...] = ("plain", "resnet")
    epochs: int = 5
    seeds: int = 1
    subset: int | None = None
    recipe: str = "paper"
    batch_size: int | None = None
    lr: float | None = None
    log_every: int = 20  # steps between points of the training-error curve
    precision: str = "auto"
    compile: str = "auto"
    device: str = "auto"
    threads: int | None = None
    workers: int = 1  # nets trained at once on this machine, each in its own process
    ray: str | None = None  # "auto" or a Ray cluster's address: each net a Ray task


@dataclass
class NetRun:
    """One trained net of the study and the curves it left."""

    family: str
    depth: int
    seed: int
    params: int
    run_dir: Path
    epochs: list[dict[str, Any]]  # metrics.jsonl
    steps: list[dict[str, Any]]  # steps.jsonl
    summary: dict[str, Any]
    diverged: dict[str, Any] | None = None  # its diverged.json: the loss became non-finite

    def record(self) -> dict[str, Any]:
        """The net's entry in degradation.json (errors as fractions; None for a net that
        diverged, with the step it diverged at)."""
        if self.diverged is not None:
            d = self.diverged
            return {"family": self.family, "depth": self.depth, "seed": self.seed,
                    "model": d["config"].get("model"), **diverged_fields(d, METRICS),
                    "run_dir": str(self.run_dir)}  # fmt: skip
        train = [r["train_top1_err"] for r in self.epochs]
        test = [r["test_top1_err"] for r in self.epochs if "test_top1_err" in r]
        return {
            "family": self.family,
            "depth": self.depth,
            "seed": self.seed,
            "model": self.summary["model"],
            "params": self.params,
            "final_train_err": train[-1],
            "best_train_err": min(train),
            "final_test_err": test[-1],
            "best_test_err": min(test),
            "diverged": False,
            "epochs": len(self.epochs),
            "steps": self.summary["steps"],
            "precision": self.summary.get("precision"),  # what it trained in (auto resolved)
            "train_seconds": self.summary["train_seconds"],
            "run_dir": str(self.run_dir),
        }


def check_study(dc: DegradationConfig) -> DegradationConfig:
    """Validate the study's own settings (families, depths, seeds, workers), one clear error
    each; the training settings its nets share are checked by train/config.py's check_config,
    on the first net's TrainConfig."""
    families = tuple(dc.families)
    if not families:
        raise ResnetlabError(f"families is empty; use {', '.join(FAMILIES)}", argument="families")
    for f in families:
        if f not in FAMILIES:
            raise ResnetlabError(f"unknown family {f!r}; choose from {', '.join(FAMILIES)}")
    if not dc.depths:
        raise ResnetlabError("depths is empty; e.g. 20,56", argument="depths")
    for d in dc.depths:
        for f in families:
            check_depth(d, f)
    if isinstance(dc.seeds, bool) or not isinstance(dc.seeds, int) or dc.seeds < 1:
        raise ResnetlabError(f"seeds must be at least 1, got {dc.seeds!r}", argument="seeds")
    if dc.seeds > MAX_SEEDS:  # each seed is a set of trained nets; the plan is built up front
        raise ResnetlabError(f"seeds {dc.seeds}: at most {MAX_SEEDS}", argument="seeds")
    check_workers(dc.workers, dc.ray)
    check_config(net_config(dc, families[0], dc.depths[0], 0))
    return dc


def net_config(dc: DegradationConfig, family: str, depth: int, seed: int) -> TrainConfig:
    """The TrainConfig of one net of the study."""
    model, options = study_net(family, depth)
    return TrainConfig(
        model=model,
        data=dc.data,
        out=str(Path(dc.out) / f"{family}{depth}-s{seed}"),
        recipe=dc.recipe,
        epochs=dc.epochs,
        batch_size=dc.batch_size,
        lr=dc.lr,
        seed=seed,
        subset=dc.subset,
        precision=dc.precision,
        compile=dc.compile,
        model_options=options,
        log_every=dc.log_every,
        device=dc.device,
        threads=dc.threads,
        quiet=True,
    )


def run_study(dc: DegradationConfig, say=print) -> list[NetRun]:
    """Train every net of the study that is not trained yet (in sequence, on workers or on Ray);
    write the table, JSON and figure."""
    dc = check_study(dc)
    check_output_dir(dc.out, input_paths(dc.data))
    with study_lock(Path(dc.out)):
        return _run_locked(dc, say)


def _run_locked(dc: DegradationConfig, say) -> list[NetRun]:
    """run_study, its folder held."""
    plan = [(f, d, s) for s in range(dc.seeds) for d in dc.depths for f in dc.families]
    tasks = [
        NetTask(f"[{i + 1}/{len(plan)}] {net_label(f, d)} seed {s}", net_config(dc, f, d, s), 0)
        for i, (f, d, s) in enumerate(plan)
    ]
    plan_tasks(tasks)
    data = source_data(dc.data) if any(t.state != "done" for t in tasks) else None
    check_done_data(tasks, data)
    if data is not None:
        recipe = auto_recipe(dc.recipe, study_device(dc.device, dc.ray), dc.batch_size)
        batch = get_recipe(recipe, batch_size=dc.batch_size).batch_size
        images = min(len(data.train), dc.subset or len(data.train))
        tested = len(data.test) if data.test is not None else 0
        for t in tasks:
            t.total_steps = dc.epochs * (images // batch)
            t.eval_images = dc.epochs * tested

    def done(task: NetTask) -> None:
        i = tasks.index(task)
        rec = read_run(task.cfg, *plan[i]).record()
        say(
            f"{task.label}: final train err {100 * rec['final_train_err']:.2f}%, test err "
            f"{100 * rec['final_test_err']:.2f}% (best {100 * rec['best_test_err']:.2f}%)"
        )

    run_tasks(tasks, data, dc.out, workers=dc.workers, ray=dc.ray, threads=dc.threads, say=say,
              on_done=done)  # fmt: skip
    runs = [read_run(t.cfg, *net) for t, net in zip(tasks, plan)]
    write_results(runs, Path(dc.out), dc)
    return runs


def read_run(cfg: TrainConfig, family: str, depth: int, seed: int) -> NetRun:
    """A finished run's metrics, step log and summary, and its parameter count; or a net that
    diverged: its record alone (its curves are left out of the figure)."""
    out = Path(cfg.out)
    if is_diverged(out):
        d = read_diverged(out)
        return NetRun(family, depth, seed, d["params"], out, [], [], {}, d)
    run = read_finished(cfg, family, depth)
    return NetRun(family, depth, seed, run.params, out, run.epochs, run.steps, run.summary)


# --------------------------------------------------------------------------------------------
# results


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (0 for one value; None and None for none)."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, math.sqrt(var)


def summarise(records: list[dict[str, Any]], by: tuple[str, ...] = ("family", "depth"),
              metrics: tuple[str, ...] = METRICS) -> list[dict[str, Any]]:  # fmt: skip
    """One row per group of `by` over seeds: `seeds`, `diverged` (how many of them), `params`,
    and `<metric>_mean`/`_std` over the nets that did not diverge (None if none did not)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in by), []).append(r)
    rows = []
    for key, rs in groups.items():
        row = dict(zip(by, key))
        trained = [r for r in rs if not r.get("diverged")]
        row.update(seeds=len(rs), diverged=len(rs) - len(trained), params=rs[0]["params"])
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_std"] = mean_std([r[m] for r in trained])
        rows.append(row)
    return rows


def pm(row: dict[str, Any], metric: str) -> str:
    """'9.13' or '9.13 ± 0.21' (percent; the band only over more than one trained net);
    'diverged' where every seed diverged."""
    if row[metric + "_mean"] is None:
        return "diverged"
    text = f"{100 * row[metric + '_mean']:.2f}"
    trained = row["seeds"] - row.get("diverged", 0)
    return text + (f" ± {100 * row[metric + '_std']:.2f}" if trained > 1 else "")


def seeds_cell(row: dict[str, Any]) -> str:
    """'3', or '3 (1 diverged)'."""
    return f"{row['seeds']}" + (f" ({row['diverged']} diverged)" if row.get("diverged") else "")


DIVERGED_NOTE = (
    "A net that diverged (its loss became non-finite; `diverged.json` in its folder) is counted "
    "under seeds and left out of the means."
)


def _order(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rank = {f: i for i, f in enumerate(FAMILIES)}
    return sorted(rows, key=lambda r: (is_mlp(r["family"]), rank[r["family"]], r["depth"]))


def table_markdown(records: list[dict[str, Any]], title: str) -> str:
    """The degradation table: errors in percent, mean ± std over seeds."""
    lines = [
        f"# {title}",
        "",
        "| family | depth | parameters | seeds | final train err % | best train err % "
        "| final test err % | best test err % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in _order(summarise(records)):
        lines.append(
            f"| {r['family']} | {r['depth']} | {r['params']:,} | {seeds_cell(r)} | "
            + " | ".join(pm(r, m) for m in METRICS)
            + " |"
        )
    lines += [
        "",
        "Training error: the batches as trained (with augmentation), averaged over the epoch; "
        "test error: the whole test split after each epoch. Mean ± sample std over seeds.",
        *(["", DIVERGED_NOTE] if any(r.get("diverged") for r in records) else []),
        "",
    ]
    return "\n".join(lines)


def write_results(runs: list[NetRun], out: Path, dc: DegradationConfig) -> None:
    """degradation.json (the study, every net, and the mean and std over seeds), degradation.md
    and degradation.png in `out`."""
    records = [r.record() for r in runs]
    study = {k: v for k, v in asdict(dc).items() if k not in ("out", "workers", "ray", "threads")}
    value = {"study": study, "nets": records, "summary": _order(summarise(records))}
    text = json.dumps(value, indent=1) + "\n"
    atomic_write(out / JSON_FILE, lambda tmp: Path(tmp).write_text(text))
    dataset = next((r.summary["dataset"] for r in runs if "dataset" in r.summary), dc.data)
    seeds = f", mean ± std of {dc.seeds} seeds" if dc.seeds > 1 else ""
    title = (
        f"Degradation study on {dataset}: {dc.recipe} recipe, {plural(dc.epochs, 'epoch')}{seeds}"
    )
    md = table_markdown(records, title)
    atomic_write(out / TABLE_FILE, lambda tmp: Path(tmp).write_text(md))
    plot_degradation(runs, out / FIGURE_FILE, title)


def mean_curve(rows_per_seed: list[list[dict[str, Any]]], key: str) -> tuple[list, list, list]:
    """Steps, mean and std (percent) of a curve over seeds, at the steps every seed logged."""
    have = [[r for r in rows if key in r] for rows in rows_per_seed]
    common = set.intersection(*[{r["step"] for r in rows} for rows in have])
    steps = sorted(common)
    by_seed = [{r["step"]: r[key] for r in rows} for rows in have]
    stats = [mean_std([100 * s[t] for s in by_seed]) for t in steps]
    return steps, [m for m, _ in stats], [s for _, s in stats]


def plot_degradation(runs: list[NetRun], path: Path, title: str) -> None:
    """Figure 6 of the paper: one panel per family; dashed training error of the batches as
    trained, bold test error; iterations on x, error % on y, one colour per depth; with several
    seeds the mean and a band of one standard deviation."""
    plt = pyplot()

    families = [f for f in FAMILIES if any(r.family == f for r in runs)]
    depths = sorted({r.depth for r in runs})
    colours = {d: f"C{i}" for i, d in enumerate(depths)}
    fig, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 4.5), dpi=120,
                             sharey=True, squeeze=False)  # fmt: skip
    finals = []
    for ax, family in zip(axes[0], families):
        for depth in depths:
            every = [r for r in runs if r.family == family and r.depth == depth]
            group = [r for r in every if r.diverged is None]
            c = colours[depth]
            if every and not group:  # a legend entry, no curve
                ax.plot([], [], "x", color=c, label=f"{net_label(family, depth)}: diverged "
                        f"({len(every)} of {len(every)})")  # fmt: skip
            if not group:
                continue
            gone = len(every) - len(group)
            label = net_label(family, depth) + (
                f" ({len(every)} seeds{f', {gone} diverged' if gone else ''})"
                if len(every) > 1
                else ""
            )
            if all(r.steps for r in group):
                x, y, s = mean_curve([r.steps for r in group], "train_top1_err")
                ax.plot(x, y, "--", color=c, linewidth=0.8, alpha=0.9)
                _band(ax, x, y, s, c, 0.12)
            x, y, s = mean_curve([r.epochs for r in group], "test_top1_err")
            ax.plot(x, y, "-", color=c, linewidth=2.2, marker="o", markersize=3, label=label)
            _band(ax, x, y, s, c, 0.25)
            _, tr, _ = mean_curve([r.epochs for r in group], "train_top1_err")
            finals += [y[-1], tr[-1]]
        ax.set_title(TITLES[family])
        ax.set_xlabel("iterations (optimiser steps)")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        handles.append(plt.Line2D([], [], color="grey", linestyle="--", linewidth=0.8))
        labels.append("dashed: training error (batches as trained)")
        handles.append(plt.Line2D([], [], color="grey", linewidth=2.2))
        seeds = len({r.seed for r in runs}) > 1
        labels.append("bold: test error" + ("; bands: ± 1 std over seeds" if seeds else ""))
        ax.legend(handles, labels, fontsize=8, loc="upper right")
    top = min(100.0, max(20.0, 2.2 * max(finals))) if finals else 100.0
    axes[0][0].set_ylim(0, top)  # shared: the same y range in every panel
    axes[0][0].set_ylabel("error (%)")
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path)


def _band(ax, x: list, mean: list, std: list, colour: str, alpha: float) -> None:
    """Shade mean ± std where there is a spread (several seeds)."""
    if any(s > 0 for s in std):
        ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                        color=colour, alpha=alpha, linewidth=0)  # fmt: skip
