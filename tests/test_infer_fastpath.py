"""The fast inference path: conv-BN folding is exact, and the prepared model agrees with eager."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnetlab import create_model
from resnetlab.errors import ResnetlabError
from resnetlab.infer.fastpath import (
    fold_batchnorm,
    fuse_conv_bn,
    prepare_for_inference,
)
from resnetlab.models.stats import count_macs

# tiny versions of every kind of block, stem and shortcut; (name, options, input C,H,W)
TINY = {
    "postact_basic_A": ("resnet20", dict(layers=(1, 1, 1), widths=(4, 8, 16), stem_width=4), 16),
    "postact_basic_B": (
        "resnet20",
        dict(layers=(1, 1, 1), widths=(4, 8, 16), stem_width=4, shortcut="B"),
        16,
    ),
    "postact_basic_C": (
        "resnet20",
        dict(layers=(2, 1, 1), widths=(4, 8, 16), stem_width=4, shortcut="C"),
        16,
    ),
    "plain": ("plain20", dict(layers=(1, 1, 1), widths=(4, 8, 16), stem_width=4), 16),
    "bottleneck_imagenet_stem": (
        "resnet50",
        dict(layers=(1, 1), widths=(4, 8), stem_width=8, stride_in_1x1=True),
        32,
    ),
    "resnext_grouped": (
        "resnext50_32x4d",
        dict(layers=(1, 1), widths=(8, 16), stem_width=8, groups=4, base_width=32),
        32,
    ),
    "dilated": ("resnet18", dict(layers=(1, 1, 1), widths=(4, 8, 16), output_stride=8), 32),
    "preact_basic": (
        "preact_resnet110",
        dict(layers=(1, 1, 1), widths=(4, 8, 16), stem_width=4),
        16,
    ),
    "preact_bottleneck": (
        "preact_resnet164",
        dict(layers=(1, 1, 1), widths=(4, 8, 16), stem_width=8),
        16,
    ),
    "preact_imagenet_stem": (
        "preact_resnet110",
        dict(layers=(1, 1), widths=(4, 8), stem_width=4, stem="imagenet"),
        32,
    ),
    "wide_preact_dropout": (
        "wide_resnet16_8",
        dict(layers=(1, 1, 1), widths=(8, 8, 16), block_drop_rate=0.3),
        16,
    ),
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


def tiny(key: str, num_classes: int = 5, in_chans: int = 3) -> tuple[nn.Module, torch.Tensor]:
    name, opts, side = TINY[key]
    torch.manual_seed(0)
    model = randomise_bn(create_model(name, num_classes=num_classes, in_chans=in_chans, **opts))
    x = torch.randn(4, in_chans, side, side, generator=torch.Generator().manual_seed(1))
    return model, x


def count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    return float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


def test_fuse_conv_bn_matches_conv_then_bn():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=True)
    bn = randomise_bn(nn.Sequential(nn.BatchNorm2d(6)))[0]
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        assert close(fuse_conv_bn(conv, bn)(x), bn(conv(x)), 1e-6)


@pytest.mark.parametrize("key", sorted(TINY))
def test_folding_is_exact_in_fp32(key):
    model, x = tiny(key)
    folded, n = fold_batchnorm(model)
    with torch.no_grad():
        ref, got = model(x), folded(x)
    assert n > 0
    assert close(got, ref, 1e-5), float((got - ref).abs().max())


@pytest.mark.parametrize("key", ["postact_basic_A", "postact_basic_C", "bottleneck_imagenet_stem"])
def test_post_activation_nets_keep_no_batchnorm(key):
    model, _ = tiny(key)
    before = count_bn(model)
    folded, n = fold_batchnorm(model)
    assert n == before and count_bn(folded) == 0
    assert count_bn(model) == before  # the original is left untouched


@pytest.mark.parametrize("key", ["preact_basic", "preact_bottleneck", "wide_preact_dropout"])
def test_pre_activation_input_norms_stay(key):
    # each pre-activation block normalises its input (bn1: no conv before it) and the net ends with
    # `norm`; those cannot fold, every BN that follows a conv does
    model, _ = tiny(key)
    blocks = sum(len(getattr(model, s)) for s in model.stage_names)
    folded, n = fold_batchnorm(model)
    assert count_bn(folded) == blocks + 1
    assert n == count_bn(model) - blocks - 1


def test_residual_mlp_folds_linear_batchnorm():
    torch.manual_seed(0)
    model = randomise_bn(
        create_model("residual_mlp", num_classes=4, in_features=48, depth=2, width=16)
    )
    x = torch.randn(8, 3, 4, 4)
    folded, n = fold_batchnorm(model)
    assert n == 5 and count_bn(folded) == 0  # stem + 2 per block
    with torch.no_grad():
        assert close(folded(x), model(x), 1e-5)


@pytest.mark.parametrize(
    "key", ["postact_basic_A", "preact_bottleneck", "bottleneck_imagenet_stem"]
)
def test_prepared_fp32_agrees_with_eager(key):
    model, x = tiny(key)
    fast = prepare_for_inference(model, precision="fp32", compile=False)
    with torch.no_grad():
        ref = model(x)
    got = fast(x)
    assert fast.precision == "fp32" and fast.folded_bn > 0
    assert got.dtype == torch.float32 and close(got, ref, 1e-5)
    # a plain NCHW input works as well as a channels_last one
    assert close(fast(x.contiguous()), ref, 1e-5)


def test_prepared_bf16_stays_close_and_returns_fp32():
    model, x = tiny("postact_basic_B")
    fast = prepare_for_inference(model, precision="bf16", compile=False)
    with torch.no_grad():
        ref = model(x)
    got = fast(x)
    assert got.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: a few per cent of the logit scale
    assert close(got, ref, 5e-2)


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_computes_in_bf16_exactly_where_the_cpu_has_it(monkeypatch, native):
    import resnetlab.policy as policy

    model, x = tiny("postact_basic_B")
    fp32 = prepare_for_inference(model, precision="fp32", compile=False)(x)
    bf16 = prepare_for_inference(model, precision="bf16", compile=False)(x)
    assert not torch.equal(bf16, fp32)  # bf16 really changes the arithmetic
    monkeypatch.setattr(policy, "native_bf16", lambda: native)
    auto = prepare_for_inference(model, precision="auto", compile=False)(x)
    assert torch.equal(auto, bf16 if native else fp32)
    with pytest.raises(ResnetlabError, match="precision fp16 needs CUDA"):
        prepare_for_inference(model, precision="fp16", compile=False)
    with pytest.raises(ResnetlabError, match="precision 'fp8': use auto, fp32, bf16, fp16"):
        prepare_for_inference(model, precision="fp8", compile=False)


@pytest.mark.parametrize("precision", ["auto", "fp32", "bf16"])
def test_fastpath_precision_is_the_policy_decision(precision):
    from resnetlab import policy

    model, _ = tiny("postact_basic_A")
    expected = policy.precision_name(policy.resolve_precision(precision, "cpu"))
    assert prepare_for_inference(model, precision=precision, compile=False).precision == expected


def test_automatic_compile_only_for_large_workloads(monkeypatch):
    import resnetlab.infer.fastpath as fp
    from resnetlab import policy

    monkeypatch.setattr(fp, "compiler_available", lambda: True)
    model, _ = tiny("postact_basic_A")
    size = (3, 16, 16)
    macs = count_macs(model, size)
    assert not fp.compile_pays(model, 10, size)
    assert not fp.compile_pays(model, 10**12, None)  # no size: the work is unknown
    assert fp.compile_pays(model, int(policy.COMPILE_MIN_MACS // macs) + 1, size)
    assert not prepare_for_inference(model, precision="fp32", expected_images=10).compiled
    monkeypatch.setattr(fp, "compiler_available", lambda: False)
    assert not fp.compile_pays(model, 10**12, size)
