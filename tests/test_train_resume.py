"""Exact resume after SIGKILL mid-epoch, Ctrl-C that saves, NaN loss that stops and keeps the last
good checkpoint; all on a tiny model in fresh processes through the command line."""

from __future__ import annotations

import signal

import pytest
import torch
from helpers.train import TINY_CLI, run_cli, write_npz
from safetensors.torch import load_file

from resnetlab.train.checkpoint import load_checkpoint


def _train_args(data, out, *extra):
    return ["train", *TINY_CLI, "--data", str(data), "--out", str(out), "--epochs", "2",
            "--checkpoint-every", "4", *extra]  # fmt: skip


def _finish(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted run, one killed with SIGKILL mid-epoch, one stopped by Ctrl-C; then both
    interrupted runs resumed (two rounds of processes running side by side)."""
    root = tmp_path_factory.mktemp("resume")
    data = write_npz(root / "tiny.npz")  # 192 images, batch 32: 6 steps per epoch, 12 in all
    procs = {
        "ref": run_cli(_train_args(data, root / "ref")),
        "killed": run_cli(_train_args(data, root / "killed"), signal_at="KILL:9"),
        "stopped": run_cli(_train_args(data, root / "stopped"), signal_at="INT:3"),
    }
    res = {name: _finish(p) for name, p in procs.items()}
    res["killed_state"] = load_checkpoint(root / "killed")[1]
    res["stopped_state"] = load_checkpoint(root / "stopped")[1]
    procs = {
        "killed_resumed": run_cli(["train", "--resume", str(root / "killed")]),
        "stopped_resumed": run_cli(["train", "--resume", "--out", str(root / "stopped")]),
    }
    res.update({name: _finish(p) for name, p in procs.items()})
    res["root"] = root
    return res


def _weights(path):
    return load_file(str(path))


def test_uninterrupted_run_succeeds(runs):
    rc, out, err = runs["ref"]
    assert rc == 0, err
    assert "test accuracy" in out


def test_sigkill_mid_epoch_leaves_checkpoint_at_step_8(runs):
    rc, _, _ = runs["killed"]
    assert rc == -signal.SIGKILL
    state = runs["killed_state"]
    # killed right after step 9 (epoch 2, batch 3); the last checkpoint is step 8, mid-epoch 2
    assert state["step"] == 8
    assert state["loader"] == {"epoch": 1, "batch": 2}


def test_resume_after_sigkill_ends_with_bit_identical_weights(runs):
    rc, out, err = runs["killed_resumed"]
    assert rc == 0, err
    assert "resumed from" in out
    ref = _weights(runs["root"] / "ref" / "last.safetensors")
    got = _weights(runs["root"] / "killed" / "last.safetensors")
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    ck_ref = load_checkpoint(runs["root"] / "ref")[0]
    ck_got = load_checkpoint(runs["root"] / "killed")[0]
    for k in ck_ref:
        assert torch.equal(ck_ref[k], ck_got[k]), k


def test_resumed_run_logs_every_epoch_once(runs):
    import json

    rows = [
        json.loads(line)
        for line in (runs["root"] / "killed" / "metrics.jsonl").read_text().splitlines()
    ]
    ref = [
        json.loads(line)
        for line in (runs["root"] / "ref" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert [r["test_top1_err"] for r in rows] == [r["test_top1_err"] for r in ref]
    assert [r["train_loss"] for r in rows] == [r["train_loss"] for r in ref]


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(runs):
    rc, _, err = runs["stopped"]
    assert rc == 130
    assert "checkpoint saved" in err
    assert "Traceback" not in err
    state = runs["stopped_state"]
    # the signal lands after step 3; the step in flight (4) completes, then the run saves and stops
    assert state["step"] == 4
    assert state["loader"] == {"epoch": 0, "batch": 4}


def test_resume_after_ctrl_c_matches_uninterrupted_run(runs):
    rc, _, err = runs["stopped_resumed"]
    assert rc == 0, err
    ref = _weights(runs["root"] / "ref" / "last.safetensors")
    got = _weights(runs["root"] / "stopped" / "last.safetensors")
    for k in ref:
        assert torch.equal(ref[k], got[k]), k


def test_nan_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(tmp_path):
    data = write_npz(tmp_path / "tiny.npz")
    rc, _, err = _finish(
        run_cli(
            [
                "train",
                *TINY_CLI,
                "--data",
                str(data),
                "--out",
                str(tmp_path / "run"),
                "--epochs",
                "3",
                "--checkpoint-every",
                "1",
                "--lr",
                "1e30",
            ]
        )  # fmt: skip
    )
    assert rc == 2, err
    assert "loss became" in err and "last good checkpoint" in err
    assert "Traceback" not in err
    weights, state = load_checkpoint(tmp_path / "run")
    assert state["step"] >= 1
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
