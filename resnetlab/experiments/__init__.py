"""The studies that show why residual learning works: degradation (conv and MLP twins),
overfitting, gradient flow and layer responses, lesions. Built on train/ and models/; each net of a
study is an ordinary run; each study writes its figures, tables and JSON.

- degradation.py: plain nets against ResNets (or MLP twins) of growing depth, its table and figure;
- overfitting.py: the depth x training-set size x regularisation grid and its nets;
  overfitting_report.py: its JSON, table and figure;
- gradients.py, lesion.py: probes of trained (or fresh) nets, built on the blocks' anatomy;
  gradients_figures.py: the gradient figures; probe_report.py: their seeds taken together;
- nets.py: the study nets' names and checks; figures.py: matplotlib on Agg;
- tasks.py: one net of a study (NetTask), what is left of it, and the work of training it;
  runner.py runs the tasks in sequence or on local worker processes, on_ray.py as Ray tasks
  (neither imports the other's module); estimate.py: the study's time, measured per net first.
"""

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
