"""resnetlab: the residual network family, complete and fast."""

from .errors import ResnetlabError
from .infer import prepare_for_inference
from .models import (
    create_model,
    list_models,
    list_pretrained,
    load_model,
    load_weights,
    read_metadata,
    save_weights,
)
from .train.callbacks import Callback, EarlyStopping
from .train.config import TrainConfig
from .train.loop import FitResult, fit

__version__ = "0.1.0"

__all__ = [
    "Callback",
    "EarlyStopping",
    "FitResult",
    "ResnetlabError",
    "TrainConfig",
    "create_model",
    "fit",
    "list_models",
    "list_pretrained",
    "load_model",
    "load_weights",
    "prepare_for_inference",
    "read_metadata",
    "save_weights",
]
