"""Callbacks: the user's code at the trainer's events, instead of a subclass of the trainer.

A callback is any object with one or more of the hooks `on_train_begin(state)`,
`on_step_end(state)`, `on_epoch_end(state)` and `on_train_end(state)` (`Callback` gives all four
as no-ops, to subclass). They run on the process that evaluates (rank 0), in the order given:
on_step_end after each optimiser step (and after the tallies are read, when they are), where
`state.step` is the step just taken and nothing has been read back from the device for it;
on_epoch_end after the epoch's row is logged and its weights written. `state` is one
`EpochState`, the same object at every call of a run: the epoch, that epoch's metrics (the
metrics.jsonl row: train loss and error, and test and validation errors on the epochs that are
evaluated), the rows so far, and the model. To stop training a callback sets `state.stop = True`
(and `state.stop_reason`, a sentence) at an epoch's end; the run then ends as a finished run
does: checkpoint, final evaluation, weights and summary, which says that it stopped early and
why. A resumed run that had stopped stays stopped.

`EarlyStopping` is the example shipped: it stops when a monitored error has not improved for
`patience` evaluations.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import ResnetlabError

HOOKS = ("on_train_begin", "on_step_end", "on_epoch_end", "on_train_end")

# the metrics of an epoch's row that a callback may monitor (lower is better for each)
METRICS = (
    "train_loss",
    "train_top1_err",
    "test_top1_err",
    "test_top5_err",
    "test_loss",
    "val_top1_err",
    "val_top5_err",
    "val_loss",
)
ALIASES = {"train_err": "train_top1_err", "test_err": "test_top1_err", "val_err": "val_top1_err"}


@dataclass
class EpochState:
    """What callbacks see: where the run is, the last epoch's metrics, the model; `stop` ends it."""

    epochs: int  # epochs the run is set to train
    model: nn.Module  # the model being trained (its last weights, not a weight average)
    has_test: bool  # whether epochs are evaluated on a test split
    has_val: bool  # whether epochs are evaluated on a validation split
    epoch: int = 0  # epochs completed (the row's "epoch"; 0 before the first)
    step: int = 0  # optimiser steps taken
    metrics: dict[str, Any] = field(default_factory=dict)  # the last epoch's metrics.jsonl row
    history: list[dict[str, Any]] = field(default_factory=list)  # every row so far
    stop: bool = False  # set True to end the run after this epoch
    stop_reason: str | None = None  # why (a sentence for the log and the summary)


class Callback:
    """A callback whose hooks do nothing: subclass it and define the ones you need."""

    def on_train_begin(self, state: EpochState) -> None:
        """Before the first epoch of this process (after a resume, `state.history` has the rows
        of the epochs already trained)."""

    def on_step_end(self, state: EpochState) -> None:
        """After each optimiser step: `state.step` is its count (keep it cheap: it runs every
        step, and reading device values here would make the step wait for the device)."""

    def on_epoch_end(self, state: EpochState) -> None:
        """After each epoch: `state.metrics` is its row; set `state.stop = True` to stop."""

    def on_train_end(self, state: EpochState) -> None:
        """After the final evaluation and the summary."""


def check_callbacks(callbacks: Any) -> list[Any]:
    """The callbacks as a list; fail in one line if one has none of the hooks."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, (list, tuple)):
        raise ResnetlabError(
            f"callbacks {callbacks!r}: expected a list of callback objects", argument="callbacks"
        )
    for i, cb in enumerate(callbacks):
        if not any(callable(getattr(cb, h, None)) for h in HOOKS):
            raise ResnetlabError(
                f"callbacks[{i}] {cb!r}: has none of the hooks {', '.join(HOOKS)}",
                argument="callbacks",
            )
    return list(callbacks)


def call(callbacks: list[Any], hook: str, state: EpochState) -> None:
    """Call `hook` of every callback that has it, in order."""
    for cb in callbacks:
        fn = getattr(cb, hook, None)
        if callable(fn):
            fn(state)


def metric_name(monitor: str) -> str:
    """The row key a monitor name stands for (val_err -> val_top1_err); fail on unknown names."""
    if isinstance(monitor, str) and monitor in ALIASES:
        return ALIASES[monitor]
    if isinstance(monitor, str) and monitor in METRICS:
        return monitor
    known = [*ALIASES, *METRICS]
    close = difflib.get_close_matches(str(monitor), known, n=2, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; use one of {', '.join(known)}"
    raise ResnetlabError(f"monitor {monitor!r}: not a metric of the run{hint}", argument="monitor")


class EarlyStopping(Callback):
    """Stop when `monitor` has not fallen by more than `min_delta` for `patience` evaluations.

    Epochs that are not evaluated (eval_every) do not count. A resumed run replays the rows it
    has, so it stops where an uninterrupted run stops."""

    def __init__(self, monitor: str = "val_err", patience: int = 3, min_delta: float = 0.0) -> None:
        self.monitor = metric_name(monitor)
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ResnetlabError(
                f"patience {patience!r}: expected a whole number of evaluations >= 1",
                argument="patience",
            )
        real = isinstance(min_delta, (int, float)) and not isinstance(min_delta, bool)
        if not (real and math.isfinite(min_delta) and min_delta >= 0):
            raise ResnetlabError(
                f"min_delta {min_delta!r}: expected a finite number >= 0", argument="min_delta"
            )
        self.patience, self.min_delta = patience, float(min_delta)
        self.reset()

    def reset(self) -> None:
        """Forget what was seen: the best value, its epoch, evaluations since."""
        self.best = math.inf
        self.best_epoch = 0
        self.wait = 0

    def on_train_begin(self, state: EpochState) -> None:
        """Check that the run measures the monitored metric; replay the rows of a resumed run."""
        split = self.monitor.split("_")[0]
        if (split == "val" and not state.has_val) or (split == "test" and not state.has_test):
            raise ResnetlabError(
                f"EarlyStopping monitors {self.monitor} but the run has no {split} data; "
                + ("pass val_data or set val_split" if split == "val" else "monitor val_err"),
                argument="monitor",
            )
        self.reset()
        for row in state.history:
            self.update(row)

    def on_epoch_end(self, state: EpochState) -> None:
        """Count the epoch's value; stop once `patience` evaluations brought no improvement."""
        if self.update(state.metrics):
            state.stop = True
            state.stop_reason = (
                f"early stopping: {self.monitor} did not fall by more than {self.min_delta:g} "
                f"in {self.wait} evaluation(s) after epoch {self.best_epoch} "
                f"(best {self.best:.4f})"
            )

    def update(self, row: dict[str, Any]) -> bool:
        """Take one row; whether the run should stop now."""
        value = row.get(self.monitor)
        if value is None:  # not evaluated this epoch
            return False
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = float(value), int(row["epoch"]), 0
            return False
        self.wait += 1
        return self.wait >= self.patience
