"""Named models: a plain table from each name to its `ModelEntry` (models/builder.py), which says
how to build the net and what a table shows about it; `get_entry` looks a name up (every CIFAR
depth 6n+2 is built when asked for), `list_models` and `list_pretrained` list them, timm's way.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Sequence
from typing import Any

from ..errors import ResnetlabError
from .builder import ModelEntry
from .resnet import ResNetSpec
from .weights import shipped_weights

_REGISTRY: dict[str, ModelEntry] = {}

IMAGENET_DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)),
                   50: ("bottleneck", (3, 4, 6, 3)), 101: ("bottleneck", (3, 4, 23, 3)),
                   152: ("bottleneck", (3, 8, 36, 3))}  # fmt: skip
CIFAR_WIDTHS = (16, 32, 64)


def _add(entry: ModelEntry) -> None:
    _REGISTRY[entry.name] = entry


def _imagenet(name: str, family: str, depth: int, **spec_kw: Any) -> None:
    block, layers = IMAGENET_DEPTHS[depth]
    spec = ResNetSpec(block=block, layers=layers, **spec_kw)
    _add(ModelEntry(name, family, "imagenet", depth, (3, 224, 224), 1000, spec))


def _cifar_entry(name: str, family: str, depth: int, block: str, n: int, **kw: Any) -> ModelEntry:
    kw.setdefault("widths", CIFAR_WIDTHS)
    spec = ResNetSpec(block=block, layers=(n,) * 3, stem="small", stem_width=16, **kw)
    return ModelEntry(name, family, "cifar", depth, (3, 32, 32), 10, spec)


def _cifar(name: str, family: str, depth: int, block: str, n: int, **spec_kw: Any) -> None:
    _add(_cifar_entry(name, family, depth, block, n, **spec_kw))


# the CIFAR nets of the 2015 paper, 6n+2 layers: residual (option A shortcuts) and plain twins
CIFAR_TWINS = {"resnet": dict(shortcut="A"), "plain": dict(plain=True)}
MAX_CIFAR_DEPTH = 1202  # the paper's deepest; every 6n+2 from 8 up to it has a name
_CIFAR_NAME = re.compile(r"(resnet|plain)([1-9][0-9]{0,5})")


def cifar_twin(family: str, depth: int) -> ModelEntry:
    """The CIFAR net of the 2015 paper of `family` ('resnet' or 'plain') and depth 6n+2."""
    n = (depth - 2) // 6
    return _cifar_entry(f"{family}{depth}", family, depth, "basic", n, **CIFAR_TWINS[family])


for _d in (18, 34, 50, 101, 152):
    _imagenet(f"resnet{_d}", "resnet", _d)
for _d in (18, 34):
    _imagenet(f"plain{_d}", "plain", _d, plain=True)
_imagenet("wide_resnet50_2", "wide", 50, base_width=128)
_imagenet("resnext50_32x4d", "resnext", 50, groups=32, base_width=4)

# the standard CIFAR depths; the others (resnet8, plain14, ...) are built when asked for
for _d in (20, 32, 44, 56, 110, 1202):
    _add(cifar_twin("resnet", _d))
for _d in (20, 32, 44, 56, 110):
    _add(cifar_twin("plain", _d))
# pre-activation nets of the 2016 paper: basic 6n+2, bottleneck 9n+2, projection shortcuts
_cifar("preact_resnet110", "preact", 110, "basic", 18, preact=True)
_cifar("preact_resnet164", "preact", 164, "bottleneck", 18, preact=True)
_cifar("preact_resnet1001", "preact", 1001, "bottleneck", 111, preact=True)
# wide ResNets: WRN-d-k, pre-activation basic blocks, depth 6n+4, widths 16k, 32k, 64k
for _d, _k in ((16, 8), (28, 10), (40, 4)):
    _cifar(f"wide_resnet{_d}_{_k}", "wide", _d, "basic", (_d - 4) // 6, preact=True,
           widths=(16 * _k, 32 * _k, 64 * _k))  # fmt: skip

_add(ModelEntry("residual_mlp", "mlp", "mlp", 18, (784,), 10))
_add(ModelEntry("plain_mlp", "mlp", "mlp", 18, (784,), 10, mlp_plain=True))


def _cifar_depth_entry(name: str) -> ModelEntry | None:
    """The entry of `resnetNN` / `plainNN` for a CIFAR depth NN = 6n+2 (8..1202), else None."""
    m = _CIFAR_NAME.fullmatch(name)
    if m is None:
        return None
    depth = int(m.group(2))
    if depth < 8 or depth > MAX_CIFAR_DEPTH or (depth - 2) % 6:
        return None
    return cifar_twin(m.group(1), depth)


def _depth_names() -> list[str]:
    """Every CIFAR twin name of depth 6n+2 up to MAX_CIFAR_DEPTH that no other net holds."""
    names = (f"{f}{d}" for f in CIFAR_TWINS for d in range(8, MAX_CIFAR_DEPTH + 1, 6))
    return [n for n in names if n not in _REGISTRY]


Patterns = str | Sequence[str] | None


def _matches(name: str, patterns: Patterns) -> bool:
    if isinstance(patterns, str):
        patterns = [patterns]
    return any(fnmatch.fnmatchcase(name, p) for p in patterns or ())


def list_models(
    pattern: Patterns = None,
    pretrained: bool = False,
    *,
    family: str | None = None,
    exclude_filters: Patterns = None,
    include_tags: bool | None = None,
) -> list[str]:
    """Sorted model names, as timm's list_models: those matching `pattern` (fnmatch, or a list of
    patterns), of one `family`, with shipped weights (`pretrained=True`, as 'name.tag' unless
    include_tags=False).

    Without a pattern, the standard table; a pattern also searches every CIFAR depth 6n+2 up to
    1202 (`resnet8`, `plain14`, ...), so `list_models("*")` lists every name there is.
    """
    for arg, given in (("pattern", pattern), ("exclude_filters", exclude_filters)):
        listed = isinstance(given, (list, tuple)) and all(isinstance(p, str) for p in given)
        if not (given is None or isinstance(given, str) or listed):
            raise ResnetlabError(f"{arg} {given!r}: expected a pattern such as 'resnet*' or a list")
    names = list(_REGISTRY) if pattern is None else [*_REGISTRY, *_depth_names()]
    if family is not None:
        names = [n for n in names if get_entry(n).family == family]
    include_tags = pretrained if include_tags is None else include_tags
    shipped = shipped_weights() if pretrained or include_tags else {}
    out = []
    for n in names:
        if pretrained and n not in shipped:
            continue
        shown = [f"{n}.{t}" for t in shipped.get(n, [])] if include_tags else [n]
        for s in shown:
            if pattern is not None and not (_matches(n, pattern) or _matches(s, pattern)):
                continue
            if exclude_filters and (_matches(n, exclude_filters) or _matches(s, exclude_filters)):
                continue
            out.append(s)
    return sorted(out, key=natural_key)


def natural_key(name: str) -> list[Any]:
    """Sort key that orders digits by value: resnet8 < resnet14 < resnet110 (as timm sorts)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name.lower())]


def list_pretrained(pattern: Patterns = None, exclude_filters: Patterns = None) -> list[str]:
    """Every shipped weight as 'model.tag' (of the models matching `pattern`)."""
    return list_models(pattern, pretrained=True, exclude_filters=exclude_filters)


def get_entry(name: str) -> ModelEntry:
    """The registry entry of a name (a CIFAR depth 6n+2 is built when asked for); an unknown
    name fails with the closest names suggested."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    entry = _cifar_depth_entry(name) if isinstance(name, str) else None
    if entry is not None:
        return entry
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `resnetlab models`"
    if isinstance(name, str) and _CIFAR_NAME.fullmatch(name):
        hint += f" (CIFAR resnet and plain nets: depth 6n+2, 8, 14, 20, ..., {MAX_CIFAR_DEPTH})"
    raise ResnetlabError(f"unknown model {name!r}{hint}")
