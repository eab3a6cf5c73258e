"""Class names are matched by name wherever data and weights meet, never silently by index.

The claim of the issue: the shipped Fashion-MNIST weights evaluated on the real test images laid out
as class folders (alphabetical order) score as on the IDX files, and every per-class row carries
the right name; a folder the weights do not know is refused in one line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnetlab import ResnetlabError
from resnetlab.cli import main
from resnetlab.data.classmap import (
    class_names,
    is_unnamed,
    match_classes,
    match_head,
    name_key,
)
from resnetlab.data.dataset import ImageDataset
from resnetlab.models.weights import PRETRAINED_DIR
from resnetlab.train.evaluate import evaluate_weights

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
SHIPPED = PRETRAINED_DIR / "resnet20.fashion-mnist.safetensors"
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]  # fmt: skip
N_REAL = 1000  # test images written as PNG folders (about 3 s)


# --- the matching rules ---------------------------------------------------------------------


def test_same_classes_in_same_order_match_silently():
    m = match_classes(["a", "b", "c"], 3, ["a", "b", "c"])
    assert m.index == (0, 1, 2) and m.how == "same" and m.note == ""


def test_same_set_in_another_order_maps_by_name_and_says_so():
    m = match_classes(["cat", "dog", "eel"], 3, ["eel", "cat", "dog"], data="D")
    assert m.index == (2, 0, 1) and m.how == "name"
    assert m.note == "classes matched by name: D lists the 3 classes in another order"


def test_a_subset_maps_by_name_and_names_the_missing_classes():
    m = match_classes(["cat", "dog", "eel", "fox"], 4, ["fox", "cat"], weights="W", data="D")
    assert m.index == (3, 0)
    assert "D has 2 of the 4 classes of W" in m.note and "'dog', 'eel'" in m.note


def test_unknown_classes_are_refused_naming_them():
    with pytest.raises(ResnetlabError, match=r"1 class\(es\) that W does not know: 'wolf'") as e:
        match_classes(["cat", "dog"], 2, ["cat", "wolf"], weights="W", data="D")
    assert "\n" not in str(e.value) and "--ignore-class-names" in str(e.value)


def test_ignore_names_forces_an_index_match_and_states_it():
    m = match_classes(["cat", "dog"], 2, ["cat", "wolf"], ignore_names=True)
    assert m.index == (0, 1) and m.how == "index" and "ignore_names" in m.note


@pytest.mark.parametrize(
    ("model_classes", "data_classes", "why"),
    [(["0", "1", "2"], ["cat", "dog"], "W names no classes"),
     (None, ["cat", "dog"], "W names no classes"),
     (["cat", "dog", "eel"], ["0", "1"], "D names no classes")],
)  # fmt: skip
def test_unnamed_classes_match_by_index_stated(model_classes, data_classes, why):
    m = match_classes(model_classes, 3, data_classes, weights="W", data="D")
    assert m.index == (0, 1) and m.how == "index" and m.note == f"classes matched by index: {why}"


def test_index_match_refuses_more_data_classes_than_outputs():
    with pytest.raises(ResnetlabError, match="D has 3 classes but W has 2 outputs"):
        match_classes(None, 2, ["0", "1", "2"], weights="W", data="D")


def test_folder_spellings_match_names_no_folder_can_carry():
    assert name_key("T-shirt/top") == name_key("T-shirt_top") == name_key("t shirt TOP")
    folders = sorted(c.replace("/", "_") for c in FASHION)
    m = match_classes(FASHION, 10, folders)
    assert [FASHION[i] for i in m.index] == [
        "Ankle boot", "Bag", "Coat", "Dress", "Pullover", "Sandal", "Shirt", "Sneaker",
        "T-shirt/top", "Trouser",
    ]  # fmt: skip


def test_a_key_shared_by_two_classes_never_matches():
    with pytest.raises(ResnetlabError, match="does not know: 'a_b'"):
        match_classes(["a-b", "A B", "c"], 3, ["a_b", "c"])


def test_remap_gives_labels_as_model_outputs_and_model_names():
    data = ImageDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 2, 0]),
                        ["eel", "cat", "dog"])  # fmt: skip
    m = match_classes(["cat", "dog", "eel"], 3, data.classes)
    out = m.remap(data, ["cat", "dog", "eel"])
    assert out.labels.tolist() == [2, 0, 1, 2] and out.classes == ["cat", "dog", "eel"]


def test_unnamed_and_class_names_helpers():
    assert is_unnamed(None) and is_unnamed(["0", "1"]) and not is_unnamed(["1", "0"])
    assert class_names({"classes": ["a", "b"]}, 2) == ["a", "b"]
    assert class_names({"classes": ["a"]}, 2) == ["0", "1"]


def test_head_keeps_rows_of_known_classes_and_adds_new_ones():
    h = match_head(["cat", "dog", "eel"], 3, ["dog", "fox", "cat"], weights="W")
    assert h.rows == (1, None, 0) and h.kept == 2
    assert h.note == (
        "head matched by name: 2 of 3 classes keep their rows from W; new rows for 'fox'; "
        "dropped 'eel'"
    )
    assert match_head(["0", "1"], 2, ["a", "b"]).rows == (0, 1)
    assert match_head(["0", "1"], 2, ["a", "b", "c"]).rows == (None, None, None)


# --- the shipped weights on the real test images as class folders ---------------------------

needs_data = pytest.mark.skipif(
    not DEBIAN.is_dir(), reason="Debian package dataset-fashion-mnist not installed"
)


@pytest.fixture(scope="module")
def fashion_folders(tmp_path_factory):
    """The first N_REAL real test images as PNG class folders (alphabetical), and as an .npz
    of the same images in the IDX order with the IDX names."""
    from resnetlab.data import load_source

    test = load_source("fashion-mnist").test
    x, y = test.images[:N_REAL], test.labels[:N_REAL]
    root = tmp_path_factory.mktemp("fashion")
    tree = root / "folders"
    for i, (img, label) in enumerate(zip(x, y.tolist())):
        d = tree / test.classes[label].replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[0].numpy(), mode="L").save(d / f"{i:05d}.png")
    npz = root / "same.npz"
    xs, ys = x[:, 0].numpy(), y.numpy()
    np.savez(npz, x_train=xs, y_train=ys, x_test=xs, y_test=ys, classes=np.array(test.classes))
    return tree, npz


@needs_data
def test_shipped_weights_score_the_same_on_class_folders_as_on_idx_order(fashion_folders):
    tree, npz = fashion_folders
    by_folder = evaluate_weights(SHIPPED, tree, device="cpu", threads=1)
    by_idx = evaluate_weights(SHIPPED, npz, device="cpu", threads=1)
    assert by_folder["images"] == by_idx["images"] == N_REAL
    assert abs(by_folder["top1_acc"] - by_idx["top1_acc"]) <= 0.001
    assert by_idx["top1_acc"] > 0.9  # the weights' own accuracy, not chance
    assert by_folder["per_class_acc"] == by_idx["per_class_acc"]  # every row under its own name
    assert by_folder["class_match"].startswith("classes matched by name")
    assert by_idx["class_match"] == ""


@needs_data
def test_a_folder_class_the_weights_do_not_know_is_refused_in_one_line(
    fashion_folders, tmp_path, capsys
):
    tree, _ = fashion_folders
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for d in tree.iterdir():
        (renamed / ("Jumper" if d.name == "Pullover" else d.name)).symlink_to(d)
    code = main(["eval", str(SHIPPED), "--data", str(renamed), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "1 class(es) that" in err and "'Jumper'" in err and "--ignore-class-names" in err


@needs_data
def test_ignore_class_names_forces_the_index_match_and_says_so(fashion_folders, capsys):
    tree, _ = fashion_folders
    argv = ["eval", str(SHIPPED), "--data", str(tree), "--device", "cpu", "--limit", "200"]
    assert main([*argv, "--ignore-class-names", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 200
    assert report["class_match"] == "classes matched by index: as asked (ignore_names)"
    assert report["top1_acc"] < 0.6  # the old, silently wrong figure
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "classes matched by name:" in out
    rows = dict(re.findall(r"^  (\S.*?)\s+(\d+\.\d+)%$", out, re.M))
    assert set(rows) == set(FASHION)  # rows under the weights' names, the data's classes all


def test_eval_of_a_folder_resizes_as_predict_does(tmp_path):
    from resnetlab.infer.predict import predict

    tree = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for name, (h, w) in (("Bag", (40, 56)), ("Sneaker", (33, 28)), ("Trouser", (28, 28))):
        (tree / name).mkdir(parents=True)
        a = rng.integers(0, 256, (h, w), dtype=np.uint8)
        Image.fromarray(a, mode="L").save(tree / name / "a.png")
    report = evaluate_weights(SHIPPED, tree, device="cpu", threads=1, tta=False)  # as predict
    preds = predict(SHIPPED, [tree], topk=1, device="cpu", precision="fp32", compile=False)
    predicted = {Path(p.path).parent.name: p.classes[0] for p in preds.predictions}
    hits = sum(predicted[c] == c for c in ("Bag", "Sneaker", "Trouser"))
    assert report["images"] == 3 and report["top1_acc"] == pytest.approx(hits / 3)
    confusion = torch.tensor(report["confusion"])
    for c in ("Bag", "Sneaker", "Trouser"):
        row = FASHION.index(c)
        assert FASHION[int(confusion[row].argmax())] == predicted[c]


# --- fine-tuning keeps the head rows of the classes the weights know -------------------------


def test_init_from_keeps_known_rows_by_name_and_makes_new_ones(tmp_path):
    from resnetlab.models import create_model, save_weights
    from resnetlab.train.finetune import init_from

    small = {"layers": [1, 1, 1], "widths": [4, 4, 4], "stem_width": 4}
    src = create_model("resnet20", num_classes=3, in_chans=1, **small)
    save_weights(src, tmp_path / "src.safetensors", {"classes": ["cat", "dog", "eel"]})
    dst = create_model("resnet20", num_classes=3, in_chans=1, **small)
    fresh = dst.fc.weight.detach().clone()
    note = init_from(dst, str(tmp_path / "src.safetensors"), ["dog", "fox", "cat"])
    assert note.endswith(
        "head matched by name: 2 of 3 classes keep their rows from "
        f"{tmp_path / 'src.safetensors'}; new rows for 'fox'; dropped 'eel'"
    )
    assert torch.equal(dst.fc.weight[0], src.fc.weight[1])  # dog
    assert torch.equal(dst.fc.weight[2], src.fc.weight[0])  # cat
    assert torch.equal(dst.fc.weight[1], fresh[1])  # fox: a new row
    assert torch.equal(dst.fc.bias[0], src.fc.bias[1])


def test_init_from_the_shipped_weights_on_alphabetical_folders_permutes_the_head():
    from resnetlab.models import create_model
    from resnetlab.train.finetune import init_from

    folders = sorted(c.replace("/", "_") for c in FASHION)
    dst = create_model("resnet20", num_classes=10, in_chans=1)
    note = init_from(dst, str(SHIPPED), folders)
    src = create_model("resnet20", pretrained="fashion-mnist")
    assert "10 of 10 classes keep their rows" in note
    for j, name in enumerate(folders):
        assert torch.equal(dst.fc.weight[j], src.fc.weight[FASHION.index(name.replace("_", "/"))])


# --- the studies and quantize meet weights and data too --------------------------------------


@pytest.fixture(scope="module")
def reordered_npz(tmp_path_factory):
    """200 real test images as .npz files twice: the IDX class order and the alphabetical one."""
    from resnetlab.data import load_source

    test = load_source("fashion-mnist").test
    x, y = test.images[:200, 0].numpy(), test.labels[:200].numpy()
    root = tmp_path_factory.mktemp("orders")
    alpha = sorted(test.classes)
    to_alpha = np.array([alpha.index(c) for c in test.classes])
    np.savez(root / "idx.npz", x_train=x, y_train=y, x_test=x, y_test=y,
             classes=np.array(test.classes))  # fmt: skip
    np.savez(root / "alpha.npz", x_train=x, y_train=to_alpha[y], x_test=x, y_test=to_alpha[y],
             classes=np.array(alpha))  # fmt: skip
    return root / "idx.npz", root / "alpha.npz"


@needs_data
def test_lesion_scores_reordered_classes_by_name(reordered_npz, tmp_path):
    from resnetlab.experiments.lesion import run_lesion

    said = []
    idx, alpha = reordered_npz
    a = run_lesion([str(SHIPPED)], str(idx), str(tmp_path / "a"), draws=1, max_k=1, say=said.append)
    b = run_lesion([str(SHIPPED)], str(alpha), str(tmp_path / "b"), draws=1, max_k=1,
                   say=said.append)  # fmt: skip
    assert a[0].baseline_err == b[0].baseline_err < 0.15
    assert a[0].single == b[0].single
    assert any("classes matched by name" in line for line in said)


@needs_data
def test_quantize_compares_on_reordered_classes_by_name(reordered_npz, tmp_path):
    pytest.importorskip("onnxruntime")
    from resnetlab.infer.quantize import quantize

    idx, alpha = reordered_npz
    kw = dict(images=32, bench_batch=0)
    a = quantize(SHIPPED, calib=str(idx), out=tmp_path / "a.onnx", **kw)
    said = []
    b = quantize(SHIPPED, calib=str(alpha), out=tmp_path / "b.onnx", log=said.append, **kw)
    assert a.fp32_top1 == b.fp32_top1 > 0.85
    assert any("classes matched by name" in line for line in said)


def test_quantize_refuses_calibration_data_of_unknown_classes(tmp_path):
    pytest.importorskip("onnxruntime")
    from resnetlab.infer.quantize import quantize

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    y = np.arange(40) % 2
    data = tmp_path / "pets.npz"
    np.savez(data, x_train=x, y_train=y, x_test=x, y_test=y, classes=np.array(["cat", "Bag"]))
    out = tmp_path / "q.onnx"
    with pytest.raises(ResnetlabError, match="does not know: 'cat'"):
        quantize(SHIPPED, calib=str(data), out=out, images=32, bench_batch=0)
    assert not out.exists()
