"""`resnetlab predict`, `export`, `quantize`, `bench` and `explain`: using a trained model."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from .. import policy
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
    p.add_argument("--topk", type=int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of text")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--fp32", action="store_true", help="force fp32 (no bf16 even where native)")
    p.add_argument(
        "--device",
        default="auto",
        help="auto (default: CUDA when there is one; an int8 file runs on the CPU), cpu or cuda",
    )
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's own choice)")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the model (default: only for large image sets, where it pays)",
    )
    add_backend_arguments(p)
    p.set_defaults(func=run_predict)

    p = sub.add_parser(
        "export",
        help="write a model as ONNX or a torch.export program, checked against PyTorch",
    )
    p.add_argument("weights", help="a resnetlab .safetensors weights file")
    p.add_argument("--format", required=True, choices=("onnx", "exported-program"))
    p.add_argument("--out", help="output file (default: the weights' name with .onnx / .pt2)")
    p.add_argument(
        "--static-batch",
        action="store_true",
        help="fix the batch size to 1 (default: any batch size)",
    )
    p.add_argument(
        "--dynamic-batch", action="store_true", help="any batch size: the default (kept for old "
        "commands)",
    )  # fmt: skip
    p.set_defaults(func=run_export)

    p = sub.add_parser(
        "quantize",
        help="int8 model (ONNX Runtime, static): calibrated on training images, compared with fp32",
        description="Post-training static int8 quantization: calibrate on N training images of "
        "SOURCE (preprocessed as the weights say), write an int8 ONNX file with the weights' "
        "metadata, then report top-1 agreement and accuracy of both on the test split, their "
        "size on disk, and images/s and batch-1 latency of both.",
    )
    p.add_argument("weights", help="a resnetlab .safetensors weights file (fp32)")
    p.add_argument(
        "--calib", metavar="SOURCE", help="dataset to calibrate on (default: the weights' own)"
    )
    p.add_argument(
        "--images", type=int, default=512, help="calibration images from its training split (512)"
    )
    p.add_argument("--out", help="output file (default: WEIGHTS_STEM.int8.onnx here)")
    p.add_argument(
        "--test-images", type=int, help="compare on this many test images (default all; 0: none)"
    )
    p.add_argument(
        "--bench-batch", type=int, default=16, help="batch for images/s (default 16; 0: no timing)"
    )
    p.add_argument("--threads", type=int, help="intra-op threads (default: torch's own choice)")
    p.add_argument(
        "--form",
        choices=("auto", "U8S8", "S8S8"),
        default="auto",
        help="8-bit activations: auto (default: both made and timed on every runtime installed, "
        "the fastest at equal accuracy kept), U8S8 (uint8) or S8S8 (int8)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run_quantize)

    p = sub.add_parser(
        "bench",
        help="images/s and latency: eager fp32, eager bf16, fast path, ONNX Runtime",
        description="Benchmark inference paths of one model in one run: medians of several "
        "repetitions after warm-up, with ratios to eager fp32.",
    )
    p.add_argument(
        "model",
        metavar="MODEL_OR_WEIGHTS",
        help="a model name, a weights file, or an ONNX file (export, or int8 from quantize)",
    )
    p.add_argument(
        "--batch-size", default="1,16", help="comma-separated batch sizes (default 1,16)"
    )
    p.add_argument("--image-size", type=int, help="square input side (default: the model's own)")
    p.add_argument(
        "--paths",
        default=None,
        help="comma-separated subset of eager-fp32,eager-bf16,fast,fast-nocompile,fast-fp32,"
        "onnxruntime,openvino,openvino-fp32,int8,int8-openvino,int8-u8s8,int8-s8s8 (default: "
        "eager-fp32,eager-bf16,fast,fast-nocompile,onnxruntime,int8, and openvino,int8-openvino "
        "where OpenVINO is installed; on CUDA eager-fp32,eager-bf16,fast-nocompile,fast)",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions (default 5)")
    p.add_argument(
        "--rep-time", type=float, default=0.5, help="least seconds per repetition (default 0.5)"
    )
    p.add_argument("--threads", type=int, help="intra-op threads (default: torch's own choice)")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu (default), cuda, or auto (CUDA when there is one). On CUDA the paths are "
        "eager-fp32, eager-bf16 (channels_last), fast-nocompile and fast (compiled as CUDA "
        "graphs), timed after torch.cuda.synchronize(); the CPU-only paths (fast-fp32, the ONNX "
        "runtimes, int8) are skipped there",
    )
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


MAX_REP_TIME = 3600.0  # seconds per timed repetition: an hour is already far more than needed


def _err(cmd: str, msg: str) -> None:
    print(f"resnetlab {cmd}: {one_line(msg)}", file=sys.stderr)


def run_predict(args: argparse.Namespace) -> int:
    """Predict and print; exit 1 if any image could not be read."""
    from ..infer.predict import predict

    if args.threads is not None:  # an int8 (ONNX Runtime) file takes torch's count too
        torch.set_num_threads(policy.cpu_threads(args.threads))
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
    from ..files import check_output
    from ..infer.export import SUFFIXES, export
    from ..models.factory import load_model

    out = Path(args.out) if args.out else Path(args.weights).with_suffix(SUFFIXES[args.format])
    check_output(out, (args.weights,), "--out")
    if args.static_batch and args.dynamic_batch:
        raise ResnetlabError(
            "--static-batch and --dynamic-batch: give one (a dynamic batch is the default)"
        )
    model, meta = load_model(args.weights)
    rep = export(
        model, meta, args.format, out, dynamic_batch=not args.static_batch, source=args.weights
    )
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


def run_quantize(args: argparse.Namespace) -> int:
    """Quantize to int8 and print what it costs and gains."""
    from ..infer.quantize import quantize

    if args.threads is not None:
        torch.set_num_threads(policy.cpu_threads(args.threads))
    if args.bench_batch < 0:
        raise ResnetlabError(f"--bench-batch {args.bench_batch} must be 0 (no timing) or more")
    if args.test_images is not None and args.test_images < 0:
        raise ResnetlabError(f"--test-images {args.test_images} must be 0 (none) or more")
    log = None if args.json else (lambda m: print("  " + m, file=sys.stderr, flush=True))
    rep = quantize(
        args.weights, calib=args.calib, images=args.images, out=args.out,
        test_images=args.test_images, bench_batch=args.bench_batch, form=args.form, log=log,
    )  # fmt: skip
    if args.json:
        print(json.dumps(rep.as_dict(), indent=1))
        return 0
    print(
        f"wrote {rep.out} (int8 {rep.form}, ONNX QDQ, calibrated on {rep.calib_images} training "
        f"images of {rep.calib_source}, {rep.seconds:.1f} s)"
    )
    print(f"form: {rep.form_chosen}")
    print(
        f"size on disk: fp32 {rep.fp32_bytes / 1e6:.3f} MB, int8 {rep.int8_bytes / 1e6:.3f} MB "
        f"({rep.fp32_bytes / rep.int8_bytes:.1f}x smaller)"
    )
    if rep.test_images:
        tta = ", flip TTA" if rep.tta_flip else ""
        print(
            f"on {rep.test_images} test images{tta}: top-1 agreement int8 vs fp32 "
            f"{100 * rep.top1_agreement:.2f}%, accuracy fp32 {100 * rep.fp32_top1:.2f}% "
            f"int8 {100 * rep.int8_top1:.2f}%"
        )
    if rep.speed:
        from ..infer.bench import BenchRow
        from ..infer.bench_report import format_table

        print(rep.machine)
        print(format_table([BenchRow(**r) for r in rep.speed]))
    return 0


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ResnetlabError(f"--batch-size {text!r}: expected integers like 1,16") from None
    if not sizes or min(sizes) < 1:
        raise ResnetlabError(f"--batch-size {text!r}: expected positive integers like 1,16")
    return sizes


def check_batch_fits(model: torch.nn.Module, size: tuple[int, int, int], batch: int) -> None:
    """Refuse, before anything runs, a batch whose input or widest activation (three of them
    alive at once) passes the memory budget: shapes from a forward pass on the meta device."""
    from ..data.memory import check_fits

    c, h, w = size
    what, hint = f"a batch of {batch} at {c}x{h}x{w}", "lower --batch-size or --image-size"
    check_fits(4 * batch * c * h * w, f"{what} (the input)", hint)
    widest = [0]

    def note(_module, _inputs, out) -> None:
        if isinstance(out, torch.Tensor):
            widest[0] = max(widest[0], out.numel())

    hooks = [m.register_forward_hook(note) for m in model.modules() if not any(m.children())]
    tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    try:
        meta = {k: torch.empty_like(v, device="meta") for k, v in tensors.items()}
        with torch.no_grad():
            torch.func.functional_call(model, meta, (torch.empty(1, c, h, w, device="meta"),))
    except Exception:  # a net the meta device cannot run: the input bound alone
        return
    finally:
        for hook in hooks:
            hook.remove()
    check_fits(3 * 4 * batch * widest[0], f"{what} (its activations)", hint)


def run_bench(args: argparse.Namespace) -> int:
    """Benchmark every path and print a table (or JSON)."""
    from ..infer.bench import bench, default_paths, load_bench_target, split_cpu_only
    from ..infer.bench_report import fast_path_choices, format_table, machine_line, rows_as_json

    device = policy.pick_device(args.device)
    sizes = _batch_sizes(args.batch_size)
    given = args.paths is not None  # an empty --paths '' is refused below, not taken as unset
    asked = tuple(p.strip() for p in args.paths.split(",")) if given else default_paths(device)
    paths, skipped = split_cpu_only(asked, device)
    if not paths:
        raise ResnetlabError(f"--paths {args.paths}: none of them runs on {device}")
    if args.repeats < 1:
        raise ResnetlabError(f"--repeats {args.repeats} must be at least 1")
    if not (math.isfinite(args.rep_time) and 0 < args.rep_time <= MAX_REP_TIME):
        raise ResnetlabError(
            f"--rep-time {args.rep_time}: expected seconds in (0, {MAX_REP_TIME:g}]"
        )
    if args.threads is not None:
        torch.set_num_threads(policy.cpu_threads(args.threads))
    model, name, size, onnx_file = load_bench_target(args.model, args.image_size)
    if model is not None:  # an ONNX file naming no resnetlab model: its runtime allocates
        check_batch_fits(model, size, max(sizes))
    log = None if args.json else (lambda m: print("  " + m, file=sys.stderr, flush=True))
    if skipped:
        print("  " + skipped, file=sys.stderr, flush=True)
    if not args.json:
        print(f"{name}  input {'x'.join(map(str, size))}  {machine_line(device)}", flush=True)
    rows = bench(
        model,
        name,
        size,
        sizes,
        paths=paths,
        repeats=args.repeats,
        min_rep_s=args.rep_time,
        log=log,
        onnx_file=onnx_file,
        device=device,
    )
    if args.json:
        print(json.dumps(rows_as_json(rows), indent=1))
    else:
        print(format_table(rows))
        for line in fast_path_choices(rows):
            print(line)
    return 0


def run_explain(args: argparse.Namespace) -> int:
    """Grad-CAM for one image, written as a PNG overlay."""
    from ..data.classmap import class_names
    from ..files import check_output
    from ..infer.gradcam import display_image, grad_cam, save_overlay
    from ..infer.onnxmodel import is_onnx_file
    from ..infer.predict import load_for_inference

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
