"""Hostile input ends in one clear line and a non-zero exit, fast, and no input file changes:
crafted metadata, caches and checkpoints; size bombs; an output that is an input; two runs in one
directory; stale temporaries; NaN and negative numbers; partial loads; bad files among good ones."""

from __future__ import annotations

import errno
import fcntl
import gzip
import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.data import make_tree
from helpers.train import TINY_CLI, TINY_OPTIONS, run_cli, tiny_config, tiny_splits, write_npz
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from resnetlab import create_model, save_weights
from resnetlab.cli import main
from resnetlab.data.idx import IMAGES_MAGIC, read_idx
from resnetlab.data.npz import load_npz
from resnetlab.data.prepared import META_NAME, load_prepared, prepare_folder
from resnetlab.data.sources import read_source
from resnetlab.errors import ResnetlabError
from resnetlab.models import load_model
from resnetlab.train import checkpoint as ckpt
from resnetlab.train.finetune import init_from
from resnetlab.train.loop import TrainConfig, fit

META = {"classes": ["cat", "dog", "fox"], "input_size": [1, 28, 28], "mean": [0.5], "std": [0.25]}


def tiny_weights(path: Path, **options) -> Path:
    torch.manual_seed(0)
    opts = dict(layers=(1, 1, 1), widths=(4, 8, 16), stem_width=4, **options)
    save_weights(create_model("resnet20", num_classes=3, in_chans=1, **opts).eval(), path, META)
    return path


def with_metadata(good: Path, path: Path, **changes) -> Path:
    """A copy of `good` whose resnetlab metadata has `changes` (the tensors stay as they are)."""
    with safe_open(str(good), framework="pt") as f:
        meta = json.loads(f.metadata()["resnetlab"])
    meta.update(changes)
    save_file(load_file(str(good)), str(path), metadata={"resnetlab": json.dumps(meta)})
    return path


