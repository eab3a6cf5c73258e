"""`resnetlab train` and `resnetlab eval`."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from ..errors import ResnetlabError
from ..policy import DEVICES, PRECISIONS
from ..train.logs import LOG_CHOICES
from ..train.recipes import RECIPE_CHOICES
from .infer import add_backend_arguments, overrides_from

DEFAULT_MODEL = "resnet20"


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the parser."""
    p = sub.add_parser(
        "train",
        help="train a model on a dataset (fast on a CPU; resumable; torchrun for many processes)",
        description="Train MODEL on SOURCE. Every option has a default; `--recipe paper` follows "
        "He et al. 2015. Writes metrics.jsonl, curves.png, summary.json, last/best .safetensors "
        "and a checkpoint into --out.",
    )
    p.add_argument("--model", help=f"model name (see `resnetlab models`; default {DEFAULT_MODEL})")
    p.add_argument("--data", help="dataset: fashion-mnist, mnist, cifar10, a folder, an .npz")
    p.add_argument(
        "--recipe",
        choices=RECIPE_CHOICES,
        help="training recipe (default auto: accel, large batches, on CUDA unless --batch-size is "
        "given; else fast)",
    )
    p.add_argument("--epochs", type=int, help="epochs (default: the recipe's)")
    p.add_argument("--batch-size", type=int, help="global batch size (default: the recipe's)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    p.add_argument("--out", help="run directory (default runs/MODEL-DATA)")
    p.add_argument(
        "--resume",
        nargs="?",
        const="",
        metavar="DIR",
        help="continue the run in DIR (default: --out) from its checkpoint",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an --out that already holds a run's checkpoint",
    )
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--subset", type=int, help="train on the first N training images only")
    p.add_argument("--val-split", type=float, help="hold out this fraction (or count) of train")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="autocast precision (auto: bf16 where the hardware has it, else fp32)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the model (default: where it pays, see docs/training.md)",
    )
    p.add_argument(
        "--option",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="model option, e.g. --option layers=[1,1,1] --option stem=small",
    )
    p.add_argument(
        "--init-from",
        metavar="WEIGHTS",
        help="start from these weights (.safetensors or torchvision-style .pth)",
    )
    p.add_argument(
        "--freeze", metavar="PARTS", help="comma list of parts to freeze: stem,layer1,..."
    )
    p.add_argument(
        "--body-lr-scale",
        type=float,
        help="lr of everything but the head, relative (default 0.1 with --init-from)",
    )
    p.add_argument(
        "--sync-bn",
        action="store_true",
        default=None,
        help="synchronise batch norm across processes (torchrun)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        metavar="STEPS",
        help="also checkpoint every STEPS steps (always at each epoch's end)",
    )
    p.add_argument(
        "--log-every",
        type=int,
        metavar="STEPS",
        help="also log the training error of the batches as trained every STEPS steps "
        "(steps.jsonl)",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        metavar="K",
        help="evaluate every K epochs (default 1; the last epoch is always evaluated)",
    )
    p.add_argument(
        "--eval-images",
        type=int,
        metavar="N",
        help="evaluate each epoch on a fixed seeded N images of each split (the final "
        "evaluation uses all)",
    )
    p.add_argument(
        "--augment",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="translation and flips as the recipe says (default), or none",
    )
    p.add_argument("--device", help=f"{', '.join(DEVICES)} or cuda:N (default auto)")
    p.add_argument("--threads", type=int, help="CPU threads (default: the cores not already busy)")
    p.add_argument(
        "--size",
        type=int,
        metavar="S",
        help="image folders: resize every image to SxS (default: the --init-from weights' input "
        "size, else the images' one size; a folder of mixed sizes needs it)",
    )
    p.add_argument(
        "--mode", choices=("RGB", "L"), help="image folders: colour or grey (default: L if grey)"
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        default=None,
        help="image folders: skip unreadable image files (and say how many)",
    )
    p.add_argument(
        "--log",
        action="append",
        choices=LOG_CHOICES,
        default=None,
        help="also log to tensorboard (RUN/tensorboard/; needs pip install "
        "'resnetlab[tensorboard]'); metrics.jsonl and metrics.csv are always written",
    )
    p.add_argument("--quiet", action="store_true", help="print only the final line")
    p.set_defaults(func=run_train)

    p = sub.add_parser("eval", help="top-1/top-5, per-class accuracy and a confusion matrix")
    p.add_argument(
        "weights",
        help="a .safetensors file written by `resnetlab train`, or an ONNX file (`export`, or "
        "int8 from `quantize`)",
    )
    p.add_argument("--data", required=True, help="dataset source (as for train)")
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also evaluate the mirrored image (default: as the model was trained)",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="autocast precision (default fp32; auto: bf16 where the hardware has it)",
    )
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument(
        "--confusion",
        metavar="PNG",
        help="also draw the confusion matrix into this PNG (default: no picture)",
    )
    p.add_argument(
        "--limit",
        type=int,
        help="evaluate a seeded, class-balanced sample of N images (default all)",
    )
    p.add_argument(
        "--ignore-class-names",
        action="store_true",
        help="match the data's classes to the weights' outputs by index, not by name",
    )
    p.add_argument(
        "--skip-bad", action="store_true", help="skip unreadable images of a folder (counted)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--device", help=f"{', '.join(DEVICES)} or cuda:N (default auto)")
    p.add_argument("--threads", type=int, help="CPU threads (default: the cores not already busy)")
    add_backend_arguments(p, eval_=True)
    p.set_defaults(func=run_eval)


