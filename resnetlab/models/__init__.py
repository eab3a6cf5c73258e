"""Residual networks: blocks, the ResNet body, residual MLPs, the name registry and weights I/O."""

from .adapt import adapt_input_conv
from .blocks import BasicBlock, Bottleneck, PlainBasicBlock, PlainBottleneck
from .builder import ModelEntry
from .factory import create_model, load_model, model_for_data
from .features import FeatureExtractor, FeatureInfo
from .mlp import MLPBlock, PlainMLPBlock, ResidualMLP
from .preact import PlainPreActBasicBlock, PlainPreActBottleneck, PreActBasicBlock, PreActBottleneck
from .registry import get_entry, list_models, list_pretrained
from .resnet import ResNet, ResNetSpec
from .weights import load_weights, read_metadata, save_weights, weights_file

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "FeatureExtractor",
    "FeatureInfo",
    "MLPBlock",
    "ModelEntry",
    "PlainBasicBlock",
    "PlainBottleneck",
    "PlainMLPBlock",
    "PlainPreActBasicBlock",
    "PlainPreActBottleneck",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ResNet",
    "ResNetSpec",
    "ResidualMLP",
    "adapt_input_conv",
    "create_model",
    "get_entry",
    "list_models",
    "list_pretrained",
    "load_model",
    "load_weights",
    "model_for_data",
    "read_metadata",
    "save_weights",
    "weights_file",
]
