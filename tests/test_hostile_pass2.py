"""The second hostile pass of issue 17: each case that broke the promise (bad input ends in one
clear line and a non-zero exit; nothing written outside the paths named; no leftovers; loading
runs no code and trusts nothing), pinned on the tiny model and the CPU, in seconds."""

from __future__ import annotations

import json
import os
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from resnetlab import create_model, list_models, save_weights
from resnetlab.cli import main
from resnetlab.errors import ResnetlabError
from resnetlab.models import load_model
from resnetlab.train import checkpoint as ckpt

TINY = {"layers": [1, 1, 1], "widths": [4, 4, 4], "stem_width": 4}
META = {"classes": ["cat", "dog"], "input_size": [1, 8, 8], "mean": [0.5], "std": [0.25]}


def run(capsys, *argv):
    """`resnetlab ARGV` in this process: (exit status, stdout, stderr); usage errors too."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:  # argparse refuses an argument by exiting
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"resnetlab {command}: error: "), err
    assert "Traceback" not in err and "unexpected" not in err
    return lines[0]


def tiny_weights(path: Path, **meta) -> Path:
    torch.manual_seed(0)
    save_weights(create_model("resnet20", num_classes=2, in_chans=1, **TINY), path, META)
    if meta:
        with safe_open(str(path), framework="pt") as f:
            old = json.loads(f.metadata()["resnetlab"])
        save_file(load_file(path), path, metadata={"resnetlab": json.dumps({**old, **meta})})
    return path


def write_npz(path: Path, n: int = 16, side: int = 8, **arrays) -> Path:
    x = np.random.default_rng(0).integers(0, 256, (n, side, side), dtype=np.uint8)
    y = np.arange(n) % 2
    base = {"x_train": x, "y_train": y, "x_test": x, "y_test": y}
    np.savez(path, **{**base, **arrays})
    return path


class _Runs:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


# weights files: loading trusts nothing, and says why in one line ---------------------------


def test_a_pickle_that_would_run_code_is_refused_in_one_line_without_torchs_advice(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"w": _Runs()}, protocol=4))  # protocol 4: torch warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would be a second line on stderr
        with pytest.raises(ResnetlabError, match="nor a pickle of tensors only") as e:
            load_model(evil)
    assert "weights_only" not in str(e.value)  # never the advice to run the file's code
    rc, _, err = run(capsys, "export", evil, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert rc == 2 and "nor a pickle of tensors only" in one_error_line(err, "export")
    assert not (tmp_path / "PWNED").exists()


def test_a_checkpoint_state_that_would_run_code_is_refused_without_torchs_advice(tmp_path):
    ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path), {"w": torch.zeros(1)}, {"config": {}})
    (tmp_path / ckpt.CHECKPOINT_DIR / ckpt.STATE_FILE).write_bytes(pickle.dumps(_Runs()))
    with pytest.raises(ResnetlabError, match="unreadable checkpoint state .*tensors only") as e:
        ckpt.load_checkpoint(tmp_path)
    assert "weights_only" not in str(e.value)


def test_metadata_nested_past_the_stack_is_not_valid_json(tmp_path):
    good = tiny_weights(tmp_path / "w.safetensors")
    deep = tmp_path / "deep.safetensors"
    save_file(load_file(good), deep, metadata={"resnetlab": "[" * 100_000 + "]" * 100_000})
    with pytest.raises(ResnetlabError, match="metadata is not valid JSON"):
        load_model(deep)


@pytest.mark.parametrize("classes", [["cat", "cat"], ["", "dog"], ["cat", 5]])
def test_class_names_must_be_distinct_non_empty_strings(tmp_path, classes):
    bad = tiny_weights(tmp_path / "w.safetensors", classes=classes)
    with pytest.raises(ResnetlabError, match="expected a list of distinct, non-empty class names"):
        load_model(bad)
    model = create_model("resnet20", num_classes=2, in_chans=1, **TINY)
    with pytest.raises(ResnetlabError, match="distinct, non-empty class names"):
        save_weights(model, tmp_path / "x.safetensors", {"classes": classes})
    assert not (tmp_path / "x.safetensors").exists()


def test_save_weights_refuses_metadata_that_is_not_a_dict(tmp_path):
    model = create_model("resnet20", num_classes=2, **TINY)
    with pytest.raises(ResnetlabError, match="metadata is a list; expected a dict"):
        save_weights(model, tmp_path / "x.safetensors", ["cat", "dog"])


# models: sizes bounded before allocating, arguments of the wrong type ---------------------


@pytest.mark.parametrize(
    "name, options",
    [
        ("resnet50", {"num_classes": 50_000_000}),  # a 400 GB head
        ("resnet20", {"widths": [4, 4, 20_000], "stem_width": 4, "layers": [1, 1, 1]}),  # 14 GB
        ("residual_mlp", {"width": 200_000}),
    ],
)
def test_a_net_past_the_memory_budget_is_refused_before_allocating(name, options, monkeypatch):
    import resnetlab.models.builder as builder

    monkeypatch.setattr(builder, "memory_budget", lambda: 1 << 30)
    with pytest.raises(ResnetlabError, match=r"a net of (at least )?[\d,]+ parameters needs .* "
                       r"beyond the"):  # fmt: skip
        create_model(name, **options)
    create_model("resnet50", num_classes=37)  # the nets of the registry pass without a probe


def test_summary_counts_an_absurd_head_without_allocating_it(capsys):
    # summary builds on the meta device: a head no memory could hold is counted, not allocated
    rc, out, _ = run(capsys, "summary", "resnet20", "--num-classes", "1000000000", "--json")
    assert rc == 0
    report = json.loads(out)
    fc = next(s for s in report["stages"] if s["name"] == "fc")
    assert fc["params"] == 64 * 10**9 + 10**9 and fc["output_shape"] == [1, 10**9]


@pytest.mark.parametrize("key", ["num_classes", "in_chans"])
def test_a_bool_is_not_a_number_of_classes_or_channels(key):
    with pytest.raises(ResnetlabError, match=f"{key} must be a whole number, got True"):
        create_model("resnet20", **{key: True})


@pytest.mark.parametrize("pattern", [123, ["resnet*", None]])
def test_list_models_refuses_a_pattern_that_is_not_text(pattern):
    with pytest.raises(ResnetlabError, match="expected a pattern such as 'resnet\\*'"):
        list_models(pattern)
    assert list_models(("resnet2?",)) == ["resnet20", "resnet26"]


# numbers at their edges: threads and seeds ----------------------------------------------


@pytest.mark.parametrize("command", ["train", "predict", "bench"])
def test_ten_thousand_threads_are_refused_in_one_line(tmp_path, capsys, command):
    weights = tiny_weights(tmp_path / "w.safetensors")
    argv = {
        "train": ["train", "--data", write_npz(tmp_path / "d.npz"), "--out", tmp_path / "run"],
        "predict": ["predict", weights, tmp_path / "x.png"],
        "bench": ["bench", "resnet20", "--paths", "eager-fp32"],
    }[command]
    rc, _, err = run(capsys, *argv, "--threads", "10000", "--device", "cpu")
    assert rc == 2
    assert "--threads 10000: at most" in one_error_line(err, command)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_a_seed_numpy_or_torch_cannot_take_is_refused_in_one_line(tmp_path, capsys, seed):
    data = write_npz(tmp_path / "d.npz")
    rc, _, err = run(capsys, "train", "--data", data, "--out", tmp_path / "run", "--seed", seed,
                     "--val-split", "0.25", "--device", "cpu")  # fmt: skip
    assert rc == 2
    assert f"--seed {seed}: expected a whole number in [0, 2**32)" in one_error_line(err, "train")
    rc, _, err = run(capsys, "data", "info", data, "--val-split", "0.25", "--seed", seed)
    assert rc == 2
    assert "expected a whole number in [0, 2**32)" in one_error_line(err, "data info")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]


@pytest.mark.parametrize("fraction", ["1.0", "0", "nan", "5"])
def test_a_test_fraction_outside_zero_and_one_is_refused(tmp_path, capsys, fraction):
    rc, _, err = run(capsys, "data", "info", write_npz(tmp_path / "d.npz"), "--test-fraction",
                     fraction)  # fmt: skip
    assert rc == 2
    assert "expected a fraction in (0, 1)" in one_error_line(err, "data info")


# a refused run leaves no folder behind --------------------------------------------------


def test_a_refused_run_leaves_no_folders_made_for_its_output(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(capsys, "train", "--data", "nosuch.npz", "--out", "a/b/c", "--device", "cpu")
    assert rc == 2 and "nosuch.npz" in one_error_line(err, "train")
    model = create_model("resnet20", num_classes=2, in_chans=1, **TINY)
    with pytest.raises(ResnetlabError, match="nosuch/: no such file"):
        from resnetlab import fit

        fit(model, "nosuch/", epochs=1)  # the default out, runs/train
    assert list(tmp_path.iterdir()) == []


# data files: crafted .npz, prepared caches, odd sources ---------------------------------


def test_an_npz_of_images_without_pixels_is_refused(tmp_path, capsys):
    x = np.zeros((8, 0, 0), np.uint8)
    bad = write_npz(tmp_path / "d.npz", x_train=x, x_test=x, y_train=np.arange(8) % 2,
                    y_test=np.arange(8) % 2)  # fmt: skip
    rc, _, err = run(capsys, "data", "info", bad)
    assert rc == 2
    assert "holds images of 0x0: no pixels" in one_error_line(err, "data")


@pytest.mark.parametrize(
    "classes, expected",
    [
        (np.array(["cat", "cat"]), "has an empty or repeated name"),
        (np.array(["", "dog"]), "has an empty or repeated name"),
        (np.array([b"\xff", b"dog"]), "a name that is not UTF-8"),
    ],
)
def test_npz_class_names_that_name_no_class_are_refused(tmp_path, capsys, classes, expected):
    rc, _, err = run(capsys, "data", "info", write_npz(tmp_path / "d.npz", classes=classes))
    assert rc == 2
    assert expected in one_error_line(err, "data")


def test_a_prepared_cache_with_metadata_nested_past_the_stack_is_one_line(tmp_path, capsys):
    from helpers.data import make_tree

    from resnetlab.data.prepared import META_NAME, prepare_folder

    make_tree(tmp_path / "tree")
    prepare_folder(tmp_path / "tree", tmp_path / "cache", 4)
    (tmp_path / "cache" / META_NAME).write_text("[" * 100_000 + "]" * 100_000)
    rc, _, err = run(capsys, "data", "info", tmp_path / "cache")
    assert rc == 2
    assert f"{META_NAME}: not readable" in one_error_line(err, "data")


def test_a_fifo_given_as_the_data_is_named_for_what_it_is(tmp_path, capsys):
    fifo = tmp_path / "d.npz"
    os.mkfifo(fifo)
    rc, _, err = run(capsys, "data", "info", fifo)
    assert rc == 2
    assert "d.npz: not a regular file or a directory" in one_error_line(err, "data")


def test_mode_for_data_that_is_not_an_image_folder_is_refused_not_ignored(tmp_path, capsys):
    data = write_npz(tmp_path / "d.npz")  # grey images
    rc, _, err = run(capsys, "data", "info", data, "--mode", "RGB")
    assert rc == 2
    assert "mode RGB applies to image folders only" in one_error_line(err, "data")
    rc, _, err = run(capsys, "train", "--data", data, "--mode", "RGB", "--out", tmp_path / "run",
                     "--device", "cpu")  # fmt: skip
    assert rc == 2 and "mode RGB applies to image folders only" in one_error_line(err, "train")
    assert not (tmp_path / "run").exists()
    rc, _, _ = run(capsys, "data", "info", data, "--mode", "L")  # what it is: fine
    assert rc == 0


def test_a_transform_refuses_an_image_without_pixels():
    from PIL import Image

    from resnetlab.data import create_transform, resolve_data_config

    transform = create_transform(resolve_data_config(create_model("resnet20")))
    with pytest.raises(ResnetlabError, match="image of 0x0 has no pixels"):
        transform(Image.new("RGB", (0, 0)))


def test_gradients_refuses_a_seed_torch_cannot_take(tmp_path):
    from resnetlab.experiments.gradients import run_gradients

    with pytest.raises(ResnetlabError, match=r"seed 18446744073709551616: expected a whole"):
        run_gradients(str(write_npz(tmp_path / "d.npz")), str(tmp_path / "out"), depths=(8,),
                      seed=2**64, batches=1, batch_size=8, say=lambda s: None)  # fmt: skip
    assert not (tmp_path / "out").exists()


# inference: a batch past memory, a setting that cannot be honoured -----------------------


@pytest.mark.parametrize(
    "argv, what",
    [
        (["--batch-size", "100000"], "a batch of 100000 at 3x32x32 (the input)"),
        (["--batch-size", "1,20000"], "a batch of 20000 at 3x32x32 (its activations)"),
        (["--image-size", "100000", "--batch-size", "1"], "at 3x100000x100000 (the input)"),
    ],
)
def test_bench_refuses_a_batch_past_memory_before_running(capsys, monkeypatch, argv, what):
    import resnetlab.data.memory as memory

    monkeypatch.setattr(memory, "memory_budget", lambda: 1 << 30)
    rc, out, err = run(capsys, "bench", "resnet20", *argv, "--paths", "eager-fp32", "--device",
                       "cpu", "--repeats", "1", "--rep-time", "0.01")  # fmt: skip
    assert rc == 2 and out == ""
    line = one_error_line(err, "bench")
    assert what in line and "beyond the limit of 1.1 GB" in line and "--batch-size" in line


def test_predict_refuses_compile_for_an_onnx_file(tmp_path, capsys):
    pytest.importorskip("onnx")
    from PIL import Image

    weights = tiny_weights(tmp_path / "w.safetensors")
    assert (
        main(["export", str(weights), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    )
    Image.new("L", (8, 8), 9).save(tmp_path / "x.png")
    capsys.readouterr()
    rc, out, err = run(capsys, "predict", tmp_path / "m.onnx", tmp_path / "x.png", "--compile",
                       "--device", "cpu")  # fmt: skip
    assert rc == 2 and out == ""
    assert "--compile does not apply: " in one_error_line(err, "predict")
    rc, out, _ = run(capsys, "predict", tmp_path / "m.onnx", tmp_path / "x.png", "--device", "cpu")
    assert rc == 0 and out.startswith(str(tmp_path / "x.png"))


# names of bytes that are not UTF-8 (legal on Linux): valid inputs that must work -----------


_ODD_NAMES = """
    import os, sys
    from resnetlab.cli import main

    here, odd = sys.argv[1], os.fsdecode(b"\\xff")
    tiny = ["--option", "layers=[1,1,1]", "--option", "widths=[4,4,4]", "--option", "stem_width=4"]
    steps = [
        ["export", f"{here}/w{odd}.safetensors", "--format", "onnx", "--out",
         f"{here}/m{odd}.onnx"],
        ["eval", f"{here}/m{odd}.onnx", "--data", f"{here}/d.npz", "--device", "cpu"],
        ["train", "--data", f"{here}/d.npz", "--out", f"{here}/run{odd}", "--device", "cpu",
         "--threads", "1", "--batch-size", "8", "--no-compile", "--epochs", "1", *tiny],
        ["train", "--resume", f"{here}/run{odd}", "--epochs", "2", "--quiet"],
    ]
    for argv in steps:
        if main(argv) != 0:
            sys.exit(f"failed: {argv[0]}")
