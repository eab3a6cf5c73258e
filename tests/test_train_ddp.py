"""Scale-out: two CPU processes (gloo) train in step; with --sync-bn they match one process with the
same global batch; `torchrun -m resnetlab train` runs end to end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from helpers.train import TINY_CLI, tiny_config, tiny_splits, write_npz
from safetensors.torch import load_file, save_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, sync_bn: bool) -> None:
    from resnetlab.train.loop import train_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    cfg = tiny_config(out, epochs=1, sync_bn=sync_bn, augment=False, device="cpu")
    model, _ = train_model(cfg, tiny_splits())
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(out, f"rank{rank}.safetensors"))


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    out = root / "sync"
    out.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(out), True), nprocs=2, join=True)
    return out


def test_both_ranks_end_with_identical_weights(ddp_runs):
    a = load_file(str(ddp_runs / "rank0.safetensors"))
    b = load_file(str(ddp_runs / "rank1.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sync_bn_matches_one_process_with_the_same_global_batch(ddp_runs, tmp_path):
    from resnetlab.train.loop import train_model

    torch.set_num_threads(1)
    single, _ = train_model(tiny_config(tmp_path, epochs=1, augment=False), tiny_splits())
    ddp = load_file(str(ddp_runs / "rank0.safetensors"))
    for k, v in single.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=k)
        else:
            assert torch.equal(ddp[k], v), k


def test_rank0_alone_writes_the_run_outputs(ddp_runs):
    names = sorted(p.name for p in ddp_runs.iterdir())
    assert "metrics.jsonl" in names and "last.safetensors" in names and "checkpoint" in names


def test_torchrun_two_processes_through_the_command_line(tmp_path):
    data = write_npz(tmp_path / "tiny.npz")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "resnetlab", "train", *TINY_CLI, "--data", str(data), "--out",
           str(tmp_path / "run"), "--epochs", "1", "--device", "cpu"]  # fmt: skip
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "2 processes" in p.stdout
    assert p.stdout.count("test accuracy") == 1  # rank 0 alone reports
    assert (tmp_path / "run" / "last.safetensors").exists()
