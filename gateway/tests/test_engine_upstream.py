"""The lean upstream client (``gateway.engine.upstream``) on its own, against real upstreams.

Every upstream here is a raw asyncio TCP server on 127.0.0.1 in the test's own event loop (uvloop,
as in production), answering with bytes the test writes: a client library would hide exactly what
is under test (framing, reuse, the stale keep-alive race). The last tests drive
``Forwarder.forward`` with a minimal ASGI scope to check the error mapping. No Django.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop

from core.egress import EgressDenied, EgressPolicy
from gateway.engine.forwarder import Forwarder, _plain_target
from gateway.engine.rewrites import count_controls
from gateway.engine.upstream import (
    ConnectError,
    MalformedResponse,
    UpstreamClosed,
    UpstreamConnection,
    UpstreamPool,
    request_head,
)
from gateway.engine.upstream_connection import HIGH_WATER, MAX_RESPONSE_HEADERS

MiB = 1024 * 1024
BLOCK = bytes(range(256)) * 256  # 64 KiB


def run(scenario: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return uvloop.run(scenario())


async def eventually(predicate: Callable[[], Any], *, timeout: float = 10, what: str) -> None:
    """Waits for a condition with a deadline (the event loop keeps running meanwhile)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


# --- A scripted upstream --------------------------------------------------------------------------


@dataclass
class Request:
    """One request as the upstream received it: the head's exact bytes and the de-chunked body."""

    connection: int  # which connection (0 = the first accepted)
    number: int  # its place on that connection (0 = first)
    head: bytes
    body: bytes
    chunked: bool

    @property
    def start_line(self) -> bytes:
        return self.head.split(b"\r\n", 1)[0]

    @property
    def header_lines(self) -> list[bytes]:
        return self.head.split(b"\r\n")[1:]


Answer = Callable[[Request, asyncio.StreamWriter], Awaitable[None]]


def reply(status_line: bytes, headers: list[bytes], body: bytes = b"", *, length: bool = True) -> bytes:
    lines = [status_line, *headers]
    if length:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


OK = reply(b"HTTP/1.1 200 OK", [b"Content-Type: text/plain"], b"ok")


@dataclass
class Upstream:
    """A TCP server answering each request with ``answer(request, writer)``; it records requests,
    connections accepted and connections the client closed."""

    answer: Answer
    port: int = 0
    connections: int = 0
    closed_by_client: int = 0
    requests: list[Request] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.connections
        self.connections += 1
        self.writers.append(writer)
        number = 0
        try:
            while True:
                request = await _read_request(reader, index, number)
                if request is None:
                    self.closed_by_client += 1
                    return
                self.requests.append(request)
                await self.answer(request, writer)
                if writer.is_closing():
                    return
                number += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            self.closed_by_client += 1
        finally:
            writer.transport.abort()


async def _read_request(reader: asyncio.StreamReader, connection: int, number: int) -> Request | None:
    try:
        head = (await reader.readuntil(b"\r\n\r\n"))[:-4]
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    lower = head.lower()
    chunked = b"transfer-encoding: chunked" in lower
    body = b""
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                await reader.readexactly(2)
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
    elif b"\r\ncontent-length: " in lower:
        length = int(lower.split(b"\r\ncontent-length: ", 1)[1].split(b"\r\n", 1)[0])
        body = await reader.readexactly(length)
    return Request(connection, number, head, body, chunked)


def fixed(*answers: bytes) -> Answer:
    """Answers the n-th request with answers[n] (the last one for any later request)."""
    count = 0

    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        writer.write(answers[min(count, len(answers) - 1)])
        count += 1
        await writer.drain()

    return answer


@contextlib.asynccontextmanager
async def upstream(answer: Answer) -> AsyncIterator[Upstream]:
    server = Upstream(answer)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def pool(**options: Any) -> AsyncIterator[UpstreamPool]:
    client = UpstreamPool(**options)
    try:
        yield client
    finally:
        await client.close()


async def send(
    client: UpstreamPool,
    port: int,
    method: bytes = b"GET",
    target: bytes = b"/",
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes | None = None,
    more: Callable[[], Awaitable[bytes | None]] | None = None,
    chunked: bool = False,
    timeout: float = 5.0,
    host: str = "127.0.0.1",
    guarded: bool = False,
) -> UpstreamConnection:
    """One exchange; returns the connection with the response head read."""
    fields = list(headers or [])
    framing = b"transfer-encoding: chunked\r\n" if chunked else b""
    if body is not None and not chunked:
        fields.append((b"content-length", b"%d" % len(body)))
    head = request_head(method, target, b"upstream.test", fields, framing)
    deadline = asyncio.get_running_loop().time() + timeout
    return await client.exchange(
        host=host,
        port=port,
        guarded=guarded,
        method=method,
        head=head,
        body=body,
        more=more,
        chunked=chunked,
        deadline=deadline,
    )


async def read_all(client: UpstreamPool, conn: UpstreamConnection, timeout: float = 5.0) -> bytes:
    """The whole response body; the connection goes back to the pool."""
    data = b""
    try:
        while True:
            data += await conn.read(timeout)
            if conn.complete:
                return data
    finally:
        client.release(conn)


async def get(client: UpstreamPool, port: int, method: bytes = b"GET", target: bytes = b"/") -> tuple[int, bytes]:
    conn = await send(client, port, method, target)
    return conn.status, await read_all(client, conn)


