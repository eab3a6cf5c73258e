"""Model statistics: parameters, multiply-adds (torch.utils.flop_counter) and per-stage shapes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _counted_forward(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1):
    """Run one eval-mode forward pass under a FLOP counter; returns the counter."""
    param = next(model.parameters(), None)
    x = torch.zeros(batch_size, *input_size, device=param.device if param is not None else None)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter


def count_macs(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1) -> int:
    """Multiply-adds of one forward pass, as the ResNet paper and torchvision count FLOPs."""
    # the counter reports 2 FLOPs per multiply-add
    return _counted_forward(model, input_size, batch_size).get_total_flops() // 2


@dataclass
class StageRow:
    name: str
    output_shape: tuple[int, ...]
    params: int
    macs: int


def stage_summary(model: nn.Module, input_size: tuple[int, ...]) -> list[StageRow]:
    """One row per top-level child module that holds parameters or changes the shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        child.register_forward_hook(
            lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape))
        )
        for name, child in model.named_children()
    ]
    try:
        counter = _counted_forward(model, input_size)
    finally:
        for h in hooks:
            h.remove()
    per_module = counter.get_flop_counts()
    rows = []
    for name, child in model.named_children():
        if name not in shapes or isinstance(child, nn.Identity):
            continue
        macs = sum(per_module.get(f"{type(model).__name__}.{name}", {}).values()) // 2
        rows.append(StageRow(name, shapes[name], count_params(child), macs))
    return rows
