"""Grad-CAM points at the evidence: a net trained to spot a bright square highlights the square."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resnetlab import create_model
from resnetlab.errors import ResnetlabError
from resnetlab.infer.gradcam import grad_cam, stage_module

SIDE, SQUARE = 32, 8


def make_batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Noise images; class 1 has a bright SQUARE x SQUARE patch at a random place."""
    x = torch.rand(n, 1, SIDE, SIDE, generator=gen) * 0.5
    y = torch.randint(0, 2, (n,), generator=gen)
    corners = torch.randint(0, SIDE - SQUARE + 1, (n, 2), generator=gen)
    for i in range(n):
        if y[i] == 1:
            r, c = corners[i].tolist()
            x[i, 0, r : r + SQUARE, c : c + SQUARE] = 1.0
    return (x - 0.5) / 0.3, y, corners


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    model = create_model(
        "resnet20", num_classes=2, in_chans=1, layers=(1, 1, 1), widths=(8, 16, 32), stem_width=8
    )
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(60):
        x, y, _ = make_batch(32, gen)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("corner", [(2, 3), (20, 22), (4, 21), (22, 1), (12, 12)])
def test_cam_peak_lies_on_the_square(detector, corner):
    x = torch.rand(1, 1, SIDE, SIDE, generator=torch.Generator().manual_seed(7)) * 0.5
    r, c = corner
    x[0, 0, r : r + SQUARE, c : c + SQUARE] = 1.0
    res = grad_cam(detector, (x - 0.5) / 0.3)
    assert res.index == 1 and res.stage == "layer3"
    assert res.cam.shape == (SIDE, SIDE) and float(res.cam.min()) >= 0.0 and res.cam.max() == 1.0
    pr, pc = divmod(int(res.cam.argmax()), SIDE)
    margin = 2  # the last stage sees the image at stride 4
    assert r - margin <= pr < r + SQUARE + margin and c - margin <= pc < c + SQUARE + margin
    inside = torch.zeros(SIDE, SIDE, dtype=torch.bool)
    inside[r : r + SQUARE, c : c + SQUARE] = True
    assert float(res.cam[inside].mean()) > 3 * float(res.cam[~inside].mean())


def paper_cam(model: torch.nn.Module, x: torch.Tensor, stage: str, cls: int) -> torch.Tensor:
    """Grad-CAM as the paper defines it, from autograd: relu(sum_k mean(dy/dA_k) A_k), upsampled
    to the input and scaled to 0..1."""
    acts = {}
    hook = getattr(model, stage).register_forward_hook(lambda _m, _i, out: acts.update(a=out))
    try:
        logits = model(x)
    finally:
        hook.remove()
    (grad,) = torch.autograd.grad(logits[0, cls], acts["a"])
    cam = (grad.mean((2, 3), keepdim=True) * acts["a"].detach()).sum(1, keepdim=True).clamp(min=0)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    return cam / cam.max()


def test_earlier_stage_and_given_class(detector):
    x, _, _ = make_batch(1, torch.Generator().manual_seed(3))
    res = grad_cam(detector, x, stage=2, target=0)
    assert res.stage == "layer2" and res.index == 0
    with torch.no_grad():
        torch.testing.assert_close(res.probs, torch.softmax(detector(x), 1)[0])
    other = grad_cam(detector, x, stage=2, target=1)
    assert not torch.allclose(res.cam, other.cam)  # the map explains the class asked for
    assert stage_module(detector, "layer1")[0] == "layer1"
    # each map is the one of the stage and class asked for, by name or by index
    for stage, asked, target in [("layer2", 2, 0), ("layer2", "layer2", 1), ("layer1", 1, 1),
                                 ("layer3", None, 0), ("layer1", "layer1", 0)]:  # fmt: skip
        got = grad_cam(detector, x, stage=asked, target=target)
        assert got.stage == stage and got.index == target
        torch.testing.assert_close(got.cam, paper_cam(detector, x, stage, target))


def test_bad_stage_class_and_model():
    model = create_model("resnet20", num_classes=3, layers=(1, 1, 1)).eval()
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(ResnetlabError, match="unknown stage 'layer9'"):
        grad_cam(model, x, stage="layer9")
    with pytest.raises(ResnetlabError, match="stage 4 out of range"):
        grad_cam(model, x, stage=4)
    with pytest.raises(ResnetlabError, match="class index 3 out of range"):
        grad_cam(model, x, target=3)
    mlp = create_model("residual_mlp", num_classes=3, in_features=12, depth=1, width=8).eval()
    with pytest.raises(ResnetlabError, match="Grad-CAM needs a conv model"):
        grad_cam(mlp, torch.randn(1, 3, 2, 2))