# --- Request heads --------------------------------------------------------------------------------


def test_the_head_is_written_from_the_octets_given() -> None:
    head = request_head(
        b"PATCH", b"/a%2Fb?x=caf%E9", b"up:81", [(b"x-bin", b"caf\xe9\x80\xff"), (b"X-A", b"1")], b"framing: 1\r\n"
    )

    assert (
        head
        == b"PATCH /a%2Fb?x=caf%E9 HTTP/1.1\r\nhost: up:81\r\nx-bin: caf\xe9\x80\xff\r\nX-A: 1\r\nframing: 1\r\n\r\n"
    )


CONTROL_OCTETS = [bytes([octet]) for octet in (*range(0x09), *range(0x0A, 0x20), 0x7F)]


@pytest.mark.parametrize("value", [b"a\r\nx-injected: 1", b"a\nb", *(b"a" + octet + b"b" for octet in CONTROL_OCTETS)])
def test_a_control_character_in_a_header_is_refused(value: bytes) -> None:
    with pytest.raises(ValueError, match="control character"):
        request_head(b"GET", b"/", b"up", [(b"x-v", value)])


@pytest.mark.parametrize("octet", CONTROL_OCTETS)
def test_a_control_character_in_the_target_or_a_name_is_refused(octet: bytes) -> None:
    with pytest.raises(ValueError, match="control character"):
        request_head(b"GET", b"/a" + octet, b"up", [])
    with pytest.raises(ValueError, match="control character"):
        request_head(b"GET", b"/", b"up", [(b"x" + octet, b"1")])


def test_count_controls_counts_every_control_but_htab_and_nothing_else() -> None:
    every_octet = bytes(range(256))

    assert count_controls(every_octet) == len(CONTROL_OCTETS) == 32
    assert count_controls(b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))) == 0