def _parse_options(items: list[str] | None) -> dict:
    options = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ResnetlabError(f"--option {item!r}: expected KEY=VALUE, e.g. layers=[1,1,1]")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value  # a bare word such as stem=small
    return options


def build_config(args: argparse.Namespace):
    """TrainConfig from the command line, completed from the checkpoint when resuming."""
    from ..train.config import TrainConfig

    given = {
        "model": args.model,
        "data": args.data,
        "out": args.out,
        "recipe": args.recipe,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "subset": args.subset,
        "val_split": args.val_split,
        "precision": args.precision,
        "compile": None if args.compile is None else ("on" if args.compile else "off"),
        "model_options": _parse_options(args.option) if args.option else None,
        "init_from": args.init_from,
        "freeze": [s for s in args.freeze.split(",") if s] if args.freeze else None,
        "body_lr_scale": args.body_lr_scale,
        "sync_bn": args.sync_bn,
        "augment": args.augment,
        "checkpoint_every": args.checkpoint_every,
        "log_every": args.log_every,
        "eval_every": args.eval_every,
        "eval_images": args.eval_images,
        "device": args.device,
        "threads": args.threads,
        "quiet": args.quiet or None,
        "size": args.size,
        "mode": args.mode,
        "skip_bad": args.skip_bad,
        "log": sorted(set(args.log)) if args.log else None,
    }
    # the numbers and choices are checked once, by fit (train/config.py's check_config)
    if args.init_from and Path(args.init_from).suffix.lower() == ".onnx":
        raise ResnetlabError(
            f"--init-from {args.init_from}: an ONNX file (such as an int8 model from `resnetlab "
            "quantize`) holds no trainable weights; start from the fp32 .safetensors it came from"
        )
    if args.resume is not None:
        return _resume_config(args, given)
    if given["data"] is None:
        raise ResnetlabError("--data is required (e.g. --data fashion-mnist)")
    given["model"] = given["model"] or DEFAULT_MODEL
    if given["out"] is None:
        stem = Path(given["data"]).name or "data"
        given["out"] = str(Path("runs") / f"{given['model']}-{stem}")
    ck = Path(given["out"], "checkpoint")
    if (ck.exists() or ck.with_name("checkpoint.old").exists()) and not args.overwrite:
        raise ResnetlabError(
            f"{given['out']} already holds a run; continue it with --resume, start afresh with "
            "--overwrite, or choose another --out"
        )
    return TrainConfig(**{k: v for k, v in given.items() if v is not None}), None


