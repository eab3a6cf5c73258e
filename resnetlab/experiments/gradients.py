"""Gradient flow and layer responses (He et al. 2015, Figure 7) of plain and residual twins.

On real batches, for every net: the gradient norm of each conv layer's weights, the norm of the
gradient of the loss with respect to each block's output (the signal flowing back), and the
standard deviation of each 3x3 layer's response after BN and before the nonlinearity. The MLP
twins (plain_mlp, residual_mlp) are probed alike, their Linear layers in place of convs; they have
no 3x3 responses.

How the probes compute comes from a policy.Plan (device, autocast dtype, channels_last, threads),
resolved once by the caller; `probe_plan` is the one the command line uses: fp32 and eager on the
CPU, where gradient norms and responses are measured as they always were here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import load_source
from ..data.classmap import data_for_weights
from ..data.dataset import check_input_size
from ..data.loader import BatchLoader
from ..data.normalise import compute_mean_std
from ..data.sources import input_paths
from ..errors import ResnetlabError
from ..files import atomic_write, check_output_dir
from ..models import load_model
from ..models.factory import model_for_data
from ..policy import Plan, Settings, apply, resolve
from .gradients_figures import plot_gradients, plot_responses
from .nets import check_study_net, study_net
from .probe_report import gradients_markdown
from .tasks import DIVERGED_FILE, is_diverged, is_finished

JSON_FILE = "gradients.json"
TABLE_FILE = "gradients.md"
GRADIENTS_FIGURE = "gradients.png"
RESPONSES_FIGURE = "responses.png"
PROBE_SETTINGS = Settings(device="cpu", precision="fp32", compile="off")


def probe_plan(threads: int | None = None) -> Plan:
    """The Plan of the probes (gradients and lesions) unless given one: PROBE_SETTINGS with
    `threads` (None: the cores other processes leave free)."""
    return resolve(replace(PROBE_SETTINGS, threads=threads))


def on_plan(model: nn.Module, plan: Plan) -> nn.Module:
    """The model moved to the plan's device and memory format."""
    model.to(plan.device)
    if plan.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


@dataclass
class Probe:
    """What one net shows on the probe batches (each value averaged over the batches)."""

    conv_names: list[str]
    conv_grad_norms: list[float]  # ||dL/dW|| of every conv, in forward order
    block_names: list[str]
    block_grad_norms: list[float]  # ||dl/d(block output)||, RMS over images, in block order
    response_names: list[str]
    response_stds: list[float]  # std of each 3x3 layer's output after BN, before ReLU/addition


def residual_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The blocks of a conv ResNet (or its plain twin), in forward order: layerI.J; of a residual
    MLP (or its plain twin): blocks.I."""
    stages = getattr(model, "stage_names", None)
    if stages:
        return [(f"{s}.{j}", b) for s in stages for j, b in enumerate(getattr(model, s))]
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential) and all(hasattr(b, "residual") for b in blocks):
        return [(f"blocks.{i}", b) for i, b in enumerate(blocks)]
    return []


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The conv layers, in forward order; for an MLP (no convs), its Linear layers but the head."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if convs:
        return convs
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head]


def response_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(3x3 conv's name, the BN whose output is its response), in forward order, as the net and
    its blocks declare them (`response_pairs()`: post-activation nets only)."""
    names = {id(m): name for name, m in model.named_modules()}
    pairs = [p for m in model.modules() if hasattr(m, "response_pairs") for p in m.response_pairs()]
    return [(names[id(conv)], bn) for conv, bn in pairs]


