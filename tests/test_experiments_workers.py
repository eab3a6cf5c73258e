"""Studies run on worker processes and on Ray compute what a sequential study computes: a study on
two workers whose process is killed mid-net (SIGKILL) takes its workers with it and, run again,
resumes every unfinished net to the sequential study's numbers; a tiny study through a local Ray
of 2 CPUs writes the same JSON; without Ray installed, --ray is refused in one line."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from helpers.train import run_cli, write_npz

from resnetlab.cli import main

TINY = ["--batch-size", "20", "--precision", "fp32", "--threads", "1", "--device", "cpu"]
GRID = ["--depths", "8", "--sizes", "40,80", "--regularisation", "none,strong", "--steps", "8",
        *TINY]  # fmt: skip
TWO_NETS = ["--depths", "8", "--sizes", "40", "--regularisation", "none,standard", "--steps", "8",
            *TINY]  # fmt: skip


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_npz(tmp_path_factory.mktemp("data") / "squares.npz", n_train=400)


def study(data: Path, out: Path, grid: list[str], *extra: str) -> list[dict]:
    rc = main(["experiment", "overfitting", "--data", str(data), "--out", str(out), *grid, *extra])
    assert rc == 0
    return nets(out)


def nets(out: Path) -> list[dict]:
    return json.loads((out / "overfitting.json").read_text())["nets"]


def same_numbers(a: list[dict], b: list[dict], tol: float = 0.0) -> None:
    assert [(r["train_size"], r["regularisation"]) for r in a] == [
        (r["train_size"], r["regularisation"]) for r in b
    ]
    for x, y in zip(a, b):
        for k in ("final_train_err", "final_test_err", "gap", "train_batch_err", "steps"):
            assert x[k] == pytest.approx(y[k], abs=tol), k


@pytest.mark.slow
def test_killed_study_on_two_workers_resumes_every_unfinished_net(data, tmp_path):
    sequential = study(data, tmp_path / "seq", GRID)
    out = tmp_path / "par"
    argv = ["experiment", "overfitting", "--data", str(data), "--out", str(out), *GRID,
            "--workers", "2"]  # fmt: skip
    p = run_cli(argv, env_extra={"PYTHONUNBUFFERED": "1"})
    # SIGKILL the study's own process (not its workers) once a net has its first checkpoint
    deadline = time.time() + 120
    while not list(out.glob("*/checkpoint")):
        assert p.poll() is None and time.time() < deadline, "the study ended before the kill"
        time.sleep(0.01)
    p.kill()
    # the workers die with it (they hold the same stdout: reading it to the end waits for them)
    stdout, err = p.communicate(timeout=60)
    assert p.returncode == -9, err
    assert "estimated time" in stdout and "on 2 worker processes" in stdout
    assert stdout.count("(process ") >= 2
    assert not (out / "overfitting.json").exists()
    unfinished = [n for n in out.iterdir() if n.is_dir() and not (n / "summary.json").exists()]
    assert unfinished
    p = run_cli(argv)
    stdout, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    resumed = int(stdout.split(" to resume")[0].rsplit(" ", 1)[-1])
    assert resumed >= 1, stdout
    # every net ends as in the sequential study (same seeds, one thread each): bit for bit
    same_numbers(nets(out), sequential)
    for r in nets(out):
        name = Path(r["run_dir"]).name
        assert (out / name / "last.safetensors").read_bytes() == (
            tmp_path / "seq" / name / "last.safetensors"
        ).read_bytes()


@pytest.mark.slow
def test_ctrl_c_stops_a_study_on_workers_with_checkpoints_and_starts_no_other_net(data, tmp_path):
    out = tmp_path / "int"
    argv = ["experiment", "overfitting", "--data", str(data), "--out", str(out), *GRID[:4],
            "--regularisation", "none,standard,strong", "--steps", "80", *TINY,
            "--workers", "2"]  # fmt: skip
    p = run_cli(argv, env_extra={"PYTHONUNBUFFERED": "1"}, start_new_session=True)
    deadline = time.time() + 120
    while not list(out.glob("*/checkpoint")):
        assert p.poll() is None and time.time() < deadline, "the study ended before Ctrl-C"
        time.sleep(0.01)
    os.killpg(p.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    stdout, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "study interrupted: run the same command again to resume it" in err
    assert "[5/6]" not in stdout and "[6/6]" not in stdout  # nothing queued behind the Ctrl-C
    p = run_cli(argv)
    stdout, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert int(stdout.split(" to resume")[0].rsplit(" ", 1)[-1]) >= 1, stdout
    assert len(nets(out)) == 6


@pytest.mark.slow
def test_a_study_through_a_local_ray_matches_a_sequential_one(data, tmp_path, monkeypatch, capsys):
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):  # `make test` installs the ray extra: CI must run this test
            raise
        pytest.skip("ray is not installed: pip install 'resnetlab[ray]'")
    sequential = study(data, tmp_path / "seq", TWO_NETS)
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    monkeypatch.chdir(tmp_path)  # relative paths: the tasks get them absolute, wherever they run
    (tmp_path / "ray" / ".calibration" / "run-killed").mkdir(parents=True)  # a killed study's
    (tmp_path / "ray" / ".shared-check").write_text("left by a killed study")
    try:
        on_ray = study(Path(os.path.relpath(data)), Path("ray"), TWO_NETS, "--ray", "auto")
        assert ray.is_initialized()  # the Ray it found is left to its owner
        assert not (tmp_path / "ray" / ".calibration").exists()
        assert not (tmp_path / "ray" / ".shared-check").exists()
        # a net of more CPUs than any node has would wait for ever: refused
        capsys.readouterr()
        rc = main(["experiment", "degradation", "--data", str(data), "--out", "big", "--depths",
                   "8", "--threads", "4", "--ray", "auto"])  # fmt: skip
        assert rc == 2
        assert "--threads 4: no node of the Ray cluster has 4 CPUs (the largest has 2)" in (
            capsys.readouterr().err
        )
        # a net that asks for CUDA is checked against the cluster's GPUs, not this process's
        capsys.readouterr()
        rc = main(["experiment", "degradation", "--data", str(data), "--out", "cuda", "--depths",
                   "8", "--device", "cuda", "--ray", "auto"])  # fmt: skip
        assert rc == 2
        assert capsys.readouterr().err.strip().splitlines()[-1:] == [
            "resnetlab experiment: error: device 'cuda' on Ray, but the cluster has no GPU; use "
            "--device cpu (auto runs Ray tasks on their CPUs)"
        ]
    finally:
        ray.shutdown()
    # the speed behind the plan was measured by a Ray task, and is kept as such
    assert list(json.loads((tmp_path / "ray" / "speeds.json").read_text())) == [
        "resnet8|batch 20|fp32|cpu|1 threads|on Ray"
    ]
    same_numbers(on_ray, sequential, tol=1e-6)
    assert [r["run_dir"] for r in on_ray] == [
        str(tmp_path / "ray" / Path(r["run_dir"]).name) for r in sequential
    ]


def test_a_ctrl_c_a_worker_took_before_its_run_began_stops_the_run_at_once(tmp_path, monkeypatch):
    # a worker notes the study's Ctrl-C while it loads data or builds the net; the run then
    # stops at its first read with a checkpoint instead of training to the end
    from helpers.train import tiny_config, tiny_splits

    from resnetlab import fit
    from resnetlab.train import checkpoint as ckpt
    from resnetlab.train import rundir

    monkeypatch.setattr(rundir, "STOP_ASKED", [])
    rundir.note_stop(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_config(tmp_path / "run", epochs=20, log_every=2), tiny_splits())
    _, state = ckpt.load_checkpoint(tmp_path / "run")
    assert 1 <= state["step"] <= 6  # 20 epochs are 120 steps: it stopped in the first epoch
    assert not (tmp_path / "run" / "summary.json").exists()


def test_a_worker_names_the_net_an_unexpected_error_stopped(monkeypatch, capsys):
    from types import SimpleNamespace

    from resnetlab.experiments import tasks

    def out_of_memory(task):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(tasks, "train_task", out_of_memory)
    task = SimpleNamespace(label="resnet-8 seed 1", state="new", cfg=SimpleNamespace(out="o"))
    secs, line = tasks.train_remote(task)
    assert secs == 0.0
    assert (
        line
        == "resnet-8 seed 1: failed (RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB)"
    )
    assert "Traceback" in capsys.readouterr().err  # the worker keeps the traceback for the log


def test_without_ray_the_ray_flag_is_refused_in_one_line(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    for study_name, grid in (("overfitting", TWO_NETS), ("degradation", ["--depths", "8"])):
        out = tmp_path / study_name
        rc = main(["experiment", study_name, "--data", str(data), "--out", str(out), *grid,
                   "--ray", "auto"])  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, err
        assert "--ray needs Ray, which is not installed: pip install 'resnetlab[ray]'" in err[0]
        assert not any(out.glob("*/summary.json"))


def test_the_shared_storage_probe_names_what_a_node_saw(tmp_path):
    from resnetlab.experiments.on_ray import _sees_file

    f = tmp_path / "probe"
    f.write_text("token")
    assert _sees_file(str(f), "token") is None
    assert _sees_file(str(f), "other") == "it holds other content"
    assert _sees_file(str(tmp_path / "absent"), "token").startswith("cannot read it")


def test_sigterm_stops_a_study_on_workers_in_one_line_and_leaves_no_process(data, tmp_path):
    # `timeout 25 resnetlab experiment ... --workers 2`: SIGTERM to the study's process group
    out = tmp_path / "term"
    argv = ["experiment", "degradation", "--data", str(data), "--out", str(out), "--depths", "8",
            "--epochs", "200", "--batch-size", "50", "--precision", "fp32",
            "--threads", "1", "--device", "cpu", "--workers", "2"]  # fmt: skip
    p = run_cli(argv, env_extra={"PYTHONUNBUFFERED": "1"}, start_new_session=True)
    deadline = time.time() + 60
    while not list(out.glob("*/checkpoint")):
        assert p.poll() is None and time.time() < deadline, "the study ended before SIGTERM"
        time.sleep(0.01)
    os.killpg(p.pid, signal.SIGTERM)
    stdout, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "study interrupted: run the same command again to resume it" in err
    assert "leaked" not in err and "Traceback" not in err, err
    workers = [int(line.rsplit("(process ", 1)[1].split(")")[0])
               for line in stdout.splitlines() if "(process " in line]  # fmt: skip
    assert workers
    time.sleep(0.5)
    for pid in workers:  # each worker stopped with the study
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.slow
def test_ctrl_c_stops_a_study_on_ray_with_a_checkpoint_where_each_net_is(tmp_path):
    # Ray's plain cancel reaches each task as a Ctrl-C: a net saves the step it reached, where a
    # killed task leaves only its last epoch's checkpoint (that was the case before)
    pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")
    from resnetlab.train import checkpoint as ckpt

    data = write_npz(tmp_path / "many.npz", n_train=10000)  # 1,000 steps an epoch at batch 10
    out = tmp_path / "ray-int"
    argv = ["experiment", "degradation", "--data", str(data), "--out", str(out), "--depths", "8",
            "--epochs", "2", "--batch-size", "10", "--precision", "fp32", "--threads", "1",
            "--device", "cpu", "--ray", "auto"]  # fmt: skip
    p = run_cli(argv, env_extra={"PYTHONUNBUFFERED": "1"}, start_new_session=True)
    deadline = time.time() + 180
    while not (saved := list(out.glob("*/checkpoint"))):  # a net's first epoch has ended
        assert p.poll() is None and time.time() < deadline, p.communicate()
        time.sleep(0.01)
    p.send_signal(signal.SIGINT)  # the study's own process only, as its terminal would
    stdout, err = p.communicate(timeout=240)
    assert p.returncode == 130, err
    assert "study interrupted: run the same command again to resume it" in err
    for run in (c.parent for c in saved):
        assert not (run / "summary.json").exists()
        _, state = ckpt.load_checkpoint(run)
        assert 1000 < state["step"] < 2000, (run.name, state["step"])  # not the epoch's 1,000


def test_a_ray_address_nothing_answers_at_is_refused_in_one_line_at_once(
    data, tmp_path, capsys, monkeypatch
):
    # Ray's own connect retries for minutes; a wrong address is refused before it is asked to
    ray = pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")
    import socket

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray asked to connect"))
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused = "not an address; give auto, HOST:PORT or ray://HOST:PORT"
    for address, why in ((f"127.0.0.1:{port}", "nothing answers there"), ("nonsense", refused)):
        rc = main(["experiment", "degradation", "--data", str(data), "--out", str(tmp_path / "o"),
                   "--depths", "8", "--device", "cpu", "--ray", address])  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1, err
        assert err[0].startswith(f"resnetlab experiment: error: --ray {address!r}: {why}"), err
        assert not (tmp_path / "o").exists()


def test_fewer_nets_than_workers_split_the_cores_among_the_nets(data, tmp_path, monkeypatch):
    import resnetlab.experiments.runner as runner

    monkeypatch.setattr(runner, "usable_cores", lambda: 4)
    out = tmp_path / "deg"
    rc = main(["experiment", "degradation", "--data", str(data), "--out", str(out), "--depths",
               "8", "--epochs", "1", "--batch-size", "40", "--precision", "fp32", "--device",
               "cpu", "--workers", "4"])  # fmt: skip
    assert rc == 0
    # two nets on four workers: two workers of 2 threads each, not two of 4 // 4 = 1
    for net in ("plain8-s0", "resnet8-s0"):
        assert json.loads((out / net / "summary.json").read_text())["config"]["threads"] == 2
