"""Compiling only where it pays: the decision is quick, kept per machine, reused, and shown."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from resnetlab import create_model
from resnetlab.cli import main
from resnetlab.infer import compiling
from resnetlab.infer.backends import store_path


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETLAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def counted(monkeypatch):
    """Calls of count_macs: the size rule's one piece of work."""
    from resnetlab.models import stats

    calls = []
    real = stats.count_macs

    def count(*args, **kwargs):
        calls.append(args[1:])
        return real(*args, **kwargs)

    monkeypatch.setattr(stats, "count_macs", count)
    return calls


def small():
    return create_model("resnet20", num_classes=3, in_chans=1).eval()


def test_a_small_call_does_not_compile_and_the_decision_is_kept_and_reused(counted):
    model = small()
    first = compiling.decide(model, (1, 28, 28), 1, "fp32", threads=1)
    assert first.compile is False and first.source == "size" and "GMACs a call" in first.why
    assert len(counted) == 1
    second = compiling.decide(model, (1, 28, 28), 1, "fp32", threads=1)
    assert second.compile is False and second.source == "cache"
    assert len(counted) == 1  # read back, not counted again
    kept = json.loads(store_path().read_text())["section: compile"]
    (key,) = kept
    assert "1 threads" in key and f"torch {torch.__version__}" in key and "batch 1" in key
    assert kept[key]["compile"] is False


def test_the_key_holds_the_batch_threads_and_precision(counted):
    model = small()
    compiling.decide(model, (1, 28, 28), 1, "fp32", threads=1)
    compiling.decide(model, (1, 28, 28), 16, "fp32", threads=1)
    compiling.decide(model, (1, 28, 28), 1, "fp32", threads=2)
    compiling.decide(model, (1, 28, 28), 1, "bf16", threads=1)
    assert len(counted) == 4


def test_a_large_call_compiles_by_size():
    model = create_model("resnet50").eval()  # 4.1 GMACs an image at 224x224
    decision = compiling.decide(model, (3, 224, 224), 1, "fp32", threads=1)
    assert decision.compile is True and "4.09 GMACs a call" in decision.why


def test_a_measurement_replaces_the_size_rule(counted):
    model = small()
    size = (1, 28, 28)
    learned = compiling.learn(model, size, 16, "fp32", compiled=90.0, uncompiled=100.0, threads=1)
    assert learned.compile is False and "measured by bench" in learned.why
    again = compiling.decide(model, size, 16, "fp32", threads=1)
    assert again.compile is False and again.source == "cache" and "0.90x" in again.why
    assert counted == []  # the measurement decided: nothing counted
    compiling.learn(model, size, 16, "fp32", compiled=120.0, uncompiled=100.0, threads=1)
    assert compiling.decide(model, size, 16, "fp32", threads=1).compile is True


def test_an_unwritable_cache_still_decides_with_one_line(monkeypatch, caplog, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("RESNETLAB_CACHE", str(blocker / "cache"))  # under a regular file
    with caplog.at_level(logging.WARNING, logger="resnetlab.infer"):
        decision = compiling.decide(small(), (1, 28, 28), 1, "fp32", threads=1)
    assert decision.compile is False and decision.source == "size"
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 1 and notes[0].startswith("measurements not kept")


def test_bench_says_each_phase_and_times_an_uncompiled_fast_path_once(capsys, monkeypatch):
    monkeypatch.setattr("resnetlab.infer.bench_paths.compiler_available", lambda: True)
    rc = main(["bench", "resnet20", "--batch-size", "1", "--image-size", "8", "--repeats", "1",
               "--rep-time", "0.01", "--paths", "eager-fp32,fast,fast-nocompile", "--threads",
               "1"])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 0
    assert "batch 1 fast: not compiled (" in err and "GMACs a call" in err
    assert "the same path as fast-nocompile: timed once" in err
    assert "batch 1 eager-fp32: making it ready" in err and "batch 1: timing 2 paths" in err
    paths = [line.split()[1] for line in out.splitlines() if line.startswith("    1  ")]
    assert paths == ["eager-fp32", "fast-nocompile"]
    # the second run reads the decision back
    rc = main(["bench", "resnet20", "--batch-size", "1", "--image-size", "8", "--repeats", "1",
               "--rep-time", "0.01", "--paths", "eager-fp32,fast,fast-nocompile", "--threads",
               "1"])  # fmt: skip
    _, err = capsys.readouterr()
    assert rc == 0 and "(remembered here)" in err and "counting the multiply-adds" not in err