def probe(
    model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], *, train_mode: bool = True
) -> Probe:
    """Gradient norms and responses of `model` on `batches`, averaged over the batches.

    train_mode: BN uses the batch's statistics (as in training; the only meaningful choice at
    initialisation); else its running statistics (a trained net as it is used). The model's
    weights, buffers and gradients are left as they were.
    """
    convs = weighted_layers(model)
    blocks = residual_blocks(model)
    resp = response_layers(model)
    if not convs:
        raise ResnetlabError("this model has no conv or Linear layers to probe")
    saved_state = {k: v.clone() for k, v in model.state_dict().items()}
    saved_grads = [p.grad for p in model.parameters()]
    was_training = model.training
    conv_acc = torch.zeros(len(convs), dtype=torch.float64)
    block_acc = torch.zeros(len(blocks), dtype=torch.float64)
    resp_acc = torch.zeros(len(resp), dtype=torch.float64)
    outputs: list[torch.Tensor] = []
    stds: list[float] = []

    def keep_output(_m, _i, out):
        out.retain_grad()
        outputs.append(out)

    def keep_std(_m, _i, out):  # runs before the in-place ReLU that may follow
        stds.append(float(out.detach().double().std()))

    hooks = [b.register_forward_hook(keep_output) for _, b in blocks]
    hooks += [bn.register_forward_hook(keep_std) for _, bn in resp]
    try:
        model.train(train_mode)
        for x, y in batches:
            outputs.clear()
            stds.clear()
            model.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            conv_acc += torch.tensor([float(m.weight.grad.norm()) for _, m in convs])
            # per image: dL/dx of the batch-mean loss is each image's own gradient over B, so
            # ||dL/dx|| * sqrt(B) is the root mean square of the images' gradient norms
            block_acc += torch.tensor([float(o.grad.norm()) * len(x) ** 0.5 for o in outputs],
                                      dtype=torch.float64)  # fmt: skip
            resp_acc += torch.tensor(stds, dtype=torch.float64)
    finally:
        for h in hooks:
            h.remove()
        model.load_state_dict(saved_state)
        for p, g in zip(model.parameters(), saved_grads):
            p.grad = g
        model.train(was_training)
    n = len(batches)
    return Probe(
        [c for c, _ in convs],
        (conv_acc / n).tolist(),
        [b for b, _ in blocks],
        (block_acc / n).tolist(),
        [r for r, _ in resp],
        (resp_acc / n).tolist(),
    )


# --------------------------------------------------------------------------------------------
# the study


@dataclass
class NetProbe:
    """One net's probe, with where its weights came from."""

    family: str
    depth: int
    state: str  # "init" or "trained"
    weights: str | None
    response_mode: str  # "batch statistics" (train mode) or "running statistics" (eval mode)
    probe: Probe
    seed: int = 0  # of the initialisation, the probe batches and (trained) the study's net

    def record(self) -> dict[str, Any]:
        """The row of gradients.json."""
        p = self.probe
        d = {
            "family": self.family,
            "depth": self.depth,
            "seed": self.seed,
            "state": self.state,
            "weights": self.weights,
            "response_mode": self.response_mode,
        }
        d.update(asdict(p))
        d["first_to_last_conv_grad"] = p.conv_grad_norms[0] / max(p.conv_grad_norms[-1], 1e-30)
        d["first_to_last_block_grad"] = (
            p.block_grad_norms[0] / max(p.block_grad_norms[-1], 1e-30)
            if p.block_grad_norms
            else None
        )
        return d


def probe_batches(
    data, mean, std, batch_size: int, count: int, seed: int, plan: Plan | None = None
):
    """`count` batches of training images, seeded, without augmentation; on the plan's device and
    in its memory format (contiguous on the CPU without a plan)."""
    if len(data) < batch_size:
        raise ResnetlabError(
            f"batch_size {batch_size}: {len(data)} training images make no batch; lower it",
            argument="batch_size",
        )
    if count > len(data) // batch_size:  # every batch whole, no image twice
        raise ResnetlabError(
            f"batches {count}: {len(data)} training images make {len(data) // batch_size} "
            f"whole batch(es) of {batch_size}; lower --batches or --batch-size",
            argument="batches",
        )
    loader = BatchLoader(data, batch_size, train=True, mean=mean, std=std, pad=0, flip=False,
                         seed=seed, channels_last=plan is not None and plan.channels_last,
                         device=None if plan is None else plan.device)  # fmt: skip
    loader.set_epoch(0)
    batches = []
    for x, y in loader:
        batches.append((x if plan is not None and plan.channels_last else x.contiguous(), y))
        if len(batches) == count:
            break
    return batches


