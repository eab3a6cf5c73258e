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


def pick_device(requested: str | None = None) -> str:
    """'cuda' when available (or asked), else 'cpu'."""
    if requested in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ResnetlabError(f"--device {requested} asked but CUDA is not available; use cpu")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise ResnetlabError(f"unknown device {requested!r}; use auto, cpu or cuda")
    return requested


def setup(requested_device: str | None = None) -> DistInfo:
    """Join the torchrun process group if there is one; returns rank, world size and device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(requested_device)
    if world <= 1:
        return DistInfo(device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
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


def convert_sync_bn(model: nn.Module, info: DistInfo, sync_bn: bool) -> nn.Module:
    """Replace BatchNorm by SyncBatchNorm in place of the model's modules (multi-process only)."""
    if info.enabled and sync_bn:
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


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
