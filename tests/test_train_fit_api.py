"""`resnetlab.fit(model, train_data, val_data=None, **settings)`: a model object trained in place on
data in memory, callbacks and early stopping, and per-epoch evaluation that costs what it should
(every `eval_every` epochs, on `eval_images` images, without flips; the final one on all, with
flips as the recipe says)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.train import TINY_OPTIONS, squares, tiny_config, tiny_splits, write_npz

import resnetlab
from resnetlab.cli import main
from resnetlab.data.loader import BatchLoader
from resnetlab.data.normalise import compute_mean_std
from resnetlab.errors import ResnetlabError
from resnetlab.models import create_model, load_model, save_weights
from resnetlab.train import evaluate as evaluation
from resnetlab.train import loop
from resnetlab.train.callbacks import Callback, EarlyStopping, EpochState
from resnetlab.train.checkpoint import load_checkpoint
from resnetlab.train.config import TrainConfig, check_config
from resnetlab.train.evaluate import evaluate

SETTINGS = dict(
    batch_size=32, quiet=True, compile="off", precision="fp32", threads=1, device="cpu"
)  # the tiny runs: pinned to the CPU, one thread, fp32


def tiny_model(classes: int = 4, in_chans: int = 1):
    torch.manual_seed(0)
    return create_model("resnet20", num_classes=classes, in_chans=in_chans, **TINY_OPTIONS)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class Recorder(Callback):
    """Every hook call, with the epoch and a copy of the metrics the callback saw."""

    def __init__(self):
        self.calls = []

    def on_train_begin(self, state):
        self.calls.append(("begin", state.epoch, dict(state.metrics)))

    def on_epoch_end(self, state):
        self.calls.append(("epoch", state.epoch, dict(state.metrics)))

    def on_train_end(self, state):
        self.calls.append(("end", state.epoch, dict(state.metrics)))


# --- fit(model, data) --------------------------------------------------------------------------


def test_fit_trains_the_model_object_in_place_and_writes_weights_that_follow_it(tmp_path):
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train, val = squares(192, 1), squares(64, 2)
    result = resnetlab.fit(model, train, val, epochs=2, out=str(tmp_path), **SETTINGS)

    assert result.model is model
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert result.summary["epochs_trained"] == 2 and result.summary["steps"] == 12
    assert not result.stopped_early and result.stop_reason is None
    assert result.summary["stopped_early"] is False
    # validation data only: the final evaluation is on it, and it chooses the best epoch
    assert "final_test_accuracy" not in result.summary
    assert result.summary["final_val_accuracy"] == 1 - result.history[-1]["val_top1_err"]
    assert result.best_weights == tmp_path / "best.safetensors" and result.best_weights.exists()

    # the weights file is the model's final weights, with the data's metadata
    loaded, meta = load_model(result.weights)
    assert result.weights == tmp_path / "last.safetensors"
    assert same_weights(loaded, model)
    mean, std = compute_mean_std(train.images)
    assert meta["classes"] == ["class0", "class1", "class2", "class3"]
    assert meta["input_size"] == [1, 8, 8]
    assert (meta["mean"], meta["std"]) == (list(mean), list(std))
    assert meta["dataset"] == "in-memory" and meta["num_classes"] == 4
    # and it predicts as the trained object does (which trained in channels_last)
    model.eval()
    loaded.to(memory_format=torch.channels_last)
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))


def test_fit_takes_an_images_labels_pair_and_a_dataset_path(tmp_path):
    ds = squares(96, 3)
    result = resnetlab.fit(
        tiny_model(), (ds.images, ds.labels), epochs=1, out=str(tmp_path / "a"), **SETTINGS
    )
    _, meta = load_model(result.weights)
    assert meta["classes"] == ["0", "1", "2", "3"]  # a pair carries no class names
    # no evaluation data: nothing to evaluate, no best file, one row of training figures
    assert result.best_weights is None and "best_epoch" not in result.summary
    assert set(result.history[0]) >= {"train_loss", "train_top1_err"}
    assert "test_top1_err" not in result.history[0]

    npz = write_npz(tmp_path / "tiny.npz", 96, 32)
    result = resnetlab.fit(tiny_model(), str(npz), epochs=1, out=str(tmp_path / "b"), **SETTINGS)
    assert result.summary["dataset"] == "tiny" and result.summary["config"]["data"] == str(npz)
    assert result.history[0]["test_images"] == 32


def test_val_split_holds_out_validation_data_that_chooses_the_best_epoch(tmp_path):
    result = resnetlab.fit(
        tiny_model(), squares(192, 1), val_split=0.25, epochs=2, out=str(tmp_path), **SETTINGS
    )
    assert [r["val_images"] for r in result.history] == [48, 48]
    assert result.summary["config"]["val_split"] == 0.25
    best = min(result.history, key=lambda r: r["val_top1_err"])
    assert result.summary["best_epoch"] == best["epoch"]
    assert result.summary["best_val_top1_err"] == best["val_top1_err"]


def test_fit_refuses_unknown_settings_in_one_line_naming_them(tmp_path):
    with pytest.raises(ResnetlabError) as e:
        resnetlab.fit(tiny_model(), squares(64, 1), epoch=2, warmup=3, out=str(tmp_path))
    message = str(e.value)
    assert message.startswith("unknown setting(s) epoch (did you mean epochs?), warmup; ")
    assert "\n" not in message and "batch_size" in message
    with pytest.raises(ResnetlabError, match=r"setting\(s\) model: the model and the data"):
        resnetlab.fit(tiny_model(), squares(64, 1), model="resnet32")
    with pytest.raises(ResnetlabError, match=r"unknown setting\(s\) lr_scale \(did you mean"):
        loop.fit(tiny_config(tmp_path), tiny_splits(), lr_scale=2)  # the TrainConfig form too
    assert not (tmp_path / "checkpoint").exists()


@pytest.mark.parametrize(
    "model, data, message",
    [
        (torch.nn.Linear(4, 4), squares(64, 1), "model Linear: expected a model built by"),
        (tiny_model(classes=10), squares(64, 1), "model has 10 outputs but the data has 4 classes"),
        (tiny_model(in_chans=3), squares(64, 1), "model takes in_chans=3 but the data's images"),
        (tiny_model(), [1, 2, 3], "train_data list: expected an ImageDataset"),
        (tiny_model(), (torch.zeros(4, 1, 8, 8), torch.ones(4)), "labels of torch.float32"),
    ],
)
def test_fit_refuses_a_model_or_data_that_do_not_fit_in_one_line(model, data, message, tmp_path):
    with pytest.raises(ResnetlabError) as e:
        resnetlab.fit(model, data, epochs=1, out=str(tmp_path), **SETTINGS)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_val_data_classes_are_matched_by_name(tmp_path):
    from resnetlab.data import ImageDataset

    val = squares(64, 2)
    order = [3, 1, 0, 2]  # the same classes listed in another order
    renamed = ImageDataset(
        val.images,
        torch.tensor([order.index(int(v)) for v in val.labels]),
        [val.classes[i] for i in order],
    )
    a = resnetlab.fit(
        tiny_model(), squares(96, 1), val, epochs=1, out=str(tmp_path / "a"), **SETTINGS
    )
    b = resnetlab.fit(
        tiny_model(), squares(96, 1), renamed, epochs=1, out=str(tmp_path / "b"), **SETTINGS
    )
    assert a.summary["final_val_top1_err"] == b.summary["final_val_top1_err"]
    stranger = ImageDataset(val.images, val.labels, ["class0", "class1", "class2", "zebra"])
    with pytest.raises(ResnetlabError, match="val_data has classes train_data lacks: zebra"):
        resnetlab.fit(tiny_model(), squares(96, 1), stranger, out=str(tmp_path / "c"), **SETTINGS)


# --- callbacks and early stopping --------------------------------------------------------------


def test_early_stopping_stops_after_patience_evaluations_without_a_min_delta_improvement():
    # rows as the trainer makes them; epoch 5 improves by less than min_delta, epoch 3 is not
    # evaluated (no val_top1_err) and does not count
    values = [0.50, 0.40, None, 0.39, 0.388, 0.40, 0.41, 0.30]
    rows = [
        {"epoch": i + 1} | ({} if v is None else {"val_top1_err": v}) for i, v in enumerate(values)
    ]

    def stop_epoch(**kw):
        es = EarlyStopping(monitor="val_err", patience=2, **kw)
        state = EpochState(epochs=len(rows), model=None, has_test=False, has_val=True)
        es.on_train_begin(state)
        for row in rows:
            state.epoch, state.metrics = row["epoch"], row
            es.on_epoch_end(state)
            if state.stop:
                return row["epoch"], es.best_epoch, state.stop_reason
        return None, es.best_epoch, None

    # min_delta 0.005: 0.388 is no improvement on 0.39 -> waits at epochs 5 and 6
    assert stop_epoch(min_delta=0.005)[:2] == (6, 4)
    # no min_delta: 0.388 improves -> waits at epochs 6 and 7
    epoch, best, reason = stop_epoch()
    assert (epoch, best) == (7, 5)
    assert reason == (
        "early stopping: val_top1_err did not fall by more than 0 in 2 evaluation(s) after "
        "epoch 5 (best 0.3880)"
    )


@pytest.mark.parametrize(
    "kw, message",
    [
        (
            {"monitor": "val_error"},
            "monitor 'val_error': not a metric of the run; did you mean val_err",
        ),
        ({"patience": 0}, "patience 0: expected a whole number of evaluations >= 1"),
        ({"min_delta": float("nan")}, "min_delta nan: expected a finite number >= 0"),
    ],
)
def test_early_stopping_refuses_bad_arguments(kw, message):
    with pytest.raises(ResnetlabError, match=message):
        EarlyStopping(**kw)


class Crafted(Callback):
    """Replaces each epoch's validation error with the next value of a crafted sequence."""

    def __init__(self, values):
        self.values = list(values)

    def on_epoch_end(self, state):
        state.metrics["val_top1_err"] = self.values[state.epoch - 1]


