"""A run's state: what a checkpoint saves and a resumed run restores, in one object.

The checkpoint's keys are written by `RunState.checkpoint` and read by `RunState.restore`, here
and nowhere else; checkpoint.py stores them (safetensors for tensors, torch.save with
weights_only-loadable values for the rest) and checks their types on loading. The sums of the
epoch and of the step-log window are step.py's `Tally`, kept as they are and written as plain
mappings (`epoch_acc`, `step_window`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ResnetlabError
from . import checkpoint as ckpt
from .step import EMA, Schedule, Tally


@dataclass
class RunState:
    """The model, its optimiser, schedule, scaler and weight average, and the run's counters."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    scaler: torch.amp.GradScaler
    ema: EMA | None = None
    step: int = 0  # optimiser steps taken
    epoch: int = 0  # the epoch under way (0-based)
    batch: int = 0  # the next batch of that epoch
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    best_err: float = math.inf  # the lowest selection error so far (validation, else test)
    epoch_tally: Tally = field(default_factory=Tally)  # the epoch's sums so far
    epoch_seconds: float = 0.0  # the epoch's training time so far
    step_log: list[dict[str, Any]] = field(default_factory=list)  # training error every N steps
    window_tally: Tally = field(default_factory=Tally)  # sums since the last step-log row
    elapsed: float = 0.0  # seconds spent by earlier processes of this run
    stopped: dict[str, Any] = field(default_factory=dict)  # {epoch, reason} once a callback stops
    changes: list[dict[str, Any]] = field(default_factory=list)  # settings changed on resume
    data_fingerprint: dict[str, Any] = field(default_factory=dict)  # resume.data_fingerprint

    def eval_model(self) -> nn.Module:
        """The model to evaluate and save: the weight average when there is one."""
        if self.ema is None:
            return self.model
        m = copy.deepcopy(self.model)
        m.load_state_dict(self.ema.state)
        return m

    def weights(self) -> dict[str, torch.Tensor]:
        """The model's tensors and the average's, under `ema.`."""
        weights = dict(self.model.state_dict())
        if self.ema is not None:
            weights.update({ckpt.EMA_PREFIX + k: v for k, v in self.ema.state.items()})
        return weights

    def checkpoint(
        self, *, config: dict, recipe: dict, meta: dict, elapsed_now: float
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(weights, state) to write; `elapsed_now` is this process's time so far."""
        state = {
            "config": config,
            "recipe": recipe,
            "step": self.step,
            "loader": {"epoch": self.epoch, "batch": self.batch},
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else {},
            "rng": ckpt.rng_state(),
            "history": self.history,
            "best_err": self.best_err,
            "epoch_acc": {**self.epoch_tally.sums(), "seconds": self.epoch_seconds},
            "elapsed": self.elapsed + elapsed_now,
            "ema_updates": self.ema.updates if self.ema is not None else 0,
            "meta": meta,
            "step_log": self.step_log,
            "step_window": self.window_tally.sums(),
            "stopped": dict(self.stopped),
            "changes": list(self.changes),
            "data_fingerprint": dict(self.data_fingerprint),
        }
        return self.weights(), state

    def restore(self, weights: dict[str, torch.Tensor], state: dict[str, Any], source) -> None:
        """Load what `checkpoint` wrote (read back by checkpoint.load_checkpoint from `source`)."""
        model_w, ema_w = ckpt.split_ema(weights)
        try:
            self.model.load_state_dict(model_w)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise ResnetlabError(
                f"checkpoint in {source} does not fit this model: {first}"
            ) from None
        if self.ema is not None and ema_w:
            device = next(iter(self.ema.state.values())).device
            self.ema.state = {k: v.to(device) for k, v in ema_w.items()}
            self.ema.updates = int(state["ema_updates"])
        rates = [{k: g[k] for k in ("base_lr", "lr_scale") if k in g}
                 for g in self.optimizer.param_groups]  # fmt: skip
        self.optimizer.load_state_dict(state["optimizer"])
        for group, rate in zip(self.optimizer.param_groups, rates):
            group.update(rate)  # this run's peak rates (an lr given on resume) from the next step
        self.schedule.load_state_dict(state["schedule"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.epoch = int(state["loader"]["epoch"])
        self.batch = int(state["loader"]["batch"])
        self.history = list(state["history"])
        self.best_err = float(state["best_err"])
        self.epoch_tally = Tally.of(state["epoch_acc"])
        self.epoch_seconds = float(state["epoch_acc"]["seconds"])
        self.elapsed = float(state["elapsed"])
        self.step_log = list(state.get("step_log", []))
        self.window_tally = Tally.of(state.get("step_window", Tally().sums()))
        stopped = state.get("stopped", {})
        if not isinstance(stopped, dict):
            raise ResnetlabError(
                f"checkpoint in {source}: stopped is {stopped!r}; expected a mapping"
            )
        self.stopped = dict(stopped)
        changes = state.get("changes", [])
        keys = {"setting", "from", "to", "step", "epoch"}  # resume.setting_changes' records
        if not isinstance(changes, list) or not all(
            isinstance(c, dict) and keys <= c.keys() for c in changes
        ):
            raise ResnetlabError(
                f"checkpoint in {source}: changes is {changes!r:.60}; expected a list of "
                "{setting, from, to, step, epoch} records"
            )
        self.changes = list(changes)
