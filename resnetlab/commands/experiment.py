"""`resnetlab experiment degradation | overfitting | gradients | lesion`: the evidence for residual
learning. Each parses its flags into the study's config and calls one library function."""

from __future__ import annotations

import argparse
import time

from ..errors import ResnetlabError
from ..policy import DEVICES, PRECISIONS


def register(sub: argparse._SubParsersAction) -> None:
    """Add this group's subcommands to the parser."""
    p = sub.add_parser(
        "experiment",
        help="studies of why residual learning works: degradation, overfitting, gradients, lesion",
        description="Run one of the studies of docs/experiments.md on real data.",
    )
    studies = p.add_subparsers(dest="study", metavar="STUDY")
    studies.required = True

    d = studies.add_parser(
        "degradation",
        help="train plain nets and ResNets (or MLP twins) of growing depth alike (Figure 6)",
        description="Train every (family, depth, seed) with one recipe, data order and seed, each "
        "as a normal run in OUT/<family><depth>-s<seed>/ (run the same command again to resume a "
        "killed study), then write OUT/degradation.png, .md and .json. --families "
        "plain_mlp,residual_mlp runs the MLP twins on flattened images (depth: blocks).",
    )
    d.add_argument("--data", required=True, help="dataset: fashion-mnist, cifar10, a folder, ...")
    d.add_argument("--out", required=True, help="study directory")
    d.add_argument(
        "--depths",
        help="comma-separated: 6n+2 for conv nets (default 20,56), blocks for MLPs (default "
        "4,16,64)",
    )
    d.add_argument(
        "--families",
        default="plain,resnet",
        help="plain, resnet (default both), plain_mlp, residual_mlp",
    )
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
    _machine_flags(d)
    d.set_defaults(func=run_degradation)

    o = studies.add_parser(
        "overfitting",
        help="ResNets of growing depth on small and larger training sets, with and without "
        "regularisation",
        description="Train resnet<depth> on class-balanced seeded subsets of the training split, "
        "each for the same number of optimiser steps, without regularisation (none), with the "
        "paper's weight decay and augmentation (standard), and with stochastic depth and dropout "
        "too (strong); test each on the whole test split. Each net is a normal run in "
        "OUT/resnet<depth>-n<size>-<regularisation>-s<seed>/ (run the same command again to "
        "resume); writes OUT/overfitting.png, .md and .json.",
    )
    o.add_argument("--data", required=True, help="dataset (as for train)")
    o.add_argument("--out", required=True, help="study directory")
    o.add_argument("--depths", default="20,56", help="depths 6n+2 (default 20,56)")
    o.add_argument(
        "--sizes", default="1000,10000", help="training images per net (default 1000,10000)"
    )
    o.add_argument(
        "--regularisation",
        default="none,standard,strong",
        help="none, standard, strong (default all three)",
    )
    o.add_argument("--steps", type=int, default=1000, help="optimiser steps per net (default 1000)")
    o.add_argument("--seeds", type=int, default=1, help="seeds 0..K-1 per net (default 1)")
    o.add_argument(
        "--batch-size",
        type=int,
        default=100,
        help="batch size (default 100: 1,000 and 10,000 images are whole batches)",
    )
    o.add_argument("--lr", type=float, help="peak learning rate (default: the paper's 0.1)")
    o.add_argument(
        "--compile", action=argparse.BooleanOptionalAction, default=False, help="default off"
    )
    _machine_flags(o)
    o.set_defaults(func=run_overfitting)

    g = studies.add_parser(
        "gradients",
        help="gradient norms per layer and 3x3 layer responses (the paper's Figure 7)",
        description="Probe plain and residual twins on real training batches: the gradient norm "
        "of every conv layer's weights and of every block's output, and the std of every 3x3 "
        "layer's response; at initialisation, and trained when --from names a degradation study. "
        "Writes OUT/gradients.png, responses.png, gradients.json and gradients.md.",
    )
    g.add_argument("--data", required=True, help="dataset (as for train)")
    g.add_argument("--out", required=True, help="output directory")
    g.add_argument("--depths", help="depths (default: the study's with --from, else 20,56,110; "
                   "4,16,64 blocks for the MLP twins)")  # fmt: skip
    g.add_argument(
        "--families",
        help="plain, resnet, plain_mlp, residual_mlp (default: the study's, or plain,resnet)",
    )
    g.add_argument("--from", dest="study", metavar="STUDY_DIR", help="a degradation study's --out")
    g.add_argument("--batches", type=int, default=2, help="probe batches (default 2)")
    g.add_argument("--batch-size", type=int, default=128, help="images per batch (default 128)")
    g.add_argument("--seed", type=int, default=0, help="initialisation and batch seed (default 0)")
    g.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="probe N seeds, --seed to --seed + N - 1 (with --from: the study's nets of those "
        "seeds); figures show the mean and a band, gradients.md the range (default 1)",
    )
    g.add_argument("--threads", type=int, help="CPU threads (default: the cores not already busy)")
    g.set_defaults(func=run_gradients)

    le = studies.add_parser(
        "lesion",
        help="delete blocks of trained nets at test time (Veit et al. 2016)",
        description="Delete one block at a time, then k random blocks, from each trained net and "
        "measure the test error. Weights files of the same model (a net's seeds) are taken "
        "together: their mean, with a band. Writes OUT/lesion.png, lesion.json and lesion.md.",
    )
    le.add_argument("weights", nargs="+", help="weights files: a ResNet and, say, its plain twin")
    le.add_argument("--data", required=True, help="dataset (as for train)")
    le.add_argument("--out", required=True, help="output directory")
    le.add_argument("--images", type=int, help="test images, a seeded sample (default 2000)")
    le.add_argument("--all-images", action="store_true", help="use the whole test split")
    le.add_argument("--draws", type=int, default=5, help="random draws per k (default 5)")
    le.add_argument("--max-k", type=int, help="delete at most this many blocks (default: all)")
    le.add_argument("--seed", type=int, default=0)
    le.add_argument("--threads", type=int, help="CPU threads (default: the cores not already busy)")
    le.set_defaults(func=run_lesion)


