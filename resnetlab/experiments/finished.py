"""A study's finished run, read back and checked before use.

A study reads the runs it trained (or that a killed study left) from their folders: summary.json,
metrics.jsonl, steps.jsonl and last.safetensors. Each is checked before a number of it reaches a
table: every row a JSON object with a whole step and errors that are fractions in [0, 1] (a NaN, a
negative error or a missing field is refused, not written into the JSON), the summary's fields of
the right kind, and the weights file the net its folder claims, whose metadata describes a net
with exactly the file's tensors (the parameter count is counted from that net, built on the meta
device, so a crafted size allocates nothing). Each fault is one line naming the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ResnetlabError
from ..models.factory import model_for_data
from ..models.weights import read_metadata, read_shapes
from ..train.config import TrainConfig
from ..train.logs import METRICS_FILE, STEPS_FILE, SUMMARY_FILE
from .nets import check_study_net
from .tasks import read_json, shown

WEIGHTS_FILE = "last.safetensors"
REDO = "remove the run's folder to train the net again"


@dataclass
class FinishedRun:
    """What a study takes from a finished run."""

    summary: dict[str, Any]  # summary.json, checked
    epochs: list[dict[str, Any]]  # metrics.jsonl: a row per evaluated epoch
    steps: list[dict[str, Any]]  # steps.jsonl (none when the run logged no steps)
    params: int  # of the net in last.safetensors


def read_finished(cfg: TrainConfig, family: str, depth: int) -> FinishedRun:
    """The finished run in cfg.out, of the study net (family, depth), checked."""
    out = Path(cfg.out)
    summary = read_json(out / SUMMARY_FILE)
    check_summary(summary, out / SUMMARY_FILE)
    epochs = read_rows(out / METRICS_FILE, need=("train_top1_err",), optional=("test_top1_err",))
    if not any("test_top1_err" in r for r in epochs):
        raise ResnetlabError(f"{out / METRICS_FILE} holds no tested epoch; {REDO}")
    steps = out / STEPS_FILE
    steps = read_rows(steps, need=("train_top1_err",)) if steps.is_file() else []
    params = net_params(out / WEIGHTS_FILE, cfg, family, depth)
    return FinishedRun(summary, epochs, steps, params)


def is_fraction(v: Any) -> bool:
    """A number in [0, 1] (an error rate; NaN is not one)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _seconds(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def read_rows(
    path: Path, need: tuple[str, ...], optional: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The rows of a run's log (metrics.jsonl, steps.jsonl): each a JSON object with a whole
    `step` and each of `need` (and of `optional`, where present) an error in [0, 1]."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ResnetlabError(f"{path}: unreadable ({type(e).__name__}: {e}); {REDO}") from None
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            raise ResnetlabError(f"{path}: line {i} is not JSON; {REDO}") from None
        ok = (
            isinstance(row, dict)
            and _whole(row.get("step"))
            and all(is_fraction(row.get(k)) for k in need)
            and all(is_fraction(row[k]) for k in optional if k in row)
        )
        if not ok:
            fields = ", ".join(need + optional)
            raise ResnetlabError(
                f"{path}: line {i} is not a row of a run's log (a whole step, and {fields} as "
                f"errors in [0, 1]); {REDO}"
            )
        rows.append(row)
    return rows


# summary.json's fields a study reads: (is the value right?, what it should be)
SUMMARY_FIELDS = {
    "model": (lambda v: isinstance(v, str), "a model name"),
    "steps": (_whole, "a whole number of steps"),
    "train_seconds": (_seconds, "a finite number of seconds >= 0"),
    "precision": (lambda v: v is None or isinstance(v, str), "a precision's name"),
    "dataset": (lambda v: isinstance(v, str), "a data set's name"),
    "recipe": (
        lambda v: isinstance(v, dict) and ("weight_decay" not in v or _seconds(v["weight_decay"])),
        "a recipe (its weight_decay a finite number >= 0)",
    ),
}
SUMMARY_NEEDED = ("model", "steps", "train_seconds")


def check_summary(summary: dict[str, Any], path: Path) -> None:
    """Fail in one line when a field of summary.json the studies read is missing or wrong."""
    for key, (ok, expected) in SUMMARY_FIELDS.items():
        if key not in summary:
            if key in SUMMARY_NEEDED:
                raise ResnetlabError(f"{path}: no {key}; {REDO}")
            continue
        if not ok(summary[key]):
            raise ResnetlabError(
                f"{path}: {key} is {shown(summary[key])}; expected {expected}; {REDO}"
            )


def net_params(weights: Path, cfg: TrainConfig, family: str, depth: int) -> int:
    """The parameter count of the study net in `weights`: its metadata must name the net of the
    folder (family, depth), and the net it describes (built on the meta device, as the study
    builds it: cfg.model and cfg.model_options) must hold exactly the file's tensors."""
    meta = read_metadata(weights)
    check_study_net(meta, family, depth, str(weights))
    shape = meta.get("input_size")
    classes = meta.get("num_classes")
    if not (isinstance(shape, list) and len(shape) == 3 and isinstance(classes, int)):
        raise ResnetlabError(f"{weights}: its metadata gives no input_size and num_classes")
    with torch.device("meta"):
        model = model_for_data(cfg.model, tuple(shape), classes, cfg.model_options)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    held = read_shapes(weights)
    if own != held:
        differ = sorted(k for k in own.keys() | held.keys() if own.get(k) != held.get(k))
        raise ResnetlabError(
            f"{weights}: its tensors are not those of the net its metadata describes (first "
            f"difference: {differ[0]}); {REDO}"
        )
    return sum(p.numel() for p in model.parameters())
