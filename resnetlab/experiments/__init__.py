"""The studies that show why residual learning works: degradation (conv and MLP twins),
overfitting, gradient flow and layer responses, lesions. Built on train/ and models/; each net of a
study is an ordinary run, run in sequence, on local workers or on Ray (runner.py); each study
writes its figures, tables and JSON."""

from .degradation import DegradationConfig, run_study
from .gradients import probe, run_gradients
from .lesion import run_lesion
from .overfitting import OverfittingConfig, run_overfitting

__all__ = [
    "DegradationConfig",
    "OverfittingConfig",
    "probe",
    "run_gradients",
    "run_lesion",
    "run_overfitting",
    "run_study",
]
