"""The degradation study (He et al. 2015, Figure 6): plain nets and ResNets of growing depth,
trained with one recipe, one data order and one seed, their training and test error side by side.

Each net is an ordinary training run in `OUT/<family><depth>-s<seed>/`, so a killed study picks up
where it stopped (finished nets are read back, an interrupted one resumes from its checkpoint).
"""

from __future__ import annotations

import json
import math
import operator
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ResnetlabError
from ..files import atomic_write, check_output_dir
from ..models.factory import model_for_data
from ..models.weights import read_metadata
from ..train import checkpoint as ckpt
from ..train.logs import METRICS_FILE, STEPS_FILE, SUMMARY_FILE, plural, read_metrics
from ..train.config import TrainConfig
from ..train.loop import fit
from ..train.rundata import load_data
from ..train.resume import same_source
from .figures import pyplot, save_png
from .nets import FAMILIES, check_study_net, cifar_net, parse_depths

JSON_FILE = "degradation.json"
TABLE_FILE = "degradation.md"
FIGURE_FILE = "degradation.png"
MAX_SEEDS = 1000
# the fields a finished run must share with the study to count as one of its nets
MATCH_KEYS = ("model", "data", "recipe", "epochs", "batch_size", "lr", "seed", "subset",
              "model_options", "log_every")  # fmt: skip


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

    def record(self) -> dict[str, Any]:
        """The row of degradation.json (errors as fractions)."""
        train = [r["train_top1_err"] for r in self.epochs]
        test = [r["test_top1_err"] for r in self.epochs]
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
            "epochs": len(self.epochs),
            "steps": self.summary["steps"],
            "train_seconds": self.summary["train_seconds"],
            "run_dir": str(self.run_dir),
        }


def check_config(dc: DegradationConfig) -> DegradationConfig:
    """Validate the study's families, depths and counts (one clear error each)."""
    families = tuple(dc.families)
    if not families:
        raise ResnetlabError("families is empty; use plain, resnet or both", argument="families")
    for f in families:
        if f not in FAMILIES:
            raise ResnetlabError(f"unknown family {f!r}; choose from {', '.join(FAMILIES)}")
    parse_depths(",".join(str(d) for d in dc.depths))
    for key in ("epochs", "seeds"):
        if getattr(dc, key) < 1:
            raise ResnetlabError(f"{key} must be at least 1, got {getattr(dc, key)}", argument=key)
    if dc.seeds > MAX_SEEDS:  # each seed is a set of trained nets; the plan is built up front
        raise ResnetlabError(f"seeds {dc.seeds}: at most {MAX_SEEDS}", argument="seeds")
    if dc.log_every < 1:
        raise ResnetlabError(
            f"log_every must be at least 1, got {dc.log_every}", argument="log_every"
        )
    if dc.subset is not None and dc.subset < 1:
        raise ResnetlabError(f"subset must be at least 1, got {dc.subset}", argument="subset")
    return dc


def net_config(dc: DegradationConfig, family: str, depth: int, seed: int) -> TrainConfig:
    """The TrainConfig of one net of the study."""
    model, options = cifar_net(family, depth)
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


def _mismatch(saved: dict[str, Any], cfg: TrainConfig) -> str | None:
    want = cfg.to_dict()
    for key in MATCH_KEYS:
        same = same_source if key == "data" else operator.eq  # a checkpoint keeps paths absolute
        if not same(saved.get(key), want[key]):
            return f"{key} {saved.get(key)!r}, not {want[key]!r}"
    return None


def run_state(cfg: TrainConfig) -> str:
    """'done', 'partial' (a checkpoint to resume) or 'new'; a run of other settings fails."""
    out = Path(cfg.out)
    summary = out / SUMMARY_FILE
    if summary.is_file():
        saved = _read_json(summary).get("config", {})
        state = "done"
    else:
        try:
            _, st = ckpt.load_checkpoint(out)
        except ResnetlabError:
            return "new"
        saved, state = st["config"], "partial"
    if not isinstance(saved, dict):
        raise ResnetlabError(f"{out}: its run configuration is not a mapping; remove the folder")
    why = _mismatch(saved, cfg)
    if why:
        raise ResnetlabError(
            f"{out} holds a run of other settings ({why}); remove it or choose another study "
            "directory"
        )
    return state


