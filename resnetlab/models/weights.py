"""Weights in and out: safetensors with metadata to rebuild and preprocess; torchvision .pth too.

Loading never runs code from a file: safetensors holds only tensors and strings, and .pth files go
through torch.load(weights_only=True).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
from torch import nn

from ..errors import ResnetlabError
from ..files import atomic_write

META_KEY = "resnetlab"
FORMAT_VERSION = 1
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


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
    return _read_safetensors(path, tensors=False)[1] if path.suffix == ".safetensors" else {}


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the resnetlab metadata of a weights file, read in one pass."""
    path = _existing(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path, tensors=True)
    return _read_torch_state(path), {}


def _read_safetensors(path: Path, tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
            state = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise ResnetlabError(f"{path}: not a readable safetensors file ({e})") from None
    if raw is None:
        return state, {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise ResnetlabError(f"{path}: its resnetlab metadata is not valid JSON") from None
    check_metadata(meta, str(path))
    return state, meta


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(v: Any) -> bool:
    return _is_number(v) or (isinstance(v, list) and bool(v) and all(map(_is_number, v)))


def _positive_numbers(v: Any) -> bool:
    return _numbers(v) and min(v if isinstance(v, list) else [v]) > 0


# the metadata keys resnetlab reads: (is the value right?, what would be right)
METADATA_RULES = {
    "name": (lambda v: isinstance(v, str), "a model name (a string)"),
    "options": (
        lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
        "a JSON object of build options",
    ),
    "num_classes": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "in_chans": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "classes": (lambda v: isinstance(v, list), "a list of class names"),
    "input_size": (
        lambda v: isinstance(v, list) and bool(v) and all(_is_int(s) and s > 0 for s in v),
        "a list of positive whole numbers, [C, H, W] or [features]",
    ),
    "mean": (_numbers, "a finite number or a list of them, one per channel"),
    "std": (_positive_numbers, "a positive finite number or a list of them, one per channel"),
    "crop_pct": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "tta": (lambda v: isinstance(v, bool), "true or false"),
    "features_only": (lambda v: isinstance(v, bool), "true or false"),
    "out_indices": (
        lambda v: isinstance(v, list) and bool(v) and all(_is_int(i) and i >= 0 for i in v),
        "a non-empty list of feature indices (whole numbers >= 0)",
    ),
}


def check_metadata(meta: Any, source: str = "weights") -> None:
    """Fail in one line naming the key, its value and what is expected, if metadata is malformed."""
    if not isinstance(meta, dict):
        raise ResnetlabError(
            f"{source}: its resnetlab metadata is a JSON {type(meta).__name__}, expected an object"
        )
    for key, (ok, expected) in METADATA_RULES.items():
        if key in meta and meta[key] is not None and not ok(meta[key]):
            shown = json.dumps(meta[key], allow_nan=True)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise ResnetlabError(f"{source}: metadata {key} is {shown}; expected {expected}")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a torchvision-style .pth/.pt state dict."""
    return read_weights(path)[0]


def _read_torch_state(path: Path) -> dict[str, torch.Tensor]:
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
    if hasattr(model, "filter_state_dict"):  # a backbone ignores the head it does not hold
        state = model.filter_state_dict(state)
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
    state, meta = read_weights(path)
    load_state(model, state, str(path), strict)
    return meta


def load_state(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool = True
) -> None:
    """Load tensors read from `source` into `model`: strictly (checked first), or those that fit."""
    if strict:
        check_compatible(model, state, source)
    else:
        own = model.state_dict()
        state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(state, strict=strict)


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
