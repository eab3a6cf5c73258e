"""resnetlab: the residual network family, complete and fast."""

from .errors import ResnetlabError
from .models import (
    create_model,
    list_models,
    list_pretrained,
    load_model,
    load_weights,
    read_metadata,
    save_weights,
)

__version__ = "0.1.0"

__all__ = [
    "ResnetlabError",
    "create_model",
    "list_models",
    "list_pretrained",
    "load_model",
    "load_weights",
    "read_metadata",
    "save_weights",
]
