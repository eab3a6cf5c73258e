"""Residual networks: blocks, the ResNet body, residual MLPs, the name registry and weights I/O.

- anatomy.py: what every block shares, once: the shortcut (options A, B, C) and stochastic depth
  (`Residual`), and the four ends that join F(x) and the shortcut (post- and pre-activation, each
  with its plain twin, whose shortcut is None);
- blocks.py, preact.py, mlp.py: each block its layers (`residual(x)`, `conv_bn_pairs()`,
  `response_pairs()`) plus an end; layers.py: shortcuts and drop path;
- resnet.py: the body (stem, stages, head; timm's forward_features/forward_head/intermediates);
- registry.py: the table of names; builder.py: the one builder (build_model_with_cfg);
  factory.py: create_model, load_model, model_for_data, each looking the table up once;
- head.py: global pooling and the classifier; cfg.py: pretrained_cfg; stats.py: parameters,
  FLOPs and shapes; features.py: backbones (FeatureInfo); adapt.py: input channels;
  weights.py, pretrained.py: safetensors files and shipped weights; metadata.py: the checks of
  the metadata they carry.
"""

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
