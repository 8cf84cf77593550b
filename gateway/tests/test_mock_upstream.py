"""The mock upstream, through a real socket and a real aiohttp client; no Django involved.

Each test runs its own server on a free port inside ``asyncio.run``, so nothing depends on a
pytest asyncio plugin or on Django settings.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from gateway.mock_upstream import ECHO_BODY_LIMIT, build_parser, start_upstream
from tests.support.net import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024

Check = Callable[[aiohttp.ClientSession], Awaitable[None]]


def run_against_upstream(check: Check, **kw: Any) -> None:
    """Start a mock upstream on a free port, run ``check`` with a session bound to it, stop it."""

    async def scenario() -> None:
        runner, port = await start_upstream(**kw)
        try:
            async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as session:
                await check(session)
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def expected_pattern(n: int) -> bytes:
    """What /bytes/<n> promises: byte i is i % 256."""
    return (bytes(range(256)) * (n // 256 + 1))[:n]


def test_echo_reports_method_path_query_headers_and_body() -> None:
    async def check(session: aiohttp.ClientSession) -> None:
        # Given a request with a raw query, a repeated header and a UTF-8 body
        # (Same spelling twice: aiohttp's session merges differently-cased repeats into one.)
        headers = CIMultiDict([("X-Repeat", "one"), ("X-Repeat", "two"), ("X-Single", "Value")])
        body = "héllo wörld".encode()

        # When it reaches the mock
        async with session.patch("/some/path?a=1&b=two%20words&a=3", headers=headers, data=body) as resp:
            echo = await resp.json()

        # Then everything comes back as sent
        assert resp.status == 200
        assert echo["method"] == "PATCH"
        assert echo["path"] == "/some/path"
        assert echo["query"] == "a=1&b=two%20words&a=3"
        assert echo["headers"]["x-repeat"] == "one, two"
        assert echo["headers"]["x-single"] == "Value"
        assert echo["body"] == "héllo wörld"
        assert echo["body_bytes"] == len(body)
        assert echo["body_sha256"] == hashlib.sha256(body).hexdigest()

    run_against_upstream(check)


def test_echo_replaces_invalid_utf8_instead_of_failing() -> None:
    async def check(session: aiohttp.ClientSession) -> None:
        async with session.post("/", data=b"ok\xff") as resp:
            echo = await resp.json()
        assert resp.status == 200
        assert echo["body"] == "ok\ufffd"
        assert echo["body_bytes"] == 3

    run_against_upstream(check)


def test_status_answers_the_requested_code_with_the_echo() -> None:
    async def check(session: aiohttp.ClientSession) -> None:
        async with session.post("/status/503", data=b"x") as resp:
            echo = await resp.json()
        assert resp.status == 503
        assert echo["method"] == "POST"
        assert echo["body"] == "x"

        async with session.delete("/status/204") as resp:
            assert resp.status == 204
            assert await resp.read() == b""

    run_against_upstream(check)


@pytest.mark.parametrize("code", ["abc", "99", "100", "600", "-1", "5e2"])
def test_status_rejects_an_invalid_code_with_a_json_400(code: str) -> None:
    async def check(session: aiohttp.ClientSession) -> None:
        async with session.get(f"/status/{code}") as resp:
            body = await resp.json()
        assert resp.status == 400
        assert body["error"]["code"] == "invalid_status"

    run_against_upstream(check)


def test_delay_waits_at_least_the_requested_time() -> None:
    async def check(session: aiohttp.ClientSession) -> None:
        started = time.monotonic()
        async with session.get("/delay/300?q=1") as resp:
            echo = await resp.json()
        elapsed = time.monotonic() - started

        assert resp.status == 200
        assert echo["query"] == "q=1"
        # Only a lower bound: a loaded CI machine may be arbitrarily slower.
        assert elapsed >= 0.3

    run_against_upstream(check)


def test_drop_closes_the_connection_without_a_response() -> None:
    async def check(session: aiohttp.ClientSession) -> None:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get("/drop") as resp:
                await resp.read()

        # The server itself is unharmed.
        async with session.get("/health") as resp:
            assert resp.status == 200

    run_against_upstream(check)


def test_stall_never_answers() -> None:
    async def check(session: aiohttp.ClientSession) -> None:
        with pytest.raises(asyncio.TimeoutError):
            async with session.get("/stall", timeout=aiohttp.ClientTimeout(total=0.2)) as resp:
                await resp.read()

        async with session.get("/health") as resp:
            assert resp.status == 200

    run_against_upstream(check)


def test_bytes_streams_the_pattern_with_a_content_length() -> None:
    n = 5_000_000

    async def check(session: aiohttp.ClientSession) -> None:
        async with session.get(f"/bytes/{n}") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == str(n)
            body = await resp.read()
        assert len(body) == n
        assert body == expected_pattern(n)

    run_against_upstream(check)


def test_bytes_can_stream_chunked() -> None:
    n = 200_003  # not a multiple of the chunk size: the last chunk is partial

    async def check(session: aiohttp.ClientSession) -> None:
        async with session.get(f"/bytes/{n}?chunked=1") as resp:
            assert resp.status == 200
            assert resp.headers["Transfer-Encoding"] == "chunked"
            assert "Content-Length" not in resp.headers
            body = await resp.read()
        assert body == expected_pattern(n)

    run_against_upstream(check)


def test_large_streamed_upload_is_counted_and_hashed_not_echoed() -> None:
    total = 20 * MiB
    digest = hashlib.sha256()

    async def generate() -> AsyncIterator[bytes]:
        # Chunked upload from a generator: neither side ever holds the 20 MB.
        block = os.urandom(64 * 1024)
        for _ in range(total // len(block)):
            digest.update(block)
            yield block

    async def check(session: aiohttp.ClientSession) -> None:
        async with session.put("/upload", data=generate()) as resp:
            echo = await resp.json()
        assert resp.status == 200
        assert echo["body_bytes"] == total
        assert echo["body_sha256"] == digest.hexdigest()
        assert echo["body"] == ""

    run_against_upstream(check)


def test_bodies_up_to_the_echo_limit_are_echoed_in_full() -> None:
    async def check(session: aiohttp.ClientSession) -> None:
        # BytesIO: aiohttp warns that large raw bytes are written in one blocking call.
        async with session.post("/", data=io.BytesIO(b"a" * ECHO_BODY_LIMIT)) as resp:
            at_limit = await resp.json()
        async with session.post("/", data=io.BytesIO(b"a" * (ECHO_BODY_LIMIT + 1))) as resp:
            over_limit = await resp.json()

        assert len(at_limit["body"]) == ECHO_BODY_LIMIT
        assert over_limit["body"] == ""
        assert over_limit["body_bytes"] == ECHO_BODY_LIMIT + 1

    run_against_upstream(check)


def test_every_response_names_its_upstream() -> None:
    async def scenario() -> None:
        # Given two upstreams with different names
        blue, blue_port = await start_upstream(name="blue")
        green, green_port = await start_upstream(name="green")
        try:
            async with aiohttp.ClientSession() as session:
                for port, name in ((blue_port, "blue"), (green_port, "green")):
                    # Then echo, health, errors and streams all carry the name
                    for path in ("/anything", "/health", "/status/abc", "/status/500", "/bytes/10"):
                        async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                            await resp.read()
                            assert resp.headers["x-upstream-name"] == name, path
        finally:
            await blue.cleanup()
            await green.cleanup()

    asyncio.run(scenario())


def test_fail_rate_one_answers_every_echo_with_503() -> None:
    async def check(session: aiohttp.ClientSession) -> None:
        for _ in range(3):
            async with session.get("/x") as resp:
                echo = await resp.json()
                assert resp.status == 503
                assert echo["path"] == "/x"
        # Only echo requests fail; health keeps answering.
        async with session.get("/health") as resp:
            assert resp.status == 200

    run_against_upstream(check, fail_rate=1.0)


@pytest.mark.parametrize("argv", [["--fail-rate", "1.5"], ["--fail-rate", "x"], ["--port", "70000"]])
def test_cli_rejects_invalid_options(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2


def health_status(port: int) -> int | None:
    """/health's status, or None while nothing accepts connections on the port."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def test_cli_serves_until_sigterm_then_exits_zero() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.mock_upstream", "--port", str(port), "--name", "cli"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Given the process answers /health (polled against a deadline, no blind sleep)
        deadline = time.monotonic() + 15
        while health_status(port) != 200:
            assert proc.poll() is None, f"exited early: {proc.communicate()}"
            assert time.monotonic() < deadline, "mock upstream did not answer /health in time"
            time.sleep(0.05)
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())
        assert started["event"] == "upstream.started"
        assert started["port"] == port
        assert started["name"] == "cli"

        # When it receives SIGTERM
        proc.send_signal(signal.SIGTERM)

        # Then it stops cleanly
        assert proc.wait(timeout=15) == 0
        out, err = proc.communicate()
        assert json.loads(out.splitlines()[-1])["event"] == "upstream.stopped"
        assert "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
