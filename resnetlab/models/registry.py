"""Named models: each name maps to an architecture and the facts a table shows about it."""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from ..errors import ResnetlabError
from .cfg import default_cfg
from .features import FeatureExtractor, Indices
from .mlp import ResidualMLP
from .resnet import ResNet, ResNetSpec
from .weights import shipped_weights


@dataclass(frozen=True)
class ModelEntry:
    """One registered name: how to build it and what to show about it."""

    name: str
    family: str  # resnet, plain, preact, wide, resnext, mlp
    layout: str  # imagenet, cifar, mlp
    depth: int  # weighted layers, as the papers count them
    input_size: tuple[int, ...]  # native (C, H, W), or (features,) for MLPs
    num_classes: int
    spec: ResNetSpec | None = None  # conv nets
    mlp_plain: bool = False  # MLPs

    @property
    def is_mlp(self) -> bool:
        """True for a residual MLP on vectors, False for a conv net on images (C, H, W)."""
        return self.spec is None


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


SPEC_OPTIONS = {
    "shortcut", "stem", "stride_in_1x1", "block_drop_rate", "stem_width", "widths", "layers",
    "groups", "base_width",
}  # fmt: skip
RESNET_OPTIONS = {"zero_init_residual", "drop_path_rate", "drop_rate", "output_stride"}
MLP_OPTIONS = {"in_features", "depth", "width", "zero_init_residual", "drop_path_rate", "drop_rate"}


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


def build_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    global_pool: str | None = None,
    features_only: bool = False,
    out_indices: Indices = None,
    **options: Any,
) -> nn.Module:
    """Build a registered model with fresh weights. `options` tune the architecture (see docs)."""
    entry = get_entry(name)
    num_classes = entry.num_classes if num_classes is None else num_classes
    try:
        if entry.is_mlp:
            unknown = set(options) - MLP_OPTIONS
            if unknown or features_only:
                raise ResnetlabError(f"options {sorted(unknown) or ['features_only']} do not apply")
            if global_pool is not None:
                raise ResnetlabError(
                    f"global_pool {global_pool!r} does not apply: an MLP's features are vectors, "
                    "with nothing to pool"
                )
            opts = dict(options)
            if in_chans is not None and "in_features" not in opts:
                raise ResnetlabError(
                    "an MLP takes in_features (channels x height x width), not in_chans"
                )
            model: nn.Module = ResidualMLP(num_classes=num_classes, plain=entry.mlp_plain, **opts)
            spec = None
        else:
            unknown = set(options) - SPEC_OPTIONS - RESNET_OPTIONS
            if unknown:
                raise ResnetlabError(
                    f"unknown option(s) {sorted(unknown)}; "
                    f"known: {', '.join(sorted(SPEC_OPTIONS | RESNET_OPTIONS))}"
                )
            spec_kw = {k: v for k, v in options.items() if k in SPEC_OPTIONS}
            for k in ("widths", "layers"):
                if k in spec_kw:
                    spec_kw[k] = tuple(spec_kw[k])
            spec = replace(entry.spec, **spec_kw)
            net_kw = {k: v for k, v in options.items() if k in RESNET_OPTIONS}
            model = ResNet(
                spec,
                num_classes=num_classes,
                in_chans=3 if in_chans is None else in_chans,
                global_pool="avg" if global_pool is None else global_pool,
                **net_kw,
            )
    except (ValueError, TypeError) as e:
        raise ResnetlabError(f"{name}: {e}") from None
    config: dict[str, Any] = {"name": name, "num_classes": num_classes, "options": dict(options)}
    if not entry.is_mlp:
        config["in_chans"] = model.in_chans
        if model.global_pool.pool_type != "avg":
            config["global_pool"] = model.global_pool.pool_type
    config["depth"] = real_depth(entry, spec, options)
    model.resnetlab_config = config
    layout = input_layout(entry, spec)
    cfg = default_cfg(
        name,
        layout,
        in_chans=getattr(model, "in_chans", None),
        num_classes=num_classes,
        in_features=getattr(model, "in_features", 0),
    )
    if features_only:
        try:
            model = FeatureExtractor(model, out_indices)
        except ValueError as e:
            raise ResnetlabError(f"{name}: {e}") from None
        model.resnetlab_config = dict(
            config, features_only=True, out_indices=list(model.out_indices)
        )
        cfg.update(num_classes=0, classes=None)
    model.pretrained_cfg = cfg
    return model


def input_layout(entry: ModelEntry, spec: ResNetSpec | None) -> str:
    """'mlp', 'cifar' (a small stem: small images) or 'imagenet': what the default cfg follows."""
    if spec is None:
        return "mlp"
    return "cifar" if spec.stem == "small" else "imagenet"


def real_depth(entry: ModelEntry, spec: ResNetSpec | None, options: dict[str, Any]) -> int:
    """Weighted layers as the papers count them, also when `layers` (or an MLP's `depth`) differ
    from the registered net's: 2 per basic block, 3 per bottleneck, plus the stem and the fc
    (plus 2 for a wide ResNet, whose depth 6n+4 counts its projections)."""
    if spec is None:
        blocks = options.get("depth")
        return entry.depth if blocks is None else 2 * blocks + 2
    if spec.layers == entry.spec.layers and spec.block == entry.spec.block:
        return entry.depth
    per_block = 3 if spec.block == "bottleneck" else 2
    extra = 2 if entry.family == "wide" and entry.layout == "cifar" else 0
    return per_block * sum(spec.layers) + 2 + extra
