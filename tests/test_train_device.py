"""The accelerator path on the CPU: device-resident batches, a step that keeps its tallies on the
device and masks non-finite updates, reads every N steps, the recipe and policy choices. The same
code runs on CUDA; the tests at the end run there and skip here."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.train import TINY_OPTIONS, squares, tiny_config, tiny_splits
from torch import nn

from resnetlab import policy
from resnetlab.data.augment import apply_crop_flip
from resnetlab.data.loader import BatchLoader
from resnetlab.data.normalise import normaliser
from resnetlab.errors import ResnetlabError
from resnetlab.models import create_model
from resnetlab.policy import fits_on_device
from resnetlab.train import loop, trainer
from resnetlab.train.callbacks import Callback
from resnetlab.train.checkpoint import load_checkpoint
from resnetlab.train.recipes import ACCEL, FAST, auto_recipe, get_recipe
from resnetlab.train.step import NonFiniteLoss, TrainStep, fused_sgd

MEAN, STD = (0.3,), (0.2,)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _loader(ds, **kw):
    base = dict(train=True, device="cpu", mean=MEAN, std=STD, seed=3, channels_last=False)
    base.update(kw)
    return BatchLoader(ds, 16, **base)


def test_resident_batches_are_the_epochs_permutation_normalised():
    ds = squares(70, 0)
    loader = _loader(ds)
    assert len(loader) == 4  # 70 // 16: the partial batch is dropped
    scale, shift = normaliser(MEAN, STD)
    order = loader.plan(0).order
    seen = []
    for b, (x, y) in enumerate(loader):
        idx = order[b * 16 : (b + 1) * 16]
        assert torch.equal(x, ds.images[idx].float() * scale + shift)
        assert torch.equal(y, ds.labels[idx])
        seen += idx.tolist()
    assert len(set(seen)) == 64 and sorted(order.tolist()) == list(range(70))
    assert loader.state_dict() == {"epoch": 1, "batch": 0}
    assert not torch.equal(loader.plan(1).order, order)  # a new order each epoch


def test_resident_augmentation_follows_the_plan_and_is_reproducible():
    ds = squares(64, 0)
    a, b = _loader(ds, pad=2, flip=True, erase=0.5), _loader(ds, pad=2, flip=True, erase=0.5)
    plan = a.plan(0)
    assert int(plan.dy.min()) >= 0 and int(plan.dy.max()) <= 4 and plan.mirror.dtype == torch.bool
    assert (plan.boxes[:, 2] == 0).any() and (plan.boxes[:, 2] > 0).any()  # some erased, some not
    scale, shift = normaliser(MEAN, STD)
    for i, ((xa, ya), (xb, yb)) in enumerate(zip(a, b)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        s = slice(16 * i, 16 * (i + 1))
        crop = apply_crop_flip(ds.images[plan.order[s]], 2, plan.dy[s], plan.dx[s], plan.mirror[s])
        kept = xa != 0  # erased pixels are zero; every other one is the cropped image
        assert torch.equal(xa[kept], (crop.float() * scale + shift)[kept])


def test_resident_loader_resumes_mid_epoch_with_the_same_batches():
    ds = squares(96, 0)
    whole = list(_loader(ds, pad=2, flip=True))
    later = _loader(ds, pad=2, flip=True)
    later.load_state_dict({"epoch": 0, "batch": 3})
    rest = list(later)
    assert len(rest) == 3
    for (x, y), (xr, yr) in zip(whole[3:], rest):
        assert torch.equal(x, xr) and torch.equal(y, yr)


def test_resident_ranks_share_the_epoch_without_overlap():
    ds = squares(100, 0)
    plans = [_loader(ds, rank=r, world_size=2).plan(0).order for r in range(2)]
    assert len(plans[0]) == len(plans[1]) == 50
    assert not set(plans[0].tolist()) & set(plans[1].tolist())


def test_resident_loader_rejects_bad_arguments():
    ds = squares(32, 0)
    with pytest.raises(ResnetlabError, match="batch_size must be >= 1"):
        BatchLoader(ds, 0, train=True, device="cpu", mean=MEAN, std=STD)
    with pytest.raises(ResnetlabError, match="3/3 values; images have 1 channels"):
        BatchLoader(ds, 8, train=True, device="cpu", mean=(0, 0, 0), std=(1, 1, 1))
    assert fits_on_device(10**12, "cpu")


def _step(model, device="cpu", lr=0.1):
    opt = fused_sgd([{"params": list(model.parameters())}], lr=lr, momentum=0.9, nesterov=True)
    return opt, TrainStep(model, opt, nn.CrossEntropyLoss(), device=device, dtype=None,
                          compiled=False)  # fmt: skip


def test_fused_sgd_from_zero_momentum_matches_torchs_sgd():
    torch.manual_seed(0)
    a = create_model("resnet20", num_classes=4, in_chans=1, **TINY_OPTIONS)
    b = create_model("resnet20", num_classes=4, in_chans=1, **TINY_OPTIONS)
    b.load_state_dict(a.state_dict())
    opt_a = fused_sgd([{"params": list(a.parameters())}], lr=0.1, momentum=0.9, nesterov=True)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8) % 4
    for _ in range(3):
        for m, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6, msg=k)


def test_step_tallies_match_the_host_computation():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4, in_chans=1, **TINY_OPTIONS).eval()
    _, step = _step(model, lr=0.0)
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8) % 4
    with torch.no_grad():
        logits = model(x)
    step(x, y)
    step(x, y)
    t = step.read()
    assert t.count == 16 and t.bad == 0 and t.first_bad_step == -1
    assert t.correct == 2 * int((logits.argmax(1) == y).sum())
    assert t.loss == pytest.approx(2 * 8 * float(nn.functional.cross_entropy(logits, y)), rel=1e-5)
    step.reset()
    assert step.read().count == 0


def test_a_non_finite_step_leaves_weights_and_momentum_untouched():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4, in_chans=1, **TINY_OPTIONS).eval()
    opt, step = _step(model)
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8) % 4
    step(x, y)  # one good step: momentum is no longer zero
    before = {k: v.clone() for k, v in model.state_dict().items()}
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    x_bad = x.clone()
    x_bad[0, 0, 0, 0] = float("nan")
    step(x_bad, y)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    for p, m in zip(model.parameters(), momentum):
        assert torch.equal(opt.state[p]["momentum_buffer"], m)
    t = step.read()
    assert t.bad == 1 and t.first_bad_step == 2 and t.count == 16
    step(x, y)  # the next good step updates again
    assert not torch.equal(model.state_dict()["fc.weight"], before["fc.weight"])


def reads_at(monkeypatch) -> list[int]:
    """The steps after which the trainer reads the device's tallies (a read with steps unread)."""
    steps = []
    real = trainer.Trainer.read

    def read(self):
        if self.reads.unread:
            steps.append(self.state.step)
        return real(self)

    monkeypatch.setattr(trainer.Trainer, "read", read)
    return steps


