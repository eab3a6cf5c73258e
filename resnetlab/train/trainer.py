"""The trainer: one run, read top to bottom (nanoGPT's train.py and airbench are the models).

setup.py's `set_up` makes a checked run's Trainer in named steps: the checkpoint to resume, the
recipe, the data, the model, the Plan (policy.resolve: device, precision, channels_last, compile,
threads, data on the device), the loaders, the optimiser and the state. `run` (this file) then
trains epoch by epoch: `train_epoch` (one step is this file, step.py and data/loader.py),
`evaluate_epoch`, `log_epoch`, the callbacks, `save_checkpoint`; `finish` writes the summary
(report.py). Everything the run holds is a typed field of the Trainer; what a checkpoint keeps is
its RunState (state.py), so a resumed run replays exactly what an uninterrupted one computes.
loop.py is the way in: fit checks the settings, locks the folder, calls set_up, then run.

Nothing inside an epoch waits for the device: the step keeps its tallies there, and the trainer
reads them every `read_every` steps (every step on a CPU, where reading is free), at log and
checkpoint steps and at the epoch's end. A non-finite loss is masked on the device and stops the
run at the next read. An epoch is evaluated every `eval_every` epochs on plain images (on a fixed
subset of `eval_images` per split when set); the last epoch on every image, with the mirrored
view when the recipe says so. Callbacks (callbacks.py) see every step and each epoch's row, and
may stop the run, which then ends as a finished run does.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from ..data import DataSplits
from ..data.loader import BatchLoader
from ..models import save_weights
from ..policy import Plan
from . import checkpoint as ckpt
from . import distributed, logs
from . import resume as resuming
from .callbacks import EpochState, call
from .config import TrainConfig
from .evaluate import EvalResult, evaluate_splits
from .finetune import describe_trained
from .logs import Progress
from .recipes import Recipe
from .report import epoch_row, last_line, run_summary, selection_err
from .rundir import BEST_WEIGHTS, LAST_WEIGHTS, Interrupted, stop_on_signals
from .state import RunState
from .step import NonFiniteLoss, Tally, TrainStep

READ_EVERY = {"cpu": 1, "cuda": 50}  # steps between reads of the device's tallies
PLOT_SECONDS = 30.0  # redraw curves.png at most this often (and always at the end)


@dataclass
class Reads:
    """What the trainer keeps between reads of the step's tallies, within one epoch."""

    progress: Progress
    seconds: float  # the epoch's training time up to the last read
    count_before: int  # images of this epoch trained by earlier processes of the run
    t_read: float  # when the last read was (perf_counter)
    unread: int = 0  # steps since
    lrs: dict[int, float] = field(default_factory=dict)  # step -> its lr, since the last read


