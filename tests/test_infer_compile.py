"""The compiled fast path (torch.compile, frozen weights) agrees with eager.

Compiling costs tens of seconds on a cold cache even for a tiny model, so this lives apart.
"""

from __future__ import annotations

import pytest
import torch

from resnetlab import create_model
from resnetlab.infer.fastpath import compiler_available, prepare_for_inference

pytestmark = pytest.mark.skipif(not compiler_available(), reason="no C++ compiler for inductor")


def randomise_bn(model: torch.nn.Module) -> torch.nn.Module:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    return float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


@pytest.mark.slow
def test_compiled_fast_path_agrees_with_eager():
    # one stage of one block: the fewest kernels to compile, the same code path
    torch.manual_seed(0)
    model = randomise_bn(
        create_model("resnet20", num_classes=5, layers=(1,), widths=(4,), stem_width=4)
    )
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    fast = prepare_for_inference(model, precision="fp32", compile=True)
    with torch.no_grad():
        ref = model(x)
    assert fast.compiled
    assert close(fast(x), ref, 1e-4)
    # a smaller last batch is padded to the compiled batch size, not recompiled
    assert fast(x[:3]).shape == (3, 5) and fast.batch == 4
    assert close(fast(x[:3]), ref[:3], 1e-4)
