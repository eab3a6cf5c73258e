"""The training loop in-process on a tiny model: what a run leaves, evaluation, fine-tuning,
freezing, parameter groups, checkpoints that load with weights_only, bad inputs."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.train import TINY_OPTIONS, tiny_config, tiny_splits

from resnetlab.data.loader import BatchLoader
from resnetlab.errors import ResnetlabError
from resnetlab.models import create_model, load_model, read_metadata, save_weights
from resnetlab.policy import resolve_precision
from resnetlab.train.checkpoint import load_checkpoint
from resnetlab.train.evaluate import evaluate
from resnetlab.train.finetune import freeze, init_from, param_groups
from resnetlab.train.loop import fit, train_model
from resnetlab.train.recipes import get_recipe
from resnetlab.train.step import NonFiniteLoss


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)
    summary = fit(tiny_config(out, epochs=3), tiny_splits())
    return out, summary


def test_run_leaves_metrics_with_one_row_per_epoch(run):
    out, _ = run
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    keys = {"epoch", "train_loss", "train_top1_err", "test_top1_err", "test_top5_err", "lr",
            "images_per_s", "seconds"}  # fmt: skip
    for r in rows:
        assert keys <= r.keys()
        for k in ("train_top1_err", "test_top1_err", "test_top5_err"):
            assert 0.0 <= r[k] <= 1.0
        assert r["images_per_s"] > 0 and r["seconds"] > 0
    # the fast recipe decays linearly to zero: the lr falls epoch after epoch
    assert rows[0]["lr"] > rows[1]["lr"] > rows[2]["lr"]


def test_run_learns_the_tiny_task(run):
    out, summary = run
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # 18 steps: training error falls fast; test error lags while BN running statistics settle
    assert rows[0]["train_top1_err"] > 0.4 and rows[-1]["train_top1_err"] < 0.15
    assert rows[-1]["test_loss"] < rows[0]["test_loss"] / 2
    assert summary["final_test_accuracy"] == 1 - rows[-1]["test_top1_err"]


def test_run_leaves_curves_png_summary_and_weights_with_metadata(run):
    out, summary = run
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["final_test_accuracy"] == summary["final_test_accuracy"]
    for name in ("last.safetensors", "best.safetensors"):
        meta = read_metadata(out / name)
        assert meta["name"] == "resnet20"
        assert meta["classes"] == ["class0", "class1", "class2", "class3"]
        assert meta["input_size"] == [1, 8, 8]
        assert len(meta["mean"]) == len(meta["std"]) == 1
        assert meta["dataset"] == "squares"
        assert meta["options"]["layers"] == TINY_OPTIONS["layers"]


def test_evaluating_saved_weights_reproduces_the_printed_accuracy(run):
    out, summary = run
    model, meta = load_model(out / "last.safetensors")
    model.to(memory_format=torch.channels_last)
    test = tiny_splits().test
    loader = BatchLoader(test, 500, train=False, mean=meta["mean"], std=meta["std"])
    res = evaluate(model, loader, num_classes=4, tta_flip=meta["tta"])
    assert res.top1_acc == summary["final_test_accuracy"]
    assert res.confusion.sum() == len(test)
    assert res.confusion.diagonal().sum() == round(res.top1_acc * len(test))
    # by hand: (x / 255 - mean) / std, the mean of the logits of the image and its mirror image
    mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["std"]).view(1, -1, 1, 1)
    x = ((test.images.float() / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
    assert meta["tta"] is True  # the fast recipe evaluates with flips
    with torch.no_grad():
        logits = (model.eval()(x) + model(x.flip(3))) / 2
    hits = int((logits.argmax(1) == test.labels).sum())
    assert summary["final_test_accuracy"] == pytest.approx(hits / len(test), abs=1e-12)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    loss = float(torch.nn.functional.cross_entropy(logits, test.labels))
    assert rows[-1]["test_loss"] == pytest.approx(loss, rel=1e-5)


def test_checkpoint_loads_with_weights_only_and_holds_the_whole_state(run):
    out, _ = run
    weights, state = load_checkpoint(out)  # torch.load(weights_only=True) inside
    assert state["step"] == 18 and state["loader"] == {"epoch": 3, "batch": 0}
    assert {"optimizer", "schedule", "rng", "config", "history"} <= state.keys()
    assert torch.equal(weights["fc.weight"], load_model(out / "last.safetensors")[0].fc.weight)


def test_resume_with_another_model_fails_and_keeps_the_checkpoint(run, tmp_path):
    out, _ = run
    before = (out / "checkpoint" / "state.pt").read_bytes()
    with pytest.raises(ResnetlabError, match="of model 'resnet20', not 'resnet32'"):
        fit(tiny_config(tmp_path, model="resnet32"), tiny_splits(), resume=str(out))
    assert (out / "checkpoint" / "state.pt").read_bytes() == before


def test_resume_of_a_finished_run_changes_nothing(run):
    out, summary = run
    before = (out / "last.safetensors").read_bytes()
    again = fit(tiny_config(out, epochs=3), tiny_splits(), resume=str(out))
    assert again["final_test_accuracy"] == summary["final_test_accuracy"]
    assert (out / "last.safetensors").read_bytes() == before


def test_fast_recipe_puts_no_weight_decay_on_norms_and_biases():
    model = create_model("resnet20", num_classes=4, in_chans=1, **TINY_OPTIONS)
    groups = param_groups(model, get_recipe("fast"), 0.1, 1.0)
    for g in groups:
        if g["weight_decay"] == 0:
            assert all(p.ndim == 1 for p in g["params"])
        else:
            assert all(p.ndim > 1 for p in g["params"])
    paper = param_groups(model, get_recipe("paper"), 0.1, 1.0)
    assert all(g["weight_decay"] == 1e-4 for g in paper)


def test_init_from_other_class_count_loads_body_and_makes_new_head(tmp_path):
    src = create_model("resnet20", num_classes=4, in_chans=1, **TINY_OPTIONS)
    save_weights(src, tmp_path / "src.safetensors")
    dst = create_model("resnet20", num_classes=3, in_chans=1, **TINY_OPTIONS)
    note = init_from(dst, str(tmp_path / "src.safetensors"))
    assert "new head" in note
    assert torch.equal(dst.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    assert dst.fc.weight.shape == (3, 16)
    groups = param_groups(dst, get_recipe("fast"), 0.1, 0.1)
    head_ids = {id(p) for p in dst.fc.parameters()}
    for g in groups:
        is_head = all(id(p) in head_ids for p in g["params"])
        assert g["lr"] == pytest.approx(0.1 if is_head else 0.01)


def test_init_from_torchvision_style_rgb_state_dict_into_grey_model(tmp_path):
    src = create_model("resnet20", num_classes=10, in_chans=3, **TINY_OPTIONS)
    torch.save({"state_dict": src.state_dict()}, tmp_path / "tv.pth")
    dst = create_model("resnet20", num_classes=4, in_chans=1, **TINY_OPTIONS)
    init_from(dst, str(tmp_path / "tv.pth"))
    assert torch.equal(dst.conv1.weight, src.conv1.weight.sum(1, keepdim=True))


def test_init_from_weights_of_another_architecture_fails(tmp_path):
    src = create_model("resnet20", num_classes=4, in_chans=1)
    save_weights(src, tmp_path / "wide.safetensors")
    dst = create_model("resnet20", num_classes=4, in_chans=1, **TINY_OPTIONS)
    with pytest.raises(ResnetlabError, match="does not fit"):
        init_from(dst, str(tmp_path / "wide.safetensors"))


def test_frozen_parts_do_not_change_during_training(tmp_path):
    torch.set_num_threads(1)
    model, _ = train_model(
        tiny_config(tmp_path, epochs=1, freeze=["stem", "layer1"]), tiny_splits()
    )
    torch.manual_seed(0)  # the run builds its model right after seeding with --seed 0
    fresh = create_model("resnet20", num_classes=4, in_chans=1, **TINY_OPTIONS)
    for name in (
        "conv1.weight",
        "bn1.running_mean",
        "layer1.0.conv1.weight",
        "layer1.0.bn2.weight",
    ):
        assert torch.equal(model.state_dict()[name], fresh.state_dict()[name]), name
    assert not torch.equal(model.layer2[0].conv1.weight, fresh.layer2[0].conv1.weight)


def test_freeze_unknown_part_names_the_choices():
    model = create_model("resnet20", num_classes=4, in_chans=1, **TINY_OPTIONS)
    with pytest.raises(ResnetlabError, match="no such part; choose from stem, layer1"):
        freeze(model, ["layer9"])


def test_mlp_trains_on_flattened_images(tmp_path):
    torch.set_num_threads(1)
    cfg = tiny_config(tmp_path, model="residual_mlp", model_options={"depth": 2, "width": 32})
    summary = fit(cfg, tiny_splits())
    assert read_metadata(tmp_path / "last.safetensors")["options"]["in_features"] == 64
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # it learns: the training error of the last epoch is far below chance (0.75 for 4 classes)
    assert rows[-1]["train_top1_err"] < 0.45 < rows[0]["train_top1_err"]
    assert summary["final_test_accuracy"] == 1 - rows[-1]["test_top1_err"]


def test_absurd_learning_rate_raises_non_finite_loss(tmp_path):
    torch.set_num_threads(1)
    with pytest.raises(NonFiniteLoss, match="loss became"):
        fit(tiny_config(tmp_path, lr=1e30, epochs=3), tiny_splits())


def test_precision_choices():
    assert resolve_precision("fp32", "cpu") is None
    assert resolve_precision("bf16", "cpu") is torch.bfloat16
    with pytest.raises(ResnetlabError, match="needs CUDA"):
        resolve_precision("fp16", "cpu")


def test_bf16_autocast_training_computes_in_bf16_on_cpu_and_learns(tmp_path, monkeypatch):
    import resnetlab.train.setup as setup

    torch.set_num_threads(1)
    seen = set()
    build = setup.model_for_data

    def watched(*args, **kw):
        model = build(*args, **kw)
        model.conv1.register_forward_hook(
            lambda m, i, out: seen.add(out.dtype) if m.training else None
        )
        return model

    monkeypatch.setattr(setup, "model_for_data", watched)
    cfg = tiny_config(tmp_path, epochs=2, precision="bf16", device="cpu")
    summary = fit(cfg, tiny_splits())
    assert summary["precision"] == "bf16"
    assert seen == {torch.bfloat16}  # every training convolution ran in bf16
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_top1_err"] < 0.45 < rows[0]["train_top1_err"]  # and it learns


def test_progress_prints_a_few_plain_lines_when_not_on_a_terminal():
    import io

    from resnetlab.train.logs import Progress

    stream = io.StringIO()
    p = Progress(100, "epoch 1/1", stream=stream)
    for i in range(100):
        p.update(1, loss=1.0, acc=0.5, images=32 * (i + 1))
    p.close()
    lines = stream.getvalue().splitlines()
    assert 4 <= len(lines) <= 6
    assert lines[-1].startswith("epoch 1/1 100/100 loss 1.0000 acc 50.00%")
    assert "img/s" in lines[-1] and "eta" in lines[-1]
