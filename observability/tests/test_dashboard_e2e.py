"""The dashboard against real web processes (`manage.py serve`, uvicorn): refused sockets leave no
traceback, and two processes on Redis share one producer that another takes over when it dies."""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import IO, Any

import pytest
import redis
from django.conf import settings
from django.test import Client
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from accounts.models import User
from gateway import services
from tests.support.net import free_port, http_request
from tests.support.processes import MockUpstreams, child_env, python_command, running_process
from tests.support.redis_keys import key_prefix
from tests.support.services import require_redis
from tests.support.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@contextlib.contextmanager
def logged_web_server(log: IO[bytes], **env: str | None) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`tests.support.processes.web_server`, with its output in `log` for the test to read."""
    port = free_port()
    command = python_command("manage.py", "serve", "--port", str(port))
    env.setdefault("LOG_LEVEL", "info")
    with running_process(command, env=child_env(**env), name=f"web :{port}", log=log) as process:
        wait_until(lambda: http_request(port, "GET", "/health")[0] in (200, 503), timeout=30, what="the web process")
        yield port, process


def session_cookie(user: User) -> str:
    """A real session (in the database the servers share) for `user`, as a Cookie header."""
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def dashboard_socket(port: int, cookie: str | None = None, path: str = "/ws/dashboard/") -> ClientConnection:
    headers = {"Origin": f"http://127.0.0.1:{port}", **({"Cookie": cookie} if cookie else {})}
    return connect(f"ws://127.0.0.1:{port}{path}", additional_headers=headers, open_timeout=10)


def refusal_status(port: int, **kwargs: Any) -> int:
    with pytest.raises(InvalidStatus) as refused:
        dashboard_socket(port, **kwargs).close()
    return refused.value.response.status_code


def test_unknown_paths_and_sockets_without_a_session_are_refused_without_a_traceback(staff: User) -> None:
    with tempfile.TemporaryFile() as log:
        with logged_web_server(log) as (port, _):
            unknown = refusal_status(port, cookie=session_cookie(staff), path="/ws/nowhere/")
            anonymous = refusal_status(port)
            # A signed-in socket from a page on another site (Origin not in ALLOWED_HOSTS)
            with pytest.raises(InvalidStatus) as foreign:
                connect(
                    f"ws://127.0.0.1:{port}/ws/dashboard/",
                    additional_headers={"Origin": "http://evil.example", "Cookie": session_cookie(staff)},
                ).close()
            with dashboard_socket(port, session_cookie(staff)) as socket:
                frame = json.loads(socket.recv(timeout=5))
        log.seek(0)
        output = log.read().decode(errors="replace")
    assert (unknown, anonymous, foreign.value.response.status_code) == (404, 403, 403)
    assert frame["scope"] == {"tenant": None}
    assert "Traceback" not in output and '"status": 500' not in output, output[-3000:]


def test_refused_sockets_leave_no_consumer_for_the_shutdown_to_wait_for() -> None:
    # Given a web process on Redis that refused sockets without a session
    env = {"REDIS_URL": require_redis(), "CACHE_KEY_PREFIX": key_prefix("dash-refused")}
    with tempfile.TemporaryFile() as log:
        with logged_web_server(log, **env) as (port, process):
            for _ in range(20):
                assert refusal_status(port) == 403
            # When it is asked to stop
            asked = time.monotonic()
            process.terminate()
            process.wait(timeout=20)
            stopped_in = time.monotonic() - asked
        log.seek(0)
        output = log.read().decode(errors="replace")
    # Then it stops at once: no refused socket's consumer is left running, which uvicorn would wait
    # its 10 s graceful timeout for and then cancel (a channels_redis receive that lost its cancel
    # on Python 3.11 kept its consumer running: core/channel_layer.py)
    assert "graceful shutdown exceeded" not in output, f"a consumer outlived its socket:\n{output[-3000:]}"
    assert stopped_in < 5, output[-3000:]


def latest_frame(socket: ClientConnection, *, timeout: float = 5) -> dict[str, Any]:
    """The next frame, or the newest of those already waiting."""
    frame = json.loads(socket.recv(timeout=timeout))
    with contextlib.suppress(TimeoutError):
        while True:
            frame = json.loads(socket.recv(timeout=0.05))
    return frame


def test_two_web_processes_share_one_producer_that_the_other_takes_over(
    staff: User, mock_upstream: MockUpstreams
) -> None:
    # Given two web processes on Redis, a route to a mock upstream and a staff session
    url = require_redis()
    prefix = key_prefix("dash-e2e")
    env = {"REDIS_URL": url, "CACHE_KEY_PREFIX": prefix, "GATEWAY_FORCED_PRESSURE": "0", "BURST_CAPACITY": "1000"}
    services.route_create(tenant=None, name="d", path_prefix="/d/", targets=[mock_upstream("up").url], auth_mode="none")
    cookie = session_cookie(staff)
    lease = redis.Redis.from_url(url)
    with contextlib.ExitStack() as stack:
        log_a, log_b = (stack.enter_context(tempfile.TemporaryFile()) for _ in range(2))
        port_a, process_a = stack.enter_context(logged_web_server(log_a, **env))
        port_b, process_b = stack.enter_context(logged_web_server(log_b, **env))
        socket_a = stack.enter_context(dashboard_socket(port_a, cookie))
        socket_b = stack.enter_context(dashboard_socket(port_b, cookie))

        # Then both sockets get frames, from one producer: the lease names one of the two
        for socket in (socket_a, socket_b):
            wait_until(lambda s=socket: latest_frame(s)["fleet"]["processes"] == 2, timeout=10, what="2 processes")
        holder = wait_until(lambda: lease.get(f"{prefix}:dash:producer"), timeout=10, what="a producer").decode()
        pids = {process_a.pid: (process_a, socket_b), process_b.pid: (process_b, socket_a)}
        producer_pid = int(holder.split("-")[-2])
        assert producer_pid in pids

        # When requests go through both processes
        statuses = [http_request(port, "GET", "/d/x")[0] for port in (port_a, port_b) for _ in range(40)]
        assert statuses.count(200) + statuses.count(429) == 80

        # Then the snapshot both sockets get counts the requests of both
        def counted(socket: ClientConnection) -> dict[str, Any] | None:
            frame = latest_frame(socket)
            return frame if frame["traffic"]["requests_per_minute"] == 80 else None

        for socket in (socket_a, socket_b):
            frame = wait_until(lambda s=socket: counted(s), timeout=10, what="the fleet's 80 requests")
            assert frame["traffic"]["s429"] == statuses.count(429)
            assert {"route": "/d/", "requests": 80} in frame["top_routes"]

        # When the producer dies without releasing its lease
        producer, survivor = pids[producer_pid]
        producer.kill()
        producer.wait(timeout=10)

        # Then the other process takes the lease over and its socket keeps getting frames, still
        # counting the dead process's requests of the last minute
        new_holder = wait_until(
            lambda: (lease.get(f"{prefix}:dash:producer") or b"").decode() not in ("", holder), timeout=10,
            what="another process to take the lease",
        )  # fmt: skip
        assert new_holder
        after = [latest_frame(survivor, timeout=8) for _ in range(3)]
        assert [frame["at"] for frame in after] == sorted({frame["at"] for frame in after})
        assert after[-1]["traffic"]["requests_per_minute"] == 80
        assert after[-1]["fleet"]["processes"] == 1
        survivor_log = log_a if survivor is socket_a else log_b
        survivor_log.seek(0)
        assert b"Traceback" not in survivor_log.read()
