"""The bytes `SentinelHttpProtocol` writes for an application's responses (issue 13, lever 1).

A real uvicorn server (uvloop) on a free port, in a thread of the test process, serves the ASGI
app below through Sentinel's protocol class; the tests speak raw HTTP/1.1 on a socket and compare
what arrives byte for byte: a Content-Length body, chunked streaming, HEAD, 204, 304, keep-alive,
pipelining, HTTP/1.0, and header values with CR, LF or NUL from the application, which must never
reach the wire. The protocol's transport is wrapped to count its write calls, so that "one write
per response whose body is one message" is checked where it happens (the socket could merge two
writes in one segment, or split one).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from gateway.engine.forwarder import RESPOND_KEY
from gateway.http_server import SentinelCycle, SentinelHttpProtocol
from tests.support.net import free_port
from tests.support.waiting import wait_until

_TIMEOUT_S = 15.0


class _CountingTransport:
    """The real transport, with its ``write``/``writelines`` calls counted per connection."""

    def __init__(self, transport: asyncio.Transport, counts: list[int]) -> None:
        self._transport = transport
        self._counts = counts
        counts.append(0)
        self._index = len(counts) - 1

    def write(self, data: Any) -> None:
        self._counts[self._index] += 1
        self._transport.write(data)

    def writelines(self, parts: Any) -> None:
        self._counts[self._index] += 1
        self._transport.writelines(parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _App:
    """Answers by path; `release` lets a response held at `/late` go on (set from the test)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.release: asyncio.Event | None = None
        self.errors: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        self.loop = asyncio.get_running_loop()
        path = scope["path"]
        if path == "/cl":
            headers = [(b"Content-Type", b"text/plain"), (b"content-length", b"5")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"hello"})
        elif path == "/cl-parts":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
            await send({"type": "http.response.body", "body": b"hello", "more_body": True})
            await send({"type": "http.response.body", "body": b"world"})
        elif path == "/chunked":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x-kind", b"stream")]})
            for part in (b"a", b"", b"bcd"):
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/late":
            self.release = asyncio.Event()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
            await self.release.wait()  # the head must reach the client meanwhile
            await send({"type": "http.response.body", "body": b"late"})
        elif path == "/204":
            await send({"type": "http.response.start", "status": 204, "headers": [(b"x-a", b"1")]})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/304":
            await send({"type": "http.response.start", "status": 304, "headers": [(b"etag", b'"v1"')]})
            await send({"type": "http.response.body", "body": b""})
        elif path == "/close":
            headers = [(b"content-length", b"2"), (b"Connection", b"close")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"ok"})
        elif path == "/bad-value":
            value = scope["query_string"]
            words = {b"CR": b"\r", b"LF": b"\n", b"NUL": b"\x00", b"TAB": b"\t", b"DEL": b"\x7f", b"US": b"\x1f"}
            for word, character in words.items():
                value = value.replace(word, character)
            headers = [(b"content-length", b"2"), (b"x-note", value)]
            try:
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": b"ok"})
            except RuntimeError as exc:
                self.errors.append(str(exc))
                raise
        elif path == "/respond":  # the proxy's way: the whole response in one call
            assert scope[RESPOND_KEY](200, [(b"content-length", b"5")], b"hello") is True
        elif path == "/respond-unframed":
            assert scope[RESPOND_KEY](200, [(b"X-Kind", b"whole")], b"abc") is True
        elif path == "/respond-after-start":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            assert scope[RESPOND_KEY](200, [], b"no") is False  # started: it must go as messages
            await send({"type": "http.response.body", "body": b"ok"})
        elif path == "/yield":  # a stream's way: the loop turns between the head and the body
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            await send({"type": "http.response.body", "body": b"ok"})
        elif path == "/bad-name":
            headers = [(b"x note", b"1"), (b"content-length", b"2")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"ok"})
        else:
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})


_servers: list[uvicorn.Server] = []  # the fixture's, for a test that stops its server


@pytest.fixture
def served() -> Iterator[tuple[int, _App, list[int]]]:
    """(port, app, write calls per connection) of a uvicorn server running Sentinel's protocol."""
    with _serving() as served:
        yield served


@contextlib.contextmanager
def _serving(**options: Any) -> Iterator[tuple[int, _App, list[int]]]:
    """`served`, with `options` for uvicorn.Config."""
    app = _App()
    counts: list[int] = []

    class Counting(SentinelHttpProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(_CountingTransport(transport, counts))  # type: ignore[arg-type]

    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http=Counting,
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=False,
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="wire-test-server", daemon=True)
    thread.start()
    _servers.append(server)
    try:
        wait_until(lambda: server.started, timeout=_TIMEOUT_S, what="uvicorn to listen")
        yield port, app, counts
    finally:
        server.should_exit = True
        thread.join(_TIMEOUT_S)
        _servers.remove(server)