@dataclass
class Trainer:
    """One run: its settings, plan, data, model, step and state; `run` trains it."""

    cfg: TrainConfig  # as checked, completed: the recipe's name, the threads used
    plan: Plan
    info: distributed.DistInfo
    recipe: Recipe
    splits: DataSplits
    meta: dict[str, Any]  # what the weights files say: classes, input size, mean, std, ...
    model: nn.Module  # what trains (batch norm synchronised when asked)
    user_model: nn.Module  # the model given or built; it holds the last weights at the end
    net: nn.Module  # the model, DDP-wrapped with several processes
    frozen: list[nn.Module]  # parts kept in eval mode
    train_loader: BatchLoader
    eval_loaders: dict[str, BatchLoader]  # split -> every image (the final evaluation)
    epoch_loaders: dict[str, BatchLoader]  # split -> the fixed subset of each epoch
    step_fn: TrainStep
    state: RunState  # what a checkpoint keeps
    events: EpochState  # what the callbacks see
    t_start: float  # when this process began the run (time.time)
    note_init: str | None = None  # what the model was initialised from
    changes: list[dict[str, Any]] = field(default_factory=list)  # settings changed on resume
    callbacks: list[Any] = field(default_factory=list)
    read_every: int = 1
    stop_asked: bool = False
    last_checkpoint: float = 0.0
    last_plot: float = 0.0
    setup_seconds: float = 0.0
    reads: Reads | None = None
    final_eval: dict[str, EvalResult] | None = None  # split -> result, once evaluated at the end
    saved_model: nn.Module | None = None  # the model whose weights the epoch's files hold
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        """The run's folder."""
        return Path(self.cfg.out)

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps in one epoch."""
        return len(self.train_loader)

    @property
    def num_classes(self) -> int:
        """Classes of the data (outputs of the head)."""
        return len(self.meta["classes"])

    # ---------------------------------------------------------------------------------------
    # the run

    def run(self) -> None:
        """Every epoch from where the state stands: train, evaluate, log, call back, checkpoint;
        until the last epoch or until a callback stops the run; then the summary."""
        self.setup_seconds = time.time() - self.t_start  # reading data, building, restoring
        if self.info.is_main:
            call(self.callbacks, "on_train_begin", self.events)
        with stop_on_signals(self.ask_to_stop):
            try:
                for epoch in range(self.state.epoch, self.recipe.epochs):
                    if self.state.stopped:  # a resumed run that a callback had stopped
                        break
                    self.train_epoch(epoch)
                    reason = None
                    if self.info.is_main:
                        row = self.evaluate_epoch(epoch)
                        self.log_epoch(row)
                        reason = self.epoch_end(row)
                    (stop,) = distributed.any_flags([reason is not None], self.info)
                    self.state.epoch, self.state.batch = epoch + 1, 0
                    self.state.epoch_tally, self.state.epoch_seconds = Tally(), 0.0
                    if stop:
                        self.state.stopped = {"epoch": epoch + 1, "reason": reason or ""}
                    self.save_checkpoint()
                    distributed.barrier(self.info)
            except Interrupted:
                self.save_checkpoint()
                if self.info.is_main:
                    print(f"interrupted: checkpoint saved in {ckpt.checkpoint_path(self.out)}; "
                          f"continue with `resnetlab train --resume --out {self.out}`",
                          file=sys.stderr)  # fmt: skip
                raise KeyboardInterrupt from None
        self.finish()
        if self.model is not self.user_model:  # converted for the run (sync BN): copy back
            self.user_model.load_state_dict(self.model.state_dict())
        describe_trained(self.user_model, self.meta, self.out / LAST_WEIGHTS)
        if self.info.is_main:
            call(self.callbacks, "on_train_end", self.events)

    def epoch_end(self, row: dict[str, Any]) -> str | None:
        """Show the callbacks the epoch's row; the reason to stop, if one of them asks."""
        ev = self.events
        ev.epoch, ev.step, ev.metrics, ev.history = row["epoch"], self.state.step, row, \
            self.state.history  # fmt: skip
        call(self.callbacks, "on_epoch_end", ev)
        if not ev.stop or row["epoch"] >= self.recipe.epochs:  # (the run ends here anyway)
            return None
        ev.stop_reason = ev.stop_reason or "a callback stopped the run"
        if not self.cfg.quiet:
            logs.say(f"stopping after epoch {row['epoch']}/{self.recipe.epochs}: {ev.stop_reason}")
        return ev.stop_reason

    # ---------------------------------------------------------------------------------------
    # train one epoch

    def train_epoch(self, epoch: int) -> None:
        """The epoch's steps, from the state's batch on; tallies read every `read_every` steps."""
        s, loader, step_fn, device = self.state, self.train_loader, self.step_fn, self.plan.device
        loader.load_state_dict({"epoch": epoch, "batch": s.batch})
        if s.batch == 0:
            s.epoch_tally, s.epoch_seconds = Tally(), 0.0
        step_fn.reset("epoch", s.epoch_tally)
        step_fn.reset("window", s.window_tally)
        step_fn.steps.fill_(s.step)
        self.net.train()
        for m in self.frozen:
            m.eval()
        shown = self.info.is_main and not self.cfg.quiet
        progress = Progress(self.steps_per_epoch - s.batch,
                            f"epoch {epoch + 1}/{self.recipe.epochs}", enabled=shown)  # fmt: skip
        r = self.reads = Reads(progress, s.epoch_seconds, s.epoch_tally.count, time.perf_counter())
        hooked = [c for c in self.callbacks if callable(getattr(c, "on_step_end", None))]
        schedule, ema = s.schedule, s.ema
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            r.lrs[s.step + 1] = schedule.apply()
            correct = step_fn(x, y)
            s.step += 1
            s.batch = loader.state_dict()["batch"]
            r.unread += 1
            # the paper's deep-net warm-up ends on the training error: read it while it lasts
            schedule.step(train_err=None if schedule.warm_done else 1 - float(correct) / len(y))
            if ema is not None and s.step % self.recipe.ema_every == 0:
                ema.update(self.model)
            if self.read_due():
                self.read()
            if hooked:
                self.events.step = s.step
                call(hooked, "on_step_end", self.events)
        self.read()
        progress.close()

    def read_due(self) -> bool:
        """Whether the tallies are read after this step."""
        step, cfg = self.state.step, self.cfg
        return (
            self.reads.unread >= self.read_every
            or not self.state.schedule.warm_done
            or (cfg.log_every and step % cfg.log_every == 0)
            or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
        )

    def read(self) -> None:
        """Read the tallies from the device (one copy) and act on them: stop on a non-finite
        loss, log the step window, show progress, checkpoint when due, stop when asked."""
        if not self.reads.unread:
            return
        tally = self.take_tally()
        bad, stop = tally.bad > 0, self.stop_asked
        if self.info.enabled:  # every rank stops together
            bad, stop = distributed.any_flags([bad, stop], self.info)
        if bad:
            lr = self.state.optimizer.param_groups[-1]["lr"]
            raise NonFiniteLoss.at(tally, self.state.step, self.reads.lrs, lr,
                                   self.steps_per_epoch, self.out)  # fmt: skip
        if self.cfg.log_every:
            self.read_window()
        self.show_progress(tally)
        self.checkpoint_if_due()
        if stop:
            raise Interrupted()

    def take_tally(self) -> Tally:
        """The epoch's sums so far into the state, with the training time up to now: the clock
        is read after the sums, whose copy to the host waits for the device's queued work."""
        r, s = self.reads, self.state
        s.epoch_tally = self.step_fn.read("epoch")
        now = time.perf_counter()
        r.seconds += now - r.t_read
        r.t_read = now
        s.epoch_seconds = r.seconds
        return s.epoch_tally

    def read_window(self) -> None:
        """The step log's window: a steps.jsonl row every `log_every` steps, else its sums."""
        s, window = self.state, self.step_fn.read("window")
        if s.step % self.cfg.log_every:
            s.window_tally = window
            return
        lr = self.reads.lrs[s.step]
        s.step_log.append(logs.window_row(window, s.step, self.steps_per_epoch, lr))
        self.step_fn.reset("window")
        s.window_tally = Tally()

    def show_progress(self, tally: Tally) -> None:
        """The progress display: steps, loss and accuracy so far, images/s of the job."""
        r, n = self.reads, max(tally.count, 1)
        seen = (tally.count - r.count_before) * self.info.world_size
        r.progress.update(r.unread, tally.loss / n, tally.correct / n, seen)
        r.unread = 0
        r.lrs.clear()

    def checkpoint_if_due(self) -> None:
        """A checkpoint inside the epoch every `checkpoint_every` steps and after
        `checkpoint_minutes` (the epoch's end has its own)."""
        s, cfg = self.state, self.cfg
        due = cfg.checkpoint_every and s.step % cfg.checkpoint_every == 0
        late = time.time() - self.last_checkpoint > 60 * cfg.checkpoint_minutes
        if (due or late) and s.batch < self.steps_per_epoch:
            self.save_checkpoint()
            self.reads.t_read = time.perf_counter()  # the epoch's time leaves the saving out

    # ---------------------------------------------------------------------------------------
    # evaluate

    def evaluate_all(self, model: nn.Module, epoch: int, *, final: bool) -> dict[str, EvalResult]:
        """Every split's result: the final evaluation on every image, with flips when the recipe
        flips; an epoch's on plain images of its subset."""
        return evaluate_splits(
            model, self.eval_loaders if final else self.epoch_loaders, device=self.plan.device,
            num_classes=self.num_classes, tta_flip=self.recipe.tta_flip and final,
            desc=f"evaluate epoch {epoch}/{self.recipe.epochs}",
            shown=self.info.is_main and not self.cfg.quiet,
        )  # fmt: skip

    def evaluate_epoch(self, epoch: int) -> dict[str, Any]:
        """The epoch's row: training sums, test (and validation) errors when evaluated, speed.
        The last epoch is the final evaluation; others come every `eval_every` epochs."""
        model, final = self.state.eval_model(), epoch + 1 == self.recipe.epochs
        results, seconds = {}, 0.0
        if self.eval_loaders and (final or (epoch + 1) % self.cfg.eval_every == 0):
            t0 = time.perf_counter()
            results = self.evaluate_all(model, epoch + 1, final=final)
            seconds = time.perf_counter() - t0
            self.final_eval = results if final else None
        self.saved_model = model
        return epoch_row(self, results, seconds, tta=self.recipe.tta_flip and final)

    # ---------------------------------------------------------------------------------------
    # log and checkpoint

    def log_epoch(self, row: dict[str, Any]) -> None:
        """Append the row; write metrics, steps, last and best weights; redraw the curves."""
        s, out = self.state, self.out
        s.history.append(row)
        self.save_weights(self.saved_model, row["epoch"], row.get("test_top1_err"), LAST_WEIGHTS)
        select = selection_err(row)
        if select is not None and select < s.best_err:
            s.best_err = select
            self.save_weights(self.saved_model, row["epoch"], row.get("test_top1_err"),
                              BEST_WEIGHTS)  # fmt: skip
        logs.write_metrics(out, s.history)
        if self.cfg.log_every:
            logs.write_steps(out, s.step_log)
        if row["epoch"] == self.recipe.epochs or time.time() - self.last_plot > PLOT_SECONDS:
            self.plot()
        if not self.cfg.quiet:
            logs.say(logs.epoch_line(row, self.recipe.epochs, self.num_classes))

    def save_weights(self, model: nn.Module, epoch: int, test_err: float | None, name: str) -> None:
        """`model`'s weights as out/NAME, with the run's metadata, the epoch and its test error."""
        meta = dict(self.meta, epoch=epoch)
        if test_err is not None:
            meta["test_top1_err"] = test_err
        save_weights(model, self.out / name, meta)

    def plot(self) -> None:
        """curves.png from the history so far."""
        title = f"{self.cfg.model} on {self.splits.name} ({self.recipe.name} recipe)"
        logs.plot_curves(self.out, self.state.history, title)
        self.last_plot = time.time()

    def save_checkpoint(self) -> None:
        """Write the run's state (rank 0), atomically."""
        if self.info.is_main:
            weights, state = self.state.checkpoint(
                config=resuming.saved_config(self.cfg, self.out), recipe=self.recipe.to_dict(),
                meta=self.meta, elapsed_now=time.time() - self.t_start,
            )  # fmt: skip
            ckpt.save_checkpoint(ckpt.checkpoint_path(self.out), weights, state)
        self.last_checkpoint = time.time()

    def ask_to_stop(self) -> None:
        """Ctrl-C or SIGTERM: stop at the next read, with a checkpoint."""
        self.stop_asked = True
        if self.info.is_main:
            print("stopping after this step (Ctrl-C again to stop at once)", file=sys.stderr)

    # ---------------------------------------------------------------------------------------
    # finish

    def finish(self) -> None:
        """The final evaluation when the last epoch did not make it (stopped early, or resumed
        at the end); then the summary, summary.json and the last line (rank 0)."""
        if not self.info.is_main:
            return
        final_seconds = 0.0  # a final evaluation of its own (the last row's is in the rows)
        if self.final_eval is None and self.eval_loaders:
            epochs = len(self.state.history)
            model, t0 = self.state.eval_model(), time.perf_counter()
            self.final_eval = self.evaluate_all(model, epochs, final=True)
            final_seconds = time.perf_counter() - t0
            if self.state.stopped:  # the final weights carry the final evaluation's error
                test = self.final_eval.get("test")
                self.save_weights(model, epochs, test and test.top1_err, LAST_WEIGHTS)
            self.plot()
        final = self.final_eval or {}
        self.summary = run_summary(self, final, final_seconds, time.time())
        logs.write_summary(self.out, self.summary)
        logs.say(last_line(self, final))