def test_a_stopped_run_ends_as_a_finished_run_and_stays_stopped_on_resume(tmp_path):
    out = tmp_path / "run"
    recorder = Recorder()
    early = EarlyStopping(monitor="val_err", patience=2)
    crafted = Crafted([0.5, 0.3, 0.31, 0.32, 0.1, 0.1])  # best at epoch 2, stop after epoch 4
    model = tiny_model()
    result = resnetlab.fit(
        model, squares(64, 1), squares(32, 2), epochs=6, out=str(out),
        callbacks=[crafted, early, recorder], **SETTINGS,
    )  # fmt: skip
    assert result.stopped_early
    reason = (
        "early stopping: val_top1_err did not fall by more than 0 in 2 evaluation(s) after "
        "epoch 2 (best 0.3000)"
    )
    assert result.stop_reason == reason
    assert [c[:2] for c in recorder.calls] == [
        ("begin", 0), ("epoch", 1), ("epoch", 2), ("epoch", 3), ("epoch", 4), ("end", 4)
    ]  # fmt: skip
    assert recorder.calls[3][2]["val_top1_err"] == 0.31  # callbacks run in order
    assert {"train_loss", "train_top1_err", "val_top1_err", "val_loss"} <= recorder.calls[1][
        2
    ].keys()
    # as a finished run: metrics, summary, final weights, checkpoint
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped_early"] is True and summary["stop_reason"] == reason
    assert summary["epochs"] == 6 and summary["epochs_trained"] == 4 and summary["steps"] == 8
    assert "final_val_accuracy" in summary  # the final evaluation ran on every image
    loaded, meta = load_model(out / "last.safetensors")
    assert same_weights(loaded, model) and meta["epoch"] == 4
    weights, state = load_checkpoint(out)
    assert state["stopped"] == {"epoch": 4, "reason": reason}
    assert state["loader"] == {"epoch": 4, "batch": 0}
    # a resumed stopped run trains no further
    before = (out / "last.safetensors").read_bytes()
    again = resnetlab.fit(
        tiny_model(), squares(64, 1), squares(32, 2), epochs=6, out=str(out), resume=str(out),
        callbacks=[EarlyStopping(monitor="val_err", patience=2)], **SETTINGS,
    )  # fmt: skip
    assert again.stopped_early and len(again.history) == 4
    assert same_weights(again.model, model)
    assert (out / "last.safetensors").read_bytes() == before


