"""One error type for bad input, whose messages speak of values and arguments, not flags."""

from __future__ import annotations

import pytest
import torch

from resnetlab.data.dataset import ImageDataset
from resnetlab.data.loader import BatchLoader
from resnetlab.data.prepared import prepare_folder
from resnetlab.errors import ResnetlabError
from resnetlab.models import FeatureExtractor, ResNet, ResNetSpec, create_model
from resnetlab.train.distributed import pick_device


def test_the_library_error_is_a_value_error():
    assert issubclass(ResnetlabError, ValueError)


def _dataset():
    return ImageDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.zeros(4), ["a", "b"])


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ImageDataset(torch.zeros(2, 1, 2, 2), torch.zeros(2), ["a"]), "must be uint8"),
        (lambda: BatchLoader(_dataset(), 0, train=True, mean=(0.5,), std=(0.5,)), "batch_size"),
        (lambda: ResNet(ResNetSpec(block="basic", layers=(1,), stem="huge")), "unknown stem"),
        (lambda: FeatureExtractor(create_model("resnet20"), (5,)), "out of range"),
        (lambda: create_model("residual_mlp", in_features=4)(torch.zeros(1, 5)), "expects 4"),
    ],
)
def test_models_and_loaders_raise_the_library_error(make, message):
    with pytest.raises(ResnetlabError, match=message):
        make()


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda tmp: (
                pick_device("cuda:7")
                if not torch.cuda.is_available()
                else prepare_folder(tmp, tmp / "out", -1)
            ),
            "^(device 'cuda:7' asked|size must)",
        ),
        (lambda tmp: prepare_folder(tmp, tmp / "out", 0), "^size must be a positive number"),
    ],
)
def test_library_messages_name_arguments_not_command_line_flags(call, message, tmp_path):
    with pytest.raises(ResnetlabError, match=message) as info:
        call(tmp_path)
    assert "--" not in str(info.value)