def run_study(dc: DegradationConfig, say=print) -> list[NetRun]:
    """Train every net of the study that is not trained yet; write the table, JSON and figure."""
    dc = check_config(dc)
    check_output_dir(dc.out, (dc.data,))
    plan = [(f, d, s) for s in range(dc.seeds) for d in dc.depths for f in dc.families]
    configs = [net_config(dc, f, d, s) for f, d, s in plan]
    states = [run_state(c) for c in configs]
    splits = load_data(configs[0]) if any(s != "done" for s in states) else None
    done_secs: dict[tuple[str, int], float] = {}
    t0 = time.time()
    runs = []
    for i, ((family, depth, seed), cfg, state) in enumerate(zip(plan, configs, states)):
        tag = f"[{i + 1}/{len(plan)}] {family}-{depth} seed {seed}"
        if state == "done":
            say(f"{tag}: already trained in {cfg.out}")
        else:
            left = _eta(plan[i:], done_secs)
            how = "resuming" if state == "partial" else "training"
            say(f"{tag}: {how} in {cfg.out} (study elapsed {_fmt(time.time() - t0)}{left})")
            t_net = time.time()
            fit(cfg, splits, resume=cfg.out if state == "partial" else None)
            done_secs[(family, depth)] = time.time() - t_net
        run = read_run(cfg, family, depth, seed)
        done_secs.setdefault((family, depth), float(run.summary.get("elapsed_seconds", 0.0)))
        rec = run.record()
        say(
            f"{tag}: final train err {100 * rec['final_train_err']:.2f}%, test err "
            f"{100 * rec['final_test_err']:.2f}% (best {100 * rec['best_test_err']:.2f}%)"
            f"{_eta(plan[i + 1 :], done_secs, ', ')}"
        )
        runs.append(run)
    write_results(runs, Path(dc.out), dc)
    return runs


def read_run(cfg: TrainConfig, family: str, depth: int, seed: int) -> NetRun:
    """A finished run's metrics, step log and summary, and its parameter count."""
    out = Path(cfg.out)
    summary = _read_json(out / SUMMARY_FILE)
    epochs = read_metrics(out / METRICS_FILE)
    steps = read_metrics(out / STEPS_FILE) if (out / STEPS_FILE).is_file() else []
    if not epochs:
        raise ResnetlabError(f"{out / METRICS_FILE} holds no epoch")
    meta = read_metadata(out / "last.safetensors")
    check_study_net(meta, family, depth, str(out / "last.safetensors"))
    shape = tuple(int(v) for v in meta["input_size"])
    model = model_for_data(cfg.model, shape, int(meta["num_classes"]), cfg.model_options)
    params = sum(p.numel() for p in model.parameters())
    return NetRun(family, depth, seed, params, out, epochs, steps, summary)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ResnetlabError(f"{path}: unreadable ({e})") from None
    if not isinstance(value, dict):
        raise ResnetlabError(f"{path}: expected a JSON object")
    return value


def _eta(remaining, done_secs: dict[tuple[str, int], float], sep: str = "; ") -> str:
    """Time left: each remaining net costs what the same net took, else scales with depth."""
    if not remaining:
        return f"{sep}study done" if sep == ", " else ""
    if not done_secs:
        return f"{sep}time left known after the first net"
    per_layer = sum(done_secs.values()) / sum(d for _, d in done_secs)
    left = sum(done_secs.get((f, d), per_layer * d) for f, d, _ in remaining)
    return f"{sep}about {_fmt(left)} left for {len(remaining)} net(s)"


def _fmt(seconds: float) -> str:
    m = seconds / 60
    return f"{m:.0f} min" if m >= 1 else f"{seconds:.0f} s"


# --------------------------------------------------------------------------------------------
# results


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of each (family, depth)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["family"], r["depth"]), []).append(r)
    rows = []
    for (family, depth), rs in sorted(groups.items()):
        row = {"family": family, "depth": depth, "params": rs[0]["params"], "seeds": len(rs)}
        for key in ("final_train_err", "best_train_err", "final_test_err", "best_test_err"):
            vals = [r[key] for r in rs]
            mean = sum(vals) / len(vals)
            var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1) if len(vals) > 1 else 0.0
            row[key] = (mean, math.sqrt(var))
        rows.append(row)
    return rows