def test_every_octet_of_header_values_reaches_the_upstream_and_comes_back() -> None:
    high = bytes(range(0x80, 0x100))

    async def scenario() -> tuple[Request, list[tuple[bytes, bytes]]]:
        answer = reply(b"HTTP/1.1 200 OK", [b"X-High: " + high, b"Set-Cookie: a=1", b"Set-Cookie: b=\xe9"], b"ok")
        async with upstream(fixed(answer)) as server, pool() as client:
            conn = await send(client, server.port, headers=[(b"x-high", high), (b"X-Case", b"MiXeD")])
            headers = conn.headers
            await read_all(client, conn)
            return server.requests[0], headers

    request, headers = run(scenario)

    assert request.start_line == b"GET / HTTP/1.1"
    assert request.header_lines == [b"host: upstream.test", b"x-high: " + high, b"X-Case: MiXeD"]
    assert headers == [
        (b"X-High", high),
        (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=\xe9"),
        (b"Content-Length", b"2"),
    ]


# --- Response framing -----------------------------------------------------------------------------


def test_content_length_chunked_and_close_delimited_bodies() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    until_close = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nthe rest until close"

    async def scenario() -> tuple[list[tuple[int, bytes]], int]:
        async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
            if request.start_line.startswith(b"GET /length"):
                writer.write(reply(b"HTTP/1.1 200 OK", [], BLOCK))
            elif request.start_line.startswith(b"GET /chunked"):
                writer.write(chunked)
            else:
                writer.write(until_close)
                writer.close()

        async with upstream(answer) as server, pool() as client:
            answers = [
                await get(client, server.port, target=b"/length"),
                await get(client, server.port, target=b"/chunked"),
                await get(client, server.port, target=b"/close"),
                await get(client, server.port, target=b"/length"),
            ]
            return answers, server.connections

    answers, connections = run(scenario)

    assert answers == [(200, BLOCK), (200, b"hello world"), (200, b"the rest until close"), (200, BLOCK)]
    # The first three shared one connection; the close-delimited body ended it.
    assert connections == 2


def test_a_response_to_head_ends_at_its_head_and_the_connection_is_reused() -> None:
    heads = [
        reply(b"HTTP/1.1 200 OK", [b"Content-Length: 1000"], length=False),
        reply(b"HTTP/1.1 200 OK", [b"Transfer-Encoding: chunked"], length=False),
        reply(b"HTTP/1.1 200 OK", [b"Content-Type: text/plain"], length=False),  # no length at all
    ]

    async def scenario() -> tuple[list[tuple[int, bytes, list[tuple[bytes, bytes]]]], tuple[int, bytes], int]:
        async with upstream(fixed(*heads, OK)) as server, pool() as client:
            answers = []
            for _ in heads:
                conn = await send(client, server.port, b"HEAD")
                answers.append((conn.status, await read_all(client, conn), conn.headers))
            after = await get(client, server.port)
            return answers, after, server.connections

    answers, after, connections = run(scenario)

    assert [(status, body) for status, body, _ in answers] == [(200, b"")] * 3
    assert answers[0][2] == [(b"Content-Length", b"1000")]  # the length is the GET's, passed on
    assert after == (200, b"ok")  # not confused by a parser still waiting for 1000 bytes
    assert connections == 1


@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body_whatever_their_headers_say(status: int) -> None:
    # A Content-Length on a 304 is the representation's; a 204 with one is wrong but seen.
    bodyless = b'HTTP/1.1 %d X\r\nContent-Length: 5\r\nETag: "x"\r\n\r\n' % status

    async def scenario() -> tuple[tuple[int, bytes], tuple[int, bytes], int]:
        async with upstream(fixed(bodyless, OK)) as server, pool() as client:
            first = await get(client, server.port)
            second = await get(client, server.port)
            return first, second, server.connections

    first, second, connections = run(scenario)

    assert first == (status, b"")
    assert second == (200, b"ok")
    assert connections == 1


def test_body_bytes_after_a_response_to_head_close_the_connection() -> None:
    # The upstream wrongly sends a body after its answer to HEAD: that connection is not trusted again.
    wrong = reply(b"HTTP/1.1 200 OK", [], b"12345")

    async def scenario() -> tuple[tuple[int, bytes], tuple[int, bytes], int]:
        async with upstream(fixed(wrong, OK)) as server, pool() as client:
            first = await get(client, server.port, b"HEAD")
            second = await get(client, server.port)
            return first, second, server.connections

    first, second, connections = run(scenario)

    assert first == (200, b"")
    assert second == (200, b"ok")
    assert connections == 2


def test_interim_1xx_responses_are_skipped() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
    final = reply(b"HTTP/1.1 201 Created", [b"X-Final: 1"], b"made")

    async def scenario() -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
            writer.write(interim)
            await writer.drain()
            writer.write(final)  # in a second write: the parser sees the 1xx alone first

        async with upstream(answer) as server, pool() as client:
            conn = await send(client, server.port, b"POST", body=b"x")
            return conn.status, conn.headers, await read_all(client, conn)

    status, headers, body = run(scenario)

    assert status == 201
    assert headers == [(b"X-Final", b"1"), (b"Content-Length", b"4")]  # none of the 103's
    assert body == b"made"


def test_an_unrequested_101_is_a_malformed_response() -> None:
    switch = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"

    async def scenario() -> None:
        async with upstream(fixed(switch)) as server, pool() as client:
            with pytest.raises(MalformedResponse):
                await send(client, server.port)

    run(scenario)


@pytest.mark.parametrize(
    "garbage",
    [b"SMTP ready\r\n\r\n", b"HTTP/1.1 2OO OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"],
    ids=["not-http", "bad-status", "bad-length"],
)
def test_a_malformed_response_fails_the_exchange(garbage: bytes) -> None:
    async def scenario() -> None:
        async with upstream(fixed(garbage)) as server, pool() as client:
            with pytest.raises(MalformedResponse):
                await send(client, server.port)
            assert client.in_use() == 0

    run(scenario)


# --- Reuse -------------------------------------------------------------------------------------------


def test_sequential_requests_share_one_connection() -> None:
    async def scenario() -> tuple[list[tuple[int, bytes]], list[tuple[int, int]], int]:
        async with upstream(fixed(OK)) as server, pool() as client:
            answers = [await get(client, server.port) for _ in range(5)]
            assert client.in_use() == 0 and client.idle() == 1
            return answers, [(r.connection, r.number) for r in server.requests], server.connections

    answers, places, connections = run(scenario)

    assert answers == [(200, b"ok")] * 5
    assert places == [(0, n) for n in range(5)]
    assert connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        reply(b"HTTP/1.1 200 OK", [b"Connection: close"], b"ok"),
        reply(b"HTTP/1.0 200 OK", [], b"ok"),
        reply(b"HTTP/1.1 200 OK", [], b"ok") + b"HTTP/1.1 200 OK\r\n",  # bytes after the response
    ],
    ids=["connection-close", "http-1.0", "trailing-bytes"],
)
def test_a_connection_is_not_reused_when_the_response_says_so(answer: bytes) -> None:
    async def scenario() -> tuple[list[tuple[int, bytes]], int]:
        async with upstream(fixed(answer)) as server, pool() as client:
            answers = [await get(client, server.port) for _ in range(2)]
            return answers, server.connections

    answers, connections = run(scenario)

    assert answers == [(200, b"ok")] * 2
    assert connections == 2


def test_http_1_0_with_keep_alive_is_reused() -> None:
    answer = reply(b"HTTP/1.0 200 OK", [b"Connection: keep-alive"], b"ok")

    async def scenario() -> int:
        async with upstream(fixed(answer)) as server, pool() as client:
            for _ in range(3):
                assert await get(client, server.port) == (200, b"ok")
            return server.connections

    assert run(scenario) == 1


def test_a_response_not_read_to_its_end_closes_the_connection() -> None:
    async def scenario() -> tuple[int, int, tuple[int, bytes]]:
        big = reply(b"HTTP/1.1 200 OK", [], BLOCK * 32)
        async with upstream(fixed(big, OK)) as server, pool() as client:
            conn = await send(client, server.port)
            await conn.read(5)  # some of it
            client.release(conn)  # before the end
            await eventually(lambda: server.closed_by_client == 1, what="the upstream to see the close")
            after = await get(client, server.port)
            return server.connections, client.idle(), after

    connections, idle, after = run(scenario)

    assert connections == 2
    assert idle == 1
    assert after == (200, b"ok")


def test_idle_connections_are_closed_after_the_keepalive_timeout() -> None:
    async def scenario() -> tuple[int, int]:
        async with upstream(fixed(OK)) as server, pool(keepalive_timeout=0.2) as client:
            await get(client, server.port)
            await eventually(lambda: server.closed_by_client == 1, what="the pool to close the idle connection")
            idle_after_sweep = client.idle()
            await get(client, server.port)
            return idle_after_sweep, server.connections

    idle, connections = run(scenario)

    assert idle == 0
    assert connections == 2


