"""The training loop: data in, a trained model, its log, plots and checkpoints out.

`fit(TrainConfig)` does everything `resnetlab train` does. The loop is plain PyTorch: one
optimiser step per batch, the learning rate set from the step number, evaluation and a checkpoint
at the end of every epoch (and every `checkpoint_every` steps), so that a resumed run replays
exactly what an uninterrupted one computes.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import DataSplits, ImageDataset
from ..data.loader import BatchLoader, compute_mean_std
from ..errors import ResnetlabError
from ..hardware import native_bf16, usable_cores
from ..models import get_entry, save_weights
from ..models.factory import model_for_data
from ..models.weights import read_weights
from . import checkpoint as ckpt
from . import distributed
from .evaluate import evaluate
from .logging import Progress, plot_curves, write_metrics, write_steps, write_summary
from .recipes import Recipe, Schedule, get_recipe

LAST_WEIGHTS = "last.safetensors"
BEST_WEIGHTS = "best.safetensors"
EVAL_BATCH = 500
FAULT_ENV = "RESNETLAB_TEST_SIGNAL_AT"  # "KILL:7" or "INT:7": signal self after step 7 (tests)


@dataclass
class TrainConfig:
    """Everything a run needs; the command line fills it, a checkpoint stores it."""

    model: str
    data: str
    out: str = "runs/train"
    recipe: str = "fast"
    epochs: int | None = None  # None: the recipe's
    batch_size: int | None = None
    lr: float | None = None
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
    quiet: bool = False  # no progress display (epoch lines and the result are still printed)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (weights_only-loadable)."""
        return asdict(self)


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# the numbers of a TrainConfig: (is the value right? (None is always allowed), what would be)
CONFIG_NUMBERS = {
    "epochs": (lambda v: _whole(v) and v >= 1, "a whole number >= 1"),
    "batch_size": (lambda v: _whole(v) and v >= 1, "a whole number >= 1"),
    "lr": (lambda v: _real(v) and v > 0, "a finite number > 0"),
    "seed": (_whole, "a whole number"),
    "subset": (lambda v: _whole(v) and v >= 1, "a whole number >= 1"),
    "val_split": (lambda v: _real(v) and v >= 0, "a fraction in [0, 1) or a count of images"),
    "body_lr_scale": (lambda v: _real(v) and v >= 0, "a finite number >= 0"),
    "checkpoint_every": (lambda v: _whole(v) and v >= 0, "a whole number of steps >= 0"),
    "checkpoint_minutes": (lambda v: _real(v) and v > 0, "a finite number of minutes > 0"),
    "log_every": (lambda v: _whole(v) and v >= 0, "a whole number of steps >= 0"),
    "threads": (lambda v: _whole(v) and v >= 1, "a whole number >= 1"),
}


def check_config(cfg: TrainConfig) -> None:
    """Fail in one line naming the setting, its value and what is expected, if a number is off
    (NaN, infinite, negative, of the wrong type) or options are not a mapping."""
    for key, (ok, expected) in CONFIG_NUMBERS.items():
        v = getattr(cfg, key)
        if v is not None and not ok(v):
            raise ResnetlabError(f"{_flag(key)} {v!r}: expected {expected}")
    if not isinstance(cfg.model_options, dict):
        raise ResnetlabError(
            f"model options {cfg.model_options!r}: expected a mapping of KEY=VALUE settings"
        )
    if not isinstance(cfg.freeze, list) or not all(isinstance(f, str) for f in cfg.freeze):
        raise ResnetlabError(f"--freeze {cfg.freeze!r}: expected a list of part names")
    for key in ("model", "data", "out"):
        if not isinstance(getattr(cfg, key), str):
            raise ResnetlabError(f"{key} {getattr(cfg, key)!r}: expected a string")


