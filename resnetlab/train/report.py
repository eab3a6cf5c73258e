"""What a run says about itself: its description when it starts, its summary when it ends.

Both read a finished set-up (trainer.py's Trainer) and write nothing: the trainer prints the
description, and writes the summary as summary.json (logs.write_summary) before printing its last
line. The summary's keys are the ones `fit` returns and `resnetlab train` has always written.
"""

from __future__ import annotations

import time
from typing import Any

from .logs import final_line, plural
from .recipes import lr_note
from .resume import change_text
from .rundir import BEST_WEIGHTS, LAST_WEIGHTS


def describe_run(t, resume: str | None) -> list[str]:
    """The run's one-line description (data, recipe, plan), then what it was initialised from,
    how it is evaluated, where it resumed and what changed on resuming; `t` a Trainer."""
    cfg, recipe, sp, s = t.cfg, t.recipe, t.splits, t.state
    parts = (("train", sp.train), ("test", sp.test), ("validation", sp.val))
    sizes = " / ".join(f"{len(ds)} {name}" for name, ds in parts if ds is not None)
    shape = "x".join(map(str, t.meta["input_size"]))
    procs = f", {t.info.world_size} processes" if t.info.enabled else ""
    lines = [
        f"train {cfg.model} on {sp.name}: {sizes} images {shape}, {t.num_classes} classes; "
        f"recipe {recipe.name}, {plural(recipe.epochs, 'epoch')} of "
        f"{plural(t.steps_per_epoch, 'step')}, batch {recipe.batch_size}, lr {recipe.lr:g}"
        f"{lr_note(recipe)}; {t.plan.describe()}{procs}"
    ]
    if t.note_init:
        lines.append(t.note_init)
    if cfg.eval_every > 1 or cfg.eval_images is not None:
        every = f"every {cfg.eval_every} epochs" if cfg.eval_every > 1 else "every epoch"
        part = f" on {cfg.eval_images} images of each split" if cfg.eval_images else ""
        lines.append(f"evaluated {every}{part}; the last epoch on every image")
    if resume is not None:
        lines.append(
            f"resumed from {resume} at epoch {s.epoch + 1}, batch {s.batch}, step {s.step}"
        )
        if t.changes:
            lines.append(f"changed on resume: {change_text(t.changes)}")
    return lines


def epoch_row(t, results: dict[str, Any], eval_seconds: float, *, tta: bool) -> dict[str, Any]:
    """An epoch's metrics.jsonl row: the training sums, the settings changed on resume from this
    epoch, each evaluated split's errors, loss and images (`results`, split -> EvalResult; none
    on an epoch not evaluated), the learning rate, speed and times; `t` a Trainer."""
    s, tally = t.state, t.state.epoch_tally
    n = max(tally.count, 1)
    row = {"epoch": s.epoch + 1, "step": s.step, "train_loss": tally.loss / n,
           "train_top1_err": 1 - tally.correct / n}  # fmt: skip
    changed = [c for c in s.changes if c["epoch"] == row["epoch"]]
    if changed:  # settings given on resume, applied from the step each record names
        row["changed"] = change_text(changed)
    if results:
        row["eval_seconds"] = eval_seconds
        for name, res in results.items():
            row.update({f"{name}_top1_err": res.top1_err, f"{name}_top5_err": res.top5_err,
                        f"{name}_loss": res.loss, f"{name}_images": res.n})  # fmt: skip
        row["eval_tta"] = tta
    now = time.time()
    row.update({
        "lr": s.optimizer.param_groups[-1]["lr"],
        "images_per_s": tally.count * t.info.world_size / max(s.epoch_seconds, 1e-9),
        "seconds": s.epoch_seconds,
        "elapsed": s.elapsed + (now - t.t_start),
        "wall_time": now,
    })  # fmt: skip
    return row


def run_summary(t, final: dict[str, Any], final_seconds: float, now: float) -> dict[str, Any]:
    """summary.json: the final errors, the best epoch, the times, how it computed, whether and
    why a callback stopped the run, the weights written; `t` a finished Trainer, `final` the
    final evaluation (split -> EvalResult), `now` the time (time.time)."""
    s, cfg, recipe, out = t.state, t.cfg, t.recipe, t.out
    summary: dict[str, Any] = {
        "model": cfg.model,
        "dataset": t.splits.name,
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
    evaluated = [r for r in s.history if selection_err(r) is not None]
    if evaluated:
        best_row = min(evaluated, key=selection_err)
        summary["best_epoch"] = best_row["epoch"]
        for key in ("test_top1_err", "val_top1_err"):
            if key in best_row:
                summary[f"best_{key}"] = best_row[key]
    weights = {"last": str(out / LAST_WEIGHTS)}
    if evaluated:
        weights["best"] = str(out / BEST_WEIGHTS)
    summary.update({
        "stopped_early": bool(s.stopped),
        "stop_reason": s.stopped.get("reason") if s.stopped else None,
        "train_seconds": sum(r["seconds"] for r in s.history),
        "eval_seconds": sum(r.get("eval_seconds", 0.0) for r in s.history) + final_seconds,
        "setup_seconds": t.setup_seconds,
        "elapsed_seconds": s.elapsed + (now - t.t_start),
        "tta_flip": recipe.tta_flip,
        "precision": t.plan.precision,
        "compiled": t.plan.compiled,
        "cuda_graphs": t.plan.cuda_graphs,
        "world_size": t.info.world_size,
        "weights": weights,
    })  # fmt: skip
    return summary


def last_line(t, final: dict[str, Any]) -> str:
    """The last line printed: the final accuracy on test (else validation) data."""
    last = t.out / LAST_WEIGHTS
    name = "test" if "test" in final else "val" if "val" in final else None
    if name is None:
        epochs = len(t.state.history)
        return (
            f"trained {epochs} epoch{'s' if epochs != 1 else ''}; no test or validation data "
            f"to evaluate -> {last}"
        )
    res, split = final[name], "test" if name == "test" else "validation"
    return final_line(split, res.top1_acc, 1 - res.top5_err, t.num_classes, t.recipe.tta_flip,
                      last)  # fmt: skip


def selection_err(row: dict[str, Any]) -> float | None:
    """The error that chooses the best epoch: validation, else test; None if not evaluated."""
    return row.get("val_top1_err", row.get("test_top1_err"))
