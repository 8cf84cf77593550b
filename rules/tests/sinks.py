"""Real local servers standing in for the outside world: an HTTP sink for webhooks, Slack and
Discord, and an SMTP sink for e-mail. Each records what it received, for the test to read."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sentinel_site.testing import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class HttpSink:
    """Answers each POST with the next status of `statuses` (the last one repeats)."""

    statuses: list[int] = field(default_factory=lambda: [200])
    # Seconds to hold the n-th request (1-based) before answering, e.g. {1: 5.0}.
    hold: dict[int, float] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: Received) -> tuple[int, float]:
        with self._lock:
            self.received.append(request)
            n = len(self.received)
        status = self.statuses[min(n, len(self.statuses)) - 1]
        return status, self.hold.get(n, 0.0)

    def count(self) -> int:
        with self._lock:
            return len(self.received)


@contextmanager
def http_sink(statuses: list[int] | None = None, hold: dict[int, float] | None = None) -> Iterator[HttpSink]:
    sink = HttpSink(statuses=statuses or [200], hold=hold or {})

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            request = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
            status, hold_s = sink.answer(request)
            if hold_s:
                time.sleep(hold_s)  # the sink is slow on purpose: a worker dies while it waits
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    sink.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class SmtpSink:
    port: int = 0
    messages: list[Message] = field(default_factory=list)


@contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    from aiosmtpd.controller import Controller

    sink = SmtpSink()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            sink.messages.append(message_from_bytes(envelope.original_content))
            return "250 OK"

    sink.port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
