"""`resnetlab predict`, `export`, `bench` and `explain` on the command line, good and bad input."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from resnetlab import create_model, save_weights
from resnetlab.cli import main
from resnetlab.infer.export import run_onnx
from resnetlab.infer.preprocess import Preprocess

CLASSES = ["cat", "dog", "fox"]
META = {"classes": CLASSES, "input_size": [1, 28, 28], "mean": [0.5], "std": [0.25]}


def tiny_model():
    torch.manual_seed(0)
    model = create_model(
        "resnet20", num_classes=3, in_chans=1, layers=(1, 1, 1), widths=(4, 8, 16), stem_width=4
    )
    # non-trivial BN statistics, as a trained model has
    with torch.no_grad():
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
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), np.uint8)).save(d / "a_colour.jpg")
    Image.fromarray(rng.integers(0, 255, (28, 28), np.uint8)).save(d / "b_grey.png")
    Image.new("L", (1, 1), 90).save(d / "c_dot.png")
    (d / "d_text.png").write_text("this is not an image")
    good = (d / "a_colour.jpg").read_bytes()
    (d / "e_cut.jpg").write_bytes(good[: len(good) // 2])
    (d / "notes.txt").write_text("ignored: not an image suffix")
    return d


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_predict_folder_of_good_and_broken_images(capsys, weights, images):
    rc, out, err = run(capsys, "predict", weights, images, "--topk", "2")
    assert rc == 1
    lines = out.strip().splitlines()
    assert [line.split(":")[0].rsplit("/", 1)[1] for line in lines] == [
        "a_colour.jpg", "b_grey.png", "c_dot.png",
    ]  # fmt: skip
    assert all(len(line.split(",")) == 2 for line in lines)
    assert "d_text.png" in err and "e_cut.jpg" in err and "2 of 5 image(s)" in err
    assert "Traceback" not in err


def test_predict_json_probabilities_match_the_model(capsys, weights, images):
    # the reference is the fp32 model on the CPU: pin both (auto is bf16 on CUDA and on AMX CPUs)
    rc, out, _ = run(
        capsys, "predict", weights, images / "b_grey.png", "--json", "--topk", "3",
        "--device", "cpu", "--fp32",
    )  # fmt: skip
    assert rc == 0
    (pred,) = json.loads(out)
    prep = Preprocess.from_metadata(META)
    with torch.no_grad():
        probs = torch.softmax(tiny_model()(prep.load(images / "b_grey.png")[None]), 1)[0]
    order = probs.argsort(descending=True).tolist()
    assert [t["index"] for t in pred["top"]] == order
    assert [t["class"] for t in pred["top"]] == [CLASSES[i] for i in order]
    for t in pred["top"]:
        assert t["prob"] == pytest.approx(float(probs[t["index"]]), abs=1e-5)


def test_predict_results_do_not_depend_on_batch_size(capsys, weights, images, monkeypatch):
    from resnetlab.infer import fastpath

    batches = []  # the batch sizes the prepared model is called with
    call = fastpath._NoGrad.__call__
    monkeypatch.setattr(fastpath._NoGrad, "__call__",
                        lambda self, x: batches.append(len(x)) or call(self, x))  # fmt: skip
    # on the CPU: cuDNN picks its algorithms (and TF32) per batch size
    pinned = ("--json", "--fp32", "--device", "cpu")
    _, one, _ = run(capsys, "predict", weights, images, "--batch-size", "1", *pinned)
    assert batches == [1, 1, 1]  # the 3 readable images one at a time
    batches.clear()
    _, many, _ = run(capsys, "predict", weights, images, "--batch-size", "64", *pinned)
    assert batches == [3]  # all in one batch
    a, b = json.loads(one), json.loads(many)
    assert [p["path"] for p in a] == [p["path"] for p in b]
    for pa, pb in zip(a, b):
        assert [t["index"] for t in pa["top"]] == [t["index"] for t in pb["top"]]
        for ta, tb in zip(pa["top"], pb["top"]):
            assert ta["prob"] == pytest.approx(tb["prob"], abs=1e-5)


def _foreign_weights(path, name):
    # tensors of one architecture under metadata that claims another
    state = create_model("resnet20", num_classes=3, layers=(1, 1, 1)).state_dict()
    meta = {"name": name, "num_classes": 3, "in_chans": 3, "options": {}, **META}
    save_file({k: v.contiguous() for k, v in state.items()}, path, {"resnetlab": json.dumps(meta)})


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "weights file not found"),
        ("other_model", "does not fit this model"),
        ("unknown_name", "unknown model 'resnet5'"),
        ("not_safetensors", "not a readable safetensors file"),
        ("no_metadata", "carries no resnetlab metadata"),
    ],
)
@pytest.mark.parametrize("command", ["predict", "export", "explain"])
def test_bad_weights_give_one_line_and_nonzero_exit(
    capsys, tmp_path, images, case, message, command
):
    w = tmp_path / "w.safetensors"
    if case == "other_model":
        _foreign_weights(w, "resnet32")
    elif case == "unknown_name":
        _foreign_weights(w, "resnet5")
    elif case == "not_safetensors":
        w.write_text("hello")
    elif case == "no_metadata":
        save_file({"x": torch.zeros(1)}, w)
    img = images / "b_grey.png"
    argv = {
        "predict": ["predict", w, img],
        "export": ["export", w, "--format", "onnx", "--out", tmp_path / "m.onnx"],
        "explain": ["explain", w, img, "--out", tmp_path / "cam.png"],
    }[command]
    rc, out, err = run(capsys, *argv)
    assert rc != 0
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "cam.png").exists()


def test_predict_bad_options(capsys, weights, images, tmp_path):
    rc, _, err = run(capsys, "predict", weights, images, "--topk", "0")
    assert rc == 2 and "--topk 0 must be at least 1" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc, _, err = run(capsys, "predict", weights, empty)
    assert rc == 2 and "no image files" in err


@pytest.mark.parametrize("dynamic", [False, True])
def test_export_onnx_runs_in_onnxruntime_like_pytorch(capsys, weights, tmp_path, dynamic):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "tiny.onnx"
    argv = ["export", weights, "--format", "onnx", "--out", out] + (
        ["--static-batch"] * (not dynamic)
    )
    rc, stdout, _ = run(capsys, *argv)
    assert rc == 0 and out.is_file()
    assert "checked with onnxruntime: max abs diff vs PyTorch" in stdout
    assert "same top-1" in stdout
    x = torch.randn(5 if dynamic else 1, 1, 28, 28, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = tiny_model()(x)
    got = run_onnx(out, x)
    assert float((got - ref).abs().max()) < 1e-4
    assert torch.equal(got.argmax(1), ref.argmax(1))
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.onnx"]  # no temporary files left


def test_export_exported_program(capsys, weights, tmp_path):
    out = tmp_path / "tiny.pt2"
    rc, stdout, _ = run(
        capsys, "export", weights, "--format", "exported-program", "--out", out, "--dynamic-batch"
    )
    assert rc == 0 and "checked with torch.export.load: max abs diff vs PyTorch" in stdout
    loaded = torch.export.load(str(out)).module()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded(x), tiny_model()(x), atol=1e-5)


def test_onnx_export_carries_the_weights_metadata_and_takes_any_batch(capsys, weights, tmp_path):
    from resnetlab.infer.onnxfile import read_onnx
    from resnetlab.models.weights import read_metadata

    own = read_metadata(weights)
    shapes = {}
    for flags in ([], ["--dynamic-batch"], ["--static-batch"]):  # --dynamic-batch: old commands
        out = tmp_path / f"m{len(shapes)}.onnx"
        rc, stdout, _ = run(capsys, "export", weights, "--format", "onnx", "--out", out, *flags)
        assert rc == 0
        proto, meta = read_onnx(out)  # the one checker: metadata and graph
        assert {k: meta[k] for k in own} == own  # classes, mean, std, input size, name, options
        assert meta["export"]["dynamic_batch"] is (flags != ["--static-batch"])
        dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
        shapes[tuple(flags)] = dim.dim_value or dim.dim_param
        assert ("dynamic batch" in stdout) is (flags != ["--static-batch"])
    assert (
        shapes[()] == shapes[("--dynamic-batch",)] == "batch" and shapes[("--static-batch",)] == 1
    )
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(run_onnx(tmp_path / "m0.onnx", x), tiny_model()(x), atol=1e-4)
    rc, _, err = run(capsys, "explain", tmp_path / "m0.onnx", tmp_path / "x.png")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "needs the PyTorch weights" in err


def test_export_default_name_and_missing_onnxruntime(capsys, weights, tmp_path, monkeypatch):
    copy = tmp_path / "model.safetensors"
    copy.write_bytes(weights.read_bytes())
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    rc, stdout, _ = run(capsys, "export", copy, "--format", "onnx")
    assert rc == 0 and (tmp_path / "model.onnx").is_file()
    assert "not run: onnxruntime is not installed" in stdout


def test_export_to_a_directory_fails_cleanly(capsys, weights, tmp_path):
    rc, _, err = run(capsys, "export", weights, "--format", "onnx", "--out", tmp_path)
    assert rc == 2 and "is a directory" in err
    assert list(tmp_path.iterdir()) == []


def test_bench_fast_fp32_is_the_fast_path_in_fp32(capsys, weights, monkeypatch):
    monkeypatch.setattr("resnetlab.infer.bench_paths.compiler_available", lambda: False)
    rc, out, _ = run(
        capsys, "bench", weights, "--batch-size", "2", "--repeats", "1", "--rep-time", "0.01",
        "--paths", "eager-fp32,fast-fp32", "--json",
    )  # fmt: skip
    assert rc == 0
    rows = json.loads(out)
    assert [(r["path"], r["precision"]) for r in rows] == [
        ("eager-fp32", "fp32"),
        ("fast-fp32", "fp32"),
    ]


def test_bench_json_has_every_path(capsys, weights):
    pytest.importorskip("onnxruntime")
    rc, out, _ = run(
        capsys, "bench", weights, "--batch-size", "1,2", "--repeats", "2", "--rep-time", "0.01",
        "--paths", "eager-fp32,eager-bf16,fast-nocompile,onnxruntime", "--json",
    )  # fmt: skip
    assert rc == 0
    rows = json.loads(out)
    assert [(r["batch_size"], r["path"]) for r in rows] == [
        (b, p)
        for b in (1, 2)
        for p in ("eager-fp32", "eager-bf16", "fast-nocompile", "onnxruntime")
    ]
    for r in rows:
        assert r["images_per_s"] > 0 and r["latency_ms"] > 0 and r["input_size"] == [1, 28, 28]
        assert r["images_per_s"] == pytest.approx(r["batch_size"] * 1e3 / r["latency_ms"], rel=1e-2)
    assert all(r["ratio_vs_eager_fp32"] == 1.0 for r in rows if r["path"] == "eager-fp32")


def test_bench_table_by_model_name(capsys):
    rc, out, _ = run(
        capsys, "bench", "resnet20", "--batch-size", "1", "--image-size", "16", "--repeats", "1",
        "--rep-time", "0.01", "--paths", "eager-fp32,fast-nocompile",
    )  # fmt: skip
    assert rc == 0
    assert "resnet20  input 3x16x16" in out and "vs eager-fp32" in out
    assert "fast-nocompile" in out and "1.00x" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "resnet5"], "unknown model 'resnet5'"),
        (["bench", "resnet20", "--batch-size", "0"], "--batch-size '0'"),
        (["bench", "resnet20", "--paths", "warp"], "unknown bench path"),
        (["bench", "residual_mlp"], "bench measures conv models"),
        (["bench", "resnet20", "--threads", "0"], "--threads must be at least 1, got 0"),
    ],
)
def test_bench_bad_input(capsys, argv, message):
    rc, _, err = run(capsys, *argv)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_explain_writes_a_png(capsys, weights, images, tmp_path):
    out = tmp_path / "cam.png"
    rc, stdout, _ = run(
        capsys, "explain", weights, images / "a_colour.jpg", "--class", "dog", "--out", out
    )
    assert rc == 0 and "class dog (index 1" in stdout and "stage layer3" in stdout
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 200
    rc, stdout, _ = run(
        capsys, "explain", weights, images / "c_dot.png", "--stage", "1", "--out", out
    )
    assert rc == 0 and "stage layer1" in stdout


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--class", "zebra"], "unknown class 'zebra'"),
        (["--stage", "layer7"], "unknown stage 'layer7'"),
        (["--out", "cam.jpg"], "use a .png name"),
    ],
)
def test_explain_bad_input(capsys, weights, images, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(capsys, "explain", weights, images / "b_grey.png", *extra)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert list(tmp_path.iterdir()) == []


def test_explain_unreadable_image(capsys, weights, images, tmp_path):
    rc, _, err = run(capsys, "explain", weights, images / "d_text.png", "--out", tmp_path / "x.png")
    assert rc == 2 and "d_text.png: not a readable image" in err