def table_markdown(records: list[dict[str, Any]], title: str) -> str:
    """The degradation table: errors in percent, mean +- std over seeds."""

    def pm(v: tuple[float, float], n: int) -> str:
        return f"{100 * v[0]:.2f}" + (f" ± {100 * v[1]:.2f}" if n > 1 else "")

    lines = [
        f"# {title}",
        "",
        "| family | depth | parameters | seeds | final train err % | best train err % "
        "| final test err % | best test err % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summarise(records):
        n = r["seeds"]
        lines.append(
            f"| {r['family']} | {r['depth']} | {r['params']:,} | {n} | "
            f"{pm(r['final_train_err'], n)} | {pm(r['best_train_err'], n)} | "
            f"{pm(r['final_test_err'], n)} | {pm(r['best_test_err'], n)} |"
        )
    lines += [
        "",
        "Training error: the batches as trained (with augmentation), averaged over the epoch; "
        "test error: the whole test split after each epoch. Mean ± sample std over seeds.",
        "",
    ]
    return "\n".join(lines)


def write_results(runs: list[NetRun], out: Path, dc: DegradationConfig) -> None:
    """degradation.json, degradation.md and degradation.png in `out`."""
    records = [r.record() for r in runs]
    text = json.dumps(records, indent=1) + "\n"
    atomic_write(out / JSON_FILE, lambda tmp: Path(tmp).write_text(text))
    dataset = runs[0].summary.get("dataset", dc.data)
    title = f"Degradation study on {dataset}: {dc.recipe} recipe, {plural(dc.epochs, 'epoch')}"
    md = table_markdown(records, title)
    atomic_write(out / TABLE_FILE, lambda tmp: Path(tmp).write_text(md))
    plot_degradation(runs, out / FIGURE_FILE, title)


def _mean_curve(rows_per_seed: list[list[dict[str, Any]]], key: str) -> tuple[list, list]:
    """Average a curve over seeds at the steps all of them logged."""
    common = set.intersection(*[{r["step"] for r in rows} for rows in rows_per_seed])
    steps = sorted(common)
    by_seed = [{r["step"]: r[key] for r in rows} for rows in rows_per_seed]
    return steps, [100 * sum(s[t] for s in by_seed) / len(by_seed) for t in steps]


def plot_degradation(runs: list[NetRun], path: Path, title: str) -> None:
    """Figure 6 of the paper: plain (left) and ResNet (right); dashed training error of the batches
    as trained, bold test error; iterations on x, error % on y, one colour per depth."""
    plt = pyplot()

    families = [f for f in FAMILIES if any(r.family == f for r in runs)]
    depths = sorted({r.depth for r in runs})
    colours = {d: f"C{i}" for i, d in enumerate(depths)}
    fig, axes = plt.subplots(1, len(families), figsize=(6 * len(families), 4.5), dpi=120,
                             sharey=True, squeeze=False)  # fmt: skip
    finals = []
    for ax, family in zip(axes[0], families):
        for depth in depths:
            group = [r for r in runs if r.family == family and r.depth == depth]
            if not group:
                continue
            c = colours[depth]
            label = f"{family}-{depth}"
            if all(r.steps for r in group):
                x, y = _mean_curve([r.steps for r in group], "train_top1_err")
                ax.plot(x, y, "--", color=c, linewidth=0.8, alpha=0.9)
            x, y = _mean_curve([r.epochs for r in group], "test_top1_err")
            ax.plot(x, y, "-", color=c, linewidth=2.2, marker="o", markersize=3, label=label)
            _, tr = _mean_curve([r.epochs for r in group], "train_top1_err")
            finals += [y[-1], tr[-1]]
        ax.set_title("ResNets" if family == "resnet" else "plain nets")
        ax.set_xlabel("iterations (optimiser steps)")
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        handles.append(plt.Line2D([], [], color="grey", linestyle="--", linewidth=0.8))
        labels.append("dashed: training error (batches as trained)")
        handles.append(plt.Line2D([], [], color="grey", linewidth=2.2))
        labels.append("bold: test error")
        ax.legend(handles, labels, fontsize=8, loc="upper right")
    top = min(100.0, max(20.0, 2.2 * max(finals))) if finals else 100.0
    axes[0][0].set_ylim(0, top)  # shared: the same y range in every panel
    axes[0][0].set_ylabel("error (%)")
    fig.suptitle(title)
    fig.tight_layout()
    save_png(fig, path)
