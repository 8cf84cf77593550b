"""Processes a benchmark starts: servers kept running (`Service`) and children run to completion
(`run_timed`, which also returns the child's CPU seconds), and waiting until a server answers.

Servers start in a session of their own, with their output in a log file that a failure quotes.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.common import REPO, BenchError
from tests.support.waiting import WaitTimeout, wait_until


@dataclass
class Service:
    """A process a benchmark started; its output goes to `log`."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 25) -> str:
        """The last `lines` lines of its log ('' when unreadable)."""
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def start_service(name: str, args: list[str], *, env: dict[str, str], logdir: Path) -> Service:
    """Starts `args` in the repository, its output in `logdir/<name>.log`."""
    log = logdir / f"{name}.log"
    with log.open("wb") as out:
        # Its own session, so a SIGKILL fallback reaches the children (uvicorn's workers) too.
        process = subprocess.Popen(
            args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Service(name, process, log)


def stop_service(service: Service, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL to its process group after `grace` seconds; then SIGKILL to any of
    its descendants that outlived it (a uvicorn worker)."""
    process = service.process
    try:
        descendants = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        descendants = []
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
    # psutil's Process checks its creation time before signalling: a pid reused meanwhile is spared.
    for child in descendants:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            child.kill()
    psutil.wait_procs(descendants, timeout=5)


def http_status(port: int, path: str, headers: dict[str, str] | None = None) -> int:
    """The status of a GET to 127.0.0.1:`port``path` on a new connection; OSError when refused."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def answers(port: int, path: str, headers: dict[str, str] | None = None, times: int = 1) -> bool:
    """`times` consecutive 200s, each on a new connection (with several workers, each may get one)."""
    return all(http_status(port, path, headers) == 200 for _ in range(times))


def wait_serving(check: Callable[[], bool], *, what: str, service: Service, timeout: float = 60.0) -> None:
    """Waits until `check` holds; BenchError with the service's log if it dies or time runs out."""
    try:
        wait_until(lambda: service.process.poll() is not None or check(), timeout=timeout, what=what, interval=0.1)
    except WaitTimeout as exc:
        raise BenchError(f"{exc}\n{service.tail()}") from None
    if service.process.poll() is not None:
        raise BenchError(
            f"{service.name} exited ({service.process.returncode}) while waiting for {what}:\n{service.tail()}"
        )


def run_timed(args: list[str], timeout: float) -> tuple[str, float]:
    """Runs a child to completion: (its output, its CPU seconds from wait4's rusage).

    Raises BenchError when it fails or runs past `timeout` seconds.
    """
    with tempfile.TemporaryFile() as out:
        process = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        try:
            cpu_s = _reap(process, args[0], timeout)
        finally:
            if process.returncode is None:
                process.kill()
                process.wait()
        out.seek(0)
        text = out.read().decode(errors="replace")
    if process.returncode != 0:
        raise BenchError(f"{' '.join(args[:3])} ... failed ({process.returncode}):\n{text[-2000:]}")
    return text, cpu_s


def _reap(process: subprocess.Popen[bytes], name: str, timeout: float) -> float:
    """Waits for `process` with wait4 rather than Popen.wait: it returns the child's own CPU time."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            raise BenchError(f"{name} ran past {timeout:.0f}s")
        time.sleep(0.05)
