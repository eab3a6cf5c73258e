"""bf16 fast path vs fp32 eager on real images: top-1 agreement of at least 99%, and every image
whose class changes is a near-tie of fp32's top two classes.

A small ResNet is trained briefly on 8,000 Fashion-MNIST test images and compared on the other
2,000 (benchmarks/bench_infer.py measures all 10,000 with a longer-trained model).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from resnetlab import create_model
from resnetlab.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from resnetlab.infer.fastpath import prepare_for_inference

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def load_test_split() -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(FMNIST / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC)
    labels = read_idx(FMNIST / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC)
    x = torch.from_numpy(images).unsqueeze(1).float() / 255.0
    return (x - 0.286) / 0.353, torch.from_numpy(labels).long()


@pytest.mark.skipif(
    not (FMNIST / "t10k-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST not installed (Debian package dataset-fashion-mnist)",
)
@pytest.mark.slow
def test_bf16_top1_agrees_with_fp32_eager_on_fashion_mnist():
    x, y = load_test_split()
    torch.manual_seed(0)
    model = create_model(
        "resnet20", num_classes=10, in_chans=1, layers=(1, 1, 1), widths=(8, 16, 32), stem_width=8
    )
    epochs, steps_per_epoch = 2, 63  # 8000 images in batches of 128
    opt = torch.optim.SGD(
        model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=0.1, total_steps=epochs * steps_per_epoch, pct_start=0.25
    )
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(8000, generator=g).split(128):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    held_x, held_y = x[8000:], y[8000:]
    with torch.no_grad():
        ref = model(held_x)
    fast = prepare_for_inference(model, precision="bf16", compile=False)
    got = torch.cat([fast(b) for b in held_x.split(500)])
    accuracy = (ref.argmax(1) == held_y).float().mean().item()
    agreement = (got.argmax(1) == ref.argmax(1)).float().mean().item()
    assert accuracy > 0.7, f"the model did not learn (accuracy {accuracy:.3f})"
    assert agreement >= 0.99, f"bf16 agrees with fp32 on {agreement:.4f} of 2000 images"
    # bf16 keeps 8 significant bits: logits move by a few per cent of their range, no more
    bound = 0.05 * float(ref.abs().max())
    assert float((got - ref).abs().max()) < bound
    # so only near-ties can change class: fp32's top-2 margin is within twice that shift there
    top2 = ref.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    flipped = got.argmax(1) != ref.argmax(1)
    assert all(float(m) < 2 * bound for m in margin[flipped])
