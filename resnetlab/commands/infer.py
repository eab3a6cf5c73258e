"""`resnetlab predict`, `export`, `bench` and `explain`: using a trained model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..errors import ResnetlabError


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the parser."""
    p = sub.add_parser(
        "predict",
        help="top-k classes of images (files or directories) with a weights file",
        description="Predict classes of image files, and of every image in given directories. "
        "An unreadable image is named on stderr; the others are still predicted, and the exit "
        "status is 1 if any failed.",
    )
    p.add_argument("weights", help="a resnetlab .safetensors weights file")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files or directories")
    p.add_argument("--topk", type=int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--fp32", action="store_true", help="force fp32 (no bf16 even where native)")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the model (default: only for large image sets, where it pays)",
    )
    p.set_defaults(func=run_predict)

    p = sub.add_parser(
        "export",
        help="write a model as ONNX or a torch.export program, checked against PyTorch",
    )
    p.add_argument("weights", help="a resnetlab .safetensors weights file")
    p.add_argument("--format", required=True, choices=("onnx", "exported-program"))
    p.add_argument("--out", help="output file (default: the weights' name with .onnx / .pt2)")
    p.add_argument("--dynamic-batch", action="store_true", help="any batch size, not only 1")
    p.set_defaults(func=run_export)

    p = sub.add_parser(
        "bench",
        help="images/s and latency: eager fp32, eager bf16, fast path, ONNX Runtime",
        description="Benchmark inference paths of one model in one run: medians of several "
        "repetitions after warm-up, with ratios to eager fp32.",
    )
    p.add_argument("model", metavar="MODEL_OR_WEIGHTS", help="a model name or a weights file")
    p.add_argument(
        "--batch-size", default="1,16", help="comma-separated batch sizes (default 1,16)"
    )
    p.add_argument("--image-size", type=int, help="square input side (default: the model's own)")
    p.add_argument(
        "--paths",
        default=None,
        help="comma-separated subset of eager-fp32,eager-bf16,fast,fast-nocompile,onnxruntime",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions (default 5)")
    p.add_argument(
        "--rep-time", type=float, default=0.5, help="least seconds per repetition (default 0.5)"
    )
    p.add_argument("--threads", type=int, help="intra-op threads (default: torch's own choice)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=run_bench)

    p = sub.add_parser(
        "explain", help="Grad-CAM heatmap over an image for the predicted or a given class"
    )
    p.add_argument("weights", help="a resnetlab .safetensors weights file")
    p.add_argument("image", help="an image file")
    p.add_argument("--class", dest="target", help="class name or index (default: the predicted)")
    p.add_argument("--stage", help="stage name (layer1..) or number (default: the last stage)")
    p.add_argument("--out", help="output PNG (default: IMAGE_STEM.gradcam.png here)")
    p.set_defaults(func=run_explain)


def _err(cmd: str, msg: str) -> None:
    print(f"resnetlab {cmd}: {msg}", file=sys.stderr)


def run_predict(args: argparse.Namespace) -> int:
    """Predict and print; exit 1 if any image could not be read."""
    from ..infer.predict import predict

    result = predict(
        args.weights,
        args.images,
        topk=args.topk,
        batch_size=args.batch_size,
        precision="fp32" if args.fp32 else "auto",
        compile=args.compile,
        on_failure=lambda path, reason: _err("predict", f"skipped: {reason}"),
    )
    if args.json:
        print(json.dumps([p.as_dict() for p in result.predictions], indent=1))
    else:
        for pred in result.predictions:
            tops = ", ".join(f"{c} {p:.3f}" for c, p in zip(pred.classes, pred.probs))
            print(f"{pred.path}: {tops}")
    if result.failures:
        n, total = len(result.failures), len(result.failures) + len(result.predictions)
        _err("predict", f"{n} of {total} image(s) could not be read")
        return 1
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Export, verify and report the difference to PyTorch."""
    from ..infer.export import SUFFIXES, export
    from ..models.factory import load_model

    model, meta = load_model(args.weights)
    out = Path(args.out) if args.out else Path(args.weights).with_suffix(SUFFIXES[args.format])
    rep = export(model, meta, args.format, out, dynamic_batch=args.dynamic_batch)
    shape = "x".join(str(s) for s in rep.input_shape)
    batch = "dynamic batch" if rep.dynamic_batch else "batch 1"
    print(f"wrote {rep.path} ({rep.format}, input Nx{shape}, {batch})")
    if rep.checked_with is None:
        print("not run: onnxruntime is not installed (pip install 'resnetlab[onnx]')")
    else:
        same = "same top-1" if rep.top1_agree else "top-1 DIFFERS"
        print(
            f"checked with {rep.checked_with}: max abs diff vs PyTorch "
            f"{rep.max_abs_diff:.3g}, {same}"
        )
    return 0


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ResnetlabError(f"--batch-size {text!r}: expected integers like 1,16") from None
    if not sizes or min(sizes) < 1:
        raise ResnetlabError(f"--batch-size {text!r}: expected positive integers like 1,16")
    return sizes


def run_bench(args: argparse.Namespace) -> int:
    """Benchmark every path and print a table (or JSON)."""
    from ..infer.bench import (
        PATHS,
        bench,
        format_table,
        load_bench_model,
        machine_line,
        rows_as_json,
    )

    sizes = _batch_sizes(args.batch_size)
    paths = tuple(p.strip() for p in args.paths.split(",")) if args.paths else PATHS
    if args.repeats < 1:
        raise ResnetlabError(f"--repeats {args.repeats} must be at least 1")
    if args.threads is not None:
        if args.threads < 1:
            raise ResnetlabError(f"--threads {args.threads} must be at least 1")
        torch.set_num_threads(args.threads)
    model, name, size = load_bench_model(args.model, args.image_size)
    log = None if args.json else (lambda m: print("  " + m, file=sys.stderr, flush=True))
    if not args.json:
        print(f"{name}  input {'x'.join(map(str, size))}  {machine_line()}", flush=True)
    rows = bench(
        model,
        name,
        size,
        sizes,
        paths=paths,
        repeats=args.repeats,
        min_rep_s=args.rep_time,
        log=log,
    )
    if args.json:
        print(json.dumps(rows_as_json(rows), indent=1))
    else:
        print(format_table(rows))
    return 0


def run_explain(args: argparse.Namespace) -> int:
    """Grad-CAM for one image, written as a PNG overlay."""
    from ..infer.gradcam import denormalise, grad_cam, save_overlay
    from ..infer.predict import class_names, load_for_inference

    model, meta, prep = load_for_inference(args.weights)
    classes = class_names(meta, int(meta["num_classes"]))
    target = None
    if args.target is not None:
        if args.target in classes:
            target = classes.index(args.target)
        elif args.target.isdigit() and int(args.target) < len(classes):
            target = int(args.target)
        else:
            shown = ", ".join(classes[:10]) + (" ..." if len(classes) > 10 else "")
            raise ResnetlabError(f"unknown class {args.target!r}; classes are {shown}")
    out = Path(args.out) if args.out else Path(f"{Path(args.image).stem}.gradcam.png")
    if out.suffix.lower() != ".png":
        raise ResnetlabError(f"--out {out}: the heatmap is written as PNG; use a .png name")
    x = prep.load(args.image)
    res = grad_cam(model, x[None], target=target, stage=args.stage)
    p = float(res.probs[res.index])
    pred = int(res.probs.argmax())
    title = f"{Path(args.image).name}: {classes[res.index]} (p={p:.3f}), stage {res.stage}"
    save_overlay(denormalise(x, prep.mean, prep.std), res.cam, out, title=title)
    note = (
        "" if pred == res.index else f"; predicted {classes[pred]} ({float(res.probs[pred]):.3f})"
    )
    print(f"class {classes[res.index]} (index {res.index}, p={p:.3f}), stage {res.stage}{note}")
    print(f"wrote {out}")
    return 0
