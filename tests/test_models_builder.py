"""One constructor: create_model, load_model and model_for_data look the registry up once per
build and hand the entry to the one builder (build_model_with_cfg), which wraps backbones too."""

from __future__ import annotations

import pytest
import torch

import resnetlab.models.factory as factory
import resnetlab.models.pretrained as pretrained
import resnetlab.models.registry as registry
from resnetlab.errors import ResnetlabError
from resnetlab.models import (
    FeatureExtractor,
    create_model,
    load_model,
    model_for_data,
    save_weights,
)
from resnetlab.models.builder import build_model_with_cfg


@pytest.fixture
def lookups(monkeypatch):
    """The names looked up in the registry, in order, by any of the model constructors."""
    names = []
    real = registry.get_entry

    def counted(name):
        names.append(name)
        return real(name)

    for module in (factory, pretrained, registry):
        monkeypatch.setattr(module, "get_entry", counted)
    return names


@pytest.mark.parametrize(
    "build",
    [
        lambda: create_model("resnet20"),
        lambda: create_model("resnet8", layers=[1, 1, 1]),  # a CIFAR depth built when asked for
        lambda: create_model("resnet20", pretrained=True),
        lambda: create_model("resnet20.fashion-mnist"),  # the tag's cfg, fresh weights
        lambda: create_model("resnet20", pretrained="resnet20.fashion-mnist", num_classes=3),
        lambda: create_model("resnet20", pretrained=True, features_only=True, out_indices=(-1,)),
        lambda: model_for_data("resnet20", (1, 28, 28), 7),
        lambda: model_for_data("residual_mlp", (1, 28, 28), 7, {"depth": 2}),
        lambda: load_model("resnet20.fashion-mnist"),
    ],
    ids=[
        "fresh",
        "cifar-depth",
        "shipped",
        "tag-fresh",
        "adapted-head",
        "backbone",
        "for-data",
        "mlp-for-data",
        "load",
    ],  # fmt: skip
)
def test_each_build_looks_the_registry_up_once(build, lookups):
    build()
    assert len(lookups) == 1, lookups


def test_load_model_of_a_saved_backbone_looks_up_once(tmp_path, lookups):
    backbone = create_model("resnet20", features_only=True, out_indices=(1, 3), in_chans=1)
    save_weights(backbone, tmp_path / "b.safetensors")
    lookups.clear()
    model, _ = load_model(tmp_path / "b.safetensors")
    assert len(lookups) == 1 and isinstance(model, FeatureExtractor)
    assert model.out_indices == (1, 3)


def test_create_model_is_the_builder_on_the_looked_up_entry():
    torch.manual_seed(0)
    a = create_model("resnet20", num_classes=4, in_chans=1, features_only=True)
    torch.manual_seed(0)
    b = build_model_with_cfg(registry.get_entry("resnet20"), num_classes=4, in_chans=1,
                             features_only=True)  # fmt: skip
    assert isinstance(a, FeatureExtractor) and isinstance(b, FeatureExtractor)
    assert a.resnetlab_config == b.resnetlab_config and a.pretrained_cfg == b.pretrained_cfg
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_a_net_of_a_billion_blocks_is_refused_from_its_sizes_alone():
    # building it, even on the meta device, would take minutes: the lower bound refuses it first
    with pytest.raises(ResnetlabError, match=r"a net of at least 2,304,000,046,080 parameters"):
        create_model("resnet8", layers=[10**9, 1, 1])
    with pytest.raises(ResnetlabError, match=r"a net of at least 131,072,000,000,000 param"):
        create_model("residual_mlp", depth=10**9)


def test_the_lower_bound_of_parameters_is_below_every_registered_nets_count():
    from resnetlab.models import get_entry, list_models
    from resnetlab.models.builder import least_parameters

    for name in list_models():
        with torch.device("meta"):
            count = sum(p.numel() for p in create_model(name).parameters())
        assert 0 < least_parameters(get_entry(name).spec, {}) <= count, name
