"""The training loop: data in, a trained model, its log, plots and checkpoints out.

`fit(TrainConfig)` does everything `resnetlab train` does, in named phases that read top to
bottom: set up (data, model, optimiser, state), then per epoch train, evaluate, log and
checkpoint, then finish. The learning rate is a function of the step, the data of (seed, epoch,
batch), and a checkpoint carries the rest (RunState), so a resumed run replays exactly what an
uninterrupted one computes.

Nothing inside an epoch waits for the device: the step keeps its tallies there (step.py), and
the loop reads them every `read_every` steps (every step on a CPU, where reading is free), at
log and checkpoint steps and at the epoch's end. A non-finite loss is masked on the device and
stops the run at the next read.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
from pathlib import Path
from typing import Any

from torch import nn

from ..data import DataSplits
from ..errors import ResnetlabError
from ..models import save_weights
from ..policy import (  # noqa: F401  (re-exported: the names training has always had)
    COMPILE_MIN_STEPS,
    busy_cores,
    cpu_threads,
    is_cuda,
    precision_name,
    resolve_compile,
    resolve_precision,
    use_compile_cache,
)
from . import checkpoint as ckpt
from . import distributed
from .average import EMA  # noqa: F401
from .config import CONFIG_NUMBERS, TrainConfig, check_config  # noqa: F401
from .evaluate import evaluate
from .finetune import freeze, init_from, param_groups  # noqa: F401
from .logging import (
    Progress,
    epoch_line,
    plot_curves,
    window_row,
    write_metrics,
    write_steps,
    write_summary,
)
from .rundir import (  # noqa: F401
    BEST_WEIGHTS,
    LAST_WEIGHTS,
    LOCK_NAME,
    NAMES_WRITTEN,
    remove_stale_temporaries,
    run_lock,
    stop_on_signals,
)
from .setup import EVAL_BATCH, READ_EVERY, describe, load_data, set_up  # noqa: F401

PLOT_SECONDS = 30.0  # redraw curves.png at most this often (and always at the end)


class NonFiniteLoss(ResnetlabError):
    """The loss became NaN or infinite."""


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) arrived; a checkpoint has been saved."""


def fit(cfg: TrainConfig, splits: DataSplits | None = None, resume: str | None = None) -> dict:
    """Train as `cfg` says (continuing the checkpoint at `resume` if given); returns the summary."""
    return train_model(cfg, splits, resume)[1]


def train_model(
    cfg: TrainConfig, splits: DataSplits | None = None, resume: str | None = None
) -> tuple[nn.Module, dict]:
    """As fit, and also return the trained model (its last weights, not the moving average)."""
    t_start = time.time()
    check_config(cfg)
    info = distributed.setup(cfg.device)
    try:
        with run_lock(Path(cfg.out)) if info.is_main else contextlib.nullcontext():
            if info.is_main:
                remove_stale_temporaries(Path(cfg.out))
            return Trainer(cfg, splits, resume, info, t_start).run()
    finally:
        distributed.cleanup(info)