def test_on_step_end_is_called_after_every_step_with_the_step_count(tmp_path):
    seen = []

    class Steps(Callback):
        def on_step_end(self, state):
            seen.append((state.step, state.epoch))

    loop.fit(tiny_config(tmp_path, epochs=2), tiny_splits(), callbacks=[Steps()])
    # 192 images at batch 32: 6 steps an epoch; `epoch` counts the epochs completed
    assert seen == [(s, 0 if s <= 6 else 1) for s in range(1, 13)]


def test_early_stopping_on_validation_refuses_a_run_without_validation_data(tmp_path):
    with pytest.raises(ResnetlabError, match="monitors val_top1_err but the run has no val data"):
        resnetlab.fit(
            tiny_model(), squares(64, 1), epochs=1, out=str(tmp_path),
            callbacks=[EarlyStopping()], **SETTINGS,
        )  # fmt: skip
    with pytest.raises(ResnetlabError, match=r"callbacks\[0\] 3: has none of the hooks"):
        resnetlab.fit(tiny_model(), squares(64, 1), out=str(tmp_path), callbacks=[3], **SETTINGS)


# --- the cost of evaluation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("eval_every", 0, "eval_every 0: expected a whole number of epochs >= 1"),
        ("eval_every", 1.5, "eval_every 1.5: expected a whole number of epochs >= 1"),
        ("eval_images", 0, "eval_images 0: expected a whole number of images >= 1"),
        ("eval_images", True, "eval_images True: expected a whole number of images >= 1"),
    ],
)
def test_eval_every_and_eval_images_are_checked(key, value, expected):
    with pytest.raises(ResnetlabError, match=expected):
        check_config(TrainConfig(model="resnet20", data="x", **{key: value}))


