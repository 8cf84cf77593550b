"""A mock backend for the gateway: echoes requests and misbehaves on demand.

The Procfile's ``upstream`` process (``python -m gateway.mock_upstream``) and the gateway tests run
it. It is plain aiohttp and never imports Django, so tests can start it in their own event loop
(``start_upstream``) or as a subprocess, on any free port, with Django configured or not.

Paths (any method):

* anything not listed below: 200 with a JSON echo of the request (``EchoPayload``);
* ``/status/<code>``: that status (200-599) with the echo; 204 and 304 carry no body;
* ``/delay/<ms>``: the echo after ``ms`` milliseconds (capped at 10 minutes);
* ``/drop``: the TCP connection is aborted without any response;
* ``/stall``: no response, ever, until the client goes away;
* ``/bytes/<n>``: ``n`` bytes (capped at 10 GiB) where byte ``i`` is ``i % 256``, streamed in
  64 KiB chunks with a Content-Length, or chunked with ``?chunked=1``;
* ``/health``: ``{"status": "ok"}``;
* ``/sink``: a webhook receiver for the demo. ``POST`` (or ``PUT``) records the request (its
  headers and body, the last ``SINK_KEEP`` of them, in memory) and answers 200 ``{"received": n}``;
  ``GET`` lists what was received, newest first, so a new user sees the demo rule's notification
  arrive (``make run`` seeds a webhook channel pointing here).

Bodies are read and written as streams in bounded chunks, so a 200 MB upload or download through
the gateway is verified with flat memory on both sides.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

from aiohttp import web

from core.errors import error_body

UPSTREAM_NAME_HEADER = "x-upstream-name"
CHUNK_SIZE = 64 * 1024
# Bodies up to this size are echoed back as text; larger ones are only counted and hashed, so the
# mock's memory stays flat whatever a test uploads.
ECHO_BODY_LIMIT = 1024 * 1024
MAX_DELAY_MS = 600_000
MAX_BYTES = 10 * 1024**3
# How often /stall looks whether its client has gone: aiohttp does not cancel handlers when the
# client disconnects (handler_cancellation is off by default), so the handler has to notice itself.
STALL_POLL_SECONDS = 0.1
# In-flight requests (a /delay/600000, a /stall) get this long to finish on SIGTERM before they are
# cancelled; a mock must stop fast (docker stop kills after 10 s).
SHUTDOWN_TIMEOUT_SECONDS = 2.0

# One 64 KiB block of the /bytes pattern. 64 KiB is a multiple of 256, so every chunk is the same
# block and byte i of the whole stream is i % 256: a client can verify any offset without a copy.
_PATTERN_BLOCK = bytes(range(256)) * (CHUNK_SIZE // 256)

_NAME_KEY = web.AppKey("upstream_name", str)
_FAIL_RATE_KEY = web.AppKey("upstream_fail_rate", float)
_STOPPING_KEY = web.AppKey("upstream_stopping", asyncio.Event)
_SINK_KEY: web.AppKey[collections.deque[SinkEntry]] = web.AppKey("upstream_sink", collections.deque)
# Deliveries the /sink keeps for GET: enough to see a demo's notifications, bounded so a loop that
# posts forever cannot grow the mock's memory.
SINK_KEEP = 100
# A sink entry keeps at most this much of each body (the demo's notifications are ~1 KiB).
SINK_BODY_LIMIT = 64 * 1024


class EchoPayload(TypedDict):
    """What the mock answers with: the request as it arrived."""

    upstream: str
    method: str
    path: str
    raw_path: str
    query: str
    headers: dict[str, str]
    body: str
    body_bytes: int
    body_sha256: str


class SinkEntry(TypedDict):
    """One request the /sink received."""

    received_at: float  # Unix time, seconds
    method: str
    headers: dict[str, str]
    body: Any  # the parsed JSON body, or the text when it is not JSON
    body_bytes: int


# --- Helpers ------------------------------------------------------------------------------------


def _error(status: int, code: str, message: str) -> web.Response:
    """A JSON error in the shape the rest of Sentinel uses (SPEC 7)."""
    return web.json_response(error_body(code, message), status=status)


def _parse_int(raw: str) -> int | None:
    """A non-negative decimal integer, or None for anything else (signs, spaces, '1e3', non-ASCII digits)."""
    if not raw.isascii() or not raw.isdigit():
        return None
    return int(raw)


def _joined_headers(request: web.Request) -> dict[str, str]:
    """Header names lower-cased; a header sent several times is joined with ', ' as RFC 9110 allows."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


