"""The one builder, timm's `build_model_with_cfg`: a registry entry and the call's arguments (and
weights, if any) -> the model, described and ready.

It builds the net the entry names (`ResNet` or `ResidualMLP`) with the call's options, records its
config (`resnetlab_config`) and default `pretrained_cfg` (models/cfg.py), wraps it as a backbone
for `features_only`, and, given weights, fills in what the call leaves open from their metadata,
checks the file against the architecture before allocating it, adapts the tensors (a new head,
an adapted stem: models/pretrained.py), loads them strictly and describes the model by them.
create_model, load_model and model_for_data (models/factory.py) look the entry up once and come
here; nothing here looks it up again.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.memory import check_fits, memory_budget
from ..errors import ResnetlabError
from .adapt import HEAD, adapt_state, adapted_metadata, file_shapes
from .cfg import cfg_from_metadata, default_cfg
from .features import FeatureExtractor, Indices
from .mlp import ResidualMLP
from .resnet import ResNet, ResNetSpec
from .weights import check_compatible, check_fits_model, model_metadata

log = logging.getLogger("resnetlab.models")


@dataclass(frozen=True)
class ModelEntry:
    """One registered name (models/registry.py): how to build it and what to show about it."""

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


@dataclass(frozen=True)
class Source:
    """A weights file to load: where it is, its shipped tag if any, and how messages name it."""

    path: Path
    tag: str | None
    label: str


SPEC_OPTIONS = {
    "shortcut", "stem", "stride_in_1x1", "block_drop_rate", "stem_width", "widths", "layers",
    "groups", "base_width",
}  # fmt: skip
RESNET_OPTIONS = {"zero_init_residual", "drop_path_rate", "drop_rate", "output_stride"}
MLP_OPTIONS = {"in_features", "depth", "width", "zero_init_residual", "drop_path_rate", "drop_rate"}


@dataclass(frozen=True)
class Weights:
    """Weights to build a model from: where they are, their metadata, and their tensors (None:
    the metadata alone, for a tag's architecture and cfg with fresh weights)."""

    source: Source
    meta: dict[str, Any]
    state: dict[str, torch.Tensor] | None = None


def build_model_with_cfg(
    entry: ModelEntry,
    weights: Weights | None = None,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    global_pool: str | None = None,
    **options: Any,
) -> nn.Module:
    """The model of `entry`, as the call asks and the weights say, with its config and
    pretrained_cfg; a backbone for features_only=True; loaded with `weights.state` if given."""
    if weights is None:
        return _build(entry, num_classes=num_classes, in_chans=in_chans, global_pool=global_pool,
                      **options)  # fmt: skip
    if weights.state is None:
        model = _build(entry, **_asked(weights.meta, num_classes, in_chans, global_pool, options))
        _describe(model, weights.meta, weights.source)
        return model
    return _load(entry, weights, num_classes, in_chans, global_pool, options)


def _build(
    entry: ModelEntry,
    *,
    num_classes: int | None = None,
    in_chans: int | None = None,
    global_pool: str | None = None,
    features_only: bool = False,
    out_indices: Indices = None,
    **options: Any,
) -> nn.Module:
    """The net with fresh weights, its config and default cfg, wrapped for features_only."""
    name = entry.name
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
            if in_chans is not None and "in_features" not in options:
                raise ResnetlabError(
                    "an MLP takes in_features (channels x height x width), not in_chans"
                )

            def make() -> nn.Module:
                return ResidualMLP(num_classes=num_classes, plain=entry.mlp_plain, **options)

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

            def make() -> nn.Module:
                return ResNet(
                    spec,
                    num_classes=num_classes,
                    in_chans=3 if in_chans is None else in_chans,
                    global_pool="avg" if global_pool is None else global_pool,
                    **net_kw,
                )

        for key, v in (("num_classes", num_classes), ("in_chans", in_chans)):
            if isinstance(v, bool):
                raise ResnetlabError(f"{key} must be a whole number, got {v!r}")
        check_size(make, rough_parameters(spec, num_classes, in_chans, options),
                   least_parameters(spec, options))  # fmt: skip
        model = make()
    except (ValueError, TypeError) as e:
        raise ResnetlabError(f"{name}: {e}") from None
    config: dict[str, Any] = {"name": name, "num_classes": num_classes, "options": dict(options)}
    if not entry.is_mlp:
        config["in_chans"] = model.in_chans
        if model.global_pool.pool_type != "avg":
            config["global_pool"] = model.global_pool.pool_type
    config["depth"] = real_depth(entry, spec, options)
    model.resnetlab_config = config
    cfg = default_cfg(
        name,
        input_layout(spec),
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


def rough_parameters(
    spec: ResNetSpec | None, num_classes: Any, in_chans: Any, options: dict[str, Any]
) -> int:
    """An upper bound of a net's parameters from its sizes alone (0 when they are not numbers:
    the constructor then refuses them): per block 9 x (inner + outer width)^2, a 7x7 stem, the
    head. Within a few times the true count for the nets of the registry."""
    try:
        if spec is None:
            sizes = inspect.signature(ResidualMLP).parameters
            width, depth, features = (
                int(options.get(k, sizes[k].default)) for k in ("width", "depth", "in_features")
            )
            return (2 * depth + 2) * width * width + width * (features + int(num_classes))
        bottleneck = spec.block == "bottleneck"
        expansion = 4 if bottleneck else 1
        group_width = int(spec.groups) * int(spec.base_width) / 64 if bottleneck else 1
        total = 0
        for blocks, width in zip(spec.layers, spec.widths):
            inner = int(width * group_width)
            total += int(blocks) * 9 * (inner + expansion * int(width)) ** 2
        stem = int(spec.stem_width)
        total += 49 * stem * (int(in_chans or 3) + stem)
        return total + expansion * int(spec.widths[-1]) * (int(num_classes) + 1)
    except (TypeError, ValueError, OverflowError, KeyError, IndexError):
        return 0


def least_parameters(spec: ResNetSpec | None, options: dict[str, Any]) -> int:
    """A lower bound of a net's parameters from its sizes alone (0 when they are not numbers):
    every block holds at least one 3x3 conv of its inner width (grouped in a bottleneck), every
    MLP block two Linear layers of its width. Cheap where building the net is not: a net of a
    billion blocks takes minutes to build even on the meta device."""
    try:
        if spec is None:
            sizes = inspect.signature(ResidualMLP).parameters
            width, depth = (int(options.get(k, sizes[k].default)) for k in ("width", "depth"))
            return 2 * max(depth, 0) * width * width
        bottleneck = spec.block == "bottleneck"
        groups = max(int(spec.groups), 1) if bottleneck else 1
        base = int(spec.base_width) if bottleneck else 64
        inner = [int(int(w) * base / 64) * groups for w in spec.widths]  # as the blocks make it
        return sum(
            max(int(blocks), 0) * 9 * c * c // groups for blocks, c in zip(spec.layers, inner)
        )
    except (TypeError, ValueError, OverflowError, KeyError, IndexError):
        return 0


def check_size(make: Any, rough: int, least: int = 0) -> None:
    """Refuse, before allocating, a net whose fp32 parameters pass the memory budget (the stated
    limit of data/memory.py): at once when even the lower bound `least` passes it; else, when the
    rough (upper) bound passes it, the exact count of a build on the meta device, which allocates
    nothing (about 2 s the first time in a process, so only then). A build on the meta device (a
    file's skeleton) allocates nothing either: only the lower bound is checked (such a net could
    never be given memory, and building it would take minutes)."""
    if 4 * rough <= memory_budget():
        return
    if 4 * least > memory_budget():
        check_fits(4 * least, f"a net of at least {least:,} parameters",
                   "ask for fewer blocks, classes or channels")  # fmt: skip
    if torch.get_default_device().type == "meta":
        return
    with torch.device("meta"):
        count = sum(p.numel() for p in make().parameters())
    check_fits(4 * count, f"a net of {count:,} parameters", "ask for fewer classes or channels")


def input_layout(spec: ResNetSpec | None) -> str:
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


def blocks_asked(entry: ModelEntry, options: dict[str, Any]) -> tuple[int, str]:
    """How many blocks the options ask for, and which option says so (0 when unknown)."""
    if entry.is_mlp:
        depth = options.get("depth")
        return (depth, f"depth={depth}") if isinstance(depth, int) else (0, "")
    layers = options.get("layers", entry.spec.layers)
    if isinstance(layers, (list, tuple)) and all(isinstance(n, int) for n in layers):
        return sum(max(n, 0) for n in layers), f"layers={list(layers)}"
    return 0, ""


def _asked(
    meta: dict[str, Any],
    num_classes: int | None,
    in_chans: int | None,
    global_pool: str | None,
    options: dict[str, Any],
    file_classes: int | None = None,
    file_chans: int | None = None,
) -> dict[str, Any]:
    """The build arguments: what the call asks for, else what the weights say."""
    if file_classes is None:
        file_classes, file_chans = meta.get("num_classes"), meta.get("in_chans")
    options = {**meta.get("options", {}), **options}
    if meta.get("features_only") and "features_only" not in options:
        # a backbone's file: rebuild the backbone, with the feature maps it returned
        options["features_only"] = True
        if meta.get("out_indices") is not None:
            options.setdefault("out_indices", tuple(meta["out_indices"]))
    num_classes = file_classes if num_classes is None else num_classes
    if global_pool is None:
        global_pool = meta.get("global_pool")
        if global_pool == "" and num_classes:  # the file had no head; the model asks for one
            global_pool = None
    return dict(
        num_classes=num_classes,
        in_chans=file_chans if in_chans is None else in_chans,
        global_pool=global_pool,
        **options,
    )


def _load(
    entry: ModelEntry,
    weights: Weights,
    num_classes: int | None,
    in_chans: int | None,
    global_pool: str | None,
    options: dict[str, Any],
) -> nn.Module:
    """Build the model as the call and the file say, adapt the file's tensors to it, load them."""
    source, state, meta = weights.source, weights.state, weights.meta
    path = source.path
    if meta.get("name") not in (None, entry.name):
        raise ResnetlabError(f"{path} holds weights of {meta['name']!r}, not {entry.name!r}")
    file_classes, file_chans = file_shapes(state, meta)
    kwargs = _asked(meta, num_classes, in_chans, global_pool, options, file_classes, file_chans)
    if meta:
        # the file's own architecture, before anything is allocated: crafted options cannot
        # make a huge or endless build, and a file that does not fit fails naming the tensors
        file_kwargs = dict(kwargs, num_classes=file_classes, in_chans=file_chans, global_pool=None)
        _check_file_fits(entry, path, state, file_kwargs)
    model = _build(entry, **kwargs)
    head = getattr(model, "num_classes", None) if hasattr(model, "fc") else None
    state, notes = adapt_state(state, file_classes, file_chans, head, kwargs["in_chans"])
    own = model.state_dict()
    fresh = [k for k in own if k.startswith(HEAD) and k not in state]  # a new head keeps its init
    check_compatible(model, {**state, **{k: own[k] for k in fresh}}, str(path))
    model.load_state_dict(state, strict=not fresh)
    if notes:
        log.info("%s: %s; the rest loaded strictly", source.label, "; ".join(notes))
        meta = adapted_metadata(meta, model_metadata(model), source.label, kwargs["in_chans"])
    elif meta:  # the file's class names, mean and std must fit the net it rebuilt, not be dropped
        check_fits_model(meta, model_metadata(model), f"{path}: its metadata")
    _describe(model, meta, source)
    model.resnetlab_metadata = meta
    return model


def _describe(model: nn.Module, meta: dict[str, Any], source: Source) -> None:
    """Set the model's pretrained_cfg from the weights' metadata over its default cfg."""
    model.pretrained_cfg = cfg_from_metadata(
        model.pretrained_cfg, meta, tag=source.tag, file=str(source.path)
    )


def _check_file_fits(entry: ModelEntry, path, state, kwargs: dict[str, Any]) -> None:
    """Compare the file's tensor names and shapes with the architecture its metadata describes,
    before anything is allocated."""
    blocks, said = blocks_asked(entry, kwargs)
    if blocks > len(state):  # every block holds at least one tensor
        raise ResnetlabError(
            f"{path}: metadata options {said} ask for {blocks} blocks, but the file holds only "
            f"{len(state)} tensors; expected options that match the file's tensors"
        )
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        skeleton = _build(entry, **kwargs)
    check_compatible(skeleton, state, str(path))
