"""The training loop: data in, a trained model, its log, plots and checkpoints out.

`fit(TrainConfig)` does everything `resnetlab train` does, in named phases that read top to
bottom: set up (data, model, optimiser, state), then per epoch train, evaluate, log and
checkpoint, then finish. `fit(model, train_data, val_data=None, **settings)` runs the same loop
on a model object the caller holds (trained in place) and data in memory, a name or a path.
The learning rate is a function of the step, the data of (seed, epoch, batch), and a checkpoint
carries the rest (RunState), so a resumed run replays exactly what an uninterrupted one computes.

Evaluation costs what it must: an epoch is evaluated every `eval_every` epochs on plain images
(on a fixed subset of `eval_images` per split when set); the last epoch, the final evaluation,
on every image, with the mirrored view when the recipe says so. Callbacks (callbacks.py) see
each epoch's row and may stop the run, which then ends as a finished run does.

Nothing inside an epoch waits for the device: the step keeps its tallies there (step.py), and
the loop reads them every `read_every` steps (every step on a CPU, where reading is free), at
log and checkpoint steps and at the epoch's end. A non-finite loss is masked on the device and
stops the run at the next read.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import math
import os
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, overload

from torch import nn

from ..data import DataSplits
from ..errors import ResnetlabError
from ..files import check_apart
from ..models import save_weights
from ..models.weights import model_metadata
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
from .callbacks import EpochState, call, check_callbacks
from .config import CONFIG_NUMBERS, TrainConfig, check_config  # noqa: F401
from .evaluate import evaluate
from .finetune import freeze, init_from, param_groups  # noqa: F401
from .logs import (
    Progress,
    epoch_line,
    final_line,
    log_callbacks,
    plot_curves,
    warn,
    window_row,
    write_metrics,
    write_steps,
    write_summary,
)
from .recipes import too_few_steps
from .resume import change_text, saved_config
from .rundata import is_folder_source
from .rundir import (  # noqa: F401
    BEST_WEIGHTS,
    LAST_WEIGHTS,
    LOCK_NAME,
    NAMES_WRITTEN,
    clear_run,
    remove_stale_temporaries,
    run_lock,
    stop_on_signals,
)
from .setup import EVAL_BATCH, READ_EVERY, as_splits, describe, load_data, set_up  # noqa: F401

PLOT_SECONDS = 30.0  # redraw curves.png at most this often (and always at the end)


class NonFiniteLoss(ResnetlabError):
    """The loss became NaN or infinite."""


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) arrived; a checkpoint has been saved."""


@dataclass
class FitResult:
    """What `fit(model, data, ...)` returns: the model (trained in place) and the run's record."""

    model: nn.Module  # the model given, with its last weights (not a weight average)
    summary: dict[str, Any]  # as summary.json ({} on processes other than rank 0)
    history: list[dict[str, Any]]  # the metrics.jsonl rows, one per epoch
    weights: Path  # last.safetensors: the final weights with their metadata
    best_weights: Path | None  # best.safetensors (None when nothing was evaluated)
    stopped_early: bool  # whether a callback stopped the run
    stop_reason: str | None  # the callback's reason


@overload
def fit(
    config: TrainConfig,
    splits: Any = None,
    resume: str | None = None,
    *,
    callbacks: list[Any] | None = None,
    **settings: Any,
) -> dict[str, Any]: ...


@overload
def fit(
    model: nn.Module,
    train_data: Any,
    val_data: Any = None,
    *,
    resume: str | None = None,
    callbacks: list[Any] | None = None,
    **settings: Any,
) -> FitResult: ...


def fit(model_or_config: Any, *args: Any, **kwargs: Any) -> dict[str, Any] | FitResult:
    """Train. `fit(TrainConfig, splits=None, resume=None)` runs as `resnetlab train` does and
    returns the summary; `fit(model, train_data, val_data=None, **settings)` trains a model object
    in place on data (an ImageDataset, a DataSplits, an (images, labels) pair, or a dataset name or
    path) with TrainConfig's fields as settings, and returns a FitResult. Both take `callbacks`."""
    if isinstance(model_or_config, TrainConfig):
        return _fit_config(model_or_config, *args, **kwargs)
    return _fit_model(model_or_config, *args, **kwargs)


