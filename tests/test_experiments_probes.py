"""Gradient flow, layer responses and lesions, checked against independent computations on a
hand-built two-block net (functional ops and torch.autograd, no hooks)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resnetlab.errors import ResnetlabError
from resnetlab.experiments.gradients import probe, residual_blocks, response_layers
from resnetlab.experiments.lesion import deletable, deleted, error_rate, lesion_model
from resnetlab.experiments.nets import cifar_net, parse_depths, parse_families
from resnetlab.models import ResNet, ResNetSpec, create_model


def two_block_net(plain: bool, seed: int = 0) -> ResNet:
    torch.manual_seed(seed)
    spec = ResNetSpec(block="basic", layers=(2,), widths=(4,), stem="small", stem_width=4,
                      shortcut="A", plain=plain)  # fmt: skip
    net = ResNet(spec, num_classes=3, in_chans=2)
    with torch.no_grad():  # BN affine parameters away from (1, 0), so they matter
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return net


def batch(seed: int = 1, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 5, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


def by_hand(net: ResNet, x: torch.Tensor, y: torch.Tensor, plain: bool, train_mode: bool):
    """Forward written out with the net's tensors; autograd for the gradients."""
    p = {k: v.detach().clone().requires_grad_(v.is_floating_point()) for k, v in
         net.state_dict().items() if not k.endswith("num_batches_tracked")}  # fmt: skip

    def bn(h, name):
        return F.batch_norm(h, p[f"{name}.running_mean"].detach(),
                            p[f"{name}.running_var"].detach(), p[f"{name}.weight"],
                            p[f"{name}.bias"], training=train_mode, eps=1e-5)  # fmt: skip

    responses = []
    h = bn(F.conv2d(x, p["conv1.weight"], padding=1), "bn1")
    responses.append(h.std())
    h = F.relu(h)
    outs = []
    for j in range(2):
        pre = f"layer1.{j}"
        a = bn(F.conv2d(h, p[f"{pre}.conv1.weight"], padding=1), f"{pre}.bn1")
        responses.append(a.std())
        b = bn(F.conv2d(F.relu(a), p[f"{pre}.conv2.weight"], padding=1), f"{pre}.bn2")
        responses.append(b.std())
        h = F.relu(b if plain else b + h)
        outs.append(h)
    logits = F.linear(h.mean((2, 3)), p["fc.weight"], p["fc.bias"])
    loss = F.cross_entropy(logits, y)
    conv_names = ["conv1.weight"] + [f"layer1.{j}.conv{i}.weight" for j in (0, 1) for i in (1, 2)]
    grads = torch.autograd.grad(loss, [p[n] for n in conv_names] + outs)
    conv_norms = [float(g.norm()) for g in grads[: len(conv_names)]]
    block_norms = [float(g.norm()) * len(x) ** 0.5 for g in grads[len(conv_names) :]]
    return conv_norms, block_norms, [float(r.detach()) for r in responses]


@pytest.mark.parametrize("plain", [False, True], ids=["resnet", "plain"])
@pytest.mark.parametrize("train_mode", [True, False], ids=["batch-stats", "running-stats"])
def test_probe_equals_autograd_on_a_hand_built_two_block_net(plain, train_mode):
    net = two_block_net(plain)
    if not train_mode:  # running statistics other than (0, 1)
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
    x, y = batch()
    conv, block, resp = by_hand(net, x, y, plain, train_mode)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    got = probe(net, [(x, y)], train_mode=train_mode)
    assert got.conv_names == ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1",
                              "layer1.1.conv2"]  # fmt: skip
    assert got.block_names == ["layer1.0", "layer1.1"]
    assert got.response_names == got.conv_names  # every conv here is a 3x3 followed by its BN
    torch.testing.assert_close(torch.tensor(got.conv_grad_norms), torch.tensor(conv), rtol=1e-5,
                               atol=1e-8)  # fmt: skip
    torch.testing.assert_close(torch.tensor(got.block_grad_norms), torch.tensor(block), rtol=1e-5,
                               atol=1e-8)  # fmt: skip
    torch.testing.assert_close(torch.tensor(got.response_stds), torch.tensor(resp), rtol=1e-5,
                               atol=1e-8)  # fmt: skip
    # the probe leaves the net as it found it (BN running statistics included)
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in net.parameters())