def _machine_flags(p: argparse.ArgumentParser) -> None:
    """Precision, device, threads and where the nets run: --workers, --ray."""
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument(
        "--device",
        default="auto",
        help=f"{', '.join(DEVICES)} or cuda:N (default auto)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads per net (default: the cores not already busy, split between the workers)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="nets trained at once, each in its own process on this machine (default 1; on CUDA "
        "several share a GPU)",
    )
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run each net as a Ray task: auto (a running Ray, else a local one) or a cluster's "
        "address; the output folder must be shared storage (needs pip install 'resnetlab[ray]')",
    )


def _probe_plan(threads: int | None):
    """The probes' Plan (experiments/gradients.py's probe_plan) with --threads, checked first."""
    from ..experiments.gradients import probe_plan
    from ..policy import check_settings

    check_settings(threads=threads)
    return probe_plan(threads)


def _machine() -> str:
    from ..infer.bench_report import machine_line

    return machine_line()


def _machine_settings(args: argparse.Namespace) -> dict:
    """A study config's settings from `_machine_flags` and --compile."""
    return dict(
        precision=args.precision,
        compile="on" if args.compile else "off",
        device=args.device,
        threads=args.threads,
        workers=args.workers,
        ray=args.ray,
    )


def _timed_study(run, config, name: str) -> int:
    """Run a study, then say how long it took and where its figure, table and JSON are."""
    t0 = time.time()
    run(config)
    print(
        f"study done in {(time.time() - t0) / 60:.1f} min ({_machine()}) -> "
        f"{config.out}/{name}.png, .md, .json"
    )
    return 0


def run_degradation(args: argparse.Namespace) -> int:
    """`resnetlab experiment degradation`."""
    from ..experiments.degradation import DegradationConfig, run_study
    from ..experiments.nets import is_mlp, parse_depths, parse_families

    families = parse_families(args.families)
    default = "4,16,64" if all(is_mlp(f) for f in families) else "20,56"
    dc = DegradationConfig(
        data=args.data,
        out=args.out,
        depths=parse_depths(default if args.depths is None else args.depths, families),
        families=families,
        epochs=args.epochs,
        seeds=args.seeds,
        subset=args.subset,
        recipe=args.recipe,
        batch_size=args.batch_size,
        lr=args.lr,
        log_every=args.log_every,
        **_machine_settings(args),
    )
    return _timed_study(run_study, dc, "degradation")


