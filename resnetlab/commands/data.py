"""`resnetlab data info` and `resnetlab data prepare` (registered by resnetlab.cli)."""

from __future__ import annotations

import argparse
import json
import math
import sys

from ..errors import one_line


def _amount(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a count (5000) or a fraction (0.1), got {text!r}"
        ) from None


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not 0.0 < v < 1.0:  # 1.0 would hold out everything (and NaN compares false)
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1) such as 0.2, got {text!r}")
    return v


def _whole(low: int, high: float, expected: str):
    """An argparse type: a whole number in [low, high), else `expected` in the message."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = low - 1
        if not low <= v < high:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return v

    return parse


_seed = _whole(0, 2**32, "a whole number in [0, 2**32)")  # what numpy's generators take
_positive = _whole(1, math.inf, "a positive whole number")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the parser."""
    p = sub.add_parser("data", help="inspect data sources and prepare image folders")
    group = p.add_subparsers(dest="data_command", metavar="ACTION")
    group.required = True

    q = group.add_parser(
        "info",
        help="split sizes, counts per class, image shape, mean and std of a source",
        description="SOURCE is a dataset name (fashion-mnist, mnist, cifar10, cifar100) or a "
        "path: a directory of IDX files, of CIFAR batches, of class folders, a prepared cache, "
        "or an .npz file.",
    )
    q.add_argument("source", metavar="SOURCE")
    q.add_argument("--json", action="store_true", help="print JSON instead of text")
    _source_options(q)
    q.set_defaults(func=run_info)

    q = group.add_parser(
        "prepare",
        help="decode a class-folder tree once into a memory-mapped uint8 cache",
        description="Decode FOLDER (one sub-folder per class; train/ and test/ or val/ kept) into "
        "OUT: images.npy (uint8 N,C,S,S) and resnetlab-data.json. Use OUT as --data afterwards.",
    )
    q.add_argument("folder", metavar="FOLDER")
    q.add_argument("out", metavar="OUT")
    q.add_argument("--size", type=_positive, required=True, help="output side in pixels")
    q.add_argument("--mode", choices=("RGB", "L"), help="default: L if all images are grey")
    q.add_argument("--skip-bad", action="store_true", help="skip unreadable files, report count")
    q.add_argument("--test-fraction", type=_fraction, default=0.2, help="held out if no test/ tree")
    q.add_argument("--seed", type=_seed, default=0)
    q.set_defaults(func=run_prepare)


def _source_options(q: argparse.ArgumentParser) -> None:
    q.add_argument("--val-split", type=_amount, default=0, help="hold out of train: N or 0.x")
    q.add_argument("--seed", type=_seed, default=0, help="seed of the held-out splits")
    q.add_argument("--skip-bad", action="store_true", help="skip unreadable image files")
    q.add_argument("--size", type=_positive, help="image folders: resize every image to SxS")
    q.add_argument("--mode", choices=("RGB", "L"), help="image folders: colour or grey")
    q.add_argument("--test-fraction", type=_fraction, default=0.2, help="held out if no test split")


def describe(splits, skipped: int = 0) -> dict:
    """The facts `data info` prints: sizes, counts per class, shape, mean and std of train."""
    from ..data.normalise import compute_mean_std

    parts = {"train": splits.train}
    if splits.val is not None:
        parts["val"] = splits.val
    parts["test"] = splits.test
    classes = splits.train.classes
    c, h, w = splits.train.image_shape
    mean, std = compute_mean_std(splits.train.images)
    return {
        "name": splits.name,
        "image_shape": [c, h, w],
        "channels": c,
        "height": h,
        "width": w,
        "num_classes": len(classes),
        "classes": classes,
        "splits": {k: len(v) for k, v in parts.items()},
        "counts": {k: v.labels.bincount(minlength=len(classes)).tolist() for k, v in parts.items()},
        "mean": list(mean),
        "std": list(std),
        "skipped": skipped,
    }


def _text(info: dict) -> str:
    splits = ", ".join(f"{k} {n}" for k, n in info["splits"].items())
    ch = info["channels"]
    lines = [
        f"name:        {info['name']}",
        f"splits:      {splits}",
        f"image shape: {info['height']}x{info['width']}, {ch} channel{'s' if ch > 1 else ''}",
        f"classes:     {info['num_classes']}",
        "mean:        " + ", ".join(f"{v:.4f}" for v in info["mean"]) + "  (train, 0..1 scale)",
        "std:         " + ", ".join(f"{v:.4f}" for v in info["std"]),
    ]
    if info["skipped"]:
        lines.append(f"skipped:     {info['skipped']} unreadable image file(s)")
    names = list(info["counts"])
    width = max(12, *(len(c) for c in info["classes"]))
    lines.append("")
    lines.append(f"{'class':<{width}}" + "".join(f"{n:>9}" for n in names))
    for i, cls in enumerate(info["classes"]):
        lines.append(f"{cls:<{width}}" + "".join(f"{info['counts'][n][i]:>9}" for n in names))
    return "\n".join(lines)


def _report_skipped(skipped: list) -> None:
    """One line on stderr for the unreadable image files passed over, if any."""
    if skipped:
        print(
            f"resnetlab data: skipped {len(skipped)} unreadable image file(s); "
            f"first: {one_line(skipped[0])}",
            file=sys.stderr,
        )


def run_info(args: argparse.Namespace) -> int:
    """Print what a data source holds."""
    from ..data.sources import read_source

    splits, skipped = read_source(
        args.source,
        val_split=args.val_split,
        seed=args.seed,
        skip_bad=args.skip_bad,
        size=args.size,
        mode=args.mode,
        test_fraction=args.test_fraction,
    )
    _report_skipped(skipped)
    info = describe(splits, len(skipped))
    print(json.dumps(info, indent=1) if args.json else _text(info))
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    """Decode a class-folder tree into a prepared cache."""
    from tqdm import tqdm

    from ..data.prepared import prepare_folder

    bar = None

    def progress(n: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="img", desc="decoding", disable=not sys.stderr.isatty())
        bar.update(n)

    try:
        meta = prepare_folder(
            args.folder,
            args.out,
            args.size,
            mode=args.mode,
            skip_bad=args.skip_bad,
            test_fraction=args.test_fraction,
            seed=args.seed,
            progress=progress,
        )
    finally:
        if bar is not None:
            bar.close()
    _report_skipped(meta["skipped_files"])
    sizes = ", ".join(f"{k} {b - a}" for k, (a, b) in meta["splits"].items())
    n, c, h, w = meta["shape"]
    print(f"wrote {args.out}: {n} images ({sizes}), {c}x{h}x{w}, {len(meta['classes'])} classes")
    return 0