def test_probe_averages_over_batches():
    net = two_block_net(False)
    b1, b2 = batch(1), batch(2)
    p1, p2 = probe(net, [b1]), probe(net, [b2])
    both = probe(net, [b1, b2])
    want = [(a + b) / 2 for a, b in zip(p1.conv_grad_norms, p2.conv_grad_norms)]
    torch.testing.assert_close(torch.tensor(both.conv_grad_norms), torch.tensor(want))


def test_response_layers_of_resnet20_are_its_19_3x3_layers():
    model = create_model("resnet20", num_classes=10, in_chans=1)
    names = [n for n, _ in response_layers(model)]
    assert len(names) == 19 and names[0] == "conv1" and names[-1] == "layer3.2.conv2"
    assert len(residual_blocks(model)) == 9


def test_twins_share_their_initial_conv_weights():
    torch.manual_seed(0)
    a = create_model("resnet20", num_classes=10, in_chans=1)
    torch.manual_seed(0)
    b = create_model("plain20", num_classes=10, in_chans=1)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


# --------------------------------------------------------------------------------------------
# lesions


def test_deleting_a_residual_block_keeps_its_shortcut():
    net = two_block_net(False).eval()
    x, _ = batch()
    with torch.no_grad():
        stem = net.relu(net.bn1(net.conv1(x)))
        after0 = net.layer1[0](stem)
        # block 1 deleted: relu(identity) of block 0's output, which is already >= 0
        want = net.fc(net.avgpool(after0).flatten(1))
        with deleted([net.layer1[1]]):
            got = net(x)
    torch.testing.assert_close(got, want)
    with torch.no_grad():  # the hooks are gone afterwards
        torch.testing.assert_close(net(x), net.fc(net.avgpool(net.layer1[1](after0)).flatten(1)))


def test_downsampling_residual_block_deletes_to_its_option_a_shortcut():
    model = create_model("resnet20", num_classes=3, in_chans=1, layers=[1, 1, 1]).eval()
    x = torch.randn(2, 1, 8, 8)
    block = model.layer2[0]
    with torch.no_grad():
        h = model.layer1(model.stem(x))
        want = torch.relu(block.downsample(h))
        captured = {}
        hook = model.layer2.register_forward_hook(lambda m, i, o: captured.setdefault("o", o))
        with deleted([block]):
            model(x)
        hook.remove()
    assert captured["o"].shape == (2, 32, 4, 4)
    torch.testing.assert_close(captured["o"], want)


def test_plain_downsampling_blocks_cannot_be_deleted():
    model = create_model("plain20", num_classes=10, in_chans=1)
    flags = [deletable(b) for _, b in residual_blocks(model)]
    # layer2.0 and layer3.0 change the shape; the other 7 blocks can be skipped
    assert flags == [True, True, True, False, True, True, False, True, True]
    res = create_model("resnet20", num_classes=10, in_chans=1)
    assert all(deletable(b) for _, b in residual_blocks(res))


def test_lesion_model_counts_and_full_deletion():
    torch.manual_seed(0)
    model = create_model("plain20", num_classes=4, in_chans=1, layers=[2, 2, 2]).eval()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g))]
    blocks = [b for _, b in residual_blocks(model)]
    pool = [i for i, b in enumerate(blocks) if deletable(b)]
    base, single, ks, means, stds = lesion_model(model, batches, pool=pool, draws=3, seed=0)
    assert base == error_rate(model, batches)
    assert [s is None for s in single] == [False, False, True, False, True, False]
    assert ks == [1, 2, 3, 4] and len(means) == len(stds) == 4
    with deleted([blocks[i] for i in pool]):  # k = everything: one draw, deterministic
        assert means[-1] == error_rate(model, batches) and stds[-1] == 0.0


def test_depths_families_and_net_names():
    assert parse_depths("20, 56,110") == (20, 56, 110)
    assert parse_families("resnet,plain") == ("resnet", "plain")
    assert cifar_net("plain", 56) == ("plain56", {})
    assert cifar_net("plain", 1202) == ("plain1202", {})
    assert cifar_net("resnet", 8) == ("resnet8", {})  # its own name, not resnet20 with [1, 1, 1]
    with pytest.raises(ResnetlabError, match="6n\\+2"):
        parse_depths("20,21")
    with pytest.raises(ResnetlabError, match="not a whole number"):
        parse_depths("twenty")
    with pytest.raises(ResnetlabError, match="unknown family 'vgg'"):
        parse_families("plain,vgg")
