"""The batch loader: a dataset as one uint8 tensor, shuffled, augmented and normalised per batch.

The images live in host memory, or on the device (copied there once: `device=`; on a CPU the
copy is no copy). At the start of an epoch the host draws the epoch's plan from (seed, epoch)
alone: the order of the images and, when training, every position's crop offsets, mirror flag
and erased box (data/augment.py's draws). The plan crosses to where the images are in one
transfer; from then on a batch is a slice of the plan, and gathering, cropping, mirroring,
normalising (data/normalise.py) and erasing run batched there, with nothing crossing from the
host per batch. So the host loader, the CPU's resident one and a GPU's train on the same augmented
images, and a run resumed in the middle of an epoch redraws the same plan and continues at the same
batch (`state_dict`: epoch and next batch). Evaluation is the same loader with `train=False`: the
images in order, no augmentation, the last partial batch kept. With `world_size` ranks each takes
every world_size-th image of the epoch's order (the tail that does not share evenly is dropped).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

import torch

from ..errors import ResnetlabError
from .augment import apply_crop_flip, apply_erase, draw_crop_flip, draw_erase, seeded_generator
from .dataset import ImageDataset
from .normalise import apply_normaliser, normaliser
from .npyfile import raise_if_changed


@dataclass
class EpochPlan:
    """The random draws of one epoch, where the images are: order and per-position augmentation."""

    order: torch.Tensor  # (n,) indices into the dataset
    dy: torch.Tensor | None = None  # (n,) crop offsets
    dx: torch.Tensor | None = None
    mirror: torch.Tensor | None = None  # (n,) bool
    boxes: torch.Tensor | None = None  # (n, 4) erased box per position

    def to(self, device: torch.device) -> EpochPlan:
        """The plan on `device`, in one transfer per tensor that does not wait for the host."""
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            moved[f.name] = v.to(device, non_blocking=True) if v is not None else None
        return EpochPlan(**moved)


class BatchLoader:
    """Batches (x float32 normalised, channels_last when asked; y int64) of a dataset held in
    memory: the host's, or `device`'s when given (batches then arrive on it)."""

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        *,
        train: bool,
        mean: Sequence[float],
        std: Sequence[float],
        pad: int = 0,
        flip: bool = False,
        erase: float = 0.0,
        seed: int = 0,
        drop_last: bool | None = None,
        channels_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        device: str | torch.device | None = None,
    ) -> None:
        images = dataset.images
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ResnetlabError(f"expected uint8 (N, C, H, W) images, got {images.dtype}")
        if batch_size < 1:
            raise ResnetlabError(
                f"batch_size must be >= 1, got {batch_size}", argument="batch_size"
            )
        if not 0 <= rank < world_size:
            raise ResnetlabError(f"rank {rank} outside world of size {world_size}")
        channels = images.shape[1]
        if len(mean) != channels or len(std) != channels:
            raise ResnetlabError(
                f"mean/std have {len(mean)}/{len(std)} values; images have {channels} channels"
            )
        n = len(images)
        self.per_rank = n // world_size if world_size > 1 else n  # every rank gets as many
        if self.per_rank == 0:
            raise ResnetlabError(f"{n} samples cannot be shared by {world_size} ranks")
        self.device = torch.device(device) if device is not None else images.device
        self.images = images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.batch_size, self.train = batch_size, train
        self.pad, self.flip, self.erase = pad, flip, erase
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.drop_last = train if drop_last is None else drop_last
        self.channels_last = channels_last
        self._norm = normaliser(mean, std, self.device)
        self.epoch = 0
        self._start_batch = 0

    def __len__(self) -> int:
        if self.drop_last:
            return self.per_rank // self.batch_size
        return -(-self.per_rank // self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        return len(self) * self.batch_size if self.drop_last else self.per_rank

    def set_epoch(self, epoch: int) -> None:
        """Start epoch `epoch` from its first batch."""
        self.epoch = epoch
        self._start_batch = 0

    def state_dict(self) -> dict:
        """Where the next batch starts; pair with load_state_dict to resume mid-epoch exactly."""
        return {"epoch": self.epoch, "batch": self._start_batch}

    def load_state_dict(self, state: dict) -> None:
        """Continue at the epoch and batch that state_dict returned."""
        self.epoch = int(state["epoch"])
        self._start_batch = int(state["batch"])

    def plan(self, epoch: int) -> EpochPlan:
        """Epoch `epoch`'s plan for this rank: drawn on the host from (seed, epoch), then moved to
        where the images are."""
        n = len(self.images)
        if not self.train:
            return EpochPlan(self._share(torch.arange(n))).to(self.device)
        gen = seeded_generator(self.seed, epoch)
        order = self._share(torch.randperm(n, generator=gen))
        m = len(order)
        dy = dx = mirror = boxes = None
        if self.pad > 0 or self.flip:
            dy, dx, mirror = draw_crop_flip(m, self.pad, self.flip, gen)
        if self.erase > 0:
            boxes = draw_erase(m, tuple(self.images.shape[2:]), self.erase, gen)
        return EpochPlan(order, dy, dx, mirror, boxes).to(self.device)

    def _share(self, order: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return order
        return order[: self.per_rank * self.world_size][self.rank :: self.world_size]

    def batch(self, plan: EpochPlan, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `b` of an epoch's plan, assembled where the images are."""
        raise_if_changed()  # a mapped cache that another process changes stops the run here
        if self.device.type != "cpu":
            return self._assemble(plan, b)
        # on one intra-op thread: a batch is ~1e5 pixels, too small to gain from threads, and on a
        # busy machine their barriers cost 10x the work (the model keeps its threads)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._assemble(plan, b)
        finally:
            torch.set_num_threads(threads)

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