def test_a_connection_the_upstream_closed_while_idle_is_not_used() -> None:
    async def scenario() -> tuple[tuple[int, bytes], int, int]:
        async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
            writer.write(OK)
            await writer.drain()
            writer.close()  # an upstream with a very short idle timeout, and no Connection: close

        async with upstream(answer) as server, pool() as client:
            await get(client, server.port)
            await eventually(lambda: client.idle() == 1, what="the connection to be pooled")
            await eventually(lambda: not client._hosts[("127.0.0.1", server.port, False)].idle[0].usable(), what="EOF")
            after = await get(client, server.port)
            return after, server.connections, len(server.requests)

    after, connections, requests = run(scenario)

    assert after == (200, b"ok")
    assert (connections, requests) == (2, 2)  # no request was lost on the closed connection


def stale_on_reuse() -> Answer:
    """Answers the first request of each connection, then closes the connection when the next
    one arrives: what a client sees when the upstream closed an idle connection as the request
    was on its way (the stale keep-alive race), made deterministic."""

    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        if request.number == 0:
            writer.write(OK)
            await writer.drain()
        else:
            writer.transport.abort()

    return answer


@pytest.mark.parametrize("method", [b"GET", b"PUT", b"DELETE", b"HEAD"])
def test_an_idempotent_request_on_a_stale_connection_is_sent_again_on_a_new_one(method: bytes) -> None:
    async def scenario() -> tuple[int, list[tuple[int, int, bytes]]]:
        async with upstream(stale_on_reuse()) as server, pool() as client:
            await get(client, server.port)
            conn = await send(client, server.port, method, body=b"same" if method == b"PUT" else None)
            await read_all(client, conn)
            return conn.status, [(r.connection, r.number, r.body) for r in server.requests]

    status, seen = run(scenario)

    assert status == 200
    body = b"same" if method == b"PUT" else b""
    assert seen == [(0, 0, b""), (0, 1, body), (1, 0, body)]


def test_a_post_on_a_stale_connection_is_not_sent_twice() -> None:
    async def scenario() -> list[tuple[int, int]]:
        async with upstream(stale_on_reuse()) as server, pool() as client:
            await get(client, server.port)
            with pytest.raises(UpstreamClosed):
                await send(client, server.port, b"POST", body=b"pay once")
            return [(r.connection, r.number) for r in server.requests]

    assert run(scenario) == [(0, 0), (0, 1)]


def test_a_streamed_body_is_not_sent_twice() -> None:
    async def scenario() -> list[tuple[int, int]]:
        parts = [b"b", None]

        async def more() -> bytes | None:
            return parts.pop(0)

        async with upstream(stale_on_reuse()) as server, pool() as client:
            await get(client, server.port)
            with pytest.raises(UpstreamClosed):
                await send(client, server.port, b"PUT", body=b"a", more=more, chunked=True)
            return [(r.connection, r.number) for r in server.requests]

    assert run(scenario) == [(0, 0), (0, 1)]


def test_a_failure_on_a_new_connection_is_not_retried() -> None:
    async def scenario() -> int:
        async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
            writer.transport.abort()

        async with upstream(answer) as server, pool() as client:
            with pytest.raises(UpstreamClosed):
                await send(client, server.port)
            return len(server.requests)

    assert run(scenario) == 1


def test_bytes_from_an_idle_connection_close_it() -> None:
    async def scenario() -> tuple[int, int]:
        async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
            writer.write(OK)
            await writer.drain()
            if request.number == 0:
                writer.write(b"HTTP/1.1 200 OK\r\n")  # unasked, while the connection is idle

        async with upstream(answer) as server, pool() as client:
            await get(client, server.port)
            await eventually(lambda: server.closed_by_client == 1, what="the pool to drop the connection")
            await get(client, server.port)
            return server.connections, len(server.requests)

    assert run(scenario) == (2, 2)


def test_past_the_per_host_limit_a_request_waits_for_a_free_connection() -> None:
    async def scenario() -> tuple[list[tuple[int, bytes]], int]:
        async with upstream(fixed(OK)) as server, pool(limit_per_host=1) as client:
            first = await send(client, server.port)
            waiting = asyncio.ensure_future(get(client, server.port))
            await asyncio.sleep(0)  # let it reach the wait
            assert not waiting.done()
            answers = [(first.status, await read_all(client, first)), await waiting]
            return answers, server.connections

    answers, connections = run(scenario)

    assert answers == [(200, b"ok")] * 2
    assert connections == 1  # the second request took the connection the first gave back


def test_waiting_for_a_free_connection_ends_at_the_deadline() -> None:
    async def scenario() -> None:
        async with upstream(fixed(OK)) as server, pool(limit=1) as client:
            first = await send(client, server.port)
            with pytest.raises(TimeoutError):
                await send(client, server.port, timeout=0.1)
            await read_all(client, first)
            assert client.in_use() == 0

    run(scenario)


# --- Bodies and back-pressure ---------------------------------------------------------------------


