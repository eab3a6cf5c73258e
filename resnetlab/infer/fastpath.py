"""The fast inference path: conv-BN folding, channels_last, native bf16, torch.compile.

`prepare_for_inference(model)` returns a callable that maps a float32 NCHW batch to float32 logits
and agrees with the eager model in fp32 to rounding error (folding is exact algebra; channels_last
and inductor only reorder sums). Precision `auto` is policy.py's: bf16 on CUDA, and on CPUs only
with native bf16 units (AVX512-BF16 or AMX); elsewhere oneDNN would emulate it and run slower than
fp32. On CUDA the compiled model runs as CUDA graphs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace

import torch
from torch import nn

from .. import policy
from ..errors import ResnetlabError
from ..hardware import compiler_available

PRECISIONS = policy.PRECISIONS  # fp16 on CUDA only
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")


def _folded_weight_bias(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    # y = gamma * (W x + b - mean) / sqrt(var + eps) + beta  ==  (s W) x + (s (b - mean) + beta)
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    b = bias.double() if bias is not None else torch.zeros_like(mean)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    new_w = (weight.double() * scale.reshape(shape)).to(weight.dtype)
    new_b = ((b - mean) * scale + beta).to(weight.dtype)
    return new_w, new_b


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d (with bias) equal to bn(conv(x)) for a BN in eval mode."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    fused = copy.deepcopy(conv)
    w, b = _folded_weight_bias(conv.weight.detach(), _bias(conv), bn)
    fused.weight = nn.Parameter(w, requires_grad=False)
    fused.bias = nn.Parameter(b, requires_grad=False)
    return fused


def fuse_linear_bn(linear: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """A new Linear (with bias) equal to bn(linear(x)) for a BN in eval mode."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("cannot fold a BatchNorm without running statistics")
    fused = nn.Linear(linear.in_features, linear.out_features, bias=True)
    w, b = _folded_weight_bias(linear.weight.detach(), _bias(linear), bn)
    fused.weight = nn.Parameter(w, requires_grad=False)
    fused.bias = nn.Parameter(b, requires_grad=False)
    return fused


def _bias(layer: nn.Module) -> torch.Tensor | None:
    return layer.bias.detach() if layer.bias is not None else None


