"""A study's nets as tasks: what one net is (`NetTask`), what is left of it (done, partial or
new), and the work of training it, wherever that runs: in the study's process, in a local worker
(runner.py) or as a Ray task (on_ray.py). Both runners import this module and not each other.

A net whose loss becomes non-finite (a plain 64-block MLP at lr 0.1 can) is a result of the
study, not a fault: its folder gets `diverged.json` (the step, epoch and learning rate, the
parameter count and the run's settings), the study goes on, and a rerun counts the net as done.
The reports show it as diverged and leave it out of the means.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import operator
import os
import time
import traceback
from dataclasses import MISSING, dataclass, replace
from pathlib import Path
from typing import Any

from .. import TrainConfig
from ..data import DataSplits, load_source
from ..errors import ResnetlabError
from ..files import atomic_write
from ..models.factory import model_for_data
from ..train import checkpoint as ckpt
from ..train.logs import SUMMARY_FILE, warn
from ..train.resume import data_changes, data_fingerprint, same_source
from ..train.rundata import run_splits
from ..train.step import NonFiniteLoss

RAY_HINT = "pip install 'resnetlab[ray]'"
NETS_PER_GPU = 4  # default share of a GPU per net on CUDA (a CIFAR net leaves most of one idle)
DIVERGED_FILE = "diverged.json"  # in a run's folder: its loss became non-finite (a result)


@dataclass
class NetTask:
    """One net of a study: its run's settings and how it is shown; subclasses may train on a part
    of the data (`splits`) and add work after training (`after`), in the process that trains."""

    label: str  # as messages show it: "resnet-20 seed 0"
    cfg: TrainConfig
    total_steps: int  # optimiser steps of the whole run (for the estimate)
    eval_images: int = 0  # images evaluated over the run (for the estimate)
    state: str = "new"  # "done", "partial" or "new" (plan_tasks fills it in)
    step: int = 0  # steps a partial run has done

    def splits(self) -> DataSplits | None:
        """The data this net trains on; None: the trainer reads cfg.data (with cfg.subset)."""
        return None

    def after(self, splits: DataSplits | None) -> None:
        """Work after training, in the same process: none."""


# --------------------------------------------------------------------------------------------
# what is left


# the settings a run in a study folder may hold other values of and still count as the study's
# net: where it ran and how it was logged, nothing that changes what it computes
FREE_KEYS = frozenset({"out", "device", "threads", "compile", "quiet", "log", "checkpoint_every",
                       "checkpoint_minutes"})  # fmt: skip
# a setting a saved run lacks (one written before the setting existed) had its default then;
# model and data have none
_DEFAULTS = {k: v for k, v in TrainConfig(model="", data="").to_dict().items()
             if k not in ("model", "data")}  # fmt: skip


def run_state(cfg: TrainConfig) -> tuple[str, int]:
    """('done'|'partial'|'new', steps done) of the run in cfg.out; a run there of other settings
    (any setting but FREE_KEYS differs), or a link there (the run would be written wherever it
    points, outside the study), fails in one line."""
    out = Path(cfg.out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ResnetlabError(
            f"{out}: a link or a file where the study keeps a net's run folder; remove it"
        )
    summary = out / SUMMARY_FILE
    if summary.is_file():
        saved = read_json(summary).get("config", {})
        state, step = "done", 0
    elif is_diverged(out):
        saved, state, step = read_diverged(out)["config"], "done", 0
    else:
        try:
            _, st = ckpt.load_checkpoint(out)
        except ResnetlabError:
            return "new", 0
        saved, state, step = st["config"], "partial", int(st.get("step", 0))
    if not isinstance(saved, dict):
        raise ResnetlabError(f"{out}: its run configuration is not a mapping; remove the folder")
    want = cfg.to_dict()
    for key in (k for k in want if k not in FREE_KEYS):  # in TrainConfig's order: model first
        same = same_source if key == "data" else operator.eq  # a checkpoint keeps paths absolute
        old = saved.get(key, _DEFAULTS.get(key, MISSING))
        if not same(old, want[key]):
            was = "missing" if old is MISSING else shown(old)
            raise ResnetlabError(
                f"{out} holds a run of other settings ({key} {was}, not "
                f"{shown(want[key])}); remove it or choose another study directory"
            )
    return state, step


def shown(value: Any) -> str:
    """A value as a message shows it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@contextlib.contextmanager
