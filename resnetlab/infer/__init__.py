"""Inference: predict, the fast path, export, quantize, bench and Grad-CAM explanations.

Building blocks below, workflows above; a module imports only modules above it in this list
(tests/test_package_layout.py checks that no import circle forms):

- openvino.py, export.py    the runtimes' entry points: OpenVINO's compiled model, ONNX and
                            torch.export files checked against PyTorch, ONNX Runtime sessions
- backends.py               which backend runs fastest here: the measurements `bench` records
- compiling.py              whether a call gains from compiling here: size or measured, kept
- onnxfile.py, onnxmodel.py an ONNX file read and checked (metadata, graph), and run as a model
- int8.py                   int8 files: the QDQ form this machine runs fastest, written and loaded
- preprocess.py             an image file to the tensor the weights expect
- fastpath.py               prepare_for_inference: folded BN, channels_last, bf16, compiled
- predict.py, gradcam.py    predict image files; Grad-CAM heatmaps
- bench_paths.py, bench.py  the paths bench times and how each is made ready; the measurement
- bench_report.py           a bench run shown: the machine, a table, JSON, the fast path's picks
- quantize.py               `resnetlab quantize`: calibrate on a data set, compare with fp32, time

Every choice of device, precision, channels_last, compiling and threads comes from one
policy.Plan (resnetlab/policy.py).
"""

from .fastpath import fold_batchnorm, prepare_for_inference
from .gradcam import grad_cam
from .preprocess import Preprocess

__all__ = ["Preprocess", "fold_batchnorm", "grad_cam", "prepare_for_inference"]