def test_a_chunked_upload_skips_empty_pieces_and_ends_with_the_last_chunk() -> None:
    async def scenario() -> Request:
        parts: list[bytes | None] = [b"", b"two", b"", b"three", None]

        async def more() -> bytes | None:
            return parts.pop(0)

        async with upstream(fixed(OK)) as server, pool() as client:
            conn = await send(client, server.port, b"POST", body=b"one", more=more, chunked=True)
            await read_all(client, conn)
            return server.requests[0]

    request = run(scenario)

    assert request.chunked
    assert request.body == b"onetwothree"
    assert b"transfer-encoding: chunked" in request.header_lines


def test_an_upload_waits_for_an_upstream_that_does_not_read() -> None:
    size = 64 * MiB
    state: dict[str, Any] = {"produced": 0, "at_pause": 0}

    async def scenario() -> tuple[int, str]:
        release = asyncio.Event()

        async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
            writer.write(reply(b"HTTP/1.1 200 OK", [], hashlib.sha256(request.body).hexdigest().encode()))

        server = Upstream(answer)
        server.start = _paused_reader_start(server, release)  # type: ignore[method-assign]
        await server.start()
        conn_seen: list[UpstreamConnection] = []

        async def more() -> bytes | None:
            if state["produced"] >= size:
                return None
            state["produced"] += len(BLOCK)
            return BLOCK

        try:
            async with pool() as client:
                sending = asyncio.ensure_future(send(client, server.port, b"PUT", more=more, chunked=True, timeout=60))

                def blocked() -> bool:
                    busy = list(client._busy)
                    conn_seen[:] = busy
                    return bool(busy) and busy[0].writing_paused

                # `more` never suspends: a client that did not wait for the socket would have
                # pulled all 64 MiB before this first looks.
                await eventually(blocked, what="the socket to push back")
                state["at_pause"] = state["produced"]
                release.set()
                conn = await sending
                digest = await read_all(client, conn, timeout=60)
                return state["at_pause"], digest.decode()
        finally:
            await server.stop()

    at_pause, digest = run(scenario)

    expected = hashlib.sha256(BLOCK * (size // len(BLOCK))).hexdigest()
    assert digest == expected
    # Pulled when the pushing back began: the socket buffers' worth, far from the 64 MiB.
    assert at_pause < 16 * MiB, at_pause


def _paused_reader_start(server: Upstream, release: asyncio.Event) -> Callable[[], Awaitable[None]]:
    """A start() whose connections read nothing until ``release`` is set."""

    async def start() -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.transport.pause_reading()  # type: ignore[attr-defined]
            await release.wait()
            writer.transport.resume_reading()  # type: ignore[attr-defined]
            await Upstream._serve(server, reader, writer)

        server.server = await asyncio.start_server(serve, "127.0.0.1", 0, limit=4 * MiB)
        server.port = server.server.sockets[0].getsockname()[1]

    return start


def test_a_download_to_a_slow_reader_is_held_in_a_bounded_buffer() -> None:
    size = 64 * MiB

    async def scenario() -> tuple[int, bool, int, str]:
        server_writers: list[asyncio.StreamWriter] = []

        async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
            server_writers.append(writer)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            for _ in range(size // len(BLOCK)):
                writer.write(BLOCK)
                await writer.drain()

        async with upstream(answer) as server, pool() as client:
            conn = await send(client, server.port)
            # Nobody reads: the client stops reading, and the upstream ends up unable to write.
            await eventually(lambda: conn.reading_paused, what="the client to stop reading")
            await eventually(
                lambda: server_writers[0].transport.get_write_buffer_size() > 64 * 1024,
                what="the upstream to be pushed back",
            )
            held, paused = conn.buffered, conn.reading_paused
            digest, received, peak = hashlib.sha256(), 0, 0
            while not conn.complete:
                peak = max(peak, conn.buffered)
                chunk = await conn.read(10)
                digest.update(chunk)
                received += len(chunk)
            client.release(conn)
            return held, paused, max(peak, held), digest.hexdigest() if received == size else "short"

    held, paused, peak, digest = run(scenario)

    assert paused
    # One socket read (256 KiB at most) past the high-water mark at worst.
    assert HIGH_WATER <= held <= HIGH_WATER + 256 * 1024, held
    assert peak <= HIGH_WATER + 256 * 1024
    assert digest == hashlib.sha256(BLOCK * (size // len(BLOCK))).hexdigest()


# --- Timeouts and failures --------------------------------------------------------------------------


def test_no_response_head_by_the_deadline_is_a_timeout() -> None:
    async def scenario() -> tuple[float, int]:
        async def silent(request: Request, writer: asyncio.StreamWriter) -> None:
            return None  # never answers; the server reads on, and sees the client close

        async with upstream(silent) as server, pool() as client:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await send(client, server.port, timeout=0.2)
            waited = time.monotonic() - started
            await eventually(lambda: server.closed_by_client == 1, what="the connection to be closed")
            return waited, client.in_use()

    waited, in_use = run(scenario)

    assert waited >= 0.19  # it waited for the deadline (timers have millisecond resolution)
    assert in_use == 0


def test_silence_mid_body_is_a_timeout() -> None:
    async def scenario() -> bytes:
        async def trickle(request: Request, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst")
            await writer.drain()
            await asyncio.Event().wait()

        async with upstream(trickle) as server, pool() as client:
            conn = await send(client, server.port)
            first = await conn.read(0.2)
            with pytest.raises(TimeoutError):
                await conn.read(0.2)
            client.release(conn)
            return first

    assert run(scenario) == b"first"


@pytest.mark.parametrize(
    "sent", [b"HTTP/1.1 200 OK\r\nContent-Le", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf"]
)
def test_a_reset_mid_head_or_mid_body_is_upstream_closed(sent: bytes) -> None:
    async def scenario() -> tuple[str, int]:
        async def reset(request: Request, writer: asyncio.StreamWriter) -> None:
            if request.number == 0:
                writer.write(OK)
                return
            writer.write(sent)
            await writer.drain()
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # with SO_LINGER 0: a reset, not a FIN

        async with upstream(reset) as server, pool() as client:
            await get(client, server.port)
            try:
                conn = await send(client, server.port)  # a GET, on the reused connection
            except UpstreamClosed:
                return "before the head", len(server.requests)
            with pytest.raises(UpstreamClosed):
                while not conn.complete:
                    await conn.read(5)
            client.release(conn)
            return "mid-body", len(server.requests)

    where, requests = run(scenario)

    assert where == ("before the head" if b"\r\n\r\n" not in sent else "mid-body")
    # Part of a response came: it was no stale connection, and the GET is not sent again.
    assert requests == 2


def test_a_refused_connection_is_a_connect_error() -> None:
    async def scenario() -> None:
        with socket.socket() as bound:  # bound, never listening: connecting is refused
            bound.bind(("127.0.0.1", 0))
            async with pool() as client:
                with pytest.raises(ConnectError, match=r"Cannot connect to host 127\.0\.0\.1"):
                    await send(client, bound.getsockname()[1])
                assert client.in_use() == 0

    run(scenario)


def test_a_name_that_does_not_resolve_is_a_connect_error() -> None:
    async def scenario() -> None:
        async with pool() as client:
            with pytest.raises(ConnectError):
                await send(client, 80, host="no-such-host.invalid")

    run(scenario)


def test_a_black_holed_address_does_not_hold_up_the_next_one() -> None:
    # A listener whose accept queue is full drops SYNs: connecting to it hangs, as to an address
    # black-holed on the way (a broken IPv6 route, say). The name resolves to it first.
    async def scenario() -> tuple[int, bytes, int]:
        async with upstream(fixed(OK)) as server, pool() as client:
            with socket.socket() as hole, socket.socket() as filler:
                hole.bind(("127.0.0.2", server.port))
                hole.listen(0)
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.2", server.port))  # takes the one place in the queue
                infos = [
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", server.port)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", server.port)),
                ]
                client._dns[("dual.test", server.port)] = (float("inf"), infos)
                # Tried one after the other, the first address would take the whole 5 s.
                conn = await send(client, server.port, host="dual.test", timeout=5)
                return conn.status, await read_all(client, conn), server.connections

    assert run(scenario) == (200, b"ok", 1)


# --- Egress -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::ffff:127.0.0.1"])
def test_a_guarded_request_to_a_refused_address_never_connects(host: str) -> None:
    async def scenario() -> tuple[EgressDenied, int, tuple[int, bytes]]:
        async with upstream(fixed(OK)) as server, pool(egress=EgressPolicy()) as client:
            with pytest.raises(EgressDenied) as denied:
                await send(client, server.port, host=host, guarded=True)
            unguarded = await get(client, server.port)  # a platform route to the same address
            return denied.value, server.connections, unguarded

    denied, connections, unguarded = run(scenario)

    assert denied.rule.startswith("loopback")
    assert denied.target.rsplit(":", 1)[0] == host  # named as GuardedConnector names it: host:port
    assert connections == 1  # the unguarded request's only
    assert unguarded == (200, b"ok")


def test_an_allowed_guarded_request_goes_through_on_a_pool_of_its_own() -> None:
    async def scenario() -> int:
        async with upstream(fixed(OK)) as server, pool(egress=EgressPolicy(allow_loopback=True)) as client:
            for guarded in (True, False, True, False):
                conn = await send(client, server.port, guarded=guarded)
                await read_all(client, conn)
            return server.connections

    assert run(scenario) == 2  # a guarded and a plain connection, each reused


# --- Through the forwarder: the error mapping ---------------------------------------------------------


async def forward(target: str, path: str = "/", *, method: str = "GET", body: bytes = b"") -> tuple[Any, list[Any]]:
    """Forward one request in-process; returns (ForwardResult, the ASGI messages sent)."""
    sent: list[dict[str, Any]] = []
    delivered = False
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()
        return {"type": "http.disconnect"}

    async def send_message(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"host", b"gw.test")]
    if body:
        headers.append((b"content-length", b"%d" % len(body)))
    scope = {"type": "http", "method": method, "scheme": "http", "headers": headers, "query_string": b""}
    forwarder = Forwarder()
    try:
        result = await forwarder.forward(
            scope=scope,
            receive=receive,
            send=send_message,
            target=target,
            upstream_path=path,
            timeout_ms=300,
            max_body_bytes=1000,
            client_ip="127.0.0.1",
        )
        assert forwarder.connections_in_use() == 0
    finally:
        await forwarder.close()
    return result, sent


@pytest.mark.parametrize(
    ("answer", "status", "outcome"),
    [
        (b"HTTP/1.1 2OO OK\r\n\r\n", 502, "connect_error"),
        (b"", 502, "connect_error"),  # closed without a byte
        (reply(b"HTTP/1.1 503 Busy", [], b"busy"), 503, "upstream_5xx"),
        (reply(b"HTTP/1.1 200 OK", [], b"fine"), 200, "ok"),
    ],
    ids=["malformed", "closed", "5xx", "ok"],
)
def test_the_forwarder_maps_the_lean_clients_outcomes(answer: bytes, status: int, outcome: str) -> None:
    async def scenario() -> tuple[Any, list[Any]]:
        async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
            if not answer:
                writer.transport.abort()
                return
            writer.write(answer)
            await writer.drain()

        async with upstream(respond) as server:
            return await forward(f"http://127.0.0.1:{server.port}")

    result, sent = run(scenario)

    assert (result.status, result.outcome) == (status, outcome)
    assert sent[0]["status"] == status
    assert sent[-1]["more_body"] is False


@pytest.mark.parametrize("status", [600, 799, 999])
@pytest.mark.parametrize("client", ["lean", "aiohttp"])
def test_a_status_outside_100_599_is_a_bad_gateway_from_either_client(status: int, client: str) -> None:
    # RFC 9110 15: such a status is invalid; llhttp (both clients' parser) takes any three digits.
    async def scenario() -> tuple[Any, list[Any]]:
        async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
            writer.write(reply(b"HTTP/1.1 %d Out Of Range" % status, [], b"x"))
            await writer.drain()

        async with upstream(respond) as server:
            userinfo = "u@" if client == "aiohttp" else ""  # a target the lean client leaves to aiohttp
            target = f"http://{userinfo}127.0.0.1:{server.port}"
            assert (_plain_target(target) is None) == (client == "aiohttp")
            return await forward(target)

    result, sent = run(scenario)

    assert (result.status, result.outcome) == (502, "connect_error")
    assert f"status {status} is outside 100-599" in (result.error or "")
    assert sent[0]["status"] == 502


def test_a_status_over_599_is_a_malformed_response() -> None:
    async def scenario() -> None:
        async with upstream(fixed(reply(b"HTTP/1.1 600 Odd", [], b"x"))) as server, pool() as client:
            with pytest.raises(MalformedResponse, match="status 600 is outside 100-599"):
                await send(client, server.port)
            assert client.in_use() == 0

    run(scenario)


def test_the_forwarder_maps_a_silent_upstream_to_a_504_and_a_cut_body_to_upstream_aborted() -> None:
    async def scenario() -> tuple[Any, Any, list[Any]]:
        async def respond(request: Request, writer: asyncio.StreamWriter) -> None:
            if request.start_line.startswith(b"GET /silent"):
                await asyncio.Event().wait()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
            await writer.drain()
            writer.transport.abort()

        async with upstream(respond) as server:
            silent, _ = await forward(f"http://127.0.0.1:{server.port}", "/silent")
            cut, sent = await forward(f"http://127.0.0.1:{server.port}", "/cut")
            return silent, cut, sent

    silent, cut, sent = run(scenario)

    assert (silent.status, silent.outcome) == (504, "timeout")
    assert (cut.status, cut.outcome, cut.bytes_out) == (200, "upstream_aborted", 4)
    # The response was left unfinished: no final body message.
    assert all(message.get("more_body", True) for message in sent[1:])


def test_the_forwarder_writes_the_target_path_query_and_host_as_given() -> None:
    async def scenario() -> Request:
        async with upstream(fixed(OK)) as server:
            sent: list[Any] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send_message(message: dict[str, Any]) -> None:
                sent.append(message)

            forwarder = Forwarder()
            scope = {
                "type": "http",
                "method": "DELETE",
                "scheme": "https",
                "headers": [(b"host", b"gw.test"), (b"x-bin", b"\xe9"), (b"connection", b"x-drop"), (b"x-drop", b"1")],
                "query_string": b"a=%2F&b=caf%E9",
            }
            await forwarder.forward(
                scope=scope,
                receive=receive,
                send=send_message,
                target=f"http://localhost:{server.port}/base/",
                upstream_path="/x%3Fy",
                timeout_ms=5000,
                max_body_bytes=0,
                client_ip="203.0.113.9",
                extra_headers=[(b"x-correlation-id", b"cid")],
            )
            await forwarder.close()
            return server.requests[0]

    request = run(scenario)

    assert request.start_line == b"DELETE /base/x%3Fy?a=%2F&b=caf%E9 HTTP/1.1"
    assert request.header_lines[0] == f"host: localhost:{request_port(request)}".encode()
    assert request.header_lines[1:] == [
        b"x-bin: \xe9",
        b"X-Forwarded-For: 203.0.113.9",
        b"X-Forwarded-Proto: https",
        b"X-Forwarded-Host: gw.test",
        b"x-correlation-id: cid",
        b"content-length: 0",  # a DELETE without a body says so, as aiohttp did
    ]


def request_port(request: Request) -> int:
    return int(request.header_lines[0].rsplit(b":", 1)[1])


def test_an_answer_before_the_upload_ends_stops_the_upload_and_is_relayed() -> None:
    refusal = reply(b"HTTP/1.1 413 Too Large", [b"Connection: close"], b"no")

    async def scenario() -> tuple[int, bytes, int, int]:
        async def refuse_at_the_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(refusal)  # without reading the body, and gone
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(refuse_at_the_head, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pulled = 0

        async def more() -> bytes | None:
            nonlocal pulled
            pulled += 1
            await asyncio.sleep(0)  # a client sending as fast as the loop lets it
            return BLOCK

        try:
            async with pool() as client:
                conn = await send(client, port, b"PUT", body=BLOCK, more=more, chunked=True, timeout=30)
                status, body = conn.status, await read_all(client, conn)
                return status, body, pulled, client.idle()
        finally:
            server.close()

    status, body, pulled, idle = run(scenario)

    assert (status, body) == (413, b"no")
    assert pulled < 1000  # the upload stopped: it did not run on to the deadline
    assert idle == 0


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("http://127.0.0.1:8001", ("127.0.0.1", 8001, b"127.0.0.1:8001", b"")),
        ("http://Upstream.Example/base/", ("upstream.example", 80, b"upstream.example", b"/base")),
        ("http://[::1]:8080/v1", ("::1", 8080, b"[::1]:8080", b"/v1")),
        ("https://upstream.example", None),  # TLS: aiohttp
        ("http://user:pw@upstream.example", None),  # user information: aiohttp (the API refuses it)
        ("http://upstream.example/?q=1", None),
        ("http://bücher.example", None),  # an internationalised name: aiohttp encodes it
    ],
)
def test_which_targets_the_lean_client_takes(target: str, expected: tuple[str, int, bytes, bytes] | None) -> None:
    plain = _plain_target(target)

    assert (None if plain is None else (plain.host, plain.port, plain.host_header, plain.base_path)) == expected


def test_closing_the_pool_closes_connections_in_use_and_the_pool_works_on() -> None:
    async def scenario() -> tuple[int, int, tuple[int, bytes], int]:
        async with upstream(fixed(OK)) as server, pool() as client:
            held = await send(client, server.port)
            await client.close()
            await eventually(lambda: server.closed_by_client == 1, what="the connection in use to be closed")
            client.release(held)  # handed back after the close: nothing to count
            after = await get(client, server.port)
            return client.in_use(), client.idle(), after, server.connections

    assert run(scenario) == (0, 1, (200, b"ok"), 2)


# --- Limits of what the upstream sends back (found by the fresh-eyes trial) ------------------------


def endless_field(start: bytes, sent: list[int]) -> Answer:
    """Writes `start`, then a field value that never ends, 64 KiB at a time (counted in `sent`),
    until the client leaves."""

    async def answer(request: Request, writer: asyncio.StreamWriter) -> None:
        writer.write(start)
        for _ in range(16 * 1024):  # 1 GiB at most: the client must leave long before
            writer.write(b"b" * 65536)
            await writer.drain()
            sent[0] += 65536

    return answer


def test_a_response_head_past_its_limit_is_malformed_and_the_loop_stays_free() -> None:
    async def scenario() -> None:
        sent = [0]
        async with (
            upstream(endless_field(b"HTTP/1.1 200 OK\r\nX-Huge: ", sent)) as huge,
            upstream(fixed(OK)) as fine,
            pool() as client,
        ):
            exchange = asyncio.create_task(send(client, huge.port, timeout=30))
            # Meanwhile another upstream's request on the same loop is answered
            assert await get(client, fine.port) == (200, b"ok")
            with pytest.raises(MalformedResponse, match="response head is over"):
                await exchange
            # and the endless head was cut off near the limit, not read to its end
            assert sent[0] < 64 * MiB  # socket buffers hold a few MiB; the whole answer is 1 GiB
            assert client.in_use() == 0

    run(scenario)


def test_more_headers_than_the_limit_is_a_malformed_response() -> None:
    headers = [b"X-N%d: v" % n for n in range(MAX_RESPONSE_HEADERS + 1)]

    async def scenario() -> None:
        async with upstream(fixed(reply(b"HTTP/1.1 200 OK", headers, b"ok"))) as server, pool() as client:
            with pytest.raises(MalformedResponse):
                await send(client, server.port)
        async with upstream(fixed(reply(b"HTTP/1.1 200 OK", headers[:-2], b"ok"))) as server, pool() as client:
            assert await get(client, server.port) == (200, b"ok")  # the limit itself passes

    run(scenario)


def test_trailer_fields_are_dropped_not_merged_into_the_head() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Real: 1\r\n\r\n"
        b"2\r\nok\r\n0\r\nSet-Cookie: session=evil\r\nLocation: http://evil.example/\r\n\r\n"
    )

    async def scenario() -> None:
        async with upstream(fixed(chunked)) as server, pool() as client:
            conn = await send(client, server.port)
            body = await read_all(client, conn)
            names = [name.lower() for name, _ in conn.headers]
            assert body == b"ok"
            assert b"x-real" in names
            assert b"set-cookie" not in names and b"location" not in names

    run(scenario)


def test_an_endless_trailer_is_malformed_and_a_long_chunked_body_is_not() -> None:
    sent = [0]

    endless_trailer = endless_field(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Trailer: ", sent
    )

    big = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    big += b"".join(b"%x\r\n%s\r\n" % (len(BLOCK), BLOCK) for _ in range(64)) + b"0\r\n\r\n"

    async def scenario() -> None:
        async with upstream(endless_trailer) as server, pool() as client:
            conn = await send(client, server.port, timeout=30)
            with pytest.raises(MalformedResponse, match="trailer"):
                await read_all(client, conn, timeout=30)
            assert sent[0] < 64 * MiB  # cut off, not read to its end
        # while 4 MiB of chunked body, read in large pieces, is well within the limit
        async with upstream(fixed(big)) as server, pool() as client:
            assert await get(client, server.port) == (200, BLOCK * 64)

    run(scenario)
