"""`resnetlab train` on one's own folder of images: the folder flags (--size, --mode, --skip-bad),
the size rule for folders of mixed sizes, the fast recipe's lr scaled with the batch, the warning
of a schedule too short to learn, the logs tools read (metrics.csv, --log tensorboard), --quiet,
and what the lines say (top-5 err / acc, hidden under 6 classes, "1 epoch", help pointers)."""

from __future__ import annotations

import contextlib
import csv
import io
import json

import numpy as np
import pytest
from helpers.data import save
from helpers.train import TINY_CLI, squares
from PIL import Image

from resnetlab.cli import main
from resnetlab.models.weights import read_metadata
from resnetlab.train import logs
from resnetlab.train.logs import read_metrics
from resnetlab.train.recipes import get_recipe, too_few_steps

# the tiny CLI run, printing what a user sees (no --quiet); CLI: one epoch at batch 16
BASE = [a for a in TINY_CLI if a not in ("--quiet", "--batch-size", "32")]
CLI = [*BASE, "--epochs", "1", "--batch-size", "16"]
HELP = "(see `resnetlab train --help`)"


def run(argv: list) -> tuple[int, str, str]:
    """main(argv) with stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's usage errors
            code = e.code
    return code, out.getvalue(), err.getvalue()


def grey_png(path, size: tuple[int, int], value: int) -> None:
    """A grey PNG of size (height, width) with a noisy square of brightness `value`."""
    rng = np.random.default_rng(value)
    h, w = size
    a = rng.integers(0, 40, (h, w)).astype(np.uint8)
    a[h // 4 : h - h // 4, w // 4 : w - w // 4] = value
    save(path, Image.fromarray(a, "L"))


# sizes (height, width) of each class's images: 14 of 8x8, 6 of 12x10, 4 of 6x6 in all
MIXED = [(8, 8)] * 7 + [(12, 10)] * 3 + [(6, 6)] * 2


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    for c, value in (("dark", 60), ("light", 200)):
        for i, size in enumerate(MIXED):
            grey_png(root / "mixed" / c / f"{i}.png", size, value + i)
        for i in range(12):
            grey_png(root / "bad" / c / f"{i}.png", (8, 8), value + i)
    (root / "bad" / "dark" / "corrupt.png").write_bytes(b"not a png at all")
    return root


@pytest.fixture(scope="module")
def sized_run(folders):
    """A mixed folder trained with --size 8."""
    out = folders / "sized"
    result = run(["train", *CLI, "--data", folders / "mixed", "--out", out, "--size", "8"])
    return out, result


def test_a_mixed_folder_without_size_is_refused_naming_the_sizes(folders):
    out = folders / "refused"
    code, text, err = run(["train", *CLI, "--data", folders / "mixed", "--out", out])
    assert code == 2 and text == ""
    assert err.strip().splitlines() == [
        f"resnetlab train: error: --size is needed: {folders / 'mixed'} holds images of 3 sizes "
        "(height x width: 14 of 8x8, 6 of 12x10, 4 of 6x6); give the side every image is "
        f"resized to, e.g. 8 {HELP}"
    ]
    assert not (out / "checkpoint").exists()


def test_with_size_a_mixed_folder_trains_at_that_size(sized_run):
    out, (code, text, err) = sized_run
    assert code == 0, err
    assert "images 1x8x8, 2 classes" in text
    assert read_metadata(out / "last.safetensors")["input_size"] == [1, 8, 8]


def test_fine_tuning_reads_a_mixed_folder_at_the_weights_input_size(folders, sized_run):
    weights = sized_run[0] / "last.safetensors"
    out = folders / "finetuned"
    argv = ["train", *CLI, "--data", folders / "mixed", "--out", out, "--init-from", weights]
    code, text, err = run(argv)
    assert code == 0, err
    assert f"{folders / 'mixed'}: images read at 8x8, the input size of {weights}" in text
    assert read_metadata(out / "last.safetensors")["input_size"] == [1, 8, 8]


def test_mode_rgb_reads_a_grey_folder_as_three_channels(folders):
    out = folders / "rgb"
    argv = ["train", *CLI, "--data", folders / "mixed", "--out", out, "--size", "6"]
    code, text, err = run([*argv, "--mode", "RGB"])
    assert code == 0, err
    assert read_metadata(out / "last.safetensors")["input_size"] == [3, 6, 6]


def test_a_corrupt_file_is_refused_naming_skip_bad_which_train_takes(folders):
    code, _, err = run(["train", *CLI, "--data", folders / "bad", "--out", folders / "b1"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "1 unreadable image file(s)" in err and "corrupt.png" in err and "--skip-bad" in err


def test_skip_bad_skips_the_corrupt_file_and_says_how_many(folders):
    out = folders / "b2"
    argv = ["train", *CLI, "--data", folders / "bad", "--out", out, "--skip-bad"]
    code, text, err = run(argv)
    assert code == 0, err
    assert "warning: skipped 1 unreadable image file; first: " in err
    assert "corrupt.png" in err
    assert "19 train / 5 test images" in text  # 24 readable images of 25, a fifth held out


# the fast recipe's learning rate, and a schedule too short to learn


@pytest.fixture(scope="module")
def big_batch_run(tmp_path_factory):
    """256 images at batch 256 (2x the fast recipe's 128): 1 epoch of 1 step."""
    root = tmp_path_factory.mktemp("batch")
    data = write_npz(root / "d.npz", squares(256, 1, classes=4), squares(32, 2, classes=4))
    out = root / "run"
    args = [*BASE, "--epochs", "1", "--batch-size", "256", "--recipe", "fast", "--log-every", "1"]
    return out, run(["train", *args, "--data", data, "--out", out])


def write_npz(path, train, test):
    np.savez(
        path,
        x_train=train.images[:, 0].numpy(),
        y_train=train.labels.numpy(),
        x_test=test.images[:, 0].numpy(),
        y_test=test.labels.numpy(),
        classes=np.array(train.classes),
    )
    return path


def test_twice_the_reference_batch_trains_at_twice_the_lr_recorded_in_the_summary(big_batch_run):
    out, (code, text, err) = big_batch_run
    assert code == 0, err
    recipe = json.loads((out / "summary.json").read_text())["recipe"]
    assert (recipe["lr"], recipe["batch_size"]) == (0.4, 256)
    assert (recipe["reference_lr"], recipe["reference_batch"]) == (0.2, 128)
    assert recipe["warmup_frac"] == 0.1
    # the one step ran at the warm-up's start: 0.1 x the scaled lr
    steps = read_metrics(out / "steps.jsonl")
    assert [r["lr"] for r in steps] == [0.4 * 0.1]
    assert "batch 256, lr 0.4 (scaled with the batch: 0.2 x 256/128)" in text


def test_the_description_says_1_epoch_of_1_step(big_batch_run):
    _, (_, text, _) = big_batch_run
    assert "recipe fast, 1 epoch of 1 step, batch 256" in text


def test_a_schedule_too_short_for_the_recipe_warns_with_the_epochs_needed(big_batch_run):
    _, (_, _, err) = big_batch_run
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: 1 step (1 epoch of 1 step at batch 256) is too short for the fast recipe, "
        "which needs about 300 steps to learn; the run may end near chance: train 300 epochs or "
        "more (--epochs 300)"
    ]


