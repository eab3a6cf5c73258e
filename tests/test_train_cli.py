"""`resnetlab train` and `resnetlab eval` through the command-line entry point: a tiny run, eval
that reproduces its accuracy, and one clear line with a non-zero exit for every bad input."""

from __future__ import annotations

import json
import re

import pytest
import torch
from helpers.train import TINY_CLI, write_npz

from resnetlab.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = write_npz(root / "tiny.npz")
    out = root / "run"
    torch.set_num_threads(1)
    return root, data, out


def _run(capsys, argv):
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def train_output(trained):
    root, data, out = trained
    import contextlib
    import io

    buf_out, buf_err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        code = main(["train", *TINY_CLI, "--data", str(data), "--out", str(out), "--epochs", "2"])
    assert code == 0, buf_err.getvalue()
    return buf_out.getvalue()


def _accuracy(text):
    return re.findall(r"test accuracy (\d+\.\d+)%", text)[-1]


def test_train_prints_a_test_accuracy_line_and_leaves_its_files(trained, train_output):
    _, _, out = trained
    assert _accuracy(train_output)
    for name in ("metrics.jsonl", "curves.png", "summary.json", "last.safetensors"):
        assert (out / name).is_file(), name


def test_eval_reproduces_the_accuracy_training_printed(trained, train_output, capsys):
    root, data, out = trained
    code, text, err = _run(capsys, ["eval", out / "last.safetensors", "--data", data,
                                    "--confusion", root / "cm.png", "--device", "cpu"])  # fmt: skip
    assert code == 0, err
    assert _accuracy(text) == _accuracy(train_output)
    assert "class0" in text and "top-5" not in text  # 4 classes: top-5 says nothing
    assert (root / "cm.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_json_has_top1_top5_and_per_class(trained, train_output, capsys):
    root, data, out = trained
    code, text, _ = _run(capsys, ["eval", out / "last.safetensors", "--data", data, "--json",
                                  "--no-tta", "--confusion", root / "cm2.png", "--device",
                                  "cpu"])  # fmt: skip
    assert code == 0
    report = json.loads(text)
    assert set(report["per_class_acc"]) == {"class0", "class1", "class2", "class3"}
    diagonal = sum(report["confusion"][i][i] for i in range(4))
    assert report["top1_acc"] == pytest.approx(diagonal / report["images"])
    assert report["top5_acc"] == 1.0  # 4 classes: the true class is always among the top 5
    assert report["tta_flip"] is False
    assert sum(map(sum, report["confusion"])) == report["images"] == 64


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "resnet5"], "unknown model 'resnet5'"),
        (["--epochs", "0"], "--epochs 0: expected a whole number >= 1"),
        (["--lr", "-1"], "--lr -1.0: expected a finite number > 0"),
        (["--precision", "fp16"], "needs CUDA"),
        (["--freeze", "layer9"], "--freeze 'layer9': no such part"),
        (["--option", "bogus=1"], "unknown option"),
    ],
)
def test_bad_train_flags_fail_in_one_line(trained, capsys, argv, message, tmp_path):
    _, data, _ = trained
    args = ["train", *TINY_CLI, "--data", data, "--out", tmp_path / "x", "--epochs", "1", *argv]
    code, _, err = _run(capsys, args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x" / "checkpoint").exists()


def test_missing_data_fails_in_one_line(capsys, tmp_path):
    code, _, err = _run(capsys, ["train", "--model", "resnet20", "--data", tmp_path / "nope.npz"])
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "nope" in err


def test_resume_with_a_checkpoint_of_another_model_fails_and_keeps_it(
    trained, train_output, capsys
):
    _, _, out = trained
    before = (out / "checkpoint" / "state.pt").read_bytes()
    code, _, err = _run(capsys, ["train", "--resume", out, "--model", "resnet32"])
    assert code == 2
    assert "of model 'resnet20', not 'resnet32'" in err
    assert (out / "checkpoint" / "state.pt").read_bytes() == before


def test_resume_without_a_checkpoint_fails_in_one_line(capsys, tmp_path):
    code, _, err = _run(capsys, ["train", "--resume", tmp_path])
    assert code == 2 and "no checkpoint" in err


def test_eval_of_a_missing_weights_file_fails_in_one_line(trained, capsys):
    _, data, _ = trained
    code, _, err = _run(capsys, ["eval", "missing.safetensors", "--data", data])
    assert code == 2 and "not found" in err


def test_eval_on_images_of_another_size_fails_in_one_line(trained, train_output, capsys, tmp_path):
    import numpy as np

    _, _, out = trained
    np.savez(tmp_path / "big.npz", x=np.zeros((20, 12, 12), np.uint8), y=np.arange(20) % 4)
    code, _, err = _run(capsys, ["eval", out / "last.safetensors", "--data", tmp_path / "big.npz"])
    assert code == 2
    assert "expects images 1x8x8" in err


def test_training_into_a_run_directory_with_a_checkpoint_needs_resume_or_overwrite(
    trained, train_output, capsys
):
    _, data, out = trained
    before = (out / "checkpoint" / "state.pt").read_bytes()
    code, _, err = _run(capsys, ["train", *TINY_CLI, "--data", data, "--out", out])
    assert code == 2
    assert "already holds a run" in err and "--resume" in err
    assert (out / "checkpoint" / "state.pt").read_bytes() == before


def test_fine_tune_from_trained_weights_with_a_frozen_stem(trained, train_output, capsys, tmp_path):
    _, data, out = trained
    argv = ["train", *TINY_CLI, "--data", data, "--out", tmp_path / "ft", "--epochs", "1",
            "--init-from", out / "last.safetensors", "--freeze", "stem,layer1"]  # fmt: skip
    code, text, err = _run(capsys, argv)
    assert code == 0, err
    assert "loaded" in text and "tensors from" in text
    from safetensors.torch import load_file

    before = load_file(str(out / "last.safetensors"))
    after = load_file(str(tmp_path / "ft" / "last.safetensors"))
    assert torch.equal(before["conv1.weight"], after["conv1.weight"])
    assert torch.equal(before["layer1.0.conv1.weight"], after["layer1.0.conv1.weight"])
    assert not torch.equal(before["layer2.0.conv1.weight"], after["layer2.0.conv1.weight"])


def test_eval_is_one_library_call_whose_errors_name_arguments(trained, train_output, capsys):
    from resnetlab.errors import ResnetlabError
    from resnetlab.train.evaluate import evaluate_weights

    root, data, out = trained
    report = evaluate_weights(out / "last.safetensors", data, device="cpu")  # as it trained
    assert f"{100 * report['top1_acc']:.2f}" == _accuracy(train_output)
    with pytest.raises(ResnetlabError, match="^batch_size must be positive, got 0$"):
        evaluate_weights(out / "last.safetensors", data, batch_size=0)
    code, _, err = _run(capsys, ["eval", out / "last.safetensors", "--data", data,
                                 "--batch-size", "0"])  # fmt: skip
    assert code == 2 and "error: --batch-size must be positive, got 0" in err
