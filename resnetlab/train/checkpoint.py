"""Checkpoints: a directory with the weights (safetensors) and the rest of the state (torch.save).

`DIR/checkpoint/model.safetensors` holds the model (and its moving average, under `ema.`);
`DIR/checkpoint/state.pt` holds the optimiser, schedule, RNG and loader state, the epoch and step,
the run's configuration and its metrics so far, all of types that torch.load(weights_only=True)
accepts. A new checkpoint is written into a temporary directory and swapped in by renames, so a
crash at any moment leaves one complete checkpoint (`checkpoint` or, mid-swap, `checkpoint.old`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import ResnetlabError
from ..files import cleanup_on_sigterm, current_umask, finish_file, utf8_path
from ..models.weights import load_refusal

CHECKPOINT_DIR = "checkpoint"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"
EMA_PREFIX = "ema."


def checkpoint_path(run_dir: str | os.PathLike) -> Path:
    """Where a run directory keeps its checkpoint."""
    return Path(run_dir) / CHECKPOINT_DIR


def save_checkpoint(
    path: str | os.PathLike, weights: dict[str, torch.Tensor], state: dict[str, Any]
) -> None:
    """Write weights and state into directory `path` atomically (temp dir, then renames)."""
    with cleanup_on_sigterm():  # in a run, the trainer's own handler stays in charge
        _save(Path(path), weights, state)


def _save(path: Path, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = path.with_name(path.name + ".old")
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; the files beside are 0644
        tensors = {k: v.detach().contiguous().cpu() for k, v in weights.items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"step": str(state.get("step", 0))})
        torch.save(state, tmp / STATE_FILE)
        for name in (WEIGHTS_FILE, STATE_FILE):
            finish_file(tmp / name)  # on disk before the renames make the checkpoint "complete"
        _fsync_dir(tmp)
        if path.exists() or path.is_symlink():
            _remove(old)
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        _remove(old)
    except (OSError, RuntimeError, SafetensorError) as e:  # a full disk, a vanished directory
        shutil.rmtree(tmp, ignore_errors=True)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kept = path if path.exists() else old
        have = f"the last good checkpoint is kept in {kept}" if kept.exists() else "none kept"
        raise ResnetlabError(
            f"cannot write a checkpoint into {path.parent} ({reason}); {have}"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def find_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint directory for a run directory or a checkpoint directory (or its .old twin)."""
    path = Path(path)
    for cand in (path, path / CHECKPOINT_DIR):
        if (cand / STATE_FILE).is_file() and (cand / WEIGHTS_FILE).is_file():
            return cand
        old = cand.with_name(cand.name + ".old")
        if (old / STATE_FILE).is_file() and (old / WEIGHTS_FILE).is_file():
            return old
    raise ResnetlabError(
        f"no checkpoint in {path} (expected {path / CHECKPOINT_DIR / STATE_FILE}); "
        "give the run's output directory"
    )


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read (weights, state) of a checkpoint; never runs code from the files."""
    ckpt = find_checkpoint(path)
    try:
        with utf8_path(ckpt / WEIGHTS_FILE) as name:
            weights = load_file(name)
    except (SafetensorError, OSError, ValueError) as e:
        raise ResnetlabError(
            f"{ckpt / WEIGHTS_FILE}: unreadable checkpoint weights ({e})"
        ) from None
    return weights, read_state(ckpt)


def read_state(ckpt: Path) -> dict[str, Any]:
    """The checked state of the checkpoint folder `ckpt` (its weights not read)."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling failure means a corrupt or foreign file
        raise ResnetlabError(
            f"{ckpt / STATE_FILE}: unreadable checkpoint state ({load_refusal(e)})"
        ) from None
    if not isinstance(state, dict) or "config" not in state or "step" not in state:
        raise ResnetlabError(f"{ckpt / STATE_FILE}: not a resnetlab training checkpoint")
    for key, kind, expected in STATE_TYPES:
        value = state.get(key)
        if key in state and not (isinstance(value, kind) and not isinstance(value, bool)):
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ResnetlabError(
                f"{ckpt / STATE_FILE}: checkpoint {key} is {shown}; expected {expected}"
            )
    if not all(isinstance(k, str) for k in state["config"]):
        raise ResnetlabError(f"{ckpt / STATE_FILE}: checkpoint config has keys that are not names")
    return state


# what a checkpoint's state holds: (key, type, what would be right)
STATE_TYPES = (
    ("config", dict, "a mapping of the run's settings"),
    ("step", int, "a whole number"),
    ("loader", dict, "a mapping {epoch, batch}"),
    ("optimizer", dict, "an optimiser state dict"),
    ("schedule", dict, "a mapping"),
    ("history", list, "a list of epoch rows"),
    ("epoch_acc", dict, "a mapping"),
    ("rng", dict, "a mapping of generator states"),
)


def split_ema(weights: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """Separate the model's tensors from those of its moving average."""
    model = {k: v for k, v in weights.items() if not k.startswith(EMA_PREFIX)}
    ema = {k[len(EMA_PREFIX) :]: v for k, v in weights.items() if k.startswith(EMA_PREFIX)}
    return model, ema


def rng_state() -> dict[str, Any]:
    """Every random generator the loop draws from (the loader seeds its own per batch)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state returned."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()  # a link planted in the checkpoint's place: the link goes, not its target
    elif path.exists():
        shutil.rmtree(path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
