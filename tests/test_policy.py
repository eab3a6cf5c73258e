"""The resolved Plan: every run-time choice made once, from the settings and the machine."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from resnetlab import policy
from resnetlab.errors import ResnetlabError
from resnetlab.policy import Machine, Settings, resolve

CPU_BF16 = Machine(cuda=False, cuda_bf16=False, cpu_bf16=True)
CPU_PLAIN = Machine(cuda=False, cuda_bf16=False, cpu_bf16=False)
GPU = Machine(cuda=True, cuda_bf16=True, cpu_bf16=False)


def test_a_plan_is_frozen_and_says_its_choices_in_one_phrase():
    plan = resolve(Settings(device="cpu", threads=2), CPU_BF16)
    assert plan == policy.Plan("cpu", torch.bfloat16, True, None, False, 2, False)
    assert plan.describe() == "cpu, bf16, channels_last, 2 threads"
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.device = "cuda"


def test_auto_precision_follows_the_machine_and_mlps_keep_their_layout():
    assert resolve(Settings(device="cpu", threads=1), CPU_PLAIN).dtype is None
    assert resolve(Settings(device="cpu", threads=1, conv=False), CPU_BF16).channels_last is False
    with pytest.raises(ResnetlabError, match="precision fp16 needs CUDA"):
        resolve(Settings(device="cpu", precision="fp16", threads=1), CPU_BF16)


def test_auto_device_is_cuda_where_there_is_one_and_compiles_as_cuda_graphs():
    plan = resolve(Settings(steps=10), GPU)
    assert (plan.device, plan.dtype, plan.threads) == ("cuda", torch.bfloat16, None)
    assert plan.compile_mode == "reduce-overhead" and plan.cuda_graphs
    ddp = resolve(Settings(steps=10, world_size=2), GPU)
    assert ddp.compile_mode == "default" and not ddp.cuda_graphs
    with pytest.raises(ResnetlabError, match="CUDA is not available"):
        resolve(Settings(device="cuda", threads=1), CPU_PLAIN)


def test_one_compile_rule_for_training_steps_and_inference_work():
    short = Settings(device="cpu", threads=1, steps=policy.COMPILE_MIN_STEPS - 1)
    assert not resolve(short, CPU_PLAIN).compiled
    assert resolve(dataclasses.replace(short, steps=policy.COMPILE_MIN_STEPS), CPU_PLAIN).compiled
    small, large = policy.COMPILE_MIN_MACS / 2, policy.COMPILE_MIN_MACS
    assert not policy.resolve_compile("auto", "cpu", macs=small, compiler=True)
    assert policy.resolve_compile("auto", "cpu", macs=large, compiler=True)
    assert not policy.resolve_compile("auto", "cpu", macs=large, compiler=False)
    assert policy.resolve_compile("on", "cpu", macs=small, compiler=False)


def test_training_images_live_on_the_cpu_and_nothing_is_placed_for_inference():
    assert resolve(Settings(device="cpu", threads=1, data_bytes=10**9), CPU_PLAIN).data_on_device
    assert not resolve(Settings(device="cpu", threads=1), CPU_PLAIN).data_on_device


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"device": "tpu"}, "unknown device 'tpu'; use auto, cpu or cuda"),
        ({"device": "cuda:x"}, "unknown device 'cuda:x'"),
        ({"precision": "fp8"}, "precision 'fp8': use auto, fp32, bf16, fp16"),
        ({"compile": "maybe"}, "compile 'maybe': use auto, on, off"),
        ({"threads": 0}, "threads must be at least 1, got 0"),
    ],
)
def test_check_settings_names_the_setting_and_the_choices(settings, message):
    with pytest.raises(ResnetlabError, match=message):
        policy.check_settings(**settings)
