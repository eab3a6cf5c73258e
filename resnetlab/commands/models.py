"""`resnetlab models` and `resnetlab summary`."""

from __future__ import annotations

import argparse
import functools
import json
import math
from dataclasses import replace

import torch

from ..errors import ResnetlabError
from ..models import ModelEntry, ResNet, ResNetSpec, create_model, get_entry, list_models
from ..models.stats import count_macs, count_params, stage_summary
from ..models.weights import shipped_weights


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list the models with their parameters and GFLOPs",
        description="Without a pattern: the standard table. A pattern (fnmatch, e.g. 'resnet*', "
        "'plain1?') or --all also lists every CIFAR depth 6n+2 up to 1202 (resnet8, plain14, ...).",
    )
    p.add_argument("pattern", nargs="*", help="only names matching these patterns ('resnet*')")
    p.add_argument("--all", action="store_true", help="every name, every CIFAR depth 6n+2 too")
    p.add_argument("--pretrained", action="store_true", help="only nets with shipped weights")
    p.add_argument("--family", help="only this family (resnet, plain, preact, wide, resnext, mlp)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_models)

    p = sub.add_parser("summary", help="per-stage output shapes, parameters and FLOPs of a model")
    p.add_argument("name", help="a model name (see `resnetlab models`)")
    p.add_argument("--input-size", type=_size, help="C,H,W (or H for square images)")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--in-chans", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_summary)


def _size(text: str) -> tuple[int, ...]:
    try:
        parts = tuple(int(t) for t in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected C,H,W or H, got {text!r}") from None
    if len(parts) not in (1, 3) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W or H, got {text!r}")
    return parts


@functools.cache
def _counts(spec: ResNetSpec, num_classes: int, input_size: tuple[int, ...]) -> tuple[int, int]:
    """(parameters, multiply-adds) of a conv net, counted on shapes alone."""
    with torch.device("meta"):  # shapes only: no memory, no initialisation, same counts
        model = ResNet(spec, num_classes=num_classes, in_chans=input_size[0])
    return count_params(model), count_macs(model, input_size)


def net_counts(entry: ModelEntry) -> tuple[int, int]:
    """(parameters, multiply-adds) of a registered net at its native input.

    A net of n identical blocks per stage (n > 2) costs what the n = 1 net does plus n - 1 times
    the difference between the n = 2 and n = 1 nets: only the first block of a stage differs from
    the rest. Exact, and it spares building the 1202-layer nets to count them."""
    if entry.is_mlp:
        with torch.device("meta"):
            model = create_model(entry.name)
        return count_params(model), count_macs(model, entry.input_size)
    spec, size = entry.spec, entry.input_size
    n = spec.layers[0]
    if n <= 2 or len(set(spec.layers)) != 1:
        return _counts(spec, entry.num_classes, size)
    one = _counts(replace(spec, layers=(1,) * len(spec.layers)), entry.num_classes, size)
    two = _counts(replace(spec, layers=(2,) * len(spec.layers)), entry.num_classes, size)
    return tuple(a + (n - 1) * (b - a) for a, b in zip(one, two))


def model_row(name: str, tags: list[str] | None = None) -> dict:
    entry = get_entry(name)
    params, macs = net_counts(entry)
    return {
        "name": name,
        "family": entry.family,
        "layout": entry.layout,
        "depth": entry.depth,
        "params": params,
        "gflops": round(macs / 1e9, 4),
        "input_size": list(entry.input_size),
        "num_classes": entry.num_classes,
        "pretrained": list(tags or []),
    }


def run_models(args: argparse.Namespace) -> int:
    pattern = "*" if args.all else (args.pattern or None)
    names = list_models(pattern, family=args.family, pretrained=args.pretrained, include_tags=False)
    if not names:
        families = sorted({get_entry(n).family for n in list_models()})
        if args.family not in (None, *families):
            raise ResnetlabError(
                f"no models in family {args.family!r}; families: {', '.join(families)}"
            )
        asked = [f"pattern {' '.join(args.pattern)!r}"] if args.pattern else []
        asked += [f"family {args.family!r}"] if args.family else []
        asked += ["shipped weights"] if args.pretrained else []
        raise ResnetlabError(f"no models match {' with '.join(asked)}; see `resnetlab models`")
    shipped = shipped_weights()
    layouts = {"imagenet": 0, "cifar": 1, "mlp": 2}
    rows = sorted(
        (model_row(n, shipped.get(n)) for n in names),
        key=lambda r: (layouts[r["layout"]], r["family"], r["depth"], r["name"]),
    )
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(
        f"{'name':<20} {'family':<8} {'depth':>5} {'params':>12} {'GFLOPs':>8}  input     weights"
    )
    for r in rows:
        size = "x".join(str(s) for s in r["input_size"])
        print(
            f"{r['name']:<20} {r['family']:<8} {r['depth']:>5} {r['params']:>12,} "
            f"{r['gflops']:>8.3f}  {size:<9} {', '.join(r['pretrained'])}".rstrip()
        )
    print("GFLOPs are multiply-adds (as in the ResNet paper and torchvision) at the native input.")
    return 0


def run_summary(args: argparse.Namespace) -> int:
    """`resnetlab summary`: shapes, parameters and multiply-adds per stage, from a forward pass
    on the meta device (no memory for any input size)."""
    entry = get_entry(args.name)
    size = args.input_size or entry.input_size
    if entry.is_mlp and args.in_chans is not None:
        raise ResnetlabError(
            f"--in-chans: {args.name} takes vectors; give its input as --input-size N (features) "
            "or C,H,W (an image, flattened)"
        )
    if not entry.is_mlp and len(size) == 1:
        size = (args.in_chans or entry.input_size[0], size[0], size[0])
    if args.in_chans is not None and args.in_chans != size[0]:
        raise ResnetlabError(f"--in-chans {args.in_chans} disagrees with --input-size {size}")
    with torch.device("meta"):
        if entry.is_mlp:  # an image flattened: C x H x W features
            model = create_model(args.name, num_classes=args.num_classes,
                                 in_features=math.prod(size))  # fmt: skip
        else:
            model = create_model(args.name, num_classes=args.num_classes, in_chans=size[0])
    try:
        rows = stage_summary(model, tuple(size))
    except RuntimeError as e:
        raise ResnetlabError(f"input size {size} does not fit {args.name}: {e}") from None
    total_p = count_params(model)
    total_macs = sum(r.macs for r in rows)
    if args.json:
        print(json.dumps({
            "name": args.name, "input_size": list(size), "params": total_p,
            "gflops": total_macs / 1e9,
            "stages": [dict(name=r.name, output_shape=list(r.output_shape), params=r.params,
                            gflops=r.macs / 1e9) for r in rows],
        }, indent=1))  # fmt: skip
        return 0
    print(f"{args.name}  input {'x'.join(map(str, size))}")
    print(f"{'module':<12} {'output':<20} {'params':>12} {'GFLOPs':>9}")
    for r in rows:
        shape = "x".join(str(s) for s in r.output_shape[1:])
        print(f"{r.name:<12} {shape:<20} {r.params:>12,} {r.macs / 1e9:>9.4f}")
    print(f"{'total':<12} {'':<20} {total_p:>12,} {total_macs / 1e9:>9.4f}")
    return 0
