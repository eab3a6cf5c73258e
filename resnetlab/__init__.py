"""resnetlab: the residual network family, complete and fast.

The public names below are imported on first use (PEP 562), so `import resnetlab` and the
command line's start-up do not load PyTorch before they need it: a Ctrl-C while torch loads is
then the command's one-line interrupt, not a traceback from inside an import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Callback": ".train.callbacks",
    "EarlyStopping": ".train.callbacks",
    "FitResult": ".train.loop",
    "ResnetlabError": ".errors",
    "TrainConfig": ".train.config",
    "create_model": ".models",
    "fit": ".train.loop",
    "list_models": ".models",
    "list_pretrained": ".models",
    "load_model": ".models",
    "load_weights": ".models",
    "prepare_for_inference": ".infer",
    "read_metadata": ".models",
    "save_weights": ".models",
}

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
assert sorted(__all__) == sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'resnetlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
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
