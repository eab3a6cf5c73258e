"""Recipes and the learning-rate schedule: the paper's steps and warm-up, the fast one's shape."""

from __future__ import annotations

import pytest
import torch

from resnetlab.errors import ResnetlabError
from resnetlab.train.config import TrainConfig, check_config
from resnetlab.train.recipes import get_recipe
from resnetlab.train.step import Schedule, lr_factor


def _sgd(lr=0.1):
    p = torch.nn.Parameter(torch.zeros(2))
    return torch.optim.SGD([{"params": [p], "lr": lr, "base_lr": lr, "lr_scale": 1.0}], lr=lr)


def test_paper_recipe_is_the_papers():
    r = get_recipe("paper")
    assert (r.lr, r.momentum, r.weight_decay, r.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert (r.pad, r.flip) == (4, True)
    assert r.decay_norm_and_bias and not r.nesterov and r.label_smoothing == 0


def test_paper_schedule_divides_by_ten_at_half_and_three_quarters():
    # the paper: 64k iterations, lr 0.1 -> 0.01 at 32k -> 0.001 at 48k
    r = get_recipe("paper")
    total = 64000
    assert lr_factor(r, 0, total) == 1.0
    assert lr_factor(r, 31999, total) == 1.0
    assert lr_factor(r, 32000, total) == pytest.approx(0.1)
    assert lr_factor(r, 47999, total) == pytest.approx(0.1)
    assert lr_factor(r, 48000, total) == pytest.approx(0.01)
    assert lr_factor(r, 63999, total) == pytest.approx(0.01)


def test_paper_warm_up_at_0_01_only_for_nets_of_110_layers_or_more():
    r = get_recipe("paper")
    shallow = Schedule(_sgd(), r, 64000, depth=56)
    assert shallow.apply() == pytest.approx(0.1)
    deep = Schedule(_sgd(), r, 64000, depth=110)
    assert deep.apply() == pytest.approx(0.01)
    for _ in range(10):
        deep.step(train_err=0.85)  # still above 80% train error: keep warming up
    assert deep.apply() == pytest.approx(0.01)
    deep.step(train_err=0.5)  # one good batch: the running error is 0.815, still warming up
    assert deep.apply() == pytest.approx(0.01)
    deep.step(train_err=0.5)  # running error 0.7835 < 0.8: back to 0.1
    assert deep.apply() == pytest.approx(0.1)


def test_paper_warm_up_ends_after_400_iterations_at_most():
    s = Schedule(_sgd(), get_recipe("paper"), 64000, depth=164)
    for _ in range(399):
        s.step(train_err=0.9)
    assert s.apply() == pytest.approx(0.01)
    s.step(train_err=0.9)
    assert s.apply() == pytest.approx(0.1)


def test_schedule_state_round_trips():
    s = Schedule(_sgd(), get_recipe("paper"), 1000, depth=110)
    for _ in range(7):
        s.step(train_err=0.5)
    t = Schedule(_sgd(), get_recipe("paper"), 1000, depth=110)
    t.load_state_dict(s.state_dict())
    assert t.apply() == s.apply() and t.step_count == 7 and t.warm_done


def test_fast_schedule_warms_up_then_decays_linearly_to_zero():
    r = get_recipe("fast")
    total = 1000
    warm = round(r.warmup_frac * total)
    assert lr_factor(r, 0, total) == pytest.approx(r.warmup_start)
    assert lr_factor(r, warm, total) == pytest.approx(1.0)
    assert lr_factor(r, total, total) == pytest.approx(0.0)
    values = [lr_factor(r, s, total) for s in range(warm, total)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_cosine_schedule_ends_at_zero():
    r = get_recipe("fast", schedule="cosine")
    assert lr_factor(r, 1000, 1000) == pytest.approx(0.0)
    mid = round((r.warmup_frac + (1 - r.warmup_frac) / 2) * 1000)
    assert lr_factor(r, mid, 1000) == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"epochs": 0}, "--epochs 0: expected a whole number >= 1"),
        ({"batch_size": 0}, "--batch-size 0: expected a whole number >= 1"),
        ({"lr": float("nan")}, "--lr nan: expected a finite number > 0"),
    ],
)
def test_bad_overrides_fail_clearly(kw, message):
    # the library speaks of its arguments; the command line shows them as flags. check_config is
    # the one check: get_recipe trusts what it is given
    with pytest.raises(ResnetlabError) as e:
        check_config(TrainConfig(model="resnet20", data="x", recipe="fast", **kw))
    assert str(e.value).startswith(message[2:].replace("-", "_", 1).split(" ")[0])
    assert e.value.for_command_line() == message


def test_unknown_recipe_names_the_choices():
    with pytest.raises(ResnetlabError, match="recipe 'slow': use auto, paper, fast, accel"):
        check_config(TrainConfig(model="resnet20", data="x", recipe="slow"))
