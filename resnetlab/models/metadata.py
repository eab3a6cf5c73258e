"""The metadata a weights file (or an ONNX file) carries, checked before use: each key resnetlab
reads has a rule (a name, build options, class names, sizes, and a normalisation no real one falls
outside of), a mean comes with its std, and a single mean or std stands for every channel."""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import ResnetlabError


def parse_metadata(raw: str | None, source: str) -> dict[str, Any]:
    """The resnetlab metadata stored as JSON text in a file (`{}` for none), checked."""
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError):  # bad JSON, a 5,000-digit number, nesting: not ours
        raise ResnetlabError(f"{source}: its resnetlab metadata is not valid JSON") from None
    check_metadata(meta, source)
    check_mean_std_pair(meta, source)
    return _broadcast_mean_std(meta)


def check_mean_std_pair(meta: dict[str, Any], source: str) -> None:
    """Fail in one line if the metadata gives a mean without a std or a std without a mean:
    normalising with one of them and a guess for the other would be silently wrong."""
    given = [key for key in ("mean", "std") if meta.get(key) is not None]
    if len(given) == 1:
        other = "std" if given[0] == "mean" else "mean"
        raise ResnetlabError(
            f"{source}: metadata has a {given[0]} but no {other}; expected both (or neither)"
        )


def _broadcast_mean_std(meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata with a single-number mean or std written as one value per input channel, so
    that every reader (predict, eval, quantize, the studies) sees the same per-channel lists."""
    size = meta.get("input_size")
    channels = size[0] if isinstance(size, list) and len(size) == 3 else 1
    for key in ("mean", "std"):
        if _is_number(meta.get(key)):
            meta[key] = [meta[key]] * channels
    return meta


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _numbers(v: Any) -> bool:
    return _is_number(v) or (isinstance(v, list) and bool(v) and all(map(_is_number, v)))


# bounds that every real normalisation meets (ImageNet, CIFAR, Fashion-MNIST on the 0..1 scale,
# and the same on the 0..255 scale), and that keep a crafted 1e-45 std or 1e308 mean, which turn
# every input into inf or NaN, out
MAX_ABS_MEAN = 1e4
MIN_STD, MAX_STD = 1e-6, 1e4  # 1e-6: compute_mean_std's own floor, for images of one colour


def _values(v: Any) -> list:
    return v if isinstance(v, list) else [v]


def _sane_means(v: Any) -> bool:
    return _numbers(v) and max(abs(x) for x in _values(v)) <= MAX_ABS_MEAN


def _sane_stds(v: Any) -> bool:
    return _numbers(v) and all(MIN_STD <= x <= MAX_STD for x in _values(v))


# the metadata keys resnetlab reads: (is the value right?, what would be right)
METADATA_RULES = {
    "name": (lambda v: isinstance(v, str), "a model name (a string)"),
    "options": (
        lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
        "a JSON object of build options",
    ),
    "num_classes": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "in_chans": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "classes": (
        lambda v: (
            isinstance(v, list)
            and all(isinstance(c, str) and c for c in v)
            and len(set(v)) == len(v)
        ),
        "a list of distinct, non-empty class names",
    ),
    "input_size": (
        lambda v: isinstance(v, list) and bool(v) and all(_is_int(s) and s > 0 for s in v),
        "a list of positive whole numbers, [C, H, W] or [features]",
    ),
    "mean": (
        _sane_means,
        f"a finite number or a list of them, one per channel, each in [-{MAX_ABS_MEAN:g}, "
        f"{MAX_ABS_MEAN:g}]",
    ),
    "std": (
        _sane_stds,
        "a positive finite number or a list of them, one per channel, each in "
        f"[{MIN_STD:g}, {MAX_STD:g}]",
    ),
    "crop_pct": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "tta": (lambda v: isinstance(v, bool), "true or false"),
    "dataset": (lambda v: isinstance(v, str), "a dataset name or path (a string)"),
    "features_only": (lambda v: isinstance(v, bool), "true or false"),
    "global_pool": (lambda v: v in ("avg", "max", "avgmax", ""), "'avg', 'max', 'avgmax' or ''"),
    "interpolation": (lambda v: v == "bilinear", "'bilinear' (the resize resnetlab does)"),
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
