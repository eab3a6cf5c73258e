"""`resnetlab models` and `resnetlab summary` from the command line."""

import json
import subprocess
import sys

import pytest

from resnetlab.cli import main


def run_cli(*args):
    proc = subprocess.run(
        [sys.executable, "-m", "resnetlab", *args], capture_output=True, text=True, timeout=300
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_models_json_lists_every_model_with_parameters(capsys):
    assert main(["models", "--family", "resnet", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["resnet50"]["params"] == 25_557_032
    assert rows["resnet20"]["depth"] == 20 and rows["resnet20"]["input_size"] == [3, 32, 32]
    assert rows["resnet50"]["gflops"] == pytest.approx(4.09, abs=0.02)  # v1.5 mult-adds


def test_summary_prints_stage_shapes_and_totals(capsys):
    assert main(["summary", "resnet20", "--input-size", "1,28,28", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert (
        "layer3       64x7x7" in out and "269,434" in out
    )  # one input channel: 288 fewer stem weights


def test_summary_json_sums_to_the_model(capsys):
    assert main(["summary", "resnet18", "--input-size", "64", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sum(s["params"] for s in report["stages"]) == report["params"] == 11_689_512


@pytest.mark.parametrize(
    "args, message",
    [
        (["summary", "resnet5"], "unknown model 'resnet5'; did you mean"),
        (["summary", "resnet50", "--input-size", "3,16"], "expected C,H,W or H"),
        (["models", "--family", "nets"], "no models in family 'nets'"),
        (["summary", "plain_mlp", "--in-chans", "3"], "--in-chans: plain_mlp takes vectors"),
    ],
)
def test_bad_requests_end_in_one_line_and_nonzero_exit(args, message):
    code, out, err = run_cli(*args)
    assert code != 0 and message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_summary_of_an_mlp_flattens_an_image_size(capsys):
    assert main(["summary", "residual_mlp", "--input-size", "3,28,28", "--json"]) == 0
    three = json.loads(capsys.readouterr().out)
    assert main(["summary", "residual_mlp", "--input-size", "1,28,28", "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    stem = next(s for s in three["stages"] if s["name"] == "stem")
    width = stem["output_shape"][-1]
    assert three["params"] - one["params"] == 2 * 28 * 28 * width  # the first layer's weights


def test_summary_of_a_huge_input_allocates_nothing(capsys):
    # a real forward pass would need terabytes; the meta device gives shapes and counts alone
    assert main(["summary", "resnet8", "--input-size", "100000", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["stages"][-1]["output_shape"] == [1, 10]
    assert report["gflops"] > 1e3
