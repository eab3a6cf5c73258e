"""One training step with nothing read back to the host: its learning rate, the update, the weight
average and the tallies.

The learning rate is `lr_factor`, a pure function of the recipe and the step (plus, for the
paper's deep-net warm-up, one flag kept in the schedule's state), so a resumed run sets exactly
the rate an uninterrupted one would. Forward, loss, backward and the optimiser update run on the
device; so do the weight average (EMA), the tallies (loss sum, correct count, images, non-finite
steps) that the trainer reads every few steps, and the guard against a non-finite loss: as a grad
scaler does, the step checks the gradients on the device and the fused optimiser skips its update
when they are not finite, so a NaN never reaches the weights and the host learns of it at its next
read. On one CUDA device a compiled model runs as CUDA graphs (torch.compile's "reduce-overhead"
mode).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ResnetlabError
from ..policy import autocast, compile_mode
from .checkpoint import checkpoint_path
from .recipes import Recipe

TALLY = ("loss", "correct", "count", "bad")  # the per-epoch sums, in this order


class NonFiniteLoss(ResnetlabError):
    """The loss became NaN or infinite: at `step` (1-based), in `epoch`, at learning rate `lr`
    (each None when not known)."""

    step: int | None = None
    epoch: int | None = None
    lr: float | None = None

    @classmethod
    def at(cls, tally: Tally, step: int, lrs: dict[int, float], lr: float, steps_per_epoch: int,
           where) -> NonFiniteLoss:  # fmt: skip
        """The error naming the first bad step of `tally` (else `step`), its epoch and its
        learning rate (from `lrs`, else `lr`); `where` is the run's folder, whose last good
        checkpoint is kept."""
        at = tally.first_bad_step if tally.first_bad_step > 0 else step
        lr = lrs.get(at, lr)
        v = tally.first_bad_loss
        loss = str(v) if not math.isfinite(v) else f"{v:.4g} with non-finite gradients"
        epoch = (at - 1) // steps_per_epoch + 1
        err = cls(
            f"loss became {loss} at epoch {epoch}, step {at} (lr {lr:.3g}); the update was "
            f"skipped and the last good checkpoint is kept in {checkpoint_path(where)}; try a "
            "lower learning rate"
        )
        err.step, err.epoch, err.lr = at, epoch, lr
        return err


@dataclass
class Tally:
    """Sums over some steps, read back from the device."""

    loss: float = 0.0  # sum of per-image losses of the finite steps
    correct: int = 0
    count: int = 0
    bad: int = 0  # steps whose loss or gradients were not finite
    first_bad_step: int = -1  # the step count (1-based) of the first of them; -1: none
    first_bad_loss: float = 0.0

    def sums(self) -> dict[str, float]:
        """loss, correct and count as plain values (a checkpoint's mapping)."""
        return {"loss": self.loss, "correct": self.correct, "count": self.count}

    @classmethod
    def of(cls, sums: dict[str, Any]) -> Tally:
        """The tally a checkpoint's mapping holds (what `sums` wrote)."""
        return cls(float(sums["loss"]), int(sums["correct"]), int(sums["count"]))


def lr_factor(recipe: Recipe, step: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate at `step` (0-based) of `total_steps`."""
    total = max(1, total_steps)
    t = step / total
    warm = recipe.warmup_frac
    if warm > 0 and t < warm:
        return recipe.warmup_start + (1 - recipe.warmup_start) * t / warm
    if recipe.schedule == "step":
        return 0.1 ** sum(step >= round(m * total) for m in recipe.milestones)
    rest = (t - warm) / max(1e-12, 1 - warm)
    if recipe.schedule == "linear":
        return max(0.0, 1.0 - rest)
    if recipe.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, rest)))
    raise ResnetlabError(f"unknown schedule {recipe.schedule!r}; use step, linear or cosine")


class Schedule:
    """Sets each parameter group's lr every step; its whole state is three numbers."""

    def __init__(self, optimizer, recipe: Recipe, total_steps: int, depth: int) -> None:
        self.optimizer = optimizer
        self.recipe = recipe
        self.total_steps = total_steps
        self.step_count = 0
        # the paper's warm-up applies to nets of 110 layers or more
        self.deep_warmup = bool(recipe.deep_warmup_lr > 0 and depth >= 110)
        self.warm_done = not self.deep_warmup
        self.err_avg: float | None = None
        for g in optimizer.param_groups:
            g.setdefault("base_lr", g["lr"])

    def current_factor(self) -> float:
        """The factor of the next step, before the deep-net warm-up."""
        return lr_factor(self.recipe, self.step_count, self.total_steps)

    def apply(self) -> float:
        """Write the lr of the coming step into the optimiser; returns the peak-group lr."""
        if not self.warm_done:
            lrs = [self.recipe.deep_warmup_lr * g["lr_scale"] for g in self.optimizer.param_groups]
        else:
            f = self.current_factor()
            lrs = [g["base_lr"] * f for g in self.optimizer.param_groups]
        for g, lr in zip(self.optimizer.param_groups, lrs):
            g["lr"] = lr
        return max(lrs)

    def step(self, train_err: float | None = None) -> None:
        """Advance one step; the paper's warm-up ends when the training error (a running average
        over recent batches) falls below 80%, or after its budget of steps."""
        self.step_count += 1
        if train_err is not None:
            a = self.err_avg
            self.err_avg = train_err if a is None else 0.9 * a + 0.1 * train_err
        if not self.warm_done and (
            (self.err_avg is not None and self.err_avg < 0.8)
            or self.step_count >= self.recipe.deep_warmup_iters
        ):
            self.warm_done = True

    def state_dict(self) -> dict[str, Any]:
        """Step count, warm-up flag, running training error."""
        return {"step_count": self.step_count, "warm_done": self.warm_done, "err_avg": self.err_avg}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""
        self.step_count = int(state["step_count"])
        self.warm_done = bool(state["warm_done"])
        self.err_avg = state.get("err_avg")


class EMA:
    """Exponential moving average of the floating-point weights and buffers."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One averaging step (the decay ramps up over the first updates)."""
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            e = self.state[k]
            if v.dtype.is_floating_point:
                e.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                e.copy_(v)


def fused_sgd(param_groups: list[dict], *, lr: float, momentum: float, nesterov: bool):
    """SGD with fused kernels (one launch per group on CUDA, vectorised on a CPU), whose momentum
    buffers start at zero so that a first step skipped for a non-finite gradient leaves nothing
    undefined behind (zero momentum then one step is exactly the usual first step)."""
    opt = torch.optim.SGD(
        param_groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, fused=True
    )
    if momentum > 0:
        for group in opt.param_groups:
            for p in group["params"]:
                opt.state[p]["momentum_buffer"] = torch.zeros_like(
                    p, memory_format=torch.preserve_format
                )
    return opt


class TrainStep:
    """Calls `model` on a batch and updates it; keeps the tallies on the model's device."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion: nn.Module,
        *,
        device: str,
        dtype: torch.dtype | None,
        compiled: bool,
        world_size: int = 1,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        self.net = net
        self.optimizer = optimizer
        self.criterion = criterion
        self.device = device
        self.dtype = dtype
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.graphs = compiled and compile_mode(device, world_size) == "reduce-overhead"
        self.forward = (
            torch.compile(net, mode=compile_mode(device, world_size)) if compiled else net
        )
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        f64 = dict(dtype=torch.float64, device=device)
        self.epoch = torch.zeros(len(TALLY), **f64)  # sums over the epoch so far
        self.window = torch.zeros(len(TALLY), **f64)  # sums since the last window was taken
        self.first_bad = torch.tensor([-1.0, 0.0], **f64)  # (step, loss) of the first bad step
        self.steps = torch.zeros((), **f64)  # steps taken, counted on the device
        self.found_inf = torch.zeros((), dtype=torch.float32, device=device)
        self.one = torch.ones((), dtype=torch.float32, device=device)
        if self.scaler is None:
            optimizer.found_inf = self.found_inf  # the fused step skips its update when set
            optimizer.grad_scale = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One step on batch (x, y), already on the device; returns the correct count (a device
        tensor, for callers that need it at once)."""
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with autocast(self.device, self.dtype):
            logits = self.forward(x)
            loss = self.criterion(logits.float(), y)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:  # fp16: the scaler finds overflows and skips those steps
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            bad = ~torch.isfinite(loss.detach())
        else:
            loss.backward()
            grads = [p.grad for p in self.params if p.grad is not None]
            self.found_inf.zero_()
            torch._amp_foreach_non_finite_check_and_unscale_(grads, self.found_inf, self.one)
            self.optimizer.step()  # skipped on the device when found_inf is set
            bad = (self.found_inf > 0) | ~torch.isfinite(loss.detach())
        return self._count(logits.detach(), loss.detach(), y, bad)

    @torch.no_grad()
    def _count(self, logits, loss, y, bad) -> torch.Tensor:
        self.steps += 1
        n = y.numel()
        correct = (logits.argmax(1) == y).sum()
        loss_sum = torch.where(bad, 0.0, loss.double() * n)
        row = torch.stack([loss_sum, correct.double(), torch.full_like(loss_sum, n), bad.double()])
        self.epoch += row
        self.window += row
        first = (self.first_bad[0] < 0) & bad
        self.first_bad.copy_(
            torch.where(first, torch.stack([self.steps, loss.double()]), self.first_bad)
        )
        return correct

    def read(self, which: str = "epoch") -> Tally:
        """The epoch's (or the window's) sums so far: one copy from the device."""
        sums = self.epoch if which == "epoch" else self.window
        v = torch.cat([sums, self.first_bad]).tolist()
        return Tally(v[0], int(v[1]), int(v[2]), int(v[3]), int(v[4]), v[5])

    def reset(self, which: str = "epoch", tally: Tally | None = None) -> None:
        """Start the epoch's (or window's) sums afresh, or from `tally` (a resumed run)."""
        sums = self.epoch if which == "epoch" else self.window
        t = tally or Tally()
        sums.copy_(torch.tensor([t.loss, t.correct, t.count, t.bad], dtype=torch.float64))
