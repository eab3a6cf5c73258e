"""The shipped weights: resnet20 trained here on Fashion-MNIST, loadable by tag."""

from pathlib import Path

import pytest
import torch

import resnetlab
from resnetlab.data.dataset import ImageDataset
from resnetlab.data.loader import BatchLoader

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def test_shipped_weights_are_listed_and_load_by_tag():
    assert "resnet20.fashion-mnist" in resnetlab.list_pretrained()
    model = resnetlab.create_model("resnet20", pretrained="fashion-mnist")
    meta = model.resnetlab_metadata
    assert model.conv1.in_channels == 1 and model.fc.out_features == 10
    assert meta["classes"][0] == "T-shirt/top" and meta["classes"][9] == "Ankle boot"
    assert meta["input_size"] == [1, 28, 28] and len(meta["mean"]) == len(meta["std"]) == 1
    # the file's own metadata carries what a saved model's does (docs/models.md)
    assert resnetlab.read_metadata(model.pretrained_cfg["file"])["depth"] == 20
    assert resnetlab.read_metadata(model.pretrained_cfg["file"])["num_features"] == 64


def test_shipped_tag_of_another_model_is_refused():
    with pytest.raises(resnetlab.ResnetlabError, match="no weights ship for resnet56"):
        resnetlab.create_model("resnet56", pretrained="fashion-mnist")


@pytest.mark.skipif(
    not DEBIAN.is_dir(), reason="Debian package dataset-fashion-mnist not installed"
)
def test_shipped_weights_classify_real_fashion_mnist():
    from resnetlab.data import load_source

    test = load_source("fashion-mnist").test
    test = ImageDataset(test.images[:2000], test.labels[:2000], test.classes)
    model = resnetlab.create_model("resnet20", pretrained="fashion-mnist").eval()
    meta = model.resnetlab_metadata
    loader = BatchLoader(test, 500, train=False, mean=meta["mean"], std=meta["std"])
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
    # 93.8% on the whole test set after 10 epochs (docs/training.md); no view-flip here
    assert correct / len(test) > 0.92
