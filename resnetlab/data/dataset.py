"""The values that flow out of every reader: uint8 images, int64 labels, class names."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ResnetlabError


@dataclass
class ImageDataset:
    """A whole split in memory: images uint8 (N, C, H, W), labels int64 (N,), class names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            shape = tuple(self.images.shape)
            raise ResnetlabError(
                f"images must be uint8 (N, C, H, W), got {self.images.dtype} {shape}"
            )
        if self.labels.ndim != 1 or len(self.labels) != len(self.images):
            raise ResnetlabError(
                f"{len(self.images)} images but labels of shape {tuple(self.labels.shape)}"
            )
        self.labels = self.labels.to(torch.int64)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def subset(self, n: int) -> ImageDataset:
        """The first n samples (all of them if n is larger)."""
        return ImageDataset(self.images[:n], self.labels[:n], self.classes)


def check_input_size(meta: dict, images: ImageDataset, weights: str, source: str) -> None:
    """Fail unless `images` (of `source`) have the (C, H, W) the weights' metadata gives, when it
    gives one."""
    want, shape = meta.get("input_size"), images.image_shape
    if want is not None and list(want) != list(shape):
        raise ResnetlabError(
            f"{weights} expects images {'x'.join(map(str, want))} but {source} has "
            f"{'x'.join(map(str, shape))}"
        )


@dataclass
class DataSplits:
    """A dataset's splits; `val` is held out of train when a validation split is asked for."""

    name: str
    train: ImageDataset
    test: ImageDataset
    val: ImageDataset | None = None
