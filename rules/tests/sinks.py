"""Real local servers standing in for the outside world: an HTTP sink for webhooks, Slack and
Discord, and an SMTP sink for e-mail. Each records what it received, for the test to read, and
answers what the test scripted (statuses, headers, bodies, a dropped connection, SMTP replies)."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from tests.support.net import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic(), for intervals
    wall: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))  # to compare with the database


@dataclass(frozen=True)
class Answer:
    """One scripted answer: a status with headers and a body, or a connection dropped without
    an answer (`drop="reset"`: TCP RST; `drop="close"`: an orderly close)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    drop: Literal["reset", "close"] | None = None


@dataclass
class HttpSink:
    """Answers each POST with the next of `answers` (the last one repeats)."""

    answers: list[Answer] = field(default_factory=lambda: [Answer()])
    # Seconds to hold the n-th request (1-based) before answering, e.g. {1: 5.0}.
    hold: dict[int, float] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, request: Received) -> tuple[Answer, float]:
        with self._lock:
            self.received.append(request)
            n = len(self.received)
        return self.answers[min(n, len(self.answers)) - 1], self.hold.get(n, 0.0)

    def count(self) -> int:
        with self._lock:
            return len(self.received)


@contextmanager
def http_sink(
    statuses: list[int] | None = None,
    hold: dict[int, float] | None = None,
    *,
    answers: Sequence[Answer] | None = None,
    tls: ssl.SSLContext | None = None,
) -> Iterator[HttpSink]:
    """A sink on 127.0.0.1: `statuses` for plain answers, or `answers` for scripted ones;
    `tls` serves HTTPS with that context (see `self_signed_tls`)."""
    scripted = list(answers) if answers else [Answer(status, body=b"ok") for status in statuses or [200]]
    sink = HttpSink(answers=scripted, hold=hold or {})

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            request = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
            answer, hold_s = sink.answer(request)
            if hold_s:
                time.sleep(hold_s)  # the sink is slow on purpose: a worker dies while it waits
            if answer.drop:
                self.close_connection = True
                if answer.drop == "reset":
                    # Linger 0: closing sends RST instead of FIN, as a crashed peer or a firewall does.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                return
            # No automatic Date header: a test scripts one when it matters (Retry-After dates).
            self.send_response_only(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    scheme = "http"
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    sink.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


def self_signed_tls(folder: Path) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1: what a client that
    verifies certificates must refuse."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


@dataclass
class SmtpSink:
    port: int = 0
    messages: list[Message] = field(default_factory=list)
    # Replies to RCPT TO and to the end of DATA, the n-th for the n-th message (the last repeats);
    # empty: accept.
    rcpt_replies: list[str] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    rcpt_seen: int = 0
    data_seen: int = 0


@contextmanager
def smtp_sink(*, rcpt_replies: Sequence[str] = (), data_replies: Sequence[str] = ()) -> Iterator[SmtpSink]:
    from aiosmtpd.controller import Controller

    sink = SmtpSink(rcpt_replies=list(rcpt_replies), data_replies=list(data_replies))

    def scripted(replies: list[str], n: int) -> str | None:
        return replies[min(n, len(replies)) - 1] if replies else None

    class Handler:
        async def handle_RCPT(
            self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
        ) -> str:
            sink.rcpt_seen += 1
            reply = scripted(sink.rcpt_replies, sink.rcpt_seen)
            if reply is not None and not reply.startswith("2"):
                return reply
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            sink.data_seen += 1
            reply = scripted(sink.data_replies, sink.data_seen)
            if reply is not None and not reply.startswith("2"):
                return reply
            sink.messages.append(message_from_bytes(envelope.original_content))
            return "250 OK"

    sink.port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
