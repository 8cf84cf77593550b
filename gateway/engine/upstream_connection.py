"""One HTTP/1.1 connection to an upstream for ``UpstreamPool`` (``gateway.engine.upstream``): the protocol.

It parses responses with ``httptools.HttpResponseParser`` and keeps what the one request in flight
needs: the final status and header octets, a bounded buffer of body bytes (reading pauses above
``HIGH_WATER``), the state of the exchange, and one watchdog timer for the deadline of whatever the
caller waits for. The framing rules, the pool and the guarantees given to callers are described in
``gateway.engine.upstream``; the errors raised to callers are defined here.

This module is on the proxy's hot path: it must not import Django.
"""

from __future__ import annotations

import asyncio
from typing import Final, cast

import httptools

from gateway.engine.rewrites import Header

__all__ = [
    "HIGH_WATER",
    "ConnectError",
    "MalformedResponse",
    "UpstreamClosed",
    "UpstreamConnection",
    "UpstreamError",
]

# Body bytes buffered before the socket stops being read. The relay takes the whole buffer each
# time it runs, so a download to a slow client holds at most this much here (plus what the ASGI
# server buffers); 256 KiB lets a fast client get large writes.
HIGH_WATER: Final = 256 * 1024
# Limits of a response head, Envoy's defaults (max_response_headers_kb 60, max_headers_count 100;
# nginx's proxy_buffer_size is 4-8 KiB): past either the response is malformed (502). Unbounded,
# one upstream's endless header held the event loop for seconds (httptools gathers a header's
# pieces by concatenation) and every other request of the process with it.
MAX_RESPONSE_HEAD_BYTES: Final = 60 * 1024
MAX_RESPONSE_HEADERS: Final = 100
# uvloop's timers and clock have millisecond resolution: a timer may fire up to 1 ms "early".
_CLOCK_SLACK_S: Final = 0.001

# The exchange's states. IDLE: no request in flight (the connection is pooled or just made);
# HEAD: a request was written, no final response head yet; BODY: the final head arrived and its
# body is being read; DONE: the response is complete (a connection in DONE may still be unusable).
IDLE: Final = 0
HEAD: Final = 1
BODY: Final = 2
DONE: Final = 3


class UpstreamError(ConnectionError):
    """The exchange with the upstream failed; the request's outcome there is unknown."""


class ConnectError(UpstreamError):
    """No connection could be made (refused, unreachable, a name that does not resolve)."""


class UpstreamClosed(UpstreamError):
    """The upstream closed or reset the connection before its response was complete."""


class MalformedResponse(UpstreamError):
    """What the upstream sent is not an HTTP/1.1 response to the request (``httptools`` refused it,
    or a 101 Switching Protocols nobody asked for)."""


class _Unrequested(Exception):
    """Raised inside a parser callback to stop parsing: 101 to a request that asked no upgrade."""


class _StatusOutOfRange(Exception):
    """Raised inside a parser callback to stop parsing: a status llhttp takes (any three digits)
    that RFC 9110 15 does not (outside 100..599); its message says which."""


def invalid_status(status: int) -> str | None:
    """Why `status` cannot be an HTTP status (RFC 9110 15: only 100-599 are), or None when it can.
    llhttp, under both upstream clients, takes any three digits."""
    if 100 <= status <= 599:
        return None
    return f"the upstream's status {status} is outside 100-599 (RFC 9110 15)"


