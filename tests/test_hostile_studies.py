"""A study folder's nets are the nets their folders claim: foreign weights are refused; a finished
run of other settings or other data is refused; its logs, summary and weights metadata are checked
before a number of them reaches a table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers.train import write_npz
from safetensors import safe_open
from safetensors.torch import save_file

from resnetlab import ResnetlabError, create_model, save_weights
from resnetlab.cli import main
from resnetlab.experiments.gradients import run_gradients
from resnetlab.experiments.nets import check_study_net, study_net_of


def test_study_net_of_reads_family_and_depth_from_metadata():
    assert study_net_of({"name": "resnet56"}) == ("resnet", 56)
    assert study_net_of({"name": "plain20", "options": {"layers": [1, 1, 1]}}) == ("plain", 8)
    assert study_net_of({"name": "resnet50"}) is None
    assert study_net_of({"name": "no-such-net"}) is None


def test_gradients_refuses_a_foreign_net_in_a_study_folder(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (16, 8, 8), dtype=np.uint8)
    y = np.arange(16) % 2
    data = tmp_path / "d.npz"
    np.savez(data, x_train=x, y_train=y, x_test=x, y_test=y)
    planted = tmp_path / "study" / "plain8-s0" / "last.safetensors"
    planted.parent.mkdir(parents=True)
    net = create_model("resnet56", num_classes=2, in_chans=1)
    save_weights(net, planted, {"mean": [0.5], "std": [0.25], "input_size": [1, 8, 8]})
    (planted.parent / "summary.json").write_text("{}")  # as a finished run's folder
    with pytest.raises(ResnetlabError, match="claims plain-8, but the weights are resnet-56"):
        run_gradients(
            str(data), str(tmp_path / "out"), depths=(8,), families=("plain",),
            study=str(tmp_path / "study"), batches=1, batch_size=8, say=lambda s: None,
        )  # fmt: skip


def test_check_study_net_accepts_the_claimed_net():
    check_study_net({"name": "plain20", "options": {"layers": [1, 1, 1]}}, "plain", 8, "w")
    with pytest.raises(ResnetlabError, match="claims resnet-8, but the weights are 'resnet50'"):
        check_study_net({"name": "resnet50"}, "resnet", 8, "w")


# --------------------------------------------------------------------------------------------
# a study folder's runs, read back: checked before a number of them reaches a table

STUDY = ["--depths", "8", "--epochs", "1", "--batch-size", "32", "--log-every", "2",
         "--precision", "fp32", "--threads", "1", "--device", "cpu"]  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(data, study): a finished one-epoch study of plain-8 and resnet-8."""
    base = tmp_path_factory.mktemp("trained")
    data = write_npz(base / "squares.npz")
    out = base / "deg"
    assert main(["experiment", "degradation", "--data", str(data), "--out", str(out), *STUDY]) == 0
    return data, out


def rerun(data: Path, out: Path, capsys, *extra: str) -> tuple[int, list[str]]:
    capsys.readouterr()
    rc = main(["experiment", "degradation", "--data", str(data), "--out", str(out), *STUDY,
               *extra])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    return rc, [line for line in err if not line.startswith("warning:")]


def copy_of(trained, tmp_path) -> Path:
    out = tmp_path / "deg"
    shutil.copytree(trained[1], out)
    return out


def test_a_study_that_trains_more_refuses_nets_trained_on_other_data(tmp_path, capsys):
    data = write_npz(tmp_path / "squares.npz")
    out = tmp_path / "deg"
    assert main(["experiment", "degradation", "--data", str(data), "--out", str(out), *STUDY]) == 0
    write_npz(data, n_train=160)  # the same path now holds other images
    rc, err = rerun(data, out, capsys, "--depths", "8,14")
    assert rc == 2 and len(err) == 1, err
    assert "plain8-s0 was trained on other data than" in err[0], err
    assert "train images 192 -> 160" in err[0], err
    assert not (out / "plain14-s0").exists()  # refused before any new net trained
    # with the data it trained on, the same command goes on (reads the two back, trains two)
    write_npz(data)
    rc, err = rerun(data, out, capsys, "--depths", "8,14")
    assert rc == 0, err
    assert {r["depth"] for r in json.loads((out / "degradation.json").read_text())["nets"]} == {
        8, 14}  # fmt: skip


@pytest.mark.parametrize(
    "key, value, shown",
    [("augment", False, "augment False, not True"), ("val_split", 0.5, "val_split 0.5, not 0.0"),
     ("init_from", "w.safetensors", "init_from 'w.safetensors', not None")],
)  # fmt: skip
def test_a_run_of_other_settings_than_the_studys_is_refused(trained, tmp_path, capsys, key, value,
                                                            shown):  # fmt: skip
    out = copy_of(trained, tmp_path)
    path = out / "resnet8-s0" / "summary.json"
    summary = json.loads(path.read_text())
    summary["config"][key] = value
    path.write_text(json.dumps(summary))
    rc, err = rerun(trained[0], out, capsys)
    assert rc == 2 and len(err) == 1, err
    assert f"resnet8-s0 holds a run of other settings ({shown})" in err[0], err


