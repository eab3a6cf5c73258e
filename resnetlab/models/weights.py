"""Weights in and out: safetensors with metadata to rebuild and preprocess; torchvision .pth too.

Loading never runs code from a file: safetensors holds only tensors and strings, and .pth files go
through torch.load(weights_only=True).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from ..errors import ResnetlabError

META_KEY = "resnetlab"
FORMAT_VERSION = 1
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call write(tmp_path) and rename onto `path`, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        mask = os.umask(0)  # mkstemp makes 0600 files; give the result the usual permissions
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def model_metadata(model: nn.Module) -> dict[str, Any]:
    """What a model knows of itself: its registered name and build options."""
    cfg = getattr(model, "resnetlab_config", None)
    return dict(cfg) if cfg else {}


def save_weights(
    model: nn.Module, path: str | os.PathLike, metadata: dict[str, Any] | None = None
) -> None:
    """Write the model's weights as safetensors, with its build config and `metadata` (JSON-able).

    Useful metadata keys: classes, input_size (C, H, W), mean, std.
    """
    meta = {"format_version": FORMAT_VERSION, **model_metadata(model), **(metadata or {})}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    try:
        text = json.dumps(meta)
    except TypeError as e:
        raise ResnetlabError(f"metadata is not JSON-serialisable: {e}") from None
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={META_KEY: text}))


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The resnetlab metadata of a weights file ({} for a .pth or a foreign safetensors file)."""
    path = _existing(path)
    if path.suffix != ".safetensors":
        return {}
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError, ValueError) as e:
        raise ResnetlabError(f"{path}: not a readable safetensors file ({e})") from None
    if raw is None:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        raise ResnetlabError(f"{path}: its resnetlab metadata is not valid JSON") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a torchvision-style .pth/.pt state dict."""
    path = _existing(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise ResnetlabError(f"{path}: not a readable safetensors file ({e})") from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors come in many types; all mean "not a weights file"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ResnetlabError(f"{path}: not a loadable weights file ({first[:200]})") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ResnetlabError(f"{path}: holds no state dict of tensors")
    # checkpoints saved from DataParallel/DDP prefix every key with 'module.'
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def check_compatible(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Fail in one line naming the first differing keys and shapes, if the state does not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    if shapes:
        parts.append(
            "shape mismatch: " + "; ".join(shapes[:3]) + (" ..." if len(shapes) > 3 else "")
        )
    if missing:
        parts.append(f"missing {len(missing)} key(s): " + ", ".join(missing[:3]))
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} key(s): " + ", ".join(unexpected[:3]))
    raise ResnetlabError(f"{source} does not fit this model: " + " | ".join(parts))


def load_weights(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> dict[str, Any]:
    """Load weights into `model` (strictly by default) and return the file's metadata."""
    state = read_state_dict(path)
    meta = read_metadata(path)
    if strict:
        check_compatible(model, state, str(path))
    else:
        own = model.state_dict()
        state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(state, strict=strict)
    return meta


def resolve_pretrained(name: str, pretrained: str | os.PathLike) -> Path:
    """A file path as given, or a shipped weight tag such as 'fashion-mnist' for this model."""
    p = Path(pretrained)
    if p.suffix in (".safetensors", ".pth", ".pt", ".bin") or p.exists():
        return _existing(p)
    shipped = PRETRAINED_DIR / f"{name}.{pretrained}.safetensors"
    if shipped.exists():
        return shipped
    tags = sorted(
        f.name[len(name) + 1 : -len(".safetensors")]
        for f in PRETRAINED_DIR.glob(f"{name}.*.safetensors")
    )
    have = f"shipped tags for {name}: {', '.join(tags)}" if tags else f"no weights ship for {name}"
    raise ResnetlabError(f"pretrained {str(pretrained)!r} is neither a file nor a tag ({have})")


def list_pretrained() -> list[str]:
    """Every shipped weight as 'model.tag'."""
    return sorted(f.name[: -len(".safetensors")] for f in PRETRAINED_DIR.glob("*.safetensors"))


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path)
    if not path.exists():
        raise ResnetlabError(f"weights file not found: {path}")
    if path.is_dir():
        raise ResnetlabError(f"{path} is a directory, not a weights file")
    return path
