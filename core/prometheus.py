"""Prometheus in multiprocess mode: every process of one host writes its samples to one folder.

uvicorn workers and Celery worker processes each keep their own counters; `/metrics` must report
the sum, whichever process answers the scrape. prometheus_client does that with memory-mapped
files in `PROMETHEUS_MULTIPROC_DIR`, and each metric takes its value class when it is created: so
`configure_multiprocess` runs from `core.apps.CoreConfig.ready()`, the first app's, before the
other apps' ready() hooks import the modules that declare metrics (a test checks every metric).

Files are named after a process identifier. The default (the pid) collides when containers share
the folder through a volume (each has its pid 1), so the identifier is `<hostname>-<pid>`.

A run starts with an empty folder (`run_join`): prometheus_client documents wiping it between runs,
or the counters of processes that ended in an earlier run are summed into the new run's. Each app
declares its families in its own `metrics` module, with the label values known at start created
at zero (`series_declare`); `metrics_autodiscover` imports them all in every process, so every
family is in `/metrics` from the first scrape.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_HOSTNAME = socket.gethostname()


def _forget_hostname() -> None:
    global _HOSTNAME
    _HOSTNAME = socket.gethostname()


# prometheus_client calls the identifier on every metric update (to notice a fork): a system
# call there cost 16 µs per proxied request. The host name is read once per process instead.
os.register_at_fork(after_in_child=_forget_hostname)


def process_identifier() -> str:
    return f"{_HOSTNAME}-{os.getpid()}"


def configure_multiprocess(directory: Path) -> bool:
    """Points prometheus_client, and the processes this one starts, at `directory` (created), and
    joins its run (`run_join`): True when this process started the run and emptied the folder.

    Setting the value class directly, rather than relying on the variable alone, covers
    prometheus_client imported before this call; a metric created before it would count in this
    process's memory only.
    """
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    started = run_join(directory)
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue(process_identifier)
    return started


# Lock files of the folder: never deleted (a process holding a lock on a deleted file would be
# holding it alone), and not `*.db`, so prometheus_client's collector never reads them.
RUN_LOCK = "run.lock"
START_LOCK = "start.lock"
# The folders this process has joined, and the descriptor holding each one's shared lock: open
# for the life of the process (the kernel releases the lock when it ends, however it ends).
_joined: dict[Path, int] = {}


def run_join(directory: Path) -> bool:
    """Joins the run of processes counting into `directory`, or starts a new one: True when this
    process found nobody alive and emptied the folder of the previous run's `*.db` files.

    Every process holds a shared `flock` on `run.lock` for its life. A starting process tries the
    exclusive lock without waiting: granted, no process of a run is alive, so the folder is the
    leftover of an ended run and is emptied; refused, it joins the live run. Both steps run under
    an exclusive `start.lock`, because `flock` converts exclusive to shared non-atomically (flock(2):
    another process may be granted a lock in between): with starts serialised, no other process can
    take the exclusive lock in that gap and empty the folder under a live one. Forked children
    (Celery's pool) inherit the descriptor and so hold the run too; the descriptor is not passed to
    programs this one execs (PEP 446), which join for themselves.

    Needs a local filesystem (or one with working `flock`): containers of one host sharing a volume
    qualify. Raises `OSError` when the folder cannot be created or written.
    """
    directory = directory.resolve()
    if directory in _joined:
        return False
    directory.mkdir(parents=True, exist_ok=True)
    # Read-only descriptors: flock needs no write access, so processes of other users sharing the
    # folder (readable by all, like prometheus_client's own files) can lock the files too.
    start = os.open(directory / START_LOCK, os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(start, fcntl.LOCK_EX)
        run = os.open(directory / RUN_LOCK, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(run, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            started = False
        else:
            started = True
            for leftover in directory.glob("*.db"):
                leftover.unlink(missing_ok=True)
        # Never blocks: only a process holding start.lock ever holds run.lock exclusively.
        fcntl.flock(run, fcntl.LOCK_SH)
    finally:
        os.close(start)  # releases start.lock: the next process may start
    _joined[directory] = run
    return started


def metrics_autodiscover() -> None:
    """Imports the `metrics` module of every installed app that has one (as the admin discovers
    `admin` modules): each declares its families and their series known at start, so every process
    that sets Django up (web, worker, beat, stream) writes them at zero to its file."""
    from django.utils.module_loading import autodiscover_modules

    autodiscover_modules("metrics")


def series_declare(metric: Any, **label_values: Iterable[str]) -> None:
    """Creates, at zero, the child of `metric` for every combination of `label_values` (one
    iterable of values per label name, e.g. ``channel=ChannelKind.values, outcome=("sent", ...)``).

    In multiprocess mode a series exists only once some process has created it; one missing until
    its first event breaks `rate()` and alerts (Prometheus' instrumentation practices, "Avoid
    missing metrics"). Creating a child writes its zero to this process's file, which adds nothing
    to the sums.
    """
    names = list(label_values)
    for combination in itertools.product(*(list(label_values[name]) for name in names)):
        metric.labels(**dict(zip(names, combination, strict=True)))


def forget_dead_processes(directory: Path) -> int:
    """Removes the live-gauge files of this host's processes that no longer run.

    Counters and histograms of dead processes stay: removing them would make totals go back.
    Called when the web server starts (a worker killed by a signal never cleans up after itself).
    """
    from prometheus_client import multiprocess

    prefix = f"{_HOSTNAME}-"
    removed = 0
    for path in directory.glob("gauge_live*_*.db"):
        identifier = path.stem.split("_", 2)[-1]
        if not identifier.startswith(prefix):
            continue
        pid = identifier[len(prefix) :]
        if pid.isdigit() and not _alive(int(pid)):
            multiprocess.mark_process_dead(identifier, str(directory))
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
