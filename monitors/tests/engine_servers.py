"""Real local servers for the check runner's tests: an aiohttp app (HTTP and HTTPS with several
certificates) in a background thread with its own event loop, a TCP listener, and a recorder of
what each server saw (arrival times, connections, requests in flight).

Certificates are made here with ``cryptography``: a test CA the runner is told to trust, a leaf it
signs for 127.0.0.1 (good), one whose not_valid_after is in the past (expired), one for another
host name (hostname mismatch), and a self-signed one no CA vouches for.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DAY = dt.timedelta(days=1)


# --- certificates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files of a test CA and of leaves: ``good`` (30 days left), ``expired`` (2 days ago),
    ``mismatch`` (for other.example), ``self_signed`` (30 days left, no CA)."""

    folder: Path
    ca: Path

    def server_context(self, leaf: str) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.folder / f"{leaf}.pem", self.folder / f"{leaf}.key")
        return context

    def client_context(self) -> ssl.SSLContext:
        """What a runner verifying certificates uses in these tests: trusts the test CA only."""
        return ssl.create_default_context(cafile=str(self.ca))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _certificate(
    *,
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    not_after: dt.datetime,
    san: x509.GeneralName | None,
    ca: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer if issuer is not None else (name, key)
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(min(now, not_after) - 10 * DAY)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _certificate(
        subject="Sentinel test CA", key=ca_key, issuer=None, not_after=now + 365 * DAY, san=None, ca=True
    )
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    # An hour's margin on each side keeps the whole days left exact whatever the test's pace.
    leaves = {
        "good": (loopback, now + 30 * DAY + dt.timedelta(hours=1), True),
        "expired": (loopback, now - 2 * DAY + dt.timedelta(hours=1), True),
        "mismatch": (x509.DNSName("other.example"), now + 30 * DAY + dt.timedelta(hours=1), True),
        "self_signed": (loopback, now + 30 * DAY + dt.timedelta(hours=1), False),
    }
    for leaf, (san, not_after, signed) in leaves.items():
        key = ec.generate_private_key(ec.SECP256R1())
        issuer = (ca_cert.subject, ca_key) if signed else None
        cert = _certificate(subject=f"{leaf}.test", key=key, issuer=issuer, not_after=not_after, san=san)
        (folder / f"{leaf}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{leaf}.key").write_bytes(_key_pem(key))
    return Pki(folder, folder / "ca.pem")


# --- the recording HTTP app ---------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the server saw it."""

    path: str
    method: str
    headers: dict[str, str]
    body: bytes
    arrived_at: float  # time.time() when the server read the request
    peer_port: int


@dataclass
class Recorder:
    lock: threading.Lock = field(default_factory=threading.Lock)
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def requests(self, path: str | None = None) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if path is None or s.path == path]


def build_app(recorder: Recorder) -> web.Application:
    async def record(request: web.Request) -> Seen:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen = Seen(
            request.path,
            request.method,
            {k.lower(): v for k, v in request.headers.items()},
            await request.read(),
            time.time(),
            int(peer[1]) if peer else 0,
        )
        with recorder.lock:
            recorder.seen.append(seen)
        return seen

    async def ok(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"status": "UP", "checks": {"db": "ok"}}, headers={"X-Version": "7"})

    async def status(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(status=int(request.match_info["code"]), text="status page")

    async def down(request: web.Request) -> web.Response:
        await record(request)
        return web.json_response({"status": "DOWN"})

    async def text(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="all systems operational\nno ERROR here? yes: ERROR 17")

    async def echo(request: web.Request) -> web.Response:
        seen = await record(request)
        return web.json_response({"method": seen.method, "body": seen.body.decode(), "headers": seen.headers})

    async def slow(request: web.Request) -> web.Response:
        await record(request)
        await asyncio.sleep(int(request.query.get("ms", "300")) / 1000)
        return web.Response(text="finally")

    async def hold(request: web.Request) -> web.Response:
        with recorder.lock:
            recorder.in_flight += 1
            recorder.max_in_flight = max(recorder.max_in_flight, recorder.in_flight)
        try:
            await record(request)
            await asyncio.sleep(int(request.query.get("ms", "200")) / 1000)
        finally:
            with recorder.lock:
                recorder.in_flight -= 1
        return web.Response(text="held")

    async def big_json(request: web.Request) -> web.Response:
        await record(request)
        size = int(request.query.get("bytes", "4096"))
        payload = {"status": "UP", "padding": "x" * size}
        return web.json_response(payload)

    async def endless(request: web.Request) -> web.StreamResponse:
        """A body that never ends: only a bounded reader gets past it."""
        await record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        await response.write(b"HEALTHY " + b"." * 1000)
        with contextlib.suppress(ConnectionError, RuntimeError):
            for _ in range(10_000):
                await response.write(b"." * 4096)
                await asyncio.sleep(0.01)
        return response

    async def redirect(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound(request.query.get("to", "/ok"))

    async def loop(request: web.Request) -> web.Response:
        await record(request)
        raise web.HTTPFound("/loop")

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/down", down)
    app.router.add_get("/text", text)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/slow", slow)
    app.router.add_get("/hold", hold)
    app.router.add_get("/big-json", big_json)
    app.router.add_get("/endless", endless)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/loop", loop)
    return app


@dataclass
class Servers:
    """The running servers: ``http`` and one https base URL per certificate, all on 127.0.0.1."""

    recorder: Recorder
    http: str
    https: dict[str, str]
    pki: Pki

    def reset(self) -> None:
        with self.recorder.lock:
            self.recorder.seen.clear()
            self.recorder.max_in_flight = 0


@contextlib.contextmanager
def running_servers(folder: Path, *, host: str = "127.0.0.1") -> Iterator[Servers]:
    """The app served over HTTP and over HTTPS with each test certificate, in a thread."""
    pki = make_pki(folder)
    recorder = Recorder()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    ports: dict[str, int] = {}
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        runner = web.AppRunner(build_app(recorder), access_log=None, shutdown_timeout=0.5, handler_cancellation=True)
        await runner.setup()
        runner_box.append(runner)
        for name, context in [("http", None)] + [
            (leaf, pki.server_context(leaf)) for leaf in ("good", "expired", "mismatch", "self_signed")
        ]:
            site = web.TCPSite(runner, host, 0, ssl_context=context)
            await site.start()
            server = site._server
            assert isinstance(server, asyncio.Server)
            ports[name] = int(server.sockets[0].getsockname()[1])

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10), "the test servers did not start"
    try:
        yield Servers(
            recorder,
            f"http://{host}:{ports['http']}",
            {leaf: f"https://{host}:{port}" for leaf, port in ports.items() if leaf != "http"},
            pki,
        )
    finally:
        # Cleanup first, inside the loop, so handlers still running (a slow answer) are cancelled.
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@contextlib.contextmanager
def tcp_listener(host: str = "127.0.0.1") -> Iterator[tuple[int, list[tuple[str, int]]]]:
    """A TCP listener that accepts and closes; yields (port, peers accepted so far)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((host, 0))
    sock.listen(64)
    sock.settimeout(0.2)
    accepted: list[tuple[str, int]] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, peer = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(peer)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1]), accepted
    finally:
        stop.set()
        thread.join(5)
        sock.close()


def json_of(seen: Seen) -> Any:
    return json.loads(seen.body)