class Trainer:
    """One run: `__init__` sets it up, `run` trains, evaluates, logs and checkpoints per epoch."""

    # ---------------------------------------------------------------------------------------
    # set up

    def __init__(
        self,
        cfg: TrainConfig,
        splits: DataSplits | None,
        resume: str | None,
        info: distributed.DistInfo,
        t_start: float,
    ) -> None:
        self.info, self.t_start = info, t_start
        self.__dict__.update(vars(set_up(cfg, splits, resume, info)))
        self.stop_asked = False
        self.last_checkpoint = time.time()
        self.last_plot = 0.0
        self.final_eval = None
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            for line in describe(self, resume):
                say(line)

    # ---------------------------------------------------------------------------------------
    # the run

    def run(self) -> tuple[nn.Module, dict]:
        """Every epoch from where the state stands: train, evaluate, log, checkpoint."""
        self.setup_seconds = time.time() - self.t_start  # reading data, building, restoring
        with stop_on_signals(self.ask_to_stop):
            try:
                for epoch in range(self.state.epoch, self.recipe.epochs):
                    self.train_epoch(epoch)
                    if self.info.is_main:
                        self.log_epoch(self.evaluate_epoch())
                    self.state.epoch, self.state.batch = epoch + 1, 0
                    self.state.epoch_acc = {"loss": 0.0, "correct": 0, "count": 0, "seconds": 0.0}
                    self.save_checkpoint()
                    distributed.barrier(self.info)
            except Interrupted:
                self.save_checkpoint()
                if self.info.is_main:
                    print(
                        f"interrupted: checkpoint saved in {ckpt.checkpoint_path(self.out)}; "
                        f"continue with `resnetlab train --resume --out {self.out}`",
                        file=sys.stderr,
                    )
                raise KeyboardInterrupt from None
        return self.model, self.finish()

    # ---------------------------------------------------------------------------------------
    # train one epoch

    def train_epoch(self, epoch: int) -> None:
        """The epoch's steps, from the state's batch on; tallies read every `read_every` steps."""
        s, cfg, loader, step_fn = self.state, self.cfg, self.train_loader, self.step_fn
        loader.load_state_dict({"epoch": epoch, "batch": s.batch})
        if s.batch == 0:
            s.epoch_acc = {"loss": 0.0, "correct": 0, "count": 0, "seconds": 0.0}
        step_fn.reset("epoch", _tally(s.epoch_acc))
        step_fn.reset("window", _tally(s.step_window))
        self.net.train()
        for m in self.frozen:
            m.eval()
        self.progress = Progress(
            self.steps_per_epoch - s.batch,
            f"epoch {epoch + 1}/{self.recipe.epochs}",
            enabled=self.info.is_main and not cfg.quiet,
        )
        self.epoch_seconds = s.epoch_acc["seconds"]
        self.count_before = int(s.epoch_acc["count"])  # images of this epoch before this process
        step_fn.steps.fill_(s.step)
        self.t_read = time.perf_counter()
        self.unread = 0
        self.lrs: dict[int, float] = {}  # the learning rate of each step since the last read
        schedule, ema = s.schedule, s.ema
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            self.lrs[s.step + 1] = schedule.apply()
            correct = step_fn(x, y)
            s.step += 1
            s.batch = loader.state_dict()["batch"]
            self.unread += 1
            # the paper's deep-net warm-up ends on the training error: read it while it lasts
            schedule.step(train_err=None if schedule.warm_done else 1 - float(correct) / len(y))
            if ema is not None and s.step % self.recipe.ema_every == 0:
                ema.update(self.model)
            if self.read_due():
                self.read()
            self.on_step_end()
        self.read()
        self.progress.close()

    def on_step_end(self) -> None:
        """Called after every step (a hook for subclasses and tests; the state is `self.state`)."""

    def read_due(self) -> bool:
        """Whether the tallies are read after this step."""
        step, cfg = self.state.step, self.cfg
        return (
            self.unread >= self.read_every
            or not self.state.schedule.warm_done
            or (cfg.log_every and step % cfg.log_every == 0)
            or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0)
        )

    def read(self) -> None:
        """Read the tallies from the device: stop on a non-finite loss, log the step window,
        show progress, checkpoint when due, stop when asked."""
        if not self.unread:
            return
        s, cfg = self.state, self.cfg
        tally = self.step_fn.read("epoch")
        now = time.perf_counter()
        self.epoch_seconds += now - self.t_read
        self.t_read = now
        s.epoch_acc = {"loss": tally.loss, "correct": tally.correct, "count": tally.count,
                       "seconds": self.epoch_seconds}  # fmt: skip
        bad, stop = tally.bad > 0, self.stop_asked
        if self.info.enabled:  # every rank stops together
            bad, stop = distributed.any_flags([bad, stop], self.info)
        if bad:
            at = tally.first_bad_step if tally.first_bad_step > 0 else s.step
            lr = self.lrs.get(at, s.schedule.optimizer.param_groups[-1]["lr"])
            epoch = (at - 1) // self.steps_per_epoch + 1
            raise NonFiniteLoss(
                f"loss became {_loss_text(tally)} at epoch {epoch}, step {at} (lr {lr:.3g}); "
                "the update was skipped and the last good checkpoint is kept in "
                f"{ckpt.checkpoint_path(self.out)}; try a lower learning rate"
            )
        if cfg.log_every and s.step % cfg.log_every == 0:
            w = self.step_fn.read("window")
            s.step_log.append(window_row(w, s.step, self.steps_per_epoch, self.lrs[s.step]))
            self.step_fn.reset("window")
            s.step_window = {"loss": 0.0, "correct": 0, "count": 0}
        elif cfg.log_every:
            w = self.step_fn.read("window")
            s.step_window = {"loss": w.loss, "correct": w.correct, "count": w.count}
        n = max(tally.count, 1)
        seen = (tally.count - self.count_before) * self.info.world_size
        self.progress.update(self.unread, tally.loss / n, tally.correct / n, seen)
        self.unread = 0
        self.lrs.clear()
        due = cfg.checkpoint_every and s.step % cfg.checkpoint_every == 0
        late = time.time() - self.last_checkpoint > 60 * cfg.checkpoint_minutes
        if (due or late) and s.batch < self.steps_per_epoch:
            self.save_checkpoint()
            self.t_read = time.perf_counter()  # the epoch's time leaves the saving out
        if stop:
            raise Interrupted()

    # ---------------------------------------------------------------------------------------
    # evaluate

    def eval_model(self) -> nn.Module:
        """The model to evaluate and save: the weight average when there is one."""
        ema = self.state.ema
        if ema is None:
            return self.model
        m = copy.deepcopy(self.model)
        m.load_state_dict(ema.state)
        return m

    def evaluate_on(self, model: nn.Module, loader):
        """Top-1/top-5 error and loss of `model` over `loader` (rank 0)."""
        return evaluate(model, loader, num_classes=self.num_classes, device=self.device,
                        tta_flip=self.recipe.tta_flip)  # fmt: skip

    def evaluate_epoch(self) -> dict[str, Any]:
        """The epoch's row: training sums, test (and validation) errors, speed."""
        s = self.state
        em = self.eval_model()
        test = self.evaluate_on(em, self.test_loader)
        self.final_eval = test
        acc = s.epoch_acc
        n = max(acc["count"], 1)
        row = {
            "epoch": s.epoch + 1,
            "step": s.step,
            "train_loss": acc["loss"] / n,
            "train_top1_err": 1 - acc["correct"] / n,
            "test_top1_err": test.top1_err,
            "test_top5_err": test.top5_err,
            "test_loss": test.loss,
            "lr": s.optimizer.param_groups[-1]["lr"],
            "images_per_s": acc["count"] * self.info.world_size / max(acc["seconds"], 1e-9),
            "seconds": acc["seconds"],
            "elapsed": s.elapsed + (time.time() - self.t_start),
            "wall_time": time.time(),
        }
        if self.val_loader is not None:
            val = self.evaluate_on(em, self.val_loader)
            row["val_top1_err"] = val.top1_err
            row["val_top5_err"] = val.top5_err
        self.eval_for_save = em
        return row

    # ---------------------------------------------------------------------------------------
    # log

    def log_epoch(self, row: dict[str, Any]) -> None:
        """Append the row; write metrics, steps, last and best weights; redraw the curves."""
        s, out = self.state, self.out
        s.history.append(row)
        select = row.get("val_top1_err", row["test_top1_err"])
        wmeta = dict(self.meta, epoch=row["epoch"], test_top1_err=row["test_top1_err"])
        save_weights(self.eval_for_save, out / LAST_WEIGHTS, wmeta)
        if select < s.best_err:
            s.best_err = select
            save_weights(self.eval_for_save, out / BEST_WEIGHTS, wmeta)
        write_metrics(out, s.history)
        if self.cfg.log_every:
            write_steps(out, s.step_log)
        last = row["epoch"] == self.recipe.epochs
        if last or time.time() - self.last_plot > PLOT_SECONDS:
            self.plot()
        say(epoch_line(row, self.recipe.epochs))

    def plot(self) -> None:
        """curves.png from the history so far."""
        title = f"{self.cfg.model} on {self.splits.name} ({self.recipe.name} recipe)"
        plot_curves(self.out, self.state.history, title)
        self.last_plot = time.time()

    # ---------------------------------------------------------------------------------------
    # checkpoint

    def save_checkpoint(self) -> None:
        """Write the run's state (rank 0), atomically."""
        if self.info.is_main:
            weights, state = self.state.checkpoint(
                config=self.cfg.to_dict(),
                recipe=self.recipe.to_dict(),
                meta=self.meta,
                elapsed_now=time.time() - self.t_start,
            )
            ckpt.save_checkpoint(ckpt.checkpoint_path(self.out), weights, state)
        self.last_checkpoint = time.time()

    def ask_to_stop(self) -> None:
        """Ctrl-C or SIGTERM: stop at the next read, with a checkpoint."""
        self.stop_asked = True
        if self.info.is_main:
            print("stopping after this step (Ctrl-C again to stop at once)", file=sys.stderr)

    # ---------------------------------------------------------------------------------------
    # finish

    def finish(self) -> dict[str, Any]:
        """The summary (rank 0): final test accuracy, best epoch, times; summary.json."""
        if not self.info.is_main:
            return {}
        s, cfg, recipe, out = self.state, self.cfg, self.recipe, self.out
        if self.final_eval is None:  # resumed at the very end: evaluate what was trained
            self.final_eval = self.evaluate_on(self.eval_model(), self.test_loader)
            self.plot()
        final = self.final_eval
        best_row = min(s.history, key=lambda r: r.get("val_top1_err", r["test_top1_err"]))
        summary = {
            "model": cfg.model,
            "dataset": self.splits.name,
            "recipe": recipe.to_dict(),
            "config": cfg.to_dict(),
            "epochs": recipe.epochs,
            "steps": s.step,
            "final_test_top1_err": final.top1_err,
            "final_test_top5_err": final.top5_err,
            "final_test_accuracy": final.top1_acc,
            "best_epoch": best_row["epoch"],
            "best_test_top1_err": best_row["test_top1_err"],
            "train_seconds": sum(r["seconds"] for r in s.history),
            "setup_seconds": self.setup_seconds,
            "elapsed_seconds": s.elapsed + (time.time() - self.t_start),
            "tta_flip": recipe.tta_flip,
            "precision": precision_name(self.dtype),
            "compiled": self.compiled,
            "cuda_graphs": self.step_fn.graphs,
            "world_size": self.info.world_size,
            "weights": {"last": str(out / LAST_WEIGHTS), "best": str(out / BEST_WEIGHTS)},
        }
        write_summary(out, summary)
        say(
            f"test accuracy {100 * final.top1_acc:.2f}% (top-5 "
            f"{100 * (1 - final.top5_err):.2f}%{', flip TTA' if recipe.tta_flip else ''}) "
            f"-> {out / LAST_WEIGHTS}"
        )
        return summary


# --------------------------------------------------------------------------------------------
# small helpers


def say(text: str) -> None:
    """Print a line of the run's log (callers print on rank 0 only)."""
    print(text, flush=True)


def _tally(sums: dict[str, float]):
    from .step import Tally

    return Tally(sums["loss"], int(sums["correct"]), int(sums["count"]))


def _loss_text(tally) -> str:
    v = tally.first_bad_loss
    return str(v) if not math.isfinite(v) else f"{v:.4g} with non-finite gradients"
