"""Grad-CAM (Selvaraju et al., 2017): where in the image a stage's features drove a class score.

The map is relu(sum_k alpha_k A_k), where A_k are the stage's output channels and alpha_k the
spatial mean of d score / d A_k; it is upsampled to the input and scaled to 0..1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.normalise import denormalise
from ..errors import ResnetlabError
from ..files import atomic_write


@dataclass
class CamResult:
    """A Grad-CAM map (H, W) in 0..1 at input resolution for class `index`; the probabilities,
    and the logits they came from (for a caller to refuse NaN or inf ones)."""

    cam: torch.Tensor
    index: int
    probs: torch.Tensor
    stage: str
    logits: torch.Tensor | None = None


def stage_module(model: nn.Module, stage: str | int | None) -> tuple[str, nn.Module]:
    """The module a stage name ('layer3'), its 1-based index (3) or None (the last stage) names."""
    names = list(getattr(model, "stage_names", []))
    if not names:
        raise ResnetlabError(
            f"{type(model).__name__} has no convolutional stages; Grad-CAM needs a conv model"
        )
    if stage is None:
        name = names[-1]
    elif isinstance(stage, int) or (isinstance(stage, str) and stage.isdigit()):
        i = int(stage)
        if not 1 <= i <= len(names):
            raise ResnetlabError(f"stage {i} out of range; this model has stages 1..{len(names)}")
        name = names[i - 1]
    elif stage in names or stage == "conv1":
        name = stage
    else:
        raise ResnetlabError(
            f"unknown stage {stage!r}; use one of conv1, {', '.join(names)} or 1..{len(names)}"
        )
    return name, getattr(model, name)


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: int | None = None,
    stage: str | int | None = None,
) -> CamResult:
    """Grad-CAM of one image x (1, C, H, W) for class `target` (default: the predicted class)."""
    if x.ndim != 4 or x.shape[0] != 1:
        raise ResnetlabError(f"expected one image (1, C, H, W), got {tuple(x.shape)}")
    name, module = stage_module(model, stage)
    store: dict[str, torch.Tensor] = {}

    def keep(_m, _inp, out):
        store["act"] = out
        out.register_hook(lambda g: store.__setitem__("grad", g))

    was_training = model.training
    model.eval()
    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            logits = model(x.detach().clone().requires_grad_(True))
            if logits.ndim != 2:
                raise ResnetlabError("Grad-CAM needs a classifier (logits of shape N x classes)")
            n = logits.shape[1]
            index = int(logits.argmax(1)) if target is None else int(target)
            if not 0 <= index < n:
                raise ResnetlabError(f"class index {index} out of range; the model has {n} classes")
            model.zero_grad(set_to_none=True)
            logits[0, index].backward()
    finally:
        handle.remove()
        model.train(was_training)
    act, grad = store["act"].detach(), store["grad"].detach()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * act).sum(dim=1, keepdim=True)).float()
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    top = cam.max()
    cam = cam / top if top > 0 else cam
    probs = torch.softmax(logits.detach().float(), dim=1)[0]
    return CamResult(cam, index, probs, name, logits.detach().float())


def display_image(x: torch.Tensor, mean, std) -> np.ndarray:
    """A normalised (C, H, W) tensor back to an (H, W, 3) float image in 0..1 for display."""
    img = denormalise(x, mean, std).clamp(0, 1)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    return img.permute(1, 2, 0).numpy()


def save_overlay(
    image: np.ndarray, cam: torch.Tensor, path: str | os.PathLike, *, title: str = ""
) -> None:
    """Write a PNG: the image, and the image with the Grad-CAM heatmap laid over it (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heat = cam.numpy()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    try:
        # nearest keeps small images (28x28) legible; the map itself is already smooth
        axes[0].imshow(image, interpolation="nearest")
        axes[0].set_title("input (as the model sees it)", fontsize=9)
        axes[1].imshow(image, interpolation="nearest")
        im = axes[1].imshow(heat, cmap="jet", alpha=0.45, vmin=0.0, vmax=1.0)
        axes[1].set_title("Grad-CAM", fontsize=9)
        for ax in axes:
            ax.axis("off")
        fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
        if title:
            fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)
