"""Raw HTTP/1.1 on both sides of the gateway, for tests about the exact bytes.

Client libraries normalise what they send and what they parse (header case and encoding, query
quoting, repeated headers folded into one), which hides exactly the faults these tests look for.
``raw_request`` writes the bytes it is given on a socket and parses the answer by hand;
``RawUpstream`` is a TCP server that records each request as the bytes it received and answers
with bytes fixed by the test.
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["RawMessage", "RawUpstream", "raw_request", "raw_upstream", "response_bytes"]

_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RawMessage:
    """One HTTP/1.1 message as it crossed the wire.

    ``start_line`` without its CRLF; ``header_lines`` each ``name: value`` exactly as sent (no
    CRLF); ``body`` de-chunked when the message was chunked (``chunked`` says so), else as sent.
    """

    start_line: bytes
    header_lines: list[bytes]
    body: bytes
    chunked: bool = False

    @property
    def status(self) -> int:
        """The status code of a response's start line."""
        return int(self.start_line.split(b" ", 2)[1])

    def fields(self) -> list[tuple[bytes, bytes]]:
        """(lower-case name, value with surrounding whitespace removed), in order, repeats kept."""
        pairs = []
        for line in self.header_lines:
            name, _, value = line.partition(b":")
            pairs.append((name.lower(), value.strip(b" \t")))
        return pairs

    def values(self, name: bytes) -> list[bytes]:
        """Every value of header ``name`` (case-insensitive), in order."""
        return [value for key, value in self.fields() if key == name.lower()]


class _Reader:
    """Reads an HTTP/1.1 message from a blocking socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.buffer += data
        return bool(data)

    def until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"connection closed before {marker!r}; got {self.buffer[:200]!r}")
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise ConnectionError(f"connection closed after {len(self.buffer)} of {size} bytes")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def rest(self) -> bytes:
        while self._fill():
            pass
        data, self.buffer = self.buffer, b""
        return data

    def message(self, *, is_response: bool, head_request: bool = False) -> RawMessage:
        head = self.until(b"\r\n\r\n")
        start_line, *header_lines = head.split(b"\r\n")
        partial = RawMessage(start_line, header_lines, b"")
        lengths = partial.values(b"content-length")
        chunked = any(b"chunked" in value.lower() for value in partial.values(b"transfer-encoding"))
        status = partial.status if is_response else 0
        if head_request or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif chunked:
            body = self._chunked_body()
        elif lengths:
            body = self.exactly(int(lengths[0]))
        elif is_response:
            body = self.rest()
        else:
            body = b""
        return RawMessage(start_line, header_lines, body, chunked)

    def _chunked_body(self) -> bytes:
        body = b""
        while True:
            size = int(self.until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                # Trailers, if any, end with an empty line.
                while self.until(b"\r\n"):
                    pass
                return body
            body += self.exactly(size)
            self.exactly(2)


def raw_request(port: int, request: bytes, *, head_request: bool = False) -> RawMessage:
    """Sends ``request`` byte for byte to 127.0.0.1:``port`` and parses the one response."""
    with socket.create_connection(("127.0.0.1", port), timeout=_TIMEOUT_S) as sock:
        sock.sendall(request)
        return _Reader(sock).message(is_response=True, head_request=head_request)


def response_bytes(status_line: bytes, header_lines: list[bytes], body: bytes) -> bytes:
    """A complete response with a Content-Length, for ``RawUpstream``."""
    lines = [status_line, *header_lines, b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass
class RawUpstream:
    """A recording upstream on a free port: every request's exact bytes land in ``requests``
    (head and body as received, chunk framing included in ``raw``), and each is answered with
    ``response`` (bytes sent as they are), then the connection is closed."""

    response: bytes
    port: int = 0
    requests: list[RawMessage] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    _server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> None:
        upstream = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                sock.settimeout(_TIMEOUT_S)
                reader = _Recording(sock)
                message = reader.message(is_response=False)
                upstream.requests.append(message)
                upstream.raw.append(reader.seen)
                sock.sendall(upstream.response)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, name="raw-upstream", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def last(self) -> RawMessage:
        """The request received most recently."""
        if not self.requests:
            raise AssertionError("the upstream received no request")
        return self.requests[-1]


class _Recording(_Reader):
    """A reader that also keeps every byte it received."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.seen = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        self.seen += data
        self.buffer += data
        return bool(data)


@contextmanager
def raw_upstream(response: bytes) -> Iterator[RawUpstream]:
    upstream = RawUpstream(response)
    upstream.start()
    try:
        yield upstream
    finally:
        upstream.stop()
