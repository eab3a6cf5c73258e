"""A study folder's nets are the nets their folders claim: foreign weights are refused."""

from __future__ import annotations

import numpy as np
import pytest

from resnetlab import ResnetlabError, create_model, save_weights
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
