"""Hostile files and folders around what the project writes and reads: links planted where it
creates files, size bombs, temporaries left by SIGTERM or SIGKILL, long names, a prepared cache
truncated under a run, and the permissions of what it creates. Each ends in one line (or does
the right thing quietly), fast."""

from __future__ import annotations

import fcntl
import os
import pickle
import signal
import stat
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.data import make_tree, write_cifar10
from helpers.train import TINY_CLI, tiny_config, tiny_splits, write_npz

from resnetlab import create_model, files, save_weights
from resnetlab.cli import main
from resnetlab.data.cifar import load_cifar_dir, safe_unpickle
from resnetlab.data.normalise import compute_mean_std
from resnetlab.data.prepared import IMAGES_NAME, load_prepared, prepare_folder
from resnetlab.errors import ResnetlabError
from resnetlab.files import atomic_write
from resnetlab.train import checkpoint as ckpt
from resnetlab.train.loop import fit

META = {"classes": ["cat", "dog", "fox"], "input_size": [1, 28, 28], "mean": [0.5], "std": [0.25]}


def run(capsys, *argv):
    """`resnetlab ARGV` in this process: (exit status, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"resnetlab {command}: error: "), err
    return lines[0]


def tiny_weights(path: Path) -> Path:
    torch.manual_seed(0)
    opts = dict(layers=(1, 1, 1), widths=(4, 8, 16), stem_width=4)
    save_weights(create_model("resnet20", num_classes=3, in_chans=1, **opts).eval(), path, META)
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def child(script: str, *args: str, **kw) -> subprocess.Popen:
    """A fresh Python process running `script` (the tests' helpers importable)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parent))
    env.pop("RESNETLAB_DEBUG", None)
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


# 1. links planted where the project creates files -----------------------------------------


@pytest.mark.parametrize("plant", ["symlink", "dangling", "hardlink", "foreign"])
def test_a_planted_lock_is_refused_and_its_target_keeps_its_bytes(tmp_path, capsys, plant):
    data = write_npz(tmp_path / "d.npz")
    out = tmp_path / "run"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    if plant != "dangling":
        victim.write_text("precious")
    if plant in ("symlink", "dangling"):
        (out / ".lock").symlink_to("../victim.txt")
    elif plant == "hardlink":
        os.link(victim, out / ".lock")
    else:
        (out / ".lock").write_text("my notes, not a lock")
    rc, _, err = run(capsys, "train", *TINY_CLI, "--data", data, "--out", out, "--epochs", "1")
    assert rc == 2
    line = one_error_line(err, "train")
    expected = {
        "symlink": "is a symbolic link",
        "dangling": "is a symbolic link",
        "hardlink": "has 2 names",
        "foreign": "is not a run's lock",
    }[plant]
    assert expected in line
    if plant == "dangling":
        assert not victim.exists()  # nothing created through the link
    elif plant == "foreign":
        assert (out / ".lock").read_text() == "my notes, not a lock"
    else:
        assert victim.read_text() == "precious"
    assert not (out / "last.safetensors").exists()


def test_an_output_that_is_a_link_is_replaced_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "m.safetensors"
    out.symlink_to(victim)
    tiny_weights(out)
    assert victim.read_text() == "precious"
    assert out.is_file() and not out.is_symlink()


def test_a_planted_checkpoint_link_is_removed_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.old").symlink_to(victim)
    ckpt.save_checkpoint(run_dir / "checkpoint", {"w": torch.zeros(1)}, {"config": {}, "step": 1})
    ckpt.save_checkpoint(run_dir / "checkpoint", {"w": torch.ones(1)}, {"config": {}, "step": 2})
    assert (victim / "keep.txt").read_text() == "precious"
    assert ckpt.load_checkpoint(run_dir)[1]["step"] == 2


# 5. size bombs ----------------------------------------------------------------------------


class _DataLess:
    """Pickles as numpy.ndarray(shape, dtype): an array of any size without its data."""

    def __init__(self, shape):
        self.shape = shape

    def __reduce__(self):
        return (np.ndarray, (self.shape, np.dtype("u1")))


def test_cifar_batch_declaring_more_images_than_it_holds_allocates_nothing(tmp_path):
    import tracemalloc

    write_cifar10(tmp_path)
    n = 50_000  # 150 MB declared in a 100 kB file
    bomb = {b"data": _DataLess((n, 3072)), b"labels": [0] * n}
    (tmp_path / "test_batch").write_bytes(pickle.dumps(bomb, protocol=4))
    # the reconstructor with a declared shape, and state whose bytes fall short of it
    good = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=4)
    short = good.replace(b"K\x02M\x00\x0c\x86", b"J\x50\xc3\x00\x00M\x00\x0c\x86", 1)
    assert short != good
    (tmp_path / "short_batch").write_bytes(short)
    tracemalloc.start()  # NumPy reports its arrays to tracemalloc: a 153.6 MB one would show
    try:
        with pytest.raises(ResnetlabError, match="numpy.ndarray called directly"):
            load_cifar_dir(tmp_path)
        with pytest.raises(ResnetlabError, match=r"needs 153600000 bytes but the file holds 6144"):
            safe_unpickle(tmp_path / "short_batch")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20, peak  # a few MB of Python objects, not the 153.6 MB declared


