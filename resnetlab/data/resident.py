"""Training batches from a dataset held on the device: nothing crosses from the host per batch.

The uint8 images and their labels are copied to the device once (on a CPU the "device" is host
memory, and the copy is no copy). At the start of an epoch the host draws the epoch's plan from
(seed, epoch) alone: the order of the images and every image's crop offsets, mirror flag and
erased box. The plan crosses to the device in one transfer; from then on a batch is a slice of
the plan, and gathering, cropping, mirroring, normalising and erasing run batched on the device.
A run resumed in the middle of an epoch redraws the same plan and continues at the same batch,
and the CPU and a GPU train on the same augmented images.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ..errors import ResnetlabError
from .augment import apply_crop_flip, apply_erase, draw_crop_flip, draw_erase, seeded_generator
from .dataset import ImageDataset
from .loader import EpochLoader
from .normalise import apply_normaliser, normaliser

RESIDENT_FRACTION = 0.25  # at most this share of a GPU's memory holds the training images


def fits_on_device(nbytes: int, device: str | torch.device) -> bool:
    """True when `nbytes` of images may live on `device`: always on a CPU, and on a GPU when they
    take at most RESIDENT_FRACTION of its memory (the rest is the model's)."""
    device = torch.device(device)
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return nbytes <= RESIDENT_FRACTION * total
    return False


@dataclass
class EpochPlan:
    """The random draws of one epoch, on the device: image order and per-position augmentation."""

    order: torch.Tensor  # (n,) indices into the dataset
    dy: torch.Tensor | None = None  # (n,) crop offsets
    dx: torch.Tensor | None = None
    mirror: torch.Tensor | None = None  # (n,) bool
    boxes: torch.Tensor | None = None  # (n, 4) erased box per position


class ResidentLoader(EpochLoader):
    """Shuffled, augmented, normalised training batches of a dataset that lives on `device`.

    Same interface as BatchLoader for training (len, set_epoch, state_dict, load_state_dict,
    iteration); batches arrive on the device, channels_last when asked."""

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        device: str | torch.device,
        mean: Sequence[float],
        std: Sequence[float],
        pad: int = 0,
        flip: bool = False,
        erase: float = 0.0,
        seed: int = 0,
        channels_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        images = dataset.images
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ResnetlabError(f"expected uint8 (N, C, H, W) images, got {images.dtype}")
        self._init_position(len(images), images.shape[1], batch_size, mean, std, rank, world_size)
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.pad, self.flip, self.erase = pad, flip, erase
        self.seed = seed
        self.channels_last = channels_last
        self._norm = normaliser(mean, std, self.device)

    def __len__(self) -> int:
        return self.per_rank // self.batch_size  # training drops the last partial batch

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        return len(self) * self.batch_size

    def plan(self, epoch: int) -> EpochPlan:
        """Draw epoch `epoch`'s plan on the host from (seed, epoch) and move it in one transfer."""
        gen = seeded_generator(self.seed, epoch)
        n = len(self.images)
        order = torch.randperm(n, generator=gen)
        if self.world_size > 1:
            order = order[: self.per_rank * self.world_size][self.rank :: self.world_size]
        m = len(order)
        dy = dx = mirror = boxes = None
        if self.pad > 0 or self.flip:
            dy, dx, mirror = draw_crop_flip(m, self.pad, self.flip, gen)
        if self.erase > 0:
            boxes = draw_erase(m, tuple(self.images.shape[2:]), self.erase, gen)
        parts = {"order": order, "dy": dy, "dx": dx, "mirror": mirror, "boxes": boxes}
        return EpochPlan(
            **{k: v.to(self.device, non_blocking=True) if v is not None else None
               for k, v in parts.items()}
        )  # fmt: skip

    def batch(self, plan: EpochPlan, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `b` of an epoch's plan, assembled on the device."""
        if self.device.type != "cpu":
            return self._assemble(plan, b)
        return self.one_thread(self._assemble, plan, b)

    def _assemble(self, plan: EpochPlan, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = slice(b * self.batch_size, (b + 1) * self.batch_size)
        idx = plan.order[s]
        x = self.images[idx]
        if plan.dy is not None:
            mirror = plan.mirror[s] if plan.mirror is not None else None
            x = apply_crop_flip(x, self.pad, plan.dy[s], plan.dx[s], mirror)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = apply_normaliser(x, self._norm)
        if plan.boxes is not None:
            x = apply_erase(x, plan.boxes[s])
        return x, self.labels[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = self.plan(self.epoch)
        for b in range(self._start_batch, len(self)):
            self._start_batch = b + 1
            yield self.batch(plan, b)
        # the epoch is complete: the next one starts from its first batch
        self.epoch += 1
        self._start_batch = 0
