"""The fast loader: one uint8 tensor in memory, augmented and normalised per batch.

Every random draw of an epoch derives from (seed, epoch) and of a batch from (seed, epoch, batch),
so a run resumed in the middle of an epoch sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from ..errors import ResnetlabError
from .augment import crop_flip, random_erase, seeded_generator
from .dataset import ImageDataset
from .normalise import apply_normaliser, normaliser


class EpochLoader:
    """What the loaders share: checked arguments, each rank's share of the data, and the position
    (epoch, next batch) that a checkpoint saves and a resumed run continues from."""

    def _init_position(
        self, n: int, channels: int, batch_size: int, mean, std, rank: int, world_size: int
    ) -> None:
        if batch_size < 1:
            raise ResnetlabError(
                f"batch_size must be >= 1, got {batch_size}", argument="batch_size"
            )
        if not 0 <= rank < world_size:
            raise ResnetlabError(f"rank {rank} outside world of size {world_size}")
        if len(mean) != channels or len(std) != channels:
            raise ResnetlabError(
                f"mean/std have {len(mean)}/{len(std)} values; images have {channels} channels"
            )
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        # every rank gets the same number of samples (the tail is dropped when sharding)
        self.per_rank = n // world_size if world_size > 1 else n
        if self.per_rank == 0:
            raise ResnetlabError(f"{n} samples cannot be shared by {world_size} ranks")
        self.epoch = 0
        self._start_batch = 0

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

    @staticmethod
    def one_thread(make, *args):
        """make(*args) on one intra-op thread: a batch is ~1e5 pixels, too small to gain from
        threads, and on a busy machine their barriers cost 10x the work (the model keeps them)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return make(*args)
        finally:
            torch.set_num_threads(threads)


class BatchLoader(EpochLoader):
    """Batches of a whole in-memory dataset: shuffled, augmented, normalised, channels_last."""

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
    ) -> None:
        self._init_position(len(dataset), dataset.images.shape[1], batch_size, mean, std,
                            rank, world_size)  # fmt: skip
        self.dataset = dataset
        self.train = train
        self.pad, self.flip, self.erase = pad, flip, erase
        self.seed = seed
        self.drop_last = train if drop_last is None else drop_last
        self.channels_last = channels_last
        self._norm = normaliser(mean, std)

    def __len__(self) -> int:
        if self.drop_last:
            return self.per_rank // self.batch_size
        return -(-self.per_rank // self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples this rank sees per epoch."""
        return len(self) * self.batch_size if self.drop_last else self.per_rank

    def _indices(self) -> torch.Tensor:
        n = len(self.dataset)
        if self.train:
            order = torch.randperm(n, generator=seeded_generator(self.seed, self.epoch))
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            order = order[: self.per_rank * self.world_size][self.rank :: self.world_size]
        return order

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._indices()
        for b in range(self._start_batch, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            self._start_batch = b + 1
            yield self._make_batch(idx, b)
        # the epoch is complete: the next one starts from its first batch
        self.epoch += 1
        self._start_batch = 0

    def _make_batch(self, idx: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.one_thread(self._assemble, idx, b)

    def _assemble(self, idx: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.dataset.images[idx]
        y = self.dataset.labels[idx]
        gen = seeded_generator(self.seed, self.epoch, b, self.rank) if self.train else None
        if self.train and (self.pad > 0 or self.flip):
            x = crop_flip(x, self.pad, self.flip, gen)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = apply_normaliser(x, self._norm)
        if self.train and self.erase > 0:
            x = random_erase(x, self.erase, gen)
        return x, y
