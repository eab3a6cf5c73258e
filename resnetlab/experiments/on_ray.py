"""Running a study's nets as Ray tasks (the optional extra `resnetlab[ray]`; imported only when
--ray is given).

`--ray auto` uses a Ray already started in this process, else the cluster RAY_ADDRESS names, else
starts a local one (shut down at the end); `--ray ADDRESS` connects to that cluster. Before
anything trains, a file written to the study folder here must be read back by a task pinned to
each alive node: the study folder must be storage every node mounts at the same path, since each
net writes its run folder there and the figures are drawn here from them. Each net is then one
task asking for its threads as CPUs (1 unless --threads) and, on CUDA, 1/NETS_PER_GPU of a GPU;
a task that fails stops the study with one line, and the same command resumes it. A study
stopped (Ctrl-C, SIGTERM, a failed task) stops its tasks as Ctrl-C stops a run: each saves a
checkpoint where it is; what has not stopped after CANCEL_GRACE seconds is killed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import time
import uuid
from dataclasses import replace
from pathlib import Path

from ..data import DataSplits
from ..errors import ResnetlabError
from .estimate import estimate, fmt_time, measure_shape_speed
from .tasks import NETS_PER_GPU, NetTask, import_ray, train_remote, with_threads

CANCEL_GRACE = 120.0  # seconds a stopped study waits for its Ray tasks' checkpoints
CONNECT_TIMEOUT = 10.0  # seconds to reach a cluster's address before Ray is asked to connect


def _ray_start(ray, address: str) -> bool:
    """Connect to (or start) Ray; True when this call started it (then it is shut down after)."""
    if ray.is_initialized():
        return False
    if address not in ("auto", "local"):
        _check_reachable(address)
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stderr(quiet):
            where = {} if address == "auto" else {"address": address}
            ray.init(**where, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)  # fmt: skip
    except Exception as e:  # ConnectionError, ValueError, RuntimeError: Ray's own
        raise ResnetlabError(f"ray {address!r}: cannot connect ({e})", argument="ray") from None
    return True


def _check_reachable(address: str) -> None:
    """One line, within CONNECT_TIMEOUT seconds, for a cluster address nothing answers at (Ray's
    own connect retries for minutes): 'HOST:PORT' or 'ray://HOST:PORT'."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not (sep and host and port.isdigit() and 0 < int(port) < 65536):
        raise ResnetlabError(
            f"ray {address!r}: not an address; give auto, HOST:PORT or ray://HOST:PORT",
            argument="ray",
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        raise ResnetlabError(
            f"ray {address!r}: nothing answers there ({e.strerror or e}); start the cluster "
            "(`ray start --head`) or give its head's address",
            argument="ray",
        ) from None


SHARED_CHECK = ".shared-check"  # in the study folder while nodes read it (the study holds it)


def _sees_file(path: str, token: str) -> str | None:
    """On a node: None when `path` holds `token`, else what was found."""
    try:
        got = Path(path).read_text()
    except OSError as e:
        return f"cannot read it ({e.strerror})"
    return None if got == token else "it holds other content"


def check_shared(ray, out: Path) -> int:
    """Every alive node reads a file written to `out` here; one line naming the first that cannot.
    Returns the number of nodes."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    out.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    path = out / SHARED_CHECK  # one name: a killed study's leftover is replaced, then removed
    path.unlink(missing_ok=True)  # (a link there is removed, never written through)
    path.write_text(token)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        probe = ray.remote(num_cpus=0)(_sees_file)
        refs = [
            probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(path.absolute()), token)
            for n in nodes
        ]
        for n, why in zip(nodes, ray.get(refs)):
            if why is not None:
                host = n.get("NodeManagerAddress", n["NodeID"][:8])
                raise ResnetlabError(
                    f"{out} is not shared storage: node {host} sees {path.absolute()} but {why}; "
                    "give --out a folder every node mounts at the same path"
                )
    finally:
        path.unlink(missing_ok=True)
    return len(nodes)


def check_fits_a_node(ray, cpus: int, asked: bool, say=print) -> None:
    """Refuse in one line a net of more CPUs than any node of the cluster has: Ray would hold
    its task pending for ever. A cluster with no CPU on any node yet (an autoscaling head of
    0 CPUs) is only told: its autoscaler may add nodes for the tasks."""
    sizes = [n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")]
    biggest = int(max(sizes, default=0))
    if biggest == 0:
        say(f"no node of the Ray cluster has a CPU yet: the nets wait until one with {cpus} "
            "joins (an autoscaler adds it); Ctrl-C stops the study")  # fmt: skip
        return
    if cpus > biggest:
        what = f"--threads {cpus}" if asked else f"a net of {cpus} CPU(s)"
        raise ResnetlabError(
            f"{what}: no node of the Ray cluster has {cpus} CPUs (the largest has {biggest}), "
            f"so no net could start; give --threads {biggest} or fewer"
        )


def run_on_ray(left: list[NetTask], data: DataSplits, out: Path, address: str,
               threads: int | None, say=print, on_done=None) -> None:  # fmt: skip
    """Check the study folder is shared, print the estimate, then run each unfinished net as a
    Ray task (its threads as CPUs, a share of a GPU on CUDA); `on_done(task)` as each ends."""
    ray = import_ray()
    started = _ray_start(ray, address)
    refs: dict = {}
    try:
        nodes = check_shared(ray, out)
        cpus = max(1, threads or 1)
        check_fits_a_node(ray, cpus, threads is not None, say)
        left = [with_threads(_absolute(t), cpus) for t in left]
        cuda = left[0].cfg.device.startswith("cuda")
        gpus = 1 / NETS_PER_GPU if cuda else 0
        total = ray.cluster_resources()
        if cuda and not total.get("GPU"):
            raise ResnetlabError(
                f"device {left[0].cfg.device!r} on Ray, but the cluster has no GPU; use --device "
                "cpu (auto runs Ray tasks on their CPUs)"
            )
        slots = int(total.get("CPU", 1) // cpus)
        if cuda:
            slots = min(slots, int(total.get("GPU", 0) * NETS_PER_GPU)) or 1
        probe = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(measure_shape_speed)

        def on_a_node(cfg, data):  # the speed where the nets will train, not on this driver
            shape, classes = tuple(data.train.image_shape), list(data.train.classes)
            try:
                return ray.get(probe.remote(cfg, shape, classes))
            except Exception as e:  # Ray's own error types, the task's error inside
                first = (str(e).strip().splitlines() or [type(e).__name__])[-1]
                raise ResnetlabError(f"measuring {cfg.model} on Ray failed ({first})") from None

        secs = estimate(left, data, max(1, slots), cpus, out, say, on_a_node, "on Ray")
        say(f"estimated time: {fmt_time(secs)} on Ray ({nodes} node(s), {max(1, slots)} net(s) "
            f"at once, {cpus} CPU(s){f', 1/{NETS_PER_GPU} GPU' if cuda else ''} each)")  # fmt: skip
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(train_remote)
        t0 = time.time()
        refs = {remote.remote(t): t for t in left}
        for t in left:
            say(f"{t.label}: submitted ({'resume' if t.state == 'partial' else 'start'})")
        errors = []
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            t = refs.pop(ready[0])
            try:
                secs, err = ray.get(ready[0])
            except Exception as e:  # a task whose process died: Ray's own error types
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ResnetlabError(
                    f"the Ray task of {t.label} failed ({first}); run the same command again "
                    "to resume every unfinished net"
                ) from None
            if err:
                errors.append(err)
                continue
            say(f"{t.label}: finished in {fmt_time(secs)} on Ray (study elapsed "
                f"{fmt_time(time.time() - t0)}, {len(refs)} net(s) left)")  # fmt: skip
            if on_done:
                on_done(t)
        if errors:
            raise ResnetlabError(
                errors[0] + (f" (and {len(errors) - 1} more)" if errors[1:] else "")
            )
    finally:
        _stop_tasks(ray, list(refs))  # a failure or Ctrl-C here: nothing trains behind the study
        if started:
            with contextlib.redirect_stderr(io.StringIO()):
                ray.shutdown()


def _stop_tasks(ray, refs: list) -> None:
    """Stop the tasks still running: first as Ctrl-C (Ray's plain cancel interrupts the task's
    main thread, so each net stops at its next read and saves a checkpoint, as a local worker
    does), then, after CANCEL_GRACE seconds or a second Ctrl-C, by killing what is left (those
    resume from their last epoch's checkpoint)."""
    if not refs:
        return
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref)
    left = refs
    with contextlib.suppress(Exception, KeyboardInterrupt):
        _, left = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE)
    for ref in left:  # (never a task that has ended: Ray aborts on a second cancel of one)
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)


def _absolute(task: NetTask) -> NetTask:
    """The task with its run folder, and its data where that is a path, made absolute: a task
    runs on whichever node and in whatever folder Ray starts it."""
    from ..data.sources import canonical_name

    data = task.cfg.data
    if canonical_name(data) is None and Path(data).expanduser().exists():  # as a run reads it
        data = str(Path(data).expanduser().absolute())
    task.cfg = replace(task.cfg, out=str(Path(task.cfg.out).absolute()), data=data)
    return task
