"""What the classifiers here share: forward_head(forward_features(x)), global pooling, an fc.

The head is timm's: global pooling ('avg', 'max', 'avgmax' = their mean, or '' for none), dropout,
then the fc. `forward_head(x, pre_logits=True)` stops before the fc; `num_classes=0` has no fc at
all, so the net returns the pooled features (N, C); with global_pool '' as well it returns the last
feature map unpooled. An fc needs pooled features: '' with num_classes > 0 is refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ResnetlabError

POOL_TYPES = ("avg", "max", "avgmax", "")


def check_pool(global_pool: str, num_classes: int) -> None:
    """Fail in one line if `global_pool` is unknown, or '' (no pooling) under an fc."""
    if global_pool not in POOL_TYPES:
        raise ResnetlabError(
            f"global_pool {global_pool!r} is not known; choose 'avg', 'max', 'avgmax' or '' (none)",
            argument="global_pool",
        )
    if global_pool == "" and num_classes > 0:
        raise ResnetlabError(
            f"global_pool '' (no pooling) leaves a feature map that an fc of {num_classes} classes "
            "cannot take; pass num_classes=0 for the unpooled map, or pool ('avg')",
            argument="global_pool",
        )


class GlobalPool(nn.Module):
    """(N, C, H, W) -> (N, C): average, max, or the mean of both; '' passes the map through."""

    def __init__(self, pool_type: str = "avg") -> None:
        super().__init__()
        check_pool(pool_type, 0)
        self.pool_type = pool_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pool_type:
            return x
        if self.pool_type == "avg":
            return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        peak = torch.flatten(F.adaptive_max_pool2d(x, 1), 1)
        if self.pool_type == "max":
            return peak
        return 0.5 * (torch.flatten(F.adaptive_avg_pool2d(x, 1), 1) + peak)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"


class ClassifierHead(nn.Module):
    """Base of nets with `forward_features`, `forward_head` and an `fc` on `num_features` inputs."""

    num_features: int
    num_classes: int
    fc: nn.Module
    head_drop: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x  # nets whose features are already vectors (MLPs) have nothing to pool

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the features, then dropout and the fc (`pre_logits=True`: stop before the fc)."""
        x = self.head_drop(self.pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        """The final Linear layer (nn.Identity when the net has no head)."""
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a freshly initialised one of `num_classes` (0: none), and the
        global pooling if given; the model's config and pretrained_cfg follow."""
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ResnetlabError(
                f"num_classes must be a whole number >= 0, got {num_classes!r}",
                argument="num_classes",
            )
        self.set_global_pool(global_pool, num_classes)
        ref = next(self.parameters(), None)
        kw = {} if ref is None else {"device": ref.device, "dtype": ref.dtype}
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes, **kw) if num_classes else nn.Identity()
        describe_head(self)

    def set_global_pool(self, global_pool: str | None, num_classes: int) -> None:
        if global_pool is not None:
            raise ResnetlabError(
                f"global_pool {global_pool!r}: {type(self).__name__} has no feature map to pool",
                argument="global_pool",
            )


def describe_head(model: nn.Module) -> None:
    """Bring the model's config, pretrained_cfg and metadata in line with its head: num_classes,
    global_pool, and the class names (dropped when their count no longer matches)."""
    n = model.num_classes
    pool = getattr(model, "global_pool", None)
    pool_type = pool.pool_type if isinstance(pool, GlobalPool) else None
    for name in ("resnetlab_config", "resnetlab_metadata", "pretrained_cfg"):
        d = getattr(model, name, None)
        if not isinstance(d, dict):
            continue
        d["num_classes"] = n
        if name != "pretrained_cfg" and pool_type is not None:
            if pool_type == "avg":
                d.pop("global_pool", None)
            else:
                d["global_pool"] = pool_type
        if d.get("classes") is not None and len(d["classes"]) != n:
            if name == "pretrained_cfg":
                d["classes"] = None
            else:
                d.pop("classes")
