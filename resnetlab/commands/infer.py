"""`resnetlab predict` and `explain`: using a trained model. Export, quantize, bench:
commands/deploy.py; eval (which takes the same --backend choices): commands/train.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ResnetlabError, one_line


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the parser."""
    p = sub.add_parser(
        "predict",
        help="top-k classes of images (files or directories) with a weights file",
        description="Predict classes of image files, and of every image in given directories. "
        "An unreadable image is named on stderr; the others are still predicted, and the exit "
        "status is 1 if any failed.",
    )
    p.add_argument(
        "weights", help="a resnetlab .safetensors weights file, or an ONNX file (export, quantize)"
    )
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files or directories")
    p.add_argument(
        "--topk",
        type=int,
        help="classes to show per image (default 5, or all where the model has fewer; at most "
        "the model's classes)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--fp32", action="store_true", help="force fp32 (no bf16 even where native)")
    p.add_argument(
        "--device",
        default="auto",
        help="auto (default: CUDA when there is one; an int8 file runs on the CPU), cpu or cuda",
    )
    p.add_argument(
        "--threads", type=int, help="CPU threads (default: the cores other processes leave free)"
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the model (default: only for large image sets, where it pays)",
    )
    add_backend_arguments(p)
    p.set_defaults(func=run_predict)

    p = sub.add_parser(
        "explain", help="Grad-CAM heatmap over an image for the predicted or a given class"
    )
    p.add_argument("weights", help="a resnetlab .safetensors weights file")
    p.add_argument("image", help="an image file")
    p.add_argument("--class", dest="target", help="class name or index (default: the predicted)")
    p.add_argument("--stage", help="stage name (layer1..) or number (default: the last stage)")
    p.add_argument("--out", help="output PNG (default: IMAGE_STEM.gradcam.png here)")
    p.set_defaults(func=run_explain)


def add_backend_arguments(p: argparse.ArgumentParser, eval_: bool = False) -> None:
    """--backend, and --classes/--mean/--std for ONNX files made without resnetlab metadata."""
    weights = "torch" if eval_ else "the fastest `resnetlab bench` measured here, else torch"
    p.add_argument(
        "--backend",
        choices=("auto", "torch", "onnxruntime", "openvino"),
        default="auto",
        help=f"what runs the model: auto (default: for weights {weights}; for an ONNX file the "
        "faster runtime measured here, else onnxruntime), torch, onnxruntime or openvino "
        "(pip install 'resnetlab[openvino]')",
    )
    p.add_argument(
        "--classes",
        help="class names of an ONNX file without resnetlab metadata: a,b,c or a text file of "
        "one name a line",
    )
    p.add_argument("--mean", help="its per-channel mean (0..1 scale): 0.485,0.456,0.406")
    p.add_argument("--std", help="its per-channel std: 0.229,0.224,0.225")


def overrides_from(args: argparse.Namespace) -> dict | None:
    """The --classes/--mean/--std given, as metadata keys (None when none is)."""
    from ..infer.onnxmodel import parse_overrides

    out = parse_overrides(args.classes, args.mean, args.std)
    return out or None


def _err(cmd: str, msg: str) -> None:
    print(f"resnetlab {cmd}: {one_line(msg)}", file=sys.stderr)


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
        device=args.device,
        backend=args.backend,
        overrides=overrides_from(args),
        log=lambda m: print(f"  {m}", file=sys.stderr, flush=True),
        threads=args.threads,  # resolved with the rest of the plan (an ONNX file's runtime too)
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


def run_explain(args: argparse.Namespace) -> int:
    """Grad-CAM for one image, written as a PNG overlay."""
    from ..data.classmap import class_names
    from ..files import check_output
    from ..infer.gradcam import display_image, grad_cam, save_overlay
    from ..infer.onnxmodel import is_onnx_file
    from ..infer.predict import check_finite_outputs, load_for_inference

    if is_onnx_file(args.weights):
        raise ResnetlabError(
            f"{args.weights} is an ONNX file: Grad-CAM needs the PyTorch weights (their "
            "gradients); explain the .safetensors file it was made from"
        )
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
    check_output(out, (args.image, args.weights), "--out")
    x = prep.load(args.image)
    res = grad_cam(model, x[None], target=target, stage=args.stage)
    check_finite_outputs(res.logits, str(args.weights), [str(args.image)])  # before any PNG
    p = float(res.probs[res.index])
    pred = int(res.probs.argmax())
    title = f"{Path(args.image).name}: {classes[res.index]} (p={p:.3f}), stage {res.stage}"
    save_overlay(display_image(x, prep.mean, prep.std), res.cam, out, title=title)
    note = (
        "" if pred == res.index else f"; predicted {classes[pred]} ({float(res.probs[pred]):.3f})"
    )
    print(f"class {classes[res.index]} (index {res.index}, p={p:.3f}), stage {res.stage}{note}")
    print(f"wrote {out}")
    return 0
