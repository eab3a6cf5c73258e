"""The studies that show why residual learning works: degradation, gradient flow and layer
responses, lesions. Built on train/ and models/; each writes its figures, tables and JSON."""

from .degradation import DegradationConfig, run_study
from .gradients import probe, run_gradients
from .lesion import run_lesion

__all__ = ["DegradationConfig", "probe", "run_gradients", "run_lesion", "run_study"]
