"""A run's settings: `TrainConfig`, filled by the command line and stored in the checkpoint, and
`check_config`, the one check of them: everything downstream (recipes, the policy's deciders,
the trainer) trusts a checked config."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ResnetlabError
from ..policy import check_settings
from .logs import check_logs
from .recipes import RECIPE_CHOICES


@dataclass
class TrainConfig:
    """Everything a run needs; the command line fills it, a checkpoint stores it."""

    model: str
    data: str
    out: str = "runs/train"
    recipe: str = "auto"  # auto: accel on CUDA unless a batch size is given, else fast
    epochs: int | None = None  # None: the recipe's
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None  # None: the recipe's (experiment overfitting sets 0)
    seed: int = 0
    subset: int | None = None
    val_split: float = 0.0
    precision: str = "auto"  # auto, fp32, bf16, fp16
    compile: str = "auto"  # auto, on, off
    model_options: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    freeze: list[str] = field(default_factory=list)
    body_lr_scale: float | None = None  # None: 0.1 with --init-from, else 1
    sync_bn: bool = False
    augment: bool = True  # False: no translation, flips or erasing whatever the recipe says
    checkpoint_every: int = 0  # steps; 0: only at epoch ends (and every `checkpoint_minutes`)
    checkpoint_minutes: float = 10.0
    log_every: int = 0  # steps; >0: also log the training error of the batches as trained
    device: str = "auto"
    threads: int | None = None  # CPU threads; None: the cores not already busy (see cpu_threads)
    quiet: bool = False  # print only the final line (warnings still go to stderr)
    eval_every: int = 1  # epochs between evaluations; the last epoch is always evaluated
    eval_images: int | None = None  # per-epoch evaluations on a fixed seeded subset; None: all
    size: int | None = None  # image folders: side images are resized to (see train/rundata.py)
    mode: str | None = None  # image folders: "RGB" or "L"; None: L when every image is grey
    skip_bad: bool = False  # image folders: skip unreadable files, and say how many
    log: list[str] = field(default_factory=list)  # logs besides metrics.jsonl/.csv: "tensorboard"

    def to_dict(self) -> dict[str, Any]:
        """Plain values (weights_only-loadable)."""
        return asdict(self)


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# the numbers of a TrainConfig: (is the value right? (None is always allowed), what would be)
CONFIG_NUMBERS = {
    "epochs": (lambda v: _whole(v) and v >= 1, "a whole number >= 1"),
    "batch_size": (lambda v: _whole(v) and v >= 1, "a whole number >= 1"),
    "lr": (lambda v: _real(v) and v > 0, "a finite number > 0"),
    "weight_decay": (lambda v: _real(v) and v >= 0, "a finite number >= 0"),
    "seed": (lambda v: _whole(v) and 0 <= v < 2**32, "a whole number in [0, 2**32)"),
    "subset": (lambda v: _whole(v) and v >= 1, "a whole number >= 1"),
    "val_split": (lambda v: _real(v) and v >= 0, "a fraction in [0, 1) or a count of images"),
    "body_lr_scale": (lambda v: _real(v) and v >= 0, "a finite number >= 0"),
    "checkpoint_every": (lambda v: _whole(v) and v >= 0, "a whole number of steps >= 0"),
    "checkpoint_minutes": (lambda v: _real(v) and v > 0, "a finite number of minutes > 0"),
    "log_every": (lambda v: _whole(v) and v >= 0, "a whole number of steps >= 0"),
    "eval_every": (lambda v: _whole(v) and v >= 1, "a whole number of epochs >= 1"),
    "eval_images": (lambda v: _whole(v) and v >= 1, "a whole number of images >= 1"),
    "size": (lambda v: _whole(v) and v >= 1, "a whole number of pixels >= 1"),
}
IMAGE_MODES = ("RGB", "L")


def check_config(cfg: TrainConfig) -> None:
    """Fail in one line naming the setting, its value and what is expected, if a number is off
    (NaN, infinite, negative, of the wrong type), a choice is unknown or options are not a
    mapping. The one place a run's settings are checked (recipes, the policy's deciders and the
    trainer trust them); device, precision, compile and threads by policy.check_settings, the
    rules every caller of the policy shares. The command line adds flag names."""
    for key, (ok, expected) in CONFIG_NUMBERS.items():
        v = getattr(cfg, key)
        if v is not None and not ok(v):
            raise ResnetlabError(f"{key} {v!r}: expected {expected}", argument=key)
    for key in ("model", "data", "out", "recipe", "precision", "compile", "device"):
        if not isinstance(getattr(cfg, key), str):
            raise ResnetlabError(f"{key} {getattr(cfg, key)!r}: expected a string", argument=key)
    if cfg.recipe not in RECIPE_CHOICES:
        raise ResnetlabError(
            f"recipe {cfg.recipe!r}: use {', '.join(RECIPE_CHOICES)}", argument="recipe"
        )
    check_settings(
        device=cfg.device, precision=cfg.precision, compile=cfg.compile, threads=cfg.threads
    )
    if not isinstance(cfg.model_options, dict):
        raise ResnetlabError(
            f"model options {cfg.model_options!r}: expected a mapping of KEY=VALUE settings"
        )
    if not isinstance(cfg.freeze, list) or not all(isinstance(f, str) for f in cfg.freeze):
        raise ResnetlabError(
            f"freeze {cfg.freeze!r}: expected a list of part names", argument="freeze"
        )
    if cfg.mode is not None and cfg.mode not in IMAGE_MODES:
        raise ResnetlabError(f"mode {cfg.mode!r}: use {', '.join(IMAGE_MODES)}", argument="mode")
    check_logs(cfg.log)