NAMES_WRITTEN = (
    ckpt.CHECKPOINT_DIR, LAST_WEIGHTS, BEST_WEIGHTS, "metrics.jsonl", "steps.jsonl",
    "curves.png", "summary.json",
)  # fmt: skip
LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold `out/.lock` for the run: a second run into the same directory fails at once, in one
    line; the kernel frees the lock when the process ends, however it ends (kill -9 too)."""
    import fcntl

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    locked = False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ResnetlabError(
                f"{out} is in use by another run (process {other}); wait for it to end or "
                "choose another --out"
            ) from None
        locked = True
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        if locked and created and [p.name for p in out.iterdir()] == [LOCK_NAME]:
            shutil.rmtree(out, ignore_errors=True)  # a run that failed before writing anything
        os.close(fd)  # releases the lock


def remove_stale_temporaries(out: Path) -> list[str]:
    """Delete what a killed save left in `out` (`.checkpoint.*.tmp/`, `.last.safetensors.*.tmp`,
    ...); call only while holding the run lock, so that no live save owns them."""
    removed = []
    for p in out.glob(".*.tmp"):
        if any(p.name.startswith(f".{n}.") for n in NAMES_WRITTEN):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p.name)
    return sorted(removed)


class NonFiniteLoss(ResnetlabError):
    """The loss became NaN or infinite."""


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) arrived; a checkpoint has been saved."""


# --------------------------------------------------------------------------------------------
# building blocks


def init_from(model: nn.Module, path: str) -> str:
    """Load a project weights file or a torchvision-style state dict into `model`, all but a head
    whose class count differs; a 3-channel stem is summed over channels for 1-channel data."""
    state, meta = read_weights(path)
    own = model.state_dict()
    head = _head_prefix(model)
    loaded, skipped_head, bad = {}, [], []
    unused = []
    for k, v in state.items():
        if k not in own:
            if k.startswith(head):
                skipped_head.append(k)
            elif not k.endswith("num_batches_tracked"):
                unused.append(k)
            continue
        target = own[k]
        if v.shape == target.shape:
            loaded[k] = v
        elif k.startswith(head):
            skipped_head.append(k)
        elif (
            v.ndim == 4
            and target.ndim == 4
            and v.shape[0] == target.shape[0]
            and (target.shape[1] == 1 and v.shape[2:] == target.shape[2:])
        ):
            loaded[k] = v.sum(1, keepdim=True)  # RGB stem -> grey stem, same response to grey
        else:
            bad.append(f"{k} {tuple(v.shape)} vs model {tuple(target.shape)}")
    if bad:
        raise ResnetlabError(f"--init-from {path} does not fit this model: " + "; ".join(bad[:3]))
    if unused:
        raise ResnetlabError(
            f"--init-from {path} holds {len(unused)} tensor(s) this model has no place for, "
            f"e.g. {', '.join(unused[:3])} (weights of {meta.get('name', 'another model')}?); "
            "expected weights of the same architecture (only the head may differ)"
        )
    body_missing = [k for k in own if k not in loaded and not k.startswith(head)]
    body_missing = [k for k in body_missing if not k.endswith("num_batches_tracked")]
    if body_missing:
        raise ResnetlabError(
            f"--init-from {path} lacks {len(body_missing)} tensor(s) of this model, "
            f"e.g. {', '.join(body_missing[:3])} (weights of {meta.get('name', 'another model')}?)"
        )
    model.load_state_dict(loaded, strict=False)
    new_head = any(k.startswith(head) for k in own if k not in loaded)
    return f"loaded {len(loaded)} tensors from {path}" + (
        f"; new head ({head.rstrip('.')}) for {model.get_classifier().out_features} classes"
        if new_head
        else ""
    )


