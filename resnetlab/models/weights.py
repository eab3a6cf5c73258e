"""Weights in and out: safetensors with metadata to rebuild and preprocess; torchvision .pth too.

Loading never runs code from a file: safetensors holds only tensors and strings, and .pth files go
through torch.load(weights_only=True).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file
from torch import nn

from ..errors import ResnetlabError
from ..files import atomic_write, utf8_path
from .metadata import (
    check_mean_std_pair,
    check_metadata,
    parse_metadata,
)

META_KEY = "resnetlab"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
FORMAT_VERSION = 1
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


def model_metadata(model: nn.Module) -> dict[str, Any]:
    """What a model knows of itself, read from the model as it is now: its registered name and
    build options, num_classes (from its fc), in_chans (from its first conv), global pooling, the
    width of its pooled features, and for a backbone the feature maps it returns."""
    cfg = getattr(model, "resnetlab_config", None)
    if not cfg:
        return {}
    meta = dict(cfg)
    fc = getattr(model, "fc", None)
    if isinstance(fc, nn.Linear):
        meta["num_classes"] = fc.out_features
    elif isinstance(fc, nn.Identity):
        meta["num_classes"] = 0
    conv1 = getattr(model, "conv1", None)
    if isinstance(conv1, nn.Conv2d):
        meta["in_chans"] = conv1.in_channels
    pool = getattr(getattr(model, "global_pool", None), "pool_type", None)
    if pool is not None:
        if pool == "avg":
            meta.pop("global_pool", None)
        else:
            meta["global_pool"] = pool
    if isinstance(getattr(model, "num_features", None), int):
        meta["num_features"] = model.num_features
    if getattr(model, "out_indices", None) is not None:
        meta["out_indices"] = list(model.out_indices)
    return meta


# what a model's pretrained_cfg carries into a file it is saved to (when still true of it)
CARRIED = ("input_size", "mean", "std", "crop_pct", "interpolation", "classes")
MODEL_KEYS = (
    "name", "options", "num_classes", "in_chans", "global_pool", "depth", "num_features",
    "features_only", "out_indices",
)  # fmt: skip


def save_weights(
    model: nn.Module, path: str | os.PathLike, metadata: dict[str, Any] | None = None
) -> None:
    """Write the model's weights as safetensors, with metadata that follows the model.

    The model gives its name, options, num_classes, in_chans and feature sizes; its
    pretrained_cfg gives input_size, mean, std, crop_pct and the class names (when their count
    still matches the head). `metadata` (JSON-able) adds or overrides keys (classes, input_size,
    mean, std, ...); a value that contradicts the model fails in one line.
    """
    if metadata is not None and not isinstance(metadata, dict):
        raise ResnetlabError(
            f"metadata is a {type(metadata).__name__}; expected a dict such as {{'classes': [...]}}"
        )
    own = model_metadata(model)
    meta = {"format_version": FORMAT_VERSION, **own}
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict):
        for key in CARRIED:
            if cfg.get(key) is not None:
                meta[key] = list(cfg[key]) if isinstance(cfg[key], tuple) else cfg[key]
        if meta.get("classes") is not None and len(meta["classes"]) != own.get("num_classes"):
            meta.pop("classes")
    given = {k: list(v) if isinstance(v, tuple) else v for k, v in (metadata or {}).items()}
    if "input_size" in given and given["input_size"] != meta.get("input_size"):
        meta.pop("crop_pct", None)  # the cfg's crop was for its own input size
    for key in MODEL_KEYS:
        if key in given and key in own and given[key] != own[key]:
            raise ResnetlabError(
                f"metadata {key} is {given[key]!r} but the model's is {own[key]!r}; leave it out "
                "(save_weights reads it from the model)"
            )
    meta.update(given)
    check_metadata(meta, "metadata")
    check_mean_std_pair(meta, "metadata")
    check_fits_model(meta, own, "metadata")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    check_tensors(state, f"{path}: not written, the model's")  # a file load_model would refuse
    try:
        text = json.dumps(meta)
    except TypeError as e:
        raise ResnetlabError(f"metadata is not JSON-serialisable: {e}") from None
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={META_KEY: text}))


def check_fits_model(meta: dict[str, Any], own: dict[str, Any], source: str) -> None:
    """Fail in one line if the depth or feature width, the class names, a conv net's input
    channels, or the number of mean and std values contradict the model."""
    for key in ("depth", "num_features"):  # written from the model; a file that lies is refused
        if meta.get(key) is not None and own.get(key) is not None and meta[key] != own[key]:
            raise ResnetlabError(
                f"{source} {key} is {meta[key]!r} but its tensors make a net of {key} "
                f"{own[key]!r}; expected the {key} of the net it holds"
            )
    n = own.get("num_classes")
    classes = meta.get("classes")
    if classes is not None and n is not None and not own.get("features_only") and len(classes) != n:
        raise ResnetlabError(
            f"{source} classes has {len(classes)} names but the model has {n} outputs; "
            "expected one name per output (reset_classifier changes the outputs)"
        )
    size = meta.get("input_size")
    if size is None:
        return
    in_chans = own.get("in_chans")
    if in_chans is not None and (len(size) != 3 or size[0] != in_chans):
        raise ResnetlabError(
            f"{source} input_size {list(size)} does not fit a model of in_chans {in_chans}; "
            f"expected [{in_chans}, H, W]"
        )
    c = size[0] if len(size) == 3 else 1
    for key in ("mean", "std"):
        v = meta.get(key)
        if isinstance(v, list) and len(v) not in (1, c):
            raise ResnetlabError(
                f"{source} {key} has {len(v)} values for input_size {list(size)}; expected "
                + ("1" if c == 1 else f"1 or {c}")
            )


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The resnetlab metadata of a weights file ({} for a .pth or a foreign safetensors file)."""
    path = weights_file(path)
    return _read_safetensors(path, tensors=False)[1] if path.suffix == ".safetensors" else {}


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the resnetlab metadata of a weights file, read in one pass."""
    path = weights_file(path)
    if path.suffix == ".safetensors":
        state, meta = _read_safetensors(path, tensors=True)
    else:
        state, meta = _read_torch_state(path), {}
    check_tensors(state, f"{path}:")
    return state, meta


def check_tensors(state: dict[str, torch.Tensor], source: str) -> None:
    """Fail in one line if a floating tensor holds NaN or inf, or a BatchNorm running_var is
    negative: either makes the model predict NaN, and exit 0. `source` begins the message."""
    for key, t in state.items():
        if not t.is_floating_point():
            continue
        if not _finite(t):
            raise ResnetlabError(
                f"{source} tensor {key} holds NaN or infinite values; expected finite weights"
            )
        is_var = key.endswith("running_var") and t.numel() > 0
        lowest = float(t.detach().float().min()) if is_var else 0.0
        if lowest < 0:
            raise ResnetlabError(
                f"{source} tensor {key} holds a negative variance ({lowest:.3g}); "
                "a BatchNorm running_var is never below 0"
            )


def read_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """The shape of each tensor of a safetensors file, from its header alone (no tensor read)."""
    path = weights_file(path)
    try:
        with utf8_path(path) as name, safe_open(name, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise ResnetlabError(f"{path}: not a readable safetensors file ({e})") from None


def _finite(t: torch.Tensor) -> bool:
    # NumPy's isfinite: 20x faster than torch's here (resnet50's 25 M weights in 50 ms)
    t = t.detach().cpu()
    if t.dtype not in (torch.float16, torch.float32, torch.float64):  # bf16, float8: no NumPy
        t = t.float()
    return bool(np.isfinite(t.numpy()).all())


def _read_safetensors(path: Path, tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        with utf8_path(path) as name, safe_open(name, framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
            state = {k: f.get_tensor(k) for k in f.keys()} if tensors else {}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        raise ResnetlabError(f"{path}: not a readable safetensors file ({e})") from None
    return state, parse_metadata(raw, str(path))


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a torchvision-style .pth/.pt state dict."""
    return read_weights(path)[0]