def test_reading_every_few_steps_trains_exactly_as_reading_every_step(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    cfg = dict(epochs=1, checkpoint_every=0)
    reads = reads_at(monkeypatch)
    every, _ = loop.train_model(tiny_config(tmp_path / "a", **cfg), tiny_splits())
    assert reads == [1, 2, 3, 4, 5, 6]  # the CPU's default: every step
    reads.clear()
    monkeypatch.setitem(trainer.READ_EVERY, "cpu", 4)
    few, summary = loop.train_model(tiny_config(tmp_path / "b", **cfg), tiny_splits())
    assert reads == [4, 6]  # every 4 steps, and at the end of the epoch
    for k, v in every.state_dict().items():
        assert torch.equal(few.state_dict()[k], v), k
    row = json.loads((tmp_path / "b" / "metrics.jsonl").read_text())
    assert row["step"] == 6 and summary["steps"] == 6


def test_non_finite_loss_stops_at_the_next_read_and_keeps_a_finite_checkpoint(
    tmp_path, monkeypatch
):
    torch.set_num_threads(1)
    monkeypatch.setitem(trainer.READ_EVERY, "cpu", 4)
    assemble = BatchLoader._assemble

    def poisoned(self, plan, b):  # batch 1 of epoch 2 (step 8) holds a NaN pixel
        x, y = assemble(self, plan, b)
        if self.train and self.epoch == 1 and b == 1:
            x[0, 0, 0, 0] = float("nan")
        return x, y

    monkeypatch.setattr(BatchLoader, "_assemble", poisoned)
    trained = {}
    ended = []  # the steps whose on_step_end ran: it follows the read due after that step

    class Keep(Callback):
        def on_step_end(self, state):
            trained.update(m=state.model)
            ended.append(state.step)

    with pytest.raises(NonFiniteLoss, match=r"loss became nan at epoch 2, step 8 \(lr "):
        loop.fit(tiny_config(tmp_path, epochs=3), tiny_splits(), callbacks=[Keep()])
    # steps 9 and 10 ran before the read at step 10 (epoch 2's 4th step), which stopped the run
    assert ended == list(range(1, 10))
    # the bad step changed no weight
    assert all(torch.isfinite(p).all() for p in trained["m"].parameters())
    weights, state = load_checkpoint(tmp_path)
    assert state["step"] == 6  # the end of epoch 1: the last checkpoint before the bad step
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_the_fallback_host_loader_trains_too(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setattr(policy, "fits_on_device", lambda nbytes, device: False)
    summary = loop.fit(tiny_config(tmp_path, epochs=1), tiny_splits())
    assert summary["steps"] == 6


def test_auto_recipe_is_accel_on_cuda_unless_a_batch_size_is_given():
    assert auto_recipe("auto", "cuda", None) == "accel"
    assert auto_recipe("auto", "cuda:1", None) == "accel"
    assert auto_recipe("auto", "cuda", 256) == "fast"
    assert auto_recipe("auto", "cpu", None) == "fast"
    assert auto_recipe("paper", "cuda", None) == "paper"
    assert ACCEL.batch_size == 4 * FAST.batch_size and ACCEL.lr == pytest.approx(4 * FAST.lr)
    assert get_recipe("accel", epochs=3).epochs == 3


def test_policy_choices():
    assert policy.compile_mode("cpu") is None
    assert policy.compile_mode("cuda") == "reduce-overhead"
    assert policy.compile_mode("cuda:0", world_size=2) is None
    assert policy.resolve_compile("auto", "cuda", 10) is True
    assert policy.resolve_compile("auto", "cpu", 10) is False
    assert policy.resolve_compile("auto", "cpu", policy.COMPILE_MIN_STEPS) is True
    with pytest.raises(ResnetlabError, match="unknown device 'tpu'"):
        policy.pick_device("tpu")
    with pytest.raises(ResnetlabError, match="threads must be at least 1"):
        policy.cpu_threads(0)


def test_compile_cache_lives_under_the_users_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = policy.use_compile_cache()
    assert path == tmp_path / "resnetlab" / "compile" and path.is_dir()
    import os

    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(path)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert policy.use_compile_cache() == tmp_path / "mine"


# --------------------------------------------------------------------------------------------
# on CUDA


@cuda
def test_cuda_resident_batches_equal_the_cpu_ones():
    ds = squares(64, 0)
    cpu = list(_loader(ds, pad=2, flip=True, erase=0.5))
    gpu = list(_loader(ds, pad=2, flip=True, erase=0.5, device="cuda"))
    for (x, y), (xg, yg) in zip(cpu, gpu):
        assert xg.device.type == "cuda"
        torch.testing.assert_close(xg.cpu(), x, rtol=1e-6, atol=1e-6)
        assert torch.equal(yg.cpu(), y)


@cuda
def test_cuda_non_finite_step_is_masked():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4, in_chans=1, **TINY_OPTIONS).cuda()
    _, step = _step(model, device="cuda")
    before = {k: v.clone() for k, v in model.state_dict().items() if v.is_floating_point()}
    x = torch.full((8, 1, 8, 8), float("nan"), device="cuda")
    step(x, torch.arange(8, device="cuda") % 4)
    for k, v in before.items():
        if "running" not in k:  # batch norm's statistics see the NaN input; the weights do not
            assert torch.equal(model.state_dict()[k], v), k
    assert step.read().bad == 1


@cuda
def test_cuda_training_with_cuda_graphs_learns(tmp_path):
    cfg = tiny_config(tmp_path, device="cuda", compile="on", precision="bf16", epochs=4)
    summary = loop.fit(cfg, tiny_splits())
    assert summary["cuda_graphs"] is True and summary["precision"] == "bf16"
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_top1_err"] < 0.3 < rows[0]["train_top1_err"]
