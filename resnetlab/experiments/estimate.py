"""A study's estimated time, measured, not guessed.

Each distinct net (model, batch, precision, device, threads, machine) trains CALIBRATION_STEPS
steps to warm up and as many measured, through `fit` on random images of the data's shape, at the
threads it will have; the remaining steps of each net are divided by that speed (plus a third of
a step's work per image evaluated) and spread over the workers, longest first. The speeds are kept
in OUT/speeds.json, so a rerun of the study on this machine does not measure again (a kept
speed that is not a sane number is measured again). The measurement's run lives in
OUT/.calibration while it runs; a killed study's leftover is removed by the next.
"""

from __future__ import annotations

import contextlib
import io
import json
import platform
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .. import TrainConfig
from ..data import DataSplits, ImageDataset
from ..errors import ResnetlabError
from ..files import atomic_write
from ..train import loop
from ..train.logs import METRICS_FILE, read_metrics

if TYPE_CHECKING:
    from .tasks import NetTask

CALIBRATION_STEPS = 3  # per epoch of the speed measurement: one epoch to warm up, one measured
SPEEDS_FILE = "speeds.json"  # in the study folder: the measured speeds, for the next estimate
CALIBRATION_LR = 1e-3
EVAL_COST = 1 / 3  # a forward pass on an image costs about a third of a training step's work
CALIBRATION_DIR = ".calibration"  # in the study folder: the measurements' runs, while they run
MIN_SPEED, MAX_SPEED = 0.01, 1e9  # images/s a kept speed may claim; outside: measured again


def measure_speed(cfg: TrainConfig, data: DataSplits) -> float:
    """Training images per second of cfg's net here: CALIBRATION_STEPS steps to warm up, then as
    many measured, through fit on random images of the data's shape, nothing written to keep. A
    small learning rate (CALIBRATION_LR; the speed does not depend on it) keeps a study that will
    diverge, a result it is to report, from diverging here."""
    return measure_shape_speed(cfg, tuple(data.train.image_shape), list(data.train.classes))


def measure_shape_speed(cfg: TrainConfig, shape: tuple[int, ...], classes: list[str]) -> float:
    """measure_speed from the data's image shape and class names alone (what a Ray task is
    sent to measure on its node)."""
    batch = cfg.batch_size or 128
    n = batch * CALIBRATION_STEPS
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % len(classes)
    splits = DataSplits("calibration", ImageDataset(images, labels, classes), None)
    room = Path(cfg.out).parent / CALIBRATION_DIR  # in the study folder, never elsewhere
    room.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=room) as tmp:
        probe = replace(cfg, data="calibration", out=tmp, epochs=2, batch_size=batch, subset=None,
                        lr=CALIBRATION_LR,
                        val_split=0.0, quiet=True, log_every=0, eval_every=1, eval_images=None,
                        checkpoint_every=0, log=[])  # fmt: skip
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            loop.fit(probe, splits)  # looked up now: a fault a test plants there shows
        rows = read_metrics(Path(tmp) / METRICS_FILE)
    with contextlib.suppress(OSError):
        room.rmdir()  # unless another measurement is using it
    return float(rows[-1]["images_per_s"])


def clear_calibration(out: Path) -> None:
    """Remove what a killed measurement left in the study folder (the study holds the folder,
    so no measurement of another is running); a link there is refused, not followed."""
    room = out / CALIBRATION_DIR
    if room.is_symlink() or (room.exists() and not room.is_dir()):
        raise ResnetlabError(f"{room}: not a folder of this study's; remove it")
    shutil.rmtree(room, ignore_errors=True)


def _speed(v: object) -> bool:
    """A kept speed worth using: a finite number of images per second in a sane range."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and MIN_SPEED <= v <= MAX_SPEED


def _makespan(costs: list[float], slots: int) -> float:
    """Wall time of `costs` on `slots` workers, each taking the longest job left (LPT)."""
    loads = [0.0] * max(1, slots)
    for c in sorted(costs, reverse=True):
        i = loads.index(min(loads))
        loads[i] += c
    return max(loads)


def estimate(tasks: list[NetTask], data: DataSplits, slots: int, threads: int | None, out: Path,
             say=print, measure=measure_speed, where: str = "here") -> float:  # fmt: skip
    """Seconds the unfinished tasks should take on `slots` workers of `threads` threads each,
    from a speed measured per distinct net by `measure(cfg, data)` (here, or on a Ray node;
    kept in OUT/speeds.json for the next run of the study on the same machine); prints the
    speeds, saying `where` they were measured."""
    left = [t for t in tasks if t.state != "done"]
    if not left:
        return 0.0
    clear_calibration(out)
    kept_file = out / SPEEDS_FILE
    try:
        kept = json.loads(kept_file.read_text()) if kept_file.is_file() else {}
    except (OSError, ValueError):
        kept = {}
    kept = kept if isinstance(kept, dict) else {}
    speeds: dict[str, float] = {}
    for t in left:
        cfg = replace(t.cfg, threads=threads or t.cfg.threads)
        key = _cost_key(cfg, where)
        if key not in speeds:
            got = kept.get(key)
            speeds[key] = float(got) if _speed(got) else measure(cfg, data)
    if any(kept.get(k) != v for k, v in speeds.items()):
        text = json.dumps({**kept, **speeds}, indent=1) + "\n"
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(kept_file, lambda tmp: Path(tmp).write_text(text))
    batch = left[0].cfg.batch_size or 128
    costs = []
    for t in left:
        ips = speeds[_cost_key(replace(t.cfg, threads=threads or t.cfg.threads), where)]
        steps = max(0, t.total_steps - t.step)
        costs.append(steps * batch / ips + EVAL_COST * t.eval_images / ips)
    shown = ", ".join(f"{k.split('|')[0]} {v:,.0f} img/s" for k, v in speeds.items())
    say(f"measured {where} ({threads or 'auto'} thread(s) per net, batch {batch}): {shown}")
    return _makespan(costs, slots)


def _cost_key(cfg: TrainConfig, where: str = "here") -> str:
    """What a net's speed depends on, where it is measured: 'resnet20|batch 100|fp32|cpu|2
    threads|host' (this machine) or '...|on Ray' (a node of the cluster); an MLP's depth joins
    its name."""
    depth = (cfg.model_options or {}).get("depth")
    name = cfg.model if depth is None else f"{cfg.model}-{depth}"
    return (f"{name}|batch {cfg.batch_size}|{cfg.precision}|{cfg.device}|{cfg.threads or 'auto'} "
            f"threads|{platform.node() if where == 'here' else where}")  # fmt: skip


def fmt_time(seconds: float) -> str:
    """'41 min', '1.3 h' or '12 s'."""
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"