def _read_torch_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors come in many types; all mean "not a weights file"
        raise ResnetlabError(f"{path}: not a loadable weights file ({load_refusal(e)})") from None
    for key in ("state_dict", "model", "model_state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ResnetlabError(f"{path}: holds no state dict of tensors")
    # checkpoints saved from DataParallel/DDP prefix every key with 'module.'
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_refusal(e: BaseException) -> str:
    """Why torch.load(weights_only=True) refused a file, in a few words: its own first line
    advises loading with weights_only=False (running the file's code), which resnetlab never does;
    the reason is on a later line."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        skip = ("Weights only load failed", "Please file an issue", "Check the documentation")
        detail = [line for line in lines if not line.startswith(skip)]
        why = detail[0].removeprefix("WeightsUnpickler error:").strip() if detail else ""
        return "not safetensors, nor a pickle of tensors only" + (f": {why[:120]}" if why else "")
    return lines[0][:200] if lines else type(e).__name__


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
    dtypes = [
        f"{k} {_dtype_name(state[k])} vs model {_dtype_name(own[k])}"
        for k in own
        if k in state and not _dtype_fits(state[k], own[k])
    ]
    if not (missing or unexpected or shapes or dtypes):
        return
    parts = []
    if shapes:
        parts.append(
            "shape mismatch: " + "; ".join(shapes[:3]) + (" ..." if len(shapes) > 3 else "")
        )
    if dtypes:
        more = " ..." if len(dtypes) > 3 else ""
        parts.append("dtype mismatch (expected floating point): " + "; ".join(dtypes[:3]) + more)
    if missing:
        parts.append(f"missing {len(missing)} key(s): " + ", ".join(missing[:3]))
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} key(s): " + ", ".join(unexpected[:3]))
    raise ResnetlabError(f"{source} does not fit this model: " + " | ".join(parts))


def _dtype_fits(given: torch.Tensor, own: torch.Tensor) -> bool:
    """False for an integer or bool tensor where the model's is floating point: load_state_dict
    would copy its whole numbers (or 0 and 1) in silently."""
    return given.is_floating_point() or not own.is_floating_point()


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


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
        state = {
            k: v
            for k, v in state.items()
            if k in own and own[k].shape == v.shape and _dtype_fits(v, own[k])
        }
    model.load_state_dict(state, strict=strict)


def shipped_weights() -> dict[str, list[str]]:
    """The weights that ship with the package: model name -> its tags ('fashion-mnist', ...)."""
    out: dict[str, list[str]] = {}
    for f in sorted(PRETRAINED_DIR.glob("*.*.safetensors")):
        name, tag = f.name[: -len(".safetensors")].split(".", 1)
        out.setdefault(name, []).append(tag)
    return out


def shipped_path(name: str, tag: str) -> Path | None:
    """The file of shipped weights `name.tag`, or None when none ship under that name."""
    path = PRETRAINED_DIR / f"{name}.{tag}.safetensors"
    return path if tag and "/" not in tag and "\\" not in tag and path.is_file() else None


def shipped_tag(path: str | os.PathLike) -> str | None:
    """The tag of a shipped weights file ('fashion-mnist'), None for any other file."""
    p = Path(path)
    if p.parent.resolve() != PRETRAINED_DIR or not p.name.endswith(".safetensors"):
        return None
    parts = p.name[: -len(".safetensors")].split(".", 1)
    return parts[1] if len(parts) == 2 else None


def weights_file(path: str | os.PathLike) -> Path:
    """The file at `path`, or the shipped weights that a missing path names (`resnet20.TAG`)."""
    path = Path(path)
    if not path.exists():
        name, _, tag = str(path).partition(".")
        named = bool(tag) and path.name == str(path) and path.suffix not in WEIGHT_SUFFIXES
        shipped = shipped_path(name, tag) if named else None
        if shipped is not None:
            return shipped
        every = [f"{n}.{t}" for n, tags in shipped_weights().items() for t in tags]
        hint = f" (nor shipped weights: {', '.join(every) or 'none ship'})" if named else ""
        raise ResnetlabError(f"weights file not found: {path}{hint}")
    if path.is_dir():
        raise ResnetlabError(f"{path} is a directory, not a weights file")
    if not path.is_file():  # a FIFO would block the reader, a device never end
        raise ResnetlabError(f"{path} is not a regular file (a FIFO, device or socket)")
    return path
