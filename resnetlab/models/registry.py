"""Named models: each name maps to an architecture and the facts a table shows about it."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from ..errors import ResnetlabError
from .features import FeatureExtractor
from .mlp import ResidualMLP
from .resnet import ResNet, ResNetSpec


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


def _cifar(name: str, family: str, depth: int, block: str, n: int, **spec_kw: Any) -> None:
    spec_kw.setdefault("widths", CIFAR_WIDTHS)
    spec = ResNetSpec(block=block, layers=(n,) * 3, stem="small", stem_width=16, **spec_kw)
    _add(ModelEntry(name, family, "cifar", depth, (3, 32, 32), 10, spec))


for _d in (18, 34, 50, 101, 152):
    _imagenet(f"resnet{_d}", "resnet", _d)
for _d in (18, 34):
    _imagenet(f"plain{_d}", "plain", _d, plain=True)
_imagenet("wide_resnet50_2", "wide", 50, base_width=128)
_imagenet("resnext50_32x4d", "resnext", 50, groups=32, base_width=4)

# CIFAR nets of the 2015 paper: 6n+2 layers, option A shortcuts
for _d in (20, 32, 44, 56, 110, 1202):
    _cifar(f"resnet{_d}", "resnet", _d, "basic", (_d - 2) // 6, shortcut="A")
for _d in (20, 32, 44, 56, 110):
    _cifar(f"plain{_d}", "plain", _d, "basic", (_d - 2) // 6, plain=True)
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

SPEC_OPTIONS = {
    "shortcut", "stem", "stride_in_1x1", "block_drop_rate", "stem_width", "widths", "layers",
    "groups", "base_width",
}  # fmt: skip
RESNET_OPTIONS = {"zero_init_residual", "drop_path_rate", "drop_rate", "output_stride"}
MLP_OPTIONS = {"in_features", "depth", "width", "zero_init_residual", "drop_path_rate", "drop_rate"}


def list_models(family: str | None = None) -> list[str]:
    """Sorted names of every registered model (of one family if given)."""
    return sorted(n for n, e in _REGISTRY.items() if family is None or e.family == family)


def get_entry(name: str) -> ModelEntry:
    """The registry entry of a name; an unknown name fails with the closest names suggested."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `resnetlab models`"
        raise ResnetlabError(f"unknown model {name!r}{hint}")
    return _REGISTRY[name]


def build_model(
    name: str,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    features_only: bool = False,
    out_indices: tuple[int, ...] | None = None,
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
            opts = dict(options)
            if in_chans is not None and "in_features" not in opts:
                raise ResnetlabError(
                    "an MLP takes in_features (channels x height x width), not in_chans"
                )
            model: nn.Module = ResidualMLP(num_classes=num_classes, plain=entry.mlp_plain, **opts)
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
                **net_kw,
            )
    except (ValueError, TypeError) as e:
        raise ResnetlabError(f"{name}: {e}") from None
    config = {"name": name, "num_classes": num_classes, "options": dict(options)}
    if not entry.is_mlp:
        config["in_chans"] = 3 if in_chans is None else in_chans
    model.resnetlab_config = config
    if features_only:
        try:
            model = FeatureExtractor(model, out_indices)
        except ValueError as e:
            raise ResnetlabError(f"{name}: {e}") from None
        model.resnetlab_config = dict(config, features_only=True, out_indices=out_indices)
    return model