async def _read_body(request: web.Request) -> tuple[bytes, int, str]:
    """(body kept for echo, total byte count, sha256 hex) read in bounded chunks.

    The kept body is empty when the total exceeds ECHO_BODY_LIMIT: past that point only the count
    and the digest are updated, so memory never holds more than the limit plus one chunk.
    """
    digest = hashlib.sha256()
    kept: list[bytes] = []
    total = 0
    async for chunk in request.content.iter_chunked(CHUNK_SIZE):
        digest.update(chunk)
        total += len(chunk)
        if total <= ECHO_BODY_LIMIT:
            kept.append(chunk)
        elif kept:
            kept.clear()  # over the limit: drop what was kept, from now on only count and hash
    return b"".join(kept), total, digest.hexdigest()


async def _echo_payload(request: web.Request) -> EchoPayload:
    """Read the whole request body (streaming) and describe the request."""
    body, total, sha256 = await _read_body(request)
    return EchoPayload(
        upstream=request.app[_NAME_KEY],
        method=request.method,
        path=request.path,
        # The path as it came on the wire, percent-encoding intact, to check what a proxy forwards.
        raw_path=request.rel_url.raw_path,
        query=request.rel_url.raw_query_string,
        headers=_joined_headers(request),
        body=body.decode("utf-8", errors="replace"),
        body_bytes=total,
        body_sha256=sha256,
    )


def _client_gone(request: web.Request) -> bool:
    """True once the client's TCP connection is closed (or closing)."""
    transport = request.transport
    return transport is None or transport.is_closing()


# --- Handlers -----------------------------------------------------------------------------------


async def handle_echo(request: web.Request) -> web.Response:
    """Any path without a special meaning: 200 with the echo, or 503 for the --fail-rate share."""
    payload = await _echo_payload(request)
    fail_rate = request.app[_FAIL_RATE_KEY]
    # Chaos for demos, not security: the module-level PRNG is what is wanted here.
    if fail_rate > 0 and random.random() < fail_rate:  # noqa: S311
        return web.json_response(payload, status=503, headers={"x-upstream-chaos": "1"})
    return web.json_response(payload)


async def handle_status(request: web.Request) -> web.Response:
    """``/status/<code>``: answer that status. 1xx are excluded: they are interim, never final."""
    code = _parse_int(request.match_info["code"])
    if code is None or not 200 <= code <= 599:
        return _error(400, "invalid_status", "The status code must be an integer from 200 to 599.")
    payload = await _echo_payload(request)
    if code in (204, 304):
        # These must not carry a body (RFC 9110 15.3.5, 15.4.5).
        return web.Response(status=code)
    return web.json_response(payload, status=code)


async def handle_delay(request: web.Request) -> web.Response:
    """``/delay/<ms>``: read the request, wait, then echo. Over-long delays are capped, not refused."""
    ms = _parse_int(request.match_info["ms"])
    if ms is None:
        return _error(400, "invalid_delay", "The delay must be a non-negative integer of milliseconds.")
    payload = await _echo_payload(request)
    await asyncio.sleep(min(ms, MAX_DELAY_MS) / 1000)
    return web.json_response(payload)


