"""fit: the way in to training, from Python and from the command line.

`fit(TrainConfig)` does everything `resnetlab train` does and returns the summary;
`fit(model, train_data, val_data=None, **settings)` runs the same trainer on a model object the
caller holds (trained in place) and data in memory, a name or a path, and returns a FitResult.
Both check the settings once (config.check_config), then `train_model` locks the run's folder,
joins the torchrun group if there is one, sets the Trainer up (setup.py) and runs it (trainer.py,
which reads top to bottom: epochs, evaluation, checkpoints).
"""

from __future__ import annotations

import contextlib
import difflib
import os
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, overload

from torch import nn

from ..data import DataSplits
from ..data.sources import input_paths
from ..errors import ResnetlabError
from ..files import check_apart
from ..models.weights import model_metadata
from . import distributed
from .callbacks import check_callbacks
from .config import TrainConfig, check_config
from .rundata import IN_MEMORY, as_splits, is_folder_source
from .rundir import BEST_WEIGHTS, LAST_WEIGHTS, remove_stale_temporaries, run_lock
from .setup import set_up
from .trainer import Trainer


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
    check_config(cfg)
    if splits is not None and not isinstance(splits, DataSplits):
        splits, _ = as_splits(splits, None, cfg)
    return _train(cfg, splits, resume, callbacks, None).summary


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
    cfg = TrainConfig(model=config["name"], data=IN_MEMORY, model_options=options, **settings)
    check_config(cfg)
    if isinstance(train_data, (str, os.PathLike)) and is_folder_source(os.fspath(train_data)):
        cfg = _folder_for_model(cfg, model)
    splits, name = as_splits(train_data, val_data, cfg)
    cfg = replace(cfg, data=name)
    trainer = _train(cfg, splits, resume, callbacks, model)
    best = trainer.out / BEST_WEIGHTS if trainer.eval_loaders else None
    stopped = trainer.state.stopped
    return FitResult(
        model=trainer.user_model,
        summary=trainer.summary,
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
    check_config(cfg)
    trainer = _train(cfg, splits, resume, callbacks, model)
    return trainer.user_model, trainer.summary


def _train(cfg, splits, resume, callbacks, model) -> Trainer:
    """Run the checked `cfg` in its locked folder, in the torchrun group if there is one."""
    t_start = time.time()
    callbacks = check_callbacks(callbacks)
    # the run's folder apart from its inputs (a data set's name: the folders it is read from)
    check_apart(cfg.out, (*input_paths(cfg.data), cfg.init_from))
    info = distributed.setup(cfg.device)
    try:
        with run_lock(Path(cfg.out)) if info.is_main else contextlib.nullcontext():
            if info.is_main:
                remove_stale_temporaries(Path(cfg.out))
            trainer = set_up(cfg, splits, resume, info, model, callbacks, t_start)
            trainer.run()
            return trainer
    finally:
        distributed.cleanup(info)
