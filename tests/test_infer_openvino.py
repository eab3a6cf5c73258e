"""OpenVINO as a second runtime: the fp32 and int8 files of every model family load and agree in
ONNX Runtime and OpenVINO; predict, eval and bench run through it; the fast path takes it where it
was measured faster and says why; without it installed nothing changes.

Skipped only where OpenVINO is not installed (`make test` installs it), except the last tests,
which check the absence on purpose.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab import ResnetlabError, create_model, save_weights
from resnetlab.cli import main

pytest.importorskip("onnxruntime")
needs_openvino = pytest.mark.skipif(
    pytest.importorskip("importlib").util.find_spec("openvino") is None,
    reason="openvino is not installed (pip install 'resnetlab[openvino]')",
)

from resnetlab.infer.backends import record  # noqa: E402
from resnetlab.infer.export import export  # noqa: E402
from resnetlab.infer.fastpath import prepare_for_inference  # noqa: E402
from resnetlab.infer.int8 import quantize_model  # noqa: E402
from resnetlab.infer.onnxmodel import load_onnx  # noqa: E402

SMALL = {"layers": (1, 1, 1), "widths": (4, 8, 16), "stem_width": 4}
# name, options, input size: every family the package builds, at tiny widths
FAMILIES = {
    "option-A": ("resnet20", SMALL, (3, 16, 16)),
    "option-B": ("resnet20", {**SMALL, "shortcut": "B"}, (3, 16, 16)),
    "option-C": ("resnet20", {**SMALL, "shortcut": "C"}, (3, 16, 16)),
    "bottleneck": (
        "resnet50",
        {"layers": (1, 1, 1, 1), "widths": (4, 8, 8, 8), "stem_width": 4},
        (3, 32, 32),
    ),  # fmt: skip
    "pre-activation": ("preact_resnet110", SMALL, (3, 16, 16)),
    "plain": ("plain20", SMALL, (1, 16, 16)),
    "mlp": ("residual_mlp", {"in_features": 16, "depth": 2, "width": 8}, (1, 4, 4)),
}


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))


def family_model(name: str, options: dict, size: tuple[int, ...]) -> torch.nn.Module:
    torch.manual_seed(0)
    kw = {"num_classes": 5, **options}
    if name != "residual_mlp":
        kw["in_chans"] = size[0]
    model = create_model(name, **kw).eval()
    with torch.no_grad():  # BN statistics and affine terms as a trained model has them
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@needs_openvino
@pytest.mark.parametrize("family", list(FAMILIES))
def test_fp32_and_int8_files_of_every_family_load_and_agree_in_both_runtimes(family, tmp_path):
    name, options, size = FAMILIES[family]
    model = family_model(name, options, size)
    c = size[0]
    meta = {"classes": list("abcde"), "mean": [0.5] * c, "std": [0.25] * c,
            "input_size": list(size)}  # fmt: skip
    g = torch.Generator().manual_seed(0)
    export(model, meta, "onnx", tmp_path / "fp32.onnx")
    calib = torch.randn((32, *size), generator=g)
    for form in ("U8S8", "S8S8"):  # OpenVINO refused the S8S8 file of option A before the fix
        quantize_model(model, {**model.resnetlab_config, **meta}, calib,
                       tmp_path / f"{form}.onnx", forms=(form,))  # fmt: skip
    x = torch.randn((64, *size), generator=g)
    with torch.no_grad():
        ref = model(x)
    scale = float(ref.abs().max())
    if family == "mlp":
        torch.set_num_threads(2)  # OpenVINO 2026.4 crashes on it in f32 on one thread: refused
    try:
        for kind in ("fp32", "U8S8", "S8S8"):
            ort, _ = load_onnx(tmp_path / f"{kind}.onnx", runtime="onnxruntime")
            ov, _ = load_onnx(tmp_path / f"{kind}.onnx", runtime="openvino", precision="fp32")
            a, b = ort(x), ov(x)
            assert a.shape == b.shape == ref.shape
            diff = float((a - b).abs().max()) / scale
            agree = float((a.argmax(1) == b.argmax(1)).float().mean())
            if kind == "fp32":  # the same arithmetic: OpenVINO asked for f32
                assert diff < 1e-4 and agree == 1.0, (kind, diff)
            else:  # int8 kernels of two runtimes: rounding differs, the answer does not
                assert diff < 0.1 and agree >= 0.95, (kind, diff, agree)
                assert float((a.argmax(1) == ref.argmax(1)).float().mean()) >= 0.9
    finally:
        torch.set_num_threads(1)  # the suite's setting (conftest)


@needs_openvino
def test_a_residual_mlp_in_fp32_on_one_thread_is_refused_in_one_line(tmp_path):
    name, options, size = FAMILIES["mlp"]
    model = family_model(name, options, size)
    meta = {"classes": list("abcde"), "mean": [0.5], "std": [0.25], "input_size": list(size)}
    export(model, meta, "onnx", tmp_path / "mlp.onnx")
    with pytest.raises(ResnetlabError, match="crashes compiling a residual MLP in fp32 on one"):
        load_onnx(tmp_path / "mlp.onnx", runtime="openvino", precision="fp32")
    ov, _ = load_onnx(tmp_path / "mlp.onnx", runtime="openvino", precision="bf16")
    assert ov(torch.randn(3, *size)).shape == (3, 5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("ov")
    model = family_model("resnet20", SMALL, (1, 16, 16))
    w = d / "w.safetensors"
    save_weights(model, w, {"classes": list("abcde"), "input_size": [1, 16, 16], "mean": [0.5],
                            "std": [0.25]})  # fmt: skip
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 20), np.uint8)).save(d / f"i{i}.png")
    np.savez(d / "data.npz", x_train=rng.integers(0, 255, (40, 16, 16), np.uint8),
             y_train=np.arange(40) % 5, x_test=rng.integers(0, 255, (10, 16, 16), np.uint8),
             y_test=np.arange(10) % 5)  # fmt: skip
    return d


@needs_openvino
def test_predict_eval_and_bench_run_weights_and_onnx_files_through_openvino(capsys, tiny):
    w, onnx_file = tiny / "w.safetensors", tiny / "w.onnx"
    assert main(["export", str(w), "--format", "onnx", "--out", str(onnx_file)]) == 0
    capsys.readouterr()
    top = {}
    for target, backend in ((w, "torch"), (w, "openvino"), (onnx_file, "openvino"),
                            (onnx_file, "onnxruntime")):  # fmt: skip
        rc, out, err = run(capsys, "predict", target, tiny, "--json", "--topk", "1", "--fp32",
                           "--device", "cpu", "--backend", backend)  # fmt: skip
        assert rc == 0, err
        top[(target.suffix, backend)] = [p["top"][0]["class"] for p in json.loads(out)]
    assert len({tuple(v) for v in top.values()}) == 1, top  # every runtime: the same answers
    accs = set()
    for target, backend in ((w, "torch"), (w, "openvino"), (onnx_file, "openvino")):
        rc, out, err = run(capsys, "eval", target, "--data", tiny / "data.npz", "--json",
                           "--backend", backend, "--device", "cpu")  # fmt: skip
        assert rc == 0, err
        accs.add(json.loads(out)["top1_acc"])
    assert len(accs) == 1
    rc, out, err = run(capsys, "bench", onnx_file, "--batch-size", "2", "--repeats", "1",
                       "--rep-time", "0.01", "--paths", "eager-fp32,onnxruntime,openvino-fp32,"
                       "int8,int8-openvino", "--json")  # fmt: skip
    assert rc == 0, err
    rows = {r["path"]: r for r in json.loads(out)}
    assert set(rows) == {"eager-fp32", "onnxruntime", "openvino-fp32", "int8", "int8-openvino"}
    assert rows["int8-openvino"]["precision"] == "int8" and rows["int8"]["form"] in ("U8S8", "S8S8")


@needs_openvino
def test_fast_path_takes_openvino_where_measured_faster_and_says_why():
    model = family_model("resnet20", SMALL, (1, 16, 16))
    size = (1, 16, 16)
    fast = prepare_for_inference(model, precision="fp32", input_size=size, batch_size=4)
    assert fast.backend == "torch" and "no measurement" in fast.why
    record(model, size, 4, {
        "fast-nocompile": {"images_per_s": 100.0, "precision": "fp32"},
        "onnxruntime": {"images_per_s": 150.0, "precision": "fp32"},
        "openvino-fp32": {"images_per_s": 210.0, "precision": "fp32"},
        "openvino": {"images_per_s": 400.0, "precision": "bf16"},  # not for an fp32 request
    })  # fmt: skip
    fast = prepare_for_inference(model, precision="fp32", input_size=size, batch_size=4)
    assert fast.backend == "openvino" and fast.precision == "fp32"
    assert "210.0" in fast.why and "150.0" in fast.why and "100.0" in fast.why
    x = torch.randn(5, *size)
    with torch.no_grad():
        assert float((fast(x) - model(x)).abs().max()) < 1e-4
    # OpenVINO's bf16 competes where the torch path is bf16 too
    fast = prepare_for_inference(model, precision="bf16", input_size=size, batch_size=4)
    assert fast.backend == "openvino" and fast.precision == "bf16" and "400.0" in fast.why


@needs_openvino
def test_an_int8_file_runs_on_the_runtime_quantize_measured_faster(tmp_path):
    model = family_model("resnet20", SMALL, (1, 16, 16))
    meta = {**model.resnetlab_config, "classes": list("abcde"), "mean": [0.5], "std": [0.25]}
    q = quantize_model(model, meta, torch.randn(32, 1, 16, 16), tmp_path / "m.int8.onnx",
                       time_batch=4)  # fmt: skip
    speeds = q["measured"]["forms"][q["form"]]["images_per_s"]
    assert set(speeds) == {"onnxruntime", "openvino"}
    m, _ = load_onnx(tmp_path / "m.int8.onnx", batch_size=4)
    assert m.runtime == max(speeds, key=speeds.get) and "measured here" in m.why
    m, _ = load_onnx(tmp_path / "m.int8.onnx", batch_size=1)  # the nearest batch measured
    assert m.runtime == max(speeds, key=speeds.get)


def test_without_openvino_nothing_changes(capsys, tiny, monkeypatch):
    from resnetlab.infer.bench_paths import DEFAULT_PATHS, default_paths

    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    assert "openvino" not in default_paths() and "int8-openvino" not in default_paths()
    assert set(default_paths()) == set(DEFAULT_PATHS) - {"openvino", "int8-openvino"}
    model = family_model("resnet20", SMALL, (1, 16, 16))
    record(
        model,
        (1, 16, 16),
        4,
        {
            "fast-nocompile": {"images_per_s": 100.0, "precision": "fp32"},
            "openvino-fp32": {"images_per_s": 900.0, "precision": "fp32"},
        },
    )
    fast = prepare_for_inference(model, precision="fp32", input_size=(1, 16, 16), batch_size=4)
    assert fast.backend == "torch"
    rc, _, err = run(capsys, "predict", tiny / "w.safetensors", tiny, "--backend", "openvino")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "openvino runtime is not installed: pip install 'resnetlab[openvino]'" in err
    rc, _, err = run(capsys, "bench", tiny / "w.safetensors", "--paths", "eager-fp32,openvino",
                     "--batch-size", "1", "--repeats", "1", "--rep-time", "0.01")  # fmt: skip
    assert rc == 0 and "openvino: skipped (openvino is not installed" in err
