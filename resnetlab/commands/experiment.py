"""`resnetlab experiment degradation | gradients | lesion`: the evidence for residual learning."""

from __future__ import annotations

import argparse
import time


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the parser."""
    p = sub.add_parser(
        "experiment",
        help="studies of why residual learning works: degradation, gradients, lesion",
        description="Run one of the studies of docs/experiments.md on real data.",
    )
    studies = p.add_subparsers(dest="study", metavar="STUDY")
    studies.required = True

    d = studies.add_parser(
        "degradation",
        help="train plain nets and ResNets of growing depth alike (the paper's Figure 6)",
        description="Train every (family, depth, seed) with one recipe, data order and seed, each "
        "as a normal run in OUT/<family><depth>-s<seed>/ (run the same command again to resume a "
        "killed study), then write OUT/degradation.png, .md and .json.",
    )
    d.add_argument("--data", required=True, help="dataset: fashion-mnist, cifar10, a folder, ...")
    d.add_argument("--out", required=True, help="study directory")
    d.add_argument("--depths", default="20,56", help="depths 6n+2, comma-separated (default 20,56)")
    d.add_argument("--families", default="plain,resnet", help="plain, resnet or both (default)")
    d.add_argument("--epochs", type=int, default=5, help="epochs per net (default 5)")
    d.add_argument("--subset", type=int, help="train on the first N training images only")
    d.add_argument("--seeds", type=int, default=1, help="seeds 0..K-1 per net (default 1)")
    d.add_argument("--recipe", choices=("paper", "fast"), default="paper", help="default paper")
    d.add_argument("--batch-size", type=int, help="batch size (default: the recipe's)")
    d.add_argument("--lr", type=float, help="peak learning rate (default: the recipe's)")
    d.add_argument(
        "--log-every", type=int, default=20, help="steps per training-error point (default 20)"
    )
    d.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="torch.compile each net (default off: measured slower for these nets on a CPU)",
    )
    d.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    d.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    d.add_argument("--threads", type=int, help="CPU threads (default: the cores not already busy)")
    d.set_defaults(func=run_degradation)

    g = studies.add_parser(
        "gradients",
        help="gradient norms per layer and 3x3 layer responses (the paper's Figure 7)",
        description="Probe plain and residual twins on real training batches: the gradient norm "
        "of every conv layer's weights and of every block's output, and the std of every 3x3 "
        "layer's response; at initialisation, and trained when --from names a degradation study. "
        "Writes OUT/gradients.png, responses.png and gradients.json.",
    )
    g.add_argument("--data", required=True, help="dataset (as for train)")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--depths", default="20,56,110", help="depths 6n+2 (default 20,56,110)")
    g.add_argument("--families", default="plain,resnet", help="plain, resnet or both (default)")
    g.add_argument("--from", dest="study", metavar="STUDY_DIR", help="a degradation study's --out")
    g.add_argument("--batches", type=int, default=2, help="probe batches (default 2)")
    g.add_argument("--batch-size", type=int, default=128, help="images per batch (default 128)")
    g.add_argument("--seed", type=int, default=0, help="initialisation and batch seed (default 0)")
    g.add_argument("--threads", type=int, help="CPU threads (default: the cores not already busy)")
    g.set_defaults(func=run_gradients)

    le = studies.add_parser(
        "lesion",
        help="delete blocks of trained nets at test time (Veit et al. 2016)",
        description="Delete one block at a time, then k random blocks, from each trained net and "
        "measure the test error. Writes OUT/lesion.png and lesion.json.",
    )
    le.add_argument("weights", nargs="+", help="weights files: a ResNet and, say, its plain twin")
    le.add_argument("--data", required=True, help="dataset (as for train)")
    le.add_argument("--out", required=True, help="output directory")
    le.add_argument(
        "--images", type=int, default=2000, help="test images, a seeded sample (default 2000)"
    )
    le.add_argument("--all-images", action="store_true", help="use the whole test split")
    le.add_argument("--draws", type=int, default=5, help="random draws per k (default 5)")
    le.add_argument("--max-k", type=int, help="delete at most this many blocks (default: all)")
    le.add_argument("--seed", type=int, default=0)
    le.add_argument("--threads", type=int, help="CPU threads (default: the cores not already busy)")
    le.set_defaults(func=run_lesion)


def _threads(n: int | None) -> None:
    import torch

    from ..policy import cpu_threads

    torch.set_num_threads(cpu_threads(n))


def _machine() -> str:
    from ..infer.bench_report import machine_line

    return machine_line()


def run_degradation(args: argparse.Namespace) -> int:
    """`resnetlab experiment degradation`."""
    from ..experiments.degradation import DegradationConfig, run_study
    from ..experiments.nets import parse_depths, parse_families

    dc = DegradationConfig(
        data=args.data,
        out=args.out,
        depths=parse_depths(args.depths),
        families=parse_families(args.families),
        epochs=args.epochs,
        seeds=args.seeds,
        subset=args.subset,
        recipe=args.recipe,
        batch_size=args.batch_size,
        lr=args.lr,
        log_every=args.log_every,
        precision=args.precision,
        compile="on" if args.compile else "off",
        device=args.device,
        threads=args.threads,
    )
    t0 = time.time()
    run_study(dc)
    print(
        f"study done in {(time.time() - t0) / 60:.1f} min -> {args.out}/degradation.png, .md, .json"
    )
    return 0


def run_gradients(args: argparse.Namespace) -> int:
    """`resnetlab experiment gradients`."""
    from ..experiments.gradients import run_gradients as run
    from ..experiments.nets import parse_depths, parse_families

    depths, families = parse_depths(args.depths), parse_families(args.families)
    _threads(args.threads)
    t0 = time.time()
    run(args.data, args.out, depths, families, study=args.study, batches=args.batches,
        batch_size=args.batch_size, seed=args.seed)  # fmt: skip
    print(f"done in {time.time() - t0:.1f} s ({_machine()})")
    print(f"-> {args.out}/gradients.png, responses.png, gradients.json")
    return 0


def run_lesion(args: argparse.Namespace) -> int:
    """`resnetlab experiment lesion`."""
    from ..experiments.lesion import run_lesion as run

    _threads(args.threads)
    t0 = time.time()
    run(args.weights, args.data, args.out, images=None if args.all_images else args.images,
        draws=args.draws, max_k=args.max_k, seed=args.seed)  # fmt: skip
    print(f"done in {time.time() - t0:.1f} s ({_machine()})")
    print(f"-> {args.out}/lesion.png, lesion.json")
    return 0
