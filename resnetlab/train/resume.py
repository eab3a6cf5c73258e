"""Resuming a run: where it continues, which settings may change, and whether the data is the same.

A run continues in its own folder, the one holding `checkpoint/` (or, mid-swap, `checkpoint.old/`),
and nowhere else: a checkpoint folder given in its place, or an output folder that is not the
run's, is refused. The paths a checkpoint saves (out, data, init_from) are absolute, so a resume
from another working directory reads the same files and writes into the same folder.

A setting given again on resume is either applied from the next step, and recorded with that step
(in the checkpoint's `changes`, the metrics row of the epoch and the resumed line), or refused in
one line naming the setting and both values (RESUME_SETTINGS below, the table of
docs/training.md). The data's fingerprint (class names; per split the count, image shape, a hash
of the labels and of a fixed sample of images) is kept in the checkpoint and checked on resume; a
checkpoint written before fingerprints existed resumes with one line saying that it is not
checked.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import MISSING
from pathlib import Path
from typing import Any

import torch

from ..errors import ResnetlabError
from . import checkpoint as ckpt
from .config import TrainConfig
from .logs import plural, warn
from .recipes import Recipe

# what may change on resume: "applied" from the next step (and recorded), or refused with why
KEEPS_DATA = "a resumed run trains on the data it started with"
RESUME_SETTINGS: dict[str, str] = {
    "epochs": "applied",  # the schedule is stretched to the new length; not below epochs begun
    "lr": "applied",  # the peak lr of the schedule from the next step on
    "body_lr_scale": "applied",
    "precision": "applied",
    "compile": "applied",
    "device": "applied",
    "threads": "applied",
    "checkpoint_every": "applied",
    "checkpoint_minutes": "applied",
    "log_every": "applied",
    "eval_every": "applied",
    "eval_images": "applied",
    "log": "applied",
    "model": "the checkpoint's weights are of that model",
    "model_options": "the checkpoint's weights are of that model",
    "data": KEEPS_DATA,
    "subset": KEEPS_DATA,
    "val_split": KEEPS_DATA + " (validation images must never have been trained on)",
    "size": KEEPS_DATA,
    "mode": KEEPS_DATA,
    "skip_bad": KEEPS_DATA,
    "seed": "every epoch's order and augmentation derive from it",
    "batch_size": "the epoch's batches and the loader's position are counted in it",
    "recipe": "the optimiser's state and the schedule are the recipe's",
    "weight_decay": "the optimiser's state holds it",
    "augment": "the recipe's augmentation is part of what the run trains on",
    "init_from": "the run was initialised and normalised from it",
    "freeze": "the optimiser's state holds the parameters that train",
    "sync_bn": "the model's batch norm layers were built for it",
    "out": "ignored",  # the run's folder itself (run_folder)
    "quiet": "ignored",  # what is printed, not what is computed
}
SAMPLE_IMAGES = 256  # images hashed per split for the fingerprint (evenly spaced, ends included)


# --------------------------------------------------------------------------------------------
# where a run continues


def run_folder(resume: str | os.PathLike) -> Path:
    """The run folder `resume` names, which must hold a complete `checkpoint/` or `checkpoint.old/`;
    a checkpoint folder given in its place is refused (the run's files live beside it)."""
    folder = Path(resume)
    if (folder / ckpt.STATE_FILE).exists() or (folder / ckpt.WEIGHTS_FILE).exists():
        raise ResnetlabError(
            f"resume {folder} is a checkpoint folder; give the run folder that holds it "
            f"({folder.parent}), where the run continues",
            argument="resume",
        )
    try:
        found = ckpt.find_checkpoint(ckpt.checkpoint_path(folder))
    except ResnetlabError:
        raise ResnetlabError(
            f"no checkpoint in {folder} (expected {ckpt.checkpoint_path(folder) / ckpt.STATE_FILE}"
            "); give the run's output directory"
        ) from None
    if found.parent != folder:  # never a checkpoint nested deeper than the run's own
        raise ResnetlabError(f"no checkpoint in {folder}; give the run's output directory")
    return folder


def check_same_folder(resume: str | os.PathLike, out: str | os.PathLike) -> None:
    """Fail in one line unless `out` is the run folder `resume` (a resumed run writes nowhere
    else: not into another run, not into a new folder)."""
    if not same_path(resume, out):
        raise ResnetlabError(
            f"out {out}: a run resumed from {resume} continues in {resume}, never elsewhere; give "
            "no other output folder (to branch the run, copy its folder and resume the copy)",
            argument="out",
        )


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same place (spelled differently, relative or absolute)."""
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa == pb or pa.resolve() == pb.resolve()


def same_source(a: Any, b: Any) -> bool:
    """Whether two data sources (or weights paths) are the same: a dataset name by its canonical
    spelling, a path by where it points."""
    from ..data.sources import canonical_name

    if a == b:
        return True
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    na, nb = canonical_name(a), canonical_name(b)
    if na is not None or nb is not None:
        return na == nb
    return same_path(a, b)


def saved_config(cfg: TrainConfig, out: str | os.PathLike) -> dict[str, Any]:
    """The configuration a checkpoint keeps: the run's settings with its paths absolute (out, and
    data and init_from when they name files), so that no working directory is needed to read
    them."""
    from ..data.sources import canonical_name

    saved = cfg.to_dict()
    saved["out"] = str(Path(out).expanduser().absolute())
    for key in ("data", "init_from"):
        v = saved.get(key)
        if isinstance(v, str) and canonical_name(v) is None and Path(v).expanduser().exists():
            saved[key] = str(Path(v).expanduser().absolute())
    return saved


# --------------------------------------------------------------------------------------------
# settings given on resume


def setting_changes(
    state: dict[str, Any], cfg: TrainConfig, recipe: Recipe, where: str | os.PathLike
) -> list[dict[str, Any]]:
    """The settings of `cfg` (and its resolved `recipe`) that differ from the checkpoint's
    `state`: those that may change, as records {setting, from, to, step, epoch} (applied from the
    next step); a refused one, or epochs below those begun, ends in one line naming both values."""
    saved = state["config"]
    was_recipe = state.get("recipe") if isinstance(state.get("recipe"), dict) else {}
    loader = state.get("loader") or {}
    step, epoch, batch = state["step"], loader.get("epoch", 0), loader.get("batch", 0)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (epoch, batch)):
        raise ResnetlabError(
            f"checkpoint in {where}: loader is {_shown(loader)}; expected whole numbers"
        )
    changes = []
    for key, rule in RESUME_SETTINGS.items():
        if rule == "ignored" or key == "model":  # the model is checked first, with its own line
            continue
        old, new = _effective(key, saved, was_recipe), _effective(key, cfg.to_dict(), recipe)
        if key == "threads" and cfg.threads is None:
            continue  # not asked: the cores free now
        if _same(key, old, new):
            continue
        if rule != "applied":
            name = "model options" if key == "model_options" else key  # flags: --option K=V
            raise ResnetlabError(
                f"{name} {_shown(new)}: the run in {where} was trained with {_shown(old)}; {rule} "
                "(start a new run in another folder to change it)",
                argument=key,
            )
        begun = epoch + (1 if batch else 0)
        if key == "epochs" and new < begun:
            raise ResnetlabError(
                f"epochs {new}: the run in {where} has already trained {plural(begun, 'epoch')} "
                f"(of {old}); give {begun} or more",
                argument="epochs",
            )
        changes.append({"setting": key, "from": old, "to": new, "step": step + 1,
                        "epoch": epoch + 1})  # fmt: skip
    return changes


def _effective(key: str, config: dict[str, Any], recipe: Any) -> Any:
    """The value a run computes with: the recipe's epochs, batch, lr and weight decay (a setting
    left unset takes the recipe's), the body's lr scale as set_up resolves it; else the setting
    itself."""
    if key in ("epochs", "batch_size", "lr", "weight_decay"):
        value = recipe.get(key) if isinstance(recipe, dict) else getattr(recipe, key, None)
        return value if value is not None else config.get(key)
    if key == "body_lr_scale" and config.get(key) is None:
        return 0.1 if config.get("init_from") else 1.0
    if key in config:
        return config[key]
    f = TrainConfig.__dataclass_fields__[key]  # a checkpoint from before the setting existed
    return f.default_factory() if f.default is MISSING else f.default


def _same(key: str, old: Any, new: Any) -> bool:
    if key in ("data", "init_from"):
        return same_source(old, new)
    if isinstance(old, float) or isinstance(new, float):
        try:
            return math.isclose(float(old), float(new), rel_tol=1e-12, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    if key in ("log", "freeze"):
        return sorted(old or []) == sorted(new or [])
    return old == new


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def change_text(changes: list[dict[str, Any]]) -> str:
    """'lr 0.2 -> 0.05, epochs 2 -> 3 from step 13' (one clause per step)."""
    by_step: dict[int, list[str]] = {}
    for c in changes:
        by_step.setdefault(c["step"], []).append(
            f"{c['setting']} {_shown(c['from'])} -> {_shown(c['to'])}"
        )
    return "; ".join(f"{', '.join(v)} from step {s}" for s, v in by_step.items())


# --------------------------------------------------------------------------------------------
# the data's fingerprint


def data_fingerprint(splits) -> dict[str, Any]:
    """Class names and, per split, the count, image shape, a hash of the labels and a hash of a
    fixed sample of images: enough to notice data changed on disk under the same shape."""
    fp: dict[str, Any] = {"classes": list(splits.train.classes)}
    for name in ("train", "test", "val"):
        ds = getattr(splits, name)
        if ds is None:
            continue
        n = len(ds)
        idx = torch.linspace(0, max(n - 1, 0), min(n, SAMPLE_IMAGES)).round().long().unique()
        sample = ds.images[idx].contiguous() if n else ds.images[:0]
        fp[name] = {
            "images": n,
            "shape": list(ds.image_shape),
            "labels": _digest(ds.labels.to(torch.int64).contiguous()),
            "sample": _digest(sample),
        }
    return fp


def _digest(t: torch.Tensor) -> str:
    return hashlib.blake2b(t.numpy().tobytes(), digest_size=8).hexdigest()


def check_data(
    state: dict[str, Any], now: dict[str, Any], where: str | os.PathLike, *, say: bool = True
) -> None:
    """Fail in one line naming what changed when the data differs from the fingerprint the
    checkpoint keeps; a checkpoint without one (written before fingerprints) resumes with one
    line saying that its data is not checked (when `say`: on one process of many)."""
    saved = state.get("data_fingerprint")
    if saved is None:
        if not say:
            return
        warn(f"checkpoint in {where} has no data fingerprint (written by an older resnetlab): the "
             "data is not checked against the run's")  # fmt: skip
        return
    if not isinstance(saved, dict):
        raise ResnetlabError(
            f"checkpoint in {where}: data_fingerprint is {_shown(saved)}; expected a mapping"
        )
    diffs = data_changes(saved, now)
    if diffs:
        raise ResnetlabError(
            f"the data changed since the checkpoint in {where} was written: {'; '.join(diffs)}; "
            f"{KEEPS_DATA} (start a new run in another folder to train on this data)"
        )


def data_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two data fingerprints, a phrase each (none: the same data)."""
    diffs = []
    if saved.get("classes") != now["classes"]:
        diffs.append(f"classes {_shown(saved.get('classes'))} -> {_shown(now['classes'])}")
    for name in ("train", "test", "val"):
        was, new = saved.get(name), now.get(name)
        if was is None or new is None:
            if was is not new:
                diffs.append(f"{name} split {'added' if was is None else 'gone'}")
            continue
        if not isinstance(was, dict):
            diffs.append(f"{name} split")
            continue
        if was.get("images") != new["images"]:
            diffs.append(f"{name} images {was.get('images')} -> {new['images']}")
        elif was.get("shape") != new["shape"]:
            shape = "x".join(map(str, new["shape"]))
            diffs.append(f"{name} image shape {_shown(was.get('shape'))} -> {shape}")
        else:
            if was.get("labels") != new["labels"]:
                diffs.append(f"{name} labels (hash {was.get('labels')} -> {new['labels']})")
            if was.get("sample") != new["sample"]:
                diffs.append(f"{name} images (sampled hash {was.get('sample')} -> {new['sample']})")
    return diffs


def check_position(state_batch: int, steps_per_epoch: int, where: str | os.PathLike) -> None:
    """Fail in one line when the checkpoint's loader position lies beyond an epoch of this data
    (an epoch would silently be skipped)."""
    if state_batch > steps_per_epoch:
        raise ResnetlabError(
            f"checkpoint in {where} is at batch {state_batch} of its epoch, but an epoch of this "
            f"data has {plural(steps_per_epoch, 'step')}; {KEEPS_DATA}"
        )
