"""The model family: every name builds and trains, with the published sizes and layouts."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import resnetlab
from resnetlab.errors import ResnetlabError
from resnetlab.models import get_entry, list_models
from resnetlab.models.layers import PadShortcut
from resnetlab.models.registry import natural_key
from resnetlab.models.stats import count_macs, count_params

REQUIRED = [
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "plain18",
    "plain34",
    "wide_resnet50_2",
    "resnext50_32x4d",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet1202",
    "plain20",
    "plain32",
    "plain44",
    "plain56",
    "plain110",
    "preact_resnet110",
    "preact_resnet164",
    "preact_resnet1001",
    "wide_resnet16_8",
    "wide_resnet28_10",
    "wide_resnet40_4",
    "residual_mlp",
    "plain_mlp",
]

# torchvision's published parameter counts (reference/NUMBERS.md)
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}
# He et al. 2015, Table 6, in millions, as the paper rounds them
CIFAR_PARAMS_M = {
    "resnet20": 0.27,
    "resnet32": 0.46,
    "resnet44": 0.66,
    "resnet56": 0.85,
    "resnet110": 1.7,
    "resnet1202": 19.4,
}
# Table 1 of the paper: multiply-adds at 224x224, stride on the first 1x1 as in the paper
PAPER_FLOPS = {
    "resnet18": 1.8e9,
    "resnet34": 3.6e9,
    "resnet50": 3.8e9,
    "resnet101": 7.6e9,
    "resnet152": 11.3e9,
}


def test_registry_holds_every_required_name_sorted():
    names = list_models()
    assert names == sorted(names, key=natural_key)  # timm's order: resnet20 before resnet110
    assert set(REQUIRED) <= set(names)


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_forward_and_backward(name):
    entry = get_entry(name)
    torch.manual_seed(0)
    model = resnetlab.create_model(name, num_classes=5)
    if entry.is_mlp:
        x = torch.randn(4, *entry.input_size)
    elif entry.layout == "imagenet":
        x = torch.randn(2, 3, 32, 32)  # the smallest input that survives stride 32
    else:
        x = torch.randn(2, 3, 8, 8)
    out = model(x)
    assert out.shape == (len(x), 5)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name, published", TORCHVISION_PARAMS.items())
def test_imagenet_resnets_match_torchvision_parameter_count(name, published):
    assert count_params(resnetlab.create_model(name)) == published


@pytest.mark.parametrize("name, millions", CIFAR_PARAMS_M.items())
def test_cifar_resnets_match_paper_parameter_count(name, millions):
    params = count_params(resnetlab.create_model(name)) / 1e6
    digits = 2 if millions < 1 else 1
    assert round(params, digits) == millions


@pytest.mark.parametrize(
    "name, millions, digits",
    [
        ("wide_resnet40_4", 8.9, 1),
        ("wide_resnet16_8", 11.0, 1),
        ("wide_resnet28_10", 36.5, 1),
        ("preact_resnet164", 1.7, 1),
    ],
)
def test_wide_and_preact_nets_match_their_papers_parameter_count(name, millions, digits):
    assert round(count_params(resnetlab.create_model(name)) / 1e6, digits) == millions


def test_preact_resnet1001_is_within_two_percent_of_the_papers_count():
    # the 2016 paper rounds 10.33M of weights (BN included) to 10.2M; we hold it to 2%
    params = count_params(resnetlab.create_model("preact_resnet1001"))
    assert abs(params - 10.2e6) / 10.2e6 < 0.02


@pytest.mark.parametrize("name, flops", PAPER_FLOPS.items())
def test_paper_stride_imagenet_flops_within_five_percent_of_table_1(name, flops):
    model = resnetlab.create_model(name, stride_in_1x1=True)
    macs = count_macs(model, (3, 224, 224))
    assert abs(macs - flops) / flops < 0.05


def test_stride_placement_keeps_parameters_and_moves_compute():
    v15 = resnetlab.create_model("resnet50")
    v1 = resnetlab.create_model("resnet50", stride_in_1x1=True)
    assert count_params(v15) == count_params(v1)
    assert v15.layer2[0].conv2.stride == (2, 2) and v15.layer2[0].conv1.stride == (1, 1)
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    assert count_macs(v1, (3, 224, 224)) < count_macs(v15, (3, 224, 224))


def _projection_params(model):
    """Parameters a 1x1 projection + BN would cost on each block of the model."""
    total = 0
    for stage in model.stage_names:
        for block in getattr(model, stage):
            cin = block.conv1.in_channels
            cout = block.bn2.num_features if hasattr(block, "bn2") else None
            last = block.conv3 if hasattr(block, "conv3") else block.conv2
            cout = last.out_channels
            total += cin * cout + 2 * cout
    return total


def test_shortcut_options_differ_in_parameters_as_the_paper_says():
    a = resnetlab.create_model("resnet20", shortcut="A")
    b = resnetlab.create_model("resnet20", shortcut="B")
    c = resnetlab.create_model("resnet20", shortcut="C")
    plain = resnetlab.create_model("plain20")
    # A adds nothing to the plain net; B adds projections (16->32, 32->64) only where shapes change
    assert count_params(a) == count_params(plain)
    assert count_params(b) - count_params(a) == (16 * 32 + 64) + (32 * 64 + 128)
    # C projects every one of the 9 blocks
    assert count_params(c) - count_params(a) == _projection_params(a)
    pads = [m for m in a.modules() if isinstance(m, PadShortcut)]
    assert len(pads) == 2 and all(sum(p.numel() for p in m.parameters()) == 0 for m in pads)


def test_option_a_shortcut_is_strided_identity_with_zero_channels():
    x = torch.randn(2, 3, 6, 6)
    out = PadShortcut(3, 5, 2)(x)
    assert out.shape == (2, 5, 3, 3)
    assert torch.equal(out[:, :3], x[:, :, ::2, ::2])
    assert torch.count_nonzero(out[:, 3:]) == 0


@pytest.mark.parametrize("name", ["plain18", "plain34", "plain20", "plain56", "plain_mlp"])
def test_plain_twins_hold_no_shortcut(name):
    model = resnetlab.create_model(name)
    blocks = [m for m in model.modules() if hasattr(m, "plain")]
    assert blocks and all(b.plain for b in blocks)
    assert all(getattr(b, "downsample", None) is None for b in blocks)


def test_plain_block_drops_the_input_where_a_residual_block_keeps_it():
    torch.manual_seed(0)
    res = resnetlab.create_model("resnet20").layer1[0].eval()
    plain = resnetlab.create_model("plain20").layer1[0].eval()
    for block in (res, plain):
        nn.init.zeros_(block.conv2.weight)  # F(x) = 0
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(res(x), torch.relu(x))  # y = relu(F(x) + x)
    assert torch.count_nonzero(plain(x)) == 0  # y = relu(F(x))


def test_each_block_holds_its_shortcut_as_a_module_and_the_plain_twin_none():
    a = resnetlab.create_model("resnet20")  # option A
    assert a.layer1[0].downsample is None and isinstance(a.layer2[0].downsample, PadShortcut)
    b = resnetlab.create_model("resnet50")  # option B: project where the shape changes
    assert [type(m) for m in b.layer2[0].downsample] == [nn.Conv2d, nn.BatchNorm2d]
    assert b.layer2[1].downsample is None
    c = resnetlab.create_model("resnet20", shortcut="C")  # project every block
    assert all(isinstance(blk.downsample, nn.Sequential) for blk in c.layer1)
    pre = resnetlab.create_model("preact_resnet164")  # its input is normalised: no BN
    assert [type(m) for m in pre.layer1[0].downsample] == [nn.Conv2d]
    twin = resnetlab.create_model("plain20").layer2[0]  # its own class: same layers, no shortcut
    assert twin.plain and twin.shortcut is None and twin.downsample is None
    assert twin.state_dict().keys() == a.layer2[0].state_dict().keys()


def test_no_head_returns_the_pooled_features():
    model = resnetlab.create_model("resnet20", num_classes=0).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model.forward_features(x).mean((2, 3)))


def test_plain18_lacks_exactly_the_projection_shortcuts_of_resnet18():
    res, plain = resnetlab.create_model("resnet18"), resnetlab.create_model("plain18")
    projections = sum(
        p.numel() for n, p in res.named_parameters() if ".downsample." in n
    )  # three stages change shape
    assert count_params(res) - count_params(plain) == projections > 0


@pytest.mark.parametrize("output_stride, sizes", [(32, [32, 16, 8, 4, 2]), (16, [32, 16, 8, 4, 4]),
                                                  (8, [32, 16, 8, 8, 8])])  # fmt: skip
def test_resnet50_feature_maps_have_channels_and_strides(output_stride, sizes):
    model = resnetlab.create_model(
        "resnet50", features_only=True, output_stride=output_stride, out_indices=(0, 1, 2, 3, 4)
    )
    assert model.channels == [64, 256, 512, 1024, 2048]
    assert model.strides == [2, 4, 8, min(16, output_stride), output_stride]
    feats = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == model.channels
    assert [f.shape[-1] for f in feats] == sizes
    assert [64 // s for s in model.strides] == sizes


def test_cifar_feature_maps_and_dilation():
    model = resnetlab.create_model("resnet20", features_only=True)
    feats = model(torch.randn(2, 3, 32, 32))
    assert [f.shape[1:] for f in feats] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert model.strides == [1, 2, 4]
    dilated = resnetlab.create_model("resnet20", output_stride=2)
    assert dilated.layer3[0].conv1.dilation == (1, 1) and dilated.layer3[1].conv1.dilation == (2, 2)
    assert dilated.forward_features(torch.randn(1, 3, 32, 32)).shape[-1] == 16


def test_small_stem_keeps_resolution_and_in_chans_sets_the_first_conv():
    model = resnetlab.create_model("resnet18", stem="small", in_chans=1, num_classes=10)
    assert model.conv1.weight.shape == (64, 1, 3, 3) and isinstance(model.maxpool, nn.Identity)
    feats = model.forward_features(torch.randn(2, 1, 32, 32))
    assert feats.shape == (2, 512, 4, 4)


def test_drop_path_rate_grows_linearly_with_block_index():
    model = resnetlab.create_model("resnet56", drop_path_rate=0.2)
    blocks = [b for s in model.stage_names for b in getattr(model, s)]
    rates = [getattr(b.drop_path, "p", 0.0) for b in blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)
    steps = [b - a for a, b in zip(rates, rates[1:])]
    assert max(steps) - min(steps) < 1e-9
    # in training, the last block drops its whole residual branch for a sample with p = 0.2
    model.eval()
    last = blocks[-1]
    last.drop_path.train()  # the rest in eval mode: stochastic depth alone draws random numbers
    x = torch.randn(64, 64, 2, 2)
    with torch.no_grad():
        torch.manual_seed(1)
        got = last(x)
        residual, shortcut = last.residual(x), last.shortcut(x)
    torch.manual_seed(1)
    keep = torch.empty(64, 1, 1, 1).bernoulli_(0.8)  # one draw a sample, as the block makes it
    dropped = keep.flatten() == 0
    assert 0 < int(dropped.sum()) < 64
    assert torch.equal(got, torch.relu(residual * keep / 0.8 + shortcut))
    assert torch.equal(got[dropped], torch.relu(shortcut[dropped]))  # the shortcut alone


def test_zero_init_residual_zeroes_the_last_bn_of_each_block():
    model = resnetlab.create_model("resnet50", zero_init_residual=True)
    blocks = [b for s in model.stage_names for b in getattr(model, s)]
    assert all(torch.count_nonzero(b.bn3.weight) == 0 for b in blocks)
    assert torch.count_nonzero(model.bn1.weight) == 64


def test_wide_resnet_block_dropout_sits_between_the_convs():
    torch.manual_seed(0)
    model = resnetlab.create_model("wide_resnet16_8", block_drop_rate=0.3).eval()
    block = model.layer1[0]
    assert isinstance(block.drop, nn.Dropout) and block.drop.p == 0.3
    block.drop.train()  # the rest in eval mode: the dropout alone draws random numbers
    seen = {}
    hooks = [
        block.conv1.register_forward_hook(lambda m, i, out: seen.update(a=out.clone())),
        block.conv2.register_forward_pre_hook(lambda m, i: seen.update(b=i[0].clone())),
    ]
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.manual_seed(1)
        block(x)
        torch.manual_seed(1)  # conv2 takes dropout(relu(bn2(conv1(...)))), drawn the same way
        want = F.dropout(torch.relu(block.bn2(seen["a"])), p=0.3, training=True)
    for h in hooks:
        h.remove()
    assert torch.equal(seen["b"], want)
    assert not torch.equal(seen["b"], torch.relu(block.bn2(seen["a"])))  # some units dropped


def test_drop_rate_adds_dropout_before_the_head():
    torch.manual_seed(0)
    model = resnetlab.create_model("resnet20", drop_rate=0.5).eval()
    assert isinstance(model.head_drop, nn.Dropout) and model.head_drop.p == 0.5
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        pooled = model.forward_features(x).mean((2, 3))
        assert torch.equal(model(x), model.fc(pooled))  # evaluation: no dropout
        model.head_drop.train()  # the rest in eval mode: the dropout alone draws random numbers
        torch.manual_seed(1)
        got = model(x)
        torch.manual_seed(1)
        want = model.fc(F.dropout(pooled, p=0.5, training=True))
    assert torch.equal(got, want) and not torch.equal(got, model.fc(pooled))


def test_residual_mlp_options_and_shapes():
    model = resnetlab.create_model("residual_mlp", in_features=12, depth=3, width=32, num_classes=4)
    assert len(model.blocks) == 3
    assert model(torch.randn(5, 3, 2, 2)).shape == (5, 4)
    plain = resnetlab.create_model("plain_mlp", in_features=12, depth=3, width=32, num_classes=4)
    assert count_params(plain) == count_params(model)
    with pytest.raises(ValueError, match="expects 12"):
        model(torch.randn(5, 13))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="resnet5"), "did you mean"),
        (dict(name="resnet20", shortcut="D"), "shortcut option"),
        (dict(name="resnet50", output_stride=12), "output_stride 12"),
        (dict(name="resnet18", colour="red"), "unknown option"),
        (dict(name="resnet18", in_chans=0), "in_chans"),
        (dict(name="plain20", drop_path_rate=0.1), "plain"),
        (dict(name="resnet18", features_only=True, out_indices=(7,)), "out_indices"),
        (dict(name="residual_mlp", in_chans=1), "in_features"),
    ],
)
def test_bad_model_requests_fail_in_one_clear_line(kwargs, message):
    with pytest.raises(ResnetlabError, match=message) as info:
        resnetlab.create_model(**kwargs)
    assert "\n" not in str(info.value)


def test_unknown_name_suggests_the_closest_names():
    with pytest.raises(ResnetlabError) as info:
        resnetlab.create_model("resnet5")
    assert "resnet50" in str(info.value) and "resnet56" in str(info.value)


def test_model_for_data_sizes_conv_nets_by_channels_and_mlps_by_pixels():
    from resnetlab.models import model_for_data

    conv = model_for_data("resnet20", (1, 28, 28), 7)
    assert conv(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    mlp = model_for_data("residual_mlp", (1, 28, 28), 7, {"depth": 2})
    assert mlp(torch.randn(2, 784)).shape == (2, 7)
    assert mlp.resnetlab_config["options"] == {"in_features": 784, "depth": 2}