def _png_header_only(path: Path, side: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])  # 8-bit RGB
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_a_folder_of_huge_images_is_refused_before_decoding(tmp_path, capsys, monkeypatch):
    # each 9000x9000 is under Pillow's pixel limit; 2000 of them would decode into 486 GB
    for i in range(2000):
        cls = tmp_path / "tree" / ("cat" if i % 2 else "dog")
        cls.mkdir(parents=True, exist_ok=True)
        _png_header_only(cls / f"{i}.png", 9000)
    t0 = time.perf_counter()
    rc, _, err = run(capsys, "data", "info", tmp_path / "tree")
    assert rc == 2
    line = one_error_line(err, "data")
    assert "2000 images of 3x9000x9000 needs 486.0 GB, beyond the limit of" in line
    assert "--size" in line
    # 20 of them (4.9 GB) on a machine with 1 GB available: the same stated limit
    import resnetlab.data.memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda: 1 << 30)
    small = tmp_path / "small"
    for cls in ("cat", "dog"):
        (small / cls).mkdir(parents=True)
        for p in sorted((tmp_path / "tree" / cls).iterdir())[:10]:
            p.rename(small / cls / p.name)
    rc, _, err = run(capsys, "data", "info", small)
    assert rc == 2
    assert "20 images of 3x9000x9000 needs 4.9 GB, beyond the limit of 537 MB" in one_error_line(
        err, "data"
    )
    assert time.perf_counter() - t0 < 20


def test_npz_and_idx_bombs_are_bounded_by_bytes_present_and_the_budget(tmp_path, monkeypatch):
    import gzip
    import io
    import zipfile

    from resnetlab.data.idx import IMAGES_MAGIC, read_idx
    from resnetlab.data.npz import load_npz

    # an .npy header inside an .npz that claims 16 GB for 160 bytes: NumPy allocates first
    header = io.BytesIO()
    claim = {"descr": "|u1", "fortran_order": False, "shape": (10**9, 4, 4)}
    np.lib.format.write_array_header_1_0(header, claim)
    with zipfile.ZipFile(tmp_path / "claim.npz", "w") as z:
        z.writestr("x.npy", header.getvalue() + bytes(160))
        labels = io.BytesIO()
        np.lib.format.write_array(labels, np.zeros(10, np.int64))
        z.writestr("y.npy", labels.getvalue())
    with pytest.raises(ResnetlabError, match=r"x claims \(1000000000, 4, 4\) uint8 = 16000000000"):
        load_npz(tmp_path / "claim.npz")
    # honest headers, but compressed 1000:1 past the memory budget
    import resnetlab.data.memory as memory

    monkeypatch.setattr(memory, "available_memory", lambda: 1 << 20)
    x = np.zeros((100, 100, 100), np.uint8)
    np.savez_compressed(tmp_path / "zeros.npz", x=x, y=np.zeros(100, np.int64))
    assert (tmp_path / "zeros.npz").stat().st_size < 20_000
    with pytest.raises(ResnetlabError, match=r"needs 1.0 MB, beyond the limit of 0.5 MB"):
        load_npz(tmp_path / "zeros.npz")
    idx = IMAGES_MAGIC.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in x.shape)
    (tmp_path / "zeros.gz").write_bytes(gzip.compress(idx + x.tobytes()))
    with pytest.raises(ResnetlabError, match=r"IDX data of \(100, 100, 100\) needs 1.0 MB"):
        read_idx(tmp_path / "zeros.gz", IMAGES_MAGIC)


