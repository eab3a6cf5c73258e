"""Residual networks: blocks, the ResNet body, residual MLPs, the name registry and weights I/O."""

from .blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck
from .factory import create_model, load_model, model_for_data
from .features import FeatureExtractor
from .mlp import ResidualMLP
from .registry import ModelEntry, get_entry, list_models
from .resnet import ResNet, ResNetSpec
from .weights import list_pretrained, load_weights, read_metadata, save_weights

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "FeatureExtractor",
    "ModelEntry",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResNet",
    "ResNetSpec",
    "ResidualMLP",
    "create_model",
    "get_entry",
    "list_models",
    "list_pretrained",
    "load_model",
    "load_weights",
    "model_for_data",
    "read_metadata",
    "save_weights",
]
