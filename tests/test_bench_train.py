"""benchmarks/reference_train.py, the hand-written loop bench_train_cuda.py measures the trainer
against: its batched crop-and-flip gather is exact, and the loop trains (tiny sizes, CPU, no
compile); bench_train_cuda.py alternates its rounds and reports their medians (checked on the
CPU, with --device cpu)."""

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_train.py"
BENCH_CUDA = PATH.parent / "bench_train_cuda.py"


def _bench():
    spec = importlib.util.spec_from_file_location("reference_train", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_crop_flip_gather_matches_per_image_slicing():
    bt = _bench()
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 7, 9), dtype=torch.uint8, generator=g)
    p = bt.PAD
    padded = torch.nn.functional.pad(images, (p, p, p, p))
    idx = torch.randint(0, 20, (16,), generator=g)
    dy = torch.randint(0, 2 * p + 1, (16,), generator=g)
    dx = torch.randint(0, 2 * p + 1, (16,), generator=g)
    mirror = torch.arange(16) % 2 == 0
    got = bt.crop_flip_gather(padded, idx, dy, dx, mirror)
    for i in range(16):
        want = padded[idx[i], :, dy[i] : dy[i] + 7, dx[i] : dx[i] + 9]
        assert torch.equal(got[i], want.flip(-1) if mirror[i] else want)


def test_reference_loop_trains_on_cpu():
    bt = _bench()
    splits = bt.synthetic_splits(256, 64)
    out = bt.reference_fit(
        splits.train.images,
        splits.train.labels,
        model="resnet20",
        num_classes=10,
        batch_size=32,
        epochs=3,
        lr=0.05,
        device="cpu",
        compile=None,
        test=(splits.test.images, splits.test.labels),
    )
    rows = out["epochs"]
    assert len(rows) == 3 and all(r["images_per_s"] > 0 for r in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert 0.0 <= out["test_accuracy"] <= 1.0


def _cuda_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(PATH.parent))
    spec = importlib.util.spec_from_file_location("bench_train_cuda", BENCH_CUDA)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


FAKE_RUN = ("--device", "cpu", "--synthetic", "--batch-size", "32", "--json")


def _parse(mod, monkeypatch, *argv) -> argparse.Namespace:
    """main()'s checked namespace for argv, its comparison left to the caller."""
    seen = {}
    real = mod.compare
    monkeypatch.setattr(mod, "compare", lambda a: seen.setdefault("a", a) and 0)
    monkeypatch.setattr(sys, "argv", ["bench_train_cuda.py", *argv])
    assert mod.main() == 0
    monkeypatch.setattr(mod, "compare", real)
    return seen["a"]


def _epochs(ips: float) -> list[dict]:
    """A loop's epoch rows: the first (compiling) slow and not counted, then ips -5, +0, +50."""
    first = {"epoch": 1, "seconds": 9.0, "images_per_s": 1.0, "train_loss": 2.0}
    return [first] + [
        {"epoch": e, "seconds": 1.0, "images_per_s": ips + d, "train_loss": 1.0}
        for e, d in ((2, -5), (3, 0), (4, 50))
    ]


def test_cuda_bench_alternates_rounds_and_keeps_the_reference_fallback(monkeypatch, capsys):
    """Rounds alternate the two loops' order; each loop's figure is the median of its rounds'
    (each the median of its epochs after the first); a reference that fails with CUDA graphs
    runs with compile "default" at once and in every later round."""
    mod = _cuda_bench(monkeypatch)
    small = _bench().synthetic_splits(64, 16)
    monkeypatch.setattr(mod, "synthetic_splits", lambda: small)
    calls = []
    speeds = {"trainer": iter([100, 300, 200]), "reference": iter([400, 200, 100])}

    def fake_trainer(a, splits, epochs):
        assert epochs == 4 and splits is small
        calls.append("trainer")
        return {"epochs": _epochs(next(speeds["trainer"])), "test_accuracy": 0.5}

    def fake_reference(images, labels, *, compile, epochs, device, **kw):
        assert epochs == 4 and device == "cpu" and len(images) == 64
        calls.append(f"reference {compile}")
        if compile == "reduce-overhead":
            raise RuntimeError("no graphs here")
        return {"epochs": _epochs(next(speeds["reference"]))}

    monkeypatch.setattr(mod, "run_trainer", fake_trainer)
    monkeypatch.setattr(mod, "reference_fit", fake_reference)
    a = _parse(mod, monkeypatch, *FAKE_RUN, "--rounds", "3")
    assert mod.compare(a) == 0
    out = json.loads(capsys.readouterr().out)
    assert calls == [
        "trainer",
        "reference reduce-overhead",
        "reference default",
        "reference default",
        "trainer",
        "trainer",
        "reference default",
    ]
    assert [r["images_per_s"] for r in out["trainer"]["rounds"]] == [100, 300, 200]
    assert [r["images_per_s"] for r in out["reference"]["rounds"]] == [400, 200, 100]
    assert out["trainer"]["images_per_s"] == 200 and out["reference"]["images_per_s"] == 200
    assert out["ratio"] == 1.0 and out["round_ratios"] == [0.25, 1.5, 2.0]
    assert {r["compile"] for r in out["reference"]["rounds"]} == {"default"}
    assert len(out["errors"]) == 1 and "no graphs here" in out["errors"][0]
    assert "--rounds 3" in out["command"] and out["command"].endswith("--device cpu")


def test_cuda_bench_drops_a_failed_trainer_and_exits_1(monkeypatch, capsys):
    mod = _cuda_bench(monkeypatch)
    monkeypatch.setattr(mod, "synthetic_splits", lambda: _bench().synthetic_splits(64, 16))
    calls = []

    def broken_trainer(*args):
        calls.append("trainer")
        raise ValueError("trainer broke")

    def fake_reference(images, labels, **kw):
        calls.append("reference")
        return {"epochs": _epochs(100)}

    monkeypatch.setattr(mod, "run_trainer", broken_trainer)
    monkeypatch.setattr(mod, "reference_fit", fake_reference)
    a = _parse(mod, monkeypatch, *FAKE_RUN, "--rounds", "2")
    assert mod.compare(a) == 1
    out = json.loads(capsys.readouterr().out)
    assert calls == ["trainer", "reference", "reference"]
    assert "trainer" not in out and "ratio" not in out and len(out["reference"]["rounds"]) == 2


def test_cuda_bench_runs_both_real_loops_on_a_cpu(monkeypatch, capsys):
    """The real trainer and reference, tiny, compile off, 2 rounds on the CPU."""
    mod = _cuda_bench(monkeypatch)
    monkeypatch.setattr(mod, "synthetic_splits", lambda: _bench().synthetic_splits(128, 32))
    a = _parse(
        mod,
        monkeypatch,
        "--device",
        "cpu",
        "--synthetic",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--rounds",
        "2",
        "--compile",
        "off",
    )
    assert mod.compare(a) == 0
    out = capsys.readouterr().out
    assert out.count("round 1:") == 2 and out.count("round 2:") == 2
    assert "ratio trainer/reference" in out and "AVX2" in out and "rerun: python" in out


def test_cuda_bench_refuses_bad_flags_and_a_missing_gpu(monkeypatch, capsys):
    mod = _cuda_bench(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["bench_train_cuda.py", "--rounds", "0"])
    with pytest.raises(SystemExit) as e:
        mod.main()
    assert e.value.code == 2 and "--rounds must be at least 1" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["bench_train_cuda.py"])
    assert mod.main() == 2
    assert "CUDA is not available" in capsys.readouterr().err
