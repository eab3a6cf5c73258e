"""Gradients and lesions over several seeds of a study: every seed probed, the seeds taken together
in the tables (geometric mean and range of the gradient ratios; mean ± std of the lesion errors),
and seed 0 probed exactly as a one-seed run probes it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers.train import write_npz

from resnetlab.cli import main
from resnetlab.experiments.probe_report import (
    band,
    geo_mean,
    grouped,
    lesion_markdown,
    median,
    sig3,
)

STUDY = ["--depths", "8", "--epochs", "1", "--batch-size", "32", "--log-every", "2",
         "--precision", "fp32", "--threads", "1", "--device", "cpu", "--seeds", "2"]  # fmt: skip
PROBE = ["--batch-size", "32", "--batches", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> tuple[Path, Path]:
    """(the data, a study of plain-8 and ResNet-8 over seeds 0 and 1 on it)."""
    root = tmp_path_factory.mktemp("seeded")
    data, out = write_npz(root / "squares.npz"), root / "deg"
    assert main(["experiment", "degradation", "--data", str(data), "--out", str(out), *STUDY]) == 0
    return data, out


@pytest.fixture
def data(seeded) -> Path:
    return seeded[0]


@pytest.fixture
def study(seeded) -> Path:
    return seeded[1]


def gradients(data, study, out, *args) -> list[dict]:
    rc = main(["experiment", "gradients", "--data", str(data), "--out", str(out), "--from",
               str(study), *PROBE, *args])  # fmt: skip
    assert rc == 0
    return json.loads((out / "gradients.json").read_text())


def test_gradients_probe_every_seed_of_the_study(data, study, tmp_path, capsys):
    rows = gradients(data, study, tmp_path / "two", "--seeds", "2")
    stdout = capsys.readouterr().out
    assert (f"trained nets of seeds 0 to 1 found in {study}: plain-8 seed 0, plain-8 seed 1, "
            "resnet-8 seed 0, resnet-8 seed 1") in stdout  # fmt: skip
    assert [(r["seed"], r["family"], r["state"]) for r in rows] == [
        (s, f, state) for s in (0, 1) for f in ("plain", "resnet") for state in ("init", "trained")
    ]
    for r in rows:
        if r["state"] == "trained":
            assert r["weights"].endswith(f"{r['family']}8-s{r['seed']}/last.safetensors")
    # each seed its own initialisation and batches
    assert rows[0]["conv_grad_norms"] != rows[4]["conv_grad_norms"]
    # seed 0 is probed exactly as a run of seed 0 alone probes it
    alone = gradients(data, study, tmp_path / "one")
    assert alone == rows[:4]
    # the table: per net and state, the geometric mean of the seeds' ratios and their range
    table = (tmp_path / "two" / "gradients.md").read_text()
    trained = [r["first_to_last_conv_grad"] for r in rows if r["state"] == "trained"
               and r["family"] == "resnet"]  # fmt: skip
    g = math.sqrt(trained[0] * trained[1])
    want = (
        f"| trained | resnet-8 | 2 | {sig3(g)}x ({sig3(min(trained))}x to {sig3(max(trained))}x) |"
    )
    assert want in table, table
    assert "| initialisation | plain-8 | 2 |" in table
    one = (tmp_path / "one" / "gradients.md").read_text()
    assert f"| trained | resnet-8 | 1 | {sig3(trained[0])}x |" in one
    for f in ("gradients.png", "responses.png"):
        assert (tmp_path / "two" / f).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--seeds", "0"], "--seeds must be at least 1, got 0"),
        (["--seed", "4", "--seeds", "2"], "holds no trained net of seeds 4 to 5"),
    ],
)
def test_bad_seeds_are_refused_in_one_line(data, study, tmp_path, capsys, args, message):
    rc = main(["experiment", "gradients", "--data", str(data), "--out", str(tmp_path / "g"),
               "--from", str(study), *PROBE, *args])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "g").exists()


def test_lesion_takes_the_seeds_of_a_net_together(data, study, tmp_path):
    names = ("resnet8-s0", "resnet8-s1", "plain8-s0", "plain8-s1")
    weights = [str(study / n / "last.safetensors") for n in names]
    out = tmp_path / "lesion"
    rc = main(["experiment", "lesion", *weights, "--data", str(data), "--out", str(out),
               "--draws", "2", "--threads", "1"])  # fmt: skip
    assert rc == 0
    rows = json.loads((out / "lesion.json").read_text())
    assert [r["weights"] for r in rows] == weights
    table = (out / "lesion.md").read_text()
    for family in ("resnet", "plain"):
        errs = [100 * r["baseline_err"] for r in rows if r["family"] == family]
        mean, std = sum(errs) / 2, abs(errs[0] - errs[1]) / math.sqrt(2)
        assert f"| {family}8 | 2 | {mean:.2f} ± {std:.2f}% |" in table, table
    assert (out / "lesion.png").read_bytes()[:4] == b"\x89PNG"


def test_grouping_and_bands():
    assert grouped([("a", 1), ("b", 2), ("a", 3)], lambda t: t[0]) == [
        [("a", 1), ("a", 3)],
        [("b", 2)],
    ]
    assert geo_mean([1.0, 100.0]) == pytest.approx(10.0)
    assert geo_mean([2.0, 0.0]) == 0.0
    assert band([[1.0, 4.0], [100.0, 16.0]], geometric=True) == (
        pytest.approx([10.0, 8.0]),
        [1.0, 4.0],
        [100.0, 16.0],
    )
    assert band([[1.0, 2.0], [3.0, 6.0]]) == ([2.0, 4.0], [1.0, 2.0], [3.0, 6.0])
    assert median([3.0, 1.0, 2.0]) == 2.0 and median([4.0, 1.0, 2.0, 3.0]) == 2.5
    # ratios keep 3 significant figures; large ones are written out, not in e-notation
    values = (0.031749, 11.44, 999.4, 999.7, 1478.6, 3_334_567.0, -1478.6, 1.11e23)
    assert [sig3(v) for v in values] == [
        "0.0317", "11.4", "999", "1,000", "1,480", "3,330,000", "-1,480", "1.11e+23",
    ]  # fmt: skip
    assert [sig3(v) for v in (math.nan, math.inf)] == ["nan", "inf"]


def test_lesion_table_keeps_nets_of_one_name_and_other_blocks_or_options_apart():
    def record(blocks: int, err: float, width: int = 64) -> dict:
        names = [f"blocks.{i}" for i in range(blocks)]
        return {"name": "residual_mlp", "family": "resnet", "blocks": names, "baseline_err": err,
                "single": [err] * blocks, "ks": [1], "k_mean": [err],
                "options": {"depth": blocks, "width": width}}  # fmt: skip

    table = lesion_markdown([record(1, 0.1), record(3, 0.2)], "squares", 64)
    assert "| residual_mlp (depth=1, width=64; 1 blocks) | 1 | 10.00% |" in table, table
    assert "| residual_mlp (depth=3, width=64; 3 blocks) | 1 | 20.00% |" in table, table
    # same blocks, other width: two nets; same everything: seeds of one net
    table = lesion_markdown([record(2, 0.1), record(2, 0.3, 32), record(2, 0.2)], "squares", 64)
    assert "| residual_mlp (depth=2, width=64; 2 blocks) | 2 | 15.00 ± 7.07% |" in table, table
    assert "| residual_mlp (depth=2, width=32; 2 blocks) | 1 | 30.00% |" in table, table
    # a name with one net keeps the bare name; files without options (or null) are one net
    table = lesion_markdown([record(2, 0.1), record(2, 0.3)], "squares", 64)
    assert "| residual_mlp | 2 | 20.00 ± 14.14% |" in table, table
    bare = [{**record(2, 0.1), "options": None}, {**record(2, 0.3)}]
    del bare[1]["options"]
    assert "| residual_mlp | 2 | 20.00 ± 14.14% |" in lesion_markdown(bare, "squares", 64)
