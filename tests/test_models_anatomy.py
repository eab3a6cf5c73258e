"""Blocks own their anatomy: forward is residual(x) + shortcut(x) (then ReLU where the block has
one), a plain twin has no shortcut, the declared (conv, BN) pairs are what forward computes; and
the lesion, the probes and BN folding, built on that anatomy, give the numbers they gave when they
re-encoded layer names (pinned below from that code, on fixed seeded nets)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnetlab import create_model
from resnetlab.experiments.gradients import probe, residual_blocks, response_layers
from resnetlab.experiments.lesion import deletable, deleted, lesion_model, shortcut_only
from resnetlab.infer.fastpath import fold_batchnorm
from resnetlab.models import (
    BasicBlock,
    Bottleneck,
    MLPBlock,
    PlainBasicBlock,
    PlainBottleneck,
    PlainMLPBlock,
    PlainPreActBasicBlock,
    PlainPreActBottleneck,
    PreActBasicBlock,
    PreActBottleneck,
)
from resnetlab.models.layers import PadShortcut

# every kind of block and shortcut: (block, input shape, what follows the addition)
BLOCKS = {
    "basic_identity": (lambda: BasicBlock(8, 8), (8, 6, 6), "relu"),
    "basic_A": (lambda: BasicBlock(8, 16, 2, shortcut="A"), (8, 6, 6), "relu"),
    "basic_B": (lambda: BasicBlock(8, 16, 2, shortcut="B"), (8, 6, 6), "relu"),
    "basic_C": (lambda: BasicBlock(8, 8, shortcut="C"), (8, 6, 6), "relu"),
    "bottleneck_identity": (lambda: Bottleneck(16, 4), (16, 6, 6), "relu"),
    "bottleneck_A": (lambda: Bottleneck(8, 4, 2, shortcut="A"), (8, 6, 6), "relu"),
    "bottleneck_B_grouped": (lambda: Bottleneck(8, 4, 2, groups=2), (8, 6, 6), "relu"),
    "preact_basic_identity": (lambda: PreActBasicBlock(8, 8), (8, 6, 6), "none"),
    "preact_basic_A": (lambda: PreActBasicBlock(8, 16, 2, shortcut="A"), (8, 6, 6), "none"),
    "preact_basic_B": (lambda: PreActBasicBlock(8, 16, 2), (8, 6, 6), "none"),
    "preact_bottleneck_identity": (lambda: PreActBottleneck(16, 4), (16, 6, 6), "none"),
    "preact_bottleneck_B": (lambda: PreActBottleneck(8, 4, 2), (8, 6, 6), "none"),
    "preact_bottleneck_C": (lambda: PreActBottleneck(16, 4, shortcut="C"), (16, 6, 6), "none"),
    "mlp": (lambda: MLPBlock(16), (16,), "relu"),
}
PLAIN = {
    "plain_basic": (lambda: PlainBasicBlock(8, 16, 2), (8, 6, 6), "relu"),
    "plain_bottleneck": (lambda: PlainBottleneck(8, 4, 2), (8, 6, 6), "relu"),
    "plain_preact_basic": (lambda: PlainPreActBasicBlock(8, 16, 2), (8, 6, 6), "none"),
    "plain_preact_bottleneck": (lambda: PlainPreActBottleneck(8, 4, 2), (8, 6, 6), "none"),
    "plain_mlp": (lambda: PlainMLPBlock(16), (16,), "relu"),
}


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-trivial statistics and affine terms, as a trained net has."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


def block_and_input(table, key):
    make, shape, _ = table[key]
    torch.manual_seed(0)
    block = randomise_bn(make())
    return block, torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("key", sorted(BLOCKS))
def test_forward_is_the_residual_plus_the_shortcut_exactly(key, train):
    block, x = block_and_input(BLOCKS, key)
    block.train(train)  # train: BN on the batch's statistics, the same in each call
    with torch.no_grad():
        got = block(x)
        want = block.residual(x) + block.shortcut(x)
        if BLOCKS[key][2] == "relu":
            want = torch.relu(want)
    assert not block.plain and torch.equal(got, want)


@pytest.mark.parametrize("key", sorted(PLAIN))
def test_a_plain_twin_has_no_shortcut_and_forwards_its_residual_alone(key):
    block, x = block_and_input(PLAIN, key)
    with torch.no_grad():
        got = block(x)
        want = block.residual(x)
        if PLAIN[key][2] == "relu":
            want = torch.relu(want)
    assert block.plain and block.shortcut is None and getattr(block, "downsample", None) is None
    assert torch.equal(got, want)


@pytest.mark.parametrize(("key", "twin"), [("basic_A", "plain_basic"),
                                            ("preact_basic_A", "plain_preact_basic"),
                                            ("mlp", "plain_mlp")])  # fmt: skip
def test_twins_hold_the_same_layers_under_the_same_names(key, twin):
    a, _ = block_and_input(BLOCKS, key)
    b, _ = block_and_input(PLAIN, twin)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize("key", sorted(BLOCKS) + sorted(PLAIN))
def test_each_declared_bn_normalises_its_conv_in_forward(key):
    block, x = block_and_input({**BLOCKS, **PLAIN}, key)
    pairs = block.conv_bn_pairs()
    outputs, inputs = {}, {}
    hooks = []
    for conv, bn in pairs:
        hooks.append(conv.register_forward_hook(lambda m, i, o: outputs.__setitem__(id(m), o)))
        hooks.append(bn.register_forward_pre_hook(lambda m, i: inputs.__setitem__(id(m), i[0])))
    with torch.no_grad():
        block(x)
    for h in hooks:
        h.remove()
    assert pairs and all(inputs[id(bn)] is outputs[id(conv)] for conv, bn in pairs)
    # every BN that follows a layer is declared; pre-activation input norms follow none
    declared = {id(bn) for _, bn in pairs}
    bns = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(declared) == len(bns) - (1 if block.preact else 0)
    for conv, bn in block.response_pairs():
        assert (conv, bn) in pairs and conv.kernel_size == (3, 3) and not block.preact


def test_the_projection_is_the_last_declared_pair():
    block, _ = block_and_input(BLOCKS, "bottleneck_B_grouped")
    pairs = block.conv_bn_pairs()
    assert pairs[-1] == (block.downsample[0], block.downsample[1]) and len(pairs) == 4
    assert isinstance(BLOCKS["basic_A"][0]().downsample, PadShortcut)
    assert len(BLOCKS["basic_A"][0]().conv_bn_pairs()) == 2  # option A: nothing to fold


@pytest.mark.parametrize("key", ["basic_B", "preact_basic_B", "preact_basic_A", "mlp"])
def test_a_deleted_block_computes_its_shortcut_and_what_follows_the_addition(key):
    block, x = block_and_input(BLOCKS, key)
    with torch.no_grad():
        want = block.shortcut(x)
        if BLOCKS[key][2] == "relu":
            want = torch.relu(want)
        assert torch.equal(shortcut_only(block, x), want)
        whole = block.residual(x) + block.shortcut(x)  # afterwards the block is whole again
        if BLOCKS[key][2] == "relu":
            whole = torch.relu(whole)
        assert torch.equal(block(x), whole)
    assert "residual" not in block.__dict__ and "forward" not in block.__dict__


def test_a_deleted_plain_block_is_skipped():
    block, x = block_and_input(PLAIN, "plain_mlp")
    with torch.no_grad():
        assert torch.equal(shortcut_only(block, x), x)
    assert deletable(block)
    assert not deletable(PlainBasicBlock(8, 16, 2)) and deletable(BasicBlock(8, 16, 2))


# --------------------------------------------------------------------------------------------
# the lesion, the probes and BN folding on fixed seeded nets: the numbers of the code that
# re-encoded conv/bn names (commit 5709e1f), pinned

NETS = {
    "resnet20": ("resnet20", dict(layers=(2, 2, 2), widths=(4, 8, 16), stem_width=4), 12),
    "plain20": ("plain20", dict(layers=(2, 2, 2), widths=(4, 8, 16), stem_width=4), 12),
    "preact110": ("preact_resnet110", dict(layers=(2, 1, 1), widths=(4, 8, 16), stem_width=4), 12),
    "preact164": ("preact_resnet164", dict(layers=(2, 1, 1), widths=(4, 8, 16), stem_width=8), 12),
    "resnet50": ("resnet50", dict(layers=(2, 1), widths=(4, 8), stem_width=8), 24),
}
BEFORE = {
    "resnet20": dict(
        single=[0.84375, 0.84375, 0.84375, 0.84375, 0.84375, 0.71875],
        k_mean=[0.84375, 0.84375, 0.8125, 0.84375, 0.765625, 0.84375],
        lesioned_sum=-3.02513758,
        block_grads=[0.399445519, 0.269772142, 0.263835609, 0.184107497, 0.173160307, 0.150582582],
        responses=[
            0.775758838,
            1.18426127,
            1.11410179,
            0.936239805,
            1.07090753,
            0.815169719,
            0.912391726,
            1.07348417,
            0.977410818,
            1.10582494,
            1.03460016,
            1.05265424,
            0.968948728,
        ],
        folded=13,
        folded_sum=4.8152876,
    ),
    "plain20": dict(
        single=[0.84375, 0.84375, None, 0.84375, None, 0.71875],
        k_mean=[0.71875, 0.78125, 0.78125, 0.71875],
        lesioned_sum=-11.1226128,
        block_grads=[0.838528395, 0.596297145, 0.446147919, 0.247495271, 0.174640663, 0.148172177],
        responses=[
            0.775758838,
            1.18426127,
            1.11410179,
            0.93623748,
            1.070908,
            0.815157888,
            0.912391699,
            1.07347598,
            0.977410923,
            1.10581132,
            1.03460066,
            1.05264863,
            0.968949716,
        ],
        folded=13,
        folded_sum=-1.69245882,
    ),
    "preact110": dict(
        single=[0.90625, 0.90625, 0.90625, 0.90625],
        k_mean=[0.90625, 0.890625, 0.90625, 0.90625],
        lesioned_sum=10.9976238,
        block_grads=[0.195804492, 0.156982169, 0.213322334, 0.146425053],
        responses=[],
        folded=4,
        folded_sum=21.0165168,
    ),
    "preact164": dict(
        single=[0.84375, 0.875, 0.75, 0.6875],
        k_mean=[0.6875, 0.875, 0.84375, 0.84375],
        lesioned_sum=-3.88430305,
        block_grads=[0.363471448, 0.281918854, 0.261959568, 0.170766748],
        responses=[],
        folded=8,
        folded_sum=57.3873132,
    ),
    "resnet50": dict(
        single=[0.84375, 0.8125, 0.8125],
        k_mean=[0.8125, 0.8125, 0.8125],
        lesioned_sum=20.8927762,
        block_grads=[0.280077055, 0.192228049, 0.153540738],
        responses=[0.630512747, 1.20952053, 0.897896957],
        folded=12,
        folded_sum=26.2368948,
    ),
}


def seeded_net(key: str):
    name, opts, side = NETS[key]
    torch.manual_seed(0)
    model = randomise_bn(create_model(name, num_classes=5, in_chans=2, **opts))
    g = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(2):
        x = torch.randn(16, 2, side, side, generator=g)
        batches.append((x, torch.randint(0, 5, (16,), generator=g)))
    return model, batches


def approx(values):
    return pytest.approx(values, rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("key", sorted(NETS))
def test_lesion_probes_and_folding_give_the_numbers_they_gave_before(key):
    model, batches = seeded_net(key)
    want = BEFORE[key]
    blocks = residual_blocks(model)
    pool = [i for i, (_, b) in enumerate(blocks) if deletable(b)]
    _, single, _, k_mean, _ = lesion_model(model, batches, pool=pool, draws=2, seed=0)
    assert single == want["single"] and k_mean == want["k_mean"]
    with torch.no_grad(), deleted([blocks[i][1] for i in pool]):
        lesioned = model(batches[0][0])
    assert float(lesioned.double().sum()) == approx(want["lesioned_sum"])

    p = probe(model, batches, train_mode=True)
    assert p.block_grad_norms == approx(want["block_grads"])
    assert p.response_stds == approx(want["responses"])
    assert len(p.response_names) == len(want["responses"])

    folded, n = fold_batchnorm(model)
    with torch.no_grad():
        assert float(folded(batches[0][0]).double().sum()) == approx(want["folded_sum"])
    assert n == want["folded"]


def test_response_layers_are_named_as_before():
    model, _ = seeded_net("resnet50")
    assert [n for n, _ in response_layers(model)] == [
        "layer1.0.conv2", "layer1.1.conv2", "layer2.0.conv2"]  # fmt: skip
    model, _ = seeded_net("preact110")
    assert response_layers(model) == []


def test_folding_replaces_the_same_layers_as_before():
    model, _ = seeded_net("resnet50")
    folded, _ = fold_batchnorm(model)
    keys = list(folded.state_dict())
    assert len(keys) == 26  # as before: every BN of a post-activation net folds, projections' too
    assert not [k for k in keys if "bn" in k or "downsample.1" in k]
    assert [k for k in folded.state_dict() if k.startswith("layer1.0.downsample")] == [
        "layer1.0.downsample.0.weight", "layer1.0.downsample.0.bias"]  # fmt: skip
    torch.manual_seed(0)
    mlp = randomise_bn(create_model("residual_mlp", num_classes=4, in_features=48, depth=2,
                                    width=16))  # fmt: skip
    folded, n = fold_batchnorm(mlp)
    assert n == 5 and list(folded.state_dict()) == [
        "stem.0.weight", "stem.0.bias", "blocks.0.fc1.weight", "blocks.0.fc1.bias",
        "blocks.0.fc2.weight", "blocks.0.fc2.bias", "blocks.1.fc1.weight", "blocks.1.fc1.bias",
        "blocks.1.fc2.weight", "blocks.1.fc2.bias", "fc.weight", "fc.bias"]  # fmt: skip
