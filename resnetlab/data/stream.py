"""Decode-on-the-fly: a Dataset, DataLoader workers, and ImageNet-style transforms written on
Pillow and torch, for loops of your own. (`train` reads the in-memory BatchLoader; a folder larger
than memory goes through `resnetlab data prepare`, see docs/data.md.)

Training: data/augment.py's random-resized crop (area 8%..100% of the image, aspect 3/4..4/3, as in
Szegedy et al. and the torchvision recipe) to size x size, then a horizontal flip with p = 1/2.
Evaluation: resize the shorter side to `resize` (256), then a centre crop of size x size (224).
Images are converted to RGB or L (resnetlab.data.images rules), scaled to 0..1 and normalised;
the evaluation view is resnetlab.data.transform's resize-and-crop.

Randomness: each sample's draws come from a generator seeded by (seed, epoch, index), so a batch
is the same whatever the number of workers; set_epoch() moves to the next epoch's draws and order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..errors import ResnetlabError
from .augment import seeded_generator, train_transform
from .images import convert_mode, image_to_tensor, open_image
from .normalise import IMAGENET_MEAN, IMAGENET_STD, normalise
from .transform import resize_and_crop


def eval_transform(
    img: Image.Image, size: int = 224, resize: int = 256, label: str = "image"
) -> Image.Image:
    """Resize the shorter side to `resize`, then take the centre size x size crop."""
    return resize_and_crop(img, (resize, resize), (size, size), label)


class FolderDataset(Dataset):
    """Images decoded from files when asked for, transformed for training or evaluation."""

    def __init__(
        self,
        items: list[tuple[Path, int]],
        classes: list[str],
        *,
        train: bool,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        size: int = 224,
        resize: int = 256,
        mode: str = "RGB",
        seed: int = 0,
        skip_bad: bool = False,
    ):
        if mode not in ("RGB", "L"):
            raise ResnetlabError(f"unknown image mode {mode!r}; use RGB or L")
        channels = 3 if mode == "RGB" else 1
        if len(mean) != channels or len(std) != channels:
            raise ResnetlabError(f"mean and std need {channels} values for mode {mode}")
        self.items, self.classes = list(items), list(classes)
        self.train, self.mean, self.std = train, tuple(mean), tuple(std)
        self.size, self.resize, self.mode = size, resize, mode
        self.seed, self.skip_bad, self.epoch = seed, skip_bad, 0

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Use the random draws of this epoch."""
        self.epoch = epoch

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None:
        path, label = self.items[i]
        try:
            img = convert_mode(open_image(path), self.mode)
            if self.train:
                gen = seeded_generator(self.seed, self.epoch, i)
                img = train_transform(img, gen, self.size)
            else:
                img = eval_transform(img, self.size, self.resize, str(path))
        except ResnetlabError:
            if self.skip_bad:
                return None
            raise
        return normalise(image_to_tensor(img), self.mean, self.std), label


def _collate(samples):
    kept = [s for s in samples if s is not None]
    if not kept:
        return None
    x = torch.stack([s[0] for s in kept]).contiguous(memory_format=torch.channels_last)
    return x, torch.tensor([s[1] for s in kept], dtype=torch.int64)


class StreamLoader:
    """Batches (x float32 normalised, channels_last; y int64) decoded by DataLoader workers."""

    def __init__(
        self,
        dataset: FolderDataset,
        batch_size: int,
        *,
        shuffle: bool,
        workers: int = 2,
        seed: int = 0,
        drop_last: bool | None = None,
    ):
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.workers, self.seed, self.epoch = workers, seed, 0
        self.drop_last = shuffle if drop_last is None else drop_last

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle and redraw augmentations for this epoch."""
        self.epoch = epoch
        self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        gen = seeded_generator(self.seed, self.epoch)
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=self.shuffle,
            generator=gen,
            num_workers=self.workers,
            collate_fn=_collate,
            drop_last=self.drop_last,
            persistent_workers=False,
        )
        it = iter(loader)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except ResnetlabError as e:  # from a worker: keep only the original one-line message
                lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
                last = lines[-1] if lines else str(e)
                raise ResnetlabError(last.split("ResnetlabError: ", 1)[-1]) from None
            if batch is not None:
                yield batch
