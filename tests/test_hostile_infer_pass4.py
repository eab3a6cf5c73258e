"""The fourth hostile pass, on inference: crafted weights that printed NaN with exit 0 (a subnormal
std, a huge mean, a negative BatchNorm variance, weights whose outputs overflow), a scalar mean
that crashed eval, metadata with a mean but no std, integer tensors loaded silently, settings
that were ignored (--compile with a runtime backend, --topk above the classes, an export named
with the other format's suffix) and a hint naming a flag the command lacks. Each ends in one
clear line, pinned on the tiny model and the CPU, in seconds."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from test_hostile_pass2 import TINY, one_error_line, run, tiny_weights, write_npz

from resnetlab import create_model, save_weights
from resnetlab.data.normalise import weights_mean_std
from resnetlab.errors import ResnetlabError
from resnetlab.infer.fastpath import prepare_for_inference
from resnetlab.models.metadata import check_metadata

CPU = ("--device", "cpu", "--threads", "1")
BROKEN = "the model's outputs are not finite (NaN or inf) on {}; the weights or their "
BROKEN += "normalisation are broken (or, in half precision, the outputs overflowed: run in fp32)"


def _meta(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return json.loads(f.metadata()["resnetlab"])


def _crafted(good, bad, meta=None, state=None, drop=()):
    """A copy of the weights `good` as `bad`, with metadata keys changed or dropped, or other
    tensors: what a hostile or corrupted file holds (save_file checks nothing)."""
    meta = {**_meta(good), **(meta or {})}
    for key in drop:
        meta.pop(key)
    tensors = {**load_file(good), **(state or {})}
    save_file(tensors, bad, metadata={"resnetlab": json.dumps(meta)})
    return bad


@pytest.fixture
def files(tmp_path):
    """Tiny weights (classes cat, dog; 1x8x8), an image and a data set of 32 images."""
    weights = tiny_weights(tmp_path / "w.safetensors")
    Image.new("L", (8, 8), 9).save(tmp_path / "x.png")
    data = write_npz(tmp_path / "d.npz", n=32, classes=np.array(["cat", "dog"]))
    return weights, tmp_path / "x.png", data


def _runs(weights, image, data, tmp_path):
    """predict (text and JSON), eval and explain of `weights`."""
    return {
        "predict": ["predict", weights, image, *CPU],
        "predict-json": ["predict", weights, image, "--json", *CPU],
        "eval": ["eval", weights, "--data", data, *CPU],
        "explain": ["explain", weights, image, "--out", tmp_path / "cam.png"],
    }


# 1. crafted weights that printed NaN --------------------------------------------------------


STD_RULE = "a positive finite number or a list of them, one per channel, each in [1e-06, 10000]"
MEAN_RULE = "a finite number or a list of them, one per channel, each in [-10000, 10000]"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"std": 1e-45}, f"metadata std is 1e-45; expected {STD_RULE}"),
        ({"std": [1e5]}, f"metadata std is [100000.0]; expected {STD_RULE}"),
        ({"mean": 1e308}, f"metadata mean is 1e+308; expected {MEAN_RULE}"),
        ({"mean": [-2e4]}, f"metadata mean is [-20000.0]; expected {MEAN_RULE}"),
    ],
)
@pytest.mark.parametrize("command", ["predict", "predict-json", "eval", "explain"])
def test_a_mean_or_std_out_of_bounds_is_refused(files, tmp_path, capsys, change, message,
                                                command):  # fmt: skip
    # before: a 1e-45 std or a 1e308 mean passed as "positive finite" and printed p=nan, exit 0
    weights, image, data = files
    bad = _crafted(weights, tmp_path / "bad.safetensors", change)
    rc, out, err = run(capsys, *_runs(bad, image, data, tmp_path)[command])
    assert rc == 2 and out == ""
    assert message in one_error_line(err, command.split("-")[0])
    assert not (tmp_path / "cam.png").exists()


@pytest.mark.parametrize(
    "mean, std",
    [
        ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),  # ImageNet
        ([0.4914, 0.4822, 0.4465], [0.247, 0.2435, 0.2616]),  # CIFAR-10
        ([0.286], [0.353]),  # Fashion-MNIST
        ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375]),  # ImageNet on the 0..255 scale
        (0.5, 1e-6),  # a scalar; the std compute_mean_std gives images of one colour
    ],
)
def test_every_real_normalisation_is_within_the_bounds(mean, std):
    check_metadata({"mean": mean, "std": std}, "w")


def test_a_negative_batchnorm_variance_is_refused(files, tmp_path, capsys):
    weights, image, data = files
    state = load_file(weights)
    var = state["bn1.running_var"].clone()
    var[0] = -0.5
    bad = _crafted(weights, tmp_path / "bad.safetensors", state={"bn1.running_var": var})
    for command, argv in _runs(bad, image, data, tmp_path).items():
        rc, out, err = run(capsys, *argv)
        assert rc == 2 and out == "", command
        assert "tensor bn1.running_var holds a negative variance (-0.5)" in one_error_line(
            err, command.split("-")[0]
        )
    assert not (tmp_path / "cam.png").exists()


@pytest.mark.parametrize("command", ["predict", "predict-json", "eval", "explain"])
def test_outputs_that_are_not_finite_are_refused_naming_the_weights(files, tmp_path, capsys,
                                                                    command):  # fmt: skip
    # finite weights whose products overflow float32: the logits are inf and NaN
    weights, image, data = files
    fc = torch.full_like(load_file(weights)["fc.weight"], 3e38)
    bad = _crafted(weights, tmp_path / "huge.safetensors", state={"fc.weight": fc})
    rc, out, err = run(capsys, *_runs(bad, image, data, tmp_path)[command])
    on = f"{data} (test split)" if command == "eval" else str(image)
    assert rc == 2 and out == ""
    assert one_error_line(err, command.split("-")[0]).endswith(f"{bad}: {BROKEN.format(on)}")
    assert not (tmp_path / "cam.png").exists()


# 2. a scalar mean and std, a mean without a std -----------------------------------------------


def test_a_scalar_mean_and_std_are_broadcast_in_eval_as_in_predict(files, tmp_path, capsys):
    # before: eval crashed with "TypeError: 'float' object is not iterable"
    weights, image, data = files
    scalar = _crafted(weights, tmp_path / "s.safetensors", {"mean": 0.5, "std": 0.25})
    for a, b in (
        (["predict", weights, image, "--json", *CPU], ["predict", scalar, image, "--json", *CPU]),
        (["eval", weights, "--data", data, "--json", *CPU],
         ["eval", scalar, "--data", data, "--json", *CPU]),
    ):  # fmt: skip
        rc_a, out_a, _ = run(capsys, *a)
        rc_b, out_b, err = run(capsys, *b)
        assert rc_a == rc_b == 0, err
        if a[0] == "eval":
            out_a, out_b = json.loads(out_a), json.loads(out_b)
            assert out_a.pop("weights") != out_b.pop("weights")
            out_a.pop("model"), out_b.pop("model")
        assert out_a == out_b
    three = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    assert weights_mean_std({"mean": 0.5, "std": 0.25}, three) == ([0.5] * 3, [0.25] * 3)
    assert weights_mean_std({"mean": [0.5], "std": [0.25]}, three) == ([0.5] * 3, [0.25] * 3)


@pytest.mark.parametrize("kept, dropped", [("mean", "std"), ("std", "mean")])
@pytest.mark.parametrize("command", ["predict", "eval", "explain"])
def test_a_mean_without_a_std_is_refused_everywhere(files, tmp_path, capsys, kept, dropped,
                                                    command):  # fmt: skip
    # before: eval normalised with the data's own std (or mean), predict refused the file
    weights, image, data = files
    bad = _crafted(weights, tmp_path / "bad.safetensors", drop=(dropped,))
    rc, out, err = run(capsys, *_runs(bad, image, data, tmp_path)[command])
    assert rc == 2 and out == ""
    assert one_error_line(err, command).endswith(
        f"{bad}: metadata has a {kept} but no {dropped}; expected both (or neither)"
    )
    with pytest.raises(ResnetlabError, match=f"W: metadata has a {kept} but no {dropped}"):
        weights_mean_std({kept: [0.5]}, torch.zeros(1, 1, 2, 2, dtype=torch.uint8), "W")


# 3. save_weights of NaN ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_save_weights_refuses_tensors_that_are_not_finite_and_writes_nothing(tmp_path, value):
    model = create_model("resnet20", num_classes=2, in_chans=1, **TINY)
    with torch.no_grad():
        model.fc.weight[0, 0] = value
    out = tmp_path / "w.safetensors"
    with pytest.raises(ResnetlabError) as e:
        save_weights(model, out, {"input_size": [1, 8, 8]})
    assert str(e.value) == (
        f"{out}: not written, the model's tensor fc.weight holds NaN or infinite values; "
        "expected finite weights"
    )
    assert list(tmp_path.iterdir()) == []


# 4. --compile with a runtime backend --------------------------------------------------------


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_compile_with_a_runtime_backend_is_refused(files, capsys, backend):
    # before: exit 0, and nothing compiled
    weights, image, _ = files
    rc, out, err = run(capsys, "predict", weights, image, "--backend", backend, "--compile", *CPU)
    assert rc == 2 and out == ""
    assert one_error_line(err, "predict").endswith(
        f"--compile does not apply to the {backend} backend: it runs the model in its own "
        "runtime, not torch.compile; use the torch backend, or do not compile "
        "(see `resnetlab predict --help`)"
    )
    with pytest.raises(ResnetlabError, match=f"compile does not apply to the {backend} backend"):
        prepare_for_inference(
            torch.nn.Linear(2, 2), backend=backend, compile=True, precision="fp32"
        )


# 5. the export of a backbone ----------------------------------------------------------------


def test_the_export_of_a_backbone_claims_no_top1(tmp_path, capsys):
    # before: "top-1 DIFFERS", although a backbone has no top-1 to compare
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = create_model("resnet20", in_chans=1, features_only=True, **TINY)
    weights = tmp_path / "bb.safetensors"
    save_weights(model, weights, {"input_size": [1, 8, 8], "mean": [0.5], "std": [0.25]})
    rc, out, err = run(capsys, "export", weights, "--format", "onnx", "--out", tmp_path / "b.onnx")
    assert rc == 0, err
    checked = out.strip().splitlines()[-1]
    assert checked.startswith("checked with onnxruntime: max abs diff vs PyTorch ")
    assert "top-1" not in out


# 6. --topk above the classes ----------------------------------------------------------------


def test_a_topk_above_the_classes_is_refused_and_the_default_fits_them(files, capsys):
    weights, image, _ = files
    rc, out, err = run(capsys, "predict", weights, image, "--topk", "100", *CPU)
    assert rc == 2 and out == ""
    assert one_error_line(err, "predict").endswith(
        "--topk 100 is more than the 2 classes of the model; use 1 to 2 "
        "(see `resnetlab predict --help`)"
    )
    rc, out, err = run(capsys, "predict", weights, image, *CPU)  # default 5: both classes
    assert rc == 0 and out.count(" 0.") == 2, err
    rc, out, _ = run(capsys, "predict", weights, image, "--topk", "2", *CPU)
    assert rc == 0 and out.count(" 0.") == 2


# 7. an export named with the other format's suffix ------------------------------------------


@pytest.mark.parametrize(
    "fmt, name, message",
    [
        ("onnx", "m.pt2", "the onnx format is written to a .onnx file; use a .onnx name, or "
         "format exported-program for a .pt2 file"),
        ("exported-program", "m.onnx", "the exported-program format is written to a .pt2 file; "
         "use a .pt2 name, or format onnx for a .onnx file"),
        ("onnx", "m.bin", "the onnx format is written to a .onnx file; use a .onnx name"),
    ],
)  # fmt: skip
def test_an_export_suffix_that_lies_about_the_format_is_refused(files, tmp_path, capsys, fmt,
                                                                name, message):  # fmt: skip
    weights, _, _ = files
    out = tmp_path / name
    rc, stdout, err = run(capsys, "export", weights, "--format", fmt, "--out", out)
    assert rc == 2 and stdout == ""
    assert one_error_line(err, "export").endswith(
        f"--out {out}: {message} (see `resnetlab export --help`)"
    )
    assert not out.exists()


# 8. the class-mismatch hint names only the command's own flags -------------------------------


def test_a_class_mismatch_hint_names_only_flags_the_command_has(files, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    weights, _, _ = files
    data = write_npz(tmp_path / "wolf.npz", n=32, classes=np.array(["cat", "wolf"]))
    unknown = f"{data} has 1 class(es) that {weights} does not know: 'wolf' (its classes: "
    unknown += "'cat', 'dog'); rename the folders"
    argv = ["quantize", weights, "--calib", data, "--images", "32", "--bench-batch", "0"]
    rc, out, err = run(capsys, *argv, "--out", tmp_path / "q.onnx", "--threads", "1")
    assert rc == 2 and out == ""
    line = one_error_line(err, "quantize")
    assert line.endswith(unknown + " to those names") and "--ignore" not in line
    rc, out, err = run(capsys, "eval", weights, "--data", data, *CPU)
    assert rc == 2 and one_error_line(err, "eval").endswith(
        unknown + ", or match by index with ignore_class_names (--ignore-class-names)"
    )
    rc, out, err = run(capsys, "eval", weights, "--data", data, "--ignore-class-names", *CPU)
    assert rc == 0, err


# 9. integer and bool tensors where the model's are floating point ----------------------------


@pytest.mark.parametrize("dtype, shown", [(torch.int32, "int32"), (torch.bool, "bool")])
def test_a_tensor_that_is_not_floating_point_is_refused(files, tmp_path, capsys, dtype, shown):
    # before: loaded silently (only the shapes were compared), and predicted
    weights, image, _ = files
    fc = load_file(weights)["fc.weight"].to(dtype)
    bad = _crafted(weights, tmp_path / "bad.safetensors", state={"fc.weight": fc})
    rc, out, err = run(capsys, "predict", bad, image, *CPU)
    assert rc == 2 and out == ""
    assert one_error_line(err, "predict").endswith(
        f"{bad} does not fit this model: dtype mismatch (expected floating point): "
        f"fc.weight {shown} vs model float32"
    )
