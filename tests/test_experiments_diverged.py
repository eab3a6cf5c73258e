"""A net whose loss becomes non-finite is a result of a study, not the end of it: the study goes
on, the net's folder keeps `diverged.json`, the JSON, table and figure show it as diverged and
leave it out of the means, a rerun counts it as done, and a crafted record is refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from helpers.train import tiny_config, tiny_splits, write_npz

import resnetlab.experiments.tasks as tasks
from resnetlab.cli import main
from resnetlab.train.loop import fit
from resnetlab.train.step import NonFiniteLoss

STUDY = ["--depths", "8", "--epochs", "1", "--batch-size", "32", "--log-every", "2",
         "--precision", "fp32", "--threads", "1", "--device", "cpu"]  # fmt: skip
GRID = ["--depths", "8", "--sizes", "40", "--steps", "4", "--batch-size", "20",
        "--precision", "fp32", "--threads", "1", "--device", "cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_npz(tmp_path_factory.mktemp("data") / "squares.npz")


def study_json(out: Path, name: str = "degradation.json") -> dict:
    return json.loads((out / name).read_text())


def diverge_plain_nets(monkeypatch) -> None:
    """Train the plain nets at lr 1e30 (they diverge for real); the others as the study asks."""
    real = tasks.fit

    def planted(cfg, *args, **kwargs):
        if cfg.model.startswith("plain"):
            cfg = replace(cfg, lr=1e30)
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(tasks, "fit", planted)


def test_the_error_names_where_the_loss_went_non_finite(tmp_path):
    with pytest.raises(NonFiniteLoss) as info:
        fit(tiny_config(tmp_path, lr=1e30, epochs=2), tiny_splits())
    e = info.value
    assert e.step >= 1 and e.epoch == (e.step - 1) // 6 + 1  # 192 images at batch 32: 6 steps
    assert e.lr > 0 and f"step {e.step} " in str(e)


def test_a_diverged_net_is_kept_and_the_study_goes_on(data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "deg"
    diverge_plain_nets(monkeypatch)
    args = ["experiment", "degradation", "--data", str(data), "--out", str(out), "--seeds", "2",
            *STUDY]  # fmt: skip
    assert main(args) == 0
    said = capsys.readouterr().out
    value = study_json(out)
    plain = [r for r in value["nets"] if r["family"] == "plain"]
    resnet = [r for r in value["nets"] if r["family"] == "resnet"]
    assert [r["seed"] for r in plain] == [0, 1] and [r["seed"] for r in resnet] == [0, 1]
    for r in plain:
        assert r["diverged"] is True and r["diverged_step"] >= 1
        assert r["final_test_err"] is None and r["final_train_err"] is None
        assert r["params"] == resnet[0]["params"]  # option A: the twins' counts are equal
        record = json.loads((Path(r["run_dir"]) / tasks.DIVERGED_FILE).read_text())
        assert record["step"] == r["diverged_step"] and record["config"]["lr"] is None
        assert f"plain-8 seed {r['seed']}: diverged at step {r['diverged_step']} " in said
    assert all(r["diverged"] is False and 0 <= r["final_test_err"] <= 1 for r in resnet)
    rows = {r["family"]: r for r in value["summary"]}
    assert rows["plain"]["diverged"] == 2 and rows["plain"]["final_test_err_mean"] is None
    assert rows["resnet"]["diverged"] == 0
    errs = [r["final_test_err"] for r in resnet]
    assert rows["resnet"]["final_test_err_mean"] == pytest.approx(sum(errs) / 2)
    table = (out / "degradation.md").read_text()
    assert "| plain | 8 |" in table and "| 2 (2 diverged) | diverged |" in table
    assert "left out of the means" in table
    assert (out / "degradation.png").stat().st_size > 10_000

    # a rerun trains nothing: the diverged nets are results, named as such in the plan
    monkeypatch.setattr(tasks, "fit", lambda *a, **k: pytest.fail("a finished net retrained"))
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "plan: 4 net(s): 4 done, 0 to resume, 0 to start" in said
    assert "plain-8 seed 1: diverged at step" in said and "kept as a result" in said
    assert study_json(out)["nets"] == value["nets"]

    # gradients --from the study probes the trained nets and says which diverged
    grads = tmp_path / "grads"
    assert main(["experiment", "gradients", "--data", str(data), "--from", str(out),
                 "--depths", "8", "--out", str(grads), "--batches", "1", "--batch-size", "8",
                 "--threads", "1"]) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert "found in" in said and "(diverged, probed at initialisation only: plain-8)" in said
    assert "plain-8 seed 0: diverged in the study" in said
    states = [(r["family"], r["state"]) for r in json.loads((grads / "gradients.json").read_text())]
    assert ("resnet", "trained") in states and ("plain", "trained") not in states


def test_one_diverged_seed_is_left_out_of_the_mean(data, tmp_path):
    out = tmp_path / "deg"
    args = ["experiment", "degradation", "--data", str(data), "--out", str(out), "--families",
            "resnet", "--seeds", "2", *STUDY]  # fmt: skip
    assert main(args) == 0
    trained = study_json(out)["nets"]
    seed1 = Path(trained[1]["run_dir"])
    # a record beside a summary (a run finished later, say by train --resume): trained wins
    (seed1 / tasks.DIVERGED_FILE).write_text("junk")
    assert main(args) == 0
    assert study_json(out)["summary"][0]["diverged"] == 0
    # make seed 1 a diverged net: its folder holds the record a divergence leaves, no summary
    config = json.loads((seed1 / "summary.json").read_text())["config"]
    (seed1 / "summary.json").unlink()
    record = {"step": 3, "epoch": 1, "lr": 0.1, "params": trained[1]["params"],
              "error": "loss became nan", "config": config}  # fmt: skip
    (seed1 / tasks.DIVERGED_FILE).write_text(json.dumps(record))
    assert main(args) == 0
    value = study_json(out)
    (row,) = value["summary"]
    assert row["seeds"] == 2 and row["diverged"] == 1
    assert row["final_test_err_mean"] == pytest.approx(trained[0]["final_test_err"])
    assert row["final_test_err_std"] == 0.0
    table = (out / "degradation.md").read_text()
    assert "| 2 (1 diverged) |" in table and " ± " not in table.split("|---")[1]


RECORD = {"step": 3, "epoch": 1, "lr": 0.1, "params": 100, "error": "x", "config": {}}
NOT_A_RECORD = "diverged.json: not a divergence record of this study"


@pytest.mark.parametrize(
    "text, message",
    [
        (json.dumps({**RECORD, "step": 0}), NOT_A_RECORD),
        (json.dumps({**RECORD, "step": "3"}), NOT_A_RECORD),
        (json.dumps({**RECORD, "lr": float("nan")}), NOT_A_RECORD),
        (json.dumps({**RECORD, "lr": 0}), NOT_A_RECORD),
        (json.dumps(RECORD).replace("0.1", "1" + "0" * 400), NOT_A_RECORD),  # overflows a float
        (json.dumps({**RECORD, "params": True}), NOT_A_RECORD),
        (json.dumps({**RECORD, "config": ["not", "a", "mapping"]}), NOT_A_RECORD),
        ("[" * 100_000 + "]" * 100_000, "diverged.json: unreadable (RecursionError"),
        ("[1, 2]", "diverged.json: expected a JSON object"),
        (json.dumps(RECORD), "holds a run of other settings (model missing, not 'resnet8')"),
    ],
)
def test_a_crafted_divergence_record_is_refused_in_one_line(data, tmp_path, capsys, text,
                                                            message):  # fmt: skip
    out = tmp_path / "deg"
    args = ["experiment", "degradation", "--data", str(data), "--out", str(out), "--families",
            "resnet", *STUDY]  # fmt: skip
    folder = out / "resnet8-s0"
    folder.mkdir(parents=True)
    (folder / tasks.DIVERGED_FILE).write_text(text)
    assert main(args) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_a_diverged_net_of_the_overfitting_grid(data, tmp_path, capsys):
    out = tmp_path / "over"
    grid = ["experiment", "overfitting", "--data", str(data), "--out", str(out),
            "--regularisation", "none", "--lr", "1e30", *GRID]  # fmt: skip
    assert main(grid) == 0
    said = capsys.readouterr().out
    (net,) = study_json(out, "overfitting.json")["nets"]
    assert net["diverged"] is True and net["gap"] is None and net["final_train_err"] is None
    assert net["regularisation"] == "none" and net["train_size"] == 40 and net["params"] > 0
    assert net["weight_decay"] == 0.0 and net["epochs"] == net["diverged_epoch"] - 1
    assert "resnet-8 on 40 images, none, seed 0: diverged at step" in said
    table = (out / "overfitting.md").read_text()
    assert "| 1 (1 diverged) | diverged | diverged | diverged |" in table
    assert (out / "overfitting.png").is_file()


def test_nets_that_diverge_on_worker_processes_are_kept_too(data, tmp_path, capsys):
    out = tmp_path / "deg"
    args = ["experiment", "degradation", "--data", str(data), "--out", str(out), "--workers", "2",
            "--lr", "1e30", *STUDY]  # fmt: skip
    assert main(args) == 0
    said = capsys.readouterr().out
    nets = study_json(out)["nets"]
    assert [(r["family"], r["diverged"]) for r in nets] == [("plain", True), ("resnet", True)]
    assert all((Path(r["run_dir"]) / tasks.DIVERGED_FILE).is_file() for r in nets)
    assert "plain-8 seed 0: diverged at step" in said and "resnet-8 seed 0: diverged at" in said