def test_prepare_checks_the_disk_before_mapping(tmp_path, monkeypatch):
    import shutil

    make_tree(tmp_path / "tree")
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(ResnetlabError, match=r"need .* on disk, but .* has 0.0 MB free"):
        prepare_folder(tmp_path / "tree", tmp_path / "out", 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]


_UNDER_3_GB = """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # a plan of 5 GB fails, not swaps
    from resnetlab.cli import main
    sys.exit(main(sys.argv[1:]))
"""


def test_degradation_refuses_an_absurd_number_of_seeds(tmp_path):
    argv = ["experiment", "degradation", "--data", str(write_npz(tmp_path / "d.npz"))]
    p = child(_UNDER_3_GB, *argv, "--out", str(tmp_path / "study"), "--seeds", "100000000")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2, err
    assert "--seeds 100000000: at most 1000" in one_error_line(err, "experiment")


def _mean_std_as_before(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple, tuple]:
    """The formula compute_mean_std used before (float64 per chunk of 4096 images)."""
    c = images.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    ss = torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].to(torch.float64).div_(255.0)
        s += x.sum(dim=(0, 2, 3))
        ss += x.square().sum(dim=(0, 2, 3))
    n = images.numel() // c
    mean = s / n
    std = (ss / n - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(round(v, 6) for v in mean.tolist()), tuple(round(v, 6) for v in std.tolist())


def test_mean_std_works_in_chunks_bounded_by_bytes_with_the_same_result(monkeypatch):
    g = torch.Generator().manual_seed(0)
    for shape in [(37, 3, 9, 7), (5, 1, 28, 28), (1, 3, 1, 1), (300, 3, 4, 4)]:
        x = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
        expected = _mean_std_as_before(x)
        for chunk_bytes in (1, 1000, 1 << 26):
            assert compute_mean_std(x, chunk_bytes=chunk_bytes) == expected
    flat = torch.full((4, 1, 3, 3), 9, dtype=torch.uint8)
    assert compute_mean_std(flat) == _mean_std_as_before(flat)
    # each chunk's working memory stays within the budget: 224x224 colour images
    widest = []
    real = torch.Tensor.to

    def spy(self, *args, **kw):
        widest.append(self.numel())
        return real(self, *args, **kw)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    images = torch.zeros(100, 3, 224, 224, dtype=torch.uint8)
    compute_mean_std(images, chunk_bytes=64 << 20)
    assert 12 * max(widest) <= 64 << 20 < 12 * (max(widest) + 3 * 224 * 224)
    widest.clear()
    compute_mean_std(images, chunk_bytes=1000)  # less than one image: one at a time
    assert max(widest) == 3 * 224 * 224


# 7. temporaries ---------------------------------------------------------------------------

_SIGTERM_MID_WRITE = {
    "atomic_write": """
        import os, signal, sys, time
        from pathlib import Path
        from resnetlab.files import atomic_write

        def write(tmp):
            Path(tmp).write_text("half of it")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)

        atomic_write(os.path.join(sys.argv[1], "model.onnx"), write)
    """,
    "prepare": """
        import os, signal, sys, time
        from pathlib import Path
        from helpers.data import make_tree
        from resnetlab.data import prepared

        here = Path(sys.argv[1])
        make_tree(here / "tree")
        decode = prepared.decode_files

        def decode_then_term(*args, **kw):
            out = decode(*args, **kw)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
            return out

        prepared.decode_files = decode_then_term
        prepared.prepare_folder(here / "tree", here / "cache", 4)
    """,
    "checkpoint": """
        import os, signal, sys, time, torch
        from resnetlab.train import checkpoint

        def torch_save_then_term(obj, f):
            open(f, "wb").write(b"half")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)

        checkpoint.torch.save = torch_save_then_term
        path, state = os.path.join(sys.argv[1], "checkpoint"), {"config": {}, "step": 1}
        checkpoint.save_checkpoint(path, {"w": torch.ones(1)}, state)
    """,
}


@pytest.mark.parametrize("write", list(_SIGTERM_MID_WRITE))
def test_sigterm_during_a_write_leaves_no_temporary(tmp_path, write):
    p = child(_SIGTERM_MID_WRITE[write], str(tmp_path))
    _, err = p.communicate(timeout=60)
    assert p.returncode == -signal.SIGTERM, err  # it still ends by the signal
    assert [p.name for p in tmp_path.iterdir() if p.name != "tree"] == []


def test_atomic_write_leaves_a_sigterm_handler_of_the_program_in_charge(tmp_path):
    seen = []

    def mine(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        atomic_write(tmp_path / "x.txt", lambda tmp: os.kill(os.getpid(), signal.SIGTERM))
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == [signal.SIGTERM]  # the trainer's stop-at-the-next-step still gets it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]
    atomic_write(tmp_path / "y.txt", lambda tmp: Path(tmp).write_text("y"))
    assert signal.getsignal(signal.SIGTERM) is previous


def test_stale_temporaries_in_a_study_folder_are_swept_at_the_next_write(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    old = time.time() - 3600
    stale = [".degradation.json.k1ll3d_x.tmp", ".degradation.png.a8f2c0de.resnetlab.tmp"]
    kept = [
        ".curves.png.zz9ya1b2.tmp",  # another name's old-style temporary: not provably ours
        "notes.tmp",  # the user's
        ".table.md.fresh123.resnetlab.tmp",  # young: a write that may be starting
        ".live.onnx.l1ve0000.resnetlab.tmp",  # locked: a live write in another process
    ]
    for name in stale + kept:
        (study / name).write_text("half")
        if "fresh" not in name:
            os.utime(study / name, (old, old))
    fd = os.open(study / kept[-1], os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        atomic_write(study / "degradation.json", lambda tmp: Path(tmp).write_text("{}"))
    finally:
        os.close(fd)
    assert sorted(p.name for p in study.iterdir()) == sorted(["degradation.json", *kept])
    os.utime(study / kept[-1], (old, old))
    assert files.sweep_temporaries(study) == [kept[-1]]  # once its write is gone


def test_checkpoint_files_are_on_disk_before_the_renames(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(a, b):
        events.append(("replace", str(a)))
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    ckpt.save_checkpoint(tmp_path / "checkpoint", {"w": torch.zeros(3)}, {"config": {}, "step": 1})
    first_rename = next(i for i, e in enumerate(events) if e[0] == "replace")
    synced = [Path(p).name for kind, p in events[:first_rename] if kind == "fsync"]
    assert ckpt.WEIGHTS_FILE in synced and ckpt.STATE_FILE in synced, events


@pytest.mark.parametrize("length", [240, 250, 255])
def test_a_legal_long_file_name_gets_a_legal_temporary(tmp_path, capsys, length):
    weights = tiny_weights(tmp_path / "w.safetensors")
    name = "m" * (length - 5) + ".onnx"
    rc, _, err = run(capsys, "export", weights, "--format", "onnx", "--out", tmp_path / name)
    assert rc == 0, err
    assert (tmp_path / name).is_file()
    figure = tmp_path / ("c" * (length - 4) + ".png")  # what --confusion and explain --out do
    atomic_write(figure, lambda tmp: Path(tmp).write_bytes(b"png"))
    assert figure.read_bytes() == b"png"
    make_tree(tmp_path / "tree")
    prepared = tmp_path / ("p" * length)
    prepare_folder(tmp_path / "tree", prepared, 4)
    assert len(load_prepared(prepared).train) > 0
    assert leftovers(tmp_path) == []
    with pytest.raises(ResnetlabError, match="a name of 256 bytes; this file system allows"):
        prepare_folder(tmp_path / "tree", tmp_path / ("p" * 256), 4)  # one past: refused


# 8. a prepared cache changed under the run ------------------------------------------------

_TRAIN_AND_TRUNCATE = """
    import os, subprocess, sys
    from resnetlab.data import prepared
    from resnetlab.train import loop
    from resnetlab.cli import main

    prepared.memory_budget = lambda: 0  # map it, as a cache larger than memory would be
    images = os.path.join(sys.argv[1], "images.npy")

    class Truncate:
        def on_step_end(self, state):
            if state.step == 2:  # another process cuts the cache short
                subprocess.Popen([sys.executable, "-c", f"import os; os.truncate({images!r}, 128)"])

    fit = loop.fit
    loop.fit = lambda *a, callbacks=None, **k: fit(*a, callbacks=[Truncate()], **k)
    sys.exit(main(sys.argv[2:]))
"""


def test_a_prepared_cache_truncated_while_training_ends_in_one_line(tmp_path):
    make_tree(tmp_path / "tree", classes=("a", "b", "c", "d"), per_class=40, mode="L")
    prepare_folder(tmp_path / "tree", tmp_path / "cache", 8)
    argv = ["train", *TINY_CLI, "--data", str(tmp_path / "cache"), "--out", str(tmp_path / "run")]
    p = child(_TRAIN_AND_TRUNCATE, str(tmp_path / "cache"), *argv, "--epochs", "300")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2, (p.returncode, err)  # not -SIGBUS
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]  # after the progress lines
    assert line.startswith("resnetlab train: error: ")
    assert "images.npy: another process is truncating or rewriting the prepared cache" in line


def test_a_truncated_cache_is_refused_before_mapping_and_a_copy_is_immune(tmp_path):
    make_tree(tmp_path / "tree")
    prepare_folder(tmp_path / "tree", tmp_path / "cache", 4)
    images = tmp_path / "cache" / IMAGES_NAME
    whole = load_prepared(tmp_path / "cache", in_memory=True)
    before = whole.train.images.clone()
    size = images.stat().st_size
    os.truncate(images, size - 10)
    assert torch.equal(whole.train.images, before)  # read into memory: nothing reaches it
    for in_memory in (True, False, None):
        with pytest.raises(ResnetlabError, match=rf"holds {size - 10} bytes but .* need {size}"):
            load_prepared(tmp_path / "cache", in_memory=in_memory)


# the umask, for folders and files alike ---------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_created_folders_and_files_follow_the_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        fit(tiny_config(tmp_path / "run", epochs=1), tiny_splits(64, 32))
        make_tree(tmp_path / "tree")
        prepare_folder(tmp_path / "tree", tmp_path / "cache", 4)
    finally:
        os.umask(previous)

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    assert mode(tmp_path / "run" / "checkpoint") == 0o777 & ~umask
    assert mode(tmp_path / "cache") == 0o777 & ~umask
    for f in [
        tmp_path / "run" / "checkpoint" / ckpt.WEIGHTS_FILE,
        tmp_path / "run" / "last.safetensors",
        tmp_path / "run" / ".lock",
        tmp_path / "cache" / IMAGES_NAME,
    ]:
        assert mode(f) == 0o666 & ~umask, f


def test_a_lost_lease_break_still_stops_the_run_at_the_next_batch(tmp_path, monkeypatch, capsys):
    # the SIGIO handler's error can land in a finaliser, where Python only prints it: the break
    # is remembered, the loader refuses the next batch, and the command reports it in one line
    from resnetlab.cli import main
    from resnetlab.commands import models as models_cmd
    from resnetlab.data import npyfile
    from resnetlab.data.dataset import ImageDataset
    from resnetlab.data.loader import BatchLoader

    ds = ImageDataset(
        torch.zeros(8, 1, 4, 4, dtype=torch.uint8), torch.zeros(8, dtype=torch.int64), ["a"]
    )
    loader = BatchLoader(ds, 4, train=False, mean=(0.5,), std=(0.5,))
    assert len(list(loader)) == 2
    monkeypatch.setattr(npyfile, "_BROKEN", [tmp_path / "cache" / "images.npy"])
    with pytest.raises(ResnetlabError, match="another process is truncating or rewriting"):
        next(iter(loader))

    class Finaliser:  # where a signal handler's error is only printed
        def __del__(self):
            npyfile.raise_if_changed()

    def run_models(args):
        Finaliser()
        return 0

    monkeypatch.setattr(models_cmd, "run_models", run_models)
    rc = main(["models"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("resnetlab models: error: ") and len(err.strip().splitlines()) == 1
    assert "images.npy: another process is truncating" in err
