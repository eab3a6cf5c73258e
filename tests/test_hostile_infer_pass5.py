"""The fifth hostile pass, on inference: a float image of NaN pixels predicted as black with
exit 0 (and a RuntimeWarning on stderr), a metadata dataset that is not text crashing quantize,
a crop_pct or input_size that no image can be resized to blamed on every image in turn,
--classes/--mean/--std silently renaming an ONNX file's own classes (refused for weights, and so
documented), and an unknown bench path refused only after the model was loaded and the table
begun, and a metadata depth or feature width the tensors deny. Each ends in one clear line,
pinned on the tiny model and the CPU, in seconds."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_hostile_pass2 import one_error_line, run, tiny_weights

CPU = ("--device", "cpu", "--threads", "1")


def _nan_tiff(path):
    a = np.full((8, 8), 100.0, dtype=np.float32)
    a[2, 3] = np.nan
    Image.fromarray(a, mode="F").save(path)
    return path


def test_a_float_image_of_nan_pixels_is_refused_not_read_as_black(tmp_path, capsys):
    weights = tiny_weights(tmp_path / "w.safetensors")
    nan = _nan_tiff(tmp_path / "nan.tiff")
    Image.new("L", (8, 8), 9).save(tmp_path / "ok.png")
    rc, out, err = run(capsys, "predict", weights, nan, tmp_path / "ok.png", *CPU)
    assert rc == 1 and "RuntimeWarning" not in err, err
    assert err.strip().splitlines() == [
        f"resnetlab predict: skipped: {nan}: not a readable image (its float pixels hold NaN)",
        "resnetlab predict: 1 of 2 image(s) could not be read",
    ]
    assert out.startswith(f"{tmp_path / 'ok.png'}: ")
    rc, _, err = run(capsys, "explain", weights, nan, "--out", tmp_path / "cam.png")
    line = one_error_line(err, "explain")
    assert rc == 2 and line.endswith(f"{nan}: not a readable image (its float pixels hold NaN)")
    assert not (tmp_path / "cam.png").exists()


def test_a_metadata_dataset_that_is_not_text_is_refused_in_one_line(tmp_path, capsys):
    weights = tiny_weights(tmp_path / "w.safetensors", dataset=5)
    rc, _, err = run(capsys, "quantize", weights, "--images", "32", "--test-images", "0",
                     "--bench-batch", "0", "--out", tmp_path / "q.onnx")  # fmt: skip
    line = one_error_line(err, "quantize")
    assert rc == 2 and line.endswith(
        f"{weights}: metadata dataset is 5; expected a dataset name or path (a string)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


@pytest.mark.parametrize(
    "meta, box",
    [
        ({"crop_pct": 0.0001}, "[1, 8, 8] and crop_pct 0.0001 resize every image to 80000x80000"),
        ({"input_size": [1, 60000, 60000]}, "[1, 60000, 60000] and crop_pct 0.875 resize every "
                                            "image to 68571x68571"),
    ],
)  # fmt: skip
def test_a_size_no_image_can_be_resized_to_is_blamed_on_the_weights_once(
    tmp_path, capsys, meta, box
):
    weights = tiny_weights(tmp_path / "w.safetensors", **meta)
    Image.new("L", (8, 8), 9).save(tmp_path / "a.png")
    Image.new("L", (8, 8), 9).save(tmp_path / "b.png")
    rc, out, err = run(capsys, "predict", weights, tmp_path / "a.png", tmp_path / "b.png", *CPU)
    line = one_error_line(err, "predict")
    assert rc == 2 and not out and f"{weights}: metadata input_size {box}" in line, line
    assert "beyond the limit of" in line and "skipped" not in line


def test_classes_mean_std_do_not_rename_an_onnx_files_own(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    weights = tiny_weights(tmp_path / "w.safetensors")
    onnx = tmp_path / "w.onnx"
    rc, _, err = run(capsys, "export", weights, "--format", "onnx", "--out", onnx)
    assert rc == 0, err
    Image.new("L", (8, 8), 9).save(tmp_path / "x.png")
    for flags, key in ((["--classes", "bird,fish"], "classes"),
                       (["--mean", "0.1", "--std", "0.2"], "mean")):  # fmt: skip
        rc, out, err = run(capsys, "predict", onnx, tmp_path / "x.png", *flags)
        line = one_error_line(err, "predict")
        assert rc == 2 and not out
        assert f"--{key} applies to ONNX files without resnetlab metadata; {onnx} carries its " \
            f"own {key}" in line, line  # fmt: skip
    rc, out, err = run(capsys, "predict", onnx, tmp_path / "x.png")  # its own names: still fine
    assert rc == 0 and ("cat" in out or "dog" in out), err


def test_an_unknown_bench_path_is_refused_before_any_work(capsys):
    rc, out, err = run(capsys, "bench", "resnet8", "--paths", "eager-fp32,bogus", "--repeats",
                       "1", "--rep-time", "0.01", *CPU[:2])  # fmt: skip
    line = one_error_line(err, "bench")
    assert rc == 2 and out == "" and "unknown bench path(s) ['bogus']; choose from" in line


@pytest.mark.parametrize("key, lie, truth", [("depth", 20, 8), ("num_features", 99, 4)])
def test_a_depth_or_width_the_tensors_deny_is_refused_not_copied_on(
    tmp_path, capsys, key, lie, truth
):
    """The tiny net is resnet20 with one block a stage (depth 8) and 4 final features: a file
    that says otherwise is refused on load, and export does not copy the claim into ONNX."""
    weights = tiny_weights(tmp_path / "w.safetensors", **{key: lie})
    Image.new("L", (8, 8), 9).save(tmp_path / "x.png")
    want = f"{weights}: its metadata {key} is {lie} but its tensors make a net of {key} {truth}"
    for argv in (
        ["predict", weights, tmp_path / "x.png", *CPU],
        ["export", weights, "--format", "onnx", "--out", tmp_path / "w.onnx"],
    ):
        rc, out, err = run(capsys, *argv)
        line = one_error_line(err, argv[0])
        assert rc == 2 and not out and want in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors", "x.png"]
