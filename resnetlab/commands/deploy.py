"""`resnetlab export`, `quantize` and `bench`: a trained model made into files for deployment
(ONNX, torch.export, int8) and timed along every path. Predicting and explaining: commands/infer.py.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from .. import policy
from ..errors import ResnetlabError


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the parser."""
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
    p.add_argument(
        "--threads",
        type=int,
        help="intra-op threads (default: the cores other processes leave free)",
    )
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


MAX_REP_TIME = 3600.0  # seconds per timed repetition: an hour is already far more than needed


def run_export(args: argparse.Namespace) -> int:
    """Export, verify and report the difference to PyTorch."""
    from ..files import check_output
    from ..infer.export import SUFFIXES, check_suffix, export
    from ..models.factory import load_model

    out = Path(args.out) if args.out else Path(args.weights).with_suffix(SUFFIXES[args.format])
    check_output(out, (args.weights,), "--out")
    if not out.is_dir():  # a directory: export says so
        check_suffix(args.format, out)  # a name that lies about the format: before any work
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
        # a backbone gives feature maps: no top-1 to compare (top1_agree None), only the maps
        same = {True: ", same top-1", False: ", top-1 DIFFERS", None: ""}[rep.top1_agree]
        print(
            f"checked with {rep.checked_with}: max abs diff vs PyTorch {rep.max_abs_diff:.3g}{same}"
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
    from ..infer.bench import bench, bench_plan, load_bench_target
    from ..infer.bench_paths import check_known, default_paths, split_cpu_only
    from ..infer.bench_report import fast_path_choices, format_table, machine_line, rows_as_json

    plan = bench_plan(args.device, args.threads)  # device, precision, threads: resolved once
    device = plan.device
    sizes = _batch_sizes(args.batch_size)
    given = args.paths is not None  # an empty --paths '' is refused below, not taken as unset
    asked = tuple(p.strip() for p in args.paths.split(",")) if given else default_paths(device)
    check_known(asked)  # before the model is loaded and the table's first line printed
    paths, skipped = split_cpu_only(asked, device)
    if not paths:
        raise ResnetlabError(f"--paths {args.paths}: none of them runs on {device}")
    if args.repeats < 1:
        raise ResnetlabError(f"--repeats {args.repeats} must be at least 1")
    if not (math.isfinite(args.rep_time) and 0 < args.rep_time <= MAX_REP_TIME):
        raise ResnetlabError(
            f"--rep-time {args.rep_time}: expected seconds in (0, {MAX_REP_TIME:g}]"
        )
    policy.apply(plan)
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
        plan=plan,
    )
    if args.json:
        print(json.dumps(rows_as_json(rows), indent=1))
    else:
        print(format_table(rows))
        for line in fast_path_choices(rows):
            print(line)
    return 0