def _read_all(sock: socket.socket) -> bytes:
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    received = b""
    while len(received) < size:
        chunk = sock.recv(size - len(received))
        assert chunk, f"closed after {received!r}"
        received += chunk
    return received


def _exchange(port: int, request: bytes) -> bytes:
    """Everything the server writes for `request` until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT_S) as sock:
        sock.sendall(request)
        return _read_all(sock)


def _get(path: str, *, method: str = "GET", close: bool = True) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n".encode() + connection + b"\r\n"


CL_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nhello"


def test_a_body_in_one_message_goes_out_with_its_head_in_one_write(served: tuple[int, _App, list[int]]) -> None:
    port, _, counts = served

    received = _exchange(port, _get("/cl"))

    # Names lower-cased (as uvicorn writes them), connection: close added for the closing connection.
    assert received == CL_RESPONSE.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n")
    assert counts == [1]


def test_a_body_in_parts_is_written_as_it_comes(served: tuple[int, _App, list[int]]) -> None:
    port, _, counts = served

    received = _exchange(port, _get("/cl-parts"))

    assert received == b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nhelloworld"
    assert counts == [2]  # the head with the first part, then the second


def test_a_response_without_length_is_chunked(served: tuple[int, _App, list[int]]) -> None:
    port, _, _ = served

    received = _exchange(port, _get("/chunked"))

    assert received == (
        b"HTTP/1.1 200 OK\r\nx-kind: stream\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n"
        b"1\r\na\r\n3\r\nbcd\r\n0\r\n\r\n"
    )


def test_the_head_is_not_held_back_while_the_application_waits(served: tuple[int, _App, list[int]]) -> None:
    port, app, _ = served
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\nconnection: close\r\n\r\n"

    with socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT_S) as sock:
        sock.sendall(_get("/late"))
        # The application is parked until the test releases it: the head arrives on its own.
        assert _read_exactly(sock, len(head)) == head
        assert app.loop is not None and app.release is not None
        app.loop.call_soon_threadsafe(app.release.set)
        assert _read_all(sock) == b"late"


def test_head_204_and_304_carry_no_body(served: tuple[int, _App, list[int]]) -> None:
    port, _, counts = served

    head = _exchange(port, _get("/cl", method="HEAD"))
    no_content = _exchange(port, _get("/204"))
    not_modified = _exchange(port, _get("/304"))

    assert head == b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
    assert no_content == b"HTTP/1.1 204 No Content\r\nx-a: 1\r\nconnection: close\r\n\r\n"
    assert not_modified == b'HTTP/1.1 304 Not Modified\r\netag: "v1"\r\nconnection: close\r\n\r\n'
    assert counts == [1, 1, 1]


def test_a_whole_response_given_in_one_call_is_framed_as_send_frames_it_in_one_write(
    served: tuple[int, _App, list[int]],
) -> None:
    port, _, counts = served

    framed = _exchange(port, _get("/respond"))
    unframed = _exchange(port, _get("/respond-unframed"))
    head = _exchange(port, _get("/respond", method="HEAD"))
    after_start = _exchange(port, _get("/respond-after-start"))

    assert framed == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"
    assert unframed == (
        b"HTTP/1.1 200 OK\r\nx-kind: whole\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n"
    )
    assert head == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
    assert after_start == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
    assert counts[:3] == [1, 1, 1]


def test_pipelined_requests_each_find_respond(served: tuple[int, _App, list[int]]) -> None:
    # Each request's task reads `sentinel.respond` from its scope after the next head may have
    # been parsed: the next request must not take it away.
    port, _, _ = served

    received = _exchange(port, _get("/respond", close=False) * 3 + _get("/respond"))

    one = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
    assert received == one * 3 + one.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n")


def test_keep_alive_and_pipelined_requests_get_their_responses_in_order(served: tuple[int, _App, list[int]]) -> None:
    port, _, counts = served

    with socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT_S) as sock:
        sock.sendall(_get("/cl", close=False))
        first = _read_exactly(sock, len(CL_RESPONSE))
        sock.sendall(_get("/cl", close=False))
        second = _read_exactly(sock, len(CL_RESPONSE))
        # Three requests in one segment: answered one after the other, the last one closing.
        sock.sendall(_get("/cl-parts", close=False) + _get("/chunked", close=False) + _get("/cl"))
        pipelined = _read_all(sock)

    assert first == second == CL_RESPONSE
    assert pipelined == (
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhelloworld"
        b"HTTP/1.1 200 OK\r\nx-kind: stream\r\ntransfer-encoding: chunked\r\n\r\n1\r\na\r\n3\r\nbcd\r\n0\r\n\r\n"
        + CL_RESPONSE.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n")
    )
    # /cl twice in one write each, /cl-parts in two, /chunked in three (head + "a", "bcd", the
    # last chunk: the empty part writes nothing), /cl once more.
    assert counts == [1 + 1 + 2 + 3 + 1]


def test_http10_and_the_applications_connection_close_end_the_connection(served: tuple[int, _App, list[int]]) -> None:
    port, _, _ = served

    old = _exchange(port, b"GET /cl HTTP/1.0\r\n\r\n")
    closing = _exchange(port, _get("/close", close=False))

    assert old == CL_RESPONSE.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n")
    assert closing == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"


SERVER_ERROR = (
    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\n"
    b"connection: close\r\n\r\nInternal Server Error"
)


@pytest.mark.parametrize(
    "value", ["aCRLFx-injected:%201", "aLFx-injected:%201", "aCRx", "aNULb", "aDELb", "aUSb", "CR"]
)
def test_a_header_value_with_a_control_character_never_reaches_the_wire(
    served: tuple[int, _App, list[int]], value: str
) -> None:
    port, app, _ = served

    received = _exchange(port, _get(f"/bad-value?{value}"))

    # uvicorn's rule: the application's error, answered 500 since nothing was written yet.
    assert received == SERVER_ERROR
    assert app.errors == ["Invalid HTTP header value."]


def test_a_header_name_that_is_not_a_token_is_refused(served: tuple[int, _App, list[int]]) -> None:
    port, _, _ = served

    assert _exchange(port, _get("/bad-name")) == SERVER_ERROR


def test_a_tab_in_a_header_value_is_written_as_it_is(served: tuple[int, _App, list[int]]) -> None:
    port, app, _ = served

    received = _exchange(port, _get("/bad-value?aTABb"))

    # HTAB is allowed in a field value (RFC 9110 5.5).
    assert received == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-note: a\tb\r\nconnection: close\r\n\r\nok"
    assert app.errors == []


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_graceful_shutdown_lets_the_response_in_flight_finish(served: tuple[int, _App, list[int]]) -> None:
    port, app, _ = served
    server_thread = next(thread for thread in threading.enumerate() if thread.name == "wire-test-server")
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n"  # a keep-alive connection when it started

    with socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT_S) as sock:
        sock.sendall(_get("/late", close=False))
        assert _read_exactly(sock, len(head)) == head
        server = next(obj for obj in _servers if obj.config.port == port)
        server.should_exit = True  # what uvicorn's SIGTERM handler does
        wait_until(lambda: _refused(port), timeout=_TIMEOUT_S, what="the server to stop listening")
        assert app.loop is not None and app.release is not None
        app.loop.call_soon_threadsafe(app.release.set)
        # The body, then the end of the connection: no more requests on it.
        assert _read_all(sock) == b"late"

    server_thread.join(_TIMEOUT_S)
    assert not server_thread.is_alive()


def test_an_idle_keep_alive_connection_is_closed_after_the_timeout_and_a_busy_one_is_not() -> None:
    timeout_s = 0.5
    with (
        _serving(timeout_keep_alive=timeout_s) as (port, _, _),
        socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT_S) as sock,
    ):
        # Requests for three times the timeout, each sent before the connection has been idle that
        # long: the timer armed after the first response must not close it under the later ones.
        started = time.monotonic()
        answered = 0
        while time.monotonic() - started < 3 * timeout_s:
            sock.sendall(_get("/cl", close=False))
            assert _read_exactly(sock, len(CL_RESPONSE)) == CL_RESPONSE
            idle_from = time.monotonic()
            answered += 1
            time.sleep(timeout_s / 5)  # the pace of the client under test, not a wait for the server
        assert _read_all(sock) == b""  # then idle: closed by the server
        idle_s = time.monotonic() - idle_from

    assert answered >= 10
    assert idle_s >= timeout_s - 0.01  # not before its time (the timer's clock has 1 ms steps)


def test_a_finished_request_leaves_no_reference_cycle_for_the_collector(served: tuple[int, _App, list[int]]) -> None:
    # The scope holds its cycle's `respond`, and the cycle holds the scope: unless that is undone,
    # every request's objects wait for the garbage collector (young collections of 4-12 ms, each
    # stalling every request in flight) instead of going when the last reference does.
    port, _, _ = served
    gc.collect()
    gc.disable()
    try:
        for path in ("/respond", "/cl", "/chunked", "/respond-after-start", "/yield") * 5:
            assert _exchange(port, _get(path)).startswith(b"HTTP/1.1 200 OK")
        # The server's side of the last connection may still be closing: its cycle goes with it.
        wait_until(
            lambda: sum(isinstance(thing, SentinelCycle) for thing in gc.get_objects()) == 0,
            timeout=_TIMEOUT_S,
            what="every finished request's cycle to be freed without the collector",
        )
    finally:
        gc.enable()
