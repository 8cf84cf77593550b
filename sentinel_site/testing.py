"""Helpers for tests that start real processes and talk to real services.

No blind sleeps: everything waits on a condition with a deadline and says what it waited for.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Polls `predicate` until it returns something truthy; fails the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except Exception as exc:  # noqa: BLE001 - the condition may raise until it holds
            last_error = exc
        else:
            if result:
                return result
        time.sleep(interval)
    detail = f" (last error: {last_error!r})" if last_error else ""
    pytest.fail(f"timed out after {timeout}s waiting for {what}{detail}")


def service_unavailable(reason: str) -> None:
    """Skips a test whose service is missing; in CI (CI=true) fails it instead (SPEC 0)."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def redis_url_for_tests() -> str:
    return os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"


def require_redis() -> str:
    """The Redis URL tests use, after checking the server answers."""
    import redis

    url = redis_url_for_tests()
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as exc:  # noqa: BLE001
        service_unavailable(f"Redis is not reachable at {url}: {exc}")
    return url


def database_url_of(settings_dict: Mapping[str, Any]) -> str:
    """A DATABASE_URL for another process to reach the database the tests use."""
    if settings_dict["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings_dict['NAME']}"
    user = settings_dict.get("USER") or "postgres"
    password = f":{settings_dict['PASSWORD']}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings_dict['NAME']}"


def child_env(**overrides: str | None) -> dict[str, str]:
    """The environment for a Sentinel process started by a test: same database, same secret key.

    An override of None removes the variable.
    """
    from django.conf import settings
    from django.db import connection

    env = dict(os.environ)
    env.update(
        {
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
def running_process(args: list[str], *, env: Mapping[str, str], name: str) -> Iterator[subprocess.Popen[bytes]]:
    """Runs a child process for the duration of the block, then stops it (SIGTERM, then SIGKILL).

    Its output goes to a temporary file that is printed if the block fails, for diagnosis.
    """
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(args, cwd=BASE_DIR, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        except BaseException:
            log.seek(0)
            sys.stderr.write(f"--- output of {name} ---\n{log.read().decode(errors='replace')[-5000:]}\n")
            raise
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def python_command(*args: str) -> list[str]:
    return [sys.executable, *args]


def http_request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | Iterator[bytes] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request to 127.0.0.1:`port`; an iterator body is sent chunked. (status, headers, body)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        chunked = body is not None and not isinstance(body, bytes)
        conn.request(method, path, body=body, headers=dict(headers or {}), encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def web_process(**env: str | None) -> Iterator[int]:
    """A real `manage.py serve` on a free port, on the tests' database; yields the port."""
    port = free_port()
    command = python_command("manage.py", "serve", "--port", str(port))
    with running_process(command, env=child_env(**env), name="web"):
        wait_until(
            lambda: http_request(port, "GET", "/health")[0] in (200, 503), timeout=30, what="the web process to answer"
        )
        yield port