"""


def test_files_named_by_bytes_that_are_not_utf8_are_written_read_and_resumed(tmp_path):
    import subprocess
    import textwrap

    pytest.importorskip("onnx")
    odd = os.fsdecode(b"\xff")  # a name Linux allows and Python holds as a surrogate
    weights = tiny_weights(tmp_path / f"w{odd}.safetensors")
    _, meta = load_model(weights)  # safetensors itself opens UTF-8 paths only
    assert meta["classes"] == ["cat", "dog"]
    write_npz(tmp_path / "d.npz")
    env = dict(os.environ, PYTHONIOENCODING="utf-8:strict", OMP_NUM_THREADS="1")  # en_US.UTF-8
    env.pop("RESNETLAB_DEBUG", None)
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(_ODD_NAMES), str(tmp_path)],
                       env=env, capture_output=True, timeout=300)  # fmt: skip
    err = p.stderr.decode(errors="replace")
    assert p.returncode == 0 and "Error" not in err, err
    assert ckpt.load_checkpoint(tmp_path / f"run{odd}")[1]["loader"]["epoch"] == 2
    assert f"m{odd}.onnx".encode(errors="surrogateescape") in p.stdout  # its bytes, printed back
    assert not [q for q in tmp_path.rglob("*") if q.name.endswith(".tmp")]


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_holding_nan_or_inf_are_refused_not_predicted_with(tmp_path, capsys, value):
    from PIL import Image

    good = tiny_weights(tmp_path / "w.safetensors")
    with safe_open(str(good), framework="pt") as f:
        meta = f.metadata()
    state = load_file(good)
    state["fc.weight"][0, 0] = value
    bad = tmp_path / "bad.safetensors"
    save_file(state, bad, metadata=meta)
    Image.new("L", (8, 8), 9).save(tmp_path / "x.png")
    rc, out, err = run(capsys, "predict", bad, tmp_path / "x.png", "--device", "cpu")
    assert rc == 2 and out == ""  # not "cat nan, dog nan" and exit 0
    assert "tensor fc.weight holds NaN or infinite values" in one_error_line(err, "predict")


def test_an_onnx_file_holding_nan_weights_is_refused_not_predicted_with(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper
    from PIL import Image

    weights = tiny_weights(tmp_path / "w.safetensors")
    rc, _, _ = run(capsys, "export", weights, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert rc == 0
    proto = onnx.load(str(tmp_path / "m.onnx"))
    fc = next(t for t in proto.graph.initializer if t.name == "fc.weight")
    values = numpy_helper.to_array(fc).copy()
    values[0, 0] = np.nan
    fc.CopyFrom(numpy_helper.from_array(values, fc.name))
    onnx.save(proto, str(tmp_path / "nan.onnx"))
    Image.new("L", (8, 8), 9).save(tmp_path / "x.png")
    rc, out, err = run(capsys, "predict", tmp_path / "nan.onnx", tmp_path / "x.png")
    assert rc == 2 and out == ""
    assert "initializer 'fc.weight' holds NaN or infinite" in one_error_line(err, "predict")


def test_class_names_an_ascii_stdout_cannot_encode_are_escaped_not_fatal(tmp_path):
    import subprocess

    from PIL import Image

    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=2, in_chans=1, **TINY)
    save_weights(model, tmp_path / "w.safetensors", {**META, "classes": ["été", "猫"]})
    Image.new("L", (8, 8), 9).save(tmp_path / "x.png")
    env = dict(os.environ, PYTHONIOENCODING="ascii", OMP_NUM_THREADS="1")
    env.pop("RESNETLAB_DEBUG", None)
    argv = [sys.executable, "-m", "resnetlab", "predict", str(tmp_path / "w.safetensors"),
            str(tmp_path / "x.png"), "--device", "cpu", "--backend", "torch"]  # fmt: skip
    p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "\\u732b" in p.stdout and "\\xe9t\\xe9" in p.stdout


# an output folder under a regular file: refused before any work, in one clear line --------


@pytest.mark.parametrize("command", ["train", "prepare", "gradients"])
def test_an_output_folder_under_a_regular_file_is_refused_before_any_work(
    tmp_path, capsys, monkeypatch, command
):
    from helpers.data import make_tree

    data = write_npz(tmp_path / "d.npz")
    make_tree(tmp_path / "tree")
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file, not a folder")
    out = blocker / "run"
    argv, name = {
        "train": (["train", "--data", data, "--out", out, "--device", "cpu"], "train"),
        "prepare": (["data", "prepare", tmp_path / "tree", out, "--size", "4"], "data"),
        "gradients": (["experiment", "gradients", "--data", data, "--out", out, "--depths", "8",
                       "--batches", "1", "--batch-size", "8"], "experiment"),
    }[command]  # fmt: skip
    rc, out_text, err = run(capsys, *argv)
    assert rc == 2 and out_text == ""  # nothing probed or trained first
    line = one_error_line(err, name)
    assert "notes.txt" in line and ("not a directory" in line or "Not a directory" in line)
    assert blocker.read_text() == "a file, not a folder"


@pytest.mark.parametrize("study", ["degradation", "gradients"])
def test_an_empty_depths_list_is_refused_not_taken_for_the_default(tmp_path, capsys, study):
    data = write_npz(tmp_path / "d.npz")
    rc, out, err = run(capsys, "experiment", study, "--data", data, "--out", tmp_path / "study",
                       "--depths", "", "--epochs" if study == "degradation" else "--batches",
                       "1")  # fmt: skip
    assert rc == 2 and out == ""  # not a resnet20 and resnet56 study
    assert "--depths '': '' is not a whole number" in one_error_line(err, "experiment")
    assert not (tmp_path / "study").exists()


def test_quantize_refuses_an_output_under_a_regular_file_before_calibrating(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    weights = tiny_weights(tmp_path / "w.safetensors")
    (tmp_path / "notes.txt").write_text("a file")
    rc, _, err = run(capsys, "quantize", weights, "--calib", write_npz(tmp_path / "d.npz", n=40),
                     "--images", "32", "--out", tmp_path / "notes.txt" / "q.onnx")  # fmt: skip
    assert rc == 2
    assert "notes.txt/q.onnx: cannot check it (Not a directory)" in one_error_line(err, "quantize")
    assert "calibrating" not in err


# signals ----------------------------------------------------------------------------------


def test_a_ctrl_c_python_cannot_raise_is_reported_not_swallowed(capsys, monkeypatch):
    import resnetlab.commands.models as models_cmd

    class Finaliser:  # as matplotlib's weakref callbacks, where a Ctrl-C can land
        def __del__(self):
            raise KeyboardInterrupt

    def run_models(args):
        Finaliser()  # dropped at once: Python prints 'Exception ignored in' and goes on
        return 0

    monkeypatch.setattr(models_cmd, "run_models", run_models)
    before = sys.unraisablehook
    rc, _, err = run(capsys, "models")
    assert rc == 130 and err.strip() == "resnetlab models: interrupted"
    assert sys.unraisablehook is before  # put back for the program around it


def test_bench_refuses_an_empty_paths_list_instead_of_timing_every_path(capsys):
    rc, _, err = run(capsys, "bench", "resnet20", "--paths", "", "--device", "cpu",
                     "--repeats", "1", "--rep-time", "0.01")  # fmt: skip
    assert rc == 2
    assert "unknown bench path(s) ['']" in one_error_line(err, "bench")


def test_a_ctrl_c_while_torch_loads_at_start_up_is_one_line():
    # the console script imports resnetlab.cli, which must not load PyTorch itself: a Ctrl-C
    # during that import (a second or two of every command's start) lands in main, as one line
    import subprocess

    script = (
        "import builtins, sys\n"
        "import resnetlab.cli\n"
        "assert 'torch' not in sys.modules, 'resnetlab.cli loaded torch on import'\n"
        "real = builtins.__import__\n"
        "def interrupted(name, *args, **kwargs):\n"
        "    if name == 'torch' or name.startswith('torch.'):\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *args, **kwargs)\n"
        "builtins.__import__ = interrupted\n"
        "sys.exit(resnetlab.cli.main(['models']))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr == "resnetlab: interrupted\n"
    assert done.stdout == ""