def test_eval_flags_fail_in_one_line(capsys, tmp_path):
    code = main(["train", "--data", "x", "--out", str(tmp_path), "--eval-every", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "--eval-every 0: expected a whole number of epochs >= 1" in err
    assert len(err.strip().splitlines()) == 1


def test_epochs_are_evaluated_as_eval_every_and_eval_images_say_and_flips_only_at_the_end(
    tmp_path, monkeypatch, capsys
):
    seen = []  # (tta, labels of the images evaluated) per evaluation

    def counting(model, loader, **kw):
        batches = list(loader)
        seen.append((kw["tta_flip"], torch.cat([y for _, y in batches])))
        return evaluate(model, batches, **kw)

    monkeypatch.setattr(evaluation, "evaluate", counting)
    recorder = Recorder()
    cfg = tiny_config(tmp_path, epochs=5, eval_every=2, eval_images=10, quiet=False)
    splits = tiny_splits(96, 64)
    summary = loop.fit(cfg, splits, callbacks=[recorder])

    # each evaluation shows its progress (plain lines off a terminal), saying what it evaluates
    err = capsys.readouterr().err
    shown = [line.split(" 1/1 ")[0] for line in err.splitlines() if line.startswith("evaluate")]
    assert shown == [
        "evaluate epoch 2/5 (10 test images)",
        "evaluate epoch 4/5 (10 test images)",
        "evaluate epoch 5/5 (64 test images, flip TTA)",
    ]

    assert cfg.recipe == "auto" and summary["tta_flip"] is True  # the fast recipe flips
    assert [t for t, _ in seen] == [False, False, True]  # epochs 2 and 4 plain, 5 with flips
    assert [len(y) for _, y in seen] == [10, 10, 64]  # the subset, then every image
    assert torch.equal(seen[0][1], seen[1][1])  # the same fixed subset each time
    assert torch.bincount(seen[0][1], minlength=4).tolist() == [3, 3, 2, 2]  # stratified
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert ["test_top1_err" in r for r in rows] == [False, True, False, True, True]
    assert [r.get("test_images") for r in rows] == [None, 10, None, 10, 64]
    assert [r.get("eval_tta") for r in rows] == [None, False, None, False, True]
    assert [c[1] for c in recorder.calls if c[0] == "epoch"] == [1, 2, 3, 4, 5]
    # the final figure is the last weights' on every test image, with flips
    model, meta = load_model(tmp_path / "last.safetensors")
    model.to(memory_format=torch.channels_last)
    loader = BatchLoader(splits.test, 500, train=False, mean=meta["mean"], std=meta["std"])
    final = evaluate(model, loader, num_classes=4, tta_flip=True)
    assert summary["final_test_accuracy"] == final.top1_acc == 1 - rows[-1]["test_top1_err"]


# --- the done-when: shipped 1-channel weights into a 3-channel, 5-class model ----------


def test_shipped_weights_fine_tuned_to_three_channels_and_five_classes_round_trip(tmp_path):
    from resnetlab.data import ImageDataset

    model = create_model("resnet20", pretrained="fashion-mnist", in_chans=3, num_classes=5)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(160) % 5
    images = (torch.rand(160, 3, 28, 28, generator=g) * 80).to(torch.uint8)
    images[:, :, 8:20, 8:20] += (30 * labels).view(-1, 1, 1, 1).to(torch.uint8)
    data = ImageDataset(images, labels, ["a", "b", "c", "d", "e"])
    fc_before = model.fc.weight.detach().clone()
    result = resnetlab.fit(model, data, epochs=1, out=str(tmp_path / "run"), **SETTINGS)
    assert result.model is model and result.summary["steps"] == 5
    assert not torch.equal(model.fc.weight, fc_before)

    # the model now describes what it was trained for, so a plain save_weights carries it
    path = tmp_path / "ft.safetensors"
    save_weights(model, path)
    shipped = resnetlab.read_metadata("resnet20.fashion-mnist")
    model.eval()
    x = torch.randn(4, 3, 28, 28)
    for file in (path, result.weights):
        loaded, meta = load_model(file)
        loaded.to(memory_format=torch.channels_last)
        assert (meta["num_classes"], meta["in_chans"], meta["input_size"]) == (5, 3, [3, 28, 28])
        assert meta["classes"] == ["a", "b", "c", "d", "e"]
        # fine-tuning normalised as the shipped weights were trained (their grey mean, x3)
        assert meta["mean"] == shipped["mean"] * 3 and meta["std"] == shipped["std"] * 3
        assert torch.equal(loaded(x), model(x))


def test_a_ready_models_head_rows_follow_the_datas_class_names(tmp_path, capsys):
    from resnetlab.data import FASHION_MNIST_CLASSES, ImageDataset

    model = create_model("resnet20", pretrained="fashion-mnist")
    old = model.fc.weight.detach().clone()
    names = sorted(FASHION_MNIST_CLASSES)  # as class folders list them: alphabetically
    names[names.index("Bag")] = "Hat"  # a class the weights do not know
    seen = {}

    class AtBegin(Callback):
        def on_train_begin(self, state):
            seen["fc"] = state.model.fc.weight.detach().clone()

    g = torch.Generator().manual_seed(0)
    data = ImageDataset(
        torch.randint(0, 256, (64, 1, 28, 28), generator=g, dtype=torch.uint8),
        torch.arange(64) % 10,
        names,
    )
    settings = {**SETTINGS, "quiet": False}  # the line saying how the head was matched
    resnetlab.fit(model, data, epochs=1, out=str(tmp_path), callbacks=[AtBegin()], **settings)
    for j, name in enumerate(names):
        if name in FASHION_MNIST_CLASSES:  # a known class starts from its own row
            assert torch.equal(seen["fc"][j], old[FASHION_MNIST_CLASSES.index(name)])
    hat = seen["fc"][names.index("Hat")]
    assert not any(torch.equal(hat, row) for row in old)  # a fresh row
    out = capsys.readouterr().out
    assert "head matched by name: 9 of 10 classes keep their rows from the model" in out
    assert "new rows for 'Hat'; dropped 'Bag'" in out


def test_a_folder_is_read_for_the_model_at_its_weights_size_and_channels(tmp_path):
    from PIL import Image

    for c, name in enumerate(("boot", "shirt")):  # grey images of mixed sizes
        for i in range(8):
            side = 30 if i % 2 else 26
            path = tmp_path / "photos" / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (side, side), 60 + 100 * c + i).save(path)
    model = create_model("resnet20", pretrained="fashion-mnist", in_chans=3, num_classes=2)
    settings = {**SETTINGS, "batch_size": 4}
    result = resnetlab.fit(
        model, str(tmp_path / "photos"), epochs=1, out=str(tmp_path / "run"), **settings
    )
    _, meta = load_model(result.weights)
    assert meta["input_size"] == [3, 28, 28] and meta["classes"] == ["boot", "shirt"]
    assert result.summary["config"]["size"] == 28 and result.summary["config"]["mode"] == "RGB"
