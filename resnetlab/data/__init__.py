"""Data: one reader per source format, and what turns uint8 images into a model's input.

Readers (cifar, idx, npz, folders, prepared; sources picks one) return uint8 (N, C, H, W) images,
labels and class names; npyfile.py opens the prepared cache's array (read whole, or mapped under a
read lease). transform.py resizes and crops one image; normalise.py holds the statistics and the
normalisation; augment.py the random draws and their application; loader.py the one batch loader
(an epoch's plan drawn on the host, applied in host or device memory); stream.py decodes on the
fly for loops of your own; config.py is timm's data config on top.
"""

from .augment import train_transform
from .cifar import load_cifar, load_cifar_dir
from .config import ImageTransform, create_transform, resolve_data_config, resolve_model_data_config
from .dataset import DataSplits, ImageDataset
from .folders import read_image_folder
from .idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, load_idx_dataset, load_idx_dir
from .images import decode_image
from .loader import BatchLoader
from .normalise import compute_mean_std
from .npz import load_npz
from .prepared import load_prepared, prepare_folder
from .sources import DATASET_NAMES, detect_format, load_source
from .split import split_dataset
from .stream import FolderDataset, StreamLoader, eval_transform

__all__ = [
    "DATASET_NAMES",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "BatchLoader",
    "DataSplits",
    "FolderDataset",
    "ImageTransform",
    "ImageDataset",
    "StreamLoader",
    "compute_mean_std",
    "create_transform",
    "decode_image",
    "detect_format",
    "eval_transform",
    "load_cifar",
    "load_cifar_dir",
    "load_idx_dataset",
    "load_idx_dir",
    "load_npz",
    "load_prepared",
    "load_source",
    "prepare_folder",
    "read_image_folder",
    "resolve_data_config",
    "resolve_model_data_config",
    "split_dataset",
    "train_transform",
]