def _fuse(layer: nn.Module, bn: nn.Module) -> nn.Module | None:
    if isinstance(layer, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
        return fuse_conv_bn(layer, bn)
    if isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
        return fuse_linear_bn(layer, bn)
    return None


def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of `model` in eval mode with every BN that follows a conv/linear folded into it.

    Folded BNs become nn.Identity. Returns (folded copy, number of BNs folded). The pairs are the
    ones each net and block declares (`conv_bn_pairs()`: the stem's, each block's and its
    projection's), and in any other nn.Sequential a layer and the BN after it. BNs with no layer
    directly before them (pre-activation inputs, the final norm of pre-activation nets) stay.
    """
    model = copy.deepcopy(model).eval()
    place = {id(c): (m, name) for m in model.modules() for name, c in m.named_children()}
    pairs = []
    for module in model.modules():
        if hasattr(module, "conv_bn_pairs"):
            pairs += module.conv_bn_pairs()
        elif isinstance(module, nn.Sequential):
            layers = list(module)
            pairs += list(zip(layers[:-1], layers[1:]))
    done: set[int] = set()  # a projection's pair: declared by its block, met again as a Sequential
    for layer, bn in pairs:
        fused = None if id(bn) in done else _fuse(layer, bn)
        if fused is None:
            continue
        done.add(id(bn))
        setattr(*place[id(layer)], fused)
        setattr(*place[id(bn)], nn.Identity())
    return model, len(done)


class InferenceModel(nn.Module):
    """A prepared model: float32 NCHW in, float32 logits out, however it computes inside."""

    def __init__(
        self, model: nn.Module, *, precision: str, channels_last: bool, device: str = "cpu"
    ) -> None:
        super().__init__()
        self.model = model
        self.precision = precision
        self.channels_last = channels_last
        self.device = device
        self.dtype = policy.resolve_precision(precision, device)
        self.compiled = False
        self.cuda_graphs = False  # compiled with mode="reduce-overhead"
        self.folded_bn = 0
        self.backend = "torch"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.cuda_graphs:
            # a new step: the graph may overwrite the outputs of the previous call
            torch.compiler.cudagraph_mark_step_begin()
        with policy.autocast(self.device, self.dtype):
            out = self.model(x)
        out = out.float()
        return out.clone() if self.cuda_graphs else out  # graph outputs live in reused memory


def check_backend_compile(backend: str, compile: bool | None) -> None:
    """Fail in one line when torch.compile is asked of a runtime backend: ONNX Runtime and
    OpenVINO run their own graph, so the compile would be silently left undone."""
    if compile and backend in ("onnxruntime", "openvino"):
        raise ResnetlabError(
            f"compile does not apply to the {backend} backend: it runs the model in its own "
            "runtime, not torch.compile; use the torch backend, or do not compile",
            argument="compile",
        )


def inference_plan(
    model: nn.Module,
    *,
    device: str = "cpu",
    precision: str = "auto",
    compile: bool | None = None,
    threads: int | None = None,
    expected_images: int | None = None,
    input_size: tuple[int, ...] | None = None,
    batch_size: int | None = None,
    log: Callable[[str], None] | None = None,
) -> policy.Plan:
    """The Plan of an inference run, resolved once by policy.resolve: device, precision,
    channels_last (nets with convolutions), threads (None: policy's rule, the cores not kept busy)
    and compiling: True/False as asked; None to compile where it pays, which needs both that the
    work ahead, `expected_images` x the multiply-adds of one `input_size` image, repays the
    compile time (policy: COMPILE_MIN_MACS) and, on a CPU, that a call of `batch_size` images runs
    faster compiled here (infer/compiling.py: measured or from its size, remembered)."""
    conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    auto = compile is None
    macs = _work(model, expected_images, input_size) if auto else None
    settings = policy.Settings(device=device, precision=precision,
                               compile="auto" if auto else bool(compile), threads=threads,
                               conv=conv, macs=macs)  # fmt: skip
    plan = policy.resolve(settings)
    if auto and plan.compiled and not plan.cuda and input_size and batch_size:
        from .compiling import decide

        threads = plan.threads or torch.get_num_threads()
        if not decide(model, tuple(input_size), batch_size, plan.precision, threads=threads,
                      log=log).compile:  # fmt: skip
            plan = policy.resolve(replace(settings, compile=False, threads=plan.threads))
    return plan


def _work(
    model: nn.Module, expected_images: int | None, input_size: tuple[int, ...] | None
) -> float:
    """Multiply-adds of the work ahead (0 when unknown: nothing repays compiling)."""
    if not expected_images or not input_size:
        return 0.0
    from ..models.stats import count_macs

    try:
        return float(expected_images * count_macs(model, tuple(input_size)))
    except Exception:  # a shape the model rejects: let the real call report it
        return 0.0


def prepare_for_inference(
    model: nn.Module,
    *,
    precision: str = "auto",
    compile: bool | None = None,
    expected_images: int | None = None,
    input_size: tuple[int, ...] | None = None,
    backend: str = "auto",
    batch_size: int | None = None,
    device: str = "cpu",
    plan: policy.Plan | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model folded, channels_last, in the chosen precision and optionally compiled.

    plan: the run's policy.Plan (`inference_plan`), taken as it is: its device, precision,
    channels_last and compile mode; without one, it is resolved here from the settings below
    (torch's current thread count kept):
    precision: "auto" (bf16 on CUDA and on CPUs with native bf16, else fp32), "fp32", "bf16", or
    "fp16" (CUDA only); policy.resolve_precision decides.
    compile: True / False, or None to compile where it pays (`inference_plan`: the work ahead,
    `expected_images` of `input_size` (C, H, W), repays the compile time, about a minute, and a
    call of `batch_size` runs faster compiled here; see docs/inference.md).
    backend: "torch", "onnxruntime" (fp32, needs `input_size`), "openvino" (fp32 or bf16, needs
    `input_size` and the openvino extra), or "auto": the fastest of them as `resnetlab bench`
    measured them on this machine for this model, `input_size` and `batch_size`
    (infer/backends.py), else torch; the result's `why` says which and the figures. An ONNX model
    (`load_onnx`, `load_int8`) runs as it is.
    device: "cpu" or "cuda[:N]" (the model is copied there; inputs move there on each call, and
    the logits stay there); on CUDA the backend is torch and a compiled model runs as CUDA graphs.
    The result runs under torch.no_grad() and returns float32 logits.
    """
    from .onnxmodel import OnnxModel

    if plan is not None:
        device, precision = plan.device, plan.precision
        compile = plan.compiled
    policy.check_settings(device=device, precision=precision, compile=compile)
    cuda = policy.is_cuda(device)
    if isinstance(model, OnnxModel):
        if cuda:
            raise ResnetlabError(
                f"an ONNX model runs on the CPU ({model.runtime}); use device cpu",
                argument="device",
            )
        return _NoGrad(model)
    if backend not in BACKENDS:
        raise ResnetlabError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    check_backend_compile(backend, compile)
    asked = precision
    precision = policy.precision_name(policy.resolve_precision(precision, device))
    if cuda and backend in ("onnxruntime", "openvino"):
        raise ResnetlabError(f"the {backend} backend runs on the CPU; use device cpu")
    why = f"{backend}, as asked"
    runtime_precision = precision
    if backend == "auto":
        backend, why = "torch", "torch: no measurement of this model and batch here (bench)"
        if input_size and batch_size and not cuda:  # measurements of this CPU's backends
            from .backends import choose

            best = choose(model, tuple(input_size), batch_size, precision, asked)
            if compile and best is not None and best.backend != "torch":
                best = None  # compile asked: only torch can honour it
                why = "torch: compile asked, which only the torch backend does"
            if best is not None:
                backend, why, runtime_precision = best.backend, best.why, best.precision
                if compile is None and best.backend == "torch" and compiler_available():
                    compile = best.compiled
    if backend in ("onnxruntime", "openvino"):
        if backend == "onnxruntime" and asked == "bf16":
            raise ResnetlabError("the onnxruntime backend runs fp32; use precision fp32 or auto")
        if not input_size:
            raise ResnetlabError(f"the {backend} backend needs the input size (C, H, W)")
        from .onnxmodel import runtime_model

        if backend == "onnxruntime":
            runtime_precision = "fp32"
        prepared = runtime_model(backend, model, tuple(input_size), runtime_precision)
        prepared.why = why
        return _NoGrad(prepared)
    if plan is None:
        plan = inference_plan(model, device=device, precision=asked, compile=compile,
                              threads=torch.get_num_threads(), expected_images=expected_images,
                              input_size=input_size, batch_size=batch_size)  # fmt: skip
    folded, n = fold_batchnorm(model)
    for p in folded.parameters():
        p.requires_grad_(False)
    is_conv = any(isinstance(m, nn.Conv2d) for m in folded.modules())
    folded = folded.to(plan.device)
    if plan.channels_last and is_conv:
        folded = folded.to(memory_format=torch.channels_last)
    prepared = InferenceModel(folded, precision=plan.precision,
                              channels_last=plan.channels_last and is_conv,
                              device=plan.device).eval()  # fmt: skip
    prepared.folded_bn = n
    prepared.why = why
    if plan.compiled:
        if not compiler_available():
            raise ResnetlabError("torch.compile needs a C++ compiler (g++ or clang++) on the PATH")
        policy.use_compile_cache()
        if plan.compile_mode != "default":  # CUDA graphs; torch.compile takes a mode or options
            prepared.model = torch.compile(prepared.model, dynamic=False, mode=plan.compile_mode)
            prepared.cuda_graphs = plan.cuda_graphs
        else:
            # frozen weights: constants folded into the graph, oneDNN weight prepacking
            prepared.model = torch.compile(
                prepared.model, dynamic=False, options={"freezing": True}
            )
        prepared.compiled = True
    return _NoGrad(prepared)


def compile_pays(
    model: nn.Module, expected_images: int | None, input_size: tuple[int, ...] | None
) -> bool:
    """Whether the work ahead, `expected_images` images of `input_size` (C, H, W), repays
    compiling: policy.resolve_compile decides from its multiply-adds (COMPILE_MIN_MACS)."""
    work = _work(model, expected_images, input_size)
    return policy.resolve_compile("auto", "cpu", macs=work, compiler=compiler_available)


class _NoGrad:
    """Calls the prepared module under torch.no_grad(); exposes its attributes.

    A compiled model is specialised to one batch size: smaller batches (the last one of a data
    set) are padded up to the largest size seen so far instead of compiling the graph again.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.batch = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        with torch.no_grad():
            if not self.module.compiled or n >= self.batch:
                self.batch = max(self.batch, n)
                return self.module(x)
            pad = x.new_zeros((self.batch - n, *x.shape[1:]))
            return self.module(torch.cat([x, pad]))[:n]

    def __getattr__(self, name: str):
        return getattr(self.module, name)
