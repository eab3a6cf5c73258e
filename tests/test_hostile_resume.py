"""Hostile resumes: a run continues in its own folder or not at all (never in the checkpoint's saved
`out`, never in another run's folder), --overwrite clears every file a run writes and nothing
else, a setting changed on resume is applied from the next step and recorded or refused in one
line naming both values, and data changed on disk under the same shape is caught by the
checkpoint's fingerprint. All in this process through the command line, on the tiny model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.train import TINY_CLI, tiny_config, write_npz

from resnetlab.cli import main
from resnetlab.errors import ResnetlabError
from resnetlab.train import checkpoint as ckpt
from resnetlab.train.loop import fit
from resnetlab.train.recipes import get_recipe
from resnetlab.train.rundir import NAMES_WRITTEN
from resnetlab.train.step import lr_factor


def run(capsys, *argv):
    """`resnetlab ARGV` in this process: (exit status, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resnetlab train: error: "), err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes (what must not change; the run lock aside)."""
    files = (p for p in folder.rglob("*") if p.is_file() and p.name != ".lock")
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished 2-epoch run (6 steps an epoch, steps logged every 2) trained from its parent
    folder with a relative --out, as a user in that folder would: (root, run folder, data)."""
    root = tmp_path_factory.mktemp("hostile_resume")
    data = write_npz(root / "tiny.npz")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        argv = ["train", *TINY_CLI, "--data", "tiny.npz", "--out", "run", "--epochs", "2",
                "--log-every", "2", "--quiet"]  # fmt: skip
        assert main(argv) == 0
    finally:
        os.chdir(cwd)
    return root, root / "run", data


@pytest.fixture
def copy(base, tmp_path):
    """A copy of the base run in a fresh folder (tests change it freely)."""
    _, run_dir, _ = base
    dst = tmp_path / "copy"
    shutil.copytree(run_dir, dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


# 2. a run continues in its own folder, never elsewhere -------------------------------------


def test_resume_of_a_folder_holding_only_checkpoint_old_continues_in_that_folder(
    base, copy, capsys, monkeypatch
):
    root, original, _ = base
    before = snapshot(original)
    os.replace(copy / "checkpoint", copy / "checkpoint.old")  # a save killed mid-swap
    monkeypatch.chdir(root)  # where the checkpoint's saved, relative out ("run") points
    rc, _, err = run(capsys, "train", "--resume", copy, "--epochs", "3", "--quiet")
    assert rc == 0, err
    assert snapshot(original) == before  # the run the saved out names is untouched
    _, state = ckpt.load_checkpoint(copy)
    assert state["loader"] == {"epoch": 3, "batch": 0}
    assert len(json.loads((copy / "summary.json").read_text())["config"]) > 0
    rows = (copy / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]
    saved = state["config"]
    for key in ("out", "data"):  # saved paths are absolute: no working directory needed
        assert Path(saved[key]).is_absolute(), saved[key]


def test_resume_of_the_checkpoint_folder_itself_is_refused_and_writes_nowhere(
    base, copy, capsys, monkeypatch
):
    root, original, _ = base
    before, mine = snapshot(original), snapshot(copy)
    monkeypatch.chdir(root)
    rc, _, err = run(capsys, "train", "--resume", copy / "checkpoint", "--epochs", "3")
    assert rc == 2
    line = one_error_line(err)
    assert "checkpoint folder" in line and str(copy) in line
    assert snapshot(original) == before and snapshot(copy) == mine


def test_resume_into_another_out_is_refused_and_leaves_both_runs_as_they_were(
    base, copy, capsys, tmp_path
):
    _, original, _ = base
    other = tmp_path / "other"
    shutil.copytree(copy, other)
    before, mine = snapshot(other), snapshot(copy)
    rc, _, err = run(capsys, "train", "--resume", copy, "--out", other, "--epochs", "3")
    assert rc == 2
    line = one_error_line(err)
    assert line.split("error: ")[1].startswith("--out ") and str(copy) in line
    assert snapshot(other) == before and snapshot(copy) == mine


def test_fit_resumed_into_another_out_is_refused_and_creates_nothing(copy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    with pytest.raises(ResnetlabError, match="continues in .*never elsewhere"):
        fit(tiny_config(elsewhere, epochs=3), resume=str(copy))
    assert not elsewhere.exists()


def test_resume_with_overwrite_is_refused_in_one_line(copy, capsys):
    before = snapshot(copy)
    rc, _, err = run(capsys, "train", "--resume", copy, "--overwrite")
    assert rc == 2
    assert "give one of them" in one_error_line(err)
    assert snapshot(copy) == before


def test_overwrite_clears_every_file_a_run_wrote_and_nothing_else(base, copy, capsys):
    _, _, data = base
    shutil.copytree(copy / "checkpoint", copy / "checkpoint.old")  # a swap killed midway
    (copy / "tensorboard").mkdir()
    (copy / "tensorboard" / "events.out.tfevents.1").write_bytes(b"old")
    (copy / "notes.txt").write_text("mine")
    (copy / "sub").mkdir()
    (copy / "sub" / "steps.jsonl").write_text("mine too")
    assert (copy / "steps.jsonl").exists() and (copy / "steps.csv").exists()
    rc, _, err = run(capsys, "train", *TINY_CLI, "--data", data, "--out", copy, "--epochs", "1",
                     "--overwrite", "--quiet")  # fmt: skip
    assert rc == 0, err
    left = sorted(p.name for p in copy.iterdir())
    assert "steps.jsonl" not in left and "steps.csv" not in left  # this run logs no steps
    assert "checkpoint.old" not in left and "tensorboard" not in left
    assert (copy / "notes.txt").read_text() == "mine"
    assert (copy / "sub" / "steps.jsonl").read_text() == "mine too"
    rows = (copy / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1]


def test_every_file_a_run_writes_is_in_the_one_list_that_overwrite_clears(base):
    _, original, _ = base
    written = {p.name for p in original.iterdir()} - {".lock"}
    assert written <= set(NAMES_WRITTEN), written - set(NAMES_WRITTEN)
    for name in ("metrics.csv", "steps.csv", "checkpoint.old", "tensorboard"):
        assert name in NAMES_WRITTEN


# 3. a setting changed on resume is applied and recorded, or refused -------------------------


def test_lr_given_on_resume_applies_from_the_next_step_and_is_recorded(copy, capsys):
    # the run's lr: the fast recipe's 0.2 at batch 128, scaled to 0.05 at batch 32
    rc, out, err = run(capsys, "train", "--resume", copy, "--epochs", "3", "--lr", "0.1")
    assert rc == 0, err
    assert "changed on resume: epochs 2 -> 3, lr 0.05 -> 0.1 from step 13" in out
    recipe = get_recipe("fast", epochs=3, batch_size=32, lr=0.1)
    rows = [json.loads(r) for r in (copy / "metrics.jsonl").read_text().splitlines()]
    # the lr of the last step (18, 0-based 17) of the new schedule, at the new peak
    assert rows[-1]["lr"] == pytest.approx(0.1 * lr_factor(recipe, 17, 18))
    assert rows[-1]["changed"] == "epochs 2 -> 3, lr 0.05 -> 0.1 from step 13"
    assert "changed" not in rows[0] and "changed" not in rows[1]
    steps = [json.loads(r) for r in (copy / "steps.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps[-3:]] == [14, 16, 18]
    for s in steps[-3:]:  # each logged step ran at the new schedule's rate
        assert s["lr"] == pytest.approx(0.1 * lr_factor(recipe, s["step"] - 1, 18))
    _, state = ckpt.load_checkpoint(copy)
    assert [(c["setting"], c["from"], c["to"], c["step"]) for c in state["changes"]] == [
        ("epochs", 2, 3, 13),
        ("lr", 0.05, 0.1, 13),
    ]


@pytest.mark.parametrize(
    "given, shown, was",
    [
        (["--val-split", "0.25"], "--val-split 0.25:", "trained with 0.0;"),
        (["--subset", "96"], "--subset 96:", "trained with None;"),
        (["--seed", "1"], "--seed 1:", "trained with 0;"),
        (["--batch-size", "16"], "--batch-size 16:", "trained with 32;"),
        (
            ["--option", "widths=[8,8,8]"],
            "model options {'widths': [8, 8, 8]}:",
            "'widths': [8, 16",
        ),
        (["--recipe", "paper"], "--recipe 'paper':", "trained with 'fast';"),
        (["--no-augment"], "--augment False:", "trained with True;"),
        (["--epochs", "1"], "--epochs 1:", "already trained 2 epochs (of 2)"),
    ],
)
def test_a_setting_that_cannot_change_mid_run_is_refused_naming_both_values(
    copy, capsys, given, shown, was
):
    before = snapshot(copy)
    rc, _, err = run(capsys, "train", "--resume", copy, *given)
    assert rc == 2
    line = one_error_line(err)
    assert line.split("error: ")[1].startswith(shown) and was in line, line
    assert snapshot(copy) == before


def test_another_data_source_on_resume_is_refused(copy, capsys, tmp_path):
    other = write_npz(tmp_path / "other.npz")
    before = snapshot(copy)
    rc, _, err = run(capsys, "train", "--resume", copy, "--data", other)
    assert rc == 2
    line = one_error_line(err)
    assert "other.npz" in line and "tiny.npz" in line
    assert snapshot(copy) == before


def _rewrite(npz: Path, what: str) -> None:
    with np.load(npz) as f:
        arrays = {k: f[k] for k in f.files}
    if what == "labels":  # the same counts per class, other images labelled so
        arrays["y_train"] = np.roll(arrays["y_train"], 1)
    else:  # the same shapes and labels, other pixels
        arrays["x_train"] = 255 - arrays["x_train"]
    np.savez(npz, **arrays)


@pytest.mark.parametrize("what", ["labels", "images"])
def test_data_changed_on_disk_under_the_same_shape_is_refused_naming_what_changed(
    capsys, tmp_path, what
):
    data, out = write_npz(tmp_path / "tiny.npz"), tmp_path / "run"
    rc, _, err = run(capsys, "train", *TINY_CLI, "--data", data, "--out", out, "--epochs", "1",
                     "--quiet")  # fmt: skip
    assert rc == 0, err
    _rewrite(data, what)
    before = snapshot(out)
    rc, _, err = run(capsys, "train", "--resume", out, "--epochs", "2")
    assert rc == 2
    line = one_error_line(err)
    assert f"train {what}" in line and "changed" in line
    assert snapshot(out) == before


def test_a_checkpoint_without_a_fingerprint_still_resumes_and_says_so_in_one_line(
    base, copy, capsys
):
    root, _, _ = base
    state = ckpt.load_checkpoint(copy)[1]
    state.pop("data_fingerprint", None)
    state.pop("changes", None)
    state["config"]["out"] = "run"  # as the old code saved it: relative to where it ran
    state["config"]["data"] = str(root / "tiny.npz")
    torch.save(state, copy / "checkpoint" / "state.pt")
    rc, _, err = run(capsys, "train", "--resume", copy, "--epochs", "3", "--quiet")
    assert rc == 0, err
    notes = [line for line in err.splitlines() if "fingerprint" in line]
    assert len(notes) == 1 and "not checked" in notes[0], err
    assert ckpt.load_checkpoint(copy)[1]["data_fingerprint"]  # the next checkpoint has one