def _fit_config(
    cfg: TrainConfig,
    /,
    splits: Any = None,
    resume: str | None = None,
    *,
    callbacks: list[Any] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    if settings:
        cfg = replace(cfg, **_check_settings(settings, ()))
    if splits is not None and not isinstance(splits, DataSplits):
        splits, _ = as_splits(splits, None, cfg)
    return train_model(cfg, splits, resume, callbacks=callbacks)[1]


def _fit_model(
    model: nn.Module,
    /,
    train_data: Any,
    val_data: Any = None,
    *,
    resume: str | None = None,
    callbacks: list[Any] | None = None,
    **settings: Any,
) -> FitResult:
    config = getattr(model, "resnetlab_config", None) if isinstance(model, nn.Module) else None
    if not config:
        raise ResnetlabError(
            f"model {type(model).__name__}: expected a model built by resnetlab.create_model "
            "(or a TrainConfig)",
            argument="model",
        )
    settings = _check_settings(settings, ("model", "data", "model_options"))
    options = {k: v for k, v in config.get("options", {}).items() if k != "in_features"}
    cfg = TrainConfig(model=config["name"], data="in-memory", model_options=options, **settings)
    check_config(cfg)
    if isinstance(train_data, (str, os.PathLike)) and is_folder_source(os.fspath(train_data)):
        cfg = _folder_for_model(cfg, model)
    splits, name = as_splits(train_data, val_data, cfg)
    cfg = replace(cfg, data=name)
    trained, summary, trainer = _train(cfg, splits, resume, callbacks, model)
    best = trainer.out / BEST_WEIGHTS if trainer.eval_loaders else None
    stopped = trainer.state.stopped
    return FitResult(
        model=trained,
        summary=summary,
        history=list(trainer.state.history),
        weights=trainer.out / LAST_WEIGHTS,
        best_weights=best,
        stopped_early=bool(stopped),
        stop_reason=stopped.get("reason") if stopped else None,
    )


def _folder_for_model(cfg: TrainConfig, model: nn.Module) -> TrainConfig:
    """A class folder read for a ready model: at the input size of its weights (unless `size` is
    given) and in its channels, grey or RGB (unless `mode` is given)."""
    size = (getattr(model, "resnetlab_metadata", None) or {}).get("input_size")
    changes: dict[str, Any] = {}
    if cfg.size is None and size and len(size) == 3 and size[1] == size[2]:
        changes["size"] = int(size[1])
    in_chans = model_metadata(model).get("in_chans")
    if cfg.mode is None and in_chans in (1, 3):
        changes["mode"] = "L" if in_chans == 1 else "RGB"
    return replace(cfg, **changes)


def _check_settings(settings: dict[str, Any], refused: tuple[str, ...]) -> dict[str, Any]:
    """The settings if each is a TrainConfig field that may be set here; else one line naming
    the ones that are not."""
    allowed = [f.name for f in fields(TrainConfig) if f.name not in refused]
    unknown = [k for k in settings if k not in allowed]
    if not unknown:
        return settings
    if any(k in refused for k in unknown):
        given = ", ".join(k for k in unknown if k in refused)
        raise ResnetlabError(
            f"setting(s) {given}: the model and the data are fit's first arguments; build "
            "options go to create_model",
            argument=unknown[0],
        )
    hints = [difflib.get_close_matches(k, allowed, n=1) for k in unknown]
    shown = ", ".join(k + (f" (did you mean {h[0]}?)" if h else "") for k, h in zip(unknown, hints))
    raise ResnetlabError(
        f"unknown setting(s) {shown}; settings are TrainConfig's fields: {', '.join(allowed)}",
        argument=unknown[0],
    )


def train_model(
    cfg: TrainConfig,
    splits: DataSplits | None = None,
    resume: str | None = None,
    *,
    callbacks: list[Any] | None = None,
    model: nn.Module | None = None,
) -> tuple[nn.Module, dict]:
    """As fit, and also return the trained model (its last weights, not the moving average);
    `model`: a ready model to train in place instead of a fresh one of `cfg.model`."""
    trained, summary, _ = _train(cfg, splits, resume, callbacks, model)
    return trained, summary


def _train(cfg, splits, resume, callbacks, model) -> tuple[nn.Module, dict, Trainer]:
    t_start = time.time()
    check_config(cfg)
    callbacks = check_callbacks(callbacks)
    # the run's folder apart from its data and starting weights (files.check_apart)
    check_apart(cfg.out, (cfg.data, cfg.init_from))
    info = distributed.setup(cfg.device)
    try:
        with run_lock(Path(cfg.out)) if info.is_main else contextlib.nullcontext():
            if info.is_main:
                remove_stale_temporaries(Path(cfg.out))
            trainer = Trainer(cfg, splits, resume, info, t_start, model=model, callbacks=callbacks)
            trained, summary = trainer.run()
            return trained, summary, trainer
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
        *,
        model: nn.Module | None = None,
        callbacks: list[Any] | None = None,
    ) -> None:
        self.info, self.t_start = info, t_start
        self.__dict__.update(vars(set_up(cfg, splits, resume, info, model)))
        if info.is_main and resume is None:  # a fresh run leaves nothing of an earlier one
            clear_run(self.out)  # (the command line asks for --overwrite first)
        logs = log_callbacks(self.cfg.log, self.out) if info.is_main else []
        self.callbacks = [*logs, *(callbacks or [])]
        self.stop_asked = False
        self.last_checkpoint = time.time()
        self.last_plot = 0.0
        self.final_eval: dict[str, Any] | None = None  # split name -> EvalResult, at the end
        self.epoch_state = EpochState(
            epochs=self.recipe.epochs,
            model=self.model,
            has_test="test" in self.eval_loaders,
            has_val="val" in self.eval_loaders,
            epoch=self.state.epoch,
            step=self.state.step,
            history=self.state.history,
        )
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            for line in describe(self, resume) if not self.cfg.quiet else []:
                say(line)
            # a fine-tune starts from trained weights: a short schedule is its normal case
            fresh = resume is None and not self.cfg.init_from
            short = too_few_steps(self.recipe, self.steps_per_epoch) if fresh else None
            if short:
                warn(short)

    # ---------------------------------------------------------------------------------------
    # the run

    def run(self) -> tuple[nn.Module, dict]:
        """Every epoch from where the state stands: train, evaluate, log, call back, checkpoint;
        until the last epoch or until a callback stops the run."""
        self.setup_seconds = time.time() - self.t_start  # reading data, building, restoring
        if self.info.is_main:
            call(self.callbacks, "on_train_begin", self.epoch_state)
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
                    self.state.epoch_acc = {"loss": 0.0, "correct": 0, "count": 0, "seconds": 0.0}
                    if stop:
                        self.state.stopped = {"epoch": epoch + 1, "reason": reason or ""}
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
        summary = self.finish()
        if self.model is not self.user_model:  # converted for the run (sync BN): copy back
            self.user_model.load_state_dict(self.model.state_dict())
        describe_trained(self.user_model, self.meta, self.out / LAST_WEIGHTS)
        if self.info.is_main:
            call(self.callbacks, "on_train_end", self.epoch_state)
        return self.user_model, summary

    def epoch_end(self, row: dict[str, Any]) -> str | None:
        """Show the callbacks the epoch's row; the reason to stop, if one of them asks."""
        es = self.epoch_state
        es.epoch, es.step, es.metrics = row["epoch"], self.state.step, row
        es.history = self.state.history
        call(self.callbacks, "on_epoch_end", es)
        if not es.stop:
            return None
        if row["epoch"] >= self.recipe.epochs:  # the run ends here anyway
            return None
        if not es.stop_reason:
            es.stop_reason = "a callback stopped the run"
        if not self.cfg.quiet:
            say(f"stopping after epoch {row['epoch']}/{self.recipe.epochs}: {es.stop_reason}")
        return es.stop_reason

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

    def evaluate_on(self, model: nn.Module, loader, *, tta: bool, desc: str):
        """Top-1/top-5 error and loss of `model` over `loader` (rank 0), with progress shown."""
        progress = Progress(len(loader), desc, enabled=self.info.is_main and not self.cfg.quiet)
        try:
            return evaluate(model, _shown(loader, progress), num_classes=self.num_classes,
                            device=self.device, tta_flip=tta)  # fmt: skip
        finally:
            progress.close()

    def evaluate_all(self, model: nn.Module, epoch: int, *, final: bool) -> dict[str, Any]:
        """Every split's EvalResult: the final evaluation on every image, with flips when the
        recipe flips; an epoch's on plain images of its subset."""
        loaders = self.eval_loaders if final else self.epoch_loaders
        tta = self.recipe.tta_flip and final
        results = {}
        for name, loader in loaders.items():
            n = loader.num_samples
            what = f"{n} {name} images{', flip TTA' if tta else ''}"
            desc = f"evaluate epoch {epoch}/{self.recipe.epochs} ({what})"
            results[name] = self.evaluate_on(model, loader, tta=tta, desc=desc)
        return results

    def evaluate_epoch(self, epoch: int) -> dict[str, Any]:
        """The epoch's row: training sums, test (and validation) errors when evaluated, speed.
        The last epoch is the final evaluation; others come every `eval_every` epochs."""
        s = self.state
        em = self.eval_model()
        acc = s.epoch_acc
        n = max(acc["count"], 1)
        row = {
            "epoch": s.epoch + 1,
            "step": s.step,
            "train_loss": acc["loss"] / n,
            "train_top1_err": 1 - acc["correct"] / n,
        }
        changed = [c for c in s.changes if c["epoch"] == row["epoch"]]
        if changed:  # settings given on resume, applied from the step each record names
            row["changed"] = change_text(changed)
        final = epoch + 1 == self.recipe.epochs
        if self.eval_loaders and (final or (epoch + 1) % self.cfg.eval_every == 0):
            t0 = time.perf_counter()
            results = self.evaluate_all(em, epoch + 1, final=final)
            row["eval_seconds"] = time.perf_counter() - t0
            for name, res in results.items():
                row[f"{name}_top1_err"] = res.top1_err
                row[f"{name}_top5_err"] = res.top5_err
                row[f"{name}_loss"] = res.loss
                row[f"{name}_images"] = res.n
            row["eval_tta"] = self.recipe.tta_flip and final
            if final:
                self.final_eval = results
        row.update({
            "lr": s.optimizer.param_groups[-1]["lr"],
            "images_per_s": acc["count"] * self.info.world_size / max(acc["seconds"], 1e-9),
            "seconds": acc["seconds"],
            "elapsed": s.elapsed + (time.time() - self.t_start),
            "wall_time": time.time(),
        })  # fmt: skip
        self.eval_for_save = em
        return row

    # ---------------------------------------------------------------------------------------
    # log

    def log_epoch(self, row: dict[str, Any]) -> None:
        """Append the row; write metrics, steps, last and best weights; redraw the curves."""
        s, out = self.state, self.out
        s.history.append(row)
        select = _selection_err(row)
        wmeta = dict(self.meta, epoch=row["epoch"])
        if "test_top1_err" in row:
            wmeta["test_top1_err"] = row["test_top1_err"]
        save_weights(self.eval_for_save, out / LAST_WEIGHTS, wmeta)
        if select is not None and select < s.best_err:
            s.best_err = select
            save_weights(self.eval_for_save, out / BEST_WEIGHTS, wmeta)
        write_metrics(out, s.history)
        if self.cfg.log_every:
            write_steps(out, s.step_log)
        last = row["epoch"] == self.recipe.epochs
        if last or time.time() - self.last_plot > PLOT_SECONDS:
            self.plot()
        if not self.cfg.quiet:
            say(epoch_line(row, self.recipe.epochs, self.num_classes))

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
                config=saved_config(self.cfg, self.out),
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
        """The summary (rank 0): final test accuracy, best epoch, times, whether and why a
        callback stopped the run; summary.json."""
        if not self.info.is_main:
            return {}
        s, cfg, recipe, out = self.state, self.cfg, self.recipe, self.out
        stopped = s.stopped
        final_seconds = 0.0  # a final evaluation of its own (the last row's is in the rows)
        if self.final_eval is None and self.eval_loaders:  # stopped early, or resumed at the end
            em = self.eval_model()
            t0 = time.perf_counter()
            self.final_eval = self.evaluate_all(em, len(s.history), final=True)
            final_seconds = time.perf_counter() - t0
            if stopped:  # the final weights carry the final evaluation's error
                wmeta = dict(self.meta, epoch=len(s.history))
                if "test" in self.final_eval:
                    wmeta["test_top1_err"] = self.final_eval["test"].top1_err
                save_weights(em, out / LAST_WEIGHTS, wmeta)
            self.plot()
        final = self.final_eval or {}
        summary: dict[str, Any] = {
            "model": cfg.model,
            "dataset": self.splits.name,
            "recipe": recipe.to_dict(),
            "config": cfg.to_dict(),
            "epochs": recipe.epochs,
            "epochs_trained": len(s.history),
            "steps": s.step,
        }
        for name, res in final.items():
            summary[f"final_{name}_top1_err"] = res.top1_err
            summary[f"final_{name}_top5_err"] = res.top5_err
            summary[f"final_{name}_accuracy"] = res.top1_acc
        evaluated = [r for r in s.history if _selection_err(r) is not None]
        if evaluated:
            best_row = min(evaluated, key=_selection_err)
            summary["best_epoch"] = best_row["epoch"]
            for key in ("test_top1_err", "val_top1_err"):
                if key in best_row:
                    summary[f"best_{key}"] = best_row[key]
        weights = {"last": str(out / LAST_WEIGHTS)}
        if evaluated:
            weights["best"] = str(out / BEST_WEIGHTS)
        summary.update({
            "stopped_early": bool(stopped),
            "stop_reason": stopped.get("reason") if stopped else None,
            "train_seconds": sum(r["seconds"] for r in s.history),
            "eval_seconds": sum(r.get("eval_seconds", 0.0) for r in s.history) + final_seconds,
            "setup_seconds": self.setup_seconds,
            "elapsed_seconds": s.elapsed + (time.time() - self.t_start),
            "tta_flip": recipe.tta_flip,
            "precision": precision_name(self.dtype),
            "compiled": self.compiled,
            "cuda_graphs": self.step_fn.graphs,
            "world_size": self.info.world_size,
            "weights": weights,
        })  # fmt: skip
        write_summary(out, summary)
        say(self.final_line(final))
        return summary

    def final_line(self, final: dict[str, Any]) -> str:
        """The last line printed: the final accuracy on test (else validation) data."""
        last = self.out / LAST_WEIGHTS
        name = "test" if "test" in final else "val" if "val" in final else None
        if name is None:
            epochs = len(self.state.history)
            return (
                f"trained {epochs} epoch{'s' if epochs != 1 else ''}; no test or validation data "
                f"to evaluate -> {last}"
            )
        res, split = final[name], "test" if name == "test" else "validation"
        acc5 = 1 - res.top5_err
        return final_line(split, res.top1_acc, acc5, self.num_classes, self.recipe.tta_flip, last)


