"""Inference on CUDA: predict, the fast path and `resnetlab bench --device cuda`.

The CUDA tests skip without a GPU; the refusals of a machine without one run everywhere else.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab import create_model, save_weights
from resnetlab.cli import main
from resnetlab.infer.bench_paths import split_cpu_only
from resnetlab.infer.fastpath import compiler_available, prepare_for_inference

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
META = {"classes": ["cat", "dog", "fox"], "input_size": [1, 28, 28], "mean": [0.5], "std": [0.25]}


def tiny_model():
    torch.manual_seed(0)
    model = create_model(
        "resnet20", num_classes=3, in_chans=1, layers=(1, 1, 1), widths=(4, 8, 16), stem_width=4
    )
    with torch.no_grad():  # non-trivial BN statistics, as a trained model has
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(tiny_model(), path, {**META, "dataset": "synthetic"})
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (28, 28), np.uint8)).save(d / f"{i}.png")
    return d


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["bench", "predict"])
def test_device_cuda_without_cuda_is_one_line_and_nonzero_exit(capsys, weights, images, command):
    argv = ["bench", weights] if command == "bench" else ["predict", weights, images]
    rc, out, err = run(capsys, *argv, "--device", "cuda")
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == [
        f"resnetlab {command}: error: --device 'cuda' asked but CUDA is not available; use cpu "
        f"(see `resnetlab {command} --help`)"
    ]


def test_cpu_only_paths_are_named_once_when_skipped_on_cuda():
    paths = ("eager-fp32", "fast-fp32", "onnxruntime", "int8", "fast")
    assert split_cpu_only(paths, "cpu") == (paths, None)
    kept, line = split_cpu_only(paths, "cuda")
    assert kept == ("eager-fp32", "fast")
    assert line == "skipped on cuda: fast-fp32, onnxruntime, int8 (CPU paths)"
    assert split_cpu_only(("fast",), "cuda:0") == (("fast",), None)


@needs_cuda
def test_bench_on_cuda_reports_gpu_torch_and_compile_time(capsys, weights):
    rc, out, err = run(
        capsys, "bench", weights, "--device", "cuda", "--batch-size", "2", "--repeats", "2",
        "--rep-time", "0.01", "--paths", "eager-fp32,eager-bf16,fast,onnxruntime", "--json",
    )  # fmt: skip
    assert rc == 0, err
    assert "skipped on cuda: onnxruntime (CPU paths)" in err
    rows = json.loads(out)
    assert [r["path"] for r in rows] == ["eager-fp32", "eager-bf16", "fast"]
    for r in rows:
        assert r["device"] == "cuda" and r["gpu"] == torch.cuda.get_device_name()
        assert r["torch_version"] == torch.__version__
        assert r["images_per_s"] > 0 and r["latency_ms"] > 0 and r["batch_size"] == 2
        assert r["images_per_s"] == pytest.approx(2e3 / r["latency_ms"], rel=1e-2)
    by_path = {r["path"]: r for r in rows}
    assert by_path["eager-fp32"]["precision"] == "fp32"
    assert by_path["eager-bf16"]["precision"] in ("bf16", "fp16")
    assert by_path["fast"]["compile_s"] > 0 and by_path["eager-fp32"]["compile_s"] is None


@needs_cuda
def test_bench_table_on_cuda_names_the_gpu(capsys):
    rc, out, _ = run(
        capsys, "bench", "resnet20", "--device", "cuda", "--batch-size", "4", "--image-size",
        "16", "--repeats", "1", "--rep-time", "0.01", "--paths", "eager-fp32,eager-bf16",
    )  # fmt: skip
    assert rc == 0
    assert torch.cuda.get_device_name() in out and f"torch {torch.__version__}" in out
    assert "eager-bf16" in out and "1.00x" in out


@needs_cuda
@pytest.mark.parametrize("precision, tol", [("fp32", 1e-3), ("bf16", 3e-2)])
def test_predict_on_cuda_gives_the_cpu_top1_and_close_probabilities(
    capsys, weights, images, precision, tol
):
    # fp32 on CUDA convolves in TF32 (cuDNN's default): close, not equal to the CPU
    flags = ["--json", "--topk", "3"] + (["--fp32"] if precision == "fp32" else [])
    rc, cpu, _ = run(capsys, "predict", weights, images, "--device", "cpu", "--fp32", *flags[:3])
    assert rc == 0
    rc, gpu, _ = run(capsys, "predict", weights, images, "--device", "cuda", *flags)
    assert rc == 0
    for a, b in zip(json.loads(cpu), json.loads(gpu), strict=True):
        assert a["path"] == b["path"]
        if a["top"][0]["prob"] - a["top"][1]["prob"] > 2 * tol:  # not a near tie
            assert a["top"][0]["index"] == b["top"][0]["index"]
        for ta in a["top"]:
            (tb,) = [t for t in b["top"] if t["index"] == ta["index"]]
            assert tb["prob"] == pytest.approx(ta["prob"], abs=tol)


@needs_cuda
@pytest.mark.parametrize("compile", [False, True])
def test_fast_path_on_cuda_agrees_with_cpu_eager(compile):
    if compile and not compiler_available():
        pytest.skip("torch.compile needs a C++ compiler")
    model = tiny_model()
    g = torch.Generator().manual_seed(3)
    x1, x2 = torch.randn(8, 1, 28, 28, generator=g), torch.randn(8, 1, 28, 28, generator=g)
    with torch.no_grad():
        ref1, ref2 = model(x1), model(x2)
    fast = prepare_for_inference(model, precision="auto", compile=compile, device="cuda")
    assert fast.precision in ("bf16", "fp16") and fast.cuda_graphs == compile
    out1 = fast(x1)  # a CPU batch moves to the GPU; the logits stay there, in float32
    out2 = fast(x2)  # with CUDA graphs, this call must not overwrite out1
    fast(x1)
    assert out1.device.type == "cuda" and out1.dtype == torch.float32
    for out, ref in ((out1, ref1), (out2, ref2)):
        torch.testing.assert_close(out.cpu(), ref, atol=5e-2, rtol=5e-2)
        top2 = ref.topk(2, dim=1).values
        clear = top2[:, 0] - top2[:, 1] > 0.2  # no near ties
        assert torch.equal(out.argmax(1).cpu()[clear], ref.argmax(1)[clear])
