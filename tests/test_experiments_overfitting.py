"""`resnetlab experiment overfitting` on a tiny grid: the files and their keys, equal steps for
every net, the class-balanced subsets, the regularisation each net really got, a study killed
with SIGKILL that resumes to the same numbers, and bad input refused in one line."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch
from helpers.train import run_cli, squares, write_npz

from resnetlab.cli import main
from resnetlab.errors import ResnetlabError
from resnetlab.experiments.overfitting import balanced_subset, error_on
from resnetlab.models import create_model

# 400 training images (100 per class), 64 test images of 8x8, 4 classes
GRID = ["--depths", "8", "--sizes", "40,80", "--steps", "8", "--batch-size", "20",
        "--precision", "fp32", "--threads", "1", "--device", "cpu"]  # fmt: skip
NET_KEYS = {"depth", "family", "train_size", "regularisation", "seed", "params",
            "final_train_err", "final_test_err", "gap"}  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_npz(tmp_path_factory.mktemp("data") / "squares.npz", n_train=400)


@pytest.fixture(scope="module")
def study(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "over"
    rc = main(["experiment", "overfitting", "--data", str(data), "--out", str(out), *GRID])
    assert rc == 0
    return out


def nets(out: Path) -> list[dict]:
    return json.loads((out / "overfitting.json").read_text())["nets"]


def test_overfitting_writes_figure_table_and_json_with_every_key(study):
    records = nets(study)
    got = [(r["train_size"], r["regularisation"]) for r in records]
    assert got == [(n, r) for n in (40, 80) for r in ("none", "standard", "strong")]
    want_params = sum(p.numel() for p in create_model("resnet8", num_classes=4,
                                                      in_chans=1).parameters())  # fmt: skip
    for r in records:
        assert r.keys() >= NET_KEYS
        assert (r["depth"], r["family"], r["model"], r["seed"]) == (8, "resnet", "resnet8", 0)
        assert r["precision"] == "fp32"  # what it trained in
        assert r["params"] == want_params
        assert 0 <= r["final_train_err"] <= 1 and 0 <= r["final_test_err"] <= 1
        assert r["gap"] == pytest.approx(r["final_test_err"] - r["final_train_err"])
        run = Path(r["run_dir"])
        assert run.name == f"resnet8-n{r['train_size']}-{r['regularisation']}-s0"
        for f in ("last.safetensors", "summary.json", "metrics.jsonl", "train_eval.json"):
            assert (run / f).is_file(), f
        # the test error is the run's last epoch's (its training error: the test below)
        rows = [json.loads(line) for line in (run / "metrics.jsonl").open()]
        assert [row["epoch"] for row in rows] == list(range(1, r["epochs"] + 1))
        assert r["final_test_err"] == rows[-1]["test_top1_err"]
        assert r["train_batch_err"] == rows[-1]["train_top1_err"]
    summary = json.loads((study / "overfitting.json").read_text())["summary"]
    assert len(summary) == 6 and all(s["seeds"] == 1 for s in summary)
    assert {"final_test_err_mean", "final_test_err_std", "gap_mean", "gap_std"} <= summary[0].keys()
    table = (study / "overfitting.md").read_text()
    assert "| 8 | 40 | none | 74,612 | 1 |" in table and "| 8 | 80 | strong |" in table
    assert (study / "overfitting.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_net_takes_the_same_steps_and_small_sets_get_more_epochs(study):
    for r in nets(study):
        assert r["steps"] == 8
        assert r["epochs"] == {40: 4, 80: 2}[r["train_size"]]  # batches of 20
        summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        assert summary["steps"] == 8


def test_each_regularisation_is_what_the_net_trained_with(study):
    for r in nets(study):
        cfg = json.loads((Path(r["run_dir"]) / "summary.json").read_text())["config"]
        if r["regularisation"] == "none":
            assert r["weight_decay"] == 0.0 and cfg["augment"] is False
            assert cfg["model_options"] == {}
        else:
            assert r["weight_decay"] == pytest.approx(1e-4) and cfg["augment"] is True
        if r["regularisation"] == "strong":
            assert cfg["model_options"] == {"drop_path_rate": 0.5, "drop_rate": 0.3}


def test_the_training_error_is_measured_on_the_nets_own_images(study, data):
    from resnetlab.data import load_source
    from resnetlab.models import load_model

    train = load_source(str(data)).train
    for r in nets(study)[:2]:
        subset = balanced_subset(train, r["train_size"], r["seed"])
        weights = Path(r["run_dir"]) / "last.safetensors"
        # by hand: the net in eval mode on its own images, normalised as (x / 255 - mean) / std
        model, meta = load_model(weights)
        mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
        std = torch.tensor(meta["std"]).view(1, -1, 1, 1)
        with torch.no_grad():
            logits = model.eval()((subset.images.float() / 255 - mean) / std)
        wrong = int((logits.argmax(1) != subset.labels).sum())
        assert 0 < wrong < len(subset)  # neither all right nor all wrong: the count tells
        assert r["final_train_err"] == pytest.approx(wrong / len(subset), abs=1e-9)
        assert error_on(weights, subset) == pytest.approx(r["final_train_err"])


def test_subsets_are_class_balanced_seeded_and_nested():
    train = squares(400, 1)
    small, large = balanced_subset(train, 40, 0), balanced_subset(train, 80, 0)
    assert torch.bincount(small.labels).tolist() == [10, 10, 10, 10]
    assert torch.bincount(large.labels).tolist() == [20, 20, 20, 20]
    as_set = {tuple(x.flatten().tolist()) for x in large.images}
    assert all(tuple(x.flatten().tolist()) in as_set for x in small.images)
    again, other = balanced_subset(train, 40, 0), balanced_subset(train, 40, 1)
    assert torch.equal(again.images, small.images)
    assert not torch.equal(other.images, small.images)


def kill_when(p, path: Path, sig=signal.SIGKILL, timeout: float = 120) -> None:
    """Send `sig` to process `p` as soon as `path` exists (polled every 10 ms)."""
    deadline = time.time() + timeout
    while not path.exists():
        assert p.poll() is None and time.time() < deadline, "the study ended before the kill"
        time.sleep(0.01)
    p.send_signal(sig)


@pytest.mark.slow
def test_killed_study_resumes_to_the_same_numbers(data, study, tmp_path):
    whole = study  # the same nets, trained without a kill
    out = tmp_path / "over"
    base = ["experiment", "overfitting", "--data", str(data), "--out", str(out), *GRID,
            "--sizes", "40", "--regularisation", "none,strong"]  # fmt: skip
    # SIGKILL once the first net has its first checkpoint (an epoch is 2 of its 8 steps)
    p = run_cli(base)
    kill_when(p, out / "resnet8-n40-none-s0" / "checkpoint")
    _, err = p.communicate(timeout=300)
    assert p.returncode == -9, err
    assert not (out / "resnet8-n40-none-s0" / "summary.json").exists()
    p = run_cli(base)
    stdout, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "plan: 2 net(s): 0 done, 1 to resume, 1 to start" in stdout
    assert "resnet-8 on 40 images, none, seed 0: resuming at step" in stdout
    same = {(w["train_size"], w["regularisation"]): w for w in nets(whole)}
    for r in nets(out):
        w = same[(r["train_size"], r["regularisation"])]
        assert (r["regularisation"], r["final_train_err"], r["final_test_err"]) == (
            w["regularisation"],
            w["final_train_err"],
            w["final_test_err"],
        )
        name = Path(r["run_dir"]).name
        assert (out / name / "last.safetensors").read_bytes() == (
            whole / name / "last.safetensors"
        ).read_bytes()
    # a third run trains nothing and writes the same results
    p = run_cli(base)
    stdout, err = p.communicate(timeout=300)
    assert p.returncode == 0 and "plan: 2 net(s): 2 done, 0 to resume, 0 to start" in stdout


def test_seeds_give_a_mean_and_a_standard_deviation(data, tmp_path):
    out = tmp_path / "seeds"
    rc = main(["experiment", "overfitting", "--data", str(data), "--out", str(out), *GRID[:2],
               "--sizes", "40", "--regularisation", "none", "--seeds", "2", *GRID[4:]])  # fmt: skip
    assert rc == 0
    value = json.loads((out / "overfitting.json").read_text())
    assert [r["seed"] for r in value["nets"]] == [0, 1]
    (row,) = value["summary"]
    errs = [r["final_test_err"] for r in value["nets"]]
    assert row["seeds"] == 2
    assert row["final_test_err_mean"] == pytest.approx(sum(errs) / 2)
    assert row["final_test_err_std"] == pytest.approx(abs(errs[0] - errs[1]) / 2**0.5)
    assert " ± " in (out / "overfitting.md").read_text()
    first, second = (Path(r["run_dir"]) / "last.safetensors" for r in value["nets"])
    assert first.read_bytes() != second.read_bytes()  # each seed trains its own net


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sizes", "40,abc"], "'abc' is not a whole number of images"),
        (["--sizes", "0"], "0 images is no training set"),
        (["--sizes", "42"], "42 images cannot be class-balanced over 4 classes"),
        (["--sizes", "40,800"], "800 images is more than the training split"),
        (["--sizes", "12"], "12 images make no batch of 20"),
        (["--steps", "6"], "--steps 6 is not a whole number of epochs of every size"),
        (["--steps", "0"], "--steps must be at least 1"),
        (["--regularisation", "none,dropout"], "unknown regularisation 'dropout'"),
        (["--depths", "9"], "depth 9 is not of the form 6n+2"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--workers", "2", "--ray", "auto"], "Ray places the nets itself"),
    ],
)
def test_bad_grids_are_refused_in_one_line(args, message, data, tmp_path, capsys):
    out = tmp_path / "o"
    rc = main(["experiment", "overfitting", "--data", str(data), "--out", str(out), *GRID, *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not any(out.glob("*/summary.json"))


def test_a_folder_of_other_settings_is_refused(data, study, capsys):
    rc = main(["experiment", "overfitting", "--data", str(data), "--out", str(study), *GRID,
               "--lr", "0.05"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "holds a run of other settings (lr" in err[0], err


def test_weight_decay_setting_reaches_the_recipe(tmp_path):
    from helpers.train import tiny_config, tiny_splits

    import resnetlab

    summary = resnetlab.fit(tiny_config(tmp_path / "r", weight_decay=0.0, epochs=1), tiny_splits())
    assert summary["recipe"]["weight_decay"] == 0.0
    with pytest.raises(ResnetlabError, match="weight_decay -1.0: expected a finite number >= 0"):
        resnetlab.fit(tiny_config(tmp_path / "s", weight_decay=-1.0, epochs=1), tiny_splits())
