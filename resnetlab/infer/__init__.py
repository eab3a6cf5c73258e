"""Inference: predict, the fast path, export, bench and Grad-CAM explanations."""

from .fastpath import fold_batchnorm, prepare_for_inference
from .gradcam import grad_cam
from .preprocess import Preprocess

__all__ = ["Preprocess", "fold_batchnorm", "grad_cam", "prepare_for_inference"]
