"""The real fraud brain for a test: `manage.py run_brain` on a free port of 127.0.0.1.

The model is trained once per test session (`brain_model_dir`, ~3 s) and every brain a test starts
loads it, so no test trains unless it means to. Fixtures (import them into the test module, or
list this module in a conftest's ``pytest_plugins``)::

    def test_x(brain: BrainProcess) -> None:      # a brain, SERVING, stopped after the test
        brain.address                             # "127.0.0.1:PORT"
        brain.stop(); brain.start()               # SIGTERM and wait; again on the same port
        brain.kill()                              # SIGKILL

    with brain_process(model_dir, FRAUD_BRAIN_FAILURE_RATE="1") as brain: ...   # fault injection

`env` passes through to the process (``child_env``): FRAUD_BRAIN_SLOW_RATE, FRAUD_BRAIN_SLOW_MS and
FRAUD_BRAIN_FAILURE_RATE turn fault injection on; PROMETHEUS_MULTIPROC_DIR moves its metrics.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fraud.brain import model as brain_model
from tests.support.net import free_port
from tests.support.processes import BASE_DIR, child_env, python_command
from tests.support.waiting import wait_until

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health_status(address: str, *, timeout: float = 1.0) -> int | None:
    """The brain's overall health status (SERVING, NOT_SERVING), None when nothing answers."""
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError:
            return None
    return int(reply.status)


class BrainProcess:
    """One `run_brain` process at a fixed address: `start()` waits for SERVING (deadline
    `ready_timeout` s), `stop()` sends SIGTERM and waits, `kill()` SIGKILL. Its output goes to
    `log`, whose tail `output()` returns."""

    def __init__(
        self,
        *,
        model_dir: Path,
        log: IO[bytes],
        env: dict[str, str | None],
        port: int | None = None,
        ready_timeout: float = 60,
    ) -> None:
        self.model_dir = model_dir
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = env
        self.log = log
        self.ready_timeout = ready_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "the brain is not running"
        return self.process.pid

    def launch(self) -> subprocess.Popen[bytes]:
        """Starts the process without waiting for it (a test watching the start itself)."""
        command = python_command(
            "manage.py", "run_brain", "--address", self.address, "--model-dir", str(self.model_dir)
        )
        self.process = subprocess.Popen(
            command, cwd=BASE_DIR, env=child_env(**self.env), stdout=self.log, stderr=subprocess.STDOUT
        )
        return self.process

    def start(self) -> BrainProcess:
        self.launch()
        return self.wait_serving()

    def wait_serving(self) -> BrainProcess:
        """Waits (deadline `ready_timeout`) until health says SERVING; fails if the process exits."""
        process = self.process
        assert process is not None, "launch() first"

        def serving() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the brain exited with {process.returncode}:\n{self.output()}")
            return bool(health_status(self.address) == SERVING)

        wait_until(serving, timeout=self.ready_timeout, what=f"the brain on {self.address} to be SERVING")
        return self

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM (a graceful shutdown), then waits; returns the exit code (SIGKILL past `timeout`)."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> int:
        return self._end(signal.SIGKILL, 5)

    def _end(self, sig: signal.Signals, timeout: float) -> int:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return process.returncode if process else 0
        process.send_signal(sig)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(timeout=5)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


@contextlib.contextmanager
def brain_process(model_dir: Path, *, start: bool = True, **env: str | None) -> Iterator[BrainProcess]:
    """A brain for the block (started and SERVING unless `start` is False), stopped after it; its
    output is printed if the block fails."""
    with tempfile.TemporaryFile() as log:
        brain = BrainProcess(model_dir=model_dir, log=log, env=env)
        try:
            if start:
                brain.start()
            yield brain
        except BaseException:
            sys.stderr.write(f"--- output of the brain ---\n{brain.output()[-6000:]}\n")
            raise
        finally:
            brain.stop()  # SIGKILL if it outlives the grace


@pytest.fixture(scope="session")
def brain_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model trained once for the session, in a folder of its own (never the site's var/)."""
    model_dir = tmp_path_factory.mktemp("fraud-brain") / "model"
    brain_model.ensure(model_dir)
    return model_dir


@pytest.fixture
def brain(brain_model_dir: Path) -> Iterator[BrainProcess]:
    """A real brain process, SERVING the session's model, stopped after the test."""
    with brain_process(brain_model_dir) as running:
        yield running