def _resume_config(args: argparse.Namespace, given: dict):
    """The checkpoint's configuration with the settings given on the command line over it (which
    of them may change mid-run is set_up's decision: train/resume.py); the run continues in its
    own folder, never elsewhere."""
    from ..train import checkpoint as ckpt
    from ..train.config import TrainConfig
    from ..train.resume import check_same_folder, run_folder

    if args.overwrite:
        raise ResnetlabError(
            "--overwrite starts a run afresh and --resume continues one; give one of them"
        )
    target = args.resume or args.out
    if not target:
        raise ResnetlabError("--resume needs the run directory: --resume DIR (or --out DIR)")
    folder = run_folder(target)
    if args.out is not None:
        check_same_folder(folder, args.out)
    _, state = ckpt.load_checkpoint(ckpt.checkpoint_path(folder))
    saved = dict(state["config"])
    unknown = sorted(set(saved) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise ResnetlabError(
            f"checkpoint in {folder} has unknown setting(s) {', '.join(unknown[:5])}; "
            "expected the settings of a resnetlab training run"
        )
    if given["model"] is not None and given["model"] != saved.get("model"):
        raise ResnetlabError(
            f"checkpoint in {folder} is of model {saved.get('model')!r}, not {given['model']!r}"
        )
    given = dict(given, out=str(folder), quiet=bool(given["quiet"]))  # quiet: this command's
    cfg = TrainConfig(**{**saved, **{k: v for k, v in given.items() if v is not None}})
    return cfg, str(folder)


def run_train(args: argparse.Namespace) -> int:
    """`resnetlab train`."""
    from ..models import get_entry
    from ..train.loop import fit

    cfg, resume = build_config(args)
    get_entry(cfg.model)
    fit(cfg, resume=resume)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """`resnetlab eval`."""
    from ..data.sources import input_paths
    from ..files import check_output
    from ..train.evaluate import evaluate_weights, plot_confusion

    png = Path(args.confusion) if args.confusion else None
    if png is not None:
        if png.suffix.lower() != ".png":
            raise ResnetlabError(f"--confusion {png}: the matrix is drawn as PNG; use a .png name")
        check_output(png, (args.weights, *input_paths(args.data)), "--confusion")
    report = evaluate_weights(
        args.weights,
        args.data,
        split=args.split,
        tta=args.tta,
        precision=args.precision,
        batch_size=args.batch_size,
        device=args.device,
        threads=args.threads,
        limit=args.limit,
        ignore_class_names=args.ignore_class_names,
        skip_bad=args.skip_bad,
        backend=args.backend,
        overrides=overrides_from(args),
    )
    report["confusion_png"] = str(png) if png is not None else None
    classes = report["classes"]
    title = f"{report['model']} on {report['dataset']} ({args.split})"
    # the results first: a picture that cannot be written must not lose them
    if args.json:
        print(json.dumps(report, indent=1), flush=True)
    else:
        what = f"{report['images']} images{', flip TTA' if report['tta_flip'] else ''}"
        print(f"{report['model']} on {report['dataset']} {args.split} ({what})")
        if report["skipped_files"]:
            print(f"skipped {report['skipped_files']} unreadable image file(s)")
        if report["class_match"]:
            print(report["class_match"])
        width = max(len(c) for c in classes)
        for c, a in report["per_class_acc"].items():
            print(f"  {c:<{width}}  {100 * a:6.2f}%" if a == a else f"  {c:<{width}}      -")
        if len(classes) > 5:  # with 5 classes or fewer, top-5 is always right
            print(f"top-5 accuracy {100 * report['top5_acc']:.2f}%")
        print(f"{args.split} accuracy {100 * report['top1_acc']:.2f}%", flush=True)
    if png is not None:
        plot_confusion(report["confusion"], classes, png, title)
        if not args.json:
            print(f"confusion matrix -> {png}")
    return 0