def study_lock(out: Path):
    """Hold the study folder while inside: a second study on the same folder is refused in one
    line instead of training the same nets into the same run folders. The lock is an flock on the
    folder itself (no lock file), released when this process ends, however it ends. A folder made
    here and still empty when the study fails is removed."""
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_RDONLY)
    ok = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ResnetlabError(
                f"{out}: another study is running in this folder; let it end or stop it first"
            ) from None
        yield
        ok = True
    finally:
        os.close(fd)
        if made and not ok:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if still empty


def plan_tasks(tasks: list[NetTask]) -> list[NetTask]:
    """Each task with its state and steps done filled in."""
    for t in tasks:
        t.state, t.step = run_state(t.cfg)
    return tasks


def check_done_data(tasks: list[NetTask], data: DataSplits | None) -> None:
    """Refuse in one line a finished net that trained on other data than the study's source
    holds now (read as the net's own run would read it): the study would put it beside nets
    trained on this data. A finished net whose checkpoint is gone or unreadable (deleted to save
    room, say) is named as not checked.
    `data` None: no net trains now, the finished ones are only read back (nothing to mix)."""
    if data is None:
        return
    for t in tasks:
        out = Path(t.cfg.out)
        if t.state != "done" or is_diverged(out):
            continue
        try:  # the state alone: the fingerprint, not the weights
            saved = ckpt.read_state(ckpt.find_checkpoint(out)).get("data_fingerprint")
        except ResnetlabError:
            saved = None
        if not isinstance(saved, dict):
            warn(f"{out}: no readable checkpoint keeps the data it trained on, so that data is "
                 "not checked")  # fmt: skip
            continue
        own = t.splits()
        now = data_fingerprint(run_splits(t.cfg, own if own is not None else data))
        diffs = data_changes(saved, now)
        if diffs:
            raise ResnetlabError(
                f"{out} was trained on other data than {t.cfg.data} holds now "
                f"({'; '.join(diffs)}); remove it or choose another study directory"
            )


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; one line if it is unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as e:  # RecursionError: nesting too deep
        raise ResnetlabError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(value, dict):
        raise ResnetlabError(f"{path}: expected a JSON object")
    return value


# --------------------------------------------------------------------------------------------
# the data, once per process


_SOURCES: dict[tuple[str, tuple[int, int] | None], DataSplits] = {}


def source_data(data: str) -> DataSplits:
    """The splits of a data source (resnetlab.data.load_source), read once per process while
    its file keeps its size and time (a study run again in the same process after the file
    changed reads it again; a folder is read again only when its own entries change, not when a
    file deep inside it does)."""
    try:
        st = os.stat(data)
        key = (data, (st.st_size, st.st_mtime_ns))
    except OSError:  # a data set's name
        key = (data, None)
    if key not in _SOURCES:
        _SOURCES[key] = load_source(data)
    return _SOURCES[key]


# --------------------------------------------------------------------------------------------
# one net, wherever it runs


def fit(*args: Any, **kwargs: Any) -> Any:
    """resnetlab.fit, looked up when called (so a fault a test plants there reaches the study)."""
    from ..train import loop

    return loop.fit(*args, **kwargs)


def train_task(task: NetTask) -> float:
    """Train (or resume) the task's net and do its after-work here; returns the seconds taken. A
    net whose loss becomes non-finite is kept as diverged (`diverged.json`), with no after-work."""
    t0 = time.time()
    splits = task.splits()
    try:
        fit(task.cfg, splits, resume=task.cfg.out if task.state == "partial" else None)
    except NonFiniteLoss as e:
        write_diverged(task.cfg, splits, e)
        return time.time() - t0
    task.after(splits)
    return time.time() - t0


# --------------------------------------------------------------------------------------------
# a net that diverged


