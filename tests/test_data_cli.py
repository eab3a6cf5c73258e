"""`resnetlab data info` and `resnetlab data prepare`: reports, and one clear line for bad input."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.data import RunsShell, make_idx_dir, make_tree, write_cifar10

from resnetlab.cli import main

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json_on_idx_dir(tmp_path, capsys):
    make_idx_dir(tmp_path, n_train=20, n_test=10, hw=(4, 3))
    code, out, err = run(["data", "info", str(tmp_path), "--json"], capsys)
    assert code == 0 and err == ""
    info = json.loads(out)
    assert info["splits"] == {"train": 20, "test": 10}
    assert info["counts"]["train"] == [2] * 10 and info["counts"]["test"] == [1] * 10
    assert (info["channels"], info["height"], info["width"]) == (1, 4, 3)
    assert len(info["mean"]) == 1 and 0 < info["std"][0] < 1


def test_info_text_with_val_split(tmp_path, capsys):
    make_tree(tmp_path, per_class=10)
    code, out, _ = run(["data", "info", str(tmp_path), "--val-split", "0.25"], capsys)
    assert code == 0
    assert "splits:      train 12, val 4, test 4" in out
    assert "image shape: 4x6, 3 channels" in out and "cat" in out


def test_prepare_then_info_reads_the_cache(tmp_path, capsys):
    make_tree(tmp_path / "tree", per_class=5)
    code, out, _ = run(
        ["data", "prepare", str(tmp_path / "tree"), str(tmp_path / "c"), "--size", "8"], capsys
    )
    assert code == 0 and "10 images (train 8, test 2), 3x8x8, 2 classes" in out
    code, out, _ = run(["data", "info", str(tmp_path / "c"), "--json"], capsys)
    assert json.loads(out)["image_shape"] == [3, 8, 8]


def test_skip_bad_reports_count(tmp_path, capsys):
    make_tree(tmp_path)
    (tmp_path / "dog" / "letter.jpg").write_text("Dear reader")
    code, _, err = run(["data", "info", str(tmp_path)], capsys)
    assert code == 2 and "letter.jpg: not a readable image" in err and "--skip-bad" in err
    code, out, err = run(["data", "info", str(tmp_path), "--skip-bad"], capsys)
    assert code == 0 and "skipped 1 unreadable image file" in err and "skipped:     1" in out


def _broken_sources(tmp_path: Path) -> dict[str, Path]:
    out = {}
    d = tmp_path / "truncated_idx"
    _, paths = make_idx_dir(d)
    paths["train_images"].write_bytes(paths["train_images"].read_bytes()[:-5])
    out["truncated IDX"] = d
    d = tmp_path / "wrong_magic"
    _, paths = make_idx_dir(d)
    paths["test_images"].write_bytes(b"\x00\x00\x08\x09" + paths["test_images"].read_bytes()[4:])
    out["wrong magic"] = d
    d = tmp_path / "counts_differ"
    _, paths = make_idx_dir(d)
    labels = paths["train_labels"].read_bytes()
    paths["train_labels"].write_bytes(labels[:4] + (11).to_bytes(4, "big") + labels[8:-1])
    out["counts differ"] = d
    (tmp_path / "empty").mkdir()
    out["empty folder"] = tmp_path / "empty"
    make_tree(tmp_path / "one_class", classes=("cat",))
    out["one class"] = tmp_path / "one_class"
    make_tree(tmp_path / "text_image")
    (tmp_path / "text_image" / "cat" / "photo.png").write_text("just text\n")
    out["text as image"] = tmp_path / "text_image"
    d = tmp_path / "evil_cifar"
    write_cifar10(d)
    (d / "data_batch_2").write_bytes(
        pickle.dumps({"data": RunsShell(tmp_path / "PWNED")}, protocol=4)
    )
    out["malicious CIFAR pickle"] = d
    np.savez(tmp_path / "float.npz", x=np.zeros((3, 2, 2), np.float32), y=np.zeros(3, int))
    out["float npz"] = tmp_path / "float.npz"
    return out


EXPECTED = {
    "truncated IDX": "truncated IDX file",
    "wrong magic": "wrong magic number 0x00000809",
    "counts differ": "holds 12 images but",
    "empty folder": "format not recognised",
    "one class": "only one class folder",
    "text as image": "photo.png: not a readable image",
    "malicious CIFAR pickle": "refused global",
    "float npz": "must be uint8, got float32",
}


@pytest.mark.parametrize("case", list(EXPECTED))
def test_broken_inputs_end_in_one_line_and_exit_2(tmp_path, capsys, case):
    source = _broken_sources(tmp_path)[case]
    code, out, err = run(["data", "info", str(source)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("resnetlab data: error: ")
    assert EXPECTED[case] in err
    assert not (tmp_path / "PWNED").exists()


def test_broken_input_through_the_console_script_has_no_traceback(tmp_path):
    make_tree(tmp_path, classes=("only",))
    env = {k: v for k, v in os.environ.items() if k != "RESNETLAB_DEBUG"}
    r = subprocess.run(
        [sys.executable, "-m", "resnetlab", "data", "info", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "only one class folder" in r.stderr


def test_prepare_refuses_bad_size_and_existing_output(tmp_path, capsys):
    make_tree(tmp_path / "tree")
    with pytest.raises(SystemExit):
        main(["data", "prepare", str(tmp_path / "tree"), str(tmp_path / "o"), "--size", "0"])
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "x").write_text("x")
    code, _, err = run(
        ["data", "prepare", str(tmp_path / "tree"), str(tmp_path / "o"), "--size", "4"], capsys
    )
    assert code == 2 and "already exists" in err


@pytest.mark.skipif(
    not DEBIAN.is_dir(), reason="Debian package dataset-fashion-mnist not installed"
)
def test_acceptance_fashion_mnist_info(capsys, monkeypatch):
    monkeypatch.delenv("RESNETLAB_DATA", raising=False)
    code, out, _ = run(["data", "info", "fashion-mnist", "--json"], capsys)
    info = json.loads(out)
    assert code == 0 and info["name"] == "fashion-mnist"
    assert info["splits"] == {"train": 60000, "test": 10000}
    assert info["counts"]["train"] == [6000] * 10 and info["counts"]["test"] == [1000] * 10
    assert (info["channels"], info["height"], info["width"]) == (1, 28, 28)
    assert info["classes"][0] == "T-shirt/top"
    assert abs(info["mean"][0] - 0.2860) < 1e-3 and abs(info["std"][0] - 0.3530) < 1e-3
