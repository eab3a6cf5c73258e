"""Scale-out with torchrun: process group set-up (gloo on CPU, NCCL on CUDA), DDP wrapping, sync BN.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them the run is
a single process and nothing here does anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import ResnetlabError
from ..policy import pick_device


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, evaluates and checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """True when running under torchrun with more than one process."""
        return self.world_size > 1


def _env_int(name: str, default: str, least: int) -> int:
    """A whole-number environment variable set by torchrun, checked (>= `least`)."""
    text = os.environ.get(name, default)
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise ResnetlabError(
            f"{name}={text!r}: expected a whole number >= {least} (torchrun sets it)"
        )
    return value


def setup(requested_device: str | None = None) -> DistInfo:
    """Join the torchrun process group if there is one; returns rank, world size and device."""
    world = _env_int("WORLD_SIZE", "1", 1)
    device = pick_device(requested_device)
    if world <= 1:
        return DistInfo(device=device)
    if "RANK" not in os.environ:
        raise ResnetlabError(f"WORLD_SIZE is {world} but RANK is not set; start with torchrun")
    rank = _env_int("RANK", "0", 0)
    local_rank = _env_int("LOCAL_RANK", "0", 0)
    if rank >= world:
        raise ResnetlabError(
            f"RANK {rank} is outside a world of {world} processes (0..{world - 1})"
        )
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=device)


def wrap(model: nn.Module, info: DistInfo, *, sync_bn: bool = False) -> nn.Module:
    """The model wrapped in DDP when there is more than one process (convert_sync_bn first)."""
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.local_rank] if info.device.startswith("cuda") else None
    return DDP(model, device_ids=ids, broadcast_buffers=not sync_bn)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics cover the batch of every process (any backend).

    torch's SyncBatchNorm only runs on CUDA; this one all-reduces per-channel sums, sums of squares
    and counts with a differentiable all_reduce, so gloo on a CPU works too. In eval mode, or
    with one process, it is plain batch norm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        dims = [0, *range(2, x.dim())]
        xd = x.double()  # sums in float64: E[x^2] - E[x]^2 stays accurate
        count = torch.full((1,), x.numel() // c, dtype=torch.float64, device=x.device)
        stats = all_reduce(torch.cat([xd.sum(dims), (xd * xd).sum(dims), count]))
        n = stats[2 * c]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    self.momentum
                    if self.momentum is not None
                    else 1 / float(self.num_batches_tracked)
                )
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                unbiased = var * n / (n - 1).clamp_min(1)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xd - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        y = y.to(x.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_sync_bn(model: nn.Module, info: DistInfo, sync_bn: bool) -> nn.Module:
    """With several processes and sync_bn: batch norm over the global batch (SyncBatchNorm on CUDA,
    GlobalBatchNorm elsewhere). Parameter and buffer names do not change."""
    if not (info.enabled and sync_bn):
        return model
    if info.device.startswith("cuda"):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_global_bn(model)


def _to_global_bn(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, GlobalBatchNorm
    ):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)  # fmt: skip
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        if module.track_running_stats:
            out.running_mean = module.running_mean
            out.running_var = module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _to_global_bn(child))
    for attr in ("resnetlab_config",):
        if hasattr(module, attr):
            setattr(out, attr, getattr(module, attr))
    return out


def barrier(info: DistInfo) -> None:
    """Wait for every rank."""
    if info.enabled and dist.is_initialized():
        dist.barrier()


def any_flags(flags: list[bool], info: DistInfo) -> list[bool]:
    """Each flag true on every rank if it is true on any (to stop together on Ctrl-C or a NaN)."""
    if not (info.enabled and dist.is_initialized()):
        return list(flags)
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v > 0) for v in t.tolist()]


def cleanup(info: DistInfo) -> None:
    """Leave the process group."""
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
