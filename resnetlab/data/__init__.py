"""Data: one reader per source format, the batched in-memory loader, batch augmentations."""

from .dataset import DataSplits, ImageDataset

__all__ = ["DataSplits", "ImageDataset"]