def write_diverged(cfg: TrainConfig, splits: DataSplits | None, e: NonFiniteLoss) -> None:
    """Keep the divergence in the run's folder: where it happened, the error's line, the net's
    parameter count (nothing else of it may be left) and the run's settings. An error that does
    not say where it happened stops the study, as any other error."""
    if not (_count(e.step) and _count(e.epoch) and _positive(e.lr)):
        raise e
    train = (splits or source_data(cfg.data)).train
    model = model_for_data(cfg.model, tuple(train.image_shape), len(train.classes),
                           cfg.model_options)  # fmt: skip
    value = {
        "step": e.step,
        "epoch": e.epoch,
        "lr": e.lr,
        "params": sum(p.numel() for p in model.parameters()),
        "error": e.for_command_line(),
        "config": cfg.to_dict(),
    }
    text = json.dumps(value, indent=1) + "\n"
    atomic_write(Path(cfg.out) / DIVERGED_FILE, lambda tmp: Path(tmp).write_text(text))


def read_diverged(out: Path) -> dict[str, Any]:
    """The checked `diverged.json` of the run in `out`; one line if it is not what
    write_diverged writes."""
    path = Path(out) / DIVERGED_FILE
    value = read_json(path)
    ok = (
        _count(value.get("step"))
        and _count(value.get("epoch"))
        and _count(value.get("params"))
        and _positive(value.get("lr"))
        and isinstance(value.get("error"), str)
        and isinstance(value.get("config"), dict)
    )
    if not ok:
        raise ResnetlabError(
            f"{path}: not a divergence record of this study (step, epoch, lr, params, error, "
            "config); remove the folder to train the net again"
        )
    return value


def diverged_line(label: str, out: str | Path) -> str:
    """'<label>: diverged at step N (epoch E, lr L): kept as a result in <out>'."""
    d = read_diverged(Path(out))
    return (
        f"{label}: diverged at step {d['step']} (epoch {d['epoch']}, lr {d['lr']:.3g}): kept as "
        f"a result in {out}; remove that folder to train the net again"
    )


def diverged_fields(d: dict[str, Any], metrics: tuple[str, ...]) -> dict[str, Any]:
    """The keys a diverged net's entry in a study's JSON shares: `diverged`, where it diverged,
    `params`, the steps and whole epochs before the divergence, and None for each of
    `metrics`."""
    return {
        "params": d["params"],
        "diverged": True,
        "diverged_step": d["step"],
        "diverged_epoch": d["epoch"],
        "diverged_lr": d["lr"],
        **dict.fromkeys(metrics),
        "steps": d["step"] - 1,
        "epochs": d["epoch"] - 1,
        "train_seconds": None,
    }


def is_finished(out: str | Path) -> bool:
    """Whether the run in `out` trained to its end (summary.json): its last.safetensors is then
    the trained net, not the weights of an epoch of a run still going or stopped."""
    return (Path(out) / SUMMARY_FILE).is_file()


def is_diverged(out: str | Path) -> bool:
    """Whether the run in `out` ended diverged: diverged.json and no summary.json (a run
    finished later, say by `train --resume`, counts as trained)."""
    out = Path(out)
    return (out / DIVERGED_FILE).is_file() and not (out / SUMMARY_FILE).is_file()


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v < 2**63


def _positive(v: Any) -> bool:
    """A real number > 0 and finite as a float (a 400-digit integer is not)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(float(v)) and v > 0
    except OverflowError:
        return False


def train_remote(task: NetTask) -> tuple[float, str | None]:
    """train_task in a worker: (seconds, None), or (0, a line naming the net and the error): for
    bad input its one line; for any other error (out of memory, a fault) its type and first line,
    its traceback printed here. The study goes on with its other nets and ends with the lines."""
    print(start_line(task) + f" (process {os.getpid()})", flush=True)
    try:
        return train_task(task), None
    except ResnetlabError as e:
        return 0.0, f"{task.label}: {e.for_command_line()}"
    except Exception as e:  # noqa: BLE001 - reported with the net's name, not lost in a pool
        traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0]
        return 0.0, f"{task.label}: failed ({type(e).__name__}{': ' + first if first else ''})"


def with_threads(task: NetTask, threads: int) -> NetTask:
    """The task, set to train with `threads` CPU threads."""
    task.cfg = replace(task.cfg, threads=threads)
    return task


def start_line(t: NetTask) -> str:
    how = f"resuming at step {t.step}" if t.state == "partial" else "training"
    return f"{t.label}: {how} in {t.cfg.out}"


def import_ray():
    """The ray module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ResnetlabError(f"--ray needs Ray, which is not installed: {RAY_HINT}") from None
    return ray
