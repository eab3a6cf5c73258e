"""int8 models: agreement with fp32 on real Fashion-MNIST, the int8 file's round trip, refusals.

The real-data claims use the shipped resnet20 Fashion-MNIST weights; the CPU is pinned to one
thread (conftest), which the ONNX Runtime sessions follow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab import create_model, save_weights
from resnetlab.cli import main
from resnetlab.infer.backends import fastest, record
from resnetlab.infer.fastpath import prepare_for_inference
from resnetlab.infer.int8 import Int8Model, load_int8, read_onnx_metadata
from resnetlab.infer.quantize import quantize
from resnetlab.models.weights import PRETRAINED_DIR, read_metadata

pytest.importorskip("onnxruntime")

FMNIST = Path("/usr/share/datasets/fashion-mnist")
SHIPPED = PRETRAINED_DIR / "resnet20.fashion-mnist.safetensors"
needs_fmnist = pytest.mark.skipif(
    not (FMNIST / "t10k-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST not installed (Debian package dataset-fashion-mnist)",
)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    # measurements of backends go to a scratch file, never the user's cache
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def int8_report(tmp_path_factory):
    if not (FMNIST / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed")
    out = tmp_path_factory.mktemp("q") / "resnet20.int8.onnx"
    rep = quantize(SHIPPED, calib="fashion-mnist", images=256, out=out, test_images=500,
                   bench_batch=0)  # fmt: skip
    return rep


@needs_fmnist
def test_int8_resnet20_agrees_with_fp32_on_fashion_mnist(int8_report):
    rep = int8_report
    assert rep.test_images == 500 and rep.calib_images == 256
    assert rep.fp32_top1 > 0.9, "the shipped weights should be ~94% accurate"
    assert rep.top1_agreement >= 0.99, f"int8 agrees with fp32 on {rep.top1_agreement:.3f}"
    assert rep.int8_top1 >= rep.fp32_top1 - 0.01
    assert rep.int8_bytes < rep.fp32_bytes / 2.5  # int8 weights: about a quarter of fp32
    # the report's figures, recomputed here: the int8 file and the fp32 weights on the same
    # 500 test images, normalised by hand as (x / 255 - mean) / std
    from resnetlab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
    from resnetlab.models import load_model

    images = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC)[:500]
    labels = torch.from_numpy(read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC)[:500])
    fp32, meta = load_model(SHIPPED)
    x = (torch.from_numpy(images).float()[:, None] / 255 - meta["mean"][0]) / meta["std"][0]
    int8, _ = load_int8(rep.out, runtime="onnxruntime")  # as quantize compares

    def logits(model):
        with torch.no_grad():
            out = model(x)
            return (out + model(x.flip(3))) / 2 if rep.tta_flip else out

    a, b = logits(fp32.eval()), logits(int8)
    assert not torch.equal(a, b)  # int8 arithmetic: the logits move
    agree = float((a.argmax(1) == b.argmax(1)).float().mean())
    assert agree == pytest.approx(rep.top1_agreement) and agree >= 0.99
    assert float((b.argmax(1) == labels).float().mean()) == pytest.approx(rep.int8_top1)
    assert float((a.argmax(1) == labels).float().mean()) == pytest.approx(rep.fp32_top1)


@needs_fmnist
def test_int8_file_round_trip_keeps_metadata_and_predictions(int8_report):
    fp32_meta = read_metadata(SHIPPED)
    meta = read_onnx_metadata(int8_report.out)
    assert {k: meta[k] for k in fp32_meta} == fp32_meta  # same metadata, nothing lost
    q = meta["quantization"]
    assert (
        q["dtype"] == "int8" and q["calib_images"] == 256 and q["calib_source"] == "fashion-mnist"
    )
    model, meta2 = load_int8(int8_report.out)
    assert isinstance(model, Int8Model) and meta2 == meta
    assert Path(int8_report.out).read_bytes()[:2] != b"\x80\x04"  # protobuf, not a pickle
    x = torch.randn(7, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    fast = prepare_for_inference(model)  # an int8 model runs as it is
    a, b = model(x), fast(x)
    assert a.shape == (7, 10) and a.dtype == torch.float32 and torch.equal(a, b)
    assert torch.equal(model(x[:1]), a[:1]) or float((model(x[:1]) - a[:1]).abs().max()) < 1e-4


@needs_fmnist
def test_predict_eval_and_bench_accept_the_int8_file(capsys, int8_report, tmp_path):
    from resnetlab.data.idx import IMAGES_MAGIC, read_idx

    images = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC)[:4]
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / f"t{i}.png")
    rc, out, err = run(capsys, "predict", int8_report.out, tmp_path, "--json", "--topk", "1")
    assert rc == 0, err
    got = [p["top"][0]["class"] for p in json.loads(out)]
    rc, out, _ = run(capsys, "predict", SHIPPED, tmp_path, "--json", "--topk", "1", "--fp32",
                     "--device", "cpu")  # fmt: skip
    assert got == [p["top"][0]["class"] for p in json.loads(out)]

    rc, out, err = run(capsys, "eval", int8_report.out, "--data", "fashion-mnist", "--json",
                       "--no-tta", "--threads", "1")  # fmt: skip
    assert rc == 0, err
    report = json.loads(out)
    assert report["images"] == 10000 and report["top1_acc"] > 0.9

    rc, out, err = run(capsys, "bench", int8_report.out, "--batch-size", "2", "--repeats", "1",
                       "--rep-time", "0.01", "--paths", "eager-fp32,int8", "--json")  # fmt: skip
    assert rc == 0, err
    rows = json.loads(out)
    assert [r["path"] for r in rows] == ["eager-fp32", "int8"]
    assert rows[1]["precision"] == "int8" and rows[1]["ratio_vs_eager_fp32"] > 0


def tiny_weights(path: Path, name: str = "resnet20", **meta) -> Path:
    torch.manual_seed(0)
    if name == "residual_mlp":
        model = create_model(name, num_classes=3, in_features=16, depth=1, width=8)
    else:
        model = create_model(name, num_classes=3, in_chans=1, layers=(1, 1, 1), widths=(4, 8, 8),
                             stem_width=4)  # fmt: skip
    save_weights(model.eval(), path, {"input_size": [1, 8, 8], "mean": [0.5], "std": [0.25],
                                      "classes": ["a", "b", "c"], **meta})  # fmt: skip
    return path


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    p = tmp_path / "tiny.npz"
    np.savez(p, x_train=rng.integers(0, 255, (40, 8, 8), np.uint8), y_train=np.arange(40) % 3,
             x_test=rng.integers(0, 255, (9, 8, 8), np.uint8), y_test=np.arange(9) % 3)  # fmt: skip
    return p


def test_quantize_a_tiny_model_on_a_tiny_source(capsys, tmp_path, tiny_data, monkeypatch):
    w = tiny_weights(tmp_path / "w.safetensors")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # the default output goes to the current directory
    rc, stdout, err = run(capsys, "quantize", w, "--calib", tiny_data, "--images", "32",
                          "--bench-batch", "0")  # fmt: skip
    assert rc == 0, err
    assert (work / "w.int8.onnx").is_file() and "top-1 agreement int8 vs fp32" in stdout
    # and the forms' measurements in the (private) cache, for the runtime choice
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["cache", "tiny.npz", "w.safetensors", "work"]
    assert [p.name for p in work.iterdir()] == ["w.int8.onnx"]


@pytest.mark.parametrize(
    "case, message",
    [
        ("too_few", "--images 5: too few to calibrate"),
        ("too_many", "has only 40 training images"),
        ("no_calib", "names no dataset to calibrate on"),
        ("mlp", "is an MLP on vectors"),
        ("broken", "not a readable safetensors file"),
        ("missing", "weights file not found"),
        ("onnx_in", "is already an ONNX file"),
        ("bad_out", "use a .onnx name"),
        ("wrong_size", "expects images 1x8x8"),
    ],
)
def test_quantize_bad_input_is_one_line(capsys, tmp_path, tiny_data, case, message):
    w = tmp_path / "w.safetensors"
    args = ["--calib", tiny_data, "--images", "32", "--bench-batch", "0"]
    out = tmp_path / "out.onnx"
    if case == "too_few":
        tiny_weights(w)
        args[3] = "5"
    elif case == "too_many":
        tiny_weights(w)
        args[3] = "41"
    elif case == "no_calib":
        tiny_weights(w)
        args = args[2:]
    elif case == "mlp":
        tiny_weights(w, "residual_mlp")
    elif case == "broken":
        w.write_text("not weights")
    elif case == "onnx_in":
        w = tmp_path / "m.onnx"
        w.write_bytes(b"x")
    elif case == "bad_out":
        tiny_weights(w)
        out = tmp_path / "out.safetensors"
    elif case == "wrong_size":
        tiny_weights(w)
        args[1] = "fashion-mnist" if (FMNIST / "t10k-images-idx3-ubyte.gz").exists() else "x"
        if args[1] == "x":
            pytest.skip("Fashion-MNIST not installed")
        message = "expects images 1x8x8 but fashion-mnist has 1x28x28"
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, _, err = run(capsys, "quantize", w, "--out", out, *args)
    assert rc != 0
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@pytest.fixture
def tiny_int8(tmp_path, tiny_data) -> Path:
    w = tiny_weights(tmp_path / "w.safetensors")
    quantize(w, calib=str(tiny_data), images=32, out=tmp_path / "w.int8.onnx", bench_batch=0)
    return tmp_path / "w.int8.onnx"


def test_int8_file_is_refused_where_it_cannot_serve(capsys, tmp_path, tiny_int8, tiny_data):
    img = tmp_path / "i.png"
    Image.new("L", (8, 8), 100).save(img)
    cases = [
        (["explain", tiny_int8, img, "--out", tmp_path / "cam.png"], "Grad-CAM needs"),
        (["train", "--data", tiny_data, "--init-from", tiny_int8, "--out", tmp_path / "run"],
         "holds no trainable weights"),
        (["eval", tiny_int8, "--data", tiny_data, "--precision", "bf16"], "--precision bf16 does"),
    ]  # fmt: skip
    for argv, message in cases:
        rc, _, err = run(capsys, *argv)
        assert rc != 0 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "cam.png").exists() and not (tmp_path / "run").exists()


def test_fp32_exports_are_accepted_and_foreign_onnx_files_need_their_metadata(
    capsys, tmp_path, tiny_data
):
    import onnx

    plain = tmp_path / "plain.onnx"
    rc, _, _ = run(capsys, "export", tiny_weights(tmp_path / "w.safetensors"), "--format", "onnx",
                   "--out", plain)  # fmt: skip
    assert rc == 0
    img = tmp_path / "i.png"
    Image.new("L", (8, 8), 100).save(img)
    bench = ["--batch-size", "1", "--repeats", "1", "--rep-time", "0.01", "--paths",
             "eager-fp32,onnxruntime"]  # fmt: skip
    for argv in (
        ["predict", plain, img],
        ["eval", plain, "--data", tiny_data],
        ["bench", plain, *bench],
    ):
        rc, _, err = run(capsys, *argv)
        assert rc == 0, err
    # the same graph without resnetlab metadata: refused naming what is missing, or given it
    bare = tmp_path / "bare.onnx"
    proto = onnx.load(str(plain))
    del proto.metadata_props[:]
    onnx.save(proto, str(bare))
    pickled = tmp_path / "pickled.onnx"
    torch.save({"a": torch.zeros(1)}, pickled)
    for f, message in ((bare, "no resnetlab metadata: give its classes, mean, std (--classes, "
                              "--mean, --std)"), (pickled, "not a readable")):  # fmt: skip
        for argv in (["predict", f, img], ["eval", f, "--data", tiny_data]):
            rc, _, err = run(capsys, *argv)
            assert rc != 0 and len(err.strip().splitlines()) == 1 and message in err, err
    rc, _, err = run(capsys, "predict", bare, img, "--classes", "a,b", "--mean", "0.5")
    assert rc != 0 and "give its std (--std)" in err
    rc, _, err = run(capsys, "predict", bare, img, "--classes", "a,b", "--mean", "0.5", "--std",
                     "0.25")  # fmt: skip
    assert rc != 0 and "--classes has 2 names but" in err and "3 outputs" in err
    rc, _, err = run(capsys, "predict", bare, img, "--classes", "a,b,c", "--mean", "0.5,0.5",
                     "--std", "0.25")  # fmt: skip
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert "--mean has 2 values for 1 input channel(s); give 1 (see" in lines[0], err
    given = ["--classes", "a,b,c", "--mean", "0.5", "--std", "0.25"]
    rc, out, err = run(capsys, "predict", bare, img, "--json", *given)
    assert rc == 0, err
    rc2, out2, _ = run(capsys, "predict", plain, img, "--json")
    assert json.loads(out)[0]["top"] == json.loads(out2)[0]["top"]
    rc, out, err = run(capsys, "eval", bare, "--data", tiny_data, "--json", *given)
    assert rc == 0 and json.loads(out)["images"] == 9, err
    rc, _, err = run(capsys, "bench", bare, *bench)  # bench needs no classes: the graph's size
    assert rc == 0 and "eager-fp32: skipped (the ONNX file names no resnetlab model" in err
    rc, _, err = run(capsys, "predict", tmp_path / "w.safetensors", img, *given)
    assert rc != 0 and "applies to ONNX files without resnetlab metadata" in err


def test_fast_path_takes_the_backend_measured_fastest(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=3, in_chans=1, layers=(1, 1, 1),
                         widths=(4, 8, 8), stem_width=4).eval()  # fmt: skip
    size = (1, 8, 8)
    assert fastest(model, size, 4, "fp32") is None
    assert prepare_for_inference(model, input_size=size, batch_size=4).backend == "torch"
    measured = {
        "fast-nocompile": {"images_per_s": 100.0, "precision": "fp32"},
        "onnxruntime": {"images_per_s": 150.0, "precision": "fp32"},
    }
    record(model, size, 4, measured)
    assert fastest(model, size, 4, "fp32") == ("onnxruntime", False)
    fast = prepare_for_inference(model, precision="fp32", input_size=size, batch_size=4)
    assert fast.backend == "onnxruntime"
    x = torch.randn(5, *size)
    with torch.no_grad():
        assert float((fast(x) - model(x)).abs().max()) < 1e-4
    # another batch size, or bf16 asked for, keeps torch
    assert prepare_for_inference(model, input_size=size, batch_size=8).backend == "torch"
    fast = prepare_for_inference(model, precision="bf16", input_size=size, batch_size=4)
    assert fast.backend == "torch"
    record(model, size, 4, {"fast-nocompile": {"images_per_s": 200.0, "precision": "fp32"}})
    assert fastest(model, size, 4, "fp32") == ("torch", False)


def test_bench_prints_the_cpu_features_and_threads(capsys):
    rc, out, _ = run(capsys, "bench", "resnet20", "--batch-size", "1", "--image-size", "8",
                     "--repeats", "1", "--rep-time", "0.01", "--paths", "eager-fp32,int8",
                     "--threads", "1")  # fmt: skip
    assert rc == 0
    head = out.splitlines()[0]
    for word in ("1 threads", "AVX2", "AVX-512", "VNNI", "AMX", "native bf16"):
        assert word in head
    assert "int8" in out