def test_lr_scaling_rule():
    assert get_recipe("fast", batch_size=64).lr == 0.1  # half the batch, half the lr
    assert get_recipe("fast", batch_size=64).warmup_frac == 0.05
    assert get_recipe("fast", batch_size=128).reference_batch is None  # the reference: as is
    assert get_recipe("fast", batch_size=256, lr=0.3).lr == 0.3  # an lr given is kept
    assert get_recipe("accel", batch_size=1024).lr == 1.6
    assert get_recipe("paper", batch_size=256).lr == 0.1  # the paper's lr is the paper's


def test_2000_images_for_1_epoch_warn_and_a_full_schedule_does_not():
    fast = get_recipe("fast", epochs=1)
    assert "train 20 epochs or more (--epochs 20)" in too_few_steps(fast, 2000 // 128)
    assert too_few_steps(get_recipe("fast"), 60000 // 128) is None


# the logs tools read, and --quiet


@pytest.fixture(scope="module")
def six_class_run(tmp_path_factory):
    """Two epochs on 6 classes: top-5 figures mean something."""
    root = tmp_path_factory.mktemp("six")
    data = write_npz(root / "d.npz", squares(96, 1, classes=6), squares(36, 2, classes=6))
    out = root / "run"
    argv = [*BASE, "--epochs", "2", "--batch-size", "32"]
    return out, run(["train", *argv, "--data", data, "--out", out])


def test_metrics_csv_has_the_rows_and_columns_of_metrics_jsonl(six_class_run):
    out, (code, _, err) = six_class_run
    assert code == 0, err
    rows = read_metrics(out / "metrics.jsonl")
    with open(out / "metrics.csv", newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == list(rows[0])  # the header: the row's keys, in order
    assert len(table) == 1 + len(rows) == 3
    for row, cells in zip(rows, table[1:]):
        assert [json.loads(c) for c in cells] == list(row.values())  # the same numbers


def test_csv_of_rows_with_different_keys_leaves_empty_cells(tmp_path):
    rows = [{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25, "test_top1_err": 0.1}]
    logs.write_metrics(tmp_path, rows)
    assert (tmp_path / "metrics.csv").read_text() == (
        "epoch,train_loss,test_top1_err\n1,0.5,\n2,0.25,0.1\n"
    )


def test_epoch_lines_say_top5_err_and_the_final_line_top5_acc(six_class_run):
    out, (_, text, _) = six_class_run
    lines = text.strip().splitlines()
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 2
    assert all("(top-5 err " in line for line in epoch_lines)
    assert lines[-1].startswith("test accuracy ") and "(top-5 acc " in lines[-1]
    assert lines[-1].endswith(f"flip TTA) -> {out / 'last.safetensors'}")


def test_top5_is_hidden_under_6_classes(sized_run):
    _, (_, text, _) = sized_run
    assert "top-5" not in text  # 2 classes: the true class is always among the top 5
    assert text.strip().splitlines()[-1].startswith("test accuracy ")


def test_quiet_prints_only_the_final_line(tmp_path):
    data = write_npz(tmp_path / "d.npz", squares(64, 1), squares(16, 2))
    out = tmp_path / "run"
    code, text, err = run(["train", *CLI, "--data", data, "--out", out, "--quiet"])
    assert code == 0, err
    assert text.splitlines() == [text.strip()]
    assert text.startswith("test accuracy ") and text.strip().endswith("last.safetensors")
    assert not [line for line in err.splitlines() if not line.startswith("warning:")]


def test_log_tensorboard_writes_an_events_file_or_refuses_in_one_line(tmp_path):
    data = write_npz(tmp_path / "d.npz", squares(64, 1), squares(16, 2))
    out = tmp_path / "run"
    code, _, err = run(["train", *CLI, "--data", data, "--out", out, "--log", "tensorboard"])
    if not logs.package_installed("tensorboard"):
        assert code == 2
        assert err.strip().splitlines() == [
            "resnetlab train: error: --log tensorboard needs the tensorboard package: pip install "
            f"'resnetlab[tensorboard]' {HELP}"
        ]
        return
    assert code == 0, err
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"train/loss", "train/top1_err", "test/top1_err", "lr"} <= set(tags)
    row = read_metrics(out / "metrics.jsonl")[0]
    (event,) = acc.Scalars("train/loss")
    assert event.step == 1 and event.value == pytest.approx(row["train_loss"], rel=1e-6)


def test_log_tensorboard_without_the_package_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "package_installed", lambda name: False)
    data = write_npz(tmp_path / "d.npz", squares(64, 1), squares(16, 2))
    out = tmp_path / "run"
    code, _, err = run(["train", *CLI, "--data", data, "--out", out, "--log", "tensorboard"])
    assert code == 2
    assert err.strip().splitlines() == [
        "resnetlab train: error: --log tensorboard needs the tensorboard package: pip install "
        f"'resnetlab[tensorboard]' {HELP}"
    ]
    assert not out.exists()


# argument errors point to the subcommand's help


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--data", "x", "--epochs", "0"], "--epochs 0: expected a whole number >= 1"),
        (["train", "--data", "x", "--size", "0"], "--size 0: expected a whole number of pixels"),
        (["train", "--data", "x", "--mode", "CMYK"], "argument --mode: invalid choice: 'CMYK'"),
        (["train", "--data", "x", "--log", "wandb"], "argument --log: invalid choice: 'wandb'"),
    ],
)
def test_argument_errors_point_to_the_subcommand_help(argv, expected, tmp_path):
    code, _, err = run([*argv, "--out", tmp_path / "run"])
    assert code == 2
    (line,) = err.strip().splitlines()
    assert expected in line and line.endswith(HELP)


def test_a_nested_subcommand_points_to_its_own_help(tmp_path):
    code, _, err = run(["data", "info", tmp_path, "--size", "x"])
    assert code == 2 and err.strip().endswith("(see `resnetlab data info --help`)")
