"""The three `resnetlab experiment` commands on tiny budgets: the files they write and their keys,
a killed degradation study that resumes without retraining finished nets, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.train import run_cli, write_npz
from PIL import Image

from resnetlab.cli import main
from resnetlab.errors import ResnetlabError
from resnetlab.models import create_model, read_metadata

STUDY = ["--depths", "8", "--epochs", "2", "--batch-size", "32", "--log-every", "2",
         "--precision", "fp32", "--threads", "1", "--device", "cpu"]  # fmt: skip
RECORD_KEYS = {"family", "depth", "seed", "params", "final_train_err", "final_test_err",
               "best_test_err"}  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_npz(tmp_path_factory.mktemp("data") / "squares.npz")


@pytest.fixture(scope="module")
def study(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study") / "deg"
    assert main(["experiment", "degradation", "--data", str(data), "--out", str(out), *STUDY]) == 0
    return out


def records_of(out: Path, name: str = "degradation.json") -> list[dict]:
    return json.loads((out / name).read_text())["nets"]


def test_degradation_writes_figure_table_and_json(study):
    records = records_of(study)
    assert [(r["family"], r["depth"], r["seed"]) for r in records] == [
        ("plain", 8, 0),
        ("resnet", 8, 0),
    ]
    for r in records:
        assert r.keys() >= RECORD_KEYS
        for k in ("final_train_err", "final_test_err", "best_test_err"):
            assert 0.0 <= r[k] <= 1.0
        assert r["best_test_err"] <= r["final_test_err"]
        # option A adds no parameters: the twins have the same count; each net its own name
        want = sum(p.numel() for p in create_model("plain8", num_classes=4,
                                                   in_chans=1).parameters())  # fmt: skip
        assert r["params"] == want
        assert r["model"] == f"{r['family']}8"
        assert r["precision"] == "fp32"  # what it trained in
    summary = json.loads((study / "degradation.json").read_text())["summary"]
    assert [(s["family"], s["depth"], s["seeds"]) for s in summary] == [
        ("plain", 8, 1),
        ("resnet", 8, 1),
    ]
    table = (study / "degradation.md").read_text()
    assert "| plain | 8 |" in table and "| resnet | 8 |" in table
    assert (study / "degradation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("plain8-s0", "resnet8-s0"):
        run = study / name
        assert (run / "last.safetensors").is_file() and (run / "summary.json").is_file()
    # each net's figures are its run's: the last epoch's errors, and the lowest test error
    for r in records:
        rows = [json.loads(line) for line in (Path(r["run_dir"]) / "metrics.jsonl").open()]
        assert [row["epoch"] for row in rows] == [1, 2]
        assert r["final_train_err"] == rows[-1]["train_top1_err"]
        assert r["final_test_err"] == rows[-1]["test_top1_err"]
        assert r["best_test_err"] == min(row["test_top1_err"] for row in rows)
    assert [(s["final_test_err_mean"], s["final_test_err_std"]) for s in summary] == [
        (r["final_test_err"], 0.0) for r in records
    ]  # one seed: its value, no spread


def test_study_logs_training_error_every_few_steps_and_test_error_every_epoch(study):
    run = study / "resnet8-s0"
    steps = [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # 192 images in batches of 32: 6 steps an epoch, 12 in all, a point every 2 steps
    assert [r["step"] for r in steps] == [2, 4, 6, 8, 10, 12]
    assert all(r["images"] == 64 and 0 <= r["train_top1_err"] <= 1 for r in steps)
    assert [r["step"] for r in epochs] == [6, 12]
    assert all(0 <= r["test_top1_err"] <= 1 for r in epochs)
    # the epoch's training error is the mean of its windows (equal-sized here)
    first = sum(r["train_top1_err"] for r in steps[:3]) / 3
    assert epochs[0]["train_top1_err"] == pytest.approx(first)


def test_killed_study_resumes_without_retraining_finished_nets(data, study, tmp_path):
    out = tmp_path / "deg"
    base = ["experiment", "degradation", "--data", str(data), "--out", str(out), *STUDY]
    # the plain net alone, then the full study killed (SIGKILL) during the ResNet at step 9
    assert main([*base, "--families", "plain"]) == 0
    plain_before = (out / "plain8-s0" / "last.safetensors").read_bytes()
    plain_mtime = (out / "plain8-s0" / "summary.json").stat().st_mtime_ns
    p = run_cli(base, signal_at="KILL:9")
    _, err = p.communicate(timeout=300)
    assert p.returncode == -9, err
    assert not (out / "resnet8-s0" / "summary.json").exists()
    assert (out / "resnet8-s0" / "checkpoint").is_dir()
    p = run_cli(base)
    stdout, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "plain-8 seed 0: already trained" in stdout
    assert "resnet-8 seed 0: resuming" in stdout
    assert (out / "plain8-s0" / "summary.json").stat().st_mtime_ns == plain_mtime
    assert (out / "plain8-s0" / "last.safetensors").read_bytes() == plain_before
    # the resumed net ends exactly where the uninterrupted study's did, step log included
    for f in ("last.safetensors", "steps.jsonl"):
        assert (out / "resnet8-s0" / f).read_bytes() == (study / "resnet8-s0" / f).read_bytes()
    assert len(records_of(out)) == 2


@pytest.mark.parametrize("name", ["degradation", "overfitting"])
def test_a_second_study_on_a_folder_in_use_is_refused(data, tmp_path, capsys, name):
    from resnetlab.experiments.tasks import study_lock

    out = tmp_path / "busy"
    args = {"degradation": ["--depths", "8", "--epochs", "1"],
            "overfitting": ["--depths", "8", "--sizes", "40", "--steps", "2"]}[name]  # fmt: skip
    with study_lock(out):  # a study running there (another process holds it the same way)
        rc = main(["experiment", name, "--data", str(data), "--out", str(out), *args,
                   "--batch-size", "20", "--device", "cpu"])  # fmt: skip
        assert list(out.iterdir()) == []  # nothing trained into it
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "another study is running in this folder" in err[0], err
    with study_lock(out):  # free again once the first study ends
        pass
    # a folder the lock made is removed if the study fails with it still empty
    with pytest.raises(ResnetlabError), study_lock(tmp_path / "new"):
        raise ResnetlabError("refused")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--epochs", "3", "(epochs 2, not 3)"),
        ("--precision", "auto", "(precision 'fp32', not 'auto')"),
    ],
)
def test_study_refuses_a_folder_holding_other_settings(data, study, capsys, flag, value, message):
    args = list(STUDY)
    args[args.index(flag) + 1] = value
    rc = main(["experiment", "degradation", "--data", str(data), "--out", str(study), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert f"holds a run of other settings {message}" in err[0], err


def test_gradients_at_init_and_trained(data, study, tmp_path):
    out = tmp_path / "grad"
    rc = main(["experiment", "gradients", "--data", str(data), "--out", str(out), "--depths",
               "8,14", "--from", str(study), "--batch-size", "32", "--threads", "1"])  # fmt: skip
    assert rc == 0
    rows = json.loads((out / "gradients.json").read_text())
    got = [(r["family"], r["depth"], r["state"]) for r in rows]
    assert got == [
        ("plain", 8, "init"), ("plain", 8, "trained"), ("resnet", 8, "init"),
        ("resnet", 8, "trained"), ("plain", 14, "init"), ("resnet", 14, "init"),
    ]  # fmt: skip
    for r in rows:
        n_conv = 1 + 2 * 3 * (r["depth"] - 2) // 6
        assert len(r["conv_grad_norms"]) == len(r["conv_names"]) == n_conv
        assert len(r["response_stds"]) == n_conv  # every conv of these nets is a 3x3
        assert len(r["block_grad_norms"]) == (r["depth"] - 2) // 2
        assert all(v > 0 for v in r["conv_grad_norms"] + r["block_grad_norms"])
        # the ratios the table shows: the first layer's (block's) gradient over the last one's
        conv, block = r["conv_grad_norms"], r["block_grad_norms"]
        assert r["first_to_last_conv_grad"] == pytest.approx(conv[0] / conv[-1], rel=1e-12)
        assert r["first_to_last_block_grad"] == pytest.approx(block[0] / block[-1], rel=1e-12)
    trained = rows[3]
    assert trained["weights"].endswith("resnet8-s0/last.safetensors")
    assert trained["response_mode"] == "running statistics"
    for f in ("gradients.png", "responses.png"):
        assert (out / f).read_bytes()[:4] == b"\x89PNG"


def test_a_trained_nets_gradients_use_batch_statistics_and_its_responses_running_ones(
    data, study, tmp_path
):
    # the trained row of gradients.json, against the probe run by hand in each BN mode
    from resnetlab.data import load_source
    from resnetlab.experiments.gradients import (
        on_plan,
        probe,
        probe_batches,
        probe_plan,
        run_gradients,
    )
    from resnetlab.models import load_model

    plan = probe_plan(threads=1)
    rows = run_gradients(str(data), str(tmp_path / "g"), depths=(8,), families=("resnet",),
                         study=str(study), batches=1, batch_size=32, say=lambda s: None,
                         plan=plan)  # fmt: skip
    trained = next(r for r in rows if r.state == "trained").probe
    model, meta = load_model(study / "resnet8-s0" / "last.safetensors")
    xs = probe_batches(load_source(str(data)).train, meta["mean"], meta["std"], 32, 1, 0, plan)
    on_plan(model, plan)
    with plan.autocast():
        batch_stats, running = probe(model, xs, train_mode=True), probe(model, xs, train_mode=False)
    assert trained.conv_grad_norms == batch_stats.conv_grad_norms != running.conv_grad_norms
    assert trained.block_grad_norms == batch_stats.block_grad_norms
    assert trained.response_stds == running.response_stds != batch_stats.response_stds


def test_lesion_on_a_resnet_and_its_plain_twin(data, study, tmp_path):
    out = tmp_path / "lesion"
    weights = [str(study / n / "last.safetensors") for n in ("resnet8-s0", "plain8-s0")]
    rc = main(["experiment", "lesion", *weights, "--data", str(data), "--out", str(out),
               "--draws", "2", "--threads", "1"])  # fmt: skip
    assert rc == 0
    rows = json.loads((out / "lesion.json").read_text())
    assert [r["family"] for r in rows] == ["resnet", "plain"]
    for r in rows:
        assert r["blocks"] == ["layer1.0", "layer2.0", "layer3.0"]
        assert 0 <= r["baseline_err"] <= 1
        assert r["ks"] == [1]  # only layer1.0 keeps its shape
    assert all(e is not None for e in rows[0]["single"])
    assert rows[1]["single"][1:] == [None, None]  # a plain downsampling block cannot be skipped
    assert (out / "lesion.png").read_bytes()[:4] == b"\x89PNG"


def test_lesion_of_a_net_whose_blocks_all_change_shape(data, tmp_path, capsys):
    # every block of a one-block-a-stage bottleneck ResNet changes its width: each can be deleted
    # (its shortcut remains), none is drawn at random (the plain twin could not skip it)
    import numpy as np

    from resnetlab.models import save_weights

    model = create_model("resnet50", layers=[1, 1, 1, 1], num_classes=4, in_chans=1)
    classes = [str(c) for c in np.load(data)["classes"]]
    weights = tmp_path / "r50.safetensors"
    save_weights(model, weights, {"classes": classes, "input_size": [1, 8, 8]})
    out = tmp_path / "lesion"
    rc = main(["experiment", "lesion", str(weights), "--data", str(data), "--out", str(out),
               "--threads", "1"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    assert "none is deleted at random" in capsys.readouterr().out
    (row,) = json.loads((out / "lesion.json").read_text())
    assert row["blocks"] == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    assert None not in row["single"] and row["ks"] == row["k_mean"] == []
    assert "| resnet50 | 1 |" in (out / "lesion.md").read_text()
    assert (out / "lesion.png").read_bytes()[:4] == b"\x89PNG"


def test_lesion_refuses_a_net_with_no_deletable_block(data, study, tmp_path, capsys, monkeypatch):
    import resnetlab.experiments.lesion as lesion

    monkeypatch.setattr(lesion, "deletable", lambda block: False)
    rc = main(["experiment", "lesion", str(study / "plain8-s0" / "last.safetensors"), "--data",
               str(data), "--out", str(tmp_path / "lesion")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no block of plain8 can be deleted" in err[0], err
    assert not (tmp_path / "lesion").exists()


def test_commands_run_on_a_class_folder_tree(tmp_path):
    for k, cls in enumerate(("dark", "mid", "light")):
        (tmp_path / "tree" / cls).mkdir(parents=True)
        for i in range(16):
            Image.new("L", (8, 8), 40 + 80 * k + i).save(tmp_path / "tree" / cls / f"{i}.png")
    tree, study = str(tmp_path / "tree"), tmp_path / "study"
    rc = main(["experiment", "degradation", "--data", tree, "--out", str(study), "--depths", "8",
               "--epochs", "1", "--batch-size", "8", "--log-every", "1",
               "--device", "cpu"])  # fmt: skip
    assert rc == 0 and len(records_of(study)) == 2
    grad = str(tmp_path / "grad")
    rc = main(["experiment", "gradients", "--data", tree, "--out", grad, "--depths", "8",
               "--batch-size", "8", "--batches", "1", "--from", str(study)])  # fmt: skip
    assert rc == 0 and len(json.loads((tmp_path / "grad" / "gradients.json").read_text())) == 4
    rc = main(["experiment", "lesion", str(study / "resnet8-s0" / "last.safetensors"), "--data",
               tree, "--out", str(tmp_path / "lesion"), "--draws", "1"])  # fmt: skip
    assert rc == 0 and (tmp_path / "lesion" / "lesion.png").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["degradation", "--families", "plain,vgg"], "unknown family 'vgg'"),
        (["degradation", "--depths", "20,21"], "depth 21 is not of the form 6n+2"),
        (["gradients", "--depths", "7"], "depth 7 is not of the form 6n+2"),
        (["degradation", "--epochs", "0"], "--epochs 0: expected a whole number >= 1"),
        (["degradation", "--data", "no-such-dataset"], "no-such-dataset"),
        (["gradients", "--from", "/no/such/study"], "/no/such/study is not a directory"),
        (["gradients", "--batches", "0"], "batches and batch size must be at least 1"),
        (["lesion", "--draws", "0"], "--draws must be at least 1"),
        (["lesion", "--images", "5", "--all-images"], "--images and --all-images: give one"),
        (["lesion", "--seed", str(10**20)], f"--seed {10**20}: expected a whole number in [0, "),
        (
            ["gradients", "--depths", "8", "--batches", "50", "--batch-size", "32"],
            "--batches 50: 192 training images make 6 whole batch(es) of 32; lower --batches",
        ),
    ],
)
def test_bad_study_input_is_one_line(args, message, data, tmp_path, capsys):
    full = ["experiment", *args[:1], "--out", str(tmp_path / "o"), *args[1:]]
    if args[0] == "lesion":
        full.insert(2, str(tmp_path / "missing.safetensors"))
    if "--data" not in args:
        full += ["--data", str(data)]
    rc = main(full)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err


def test_lesion_refuses_one_file_given_twice(data, study, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(study)
    w = study / "resnet8-s0" / "last.safetensors"
    rc = main(["experiment", "lesion", str(w), "resnet8-s0/../resnet8-s0/last.safetensors",
               "--data", str(data), "--out", str(tmp_path / "o")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "are the same file; give each net's weights once" in err[0], err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("study", ["degradation", "gradients", "lesion"])
def test_an_output_that_is_a_file_is_refused_before_any_work(study, data, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("keep me")
    args = ["experiment", study, "--data", str(data), "--out", str(out)]
    if study == "lesion":
        args.insert(2, str(tmp_path / "missing.safetensors"))  # would fail later, if reached
    rc = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "exists and is not a directory" in err[0], err
    assert out.read_text() == "keep me"


def test_gradients_from_a_study_probes_the_nets_it_holds(data, study, tmp_path, capsys):
    out = tmp_path / "grad"
    rc = main(["experiment", "gradients", "--data", str(data), "--out", str(out), "--from",
               str(study), "--batch-size", "32", "--batches", "1"])  # fmt: skip
    stdout = capsys.readouterr().out
    assert rc == 0
    assert f"trained nets of seed 0 found in {study}: plain-8, resnet-8" in stdout
    assert "initialisation only" not in stdout
    rows = json.loads((out / "gradients.json").read_text())
    assert [(r["family"], r["depth"], r["state"]) for r in rows] == [
        ("plain", 8, "init"), ("plain", 8, "trained"), ("resnet", 8, "init"),
        ("resnet", 8, "trained"),
    ]  # fmt: skip


def test_gradients_take_no_net_of_a_study_still_training(data, study, tmp_path, capsys):
    # a study that is still running (or was stopped): its nets' last.safetensors are an epoch's
    import shutil

    running = tmp_path / "running"
    shutil.copytree(study, running)
    (running / "degradation.json").unlink()  # the study has not ended
    (running / "resnet8-s0" / "summary.json").unlink()  # this net is still training
    out = tmp_path / "grad"
    rc = main(["experiment", "gradients", "--data", str(data), "--out", str(out), "--from",
               str(running), "--depths", "8", "--batch-size", "32", "--batches", "1"])  # fmt: skip
    stdout = capsys.readouterr().out
    assert rc == 0
    assert (
        f"trained nets of seed 0 found in {running}: plain-8 (not trained to their end, probed "
        "at initialisation only: resnet-8)" in stdout
    ), stdout
    assert "resnet-8 seed 0: not trained to its end in the study" in stdout, stdout
    rows = json.loads((out / "gradients.json").read_text())
    assert [(r["family"], r["state"]) for r in rows] == [
        ("plain", "init"), ("plain", "trained"), ("resnet", "init"),
    ]  # fmt: skip


def test_gradients_from_a_folder_without_nets_is_refused_in_one_line(data, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["experiment", "gradients", "--data", str(data), "--out", str(tmp_path / "g"),
               "--from", str(tmp_path / "empty")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "holds no trained net of seed 0" in err[0], err


MLP_STUDY = ["--families", "plain_mlp,residual_mlp", "--depths", "1,3", *STUDY[2:]]


@pytest.fixture(scope="module")
def mlp_study(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mlp") / "deg"
    rc = main(["experiment", "degradation", "--data", str(data), "--out", str(out), *MLP_STUDY])
    assert rc == 0
    return out


def test_degradation_of_the_mlp_twins(mlp_study):
    records = records_of(mlp_study)
    assert [(r["family"], r["depth"], r["model"]) for r in records] == [
        ("plain_mlp", 1, "plain_mlp"), ("residual_mlp", 1, "residual_mlp"),
        ("plain_mlp", 3, "plain_mlp"), ("residual_mlp", 3, "residual_mlp"),
    ]  # fmt: skip
    for r in records:  # the identity shortcut adds no parameters: the twins have the same count
        want = create_model(r["model"], num_classes=4, in_features=64, depth=r["depth"])
        assert r["params"] == sum(p.numel() for p in want.parameters())
        meta = read_metadata(Path(r["run_dir"]) / "last.safetensors")
        assert meta["options"]["depth"] == r["depth"]
    table = (mlp_study / "degradation.md").read_text()
    assert "| plain_mlp | 1 |" in table and "| residual_mlp | 3 |" in table
    assert (mlp_study / "degradation.png").read_bytes()[:4] == b"\x89PNG"


def test_gradients_and_lesion_take_the_mlp_twins(data, mlp_study, tmp_path, capsys):
    out = tmp_path / "grad"
    rc = main(["experiment", "gradients", "--data", str(data), "--out", str(out), "--from",
               str(mlp_study), "--batch-size", "32", "--batches", "1"])  # fmt: skip
    assert rc == 0
    assert "plain_mlp-1, residual_mlp-1, plain_mlp-3, residual_mlp-3" in capsys.readouterr().out
    rows = json.loads((out / "gradients.json").read_text())
    assert len(rows) == 8 and {r["state"] for r in rows} == {"init", "trained"}
    for r in rows:  # stem, then two Linear layers a block; one output gradient a block
        assert r["conv_names"][0] == "stem.0" and len(r["conv_names"]) == 1 + 2 * r["depth"]
        assert r["block_names"] == [f"blocks.{i}" for i in range(r["depth"])]
        assert all(v > 0 for v in r["conv_grad_norms"] + r["block_grad_norms"])
        assert r["response_stds"] == []  # no 3x3 layers
    # --depths without --families: checked against the study's families (blocks, not 6n+2)
    rc = main(["experiment", "gradients", "--data", str(data), "--out", str(tmp_path / "g3"),
               "--from", str(mlp_study), "--depths", "3", "--batch-size", "32",
               "--batches", "1"])  # fmt: skip
    said = capsys.readouterr()
    assert rc == 0, said.err
    assert "found in" in said.out
    rows = json.loads((tmp_path / "g3" / "gradients.json").read_text())
    assert [(r["family"], r["depth"], r["state"]) for r in rows] == [
        ("plain_mlp", 3, "init"), ("plain_mlp", 3, "trained"),
        ("residual_mlp", 3, "init"), ("residual_mlp", 3, "trained"),
    ]  # fmt: skip
    lesion = tmp_path / "lesion"
    weights = [str(mlp_study / n / "last.safetensors") for n in ("residual_mlp3-s0",
                                                                 "plain_mlp3-s0")]  # fmt: skip
    rc = main(["experiment", "lesion", *weights, "--data", str(data), "--out", str(lesion),
               "--draws", "2"])  # fmt: skip
    assert rc == 0
    res = json.loads((lesion / "lesion.json").read_text())
    assert [r["family"] for r in res] == ["resnet", "plain"]
    for r in res:  # every MLP block keeps its width: each can be deleted (or skipped)
        assert r["blocks"] == ["blocks.0", "blocks.1", "blocks.2"]
        assert all(e is not None for e in r["single"]) and r["ks"] == [1, 2, 3]


def test_degradation_seeds_give_a_mean_and_a_band(data, tmp_path):
    out = tmp_path / "seeds"
    rc = main(["experiment", "degradation", "--data", str(data), "--out", str(out),
               "--families", "resnet", "--seeds", "2", *STUDY[:2], "--epochs", "1",
               *STUDY[4:]])  # fmt: skip
    assert rc == 0
    value = json.loads((out / "degradation.json").read_text())
    assert [(r["family"], r["seed"]) for r in value["nets"]] == [("resnet", 0), ("resnet", 1)]
    (row,) = value["summary"]
    errs = [r["final_test_err"] for r in value["nets"]]
    assert row["seeds"] == 2 and row["final_test_err_mean"] == pytest.approx(sum(errs) / 2)
    assert row["final_test_err_std"] == pytest.approx(abs(errs[0] - errs[1]) / 2**0.5)
    assert "mean ± std of 2 seeds" in (out / "degradation.md").read_text()
    first, second = (Path(r["run_dir"]) / "last.safetensors" for r in value["nets"])
    assert first.read_bytes() != second.read_bytes()  # each seed trains its own net
