"""Real Sentinel processes for a test: a web server, a Celery worker, the mock upstream, any command.

Each runs for a ``with`` block and is stopped after it (SIGTERM, then SIGKILL); its output is
printed when the block fails. Nothing waits blindly: each start waits on a condition with a
deadline and says what it waited for.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from tests.support.net import free_port, http_request
from tests.support.waiting import wait_until

BASE_DIR = Path(__file__).resolve().parents[2]


def python_command(*args: str) -> list[str]:
    """``[this interpreter, *args]``: children run on the tests' virtualenv."""
    return [sys.executable, *args]


def child_env(**overrides: str | None) -> dict[str, str]:
    """The environment for a Sentinel process started by a test: same database, same secret key,
    same var folder, and (inherited) the run's ``CACHE_KEY_PREFIX``. An override of None removes
    the variable."""
    from django.conf import settings
    from django.db import connection

    from tests.support.services import database_url_of

    env = dict(os.environ)
    # Tests point tenant routes and channels at servers on 127.0.0.1; a test of the production
    # egress policy passes EGRESS_ALLOW_LOOPBACK="false" (shared decision 2).
    env.setdefault("EGRESS_ALLOW_LOOPBACK", "true")
    env.update(
        {
            # The site's settings, as before the test run had its own (tests.support.settings).
            "DJANGO_SETTINGS_MODULE": "sentinel_site.settings",
            "DATABASE_URL": database_url_of(connection.settings_dict),
            "SECRET_KEY": settings.SECRET_KEY,
            "SENTINEL_VAR_DIR": str(settings.VAR_DIR),
            "PYTHONPATH": str(BASE_DIR),
            "LOG_LEVEL": "warning",
        }
    )
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@contextlib.contextmanager
def running_process(
    args: list[str],
    *,
    env: Mapping[str, str],
    name: str,
    log: IO[bytes] | None = None,
    stop_timeout: float = 15,
) -> Iterator[subprocess.Popen[bytes]]:
    """Runs ``args`` in the repository for the duration of the block, then stops it: SIGTERM,
    and SIGKILL if it has not exited ``stop_timeout`` s later.

    Its output goes to ``log`` (a temporary file when None), whose tail is printed if the block
    fails, for diagnosis.
    """
    with contextlib.ExitStack() as stack:
        output = log if log is not None else stack.enter_context(tempfile.TemporaryFile())
        process = subprocess.Popen(args, cwd=BASE_DIR, env=dict(env), stdout=output, stderr=subprocess.STDOUT)
        try:
            yield process
        except BaseException:
            output.seek(0)
            sys.stderr.write(f"--- output of {name} ---\n{output.read().decode(errors='replace')[-6000:]}\n")
            raise
        finally:
            process.terminate()
            try:
                process.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


@dataclass(frozen=True)
class MockUpstream:
    """A running mock upstream: it answers ``name`` in ``x-upstream-name`` on 127.0.0.1:``port``."""

    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# What the ``mock_upstream`` fixture gives: call it with a name to start one more.
MockUpstreams = Callable[[str], MockUpstream]


@contextlib.contextmanager
def mock_upstream_process(name: str = "upstream", *, timeout: float = 30) -> Iterator[int]:
    """Runs ``python -m gateway.mock_upstream`` on a free port for the block; yields the port once
    its /health answers. ``name`` is what it answers in ``x-upstream-name``."""
    port = free_port()
    command = python_command("-m", "gateway.mock_upstream", "--port", str(port), "--name", name)
    with running_process(command, env={"PATH": "/usr/bin:/bin"}, name=f"mock upstream {name}"):
        wait_until(
            lambda: http_request(port, "GET", "/health")[0] == 200, timeout=timeout, what=f"mock upstream {name}"
        )
        yield port


@contextlib.contextmanager
def web_server(*, log: IO[bytes] | None = None, **env: str | None) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A real ``manage.py serve`` on a free port, on the tests' database (``env`` as for
    ``child_env``; its output to ``log`` as for ``running_process``); yields (port, process) once
    /health answers 200 or 503."""
    port = free_port()
    command = python_command("manage.py", "serve", "--port", str(port))
    with running_process(command, env=child_env(**env), name="web", log=log) as process:
        wait_until(
            lambda: http_request(port, "GET", "/health")[0] in (200, 503), timeout=30, what="the web process to answer"
        )
        yield port, process


@contextlib.contextmanager
def web_process(**env: str | None) -> Iterator[int]:
    """``web_server``, when only the port matters."""
    with web_server(**env) as (port, _):
        yield port


@contextlib.contextmanager
def celery_worker(
    *, name: str, concurrency: int = 1, beat: bool = False, log: IO[bytes] | None = None, **env: str | None
) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process on the tests' database and the broker ``env`` names (as for
    ``child_env``; its output to the named file ``log``, else a temporary one); yields once it
    reports ready, fails the test if it exits first."""
    command = python_command(
        "-m", "celery", "-A", "sentinel_site", "worker", "--loglevel", "info", "--concurrency", str(concurrency),
        "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
    )  # fmt: skip
    with contextlib.ExitStack() as stack:
        if beat:
            schedule = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="celery-beat-"))) / "schedule"
            command += ["--beat", "--schedule", str(schedule)]
        if log is None:
            log = stack.enter_context(tempfile.NamedTemporaryFile(prefix="celery-", suffix=".log"))
        # A worker finishing its task after SIGTERM may take longer than a web process.
        process = stack.enter_context(
            running_process(command, env=child_env(**env), name=f"celery worker {name}", log=log, stop_timeout=20)
        )
        output = Path(log.name)
        wait_until(
            lambda: b" ready." in output.read_bytes() or process.poll() is not None,
            timeout=60,
            what=f"celery worker {name} to be ready",
        )
        if process.poll() is not None:
            pytest.fail(f"celery worker {name} exited: {output.read_bytes()[-3000:].decode(errors='replace')}")
        yield process