def run(capsys, *argv):
    """`resnetlab ARGV` in this process: (exit status, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"resnetlab {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def png(path: Path, width: int, height: int, mode: str = "L") -> Path:
    Image.new(mode, (width, height), 128).save(path)
    return path


# crafted weights metadata -------------------------------------------------------------------

CRAFTED = {
    "options_list": (
        dict(options=[1, 2]),
        "metadata options is \\[1, 2\\]; expected a JSON object",
    ),
    "name_number": (dict(name=5), "metadata name is 5; expected a model name"),
    "std_nan": (dict(std=[math.nan]), "metadata std is \\[NaN\\]; expected a positive finite"),
    "std_zero": (dict(std=[0]), "metadata std is \\[0\\]; expected a positive finite"),
    "std_negative": (dict(std=-1), "metadata std is -1; expected a positive finite"),
    "classes_count": (dict(num_classes="3"), 'metadata num_classes is "3"; expected a whole'),
}


@pytest.mark.parametrize("case", CRAFTED)
def test_crafted_metadata_is_refused_naming_key_value_and_expectation(tmp_path, case):
    changes, message = CRAFTED[case]
    bad = with_metadata(tiny_weights(tmp_path / "good.safetensors"), tmp_path / "bad.safetensors")
    bad = with_metadata(bad, bad, **changes)
    with pytest.raises(ResnetlabError, match=message):
        load_model(bad)


@pytest.mark.parametrize("command", ["predict", "eval", "bench", "export"])
def test_crafted_metadata_is_one_line_in_every_command(tmp_path, capsys, command):
    bad = with_metadata(
        tiny_weights(tmp_path / "good.safetensors"), tmp_path / "bad.safetensors", options=[1]
    )
    before = bad.read_bytes()
    image = png(tmp_path / "x.png", 28, 28)
    argv = {
        "predict": ["predict", bad, image],
        "eval": ["eval", bad, "--data", write_npz(tmp_path / "d.npz")],
        "bench": ["bench", bad, "--paths", "eager-fp32", "--repeats", "1", "--rep-time", "0.01"],
        "export": ["export", bad, "--format", "onnx", "--out", tmp_path / "m.onnx"],
    }[command]
    rc, _, err = run(capsys, *argv)
    assert rc == 2
    assert "metadata options is [1]; expected a JSON object" in one_error_line(err, command)
    assert bad.read_bytes() == before


def test_options_for_an_absurd_model_are_refused_before_building(tmp_path):
    good = tiny_weights(tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as f:
        options = json.loads(f.metadata()["resnetlab"])["options"]
    huge = with_metadata(
        good, tmp_path / "huge.safetensors", options={**options, "layers": [200000, 1, 1]}
    )
    t0 = time.perf_counter()
    with pytest.raises(ResnetlabError, match=r"layers=\[200000, 1, 1\] ask for 200002 blocks"):
        load_model(huge)
    wide = with_metadata(
        good, tmp_path / "wide.safetensors", options={**options, "widths": [4, 8, 10**6]}
    )
    with pytest.raises(ResnetlabError, match=r"a net of at least [\d,]+ parameters needs"):
        load_model(wide)  # 10^6 channels: refused by its sizes, never built
    assert time.perf_counter() - t0 < 10


# crafted prepared caches and checkpoints --------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.pop("shape"), "no 'shape'; expected \\[N, C, H, W\\]"),
        (lambda m: m.update(splits=[[0, 4]]), "splits is \\[\\[0, 4\\]\\]; expected an object"),
        (lambda m: m.update(splits={"train": 3}), 'splits is {"train": 3}; expected an object'),
        (lambda m: m.update(labels="abc"), 'labels is "abc"; expected a list of whole numbers'),
        (lambda m: m.update(classes=5), "classes is 5; expected a non-empty list"),
        (lambda m: m.update(classes=[m["classes"][0]] * len(m["classes"])),
         "a non-empty list of distinct class names"),
        (lambda m: m.update(classes=["", *m["classes"][1:]]), "distinct class names"),
        (lambda m: m["splits"].update(test=[0, m["splits"]["test"][1]]), "share images"),
    ],
)  # fmt: skip
def test_crafted_prepared_cache_is_refused_naming_the_key(tmp_path, change, message):
    make_tree(tmp_path / "tree")
    prepare_folder(tmp_path / "tree", tmp_path / "out", 4)
    meta_path = tmp_path / "out" / META_NAME
    meta = json.loads(meta_path.read_text())
    change(meta)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ResnetlabError, match=message):
        load_prepared(tmp_path / "out")


def _checkpoint_with_state(run_dir: Path, **state) -> None:
    base = {"config": {"model": "resnet20", "data": "x"}, "step": 1}
    ckpt.save_checkpoint(ckpt.checkpoint_path(run_dir), {"w": torch.zeros(1)}, {**base, **state})


@pytest.mark.parametrize(
    "state, message",
    [
        (dict(config=[1, 2]), "checkpoint config is \\[1, 2\\]; expected a mapping"),
        (dict(step="7"), "checkpoint step is '7'; expected a whole number"),
        (dict(config={"model": "resnet20", "data": "x", "colour": 1}), "unknown setting"),
    ],
)
def test_crafted_checkpoint_state_is_one_line_on_resume(tmp_path, capsys, state, message):
    _checkpoint_with_state(tmp_path / "run", **state)
    rc, _, err = run(capsys, "train", "--resume", tmp_path / "run")
    assert rc == 2
    assert message.replace("\\", "") in one_error_line(err, "train")


# sizes checked against the file before anything is allocated -----------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_header_claiming_more_than_the_file_holds_is_refused(tmp_path, gz):
    header = IMAGES_MAGIC.to_bytes(4, "big") + (65535).to_bytes(4, "big") * 3
    data = header + bytes(100)
    path = tmp_path / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(ResnetlabError, match=r"header (says|claims) \(65535, 65535, 65535\)"):
        read_idx(path, IMAGES_MAGIC)


def test_npz_label_of_ten_billion_is_refused(tmp_path):
    x = np.zeros((4, 2, 2), np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 2, 10**10], np.int64))
    t0 = time.perf_counter()
    with pytest.raises(ResnetlabError, match="label 10000000000 would make 10000000001 classes"):
        load_npz(tmp_path / "d.npz")
    assert time.perf_counter() - t0 < 5


def test_extreme_aspect_image_is_refused_before_resizing(tmp_path, capsys):
    # 1 x 200,000 pixels passes Pillow's pixel limit; covering 4x4 would take 4 x 800,000 (fine),
    # covering 32x32 would take 32 x 6,400,000 = 204,800,000 pixels: refused, not allocated
    make_tree(tmp_path / "tree")
    png(tmp_path / "tree" / "cat" / "tall.png", 1, 200_000)
    rc, _, err = run(capsys, "data", "prepare", tmp_path / "tree", tmp_path / "out", "--size", "32")
    assert rc == 2
    line = one_error_line(err, "data")
    assert "tall.png: image of 1x200000 would be resized to 32x6400000" in line
    assert not (tmp_path / "out").exists()


def test_pillow_bomb_warning_does_not_escape(tmp_path):
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    side = 10_000  # 10^8 pixels: between Pillow's limit (89.5 M) and twice it, so it warns
    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    make_tree(tmp_path / "tree")
    (tmp_path / "tree" / "cat" / "bomb.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ResnetlabError, match="bomb.png: image of 10000x10000 = 100000000"):
            read_source(str(tmp_path / "tree"))
    assert [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)] == []


# outputs that are inputs, or not regular files ---------------------------------------------


def test_export_onto_its_own_weights_is_refused(tmp_path, capsys):
    weights = tiny_weights(tmp_path / "m.safetensors")
    before = weights.read_bytes()
    rc, _, err = run(capsys, "export", weights, "--format", "onnx", "--out", weights)
    assert rc == 2
    assert "is the input" in one_error_line(err, "export")
    assert weights.read_bytes() == before


def test_eval_confusion_onto_its_weights_is_refused(tmp_path, capsys):
    weights = tiny_weights(tmp_path / "w.safetensors")
    before = weights.read_bytes()
    data = write_npz(tmp_path / "d.npz")
    rc, _, err = run(capsys, "eval", weights, "--data", data, "--confusion", weights)
    assert rc == 2
    assert "--confusion" in one_error_line(err, "eval")
    assert weights.read_bytes() == before


def test_explain_onto_its_own_image_is_refused(tmp_path, capsys):
    weights = tiny_weights(tmp_path / "w.safetensors")
    image = png(tmp_path / "x.png", 28, 28)
    before = image.read_bytes()
    rc, _, err = run(capsys, "explain", weights, image, "--out", image)
    assert rc == 2
    assert "is the input" in one_error_line(err, "explain")
    assert image.read_bytes() == before


def test_an_output_that_is_not_a_regular_file_is_not_replaced(tmp_path, capsys):
    weights = tiny_weights(tmp_path / "m.safetensors")
    fifo = tmp_path / "m.onnx"
    os.mkfifo(fifo)
    rc, _, err = run(capsys, "export", weights, "--format", "onnx", "--out", fifo)
    assert rc == 2
    assert "not a regular file" in one_error_line(err, "export")
    assert fifo.is_fifo()


# one run per directory, stale temporaries ------------------------------------------------


def test_a_second_train_into_a_busy_run_directory_refuses(tmp_path, capsys):
    data = write_npz(tmp_path / "d.npz")
    out = tmp_path / "run"
    out.mkdir()
    fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what a running `resnetlab train --out run` holds
    os.write(fd, b"4242")
    try:
        rc, _, err = run(capsys, "train", *TINY_CLI, "--data", data, "--out", out, "--epochs", "1")
    finally:
        os.close(fd)
    assert rc == 2
    assert f"{out} is in use by another run (process 4242)" in one_error_line(err, "train")
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written
    fit(tiny_config(out, epochs=1), tiny_splits())  # once the lock is free, a run goes ahead
    assert (out / "last.safetensors").is_file()


def test_stale_checkpoint_temporaries_are_removed_at_the_next_start(tmp_path):
    out = tmp_path / "run"
    (out / ".checkpoint.k1ll3d.tmp").mkdir(parents=True)
    (out / ".checkpoint.k1ll3d.tmp" / "model.safetensors").write_bytes(b"half")
    (out / ".last.safetensors.abc.tmp").write_bytes(b"half")
    (out / "notes.tmp").write_text("the user's: kept")
    fit(tiny_config(out, epochs=1), tiny_splits())
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.startswith(".") and n.endswith(".tmp")], names
    assert "notes.tmp" in names


def test_stale_prepare_temporaries_are_removed_and_live_ones_kept(tmp_path):
    make_tree(tmp_path / "tree")
    stale = tmp_path / ".out.dead.tmp"
    stale.mkdir()
    (stale / "images.npy").write_bytes(b"half")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    live = tmp_path / ".out.live.tmp"
    live.mkdir()
    fd = os.open(live / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a prepare still running
    try:
        prepare_folder(tmp_path / "tree", tmp_path / "out", 4)
    finally:
        os.close(fd)
    assert not stale.exists()
    assert live.is_dir()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["images.npy", META_NAME]


# numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--body-lr-scale", "nan", "--body-lr-scale nan: expected a finite number >= 0"),
        ("--body-lr-scale", "-5", "--body-lr-scale -5.0: expected a finite number >= 0"),
        ("--body-lr-scale", "inf", "--body-lr-scale inf: expected a finite number >= 0"),
        ("--val-split", "nan", "--val-split nan: expected a fraction"),
    ],
)
def test_nan_and_negative_train_numbers_are_refused(tmp_path, capsys, flag, value, message):
    data = write_npz(tmp_path / "d.npz")
    out = tmp_path / "run"
    rc, _, err = run(capsys, "train", *TINY_CLI, "--data", data, "--out", out, flag, value)
    assert rc == 2
    assert message in one_error_line(err, "train")
    assert not out.exists()


def test_fit_refuses_a_nan_setting(tmp_path):
    # the library names its arguments; the command line shows them as flags (test above)
    with pytest.raises(ResnetlabError, match="^body_lr_scale nan: expected a finite number") as e:
        fit(tiny_config(tmp_path, body_lr_scale=math.nan), tiny_splits())
    assert e.value.for_command_line().startswith("--body-lr-scale nan")
    with pytest.raises(ResnetlabError, match="^checkpoint_minutes -1: expected a finite"):
        fit(TrainConfig(model="resnet20", data="x", checkpoint_minutes=-1))


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1"])
def test_bench_refuses_a_repetition_time_that_is_not_a_positive_number(capsys, value):
    rc, _, err = run(capsys, "bench", "resnet20", "--rep-time", value, "--paths", "eager-fp32")
    assert rc == 2
    assert f"--rep-time {float(value)}: expected seconds in (0, 3600]" in one_error_line(
        err, "bench"
    )


def test_full_disk_ends_in_one_line_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real, calls = ckpt.save_file, []

    def fills_up(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tensors, path, metadata=metadata)

    monkeypatch.setattr(ckpt, "save_file", fills_up)
    with pytest.raises(ResnetlabError, match="No space left on device.*last good checkpoint"):
        fit(tiny_config(tmp_path, checkpoint_every=2), tiny_splits())
    _, state = ckpt.load_checkpoint(tmp_path)
    assert state["step"] == 2
    assert not list(tmp_path.glob(".checkpoint.*.tmp"))


# partial loads ---------------------------------------------------------------------------


def test_init_from_weights_with_more_blocks_refuses_instead_of_dropping_them(tmp_path):
    deeper = create_model(
        "resnet20", num_classes=4, in_chans=1, **{**TINY_OPTIONS, "layers": [2, 2, 2]}
    )
    save_weights(deeper, tmp_path / "deeper.safetensors")
    model = create_model("resnet20", num_classes=4, in_chans=1, **TINY_OPTIONS)
    with pytest.raises(ResnetlabError, match=r"holds \d+ tensor\(s\) this model has no place for"):
        init_from(model, str(tmp_path / "deeper.safetensors"))


# predict with bad files among good ones, broken pipes ------------------------------------


def test_predict_names_unreadable_files_and_still_predicts_the_good_ones(tmp_path):
    weights = tiny_weights(tmp_path / "w.safetensors")
    good = png(tmp_path / "good.png", 28, 28)
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)  # opening it would block forever
    tall = png(tmp_path / "tall.png", 1, 200_000)  # would be resized to 28 x 5,600,000
    p = run_cli(["predict", str(weights), str(fifo), "/dev/zero", str(tall), str(good)])
    try:
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 1
    assert out.startswith(f"{good}: ") and len(out.strip().splitlines()) == 1
    assert "x.png: not a regular file" in err and "/dev/zero: not a regular file" in err
    assert "tall.png: image of 1x200000 would be resized" in err
    assert "3 of 4 image(s) could not be read" in err and "Traceback" not in err


def test_a_closed_pipe_ends_quietly():
    p = run_cli(["models", "--json"])
    p.stdout.close()  # the reader is gone before anything is written (`| head -0`)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0
    assert err == ""


# eval's optional picture -----------------------------------------------------------------


def test_eval_draws_no_picture_unless_asked_and_prints_results_first(tmp_path, capsys, monkeypatch):
    weights_dir = tmp_path / "installed"
    weights_dir.mkdir()
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4, in_chans=1, **TINY_OPTIONS)
    meta = {"classes": [f"class{i}" for i in range(4)], "input_size": [1, 8, 8]}
    save_weights(model, weights_dir / "w.safetensors", {**meta, "mean": [0.3], "std": [0.2]})
    data = write_npz(tmp_path / "d.npz")
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    weights = weights_dir / "w.safetensors"
    rc, out, _ = run(capsys, "eval", weights, "--data", data)
    assert rc == 0 and "test accuracy" in out
    assert sorted(tmp_path.rglob("*")) == before  # no file anywhere
    # a picture that cannot be written (a read-only folder) costs the picture, not the results
    import resnetlab.train.evaluate as evaluate

    def read_only(confusion, classes, path, title=""):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(evaluate, "plot_confusion", read_only)
    rc, out, err = run(
        capsys, "eval", weights, "--data", data, "--confusion", weights_dir / "cm.png"
    )
    assert rc == 1
    assert "test accuracy" in out
    assert "Permission denied" in one_error_line(err, "eval")


# the last resort -------------------------------------------------------------------------


def test_an_unexpected_exception_is_one_line_naming_its_type(capsys, monkeypatch):
    import resnetlab.commands.models as models_cmd

    def buggy(args):
        raise KeyError("surprise")

    monkeypatch.setattr(models_cmd, "run_models", buggy)
    monkeypatch.delenv("RESNETLAB_DEBUG", raising=False)
    rc, _, err = run(capsys, "models")
    assert rc == 1
    assert "KeyError: 'surprise'" in one_error_line(err, "models")
    monkeypatch.setenv("RESNETLAB_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["models"])
