"""Prometheus in multiprocess mode: every process of one host writes its samples to one folder.

uvicorn workers and Celery worker processes each keep their own counters; `/metrics` must report
the sum, whichever process answers the scrape. prometheus_client does that with memory-mapped
files in `PROMETHEUS_MULTIPROC_DIR`, and each metric takes its value class when it is created: so
`configure_multiprocess` runs from `core.apps.CoreConfig.ready()`, the first app's, before the
other apps' ready() hooks import the modules that declare metrics (a test checks every metric).

Files are named after a process identifier. The default (the pid) collides when containers share
the folder through a volume (each has its pid 1), so the identifier is `<hostname>-<pid>`.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

_HOSTNAME = socket.gethostname()


def _forget_hostname() -> None:
    global _HOSTNAME
    _HOSTNAME = socket.gethostname()


# prometheus_client calls the identifier on every metric update (to notice a fork): a system
# call there cost 16 µs per proxied request. The host name is read once per process instead.
os.register_at_fork(after_in_child=_forget_hostname)


def process_identifier() -> str:
    return f"{_HOSTNAME}-{os.getpid()}"


def configure_multiprocess(directory: Path, *, fresh: bool = False) -> None:
    """Points prometheus_client, and the processes this one starts, at `directory` (created).

    `fresh` empties it first (a test run counts from zero). Setting the value class directly,
    rather than relying on the variable alone, covers prometheus_client imported before this
    call; a metric created before it would count in this process's memory only.
    """
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    if fresh:
        shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue(process_identifier)


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