def _head_prefix(model: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is model.get_classifier():
            return name + "."
    return "fc."


def freeze(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """Stop gradients of the named top-level parts ("stem" = conv1+bn1); returns them."""
    children = dict(model.named_children())
    modules = []
    for name in names:
        if name == "stem" and "conv1" in children:
            parts = [children["conv1"], children["bn1"]]
        elif name in children and any(True for _ in children[name].parameters()):
            parts = [children[name]]
        else:
            have = ["stem"] + [n for n, m in children.items() if any(True for _ in m.parameters())]
            have = list(dict.fromkeys(h for h in have if h not in ("conv1", "bn1") or h == "stem"))
            raise ResnetlabError(f"--freeze {name!r}: no such part; choose from {', '.join(have)}")
        for m in parts:
            m.requires_grad_(False)
            modules.append(m)
    return modules


def param_groups(
    model: nn.Module, recipe: Recipe, lr: float, body_lr_scale: float
) -> list[dict[str, Any]]:
    """Body and head, each split into decayed weights and undecayed norms/biases (when asked)."""
    head_ids = {id(p) for p in model.get_classifier().parameters()}
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        is_head = id(p) in head_ids
        decay = recipe.decay_norm_and_bias or p.ndim > 1
        groups.setdefault((is_head, decay), []).append(p)
    out = []
    for (is_head, decay), params in sorted(groups.items()):
        scale = 1.0 if is_head else body_lr_scale
        out.append(
            {
                "params": params,
                "lr": lr * scale,
                "base_lr": lr * scale,
                "lr_scale": scale,
                "weight_decay": recipe.weight_decay if decay else 0.0,
            }
        )
    if not out:
        raise ResnetlabError("every parameter is frozen; nothing to train")
    return out


class EMA:
    """Exponential moving average of the floating-point weights and buffers."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One averaging step (the decay ramps up over the first updates)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            e = self.state[k]
            if v.dtype.is_floating_point:
                e.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                e.copy_(v)


def resolve_precision(precision: str, device: str) -> torch.dtype | None:
    """The autocast dtype (None: fp32). auto: bf16 where the hardware has it natively, else fp32."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ResnetlabError(f"--precision {precision!r}: use auto, fp32, bf16 or fp16")
    cuda = device.startswith("cuda")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if not cuda:
            raise ResnetlabError("--precision fp16 needs CUDA; on a CPU use bf16 or fp32")
        return torch.float16
    if cuda:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if native_bf16() else None


def precision_name(dtype: torch.dtype | None) -> str:
    """fp32, bf16 or fp16."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def busy_cores(window: float = 0.3) -> float:
    """Cores other processes keep busy now: /proc/stat sampled over `window` seconds (this
    process sleeps meanwhile). Falls back to the 1-minute load average, which lags by a minute."""

    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields), idle

    cores = usable_cores()
    try:
        total0, idle0 = sample()
        time.sleep(window)
        total1, idle1 = sample()
        if total1 > total0:
            return cores * (1.0 - (idle1 - idle0) / (total1 - total0))
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def cpu_threads(requested: int | None, world_size: int = 1) -> int:
    """Threads for a CPU run: as asked; else OMP_NUM_THREADS if set; else this process's share of
    the cores that other processes do not keep busy. On a shared machine, more threads than free
    cores make every OpenMP barrier wait for a descheduled thread: measured 2.5x slower
    (docs/training.md)."""
    if requested is not None:
        if requested < 1:
            raise ResnetlabError(f"--threads must be at least 1, got {requested}")
        return requested
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    cores = usable_cores()
    share = max(1, cores // max(world_size, 1))
    free = max(1, int(cores - busy_cores() + 0.5))
    return max(1, min(share, free, torch.get_num_threads()))


COMPILE_MIN_STEPS = 1500  # on a CPU, compiling (~1.5 min) pays after about this many steps


def resolve_compile(option: str, device: str, total_steps: int) -> bool:
    """on/off as asked; auto: on CUDA, and on a CPU for runs long enough to repay the compile
    time (measured on the 2-core machine: 1.4x faster steps after 95 s; docs/training.md)."""
    if option in ("on", True):
        return True
    if option in ("off", False):
        return False
    if option != "auto":
        raise ResnetlabError(f"--compile {option!r}: use auto, on or off")
    return device.startswith("cuda") or total_steps >= COMPILE_MIN_STEPS


# --------------------------------------------------------------------------------------------
# the run


def load_data(cfg: TrainConfig) -> DataSplits:
    """Read the source through resnetlab.data (with the validation split and subset)."""
    from ..data import load_source

    val = cfg.val_split
    val = int(val) if val >= 1 else val  # a count of images, or a fraction of train
    splits = load_source(cfg.data, val_split=val, seed=cfg.seed)
    if cfg.subset is not None:
        if cfg.subset < 1:
            raise ResnetlabError(f"--subset must be at least 1, got {cfg.subset}")
        splits.train = splits.train.subset(cfg.subset)
    return splits


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
            return _fit(cfg, splits, resume, info, t_start)
    finally:
        distributed.cleanup(info)


def _fit(
    cfg: TrainConfig,
    splits: DataSplits | None,
    resume: str | None,
    info: distributed.DistInfo,
    t_start: float,
) -> tuple[nn.Module, dict]:
    out = Path(cfg.out)
    weights_ck, state_ck = None, None
    if resume is not None:
        weights_ck, state_ck = ckpt.load_checkpoint(resume)
        was = state_ck["config"].get("model")
        if was != cfg.model:
            raise ResnetlabError(f"checkpoint in {resume} is of model {was!r}, not {cfg.model!r}")
    recipe = get_recipe(cfg.recipe, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr)
    if not cfg.augment:
        recipe = replace(recipe, pad=0, flip=False, erase=0.0)
    get_entry(cfg.model)  # an unknown name fails before the data is read
    if splits is None:
        splits = load_data(cfg)
    elif cfg.subset is not None:
        splits = DataSplits(splits.name, splits.train.subset(cfg.subset), splits.test, splits.val)
    train_set: ImageDataset = splits.train
    classes = list(train_set.classes)
    num_classes = len(classes)
    image_shape = tuple(train_set.image_shape)
    if num_classes < 2:
        raise ResnetlabError(f"{cfg.data}: {num_classes} class(es); training needs at least 2")
    if recipe.batch_size % info.world_size:
        raise ResnetlabError(
            f"--batch-size {recipe.batch_size} is not divisible by {info.world_size} processes"
        )
    local_batch = recipe.batch_size // info.world_size
    mean, std = compute_mean_std(train_set.images)

    torch.manual_seed(cfg.seed)
    model = model_for_data(cfg.model, image_shape, num_classes, cfg.model_options)
    model = distributed.convert_sync_bn(model, info, cfg.sync_bn)
    is_mlp = get_entry(cfg.model).is_mlp
    note_init = init_from(model, cfg.init_from) if cfg.init_from and state_ck is None else None
    frozen = freeze(model, cfg.freeze)
    body_scale = cfg.body_lr_scale
    if body_scale is None:
        body_scale = 0.1 if cfg.init_from else 1.0
    device = info.device
    if not device.startswith("cuda"):
        cfg = replace(cfg, threads=cpu_threads(cfg.threads, info.world_size))
        torch.set_num_threads(cfg.threads)  # kept in the checkpoint: a resumed run uses as many
    autocast_dtype = resolve_precision(cfg.precision, device)
    channels_last = not is_mlp
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)

    optimizer = torch.optim.SGD(
        param_groups(model, recipe, recipe.lr, body_scale),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov and recipe.momentum > 0,
    )
    train_loader = BatchLoader(
        train_set,
        local_batch,
        train=True,
        mean=mean,
        std=std,
        pad=recipe.pad,
        flip=recipe.flip,
        erase=recipe.erase,
        seed=cfg.seed,
        channels_last=channels_last,
        rank=info.rank,
        world_size=info.world_size,
    )
    if len(train_loader) == 0:
        raise ResnetlabError(
            f"{len(train_set)} training images make no batch of {recipe.batch_size}; "
            "lower --batch-size or raise --subset"
        )
    eval_kw = dict(train=False, mean=mean, std=std, channels_last=channels_last)
    test_loader = BatchLoader(splits.test, EVAL_BATCH, **eval_kw)
    val_loader = BatchLoader(splits.val, EVAL_BATCH, **eval_kw) if splits.val else None
    steps_per_epoch = len(train_loader)
    total_steps = recipe.epochs * steps_per_epoch
    schedule = Schedule(optimizer, recipe, total_steps, get_entry(cfg.model).depth)
    ema = EMA(model, recipe.ema_decay) if recipe.ema_decay > 0 else None
    use_scaler = autocast_dtype == torch.float16 and device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    # state that a checkpoint carries
    step = 0
    start_epoch = 0
    start_batch = 0
    history: list[dict[str, Any]] = []
    best_err = math.inf
    acc = {"loss": 0.0, "correct": 0, "count": 0, "seconds": 0.0}
    # the training error of the batches as trained, every `log_every` steps (thin curves)
    step_log: list[dict[str, Any]] = []
    window = {"loss": 0.0, "correct": 0, "count": 0}
    elapsed_before = 0.0
    if state_ck is not None:
        model_w, ema_w = ckpt.split_ema(weights_ck)
        try:
            model.load_state_dict(model_w)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise ResnetlabError(
                f"checkpoint in {resume} does not fit this model: {first}"
            ) from None
        if ema is not None and ema_w:
            ema.state = {k: v.to(device) for k, v in ema_w.items()}
            ema.updates = int(state_ck["ema_updates"])
        optimizer.load_state_dict(state_ck["optimizer"])
        schedule.load_state_dict(state_ck["schedule"])
        scaler.load_state_dict(state_ck["scaler"]) if state_ck.get("scaler") else None
        ckpt.set_rng_state(state_ck["rng"])
        step = int(state_ck["step"])
        start_epoch = int(state_ck["loader"]["epoch"])
        start_batch = int(state_ck["loader"]["batch"])
        history = list(state_ck["history"])
        best_err = float(state_ck["best_err"])
        acc = dict(state_ck["epoch_acc"])
        elapsed_before = float(state_ck["elapsed"])
        step_log = list(state_ck.get("step_log", []))
        window = dict(state_ck.get("step_window", window))

    compiled = resolve_compile(cfg.compile, device, total_steps)
    net = distributed.wrap(model, info, sync_bn=cfg.sync_bn)
    forward = torch.compile(net) if compiled else net
    dev_type = torch.device(device).type

    def autocast():
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(dev_type, dtype=autocast_dtype)

    meta = {
        "classes": classes,
        "input_size": list(image_shape),
        "mean": list(mean),
        "std": list(std),
        "dataset": splits.name,
        "tta": recipe.tta_flip,
    }
    say = _printer(info.is_main)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        say(
            f"train {cfg.model} on {splits.name}: {len(train_set)} train / {len(splits.test)} test "
            f"images {'x'.join(map(str, image_shape))}, {num_classes} classes; recipe "
            f"{recipe.name}, {recipe.epochs} epochs of {steps_per_epoch} steps, batch "
            f"{recipe.batch_size}, lr {recipe.lr:g}; {device}, "
            f"{precision_name(autocast_dtype)}"
            f"{', channels_last' if channels_last else ''}{', compiled' if compiled else ''}"
            f"{f', {info.world_size} processes' if info.enabled else ''}"
            f"{f', {cfg.threads} thread(s)' if cfg.threads else ''}"
        )
        if note_init:
            say(note_init)
        if state_ck is not None:
            where = f"epoch {start_epoch + 1}, batch {start_batch}, step {step}"
            say(f"resumed from {resume} at {where}")

    def state_now(loader_state: dict[str, int]) -> tuple[dict, dict]:
        weights = dict(model.state_dict())
        if ema is not None:
            weights.update({ckpt.EMA_PREFIX + k: v for k, v in ema.state.items()})
        state = {
            "config": cfg.to_dict(),
            "recipe": recipe.to_dict(),
            "step": step,
            "loader": dict(loader_state),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "scaler": scaler.state_dict() if use_scaler else {},
            "rng": ckpt.rng_state(),
            "history": history,
            "best_err": best_err,
            "epoch_acc": dict(acc),
            "elapsed": elapsed_before + (time.time() - t_start),
            "ema_updates": ema.updates if ema is not None else 0,
            "meta": meta,
            "step_log": step_log,
            "step_window": dict(window),
        }
        return weights, state

    def save_ck(loader_state: dict[str, int]) -> None:
        if info.is_main:
            ckpt.save_checkpoint(ckpt.checkpoint_path(out), *state_now(loader_state))

    def eval_model() -> nn.Module:
        if ema is None:
            return model
        m = copy.deepcopy(model)
        m.load_state_dict(ema.state)
        return m

    interrupted = {"flag": False}

    def on_signal(signum, frame):  # noqa: ARG001
        if interrupted["flag"]:  # a second Ctrl-C: stop now (the last checkpoint stays intact)
            raise KeyboardInterrupt
        interrupted["flag"] = True
        if info.is_main:
            print("stopping after this step (Ctrl-C again to stop at once)", file=sys.stderr)

    handlers = {}
    if _in_main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, on_signal)
    fault = _fault_plan()

    last_ck_time = time.time()
    final_eval = None
    try:
        for epoch in range(start_epoch, recipe.epochs):
            if epoch == start_epoch and start_batch:
                train_loader.load_state_dict({"epoch": epoch, "batch": start_batch})
            else:
                train_loader.set_epoch(epoch)
                acc = {"loss": 0.0, "correct": 0, "count": 0, "seconds": 0.0}
            net.train()
            for m in frozen:
                m.eval()
            first_batch = start_batch if epoch == start_epoch else 0
            progress = Progress(
                steps_per_epoch - first_batch,
                f"epoch {epoch + 1}/{recipe.epochs}",
                enabled=info.is_main and not cfg.quiet,
            )
            t_epoch = time.perf_counter()
            seen = 0
            for x, y in train_loader:
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                lr_now = schedule.apply()
                with autocast():
                    logits = forward(x)
                    loss = criterion(logits.float(), y)
                loss_val = float(loss.detach())
                bad = not math.isfinite(loss_val)
                if info.enabled:  # every rank stops together
                    bad, stopping = distributed.any_flags([bad, interrupted["flag"]], info)
                else:
                    stopping = interrupted["flag"]
                if bad:
                    raise NonFiniteLoss(
                        f"loss became {loss_val} at epoch {epoch + 1}, step {step + 1} "
                        f"(lr {lr_now:.3g}); the last good checkpoint is kept in "
                        f"{ckpt.checkpoint_path(out)}; try a lower --lr"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                step += 1
                correct = int((logits.detach().argmax(1) == y).sum())
                acc["loss"] += loss_val * len(y)
                acc["correct"] += correct
                acc["count"] += len(y)
                schedule.step(train_err=1 - correct / len(y))
                if cfg.log_every:
                    window["loss"] += loss_val * len(y)
                    window["correct"] += correct
                    window["count"] += len(y)
                    if step % cfg.log_every == 0:
                        step_log.append(_window_row(window, step, steps_per_epoch, lr_now))
                        window = {"loss": 0.0, "correct": 0, "count": 0}
                if ema is not None and step % recipe.ema_every == 0:
                    ema.update(model)
                seen += len(y)
                progress.update(
                    1,
                    acc["loss"] / acc["count"],
                    acc["correct"] / acc["count"],
                    seen * info.world_size,
                )
                due = cfg.checkpoint_every and step % cfg.checkpoint_every == 0
                late = time.time() - last_ck_time > 60 * cfg.checkpoint_minutes
                if due or late:
                    acc["seconds"] += time.perf_counter() - t_epoch
                    t_epoch = time.perf_counter()
                    save_ck(train_loader.state_dict())
                    last_ck_time = time.time()
                if stopping:
                    raise Interrupted()
                if fault and fault[1] == step:
                    os.kill(os.getpid(), fault[0])
            progress.close()
            acc["seconds"] += time.perf_counter() - t_epoch
            start_batch = 0

            # end of epoch: evaluate (rank 0), log, save weights and checkpoint
            row = None
            if info.is_main:
                em = eval_model()
                test = evaluate(
                    em,
                    test_loader,
                    num_classes=num_classes,
                    device=device,
                    tta_flip=recipe.tta_flip,
                )
                final_eval = test
                n_global = acc["count"] * info.world_size
                row = {
                    "epoch": epoch + 1,
                    "step": step,
                    "train_loss": acc["loss"] / max(acc["count"], 1),
                    "train_top1_err": 1 - acc["correct"] / max(acc["count"], 1),
                    "test_top1_err": test.top1_err,
                    "test_top5_err": test.top5_err,
                    "test_loss": test.loss,
                    "lr": optimizer.param_groups[-1]["lr"],
                    "images_per_s": n_global / max(acc["seconds"], 1e-9),
                    "seconds": acc["seconds"],
                    "elapsed": elapsed_before + (time.time() - t_start),
                    "wall_time": time.time(),
                }
                if val_loader is not None:
                    val = evaluate(
                        em,
                        val_loader,
                        num_classes=num_classes,
                        device=device,
                        tta_flip=recipe.tta_flip,
                    )
                    row["val_top1_err"] = val.top1_err
                    row["val_top5_err"] = val.top5_err
                history.append(row)
                select = row.get("val_top1_err", row["test_top1_err"])
                wmeta = dict(meta, epoch=epoch + 1, test_top1_err=test.top1_err)
                save_weights(em, out / LAST_WEIGHTS, wmeta)
                if select < best_err:
                    best_err = select
                    save_weights(em, out / BEST_WEIGHTS, wmeta)
                write_metrics(out, history)
                if cfg.log_every:
                    write_steps(out, step_log)
                plot_curves(out, history, f"{cfg.model} on {splits.name} ({recipe.name} recipe)")
                say(_epoch_line(row, recipe.epochs))
            acc = {"loss": 0.0, "correct": 0, "count": 0, "seconds": 0.0}
            save_ck({"epoch": epoch + 1, "batch": 0})
            last_ck_time = time.time()
            distributed.barrier(info)
    except Interrupted:
        save_ck(train_loader.state_dict())
        if info.is_main:
            print(
                f"interrupted: checkpoint saved in {ckpt.checkpoint_path(out)}; continue with "
                f"`resnetlab train --resume --out {out}`",
                file=sys.stderr,
            )
        raise KeyboardInterrupt from None
    finally:
        for sig, h in handlers.items():
            signal.signal(sig, h)

    summary: dict[str, Any] = {}
    if info.is_main:
        if final_eval is None:  # resumed at the very end: evaluate what was trained
            final_eval = evaluate(
                eval_model(),
                test_loader,
                num_classes=num_classes,
                device=device,
                tta_flip=recipe.tta_flip,
            )
        best_row = min(history, key=lambda r: r.get("val_top1_err", r["test_top1_err"]))
        summary = {
            "model": cfg.model,
            "dataset": splits.name,
            "recipe": recipe.to_dict(),
            "config": cfg.to_dict(),
            "epochs": recipe.epochs,
            "steps": step,
            "final_test_top1_err": final_eval.top1_err,
            "final_test_top5_err": final_eval.top5_err,
            "final_test_accuracy": final_eval.top1_acc,
            "best_epoch": best_row["epoch"],
            "best_test_top1_err": best_row["test_top1_err"],
            "train_seconds": sum(r["seconds"] for r in history),
            "elapsed_seconds": elapsed_before + (time.time() - t_start),
            "tta_flip": recipe.tta_flip,
            "precision": precision_name(autocast_dtype),
            "compiled": compiled,
            "world_size": info.world_size,
            "weights": {"last": str(out / LAST_WEIGHTS), "best": str(out / BEST_WEIGHTS)},
        }
        write_summary(out, summary)
        say(
            f"test accuracy {100 * final_eval.top1_acc:.2f}% (top-5 "
            f"{100 * (1 - final_eval.top5_err):.2f}%{', flip TTA' if recipe.tta_flip else ''}) "
            f"-> {out / LAST_WEIGHTS}"
        )
    return model, summary


def _window_row(window: dict, step: int, steps_per_epoch: int, lr: float) -> dict[str, Any]:
    n = max(window["count"], 1)
    return {
        "step": step,
        "epoch": step / steps_per_epoch,
        "train_top1_err": 1 - window["correct"] / n,
        "train_loss": window["loss"] / n,
        "images": window["count"],
        "lr": lr,
    }


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    line = (
        f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} "
        f"err {100 * row['train_top1_err']:.2f}%  test err {100 * row['test_top1_err']:.2f}% "
        f"(top-5 {100 * row['test_top5_err']:.2f}%)"
    )
    if "val_top1_err" in row:
        line += f"  val err {100 * row['val_top1_err']:.2f}%"
    return line + (f"  lr {row['lr']:.4g}  {row['images_per_s']:.0f} img/s  {row['seconds']:.1f}s")


def _printer(enabled: bool):
    def say(text: str) -> None:
        if enabled:
            print(text, flush=True)

    return say


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _fault_plan() -> tuple[int, int] | None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    kind, _, at = spec.partition(":")
    sig = {"KILL": signal.SIGKILL, "INT": signal.SIGINT}[kind.upper()]
    return sig, int(at)
