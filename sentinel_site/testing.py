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
    # Tests point tenant routes and channels at servers on 127.0.0.1; a test of the production
    # egress policy passes EGRESS_ALLOW_LOOPBACK="false" (shared decision 2).
    env.setdefault("EGRESS_ALLOW_LOOPBACK", "true")
    env.update(
        {
            # The site's settings, as before the test run had its own (sentinel_site.test_settings).
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


@contextlib.contextmanager
def mock_upstream_process(name: str = "upstream", *, timeout: float = 30) -> Iterator[int]:
    """Runs `python -m gateway.mock_upstream` on a free port for the block; yields the port once
    its /health answers."""
    port = free_port()
    command = python_command("-m", "gateway.mock_upstream", "--port", str(port), "--name", name)
    with running_process(command, env={"PATH": "/usr/bin:/bin"}, name=f"mock upstream {name}"):
        wait_until(
            lambda: http_request(port, "GET", "/health")[0] == 200, timeout=timeout, what=f"mock upstream {name}"
        )
        yield port


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
def web_server(**env: str | None) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A real `manage.py serve` on a free port, on the tests' database; yields (port, process)."""
    port = free_port()
    command = python_command("manage.py", "serve", "--port", str(port))
    with running_process(command, env=child_env(**env), name="web") as process:
        wait_until(
            lambda: http_request(port, "GET", "/health")[0] in (200, 503), timeout=30, what="the web process to answer"
        )
        yield port, process


@contextlib.contextmanager
def web_process(**env: str | None) -> Iterator[int]:
    """`web_server`, when only the port matters."""
    with web_server(**env) as (port, _):
        yield port


class TcpRelay:
    """A TCP relay on a free local port to `target`, which a test can cut and restore.

    It stands between Sentinel and a real server (Redis) to make that server unreachable and
    then reachable again on the same address, without touching the server other tests use.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        import asyncio
        import threading

        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._server: Any = None
        self._writers: set[Any] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-relay", daemon=True)
        self._thread.start()

    def _run(self, coroutine: Any) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def start(self) -> None:
        import asyncio

        async def open_server() -> None:
            self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)

        self._run(open_server())

    def cut(self) -> None:
        """Stops listening and drops every relayed connection (the peer sees a reset/EOF)."""

        async def close() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        self._run(close())

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _relay(self, client_reader: Any, client_writer: Any) -> None:
        import asyncio

        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, server_writer))

        async def pump(reader: Any, writer: Any) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.transport.abort()

        await asyncio.gather(pump(client_reader, server_writer), pump(server_reader, client_writer))
        self._writers.difference_update((client_writer, server_writer))


@contextlib.contextmanager
def tcp_relay(target_port: int) -> Iterator[TcpRelay]:
    relay = TcpRelay(target_port)
    relay.start()
    try:
        yield relay
    finally:
        relay.close()


@contextlib.contextmanager
def celery_worker(
    *, name: str, concurrency: int = 1, beat: bool = False, **env: str | None
) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process on the tests' database and the broker `env` names; yields
    once it reports ready. Its log is printed if the block fails."""
    command = python_command(
        "-m", "celery", "-A", "sentinel_site", "worker", "--loglevel", "info", "--concurrency", str(concurrency),
        "-n", f"{name}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat",
    )  # fmt: skip
    if beat:
        command += ["--beat", "--schedule", str(Path(tempfile.mkdtemp()) / "beat-schedule")]
    with tempfile.NamedTemporaryFile(prefix="celery-", suffix=".log") as log:
        process = subprocess.Popen(command, cwd=BASE_DIR, env=child_env(**env), stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(
                lambda: b" ready." in Path(log.name).read_bytes() or process.poll() is not None,
                timeout=60,
                what=f"celery worker {name} to be ready",
            )
            if process.poll() is not None:
                pytest.fail(
                    f"celery worker {name} exited: {Path(log.name).read_bytes()[-3000:].decode(errors='replace')}"
                )
            yield process
        except BaseException:
            sys.stderr.write(
                f"--- log of celery worker {name} ---\n{Path(log.name).read_bytes()[-6000:].decode(errors='replace')}\n"
            )
            raise
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