class _HeadTooLarge(Exception):
    """Raised inside a parser callback to stop parsing: more than MAX_RESPONSE_HEADERS headers."""


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection: the parser's callbacks, the body buffer and the waiter.

    One coroutine at a time uses it (the forward that checked it out), and it waits for one thing
    at a time: the response head, body bytes, or the socket's write buffer to drain (``wait``).
    """

    __slots__ = (
        "answered",
        "body",
        "body_received",
        "buffered",
        "closing_token",
        "deadline",
        "error",
        "framed",
        "head_bytes",
        "head_only",
        "headers",
        "idle_since",
        "interim",
        "keep_alive_token",
        "key",
        "loop",
        "parser",
        "parser_spent",
        "reading_paused",
        "reusable",
        "served",
        "state",
        "status",
        "transport",
        "until_close",
        "waiter",
        "watchdog",
        "writing_paused",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, key: tuple[str, int, bool]) -> None:
        """``key`` is the pool's (host, port, guarded) for the connection."""
        self.loop = loop
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        # True once a response ended at its head while the parser may still expect a body (HEAD):
        # the next request gets a new parser.
        self.parser_spent = False
        self.state = IDLE
        # Why the connection is unusable, once it is.
        self.error: UpstreamError | TimeoutError | None = None
        self.served = 0  # responses completed on this connection
        self.idle_since = 0.0
        self.waiter: asyncio.Future[None] | None = None
        self.deadline = 0.0
        self.watchdog: asyncio.TimerHandle | None = None
        self.writing_paused = False
        self.reading_paused = False
        self._reset_response(head_only=False)

    def _reset_response(self, *, head_only: bool) -> None:
        self.head_only = head_only
        self.status = 0
        self.headers: list[Header] = []
        # Bytes fed to the parser that gave no body byte: the head, or a chunk's size line or the
        # trailer of a chunked body (bounded like the head: httptools gathers them by concatenation).
        self.head_bytes = 0
        self.body_received = 0
        self.answered = False  # any byte of a response arrived for this request
        self.interim = False
        self.reusable = False
        self.until_close = False
        self.framed = False  # Content-Length or Transfer-Encoding seen
        self.closing_token = False
        self.keep_alive_token = False
        self.body: list[bytes] = []
        self.buffered = 0

    # --- used by the pool and the forwarder -----------------------------------------------------

    def usable(self) -> bool:
        """True when an idle connection may carry another request."""
        return self.error is None and self.transport is not None and not self.transport.is_closing()

    def begin(self, *, head_only: bool) -> None:
        """Starts an exchange; ``head_only`` says the request is HEAD (its response has no body)."""
        if self.parser_spent:
            self.parser = httptools.HttpResponseParser(self)
            self.parser_spent = False
        self._reset_response(head_only=head_only)
        self.state = HEAD

    def write(self, data: bytes) -> None:
        """Queues ``data`` on the socket; raises the connection's error if it has failed."""
        if self.error is not None:
            raise self.error
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self, deadline: float) -> None:
        """Waits until the socket takes more (``pause_writing`` lifted), the response head arrives
        or the connection fails. Raises the connection's error before a response head (TimeoutError
        at ``deadline``); after one, returns and the caller stops writing."""
        while self.writing_paused and self.state == HEAD and self.error is None:
            await self.wait(deadline)
        if self.state == HEAD and self.error is not None:
            # Once a response has come, a connection closed behind it is the response's end.
            raise self.error

    async def response_head(self, deadline: float) -> None:
        """Waits for the final response head. Raises the connection's error (UpstreamClosed,
        MalformedResponse) or TimeoutError at ``deadline`` (loop time)."""
        while self.state == HEAD and self.error is None:
            await self.wait(deadline)
        if self.state == HEAD and self.error is not None:
            raise self.error

    def ready(self) -> bool:
        """True when ``take`` has something to give: body bytes, or the end of the response."""
        return bool(self.body) or self.state == DONE

    def take(self) -> bytes:
        """The body bytes buffered so far (b"" when none), and reading resumes if it was paused."""
        body = self.body
        if not body:
            return b""
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self.buffered = 0
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return data

    async def read(self, timeout_s: float) -> bytes:
        """The next body bytes, waiting at most ``timeout_s`` of silence for them; b"" only at the
        end of the response (``complete``). Raises UpstreamClosed when the upstream closed or reset
        the connection before the end, MalformedResponse, or TimeoutError."""
        while not self.body and self.state == BODY and self.error is None:
            await self.wait(self.loop.time() + timeout_s)
        if not self.body and self.state != DONE and self.error is not None:
            raise self.error
        return self.take()

    @property
    def ended(self) -> bool:
        """The response ended: its body, what ``take`` has not taken of it, is all buffered."""
        return self.state == DONE

    @property
    def complete(self) -> bool:
        """The response ended and every body byte has been taken."""
        return self.state == DONE and not self.body

    def abort(self) -> None:
        """Closes the connection at once (unsent data dropped); it is never reused."""
        if self.error is None:
            self.error = UpstreamClosed("connection closed by the gateway")
        self._stop_watchdog()
        if self.transport is not None:
            self.transport.abort()

    async def wait(self, deadline: float) -> None:
        """Sleeps until the protocol has news (``_wake``), or fails the connection with
        TimeoutError at ``deadline`` (loop time)."""
        waiter = self.waiter = self.loop.create_future()
        self.deadline = deadline
        watchdog = self.watchdog
        if watchdog is None or watchdog.when() > deadline:
            if watchdog is not None:
                watchdog.cancel()
            self.watchdog = self.loop.call_at(deadline, self._check)
        await waiter

    # --- internals ------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def _check(self) -> None:
        """The watchdog: fails the connection once the waiter's deadline has passed.

        Armed by ``wait`` and never cancelled when the waiter is woken early, so a busy connection
        costs a timer per deadline period, not one per wait; it re-arms for a later deadline and
        disarms when nobody waits.
        """
        self.watchdog = None
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        now = self.loop.time()
        if now + _CLOCK_SLACK_S < self.deadline:
            self.watchdog = self.loop.call_at(self.deadline, self._check)
            return
        self._fail(TimeoutError("the upstream did not answer in time"))

    def _stop_watchdog(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None

    def _fail(self, error: UpstreamError | TimeoutError) -> None:
        """Makes the connection unusable and wakes its waiter, who raises ``error``."""
        if self.error is None:
            self.error = error
        self._stop_watchdog()
        if self.transport is not None:
            self.transport.abort()
        self._wake()

    def release_idle(self) -> None:
        """Marks the connection idle (the pool keeps it).

        Its watchdog stays armed: it disarms itself when it fires and finds nobody waiting, and the
        next exchange reuses it (``wait``), so a connection serving one request after another costs
        one timer per deadline period instead of a timer armed and cancelled per request (a uvloop
        timer is ~2 µs of the proxy's CPU per request).
        """
        self.state = IDLE
        self.served += 1
        self.idle_since = self.loop.time()

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.state == IDLE:
            # Bytes nobody asked for (an idle connection, or the pool's fresh one): whatever the
            # upstream meant, the next response on it could not be trusted.
            self._fail(MalformedResponse("the upstream sent bytes while no request was in flight"))
            return
        self.answered = True
        reading = self.state == HEAD or self.state == BODY
        received = self.body_received
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(MalformedResponse("the upstream switched protocols unasked"))
        except httptools.HttpParserError as exc:
            if self.state == DONE:
                self.reusable = False  # junk after a complete response: the response stands
            elif isinstance(exc.__context__, _StatusOutOfRange):
                self._fail(MalformedResponse(str(exc.__context__)))
            else:
                self._fail(MalformedResponse(f"malformed response from the upstream ({exc})"))
            return
        if reading:
            # Counted after feeding: a piece may hold the end of the head and body bytes too.
            framing = len(data) - (self.body_received - received)
            self.head_bytes = framing if self.body_received > received else self.head_bytes + framing
            if (self.state == HEAD or self.state == BODY) and self.head_bytes > MAX_RESPONSE_HEAD_BYTES:
                what = "head" if self.state == HEAD else "chunk framing or trailer"
                self._fail(MalformedResponse(f"the upstream's response {what} is over {MAX_RESPONSE_HEAD_BYTES} bytes"))

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost tells the rest

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.state == BODY and self.until_close and exc is None:
            # The end of a body delimited by the connection's close (RFC 9112 6.3, item 8).
            self.state = DONE
            self.reusable = False
            self._wake()
        cause = f" ({exc!r})" if exc is not None else ""
        where = "before its response" if self.state == HEAD else "before the end of its response"
        self._fail(UpstreamClosed(f"the upstream closed the connection {where}{cause}"))

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._wake()

    # --- httptools callbacks ----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.state == HEAD:
            # A final response after interim ones starts with headers of its own.
            self.headers = []
            self.framed = self.closing_token = self.keep_alive_token = False
        else:
            self.reusable = False  # a second response to one request

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.state != HEAD:
            # Trailer fields of a chunked body: dropped, never merged into the head the client
            # already has or is about to get (RFC 9110 6.5.1), as aiohttp drops them.
            return
        if len(self.headers) >= MAX_RESPONSE_HEADERS:
            raise _HeadTooLarge
        self.headers.append((name, value))
        # Only three names matter to the framing; their lengths are 10, 14 and 17.
        size = len(name)
        if size == 10 or size == 14 or size == 17:
            lowered = name.lower()
            if lowered == b"connection":
                tokens = value.lower()
                self.closing_token = self.closing_token or b"close" in tokens
                self.keep_alive_token = self.keep_alive_token or b"keep-alive" in tokens
            elif lowered == b"content-length" or lowered == b"transfer-encoding":
                self.framed = True

    def on_headers_complete(self) -> None:
        if self.state != HEAD:
            self.reusable = False
            return
        status = self.parser.get_status_code()
        if (invalid := invalid_status(status)) is not None:
            raise _StatusOutOfRange(invalid)
        if status < 200:
            if status == 101:
                raise _Unrequested  # nobody asked for an upgrade (Upgrade is hop-by-hop)
            self.interim = True  # 100 Continue, 103 Early Hints: skipped
            return
        self.status = status
        version = self.parser.get_http_version()
        if version == "1.1":
            self.reusable = not self.closing_token
        else:
            self.reusable = version == "1.0" and self.keep_alive_token and not self.closing_token
        if self.head_only or status == 204 or status == 304:
            # No body whatever the headers say (RFC 9110 6.4.1). httptools cannot be told to skip
            # the body of a response to HEAD, so the response ends here and the next request on
            # this connection gets a new parser.
            self.state = DONE
            self.parser_spent = self.head_only
        else:
            self.state = BODY
            if not self.framed:
                self.until_close = True
                self.reusable = False
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.state != BODY:
            self.reusable = False  # body bytes where none belong (after a response to HEAD)
            return
        self.body.append(body)
        self.buffered += len(body)
        self.body_received += len(body)
        if self.buffered >= HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.state == HEAD:
            if self.interim:
                self.interim = False
            return
        if self.state == BODY:
            self.state = DONE
            self._wake()