def run_gradients(
    data: str,
    out: str,
    depths: tuple[int, ...] = (20, 56, 110),
    families: tuple[str, ...] = ("plain", "resnet"),
    study: str | None = None,
    batches: int = 2,
    batch_size: int = 128,
    seed: int = 0,
    say=print,
    plan: Plan | None = None,
    seeds: int = 1,
) -> list[NetProbe]:
    """Probe every (family, depth) at initialisation and, from a degradation study, trained;
    for each of the seeds seed, seed + 1, ..., seed + seeds - 1 (its initialisation, its probe
    batches and the study's net of that seed); computing as `plan` says (None: probe_plan())."""
    if batches < 1 or batch_size < 1:
        raise ResnetlabError(
            f"batches and batch size must be at least 1, got {batches}, {batch_size}"
        )
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ResnetlabError(f"seeds {seeds}: expected a whole number >= 1", argument="seeds")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**32 - seeds:
        raise ResnetlabError(
            f"seed {seed}: expected a whole number in [0, 2**32)"
            + (f" that leaves room for {seeds} seeds" if seeds > 1 else ""),
            argument="seed",
        )
    check_output_dir(out, (*input_paths(data), study))
    if study is not None and not Path(study).is_dir():
        raise ResnetlabError(
            f"{study} is not a directory (expected the output directory of a degradation study)"
        )
    plan = plan or probe_plan()
    apply(plan)
    splits = load_source(data)
    train = splits.train
    mean, std = compute_mean_std(train.images)
    results = []
    for s in range(seed, seed + seeds):
        xs = probe_batches(train, mean, std, batch_size, batches, s, plan)
        for depth in depths:
            for family in families:
                results += _probe_net(family, depth, s, xs, train, data, study, batch_size,
                                      batches, plan, say)  # fmt: skip
    write_gradients(results, Path(out), splits.name)
    return results


def _probe_net(family, depth, seed, xs, train, data, study, batch_size, batches, plan, say):
    """The net at initialisation (seeded) and, where the study holds it, trained."""
    name, options = study_net(family, depth)
    torch.manual_seed(seed)  # twins start from the same conv weights
    model = model_for_data(name, tuple(train.image_shape), len(train.classes), options)
    with plan.autocast():
        init = probe(on_plan(model, plan), xs, train_mode=True)
    found = [NetProbe(family, depth, "init", None, "batch statistics", init, seed)]
    say(_line(found[-1]))
    if study is None:
        return found
    w = Path(study) / f"{family}{depth}-s{seed}" / "last.safetensors"
    label = f"{family}-{depth} seed {seed}"
    if is_diverged(w.parent):
        say(f"{label}: diverged in the study ({w.parent / DIVERGED_FILE}); initialisation only")
        return found
    if not w.is_file():
        say(f"{label}: no trained weights at {w}; initialisation only")
        return found
    if not is_finished(w.parent):
        say(f"{label}: not trained to its end in the study (no summary.json in {w.parent}: "
            "still training, or stopped); initialisation only")  # fmt: skip
        return found
    trained, meta = load_model(w)
    check_study_net(meta, family, depth, str(w))
    check_input_size(meta, train, str(w), data)
    net_train, match = data_for_weights(meta, train, weights=str(w), source=str(data))
    if match.note:
        say(f"{label}: {match.note}")
    txs = probe_batches(net_train, meta["mean"], meta["std"], batch_size, batches, seed, plan)
    on_plan(trained, plan)
    with plan.autocast():
        p = probe(trained, txs, train_mode=False)
        # gradients as in training (batch statistics); responses as the net is used
        g = probe(trained, txs, train_mode=True)
    p.conv_grad_norms, p.block_grad_norms = g.conv_grad_norms, g.block_grad_norms
    found.append(NetProbe(family, depth, "trained", str(w), "running statistics", p, seed))
    say(_line(found[-1]))
    return found


def _line(r: NetProbe) -> str:
    d = r.record()
    return (
        f"{r.family}-{r.depth} seed {r.seed} ({r.state}): first/last conv weight gradient "
        f"{d['first_to_last_conv_grad']:.3g}x, first/last block output gradient "
        f"{d['first_to_last_block_grad']:.3g}x, mean 3x3 response std "
        + (f"{sum(s) / len(s):.3g}" if (s := r.probe.response_stds) else "none (no 3x3 layers)")
    )


def write_gradients(results: list[NetProbe], out: Path, dataset: str) -> None:
    """gradients.json, gradients.md, gradients.png and responses.png in `out`."""
    records = [r.record() for r in results]
    text = json.dumps(records, indent=1) + "\n"
    atomic_write(out / JSON_FILE, lambda tmp: Path(tmp).write_text(text))
    table = gradients_markdown(records, dataset)
    atomic_write(out / TABLE_FILE, lambda tmp: Path(tmp).write_text(table))
    plot_gradients(results, out / GRADIENTS_FIGURE, dataset)
    plot_responses(results, out / RESPONSES_FIGURE, dataset)
