"""Local ports, plain HTTP requests and a TCP relay a test can cut, for the servers tests start."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import threading
from collections.abc import Coroutine, Iterator, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes | Iterator[bytes] | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request to 127.0.0.1:``port`` (30 s timeout); an iterator body is sent chunked.

    Returns (status, headers with lower-case names, body). Raises ``OSError`` when nothing answers.
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        chunked = body is not None and not isinstance(body, bytes)
        conn.request(method, path, body=body, headers=dict(headers or {}), encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


class TcpRelay:
    """A TCP relay on a free local port to ``target``, which a test can cut and restore.

    It stands between Sentinel and a real server (Redis, PostgreSQL) to make that server
    unreachable and then reachable again on the same address, without touching the server other
    tests use. `lose_answer_to` makes it drop one connection at the worst moment instead: right
    after a message (a COMMIT) went through, before its answer comes back.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._trap: bytes | None = None
        self.answers_lost = 0  # how many times the trap went off
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-relay", daemon=True)
        self._thread.start()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def start(self) -> None:
        """Listens on ``self.port`` (again, after a cut)."""

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

    def lose_answer_to(self, marker: bytes) -> None:
        """Arms a one-shot trap: the next client data containing `marker` is passed to the server,
        and that client's connection is then cut at once, while the server's answer is read and
        dropped. To the client the message is lost; the server did act on it."""
        self._trap = marker

    def close(self) -> None:
        """Cuts, then stops the relay's thread."""
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, server_writer))
        trapped = asyncio.Event()  # this connection's answer is being dropped

        async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, to_server: bool) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await reader.read(65536):
                    if not to_server and trapped.is_set():
                        break  # the answer to the trapped message: never delivered
                    if to_server and self._trap is not None and self._trap in data:
                        self._trap, self.answers_lost = None, self.answers_lost + 1
                        trapped.set()  # before the server can answer
                        writer.write(data)
                        await writer.drain()
                        client_writer.transport.abort()
                        return  # the server side stays open until its answer has come (and gone)
                    writer.write(data)
                    await writer.drain()
            writer.transport.abort()
            if trapped.is_set():
                server_writer.transport.abort()

        await asyncio.gather(
            pump(client_reader, server_writer, to_server=True), pump(server_reader, client_writer, to_server=False)
        )
        self._writers.difference_update((client_writer, server_writer))


@contextlib.contextmanager
def tcp_relay(target_port: int) -> Iterator[TcpRelay]:
    """A started ``TcpRelay`` to 127.0.0.1:``target_port`` for the block, closed after it."""
    relay = TcpRelay(target_port)
    relay.start()
    try:
        yield relay
    finally:
        relay.close()