async def handle_drop(request: web.Request) -> web.Response:
    """``/drop``: abort the TCP connection (RST where the OS sends one) without writing a byte."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    # aiohttp tries to send this, finds the transport closed and drops it quietly as a client
    # disconnect; raising instead would be logged as a 500 handler error.
    return web.Response(status=500)


async def handle_stall(request: web.Request) -> web.StreamResponse:
    """``/stall``: accept the request and never answer, until the client disconnects.

    When the server stops, the connection is aborted rather than answered: otherwise each stalled
    request would hold shutdown for aiohttp's whole grace period.
    """
    stopping = request.app[_STOPPING_KEY]
    while not _client_gone(request) and not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), STALL_POLL_SECONDS)
    transport = request.transport
    if transport is not None:
        transport.abort()
    # Nobody is listening any more; aiohttp finds the transport closed and discards this response.
    return web.Response(status=204)


async def handle_bytes(request: web.Request) -> web.StreamResponse:
    """``/bytes/<n>``: stream n pattern bytes with backpressure, so memory stays flat at any n."""
    n = _parse_int(request.match_info["n"])
    if n is None:
        return _error(400, "invalid_size", "The size must be a non-negative integer of bytes.")
    n = min(n, MAX_BYTES)
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if request.query.get("chunked") in ("1", "true", "yes"):
        response.enable_chunked_encoding()
    else:
        response.content_length = n
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    remaining = n
    try:
        while remaining > 0:
            block = _PATTERN_BLOCK if remaining >= CHUNK_SIZE else _PATTERN_BLOCK[:remaining]
            # write() waits for the socket to drain past a high-water mark: that is the backpressure.
            await response.write(block)
            remaining -= len(block)
        await response.write_eof()
    except ConnectionError:
        # The client went away mid-stream (a test that checked enough, a gateway timeout): normal.
        pass
    return response


async def handle_sink(request: web.Request) -> web.Response:
    """``/sink``: POST/PUT records the request, GET lists the recorded ones (newest first)."""
    entries = request.app[_SINK_KEY]
    if request.method == "GET":
        return web.json_response({"received": list(reversed(entries))})
    if request.method not in ("POST", "PUT"):
        return _error(405, "method_not_allowed", "The sink takes POST or PUT, and GET to list.")
    body, total, _ = await _read_body(request)
    text = body[:SINK_BODY_LIMIT].decode("utf-8", errors="replace")
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = text
    entries.append(
        SinkEntry(
            received_at=time.time(),
            method=request.method,
            headers=_joined_headers(request),
            body=parsed,
            body_bytes=total,
        )
    )
    _log("sink_received", bytes=total, count=len(entries))
    return web.json_response({"received": len(entries)})


async def handle_health(request: web.Request) -> web.Response:
    """``/health``: the process serves requests."""
    return web.json_response({"status": "ok"})


async def _init_stopping(app: web.Application) -> None:
    """Created at startup, inside the loop that will set it."""
    app[_STOPPING_KEY] = asyncio.Event()


async def _set_stopping(app: web.Application) -> None:
    """on_shutdown runs before aiohttp waits for in-flight handlers: /stall gives up here."""
    app[_STOPPING_KEY].set()


async def _stamp_name(request: web.Request, response: web.StreamResponse) -> None:
    """Every response names its upstream, errors from aiohttp itself included."""
    response.headers[UPSTREAM_NAME_HEADER] = request.app[_NAME_KEY]


# --- Application and server ---------------------------------------------------------------------


def create_app(name: str = "upstream", fail_rate: float = 0.0) -> web.Application:
    """The mock's aiohttp application.

    ``name`` is sent back in the ``x-upstream-name`` header (and the echo's ``upstream`` field) so a
    test with several upstreams sees which one answered; ``fail_rate`` (0..1) is the share of echo
    requests answered with 503.
    """
    if not 0.0 <= fail_rate <= 1.0:
        raise ValueError(f"fail_rate must be between 0 and 1, got {fail_rate!r}")
    # client_max_size only limits request.read()/post(); the handlers stream, so it never applies.
    app = web.Application()
    app[_NAME_KEY] = name
    app[_FAIL_RATE_KEY] = fail_rate
    app[_SINK_KEY] = collections.deque(maxlen=SINK_KEEP)
    app.on_response_prepare.append(_stamp_name)
    app.on_startup.append(_init_stopping)
    app.on_shutdown.append(_set_stopping)
    # Registration order is match order: the special paths first, the catch-all echo last.
    app.router.add_route("*", "/status/{code}", handle_status)
    app.router.add_route("*", "/delay/{ms}", handle_delay)
    app.router.add_route("*", "/drop", handle_drop)
    app.router.add_route("*", "/stall", handle_stall)
    app.router.add_route("*", "/bytes/{n}", handle_bytes)
    app.router.add_route("*", "/health", handle_health)
    app.router.add_route("*", "/sink", handle_sink)
    app.router.add_route("*", "/{tail:.*}", handle_echo)
    return app


async def start_upstream(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT_SECONDS,
    **kw: Any,
) -> tuple[web.AppRunner, int]:
    """Start the mock in the running event loop; returns (runner, bound port).

    ``port=0`` lets the OS pick a free port, which is returned. ``kw`` goes to ``create_app``
    (``name``, ``fail_rate``). Stop it with ``await runner.cleanup()``.
    """
    # access_log=None: under load tests a line per request would cost more than the request.
    runner = web.AppRunner(create_app(**kw), access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = runner.addresses[0][1]
    return runner, bound_port


def _log(event: str, **fields: Any) -> None:
    """One JSON object a line on stdout, like the rest of Sentinel's processes."""
    print(json.dumps({"event": event, **fields}), flush=True)


async def serve(host: str, port: int, name: str, fail_rate: float) -> None:
    """Run until SIGTERM or SIGINT, then stop accepting, let in-flight requests finish, and return."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Not available on Windows; there Ctrl-C arrives as KeyboardInterrupt instead.
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    runner, bound_port = await start_upstream(host, port, name=name, fail_rate=fail_rate)
    _log("upstream.started", name=name, host=host, port=bound_port, fail_rate=fail_rate, pid=os.getpid())
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        _log("upstream.stopped", name=name, port=bound_port)


def _bounded(kind: type[int] | type[float], low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a ``kind`` (int or float) from ``low`` to ``high`` inclusive."""
    noun = "an integer" if kind is int else "a number"

    def parse(raw: str) -> float:
        try:
            value = kind(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {raw!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {value}")
        return value

    return parse


_fail_rate = _bounded(float, 0.0, 1.0)  # --fail-rate: a share of requests
_port = _bounded(int, 0, 65535)  # --port: 0 asks for any free port


def build_parser() -> argparse.ArgumentParser:
    """The CLI; defaults come from the same variables the Procfile uses.

    The defaults are strings on purpose: argparse runs them through ``type`` too, so junk in the
    environment gets the same clean usage error as junk on the command line.
    """
    parser = argparse.ArgumentParser(
        prog="python -m gateway.mock_upstream",
        description="Sentinel's mock upstream: echoes requests, misbehaves on demand.",
    )
    parser.add_argument("--host", default=os.environ.get("UPSTREAM_HOST", "127.0.0.1"), help="address to bind")
    parser.add_argument(
        "--port", type=_port, default=os.environ.get("UPSTREAM_PORT", "8080"), help="port to bind (0: any free)"
    )
    parser.add_argument(
        "--name", default=os.environ.get("UPSTREAM_NAME", "upstream"), help="sent back in x-upstream-name"
    )
    parser.add_argument(
        "--fail-rate",
        type=_fail_rate,
        default=os.environ.get("UPSTREAM_FAIL_RATE", "0"),
        help="share of echo requests (0..1) answered with 503, for chaos demos",
    )
    return parser


def _runner() -> asyncio.Runner:
    """An asyncio runner on uvloop when it is installed (it is, via requirements.txt): a faster mock
    keeps gateway benchmarks measuring the gateway."""
    try:
        import uvloop  # optional: the mock also runs on a bare asyncio loop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m gateway.mock_upstream``; returns the exit status."""
    args = build_parser().parse_args(argv)
    # KeyboardInterrupt only where signal handlers cannot be installed; elsewhere SIGINT sets the
    # stop event and serve() returns normally.
    with _runner() as runner, contextlib.suppress(KeyboardInterrupt):
        try:
            runner.run(serve(args.host, args.port, args.name, args.fail_rate))
        except OSError as exc:
            # Port taken, address not local: one readable line for the supervisor, not a traceback.
            _log("upstream.failed", name=args.name, host=args.host, port=args.port, error=str(exc))
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