def run_overfitting(args: argparse.Namespace) -> int:
    """`resnetlab experiment overfitting`."""
    from ..experiments.nets import parse_depths
    from ..experiments.overfitting import (
        OverfittingConfig,
        parse_regularisation,
        parse_sizes,
    )
    from ..experiments.overfitting import (
        run_overfitting as run,
    )

    oc = OverfittingConfig(
        data=args.data,
        out=args.out,
        depths=parse_depths(args.depths),
        sizes=parse_sizes(args.sizes),
        regularisation=parse_regularisation(args.regularisation),
        steps=args.steps,
        seeds=args.seeds,
        batch_size=args.batch_size,
        lr=args.lr,
        **_machine_settings(args),
    )
    return _timed_study(run, oc, "overfitting")


def run_gradients(args: argparse.Namespace) -> int:
    """`resnetlab experiment gradients`."""
    from ..experiments.gradients import run_gradients as run
    from ..experiments.nets import (
        is_mlp,
        parse_depths,
        parse_families,
        study_nets,
        unfinished_nets,
    )

    families = parse_families(args.families) if args.families is not None else None
    asked = args.depths  # an empty --depths '' is refused by parse_depths, not taken as unset
    if args.seeds < 1:
        raise ResnetlabError(f"--seeds must be at least 1, got {args.seeds}", argument="seeds")
    seeds = range(args.seed, args.seed + args.seeds)
    which = f"seed {args.seed}" if args.seeds == 1 else f"seeds {seeds[0]} to {seeds[-1]}"
    depths = None
    if args.study is not None:
        nets = [n for n in study_nets(args.study) if n.seed in seeds]
        going = [n for n in unfinished_nets(args.study) if n.seed in seeds]
        if families is not None:
            nets = [n for n in nets if n.family in families]
            going = [n for n in going if n.family in families]
        # the depths are checked against the families asked for, else the study's
        held = families or tuple(dict.fromkeys(n.family for n in nets + going))
        depths = parse_depths(asked, held or ("plain", "resnet")) if asked is not None else None
        if depths is not None:
            nets = [n for n in nets if n.depth in depths]
            going = [n for n in going if n.depth in depths]
        shown = ", ".join(_seeded(n, args.seeds) for n in nets if not n.diverged)
        gone = ", ".join(_seeded(n, args.seeds) for n in nets if n.diverged)
        gone = f" (diverged, probed at initialisation only: {gone})" if gone else ""
        if going:  # still training, or stopped: their last.safetensors is an epoch's
            gone += (" (not trained to their end, probed at initialisation only: "
                     f"{', '.join(_seeded(n, args.seeds) for n in going)})")  # fmt: skip
        print(f"trained nets of {which} found in {args.study}: {shown or 'none'}{gone}")
        nets += going
        families = families or tuple(dict.fromkeys(n.family for n in nets))
        depths = depths or tuple(sorted({n.depth for n in nets}))
        if not nets and (not families or not depths):
            raise ResnetlabError(
                f"{args.study} holds no trained net of {which} (folders "
                "<family><depth>-s<seed>/last.safetensors of a degradation study); give --depths "
                "and --families to probe nets at initialisation"
            )
    families = families or ("plain", "resnet")
    if depths is None and asked is not None:
        depths = parse_depths(asked, families)
    default = "4,16,64" if all(is_mlp(f) for f in families) else "20,56,110"
    depths = depths or parse_depths(default, families)
    plan = _probe_plan(args.threads)
    t0 = time.time()
    run(args.data, args.out, depths, families, study=args.study, batches=args.batches,
        batch_size=args.batch_size, seed=args.seed, seeds=args.seeds, plan=plan)  # fmt: skip
    print(f"done in {time.time() - t0:.1f} s ({_machine()})")
    print(f"-> {args.out}/gradients.png, responses.png, gradients.json, gradients.md")
    return 0


def _seeded(net, seeds: int) -> str:
    """A study net's label, with its seed when several are probed."""
    from ..experiments.nets import net_label

    return net_label(net.family, net.depth) + (f" seed {net.seed}" if seeds > 1 else "")


def run_lesion(args: argparse.Namespace) -> int:
    """`resnetlab experiment lesion`."""
    from ..experiments.lesion import run_lesion as run

    if args.all_images and args.images is not None:
        raise ResnetlabError("--images and --all-images: give one of them")
    images = None if args.all_images else (2000 if args.images is None else args.images)
    plan = _probe_plan(args.threads)
    t0 = time.time()
    run(args.weights, args.data, args.out, images=images,
        draws=args.draws, max_k=args.max_k, seed=args.seed, plan=plan)  # fmt: skip
    print(f"done in {time.time() - t0:.1f} s ({_machine()})")
    print(f"-> {args.out}/lesion.png, lesion.json, lesion.md")
    return 0