# --------------------------------------------------------------------------------------------
# small helpers


def say(text: str) -> None:
    """Print a line of the run's log (callers print on rank 0 only)."""
    print(text, flush=True)


def describe_trained(model: nn.Module, meta: dict[str, Any], weights: Path) -> None:
    """Make the model describe what it was trained for (its pretrained_cfg and
    resnetlab_metadata: the data's classes, input size, mean and std), so that save_weights
    and a later fit read them from the model."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict):
        model.pretrained_cfg = dict(
            cfg,
            tag=None,
            file=str(weights),
            input_size=tuple(meta["input_size"]),
            mean=tuple(meta["mean"]),
            std=tuple(meta["std"]),
            num_classes=len(meta["classes"]),
            classes=list(meta["classes"]),
        )
    model.resnetlab_metadata = {**model_metadata(model), **meta}


def _selection_err(row: dict[str, Any]) -> float | None:
    """The error that chooses the best epoch: validation, else test; None if not evaluated."""
    return row.get("val_top1_err", row.get("test_top1_err"))


def _shown(loader, progress: Progress):
    """The batches of `loader`, counted on `progress` as they are consumed."""
    images = 0
    for x, y in loader:
        yield x, y
        images += len(y)
        progress.update(1, images=images)


def _tally(sums: dict[str, float]):
    from .step import Tally

    return Tally(sums["loss"], int(sums["correct"]), int(sums["count"]))


def _loss_text(tally) -> str:
    v = tally.first_bad_loss
    return str(v) if not math.isfinite(v) else f"{v:.4g} with non-finite gradients"