def test_a_run_on_other_threads_or_device_settings_still_counts(trained, tmp_path, capsys):
    out = copy_of(trained, tmp_path)
    path = out / "resnet8-s0" / "summary.json"
    summary = json.loads(path.read_text())
    summary["config"].update(threads=7, device="cuda", compile="on", checkpoint_minutes=1.0)
    path.write_text(json.dumps(summary))
    before = {p.name: p.read_bytes() for p in (out / "resnet8-s0").iterdir() if p.is_file()}
    capsys.readouterr()
    rc = main(["experiment", "degradation", "--data", str(trained[0]), "--out", str(out),
               *STUDY])  # fmt: skip
    said = capsys.readouterr()
    assert rc == 0, said.err
    # counted as the study's finished net: read back, not trained again
    assert "plan: 2 net(s): 2 done, 0 to resume, 0 to start" in said.out, said.out
    after = {p.name: p.read_bytes() for p in (out / "resnet8-s0").iterdir() if p.is_file()}
    assert after == before


def _edit_rows(path: Path, i: int, **fields) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[i].update(fields)
    for k in [k for k, v in fields.items() if v is None]:
        del rows[i][k]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: _edit_rows(d / "metrics.jsonl", 0, train_top1_err=float("nan")),
         "metrics.jsonl: line 1 is not a row of a run's log"),
        (lambda d: _edit_rows(d / "metrics.jsonl", 0, test_top1_err=-3.5),
         "metrics.jsonl: line 1 is not a row of a run's log"),
        (lambda d: _edit_rows(d / "metrics.jsonl", 0, train_top1_err=None),
         "metrics.jsonl: line 1 is not a row of a run's log"),
        (lambda d: _edit_rows(d / "metrics.jsonl", 0, test_top1_err=None),
         "metrics.jsonl holds no tested epoch"),
        (lambda d: _edit_rows(d / "steps.jsonl", 0, step="2"),
         "steps.jsonl: line 1 is not a row of a run's log"),
        (lambda d: (d / "metrics.jsonl").write_text("{\n"), "metrics.jsonl: line 1 is not JSON"),
        (lambda d: _edit_summary(d, steps=None), "summary.json: no steps"),
        (lambda d: _edit_summary(d, train_seconds=float("inf")),
         "summary.json: train_seconds is inf; expected a finite number of seconds >= 0"),
        (lambda d: _edit_summary(d, model=["resnet8"]), "summary.json: model is ['resnet8']"),
    ],
)  # fmt: skip
def test_a_finished_runs_bad_log_or_summary_is_refused_in_one_line(trained, tmp_path, capsys,
                                                                  edit, message):  # fmt: skip
    out = copy_of(trained, tmp_path)
    edit(out / "plain8-s0")
    rc, err = rerun(trained[0], out, capsys)
    assert rc == 2 and len(err) == 1, err
    assert message in err[0] and "plain8-s0" in err[0], err
    assert "remove the run's folder to train the net again" in err[0] or "JSON" in err[0], err


def _edit_summary(run: Path, **fields) -> None:
    path = run / "summary.json"
    summary = json.loads(path.read_text())
    summary.update(fields)
    for k in [k for k, v in fields.items() if v is None]:
        del summary[k]
    path.write_text(json.dumps(summary))


def test_weights_whose_metadata_lies_about_the_net_are_refused(trained, tmp_path, capsys):
    out = copy_of(trained, tmp_path)
    path = out / "plain8-s0" / "last.safetensors"
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = f.metadata()
    inner = json.loads(meta["resnetlab"])
    inner["num_classes"] = 1000  # the tensors still have the data's 4 classes
    save_file(tensors, str(path), {**meta, "resnetlab": json.dumps(inner)})
    rc, err = rerun(trained[0], out, capsys)
    assert rc == 2 and len(err) == 1, err
    assert "its tensors are not those of the net its metadata describes" in err[0], err
    assert "fc." in err[0], err


def test_the_parameter_count_is_the_nets_own(trained):
    nets = json.loads((trained[1] / "degradation.json").read_text())["nets"]
    for r in nets:
        net = create_model(r["model"], num_classes=4, in_chans=1)
        assert r["params"] == sum(p.numel() for p in net.parameters())


def test_a_finished_net_whose_checkpoint_is_gone_is_named_not_checked(trained, tmp_path, capsys):
    out = copy_of(trained, tmp_path)
    (out / "resnet8-s0" / "checkpoint" / "model.safetensors").unlink()  # deleted to save room
    capsys.readouterr()
    rc = main(["experiment", "degradation", "--data", str(trained[0]), "--out", str(out), *STUDY,
               "--families", "resnet", "--depths", "8,14"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "resnet8-s0: no readable checkpoint keeps the data it trained on" in err, err
    assert (out / "resnet14-s0" / "summary.json").is_file()
