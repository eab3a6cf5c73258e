"""The parts of a study that read what a study folder or a cluster holds: kept speeds that are
not sane are measured again, the speed measurement leaves nothing behind and writes only in the
study folder, a Ray cluster with no node big enough for a net is refused instead of waiting for
ever, a dataset name stays a name on Ray, a study's JSON of crafted records and a run folder that
is a link are refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.train import TINY_OPTIONS, tiny_splits, write_npz

from resnetlab import ResnetlabError, TrainConfig
from resnetlab.cli import main
from resnetlab.experiments import estimate as est
from resnetlab.experiments.nets import study_nets
from resnetlab.experiments.on_ray import _absolute, check_fits_a_node
from resnetlab.experiments.tasks import NetTask


def tiny_task(out: Path, **kw) -> NetTask:
    cfg = TrainConfig(model="resnet20", data="squares", out=str(out / "resnet8-s0"), epochs=1,
                      batch_size=32, model_options=dict(TINY_OPTIONS), precision="fp32",
                      compile="off", threads=1, device="cpu", quiet=True, **kw)  # fmt: skip
    return NetTask("resnet-8 seed 0", cfg, total_steps=100)


@pytest.mark.parametrize("kept", [1e-300, 10**400, -5, True, "fast", None, float("nan")])
def test_a_kept_speed_that_is_not_sane_is_measured_again(tmp_path, kept):
    task = tiny_task(tmp_path)
    key = est._cost_key(task.cfg)
    (tmp_path / est.SPEEDS_FILE).write_text(json.dumps({key: kept}))
    measured = []

    def measure(cfg, data):
        measured.append(cfg.model)
        return 320.0

    secs = est.estimate([task], tiny_splits(), 1, 1, tmp_path, say=lambda s: None, measure=measure)
    assert measured == ["resnet20"]
    assert secs == pytest.approx(100 * 32 / 320.0)
    assert json.loads((tmp_path / est.SPEEDS_FILE).read_text())[key] == 320.0


def test_a_sane_kept_speed_is_used(tmp_path):
    task = tiny_task(tmp_path)
    (tmp_path / est.SPEEDS_FILE).write_text(json.dumps({est._cost_key(task.cfg): 640}))
    secs = est.estimate([task], tiny_splits(), 1, 1, tmp_path, say=lambda s: None,
                        measure=lambda cfg, data: pytest.fail("measured again"))  # fmt: skip
    assert secs == pytest.approx(100 * 32 / 640)


def test_the_speed_measurement_runs_in_the_study_folder_and_leaves_nothing(tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    leftover = out / est.CALIBRATION_DIR / "run-killed"  # as a SIGKILLed measurement leaves it
    leftover.mkdir(parents=True)
    (leftover / "metrics.jsonl").write_text("{}\n")
    seen = []
    real = est.loop.fit

    def fit(cfg, splits, *a, **kw):
        seen.append(Path(cfg.out))
        assert not leftover.exists()  # removed before anything is measured
        return real(cfg, splits, *a, **kw)

    est.loop.fit = fit
    try:
        est.estimate([tiny_task(out)], tiny_splits(), 1, 1, out, say=lambda s: None)
    finally:
        est.loop.fit = real
    assert len(seen) == 1 and seen[0].parent == out / est.CALIBRATION_DIR
    assert sorted(p.name for p in out.iterdir()) == [est.SPEEDS_FILE]


def test_a_link_where_the_measurement_runs_is_refused(tmp_path):
    out = tmp_path / "study"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (out / est.CALIBRATION_DIR).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ResnetlabError, match=r"\.calibration: not a folder of this study's"):
        est.estimate([tiny_task(out)], tiny_splits(), 1, 1, out, say=lambda s: None)
    assert list((tmp_path / "elsewhere").iterdir()) == []


class FakeRay:
    def __init__(self, cpus: list[float], alive: bool = True):
        self._nodes = [{"Alive": alive, "Resources": {"CPU": c}} for c in cpus]

    def nodes(self):
        return self._nodes


def test_a_net_of_more_cpus_than_any_ray_node_has_is_refused():
    said = []
    check_fits_a_node(FakeRay([2.0, 4.0]), 4, True, said.append)
    with pytest.raises(ResnetlabError, match=r"--threads 8: no node of the Ray cluster has 8 "
                       r"CPUs \(the largest has 4\).*give --threads 4 or fewer"):  # fmt: skip
        check_fits_a_node(FakeRay([2.0, 4.0]), 8, True, said.append)
    assert said == []
    # a cluster with no CPU yet (an autoscaling head of 0 CPUs; dead nodes count for nothing):
    # told, not refused, since its autoscaler may add nodes for the tasks
    check_fits_a_node(FakeRay([0.0]), 1, False, said.append)
    check_fits_a_node(FakeRay([16.0], alive=False), 1, False, said.append)
    assert len(said) == 2 and all("no node of the Ray cluster has a CPU yet" in s for s in said)


def test_a_dataset_name_stays_a_name_on_ray_beside_a_folder_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fashion-mnist").mkdir()  # the loader reads the name as the data set, not this
    (tmp_path / "mine.npz").write_bytes(b"")
    mine = str(tmp_path / "mine.npz")
    for data, want in [("fashion-mnist", "fashion-mnist"), ("mine.npz", mine)]:
        task = tiny_task(tmp_path)
        task.cfg = TrainConfig(**{**task.cfg.to_dict(), "data": data})
        assert _absolute(task).cfg.data == want


@pytest.mark.parametrize(
    "nets, message",
    [
        ([{"family": "plain", "depth": "8", "seed": 0}], "depth '8', seed 0; expected one of"),
        ([{"family": "vgg", "depth": 8, "seed": 0}], "family 'vgg'"),
        ([{"family": "resnet", "depth": 8, "seed": True}], "seed True"),
    ],
)
def test_a_study_json_of_crafted_records_is_refused(tmp_path, nets, message):
    (tmp_path / "degradation.json").write_text(json.dumps({"nets": nets}))
    with pytest.raises(ResnetlabError, match=message):
        study_nets(tmp_path)


def test_a_study_json_nested_too_deep_is_refused(tmp_path):
    (tmp_path / "degradation.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ResnetlabError, match="unreadable"):
        study_nets(tmp_path)


def test_a_run_folder_that_is_a_link_is_refused_and_nothing_written_through_it(tmp_path, capsys):
    data = write_npz(tmp_path / "squares.npz")
    out, elsewhere = tmp_path / "deg", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "plain8-s0").symlink_to(elsewhere)
    rc = main(["experiment", "degradation", "--data", str(data), "--out", str(out), "--depths",
               "8", "--epochs", "1", "--batch-size", "32", "--threads", "1", "--device",
               "cpu"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert "plain8-s0: a link or a file where the study keeps a net's run folder" in err[0], err
    assert list(elsewhere.iterdir()) == []
